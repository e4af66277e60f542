//! `gltop -p PID --print-bpftrace` on a Rust process: the printed program, run with bpftrace
//! over the oracle `workload`, counts switches and throws per (origin, target) as the
//! workload's own settrace report does. (The Python side is in gltop_python.rs.)

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use support::workload::{workload_bin, Report};
use support::*;

#[test]
fn the_printed_bpftrace_program_of_a_rust_process_counts_what_settrace_counts() {
    let what = "the_printed_bpftrace_program_of_a_rust_process_counts_what_settrace_counts";
    if !bpf_or_skip(what) || !bpftrace::available(what) {
        return;
    }
    let _serial = serial();
    let dir = std::env::temp_dir().join(format!("gltop-print-bpftrace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let go = dir.join("go");
    let program = dir.join("edges.bt");
    let mut w = Proc::spawn(
        Command::new(workload_bin())
            .args(["--threads", "2", "--greenlets", "4", "--switches", "2000"])
            .args(["--throws", "100", "--wait-for-file"])
            .arg(&go)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let out = gltop()
        .args(["-p", &w.pid().to_string(), "--print-bpftrace"])
        .output()
        .expect("run gltop --print-bpftrace");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(text.contains(":greenlet:switch"), "{text}");
    std::fs::write(&program, &text).unwrap();
    let mut bt = Proc::spawn_group(
        Command::new(bpftrace::wrapper())
            .args(["-f", "json"])
            .arg(&program)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let begun = bt.wait_stdout_line(TIMEOUT, |l| l.contains("\"type\": \"printf\""));
    assert!(begun.is_some(), "bpftrace: {}", bt.stderr_so_far());
    std::fs::write(&go, "").unwrap();
    assert!(w.wait("workload", TIMEOUT).success(), "{}", w.stderr_text());
    let report = Report::parse(&w.stdout_text());
    // bpftrace stops by itself when the workload's main thread exits.
    let st = bt.wait("bpftrace", TIMEOUT);
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = bt.stderr_text();
    assert!(st.success(), "bpftrace: {stderr}");
    let lines: Vec<String> = bt.stdout_text().lines().map(String::from).collect();
    let output = bpftrace::Output::parse(&lines, stderr, false).expect("bpftrace's output");
    let (mut switches, mut throws) = (BTreeMap::new(), BTreeMap::new());
    for e in &report.edges {
        let map = if e.kind == "switch" {
            &mut switches
        } else {
            &mut throws
        };
        *map.entry((e.origin, e.target)).or_insert(0) += e.count;
    }
    assert!(!switches.is_empty() && !throws.is_empty());
    assert_eq!(bpftrace::pairs(&output.map("@switches")), switches);
    assert_eq!(bpftrace::pairs(&output.map("@throws")), throws);
}
