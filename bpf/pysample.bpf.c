// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * gltop's sampled mode on Python greenlet processes (issue 18), with nothing
 * added to a switch:
 *
 *  - `py_sample`, on the software cpu-clock perf event (one per CPU), reads
 *    the running greenlet of the interrupted thread through glibc's DTV
 *    (bpf/pysample.h) and counts samples per (process, thread, greenlet, type);
 *    the type's name is read once per type;
 *  - `py_switch`, on sched_switch, gives each greenlet its off-CPU time, from
 *    its thread's switch-out (read then) to its switch-in.
 *
 * Only processes in `pywatched` are looked at; the loader adds them.
 */
#include <linux/types.h>
#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "pysample.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct pg_layout);
} pywatched SEC(".maps");

/* LRU: nothing says when a greenlet dies; those that stopped running go first. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct pg_key);
	__type(value, struct pg_stats);
} pystats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct pg_tkey);
	__type(value, struct pg_name);
} pytypes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct pg_thread);
} pythreads SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pg_totals);
} pytotals SEC(".maps");

/* Python stacks, for `gltop record` (set by the loader: `record_stacks`). */
const volatile __u8 record_stacks = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct pg_pyoffs);
} pyoffs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct pg_skey);
	__type(value, __u64);
} pystacks SEC(".maps");

/* A thread's PyThreadState, once found (checked again at every use). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u64);
} pytstate SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pg_skey);
} pyscratch SEC(".maps");

static const struct pg_stats zero_stats;
static const struct pg_name zero_name;

/* Just the fields read here, relocated against the kernel's BTF (CO-RE). */
struct thread_struct {
	unsigned long fsbase;
} __attribute__((preserve_access_index));

struct task_struct {
	int pid;
	int tgid;
	struct thread_struct thread;
} __attribute__((preserve_access_index));

#define TASK_RUNNING 0

/* What one read of a thread found. */
struct pg_read {
	__u64 greenlet;
	__u64 tp;
	__u8 main;
};

static __always_inline int read_u64(__u64 *out, __u64 addr)
{
	return bpf_probe_read_user(out, sizeof(*out), (void *)addr);
}

/*
 * The ThreadState of module `modid` on the thread whose DTV is `dtv`, if it
 * checks out: its main greenlet is of type PyGreenlet_Type. Returns 1 with
 * `*state` and `*main` set, 0 when the slot holds no state of greenlet's.
 */
static __always_inline int state_at(__u64 dtv, __u32 modid, const struct pg_layout *l,
				    __u64 *state, __u64 *main)
{
	__u64 block = 0, s = 0, m = 0, type = 0;

	if (read_u64(&block, dtv + 16 * (__u64)modid) || block == 0 || block == (__u64)-1)
		return 0;
	if (read_u64(&s, block + l->tls_offset) || s <= 1)
		return 0;
	if (read_u64(&m, s + l->state_main) || m == 0)
		return 0;
	if (read_u64(&type, m + l->ob_type) || type != l->type_addr)
		return 0;
	*state = s;
	*main = m;
	return 1;
}

/* The number of slots of the DTV, bounded by the scan's limit. */
static __always_inline __u32 dtv_slots(__u64 dtv)
{
	__u64 n = 0;

	/* glibc keeps the array's length in dtv[-1]. */
	if (read_u64(&n, dtv - 16))
		return 0;
	return n > PG_MAX_MODID ? PG_MAX_MODID : (__u32)n;
}

struct scan_ctx {
	__u64 dtv;
	/* A copy: the callback reads the layout from the stack. */
	struct pg_layout l;
	__u32 slots;
	__u32 found;
	__u64 state;
	__u64 main;
};

static long scan_one(__u64 i, struct scan_ctx *c)
{
	__u32 modid = (__u32)i + 1;

	if (modid > c->slots)
		return 1;
	if (state_at(c->dtv, modid, &c->l, &c->state, &c->main)) {
		c->found = modid;
		return 1;
	}
	return 0;
}

/*
 * Reads the running greenlet of `task`. Returns -1 when a read faulted, 0 when
 * the thread has no greenlet state (yet), 1 with `out` filled.
 */
static __always_inline int py_read(struct task_struct *task, struct pg_layout *l,
				   struct pg_totals *tot, struct pg_read *out)
{
	__u64 fsbase = BPF_CORE_READ(task, thread.fsbase);
	__u64 dtv = 0, state = 0, main = 0, current = 0, type = 0;
	__u32 modid = l->modid;

	if (!fsbase)
		return 0;
	if (read_u64(&dtv, fsbase + 8))
		return -1;
	if (!dtv)
		return 0;
	if (!modid || !state_at(dtv, modid, l, &state, &main)) {
		struct scan_ctx c = { .dtv = dtv, .l = *l, .slots = dtv_slots(dtv) };
		__u64 block = 0, s = 0;

		/*
		 * A known id whose slot is simply empty here: this thread has not
		 * used greenlet (or its module's block is not allocated yet).
		 */
		if (modid && (read_u64(&block, dtv + 16 * (__u64)modid) == 0) &&
		    (block == 0 || block == (__u64)-1 ||
		     (read_u64(&s, block + l->tls_offset) == 0 && s <= 1)))
			return 0;
		tot->scans++;
		bpf_loop(PG_MAX_MODID, scan_one, &c, 0);
		if (!c.found)
			return 0;
		l->modid = c.found;
		state = c.state;
		main = c.main;
	}
	if (read_u64(&current, state + l->state_current))
		return -1;
	if (!current)
		return 0;
	if (read_u64(&type, current + l->ob_type))
		return -1;
	out->greenlet = current;
	out->tp = type;
	out->main = current == main;
	return 1;
}

static __always_inline struct pg_totals *get_totals(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&pytotals, &zero);
}

static __always_inline struct pg_stats *get_stats(struct pg_key *k, struct pg_totals *tot)
{
	struct pg_stats *s = bpf_map_lookup_elem(&pystats, k);

	if (s)
		return s;
	bpf_map_update_elem(&pystats, k, &zero_stats, BPF_NOEXIST);
	s = bpf_map_lookup_elem(&pystats, k);
	if (!s)
		tot->stats_failures++;
	return s;
}

static __always_inline struct pg_thread *get_thread(__u32 tgid, __u32 tid, struct pg_totals *tot)
{
	struct pg_thread *t = bpf_map_lookup_elem(&pythreads, &tid);
	struct pg_thread fresh = { .tgid = tgid };

	if (t)
		return t;
	bpf_map_update_elem(&pythreads, &tid, &fresh, BPF_NOEXIST);
	t = bpf_map_lookup_elem(&pythreads, &tid);
	if (!t)
		tot->thread_failures++;
	return t;
}

/* Reads the name of `type` once per (process, type). */
static __always_inline void name_type(__u32 tgid, __u64 type, const struct pg_layout *l,
				      struct pg_totals *tot)
{
	struct pg_tkey k = { .tgid = tgid, .tp = type };
	struct pg_name *n;
	__u64 name = 0;

	if (!type || bpf_map_lookup_elem(&pytypes, &k))
		return;
	if (bpf_map_update_elem(&pytypes, &k, &zero_name, BPF_NOEXIST)) {
		tot->name_failures++;
		return;
	}
	n = bpf_map_lookup_elem(&pytypes, &k);
	if (!n)
		return;
	if (read_u64(&name, type + l->tp_name) ||
	    bpf_probe_read_user_str(n->name, sizeof(n->name), (void *)name) < 0) {
		/* Unreadable now: forget it, to be read at a later sample. */
		bpf_map_delete_elem(&pytypes, &k);
	}
}


struct tstate_ctx {
	__u64 ts;
	__u64 found;
	__u32 tid;
	__u32 ts_next;
	__u32 ts_native_tid;
	__u32 failed;
};

static long tstate_one(__u64 i, struct tstate_ctx *c)
{
	__u64 native = 0;

	if (!c->ts)
		return 1;
	if (read_u64(&native, c->ts + c->ts_native_tid)) {
		c->failed = 1;
		return 1;
	}
	if (native == c->tid) {
		c->found = c->ts;
		return 1;
	}
	if (read_u64(&c->ts, c->ts + c->ts_next)) {
		c->failed = 1;
		return 1;
	}
	return 0;
}

/* The PyThreadState of thread `tid`, or 0. */
static __always_inline __u64 find_tstate(__u32 tid, const struct pg_pyoffs *o)
{
	__u64 *cached = bpf_map_lookup_elem(&pytstate, &tid);
	__u64 interp = 0, native = 0;
	struct tstate_ctx c = { .tid = tid, .ts_next = o->ts_next,
				.ts_native_tid = o->ts_native_tid };

	if (cached && *cached && read_u64(&native, *cached + o->ts_native_tid) == 0 &&
	    native == tid)
		return *cached;
	if (read_u64(&interp, o->runtime + o->interp_head) || !interp)
		return 0;
	if (read_u64(&c.ts, interp + o->threads_head))
		return 0;
	bpf_loop(PG_MAX_THREADS, tstate_one, &c, 0);
	if (c.found)
		bpf_map_update_elem(&pytstate, &tid, &c.found, BPF_ANY);
	return c.found;
}

struct walk_ctx {
	__u64 frame;
	__u32 fr_code;
	__u32 fr_previous;
	__u32 fr_owner;
	__u32 owner_cstack;
	__u32 depth;
	__u32 failed;
	__u32 truncated;
	__u32 pad;
};

/* One frame of the walk: its code object goes in the scratch key. */
static long walk_one(__u64 i, struct walk_ctx *c)
{
	__u32 zero = 0;
	struct pg_skey *k = bpf_map_lookup_elem(&pyscratch, &zero);
	__u64 code = 0;
	__u8 owner = 0;

	if (!k || !c->frame)
		return 1;
	if (c->fr_owner != PG_NONE &&
	    bpf_probe_read_user(&owner, 1, (void *)(c->frame + c->fr_owner))) {
		c->failed = 1;
		return 1;
	}
	if (c->fr_owner == PG_NONE || owner != c->owner_cstack) {
		if (c->depth >= PG_MAX_FRAMES) {
			c->truncated = 1;
			return 1;
		}
		if (read_u64(&code, c->frame + c->fr_code)) {
			c->failed = 1;
			return 1;
		}
		k->code[c->depth & (PG_MAX_FRAMES - 1)] = code;
		c->depth++;
	}
	if (read_u64(&c->frame, c->frame + c->fr_previous)) {
		c->failed = 1;
		return 1;
	}
	return 0;
}

/* Counts the Python stack of the running greenlet `r` of thread `tid`. */
static __always_inline void record_stack(__u32 tgid, __u32 tid, const struct pg_read *r,
					 struct pg_totals *tot)
{
	struct pg_pyoffs *o = bpf_map_lookup_elem(&pyoffs, &tgid);
	__u32 zero = 0;
	struct pg_skey *k = bpf_map_lookup_elem(&pyscratch, &zero);
	struct walk_ctx c = {};
	__u64 ts, frame = 0, one = 1, *n;

	if (!o || !k)
		return;
	ts = find_tstate(tid, o);
	if (!ts) {
		tot->no_tstate++;
		return;
	}
	if (read_u64(&frame, ts + o->ts_frame))
		goto unreadable;
	if (o->cframe_current != PG_NONE && frame &&
	    read_u64(&frame, frame + o->cframe_current))
		goto unreadable;
	__builtin_memset(k, 0, sizeof(*k));
	k->tgid = tgid;
	k->greenlet = r->greenlet;
	k->tp = r->tp;
	c.frame = frame;
	c.fr_code = o->fr_code;
	c.fr_previous = o->fr_previous;
	c.fr_owner = o->fr_owner;
	c.owner_cstack = o->owner_cstack;
	bpf_loop(2 * PG_MAX_FRAMES, walk_one, &c, 0);
	if (c.failed)
		goto unreadable;
	k->depth = c.depth;
	k->truncated = c.truncated;
	n = bpf_map_lookup_elem(&pystacks, k);
	if (n) {
		__sync_fetch_and_add(n, 1);
	} else if (bpf_map_update_elem(&pystacks, k, &one, BPF_NOEXIST)) {
		n = bpf_map_lookup_elem(&pystacks, k);
		if (n)
			__sync_fetch_and_add(n, 1);
		else
			tot->stack_failures++;
	}
	tot->stacks++;
	return;
unreadable:
	tot->stack_failures++;
}

SEC("perf_event")
int py_sample(void *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32, tid = (__u32)pid_tgid;
	struct pg_layout *l = bpf_map_lookup_elem(&pywatched, &tgid);
	struct pg_read r = {};
	struct pg_totals *tot;
	struct pg_thread *t;
	struct pg_stats *s;
	struct pg_key k = { .tgid = tgid, .tid = tid };
	int found;

	if (!l || !tid)
		return 0;
	tot = get_totals();
	if (!tot)
		return 0;
	tot->samples++;
	found = py_read(bpf_get_current_task_btf(), l, tot, &r);
	if (found < 0) {
		tot->unreadable++;
		return 0;
	}
	if (found == 0)
		tot->no_state++;
	k.greenlet = r.greenlet;
	k.tp = r.tp;
	s = get_stats(&k, tot);
	if (s) {
		s->samples++;
		s->main = r.main;
	}
	if (found)
		name_type(tgid, r.tp, l, tot);
	if (record_stacks && found)
		record_stack(tgid, tid, &r, tot);
	t = get_thread(tgid, tid, tot);
	if (!t)
		return 0;
	t->samples++;
	t->greenlet = r.greenlet;
	t->tp = r.tp;
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(py_switch, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	__u32 ptgid = prev->tgid, ntgid = next->tgid;
	__u32 ptid = prev->pid, ntid = next->pid;
	struct pg_layout *l = bpf_map_lookup_elem(&pywatched, &ptgid);
	struct pg_totals *tot;
	struct pg_thread *t;
	__u64 now;

	if (!l && !bpf_map_lookup_elem(&pywatched, &ntgid))
		return 0;
	tot = get_totals();
	if (!tot)
		return 0;
	now = bpf_ktime_get_ns();

	/* Out: `prev` is the running task, so its memory is readable. */
	t = l && ptid ? get_thread(ptgid, ptid, tot) : NULL;
	if (t && l) {
		struct pg_read r = {};
		int found = py_read(prev, l, tot, &r);

		tot->switch_events++;
		if (found < 0) {
			/* Faulted: the thread is what it was at its last observation. */
			tot->unreadable++;
		} else {
			t->greenlet = r.greenlet;
			t->tp = r.tp;
			/* A greenlet may be met here before any sample finds it running. */
			if (found)
				name_type(ptgid, r.tp, l, tot);
		}
		t->off_cpu = 1;
		t->out_ns = now;
		t->out_sleeping = prev_state != TASK_RUNNING;
	}

	/* In: `next` comes back; its greenlet has not changed while it was away. */
	t = ntid ? bpf_map_lookup_elem(&pythreads, &ntid) : NULL;
	if (t && t->tgid == ntgid && t->off_cpu) {
		struct pg_key k = { .tgid = ntgid, .tid = ntid, .greenlet = t->greenlet,
				    .tp = t->tp };
		struct pg_stats *s = get_stats(&k, tot);
		__u64 away = now - t->out_ns;

		tot->switch_events++;
		t->off_cpu = 0;
		if (s) {
			if (t->out_sleeping)
				s->sleep_ns += away;
			else
				s->preempt_ns += away;
		}
	}
	return 0;
}
