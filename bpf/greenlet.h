/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Every struct that both the BPF program (greenlet.bpf.c) and the Rust loader
 * (gltop/src/loader/) read. The Rust side never redeclares them: libbpf-cargo turns
 * the BTF of these types into `greenlet_skel::types::*`, so this file is the
 * one definition of the layout.
 *
 * Writers. Greenlets never move between threads, and every probe about a
 * greenlet fires on the thread that owns it; so each entry of `greenlets`
 * and `edges` is written by one thread at a time and needs no
 * atomics. Only `totals` is written by every thread: it is a per-CPU array
 * that user space sums.
 */
#ifndef GREENLET_BPF_H
#define GREENLET_BPF_H

/* Bytes of a greenlet's name kept, including the terminating NUL. */
#define GL_NAME_LEN 32
/*
 * Slice histogram: bucket 0 counts slices shorter than 2 ns, bucket i
 * (1 <= i < GL_HIST_BUCKETS - 1) those in [2^i, 2^(i+1)) ns, and the last
 * bucket everything from 2^(GL_HIST_BUCKETS - 1) ns (about 4.6 minutes) up.
 */
#define GL_HIST_BUCKETS 40

/*
 * Per greenlet, keyed by its id (u64), in an LRU hash map. The fields every
 * transfer touches come first, so that they share as few cache lines as possible.
 *
 * Per thread, nothing is stored apart: a thread's current greenlet is the one
 * with `running` set and that thread's `tid`, switched in at `last_in_ns`.
 * (A separate per-thread map cost one more lookup on every hit.)
 */
struct gl_stats {
	/* When the current slice began: set on switch-in, 0 while not running. */
	__u64 last_in_ns;
	__u64 switches_in;
	__u64 switches_out;
	__u64 throws_in;
	__u64 throws_out;
	/* Sum, maximum and number of completed slices (switch-in to next switch-out). */
	__u64 on_cpu_ns;
	__u64 max_slice_ns;
	__u64 slices;
	/* Kernel thread id (the tid of bpf_get_current_pid_tgid) it lives on. */
	__u32 tid;
	/* 1 while it is its thread's current greenlet. */
	__u8 running;
	/* 1 once `new` was seen (0: the greenlet predates the attach). */
	__u8 seen_new;
	/* 1 once `dead` was seen; `outcome` is then its outcome (see probes/greenlet.d). */
	__u8 dead;
	__u8 outcome;
	/* Parent id given to `new`; 0 for a thread's main greenlet. */
	__u64 parent;
	/* bpf_ktime_get_ns() (CLOCK_MONOTONIC) of `new`, of `dead`; 0 if not seen. */
	__u64 created_ns;
	__u64 dead_ns;
	char name[GL_NAME_LEN];
	__u64 hist[GL_HIST_BUCKETS];
};

/* Per origin -> target edge, in an LRU hash map. */
struct gl_edge_key {
	__u64 origin;
	__u64 target;
};

struct gl_edge {
	__u64 switches;
	__u64 throws;
};

/* Number of outcome slots in gl_totals.dead_by_outcome; larger outcomes land in the last. */
#define GL_OUTCOMES 8

/* Totals, one copy per CPU in a per-CPU array of one entry; user space sums the copies. */
struct gl_totals {
	/* Probe hits, per probe. */
	__u64 switches;
	__u64 throws;
	__u64 created;
	__u64 dead;
	__u64 dead_by_outcome[GL_OUTCOMES];
	/*
	 * Entries created in each LRU map. An LRU map evicts its least recently
	 * used entry when full, so (inserts - entries present) is the number of
	 * entries evicted: records lost to a full map.
	 */
	__u64 greenlet_inserts;
	__u64 edge_inserts;
	/* Events that could not be recorded at all: an insert failed. */
	__u64 greenlet_failures;
	__u64 edge_failures;
	/* Greenlets first seen by a transfer or `dead` rather than `new` (attached mid-run). */
	__u64 late_greenlets;
};

#endif /* GREENLET_BPF_H */
