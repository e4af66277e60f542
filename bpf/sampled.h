/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The structs that sample.bpf.c and the Rust loader (gltop/src/loader/sample.rs)
 * both read: libbpf-cargo turns their BTF into `sample_skel::types::*`, so this
 * file is their one definition.
 *
 * Nothing here is written per greenlet switch: the runtime only adds one to
 * its per-thread switch counter (bpf/sample.h). Everything is observed at
 * three kinds of moments of a thread of a watched process:
 *   - a cpu-clock sample while it runs (perf_event program);
 *   - sched_switch taking it off a CPU (its own memory is readable then);
 *   - sched_switch putting it back on a CPU (its memory is not readable then,
 *     but its counter cannot have moved while it was off the CPU).
 *
 * Writers. Every event about a thread runs on the CPU the thread is on (or
 * is leaving, or arriving at), one at a time, so the entries keyed by a
 * thread (`gs_thread`, `gs_stats` of its greenlets) have one writer at a
 * time and need no atomics. `gs_totals` is per CPU.
 */
#ifndef GREENLET_SAMPLED_H
#define GREENLET_SAMPLED_H

#define GS_NAME_LEN 32

/* Per (process, thread, greenlet); greenlet id 0 = the thread had no runtime state. */
struct gs_key {
	__u32 tgid;
	__u32 tid;
	__u64 id;
};

struct gs_stats {
	/* cpu-clock samples that found this greenlet running. */
	__u64 samples;
	/* Off-CPU time while its code ran on its thread (it was current, or the sender
	 * of a transfer not yet switched: bpf/sample.h), from switch-out to switch-in:
	 * blocked (prev_state != running) or preempted (runnable). */
	__u64 sleep_ns;
	__u64 preempt_ns;
	/* Number of completed off-CPU stretches of each kind. */
	__u64 sleeps;
	__u64 preempts;
};

/* Per (process, greenlet), from the `new` probe only: what names a greenlet. */
struct gs_gkey {
	__u32 tgid;
	__u32 pad;
	__u64 id;
};

struct gs_name {
	__u64 parent;
	__u64 created_ns;
	__u32 tid;
	__u32 pad;
	char name[GS_NAME_LEN];
};

/*
 * Per thread of a watched process, keyed by its tid: the switch counter and
 * the blocking detector's state. "This value" below is the counter value
 * last read (`switches`): a thread whose counter keeps one value is running
 * one greenlet without switching.
 */
struct gs_thread {
	__u32 tgid;
	/* 1 once a read found runtime state on the thread (0: none, or never read). */
	__u8 has_runtime;
	/* The greenlet current at this value is marked idle by design. */
	__u8 idle;
	/* Off the CPU now (switched out at `out_ns`), and whether blocked (else preempted). */
	__u8 off_cpu;
	__u8 out_sleeping;
	/* An episode is open: this value has lasted past the threshold (not idle). */
	__u8 ep_open;
	__u8 counter_seen;
	__u8 pad[2];
	/* Counter at the first read since attach, and the latest read. */
	__u64 first_switches;
	__u64 switches;
	/* First and last moment the thread was seen at this value. */
	__u64 since_ns;
	__u64 last_ns;
	/* The greenlet current at this value. */
	__u64 greenlet;
	/* Last switch-out: when, and the greenlet then current (for off-CPU time). */
	__u64 out_ns;
	__u64 out_greenlet;
	/* Time blocked (off the CPU and not runnable) at this value, completed stretches only. */
	__u64 ep_off_ns;
	/* At the last blocking switch-out: the system call (-1: none) and user stack (<0: none). */
	__s64 out_syscall;
	__s64 out_stack;
	/* The open episode's stack and system call. */
	__s64 ep_stack;
	__s64 ep_syscall;
	/*
	 * The word at the user stack pointer when each stack was taken: the return
	 * address into the caller of a leaf function that keeps no frame (a libc
	 * system call wrapper), which the frame-pointer walk skips.
	 */
	__u64 out_sp_word;
	__u64 ep_sp_word;
	/* cpu-clock samples of this thread. */
	__u64 samples;
};

/* An episode that ended (the counter moved), sent on the `episodes` ring buffer. */
struct gs_episode {
	__u32 tgid;
	__u32 tid;
	__u64 greenlet;
	/* First and last moment the thread was seen at the value. */
	__u64 start_ns;
	__u64 end_ns;
	/* Time blocked (off the CPU, not runnable) within it. */
	__u64 off_ns;
	__s64 syscall;
	__s64 stack;
	/* See gs_thread.ep_sp_word. */
	__u64 sp_word;
};

/* Per-CPU totals; user space sums the copies. */
struct gs_totals {
	/* cpu-clock samples of watched processes; samples and switch-outs whose reads faulted. */
	__u64 samples;
	__u64 unreadable;
	/* sched_switch events of watched threads (out and in). */
	__u64 switch_events;
	/* Inserts that failed in a full map, per map; ring buffer records lost; stacks lost. */
	__u64 stats_failures;
	__u64 thread_failures;
	__u64 name_failures;
	__u64 episode_drops;
	__u64 stack_failures;
	/* Episodes that crossed the threshold. */
	__u64 episodes;
	/* `new` probe hits. */
	__u64 created;
};

#endif /* GREENLET_SAMPLED_H */
