/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Every struct that both the BPF program (greenlet.bpf.c) and the Rust loader
 * (gltop/src/loader/) read. The Rust side never redeclares them: libbpf-cargo turns
 * the BTF of these types into `greenlet_skel::types::*`, so this file is the
 * one definition of the layout.
 *
 * Writers. Greenlets never move between threads, and every probe about a
 * greenlet fires on the thread that owns it; so each entry of `greenlets`,
 * `threads` and `edges` is written by one thread at a time and needs no
 * atomics. Only `totals` is written by every thread: it is a per-CPU array
 * that user space sums.
 *
 * Lifetimes. `greenlets`, `threads` and `edges` are plain hash maps: the
 * kernel never evicts an entry, so a greenlet's record stays until user
 * space deletes it, and an insert into a full map fails (and is counted).
 * User space deletes a greenlet's record once the record is `done` (no probe
 * will name that greenlet again), and with it every edge that has that
 * greenlet at one end. A handler stores `done` last, after every other write
 * about that greenlet, its edges included; on x86-64 (TSO) stores become
 * visible in program order, so a reader that sees `done` sees the final
 * counts, and nothing writes the entry after that.
 */
#ifndef GREENLET_BPF_H
#define GREENLET_BPF_H

/* Bytes of a greenlet's name kept, including the terminating NUL (Python type names such
 * as gevent._gevent_cgreenlet.Greenlet need more than 32). */
#define GL_NAME_LEN 64
/*
 * Slice histogram: bucket 0 counts slices shorter than 2 ns, bucket i
 * (1 <= i < GL_HIST_BUCKETS - 1) those in [2^i, 2^(i+1)) ns, and the last
 * bucket everything from 2^(GL_HIST_BUCKETS - 1) ns (about 4.6 minutes) up.
 */
#define GL_HIST_BUCKETS 40

/*
 * Per greenlet, keyed by its id (u64), in a hash map. The fields every
 * transfer touches come first, so that they share as few cache lines as possible.
 * Whether it is running is not here: `threads` names each thread's current
 * greenlet, one entry per thread, so a snapshot shows exactly one per thread.
 */
struct gl_stats {
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
	/* 1 once `new` was seen (0: the greenlet predates the attach). */
	__u8 seen_new;
	/* 1 once `dead` was seen; `outcome` is then its outcome (see probes/greenlet.d). */
	__u8 dead;
	__u8 outcome;
	/*
	 * 1 once no probe will name this greenlet again: set by `dead` when no
	 * transfer out of it follows (outcomes 4 and up: thread exit, discarded),
	 * else by the transfer out of it that follows its `dead` (a greenlet that
	 * returns, fails or exits switches to its parent after its `dead` fires).
	 */
	__u8 done;
	/* Parent id given to `new`; 0 for a thread's main greenlet. */
	__u64 parent;
	/* bpf_ktime_get_ns() (CLOCK_MONOTONIC) of `new`, of `dead`; 0 if not seen. */
	__u64 created_ns;
	__u64 dead_ns;
	char name[GL_NAME_LEN];
	__u64 hist[GL_HIST_BUCKETS];
};

/*
 * Per thread, keyed by its kernel thread id (u32): which greenlet is current
 * and since when. Created by the thread's main greenlet's `new` or its first
 * transfer; deleted when its main greenlet dies (thread exit).
 */
struct gl_thread {
	/* The thread's current greenlet (the target of its last transfer). */
	__u64 current;
	/* When `current` was switched in (bpf_ktime_get_ns()). */
	__u64 since_ns;
	/* Transfers (switches and throws) into greenlets of this thread. */
	__u64 transfers;
};

/* Per origin -> target edge, in a hash map. */
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
	 * Events that could not be recorded in a map because an insert failed
	 * (the map was full): the only way a record loses counts.
	 */
	__u64 greenlet_failures;
	__u64 edge_failures;
	__u64 thread_failures;
	/* Greenlets first seen by a transfer or `dead` rather than `new` (attached mid-run). */
	__u64 late_greenlets;
	/*
	 * Aggregates kept as they happen, so that a reader that needs only sums (the
	 * exporter) never reads the greenlet records (see "Ended sets" below).
	 * `live`: records inserted minus records marked dead (a per-CPU copy can go
	 * below zero: sum with wrapping arithmetic); equals the records not dead.
	 * `slices`, `slice_ns`, `hist`: every completed slice of every record, as
	 * the records' own fields count them.
	 */
	__u64 live;
	__u64 slices;
	__u64 slice_ns;
	__u64 hist[GL_HIST_BUCKETS];
	/* Pushes into `ended_ids` or `new_edges` that failed (set full): user space resyncs. */
	__u64 set_overflows;
};

/*
 * Ended sets (only when the loader sets `track_ended`: the exporter). The
 * exporter needs the sums above plus one thing the records hold: which
 * records are final, to move them out of the kernel with their edges. So
 * `dead` pushes the greenlet's key into the hash set `ended_ids` and an
 * edge's first insert pushes its key into `new_edges`; user space drains both
 * at each refresh (lookup-and-delete in batches) and looks up only the
 * records drained (plus those drained earlier that were dead but not yet
 * `done`), never the whole map. Each push happens once per event (one death,
 * one edge insert), not per switch, so a switch pays nothing for it but a
 * test of `track_ended` on an edge's first use.
 *
 * Races. An insert into a BPF hash map is atomic with respect to a batch
 * lookup-and-delete: a push that lands after user space drained the set is
 * in the set at the next refresh, never lost, and is never drained twice.
 * A key is pushed before the `done` of its record (on_dead pushes at the
 * death; an edge is inserted by a transfer, which precedes the `done` of
 * both its ends, see "Lifetimes"), so when user space sees a record `done`
 * it has drained or will drain, in the same refresh, after the record's
 * lookup, every edge key of that greenlet: user space reads `ended_ids`,
 * then the records, then `new_edges`. A push that finds its set full (the
 * insert fails for any reason but "already there") counts `set_overflows`;
 * user space then reads every record and edge once (as the full snapshot
 * does) and goes on from there. Insert failures into the maps themselves
 * (`greenlet_failures`, `edge_failures`) trigger the same full read.
 */

/*
 * Following forks (gltop --follow). Greenlet ids are per process, and a
 * forked child starts with copies of its parent's greenlets and id counter,
 * so the same id names different greenlets in parent and child. While
 * following, every id stored in a map (greenlet keys, edge ends, a thread's
 * current greenlet, a parent) carries its process's tgid in the bits from
 * GL_PID_SHIFT up; ids themselves must stay below 2^GL_PID_SHIFT. Without
 * following, ids are stored as they are.
 */
#define GL_PID_SHIFT 42

/*
 * Per watched process, keyed by its tgid (u32), while following: written by
 * every thread of the process, with atomic adds. The entry of the traced
 * process is made by the loader; a process forked from a watched one gets
 * its entry from the sched_process_fork program before it runs. Entries are
 * never deleted while gltop runs: an exited process keeps its final counts.
 */
struct gl_proc {
	/* The watched process it was forked from (for the traced process: its parent). */
	__u32 ppid;
	__u32 pad;
	/* Probe hits in this process, per probe. */
	__u64 switches;
	__u64 throws;
	__u64 created;
	__u64 dead;
};

#endif /* GREENLET_BPF_H */
