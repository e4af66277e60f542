#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks for building, testing and running the demo:
# `make test` and `make demo` run it first. Idempotent, and quick when nothing is missing
# (a dpkg query and a Python import). Where it cannot install something (not root, no
# apt-get, no network), it says in one line what is missing and how to install it.
set -euo pipefail

fail() {
    echo "deps: $*" >&2
    exit 1
}

packages=(clang libelf-dev zlib1g-dev pkg-config make gcc bpftrace tmux valgrind python3 python3-pip prometheus)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    command -v apt-get >/dev/null ||
        fail "missing packages ${missing[*]}, and no apt-get here to install them"
    [ "$(id -u)" = 0 ] ||
        fail "missing packages ${missing[*]}; install them as root: apt-get install ${missing[*]}"
    echo "deps: apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    log=$(mktemp)
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
        tail -5 "$log" >&2
        rm -f "$log"
        fail "apt-get install ${missing[*]} failed (output above)"
    fi
    rm -f "$log"
fi

if ! command -v cargo >/dev/null; then
    fail "no Rust toolchain (cargo); install one with rustup, with the rustfmt and clippy components"
fi
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        command -v rustup >/dev/null || fail "cargo ${component/rustfmt/fmt} is missing and there is no rustup to add it"
        rustup component add "$component" >/dev/null 2>&1 || fail "rustup component add $component failed"
    fi
done

# Python greenlet: the behaviour reference that the conformance tests run against.
if ! python3 -c 'import greenlet, sys; sys.exit(greenlet.__version__ != "3.5.6")' 2>/dev/null; then
    echo "deps: pip install greenlet==3.5.6"
    # Debian's own Python refuses pip installs without --break-system-packages (PEP 668).
    python3 -m pip install -q greenlet==3.5.6 >/dev/null 2>&1 ||
        python3 -m pip install -q --break-system-packages greenlet==3.5.6 >/dev/null 2>&1 ||
        fail "pip install greenlet==3.5.6 failed; run: python3 -m pip install greenlet==3.5.6"
fi
# gevent: gltop's tests of Python greenlet's sampled mode record a gevent program.
if ! python3 -c 'import gevent' 2>/dev/null; then
    echo "deps: pip install gevent==26.9.0"
    python3 -m pip install -q gevent==26.9.0 >/dev/null 2>&1 ||
        python3 -m pip install -q --break-system-packages gevent==26.9.0 >/dev/null 2>&1 ||
        fail "pip install gevent==26.9.0 failed; run: python3 -m pip install gevent==26.9.0"
fi
