"""Cost per switch of a tight Python greenlet switch loop, as is, under greenlet.settrace with
a no-op function, and (when gltop is attached from outside) under gltop's uprobes.

Prints one line per run: `MODE ns_per_switch`. With --wait, it prints `ready` and waits for a
line on stdin before the gltop run (for the attach), and prints `done` after it.

Usage: switch_cost.py [--switches N] [--wait]
"""

import sys
import time

import greenlet


def loop(n):
    main = greenlet.getcurrent()

    def other():
        while True:
            main.switch()

    g = greenlet.greenlet(other)
    t = time.perf_counter()
    for _ in range(n // 2):
        g.switch()
    return (time.perf_counter() - t) / (n // 2 * 2) * 1e9


def noop(event, args):
    pass


def main():
    n, wait = 1_000_000, False
    args = sys.argv[1:]
    while args:
        flag = args.pop(0)
        if flag == "--switches":
            n = int(args.pop(0))
        elif flag == "--wait":
            wait = True
        else:
            print(f"switch_cost.py: unknown argument {flag}", file=sys.stderr)
            sys.exit(2)
    loop(n // 10)  # warm-up
    print(f"plain {loop(n):.0f}", flush=True)
    greenlet.settrace(noop)
    print(f"settrace {loop(n):.0f}", flush=True)
    greenlet.settrace(None)
    if wait:
        print("ready", flush=True)
        sys.stdin.readline()
        print(f"gltop {loop(n):.0f}", flush=True)
        print("done", flush=True)


if __name__ == "__main__":
    main()
