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

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Capacities are defaults; the loader sets its own before load. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct gl_stats);
} greenlets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
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

/* Initial values for inserts (in .rodata, so they cost no stack). */
static const struct gl_stats zero_stats;
static const struct gl_edge zero_edge;

static __always_inline struct gl_totals *get_totals(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&totals, &zero);
}

/*
 * The entry of greenlet `id`, created empty if absent. NULL only when the
 * insert failed, which is counted. `late`: the caller is not `new`, so an
 * entry created here is a greenlet that predates the attach (or was evicted).
 */
static __always_inline struct gl_stats *get_greenlet(__u64 id, struct gl_totals *tot, bool late)
{
	struct gl_stats *g = bpf_map_lookup_elem(&greenlets, &id);

	if (g)
		return g;
	if (bpf_map_update_elem(&greenlets, &id, &zero_stats, BPF_NOEXIST) == 0) {
		tot->greenlet_inserts++;
		if (late)
			tot->late_greenlets++;
	}
	g = bpf_map_lookup_elem(&greenlets, &id);
	if (!g)
		tot->greenlet_failures++;
	return g;
}

/*
 * Greenlets never change threads: the thread id is read once per record (a
 * record created by a transfer, for a greenlet that predates the attach).
 */
static __always_inline void set_tid(struct gl_stats *g)
{
	if (!g->tid)
		g->tid = (__u32)bpf_get_current_pid_tgid();
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

/* The slice `g` is running ends at `now` (nothing if it is not running). */
static __always_inline void end_slice(struct gl_stats *g, __u64 now)
{
	if (g->last_in_ns && now >= g->last_in_ns) {
		__u64 slice = now - g->last_in_ns;
		__u32 b = log2_u64(slice);

		if (b >= GL_HIST_BUCKETS)
			b = GL_HIST_BUCKETS - 1;
		g->hist[b]++;
		g->on_cpu_ns += slice;
		g->slices++;
		if (slice > g->max_slice_ns)
			g->max_slice_ns = slice;
	}
	g->last_in_ns = 0;
	g->running = 0;
}

/* A transfer (switch or throw) from `origin` to `target`, fired in the target. */
static __always_inline int on_transfer(__u64 origin, __u64 target, bool is_throw)
{
	__u64 now = bpf_ktime_get_ns();
	struct gl_totals *tot = get_totals();
	struct gl_stats *g;
	struct gl_edge *e;
	struct gl_edge_key ek = { .origin = origin, .target = target };

	if (!tot)
		return 0;
	if (is_throw)
		tot->throws++;
	else
		tot->switches++;

	/* The origin's slice ends here. */
	g = get_greenlet(origin, tot, true);
	if (g) {
		if (is_throw)
			g->throws_out++;
		else
			g->switches_out++;
		end_slice(g, now);
		set_tid(g);
	}

	/* The target's slice begins. */
	g = get_greenlet(target, tot, true);
	if (g) {
		if (is_throw)
			g->throws_in++;
		else
			g->switches_in++;
		g->last_in_ns = now;
		g->running = 1;
		set_tid(g);
	}

	e = bpf_map_lookup_elem(&edges, &ek);
	if (!e) {
		if (bpf_map_update_elem(&edges, &ek, &zero_edge, BPF_NOEXIST) == 0)
			tot->edge_inserts++;
		e = bpf_map_lookup_elem(&edges, &ek);
	}
	if (e) {
		if (is_throw)
			e->throws++;
		else
			e->switches++;
	} else {
		tot->edge_failures++;
	}
	return 0;
}

static __always_inline int on_new(__u64 id, __u64 parent, const char *name)
{
	__u64 now = bpf_ktime_get_ns();
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct gl_totals *tot = get_totals();
	struct gl_stats *g;

	if (!tot)
		return 0;
	tot->created++;
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
		/* A thread's main greenlet: it is running from the moment it exists. */
		g->last_in_ns = now;
		g->running = 1;
	}
	return 0;
}

static __always_inline int on_dead(__u64 id, __u8 outcome)
{
	struct gl_totals *tot = get_totals();
	struct gl_stats *g;
	__u32 slot = outcome < GL_OUTCOMES ? outcome : GL_OUTCOMES - 1;

	if (!tot)
		return 0;
	tot->dead++;
	if (slot < GL_OUTCOMES)
		tot->dead_by_outcome[slot]++;
	g = get_greenlet(id, tot, true);
	if (!g)
		return 0;
	/*
	 * A greenlet that dies while running (a main greenlet at thread exit, or
	 * one whose last switch out comes after this probe) ends its slice here.
	 */
	g->dead_ns = bpf_ktime_get_ns();
	end_slice(g, g->dead_ns);
	g->dead = 1;
	g->outcome = outcome;
	set_tid(g);
	return 0;
}

/* Plain uprobes: argument i is in the i-th integer argument register. */
SEC("uprobe.multi")
int BPF_KPROBE(up_switch, __u64 origin, __u64 target)
{
	return on_transfer(origin, target, false);
}

SEC("uprobe.multi")
int BPF_KPROBE(up_throw, __u64 origin, __u64 target)
{
	return on_transfer(origin, target, true);
}

SEC("uprobe.multi")
int BPF_KPROBE(up_new, __u64 id, __u64 parent, const char *name)
{
	return on_new(id, parent, name);
}

SEC("uprobe.multi")
int BPF_KPROBE(up_dead, __u64 id, __u64 outcome)
{
	return on_dead(id, (__u8)outcome);
}

/*
 * The floor, for benchmarks only: the least a handler can do (bump a per-CPU
 * counter). benches/gltop_probe_cost.rs compares the handlers above with it.
 */
SEC("uprobe.multi")
int up_floor(struct pt_regs *ctx)
{
	struct gl_totals *tot = get_totals();

	if (tot)
		tot->switches++;
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
