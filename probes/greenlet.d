/*
 * The `greenlet` USDT provider: what the runtime tells a kernel tracer.
 *
 * D argument lists carry types only; the names are given here.
 *
 *   switch(origin id, target id)   a transfer carrying a value
 *   throw(origin id, target id)    a transfer carrying an error, exit or panic
 *        Both fire in the target, after the stack switch and before the
 *        settrace tracer, for exactly the transfers that produce trace events.
 *   new(id, parent id or 0, name or "")   a greenlet (or a thread's main greenlet) is created
 *   dead(id, outcome)              a greenlet is finished with, by outcome code:
 *        0 returned, 1 error, 2 exit, 3 panic, 4 thread_exit, 5 discarded
 *        (exit: a GreenletExit ended it; thread_exit: a main greenlet whose thread
 *        exited, or a greenlet that survived the GreenletExit thrown into it at thread
 *        exit and was abandoned; discarded: dropped before it ever started).
 *        The one definition of these codes is greenlet::probes::Outcome; a test
 *        (tests/probe_vocabulary.rs) checks this file, the scripts and the README
 *        against it.
 */
provider greenlet {
	probe switch(uint64_t, uint64_t);
	probe throw(uint64_t, uint64_t);
	probe new(uint64_t, uint64_t, char*);
	probe dead(uint64_t, uint8_t);
};
