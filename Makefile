# mcp-gateway-filter. A newcomer needs two commands: `make run` and `make test`.
SHELL := /bin/bash
# ENVOY_BIN overrides the Envoy that `make setup` unpacks into .tools/envoy/envoy.
WASM := target/wasm32-wasip1/release/filter.wasm
SUB ?= alice
SCOPE ?= files:read files:write reports:write
TTL ?= 600

.PHONY: setup build run test unit integration bench token envoy-yaml validate clean

setup:
	@./scripts/setup-envoy.sh
	@rustup target list --installed 2>/dev/null | grep -q wasm32-wasip1 || rustup target add wasm32-wasip1

build: setup
	cargo build -p filter --target wasm32-wasip1 --release
	@echo "filter.wasm: $$(stat -c %s $(WASM)) bytes ($(WASM))"

unit:
	cargo test -p filter

integration: build
	cargo build -p integration --bins
	cargo test -p integration -- --test-threads 2

test: unit integration

run: build
	cargo build -p integration --bins
	./scripts/run-demo.sh

token:
	@cargo run -q -p integration --bin mcp-token -- --sub "$(SUB)" --scope "$(SCOPE)" --ttl "$(TTL)"

envoy-yaml:
	cargo run -q -p integration --bin render-envoy > envoy/envoy.yaml

bench: build
	./bench/run.sh

clean:
	cargo clean
