#!/usr/bin/env bash
# The cost of a Python greenlet switch, side by side: as is, under greenlet.settrace with a
# no-op function, and with gltop attached from outside (gltop/benches/python/switch_cost.py).
# Needs root (gltop attaches BPF programs) and a built gltop.
#
#   bash gltop/benches/python/run.sh [--switches N]     (GLTOP_BIN_DIR: where gltop is)
set -euo pipefail
cd "$(dirname "$0")/../../.."
bin=${GLTOP_BIN_DIR:-target/release}
[ -x "$bin/gltop" ] || { echo "run.sh: build first: cargo build --release -p gltop" >&2; exit 2; }
dir=$(mktemp -d)
trap 'kill "$bench" "$gltop" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
mkfifo "$dir/in"
python3 gltop/benches/python/switch_cost.py --wait "$@" <"$dir/in" >"$dir/out" &
bench=$!
exec 3>"$dir/in"
gltop=
for _ in $(seq 600); do grep -q '^ready$' "$dir/out" && break; sleep 0.1; done
grep -q '^ready$' "$dir/out" || { echo "run.sh: switch_cost.py did not get ready" >&2; exit 1; }
"$bin/gltop" -p "$bench" --json -d 1 --hit-cost-ns 0 >/dev/null 2>"$dir/err" &
gltop=$!
for _ in $(seq 600); do grep -q 'attached to process' "$dir/err" && break; sleep 0.1; done
grep -q 'attached to process' "$dir/err" || { echo "run.sh: gltop did not attach: $(cat "$dir/err")" >&2; exit 1; }
echo go >&3
for _ in $(seq 1200); do grep -q '^done$' "$dir/out" && break; sleep 0.1; done
awk '
    $1 == "plain" { plain = $2 }
    $1 == "settrace" || $1 == "gltop" { extra[$1] = $2 - plain; ns[$1] = $2 }
    END {
        printf "%-28s %8s %10s\n", "python greenlet switch", "ns", "added ns"
        printf "%-28s %8d %10s\n", "as is", plain, "-"
        printf "%-28s %8d %10d\n", "greenlet.settrace (no-op)", ns["settrace"], extra["settrace"]
        printf "%-28s %8d %10d\n", "gltop attached", ns["gltop"], extra["gltop"]
    }' "$dir/out"
