# fleetkeeper: the two front-door commands are `make demo` and `make test`.
# Everything they need is installed here: the Python venv with the pinned
# emulator, then one debug build of the whole workspace (one shared target/).

SHELL := /bin/bash
VENV := .venv
PYTHON ?= python3
EMULATOR := tests/emulator/with-emulator
CARGO_BUILD := cargo build --workspace --all-targets --locked

INFRA_VENV := .venv-infra
CHECKOV_VENV := .venv-checkov

.PHONY: all venv infra-venv checkov-venv build release bench bench-quick bench-profile test demo reliability reliability-lifecycle template infra-check checkov package fmt fmt-check clippy check clean

all: build

# The venv is rebuilt when the pinned requirements change.
$(VENV)/.installed: tests/emulator/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/emulator/requirements.txt
	touch $@

venv: $(VENV)/.installed

# The deployment checks' tools (SAM CLI, cfn-lint, parliament), and checkov
# in a venv of its own: it pins an old boto3.
$(INFRA_VENV)/.installed: infra/requirements.txt
	$(PYTHON) -m venv $(INFRA_VENV)
	$(INFRA_VENV)/bin/pip install --quiet --disable-pip-version-check -r infra/requirements.txt
	touch $@

infra-venv: $(INFRA_VENV)/.installed

$(CHECKOV_VENV)/.installed: infra/requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check -r infra/requirements-checkov.txt
	touch $@

checkov-venv: $(CHECKOV_VENV)/.installed

build:
	$(CARGO_BUILD)

# The whole suite, the one CI runs: unit and planner tests, the patch layer's
# tests, emulator-backed integration tests and the bootstrap binaries through
# the Lambda Runtime API, all against one emulator started for the run; the
# criterion benchmarks once each (their test mode; criterion takes no
# --test-threads).
# Then the deployment template, offline: rendered from its sources, lint
# clean, least privilege checked against the manifests, checkov clean.
test: venv infra-venv checkov-venv build
	$(EMULATOR) bash -c 'cargo test --workspace --lib --bins --tests --locked -- --test-threads=4 && cargo test --locked -p fleetkeeper-planner-bench --bench planners && target/debug/permissions check-recorded && $(VENV)/bin/pytest -q tests/emulator'
	$(MAKE) --no-print-directory infra-check checkov

demo: venv build
	$(EMULATOR) target/debug/demo

# The sync's fault campaign: 50 seeds at 5, 20 and 50 % faulted AWS calls,
# the table written into docs/reliability.md (about half an hour on 2 cores).
SEEDS ?= 50
reliability: venv build
	$(EMULATOR) target/debug/reliability --seeds $(SEEDS) --out docs/reliability.md

# The lifecycle gate's fault campaign: LIFECYCLE_SEEDS seeds at 5, 20 and 50 %,
# the table written into docs/reliability-lifecycle.md.
LIFECYCLE_SEEDS ?= 20
reliability-lifecycle: venv build
	$(EMULATOR) target/debug/lifecycle-reliability --seeds $(LIFECYCLE_SEEDS) --out docs/reliability-lifecycle.md

# The shipped functions' release build (what `cargo lambda build --release`
# compiles, for this machine's architecture), with the benchmarks' baselines
# and the clock shim, in one cargo invocation so features unify as they do
# for the functions alone.
RELEASE_PACKAGES := lifecycle-hook mount-targets codebase-sync sync-completion bench-baselines fk-clock-shim
release:
	cargo build --release --locked $(addprefix -p ,$(RELEASE_PACKAGES))

# The benchmarks (BENCHMARKS.md, docs/bench-*.svg): the planners under
# criterion, then cold start, bursts, fan-out and lifecycle against the
# emulator with the release bootstraps. BENCH_ONLY=cold,burst,fanout,lifecycle
# runs those parts and updates only their sections of BENCHMARKS.md.
BENCH_ONLY ?=
bench: venv build release
	$(if $(BENCH_ONLY),,cargo bench --locked -p fleetkeeper-planner-bench --bench planners)
	FLEETKEEPER_BIN_DIR=$(CURDIR)/target/release $(EMULATOR) target/debug/fleetkeeper-bench \
		--out BENCHMARKS.md --plots docs $(if $(BENCH_ONLY),--only $(BENCH_ONLY))

# The counts alone, smaller cases, debug build, invariants checked (CI;
# bounded: it takes well under two minutes).
bench-quick: venv build
	timeout 300 $(EMULATOR) target/debug/fleetkeeper-bench --quick

# Where init's instructions go: callgrind on the release build with symbols
# (profile `profiling`), a function and the bare runtime, from exec to the
# first /invocation/next. Reports in target/callgrind/.
bench-profile: venv build
	cargo build --profile profiling --locked -p codebase-sync -p bench-baselines --bin codebase-sync --bin bare-runtime --bin sdk-floor
	FLEETKEEPER_BIN_DIR=$(CURDIR)/target/profiling $(EMULATOR) target/debug/fleetkeeper-bench --only profile

# infra/template.yaml from infra/template.src.yaml, infra/sync-document.yaml
# and the functions' permission manifests.
template: build
	$(PYTHON) infra/render.py

infra-check: infra-venv build
	$(INFRA_VENV)/bin/pytest -q tests/infra
	cd infra && AWS_ACCESS_KEY_ID=none AWS_SECRET_ACCESS_KEY=none SAM_CLI_TELEMETRY=0 \
		../$(INFRA_VENV)/bin/sam validate --lint --region us-east-1 -t template.yaml

checkov: checkov-venv
	$(CHECKOV_VENV)/bin/checkov -f infra/template.yaml --framework cloudformation --skip-download --compact --quiet

# The four functions as arm64 Lambda zips (release build, cross-compiled
# with zig), in target/lambda/<function>/bootstrap.zip. About 15 minutes on
# 2 cores from scratch; not part of make test.
FUNCTIONS := lifecycle-hook mount-targets codebase-sync sync-completion
package: infra-venv
	rustup target add aarch64-unknown-linux-gnu
	source $(INFRA_VENV)/bin/activate && cargo lambda build --release --arm64 --output-format zip $(addprefix --package ,$(FUNCTIONS))
	@for f in $(FUNCTIONS); do ls -l target/lambda/$$f/bootstrap.zip | awk -v f=$$f '{printf "%-16s %6.1f MiB\n", f, $$5/1048576}'; done

fmt:
	cargo fmt --all

fmt-check:
	cargo fmt --all -- --check

clippy:
	cargo clippy --workspace --all-targets --locked -- -D warnings

check: fmt-check clippy test

clean:
	cargo clean
	rm -rf $(VENV) $(INFRA_VENV) $(CHECKOV_VENV)
