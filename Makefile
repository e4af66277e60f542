# greenlet: the two commands of the README are `make demo` and `make test`.
# Every target runs from a fresh clone; `make deps` installs what a fresh Debian machine lacks.

CARGO ?= cargo

.PHONY: all test lint demo deps conformance memcheck bench

all: test

## test: formatting, lints, then every test (unit, integration, doc tests), gltop's included
test: lint
	$(CARGO) test --all-targets --all-features
	$(CARGO) test --doc --all-features

## lint: rustfmt and clippy, warnings are errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --all-targets --all-features -- -D warnings

## demo: a simulated greenlet server, watched live by gltop (q quits both)
demo: deps
	$(CARGO) build --release --features gltop --bin gltop --example demo
	@target/release/examples/demo --wait-for-tracer >/dev/null & demo=$$!; \
	  trap 'kill $$demo 2>/dev/null' EXIT INT TERM; \
	  target/release/gltop -p $$demo

## deps: system packages and tools the tests need (Debian; run as root)
deps:
	bash .ci/deps.sh

## conformance: N random scripts through Python greenlet and this runtime (default 100000)
N ?= 100000
conformance:
	conformance/run.sh $(N)

## memcheck: every test binary under valgrind memcheck (zero errors allowed)
memcheck:
	bash .ci/memcheck.sh

## bench: our benchmarks beside Python greenlet's, one table (BENCH_ARGS=--quick|--json|--strict)
BENCH_ARGS ?=
bench:
	bash benches/run.sh $(BENCH_ARGS)
