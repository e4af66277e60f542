#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks for building and testing greenlet. Idempotent.
set -euo pipefail

need_apt=()
for pkg in clang libelf-dev zlib1g-dev pkg-config make gcc bpftrace tmux valgrind python3 python3-pip; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
    echo "deps: apt-get install ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
    echo "deps: installing the Rust toolchain with rustup"
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component rustfmt,clippy
    # shellcheck disable=SC1091
    source "$HOME/.cargo/env"
fi
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy

# Python greenlet: the behaviour reference the conformance tests run against.
if ! python3 -c 'import greenlet, sys; sys.exit(greenlet.__version__ != "3.5.6")' 2>/dev/null; then
    echo "deps: pip install greenlet==3.5.6"
    python3 -m pip install -q greenlet==3.5.6 2>&1 | grep -v "Running pip as the 'root' user" || true
fi
