#!/usr/bin/env bash
# Starts the demo in the foreground: the demo IdP, the MCP backends, then Envoy with the filter.
# Ctrl-C stops every child. Run through `make run` (which installs and builds first).
set -euo pipefail
cd "$(dirname "$0")/.."
ENVOY="${ENVOY_BIN:-.tools/envoy/envoy}"
BIN=target/debug
pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

"$BIN/mcp-token" keys --dir .demo
mkdir -p .demo/logs
"$BIN/mcp-token" idp --listen 127.0.0.1:18000 --dir .demo >.demo/logs/idp.log 2>&1 & pids+=($!)
gw=http://127.0.0.1:10000
for spec in files:files-1:18001 files:files-2:18002 reports:reports-1:18003; do
  IFS=: read -r backend replica port <<<"$spec"
  "$BIN/demo-backend" --backend "$backend" --replica "$replica" --listen "127.0.0.1:$port" \
    --jwks-url "$gw/.well-known/jwks.json" --gateway-url "$gw" >".demo/logs/$replica.log" 2>&1 & pids+=($!)
done

MCP_GW_SIGNING_KEY="$(cat .demo/gateway.pem)"
MCP_GW_SEAL_KEYS="$(tr -d '\n' <.demo/seal.keys)"
MCP_GW_HASH_KEY="$(tr -d '\n' <.demo/hash.key)"
export MCP_GW_SIGNING_KEY MCP_GW_SEAL_KEYS MCP_GW_HASH_KEY
# The audit lines come from the access log: flush it every 200 ms rather than Envoy's 10 s.
"$ENVOY" -c envoy/envoy.yaml --concurrency 2 --disable-hot-restart -l info --file-flush-interval-msec 200 \
  --log-format '[%Y-%m-%d %T.%e][%l][%n] %v' 2>&1 | tee .demo/logs/envoy.log & pids+=($!)

for _ in $(seq 1 100); do
  if curl -fsS 127.0.0.1:9901/ready >/dev/null 2>&1; then break; fi
  sleep 0.1
done
cat <<INFO

mcp-gateway-filter demo is up (Ctrl-C stops everything):
  gateway            http://127.0.0.1:10000/mcp/files   http://127.0.0.1:10000/mcp/reports
  Envoy admin        http://127.0.0.1:9901/stats/prometheus
  gateway admin      http://127.0.0.1:10001/revoke   (loopback only)
  backends           files 127.0.0.1:18001, 127.0.0.1:18002; reports 127.0.0.1:18003
  demo IdP JWKS      http://127.0.0.1:18000/jwks.json
  logs               .demo/logs/

Get a token:   TOKEN=\$(make -s token SUB=alice SCOPE="files:read reports:write")
Then see README.md, "Demo", for curl calls in both protocol eras.

INFO
wait
