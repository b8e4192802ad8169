# mcp-gateway-filter. A newcomer needs two commands: `make run` and `make test`.
SHELL := /bin/bash
# ENVOY_BIN overrides the Envoy that `make setup` unpacks into .tools/envoy/envoy.
WASM := target/wasm32-wasip1/release/filter.wasm
SUB ?= alice
SCOPE ?= files:read files:write reports:write
TTL ?= 600

.PHONY: setup build run test unit integration clients bench bench-smoke token envoy-yaml validate clean

setup:
	@./scripts/setup-envoy.sh
	@rustup target list --installed 2>/dev/null | grep -q wasm32-wasip1 || rustup target add wasm32-wasip1

build: setup
	cargo build -p filter --target wasm32-wasip1 --release
	@# Only the callbacks the filter implements stay exported: Envoy calls each one per request.
	cargo run -q --release -p wasm-exports -- $(WASM) filter/callbacks
	@echo "filter.wasm: $$(stat -c %s $(WASM)) bytes ($(WASM))"

unit:
	cargo test -p filter -p wasm-exports

integration: build clients
	cargo build -p integration --bins
	cargo test -p integration -- --test-threads 2

# Independent MCP client SDKs for integration/tests/clients.rs: Python `mcp` in .tools/pyenv,
# the TypeScript SDKs in integration/clients/ts/node_modules; each reinstalled only when its
# pinned versions change.
CLIENTS_PY := .tools/pyenv/.installed
CLIENTS_TS := integration/clients/ts/node_modules/.installed

clients: $(CLIENTS_PY) $(CLIENTS_TS)

$(CLIENTS_PY): integration/clients/python/requirements.txt
	rm -rf .tools/pyenv && python3 -m venv .tools/pyenv
	.tools/pyenv/bin/pip install --quiet --disable-pip-version-check -r $<
	touch $@

$(CLIENTS_TS): integration/clients/ts/package.json integration/clients/ts/package-lock.json
	cd integration/clients/ts && npm ci --no-audit --no-fund
	touch $@

test: unit integration bench-smoke

run: build
	cargo build -p integration --bins
	./scripts/run-demo.sh

token:
	@cargo run -q -p integration --bin mcp-token -- --sub "$(SUB)" --scope "$(SCOPE)" --ttl "$(TTL)"

envoy-yaml:
	cargo run -q -p integration --bin render-envoy > envoy/envoy.yaml

bench: build
	./bench/run.sh

# make bench end to end in about two minutes: the harness and its report, not the targets.
bench-smoke: build
	./bench/smoke.sh

clean:
	cargo clean
