#!/bin/sh
# The blocking detector's sched_switch cost with N watched processes: gltop GLTOP (path) in
# exact mode on N idle `blocker` processes (an idle hub each, runtime started), while
# `perf bench sched pipe` makes context switches; kernel.bpf_stats_enabled counts the
# run time of gltop's own tracing programs (found in /proc/GLTOP_PID/fdinfo) over SECONDS.
# Prints: programs run, runs, ns per run, and BPF ms per second of wall time.
# Usage: benches/shared_detector.sh GLTOP BLOCKER [N] [SECONDS]   (root; restores the sysctl)
set -eu
GLTOP=$1 BLOCKER=$2 N=${3:-5} SECONDS_=${4:-10}
pids=""
for i in $(seq "$N"); do
	"$BLOCKER" --scenario idle-hub --ms 600000 --linger-ms 0 >/dev/null 2>&1 &
	pids="${pids:+$pids,}$!"
done
sleep 1
"$GLTOP" --json -p "$pids" --hit-cost-ns 500 -d 1 >/dev/null 2>/tmp/shared_detector.err &
g=$!
sleep 4
perf bench sched pipe -l 1000000000 >/dev/null 2>&1 &
load=$!
sleep 1
old=$(sysctl -n kernel.bpf_stats_enabled)
stats() {
	# prog_id run_time_ns run_cnt of every tracing program (prog_type 26) gltop holds
	for f in /proc/$g/fdinfo/*; do
		awk '/^prog_type:/{t=$2} /^prog_id:/{i=$2} /^run_time_ns:/{r=$2} /^run_cnt:/{c=$2}
		     END{if (t==26 && i!="") print i, r, c}' "$f" 2>/dev/null
	done | sort -u
}
ctxt() { awk '/^ctxt/{print $2}' /proc/stat; }
sysctl -q -w kernel.bpf_stats_enabled=1
trap 'sysctl -q -w kernel.bpf_stats_enabled=$old' EXIT
a=$(stats); c0=$(ctxt)
sleep "$SECONDS_"
b=$(stats); c1=$(ctxt)
sysctl -q -w kernel.bpf_stats_enabled="$old"
# perf bench forks the pipe's other end: it goes too.
kill $(pgrep -P "$load") "$load" "$g" 2>/dev/null || true
for p in $(echo "$pids" | tr , ' '); do kill "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
printf '%s\n%s\n' "$a" "$b" | awk -v s="$SECONDS_" -v n="$N" -v cs=$((c1 - c0)) '
	{ if (seen[$1]++) { rt[$1] = $2 - rt[$1]; rc[$1] = $3 - rc[$1] } else { rt[$1] = $2; rc[$1] = $3 } }
	END {
		for (i in rt) if (rc[i] > 0) { progs++; T += rt[i]; C += rc[i] }
		printf "watched %d: %d sched_switch programs run, %d runs (%d context switches), %.0f ns per run, %.2f ms of BPF per s (%.0f ns per context switch)\n",
			n, progs, C, cs, C ? T / C : 0, T / s / 1e6, cs ? T / cs : 0
	}'
