#!/usr/bin/env bash
# bench/instructions.sh [CONFIG...]: machine instructions per request in each configuration's
# Envoy, counted by valgrind's callgrind. Time per request moves by 10-25 % between runs on a
# shared VM; an instruction count does not move with what else the machine does, so it shows
# differences between configurations, or between two builds (gateway_base with BENCH_BASE_WASM),
# that time cannot resolve. It counts work, not time: cache misses, which Envoy's work between
# a filter's callbacks causes, are not in it.
#
# Each configuration's proxy Envoy (one worker, as make bench) runs under callgrind on its own,
# with the upstream outside valgrind. After a warm-up (so V8 has compiled and tiered up the
# module), the count is zeroed; an idle spell prices Envoy's timers per second, then a measured
# wrk run; per request = (measured count - timers over its duration) / requests. The count is
# also split by where the instructions ran: Envoy's binary (its C++, V8's runtime and builtins), the
# C library, and the code V8 generated (the Wasm module compiled, and V8's call stubs).
#
#   ICOUNT_SECS=5 measured seconds, ICOUNT_CONNS=16 connections, ICOUNT_WARMUP=5 seconds,
#   ICOUNT_OUT=target/instructions where the counts and dumps go
#   (default configurations: bare native probe probe_host gateway gateway_legacy)
set -euo pipefail
cd "$(dirname "$0")/.."
# run.sh defines the configurations it is given (probe:GROUPS among them) as it is sourced.
BENCH_CONFIGS="${*:-bare native probe probe_host gateway gateway_legacy}"
# Its own folder, so that make bench's results stay; set before run.sh derives its paths from it.
BENCH_OUT=${ICOUNT_OUT:-$PWD/target/instructions}
# shellcheck source=bench/run.sh
. bench/run.sh
ICOUNT_SECS=${ICOUNT_SECS:-5} ICOUNT_CONNS=${ICOUNT_CONNS:-16} ICOUNT_WARMUP=${ICOUNT_WARMUP:-5}
need valgrind valgrind
export BENCH_READY_SECS=${BENCH_READY_SECS:-300}

# callgrind_dump PID FILE: dumps the process's count so far as FILE.N and prints that path.
callgrind_dump() {
  local pid=$1 file=$2
  rm -f "$file".*
  callgrind_control -d "$pid" >/dev/null
  local waited=0
  until ls "$file".* >/dev/null 2>&1; do
    waited=$((waited + 1))
    [ "$waited" -lt 600 ] || die "callgrind wrote no dump for $pid"
    sleep 0.1
  done
  sleep 0.5
  ls "$file".* | tail -n1
}

# The total count of a dump, and its split by where the code lies: Envoy's binary (some of its
# text valgrind cannot name: low addresses without an object), code V8 generated (no object, high
# addresses: the compiled Wasm module and V8's call stubs), and shared libraries (libc).
dump_counts() {
  callgrind_annotate --threshold=100 "$1" | awk '
    /PROGRAM TOTALS/ { gsub(",", "", $1); total = $1 }
    /^ *[0-9,]+ \(/ && !/PROGRAM TOTALS/ {
      n = $1; gsub(",", "", n)
      if ($NF ~ /\/envoy\]$/) envoy += n
      else if ($NF == "[???]") {
        # Above 4 GiB (more than 8 hex digits): the V8 code space; below it: the Envoy binary.
        address = $0; sub(/.*\?\?\?:0x/, "", address); sub(/ .*/, "", address); sub(/^0+/, "", address)
        if (length(address) > 8) jit += n; else envoy += n
      }
      else other += n
    }
    END { printf "%d %d %d %d\n", total, envoy, jit, other }'
}

prepare
start_envoy upstream "$BENCH_DIR/envoy/upstream.yaml"
UPSTREAM_PORT=$PORT
REAL_ENVOY=$ENVOY
cat >"$OUT/valgrind-envoy" <<WRAPPER
#!/bin/sh
# Instrumented from the callgrind_control -i on after start-up: starting is slow enough as it is.
exec valgrind --tool=callgrind --smc-check=all-non-file --instr-atstart=no \\
  --callgrind-out-file="$OUT/callgrind.%p" "$REAL_ENVOY" "\$@"
WRAPPER
chmod +x "$OUT/valgrind-envoy"
ENVOY=$OUT/valgrind-envoy
printf 'bench: instructions per request (callgrind), %s connections, %s s measured\n' "$ICOUNT_CONNS" "$ICOUNT_SECS"
: >"$OUT/instructions.tsv"
for cfg in "${CONFIGS[@]}"; do
  instance=${INSTANCE[$cfg]}
  [ -f "$OUT/$instance.pid" ] || start_proxy "$instance"
  pid=$(cat "$OUT/$instance.pid")
  file=$OUT/requests/${REQUEST[$cfg]}.http
  callgrind_control -i on "$pid" >/dev/null
  [ "${REQUEST[$cfg]}" != legacy ] || grep -q '^Mcp-Session-Id' "$file" || open_session
  wrk_run "$ICOUNT_WARMUP" "$ICOUNT_CONNS" "$(url "$instance")" post.lua "$file" >/dev/null
  t0=$(date +%s%N)
  callgrind_control -z "$pid" >/dev/null
  sleep 2
  idle_dump=$(callgrind_dump "$pid" "$OUT/callgrind.$pid")
  idle_us=$((($(date +%s%N) - t0) / 1000))
  read -r idle _ < <(dump_counts "$idle_dump")
  callgrind_control -z "$pid" >/dev/null
  result=$(wrk_run "$ICOUNT_SECS" "$ICOUNT_CONNS" "$(url "$instance")" post.lua "$file")
  read -r total envoy jit other < <(dump_counts "$(callgrind_dump "$pid" "$OUT/callgrind.$pid")")
  requests=$(field requests "$result")
  duration=$(field duration_us "$result")
  # Envoy's timers over the measured run, at the idle rate, are not the requests' work.
  timers=$(awk -v i="$idle" -v t="$idle_us" -v d="$duration" 'BEGIN { printf "%d", i / t * d }')
  per_request=$(((total - timers) / requests))
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$cfg" "$per_request" "$requests" "$total" "$timers" "$envoy" "$jit" "$other" \
    >>"$OUT/instructions.tsv"
  printf 'bench: %-14s %6s requests, %12s instructions (timers %s)\n' "$cfg" "$requests" "$total" "$timers"
  # valgrind makes an idle Envoy slow too: stop each one as soon as no later configuration needs it.
  later=$(printf '%s\n' "${CONFIGS[@]}" | awk -v c="$cfg" 'found { print } $0 == c { found = 1 }')
  grep -qx "$instance" <(for c in $later; do echo "${INSTANCE[$c]}"; done) || { kill "$pid"; wait "$pid" 2>/dev/null || true; rm -f "$OUT/$instance.pid"; }
done
stop_all
awk -F'\t' -v labels="$(for c in "${CONFIGS[@]}"; do printf '%s=%s;' "$c" "${LABEL[$c]}"; done)" '
  BEGIN {
    n = split(labels, parts, ";")
    for (i = 1; i <= n; i++) { eq = index(parts[i], "="); label[substr(parts[i], 1, eq - 1)] = substr(parts[i], eq + 1) }
    printf "%-16s %9s %6s %9s | %9s %9s %9s\n", "", "instr/req", "x A", "+A", "envoy", "generated", "libc etc"
  }
  {
    per = $2
    if (NR == 1) base = per
    # The split is of the whole count (timers included), scaled to the per-request figure.
    f = per / $4
    printf "%-16s %9d %6.2f %+9d | %9d %9d %9d\n", label[$1], per, per / base, per - base, $6 * f, $7 * f, $8 * f
  }' "$OUT/instructions.tsv"
# Per request by configuration, for make bench's results.json.
awk -F'\t' '{ printf "%s\"%s\": %d", (NR > 1 ? ", " : "{"), $1, $2 } END { print "}" }' "$OUT/instructions.tsv" \
  >"$OUT/instructions.json"
echo "every configuration: $OUT/instructions.tsv; callgrind dumps: $OUT/callgrind.*"
