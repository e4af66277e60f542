"""A gevent greenlet that blocks its hub: `time.sleep(0.3)` (not gevent's), timed inside,
after the hub has idled on a gevent timer, for gltop's blocking detector
(gltop/tests/gltop_python.rs). Protocol as workload.py: `ready`, a line on stdin, one JSON
report, os._exit.

The report: the blocking greenlet's id and type name, its thread, the sleep's wall time
measured around the call, and the hub's idle wait (gevent.sleep in main) in ns.
"""

import json
import os
import sys
import threading
import time

import gevent
import greenlet

from workload import tp_name


class Sleeper(gevent.Greenlet):
    """Its type name is what gltop should report."""

    def _run(self):
        t0 = time.monotonic_ns()
        time.sleep(0.3)
        return time.monotonic_ns() - t0


def main():
    hub = gevent.get_hub()
    print("ready", flush=True)
    sys.stdin.readline()
    # The hub waits in its loop (epoll) while main sleeps on a timer: idle by design.
    t0 = time.monotonic_ns()
    gevent.sleep(0.4)
    idle = time.monotonic_ns() - t0
    g = Sleeper()
    g.start()
    slept = g.get()
    # Longer than gltop's interval, for the episode to reach its JSON.
    gevent.sleep(1.0)
    print(
        json.dumps(
            {
                "greenlet": id(g),
                "type": tp_name(g),
                "hub": id(hub),
                "hub_type": tp_name(hub),
                "tid": threading.get_native_id(),
                "slept_ns": slept,
                "hub_idle_ns": idle,
            }
        ),
        flush=True,
    )
    os._exit(0)


if __name__ == "__main__":
    main()
