#!/usr/bin/env python3
"""The Python greenlet side of `make bench`: the same cases as benches/switch.rs, in Python.

`make bench` prefers the team's shared peer script (../shared/peers/python_greenlet_bench.py)
when it exists; this one stands in on a clean clone. Both print one JSON object per case
with --json ({"peer", "version", "case", "value", "unit"}), so benches/report.py reads either.

Method: each timed case runs a fixed number of rounds, a few times; the figure is the median
time per operation (a switch, or a greenlet lifetime). The cyclic garbage collector is off
while timing. `live_100k` is the growth of VmRSS per suspended greenlet.

Usage: python3 benches/peer/python_greenlet_bench.py [--quick] [--json]
"""
import gc
import json
import statistics
import sys
import time

try:
    import greenlet
except ImportError:
    print("python_greenlet_bench: Python greenlet is not installed "
          "(python3 -m pip install greenlet)", file=sys.stderr)
    sys.exit(1)

QUICK = "--quick" in sys.argv
REPEATS = 5 if QUICK else 11
ROUNDS = 20_000 if QUICK else 200_000
LIVE = 10_000 if QUICK else 100_000


def ping_pong(rounds):
    """Two non-main greenlets pass control back and forth; a round is two switches."""
    def pong_body():
        while True:
            ping.switch()

    def ping_body():
        for _ in range(rounds):
            pong.switch()

    pong = greenlet.greenlet(pong_body)
    ping = greenlet.greenlet(ping_body)
    ping.switch()


def main_child(rounds):
    """main switches into a child that switches straight back; a round is two switches."""
    def child_body():
        main = greenlet.getcurrent().parent
        while True:
            main.switch()

    child = greenlet.greenlet(child_body)
    for _ in range(rounds):
        child.switch()


def lifetimes(rounds):
    """A greenlet is created, started, and finishes; a round is one lifetime."""
    for _ in range(rounds):
        greenlet.greenlet(lambda: None).switch()


def timed(case, per_round):
    """Median nanoseconds per operation over REPEATS runs of ROUNDS rounds."""
    case(ROUNDS // 10)
    runs = []
    for _ in range(REPEATS):
        t0 = time.perf_counter_ns()
        case(ROUNDS)
        runs.append((time.perf_counter_ns() - t0) / ROUNDS / per_round)
    return statistics.median(runs)


def vm_rss_kib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def kib_per_live_greenlet(count):
    """RSS growth per greenlet with `count` started greenlets suspended at once."""
    def park():
        greenlet.getcurrent().parent.switch()

    base = vm_rss_kib()
    keep = []
    for _ in range(count):
        g = greenlet.greenlet(park)
        g.switch()
        keep.append(g)
    return (vm_rss_kib() - base) / count


def noop_tracer(event, args):
    return None


def measure():
    out = []
    gc.disable()
    out.append(("switch_two_greenlets", timed(ping_pong, 2), "ns/switch"))
    out.append(("switch_main_child", timed(main_child, 2), "ns/switch"))
    previous = greenlet.settrace(noop_tracer)
    try:
        out.append(("switch_two_greenlets_traced", timed(ping_pong, 2), "ns/switch"))
        out.append(("switch_main_child_traced", timed(main_child, 2), "ns/switch"))
    finally:
        greenlet.settrace(previous)
    out.append(("lifetime", timed(lifetimes, 1), "ns/greenlet"))
    gc.enable()
    out.append(("live_100k", kib_per_live_greenlet(LIVE), "KiB/greenlet"))
    return out


def main():
    for case, value, unit in measure():
        if "--json" in sys.argv:
            print(json.dumps({"peer": "python-greenlet", "version": greenlet.__version__,
                              "case": case, "value": round(value, 1), "unit": unit}))
        else:
            print(f"python-greenlet {greenlet.__version__:8} {case:30} {value:10.1f} {unit}")


if __name__ == "__main__":
    main()
