#!/usr/bin/env bash
# The main job of the README (`make demo`): starts the demo server (workloads/src/bin/demo.rs)
# and opens gltop on it; when gltop ends (q, or its -n count), the demo is stopped too.
#
#   bash gltop/demo.sh [GLTOP OPTIONS...]     e.g. bash gltop/demo.sh --json -n 3
#
# Expects the release binaries built (`make demo` builds them). gltop is started only once
# the demo's PID runs the demo itself: `$!` names the forked shell until it has exec'd, and a
# gltop started on that shell would find no greenlet probes.
set -euo pipefail
cd "$(dirname "$0")/.."
# GLTOP_BIN_DIR: where gltop and demo are (the tests use their own build).
bin=${GLTOP_BIN_DIR:-target/release}
demo=$(readlink -f "$bin/demo")
[ -x "$demo" ] && [ -x "$bin/gltop" ] || {
    echo "demo.sh: build first: cargo build --release -p gltop -p greenlet-workloads" >&2
    exit 2
}

"$demo" --wait-for-tracer >/dev/null &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true' EXIT
trap 'exit 130' INT TERM

# Wait (at most 10 s) until the child has exec'd the demo.
for _ in $(seq 1000); do
    [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$demo" ] && break
    kill -0 "$pid" 2>/dev/null || { echo "demo.sh: the demo exited at start" >&2; exit 1; }
    sleep 0.01
done
[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$demo" ] || {
    echo "demo.sh: the demo (PID $pid) did not start within 10 s" >&2
    exit 1
}
"$bin/gltop" -p "$pid" "$@"
