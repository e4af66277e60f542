"""A prefork server in miniature, for `gltop --children` (gltop/tests/gltop_python.rs): a
master that never imports greenlet (as gunicorn's master does not with gevent workers) forks
workers that do. Each worker counts its own transfers with greenlet.settrace and prints them.

Files in DIR order the phases: the master forks WORKERS workers at once and one more when
DIR/more exists; every worker imports greenlet, prints `ready PID`, waits for DIR/go, runs
ROUNDS ping-pong rounds (and a few throws) under its tracer, prints one JSON line
{"pid", "switches", "throws"} and exits. The late worker waits a second before its import. The master prints `master PID` first and exits once
all its workers have.

Usage: prefork.py DIR [--workers N] [--rounds N]
"""

import json
import os
import sys
import time


def wait_for(path):
    deadline = time.monotonic() + 120
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            sys.exit(f"prefork: {path} never came")
        time.sleep(0.01)


def say(line):
    # One write per line: the workers share the master's stdout.
    os.write(1, (line + "\n").encode())


def worker(directory, rounds, import_after):
    # A worker that takes its time before importing greenlet (the late one: a second), so a
    # watcher meets it as a Python process without greenlet first.
    time.sleep(import_after)
    import greenlet
    from greenlet import getcurrent

    say(f"ready {os.getpid()}")
    wait_for(os.path.join(directory, "go"))
    counts = {"switch": 0, "throw": 0}

    def tracer(event, args):
        if event in counts:
            counts[event] += 1

    greenlet.settrace(tracer)
    main = getcurrent()

    def pong():
        caught = 0
        while True:
            try:
                main.switch()
            except ValueError:
                caught += 1

    p = greenlet.greenlet(pong)
    for i in range(rounds):
        if i % 10 == 9:
            p.throw(ValueError)
        else:
            p.switch()
    greenlet.settrace(None)
    say(json.dumps({"pid": os.getpid(), "switches": counts["switch"],
                    "throws": counts["throw"]}))
    os._exit(0)


def fork_worker(directory, rounds, import_after=0.0):
    pid = os.fork()
    if pid == 0:
        try:
            worker(directory, rounds, import_after)
        finally:
            os._exit(1)
    return pid


def main():
    args = sys.argv[1:]
    directory = args[0]
    workers = int(args[args.index("--workers") + 1]) if "--workers" in args else 2
    rounds = int(args[args.index("--rounds") + 1]) if "--rounds" in args else 3000
    say(f"master {os.getpid()}")
    pids = [fork_worker(directory, rounds) for _ in range(workers)]
    wait_for(os.path.join(directory, "more"))
    pids.append(fork_worker(directory, rounds, import_after=1.0))
    failed = 0
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        failed += status != 0
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
