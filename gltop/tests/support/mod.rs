//! gltop's test support: the rules and the oracle's report of the root package's
//! `tests/support` (included, so each is written once for the workspace), gltop's binary and
//! JSON lines checked against the oracle's report, its exporter's scrapes ([`exposition`]), the BPF objects gltop leaves in the kernel
//! ([`kernel`]) and a tmux session for the TUI ([`tmux`]).
#![allow(dead_code, unused_imports)]

#[path = "../../../tests/support/bpftrace.rs"]
pub mod bpftrace;
pub mod exposition;
pub mod kernel;
#[path = "../../../tests/support/rules.rs"]
pub mod rules;
pub mod tmux;
#[path = "../../../tests/support/workload.rs"]
pub mod workload;

pub use rules::*;
pub use workload::Report;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Whether this process may load and attach BPF programs (`Err`: why not).
pub fn bpf_privilege() -> Result<(), String> {
    gltop::loader::process::check_bpf_privilege().map_err(|e| e.to_string())
}

/// Whether `test`, which attaches BPF programs, can run here: [`require`] of
/// [`bpf_privilege`].
pub fn bpf_or_skip(test: &str) -> bool {
    require(test, bpf_privilege())
}

/// The gltop binary of this build.
pub fn gltop() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gltop"));
    c.env_remove("GLTOP_DEBUG");
    c
}

/// A program of this workspace that gltop's tests run, built for this test run if needed:
/// the runtime's examples (`million`, `switch_loop`, `tracing`) or a binary of the
/// `greenlet-workloads` package (`demo`, `workload`).
pub fn example(name: &str) -> PathBuf {
    match name {
        "million" | "switch_loop" | "tracing" => workload::example_bin(name),
        _ => workload::workloads_bin(name),
    }
}

/// Starts the oracle `workload` with `args`, waiting for a tracer (`--wait-for-tracer`). Its
/// stdin is a pipe that stays open while the [`Proc`] lives, for `--linger stdin`.
pub fn target(args: &[&str]) -> Proc {
    Proc::spawn(
        Command::new(workload::workload_bin())
            .args(args)
            .arg("--wait-for-tracer")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
}

/// The report of a `workload` that has exited (its stdout).
pub fn report_of(p: &mut Proc) -> Report {
    let report = Report::parse(&p.stdout_text());
    assert_eq!(report.pid as i32, p.pid(), "the report's pid");
    report
}

/// gltop's lines (`merged`) against the workload's report, every count exactly: totals,
/// deaths by outcome, edges, and each greenlet's identity (name, thread, main-ness, parent,
/// outcome) and counts. `who` names the gltop in the messages.
pub fn assert_exact(who: &str, report: &Report, last: &Value) {
    let totals = &last["totals"];
    let want = &report.totals;
    assert_eq!(totals["switches"], want.switch, "{who}: switches");
    assert_eq!(totals["throws"], want.throw, "{who}: throws");
    assert_eq!(
        totals["greenlets_created"], want.new,
        "{who}: greenlets created"
    );
    assert_eq!(totals["greenlets_dead"], want.dead, "{who}: deaths");
    assert_eq!(totals["dropped"], 0, "{who}: {totals}");
    assert_eq!(totals["late_greenlets"], 0, "{who}: {totals}");
    for (outcome, n) in &report.deaths {
        assert_eq!(
            totals["dead_by_outcome"][outcome], *n,
            "{who}: deaths by {outcome}"
        );
    }

    // Edges: (origin, target) -> (switches, throws).
    let mut edges: BTreeMap<(u64, u64), (u64, u64)> = BTreeMap::new();
    for e in &report.edges {
        let slot = edges.entry((e.origin, e.target)).or_default();
        match e.kind.as_str() {
            "switch" => slot.0 += e.count,
            _ => slot.1 += e.count,
        }
    }
    assert_eq!(edge_counts(last), edges, "{who}: per-edge counts");

    // Per greenlet: identity as the workload recorded it, and counts as its edges sum up.
    let mut sums: BTreeMap<u64, [u64; 4]> = BTreeMap::new();
    for (&(origin, target), &(sw, th)) in &edges {
        let t = sums.entry(target).or_default();
        t[0] += sw;
        t[2] += th;
        let o = sums.entry(origin).or_default();
        o[1] += sw;
        o[3] += th;
    }
    assert_eq!(
        last["greenlets"].as_array().unwrap().len(),
        report.greenlets.len(),
        "{who}: the greenlets recorded"
    );
    for w in &report.greenlets {
        let id = w.id;
        let g = greenlet(last, id).unwrap_or_else(|| panic!("{who}: greenlet {id} recorded"));
        assert_eq!(g["name"], w.name, "{who}: name of {id}");
        assert_eq!(g["tid"], w.tid, "{who}: thread of {id}");
        assert_eq!(g["main"], w.main, "{who}: main-ness of {id}");
        assert_eq!(
            g["parent"].as_u64().unwrap_or(0),
            w.parent,
            "{who}: parent of {id}"
        );
        assert_eq!(g["outcome"], w.outcome, "{who}: outcome of {id}");
        assert_eq!(g["state"], "dead", "{who}: {id}");
        let [sw_in, sw_out, th_in, th_out] = sums.get(&id).copied().unwrap_or_default();
        assert_eq!(g["switches_in"], sw_in, "{who}: switches in of {id}");
        assert_eq!(g["switches_out"], sw_out, "{who}: switches out of {id}");
        assert_eq!(g["throws_in"], th_in, "{who}: throws in of {id}");
        assert_eq!(g["throws_out"], th_out, "{who}: throws out of {id}");
    }
}

/// Starts `gltop -p PID --json` with extra `args`; the per-hit cost is given, so no time goes
/// to measuring it.
pub fn gltop_json(pid: i32, args: &[&str]) -> Proc {
    Proc::spawn(
        gltop()
            .args(["-p", &pid.to_string(), "--json", "--hit-cost-ns", "500"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
}

/// Parses gltop's JSON lines.
pub fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// The last of gltop's JSON lines with the greenlets and edges of all of them: each line has
/// the live ones and those that ended since the previous line, so the union (each record's
/// latest version) holds every greenlet and edge seen since attach.
pub fn merged(lines: &[Value]) -> Value {
    let mut greenlets: BTreeMap<u64, Value> = BTreeMap::new();
    let mut edges: BTreeMap<(u64, u64), Value> = BTreeMap::new();
    for line in lines {
        for g in line["greenlets"].as_array().expect("greenlets") {
            greenlets.insert(g["id"].as_u64().expect("an id"), g.clone());
        }
        for e in line["edges"].as_array().expect("edges") {
            let key = (e["origin"].as_u64().unwrap(), e["target"].as_u64().unwrap());
            edges.insert(key, e.clone());
        }
    }
    let mut last = lines.last().expect("a JSON line").clone();
    last["greenlets"] = Value::Array(greenlets.into_values().collect());
    last["edges"] = Value::Array(edges.into_values().collect());
    last
}

/// The edges of a JSON line: (origin, target) -> (switches, throws).
pub fn edge_counts(line: &Value) -> BTreeMap<(u64, u64), (u64, u64)> {
    line["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| {
            let n = |k: &str| e[k].as_u64().expect("an edge count");
            ((n("origin"), n("target")), (n("switches"), n("throws")))
        })
        .collect()
}

/// The greenlet with this id in a JSON line.
pub fn greenlet(line: &Value, id: u64) -> Option<&Value> {
    line["greenlets"].as_array()?.iter().find(|g| g["id"] == id)
}

/// The values of the target's greenlet probe semaphores.
pub fn semaphores(pid: i32) -> Vec<(String, u16)> {
    gltop::loader::semaphores(pid)
        .expect("read the semaphores")
        .into_iter()
        .collect()
}

/// Waits until every semaphore of `pid` reads 0 (true), or `timeout` (false).
pub fn semaphores_zero_within(pid: i32, timeout: Duration) -> bool {
    poll_until(Instant::now() + timeout, || {
        semaphores(pid).iter().all(|(_, v)| *v == 0).then_some(())
    })
    .is_some()
}

/// Waits until every semaphore of `pid` is non-zero (a tracer is attached).
pub fn wait_attached(pid: i32, timeout: Duration) -> bool {
    poll_until(Instant::now() + timeout, || {
        gltop::loader::semaphore::all_enabled(pid)
            .unwrap_or(false)
            .then_some(())
    })
    .is_some()
}

/// Binary `name` of the `greenlet-workloads` package built with the release profile (once
/// per test binary), for measurements a debug build's switch would distort: a debug switch
/// costs about a microsecond, which blurs a CPU split made of microsecond slices.
pub fn release_workload(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let exe = std::env::current_exe().expect("the test binary's path");
    // Test binaries live in <target dir>/<profile dir>/deps.
    let target = exe
        .ancestors()
        .nth(3)
        .expect("test binaries live in <target>/<profile>/deps")
        .to_path_buf();
    let path = target.join("release").join(name);
    if built.is_none() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let st = Command::new(cargo)
            .args([
                "build",
                "--release",
                "-p",
                "greenlet-workloads",
                "--bin",
                name,
            ])
            .arg("--target-dir")
            .arg(&target)
            .current_dir(root())
            .status()
            .expect("run cargo build --release");
        assert!(st.success(), "cargo build --release --bin {name}");
        *built = Some(path.clone());
    }
    path
}

/// Where `.ci/deps.sh` installs Python greenlet `version` for the Python tests (put it on
/// `PYTHONPATH`): `$GREENLET_VERSIONS_DIR/VERSION`, by default under `/opt/greenlet-versions`.
pub fn greenlet_version_dir(version: &str) -> PathBuf {
    let base = std::env::var_os("GREENLET_VERSIONS_DIR")
        .map_or_else(|| PathBuf::from("/opt/greenlet-versions"), PathBuf::from);
    base.join(version)
}

/// [`require`]'s check that greenlet `version` is installed where [`greenlet_version_dir`] says.
pub fn greenlet_version_installed(version: &str) -> Result<(), String> {
    let dir = greenlet_version_dir(version);
    if dir.join("greenlet").is_dir() {
        Ok(())
    } else {
        Err(format!(
            "greenlet {version} is not in {} (make deps)",
            dir.display()
        ))
    }
}
