#!/usr/bin/env python3
"""Instructions per switch, counted with callgrind, with setup cancelled out.

Each case of examples/switch_loop.rs runs under `valgrind --tool=callgrind` twice, for N and
for 2N operations; (I(2N) - I(N)) / N is the cost of one operation (a switch, or a greenlet
lifetime for `lifetime`) with setup, teardown and process start-up cancelled out. Callgrind
counts user-space instructions only: system calls (mmap for a stack) cost nothing here, so
`lifetime` is the user-space part of a lifetime.

Usage:
  benches/callgrind.py [--n N] [--json] [--bin PATH] [--no-probes-bin PATH] [CASE...]
  benches/callgrind.py --profile CASE [--n N] [--top K] [--bin PATH]

--profile prints where one operation's instructions go, per function (self cost, inlined code
attributed to the function it was inlined into), from the difference of the 2N and N runs.
--no-probes-bin adds, for each case, the count of a build with the probes and the sampling
word's switch counter compiled out (`--cfg greenlet_no_probes`) and the difference: what
those hooks cost, compiled in and unattached.
"""
import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_BIN = os.path.join(ROOT, "target", "release", "examples", "switch_loop")
DEFAULT_CASES = [
    "switch_two_greenlets",
    "switch_two_greenlets_u64",
    "switch_main_child",
    "switch_main_child_u64",
    "switch_two_greenlets_traced",
    "switch_main_child_traced",
    "lifetime",
    "floor_trampoline",
    "floor_trampoline_call",
    "floor_main_child",
    "peer_context_two",
    "peer_context_main_child",
]


def die(message):
    print(f"callgrind: {message}", file=sys.stderr)
    sys.exit(2)


def run_callgrind(binary, case, n, out_file):
    """Runs one case under callgrind; returns the total instruction count."""
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}",
           binary, case, str(n)]
    # A fixed environment: the stack's starting alignment, hence some instruction counts,
    # depends on the size of the environment.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        die(f"{' '.join(cmd)} failed:\n{proc.stderr.strip()[-2000:]}")
    with open(out_file) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    die(f"no totals in {out_file}")


def per_op(binary, case, n, keep_dir=None):
    """(instructions per operation, total at N, total at 2N, out file of the 2N run)."""
    work = keep_dir or tempfile.mkdtemp(prefix="callgrind-")
    small = run_callgrind(binary, case, n, os.path.join(work, f"{case}.{n}.out"))
    big_file = os.path.join(work, f"{case}.{2 * n}.out")
    big = run_callgrind(binary, case, 2 * n, big_file)
    return (big - small) / n, small, big, big_file


_NAME_RE = re.compile(r"^(c?fn)=\((\d+)\)(?: (.*))?$")


def self_costs(out_file):
    """Self cost per function from a callgrind out file (name compression understood)."""
    names = {}
    costs = collections.Counter()
    fn = None
    skip_next = False
    with open(out_file) as f:
        for line in f:
            line = line.rstrip("\n")
            m = _NAME_RE.match(line)
            if m:
                kind, ident, name = m.groups()
                if name is not None:
                    names[ident] = name
                if kind == "fn":
                    fn = names.get(ident, ident)
                continue
            if line.startswith("calls="):
                skip_next = True  # the next cost line is the call's inclusive cost
                continue
            if line and (line[0].isdigit() or line[0] in "+-*"):
                if skip_next:
                    skip_next = False
                    continue
                parts = line.split()
                if len(parts) >= 2 and fn is not None:
                    costs[fn] += int(parts[1])
    return costs


def profile(binary, case, n, top):
    work = tempfile.mkdtemp(prefix="callgrind-")
    per, _, _, big_file = per_op(binary, case, n, work)
    small_file = os.path.join(work, f"{case}.{n}.out")
    diff = self_costs(big_file)
    diff.subtract(self_costs(small_file))
    print(f"{case}: {per:.1f} instructions per operation (N={n}); self cost per operation:")
    shown = 0.0
    for name, cost in diff.most_common(top):
        if cost / n < 0.05:
            break
        shown += cost / n
        print(f"{cost / n:8.1f}  {name}")
    print(f"{per - shown:8.1f}  (the rest)")
    print(f"out files: {work}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cases", nargs="*", help="cases (default: all)")
    ap.add_argument("--n", type=int, default=100_000, help="operations of the smaller run")
    ap.add_argument("--bin", default=DEFAULT_BIN, help="the switch_loop binary")
    ap.add_argument("--no-probes-bin", help="switch_loop built with --cfg greenlet_no_probes")
    ap.add_argument("--json", action="store_true", help="one JSON object per case")
    ap.add_argument("--profile", metavar="CASE", help="per-function profile of one case")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    if args.n <= 0:
        die("--n must be positive")
    if not os.access(args.bin, os.X_OK):
        die(f"{args.bin} is missing: cargo build --release --example switch_loop")
    if subprocess.run(["valgrind", "--version"], capture_output=True).returncode != 0:
        die("valgrind is missing (apt-get install valgrind)")
    if args.profile:
        profile(args.bin, args.profile, args.n, args.top)
        return
    for case in args.cases or DEFAULT_CASES:
        per, small, big, _ = per_op(args.bin, case, args.n)
        row = {"case": case, "instructions": round(per, 1), "n": args.n,
               "total_n": small, "total_2n": big}
        if args.no_probes_bin:
            bare, _, _, _ = per_op(args.no_probes_bin, case, args.n)
            row["instructions_no_probes"] = round(bare, 1)
            row["probe_cost"] = round(per - bare, 1)
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            extra = ""
            if args.no_probes_bin:
                extra = (f"   no probes {row['instructions_no_probes']:7.1f}"
                         f"   probes cost {row['probe_cost']:+.1f}")
            print(f"{case:30} {per:8.1f} instructions per op{extra}", flush=True)


if __name__ == "__main__":
    main()
