"""gevent with two spawned functions of different weights, for gltop record (issue 18).

`fetcher` does three times `parser`'s work between yields to the hub. Waits for
--wait-for-file (saying "waiting for" on stderr), runs --seconds, then prints one JSON line:
the id() and type name of each spawned greenlet and of the hub.
"""

import argparse
import json
import os
import sys
import time

import gevent


def busy(n):
    x = 0
    for _ in range(n):
        x += 1
    return x


def fetcher(end):
    while time.monotonic() < end:
        busy(3000)
        gevent.sleep(0)


def parser(end):
    while time.monotonic() < end:
        busy(1000)
        gevent.sleep(0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--wait-for-file", required=True)
    a = ap.parse_args()
    hub = gevent.get_hub()
    print(f"gevent_spawn: pid {os.getpid()} waiting for {a.wait_for_file}", file=sys.stderr, flush=True)
    while not os.path.exists(a.wait_for_file):
        time.sleep(0.005)
    end = time.monotonic() + a.seconds
    gs = {"fetcher": gevent.spawn(fetcher, end), "parser": gevent.spawn(parser, end)}
    gevent.joinall(list(gs.values()))
    out = {name: {"id": id(g), "type": type(g).__module__ + "." + type(g).__qualname__} for name, g in gs.items()}
    out["hub"] = {"id": id(hub), "type": type(hub).__name__}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
