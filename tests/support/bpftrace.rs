//! Running bpftrace against a workload process, the way `scripts/README.md` says (through
//! `scripts/bpftrace.sh`), and reading its `-f json` output strictly: a record bpftrace does
//! not print for these programs, a shape it does not have, or a key twice in one object is an
//! error, never something to skip or overwrite.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;

use nix::sys::signal::Signal;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::rules::{require, root, Proc, TIMEOUT};

/// `scripts/bpftrace.sh`: bpftrace with the same arguments, less the RLIMIT_MEMLOCK error line
/// of bpftrace 0.17 where it means nothing. The README runs bpftrace through it; so do these
/// tests.
pub fn wrapper() -> PathBuf {
    root().join("scripts").join("bpftrace.sh")
}

/// What bpftrace 0.17 prints to stderr when it cannot raise RLIMIT_MEMLOCK; `bpftrace.sh`
/// must keep it from the user.
pub const MEMLOCK_ERROR: &str = "couldn't set RLIMIT_MEMLOCK";

/// Whether bpftrace can load a BPF program here (`Err`: why not), checked once.
pub fn check() -> Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
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
        })
        .clone()
}

/// Whether `test`, which runs bpftrace, can run here: [`require`] of [`check`].
pub fn available(test: &str) -> bool {
    require(test, check())
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
    /// `bpftrace.sh`, leader of its own process group (bpftrace, the wrapper's filter, and
    /// the program of `-c`).
    proc: Proc,
    /// Run with `-c`: the traced program's own lines share bpftrace's stdout.
    program_output: bool,
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

    /// Starts `scripts/bpftrace.sh` with `args` (which should include `-f json`), in a
    /// process group of its own as a shell's job is, and waits until bpftrace's BEGIN probe
    /// has printed.
    pub fn spawn(args: &[String]) -> Bpftrace {
        let mut bt = Bpftrace {
            proc: Proc::spawn_group(
                Command::new(wrapper())
                    .args(args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped()),
            ),
            program_output: args.iter().any(|a| a == "-c"),
        };
        bt.wait_for_begin();
        bt
    }

    fn wait_for_begin(&mut self) {
        let begun = self
            .proc
            .wait_stdout_line(TIMEOUT, |l| l.contains("\"type\": \"printf\""));
        if begun.is_none() {
            self.proc.kill();
            panic!(
                "bpftrace never printed from BEGIN; stdout: {:?}; stderr: {}",
                self.proc.stdout_text(),
                self.proc.stderr_text()
            );
        }
    }

    /// Waits for bpftrace to exit by itself (it does when the traced process exits) and
    /// returns its output.
    pub fn finish(mut self) -> Output {
        let status = self.proc.wait("bpftrace", TIMEOUT);
        self.collect(status)
    }

    /// Stops bpftrace with SIGINT to its process group, as Ctrl-C does, and returns its
    /// output.
    pub fn interrupt(mut self) -> Output {
        self.proc.signal(Signal::SIGINT);
        let status = self.proc.wait("bpftrace", TIMEOUT);
        self.collect(status)
    }

    fn collect(&mut self, status: ExitStatus) -> Output {
        let stderr = self.proc.stderr_text();
        let lines: Vec<String> = self.proc.stdout_text().lines().map(String::from).collect();
        assert!(status.success(), "bpftrace failed ({status}): {stderr}");
        Output::parse(&lines, stderr, self.program_output)
            .unwrap_or_else(|e| panic!("bpftrace's output: {e}"))
    }
}

/// A JSON value read with every object's keys checked: `serde_json::Value` keeps the last of
/// two equal keys, which hid a map whose equal-looking keys bpftrace printed twice.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Strict, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Strict, E> {
        Number::from_f64(v)
            .map(|n| Strict(Value::Number(n)))
            .ok_or_else(|| E::custom(format!("not a JSON number: {v}")))
    }

    fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict(Value::String(v.to_string())))
    }

    fn visit_string<E>(self, v: String) -> Result<Strict, E> {
        Ok(Strict(Value::String(v)))
    }

    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Strict(Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(value) = map.next_value()?;
            if object.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            object.insert(key, value);
        }
        Ok(Strict(Value::Object(object)))
    }
}

/// Parses one line as JSON, rejecting an object with a key twice.
fn strict_json(line: &str) -> Result<Value, String> {
    let mut de = serde_json::Deserializer::from_str(line);
    let Strict(value) = Strict::deserialize(&mut de).map_err(|e| format!("{e}: {line}"))?;
    de.end().map_err(|e| format!("{e}: {line}"))?;
    Ok(value)
}

/// Checks that `record` is one bpftrace 0.17 prints with `-f json` for the programs these
/// tests run, in the shape it prints it: `{"type": T, "data": D}` with
/// - attached_probes: `{"probes": N}`, lost_events: `{"events": N}`,
/// - printf, time: a string,
/// - map: `{"@name": N}` or `{"@name": {"key": N, ...}}`,
/// - hist: `{"@name": [BUCKET, ...]}` or `{"@name": {"key": [BUCKET, ...], ...}}`, where a
///   bucket is `{"min": N, "max": N, "count": N}` (the first bucket has no min).
fn check_record(record: &Value) -> Result<(), String> {
    let fields = record.as_object().ok_or("not an object")?;
    if fields.len() != 2 || !fields.contains_key("type") || !fields.contains_key("data") {
        return Err("not {\"type\", \"data\"}".into());
    }
    let data = &fields["data"];
    let integer = |v: &Value| v.as_i64().is_some();
    let one_field = |name: &str| {
        data.as_object()
            .is_some_and(|o| o.len() == 1 && o.get(name).is_some_and(integer))
    };
    let ok = match fields["type"]
        .as_str()
        .ok_or("a type that is not a string")?
    {
        "attached_probes" => one_field("probes"),
        "lost_events" => one_field("events"),
        "printf" | "time" => data.is_string(),
        "map" => map_data(data, &integer),
        "hist" => map_data(data, &|v: &Value| {
            v.as_array()
                .is_some_and(|buckets| buckets.iter().all(bucket))
        }),
        other => return Err(format!("a record of type {other:?}")),
    };
    if ok {
        Ok(())
    } else {
        Err("data of an unexpected shape".into())
    }
}

/// `{"@name": V}` or `{"@name": {"key": V, ...}}`, each V passing `value`.
fn map_data(data: &Value, value: &dyn Fn(&Value) -> bool) -> bool {
    let Some(maps) = data.as_object() else {
        return false;
    };
    let Some((name, v)) = maps.iter().next() else {
        return false;
    };
    maps.len() == 1
        && name.starts_with('@')
        && match v {
            Value::Object(keyed) => keyed.values().all(value),
            v => value(v),
        }
}

fn bucket(b: &Value) -> bool {
    b.as_object().is_some_and(|b| {
        b.get("count").is_some_and(Value::is_u64)
            && b.iter()
                .all(|(k, v)| matches!(k.as_str(), "min" | "max" | "count") && v.as_i64().is_some())
    })
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
    /// bpftrace's records, in order, each checked by [`check_record`].
    pub events: Vec<Value>,
    /// The lines of the program run with `-c` (which shares bpftrace's stdout).
    pub other: Vec<String>,
    pub stderr: String,
}

impl Output {
    /// Reads what bpftrace printed: `stdout`, its lines, and `stderr`. Every non-empty line
    /// must be a bpftrace record (see [`check_record`]), except under `-c`
    /// (`program_output`), where lines that do not start as a record are the traced
    /// program's and go to `other`. `stderr` must hold no `ERROR` line: neither bpftrace's
    /// RLIMIT_MEMLOCK error nor its "failed to detach probe" where tracefs is not mounted
    /// (`scripts/bpftrace.sh` avoids both; users read ERROR as a failure).
    pub fn parse(
        stdout: &[String],
        stderr: String,
        program_output: bool,
    ) -> Result<Output, String> {
        if let Some(line) = stderr.lines().find(|l| l.contains(MEMLOCK_ERROR)) {
            return Err(format!("stderr has the RLIMIT_MEMLOCK error: {line}"));
        }
        if let Some(line) = stderr.lines().find(|l| l.contains("ERROR")) {
            return Err(format!("stderr has an ERROR line: {line}"));
        }
        let mut events = Vec::new();
        let mut other = Vec::new();
        for line in stdout.iter().filter(|l| !l.trim().is_empty()) {
            if program_output && !line.starts_with("{\"type\": ") {
                other.push(line.clone());
                continue;
            }
            let record = strict_json(line)
                .map_err(|e| format!("not one JSON object with distinct keys: {e}"))?;
            check_record(&record).map_err(|e| format!("unexpected record, {e}: {line}"))?;
            events.push(record);
        }
        let output = Output {
            events,
            other,
            stderr,
        };
        output.check_nothing_lost()?;
        Ok(output)
    }

    fn of_type<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.events
            .iter()
            .filter(move |e| e["type"] == kind)
            .map(|e| &e["data"])
    }

    fn check_nothing_lost(&self) -> Result<(), String> {
        let lost: Vec<&Value> = self.of_type("lost_events").collect();
        if lost.is_empty() {
            Ok(())
        } else {
            Err(format!("bpftrace lost events: {lost:?}"))
        }
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

/// A map keyed by two numbers (`@m[arg0, arg1]`, e.g. an edge's origin and target): counts
/// by (first, second).
pub fn pairs(map: &BTreeMap<String, i64>) -> BTreeMap<(u64, u64), u64> {
    map.iter()
        .map(|(k, v)| {
            let p = key_parts(k, 2);
            ((num(p[0]), num(p[1])), *v as u64)
        })
        .collect()
}
