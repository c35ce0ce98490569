# Meridian — common tasks. `make demo` and `make test` work on a fresh Debian machine.
CARGO ?= cargo

.PHONY: all deps build demo test lint fmt bench clean

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

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
