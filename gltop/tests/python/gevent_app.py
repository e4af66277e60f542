"""A small gevent application that counts its own greenlet transfers with greenlet.settrace
and prints them when done, like workload.py (same protocol: `ready`, a line on stdin, one
JSON report, os._exit), for gltop's counts to be compared with (gltop/tests/gltop_python.rs).

Its greenlets do I/O (a socket pair per pair of greenlets), sleep on timers, yield, and
compute; the hub switches between them.

Usage: gevent_app.py [--greenlets N] [--rounds N]
"""

import json
import os
import sys
from collections import Counter

import gevent
import gevent.socket
import greenlet

from workload import tp_name


def main():
    pairs, rounds = 50, 40
    args = sys.argv[1:]
    while args:
        flag = args.pop(0)
        if flag == "--greenlets":
            pairs = int(args.pop(0)) // 2
        elif flag == "--rounds":
            rounds = int(args.pop(0))
        else:
            print(f"gevent_app.py: unknown argument {flag}", file=sys.stderr)
            sys.exit(2)
    hub = gevent.get_hub()
    print("ready", flush=True)
    sys.stdin.readline()

    counts = Counter()
    keep = [greenlet.getcurrent(), hub]

    def tracer(event, args):
        if event in ("switch", "throw"):
            origin, target = args
            counts[(event, id(origin), id(target))] += 1

    def sender(sock):
        for i in range(rounds):
            sock.sendall(b"x" * 64)
            if i % 4 == 0:
                gevent.sleep(0.001)
            else:
                gevent.sleep(0)
        sock.close()

    def receiver(sock):
        got = 0
        while got < 64 * rounds:
            data = sock.recv(4096)
            if not data:
                break
            got += len(data)
            sum(range(200))  # a little CPU
        sock.close()
        return got

    greenlet.settrace(tracer)
    jobs = []
    for _ in range(pairs):
        a, b = gevent.socket.socketpair()
        jobs.append(gevent.spawn(sender, a))
        jobs.append(gevent.spawn(receiver, b))
    keep += jobs
    gevent.joinall(jobs)
    greenlet.settrace(None)
    received = sum(j.value for j in jobs[1::2])
    if received != pairs * rounds * 64:
        print(f"gevent_app.py: received {received} bytes", file=sys.stderr)
        os._exit(1)

    edges = {}
    for (event, origin, target), n in counts.items():
        e = edges.setdefault((origin, target), [0, 0])
        e[0 if event == "switch" else 1] += n
    report = {
        "pid": os.getpid(),
        "greenlet_version": greenlet.__version__,
        "gevent_version": gevent.__version__,
        "hub": id(hub),
        "switches": sum(e[0] for e in edges.values()),
        "throws": sum(e[1] for e in edges.values()),
        "edges": [[o, t, s, th] for (o, t), (s, th) in sorted(edges.items())],
        "names": {str(id(g)): tp_name(g) for g in keep},
    }
    print(json.dumps(report), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
