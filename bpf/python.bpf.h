/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Python greenlet (the `greenlet` package, >= 2.0), seen from outside: uprobes on
 * functions of its `_greenlet*.so` feed the same handlers, maps and model as the
 * Rust runtime's USDT probes (greenlet.bpf.c includes this file after them).
 * The loader (gltop/src/loader/python.rs) finds the functions in the .so's
 * symbol tables and the offsets below in its DWARF, and sets them before load.
 *
 * - `Greenlet::g_switch_finish(switchstack_result_t const&)` runs in the target
 *   of every switch into a started greenlet, and `UserGreenlet::inner_bootstrap
 *   (PyGreenlet*, PyObject*)` in the target of the first one: the two callers
 *   of greenlet's tracer hook, so they see exactly what `greenlet.settrace`
 *   sees. A transfer is a throw when the target's pending arguments (`_args`,
 *   `_kwargs`) are both NULL: greenlet's own rule.
 * - The `UserGreenlet` and `MainGreenlet` constructors are `new`;
 *   `PythonState::did_finish` with a thread state is the end of `run`; the
 *   destructors are deallocation.
 *
 * A greenlet's id is the address of its `PyGreenlet`. An address can be
 * reused once the object is freed; a greenlet created at an address that still
 * has a record gets a generation above it (bits PY_GEN_SHIFT and up), so it is
 * a new record.
 *
 * Every record write here ends in on_transfer, on_new or on_dead, so the sums in
 * `totals` and the ended sets (greenlet.h, "Ended sets") are kept the same way as
 * for the Rust runtime: a death, wherever it is found (did_finish, a destructor),
 * goes through on_dead, which counts it and pushes the key. The writes made
 * before those calls (a late greenlet's name, a throw's outcome) touch no sum.
 */
#ifndef GREENLET_PYTHON_BPF_H
#define GREENLET_PYTHON_BPF_H

/* Byte offsets, from the .so's DWARF (see gltop/src/loader/python.rs, `Offsets`). */
const volatile __u32 py_self = 0;		/* Greenlet::_self (the PyGreenlet*) */
const volatile __u32 py_args = 0;		/* Greenlet::switch_args + SwitchingArgs::_args */
const volatile __u32 py_kwargs = 0;		/* Greenlet::switch_args + SwitchingArgs::_kwargs */
const volatile __u32 py_origin = 0;		/* switchstack_result_t::origin_greenlet */
const volatile __u32 py_python_state = 0;	/* Greenlet::python_state */
const volatile __u32 py_ob_type = 0;		/* PyObject::ob_type */
const volatile __u32 py_tp_name = 0;		/* PyTypeObject::tp_name */
/* g_switch_finish returns a class with a destructor: through a hidden slot in arg 1. */
const volatile __u8 py_finish_slot = 0;
/* inner_bootstrap's origin, the constructor's parent: passed by reference. */
const volatile __u8 py_origin_ref = 0;
const volatile __u8 py_parent_ref = 0;

#define PY_GEN_SHIFT 48

/*
 * The blocking threshold, written by the loader after load when the blocking
 * detector runs (never: no slice is long).
 */
volatile __u64 py_block_ns = ~0ULL;

/* Per thread (tid): its running greenlet, for the blocking detector (bpf/pycur.h). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct gl_pycur);
} py_cur SEC(".maps");

/* Generation of an address that held a greenlet before (absent: 0). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} py_gens SEC(".maps");

static __always_inline __u64 py_read(__u64 addr)
{
	__u64 v = 0;

	bpf_probe_read_user(&v, sizeof(v), (const void *)addr);
	return v;
}

/* The map key of the greenlet at `addr`. */
static __always_inline __u64 py_key(__u64 addr)
{
	__u64 *gen;

	if (!addr)
		return 0;
	gen = bpf_map_lookup_elem(&py_gens, &addr);
	return gen ? addr | (*gen << PY_GEN_SHIFT) : addr;
}

/* The key of a greenlet being created at `addr`: a new generation if the old one has a record. */
static __always_inline __u64 py_new_key(__u64 addr)
{
	__u64 key = py_key(addr);
	__u64 gen;

	if (!bpf_map_lookup_elem(&greenlets, &key))
		return key;
	gen = (key >> PY_GEN_SHIFT) + 1;
	bpf_map_update_elem(&py_gens, &addr, &gen, BPF_ANY);
	return addr | (gen << PY_GEN_SHIFT);
}

/* The type name of the object at `obj` (a pointer into the target's memory). */
static __always_inline const char *py_type_name(__u64 obj)
{
	return (const char *)py_read(py_read(obj + py_ob_type) + py_tp_name);
}

/*
 * The record of greenlet `key` at `addr`, named by its type if it has no name yet: a
 * greenlet created before the attach is first seen by a transfer, not by `new`.
 */
static __always_inline void py_name_late(__u64 key, __u64 addr, struct gl_totals *tot)
{
	struct gl_stats *g = bpf_map_lookup_elem(&greenlets, &key);

	if (g && g->name[0])
		return;
	if (!g)
		g = get_greenlet(key, tot, true);
	if (g && bpf_probe_read_user_str(g->name, sizeof(g->name), py_type_name(addr)) < 0)
		g->name[0] = 0;
}

/* Whether the record of `key` is named like gevent's Hub (a type name ending in "Hub"). */
static __always_inline __u8 py_is_hub(__u64 key)
{
	struct gl_stats *g = bpf_map_lookup_elem(&greenlets, &key);
	__u32 n = 0;

	if (!g)
		return 0;
	for (__u32 i = 0; i < GL_NAME_LEN; i++) {
		if (!g->name[i])
			break;
		n = i + 1;
	}
	if (n < 3 || n > GL_NAME_LEN)
		return 0;
	return g->name[(n - 3) & (GL_NAME_LEN - 1)] == 'H' &&
	       g->name[(n - 2) & (GL_NAME_LEN - 1)] == 'u' &&
	       g->name[(n - 1) & (GL_NAME_LEN - 1)] == 'b';
}

/* The thread switches to `target` now: its entry in `py_cur`. */
static __always_inline void py_track(__u64 target)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct gl_pycur *c = bpf_map_lookup_elem(&py_cur, &tid);
	struct gl_pycur fresh = {};
	__u64 now = bpf_ktime_get_ns();

	if (!c) {
		bpf_map_update_elem(&py_cur, &tid, &fresh, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&py_cur, &tid);
		if (!c)
			return;
	} else if (!c->idle && now - c->start_ns > py_block_ns) {
		c->long_switches = c->switches;
		c->long_end_ns = now;
	}
	c->switches++;
	c->start_ns = now;
	c->id = target;
	c->idle = py_is_hub(target);
}

/*
 * A transfer out of a greenlet whose `run` ended (did_finish) is a switch when
 * it returned (greenlet turns GreenletExit into a return) and a throw when it
 * raised: the outcome recorded at did_finish is corrected here.
 */
static __always_inline int py_transfer(__u64 origin_addr, __u64 target_addr, bool is_throw)
{
	__u64 origin = py_key(origin_addr), target = py_key(target_addr);
	struct gl_totals *tot = get_totals();
	struct gl_stats *o;

	if (!tot)
		return 0;
	py_name_late(origin, origin_addr, tot);
	py_name_late(target, target_addr, tot);
	if (is_throw) {
		o = bpf_map_lookup_elem(&greenlets, &origin);
		if (o && o->dead && !o->done && o->outcome == 0) {
			o->outcome = 1;
			tot_add(&tot->dead_by_outcome[0], -1);
			tot_add(&tot->dead_by_outcome[1], 1);
		}
	}
	py_track(target);
	return on_transfer(origin, target, is_throw);
}

SEC("uprobe")
int py_switch_finish(struct pt_regs *ctx)
{
	__u64 a1 = PT_REGS_PARM1(ctx), a2 = PT_REGS_PARM2(ctx), a3 = PT_REGS_PARM3(ctx);
	__u64 self, err, target, origin;
	bool is_throw;

	/* Each register read on its own: the verifier refuses a context read at a computed offset. */
	asm volatile("" : "+r"(a1), "+r"(a2), "+r"(a3));
	self = py_finish_slot ? a2 : a1;
	err = py_finish_slot ? a3 : a2;
	target = py_read(self + py_self);
	origin = py_read(err + py_origin);
	is_throw = !py_read(self + py_args) && !py_read(self + py_kwargs);
	return py_transfer(origin, target, is_throw);
}

SEC("uprobe")
int py_bootstrap(struct pt_regs *ctx)
{
	__u64 self = PT_REGS_PARM1(ctx);
	__u64 origin = PT_REGS_PARM2(ctx);
	__u64 target = py_read(self + py_self);
	bool is_throw = !py_read(self + py_args) && !py_read(self + py_kwargs);

	if (py_origin_ref)
		origin = py_read(origin);
	return py_transfer(origin, target, is_throw);
}

/* UserGreenlet(PyGreenlet* p, BorrowedGreenlet the_parent) */
SEC("uprobe")
int py_new_user(struct pt_regs *ctx)
{
	__u64 addr = PT_REGS_PARM2(ctx);
	__u64 parent = PT_REGS_PARM3(ctx);

	if (py_parent_ref)
		parent = py_read(parent);
	return on_new(py_new_key(addr), py_key(parent), py_type_name(addr));
}

/* MainGreenlet(PyGreenlet* p, ThreadState*) */
SEC("uprobe")
int py_new_main(struct pt_regs *ctx)
{
	__u64 addr = PT_REGS_PARM2(ctx);

	return on_new(py_new_key(addr), 0, py_type_name(addr));
}

/* PythonState::did_finish(PyThreadState*): with a thread state, the end of `run`. */
SEC("uprobe")
int py_finish(struct pt_regs *ctx)
{
	__u64 state = PT_REGS_PARM1(ctx);

	if (!PT_REGS_PARM2(ctx))
		return 0; /* from the destructor: not the end of a run */
	/* Returned, unless the transfer out of it is a throw (py_transfer). */
	return on_dead(py_key(py_read(state - py_python_state + py_self)), 0);
}

/*
 * ~UserGreenlet, ~MainGreenlet: the greenlet is deallocated. One whose `run`
 * ended is dead already. Else no transfer follows: a main greenlet's thread
 * exited (or it is freed after it), a user greenlet never started is
 * discarded, one that started was abandoned in a dead thread.
 */
static __always_inline int py_dealloc(struct pt_regs *ctx, bool main)
{
	__u64 key = py_key(py_read(PT_REGS_PARM1(ctx) + py_self));
	struct gl_stats *g = bpf_map_lookup_elem(&greenlets, &key);
	struct gl_thread *t;
	struct gl_pycur *c;
	__u32 tid;
	__u8 outcome = 4;

	/*
	 * No record: it died and its record left the kernel already (the usual case), or it
	 * predates the attach and never transferred since: either way nothing to report.
	 */
	if (!key || !g || g->dead)
		return 0;
	if (!main && g->seen_new && g->switches_in + g->throws_in == 0)
		outcome = 5;
	/* A main greenlet freed after its thread exited: that thread's entry goes. */
	if (main) {
		tid = g->tid;
		t = bpf_map_lookup_elem(&threads, &tid);
		if (t && t->current == key && tid != (__u32)bpf_get_current_pid_tgid())
			bpf_map_delete_elem(&threads, &tid);
		/* And its running greenlet for the blocking detector, if it is this one. */
		c = bpf_map_lookup_elem(&py_cur, &tid);
		if (c && c->id == key && tid != (__u32)bpf_get_current_pid_tgid())
			bpf_map_delete_elem(&py_cur, &tid);
	}
	on_dead(key, outcome);
	return 0;
}

SEC("uprobe")
int py_dealloc_user(struct pt_regs *ctx)
{
	return py_dealloc(ctx, false);
}

SEC("uprobe")
int py_dealloc_main(struct pt_regs *ctx)
{
	return py_dealloc(ctx, true);
}

#endif /* GREENLET_PYTHON_BPF_H */
