//! Running the test oracle `workload` (`workloads/src/bin/workload.rs`) and reading its JSON
//! report (schema: that program's module docs); building the programs of this workspace that
//! tests run. The root package's tests and gltop's (which include this file with `#[path]`)
//! read the same report.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;

use super::rules::{root, Proc, TIMEOUT};

/// The test oracle's binary, freshly built.
pub fn workload_bin() -> PathBuf {
    workloads_bin("workload")
}

/// The binary of the runtime's example `name`, built (once per test binary) with
/// `cargo build -p greenlet --example` for the profile and target this test binary was built
/// for.
///
/// Plain `cargo test` builds the examples too, but `cargo test --all-targets` builds them only
/// as test harnesses, so the tests build what they run themselves: a no-op when it is fresh,
/// a link when it is not.
pub fn example_bin(name: &str) -> PathBuf {
    built("greenlet", "--example", name)
}

/// The binary `name` of the `greenlet-workloads` package (the demo, the oracle `workload`),
/// built as [`example_bin`] builds examples.
pub fn workloads_bin(name: &str) -> PathBuf {
    built("greenlet-workloads", "--bin", name)
}

/// Target `name` of kind `kind` (`--example`, `--bin`) of `package`, built once per test
/// binary.
fn built(package: &str, kind: &str, name: &str) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let key = format!("{package} {kind} {name}");
    if let Some(path) = built.get(&key) {
        return path.clone();
    }
    let path = cargo_build(package, kind, name);
    built.insert(key, path.clone());
    path
}

fn cargo_build(package: &str, kind: &str, name: &str) -> PathBuf {
    // Test binaries live in <target dir>[/<triple>]/<profile dir>/deps.
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in <target>/<profile>/deps");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "--message-format=json",
        "-p",
        package,
        kind,
        name,
    ])
    .current_dir(root())
    .stdin(Stdio::null());
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(profile) => {
            cmd.args(["--profile", profile]);
        }
        None => panic!("cannot tell the profile from {}", exe.display()),
    }
    let above = profile_dir.parent().expect("a target directory");
    if !above.join("CACHEDIR.TAG").exists() {
        // <target dir>/<triple>/<profile dir>
        let triple = above
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a target triple");
        cmd.args(["--target", triple]);
        cmd.env(
            "CARGO_TARGET_DIR",
            above.parent().expect("a target directory"),
        );
    } else {
        cmd.env("CARGO_TARGET_DIR", above);
    }
    let out = cmd.output().expect("cannot run cargo");
    assert!(
        out.status.success(),
        "cargo build -p {package} {kind} {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The last compiler-artifact message of the example names its executable.
    let executable = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact" && msg["target"]["name"] == name)
        .filter_map(|msg| msg["executable"].as_str().map(PathBuf::from))
        .next_back();
    executable.unwrap_or_else(|| panic!("cargo built no executable for {package} {kind} {name}"))
}

/// Runs the workload to the end with `args` and returns its report.
pub fn run(args: &[&str]) -> Report {
    let mut w = Workload::start(args);
    w.go();
    w.finish()
}

/// A running workload, started with `--wait stdin`: it has printed `workload: ready` and
/// created no greenlet yet.
pub struct Workload {
    proc: Proc,
    pub pid: u32,
    stdin: Option<ChildStdin>,
    args: Vec<String>,
}

impl Workload {
    /// Starts the workload with `args` plus `--wait stdin`, and waits for its ready line.
    pub fn start(args: &[&str]) -> Workload {
        let mut proc = Proc::spawn(
            Command::new(workload_bin())
                .args(args)
                .args(["--wait", "stdin"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        let pid = proc.child.id();
        let stdin = proc.child.stdin.take();
        let ready = proc
            .wait_stderr_line(TIMEOUT, |l| l.starts_with("workload: ready"))
            .unwrap_or_else(|| {
                panic!(
                    "the workload {args:?} never printed its ready line; stderr: {}",
                    proc.stderr_so_far()
                )
            });
        assert_eq!(ready, format!("workload: ready pid={pid}"));
        Workload {
            proc,
            pid,
            stdin,
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// `/proc/PID/exe`: the binary path to give bpftrace for this process.
    pub fn exe(&self) -> String {
        format!("/proc/{}/exe", self.pid)
    }

    /// Sends `sig` to it.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        self.proc.signal(sig);
    }

    /// Lets it start: closes its stdin.
    pub fn go(&mut self) {
        drop(self.stdin.take());
    }

    /// Waits for it to exit successfully and returns its report.
    pub fn finish(self) -> Report {
        self.finish_within(TIMEOUT)
    }

    /// [`Workload::finish`], for a run that may take up to `timeout`.
    pub fn finish_within(mut self, timeout: Duration) -> Report {
        self.go();
        let status = self.proc.wait("the workload", timeout);
        let stdout = self.proc.stdout_text();
        let stderr = self.proc.stderr_text();
        assert!(
            status.success(),
            "the workload {:?} failed ({status}): {stderr}",
            self.args
        );
        let report = Report::parse(&stdout);
        assert_eq!(report.pid, self.pid, "the report's pid");
        report
    }
}

/// The workload's JSON report.
#[derive(Debug, Deserialize)]
pub struct Report {
    pub pid: u32,
    pub threads: u32,
    pub config: serde_json::Value,
    pub totals: Totals,
    pub deaths: BTreeMap<String, u64>,
    pub edges: Vec<Edge>,
    pub per_thread: Vec<PerThread>,
    pub greenlets: Vec<GreenletInfo>,
    pub spun: Vec<Spun>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct Totals {
    pub switch: u64,
    pub throw: u64,
    pub new: u64,
    pub dead: u64,
}

#[derive(Debug, Deserialize, Clone)]
pub struct Edge {
    pub origin: u64,
    pub target: u64,
    pub kind: String,
    pub count: u64,
}

#[derive(Debug, Deserialize)]
pub struct PerThread {
    pub thread: u32,
    pub tid: i32,
    pub main: u64,
    pub iterations: u64,
    pub switch: u64,
    pub throw: u64,
    pub new: u64,
    pub dead: u64,
}

#[derive(Debug, Deserialize, Clone)]
pub struct GreenletInfo {
    pub id: u64,
    pub name: String,
    pub parent: u64,
    pub thread: u32,
    pub tid: i32,
    pub main: bool,
    pub outcome: String,
}

/// The slices of a spinning worker (`--spin-us`), as it timed them from inside.
#[derive(Debug, Deserialize, Clone)]
pub struct Spun {
    pub id: u64,
    pub slices: u64,
    pub ns: u64,
}

/// The `outcome` argument of `greenlet:dead` for an outcome name of the report (names and
/// codes: `greenlet::probes::Outcome`).
pub fn outcome_code(name: &str) -> u8 {
    greenlet::probes::Outcome::ALL
        .iter()
        .find(|o| o.name() == name)
        .unwrap_or_else(|| panic!("unknown outcome {name:?}"))
        .code()
}

impl Report {
    /// Reads the report the workload printed on `stdout` (its only line).
    pub fn parse(stdout: &str) -> Report {
        serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("the workload's report is not valid JSON ({e}): {stdout}"))
    }

    /// Edge counts of one kind (`"switch"` or `"throw"`), by (origin, target).
    pub fn edges_of(&self, kind: &str) -> BTreeMap<(u64, u64), u64> {
        let mut map = BTreeMap::new();
        for e in self.edges.iter().filter(|e| e.kind == kind) {
            *map.entry((e.origin, e.target)).or_insert(0) += e.count;
        }
        map
    }

    /// Transfers of one kind (or both, with `None`) into each greenlet.
    pub fn inbound(&self, kind: Option<&str>) -> BTreeMap<u64, u64> {
        let mut map = BTreeMap::new();
        for e in &self.edges {
            if kind.is_none_or(|k| k == e.kind) {
                *map.entry(e.target).or_insert(0) += e.count;
            }
        }
        map
    }

    pub fn greenlet(&self, id: u64) -> &GreenletInfo {
        self.greenlets
            .iter()
            .find(|g| g.id == id)
            .unwrap_or_else(|| panic!("greenlet {id} is not in the report"))
    }

    /// The name the scripts give a greenlet: `<main>` for a main greenlet.
    pub fn script_name(&self, id: u64) -> String {
        let g = self.greenlet(id);
        if g.main && g.name.is_empty() {
            "<main>".to_string()
        } else {
            g.name.clone()
        }
    }

    /// Greenlets per script name.
    pub fn names_count(&self) -> BTreeMap<String, u64> {
        let mut map = BTreeMap::new();
        for g in &self.greenlets {
            *map.entry(self.script_name(g.id)).or_insert(0) += 1;
        }
        map
    }

    /// The thread index of each Linux thread id.
    pub fn tids(&self) -> HashMap<i32, u32> {
        self.per_thread.iter().map(|t| (t.tid, t.thread)).collect()
    }
}
