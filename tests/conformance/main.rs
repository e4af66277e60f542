//! Differential conformance tests: random greenlet scripts run on Python greenlet 3.5.6 and on
//! this runtime must write the same canonical transcript (see `conformance/README.md`).
//!
//! Environment:
//! - `CONFORMANCE_N` scripts to run (default 2000), `CONFORMANCE_SEED` (default fixed; `run.sh`
//!   picks a random one), `CONFORMANCE_SHRINK` how many divergences to shrink and save
//!   (default 3), `CONFORMANCE_PYTHON` the interpreter (default `python3`).
//! - Without Python greenlet the tests skip with a printed reason, except under `CI=true`,
//!   where they fail.

mod gen;
mod interp;
mod oracle;
mod script;
mod shrink;
#[path = "../support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use script::Script;

const DEFAULT_SEED: u64 = 0x6772_6565_6e6c_6574; // "greenlet"
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(20);

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Err(_) => default,
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("{name}={s} is not a number"))
        }
    }
}

/// Whether the reference can run here: [`support::require`] of Python greenlet.
fn python_ready() -> bool {
    support::require("the differential test", oracle::available())
}

/// The Rust transcript of `script`, run on a fresh thread (a fresh main greenlet, and a
/// runtime panic or hang cannot take the harness with it).
fn rust_transcript(script: &Script) -> Vec<String> {
    let (tx, rx) = mpsc::channel();
    let s = script.clone();
    std::thread::Builder::new()
        .name("conformance".into())
        .spawn(move || {
            let t = std::panic::catch_unwind(|| interp::run(&s))
                .unwrap_or_else(|_| vec!["internal panic outside the interpreter".into()]);
            let _ = tx.send(t);
        })
        .expect("spawn");
    match rx.recv_timeout(SCRIPT_TIMEOUT) {
        Ok(t) => t,
        Err(_) => panic!(
            "the Rust interpreter hung (or its thread died) on this script:\n{}",
            script.to_text()
        ),
    }
}

/// The kind of a transcript line, for the coverage summary: `trace throw`, `caught`, `leak`...
fn line_kind(line: &str) -> String {
    let mut words = line.split(' ');
    let first = words.next().unwrap_or("");
    let second = words.next().unwrap_or("");
    let third = words.next().unwrap_or("");
    let kind = if first.starts_with('[') {
        match second {
            "caught" | "uncaught" => format!("{second} {}", third.split('(').next().unwrap()),
            _ => second.to_string(),
        }
    } else if first == "trace" || first == "unraisable" {
        format!("{first} {}", second.split('(').next().unwrap())
    } else if first.starts_with('t') && first[1..].chars().all(|c| c.is_ascii_digit()) {
        format!("tracer {second}")
    } else {
        first.to_string()
    };
    if line.ends_with(": missing") {
        format!("{kind}: missing")
    } else {
        kind
    }
}

/// A line diff of two transcripts: `  ` both, `- ` Python only, `+ ` Rust only.
fn diff(py: &[String], rs: &[String]) -> String {
    let (n, m) = (py.len(), rs.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if py[i] == rs[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < n || j < m {
        if i < n && j < m && py[i] == rs[j] {
            out += &format!("    {}\n", py[i]);
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out += &format!("  + {}\n", rs[j]);
            j += 1;
        } else {
            out += &format!("  - {}\n", py[i]);
            i += 1;
        }
    }
    out
}

fn regressions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/regressions")
}

fn report(title: &str, script: &Script, py: &[String], rs: &[String]) -> String {
    format!(
        "{title}\n--- script\n{}--- transcript (- Python greenlet, + Rust)\n{}",
        script.to_text(),
        diff(py, rs)
    )
}

#[test]
fn random_scripts_agree_with_python_greenlet() {
    if !python_ready() {
        return;
    }
    let n = env_u64("CONFORMANCE_N", 2000);
    let seed = env_u64("CONFORMANCE_SEED", DEFAULT_SEED);
    let max_shrink = env_u64("CONFORMANCE_SHRINK", 3) as usize;
    eprintln!("conformance: {n} scripts, CONFORMANCE_SEED={seed:#x}");

    let mut oracle = oracle::Oracle::start();
    let mut divergent = Vec::new();
    let mut lines = 0usize;
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    // In chunks, so 10^5 scripts never sit in memory at once.
    let chunk = 5000u64;
    let mut start = 0;
    while start < n {
        let end = (start + chunk).min(n);
        let scripts: Vec<Script> = (start..end)
            .map(|i| gen::script(gen::script_seed(seed, i)))
            .collect();
        oracle.run_batch(&scripts, |k, py| {
            assert!(
                !py.iter().any(|l| l.starts_with("internal")),
                "{}",
                report("the Python interpreter failed", &scripts[k], &py, &[])
            );
            let rs = rust_transcript(&scripts[k]);
            lines += py.len();
            for l in &py {
                *kinds.entry(line_kind(l)).or_default() += 1;
            }
            if py != rs {
                divergent.push((start + k as u64, scripts[k].clone()));
            }
        });
        start = end;
    }
    let summary: Vec<String> = kinds.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    eprintln!(
        "conformance: transcript lines by kind: {}",
        summary.join(", ")
    );
    eprintln!(
        "conformance: {n} scripts, {lines} transcript lines, {} divergent",
        divergent.len()
    );
    if divergent.is_empty() {
        return;
    }

    let mut reports = Vec::new();
    let mut seen = Vec::new();
    for (index, script) in divergent.iter().take(max_shrink) {
        let small = shrink::shrink(script, |s| oracle.run(s) != rust_transcript(s));
        if seen.contains(&small) {
            continue;
        }
        let py = oracle.run(&small);
        let rs = rust_transcript(&small);
        let name = format!("found-{seed:x}-{index}");
        let header = format!(
            "# Found by random_scripts_agree_with_python_greenlet (CONFORMANCE_SEED={seed:#x}, \
             script {index}), shrunk.\n# {name}.expected is Python greenlet's transcript.\n"
        );
        let dir = regressions_dir();
        std::fs::write(dir.join(format!("{name}.glt")), header + &small.to_text()).unwrap();
        std::fs::write(dir.join(format!("{name}.expected")), py.join("\n") + "\n").unwrap();
        reports.push(report(
            &format!("divergence saved as tests/conformance/regressions/{name}.glt"),
            &small,
            &py,
            &rs,
        ));
        seen.push(small);
    }
    panic!(
        "{} of {n} scripts diverge (seed {seed:#x}); the first, shrunk:\n\n{}",
        divergent.len(),
        reports.join("\n")
    );
}

/// Every saved case: the Rust transcript must equal the recorded Python one (and, when Python
/// is here, the recording must still be what Python says).
#[test]
fn regression_cases_agree_with_python_greenlet() {
    // Without Python, the cases are checked against their recorded transcripts only.
    let python = support::require(
        "the check of the recorded transcripts against Python greenlet",
        oracle::available(),
    );
    let mut oracle = python.then(oracle::Oracle::start);
    let mut cases: Vec<PathBuf> = std::fs::read_dir(regressions_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "glt"))
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no regression cases found");
    let mut failures = Vec::new();
    for path in &cases {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let script = Script::parse(&std::fs::read_to_string(path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let expected: Option<Vec<String>> =
            std::fs::read_to_string(path.with_extension("expected"))
                .ok()
                .map(|t| t.lines().map(str::to_string).collect());
        let py = match (&mut oracle, &expected) {
            (Some(o), _) => {
                let py = o.run(&script);
                if let Some(exp) = &expected {
                    assert_eq!(
                        &py, exp,
                        "{name}.expected is stale: Python greenlet now says otherwise"
                    );
                }
                py
            }
            (None, Some(exp)) => exp.clone(),
            (None, None) => continue,
        };
        let rs = rust_transcript(&script);
        if py != rs {
            failures.push(report(
                &format!("regression case {name} diverges"),
                &script,
                &py,
                &rs,
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
