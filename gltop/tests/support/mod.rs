//! gltop's test support: the rules and the oracle's report of the root package's
//! `tests/support` (included, so each is written once for the workspace), gltop's binary and
//! JSON lines, the target programs, the BPF objects gltop leaves in the kernel ([`kernel`])
//! and a tmux session for the TUI ([`tmux`]).
#![allow(dead_code, unused_imports)]

pub mod kernel;
#[path = "../../../tests/support/rules.rs"]
pub mod rules;
pub mod tmux;
#[path = "../../../tests/support/workload.rs"]
pub mod workload;

pub use rules::*;

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
/// `greenlet-workloads` package (`demo`, `workload`, `gltop_target`).
pub fn example(name: &str) -> PathBuf {
    match name {
        "million" | "switch_loop" | "tracing" => workload::example_bin(name),
        _ => workload::workloads_bin(name),
    }
}

/// Starts `gltop_target` waiting for a tracer, with `args`.
pub fn target(args: &[&str]) -> Proc {
    Proc::spawn(
        Command::new(example("gltop_target"))
            .args(args)
            .arg("--wait-for-tracer")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
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
