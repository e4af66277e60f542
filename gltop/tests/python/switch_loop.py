"""A greenlet switch loop measured on request, for gltop's pysample_cost example (issue 18).

The main greenlet and a child switch back and forth. For each line `N` read on stdin it does
N round trips (2N switches) and prints the thread CPU time they took, in ns; it prints
`ready` once greenlet is imported and the child started, and exits at end of input.
"""

import sys
import time

import greenlet


def main():
    main_g = greenlet.getcurrent()

    def child_run():
        while True:
            main_g.switch()

    child = greenlet.greenlet(child_run)
    child.switch()
    print("ready", flush=True)
    for line in sys.stdin:
        n = int(line)
        switch = child.switch
        t0 = time.thread_time_ns()
        for _ in range(n):
            switch()
        print(time.thread_time_ns() - t0, flush=True)


if __name__ == "__main__":
    main()
