#!/usr/bin/env bash
# `make demo-gevent`: starts the gevent demo (gltop/demo/gevent_demo.py, unmodified Python)
# and opens gltop on it; when gltop ends (q, or its -n count), the demo is stopped too.
#
#   bash gltop/demo/gevent_demo.sh [GLTOP OPTIONS...]     e.g. ... --json -n 3
#
# gltop is started once the demo has loaded greenlet (it prints its first line then).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${GLTOP_BIN_DIR:-target/release}
[ -x "$bin/gltop" ] || {
    echo "gevent_demo.sh: build first: cargo build --release -p gltop" >&2
    exit 2
}
fifo=$(mktemp -u)
mkfifo "$fifo"
python3 gltop/demo/gevent_demo.py >"$fifo" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; rm -f "$fifo"' EXIT
trap 'exit 130' INT TERM
# The demo's first line says it runs; the rest of its output is discarded.
read -r -t 30 line <"$fifo" || { echo "gevent_demo.sh: the demo did not start" >&2; exit 1; }
"$bin/gltop" -p "$pid" "$@"
