//! Running bpftrace against a workload process, and reading its `-f json` output.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::Instant;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use super::{ci, wait_timeout, TIMEOUT};

/// Whether bpftrace can run here. Outside CI, a test that cannot run prints why and returns
/// early; under `CI=true` it fails instead.
pub fn available(test: &str) -> bool {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    let result = PROBE.get_or_init(|| {
        let out = Command::new("bpftrace")
            .args(["-e", "BEGIN { printf(\"ok\\n\"); exit(); }"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run bpftrace: {e}"))?;
        if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok") {
            Ok(())
        } else {
            Err(format!(
                "bpftrace cannot load a BPF program ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    });
    match result {
        Ok(()) => true,
        Err(reason) if ci() => panic!("CI=true, but {test} cannot run: {reason}"),
        Err(reason) => {
            // Straight to stderr, past the test harness's capture, so the skip is seen.
            let _ = writeln!(std::io::stderr(), "skipping {test}: {reason}");
            false
        }
    }
}

/// What bpftrace runs.
pub enum Program<'a> {
    /// A script file that takes the binary path as `$1`.
    File(&'a Path),
    /// A program text that takes the binary path as `$1`.
    Text(&'a str),
    /// A program text without `$1` (`usdt::greenlet:...` probes, found through `-p`).
    OneLiner(&'a str),
}

/// A bpftrace attached to one process (`-p PID`), with `/proc/PID/exe` as `$1` (except for a
/// one-liner).
pub struct Bpftrace {
    child: Child,
    lines: Receiver<String>,
    stderr: Option<JoinHandle<String>>,
    seen: Vec<String>,
}

impl Bpftrace {
    /// Starts bpftrace with `-f json -p PID PROGRAM /proc/PID/exe` and waits until its BEGIN
    /// probe has printed: bpftrace fires BEGIN once every probe is attached. Every program
    /// given here must print something from BEGIN.
    pub fn attach(program: Program<'_>, pid: u32) -> Bpftrace {
        let mut args: Vec<String> = ["-f", "json", "-p", &pid.to_string()]
            .map(String::from)
            .to_vec();
        let exe = format!("/proc/{pid}/exe");
        match program {
            Program::File(path) => args.extend([path.display().to_string(), exe]),
            Program::Text(text) => args.extend(["-e".to_string(), text.to_string(), exe]),
            Program::OneLiner(text) => args.extend(["-e".to_string(), text.to_string()]),
        }
        Bpftrace::spawn(&args)
    }

    /// Starts bpftrace with `args` (which should include `-f json`) and waits until its BEGIN
    /// probe has printed.
    pub fn spawn(args: &[String]) -> Bpftrace {
        let mut child = Command::new("bpftrace")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start bpftrace");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().expect("piped stderr");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        });
        let mut bt = Bpftrace {
            child,
            lines,
            stderr: Some(stderr),
            seen: Vec::new(),
        };
        bt.wait_for_begin();
        bt
    }

    fn wait_for_begin(&mut self) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let begun = line.contains("\"type\": \"printf\"");
                    self.seen.push(line);
                    if begun {
                        return;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default());
                    panic!(
                        "bpftrace never printed from BEGIN; stdout: {:?}; stderr: {}",
                        self.seen,
                        stderr.unwrap_or_default()
                    );
                }
            }
        }
    }

    /// Waits for bpftrace to exit by itself (it does when the traced process exits) and
    /// returns its output.
    pub fn finish(mut self) -> Output {
        let status = wait_timeout(&mut self.child, "bpftrace", TIMEOUT);
        self.collect(status.success(), &status.to_string())
    }

    /// Stops bpftrace with SIGINT, as Ctrl-C does, and returns its output.
    pub fn interrupt(mut self) -> Output {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT).expect("SIGINT to bpftrace");
        let status = wait_timeout(&mut self.child, "bpftrace", TIMEOUT);
        self.collect(status.success(), &status.to_string())
    }

    fn collect(&mut self, ok: bool, status: &str) -> Output {
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        let mut lines = std::mem::take(&mut self.seen);
        lines.extend(self.lines.try_iter());
        assert!(ok, "bpftrace failed ({status}): {stderr}");
        // Under `-c`, the traced program's own output shares bpftrace's stdout.
        let (json, other): (Vec<String>, Vec<String>) = lines
            .into_iter()
            .filter(|l| !l.trim().is_empty())
            .partition(|l| l.starts_with('{'));
        let events: Vec<Value> = json
            .iter()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!("bpftrace printed a line that is not JSON ({e}): {l}")
                })
            })
            .collect();
        let output = Output {
            events,
            other,
            stderr,
        };
        output.assert_nothing_lost();
        output
    }
}

impl Drop for Bpftrace {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One bucket of a bpftrace histogram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub count: u64,
}

/// What bpftrace printed, one JSON object per line.
pub struct Output {
    pub events: Vec<Value>,
    /// Lines that are not JSON: the output of a program run with `-c`.
    pub other: Vec<String>,
    pub stderr: String,
}

impl Output {
    fn of_type<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.events
            .iter()
            .filter(move |e| e["type"] == kind)
            .map(|e| &e["data"])
    }

    fn assert_nothing_lost(&self) {
        let lost: Vec<&Value> = self.of_type("lost_events").collect();
        assert!(lost.is_empty(), "bpftrace lost events: {lost:?}");
    }

    /// Every print of the map `name` (`@name`), in order: keys (joined with ",", as bpftrace
    /// prints them; "" for a map without keys) to values.
    pub fn map_prints(&self, name: &str) -> Vec<BTreeMap<String, i64>> {
        self.of_type("map")
            .filter_map(|data| data.get(name))
            .map(|value| match value {
                Value::Object(entries) => entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_i64().expect("an integer map value")))
                    .collect(),
                v => BTreeMap::from([(String::new(), v.as_i64().expect("an integer value"))]),
            })
            .collect()
    }

    /// The map `name` as printed last (empty if it was never printed).
    pub fn map(&self, name: &str) -> BTreeMap<String, i64> {
        self.map_prints(name).pop().unwrap_or_default()
    }

    /// The map `name` summed over all its prints (for maps cleared after each print).
    pub fn map_sum(&self, name: &str) -> BTreeMap<String, i64> {
        let mut sum = BTreeMap::new();
        for print in self.map_prints(name) {
            for (k, v) in print {
                *sum.entry(k).or_insert(0) += v;
            }
        }
        sum
    }

    /// The histogram `name` as printed last, per key ("" for a histogram without keys).
    pub fn hist(&self, name: &str) -> BTreeMap<String, Vec<Bucket>> {
        let Some(data) = self.of_type("hist").filter_map(|d| d.get(name)).last() else {
            return BTreeMap::new();
        };
        let buckets = |v: &Value| -> Vec<Bucket> {
            v.as_array()
                .expect("histogram buckets")
                .iter()
                .map(|b| Bucket {
                    min: b["min"].as_i64(),
                    max: b["max"].as_i64(),
                    count: b["count"].as_u64().expect("bucket count"),
                })
                .collect()
        };
        match data {
            Value::Object(keyed) => keyed.iter().map(|(k, v)| (k.clone(), buckets(v))).collect(),
            v => BTreeMap::from([(String::new(), buckets(v))]),
        }
    }

    /// The text of every printf, in order.
    pub fn printfs(&self) -> Vec<String> {
        self.of_type("printf")
            .map(|d| d.as_str().expect("printf text").to_string())
            .collect()
    }

    /// How many `time()` stamps were printed.
    pub fn times(&self) -> usize {
        self.of_type("time").count()
    }
}

/// Splits a bpftrace map key ("1,2" or "7,worker") into its parts.
pub fn key_parts(key: &str, n: usize) -> Vec<&str> {
    let parts: Vec<&str> = key.splitn(n, ',').collect();
    assert_eq!(parts.len(), n, "map key {key:?} has fewer than {n} parts");
    parts
}

/// Parses a numeric key part.
pub fn num(part: &str) -> u64 {
    part.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{part:?} is not a number"))
}
