//! Issue 12: the sampled mode (`--sample`) and the kernel-side blocking detector of both
//! modes, against the `blocker` scenarios (`workloads/src/blocking.rs`), whose JSON report
//! says what each greenlet did, measured from inside.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::*;

/// One run of `blocker --scenario NAME ARGS` under `gltop --json -d 0.25 GLTOP_ARGS`:
/// blocker waits for a file that the test creates once gltop says it is attached. Returns the
/// scenario's report (its one JSON line) and gltop's lines.
fn run(scenario: &[&str], gltop_args: &[&str]) -> (Value, Vec<Value>) {
    run_bin(example("blocker"), scenario, gltop_args)
}

/// [`run`] with this `blocker` binary.
fn run_bin(bin: PathBuf, scenario: &[&str], gltop_args: &[&str]) -> (Value, Vec<Value>) {
    let go: PathBuf = std::env::temp_dir().join(format!(
        "gltop-sample-{}-{}",
        std::process::id(),
        scenario.join("-")
    ));
    let _ = std::fs::remove_file(&go);
    let mut blocker = Proc::spawn(
        Command::new(bin)
            .args(["--scenario"])
            .args(scenario)
            .arg("--wait-for-file")
            .arg(&go)
            .args(["--linger-ms", "1500"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    assert!(
        blocker.wait_stderr("waiting for", Duration::from_secs(60)),
        "blocker: {}",
        blocker.stderr_so_far()
    );
    let mut args = vec!["-d", "0.25"];
    args.extend_from_slice(gltop_args);
    let mut g = gltop_json(blocker.pid(), &args);
    assert!(
        g.wait_stderr("attached to process", Duration::from_secs(60)),
        "gltop: {}",
        g.stderr_so_far()
    );
    std::fs::write(&go, b"").expect("create the go file");
    let st = blocker.wait("blocker", TIMEOUT);
    let _ = std::fs::remove_file(&go);
    assert!(st.success(), "blocker: {}", blocker.stderr_text());
    let gst = g.wait("gltop", Duration::from_secs(60));
    let err = g.stderr_text();
    assert!(gst.success() && err.contains("exited"), "gltop: {err}");
    // Shown with a failing test's output: what gltop said (attach, detector, exit).
    eprintln!("gltop {}: {err}", gltop_args.join(" "));
    let report: Value =
        serde_json::from_str(blocker.stdout_text().trim()).expect("blocker's JSON report");
    (report, json_lines(&g.stdout_text()))
}

/// Every episode that ended, over all lines (an ongoing one repeats until it ends).
fn ended_episodes(lines: &[Value]) -> Vec<Value> {
    let mut seen: BTreeMap<(u64, u64), Value> = BTreeMap::new();
    for l in lines {
        for b in l["blocking"].as_array().expect("a blocking list") {
            if b["ongoing"] == false {
                let key = (
                    b["thread"].as_u64().unwrap(),
                    b["start_ns"].as_u64().unwrap(),
                );
                seen.insert(key, b.clone());
            }
        }
    }
    seen.into_values().collect()
}

fn stack_has(episode: &Value, function: &str) -> bool {
    episode["stack"]
        .as_array()
        .expect("a stack")
        .iter()
        .any(|f| f.as_str().unwrap_or("").contains(function))
}

/// The modes a blocking case runs in: exact (probes, with the sampler beside them) and sampled.
const MODES: [(&str, &[&str]); 2] = [("exact", &[]), ("sample", &["--sample"])];

/// The scenario's one episode as the report tells it: (greenlet id, the call's wall time
/// measured inside, main's wall time around the greenlet's turn), ns.
fn reported(report: &Value) -> (u64, u64, u64) {
    let e = &report["episodes"][0];
    (
        e["greenlet"].as_u64().unwrap(),
        e["measured_ns"].as_u64().unwrap(),
        e["turn_ns"].as_u64().unwrap(),
    )
}

/// An episode's duration against the run's own measurements, not the nominal 300 ms (a
/// loaded machine stretches the call and preempts around it): at least the call measured
/// inside less `short_ms` (a sampled on-CPU episode starts and ends at samples), and at most
/// the greenlet's turn, which holds the call.
fn assert_within(mode: &str, e: &Value, measured: u64, turn: u64, short_ms: u64) {
    let d = e["duration_ns"].as_u64().unwrap();
    assert!(
        d + short_ms * 1_000_000 >= measured && d <= turn,
        "{mode}: episode of {d} ns, call measured {measured} ns, turn {turn} ns"
    );
}

#[test]
fn a_300_ms_spin_is_one_on_cpu_episode_with_its_stack_in_both_modes() {
    if !bpf_or_skip("a_300_ms_spin_is_one_on_cpu_episode_with_its_stack_in_both_modes") {
        return;
    }
    let _serial = serial();
    for (mode, args) in MODES {
        let (report, lines) = run(&["spin", "--ms", "300"], args);
        assert_eq!(lines[0]["mode"], mode);
        let (id, measured, turn) = reported(&report);
        let eps = ended_episodes(&lines);
        assert_eq!(eps.len(), 1, "{mode}: one episode: {eps:#?}");
        let e = &eps[0];
        eprintln!(
            "{mode}: spin episode of {} ms (measured inside: {} ms, turn {} ms)",
            e["duration_ns"].as_f64().unwrap() / 1e6,
            measured as f64 / 1e6,
            turn as f64 / 1e6
        );
        assert_eq!(e["greenlet_id"], id, "{mode}");
        assert_eq!(e["greenlet_name"], "spinner", "{mode}");
        assert_eq!(e["thread"], report["tid"], "{mode}");
        assert_eq!(e["cpu"], "on-cpu", "{mode}: {e}");
        assert_eq!(e["lint"], "blocking", "{mode}");
        assert_eq!(e["syscall"], Value::Null, "{mode}");
        // The spin is timed by samples at 99 Hz: up to two periods (20 ms) short.
        assert!(measured >= 300_000_000, "the spin spun: {report}");
        assert_within(mode, e, measured, turn, 30);
        assert!(stack_has(e, "spin_without_switching"), "{mode}: {e}");
        if mode == "exact" {
            // The cost names the detector's samples (its cost is not measured when the
            // per-hit cost is given) and counts only what is measured.
            let cost = &lines[1]["cost"];
            let samples = cost["detector_samples_per_s"].as_f64().unwrap();
            assert!(samples > 0.0, "{cost}");
            assert_eq!(cost["per_sample_ns"], Value::Null, "{cost}");
            let hits = lines[1]["rates"]["probe_hits_per_s"].as_f64().unwrap();
            let share = cost["cpu_share"].as_f64().unwrap();
            assert!((share - hits * 500e-9).abs() < 1e-9, "{cost}");
        }
    }
}

#[test]
fn a_300_ms_pipe_read_is_one_off_cpu_episode_naming_read_in_both_modes() {
    if !bpf_or_skip("a_300_ms_pipe_read_is_one_off_cpu_episode_naming_read_in_both_modes") {
        return;
    }
    let _serial = serial();
    for (mode, args) in MODES {
        let (report, lines) = run(&["read", "--ms", "300"], args);
        let (id, measured, turn) = reported(&report);
        let eps = ended_episodes(&lines);
        assert_eq!(eps.len(), 1, "{mode}: one episode: {eps:#?}");
        let e = &eps[0];
        eprintln!(
            "{mode}: read episode of {} ms (measured inside: {} ms)",
            e["duration_ns"].as_f64().unwrap() / 1e6,
            measured as f64 / 1e6
        );
        assert_eq!(e["greenlet_id"], id, "{mode}");
        assert_eq!(e["greenlet_name"], "reader", "{mode}");
        assert_eq!(e["cpu"], "off-cpu", "{mode}: {e}");
        assert_eq!(e["syscall"], "read", "{mode}");
        // Off the CPU, timed by sched_switch from inside the call: close to it.
        assert!(measured >= 270_000_000, "the read waited: {report}");
        assert_within(mode, e, measured, turn, 10);
        assert!(stack_has(e, "read_blocking"), "{mode}: {e}");
    }
}

#[test]
fn an_idle_hub_and_an_80_ms_spin_are_not_blocking_in_both_modes() {
    if !bpf_or_skip("an_idle_hub_and_an_80_ms_spin_are_not_blocking_in_both_modes") {
        return;
    }
    let _serial = serial();
    for (mode, args) in MODES {
        let (report, lines) = run(&["idle-hub", "--ms", "1000"], args);
        assert_eq!(report["greenlets"][0]["idle"], true);
        let eps = ended_episodes(&lines);
        assert!(eps.is_empty(), "{mode}: the idle hub: {eps:#?}");
        // An 80 ms spin stays under the 100 ms threshold, unless this shared machine
        // stretched it past it (the report measures it): then the run says nothing, and
        // another is made.
        let mut tried = 0;
        loop {
            tried += 1;
            let (report, lines) = run(&["spin", "--ms", "80"], args);
            let (_, measured, _) = reported(&report);
            if measured > 95_000_000 && tried < 3 {
                eprintln!("{mode}: the 80 ms spin took {measured} ns here; again");
                continue;
            }
            let eps = ended_episodes(&lines);
            assert!(eps.is_empty(), "{mode}: an 80 ms spin: {eps:#?}");
            break;
        }
    }
}

#[test]
fn sampled_mode_splits_70_30_and_nulls_what_it_cannot_count() {
    if !bpf_or_skip("sampled_mode_splits_70_30_and_nulls_what_it_cannot_count") {
        return;
    }
    let _serial = serial();
    // A release build: a debug build's switch (about a microsecond) is charged to the greenlets
    // it runs between, which blurs a split made of 3.5 and 1.5 µs slices.
    let (report, lines) = run_bin(
        release_workload("blocker"),
        &["split", "--seconds", "5"],
        &["--sample", "--hz", "999"],
    );
    let last = lines.last().unwrap();
    assert_eq!(last["mode"], "sample");
    assert_eq!(last["attach"]["hz"], 999);
    assert_eq!(last["edges"], Value::Null);
    assert_eq!(last["totals"]["throws"], Value::Null);
    assert_eq!(
        last["runtime"], "rust-greenlet",
        "the same name as in exact mode"
    );
    let tid = report["tid"].as_u64().unwrap();
    let ids: BTreeMap<String, u64> = report["greenlets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["name"].as_str().unwrap().to_string(),
                g["id"].as_u64().unwrap(),
            )
        })
        .collect();
    // Cumulative samples of the thread's greenlets in the last line.
    let on_thread: Vec<&Value> = last["greenlets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["tid"] == tid)
        .collect();
    let total: u64 = on_thread
        .iter()
        .map(|g| g["samples"].as_u64().unwrap())
        .sum();
    let samples_of = |name: &str| {
        on_thread
            .iter()
            .find(|g| g["id"] == ids[name])
            .unwrap_or_else(|| panic!("{name} sampled: {on_thread:#?}"))["samples"]
            .as_u64()
            .unwrap()
    };
    let share = |name: &str| samples_of(name) as f64 * 100.0 / total as f64;
    let (seventy, thirty) = (share("seventy"), share("thirty"));
    eprintln!("split: seventy {seventy:.1}%, thirty {thirty:.1}% of {total} samples");
    // Enough samples for the ±3-point band to mean something (two standard deviations of a
    // 70% share are under 3 points from 1,000 samples on). Fewer than 5 × 999: the thread
    // is sampled only while it runs, and a loaded machine runs it less.
    assert!(total > 1000, "{total} samples in 5 s at 999 Hz");
    assert!((67.0..=73.0).contains(&seventy), "seventy {seventy:.1}%");
    assert!((27.0..=33.0).contains(&thirty), "thirty {thirty:.1}%");
    for g in &on_thread {
        for field in [
            "switches_in",
            "on_cpu_ns",
            "max_slice_ns",
            "state",
            "outcome",
        ] {
            assert_eq!(g[field], Value::Null, "{field} of {g}");
        }
        assert!(g["cpu_pct"].is_number(), "{g}");
    }
    let seventy_line = on_thread
        .iter()
        .find(|g| g["id"] == ids["seventy"])
        .unwrap();
    assert_eq!(seventy_line["name"], "seventy");
    // The thread switches > 100,000 times a second: its counter says so.
    let th = last["per_thread"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tid"] == tid)
        .expect("the thread");
    let switches = th["switches"].as_u64().unwrap();
    let reported = report["switches"].as_u64().unwrap();
    assert!(
        switches >= reported && switches <= reported + 10,
        "{switches} counted, {reported} reported"
    );
    // cpu_pct over a busy interval: the thread's greenlets fill about one CPU.
    let busy = &lines[lines.len() / 2];
    let pct: f64 = busy["greenlets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["tid"] == tid)
        .map(|g| g["cpu_pct"].as_f64().unwrap())
        .sum();
    assert!((20.0..=110.0).contains(&pct), "{pct}% of a CPU: {busy}");
}

#[test]
fn a_sleeping_greenlets_off_cpu_time_is_its_sleep() {
    if !bpf_or_skip("a_sleeping_greenlets_off_cpu_time_is_its_sleep") {
        return;
    }
    let _serial = serial();
    let (report, lines) = run(&["sleep", "--ms", "1000"], &["--sample"]);
    let (id, measured, _) = reported(&report);
    let g = lines.last().unwrap()["greenlets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == id)
        .cloned()
        .expect("the sleeper");
    let sleeping = g["offcpu_sleeping_ns"].as_u64().unwrap();
    let err = (sleeping as f64 - measured as f64).abs() / measured as f64;
    eprintln!("sleeper: {sleeping} ns off the CPU asleep, {measured} ns measured inside");
    assert!(err < 0.05, "{sleeping} vs {measured}");
    assert_eq!(
        g["offcpu_ns"].as_u64().unwrap(),
        sleeping + g["offcpu_preempted_ns"].as_u64().unwrap()
    );
    let eps = ended_episodes(&lines);
    assert_eq!(eps.len(), 1, "{eps:#?}");
    assert_eq!(eps[0]["syscall"], "nanosleep");
    assert!(stack_has(&eps[0], "sleep_blocking"), "{}", eps[0]);
}

#[test]
fn a_killed_sampling_gltop_leaves_nothing_in_the_kernel() {
    use nix::sys::signal::Signal;
    use support::kernel::gltop_objects;
    if !bpf_or_skip("a_killed_sampling_gltop_leaves_nothing_in_the_kernel") {
        return;
    }
    let _serial = serial();
    let go = std::env::temp_dir().join(format!("gltop-sample-kill-{}", std::process::id()));
    let _ = std::fs::remove_file(&go);
    let mut blocker = Proc::spawn(
        Command::new(example("blocker"))
            .args(["--scenario", "sleep", "--ms", "100", "--linger-ms", "30000"])
            .arg("--wait-for-file")
            .arg(&go)
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    assert!(blocker.wait_stderr("waiting for", Duration::from_secs(60)));
    let pid = blocker.pid();
    assert_eq!(gltop_objects(pid), Default::default());
    let mut g = gltop_json(pid, &["-d", "0.3", "--sample"]);
    assert!(
        g.wait_stderr("attached to process", Duration::from_secs(60)),
        "{}",
        g.stderr_so_far()
    );
    let attached = gltop_objects(pid);
    // The `new` probe's links (one per site), its program, the sample and sched_switch
    // programs (which share its maps), and the maps.
    assert!(!attached.links.is_empty(), "{attached:?}");
    assert!(attached.programs.len() >= 3, "{attached:?}");
    assert!(attached.maps.len() >= 4, "{attached:?}");
    g.signal(Signal::SIGKILL);
    g.wait_for(Duration::from_secs(30)).expect("gltop died");
    let left = attached.wait_gone(Duration::from_secs(10));
    assert!(left.is_empty(), "outlived gltop: {left:?}");
    assert_eq!(gltop_objects(pid), Default::default());
    blocker.kill();
}

/// More (thread, greenlet) pairs than `--max-greenlets`: the kernel's LRU maps evict, and the
/// evicted records are counted in `dropped`, not lost in silence; with room for them, the
/// same process shows nothing dropped.
#[test]
fn records_a_full_map_evicted_are_counted_as_dropped() {
    if !bpf_or_skip("records_a_full_map_evicted_are_counted_as_dropped") {
        return;
    }
    let _serial = serial();
    // The demo creates a few hundred named greenlets a second (connections) on two threads.
    let mut demo = Proc::spawn(
        Command::new(example("demo"))
            .args(["--threads", "2", "--seconds", "30"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let runs: Vec<(&str, Proc)> = [("small", "32"), ("default", "16384")]
        .into_iter()
        .map(|(tag, cap)| {
            let args = [
                "--sample",
                "--max-greenlets",
                cap,
                "-d",
                "1",
                "--iterations",
                "4",
            ];
            (tag, gltop_json(demo.pid(), &args))
        })
        .collect();
    let mut last = BTreeMap::new();
    for (tag, mut g) in runs {
        let st = g.wait("gltop", Duration::from_secs(120));
        assert!(st.success(), "{tag}: {}", g.stderr_text());
        let lines = json_lines(&g.stdout_text());
        assert_eq!(lines.len(), 4, "{tag}: four lines");
        last.insert(tag, lines[3].clone());
    }
    demo.kill();
    let created = last["default"]["totals"]["greenlets_created"]
        .as_u64()
        .unwrap();
    assert!(created > 100, "the demo created {created} greenlets");
    assert_eq!(
        last["default"]["totals"]["dropped"], 0,
        "{}",
        last["default"]
    );
    let small = &last["small"];
    let dropped = small["totals"]["dropped"].as_u64().unwrap();
    assert!(dropped > 0, "a 32-entry map evicted nothing: {small}");
    // What is shown stays within the maps' bounds: counts and names, 32 each.
    let shown = small["greenlets"].as_array().unwrap().len();
    assert!(shown <= 64, "{shown} greenlets shown from 32-entry maps");
}
