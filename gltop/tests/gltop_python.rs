//! gltop on unmodified Python greenlet processes (issue 13): counts exactly equal to what
//! `greenlet.settrace` saw in the same run (`tests/python/workload.py`), under the machine's
//! greenlet and under another version, in --json and in the exporter (`--listen`); and the
//! one-line refusals (exit 2) for a Python process without greenlet, greenlet 1.x, and a
//! `_greenlet*.so` without DWARF. In the TUI, a Python greenlet's id shows in full.
//!
//! Python greenlet comes from `.ci/deps.sh` (`make deps`): the system's, and other versions
//! under `/opt/greenlet-versions/VERSION` (or `$GREENLET_VERSIONS_DIR`).

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::tmux::{bpf_and_tmux_or_skip, Tmux};
use support::*;

/// The workload shipped with the tests.
fn workload_py() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/workload.py")
}

/// Whether `python3` imports greenlet `version` (any, if None) with `pythonpath`.
fn python_greenlet(pythonpath: Option<&Path>, version: Option<&str>) -> Result<(), String> {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", "import greenlet; print(greenlet.__version__)"]);
    if let Some(p) = pythonpath {
        cmd.env("PYTHONPATH", p);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run python3: {e} (make deps installs it)"))?;
    let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match version {
        _ if !out.status.success() => Err(format!(
            "python3 cannot import greenlet{}: make deps installs it",
            pythonpath.map_or(String::new(), |p| format!(" from {}", p.display()))
        )),
        Some(v) if got != v => Err(format!("greenlet {got} found, {v} wanted: make deps")),
        _ => Ok(()),
    }
}

/// Starts `script` (with `pythonpath`, if given) and waits until greenlet is loaded.
fn start_script(script: &Path, pythonpath: Option<&Path>, args: &[&str]) -> Proc {
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(p) = pythonpath {
        cmd.env("PYTHONPATH", p);
    }
    let w = Proc::spawn(&mut cmd);
    assert!(
        w.wait_stdout_line(TIMEOUT, |l| l == "ready").is_some(),
        "{} did not start: {}",
        script.display(),
        w.stderr_so_far()
    );
    w
}

/// Starts the workload (with `pythonpath`, if given) and waits until greenlet is loaded.
fn start_workload(pythonpath: Option<&Path>, args: &[&str]) -> Proc {
    start_script(&workload_py(), pythonpath, args)
}

/// Runs `script` under `gltop --json`: (the script's report, gltop's lines merged).
fn traced(script: &Path, pythonpath: Option<&Path>, args: &[&str]) -> (Value, Value) {
    let mut w = start_script(script, pythonpath, args);
    // Capacities for the churn of a whole interval: about 30,000 greenlets end per second.
    let mut g = gltop_json(
        w.pid(),
        &[
            "-d",
            "0.5",
            "--max-greenlets",
            "131072",
            "--max-edges",
            "262144",
        ],
    );
    assert!(
        g.wait_stderr("attached to process", TIMEOUT),
        "gltop: {}",
        g.stderr_so_far()
    );
    let mut stdin = w.child.stdin.take().expect("the script's stdin");
    stdin.write_all(b"go\n").expect("release the script");
    drop(stdin);
    let st = w.wait("the script", TIMEOUT);
    assert!(st.success(), "{}: {}", script.display(), w.stderr_text());
    let out = w.stdout_text();
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("ready"));
    let report: Value = serde_json::from_str(lines.next().expect("the report line"))
        .unwrap_or_else(|e| panic!("bad report {out:?}: {e}"));
    assert_eq!(lines.next(), None, "nothing after the report: {out:?}");
    let gst = g.wait("gltop", Duration::from_secs(60));
    let err = g.stderr_text();
    assert!(gst.success() && err.contains("exited"), "gltop: {err}");
    (report, merged(&json_lines(&g.stdout_text())))
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("a count: {v}"))
}

/// gltop's counts equal the report's: totals, each edge, and each greenlet's switches and
/// throws in and out (and its name, where the report names it). Returns the number of
/// events.
fn assert_counts_equal(report: &Value, last: &Value) -> u64 {
    assert_eq!(last["runtime"], "python-greenlet");
    assert_eq!(last["runtime_version"], report["greenlet_version"]);
    assert_eq!(last["attach"]["mode"], "uprobe");
    let totals = &last["totals"];
    assert_eq!(totals["dropped"], 0, "{totals}");
    assert_eq!(totals["switches"], report["switches"], "switches");
    assert_eq!(totals["throws"], report["throws"], "throws");

    // Edges, then each greenlet's counts as the edges sum up.
    let mut want: BTreeMap<(u64, u64), (u64, u64)> = BTreeMap::new();
    let mut sums: BTreeMap<u64, [u64; 4]> = BTreeMap::new();
    for e in report["edges"].as_array().expect("edges") {
        let (o, t, sw, th) = (n(&e[0]), n(&e[1]), n(&e[2]), n(&e[3]));
        assert!(want.insert((o, t), (sw, th)).is_none(), "edge twice: {e}");
        let s = sums.entry(t).or_default();
        s[0] += sw;
        s[2] += th;
        let s = sums.entry(o).or_default();
        s[1] += sw;
        s[3] += th;
    }
    assert_eq!(edge_counts(last), want, "per-edge counts");
    let names = report["names"].as_object().expect("names");
    // By id (a linear search per greenlet takes minutes in a debug build: 24,000 of them).
    let mut by_id: BTreeMap<u64, &Value> = BTreeMap::new();
    for g in last["greenlets"].as_array().expect("greenlets") {
        assert!(
            by_id.insert(n(&g["id"]), g).is_none(),
            "greenlet twice: {g}"
        );
    }
    for (&id, &[sw_in, sw_out, th_in, th_out]) in &sums {
        let g = by_id
            .get(&id)
            .unwrap_or_else(|| panic!("greenlet {id:#x} recorded"));
        assert_eq!(g["switches_in"], sw_in, "switches in of {id:#x}");
        assert_eq!(g["switches_out"], sw_out, "switches out of {id:#x}");
        assert_eq!(g["throws_in"], th_in, "throws in of {id:#x}");
        assert_eq!(g["throws_out"], th_out, "throws out of {id:#x}");
        if let Some(name) = names.get(&id.to_string()) {
            assert_eq!(&g["name"], name, "name of {id:#x}");
        }
    }
    // Every greenlet gltop saw transfer is one the script saw transfer.
    for g in by_id.values() {
        let moved = ["switches_in", "switches_out", "throws_in", "throws_out"]
            .iter()
            .any(|k| n(&g[*k]) != 0);
        assert!(
            !moved || sums.contains_key(&n(&g["id"])),
            "a greenlet the script did not see: {g}"
        );
    }
    n(&report["switches"]) + n(&report["throws"])
}

/// The workload under gltop: every count exactly, creations, deaths by outcome and names.
/// Returns the number of events.
fn exact_run(pythonpath: Option<&Path>, version: &str) -> u64 {
    let (report, last) = traced(
        &workload_py(),
        pythonpath,
        &["--threads", "4", "--rounds", "600"],
    );
    assert_eq!(report["greenlet_version"], version);
    let events = assert_counts_equal(&report, &last);
    assert!(events >= 400_000, "{events} events");
    assert!(n(&report["throws"]) > 0);
    let totals = &last["totals"];
    assert_eq!(totals["greenlets_created"], report["created"], "created");
    assert_eq!(totals["greenlets_dead"], report["dead"], "dead");
    for (outcome, want) in report["dead_by_outcome"].as_object().expect("outcomes") {
        assert_eq!(
            totals["dead_by_outcome"][outcome], *want,
            "deaths by {outcome}"
        );
    }
    let worker = last["greenlets"]
        .as_array()
        .expect("greenlets")
        .iter()
        .filter(|g| g["name"] == "Worker")
        .count();
    assert!(worker >= 4 * 600, "{worker} greenlets named Worker");
    events
}

/// Greenlets created and freed one after another, their addresses reused and their records
/// gone from the kernel before they are freed: each is created once and dies once, by the
/// right outcome, and the transfer totals still equal settrace's.
#[test]
fn freed_greenlets_die_once_and_reused_addresses_are_new_greenlets() {
    let what = "freed_greenlets_die_once_and_reused_addresses_are_new_greenlets";
    if !bpf_or_skip(what) || !require(what, python_greenlet(None, None)) {
        return;
    }
    let _serial = serial();
    let mut w = start_workload(None, &["--churn", "20000"]);
    let mut g = gltop_json(w.pid(), &["-d", "0.1"]);
    assert!(
        g.wait_stderr("attached to process", TIMEOUT),
        "gltop: {}",
        g.stderr_so_far()
    );
    let mut stdin = w.child.stdin.take().expect("the workload's stdin");
    stdin.write_all(b"go\n").expect("release the workload");
    drop(stdin);
    assert!(
        w.wait("workload.py", TIMEOUT).success(),
        "{}",
        w.stderr_text()
    );
    let report: Value =
        serde_json::from_str(w.stdout_text().lines().nth(1).expect("the report line"))
            .expect("the report");
    assert!(g.wait("gltop", Duration::from_secs(60)).success());
    let lines = json_lines(&g.stdout_text());
    assert!(
        lines.len() >= 5,
        "{} lines: records left between frees",
        lines.len()
    );
    let totals = &lines.last().expect("a line")["totals"];
    assert_eq!(totals["switches"], report["switches"], "switches");
    assert_eq!(totals["throws"], report["throws"], "throws");
    assert_eq!(totals["greenlets_created"], 20000, "{totals}");
    assert_eq!(totals["greenlets_dead"], 20000, "{totals}");
    // The main greenlet, made before the attach, first seen by a transfer.
    assert_eq!(totals["late_greenlets"], 1, "{totals}");
    assert_eq!(totals["dropped"], 0, "{totals}");
    for (outcome, want) in report["dead_by_outcome"].as_object().expect("outcomes") {
        assert_eq!(
            totals["dead_by_outcome"][outcome], *want,
            "deaths by {outcome}"
        );
    }
    // Each greenlet is in one line as ended, and only once in all: 20,000 records, although
    // the workload used far fewer addresses.
    let ended: Vec<&Value> = lines
        .iter()
        .flat_map(|l| l["greenlets"].as_array().expect("greenlets"))
        .filter(|g| g["ended"] == true)
        .collect();
    assert_eq!(ended.len(), 20000, "ended records");
    let addresses: std::collections::BTreeSet<u64> = ended
        .iter()
        .map(|g| n(&g["id"]) & ((1 << 48) - 1))
        .collect();
    assert!(
        addresses.len() < 20000 / 10,
        "{} addresses for 20,000 greenlets: reused",
        addresses.len()
    );
    let workers = ended.iter().filter(|g| g["name"] == "Worker").count();
    assert_eq!(workers, 8000, "ended records named Worker");
}

/// Without --hit-cost-ns, the cost of a hit is measured on a child running the target's
/// interpreter and greenlet: a number in the cost line and in --json; the blocking detector
/// runs.
#[test]
fn the_cost_of_a_hit_is_measured_on_python_greenlet() {
    let what = "the_cost_of_a_hit_is_measured_on_python_greenlet";
    if !bpf_or_skip(what) || !require(what, python_greenlet(None, None)) {
        return;
    }
    let _serial = serial();
    let w = start_workload(None, &["--threads", "1", "--rounds", "1"]);
    let mut g = Proc::spawn(
        gltop()
            .args(["-p", &w.pid().to_string(), "--json", "-n", "1", "-d", "0.2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    assert!(g.wait("gltop", TIMEOUT).success(), "{}", g.stderr_text());
    let lines = json_lines(&g.stdout_text());
    let cost = lines[0]["cost"]["per_hit_ns"]
        .as_f64()
        .unwrap_or_else(|| panic!("a measured cost: {}", g.stderr_text()));
    // Generous bounds: a uprobe hit costs about 1-4 us on the project's VM.
    assert!(cost > 50.0 && cost < 100_000.0, "{cost} ns per hit");
    let err = g.stderr_text();
    assert!(err.contains("ns per hit"), "{err}");
    // The blocking detector runs beside the probes: its list is in every line.
    assert!(!err.contains("no blocking detection"), "{err}");
    assert!(lines[0]["blocking"].is_array(), "{}", lines[0]);
}

/// Whether gevent imports.
fn gevent() -> Result<(), String> {
    let ok = Command::new("python3")
        .args(["-c", "import gevent"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(())
        .ok_or_else(|| "python3 cannot import gevent: make deps installs it".into())
}

#[test]
fn gevent_hub_and_greenlet_counts_equal_settrace_exactly() {
    let what = "gevent_hub_and_greenlet_counts_equal_settrace_exactly";
    if !bpf_or_skip(what) || !require(what, gevent()) {
        return;
    }
    let _serial = serial();
    let app = workload_py().with_file_name("gevent_app.py");
    let (report, last) = traced(&app, None, &["--greenlets", "200", "--rounds", "40"]);
    let events = assert_counts_equal(&report, &last);
    // The hub is in most transfers, both ways, and named by its type.
    let hub = n(&report["hub"]);
    let edges = edge_counts(&last);
    let to_hub: u64 = edges
        .iter()
        .filter(|(k, _)| k.1 == hub)
        .map(|(_, v)| v.0)
        .sum();
    let from_hub: u64 = edges
        .iter()
        .filter(|(k, _)| k.0 == hub)
        .map(|(_, v)| v.0)
        .sum();
    assert!(
        to_hub > 200 * 40 / 2 && from_hub > 200 * 40 / 2,
        "{to_hub} {from_hub}"
    );
    let spawned = last["greenlets"]
        .as_array()
        .expect("greenlets")
        .iter()
        .filter(|g| g["name"] == "gevent._gevent_cgreenlet.Greenlet")
        .count();
    assert_eq!(spawned, 200, "gevent greenlets by name");
    eprintln!("gevent: {events} events counted exactly ({to_hub} into the hub)");
}

#[test]
fn python_greenlet_counts_equal_settrace_exactly() {
    let what = "python_greenlet_counts_equal_settrace_exactly";
    if !bpf_or_skip(what) || !require(what, python_greenlet(None, Some("3.5.6"))) {
        return;
    }
    let _serial = serial();
    let events = exact_run(None, "3.5.6");
    eprintln!("greenlet 3.5.6: {events} events counted exactly");
}

/// The exactness test under greenlet `version` from `.ci/deps.sh`'s directory.
fn other_version(what: &str, version: &str) {
    let dir = greenlet_version_dir(version);
    if !bpf_or_skip(what) || !require(what, python_greenlet(Some(&dir), Some(version))) {
        return;
    }
    let _serial = serial();
    let events = exact_run(Some(&dir), version);
    eprintln!("greenlet {version}: {events} events counted exactly");
}

#[test]
fn python_greenlet_3_0_counts_equal_settrace_exactly() {
    other_version("python_greenlet_3_0_counts_equal_settrace_exactly", "3.0.3");
}

/// greenlet 2.0 passes inner_bootstrap's origin by reference: read from its DWARF.
#[test]
fn python_greenlet_2_0_counts_equal_settrace_exactly() {
    other_version("python_greenlet_2_0_counts_equal_settrace_exactly", "2.0.2");
}

/// gltop's id of a Python greenlet is its address with a generation in bits 48 and up.
const PY_ADDRESS_BITS: u64 = (1 << 48) - 1;

/// Exact mode's blocking detector on Python greenlet (issue 13): a gevent greenlet that calls
/// `time.sleep(0.3)` blocks its hub, and is one off-CPU episode naming its type and the
/// sleep's system call, as long as the sleep measured inside and at most a margin longer.
/// The hub's own wait on a 0.4 s timer, longer than the threshold, is never an episode.
#[test]
fn a_gevent_greenlet_sleeping_0_3_s_is_one_off_cpu_episode_and_the_idle_hub_none() {
    let what = "a_gevent_greenlet_sleeping_0_3_s_is_one_off_cpu_episode_and_the_idle_hub_none";
    if !bpf_or_skip(what) || !require(what, gevent()) {
        return;
    }
    let _serial = serial();
    let script = workload_py().with_file_name("gevent_block.py");
    let mut w = start_script(&script, None, &[]);
    let mut g = gltop_json(w.pid(), &["-d", "0.5", "--block-ms", "100"]);
    assert!(
        g.wait_stderr("attached to process", TIMEOUT),
        "gltop: {}",
        g.stderr_so_far()
    );
    let err = g.stderr_so_far();
    assert!(!err.contains("no blocking detection"), "gltop: {err}");
    let mut stdin = w.child.stdin.take().expect("the script's stdin");
    stdin.write_all(b"go\n").expect("release the script");
    drop(stdin);
    let st = w.wait("the script", TIMEOUT);
    assert!(st.success(), "{}: {}", script.display(), w.stderr_text());
    let out = w.stdout_text();
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("ready"));
    let report: Value = serde_json::from_str(lines.next().expect("the report line"))
        .unwrap_or_else(|e| panic!("bad report {out:?}: {e}"));
    assert_eq!(lines.next(), None, "nothing after the report: {out:?}");
    let gst = g.wait("gltop", Duration::from_secs(60));
    let err = g.stderr_text();
    assert!(gst.success() && err.contains("exited"), "gltop: {err}");
    let json = json_lines(&g.stdout_text());

    let hub = n(&report["hub"]);
    assert!(
        report["hub_type"].as_str().unwrap().ends_with("Hub"),
        "{report}"
    );
    // The hub idled past the threshold: an episode if it were not idle by design.
    assert!(n(&report["hub_idle_ns"]) >= 400_000_000, "{report}");
    let mut ended: BTreeMap<(u64, u64), Value> = BTreeMap::new();
    for l in &json {
        for b in l["blocking"].as_array().expect("a blocking list") {
            assert_ne!(n(&b["greenlet_id"]) & PY_ADDRESS_BITS, hub, "the hub: {b}");
            if b["ongoing"] == false {
                ended.insert((n(&b["thread"]), n(&b["start_ns"])), b.clone());
            }
        }
    }
    let ended: Vec<Value> = ended.into_values().collect();
    assert_eq!(ended.len(), 1, "one episode: {ended:?}");
    let e = &ended[0];
    assert_eq!(
        n(&e["greenlet_id"]) & PY_ADDRESS_BITS,
        n(&report["greenlet"]),
        "{e}"
    );
    assert_eq!(e["greenlet_name"], report["type"], "{e}");
    assert_eq!(e["greenlet_name"], "Sleeper", "{e}");
    assert_eq!(e["thread"], report["tid"], "{e}");
    assert_eq!(e["lint"], "blocking", "{e}");
    // Off the CPU for most of it (time preempted counts as on it): the whole run shows why not.
    assert_eq!(e["cpu"], "off-cpu", "{e}\nreport {report}\nlines {json:?}");
    let syscall = e["syscall"]
        .as_str()
        .unwrap_or_else(|| panic!("a syscall: {e}"));
    assert!(
        ["clock_nanosleep", "nanosleep", "select"].contains(&syscall),
        "{e}"
    );
    // From the switch into the greenlet to the switch out of it: around the sleep as timed
    // inside, plus the greenlet's own few Python lines (a generous 100 ms).
    let slept = n(&report["slept_ns"]);
    let dur = n(&e["duration_ns"]);
    assert!(slept >= 300_000_000, "{report}");
    assert!(
        dur >= slept && dur <= slept + 100_000_000,
        "episode {dur} ns, slept {slept} ns: {e}"
    );
    let off = n(&e["off_cpu_ns"]);
    assert!(off >= 290_000_000 && off <= dur, "{e}");
    eprintln!("gevent: time.sleep(0.3) measured {slept} ns inside, episode {dur} ns ({off} ns off-CPU, {syscall})");
}

/// `make demo-gevent`'s script starts the gevent demo and gltop on it: two JSON lines of a
/// Python process with its hundreds of greenlets, named by type, switching through the hub.
#[test]
fn the_gevent_demo_starts_under_gltop() {
    let what = "the_gevent_demo_starts_under_gltop";
    if !bpf_or_skip(what) || !require(what, gevent()) {
        return;
    }
    let _serial = serial();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_gltop"));
    let mut demo = Proc::spawn_group(
        Command::new("bash")
            .arg(root().join("gltop/demo/gevent_demo.sh"))
            .args(["--json", "-n", "2", "-d", "1", "--hit-cost-ns", "500"])
            .env(
                "GLTOP_BIN_DIR",
                bin.parent().expect("the binary's directory"),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let st = demo.wait("gevent_demo.sh", TIMEOUT);
    let err = demo.stderr_text();
    assert!(st.success(), "gevent_demo.sh: {err}");
    let lines = json_lines(&demo.stdout_text());
    assert_eq!(lines.len(), 2, "{err}");
    let last = &lines[1];
    assert_eq!(last["runtime"], "python-greenlet");
    let greenlets = last["greenlets"].as_array().expect("greenlets");
    let named = |name: &str| greenlets.iter().filter(|g| g["name"] == name).count();
    assert_eq!(named("Client"), 150, "the demo's clients");
    // Servers and the ticker (the blocker first wakes after 3 s: it may not have switched yet).
    let spawned = named("gevent._gevent_cgreenlet.Greenlet");
    assert!(spawned >= 151, "{spawned} servers and ticker");
    assert_eq!(named("Hub"), 1);
    assert!(n(&last["totals"]["switches"]) > 0);
}

/// `gltop -p PID --print-bpftrace`, run with bpftrace over the workload: its counts per
/// (origin, target) equal settrace's.
#[test]
fn the_printed_bpftrace_program_counts_what_settrace_counts() {
    let what = "the_printed_bpftrace_program_counts_what_settrace_counts";
    if !bpf_or_skip(what)
        || !require(what, python_greenlet(None, None))
        || !bpftrace::available(what)
    {
        return;
    }
    let _serial = serial();
    let mut w = start_workload(None, &["--threads", "4", "--rounds", "200"]);
    let out = gltop()
        .args(["-p", &w.pid().to_string(), "--print-bpftrace"])
        .output()
        .expect("run gltop --print-bpftrace");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let program = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(
        program.starts_with("#!/usr/bin/env bpftrace\n"),
        "{program}"
    );
    assert!(program.contains("g_switch_finish"), "{program}");
    let file = std::env::temp_dir().join(format!("gltop-python-{}.bt", std::process::id()));
    std::fs::write(&file, &program).unwrap();
    let mut bt = Proc::spawn_group(
        Command::new(bpftrace::wrapper())
            .args(["-f", "json"])
            .arg(&file)
            .env("BPFTRACE_MAP_KEYS_MAX", "200000")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let begun = bt.wait_stdout_line(TIMEOUT, |l| l.contains("\"type\": \"printf\""));
    let _ = std::fs::remove_file(&file);
    assert!(begun.is_some(), "bpftrace: {}", bt.stderr_so_far());
    let mut stdin = w.child.stdin.take().expect("the workload's stdin");
    stdin.write_all(b"go\n").expect("release the workload");
    drop(stdin);
    assert!(
        w.wait("workload.py", TIMEOUT).success(),
        "{}",
        w.stderr_text()
    );
    let report: Value =
        serde_json::from_str(w.stdout_text().lines().nth(1).expect("the report line"))
            .expect("the report");
    // bpftrace stops by itself when the workload's main thread exits.
    let st = bt.wait("bpftrace", TIMEOUT);
    let stderr = bt.stderr_text();
    assert!(st.success(), "bpftrace: {stderr}");
    let lines: Vec<String> = bt.stdout_text().lines().map(String::from).collect();
    let output = bpftrace::Output::parse(&lines, stderr, false).expect("bpftrace's output");
    let switches = bpftrace::pairs(&output.map("@switches"));
    let throws = bpftrace::pairs(&output.map("@throws"));
    let (mut want_sw, mut want_th) = (BTreeMap::new(), BTreeMap::new());
    let n = |v: &Value| v.as_u64().expect("a count");
    for e in report["edges"].as_array().expect("edges") {
        let key = (n(&e[0]), n(&e[1]));
        if n(&e[2]) > 0 {
            want_sw.insert(key, n(&e[2]));
        }
        if n(&e[3]) > 0 {
            want_th.insert(key, n(&e[3]));
        }
    }
    assert!(
        want_sw.len() > 4096,
        "more pairs than bpftrace's default map size"
    );
    same_pairs(&switches, &want_sw, "switches");
    same_pairs(&throws, &want_th, "throws");
    eprintln!(
        "bpftrace: {} switches and {} throws on {} pairs, as settrace counted",
        switches.values().sum::<u64>(),
        throws.values().sum::<u64>(),
        want_sw.len()
    );
}

/// `got` equals `want`, or a panic that names how many pairs differ and the first few (the
/// maps hold thousands).
fn same_pairs(got: &BTreeMap<(u64, u64), u64>, want: &BTreeMap<(u64, u64), u64>, what: &str) {
    let keys: std::collections::BTreeSet<_> = got.keys().chain(want.keys()).collect();
    let differ: Vec<_> = keys
        .into_iter()
        .filter(|k| got.get(k) != want.get(k))
        .map(|k| (k, got.get(k), want.get(k)))
        .collect();
    assert!(
        differ.is_empty(),
        "{what}: {} of {} pairs differ (pair, bpftrace, settrace), e.g. {:?}",
        differ.len(),
        want.len(),
        &differ[..differ.len().min(5)]
    );
}

/// Runs `gltop -p PID --json` on a Python process started with `code` (and `pythonpath`),
/// which waits on stdin; returns gltop's exit code and stderr.
fn gltop_on_python(pythonpath: Option<&Path>, code: &str) -> (Option<i32>, String) {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", code])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(p) = pythonpath {
        cmd.env("PYTHONPATH", p);
    }
    let py = Proc::spawn(&mut cmd);
    assert!(
        py.wait_stdout_line(TIMEOUT, |l| l == "ready").is_some(),
        "python3 -c {code:?}: {}",
        py.stderr_so_far()
    );
    let mut g = Proc::spawn(
        gltop()
            .args([
                "-p",
                &py.pid().to_string(),
                "--json",
                "--hit-cost-ns",
                "500",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let st = g.wait("gltop", TIMEOUT);
    assert_eq!(g.stdout_text(), "", "nothing on stdout");
    (st.code(), g.stderr_text())
}

/// One line, exit 2, containing each of `want`.
fn assert_refused((code, err): (Option<i32>, String), want: &[&str]) {
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(
        err.starts_with("gltop: cannot trace Python process"),
        "{err}"
    );
    for w in want {
        assert!(err.contains(w), "{w:?} in {err:?}");
    }
}

const WAIT: &str = "import sys; print('ready', flush=True); sys.stdin.readline()";

#[test]
fn a_python_process_without_greenlet_is_refused() {
    let what = "a_python_process_without_greenlet_is_refused";
    if !bpf_or_skip(what) || !require(what, support::tool("python3", "--version")) {
        return;
    }
    assert_refused(gltop_on_python(None, WAIT), &["without greenlet"]);
}

#[test]
fn greenlet_1_is_refused() {
    let what = "greenlet_1_is_refused";
    let dir = greenlet_version_dir("1.1.3");
    if !bpf_or_skip(what) || !require(what, python_greenlet(Some(&dir), Some("1.1.3"))) {
        return;
    }
    let code = format!("import greenlet; {WAIT}");
    assert_refused(
        gltop_on_python(Some(&dir), &code),
        &["greenlet 1.1.3 is not supported", ">= 2.0"],
    );
}

#[test]
fn a_greenlet_without_dwarf_is_refused_naming_the_debug_info() {
    let what = "a_greenlet_without_dwarf_is_refused_naming_the_debug_info";
    let src = greenlet_version_dir("3.0.3").join("greenlet");
    if !bpf_or_skip(what)
        || !require(what, python_greenlet(src.parent(), Some("3.0.3")))
        || !require(what, support::tool("strip", "--version"))
    {
        return;
    }
    // A copy of the package whose .so has no DWARF.
    let tmp = std::env::temp_dir().join(format!("gltop-nodwarf-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let pkg = tmp.join("greenlet");
    std::fs::create_dir_all(&pkg).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), pkg.join(entry.file_name())).unwrap();
        }
    }
    let so = std::fs::read_dir(&pkg)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".so"))
        .expect("the .so");
    let st = Command::new("strip")
        .arg("--strip-debug")
        .arg(&so)
        .status()
        .unwrap();
    assert!(st.success());
    let code = format!("import greenlet; {WAIT}");
    let result = gltop_on_python(Some(&tmp), &code);
    let _ = std::fs::remove_dir_all(&tmp);
    assert_refused(result, &["no DWARF debug info", "dbgsym", "greenlet 3.0.3"]);
}

/// `gltop --listen` on the workload: once its work is done (it lingers until its stdin
/// closes), one scrape has settrace's totals, its creations and deaths by outcome, and a
/// target that says it is Python greenlet; then gltop says the process exited and stops.
#[test]
fn the_exporter_serves_the_counts_settrace_saw() {
    let what = "the_exporter_serves_the_counts_settrace_saw";
    if !bpf_or_skip(what) || !require(what, python_greenlet(None, None)) {
        return;
    }
    let _serial = serial();
    let mut w = start_workload(None, &["--threads", "2", "--rounds", "300", "--linger"]);
    let pid = w.pid();
    let mut g = Proc::spawn(
        gltop()
            .args(["--listen", "127.0.0.1:0", "-p", &pid.to_string()])
            .args(["--hit-cost-ns", "500", "-d", "0.5"])
            .args(["--max-greenlets", "131072", "--max-edges", "262144"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let addr = exposition::serving_addr(&g);
    // Nothing counted before the workload is released.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).expect("its comm");
    let labels = format!("process=\"{}\"", comm.trim_end());
    let first = exposition::scrape(&addr);
    assert_eq!(
        first.get(&("greenlet_switches_total".into(), labels.clone())),
        Some(&0.0),
        "{first:?}"
    );
    let mut stdin = w.child.stdin.take().expect("the workload's stdin");
    stdin.write_all(b"go\n").expect("release the workload");
    stdin.flush().expect("release the workload");
    let line = w
        .wait_stdout_line(TIMEOUT, |l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no report: {}", w.stderr_so_far()));
    let report: Value = serde_json::from_str(&line).expect("the report");
    assert_eq!(n(&report["pid"]), pid as u64);
    let want_switches = n(&report["switches"]);
    assert!(want_switches >= 50_000, "{want_switches} switches");
    assert!(n(&report["throws"]) > 0);

    // Every transfer happened before the report: a scrape (which reads the kernel's maps
    // first) has them all.
    let m = exposition::scrape(&addr);
    let get = |name: &str, extra: &str| -> f64 {
        let key = (name.to_string(), format!("{labels}{extra}"));
        *m.get(&key)
            .unwrap_or_else(|| panic!("no {key:?} in {:?}", m.keys()))
    };
    let count = |v: &Value| n(v) as f64;
    assert_eq!(
        get("greenlet_switches_total", ""),
        count(&report["switches"])
    );
    assert_eq!(get("greenlet_throws_total", ""), count(&report["throws"]));
    assert_eq!(get("greenlet_created_total", ""), count(&report["created"]));
    assert_eq!(get("gltop_dropped_total", ""), 0.0);
    let by_outcome = report["dead_by_outcome"].as_object().expect("outcomes");
    let mut finished = 0.0;
    for o in greenlet::probes::Outcome::ALL {
        let want = by_outcome.get(o.name()).map_or(0.0, count);
        let got = get(
            "greenlet_finished_total",
            &format!(",outcome=\"{}\"", o.name()),
        );
        assert_eq!(got, want, "deaths by {}", o.name());
        finished += got;
    }
    assert_eq!(get("greenlet_finished_total", ",outcome=\"other\""), 0.0);
    assert_eq!(finished, count(&report["dead"]), "deaths");
    let hits = get("gltop_probe_hits_total", "");
    assert!(
        hits >= count(&report["switches"]) + count(&report["throws"]),
        "{hits} probe hits"
    );
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("its executable");
    let info = format!(
        "pid=\"{pid}\",{labels},exe=\"{}\",runtime=\"python-greenlet\"",
        exe.display()
    );
    let infos: Vec<_> = m
        .iter()
        .filter(|((name, _), _)| name == "gltop_target_info")
        .collect();
    assert_eq!(infos.len(), 1, "{infos:?}");
    assert_eq!(infos[0], (&("gltop_target_info".to_string(), info), &1.0));

    // The workload leaves: gltop says so in its last line and exits 0.
    drop(stdin);
    assert!(
        w.wait("workload.py", TIMEOUT).success(),
        "{}",
        w.stderr_text()
    );
    let status = g.wait("gltop", Duration::from_secs(30));
    let err = g.stderr_text();
    assert!(status.success(), "gltop: {status}: {err}");
    assert_eq!(
        err.lines().last(),
        Some(format!("gltop: process {pid} ({}) exited", comm.trim_end()).as_str()),
        "{err}"
    );
    eprintln!(
        "exporter on Python greenlet: {} switches, {} throws as settrace counted",
        report["switches"], report["throws"]
    );
}

/// The TUI on the workload: a Python greenlet's id (its object's address, 15 digits or so)
/// shows in full in the table's ID column, the same number settrace reported for it.
#[test]
fn the_tui_shows_python_greenlet_ids_in_full() {
    let what = "the_tui_shows_python_greenlet_ids_in_full";
    if !bpf_and_tmux_or_skip(what) || !require(what, python_greenlet(None, None)) {
        return;
    }
    let _serial = serial();
    let mut w = start_workload(None, &["--threads", "1", "--rounds", "50", "--linger"]);
    let cmd = format!(
        "{} -p {} -d 0.5 --hit-cost-ns 500; echo GLTOP_EXIT=$?; sleep 60",
        env!("CARGO_BIN_EXE_gltop"),
        w.pid()
    );
    let tmux = Tmux::start("python-ids", &cmd);
    tmux.wait_for("the table", Duration::from_secs(60), |s| {
        s.contains(" greenlets (")
    });
    let mut stdin = w.child.stdin.take().expect("the workload's stdin");
    stdin.write_all(b"go\n").expect("release the workload");
    stdin.flush().expect("release the workload");
    let line = w
        .wait_stdout_line(TIMEOUT, |l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no report: {}", w.stderr_so_far()));
    let report: Value = serde_json::from_str(&line).expect("the report");
    let names = report["names"].as_object().expect("names");
    // The rows of greenlets named Worker (dead ones stay in the live view).
    let screen = tmux.wait_for("Worker rows", Duration::from_secs(30), |s| {
        s.lines().any(|l| l.contains(" Worker "))
    });
    let rows: Vec<&str> = screen.lines().filter(|l| l.contains(" Worker ")).collect();
    for row in &rows {
        let id = row.split_whitespace().next().expect("an id");
        assert!(id.len() >= 12, "{id:?} cut? {screen}");
        assert_eq!(
            names.get(id).and_then(Value::as_str),
            Some("Worker"),
            "{id} is a Worker the workload made: {row:?}"
        );
    }
    tmux.keys(&["q"]);
    let end = tmux.wait_for("exit", Duration::from_secs(30), |s| {
        s.contains("GLTOP_EXIT=")
    });
    assert!(end.contains("GLTOP_EXIT=0"), "{end}");
    drop(stdin);
    assert!(
        w.wait("workload.py", TIMEOUT).success(),
        "{}",
        w.stderr_text()
    );
    eprintln!("TUI: {} Worker rows with full ids", rows.len());
}

/// `--children` on a prefork server in miniature (`tests/python/prefork.py`): a master
/// without greenlet (said in one line, not an error) whose workers import it after their
/// fork, one of them forked after gltop started. Each worker is watched on its own from
/// before its work, with its blocking detector, and its `--json` lines' totals equal its own
/// settrace counts; gltop ends by itself once the master has exited.
#[test]
fn children_watches_a_prefork_servers_workers_each_exactly() {
    let what = "children_watches_a_prefork_servers_workers_each_exactly";
    if !bpf_or_skip(what) || !require(what, python_greenlet(None, None)) {
        return;
    }
    let _serial = serial();
    let dir = std::env::temp_dir().join(format!("gltop-prefork-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the sync dir");
    let script = workload_py().with_file_name("prefork.py");
    let mut master = Proc::spawn(
        Command::new("python3")
            .arg(&script)
            .arg(&dir)
            .args(["--workers", "2", "--rounds", "3000"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let ready = |m: &Proc, n: usize| -> Vec<i32> {
        let out = poll_until(std::time::Instant::now() + TIMEOUT, || {
            let pids: Vec<i32> = m
                .stdout_so_far()
                .lines()
                .filter_map(|l| l.strip_prefix("ready ")?.parse().ok())
                .collect();
            (pids.len() >= n).then_some(pids)
        });
        out.unwrap_or_else(|| panic!("{n} workers ready: {}", m.stderr_so_far()))
    };
    let mut workers = ready(&master, 2);
    let mut g = Proc::spawn(
        gltop()
            .args(["--json", "--children", "-p", &master.pid().to_string()])
            .args(["--hit-cost-ns", "500", "-d", "0.25"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let attached = |g: &Proc, pid: i32| {
        assert!(
            g.wait_stderr(&format!("attached to process {pid} "), TIMEOUT),
            "never attached to worker {pid}: {}",
            g.stderr_so_far()
        );
    };
    for &w in &workers {
        attached(&g, w);
    }
    let said = format!("process {} (python3) not watched", master.pid());
    assert!(
        g.wait_stderr(&said, TIMEOUT),
        "{said}: {}",
        g.stderr_so_far()
    );
    // A worker forked now, while gltop runs, that imports greenlet a second after its fork:
    // met by a scan before that, held back, and watched once it has.
    std::fs::write(dir.join("more"), b"").expect("more");
    workers = ready(&master, 3);
    attached(&g, workers[2]);
    std::fs::write(dir.join("go"), b"").expect("go");
    let status = master.wait("prefork.py", TIMEOUT);
    assert!(status.success(), "prefork.py: {}", master.stderr_text());
    let gst = g.wait("gltop --children", Duration::from_secs(60));
    let err = g.stderr_text();
    assert!(gst.success(), "{gst}: {err}");
    // Each worker has its blocking detector, as one Python process has.
    assert!(!err.contains("no blocking detection"), "{err}");

    let out = master.stdout_text();
    let mut reports: BTreeMap<i64, Value> = BTreeMap::new();
    for line in out.lines() {
        if line.starts_with("master ") || line.starts_with("ready ") {
            continue;
        }
        let r: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        let pid = r["pid"].as_i64().expect("a pid");
        assert!(
            reports.insert(pid, r).is_none(),
            "worker {pid} twice: {out}"
        );
    }
    let mut by_pid: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    for l in json_lines(&g.stdout_text()) {
        by_pid
            .entry(l["pid"].as_i64().expect("a pid"))
            .or_default()
            .push(l);
    }
    let mut want: Vec<i64> = workers.iter().map(|&p| p as i64).collect();
    want.sort_unstable();
    assert_eq!(reports.keys().copied().collect::<Vec<_>>(), want, "{out}");
    assert_eq!(
        by_pid.keys().copied().collect::<Vec<_>>(),
        want,
        "gltop's processes"
    );
    for (pid, r) in &reports {
        let last = merged(&by_pid[pid]);
        assert_eq!(last["runtime"], "python-greenlet", "worker {pid}");
        assert!(
            last["blocking"].is_array(),
            "worker {pid}'s detector: {last}"
        );
        let totals = &last["totals"];
        assert_eq!(totals["dropped"], 0, "worker {pid}: {totals}");
        assert_eq!(
            totals["switches"], r["switches"],
            "switches of worker {pid}"
        );
        assert_eq!(totals["throws"], r["throws"], "throws of worker {pid}");
        assert!(n(&r["switches"]) >= 5000 && n(&r["throws"]) >= 300, "{r}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
