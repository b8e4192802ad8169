#!/usr/bin/env bash
# bench/profile.sh [CONFIG] [SECONDS]: where one configuration's proxy spends its CPU.
# Starts the upstream and that configuration's Envoy as `make bench` does, loads it with 16
# connections, samples the Envoy process with perf, and prints the hottest DSOs and symbols.
# Wasm code compiled by V8 has no symbols: it shows as the anonymous JIT mapping ([unknown] or
# perf-<pid>.map); everything else (Envoy's C++ behind each proxy-wasm host call) is named.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/run.sh
. bench/run.sh
CONFIG=${1:-gateway}
PROFILE_SECS=${2:-10}
[ -n "${INSTANCE[$CONFIG]:-}" ] || die "unknown configuration $CONFIG (known: ${!INSTANCE[*]})"
command -v perf >/dev/null || die "perf is not installed"

prepare
start_envoy upstream "$BENCH_DIR/envoy/upstream.yaml"
UPSTREAM_PORT=$PORT
instance=${INSTANCE[$CONFIG]}
start_proxy "$instance"
[ "$CONFIG" != gateway_legacy ] || open_session
file=$OUT/requests/${REQUEST[$CONFIG]}.http
wrk_run 2 16 "$(url "$instance")" post.lua "$file" >/dev/null
wrk_run $((PROFILE_SECS + 2)) 16 "$(url "$instance")" post.lua "$file" >"$OUT/profile-load.txt" &
load=$!
sleep 1
perf record -q -F 2999 -p "$(cat "$OUT/$instance.pid")" -o "$OUT/perf.data" -- sleep "$PROFILE_SECS" 2>/dev/null
wait "$load"
echo "load: $(cat "$OUT/profile-load.txt")"
perf report -i "$OUT/perf.data" --no-children --sort dso --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -15
perf report -i "$OUT/perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -"${PROFILE_LINES:-40}"
