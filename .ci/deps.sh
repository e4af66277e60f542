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

# gevent, for gltop's Python tests and demo (gltop/tests/python/gevent_app.py and
# gevent_spawn.py, make demo-gevent), with the greenlet above kept as it is.
if ! python3 -c 'import gevent, sys; sys.exit(gevent.__version__ != "26.9.0")' 2>/dev/null; then
    echo "deps: pip install gevent==26.9.0"
    python3 -m pip install -q gevent==26.9.0 greenlet==3.5.6 >/dev/null 2>&1 ||
        python3 -m pip install -q --break-system-packages gevent==26.9.0 greenlet==3.5.6 >/dev/null 2>&1 ||
        fail "pip install gevent==26.9.0 failed; run: python3 -m pip install gevent==26.9.0 greenlet==3.5.6"
fi

# Other greenlet versions for gltop's Python tests (gltop/tests/gltop_python.rs), each in a
# directory of its own that the tests put on PYTHONPATH: 3.0.3 and 2.0.2 (traced like 3.5.6,
# with other offsets and argument passing) and 1.1.3 (refused: nothing to probe). GREENLET_VERSIONS_DIR overrides the place.
versions_dir=${GREENLET_VERSIONS_DIR:-/opt/greenlet-versions}
for version in 3.0.3 2.0.2 1.1.3; do
    dir=$versions_dir/$version
    if ! PYTHONPATH=$dir python3 -c "import greenlet, sys; sys.exit(greenlet.__version__ != '$version')" 2>/dev/null; then
        echo "deps: pip install --target $dir greenlet==$version"
        mkdir -p "$dir" 2>/dev/null || fail "cannot create $dir; run as root, or set GREENLET_VERSIONS_DIR"
        python3 -m pip install -q --no-deps --upgrade --target "$dir" "greenlet==$version" >/dev/null 2>&1 ||
            python3 -m pip install -q --no-deps --upgrade --break-system-packages --target "$dir" "greenlet==$version" >/dev/null 2>&1 ||
            fail "pip install --target $dir greenlet==$version failed"
    fi
done
