"""The oracle for gltop on Python greenlet: a workload that counts its own transfers with
greenlet.settrace and prints them when done, for gltop's counts over the same run to be
compared with (gltop/tests/gltop_python.rs).

It prints `ready` once greenlet is loaded, waits for a line on stdin (the test sends it once
gltop is attached), runs THREADS threads (each its own tracer, from before its first greenlet
to after its last), prints one JSON object, and leaves with os._exit: every greenlet stays
referenced until then, so no address is reused while counting and no greenlet is killed by
the interpreter's finalization behind the tracer's back. With --linger it waits for its stdin
to close before leaving (for a scraper of gltop's exporter, which stops when it exits).

Usage: workload.py ([--threads N] [--rounds N] | --churn N) [--linger]
"""

import json
import os
import sys
import threading
import time
from collections import Counter

import greenlet
from greenlet import getcurrent, GreenletExit


class Worker(greenlet.greenlet):
    """A user subclass: gltop names greenlets by their Python type."""


# How each round's greenlets end, as gltop names it: a GreenletExit that run does not catch
# is a return (greenlet turns it into the return value); anything else raised is an error.
ROUND_OUTCOMES = {"returned": 7, "error": 3}


def tp_name(obj):
    """The C type's tp_name: the bare name for a class defined in Python (a heap type),
    module.name for a static type."""
    t = type(obj)
    return t.__name__ if t.__flags__ & (1 << 9) else f"{t.__module__}.{t.__name__}"


def run_thread(rounds, keep, results, idx):
    counts = Counter()

    def tracer(event, args):
        if event in ("switch", "throw"):
            origin, target = args
            counts[(event, id(origin), id(target))] += 1

    main = getcurrent()
    keep.append(main)
    greenlet.settrace(tracer)
    for r in range(rounds):
        # Ping-pong between two greenlets; b is killed (GreenletExit, uncaught) at the end.
        def ping():
            for _ in range(40):
                b.switch()
            return "done"

        def pong():
            while True:
                a.switch()

        a = Worker(ping)
        b = greenlet.greenlet(pong)
        keep += [a, b]
        a.switch()
        b.throw()

        # Ping-pong with main, and throws caught inside the greenlet.
        def catcher():
            caught = 0
            while True:
                try:
                    main.switch(caught)
                except ValueError:
                    caught += 1

        c = Worker(catcher)
        keep.append(c)
        c.switch()
        for i in range(30):
            if i % 3 == 0:
                c.throw(ValueError)
            else:
                c.switch()
        c.throw(GreenletExit)

        # Self-switches, in main and in a greenlet.
        main.switch()

        def selfish():
            me = getcurrent()
            for _ in range(3):
                me.switch()

        s = greenlet.greenlet(selfish)
        keep.append(s)
        s.switch()

        # Dying by error: raised by run, and thrown in and not caught.
        def failing():
            main.switch()
            raise KeyError("x")

        f = Worker(failing)
        keep.append(f)
        f.switch()
        try:
            f.switch()
        except KeyError:
            pass
        g = greenlet.greenlet(lambda: main.switch())
        keep.append(g)
        g.switch()
        try:
            g.throw(IndexError)
        except IndexError:
            pass

        # Throws into unstarted greenlets: an error, and GreenletExit.
        u = greenlet.greenlet(lambda: None)
        keep.append(u)
        try:
            u.throw(ValueError)
        except ValueError:
            pass
        v = Worker(lambda: None)
        keep.append(v)
        v.throw(GreenletExit)

        # A child whose parent is another greenlet: its death returns there.
        def outer():
            inner = greenlet.greenlet(lambda: 7)
            keep.append(inner)
            return inner.switch()

        o = greenlet.greenlet(outer)
        keep.append(o)
        o.switch()
    greenlet.settrace(None)
    results[idx] = counts


def leave(linger):
    """os._exit(0), after stdin closes if `linger`."""
    if linger:
        sys.stdin.read()
    os._exit(0)


def churn(n, linger):
    """Greenlets created and freed one after another (addresses reused, records leaving
    gltop's maps before their greenlets are freed), ending every way; one thread. Prints the
    report: transfer totals, creations and deaths by outcome."""
    counts = Counter()

    def tracer(event, args):
        if event in ("switch", "throw"):
            counts[event] += 1

    main = getcurrent()
    outcomes = Counter()
    greenlet.settrace(tracer)
    for i in range(n):
        k = i % 5
        if k == 0:
            g = Worker(lambda: None)
            g.switch()
            outcomes["returned"] += 1
        elif k == 1:
            g = greenlet.greenlet(lambda: 1 / 0)
            try:
                g.switch()
            except ZeroDivisionError:
                pass
            outcomes["error"] += 1
        elif k == 2:
            g = greenlet.greenlet(lambda: None)  # never started: discarded when freed
            outcomes["discarded"] += 1
        elif k == 3:
            g = greenlet.greenlet(lambda: main.switch())
            g.switch()
            g.throw()  # GreenletExit, not caught: a return
            outcomes["returned"] += 1
        else:
            g = Worker(lambda: main.switch())
            g.switch()  # suspended, then freed: killed by GreenletExit, a return
            outcomes["returned"] += 1
        del g
        if i % 1000 == 999:
            time.sleep(0.02)  # across gltop's refreshes
    greenlet.settrace(None)
    report = {
        "pid": os.getpid(),
        "greenlet_version": greenlet.__version__,
        "switches": counts["switch"],
        "throws": counts["throw"],
        "created": n,
        "dead": n,
        "dead_by_outcome": dict(outcomes),
    }
    print(json.dumps(report), flush=True)
    leave(linger)


def main():
    threads, rounds, churning, linger = 4, 500, 0, False
    args = sys.argv[1:]
    while args:
        flag = args.pop(0)
        if flag == "--threads":
            threads = int(args.pop(0))
        elif flag == "--rounds":
            rounds = int(args.pop(0))
        elif flag == "--churn":
            churning = int(args.pop(0))
        elif flag == "--linger":
            linger = True
        else:
            print(f"workload.py: unknown argument {flag}", file=sys.stderr)
            sys.exit(2)
    getcurrent()  # the main thread's main greenlet exists before gltop attaches
    print("ready", flush=True)
    sys.stdin.readline()
    if churning:
        churn(churning, linger)
    keep, results = [], [None] * threads
    workers = [
        threading.Thread(target=run_thread, args=(rounds, keep, results, i))
        for i in range(threads)
    ]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    if None in results:
        print("workload.py: a thread failed", file=sys.stderr)
        os._exit(1)
    total = Counter()
    for c in results:
        total.update(c)
    edges = {}
    for (event, origin, target), n in total.items():
        e = edges.setdefault((origin, target), [0, 0])
        e[0 if event == "switch" else 1] += n
    report = {
        "pid": os.getpid(),
        "greenlet_version": greenlet.__version__,
        "created": len(keep),
        "dead": sum(1 for g in keep if g.dead and g.parent is not None),
        "dead_by_outcome": {k: v * rounds * threads for k, v in ROUND_OUTCOMES.items()},
        "names": {str(id(g)): tp_name(g) for g in keep},
        "switches": sum(e[0] for e in edges.values()),
        "throws": sum(e[1] for e in edges.values()),
        "edges": [[o, t, s, th] for (o, t), (s, th) in sorted(edges.items())],
    }
    print(json.dumps(report), flush=True)
    leave(linger)


if __name__ == "__main__":
    main()
