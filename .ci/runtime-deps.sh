#!/usr/bin/env bash
# The runtime package (`greenlet`) must build without clang, libelf or libbpf and pull no BPF,
# TUI or CLI crate into a user's build: its normal and build dependencies may contain none of
# them, and its dev-dependencies no BPF or TUI crate (criterion, a dev-dependency for the
# benches, brings clap; a user of the runtime never builds it).
set -euo pipefail
cd "$(dirname "$0")/.."
check() {
    local edges=$1 pattern=$2 bad
    bad=$(cargo tree -p greenlet -e "$edges" --prefix none --format '{p}' |
        grep -E "^($pattern) " | sort -u | tr '\n' ' ' || true)
    if [ -n "$bad" ]; then
        echo "runtime-deps: the greenlet package's $edges dependencies include: $bad" >&2
        exit 1
    fi
}
check normal,build 'libbpf-rs|libbpf-sys|libbpf-cargo|ratatui|crossterm|clap|anyhow|gltop'
check normal,build,dev 'libbpf-rs|libbpf-sys|libbpf-cargo|ratatui|crossterm|anyhow|gltop'
echo "runtime-deps: the greenlet package depends on no BPF, TUI or CLI crate"
