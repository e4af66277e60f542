"""A small gevent application for gltop to watch (`make demo-gevent`): a few hundred
greenlets doing I/O and CPU, and one that blocks the hub now and then.

- `clients` pairs of greenlets talk over socket pairs: a client sends a request, sleeps a
  little, reads the answer; its server computes (a few thousand additions) and answers;
- a `ticker` wakes up every 10 ms;
- a `blocker` calls time.sleep(0.3) every 3 s: the whole thread (the hub and every
  greenlet) stops for 0.3 s.

Usage: gevent_demo.py [--clients N] [--seconds S] (S = 0: until killed)
"""

import sys
import time

import gevent
import gevent.socket


class Client(gevent.Greenlet):
    """The client side of one connection (a Python subclass: gltop shows its name)."""


def serve(sock):
    while True:
        data = sock.recv(4096)
        if not data:
            return
        sum(i * i for i in range(2000))
        sock.sendall(data.upper())


def client(sock, n):
    msg = b"request %d" % n
    while True:
        sock.sendall(msg)
        gevent.sleep(0.001 * (n % 7 + 1))
        sock.recv(4096)


def ticker():
    while True:
        gevent.sleep(0.01)


def blocker():
    while True:
        gevent.sleep(3)
        time.sleep(0.3)  # not gevent's sleep: blocks the hub


def main():
    clients, seconds = 150, 0.0
    args = sys.argv[1:]
    while args:
        flag = args.pop(0)
        if flag == "--clients":
            clients = int(args.pop(0))
        elif flag == "--seconds":
            seconds = float(args.pop(0))
        else:
            print(f"gevent_demo.py: unknown argument {flag}", file=sys.stderr)
            sys.exit(2)
    jobs = [gevent.spawn(ticker), gevent.spawn(blocker)]
    for n in range(clients):
        a, b = gevent.socket.socketpair()
        jobs.append(gevent.spawn(serve, b))
        jobs.append(Client.spawn(client, a, n))
    print(f"gevent_demo.py: {len(jobs)} greenlets, pid {__import__('os').getpid()}", flush=True)
    if seconds > 0:
        gevent.sleep(seconds)
    else:
        gevent.joinall(jobs)


if __name__ == "__main__":
    main()
