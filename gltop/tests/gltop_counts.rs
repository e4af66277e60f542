//! Kernel-side counts equal what `settrace` saw, exactly: totals, per-edge and per-greenlet
//! counts from `gltop --json`, against the settrace report of the oracle `workload`
//! (`workloads/src/bin/workload.rs`); and the JSON lines are cumulative with consistent rates.

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::workload::Workload;
use support::*;

/// Runs the oracle `workload` with `args` under `gltop --json` with `gltop_args`: the
/// workload waits on stdin until gltop says it is attached. Returns (the workload's report,
/// gltop's lines `merged`: the last one with every greenlet and edge of all of them).
fn traced_workload(args: &[&str], gltop_args: &[&str]) -> (Report, Value) {
    let w = Workload::start(args);
    let mut g = gltop_json(w.pid as i32, gltop_args);
    assert!(
        g.wait_stderr("attached to process", Duration::from_secs(60)),
        "{}",
        g.stderr_so_far()
    );
    let report = w.finish_within(Duration::from_secs(300));
    let g_st = g
        .wait_for(Duration::from_secs(30))
        .expect("gltop exits after the workload");
    let err = g.stderr_text();
    assert!(g_st.success() && err.contains("exited"), "gltop: {err}");
    (report, merged(&json_lines(&g.stdout_text())))
}

/// At least `at_least` switches on four threads (8 workers each, a throw per ten switch
/// steps, 2 kills per iteration), counted exactly; gltop refreshes every `delay` seconds.
fn four_threads_exact(switches: u64, iterations: u64, delay: &str, at_least: u64) {
    let started = std::time::Instant::now();
    let (switches, throws, iterations) = (
        switches.to_string(),
        (switches / 10).to_string(),
        iterations.to_string(),
    );
    let (report, last) = traced_workload(
        &[
            "--threads",
            "4",
            "--greenlets",
            "8",
            "--switches",
            &switches,
            "--throws",
            &throws,
            "--kills",
            "2",
            "--iterations",
            &iterations,
        ],
        &["-d", delay],
    );
    let switches = report.totals.switch;
    assert!(switches >= at_least, "{switches} switches");
    assert_eq!(report.threads, 4);
    assert_eq!(last["attach"]["mode"], "uprobe");
    assert_exact("gltop", &report, &last);
    eprintln!(
        "{switches} switches on 4 threads counted exactly in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_million_switches_on_four_threads_match_the_workload_exactly() {
    if !bpf_or_skip("a_million_switches_on_four_threads_match_the_workload_exactly") {
        return;
    }
    four_threads_exact(60_000, 2, "0.5", 1_000_000);
}

/// Issue 6: ten million switches on four threads, counted exactly. About 10.8 million probe
/// hits at 0.6-0.8 µs each on top of the debug-built workload's own ~25 s of CPU: 26 to 54 s
/// on the project's shared 2-core VM, depending on the other load (the test prints it).
#[test]
fn ten_million_switches_on_four_threads_match_the_workload_exactly() {
    if !bpf_or_skip("ten_million_switches_on_four_threads_match_the_workload_exactly") {
        return;
    }
    four_threads_exact(100_000, 11, "1", 10_000_000);
}

#[test]
fn the_workload_counts_the_same_with_libbpf_usdt_and_a_random_topology() {
    if !bpf_or_skip("the_workload_counts_the_same_with_libbpf_usdt_and_a_random_topology") {
        return;
    }
    let (report, last) = traced_workload(
        &[
            "--threads",
            "2",
            "--greenlets",
            "5",
            "--switches",
            "3000",
            "--throws",
            "500",
            "--seed",
            "7",
            "--iterations",
            "3",
        ],
        &["-d", "0.5", "--attach", "usdt"],
    );
    assert_eq!(last["attach"]["mode"], "usdt");
    assert_eq!(last["runtime"], "rust-greenlet");
    assert_eq!(last["runtime_version"], Value::Null);
    assert_exact("gltop", &report, &last);
}

#[test]
fn totals_are_cumulative_and_rates_follow_the_interval() {
    if !bpf_or_skip("totals_are_cumulative_and_rates_follow_the_interval") {
        return;
    }
    // The first worker spins 20 µs in each of its 60,000 slices: more than a second.
    let mut t = target(&[
        "--threads",
        "1",
        "--greenlets",
        "2",
        "--switches",
        "80000",
        "--throws",
        "0",
        "--spin-us",
        "20",
    ]);
    let mut g = gltop_json(t.pid(), &["-d", "0.3"]);
    assert!(t.wait_for(Duration::from_secs(120)).is_some());
    assert!(g.wait_for(Duration::from_secs(30)).is_some());
    let lines = json_lines(&g.stdout_text());
    assert!(lines.len() >= 3, "several intervals: {}", lines.len());
    let switches: Vec<u64> = lines
        .iter()
        .map(|l| l["totals"]["switches"].as_u64().unwrap())
        .collect();
    assert!(
        switches.windows(2).all(|w| w[0] <= w[1]),
        "cumulative: {switches:?}"
    );
    for w in lines.windows(2) {
        let dt = w[1]["interval_s"].as_f64().unwrap();
        let d = w[1]["totals"]["switches"].as_u64().unwrap()
            - w[0]["totals"]["switches"].as_u64().unwrap();
        let rate = w[1]["rates"]["switches_per_s"].as_f64().unwrap();
        assert!(
            (rate * dt - d as f64).abs() <= 1.0 + 1e-6 * d as f64,
            "{rate} * {dt} vs {d}"
        );
    }
    let cost = &lines[1]["cost"];
    assert_eq!(cost["per_hit_ns"], 500.0);
    let hits = lines[1]["rates"]["probe_hits_per_s"].as_f64().unwrap();
    let share = cost["cpu_share"].as_f64().unwrap();
    assert!(
        (share - hits * 500e-9).abs() < 1e-9,
        "{share} vs {hits} hits/s"
    );
}

/// While the target keeps creating greenlets, every snapshot holds every greenlet the maps
/// hold, none is cut short, and each greenlet that ends is reported once, in the line after it
/// ended, and never again. (Reading the maps in batches smaller than the map once lost
/// everything after the first short batch: snapshots of 1023, 2047, ... greenlets, the hubs
/// missing, and their whole counts shown as one interval's rate when they came back.)
#[test]
fn every_snapshot_of_a_busy_process_holds_every_greenlet() {
    if !bpf_or_skip("every_snapshot_of_a_busy_process_holds_every_greenlet") {
        return;
    }
    let _serial = serial();
    let mut demo = Proc::spawn(
        Command::new(example("demo"))
            .args([
                "--conns-per-sec",
                "1500",
                "--seconds",
                "16",
                "--wait-for-tracer",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    // Long intervals: a line holds what a few seconds create, even when the demo (a debug
    // build, sharing the machine with the other tests) falls well short of its rate.
    let mut g = gltop_json(demo.pid(), &["-d", "4"]);
    let st = g
        .wait_for(Duration::from_secs(120))
        .expect("gltop exits after the demo");
    assert!(st.success(), "gltop: {}", g.stderr_text());
    demo.wait_for(Duration::from_secs(30));
    let lines = json_lines(&g.stdout_text());
    assert!(lines.len() >= 4, "{} lines", lines.len());
    let mut seen: BTreeMap<u64, bool> = BTreeMap::new(); // id -> ended
    for (i, line) in lines.iter().enumerate() {
        let totals = &line["totals"];
        assert_eq!(totals["dropped"], 0, "line {i}: the maps are large enough");
        for g in line["greenlets"].as_array().unwrap() {
            let id = g["id"].as_u64().unwrap();
            let ended = g["ended"].as_bool().unwrap();
            assert_ne!(
                seen.get(&id),
                Some(&true),
                "line {i}: {id} again after it ended"
            );
            assert!(!ended || g["state"] == "dead", "line {i}: {g}");
            seen.insert(id, ended);
        }
        // Totals are read first: every greenlet they count was in this line or an earlier one.
        let created = totals["greenlets_created"].as_u64().unwrap();
        assert!(
            seen.len() as u64 >= created,
            "line {i}: {} greenlets seen for {created} created",
            seen.len()
        );
        let hubs = line["greenlets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["name"] == "hub" && g["state"] != "dead")
            .count();
        // The last lines may come after the demo's threads ended.
        assert!(
            hubs == 2 || i + 2 >= lines.len(),
            "line {i}: both hubs (one per thread) are there, alive"
        );
        assert_eq!(
            totals["ended"]["greenlets"].as_u64().unwrap(),
            seen.values().filter(|&&e| e).count() as u64,
            "line {i}: every greenlet that left the kernel was in a line"
        );
    }
    let last = &lines.last().unwrap()["totals"];
    // A batch cut short would show as greenlets missing from every line (below); it needs
    // more records than the kernel's first batch holds (1023).
    let most = lines
        .iter()
        .map(|l| l["greenlets"].as_array().unwrap().len())
        .max()
        .unwrap();
    assert!(
        most > 1023,
        "at most {most} greenlets in a line: not a busy map"
    );
    assert_eq!(
        seen.len() as u64,
        last["greenlets_created"].as_u64().unwrap()
    );
    assert!(
        seen.values().all(|&e| e),
        "every greenlet ended with the demo"
    );
}

/// Issue 10, item 5: a snapshot says where every greenlet is at one instant. On two threads
/// that each ping-pong between two greenlets as fast as they can (a hub and its one worker,
/// while the thread's main greenlet waits for the hub), every JSON line has, per
/// thread with greenlets, exactly one running greenlet, the one `per_thread` names current;
/// and `alive` is the number of live greenlets listed, thread by thread too.
#[test]
fn every_snapshot_has_one_running_greenlet_per_thread_and_alive_counts_the_live_records() {
    if !bpf_or_skip(
        "every_snapshot_has_one_running_greenlet_per_thread_and_alive_counts_the_live_records",
    ) {
        return;
    }
    let _serial = serial();
    let t = target(&[
        "--threads",
        "2",
        "--greenlets",
        "1",
        "--switches",
        "1000000000",
        "--throws",
        "0",
    ]);
    let mut g = gltop_json(t.pid(), &["-d", "0.1", "-n", "30"]);
    let st = g
        .wait_for(Duration::from_secs(120))
        .expect("gltop stops after 30 lines");
    assert!(st.success(), "gltop: {}", g.stderr_text());
    let lines = json_lines(&g.stdout_text());
    assert_eq!(lines.len(), 30);
    // Which greenlets were seen running, per thread: both of each pair, over the lines.
    let mut ran: BTreeMap<u64, std::collections::BTreeSet<u64>> = BTreeMap::new();
    let mut transfers: BTreeMap<u64, u64> = BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        let greenlets = line["greenlets"].as_array().unwrap();
        let threads = line["per_thread"].as_array().unwrap();
        assert_eq!(threads.len(), 2, "line {i}: two threads with greenlets");
        let live: Vec<&Value> = greenlets.iter().filter(|g| g["state"] != "dead").collect();
        assert_eq!(
            live.len(),
            6,
            "line {i}: a main, a hub and a worker per thread"
        );
        assert_eq!(
            line["totals"]["alive"].as_u64().unwrap(),
            live.len() as u64,
            "line {i}: alive counts the live records"
        );
        for th in threads {
            let tid = th["tid"].as_u64().unwrap();
            let running: Vec<u64> = greenlets
                .iter()
                .filter(|g| g["tid"] == tid && g["state"] == "running")
                .map(|g| g["id"].as_u64().unwrap())
                .collect();
            assert_eq!(running.len(), 1, "line {i}: thread {tid} runs {running:?}");
            assert_eq!(th["current"], running[0], "line {i}: thread {tid}");
            let mine = live.iter().filter(|g| g["tid"] == tid).count() as u64;
            assert_eq!(
                th["alive"], mine,
                "line {i}: live greenlets of thread {tid}"
            );
            ran.entry(tid).or_default().insert(running[0]);
            let n = th["transfers"].as_u64().unwrap();
            let before = transfers.insert(tid, n).unwrap_or(0);
            assert!(n >= before, "line {i}: transfers are cumulative");
        }
    }
    for (tid, n) in &transfers {
        assert!(*n > 1000, "thread {tid} was busy: {n} transfers");
    }
    for (tid, ids) in &ran {
        assert_eq!(
            ids.len(),
            2,
            "thread {tid}: both greenlets seen running: {ids:?}"
        );
    }
}
