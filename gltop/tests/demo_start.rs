//! The README's main job starts every time (issue 10, item 3): `gltop/demo.sh`, which
//! `make demo` runs, is started 50 times in a row, and every start must end with gltop
//! attached to the demo itself and reporting its greenlets. (A launcher that read `$!` before
//! the forked shell had exec'd the demo handed gltop the shell, which has no probes: 2 starts
//! in 11 failed that way.)

mod support;

use std::path::Path;
use std::process::{Command, Stdio};

use support::{bpf_or_skip, example, json_lines, serial};

const STARTS: usize = 50;

#[test]
fn the_demo_starts_under_gltop_fifty_times_out_of_fifty() {
    if !bpf_or_skip("the_demo_starts_under_gltop_fifty_times_out_of_fifty") {
        return;
    }
    let _serial = serial();
    let gltop = Path::new(env!("CARGO_BIN_EXE_gltop"));
    let bin_dir = gltop.parent().expect("gltop's directory");
    let demo = example("demo");
    assert_eq!(
        demo.parent(),
        Some(bin_dir),
        "the demo and gltop must be built side by side"
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo.sh");
    let mut failures = Vec::new();
    for start in 1..=STARTS {
        let out = Command::new("bash")
            .arg(&script)
            .args(["--json", "-n", "1", "-d", "0.3", "--hit-cost-ns", "700"])
            .env("GLTOP_BIN_DIR", bin_dir)
            .env_remove("GLTOP_DEBUG")
            .stdin(Stdio::null())
            .output()
            .expect("run gltop/demo.sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why = if !out.status.success() {
            Some(format!("exit {}: {}", out.status, stderr.trim()))
        } else {
            let lines = json_lines(&stdout);
            match lines.as_slice() {
                [line] if line["process"] != "demo" => Some(format!(
                    "attached to {} instead of the demo",
                    line["process"]
                )),
                [line] if line["totals"]["greenlets_created"].as_u64().unwrap_or(0) == 0 => {
                    Some(format!("no greenlet seen: {line}"))
                }
                [_] => None,
                other => Some(format!("{} JSON lines instead of 1", other.len())),
            }
        };
        if let Some(why) = why {
            failures.push(format!("start {start}: {why}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {STARTS} starts failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
