"""A Python greenlet workload with a known CPU split, for gltop's sampled mode (issue 18).

Thread 1: two greenlets, `heavy` and `light`, switch to each other directly, each spinning
for its share of every period (70 and 30 microseconds by default), for --seconds. Each measures
its own thread CPU time (time.thread_time_ns) around its slices.
Thread 2: one greenlet of a subclass, `Worker`, spinning 0.5 ms in every 10 ms and sleeping
8 ms (the wall time of its sleeps is reported: `sleep_ns`).

Waits for --wait-for-file to exist before it starts (saying "waiting for" on stderr), then
prints one JSON line with what it measured: per greenlet its id() (the PyGreenlet address),
thread, type name and CPU time; the switches it made and their rate.
"""

import argparse
import json
import os
import sys
import threading
import time

import greenlet


def work(n):
    """Spins `n` iterations."""
    x = 0
    for _ in range(n):
        x += 1
    return x


def spin(until_ns):
    """Spins until the monotonic clock passes `until_ns`."""
    while time.perf_counter_ns() < until_ns:
        work(100)


def per_us():
    """Iterations of `work` per microsecond of thread CPU time (best of a few tries)."""
    best = 0.0
    # Warm up first: the interpreter specialises the loop after its first runs.
    work(200000)
    for _ in range(10):
        t0 = time.thread_time_ns()
        work(20000)
        best = max(best, 20000 / ((time.thread_time_ns() - t0) / 1000))
    return best


class Worker(greenlet.greenlet):
    pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--heavy-us", type=int, default=70)
    ap.add_argument("--light-us", type=int, default=30)
    ap.add_argument("--wait-for-file")
    a = ap.parse_args()

    if a.wait_for_file:
        print(f"split: pid {os.getpid()} waiting for {a.wait_for_file}", file=sys.stderr, flush=True)
        while not os.path.exists(a.wait_for_file):
            time.sleep(0.005)

    rate = per_us()
    heavy_n = int(rate * a.heavy_us)
    light_n = int(rate * a.light_us)
    end = time.perf_counter_ns() + int(a.seconds * 1e9)
    cpu = {"heavy": 0, "light": 0, "worker": 0}
    switches = [0]

    def heavy_run():
        while True:
            t0 = time.thread_time_ns()
            work(n["heavy"])
            cpu["heavy"] += time.thread_time_ns() - t0
            if time.perf_counter_ns() >= end:
                light.throw(greenlet.GreenletExit)
                return
            switches[0] += 1
            light.switch()

    want = a.light_us / a.heavy_us
    period_ns = (a.heavy_us + a.light_us) * 1000
    n = {"heavy": heavy_n, "light": light_n}
    last = [0]

    def light_run():
        cycles = 0
        while True:
            t0 = time.thread_time_ns()
            work(n["light"])
            cpu["light"] += time.thread_time_ns() - t0
            cycles += 1
            if cycles % 200 == 0 and cpu["light"]:
                # Keeps the measured split and period on target: what an iteration costs
                # differs a little between the two (caches, the clock reads), and drifts.
                got = cpu["light"] / cpu["heavy"]
                n["light"] = int(n["light"] * min(1.05, max(0.95, want / got)))
                both = cpu["heavy"] + cpu["light"]
                scale = min(1.1, max(0.9, period_ns * 200 / max(1, both - last[0])))
                last[0] = both
                n["heavy"] = int(n["heavy"] * scale)
                n["light"] = int(n["light"] * scale)
            switches[0] += 1
            heavy.switch()

    slept = [0]

    def worker_run():
        while time.perf_counter_ns() < end:
            t0 = time.thread_time_ns()
            spin(time.perf_counter_ns() + 500_000)
            cpu["worker"] += time.thread_time_ns() - t0
            w0 = time.perf_counter_ns()
            time.sleep(0.008)
            slept[0] += time.perf_counter_ns() - w0

    info = {}

    def second_thread():
        w = Worker(worker_run)
        info["worker"] = {"id": id(w), "tid": threading.get_native_id(), "type": type(w).__name__}
        w.switch()

    t = threading.Thread(target=second_thread)
    t.start()
    heavy = greenlet.greenlet(heavy_run)
    light = greenlet.greenlet(light_run)
    tid = threading.get_native_id()
    start = time.perf_counter_ns()
    cpu0 = time.thread_time_ns()
    heavy.switch()
    elapsed = (time.perf_counter_ns() - start) / 1e9
    thread_cpu = (time.thread_time_ns() - cpu0) / 1e9
    t.join()
    both = cpu["heavy"] + cpu["light"]
    report = {
        "pid": os.getpid(),
        "python": "%d.%d" % sys.version_info[:2],
        "greenlet": greenlet.__version__,
        "seconds": elapsed,
        "switches": switches[0],
        "switches_per_s": switches[0] / elapsed,
        "thread_cpu_s": thread_cpu,
        "switches_per_cpu_s": switches[0] / thread_cpu,
        "heavy_pct": 100.0 * cpu["heavy"] / both,
        "greenlets": [
            {"name": "heavy", "id": id(heavy), "tid": tid, "type": "greenlet.greenlet", "cpu_ns": cpu["heavy"]},
            {"name": "light", "id": id(light), "tid": tid, "type": "greenlet.greenlet", "cpu_ns": cpu["light"]},
            dict(name="worker", cpu_ns=cpu["worker"], sleep_ns=slept[0], **info["worker"]),
        ],
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
