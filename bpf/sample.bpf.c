// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * gltop's sampled mode and its blocking detector (issue 12), with no probe
 * in the greenlet switch:
 *
 *  - `on_sample`, on the software cpu-clock perf event (one per CPU, opened by
 *    the loader at --hz), reads the running greenlet of the interrupted thread
 *    (bpf/sample.h) and counts samples per (process, thread, greenlet);
 *  - `on_switch`, on sched_switch, gives each greenlet its off-CPU time, from
 *    its thread's switch-out to its switch-in, split into blocked (prev_state
 *    not running) and preempted;
 *  - both feed the blocking detector: a thread whose switch counter keeps one
 *    value for longer than `block_ns` runs one greenlet that does not switch
 *    (computing, or waiting in a system call). The episode is reported when
 *    the counter moves again (ring buffer `episodes`); while it lasts, the
 *    thread's entry in `threads` shows it;
 *  - `up_new`/`usdt_new`, on the runtime's `new` probe (rare), name greenlets.
 *
 * Only processes in `watched` (tgid -> the runtime's published layout) are
 * looked at; the loader adds them. The same programs run beside the exact
 * mode's uprobes (bpf/greenlet.bpf.c) for blocking detection there.
 */
#include <linux/types.h>
#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/usdt.bpf.h>

#include "sample.h"
#include "sampled.h"
#include "pycur.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Set by the loader before load: the blocking threshold. */
const volatile __u64 block_ns = 100000000;
/*
 * Python greenlet: a thread's running greenlet is its entry in `py_cur`, kept by
 * the exact mode's switch uprobes (the loader gives this object their map), not
 * read from the process's memory; `watched` then holds a zero layout.
 */
const volatile __u8 py_mode = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct gl_pycur);
} py_cur SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct gl_layout);
} watched SEC(".maps");

/*
 * Per-greenlet counts and names: LRU, because nothing tells when a greenlet
 * dies in this mode (no `dead` probe); the entries evicted first are those
 * no event touched for longest, i.e. of greenlets that stopped running.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct gs_key);
	__type(value, struct gs_stats);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct gs_gkey);
	__type(value, struct gs_name);
} names SEC(".maps");

/* Plain hash: a thread's entry stays until user space sees the thread gone. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct gs_thread);
} threads SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 4096);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, 127 * sizeof(__u64));
} stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} episodes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gs_totals);
} totals SEC(".maps");

static const struct gs_stats zero_stats;

/*
 * The running greenlet of `task`: from its memory, or in `py_mode` from `py_cur`
 * (then `*py` is its entry, else NULL).
 */
static __always_inline int read_current(struct task_struct *task, const struct gl_layout *layout,
					struct gl_current *out, struct gl_pycur **py)
{
	__u32 tid;
	struct gl_pycur *c;

	*py = NULL;
	if (!py_mode)
		return gl_read_current(task, layout, out);
	tid = task->pid;
	c = bpf_map_lookup_elem(&py_cur, &tid);
	out->has_runtime = c != NULL;
	out->id = c ? c->id : 0;
	out->running = out->id;
	out->in_window = 0;
	out->switches = c ? c->switches : 0;
	out->flags = c && c->idle ? GL_FLAG_IDLE : 0;
	*py = c;
	return 0;
}

/* Never written: gives the skeleton the ring buffer's record type (gltop reads it). */
struct gs_episode gs_episode_type = {};

/* The x86-64 kernel's pt_regs: the system call a task entered with, its user stack pointer. */
struct pt_regs___gs {
	unsigned long orig_ax;
	unsigned long sp;
} __attribute__((preserve_access_index));

#define TASK_RUNNING 0

static __always_inline struct gs_totals *get_totals(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&totals, &zero);
}

static __always_inline struct gs_stats *get_stats(__u32 tgid, __u32 tid, __u64 id,
						  struct gs_totals *tot)
{
	struct gs_key k = { .tgid = tgid, .tid = tid, .id = id };
	struct gs_stats *s = bpf_map_lookup_elem(&stats, &k);

	if (s)
		return s;
	bpf_map_update_elem(&stats, &k, &zero_stats, BPF_NOEXIST);
	s = bpf_map_lookup_elem(&stats, &k);
	if (!s)
		tot->stats_failures++;
	return s;
}

static __always_inline struct gs_thread *get_thread(__u32 tgid, __u32 tid, struct gs_totals *tot)
{
	struct gs_thread *t = bpf_map_lookup_elem(&threads, &tid);
	struct gs_thread fresh = { .tgid = tgid, .out_syscall = -1, .out_stack = -1,
				   .ep_stack = -1, .ep_syscall = -1 };

	if (t)
		return t;
	bpf_map_update_elem(&threads, &tid, &fresh, BPF_NOEXIST);
	t = bpf_map_lookup_elem(&threads, &tid);
	if (!t)
		tot->thread_failures++;
	return t;
}

/*
 * The counter moved (or the runtime state went away): the value `t` held
 * ends. An episode that crossed the threshold is reported, with its end at
 * the last moment the thread was seen at that value.
 */
static __always_inline void end_value(struct gs_thread *t, __u32 tid, struct gs_totals *tot)
{
	struct gs_episode ep;
	__u64 dur = t->last_ns - t->since_ns;

	if (!t->has_runtime || t->idle)
		return;
	if (!t->ep_open && dur <= block_ns)
		return;
	if (!t->ep_open) {
		/* Crossed between two observations (e.g. woken and switched at once). */
		tot->episodes++;
		t->ep_stack = t->out_stack;
		t->ep_syscall = t->out_syscall;
		t->ep_sp_word = t->out_sp_word;
	}
	ep.tgid = t->tgid;
	ep.tid = tid;
	ep.greenlet = t->greenlet;
	ep.start_ns = t->since_ns;
	ep.end_ns = t->last_ns;
	ep.off_ns = t->ep_off_ns;
	ep.syscall = t->ep_syscall;
	ep.stack = t->ep_stack;
	ep.sp_word = t->ep_sp_word;
	if (bpf_ringbuf_output(&episodes, &ep, sizeof(ep), 0))
		tot->episode_drops++;
}

/*
 * The user stack of the running task `task` (<0: not captured, counted), and
 * the word at its user stack pointer in `*sp_word` (0 if unreadable).
 */
static __always_inline __s64 capture_stack(void *ctx, struct task_struct *task, __u64 *sp_word,
					   struct gs_totals *tot)
{
	long id = bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK);
	struct pt_regs___gs *regs = (struct pt_regs___gs *)bpf_task_pt_regs(task);
	__u64 sp = BPF_CORE_READ(regs, sp);

	if (id < 0)
		tot->stack_failures++;
	*sp_word = 0;
	if (bpf_probe_read_user(sp_word, sizeof(*sp_word), (void *)sp))
		*sp_word = 0;
	return id;
}

/*
 * Thread `t` was seen at `now` with `cur` read from its memory: it is the
 * running task (sampled on a CPU, or switching out). `ctx` is the program's
 * context, for its user stack when an episode opens.
 */
static __always_inline void observe(void *ctx, struct task_struct *task, struct gs_thread *t,
				    __u32 tid, const struct gl_current *cur,
				    const struct gl_pycur *py, __u64 now, struct gs_totals *tot)
{
	if (!cur->has_runtime) {
		end_value(t, tid, tot);
		t->has_runtime = 0;
		t->ep_open = 0;
		return;
	}
	if (!t->counter_seen) {
		t->counter_seen = 1;
		t->first_switches = cur->switches;
	}
	if (!t->has_runtime || cur->switches != t->switches) {
		/* Python: the switch probes saw when a long slice ended and this one began. */
		if (py && t->has_runtime && py->long_switches == t->switches &&
		    py->long_end_ns > t->last_ns)
			t->last_ns = py->long_end_ns;
		if (t->has_runtime)
			end_value(t, tid, tot);
		t->has_runtime = 1;
		t->switches = cur->switches;
		t->since_ns = py && py->start_ns && py->start_ns < now ? py->start_ns : now;
		t->last_ns = now;
		/* The value's greenlet is the current one, also in a switch window. */
		t->greenlet = cur->id;
		t->idle = cur->flags & GL_FLAG_IDLE;
		t->ep_off_ns = 0;
		t->ep_open = 0;
		t->ep_stack = -1;
		t->ep_syscall = -1;
		return;
	}
	t->last_ns = now;
	/* `set_idle` may mark the running greenlet while it runs. */
	t->idle = cur->flags & GL_FLAG_IDLE;
	if (t->ep_open && t->ep_stack < 0 && !t->idle) {
		/* Opened at a switch-in with no stack from the switch-out: where it is now. */
		t->ep_stack = capture_stack(ctx, task, &t->ep_sp_word, tot);
		return;
	}
	if (t->ep_open || t->idle || now - t->since_ns <= block_ns)
		return;
	t->ep_open = 1;
	tot->episodes++;
	/* The thread is the running task here: its stack is where it is now. */
	t->ep_stack = capture_stack(ctx, task, &t->ep_sp_word, tot);
	t->ep_syscall = -1;
}

SEC("perf_event")
int on_sample(void *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32, tid = (__u32)pid_tgid;
	struct gl_layout *layout = bpf_map_lookup_elem(&watched, &tgid);
	struct task_struct *task;
	struct gs_totals *tot;
	struct gs_thread *t;
	struct gs_stats *s;
	struct gl_current cur;
	struct gl_pycur *py;

	if (!layout || !tid)
		return 0;
	tot = get_totals();
	if (!tot)
		return 0;
	tot->samples++;
	task = bpf_get_current_task_btf();
	if (read_current(task, layout, &cur, &py)) {
		tot->unreadable++;
		return 0;
	}
	/* The sample's greenlet is the one whose code ran (the origin, in a switch window). */
	s = get_stats(tgid, tid, cur.has_runtime ? cur.running : 0, tot);
	if (s)
		s->samples++;
	t = get_thread(tgid, tid, tot);
	if (!t)
		return 0;
	t->samples++;
	observe(ctx, task, t, tid, &cur, py, bpf_ktime_get_ns(), tot);
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(on_switch, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	__u32 ptgid = prev->tgid, ntgid = next->tgid;
	__u32 ptid = prev->pid, ntid = next->pid;
	struct gl_layout *layout = bpf_map_lookup_elem(&watched, &ptgid);
	struct gs_totals *tot;
	struct gs_thread *t;
	struct gl_current cur;
	struct gl_pycur *py;
	__u64 now;

	if (!layout && !bpf_map_lookup_elem(&watched, &ntgid))
		return 0;
	tot = get_totals();
	if (!tot)
		return 0;
	now = bpf_ktime_get_ns();

	/* Out: `prev` is the running task, so its memory is readable. */
	t = layout && ptid ? get_thread(ptgid, ptid, tot) : NULL;
	if (t && layout) {
		tot->switch_events++;
		if (read_current(prev, layout, &cur, &py) == 0) {
			observe(ctx, prev, t, ptid, &cur, py, now, tot);
		} else {
			/* A read that faulted: the thread is what it was at its last observation. */
			tot->unreadable++;
			cur.has_runtime = t->has_runtime;
			cur.id = t->greenlet;
			cur.running = t->greenlet;
		}
		t->off_cpu = 1;
		t->out_ns = now;
		/* Off-CPU time goes to the greenlet whose code was switched out. */
		t->out_greenlet = cur.has_runtime ? cur.running : 0;
		t->out_sleeping = prev_state != TASK_RUNNING;
		t->out_syscall = -1;
		t->out_stack = -1;
		/*
		 * Where it blocks, in case this wait turns into an episode (nothing
		 * observes a thread while it is off the CPU); and where a long slice
		 * is preempted, should it cross the threshold while it waits for a CPU.
		 */
		if (cur.has_runtime && !t->idle && !t->ep_open &&
		    (t->out_sleeping || now - t->since_ns > block_ns / 2)) {
			struct pt_regs___gs *regs = (struct pt_regs___gs *)bpf_task_pt_regs(prev);

			if (t->out_sleeping)
				t->out_syscall = (long)BPF_CORE_READ(regs, orig_ax);
			t->out_stack = capture_stack(ctx, prev, &t->out_sp_word, tot);
		}
	}

	/* In: `next` comes back; its counter has not moved while it was away. */
	t = ntid ? bpf_map_lookup_elem(&threads, &ntid) : NULL;
	if (t && t->tgid == ntgid && t->off_cpu) {
		__u64 away = now - t->out_ns;
		struct gs_stats *s = get_stats(ntgid, ntid, t->out_greenlet, tot);

		tot->switch_events++;
		t->off_cpu = 0;
		if (s) {
			if (t->out_sleeping) {
				s->sleep_ns += away;
				s->sleeps++;
			} else {
				s->preempt_ns += away;
				s->preempts++;
			}
		}
		if (t->has_runtime) {
			/* Blocked time only: a preempted greenlet wanted the CPU. */
			if (t->out_sleeping)
				t->ep_off_ns += away;
			t->last_ns = now;
			if (!t->ep_open && !t->idle && now - t->since_ns > block_ns) {
				t->ep_open = 1;
				tot->episodes++;
				t->ep_stack = t->out_stack;
				t->ep_syscall = t->out_syscall;
				t->ep_sp_word = t->out_sp_word;
			}
		}
	}
	return 0;
}

/* The `new` probe: a greenlet's name, parent and thread. */
static __always_inline int on_new(__u64 id, __u64 parent, const char *name)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct gs_gkey k = { .tgid = pid_tgid >> 32, .id = id };
	struct gs_name n = {};
	struct gs_totals *tot = get_totals();

	if (!tot)
		return 0;
	/* Atomic: a uprobe program may be preempted, and another thread of the target may run
	 * this handler on the same CPU meanwhile (the sampling programs touch other fields). */
	__sync_fetch_and_add(&tot->created, 1);
	n.parent = parent;
	n.created_ns = bpf_ktime_get_ns();
	n.tid = (__u32)pid_tgid;
	if (bpf_probe_read_user_str(n.name, sizeof(n.name), name) < 0)
		n.name[0] = 0;
	if (bpf_map_update_elem(&names, &k, &n, BPF_ANY))
		__sync_fetch_and_add(&tot->name_failures, 1);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(up_new, __u64 id, __u64 parent, const char *name)
{
	return on_new(id, parent, name);
}

SEC("usdt")
int BPF_USDT(usdt_new, __u64 id, __u64 parent, const char *name)
{
	return on_new(id, parent, name);
}
