# greenlet: the two commands of the README are `make demo` and `make test`. Each does its own
# set-up (`make deps`: what a fresh Debian machine lacks; quick when nothing is missing).

CARGO ?= cargo

.PHONY: all test lint demo demo-gevent deps conformance memcheck bench

all: test

## test: set-up, formatting, lints, then every test of the workspace (unit, integration, doc)
test: deps lint
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc

## lint: rustfmt and clippy (warnings are errors); the runtime depends on no BPF, TUI or CLI crate
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	bash .ci/runtime-deps.sh

## demo: a simulated greenlet server, watched live by gltop (q quits both)
demo: deps
	$(CARGO) build --release -p gltop --bin gltop -p greenlet-workloads --bin demo
	bash gltop/demo.sh

## demo-gevent: a small gevent application (unmodified Python), watched live by gltop, sampled
## (nothing added to a switch); GLTOP_ARGS= for the exact mode (uprobes on every switch)
GLTOP_ARGS ?= --sample
demo-gevent: deps
	$(CARGO) build --release -p gltop --bin gltop
	bash gltop/demo/gevent_demo.sh $(GLTOP_ARGS)

## deps: system packages and tools the tests and the demo need (Debian; installs as root)
deps:
	@bash .ci/deps.sh

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
