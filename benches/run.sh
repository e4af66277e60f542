#!/usr/bin/env bash
# `make bench`: installs the peer (Python greenlet) when it is missing, then runs our
# benchmarks and the peer's in one run and prints one table (benches/report.py; arguments
# are passed on, e.g. --quick, --json, --strict).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c 'import greenlet' 2>/dev/null; then
    echo "bench: python3 -m pip install greenlet" >&2
    # Debian's system Python refuses pip installs without --break-system-packages (PEP 668).
    python3 -m pip install -q greenlet 2>/dev/null \
        || python3 -m pip install -q --break-system-packages greenlet
fi
exec python3 benches/report.py "$@"
