#!/bin/sh
# Differential conformance run: N random scripts on Python greenlet 3.5.6 and on this runtime
# (`make conformance N=100000` calls this). A random seed each run unless CONFORMANCE_SEED is
# set; divergences are shrunk and saved under tests/conformance/regressions/.
# Usage: conformance/run.sh [N]
set -eu
cd "$(dirname "$0")/.."
n=${1:-${N:-100000}}
case $n in
    ''|*[!0-9]*) echo "conformance/run.sh: N must be a number, not '$n'" >&2; exit 2 ;;
esac
if [ -z "${CONFORMANCE_SEED:-}" ]; then
    CONFORMANCE_SEED=$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')
fi
export CONFORMANCE_SEED
export CONFORMANCE_N="$n"
echo "conformance: N=$n CONFORMANCE_SEED=$CONFORMANCE_SEED"
exec cargo test --test conformance -- --nocapture
