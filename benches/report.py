#!/usr/bin/env python3
"""`make bench`: our benchmarks and Python greenlet's, in one run, in one table.

Runs, in this order, so that everything sees the same machine within minutes:
  1. the criterion benches (benches/switch.rs): wall time per switch / per lifetime, with the
     bare corosensei floors;
  2. callgrind (benches/callgrind.py): instructions per switch, setup cancelled out, for the
     default build and for a build with the probes compiled out (--cfg greenlet_no_probes);
  3. examples/million.rs: resident memory plus page tables per live greenlet;
  4. the Python greenlet peer: $PEER, else ../shared/peers/python_greenlet_bench.py when it
     exists (the team's reference script), else benches/peer/python_greenlet_bench.py.
Then prints one table (case, ours, peer, ratio, target, met?) and writes every figure to
target/bench-report.json (--json prints that JSON instead of the table).

Usage: benches/report.py [--quick] [--json] [--strict] [--skip STEP...]
  --quick     CI-sized run: shorter criterion runs, fewer callgrind iterations, 100,000 live
              greenlets instead of 1,000,000, the peer's --quick mode.
  --strict    exit 1 when a target is missed (default: 0; the table says what is missed).
  --skip      any of: criterion callgrind live peer
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import callgrind  # noqa: E402  (benches/callgrind.py)

TARGET = os.path.join(ROOT, "target")
SWITCH_LOOP = os.path.join(TARGET, "release", "examples", "switch_loop")
NO_PROBES_DIR = os.path.join(TARGET, "no-probes")
NO_PROBES_LOOP = os.path.join(NO_PROBES_DIR, "release", "examples", "switch_loop")
MILLION = os.path.join(TARGET, "release", "examples", "million")
# The team's peer script, next to a checkout at ../shared (override: PEER=/path/to/script).
SHARED_PEER = os.environ.get("PEER") or os.path.normpath(
    os.path.join(ROOT, "..", "shared", "peers", "python_greenlet_bench.py"))
OWN_PEER = os.path.join(HERE, "peer", "python_greenlet_bench.py")

SWITCH_CASES = ["switch_two_greenlets", "switch_two_greenlets_u64",
                "switch_main_child", "switch_main_child_u64"]
TRACED_CASES = {"switch_two_greenlets_traced": "switch_two_greenlets",
                "switch_main_child_traced": "switch_main_child"}
# Every transfer is one stack switch (a greenlet resumes a parked target from its own stack,
# or suspends to the one below it), so both switch cases compare with one bare corosensei
# resume or suspend, and with the `context` crate's direct switch (a dev-dependency).
FLOORS = {"switch_two_greenlets": "floor_main_child", "switch_main_child": "floor_main_child"}
PEERS = {"switch_two_greenlets": "peer_context_two",
         "switch_main_child": "peer_context_main_child"}
FLOOR_CASES = ["floor_trampoline", "floor_trampoline_call", "floor_main_child",
               "peer_context_two", "peer_context_main_child"]
ALL_CASES = SWITCH_CASES + list(TRACED_CASES) + ["lifetime"] + FLOOR_CASES

# The targets of issue 5 (wall time, against Python greenlet).
MIN_SPEEDUP = 15.0
MAX_TRACE_OVERHEAD_NS = 10.0  # issue 17 (issue 5 asked for 15)
MAX_LIFETIME_NS = 150.0
# The instruction goals of issue 17 (callgrind): per switch, for the unit-payload cases
# (main <-> child: 2x the bare corosensei resume/suspend); what a no-op tracer adds to a
# switch; one greenlet lifetime; and every hook compiled in but unattached (the USDT probes
# and the sampling word of issue 12), over a build with them compiled out.
MAX_SWITCH_INSTRUCTIONS = {"switch_two_greenlets": 45.0, "switch_main_child": 34.0}
MAX_TRACE_INSTRUCTIONS = 60.0
MAX_LIFETIME_INSTRUCTIONS = 300.0
MAX_PROBE_INSTRUCTIONS = 4.0
LIVE_COUNT = 1_000_000
MAX_LIVE_KIB = 4.5
# gltop's own CPU at 1 Hz with 100,000 live greenlets, % of one core (issue 14).
MAX_SCALE_CPU_PCT = 2.0


def log(message):
    print(f"bench: {message}", file=sys.stderr, flush=True)


def fail(message):
    print(f"bench: {message}", file=sys.stderr)
    sys.exit(1)


def run(cmd, env=None, capture=True):
    """Runs a command from the repository root; its output goes to stderr unless captured."""
    proc = subprocess.run(cmd, cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE if capture else sys.stderr,
                          stderr=subprocess.PIPE if capture else sys.stderr)
    return proc


def build(steps):
    log("building (release): switch_loop, million, the switch bench")
    proc = run(["cargo", "build", "-q", "--release", "--example", "switch_loop",
                "--example", "million"], capture=False)
    if proc.returncode != 0:
        fail("cargo build failed")
    if "criterion" in steps:
        proc = run(["cargo", "bench", "-q", "--bench", "switch", "--no-run"], capture=False)
        if proc.returncode != 0:
            fail("cargo bench --no-run failed")
    if "callgrind" in steps:
        log("building switch_loop with --cfg greenlet_no_probes (target/no-probes)")
        env = dict(os.environ)
        # RUSTFLAGS replaces .cargo/config.toml's rustflags: keep its frame pointers, so that
        # the two builds differ only by the probes.
        env["RUSTFLAGS"] = (env.get("RUSTFLAGS", "")
                            + " -C force-frame-pointers=yes --cfg greenlet_no_probes").strip()
        env["CARGO_TARGET_DIR"] = NO_PROBES_DIR
        proc = run(["cargo", "build", "-q", "--release", "--example", "switch_loop"],
                   env=env, capture=False)
        if proc.returncode != 0:
            fail("the no-probes build failed")


def criterion(quick):
    """Median ns per iteration (= per switch, or per lifetime) of every criterion case."""
    args = ["--noplot"]
    if quick:
        args += ["--warm-up-time", "0.5", "--measurement-time", "1", "--sample-size", "20"]
    else:
        args += ["--warm-up-time", "2", "--measurement-time", "4"]
    log("criterion: cargo bench --bench switch -- " + " ".join(args))
    started = time.time()
    proc = run(["cargo", "bench", "-q", "--bench", "switch", "--"] + args, capture=False)
    if proc.returncode != 0:
        fail("cargo bench failed")
    figures = {}
    for case in ALL_CASES:
        path = os.path.join(TARGET, "criterion", case, "new", "estimates.json")
        if not os.path.exists(path) or os.path.getmtime(path) < started:
            fail(f"criterion wrote no fresh estimate for {case} ({path})")
        with open(path) as f:
            estimates = json.load(f)
        figures[case] = {
            "median_ns": estimates["median"]["point_estimate"],
            "mean_ns": estimates["mean"]["point_estimate"],
            "mean_ci_ns": [estimates["mean"]["confidence_interval"]["lower_bound"],
                           estimates["mean"]["confidence_interval"]["upper_bound"]],
        }
    return figures


def instructions(quick):
    """callgrind instructions per operation, default build and no-probes build."""
    n = 20_000 if quick else 100_000
    figures = {}
    for case in ALL_CASES:
        # A lifetime maps and unmaps a stack unless the stack pool serves it: fewer rounds.
        rounds = max(n // 5, 1000) if case == "lifetime" else n
        log(f"callgrind: {case} ({rounds} and {2 * rounds} operations, both builds)")
        per, small, big, _ = callgrind.per_op(SWITCH_LOOP, case, rounds)
        bare, _, _, _ = callgrind.per_op(NO_PROBES_LOOP, case, rounds)
        figures[case] = {"instructions": round(per, 1), "instructions_no_probes": round(bare, 1),
                         "probe_cost": round(per - bare, 1), "n": rounds}
    return figures


def live(quick):
    count = 100_000 if quick else LIVE_COUNT
    log(f"million: {count} live greenlets")
    proc = run([MILLION, "--count", str(count), "--json"])
    if proc.returncode != 0:
        return {"count": count, "error": proc.stderr.strip()}
    return json.loads(proc.stdout)


def peer(quick):
    if os.environ.get("PEER") and not os.path.exists(SHARED_PEER):
        fail(f"PEER={SHARED_PEER}: no such file")
    script = SHARED_PEER if os.path.exists(SHARED_PEER) else OWN_PEER
    log(f"peer: python3 {os.path.relpath(script, ROOT)}" + (" --quick" if quick else ""))
    cmd = ["python3", script, "--json"] + (["--quick"] if quick else [])
    proc = run(cmd)
    if proc.returncode != 0:
        fail(f"the peer failed: {proc.stderr.strip()}\n"
             "(is Python greenlet installed? python3 -m pip install greenlet)")
    figures = {"script": os.path.relpath(script, ROOT), "cases": {}}
    for line in proc.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            row = json.loads(line)
            figures["version"] = row.get("version")
            figures["cases"][row["case"]] = {"value": row["value"], "unit": row["unit"]}
    return figures


def tracer(quick):
    """gltop's cost to a thread switching > 1M/s: no tracer, exact, --sample 99/999/10k Hz,
    side by side in one run (gltop/examples/tracer_cost.rs; needs root for BPF)."""
    if os.geteuid() != 0:
        log("tracer: skipped (attaching BPF programs needs root)")
        return None
    log("tracer: gltop's cost, exact and sampled, side by side")
    proc = run(["cargo", "run", "-q", "--release", "-p", "gltop", "--example", "tracer_cost",
                "--", "--json", "--rounds", "3" if quick else "9"])
    if proc.returncode != 0:
        fail("tracer_cost failed: " + proc.stderr.strip()[-400:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def scale(quick):
    """gltop's own CPU, memory and refresh time at 1 Hz with 100,000 live greenlets in one
    process and in 10 processes (gltop/examples/gltop_scale.rs; needs root for BPF)."""
    if os.geteuid() != 0:
        log("scale: skipped (attaching BPF programs needs root)")
        return None
    log("scale: gltop's own cost with 100,000 greenlets, in 1 and in 10 processes")
    proc = run(["cargo", "build", "-q", "--release", "-p", "gltop", "--bin", "gltop",
                "--example", "gltop_scale"], capture=False)
    if proc.returncode != 0:
        fail("cargo build of gltop_scale failed")
    proc = run([os.path.join(TARGET, "release", "examples", "gltop_scale"), "--json",
                "--seconds", "8" if quick else "30"])
    if proc.returncode != 0:
        fail("gltop_scale failed: " + proc.stderr.strip()[-400:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def python(quick):
    """What watching costs a Python greenlet switch loop, side by side in one run each:
    exact gltop beside greenlet.settrace with a no-op function (gltop/benches/python/run.sh),
    and the sampled mode at 99, 999 and 10,000 Hz (gltop/examples/pysample_cost.rs). Needs
    root for BPF and python3 with greenlet."""
    if os.geteuid() != 0:
        log("python: skipped (attaching BPF programs needs root)")
        return None
    log("python: gltop on a Python greenlet switch loop, exact (beside settrace) and sampled")
    proc = run(["cargo", "build", "-q", "--release", "-p", "gltop", "--bin", "gltop",
                "--example", "pysample_cost"], capture=False)
    if proc.returncode != 0:
        fail("cargo build of gltop and pysample_cost failed")
    exact = run(["bash", os.path.join(ROOT, "gltop", "benches", "python", "run.sh")]
                + (["--switches", "200000"] if quick else []))
    if exact.returncode != 0:
        fail("gltop/benches/python/run.sh failed: " + exact.stderr.strip()[-400:])
    sampled = run([os.path.join(TARGET, "release", "examples", "pysample_cost"),
                   "--rounds", "2" if quick else "5"])
    if sampled.returncode != 0:
        fail("pysample_cost failed: " + sampled.stderr.strip()[-400:])
    return {"exact": exact.stdout.rstrip().splitlines(),
            "sampled": sampled.stdout.rstrip().splitlines()}


def render_python(p):
    return "\n".join(["", "What watching costs a Python greenlet switch (exact gltop beside "
                      "greenlet.settrace, then the sampled mode):"] + p["exact"] + [""]
                     + p["sampled"])


def render_scale(s):
    lines = ["", f"gltop's own cost, gltop --listen -d 1 ({s['seconds']:.0f} s window, targets "
             f"switching {s['rate']:,}/s in all; goal: <= {MAX_SCALE_CPU_PCT}% of a core with "
             "100,000 greenlets, no refresh longer than the interval):",
             f"{'':<26} {'CPU':>8} {'RSS':>9} {'peak RSS':>9} {'refreshes':>9} "
             f"{'mean':>9} {'longest':>9}"]
    for c in s["cases"]:
        lines.append(f"{c['case']:<26} {c['cpu_pct']:>7.2f}% {c['rss_kib'] / 1024:>5.0f} MiB "
                     f"{c['hwm_kib'] / 1024:>5.0f} MiB {c['refreshes']:>9.0f} "
                     f"{c['refresh_mean_ms']:>6.1f} ms {c['refresh_max_ms']:>6.1f} ms")
    lines.append(f"(load average at the end: {', '.join(str(round(x, 2)) for x in os.getloadavg())})")
    return "\n".join(lines)


def render_tracer(t):
    lines = ["", "What gltop costs a thread switching greenlets "
             f"({t['switches']:,} switches per measurement, least of {t['rounds']} rounds):",
             f"{'':<28} {'CPU/switch':>12} {'switches/s':>14} {'extra CPU':>10}"]
    for v in t["variants"]:
        lines.append(f"{v['variant']:<28} {v['cpu_ns_per_switch']:>10.2f}ns "
                     f"{v['switches_per_s']:>14,.0f} {v['extra_cpu_pct']:>9.2f}%")
    ns = t["per_sample_ns"]
    lines.append(f"one sample: {ns:.0f} ns (from 10 kHz): 99 Hz = {ns * 99 / 1e7:.3f}% of a busy "
                 f"CPU, 999 Hz = {ns * 999 / 1e7:.2f}% (goal at 99 Hz: <= 1%)")
    return "\n".join(lines)


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "cpu": cpu, "cpus": os.cpu_count(), "kernel": platform.release(),
            "rustc": rustc, "load_average": [round(x, 2) for x in os.getloadavg()]}


def fmt(value, unit, digits=1):
    return "-" if value is None else f"{value:,.{digits}f} {unit}".strip()


def table_rows(results):
    """(case, ours, peer, ratio, target, met) rows; met is True/False/None."""
    crit = results.get("criterion") or {}
    cg = results.get("callgrind") or {}
    peer_cases = (results.get("peer") or {}).get("cases", {})
    rows = []

    def peer_ns(case):
        return peer_cases.get(case, {}).get("value")

    # Wall time per switch, against Python greenlet.
    for case in SWITCH_CASES:
        ours = crit.get(case, {}).get("median_ns")
        base = case.replace("_u64", "")
        theirs = peer_ns(base)
        ratio = theirs / ours if ours and theirs else None
        name = case + (" (peer: no payload)" if case != base else "")
        rows.append((name, fmt(ours, "ns"), fmt(theirs, "ns"),
                     fmt(ratio, "x"), f">= {MIN_SPEEDUP:.0f}x faster than peer",
                     None if ratio is None else ratio >= MIN_SPEEDUP))
    # The tracer's cost.
    for case, untraced in TRACED_CASES.items():
        ours = crit.get(case, {}).get("median_ns")
        plain = crit.get(untraced, {}).get("median_ns")
        theirs = peer_ns(case)
        extra = ours - plain if ours is not None and plain is not None else None
        ratio = theirs / ours if ours and theirs else None
        rows.append((case, fmt(ours, "ns"), fmt(theirs, "ns"), fmt(ratio, "x"),
                     f"<= untraced + {MAX_TRACE_OVERHEAD_NS:.0f} ns (+{fmt(extra, 'ns')})",
                     None if extra is None else extra <= MAX_TRACE_OVERHEAD_NS))
    # A greenlet's lifetime.
    ours = crit.get("lifetime", {}).get("median_ns")
    theirs = peer_ns("lifetime")
    ratio = theirs / ours if ours and theirs else None
    rows.append(("lifetime (create + first switch + finish)", fmt(ours, "ns"),
                 fmt(theirs, "ns"), fmt(ratio, "x"), f"<= {MAX_LIFETIME_NS:.0f} ns",
                 None if ours is None else ours <= MAX_LIFETIME_NS))
    # The floors, for reference.
    for floor in FLOOR_CASES:
        ours = crit.get(floor, {}).get("median_ns")
        instr = cg.get(floor, {}).get("instructions")
        label = {"floor_trampoline": "floor: bare corosensei trampoline ping-pong",
                 "floor_trampoline_call": "floor: the same, switch = call returning on "
                                          "the other stack",
                 "floor_main_child": "floor: bare corosensei resume/suspend",
                 "peer_context_two": "peer: context crate, two contexts switching directly",
                 "peer_context_main_child": "peer: context crate, thread stack <-> one "
                                            "context"}[floor]
        rows.append((label, fmt(ours, "ns"), "-", "-",
                     f"(reference; {fmt(instr, 'instr')})", None))
    # Instructions per switch, each beside the bare corosensei floor measured in this run
    # (the ratio column: x floor).
    for case in SWITCH_CASES + list(TRACED_CASES) + ["lifetime"]:
        figure = cg.get(case, {}).get("instructions")
        base = case.replace("_u64", "").replace("_traced", "")
        floor = cg.get(FLOORS.get(base, ""), {}).get("instructions")
        peer = cg.get(PEERS.get(base, ""), {}).get("instructions")
        floor_note = f"floor {fmt(floor, '')}" + (f", context {fmt(peer, '')}" if peer else "")
        if case in MAX_SWITCH_INSTRUCTIONS:
            goal = MAX_SWITCH_INSTRUCTIONS[case]
            target = f"<= {goal:.0f} ({floor_note})"
            met = None if figure is None else figure <= goal
        elif case in TRACED_CASES:
            plain = cg.get(TRACED_CASES[case], {}).get("instructions")
            extra = figure - plain if figure is not None and plain is not None else None
            target = (f"<= untraced + {MAX_TRACE_INSTRUCTIONS:.0f} "
                      f"(+{fmt(extra, '')}; {floor_note})")
            met = None if extra is None else extra <= MAX_TRACE_INSTRUCTIONS
        elif case == "lifetime":
            target = f"<= {MAX_LIFETIME_INSTRUCTIONS:.0f}"
            met = None if figure is None else figure <= MAX_LIFETIME_INSTRUCTIONS
        else:
            target, met = f"(reference; {floor_note})", None
        unit = "instr/lifetime" if case == "lifetime" else "instr/switch"
        ratio = fmt(figure / floor, "x floor") if figure and floor else "-"
        if figure and peer:
            ratio += f", {fmt(figure / peer, 'x context')}"
        rows.append((f"{case}, instructions", fmt(figure, unit), "-", ratio, target, met))
    # The hooks compiled in, nobody attached: the probes and the sampling word.
    costs = [cg[c]["probe_cost"] for c in SWITCH_CASES if c in cg]
    worst = max(costs) if costs else None
    rows.append(("probes + sampling word compiled in, unattached (worst switch case)",
                 fmt(worst, "instr/switch"), "-", "-",
                 f"<= {MAX_PROBE_INSTRUCTIONS:.0f} over a build without them",
                 None if worst is None else worst <= MAX_PROBE_INSTRUCTIONS))
    # Live greenlets.
    lv = results.get("live")
    theirs = peer_cases.get("live_100k", {}).get("value")
    if lv is None:
        pass
    elif "error" in lv:
        rows.append((f"live greenlets ({lv['count']:,} alive)", "failed", fmt(theirs, "KiB"),
                     "-", f"{LIVE_COUNT:,} alive, <= {MAX_LIVE_KIB} KiB each", False))
    else:
        # Page tables (VmPTE) are not in RSS: counted too (issue 17). The peer's figure is its
        # RSS (its page tables: about 0.04 KiB a greenlet, measured by hand).
        ours = lv["kib_per_greenlet"] + lv["pte_delta_kib"] / lv["count"]
        ratio = theirs / ours if ours and theirs else None
        rows.append((f"live greenlets, RSS + page tables ({lv['count']:,} alive; peer 100k, RSS)",
                     fmt(ours, "KiB", 2),
                     fmt(theirs, "KiB"), fmt(ratio, "x"),
                     f"{LIVE_COUNT:,} alive, <= {MAX_LIVE_KIB} KiB each",
                     lv["count"] >= LIVE_COUNT and ours <= MAX_LIVE_KIB))
    # gltop's own cost at scale.
    for c in (results.get("scale") or {}).get("cases", []):
        if c["processes"] == 1:
            rows.append((f"gltop CPU at 1 Hz, {c['case']}", fmt(c["cpu_pct"], "%", 2), "-", "-",
                         f"<= {MAX_SCALE_CPU_PCT}% of a core", c["cpu_pct"] <= MAX_SCALE_CPU_PCT))
        rows.append((f"gltop longest refresh, {c['case']}", fmt(c["refresh_max_ms"], "ms"), "-",
                     "-", "< the 1 s interval", c["refresh_max_ms"] < 1000.0))
    return rows


def render(results, rows):
    m = results["machine"]
    pr = results.get("peer") or {}
    lines = [
        f"greenlet benchmarks, {m['date']}: {m['cpu']} x{m['cpus']}, Linux {m['kernel']}, "
        f"{m['rustc']}, load average {m['load_average'][0]}",
        f"peer: Python greenlet {pr.get('version', '-')} ({pr.get('script', 'not run')}); "
        f"command: {results['command']}",
        "",
    ]
    header = ("case", "ours", "peer", "ratio", "target", "met?")
    table = [header] + [(c, o, p, r, t, {True: "yes", False: "NO", None: "-"}[met])
                        for c, o, p, r, t, met in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        lines.append("  ".join(cell.ljust(widths[j]) if j in (0, 4) else cell.rjust(widths[j])
                               for j, cell in enumerate(row)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lv = results.get("live")
    if lv and "error" not in lv:
        lines.append("")
        lines.append(f"live: {lv['count']:,} greenlets created and started in "
                     f"{lv['create_seconds']:.2f} s ({lv['create_ns_per_greenlet']:.0f} ns each), "
                     f"{lv['kib_per_greenlet']:.2f} KiB RSS each (+{lv['pte_delta_kib']:,} KiB "
                     f"page tables), kernel mappings {lv['mappings_before']} -> "
                     f"{lv['mappings_after']}")
    elif lv:
        lines.append("")
        lines.append(f"live: {lv['error']}")
    if m["load_average"][0] > 1.0:
        lines.append(f"note: load average {m['load_average'][0]} on {m['cpus']} CPUs when the run "
                     "started: wall times are inflated, Python's more than ours, so the ratios "
                     "flatter us; the instruction counts are unaffected.")
    lines.append("ratio: peer time / our time (how many times faster), or x floor for "
                 "instruction counts. Wall times are criterion medians; instruction counts are "
                 "callgrind, (I(2N) - I(N)) / N.")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true", help="print the JSON report, not the table")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("--skip", nargs="*", default=[],
                    choices=["criterion", "callgrind", "live", "peer", "tracer", "scale",
                             "python"])
    args = ap.parse_args()
    steps = [s for s in ("criterion", "callgrind", "live", "peer", "tracer", "scale", "python")
             if s not in args.skip]
    if "callgrind" in steps and subprocess.run(["which", "valgrind"],
                                               capture_output=True).returncode != 0:
        fail("valgrind is missing (apt-get install valgrind), or pass --skip callgrind")

    results = {"machine": machine(),
               "command": "make bench" + (" BENCH_ARGS=--quick" if args.quick else ""),
               "quick": args.quick}
    build(steps)
    if "criterion" in steps:
        results["criterion"] = criterion(args.quick)
    if "callgrind" in steps:
        results["callgrind"] = instructions(args.quick)
    if "live" in steps:
        results["live"] = live(args.quick)
    if "peer" in steps:
        results["peer"] = peer(args.quick)
    if "tracer" in steps:
        results["tracer"] = tracer(args.quick)
    if "scale" in steps:
        results["scale"] = scale(args.quick)
    if "python" in steps:
        results["python"] = python(args.quick)
    rows = table_rows(results)
    results["table"] = [{"case": c, "ours": o, "peer": p, "ratio": r, "target": t, "met": met}
                        for c, o, p, r, t, met in rows]
    out = os.path.join(TARGET, "bench-report.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(render(results, rows))
        if results.get("tracer"):
            print(render_tracer(results["tracer"]))
        if results.get("scale"):
            print(render_scale(results["scale"]))
        if results.get("python"):
            print(render_python(results["python"]))
        print(f"(all figures: {os.path.relpath(out, ROOT)})")
    missed = [r[0] for r in rows if r[5] is False]
    if missed:
        log(f"{len(missed)} target(s) missed: " + "; ".join(missed))
        if args.strict:
            sys.exit(1)


if __name__ == "__main__":
    main()
