/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Python greenlet, sampled with no probe in its switch (issue 18): the structs
 * that bpf/pysample.bpf.c and gltop/src/loader/pysample.rs both read (libbpf-cargo
 * turns their BTF into `pysample_skel::types::*`).
 *
 * greenlet 3.x keeps, per thread, a C++ thread_local in `_greenlet*.so` that
 * points to its `ThreadState`, whose `current_greenlet` it updates on every
 * switch. The module is dlopen'ed, so its TLS block is found through glibc's
 * DTV (x86-64):
 *
 *   dtv     = *(fsbase + 8)                     tcbhead_t.dtv
 *   block   = *(dtv + 16 * modid)               0 or -1: not allocated on this thread
 *   state   = *(block + tls_offset)             0 or 1: greenlet unused on this thread
 *   current = *(state + state_current)          the running PyGreenlet*
 *   type    = *(current + ob_type)              its type; tp_name names it
 *
 * The module id is the process's; it is found by scanning dtv[1..] for the
 * entry whose `state->main_greenlet->ob_type` is `&PyGreenlet_Type`, and that
 * check is made again at every read: a wrong id reads nothing.
 */
#ifndef GREENLET_PYSAMPLE_H
#define GREENLET_PYSAMPLE_H

/* Highest module id the scan looks at. */
#define PG_MAX_MODID 32
#define PG_NAME_LEN 64

/* Per watched process (tgid), from gltop/src/loader/pygreenlet.rs; `modid` is written by BPF. */
struct pg_layout {
	__u64 type_addr;
	__u64 tls_offset;
	__u32 state_main;
	__u32 state_current;
	__u32 ob_type;
	__u32 tp_name;
	/* The module id found (0: not yet). */
	__u32 modid;
	__u32 pad;
};

/* Per (process, thread, greenlet, type); greenlet 0 = no greenlet state on the thread. */
struct pg_key {
	__u32 tgid;
	__u32 tid;
	__u64 greenlet;
	__u64 tp;
};

struct pg_stats {
	__u64 samples;
	/* Off-CPU time while it was its thread's current greenlet: blocked, preempted. */
	__u64 sleep_ns;
	__u64 preempt_ns;
	/* It was its thread's main greenlet at the last sample. */
	__u64 main;
};

/* A type's name, per (process, type address). */
struct pg_tkey {
	__u32 tgid;
	__u32 pad;
	__u64 tp;
};

struct pg_name {
	char name[PG_NAME_LEN];
};

/* Per thread of a watched process, by tid. */
struct pg_thread {
	__u32 tgid;
	/* Off the CPU now, switched out at out_ns, blocked (else preempted). */
	__u8 off_cpu;
	__u8 out_sleeping;
	__u8 pad[2];
	__u64 out_ns;
	/* The greenlet current at the last observation (sample or switch-out). */
	__u64 greenlet;
	__u64 tp;
	__u64 samples;
};

/* Per-CPU totals; user space sums the copies. */
struct pg_totals {
	__u64 samples;
	/* Samples and switch-outs whose reads faulted. */
	__u64 unreadable;
	/* Samples of threads with no greenlet state (yet). */
	__u64 no_state;
	__u64 switch_events;
	__u64 scans;
	__u64 stats_failures;
	__u64 thread_failures;
	__u64 name_failures;
	/* Stacks: recorded; no PyThreadState found for the thread; failed inserts. */
	__u64 stacks;
	__u64 no_tstate;
	__u64 stack_failures;
};

/*
 * Python stacks (`gltop record`): where CPython keeps a thread's frames, from
 * `_Py_DebugOffsets` (3.13) or libpython's DWARF (3.11, 3.12), found by
 * gltop/src/loader/pyframes.rs. The sampled thread's PyThreadState is found in
 * its interpreter's thread list by native thread id (and cached per thread):
 *
 *   interp = *(runtime + interp_head)
 *   tstate = *(interp + threads_head), then *(tstate + ts_next) ...
 *   frame  = *(tstate + ts_frame)                     3.13: current_frame
 *            *(*(tstate + ts_frame) + cframe_current)  3.11/3.12: cframe->current_frame
 *   code   = *(frame + fr_code); frame = *(frame + fr_previous)
 *
 * A greenlet's frame chain ends at its own `run`: greenlet saves and restores
 * the chain per greenlet, so each stack is that greenlet's alone.
 */
#define PG_MAX_FRAMES 64
#define PG_MAX_THREADS 64
#define PG_NONE 0xffffffffu

struct pg_pyoffs {
	__u64 runtime;
	__u32 interp_head;
	__u32 threads_head;
	__u32 ts_next;
	__u32 ts_native_tid;
	__u32 ts_frame;
	/* PG_NONE: `ts_frame` is the frame itself (3.13). */
	__u32 cframe_current;
	__u32 fr_code;
	__u32 fr_previous;
	/* PG_NONE: frames have no owner (3.11); else frames owned by the C stack are skipped. */
	__u32 fr_owner;
	__u32 owner_cstack;
};

/* One stack of one greenlet: its code objects, innermost first. */
struct pg_skey {
	__u32 tgid;
	__u32 depth;
	__u64 greenlet;
	__u64 tp;
	/* 1: deeper than PG_MAX_FRAMES (the outermost frames are missing). */
	__u64 truncated;
	__u64 code[PG_MAX_FRAMES];
};

#endif /* GREENLET_PYSAMPLE_H */
