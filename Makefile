# greenlet: the two commands of the README are `make demo` and `make test`.
# Every target runs from a fresh clone; `make deps` installs what a fresh Debian machine lacks.

CARGO ?= cargo

.PHONY: all test lint demo deps conformance

all: test

## test: formatting, lints, then every test (unit, integration, doc tests)
test: lint
	$(CARGO) test --all-targets
	$(CARGO) test --doc

## lint: rustfmt and clippy, warnings are errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

## demo: the seed's tracing example
demo:
	$(CARGO) run --example tracing

## deps: system packages and tools the tests need (Debian; run as root)
deps:
	bash .ci/deps.sh

## conformance: N random scripts through Python greenlet and this runtime (default 100000)
N ?= 100000
conformance:
	conformance/run.sh $(N)
