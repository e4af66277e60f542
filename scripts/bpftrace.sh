#!/usr/bin/env bash
#
# bpftrace.sh	bpftrace, without the RLIMIT_MEMLOCK error of bpftrace 0.17 where
#		that error means nothing.
#
# USAGE:
#   scripts/bpftrace.sh BPFTRACE_ARGS...        # exactly as bpftrace BPFTRACE_ARGS...
#   scripts/bpftrace.sh -p PID scripts/edges.bt /proc/PID/exe
#
# bpftrace 0.17 sets its RLIMIT_MEMLOCK to unlimited when it starts. Where root cannot
# raise that limit (no CAP_SYS_RESOURCE, as in many containers and VMs) it prints
#
#   ERROR: Unknown error -1: couldn't set RLIMIT_MEMLOCK for bpftrace. If your program
#   is not loading, you can try "ulimit -l 8192" to fix the problem
#
# and carries on. Since Linux 5.11 the kernel charges BPF maps and programs to the
# memory cgroup, not to RLIMIT_MEMLOCK, so there that line reports nothing wrong. This
# wrapper runs bpftrace with the same arguments, and:
#   - where the limit can be raised, raises it: bpftrace then prints no such line;
#   - else, on Linux 5.11 or later, drops exactly that line from bpftrace's stderr and
#     passes every other line through;
#   - else (an older kernel, where the limit does matter) changes nothing.
# bpftrace's stdout, stdin and exit status are its own, and so is Ctrl-C (which the
# terminal sends to the whole process group: bpftrace prints its maps and exits). To stop it
# from elsewhere, signal its process group (kill -INT -- -PGID) or bpftrace itself: this
# shell waits for bpftrace and does not pass signals on.

set -u

# bpftrace 0.17 removes its uprobes through tracefs when it exits, and prints
# "ERROR: failed to detach probe" for each one where tracefs is not mounted (attaching does
# not need it). Most systems mount it at boot (systemd does); where it is missing and this
# runs as root, mount it where the kernel documents it, as boot would have.
if [ ! -e /sys/kernel/tracing/uprobe_events ] && [ "$(id -u)" = 0 ]; then
	mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
fi

if ulimit -l unlimited 2>/dev/null; then
	exec bpftrace "$@"
fi

# The kernel's major and minor version, from e.g. "6.1.0-21-amd64".
IFS=. read -r major minor _ </proc/sys/kernel/osrelease
minor=${minor%%[!0-9]*}
if ((major < 5 || (major == 5 && ${minor:-0} < 11))); then
	exec bpftrace "$@"
fi

memlock_error="^ERROR: [^:]*: couldn't set RLIMIT_MEMLOCK for bpftrace\\. If your program is not loading, you can try \"ulimit -l 8192\" to fix the problem\$"

# The filter ignores SIGINT, so that Ctrl-C stops bpftrace alone and the filter passes on
# what bpftrace prints as it ends; it exits when bpftrace closes its stderr. Waiting for it
# too keeps bpftrace's last lines from coming after the shell's next prompt.
exec {filtered}> >(
	trap '' INT
	exec grep --line-buffered -v -E -e "$memlock_error" >&2
)
filter=$!
bpftrace "$@" 2>&"$filtered" {filtered}>&-
status=$?
exec {filtered}>&-
wait "$filter"
exit "$status"
