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
 *   dead(id, outcome)              a greenlet is finished with:
 *        0 returned, 1 error, 2 exit (GreenletExit), 3 panic,
 *        4 thread exit (a main greenlet whose thread exited, or a greenlet that survived
 *          the GreenletExit thrown into it at thread exit and was abandoned),
 *        5 discarded (dropped before it ever started)
 */
provider greenlet {
	probe switch(uint64_t, uint64_t);
	probe throw(uint64_t, uint64_t);
	probe new(uint64_t, uint64_t, char*);
	probe dead(uint64_t, uint8_t);
};
