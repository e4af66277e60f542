// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * `gltop record`: per-greenlet CPU profiles by sampling, with no probe in the
 * switch. A program on the software cpu-clock perf event (one per CPU; this
 * VM has no PMU) runs in the context of whatever thread was interrupted. For
 * a thread of the recorded process it reads the running greenlet
 * (bpf/sample.h, through the layout user space put in `layouts`): the one
 * whose stack the thread is on, which in a switch's window is the sender, not
 * yet the target the state names. It takes the thread's user stack by frame
 * pointers (bpf_get_stackid, BPF_F_USER_STACK) and counts the sample under
 * (greenlet id, stack id).
 *
 * Greenlet names come from the rare `greenlet:new` probe; a greenlet created
 * before the attach has none here (user space prints `?`).
 *
 * User space cuts each stack at the greenlet's own bottom frame: corosensei
 * links the frame chain on into the parent's stack, so the walk here goes
 * past it (gltop/src/profile/fold.rs).
 */
#include <linux/types.h>
#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/bpf_perf_event.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/usdt.bpf.h>

#include "sample.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Frames bpf_get_stackid keeps per stack (the kernel's default maximum). */
#define PROF_MAX_DEPTH 127
/* Bytes of a greenlet's name kept, the terminating NUL included. */
#define PROF_NAME_LEN 32

/* The recorded process's layout, keyed by its tgid: also the filter. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, struct gl_layout);
} layouts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 16384);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, PROF_MAX_DEPTH * sizeof(__u64));
} stacks SEC(".maps");

/* A sample's key: the greenlet that ran and the user stack it ran on. */
struct prof_key {
	__u64 greenlet;
	__s32 stack_id;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct prof_key);
	__type(value, __u64);
} counts SEC(".maps");

/* Samples of the recorded process that are not in `counts`, and why. */
struct prof_stats {
	/* Every sample of a thread of the recorded process. */
	__u64 samples;
	/* The thread had no greenlet runtime state (not one of the runtime's threads). */
	__u64 no_runtime;
	/* Reading the running greenlet faulted. */
	__u64 unreadable;
	/* bpf_get_stackid failed (no user stack, or the stack map is full). */
	__u64 no_stack;
	/* The counts map was full. */
	__u64 count_failures;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct prof_stats);
} stats SEC(".maps");

struct prof_name {
	char name[PROF_NAME_LEN];
};

/* Greenlet names from `greenlet:new`, keyed by greenlet id. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct prof_name);
} names SEC(".maps");

static const __u64 one = 1;

SEC("perf_event")
int on_sample(struct bpf_perf_event_data *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct task_struct *task;
	struct gl_layout *layout;
	struct prof_stats *st;
	struct gl_current cur;
	struct prof_key key = {};
	__u32 zero = 0;
	__u64 *n;

	layout = bpf_map_lookup_elem(&layouts, &tgid);
	if (!layout)
		return 0;
	st = bpf_map_lookup_elem(&stats, &zero);
	if (!st)
		return 0;
	st->samples++;
	task = bpf_get_current_task_btf();
	if (gl_read_current(task, layout, &cur) < 0) {
		st->unreadable++;
		return 0;
	}
	if (!cur.has_runtime) {
		st->no_runtime++;
		return 0;
	}
	/* Whose code ran: the sender, in a switch window (bpf/sample.h). */
	key.greenlet = cur.running;
	key.stack_id = bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK);
	if (key.stack_id < 0) {
		st->no_stack++;
		return 0;
	}
	n = bpf_map_lookup_elem(&counts, &key);
	if (n) {
		__sync_fetch_and_add(n, 1);
		return 0;
	}
	/* Another CPU may have inserted it meanwhile: then add to its entry. */
	if (bpf_map_update_elem(&counts, &key, &one, BPF_NOEXIST) == 0)
		return 0;
	n = bpf_map_lookup_elem(&counts, &key);
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		st->count_failures++;
	return 0;
}

static __always_inline int on_new(__u64 id, const char *name)
{
	struct prof_name entry = {};

	if (bpf_probe_read_user_str(entry.name, sizeof(entry.name), name) < 0)
		entry.name[0] = 0;
	bpf_map_update_elem(&names, &id, &entry, BPF_ANY);
	return 0;
}

/* `greenlet:new` by a plain uprobe, when its sites pass the arguments in the ABI registers. */
SEC("uprobe")
int BPF_KPROBE(prof_up_new, __u64 id, __u64 parent, const char *name)
{
	return on_new(id, name);
}

/* `greenlet:new` through libbpf's USDT argument decoding, for any other layout. */
SEC("usdt")
int BPF_USDT(prof_usdt_new, __u64 id, __u64 parent, const char *name)
{
	return on_new(id, name);
}
