#!/usr/bin/env bash
# bench/ab.sh CONFIG_A CONFIG_B [SECONDS] [ROUNDS]: a paired A/B of two configurations of
# bench/run.sh. Both proxies are loaded at the same time (8 connections each, one wrk each), and
# each round prints the CPU microseconds per request of each proxy and their difference; then
# the median difference. Whatever else the machine does hits both alike, so a difference of 1-2 us
# shows, where interleaved runs (make bench) move by 5-10 % between rounds. AB_ALTERNATE=1 loads
# them one after the other instead (16 connections, A then B in each round): no contention
# between the two, more rounds needed. AB_CONNS sets the connections per wrk (8, or 16 when
# alternating): AB_CONNS=1 prices a request on its own critical path, as the p50 runs do. Each
# configuration sends its own request kind (C-legacy its sealed-session call, B the modern one).
#
#   bench/ab.sh gateway gateway_nolog                  # what the audit access log costs
#   bench/ab.sh gateway_legacy native                  # C-legacy against Envoy's native filter
#   BENCH_BASE_WASM=old.wasm bench/ab.sh gateway gateway_base   # this build against another
set -euo pipefail
cd "$(dirname "$0")/.."
A=${1:?usage: bench/ab.sh CONFIG_A CONFIG_B [SECONDS] [ROUNDS]} B=${2:?usage: bench/ab.sh CONFIG_A CONFIG_B [SECONDS] [ROUNDS]}
AB_SECS=${3:-8} AB_ROUNDS=${4:-5}
AB_CONNS=${AB_CONNS:-$([ "${AB_ALTERNATE:-0}" = 1 ] && echo 16 || echo 8)}
# run.sh defines the configurations it is given (probe:GROUPS among them) as it is sourced.
BENCH_CONFIGS="$A $B"
# shellcheck source=bench/run.sh
. bench/run.sh
prepare
start_envoy upstream "$BENCH_DIR/envoy/upstream.yaml"
UPSTREAM_PORT=$PORT
for instance in $(instances); do
  start_proxy "$instance"
done
[[ " ${REQUEST[$A]} ${REQUEST[$B]} " != *" legacy "* ]] || open_session
paired_rounds "$A" "$B" "$AB_SECS" "$AB_ROUNDS" "$AB_CONNS" "${AB_ALTERNATE:-0}"
paired_summary "$A" "$B" | jq -r --arg a "$A" --arg b "$B" "$JQ_DEFS"'
  "ab: \($a) costs \(.cpu_us_difference | signed) us of proxy CPU per request against \($b) (median of \(.rounds) paired rounds; \($b)/\($a) CPU \(.cpu_ratio_b_over_a))"'
