# One entry point for every task: CI (.ci/run) and local hooks call these targets.
# `make` or `make help` lists them.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
# Steps run in the order written: cheap checks fail first, and cargo parallelises itself.
.NOTPARALLEL:

# One cargo target dir for every target; honours CARGO_TARGET_DIR when it is set. Absolute,
# because some targets run their tools from a subdirectory (clients/python, clients/typescript).
TARGET_DIR := $(abspath $(or $(CARGO_TARGET_DIR),target))
BIN := $(TARGET_DIR)/release/wse-server
WHEELS := $(TARGET_DIR)/wheels
export WSE_SERVER ?= $(BIN)
# A WSE_SERVER given in the environment is used as it is; otherwise the client targets
# build the release binary first.
SERVER_BUILD := $(if $(filter environment,$(origin WSE_SERVER)),,build)

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z][a-z0-9-]*:.*## ' $(MAKEFILE_LIST) \
		| sed -E 's/^([a-z0-9-]+):.*## (.*)/\1\t\2/' \
		| while IFS=$$'\t' read -r target text; do printf '  %-20s %s\n' "$$target" "$$text"; done

.PHONY: build
build: ## release build of the whole workspace
	cargo build --release --workspace

.PHONY: run
run: build ## run wse-server (0.0.0.0:5006); flags in ARGS, e.g. make run ARGS=--allow-client-publish
	$(BIN) $(ARGS)

.PHONY: deps
deps: ## install the Debian packages the tests need (apt, idempotent)
	scripts/install-deps.sh

.PHONY: venv
venv: ## create .venv with the pinned Python test tools
	scripts/setup-venv.sh

.PHONY: wstest-venv
wstest-venv: ## create .venv/wstest, Python 2.7 with the reference Autobahn wstest
	scripts/setup-wstest.sh

.PHONY: fmt-check
fmt-check: ## check formatting (rustfmt)
	cargo fmt --all --check

.PHONY: width-check
width-check: ## fail on Rust lines over 100 columns, comments included
	scripts/check-comment-width.sh

.PHONY: lint-scripts
lint-scripts: ## shellcheck the scripts
	shellcheck .ci/run scripts/*.sh

.PHONY: clippy
clippy: ## clippy on all targets, warnings are errors
	cargo clippy --workspace --all-targets -- -D warnings

.PHONY: doc
doc: ## build the docs, warnings are errors
	RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps

.PHONY: unit
unit: ## unit and integration tests (cargo test)
	cargo test --workspace

.PHONY: smoke
smoke: venv build ## Python `websockets` client against the release wse-server (pytest)
	.venv/bin/python -m pytest -q tests/python

# kosoku 0.1.0 (its only release) cannot run 12.* and 13.*: the echoes reach its case code
# as str. The permessage-deflate subset therefore runs under the reference wstest.
.PHONY: conformance
conformance: deps venv wstest-venv build ## Autobahn 1-7, 9, 10 via kosoku; a 12/13 subset via wstest
	scripts/autobahn.sh kosoku
	scripts/autobahn.sh wstest scripts/autobahn/fuzzingclient-deflate.json

.PHONY: conformance-wstest
conformance-wstest: deps wstest-venv build ## cases 1-7, 9, 10 via the reference wstest (Python 2.7)
	scripts/autobahn.sh wstest

.PHONY: conformance-deflate-full
conformance-deflate-full: deps wstest-venv build ## every permessage-deflate case, 12.* and 13.*, via wstest
	scripts/autobahn.sh wstest scripts/autobahn/fuzzingclient-deflate-full.json

.PHONY: wse25-venv
wse25-venv: ## create .venv/wse25, CPython 3.12 with the published wse-server 2.5.1
	scripts/setup-wse25-venv.sh

.PHONY: tsclient-test
tsclient-test: ## TypeScript client: npm ci, typecheck, prettier, eslint, vitest unit tests
	scripts/tsclient.sh test

.PHONY: tsclient-e2e
tsclient-e2e: deps $(SERVER_BUILD) wse25-venv ## TypeScript client in headless Chromium and Node vs wse-server, and vs 2.5.1
	scripts/tsclient.sh e2e

.PHONY: tsclient-demo
tsclient-demo: $(SERVER_BUILD) ## live dashboard: wse-server, a publisher and the page on http://127.0.0.1:5173
	scripts/tsclient.sh demo

.PHONY: tsclient-screenshot
tsclient-screenshot: deps $(SERVER_BUILD) ## regenerate clients/typescript/docs/demo.png from a live demo
	scripts/tsclient.sh screenshot

.PHONY: membench
membench: build ## resident memory per idle connection at 10,000 connections
	scripts/membench.sh

# The Python client (clients/python) tests in venvs of their own: .venv holds the published
# wse-client 2.5.1, which has the same import name. They need the server binary: built here
# unless WSE_SERVER names another one.
PYCLIENT := .venv/pyclient/bin
PYCLIENT_SERVER := $(if $(filter $(BIN),$(WSE_SERVER)),build,)

.PHONY: pyclient-venv
pyclient-venv: ## create .venv/pyclient (Python 3.11) with the client and its pinned test tools
	scripts/setup-pyclient.sh main

.PHONY: pyclient-lint
pyclient-lint: pyclient-venv ## Python client: ruff check, ruff format --check, mypy --strict
	cd clients/python && ../../$(PYCLIENT)/ruff check . && ../../$(PYCLIENT)/ruff format --check .
	cd clients/python && ../../$(PYCLIENT)/mypy

# tests/test_rust_server.py drives the client against RustWSEServer from our wheel.
.PHONY: pyclient-wheel
pyclient-wheel: pyclient-venv py-build ## install the wse_server wheel of target/wheels into .venv/pyclient
	$(PYCLIENT)/pip install --quiet --disable-pip-version-check --force-reinstall --no-deps \
		$(WHEELS)/wse_server-*.whl

.PHONY: pyclient-test
pyclient-test: pyclient-wheel pyclient-lint $(PYCLIENT_SERVER) ## Python client: unit tests, integration tests against wse-server and RustWSEServer, branch coverage >= 90 %
	cd clients/python && ../../$(PYCLIENT)/python -m pytest tests \
		--cov=wse_client --cov-branch --cov-report=term-missing:skip-covered --cov-fail-under=90

.PHONY: pyclient-compat
pyclient-compat: ## Python client against wse-server 2.5.1 from PyPI (CPython 3.12 from pyenv)
	scripts/setup-pyclient.sh compat
	cd clients/python && ../../.venv/pyclient-compat/bin/python -m pytest compat

.PHONY: pyclient-bench
pyclient-bench: venv pyclient-venv $(PYCLIENT_SERVER) ## events/s one client receives, messages/s it sends, next to wse-client 2.5.1
	$(PYCLIENT)/python clients/python/bench/client_bench.py run --server $(WSE_SERVER)

.PHONY: fanout-bench
fanout-bench: build ## deliveries per second to 1,000 subscribers of one topic, RSS with one stalled
	scripts/fanout-bench.sh

.PHONY: drainbench
drainbench: ## events per second through the application's drain (engine in-process)
	cargo build --release -p wse-bench --bin drainbench
	$(TARGET_DIR)/release/drainbench

.PHONY: scaleout-bench
scaleout-bench: deps build ## deliveries/s over 3 instances on Redis and 1,000 subscribers, beside one instance without Redis
	$(TARGET_DIR)/release/scaleoutbench --server $(BIN)

.PHONY: py-build
py-build: venv ## build the wse_server wheel (maturin, release) into target/wheels, install it in .venv
	rm -f $(WHEELS)/wse_server-*.whl
	.venv/bin/maturin build --release --quiet -m py/Cargo.toml --out $(WHEELS)
	.venv/bin/pip install --quiet --disable-pip-version-check --force-reinstall --no-deps \
		$(WHEELS)/wse_server-*.whl

.PHONY: py-lint
py-lint: venv py-build ## ruff (88 columns) and mypy --strict on py/, stubtest of the .pyi
	.venv/bin/ruff check py
	.venv/bin/ruff format --check py
	.venv/bin/mypy --config-file py/pyproject.toml py/python py/tests py/examples py/bench
	cd py && ../.venv/bin/python -m mypy.stubtest wse_server._wse_accel \
		--mypy-config-file pyproject.toml

.PHONY: py-test
py-test: venv py-build ## pytest for py/: RustWSEServer, router mode and the examples, real clients
	.venv/bin/python -m pytest -q py/tests

.PHONY: py-bench
py-bench: venv py-build ## messages/s one Python thread drains from 100 clients: ours and wse-server 2.5.1
	scripts/py-bench.sh

.PHONY: bench-venv
bench-venv: ## create .venv-bench, CPython 3.12 with the Python peers of loadbench (wse-server 2.5.1)
	scripts/setup-bench-venv.sh

.PHONY: bench-quick
bench-quick: deps bench-venv py-build ## side-by-side smoke of every loadbench scenario (~1.5 min; checks no loss, not speed)
	scripts/loadbench.sh quick

.PHONY: bench-full
bench-full: deps bench-venv py-build ## the side-by-side figures of bench/README.md (~12 min here; tunes and restores sysctls)
	scripts/loadbench.sh full

.PHONY: test
test: deps venv fmt-check width-check lint-scripts tsclient-test clippy doc unit smoke py-lint py-test pyclient-test pyclient-compat tsclient-e2e conformance bench-quick ## every check CI runs

.PHONY: test-long
test-long: test conformance-wstest ## test, then the slower suites
