// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * Kernel-side aggregation of the `greenlet` USDT provider (probes/greenlet.d)
 * for one traced process. The Rust loader (gltop/src/loader/) attaches each probe
 * either through a plain uprobe that reads the argument registers (`up_*`
 * programs: used when every call site passes argument i in the i-th ABI
 * register, as the `usdt` crate does; cheapest) or through libbpf's generic
 * USDT argument decoding (`usdt_*` programs: any other argument layout).
 * Both kinds run the same handlers below.
 *
 * Cost matters: every hit already pays the uprobe trap (550-750 ns per hit on
 * the project's VM for a program that only bumps a per-CPU counter; README,
 * "What attaching costs"), so a handler does a handful of map lookups and no
 * helper it can do without.
 */
#include <linux/types.h>
#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/usdt.bpf.h>

#include "greenlet.h"
#include "pycur.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/*
 * Capacities are defaults; the loader sets its own before load. Plain hash
 * maps, not LRU: an entry stays until user space deletes it (see greenlet.h,
 * "Lifetimes"), so the record of a live greenlet is never lost to a newer one.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct gl_stats);
} greenlets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct gl_thread);
} threads SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct gl_edge_key);
	__type(value, struct gl_edge);
} edges SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gl_totals);
} totals SEC(".maps");

/*
 * Following forks (greenlet.h): set to 1 by the loader before load. The
 * verifier drops the code behind it when it is 0, so the per-process
 * handlers pay nothing for it.
 */
const volatile __u32 follow = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct gl_proc);
} procs SEC(".maps");

/* Set to 1 by the loader before load to keep the ended sets (greenlet.h, "Ended sets"). */
const volatile __u32 track_ended = 0;

/* Keys of greenlets whose `dead` fired, and of edges just inserted, until user space drains them. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, __u8);
} ended_ids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct gl_edge_key);
	__type(value, __u8);
} new_edges SEC(".maps");

/* Initial values for inserts (in .rodata, so they cost no stack). */
static const struct gl_stats zero_stats;
static const struct gl_thread zero_thread;
static const struct gl_edge zero_edge;

/* Keeps the compiler from moving memory accesses across it (see greenlet.h, "Lifetimes"). */
#define barrier() asm volatile("" ::: "memory")

/* Outcomes after which no transfer out of the greenlet follows (probes/greenlet.d). */
#define GL_OUTCOME_THREAD_EXIT 4

static __always_inline struct gl_totals *get_totals(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&totals, &zero);
}

/*
 * Adds `n` to a field of this CPU's totals. Atomic although the copy is this CPU's own: a
 * uprobe program runs with migration disabled but may be preempted, so two threads of the
 * target can be inside a handler on the same CPU, and a plain load-add-store would lose the
 * other thread's updates made in between (seen once: 28 throws missing of 166,671).
 */
static __always_inline void tot_add(__u64 *field, __s64 n)
{
	__sync_fetch_and_add(field, n);
}

/*
 * The entry of greenlet `id`, created empty if absent. NULL only when the
 * insert failed (the map is full), which is counted. `late`: the caller is not
 * `new`, so an entry created here is a greenlet that predates the attach.
 */
static __always_inline struct gl_stats *get_greenlet(__u64 id, struct gl_totals *tot, bool late)
{
	struct gl_stats *g = bpf_map_lookup_elem(&greenlets, &id);

	if (g)
		return g;
	if (bpf_map_update_elem(&greenlets, &id, &zero_stats, BPF_NOEXIST) == 0) {
		tot_add(&tot->live, 1);
		if (late)
			tot_add(&tot->late_greenlets, 1);
	}
	g = bpf_map_lookup_elem(&greenlets, &id);
	if (!g)
		tot_add(&tot->greenlet_failures, 1);
	return g;
}

/* The entry of thread `tid`, created empty if absent; NULL (counted) if the map is full. */
static __always_inline struct gl_thread *get_thread(__u32 tid, struct gl_totals *tot)
{
	struct gl_thread *t = bpf_map_lookup_elem(&threads, &tid);

	if (t)
		return t;
	bpf_map_update_elem(&threads, &tid, &zero_thread, BPF_NOEXIST);
	t = bpf_map_lookup_elem(&threads, &tid);
	if (!t)
		tot_add(&tot->thread_failures, 1);
	return t;
}

/*
 * Thread `t`'s current greenlet is now `id`, since `now`. The time is stored
 * first: a reader that copies the entry front to back and sees the new
 * `current` sees its `since_ns` too.
 */
static __always_inline void set_current(struct gl_thread *t, __u64 id, __u64 now)
{
	t->since_ns = now;
	barrier();
	t->current = id;
}

/* floor(log2(v)) for v >= 1, 0 for v == 0; branch-free. */
static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r, shift;

	r = (v > 0xFFFFFFFFULL) << 5;
	v >>= r;
	shift = (v > 0xFFFF) << 4;
	v >>= shift;
	r |= shift;
	shift = (v > 0xFF) << 3;
	v >>= shift;
	r |= shift;
	shift = (v > 0xF) << 2;
	v >>= shift;
	r |= shift;
	shift = (v > 0x3) << 1;
	v >>= shift;
	r |= shift;
	r |= (v >> 1);
	return r;
}

/* A slice of `g` that began at `since` (0: unknown) ends at `now`; counted in `tot` too. */
static __always_inline void end_slice(struct gl_stats *g, struct gl_totals *tot, __u64 since,
				      __u64 now)
{
	if (since && now >= since) {
		__u64 slice = now - since;
		__u32 b = log2_u64(slice);

		if (b >= GL_HIST_BUCKETS)
			b = GL_HIST_BUCKETS - 1;
		g->hist[b]++;
		g->on_cpu_ns += slice;
		g->slices++;
		if (slice > g->max_slice_ns)
			g->max_slice_ns = slice;
		tot_add(&tot->hist[b], 1);
		tot_add(&tot->slice_ns, slice);
		tot_add(&tot->slices, 1);
	}
}

/* `key` into an ended set (greenlet.h, "Ended sets"); a failure other than "there already" counts. */
static __always_inline void push_key(void *set, const void *key, struct gl_totals *tot)
{
	static const __u8 one = 1;
	long err = bpf_map_update_elem(set, key, &one, BPF_NOEXIST);

	if (err && err != -17 /* EEXIST */)
		tot_add(&tot->set_overflows, 1);
}

/*
 * Whether the calling process is outside what is watched (the handler then
 * does nothing): never when not following. `*p` is its entry while following,
 * else NULL.
 */
static __always_inline bool unwatched(__u32 tgid, struct gl_proc **p)
{
	*p = NULL;
	if (!follow)
		return false;
	*p = bpf_map_lookup_elem(&procs, &tgid);
	return !*p;
}

/* The map key of greenlet `id` of process `tgid` (greenlet.h, "Following forks"). */
static __always_inline __u64 gkey(__u64 id, __u32 tgid)
{
	if (!follow || !id)
		return id;
	return id | ((__u64)tgid << GL_PID_SHIFT);
}

/* A transfer (switch or throw) from `origin` to `target`, fired in the target. */
static __always_inline int on_transfer(__u64 origin, __u64 target, bool is_throw)
{
	__u64 now = bpf_ktime_get_ns();
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	struct gl_proc *p;
	struct gl_totals *tot = get_totals();
	struct gl_thread *t;
	struct gl_stats *o, *g;
	struct gl_edge *e;
	struct gl_edge_key ek;

	if (!tot || unwatched(pid_tgid >> 32, &p))
		return 0;
	origin = gkey(origin, pid_tgid >> 32);
	target = gkey(target, pid_tgid >> 32);
	ek.origin = origin;
	ek.target = target;
	if (is_throw) {
		tot_add(&tot->throws, 1);
		if (p)
			__sync_fetch_and_add(&p->throws, 1);
	} else {
		tot_add(&tot->switches, 1);
		if (p)
			__sync_fetch_and_add(&p->switches, 1);
	}
	t = get_thread(tid, tot);

	/* The origin's slice ends here (if this thread's current greenlet is known). */
	o = get_greenlet(origin, tot, true);
	if (o) {
		if (is_throw)
			o->throws_out++;
		else
			o->switches_out++;
		if (t && t->current == origin)
			end_slice(o, tot, t->since_ns, now);
		o->tid = tid;
	}

	/* The target's slice begins. Its record exists before the thread names it. */
	g = get_greenlet(target, tot, true);
	if (g) {
		if (is_throw)
			g->throws_in++;
		else
			g->switches_in++;
		g->tid = tid;
	}
	if (t) {
		t->transfers++;
		set_current(t, target, now);
	}

	e = bpf_map_lookup_elem(&edges, &ek);
	if (!e) {
		if (bpf_map_update_elem(&edges, &ek, &zero_edge, BPF_NOEXIST) == 0 && track_ended)
			push_key(&new_edges, &ek, tot);
		e = bpf_map_lookup_elem(&edges, &ek);
	}
	if (e) {
		if (is_throw)
			e->throws++;
		else
			e->switches++;
	} else {
		tot_add(&tot->edge_failures, 1);
	}

	/* A dead origin's last transfer: nothing names it after this store. */
	if (o && o->dead) {
		barrier();
		o->done = 1;
	}
	return 0;
}

static __always_inline int on_new(__u64 id, __u64 parent, const char *name)
{
	__u64 now = bpf_ktime_get_ns();
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	struct gl_proc *p;
	struct gl_totals *tot = get_totals();
	struct gl_thread *t;
	struct gl_stats *g;

	if (!tot || unwatched(pid_tgid >> 32, &p))
		return 0;
	id = gkey(id, pid_tgid >> 32);
	parent = gkey(parent, pid_tgid >> 32);
	tot_add(&tot->created, 1);
	if (p)
		__sync_fetch_and_add(&p->created, 1);
	g = get_greenlet(id, tot, false);
	if (!g)
		return 0;
	g->parent = parent;
	g->created_ns = now;
	g->tid = tid;
	g->seen_new = 1;
	if (bpf_probe_read_user_str(g->name, sizeof(g->name), name) < 0)
		g->name[0] = 0;
	if (parent == 0) {
		/* A thread's main greenlet: it is current from the moment it exists. */
		t = get_thread(tid, tot);
		if (t)
			set_current(t, id, now);
	}
	return 0;
}

static __always_inline int on_dead(__u64 id, __u8 outcome)
{
	__u64 now = bpf_ktime_get_ns();
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	struct gl_proc *p;
	struct gl_totals *tot = get_totals();
	struct gl_thread *t;
	struct gl_stats *g;
	__u32 slot = outcome < GL_OUTCOMES ? outcome : GL_OUTCOMES - 1;

	if (!tot || unwatched(pid_tgid >> 32, &p))
		return 0;
	id = gkey(id, pid_tgid >> 32);
	tot_add(&tot->dead, 1);
	if (p)
		__sync_fetch_and_add(&p->dead, 1);
	if (slot < GL_OUTCOMES)
		tot_add(&tot->dead_by_outcome[slot], 1);
	g = get_greenlet(id, tot, true);
	if (!g)
		return 0;
	if (!g->dead)
		tot_add(&tot->live, -1);
	g->dead_ns = now;
	g->outcome = outcome;
	g->tid = tid;
	g->dead = 1;
	if (track_ended)
		push_key(&ended_ids, &id, tot);
	/*
	 * A greenlet that returned, failed or exited is still running: its slice
	 * ends at the transfer to its parent that follows, which also marks it
	 * done. After a thread exit or a discard no transfer follows: a main
	 * greenlet dying at thread exit ends its slice and its thread's entry here.
	 */
	if (outcome < GL_OUTCOME_THREAD_EXIT)
		return 0;
	t = bpf_map_lookup_elem(&threads, &tid);
	if (t && t->current == id) {
		end_slice(g, tot, t->since_ns, now);
		bpf_map_delete_elem(&threads, &tid);
	}
	barrier();
	g->done = 1;
	return 0;
}

/* Plain uprobes: argument i is in the i-th integer argument register. */
SEC("uprobe.multi")
int BPF_KPROBE(um_switch, __u64 origin, __u64 target)
{
	return on_transfer(origin, target, false);
}

SEC("uprobe.multi")
int BPF_KPROBE(um_throw, __u64 origin, __u64 target)
{
	return on_transfer(origin, target, true);
}

SEC("uprobe.multi")
int BPF_KPROBE(um_new, __u64 id, __u64 parent, const char *name)
{
	return on_new(id, parent, name);
}

SEC("uprobe.multi")
int BPF_KPROBE(um_dead, __u64 id, __u64 outcome)
{
	return on_dead(id, (__u8)outcome);
}

/*
 * The floor, for benchmarks only: the least a handler can do (bump a per-CPU
 * counter). benches/gltop_probe_cost.rs compares the handlers above with it.
 */
static __always_inline int floor_hit(void)
{
	struct gl_totals *tot = get_totals();

	if (tot)
		tot_add(&tot->switches, 1);
	return 0;
}

SEC("uprobe.multi")
int um_floor(struct pt_regs *ctx)
{
	return floor_hit();
}

/*
 * The same handlers as per-process uprobes: one perf-event uprobe per call
 * site, opened for the traced PID (the loader's default). The kernel runs
 * them only in that process; in a process forked from it, whose memory holds
 * copies of the breakpoints, the first hit of a site returns
 * UPROBE_HANDLER_REMOVE from the perf filter (kernel/trace/trace_uprobe.c,
 * uprobe_perf_func), and the kernel takes that site's breakpoint out of the
 * child (kernel/events/uprobes.c, handler_chain -> unapply_uprobe), lowering
 * the child's copy of the semaphore with it. The uprobe-multi programs above
 * are used when following forks (one link per probe, no PID filter).
 */
SEC("uprobe")
int BPF_KPROBE(up_switch, __u64 origin, __u64 target)
{
	return on_transfer(origin, target, false);
}

SEC("uprobe")
int BPF_KPROBE(up_throw, __u64 origin, __u64 target)
{
	return on_transfer(origin, target, true);
}

SEC("uprobe")
int BPF_KPROBE(up_new, __u64 id, __u64 parent, const char *name)
{
	return on_new(id, parent, name);
}

SEC("uprobe")
int BPF_KPROBE(up_dead, __u64 id, __u64 outcome)
{
	return on_dead(id, (__u8)outcome);
}

/* The floor as a per-process uprobe, for benchmarks only. */
SEC("uprobe")
int up_floor(struct pt_regs *ctx)
{
	return floor_hit();
}

/*
 * Python greenlet's functions, on the same handlers and maps (the loader
 * loads these programs only for a Python process, the ones above only for a
 * Rust one).
 */
#include "python.bpf.h"

/* The two fields of the kernel's task_struct read below (CO-RE: offsets from kernel BTF). */
struct task_struct {
	int pid;
	int tgid;
} __attribute__((preserve_access_index));

/*
 * While following: a process forked from a watched one is watched from its
 * first instruction. The tracepoint fires in the parent after the child is
 * set up and before it is woken (kernel/fork.c, kernel_clone), so the child's
 * entry exists before any of its probes can fire. Also fires for new threads
 * (same tgid), which are skipped.
 */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 ptgid = parent->tgid;
	__u32 ctgid = child->tgid;
	struct gl_proc fresh = { .ppid = ptgid };

	if (!follow || ptgid == ctgid || !bpf_map_lookup_elem(&procs, &ptgid))
		return 0;
	bpf_map_update_elem(&procs, &ctgid, &fresh, BPF_NOEXIST);
	return 0;
}

/* Generic USDT argument decoding, for any other argument layout. */
SEC("usdt")
int BPF_USDT(usdt_switch, __u64 origin, __u64 target)
{
	return on_transfer(origin, target, false);
}

SEC("usdt")
int BPF_USDT(usdt_throw, __u64 origin, __u64 target)
{
	return on_transfer(origin, target, true);
}

SEC("usdt")
int BPF_USDT(usdt_new, __u64 id, __u64 parent, const char *name)
{
	return on_new(id, parent, name);
}

SEC("usdt")
int BPF_USDT(usdt_dead, __u64 id, __u8 outcome)
{
	return on_dead(id, outcome);
}
