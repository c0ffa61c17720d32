# Many watched mailboxes, sourced by scripts/bench, whose variables and
# functions it uses.

# Mailboxes per account. The stack's Dovecot accepts at most 200 IMAP
# connections per user and client address (mail_max_userip_connections in
# stack/dovecot/dovecot.conf.in), and the APPEND session of the new-mail
# phase signs in as the same user, so larger counts use more accounts.
mailboxes_per_account=100

# Seconds of the idle window whose CPU time is measured.
mailboxes_idle=60
[[ -n $quick ]] && mailboxes_idle=10

# Prints the account tables that `config` writes for user $2, renamed to
# account $1.
account_tables() {
  local account=$1 user=$2
  config "$dir/account.toml" "$user" "$dir" 0 ""
  sed -n '/^\[accounts\.bench/,/^\[brokers\./p' "$dir/account.toml" |
    grep -v '^\[brokers\.' | sed "s/^\[accounts\.bench/[accounts.$account/"
  rm -f "$dir/account.toml"
}

# Measures one mailbridge run watching $1 empty mailboxes over IDLE, in
# accounts of at most $mailboxes_per_account mailboxes with one inbound
# pipeline each. It records the time until every mailbox is connected,
# memory and CPU time while idle, and the latency of one new mail appended
# to each mailbox.
# NOTE: near 1000 sessions the stack's Dovecot reaches the client_limit
# (1000) of its stats service and logs dropped connections, so the
# connect time at that count includes the server's delay.
measure_mailboxes() {
  local count=$1 per_account=$mailboxes_per_account
  ((count < per_account)) && per_account=$count
  ((count > 0 && count % per_account == 0)) ||
    die "--mailbox-counts: $count must be from 1 to $mailboxes_per_account or a multiple of it"
  local accounts=$((count / per_account)) name=mailboxes-$count
  local state=$dir/$name-state topic=bench.$run.$name file=$dir/$name.toml
  local names=() users=() tokens=() bench_args=() list i user account port
  for ((i = 1; i <= per_account; i++)); do names+=("Watched$i"); done
  list=$(printf '"%s", ' "${names[@]}")
  list="[${list%, }]"
  mkdir -p "$state"

  step "mailboxes: creating $count mailboxes in $accounts account(s)"
  for ((i = 1; i <= accounts; i++)); do
    user=bench-$run-$name-$i@$STACK_MAIL_DOMAIN
    users+=("$user")
    BENCH_ACCESS_TOKEN=$(access_token "$user")
    export BENCH_ACCESS_TOKEN
    "$bench" create "${imap_args[@]}" --user "$user" "${names[@]}" >/dev/null
  done
  create_topic "$topic"

  port=$("$bench" free-port)
  config "$file" "${users[0]}" "$state" "$port" "$(pipeline m1 kafka "$topic" "$list" new)"
  for ((i = 2; i <= accounts; i++)); do
    account=bench$i
    {
      echo
      account_tables "$account" "${users[i - 1]}"
      pipeline "m$i" kafka "$topic" "$list" new "$account"
    } >>"$file"
  done
  for ((i = 1; i <= accounts; i++)); do
    account=bench
    ((i > 1)) && account=bench$i
    authorize "$file" "$dir/$name-authorize-$i.log" "$account"
  done

  for user in "${users[@]}"; do
    tokens+=("$(access_token "$user")")
    bench_args+=(--user "$user")
  done
  local mailbox
  for mailbox in "${names[@]}"; do bench_args+=(--mailbox "$mailbox"); done
  BENCH_ACCESS_TOKENS=${tokens[*]}
  export BENCH_ACCESS_TOKENS

  step "mailboxes: mailbridge run watching $count mailboxes, $mailboxes_idle s idle, one new mail each"
  # Each IDLE session of Dovecot takes one inotify instance of the mail
  # user. Past the kernel's limit, Dovecot checks those mailboxes every
  # mailbox_idle_check_interval (30 s by default) instead.
  local inotify
  inotify=$(cat /proc/sys/fs/inotify/max_user_instances)
  ((count < inotify)) ||
    echo "bench: fs.inotify.max_user_instances is $inotify: Dovecot notices some of the" \
      "new mails only by its periodic check, which dominates the new-mail latency" >&2
  cut -d' ' -f1 /proc/loadavg >"$dir/$name-load-start"
  "$bench" mailboxes --ready "127.0.0.1:$port" "${bench_args[@]}" \
    --port "$STACK_IMAPS_PORT" --ca-file "$STACK_CA_FILE" --idle "$mailboxes_idle" \
    --kafka "$STACK_KAFKA_BOOTSTRAP" --topic "$topic" --run "$run-$name" \
    --timeout "$timeout" --log "$dir/$name.log" -- \
    "$mailbridge" --config "$file" run | tee "$dir/$name.json"
  cut -d' ' -f1 /proc/loadavg >"$dir/$name-load-end"
  unset BENCH_ACCESS_TOKENS
}

# Measures each count of the comma-separated list $1 and prints a Markdown
# table of the results.
measure_mailbox_counts() {
  local counts count
  IFS=, read -r -a counts <<<"$1"
  # A stack started before its Dovecot configuration set the login
  # processes' service_count to 0 drops TLS connections past the 100th.
  local largest
  largest=$(printf '%s\n' "${counts[@]}" | sort -n | tail -n 1)
  ((largest < 100)) || grep -q '^ *service_count = 0' "$STACK_DIR/dovecot/dovecot.conf" ||
    die "the stack's Dovecot accepts at most 100 TLS connections; restart the stack" \
      "(scripts/stack down, then scripts/stack up) to load stack/dovecot/dovecot.conf.in"
  for count in "${counts[@]}"; do
    measure_mailboxes "$count"
  done

  step "mailboxes: summary ($profile build, $(nproc) cores)"
  echo "| mailboxes | accounts | /readyz 200 (s) | all connected (s) | RSS idle (MiB) |" \
    "CPU in $mailboxes_idle s idle (s) | threads | open files | new mail p50 / max (ms) |" \
    "all published (s) | load 1 min |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  local json rss
  for count in "${counts[@]}"; do
    json=$dir/mailboxes-$count.json
    rss=$(json_field rss_bytes <"$json")
    printf '| %s | %s | %.1f | %.1f | %.1f | %.2f | %s | %s | %.0f / %.0f | %.2f | %s-%s |\n' \
      "$count" "$(json_field accounts <"$json")" \
      "$(json_field ready_seconds <"$json")" "$(json_field connected_seconds <"$json")" \
      "$(awk -v bytes="$rss" 'BEGIN { print bytes / 1048576 }')" \
      "$(json_field idle_cpu_seconds <"$json")" \
      "$(json_field threads <"$json")" "$(json_field open_files <"$json")" \
      "$(json_field p50_ms <"$json")" "$(json_field max_ms <"$json")" \
      "$(json_field all_published_seconds <"$json")" \
      "$(cat "$dir/mailboxes-$count-load-start")" "$(cat "$dir/mailboxes-$count-load-end")"
  done
}
