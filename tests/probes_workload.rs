//! The workload example that the probe and script tests compare against: its report is
//! consistent, follows its documented topology exactly, repeats for a seed, and its command
//! line behaves (issue 3, item 2). Needs no BPF.

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use support::workload::{self, workload_bin, Report, Workload};
use support::{Proc, TIMEOUT};

/// Checks what must hold for every report, whatever the options.
fn check_consistent(r: &Report) {
    let sum = |kind: &str| {
        r.edges
            .iter()
            .filter(|e| e.kind == kind)
            .map(|e| e.count)
            .sum::<u64>()
    };
    assert_eq!(r.totals.switch, sum("switch"));
    assert_eq!(r.totals.throw, sum("throw"));
    assert_eq!(r.threads as usize, r.per_thread.len());
    assert_eq!(
        r.totals.switch,
        r.per_thread.iter().map(|t| t.switch).sum::<u64>()
    );
    assert_eq!(
        r.totals.throw,
        r.per_thread.iter().map(|t| t.throw).sum::<u64>()
    );
    assert_eq!(r.totals.new, r.greenlets.len() as u64);
    assert_eq!(
        r.totals.new,
        r.per_thread.iter().map(|t| t.new).sum::<u64>()
    );
    // Every greenlet died, and each death is counted once.
    assert_eq!(r.totals.dead, r.totals.new);
    assert_eq!(r.totals.dead, r.deaths.values().sum::<u64>());
    let mut deaths = BTreeMap::new();
    for g in &r.greenlets {
        *deaths.entry(g.outcome.clone()).or_insert(0) += 1;
    }
    for outcome in greenlet::probes::Outcome::ALL.map(|o| o.name()) {
        assert_eq!(
            r.deaths[outcome],
            deaths.get(outcome).copied().unwrap_or(0),
            "deaths[{outcome}]"
        );
    }
    // Ids are unique and never 0; parents and edges stay within a thread.
    let mut ids: Vec<u64> = r.greenlets.iter().map(|g| g.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), r.greenlets.len(), "duplicate ids");
    assert!(!ids.contains(&0));
    for t in &r.per_thread {
        let main = r.greenlet(t.main);
        assert!(main.main && main.parent == 0 && main.name.is_empty() && main.tid == t.tid);
        assert_eq!(main.outcome, "thread_exit");
    }
    for g in r.greenlets.iter().filter(|g| !g.main) {
        let parent = r.greenlet(g.parent);
        assert_eq!(parent.thread, g.thread, "{g:?}: parent on another thread");
        assert!(["hub", "worker", "unborn", "discarded"].contains(&g.name.as_str()));
    }
    for e in &r.edges {
        assert!(e.count > 0);
        assert!(e.kind == "switch" || e.kind == "throw");
        assert_eq!(
            r.greenlet(e.origin).thread,
            r.greenlet(e.target).thread,
            "{e:?}"
        );
    }
}

/// The topology of the module docs, counted per thread and iteration (round robin).
#[derive(Debug, PartialEq, Eq)]
struct Expected {
    switch: u64,
    throw: u64,
    new: u64,
    deaths: BTreeMap<String, u64>,
}

fn expected(threads: u64, w: u64, s: u64, x: u64, k: u64, iterations: u64) -> Expected {
    let passes = if w > 1 { s / 4 } else { 0 };
    let finishers = w - k;
    let (mut ret, mut fail, mut panic) = (0, 0, 0);
    for i in 0..finishers {
        match i % 3 {
            0 => ret += 1,
            1 => fail += 1,
            _ => panic += 1,
        }
    }
    // main -> hub, hub -> main, hub -> hub, start and flush rounds, steps (a pass adds one
    // switch), yields after caught throws, victims back to the hub, finish orders, returns,
    // the unborn greenlet's exit arriving at the hub as a value.
    let switch = 3 + 4 * w + 2 * s + passes + x + k + finishers + ret + 1;
    // throws, kills, failures and panics going up, the kill of the unborn greenlet
    let throw = x + k + fail + panic + 1;
    let deaths = [
        ("returned", iterations * (1 + ret)),
        ("error", iterations * fail),
        ("exit", iterations * (k + 1)),
        ("panic", iterations * panic),
        ("thread_exit", 1),
        ("discarded", iterations),
    ];
    Expected {
        switch: threads * iterations * switch,
        throw: threads * iterations * throw,
        new: threads * (1 + iterations * (w + 3)),
        deaths: deaths
            .iter()
            .map(|(k, v)| (k.to_string(), threads * v))
            .collect(),
    }
}

fn actual(r: &Report) -> Expected {
    Expected {
        switch: r.totals.switch,
        throw: r.totals.throw,
        new: r.totals.new,
        deaths: r.deaths.clone(),
    }
}

#[test]
fn the_default_run_has_every_event_kind_and_every_outcome() {
    let r = workload::run(&[]);
    check_consistent(&r);
    assert_eq!(r.threads, 2);
    assert!(r.totals.switch > 0 && r.totals.throw > 0);
    for outcome in greenlet::probes::Outcome::ALL.map(|o| o.name()) {
        assert!(r.deaths[outcome] > 0, "no {outcome} death: {:?}", r.deaths);
    }
    assert_eq!(actual(&r), expected(2, 4, 100, 10, 1, 1));
}

#[test]
fn round_robin_counts_follow_the_documented_topology() {
    for (threads, w, s, x, k, it) in [
        (1, 1, 0, 0, 0, 1),
        (1, 1, 5, 2, 1, 1),
        (3, 2, 7, 3, 0, 2),
        (2, 7, 33, 5, 2, 3),
    ] {
        let args = [
            format!("--threads={threads}"),
            format!("--greenlets={w}"),
            format!("--switches={s}"),
            format!("--throws={x}"),
            format!("--kills={k}"),
            format!("--iterations={it}"),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = workload::run(&args);
        check_consistent(&r);
        assert_eq!(actual(&r), expected(threads, w, s, x, k, it), "{args:?}");
    }
}

/// Edges with each id replaced by (thread index, position among the thread's greenlets),
/// which do not depend on which thread got which block of ids.
fn normalised_edges(r: &Report) -> BTreeMap<(u32, usize, u32, usize, String), u64> {
    let position = |id: u64| {
        let g = r.greenlet(id);
        let pos = r
            .greenlets
            .iter()
            .filter(|h| h.thread == g.thread)
            .position(|h| h.id == id)
            .unwrap();
        (g.thread, pos)
    };
    r.edges
        .iter()
        .map(|e| {
            let (ot, op) = position(e.origin);
            let (tt, tp) = position(e.target);
            ((ot, op, tt, tp, e.kind.clone()), e.count)
        })
        .collect()
}

#[test]
fn a_seed_repeats_exactly_and_another_seed_differs() {
    let args = [
        "--threads=2",
        "--greenlets=6",
        "--switches=300",
        "--throws=30",
        "--seed=7",
    ];
    let a = workload::run(&args);
    let b = workload::run(&args);
    check_consistent(&a);
    assert_eq!(normalised_edges(&a), normalised_edges(&b));
    assert_eq!(a.deaths, b.deaths);
    let c = workload::run(&[
        "--threads=2",
        "--greenlets=6",
        "--switches=300",
        "--throws=30",
        "--seed=8",
    ]);
    check_consistent(&c);
    assert_ne!(normalised_edges(&a), normalised_edges(&c));
    // Two threads with one seed still pick differently.
    let per_thread = |t: u32| -> Vec<u64> {
        normalised_edges(&a)
            .into_iter()
            .filter(|((ot, ..), _)| *ot == t)
            .map(|(_, n)| n)
            .collect()
    };
    assert_ne!(per_thread(0), per_thread(1));
}

#[test]
fn without_a_tracer_the_report_has_no_events_but_the_same_greenlets() {
    let traced = workload::run(&["--threads=1"]);
    let quiet = workload::run(&["--threads=1", "--no-trace"]);
    assert!(quiet.edges.is_empty());
    assert_eq!((quiet.totals.switch, quiet.totals.throw), (0, 0));
    assert_eq!(quiet.config["trace"], false);
    assert_eq!(quiet.deaths, traced.deaths);
    assert_eq!(quiet.totals.new, traced.totals.new);
}

#[test]
fn a_timed_run_finishes_its_last_iteration() {
    let r = workload::run(&[
        "--threads=2",
        "--duration=0.3",
        "--pace=2000",
        "--switches=100",
    ]);
    check_consistent(&r);
    for t in &r.per_thread {
        assert!(t.iterations >= 1);
    }
    let iterations: u64 = r.per_thread.iter().map(|t| t.iterations).sum();
    assert_eq!(r.deaths["discarded"], iterations);
    assert_eq!(r.deaths["thread_exit"], 2);
}

#[test]
fn forever_stops_cleanly_on_sigterm() {
    let mut w = Workload::start(&["--threads=2", "--forever", "--pace=5000"]);
    w.go();
    std::thread::sleep(Duration::from_millis(300));
    w.signal(Signal::SIGTERM);
    let r = w.finish();
    check_consistent(&r);
    assert!(r.totals.switch > 0);
    assert_eq!(r.deaths["thread_exit"], 2);
}

#[test]
fn wait_signal_starts_on_sigusr1_and_linger_waits_for_stdin() {
    let mut w = Proc::spawn(
        Command::new(workload_bin())
            .args(["--threads=1", "--wait=signal", "--linger=stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let ready = w
        .wait_stderr_line(TIMEOUT, |_| true)
        .expect("the ready line");
    assert_eq!(ready, format!("workload: ready pid={}", w.pid()));
    w.signal(Signal::SIGUSR1);
    let report = w.wait_stdout_line(TIMEOUT, |_| true).expect("the report");
    check_consistent(&Report::parse(&report));
    assert!(w.wait_stderr("workload: done", TIMEOUT));
    assert_eq!(
        w.stderr_so_far().lines().collect::<Vec<_>>(),
        [ready.as_str(), "workload: done"]
    );
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        w.child.try_wait().unwrap().is_none(),
        "it exited without waiting"
    );
    drop(w.child.stdin.take());
    let status = w.wait("the workload", TIMEOUT);
    assert!(status.success());
}

#[test]
fn the_first_worker_of_each_hub_spins_in_each_of_its_slices() {
    let r = workload::run(&[
        "--threads=2",
        "--greenlets=3",
        "--switches=40",
        "--throws=4",
        "--spin-us=200",
    ]);
    check_consistent(&r);
    assert_eq!(r.config["spin_us"], 200);
    let inbound = r.inbound(None);
    // Compared as sets: ids come from one counter shared by the threads, in the order they
    // happen to create greenlets, which need not be the order of their thread ids.
    let mut spinners: Vec<u64> = r
        .per_thread
        .iter()
        .map(|t| {
            // The thread's first worker: its greenlets are main, hub, then the workers.
            r.greenlets
                .iter()
                .find(|g| g.tid == t.tid && g.name == "worker")
                .expect("a worker")
                .id
        })
        .collect();
    spinners.sort_unstable();
    let mut spun: Vec<u64> = r.spun.iter().map(|s| s.id).collect();
    spun.sort_unstable();
    assert_eq!(spun, spinners, "one spinner per thread, by id");
    for s in &r.spun {
        // A slice each time it got control: a transfer into it.
        assert_eq!(s.slices, inbound[&s.id], "{s:?}");
        assert!(s.ns >= s.slices * 200_000, "{s:?}");
    }
    let quiet = workload::run(&["--threads=1"]);
    assert!(quiet.spun.is_empty());
    assert_eq!(quiet.config["spin_us"], 0);
}

#[test]
fn wait_for_file_starts_once_the_file_exists() {
    let dir = std::env::temp_dir().join(format!("greenlet-wait-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let go = dir.join("go");
    let mut w = Proc::spawn(
        Command::new(workload_bin())
            .args(["--threads=1", "--wait-for-file"])
            .arg(&go)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    assert!(
        w.wait_for(Duration::from_millis(300)).is_none(),
        "it ran without the file"
    );
    std::fs::write(&go, b"").unwrap();
    let status = w.wait("the workload", TIMEOUT);
    assert!(status.success(), "{}", w.stderr_text());
    check_consistent(&Report::parse(&w.stdout_text()));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn help_documents_the_options_the_protocol_and_the_report() {
    let out = Command::new(workload_bin()).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "--threads",
        "--greenlets",
        "--switches",
        "--throws",
        "--kills",
        "--iterations",
        "--seed",
        "--duration",
        "--forever",
        "--pace",
        "--spin-us",
        "--wait",
        "--wait-for-tracer",
        "--wait-for-file",
        "--linger",
        "--then-exec-sleep",
        "--no-trace",
        "workload: ready pid=PID",
        "SIGUSR1",
        "totals",
        "deaths",
        "edges",
        "per_thread",
        "greenlets [{id, name, parent",
        "spun [{id, slices, ns}]",
        "thread_exit",
    ] {
        assert!(help.contains(word), "--help does not mention {word:?}");
    }
}
