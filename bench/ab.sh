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
# Each sends its own request kind, so that C-legacy pairs with B as make bench compares them.
file_a=$OUT/requests/${REQUEST[$A]}.http file_b=$OUT/requests/${REQUEST[$B]}.http
pid_a=$(cat "$OUT/${INSTANCE[$A]}.pid") pid_b=$(cat "$OUT/${INSTANCE[$B]}.pid")
wrk_run 2 8 "$(url "${INSTANCE[$A]}")" post.lua "$file_a" >/dev/null
wrk_run 2 8 "$(url "${INSTANCE[$B]}")" post.lua "$file_b" >/dev/null
: >"$OUT/ab.tsv"
for round in $(seq 1 "$AB_ROUNDS"); do
  ticks_a=$(cpu_ticks "$pid_a") ticks_b=$(cpu_ticks "$pid_b")
  if [ "${AB_ALTERNATE:-0}" = 1 ]; then
    wrk_run "$AB_SECS" "$AB_CONNS" "$(url "${INSTANCE[$A]}")" post.lua "$file_a" >"$OUT/ab-a.txt"
    wrk_run "$AB_SECS" "$AB_CONNS" "$(url "${INSTANCE[$B]}")" post.lua "$file_b" >"$OUT/ab-b.txt"
  else
    wrk_run "$AB_SECS" "$AB_CONNS" "$(url "${INSTANCE[$A]}")" post.lua "$file_a" >"$OUT/ab-a.txt" &
    load_a=$!
    wrk_run "$AB_SECS" "$AB_CONNS" "$(url "${INSTANCE[$B]}")" post.lua "$file_b" >"$OUT/ab-b.txt" &
    load_b=$!
    # Not a bare `wait`: the Envoys are this shell's children too.
    wait "$load_a" "$load_b"
  fi
  awk -v ta=$(($(cpu_ticks "$pid_a") - ticks_a)) -v tb=$(($(cpu_ticks "$pid_b") - ticks_b)) \
    -v na="$(field requests "$(cat "$OUT/ab-a.txt")")" -v nb="$(field requests "$(cat "$OUT/ab-b.txt")")" \
    -v hz="$(getconf CLK_TCK)" -v a="$A" -v b="$B" -v r="$round" 'BEGIN {
      ca = ta * 1e6 / hz / na; cb = tb * 1e6 / hz / nb
      printf "ab: round %d  %s %.1f us/req (%d req)  %s %.1f us/req (%d req)  difference %+.1f us\n", r, a, ca, na, b, cb, nb, ca - cb
      printf "%.2f\n", ca - cb > "/dev/stderr"
    }' 2>>"$OUT/ab.tsv"
done
sort -n "$OUT/ab.tsv" | awk -v a="$A" -v b="$B" '{ d[NR] = $1 } END {
  m = NR % 2 ? d[(NR + 1) / 2] : (d[NR / 2] + d[NR / 2 + 1]) / 2
  printf "ab: %s costs %+.1f us of proxy CPU per request against %s (median of %d paired rounds)\n", a, m, b, NR }'
