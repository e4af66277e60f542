//! The probes seen from the kernel (issue 3, items 1 and 4; spec R6): bpftrace attached to the
//! workload sees exactly the transfers its settrace tracer counted, with the same pairs, on
//! the same threads; `new` and `dead` carry each greenlet's id, parent, name and outcome; the
//! probes fire without a tracer too; and a probe's semaphore is set only while a tracer is
//! attached.
//!
//! These tests need bpftrace and BPF: outside CI they skip with a reason, under `CI=true`
//! they fail if bpftrace cannot run.

mod support;

use std::collections::BTreeMap;

use support::bpftrace::{self, key_parts, num, pairs, Bpftrace, Program};
use support::stapsdt::{probe_notes, read_semaphore, runtime_address};
use support::workload::{outcome_code, workload_bin, Report, Workload};

/// Every argument of every probe, keyed so that each map entry can be checked.
const ALL_ARGS: &str = r#"
BEGIN { printf("attached\n"); }
usdt:$1:greenlet:switch { @switch[arg0, arg1] = count(); @switch_tid[tid] = count(); }
usdt:$1:greenlet:throw { @throw[arg0, arg1] = count(); @throw_tid[tid] = count(); }
usdt:$1:greenlet:new { @new[arg0, arg1, str(arg2)] = count(); @new_tid[arg0] = tid; }
usdt:$1:greenlet:dead { @dead[arg0, arg1] = count(); @dead_tid[arg0] = tid; }
"#;

/// Runs the workload with `args` under `ALL_ARGS`; returns its report and bpftrace's output.
fn trace_all(args: &[&str]) -> (Report, bpftrace::Output) {
    let _serial = support::serial();
    let mut w = Workload::start(args);
    let bt = Bpftrace::attach(Program::Text(ALL_ARGS), w.pid);
    w.go();
    let report = w.finish();
    (report, bt.finish())
}

fn per_tid(map: &BTreeMap<String, i64>) -> BTreeMap<i32, u64> {
    map.iter()
        .map(|(k, v)| (k.parse().unwrap(), *v as u64))
        .collect()
}

fn check_all_args(r: &Report, out: &bpftrace::Output) {
    // switch and throw: the same (origin, target) pairs as settrace, as often.
    assert_eq!(
        pairs(&out.map("@switch")),
        r.edges_of("switch"),
        "switch edges"
    );
    assert_eq!(
        pairs(&out.map("@throw")),
        r.edges_of("throw"),
        "throw edges"
    );
    // ... fired on the thread that made the transfer.
    let switches: BTreeMap<i32, u64> = r.per_thread.iter().map(|t| (t.tid, t.switch)).collect();
    let throws: BTreeMap<i32, u64> = r.per_thread.iter().map(|t| (t.tid, t.throw)).collect();
    assert_eq!(per_tid(&out.map("@switch_tid")), switches);
    assert_eq!(per_tid(&out.map("@throw_tid")), throws);

    // new: every greenlet once, with its parent (0 for main) and name ("" for main).
    let new: BTreeMap<(u64, u64, String), i64> = out
        .map("@new")
        .into_iter()
        .map(|(k, v)| {
            let p = key_parts(&k, 3);
            ((num(p[0]), num(p[1]), p[2].to_string()), v)
        })
        .collect();
    let expected: BTreeMap<(u64, u64, String), i64> = r
        .greenlets
        .iter()
        .map(|g| ((g.id, g.parent, g.name.clone()), 1))
        .collect();
    assert_eq!(new, expected, "greenlet:new");

    // dead: every greenlet once, with its outcome.
    let dead = pairs(&out.map("@dead"));
    let expected: BTreeMap<(u64, u64), u64> = r
        .greenlets
        .iter()
        .map(|g| ((g.id, u64::from(outcome_code(&g.outcome))), 1))
        .collect();
    assert_eq!(dead, expected, "greenlet:dead");

    // Both fire on the greenlet's own thread (a main greenlet's death at its thread's exit).
    for (probe, map) in [("new", out.map("@new_tid")), ("dead", out.map("@dead_tid"))] {
        for g in &r.greenlets {
            assert_eq!(
                map.get(&g.id.to_string()).copied(),
                Some(i64::from(g.tid)),
                "greenlet:{probe} of {g:?} fired on another thread"
            );
        }
    }
}

#[test]
fn bpftrace_sees_what_settrace_saw_with_the_defaults() {
    if !bpftrace::available("bpftrace_sees_what_settrace_saw_with_the_defaults") {
        return;
    }
    let (r, out) = trace_all(&[]);
    assert!(r.totals.switch > 0 && r.totals.throw > 0);
    check_all_args(&r, &out);
}

#[test]
fn bpftrace_sees_what_settrace_saw_in_a_seeded_run() {
    if !bpftrace::available("bpftrace_sees_what_settrace_saw_in_a_seeded_run") {
        return;
    }
    let (r, out) = trace_all(&[
        "--threads=3",
        "--greenlets=6",
        "--switches=500",
        "--throws=40",
        "--kills=2",
        "--iterations=3",
        "--seed=11",
    ]);
    check_all_args(&r, &out);
}

#[test]
fn a_named_main_greenlet_carries_its_name_in_the_new_probe() {
    if !bpftrace::available("a_named_main_greenlet_carries_its_name_in_the_new_probe") {
        return;
    }
    let (r, out) = trace_all(&["--threads=2", "--main-name=event-loop"]);
    check_all_args(&r, &out);
    // Each thread's main greenlet: `new(id, 0, "event-loop")`, seen by bpftrace itself.
    let mains: Vec<u64> = r
        .greenlets
        .iter()
        .filter(|g| g.main)
        .map(|g| g.id)
        .collect();
    assert_eq!(mains.len(), 2);
    let named: Vec<u64> = out
        .map("@new")
        .keys()
        .map(|k| key_parts(k, 3))
        .filter(|p| num(p[1]) == 0)
        .map(|p| {
            assert_eq!(p[2], "event-loop", "a main greenlet's new probe: {p:?}");
            num(p[0])
        })
        .collect();
    assert_eq!(named.len(), 2, "one main greenlet per thread: {named:?}");
    assert!(named.iter().all(|id| mains.contains(id)));
}

#[test]
fn the_probes_fire_without_a_tracer() {
    if !bpftrace::available("the_probes_fire_without_a_tracer") {
        return;
    }
    let args = [
        "--threads=2",
        "--greenlets=5",
        "--switches=200",
        "--throws=20",
        "--seed=3",
    ];
    // The same run twice (a seed repeats exactly): traced by settrace without bpftrace, then
    // with no tracer under bpftrace.
    let traced = support::workload::run(&args);
    let mut quiet_args = args.to_vec();
    quiet_args.push("--no-trace");
    let (quiet, out) = trace_all(&quiet_args);
    assert!(quiet.edges.is_empty());

    // Compare per thread and kind, and edges by each greenlet's position in its thread.
    let position = |r: &Report, id: u64| {
        let g = r.greenlet(id);
        let pos = r
            .greenlets
            .iter()
            .filter(|h| h.thread == g.thread)
            .position(|h| h.id == id);
        (g.thread, pos.unwrap())
    };
    for kind in ["switch", "throw"] {
        let expected: BTreeMap<_, u64> = traced
            .edges_of(kind)
            .into_iter()
            .map(|((o, t), n)| ((position(&traced, o), position(&traced, t)), n))
            .collect();
        let seen: BTreeMap<_, u64> = pairs(&out.map(&format!("@{kind}")))
            .into_iter()
            .map(|((o, t), n)| ((position(&quiet, o), position(&quiet, t)), n))
            .collect();
        assert_eq!(seen, expected, "{kind} edges without a tracer");
    }
    assert_eq!(quiet.deaths, traced.deaths);
    assert_eq!(out.map("@dead").len() as u64, traced.totals.dead);
}

#[test]
fn a_semaphore_is_set_only_while_its_probe_is_attached() {
    if !bpftrace::available("a_semaphore_is_set_only_while_its_probe_is_attached") {
        return;
    }
    let _serial = support::serial();
    let bin = workload_bin();
    let bytes = std::fs::read(&bin).unwrap();
    let mut semaphores = BTreeMap::new();
    for note in probe_notes(&bytes) {
        semaphores.insert(note.name.clone(), note.semaphore);
    }
    assert_eq!(semaphores.len(), 4);

    let mut w = Workload::start(&["--threads=1"]);
    let read_all = || -> BTreeMap<String, u16> {
        semaphores
            .iter()
            .map(|(name, &vaddr)| {
                let addr = runtime_address(w.pid, &bin, &bytes, vaddr);
                (name.clone(), read_semaphore(w.pid, addr))
            })
            .collect()
    };
    let zero: BTreeMap<String, u16> = semaphores.keys().map(|n| (n.clone(), 0)).collect();
    assert_eq!(read_all(), zero, "semaphores before any tracer");

    // Attach to two of the four probes: only their semaphores are set.
    let bt = Bpftrace::attach(
        Program::Text(
            r#"BEGIN { printf("attached\n"); }
               usdt:$1:greenlet:switch { @s = count(); }
               usdt:$1:greenlet:dead { @d = count(); }"#,
        ),
        w.pid,
    );
    let attached = read_all();
    assert!(
        attached["switch"] > 0,
        "switch semaphore while attached: {attached:?}"
    );
    assert!(
        attached["dead"] > 0,
        "dead semaphore while attached: {attached:?}"
    );
    assert_eq!((attached["new"], attached["throw"]), (0, 0), "{attached:?}");

    let out = bt.interrupt();
    let counted: i64 = out.map("@s").values().sum();
    assert_eq!(counted, 0, "nothing ran yet, yet bpftrace counted switches");
    assert_eq!(read_all(), zero, "semaphores after bpftrace detached");
    w.go();
    let r = w.finish();
    assert!(r.totals.switch > 0);
}
