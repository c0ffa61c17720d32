# The peer of the inbound backfill, fetchmail handing each mail to kcat,
# sourced by scripts/bench, whose variables and functions it uses.

# Installs fetchmail and kcat from Debian when missing, as scripts/stack
# installs the servers.
install_peer() {
  local packages=()
  command -v fetchmail >/dev/null || packages+=(fetchmail)
  command -v kcat >/dev/null || packages+=(kcat)
  ((${#packages[@]})) || return 0
  echo "bench: installing Debian packages: ${packages[*]}" >&2
  if [[ -z $(ls /var/lib/apt/lists/*_Packages 2>/dev/null | head -n 1) ]]; then
    apt-get update -qq
  fi
  # policy-rc.d keeps the package from starting a system fetchmail daemon.
  local policy=/usr/sbin/policy-rc.d created=""
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && created=1
  fi
  local status=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${packages[@]}" >&2 || status=$?
  [[ -n $created ]] && rm -f "$policy"
  ((status == 0)) || die "failed to install ${packages[*]}"
}

# Prints the peer's name with the versions of fetchmail, kcat and librdkafka.
peer_name() {
  local fetchmail kcat librdkafka
  fetchmail=$(fetchmail --version 2>/dev/null | grep -o -m1 'release [0-9.]*' | cut -d' ' -f2)
  kcat=$(kcat -V 2>&1 | grep -o -m1 '^Version [0-9.]*' | cut -d' ' -f2)
  librdkafka=$(kcat -V 2>&1 | grep -o -m1 'librdkafka [0-9.]*' | cut -d' ' -f2)
  printf 'fetchmail %s, kcat %s (librdkafka %s)' "${fetchmail:-?}" "${kcat:-?}" "${librdkafka:-?}"
}

# Times fetchmail reading the INBOX of user $1, which contains $2 mails, and
# piping each mail to a new kcat process that produces to a topic of its
# own; stores the result as $3-peer.json.
measure_peer() {
  local user=$1 count=$2 set=$3
  local topic=bench.$run.$set.peer rc_dir status=0
  install_peer
  create_topic "$topic"
  BENCH_ACCESS_TOKEN=$(access_token "$user")
  export BENCH_ACCESS_TOKEN

  # The run control file contains the access token, so it lives in a private temporary
  # directory, which also takes fetchmail's pid and id files.
  rc_dir=$(mktemp -d)
  (
    umask 077
    # fetchmail 6.4 checks the certificate against DNS names only, so the
    # name is localhost while it connects to 127.0.0.1. kcat sends one
    # record per line unless given another delimiter: two ASCII record
    # separators, which no mail of the benchmark contains, keep each mail
    # whole. The rc file parser turns \\ into \, which kcat parses itself.
    cat >"$rc_dir/fetchmailrc" <<RC
set no syslog
set no bouncemail
poll 127.0.0.1 service $STACK_IMAPS_PORT protocol IMAP auth password
  user "$user" is root here
  password "$BENCH_ACCESS_TOKEN"
  ssl sslcertck sslcertfile "$STACK_CA_FILE" sslcommonname localhost
  folder INBOX
  keep fetchall no rewrite
  mda "kcat -P -b $STACK_KAFKA_BOOTSTRAP -t $topic -D '\\\\x1e\\\\x1e'"
RC
  )
  # One kcat process per mail is far slower than mailbridge, for whose runs
  # the default timeout is sized, so the peer gets 1 s more per 20 mails.
  step "$set: peer run to kafka ($(peer_name))"
  "$bench" peer --broker kafka --address "$STACK_KAFKA_BOOTSTRAP" --target "$topic" \
    --expect "$count" --timeout $((timeout + count / 20)) --name "$(peer_name)" \
    --log "$dir/$set-peer.log" -- \
    env FETCHMAILHOME="$rc_dir" fetchmail --fetchmailrc "$rc_dir/fetchmailrc" \
    --pidfile "$rc_dir/fetchmail.pid" --idfile "$rc_dir/fetchids" |
    tee "$dir/$set-peer.json" || status=$?
  rm -rf "$rc_dir"
  ((status == 0)) || die "the peer run failed; see $dir/$set-peer.log"
}

# Runs only mailbridge's backfill to Kafka and the peer against the INBOX
# of user $1, filled beforehand with $2 mails, and prints both rates and
# their ratio. The mailbox is left as it was found.
measure_peer_only() {
  local user=$1 count=$2 set=peer-only
  local state=$dir/$set-state topic=bench.$run.$set.kafka port
  mkdir -p "$state"
  BENCH_ACCESS_TOKEN=$(access_token "$user")
  export BENCH_ACCESS_TOKEN
  "$bench" mailbox-count "${imap_args[@]}" --user "$user" --expect "$count" --timeout 1 >/dev/null ||
    die "the INBOX of $user must contain exactly $count mails, as given with --mails"

  create_topic "$topic"
  port=$("$bench" free-port)
  config "$dir/$set-kafka.toml" "$user" "$state" "$port" "$(pipeline kafka kafka "$topic")"
  authorize "$dir/$set-kafka.toml" "$dir/$set-authorize.log"
  step "$set: mailbridge run to kafka"
  "$bench" backfill --broker kafka --address "$STACK_KAFKA_BOOTSTRAP" --target "$topic" \
    --expect "$count" --timeout "$timeout" --log "$dir/$set-kafka.log" -- \
    "$mailbridge" --config "$dir/$set-kafka.toml" run | tee "$dir/$set-kafka.json"

  measure_peer "$user" "$count" "$set"

  local mailbridge_seconds peer_seconds
  mailbridge_seconds=$(json_field seconds <"$dir/$set-kafka.json")
  peer_seconds=$(json_field seconds <"$dir/$set-peer.json")
  awk -v n="$count" -v m="$mailbridge_seconds" -v p="$peer_seconds" 'BEGIN {
    printf "mailbridge %.0f mails/s, peer %.0f mails/s, ratio %.2f\n", n / m, n / p, p / m
  }' | tee "$dir/$set-ratio.txt"
}
