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
 *
 * The reads are of the thread's own memory while it is stopped (interrupted
 * or switching out), so they see a consistent state; a read that faults
 * (page not resident) fails and the sample is counted as unreadable.
 *
 * Needs CO-RE for `task->thread.fsbase` (x86-64): include bpf/bpf_core_read.h
 * before this file.
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
};

/* Bit of a greenlet's flags byte: marked idle by design (a hub). */
#define GL_FLAG_IDLE 1

/* What one read of a thread found. */
struct gl_current {
	/* Greenlet id; valid when `has_runtime`. */
	__u64 id;
	/* The thread's switch counter. */
	__u64 switches;
	__u8 flags;
	/* 0: the thread has no greenlet runtime state (or it could not be read). */
	__u8 has_runtime;
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
	__u64 state = 0, current = 0;
	int err;

	out->has_runtime = 0;
	out->id = 0;
	out->switches = 0;
	out->flags = 0;
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
	out->has_runtime = 1;
	return 0;
}
#endif /* __BPF__ */

#endif /* GREENLET_SAMPLE_H */
