#!/usr/bin/env bash
# bench/smoke.sh: `make bench` end to end in about two minutes, for `make test`. It proves the
# harness on a fresh machine, not the targets: one short round of every configuration, one paired
# round, the memory runs over 2,000 tasks and sessions, the V8-only pass, and two configurations
# counted under callgrind. Then it checks what the bench reports and what C really did:
#   - results.json has the shape of issue 14, every figure present and plausible;
#   - the gateway's audit lines show C's requests allowed on the full path (a minted token for
#     the backend, the task bound, the legacy session opened), and no bearer token.
# A bench that measured refusals, or wrote a report missing a field, fails here.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$PWD/target/bench-smoke
results=$OUT/results.json
# shellcheck source=bench/lib.sh
. bench/lib.sh

BENCH_OUT=$OUT BENCH_SECONDS=1 BENCH_ROUNDS=1 BENCH_WARMUP=1 BENCH_PAIRED_ROUNDS=1 BENCH_PAIRED_SECONDS=1 \
  BENCH_MEMORY_COUNT=2000 BENCH_V8_REQUESTS=5000 V8_BENCH_WARMUP=2000 V8_BENCH_REPS=1 BENCH_INSTRUCTIONS=0 \
  bench/run.sh >"$OUT.log" 2>&1 || { tail -n 40 "$OUT.log" >&2; die "bench/run.sh failed (whole output: $OUT.log)"; }

# The report: the six configurations of issue 14 with their figures, and the run's other parts.
jq -e --argjson wasm "$(stat -c %s target/wasm32-wasip1/release/filter.wasm)" '
  (.configs | keys) == (["bare", "native", "probe", "gateway", "gateway_legacy", "gateway_cold"] | sort)
  and all(.configs[]; .rps > 0 and .p50_us > 0 and .p99_us >= .p50_us)
  and .wasm_bytes == $wasm
  and (.rss_growth_100k_sessions_bytes | type) == "number" and (.rss_growth_100k_tasks_bytes | type) == "number"
  and all(.v8_wasm_us_per_request | .gateway, .gateway_legacy, .probe; . > 0)
  and all(.cpu_paired_with_native | ."gateway/native", ."gateway_legacy/native"; .cpu_ratio_b_over_a > 0)
' "$results" >/dev/null || { cat "$results" >&2; die "results.json lacks a figure of issue 14"; }
grep -q '^targets: C rps' "$OUT.log" || die "the printed report has no targets line"

# What C did, from its audit lines (the access log of the gateway's Envoy).
audit=$OUT/audit.jsonl
sed -n 's/^mcp_audit: //p' "$OUT/logs/gateway.log" "$OUT/logs/gateway_cold.log" >"$audit"
[ -s "$audit" ] || die "the gateway wrote no audit line"
# Status 0: the few requests in flight when a wrk run stopped, which got no response.
jq -e -s '
  def full_path: .decision == "allow" and .backend == "files" and .aud == "files" and .scope == "files:read"
    and .method == "tools/call" and .name == "echo" and (.jti | length) > 0 and .act == ["mcp-gateway"];
  (map(select(.era == "modern")) | length > 0 and all(full_path and .task == "bench-task" and .session == ""))
  and (map(select(.era == "legacy" and .method == "tools/call")) | length > 0 and all(full_path and (.session | length) > 0))
  and all(.decision == "allow" and (.status == 200 or .status == 0))
  and (map(select(.status == 200)) | length) > 0.99 * length
' "$audit" >/dev/null || { head -n 3 "$audit" >&2; die "C's audit lines do not show the full path allowed"; }
token=$(sed -n 's/^Authorization: Bearer //p' "$OUT/requests/modern.http")
[ -n "$token" ] || die "no bearer token in the bench request"
if grep -rqF -- "$token" "$OUT/logs"; then
  die "a bearer token reached a log"
fi

# The instruction counter, on two configurations, briefly.
ICOUNT_OUT=$OUT/instructions ICOUNT_SECS=1 ICOUNT_WARMUP=2 bench/instructions.sh bare gateway >"$OUT.icount.log" 2>&1 ||
  { tail -n 20 "$OUT.icount.log" >&2; die "bench/instructions.sh failed"; }
jq -e '.bare > 0 and .gateway > .bare' "$OUT/instructions/instructions.json" >/dev/null ||
  die "instruction counts missing: $(cat "$OUT/instructions/instructions.json")"

echo "bench smoke: ok ($(jq -c '.configs | map_values(.rps)' "$results") req/s, one short round: not figures to compare)"
