//! Helpers for the gltop tests: BPF availability, the binaries under test, child processes
//! that die with the test, and gltop's JSON lines; the BPF objects gltop leaves in the kernel
//! ([`kernel`]) and a tmux session for the TUI ([`tmux`]).
#![allow(dead_code)]

pub mod kernel;
pub mod tmux;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "../../../tests/support/mod.rs"]
mod probe_support;

/// Whether BPF tests can run here. Outside CI a missing privilege skips the test with a
/// printed reason; under `CI=true` it fails the test.
pub fn bpf_or_skip(test: &str) -> bool {
    match gltop::loader::process::check_bpf_privilege() {
        Ok(()) => true,
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: BPF is required under CI=true but unavailable: {e}")
        }
        Err(e) => {
            eprintln!("skipping {test}: {e}");
            false
        }
    }
}

/// Whether `program` runs (`program arg`, e.g. `--version`). Outside CI a missing tool skips
/// the test with a printed reason; under `CI=true` it fails the test.
pub fn tool_or_skip(program: &str, arg: &str) -> bool {
    if Command::new(program).arg(arg).output().is_ok() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{program} is required under CI=true but cannot be run");
    }
    eprintln!("skipping: {program} is not installed");
    false
}

/// Serialises the tests of one test binary that attach gltop, so that they do not compete for
/// the machine's few cores (and system-wide counts of BPF objects stay meaningful).
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
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
        "million" | "switch_loop" | "tracing" => probe_support::workload::example_bin(name),
        _ => probe_support::workload::workloads_bin(name),
    }
}

/// A child process killed (by its PID) when dropped, so a failing test leaves nothing behind.
/// Its piped stdout and stderr are drained by threads as it runs (a full pipe would block it).
pub struct Proc {
    pub child: Child,
    stdout: Option<Collector>,
    stderr: Option<Collector>,
}

/// Reads a pipe to its end in a thread, keeping everything read so far.
struct Collector {
    text: Arc<Mutex<String>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Collector {
    fn start(pipe: impl Read + Send + 'static) -> Collector {
        let text = Arc::new(Mutex::new(String::new()));
        let sink = text.clone();
        let thread = std::thread::spawn(move || {
            let mut r = BufReader::new(pipe);
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 0) {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        Collector {
            text,
            thread: Some(thread),
        }
    }

    fn so_far(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    fn all(&mut self) -> String {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.so_far()
    }
}

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stdout = child.stdout.take().map(Collector::start);
        let stderr = child.stderr.take().map(Collector::start);
        Proc {
            child,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits up to `timeout` for the exit; the exit status, or None if it is still running.
    pub fn wait_for(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` to it.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }

    /// All of its stdout (waits for the pipe to close: call after it exited).
    pub fn stdout_text(&mut self) -> String {
        self.stdout.as_mut().map(Collector::all).unwrap_or_default()
    }

    /// All of its stderr (waits for the pipe to close: call after it exited).
    pub fn stderr_text(&mut self) -> String {
        self.stderr.as_mut().map(Collector::all).unwrap_or_default()
    }

    /// Its stderr so far, while it runs.
    pub fn stderr_so_far(&self) -> String {
        self.stderr
            .as_ref()
            .map(Collector::so_far)
            .unwrap_or_default()
    }

    /// Waits until its stderr contains `what`.
    pub fn wait_stderr(&self, what: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stderr_so_far().contains(what) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
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
    let deadline = Instant::now() + timeout;
    loop {
        if semaphores(pid).iter().all(|(_, v)| *v == 0) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until every semaphore of `pid` is non-zero (a tracer is attached).
pub fn wait_attached(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if gltop::loader::semaphore::all_enabled(pid).unwrap_or(false) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
