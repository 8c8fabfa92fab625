# fleetkeeper: the two front-door commands are `make demo` and `make test`.
# Everything they need is installed here: the Python venv with the pinned
# emulator, then one debug build of the whole workspace (one shared target/).

SHELL := /bin/bash
VENV := .venv
PYTHON ?= python3
EMULATOR := tests/emulator/with-emulator
CARGO_BUILD := cargo build --workspace --all-targets --locked

.PHONY: all venv build test test-rust test-emulator demo reliability fmt fmt-check clippy check clean

all: build

# The venv is rebuilt when the pinned requirements change.
$(VENV)/.installed: tests/emulator/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/emulator/requirements.txt
	touch $@

venv: $(VENV)/.installed

build:
	$(CARGO_BUILD)

# The whole suite, the one CI runs: unit and planner tests, the patch layer's
# tests, emulator-backed integration tests and the bootstrap binaries through
# the Lambda Runtime API, all against one emulator started for the run.
test: venv build
	$(EMULATOR) bash -c 'cargo test --workspace --all-targets --locked -- --test-threads=4 && target/debug/permissions check-recorded && $(VENV)/bin/pytest -q tests/emulator'

demo: venv build
	$(EMULATOR) target/debug/demo

# The sync's fault campaign: 50 seeds at 5, 20 and 50 % faulted AWS calls,
# the table written into docs/reliability.md (about half an hour on 2 cores).
SEEDS ?= 50
reliability: venv build
	$(EMULATOR) target/debug/reliability --seeds $(SEEDS) --out docs/reliability.md

fmt:
	cargo fmt --all

fmt-check:
	cargo fmt --all -- --check

clippy:
	cargo clippy --workspace --all-targets --locked -- -D warnings

check: fmt-check clippy test

clean:
	cargo clean
	rm -rf $(VENV)
