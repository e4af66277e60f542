#!/usr/bin/env bash
# Runs every test binary of the crate under valgrind memcheck; any memcheck error fails.
# The greenlet stacks are registered with valgrind (src/stack/slab.rs), so switching between
# them is not mistaken for stack overflows or wild writes. Child processes (bpftrace, cargo,
# the workload) run natively: only the test processes themselves are checked.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "memcheck: valgrind is not installed (make deps)" >&2; exit 2; }

mapfile -t binaries < <(cargo test --no-run --all-targets --message-format=json 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    kinds = m.get("target", {}).get("kind", [])
    if (m.get("reason") == "compiler-artifact" and m.get("executable")
            and m["profile"]["test"] and "bench" not in kinds):
        print(m["executable"])
')
failed=0
for bin in "${binaries[@]}"; do
    name=$(basename "$bin")
    log=$(mktemp)
    # --test-threads=1: one greenlet thread at a time keeps valgrind's run short and stable.
    if valgrind -q --error-exitcode=99 --track-origins=no --leak-check=no \
        "$bin" --test-threads=1 -q >"$log" 2>&1; then
        echo "memcheck: $name: clean"
    else
        echo "memcheck: $name: FAILED"; tail -40 "$log"; failed=1
    fi
    rm -f "$log"
done
exit $failed
