# Meridian — common tasks. `make demo` and `make test` work on a fresh Debian machine.
CARGO ?= cargo

.PHONY: all deps build demo test lint fmt bench bench-smoke clean

all: build

deps:
	@scripts/ensure-deps.sh

build:
	$(CARGO) build --release -p meridian

## Start a local primary + 2 streaming replicas and Meridian in front; prints the DATABASE_URL.
demo: deps build
	./target/release/meridian demo

## Run the whole test suite (unit tests and integration tests against a real cluster).
test: deps
	$(CARGO) test --workspace --all-targets

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

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
