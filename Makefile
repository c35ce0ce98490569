# Meridian — common tasks. `make demo` and `make test` work on a fresh Debian machine.
CARGO ?= cargo

.PHONY: all deps build demo test lint fmt bench bench-smoke bench-failover soak fuzz clean

all: build

deps:
	@scripts/ensure-deps.sh

build:
	$(CARGO) build --release -p meridian

## Start a local primary + 2 streaming replicas and Meridian in front; prints the DATABASE_URL.
demo: deps build
	./target/release/meridian demo

## Run the whole test suite (unit tests, integration tests against a real cluster, the fuzz
## corpus replay, and the benchmark script in smoke mode so that it cannot rot).
test: deps
	$(CARGO) test --workspace --all-targets
	$(CARGO) build -p meridian
	python3 bench/bench.py --smoke --meridian-bin $${CARGO_TARGET_DIR:-target}/debug/meridian

## Formatting and lints, as CI expects them.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Benchmark: pgbench against the primary, PgBouncer, Pgpool-II and Meridian (installs the
## poolers with apt-get if missing); prints the report and writes bench/results/<date>.md.
bench: deps build
	python3 bench/bench.py

## The same script in a few seconds (direct + Meridian, + PgBouncer if installed); no report file.
bench-smoke: deps build
	python3 bench/bench.py --smoke

## Failover timing: kill -9 of the primary to the first successful write through Meridian,
## over FAILOVER_RUNS runs (default 10) with the default [failover] settings.
FAILOVER_RUNS ?= 10
bench-failover: deps
	$(CARGO) run --release -p meridian --example failover_time -- $(FAILOVER_RUNS)

## Soak (not part of `make test`): SOAK_CLIENTS clients (default 500) on a mixed workload for
## SOAK_SECONDS (default 600) while replicas are stopped and started; reports errors and
## Meridian's memory over time in bench/results/soak-<date>.md. See bench/soak.py.
SOAK_CLIENTS ?= 500
SOAK_SECONDS ?= 600
SOAK_POOL_MODE ?= transaction
soak: deps build
	python3 bench/soak.py --clients $(SOAK_CLIENTS) --duration $(SOAK_SECONDS) --pool-mode $(SOAK_POOL_MODE)

## Fuzz each cargo-fuzz target in fuzz/ for FUZZ_SECONDS (default 60) seconds, one after the
## other (installs cargo-fuzz if missing). Seeds come from fuzz/corpus/<target>/ (committed);
## new inputs go to fuzz/corpus-work/<target>/ and crashes to fuzz/artifacts/ (both ignored).
## See docs/security.md, "Fuzzing". E.g. `make fuzz FUZZ_TARGETS=classifier FUZZ_SECONDS=600`.
FUZZ_TARGETS ?= frame_decoder startup_packet scram_server classifier parameterize
FUZZ_SECONDS ?= 60
FUZZ_MAX_LEN ?= 4096
# e.g. FUZZ_FLAGS="--sanitizer none" (several times faster; the targets are safe Rust)
FUZZ_FLAGS ?=
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/corpus-work/$$t && \
		echo "== fuzz $$t for $(FUZZ_SECONDS)s" && \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $(FUZZ_FLAGS) $$t fuzz/corpus-work/$$t fuzz/corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -max_len=$(FUZZ_MAX_LEN) -print_final_stats=1 || exit 1; \
	done

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
