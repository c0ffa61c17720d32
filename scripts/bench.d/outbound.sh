# Outbound throughput to postfix, sourced by scripts/bench, whose variables
# and functions it uses.

# Connections of the SMTP limit and `max_in_flight` of the pipelines:
# mailbridge's default.
outbound_concurrency=4

# Releases the mails that postfix holds for user $1, and only those,
# because another run on the same stack may hold mail of its own.
release_held() {
  local user=$1 config=$STACK_DIR/postfix/etc ids
  ids=$(postqueue -c "$config" -j |
    grep -F "\"address\": \"$user\"" |
    grep -F '"queue_name": "hold"' |
    sed -n 's/.*"queue_id": "\([0-9A-Za-z]*\)".*/\1/p') || true
  # postsuper reports the count it released on standard error.
  [[ -z $ids ]] || postsuper -c "$config" -H - <<<"$ids" 2>/dev/null
  postqueue -c "$config" -f
}

# Releases the mails that postfix holds for user $1, waits until its INBOX
# contains $2 mails, stores the count as outbound-$3-delivered.json and
# empties the mailbox.
count_delivered() {
  local user=$1 count=$2 name=$3
  release_held "$user"
  BENCH_ACCESS_TOKEN=$(access_token "$user")
  export BENCH_ACCESS_TOKEN
  "$bench" mailbox-count "${imap_args[@]}" --user "$user" --expect "$count" \
    --timeout "$timeout" | tee "$dir/outbound-$name-delivered.json"
  "$bench" empty "${imap_args[@]}" --user "$user" >/dev/null
}

# Sends $1 mails with the minimal SMTP client over one and over
# $outbound_concurrency connections, then $1 send requests through
# mailbridge's outbound pipelines on Kafka and on RabbitMQ.
measure_outbound() {
  local count=$1
  local sender=bench-$run-sender@$STACK_MAIL_DOMAIN state=$dir/outbound-state
  local smtp_args=(--smtp-port "$STACK_SMTP_PORT" --ca-file "$STACK_CA_FILE" --from "$sender")
  mkdir -p "$state"

  local name connections recipient
  for name in limit-1 limit-n; do
    connections=1
    [[ $name == limit-n ]] && connections=$outbound_concurrency
    recipient=bench-$run-$name-hold@$STACK_MAIL_DOMAIN
    step "outbound: SMTP limit, $count mails over $connections connection(s)"
    BENCH_ACCESS_TOKEN=$(access_token "$sender")
    export BENCH_ACCESS_TOKEN
    "$bench" smtp-limit "${smtp_args[@]}" --to "$recipient" --count "$count" \
      --connections "$connections" --run "$run-$name" --timeout "$timeout" |
      tee "$dir/outbound-$name.json"
    count_delivered "$recipient" "$count" "$name"
  done

  local smtp_table port
  smtp_table=$(printf '[accounts.bench.smtp]\nhost = "%s"\nport = %s\ntls = "starttls"\nca_file = "%s"\n' \
    "$STACK_SMTP_HOST" "$STACK_SMTP_PORT" "$STACK_CA_FILE")
  port=$("$bench" free-port)
  config "$dir/outbound-authorize.toml" "$sender" "$state" "$port" "$smtp_table"
  authorize "$dir/outbound-authorize.toml" "$dir/outbound-authorize.log"

  local broker broker_name address requests source properties
  for broker in kafka amqp; do
    requests=bench.$run.outbound.$broker
    recipient=bench-$run-$broker-hold@$STACK_MAIL_DOMAIN
    properties=""
    if [[ $broker == kafka ]]; then
      broker_name=kafka
      address=$STACK_KAFKA_BOOTSTRAP
      create_topic "$requests"
      create_topic "$requests.status"
      create_topic "$requests.dead"
      source=$(printf 'topic = "%s"\ngroup_id = "%s"\n' "$requests" "$requests")
      # The mock broker keeps a fetch on a caught-up partition open for
      # the whole fetch.wait.max.ms (500 ms by default), where Kafka
      # replies once a record arrives, so the first requests would wait.
      properties=$(printf '[brokers.kafka.properties]\n"fetch.wait.max.ms" = "10"\n')
    else
      broker_name=rabbitmq
      address=$STACK_AMQP_URL
      source=$(printf 'queue = "%s"\n' "$requests")
    fi
    port=$("$bench" free-port)
    config "$dir/outbound-$broker.toml" "$sender" "$state" "$port" \
      "$(printf '%s\n\n%s\n\n[outbound.%s]\naccount = "bench"\nbroker = "%s"\n%s\ndead_letter = "%s"\nstatus = "%s"\nmax_in_flight = %s\n' \
        "$smtp_table" "$properties" "$broker" "$broker_name" "$source" "$requests.dead" \
        "$requests.status" "$outbound_concurrency")"

    step "outbound: $count send requests through mailbridge run from $broker"
    "$bench" outbound --broker "$broker" --address "$address" --requests "$requests" \
      --status "$requests.status" --dead-letter "$requests.dead" --count "$count" \
      --to "$recipient" --run "$run-$broker" --ready "127.0.0.1:$port" \
      --timeout "$timeout" --log "$dir/outbound-$broker.log" -- \
      "$mailbridge" --config "$dir/outbound-$broker.toml" run | tee "$dir/outbound-$broker.json"
    count_delivered "$recipient" "$count" "$broker"
  done
}
