# New-mail latency with IDLE, sourced by scripts/bench, whose variables and
# functions it uses.

# Measures the latency of $1 mails appended one at a time to a mailbox
# that mailbridge watches, beside a minimal IDLE client.
measure_latency() {
  local count=$1
  local user=bench-$run-latency@$STACK_MAIL_DOMAIN state=$dir/latency-state
  local topic=bench.$run.latency port
  mkdir -p "$state"
  BENCH_ACCESS_TOKEN=$(access_token "$user")
  export BENCH_ACCESS_TOKEN
  create_topic "$topic"
  port=$("$bench" free-port)
  config "$dir/latency.toml" "$user" "$state" "$port" \
    "$(pipeline latency kafka "$topic" '["INBOX"]' new)"
  authorize "$dir/latency.toml" "$dir/latency-authorize.log"

  step "latency: $count mails appended to $user at random intervals"
  "$bench" latency "${imap_args[@]}" --user "$user" --kafka "$STACK_KAFKA_BOOTSTRAP" \
    --topic "$topic" --count "$count" --run "$run-latency" --ready "127.0.0.1:$port" \
    --timeout "$timeout" --log "$dir/latency.log" -- \
    "$mailbridge" --config "$dir/latency.toml" run >"$dir/latency.json"
  grep -o '"mailbridge":{[^}]*}\|"server":{[^}]*}' "$dir/latency.json" >&2

  BENCH_ACCESS_TOKEN=$(access_token "$user")
  "$bench" empty "${imap_args[@]}" --user "$user" >/dev/null
}
