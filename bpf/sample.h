/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Reading a thread's running greenlet from BPF, with no probe in the switch.
 *
 * The greenlet runtime publishes, in its executable's `.greenlet_sample`
 * section, where its per-thread state lives (gltop/src/loader/layout.rs reads
 * it from the process and hands it to BPF as a `struct gl_layout`, keyed by
 * the process id). From any program that runs in the context of a thread of
 * that process (a cpu-clock sample, sched_switch for the task switched out),
 * `gl_read_current` follows:
 *
 *   state    = *(fsbase + tls_offset)          0: no runtime on this thread
 *   current  = *(state + state_current)        the running greenlet
 *   id       = *(current + inner_id)
 *   flags    = *(current + inner_flags)        bit 0: idle by design
 *   switches = *(state + state_switches)       +1 per transfer
 *   origin   = *(state + state_origin)         the last transfer's sender
 *   low,high = *(g + inner_stack)              g's stack; 0,0: unknown
 *
 * The switch window: a transfer makes its target current a few instructions
 * before the stack switch, which the sender makes from its own stack, and
 * corosensei's switch moves the stack pointer and the frame pointer one
 * instruction apart. `running` names the greenlet whose frames a frame-pointer
 * walk of the sample shows (the rest of the sample names it by `id`): of the
 * current greenlet and `origin`, the one whose known stack holds the thread's
 * frame pointer, else the one whose known stack holds its stack pointer
 * (code built without frame pointers may use rbp for data); failing both,
 * `origin` if its stack is unknown while the current one's is known (a main
 * greenlet whose thread's stack the runtime could not find), else `id`.
 * `id` stays the current greenlet: the one the switch counter's value belongs
 * to (the blocking detector's slice). The registers are the task's saved
 * user ones (bpf_task_pt_regs), the ones bpf_get_stackid walks from.
 *
 * The reads are of the thread's own memory while it is stopped (interrupted
 * or switching out), so they see a consistent state; a read that faults
 * (page not resident) fails and the sample is counted as unreadable. The
 * origin may have been freed since its transfer arrived (it is then neither
 * running nor on the stack the registers point into): a fault reading it
 * keeps the current greenlet.
 *
 * Needs CO-RE for `task->thread.fsbase` (x86-64): include bpf/bpf_core_read.h
 * before this file. `task` must be a trusted task pointer
 * (bpf_get_current_task_btf, a tp_btf argument), for bpf_task_pt_regs.
 */
#ifndef GREENLET_SAMPLE_H
#define GREENLET_SAMPLE_H

/* Mirrors `SampleLayout` of gltop/src/loader/layout.rs. */
struct gl_layout {
	__s64 tls_offset;
	__u32 state_current;
	__u32 state_switches;
	__u32 inner_id;
	__u32 inner_flags;
	__u32 state_origin;
	__u32 inner_stack;
};

/* Bit of a greenlet's flags byte: marked idle by design (a hub). */
#define GL_FLAG_IDLE 1

/* What one read of a thread found. */
struct gl_current {
	/* The current greenlet's id; valid when `has_runtime`. */
	__u64 id;
	/*
	 * The id of the greenlet whose code runs: `id`, or in the switch window
	 * the origin's (see above). Valid when `has_runtime`.
	 */
	__u64 running;
	/* The thread's switch counter. */
	__u64 switches;
	/* The current greenlet's flags. */
	__u8 flags;
	/* 0: the thread has no greenlet runtime state (or it could not be read). */
	__u8 has_runtime;
	/* 1: in the switch window (`running` is the origin). */
	__u8 in_window;
};

/* A greenlet's stack, [low, high); both zero when unknown. */
struct gl_stack {
	__u64 low;
	__u64 high;
};

#ifdef __BPF__
/*
 * Just the fields read here; libbpf relocates their offsets against the
 * running kernel's BTF (CO-RE), so no vmlinux.h is needed.
 */
struct thread_struct {
	unsigned long fsbase;
} __attribute__((preserve_access_index));

struct task_struct {
	int pid;
	int tgid;
	struct thread_struct thread;
} __attribute__((preserve_access_index));

/* The x86-64 kernel's pt_regs: the user frame and stack pointers. */
struct pt_regs___gl {
	unsigned long bp;
	unsigned long sp;
} __attribute__((preserve_access_index));

static __always_inline int gl_stack_known(const struct gl_stack *s)
{
	return s->low < s->high;
}

static __always_inline int gl_stack_has(const struct gl_stack *s, __u64 sp)
{
	return gl_stack_known(s) && sp >= s->low && sp < s->high;
}

/*
 * The origin, if the sample's frames are its own rather than the current
 * greenlet's (see the switch window above), else 0; `cur_stack` is the
 * current greenlet's stack, which does not hold `bp`. A read that faults
 * gives 0.
 */
static __always_inline __u64 gl_window_origin(__u64 state, __u64 current,
					      const struct gl_stack *cur_stack, __u64 bp,
					      __u64 sp, const struct gl_layout *layout)
{
	struct gl_stack stack = {};
	__u64 origin = 0;

	if (bpf_probe_read_user(&origin, sizeof(origin),
				(void *)(state + layout->state_origin)))
		return 0;
	if (!origin || origin == current)
		return 0;
	if (bpf_probe_read_user(&stack, sizeof(stack),
				(void *)(origin + layout->inner_stack)))
		return 0;
	if (gl_stack_has(&stack, bp))
		return origin;
	if (gl_stack_has(cur_stack, sp))
		return 0;
	if (gl_stack_has(&stack, sp))
		return origin;
	if (gl_stack_known(cur_stack) && !gl_stack_known(&stack))
		return origin;
	return 0;
}

/*
 * Reads the running greenlet of `task` (a thread of the process `layout`
 * describes). Returns 0 and fills `out` (with `has_runtime` 0 when the
 * thread has no runtime state), or a negative error when a read faulted.
 */
static __always_inline int gl_read_current(struct task_struct *task,
					   const struct gl_layout *layout,
					   struct gl_current *out)
{
	__u64 fsbase = BPF_CORE_READ(task, thread.fsbase);
	__u64 state = 0, current = 0, origin, bp, sp;
	struct gl_stack stack = {};
	struct pt_regs___gl *regs;
	int err;

	out->has_runtime = 0;
	out->id = 0;
	out->running = 0;
	out->switches = 0;
	out->flags = 0;
	out->in_window = 0;
	if (!fsbase)
		return 0;
	err = bpf_probe_read_user(&state, sizeof(state),
				  (void *)(fsbase + layout->tls_offset));
	if (err)
		return err;
	if (!state)
		return 0;
	err = bpf_probe_read_user(&current, sizeof(current),
				  (void *)(state + layout->state_current));
	if (err)
		return err;
	err = bpf_probe_read_user(&out->switches, sizeof(out->switches),
				  (void *)(state + layout->state_switches));
	if (err)
		return err;
	if (!current)
		return 0;
	err = bpf_probe_read_user(&out->id, sizeof(out->id),
				  (void *)(current + layout->inner_id));
	if (err)
		return err;
	err = bpf_probe_read_user(&out->flags, sizeof(out->flags),
				  (void *)(current + layout->inner_flags));
	if (err)
		return err;
	err = bpf_probe_read_user(&stack, sizeof(stack),
				  (void *)(current + layout->inner_stack));
	if (err)
		return err;
	out->has_runtime = 1;
	out->running = out->id;
	regs = (struct pt_regs___gl *)bpf_task_pt_regs(task);
	bp = BPF_CORE_READ(regs, bp);
	sp = BPF_CORE_READ(regs, sp);
	if (gl_stack_has(&stack, bp))
		return 0;
	origin = gl_window_origin(state, current, &stack, bp, sp, layout);
	if (origin && bpf_probe_read_user(&out->running, sizeof(out->running),
					  (void *)(origin + layout->inner_id)) == 0)
		out->in_window = 1;
	else
		out->running = out->id;
	return 0;
}
#endif /* __BPF__ */

#endif /* GREENLET_SAMPLE_H */
