#!/usr/bin/env bash
# `make bench`: the gateway's cost against bare Envoy, Envoy's native MCP filter and the floor of
# any body-reading Wasm filter, on one upstream, in one run (issue 14; see bench/README.md).
#
#   BENCH_SECONDS=5  seconds of each measured wrk run
#   BENCH_ROUNDS=3   interleaved rounds (A B P C C-legacy D, A B P ...); medians are reported
#   BENCH_WARMUP=1   seconds of unmeasured load before each configuration's runs
#   BENCH_MEMORY_COUNT=100000  distinct tasks, and distinct sessions, for the memory figures (0: skip)
#   BENCH_CONFIGS    which configurations to run, in order (default: the six of issue 14 and
#                    probe_host, the probe making the gateway's host calls: the floor under C). For
#                    diagnosis: probe:GROUPS
#                    (some of them), probe_sdk (P with every callback exported, as the SDK
#                    builds it), gateway_nofilter and gateway_nolog (C without the audit
#                    logger's path filter, or without the logger), gateway_base (C with the filter
#                    at BENCH_BASE_WASM: two builds A/B in one run), gateway_legacy_base (the same
#                    Envoy as gateway_base, sending C-legacy's request)
# Then, without Envoy, the filter's and the probe's Wasm code alone in V8 (bench/v8, Node.js).
# Then each configuration counted in instructions per request under callgrind (bench/instructions.sh;
# BENCH_INSTRUCTIONS=0 skips it).
#   BENCH_AUDIT_SINK=access_log  the gateway's audit.sink (log: Envoy's log call per request)
#   ENVOY_BIN        the Envoy to use (else .tools/envoy/envoy from `make setup`)
#   BENCH_GATEWAY_WASM  the filter to measure (else the `make build` output)
#   BENCH_OUT        where results.json, the logs and every run go (target/bench)
#   BENCH_V8_REQUESTS=50000  requests per pass of the V8-only measurement
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BENCH_DIR=$PWD/bench
OUT=${BENCH_OUT:-$PWD/target/bench}
ENVOY=${ENVOY_BIN:-$PWD/.tools/envoy/envoy}
SECS=${BENCH_SECONDS:-5}
ROUNDS=${BENCH_ROUNDS:-3}
WARMUP=${BENCH_WARMUP:-1}
MEMORY_COUNT=${BENCH_MEMORY_COUNT:-100000}
GATEWAY_WASM=${BENCH_GATEWAY_WASM:-$PWD/target/wasm32-wasip1/release/filter.wasm}
# The probe as cargo builds it, and two trimmed copies (see prepare).
PROBE_BUILT=$BENCH_DIR/probe/target/wasm32-wasip1/release/probe.wasm
PROBE_WASM=$OUT/probe.wasm PROBE_FLOOR_WASM=$OUT/probe-floor.wasm
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"
trap stop_all EXIT
trap 'exit 130' INT TERM

# The configurations: the Envoy instance each runs on, the request it sends, its table label.
REPORTED=(bare native probe gateway gateway_legacy gateway_cold)
read -r -a CONFIGS <<<"${BENCH_CONFIGS:-bare native probe probe_host gateway gateway_legacy gateway_cold}"
declare -A INSTANCE=([bare]=bare [native]=native [probe]=probe [probe_host]=probe_host [probe_sdk]=probe_sdk [gateway]=gateway
  [gateway_legacy]=gateway [gateway_cold]=gateway_cold [gateway_nofilter]=gateway_nofilter [gateway_nolog]=gateway_nolog [gateway_base]=gateway_base
  [gateway_legacy_base]=gateway_base)
declare -A REQUEST=([bare]=modern [native]=modern [probe]=modern [probe_host]=modern [probe_sdk]=modern [gateway]=modern
  [gateway_legacy]=legacy [gateway_cold]=modern [gateway_nofilter]=modern [gateway_nolog]=modern [gateway_base]=modern
  [gateway_legacy_base]=legacy)
declare -A LABEL=([bare]="A bare" [native]="B native mcp" [probe]="P probe" [probe_host]="P+hostcalls" [probe_sdk]="P all exports"
  [gateway]="C gateway" [gateway_legacy]="C-legacy" [gateway_cold]="D cold" [gateway_nofilter]="C no log filter"
  [gateway_nolog]="C no audit log"
  [gateway_base]="C base build" [gateway_legacy_base]="C-legacy base build")
# The Envoy instances: filters fragment (bench/envoy/filters/) and its settings.
declare -A PROXY=([bare]="bare" [native]="native" [probe]="probe PROBE_MODE=floor PROBE_WASM=$PROBE_FLOOR_WASM"
  [probe_host]="probe PROBE_MODE=hostcalls AUDIT_LOG=shipped" [probe_sdk]="probe PROBE_MODE=floor PROBE_WASM=$PROBE_BUILT"
  [gateway]="gateway CACHE_ENTRIES=10000"
  [gateway_cold]="gateway CACHE_ENTRIES=0" [gateway_nofilter]="gateway CACHE_ENTRIES=10000 AUDIT_LOG=nofilter"
  [gateway_nolog]="gateway CACHE_ENTRIES=10000 AUDIT_LOG=none"
  [gateway_base]="gateway CACHE_ENTRIES=10000 GATEWAY_WASM=${BENCH_BASE_WASM:-} AUDIT_LOG=${BENCH_BASE_AUDIT_LOG:-shipped}")

# probe:GROUPS (e.g. probe:pairs,clock) is the probe making only those host-call groups, to price
# them one at a time (see bench/probe/src/lib.rs).
for cfg in "${CONFIGS[@]}"; do
  [[ $cfg == probe:* ]] || continue
  INSTANCE[$cfg]=${cfg//[:,]/_} REQUEST[$cfg]=modern LABEL[$cfg]="P+${cfg#probe:}"
  PROXY[${INSTANCE[$cfg]}]="probe PROBE_MODE=${cfg#probe:}"
  # The filter state is priced with the shipped logger that reads it, as probe_host is.
  [[ ,${cfg#probe:}, != *,property,* ]] || PROXY[${INSTANCE[$cfg]}]+=" AUDIT_LOG=shipped"
done

# trimmed_probe COPY LIST: the built probe copied to COPY with only the callbacks of
# bench/probe/LIST exported; the tool's report is shown only when it fails.
trimmed_probe() {
  local said
  cp "$PROBE_BUILT" "$1"
  said=$(cargo run -q --release -p wasm-exports -- "$1" "$BENCH_DIR/probe/$2" 2>&1) || { echo "$said" >&2; die "cannot trim $1"; }
}

prepare() {
  need wrk wrk
  need jq jq
  need curl curl
  [ -x "$ENVOY" ] || die "no Envoy at $ENVOY: run make setup or set ENVOY_BIN"
  [ -f "$GATEWAY_WASM" ] || die "no $GATEWAY_WASM: run make build"
  rm -rf "$OUT" && mkdir -p "$OUT/logs" "$OUT/config" "$OUT/requests"
  echo "bench: building the probe filter and the token tool"
  cargo build -q --release --target wasm32-wasip1 --manifest-path "$BENCH_DIR/probe/Cargo.toml"
  # Trimmed as make build trims the gateway, so that the probe pays no call into V8 the gateway
  # does not: the floor probe exports only what it implements, the others the gateway's set.
  trimmed_probe "$PROBE_WASM" callbacks
  trimmed_probe "$PROBE_FLOOR_WASM" callbacks-floor
  cargo build -q -p integration --bin mcp-token
  local keys=$OUT/keys
  target/debug/mcp-token keys --dir "$keys"
  TOKEN=$(target/debug/mcp-token --dir "$keys" --sub alice --scope "files:read" --ttl 3600)
  JWKS=$(cat "$keys/idp-jwks.json")
  SIGNING_KEY=$(cat "$keys/gateway.pem")
  SEAL_KEYS=$(tr -d '\n' <"$keys/seal.keys")
  HASH_KEY=$(tr -d '\n' <"$keys/hash.key")
  write_requests
}

pad() {
  printf 'x%.0s' $(seq "$1")
}

# The workload: a ~300-byte tools/call in each era, and a legacy initialize.
write_requests() {
  local modern legacy
  modern='{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"'$(pad 92)'"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}'
  legacy='{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"'$(pad 205)'"}}}'
  local common="Authorization: Bearer $TOKEN
Content-Type: application/json
Accept: application/json, text/event-stream"
  printf '%s\nMCP-Protocol-Version: 2026-07-28\nMcp-Method: tools/call\nMcp-Name: echo\nMcp-Task-Id: bench-task\n\n%s' \
    "$common" "$modern" >"$OUT/requests/modern.http"
  printf '%s\nMCP-Protocol-Version: 2025-06-18\n\n%s' "$common" "$legacy" >"$OUT/requests/legacy.http"
  printf '%s\n\n%s' "$common" \
    '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"1.0.0"}}}' \
    >"$OUT/requests/initialize.http"
  echo "bench: bodies modern ${#modern} B, legacy ${#legacy} B"
}

# start_proxy NAME [INSTANCE]: renders and starts one proxy instance (INSTANCE defaults to NAME).
start_proxy() {
  local name=$1 settings filter_config fragment
  read -r -a settings <<<"${PROXY[${2:-$1}]}"
  local sink=${BENCH_AUDIT_SINK:-access_log} access_log=""
  filter_config=$(render "$BENCH_DIR/gateway.json" "JWKS=$JWKS" "AUDIT_SINK=$sink" "${settings[@]:1}")
  # The gateway's instances get the shipped audit logger when the access log writes the line.
  # AUDIT_LOG= overrides, for diagnosis: shipped, nofilter (the logger without its filter), cel (with
  # the CEL filter on filter_state it had before), none.
  local audit_log=none setting
  [ "${settings[0]}" != gateway ] || [ "$sink" != access_log ] || audit_log=shipped
  for setting in "${settings[@]:1}"; do
    [[ $setting != AUDIT_LOG=* ]] || audit_log=${setting#AUDIT_LOG=}
  done
  case $audit_log in
    shipped) access_log=$(cat "$BENCH_DIR/envoy/audit-log.yaml") ;;
    nofilter) access_log=$(sed '/filter:/,/string_match:/d' "$BENCH_DIR/envoy/audit-log.yaml") ;;
    # The CEL filter the shipped logger had before the path filter.
    cel) access_log=$(sed '/header_filter:/,/string_match:/c\              extension_filter:\n                name: envoy.access_loggers.extension_filters.cel\n                typed_config:\n                  "@type": type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter\n                  expression: "'"'"'wasm.mcp_audit'"'"' in filter_state"' "$BENCH_DIR/envoy/audit-log.yaml") ;;
  esac
  fragment=$(render "$BENCH_DIR/envoy/filters/${settings[0]}.yaml" "PROBE_WASM=$PROBE_WASM" \
    "GATEWAY_WASM=$GATEWAY_WASM" "FILTER_CONFIG=$filter_config" "${settings[@]:1}")
  render "$BENCH_DIR/envoy/proxy.yaml" "FILTERS=$fragment" "ACCESS_LOG=$access_log" "UPSTREAM_PORT=$UPSTREAM_PORT" >"$OUT/config/$name.yaml"
  start_envoy "$name" "$OUT/config/$name.yaml" \
    "MCP_GW_SIGNING_KEY=$SIGNING_KEY" "MCP_GW_SEAL_KEYS=$SEAL_KEYS" "MCP_GW_HASH_KEY=$HASH_KEY"
}

url() {
  echo "http://127.0.0.1:$(cat "$OUT/$1.port")/mcp/files"
}

# post INSTANCE REQUEST [EXTRA_HEADER]: one request with curl; prints status line, headers, body.
post() {
  local file=$OUT/requests/$2.http args=()
  while IFS= read -r line; do
    [ -z "$line" ] && break
    args+=(-H "$line")
  done <"$file"
  [ -z "${3:-}" ] || args+=(-H "$3")
  curl -s -i --max-time 5 "${args[@]}" --data-binary "$(sed '1,/^$/d' "$file")" "$(url "$1")"
}

# Every configuration answers its request with the upstream's 200 before anything is measured.
smoke() {
  local cfg response
  for cfg in "${CONFIGS[@]}"; do
    [ "$cfg" = gateway_legacy ] && continue
    response=$(post "${INSTANCE[$cfg]}" "${REQUEST[$cfg]}")
    if ! grep -q '^HTTP/1.1 200' <<<"$response" || ! grep -q 'hello from the bench upstream' <<<"$response"; then
      die "$cfg does not pass the request: $response"
    fi
  done
  # The audit line comes after the response, at Envoy's next log flush: wait for it a little.
  if [ -f "$OUT/logs/gateway.log" ]; then
    local waited=0
    until grep -qs 'mcp_audit: ' "$OUT/logs/gateway.log" "$OUT/logs/gateway.envoy.log"; do
      waited=$((waited + 1))
      [ "$waited" -lt 50 ] || die "the gateway wrote no audit line (see $OUT/logs/gateway.log)"
      sleep 0.1
    done
  fi
}

# The legacy workload's session: initialize through the gateway, keep the handle it returns.
open_session() {
  local response handle
  response=$(post gateway initialize)
  grep -q '^HTTP/1.1 200' <<<"$response" || die "legacy initialize failed: $response"
  handle=$(tr -d '\r' <<<"$response" | awk -F': ' 'tolower($1) == "mcp-session-id" { print $2 }')
  [ -n "$handle" ] || die "legacy initialize returned no Mcp-Session-Id: $response"
  # The upstream's ids are UUIDs (its x-request-id): one coming back means no sealed handle.
  if [[ $handle =~ ^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$ ]]; then
    SESSION_KIND=plain
  else
    SESSION_KIND=sealed
  fi
  printf 'Mcp-Session-Id: %s\n%s' "$handle" "$(cat "$OUT/requests/legacy.http")" >"$OUT/requests/legacy.tmp"
  mv "$OUT/requests/legacy.tmp" "$OUT/requests/legacy.http"
  response=$(post gateway legacy)
  grep -q '^HTTP/1.1 200' <<<"$response" || die "legacy tools/call with the session failed: $response"
  echo "bench: legacy session handle: $SESSION_KIND (${#handle} chars)"
}

# One round: each configuration warmed up, then 16 connections (rps), then 1 (latency). Around
# each run the proxy's CPU time per request is taken too: other processes on the machine move it
# far less than rps, and at 1 connection it shows how much of the latency is the proxy's work.
measure_round() {
  local round=$1 cfg url file pid tput lat
  for cfg in "${CONFIGS[@]}"; do
    url=$(url "${INSTANCE[$cfg]}")
    file=$OUT/requests/${REQUEST[$cfg]}.http
    pid=$(cat "$OUT/${INSTANCE[$cfg]}.pid")
    wrk_run "$WARMUP" 16 "$url" post.lua "$file" >/dev/null
    tput=$(measured_run "$pid" "$SECS" 16 "$url" post.lua "$file")
    lat=$(measured_run "$pid" "$SECS" 1 "$url" post.lua "$file")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$cfg" "$round" "$(field rps "$tput")" "$(field p50_us "$lat")" \
      "$(field p99_us "$lat")" "$(field cpu_us "$tput")" "$(field cpu_us "$lat")" >>"$OUT/runs.tsv"
    printf 'bench: round %s %-14s %8s req/s %6s us CPU/req | 1 conn: %6s us CPU/req, p50 %4s us, p99 %5s us\n' \
      "$round" "$cfg" "$(field rps "$tput")" "$(field cpu_us "$tput")" "$(field cpu_us "$lat")" \
      "$(field p50_us "$lat")" "$(field p99_us "$lat")"
  done
}

# measured_run PID WRK_RUN_ARGS...: one wrk_run; prints its result line with cpu_us=, the CPU
# microseconds the process PID spent per request during it.
measured_run() {
  local pid=$1 ticks result
  shift
  ticks=$(cpu_ticks "$pid")
  result=$(wrk_run "$@")
  ticks=$(($(cpu_ticks "$pid") - ticks))
  awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" -v n="$(field requests "$result")" -v r="$result" \
    'BEGIN { printf "%s cpu_us=%.1f\n", r, t * 1e6 / hz / n }'
}

# jq definitions the report and the paired runs share: the median of an array, a number with
# its sign (+4.9, -2.3), rounding to one, two or three decimals, and a target's verdict.
JQ_DEFS='def median: sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  def signed: if . >= 0 then "+\(.)" else "\(.)" end;
  def d($x): $x * 10 | round / 10; def r($x): $x * 100 | round / 100; def r3($x): $x * 1000 | round / 1000;
  def mark($ok): if $ok then "met" else "MISSED" end;'

# paired_rounds A B SECONDS ROUNDS CONNECTIONS [ALTERNATE]: configurations A and B (running, each
# sending its own request kind) loaded at the same time, or one after the other with ALTERNATE=1.
# Per round it prints both proxies' CPU us per request and their difference, and appends
# "difference cpu_a cpu_b" to $OUT/paired-A-B.tsv: whatever else the machine does hits both alike.
paired_rounds() {
  local a=$1 b=$2 secs=$3 rounds=$4 conns=$5 alternate=${6:-0} round ticks_a ticks_b load_a load_b
  local url_a url_b file_a file_b pid_a pid_b tsv=$OUT/paired-$1-$2.tsv
  url_a=$(url "${INSTANCE[$a]}") url_b=$(url "${INSTANCE[$b]}")
  file_a=$OUT/requests/${REQUEST[$a]}.http file_b=$OUT/requests/${REQUEST[$b]}.http
  pid_a=$(cat "$OUT/${INSTANCE[$a]}.pid") pid_b=$(cat "$OUT/${INSTANCE[$b]}.pid")
  wrk_run 2 "$conns" "$url_a" post.lua "$file_a" >/dev/null
  wrk_run 2 "$conns" "$url_b" post.lua "$file_b" >/dev/null
  : >"$tsv"
  for round in $(seq 1 "$rounds"); do
    ticks_a=$(cpu_ticks "$pid_a") ticks_b=$(cpu_ticks "$pid_b")
    if [ "$alternate" = 1 ]; then
      wrk_run "$secs" "$conns" "$url_a" post.lua "$file_a" >"$OUT/paired-a.txt"
      wrk_run "$secs" "$conns" "$url_b" post.lua "$file_b" >"$OUT/paired-b.txt"
    else
      wrk_run "$secs" "$conns" "$url_a" post.lua "$file_a" >"$OUT/paired-a.txt" &
      load_a=$!
      wrk_run "$secs" "$conns" "$url_b" post.lua "$file_b" >"$OUT/paired-b.txt" &
      load_b=$!
      # Not a bare `wait`: the Envoys are this shell's children too.
      wait "$load_a" "$load_b"
    fi
    awk -v ta=$(($(cpu_ticks "$pid_a") - ticks_a)) -v tb=$(($(cpu_ticks "$pid_b") - ticks_b)) \
      -v na="$(field requests "$(cat "$OUT/paired-a.txt")")" -v nb="$(field requests "$(cat "$OUT/paired-b.txt")")" \
      -v hz="$(getconf CLK_TCK)" -v a="$a" -v b="$b" -v r="$round" 'BEGIN {
        ca = ta * 1e6 / hz / na; cb = tb * 1e6 / hz / nb
        printf "paired: round %d  %s %.1f us/req (%d req)  %s %.1f us/req (%d req)  difference %+.1f us\n", r, a, ca, na, b, cb, nb, ca - cb
        printf "%.2f\t%.2f\t%.2f\n", ca - cb, ca, cb > "/dev/stderr"
      }' 2>>"$tsv"
  done
}

# paired_summary A B: the medians over paired_rounds' rounds as JSON: the difference in CPU us
# per request, and B's CPU over A's (what A's throughput is as a share of B's, for a proxy
# bound by its one worker's CPU).
paired_summary() {
  jq -R -s -c "$JQ_DEFS"'
    [split("\n")[] | select(length > 0) | split("\t") | map(tonumber)]
    | {cpu_us_difference: d(map(.[0]) | median), cpu_ratio_b_over_a: r3(map(.[2] / .[1]) | median), rounds: length}' \
    "$OUT/paired-$1-$2.tsv"
}

# A proxy that opens an upstream connection per request measures TCP set-up, not filters.
check_connection_reuse() {
  local instance stats connections requests
  for instance in $(instances); do
    stats=$(curl -sf "http://$(cat "$OUT/$instance.admin")/stats?filter=^cluster\.upstream\.upstream_(cx|rq)_total$")
    connections=$(awk '{ print $2 }' <<<"$(grep upstream_cx_total <<<"$stats")")
    requests=$(awk '{ print $2 }' <<<"$(grep upstream_rq_total <<<"$stats")")
    if [ $((connections * 100)) -gt "$requests" ]; then
      echo "bench: WARNING: $instance opened $connections upstream connections for $requests requests" >&2
    fi
  done
}

# Envoy RSS growth over COUNT distinct modern tasks, and over COUNT distinct legacy sessions, each
# on a fresh gateway warmed up with the same request kind first.
measure_memory() {
  local before pid result
  start_proxy mem_tasks gateway
  pid=$(cat "$OUT/mem_tasks.pid")
  wrk_run 2 16 "$(url mem_tasks)" post.lua "$OUT/requests/modern.http" >/dev/null
  before=$(rss_bytes "$pid")
  result=$(wrk_run 300 16 "$(url mem_tasks)" tasks.lua "$OUT/requests/modern.http" "$MEMORY_COUNT")
  [ "$(field requests "$result")" -ge "$MEMORY_COUNT" ] || die "only $(field requests "$result") task requests in 300 s"
  TASKS_GROWTH=$(($(rss_bytes "$pid") - before))
  echo "bench: $MEMORY_COUNT tasks: RSS $before -> $((before + TASKS_GROWTH)) bytes"
  kill "$pid"

  start_proxy mem_sessions gateway
  pid=$(cat "$OUT/mem_sessions.pid")
  wrk_run 2 16 "$(url mem_sessions)" sessions.lua "$OUT/requests/initialize.http" "$OUT/requests/legacy.http" 1000 >/dev/null
  before=$(rss_bytes "$pid")
  result=$(wrk_run 300 16 "$(url mem_sessions)" sessions.lua "$OUT/requests/initialize.http" "$OUT/requests/legacy.http" "$MEMORY_COUNT")
  [ "$(field requests "$result")" -ge $((2 * MEMORY_COUNT)) ] || die "only $(field requests "$result") session requests in 300 s"
  SESSIONS_GROWTH=$(($(rss_bytes "$pid") - before))
  echo "bench: $MEMORY_COUNT sessions: RSS $before -> $((before + SESSIONS_GROWTH)) bytes"
  kill "$pid"
}

# C and C-legacy each paired with B (paired_rounds, 8 connections each): a verdict on the
# 0.95 x B target that a round's drift does not move, as the interleaved medians' does.
# BENCH_PAIRED_ROUNDS (5; 0 skips it) rounds of BENCH_PAIRED_SECONDS (8).
measure_paired() {
  PAIRED={}
  local a rounds=${BENCH_PAIRED_ROUNDS:-5}
  [ "$rounds" != 0 ] || return 0
  for a in gateway gateway_legacy; do
    [[ " ${CONFIGS[*]} " == *" $a "* && " ${CONFIGS[*]} " == *" native "* ]] || continue
    paired_rounds "$a" native "${BENCH_PAIRED_SECONDS:-8}" "$rounds" 8
    PAIRED=$(jq -c --arg k "$a/native" --argjson v "$(paired_summary "$a" native)" '.[$k] = $v' <<<"$PAIRED")
  done
}

# The filter's own Wasm code per request in V8 without Envoy (bench/v8): how much of C's cost
# is the filter's code, and how much Envoy's side of its host calls and access log.
measure_wasm_code() {
  V8_US=null
  command -v node >/dev/null || { echo "bench: no node; skipping the V8-only measurement"; return; }
  local mode wasm us parts=()
  for mode in modern legacy probe; do
    wasm=$GATEWAY_WASM
    [ "$mode" != probe ] || wasm=$PROBE_FLOOR_WASM
    us=$(BENCH_OUT=$OUT V8_BENCH_REPS=${V8_BENCH_REPS:-5} node "$BENCH_DIR/v8/run.mjs" "$wasm" "$mode" "${BENCH_V8_REQUESTS:-50000}" |
      tail -n1 | jq .us_per_request_median) ||
      die "bench/v8/run.mjs $mode failed"
    parts+=(--argjson "$mode" "$us")
  done
  V8_US=$(jq -n -c "${parts[@]}" '{gateway: $modern, gateway_legacy: $legacy, probe: $probe}')
}

# The same configurations counted in instructions per request under callgrind
# (bench/instructions.sh, about 25 s each): ratios that the machine's other work does not move.
# BENCH_INSTRUCTIONS=0 skips it.
measure_instructions() {
  INSTRUCTIONS=null
  [ "${BENCH_INSTRUCTIONS:-1}" = 1 ] || return 0
  echo "bench: counting instructions per request under callgrind"
  "$BENCH_DIR/instructions.sh" "${CONFIGS[@]}" 2>&1 | grep -v '^sending command' >"$OUT/instructions.txt" ||
    { cat "$OUT/instructions.txt" >&2; die "bench/instructions.sh failed"; }
  INSTRUCTIONS=$(cat "${ICOUNT_OUT:-$PWD/target/instructions}/instructions.json")
}

# Medians over the rounds, results.json in the shape of issue 14, the table and the targets.
report() {
  jq -R -s --argjson wasm "$(stat -c %s "$GATEWAY_WASM")" --argjson tasks "$TASKS_GROWTH" \
    --argjson sessions "$SESSIONS_GROWTH" --argjson v8 "$V8_US" --argjson instructions "$INSTRUCTIONS" --argjson cpu_paired "$PAIRED" "$JQ_DEFS"'
    [split("\n")[] | select(length > 0) | split("\t")
      | {cfg: .[0], round: .[1], rps: (.[2] | tonumber), p50: (.[3] | tonumber), p99: (.[4] | tonumber), cpu: (.[5] | tonumber), cpu1: (.[6] | tonumber)}]
    # The req/s ratios also taken within each round, then the median over rounds: a machine that
    # slows down for a round moves both sides of that round ratio, not one side of the medians.
    | (group_by(.round) | map(map({key: .cfg, value: .rps}) | from_entries)) as $rounds
    | ([["gateway", "native"], ["gateway", "probe"], ["gateway_legacy", "native"], ["gateway_legacy", "probe"],
        ["probe_host", "probe"], ["gateway", "probe_host"]]
       | map(.[0] as $a | .[1] as $b | select($rounds | all(.[$a] and .[$b]))
             | {key: "\($a)/\($b)", value: ($rounds | map(.[$a] / .[$b]) | median * 1000 | round / 1000)})
       | from_entries) as $paired
    | group_by(.cfg)
    | map({key: .[0].cfg, value: {rps: (map(.rps) | median | round), p50_us: (map(.p50) | median | round),
        p99_us: (map(.p99) | median | round), cpu_us: (map(.cpu) | median), cpu1_us: (map(.cpu1) | median)}})
    | {configs: from_entries, wasm_bytes: $wasm, rss_growth_100k_sessions_bytes: $sessions, rss_growth_100k_tasks_bytes: $tasks,
       v8_wasm_us_per_request: $v8, instructions_per_request: $instructions, rps_ratios_paired_by_round: $paired,
       cpu_paired_with_native: $cpu_paired}
    ' "$OUT/runs.tsv" >"$OUT/medians.json"
  jq --args '.configs |= with_entries(select(.key | IN($ARGS.positional[])) | .value |= del(.cpu_us, .cpu1_us))' \
    "${REPORTED[@]}" <"$OUT/medians.json" >"$OUT/results.json"
  echo
  echo "mcp-gateway-filter bench, $(date -u +%Y-%m-%d), $(nproc) CPU $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)," \
    "Envoy $("$ENVOY" --version | grep -o '[0-9]*\.[0-9]*\.[0-9]*' | head -n1), 1 worker, load average at start $LOAD_AT_START"
  echo "filter: $GATEWAY_WASM (project at $(git describe --always --dirty 2>/dev/null || echo unknown))"
  echo "$ROUNDS rounds x ${SECS} s, medians; legacy session handle: $SESSION_KIND; 16 connections: req/s and the" \
    "proxy's CPU us per request; 1 connection: CPU us per request, p50 and p99 latency in us"
  local cfg
  for cfg in "${CONFIGS[@]}"; do
    jq -r --arg cfg "$cfg" --arg name "${LABEL[$cfg]}" '
      (.configs.bare // .configs[$cfg]) as $a | .configs[$cfg] as $c |
      [$name, $c.rps, $c.rps / $a.rps, $c.cpu_us, $c.cpu_us - $a.cpu_us, $c.cpu1_us, $c.cpu1_us - $a.cpu1_us,
       $c.p50_us, $c.p50_us - $a.p50_us, $c.p99_us, $c.p99_us - $a.p99_us]
      | @tsv' "$OUT/medians.json"
  done | awk -F'\t' '
    BEGIN {
      printf "%-14s %7s %5s %6s %6s | %6s %6s %6s %5s %6s %6s\n", "", "req/s", "x A", "CPU", "+A", "CPU", "+A", "p50", "+A", "p99", "+A"
    }
    { printf "%-14s %7d %5.2f %6.1f %+6.1f | %6.1f %+6.1f %6d %+5d %6d %+6d\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 }'
  # The JSON field names follow issue 14; the figures are for MEMORY_COUNT of each.
  jq -r --arg n "$MEMORY_COUNT" '"wasm: \(.wasm_bytes) bytes; RSS growth: \(.rss_growth_100k_tasks_bytes) bytes for \($n) tasks, \(.rss_growth_100k_sessions_bytes) bytes for \($n) sessions"' \
    "$OUT/results.json"
  jq -r 'select(.v8_wasm_us_per_request != null) | .v8_wasm_us_per_request |
    "wasm code alone in V8 (bench/v8, no Envoy), us per request: C \(.gateway), C-legacy \(.gateway_legacy), P \(.probe)"' \
    "$OUT/results.json"
  jq -r "$JQ_DEFS"'.configs as $c | select([$c[]] | length == 6) |
    ($c.gateway.p50_us - $c.bare.p50_us) as $gp | ($c.probe.p50_us - $c.bare.p50_us) as $pp |
    "targets: C rps \(r($c.gateway.rps / $c.native.rps)) x B (>= 0.95 \(mark($c.gateway.rps >= 0.95 * $c.native.rps))), " +
    "\(r($c.gateway.rps / $c.probe.rps)) x P (>= 0.90 \(mark($c.gateway.rps >= 0.9 * $c.probe.rps)))",
    "         C-legacy rps \(r($c.gateway_legacy.rps / $c.native.rps)) x B (\(mark($c.gateway_legacy.rps >= 0.95 * $c.native.rps))), " +
    "\(r($c.gateway_legacy.rps / $c.probe.rps)) x P (\(mark($c.gateway_legacy.rps >= 0.9 * $c.probe.rps)))",
    "         C added p50 \($gp) us vs P added p50 \($pp) us (<= 1.5 x \(mark($gp <= 1.5 * $pp)))",
    if .rss_growth_100k_tasks_bytes == null then empty else
    "         memory: tasks \(mark(.rss_growth_100k_tasks_bytes <= 67108864)), sessions \(mark(.rss_growth_100k_sessions_bytes <= 67108864)) (<= 64 MiB each)" end' \
    "$OUT/results.json"
  # The proxy's own CPU per request moves less than req/s when other work shares the machine.
  jq -r "$JQ_DEFS"'.configs as $c | select($c.gateway and $c.native and $c.probe) |
    "cpu/req: C \(r($c.gateway.cpu_us / $c.native.cpu_us)) x B, \(r($c.gateway.cpu_us / $c.probe.cpu_us)) x P" +
    if $c.gateway_legacy then "; C-legacy \(r($c.gateway_legacy.cpu_us / $c.native.cpu_us)) x B, \(r($c.gateway_legacy.cpu_us / $c.probe.cpu_us)) x P" else "" end +
    " (proxy CPU per request at 16 connections)"' "$OUT/medians.json"
  # What the host calls alone allow: no filter making the gateway's calls can do better than this.
  jq -r "$JQ_DEFS"'.configs as $c | select($c.probe_host and $c.probe and $c.gateway) |
    "floor: P+hostcalls \(r($c.probe_host.rps / $c.probe.rps)) x P in req/s, \(r($c.probe_host.cpu_us / $c.probe.cpu_us)) x P in CPU/req," +
    " +\(d($c.probe_host.p50_us - $c.probe.p50_us)) us p50; C above it: \(d($c.gateway.cpu_us - $c.probe_host.cpu_us)) us CPU/req" +
    " (the filter'"'"'s own code), \(r($c.gateway.rps / $c.probe_host.rps)) x its req/s"' "$OUT/medians.json"
  jq -r '.rps_ratios_paired_by_round | select(length > 0) |
    "req/s ratios within each round, median over rounds: " + (to_entries | map("\(.key) \(.value)") | join(", "))' \
    "$OUT/medians.json"
  jq -r "$JQ_DEFS"'.cpu_paired_with_native | select(length > 0) |
    "paired with B, both under load at once (medians over rounds): " +
    (to_entries | map("\(.key | sub("/native$"; "")) \(.value.cpu_us_difference | signed) us CPU/req," +
      " so \(.value.cpu_ratio_b_over_a) x B in req/s (>= 0.95 \(mark(.value.cpu_ratio_b_over_a >= 0.95)))") | join("; "))' "$OUT/medians.json"
  if [ "$INSTRUCTIONS" != null ]; then
    echo "instructions per request (callgrind, bench/instructions.sh):"
    sed -n '/instr\/req/,/^every configuration/p' "$OUT/instructions.txt" | sed '$d'
    jq -r "$JQ_DEFS"'.instructions_per_request as $i | select($i.gateway and $i.native and $i.probe) |
      "in instructions: C \(r3($i.gateway / $i.native)) x B, \(r3($i.gateway / $i.probe)) x P" +
      (if $i.gateway_legacy then "; C-legacy \(r3($i.gateway_legacy / $i.native)) x B, \(r3($i.gateway_legacy / $i.probe)) x P" else "" end) +
      (if $i.probe_host then "; floor P+hostcalls \(r3($i.probe_host / $i.probe)) x P" else "" end)' "$OUT/medians.json"
  fi
  echo "results: $OUT/results.json (every run: $OUT/runs.tsv)"
}

# The Envoy instances the selected configurations need, each once.
instances() {
  local cfg
  for cfg in "${CONFIGS[@]}"; do
    [ -n "${INSTANCE[$cfg]:-}" ] || die "unknown configuration $cfg (known: ${!INSTANCE[*]})"
    echo "${INSTANCE[$cfg]}"
  done | awk '!seen[$0]++'
}

main() {
  LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
  prepare
  start_envoy upstream "$BENCH_DIR/envoy/upstream.yaml"
  UPSTREAM_PORT=$PORT
  local instance round
  for instance in $(instances); do
    start_proxy "$instance"
  done
  smoke
  SESSION_KIND=none
  [[ " ${CONFIGS[*]} " != *" gateway_legacy "* ]] || open_session
  : >"$OUT/runs.tsv"
  for round in $(seq 1 "$ROUNDS"); do
    measure_round "$round"
  done
  measure_paired
  check_connection_reuse
  TASKS_GROWTH=null SESSIONS_GROWTH=null
  [ "$MEMORY_COUNT" = 0 ] || measure_memory
  measure_wasm_code
  measure_instructions
  report
}

# Sourced (e.g. by profile.sh), it only defines the functions.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi
