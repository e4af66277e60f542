/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Python greenlet's running greenlet per thread, for the blocking detector.
 *
 * A Python process publishes no sample layout (bpf/sample.h): its threads' running
 * greenlets are known from the exact mode's switch uprobes instead
 * (bpf/python.bpf.h), which keep this entry per thread in the map `py_cur`. The
 * sampler (bpf/sample.bpf.c, `py_mode`) is loaded with the same map and reads it
 * where it would read the runtime's memory.
 */
#ifndef GREENLET_PYCUR_H
#define GREENLET_PYCUR_H

struct gl_pycur {
	/* The running greenlet's key (as in the exact mode's records). */
	__u64 id;
	/* Transfers seen on this thread; +1 per switch or throw. */
	__u64 switches;
	/* When the running greenlet was switched to. */
	__u64 start_ns;
	/*
	 * The latest slice (not idle) that lasted longer than the threshold: its
	 * value of `switches`, and the moment the switch out of it ended it.
	 */
	__u64 long_switches;
	__u64 long_end_ns;
	/* The running greenlet is idle by design (a gevent Hub). */
	__u8 idle;
	__u8 pad[7];
};

#endif /* GREENLET_PYCUR_H */
