//! Misuse of gltop: each mistake gives one line on stderr, exit code 2, and no backtrace.

mod gltop_common;

use std::process::{Command, Stdio};

use gltop_common::*;

/// Runs gltop with `args` (and `wrap` before it, e.g. to drop privileges); returns
/// (exit code, stderr).
fn run(wrap: &[&str], args: &[String]) -> (Option<i32>, String) {
    let gltop = env!("CARGO_BIN_EXE_gltop");
    let mut cmd = match wrap.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(gltop);
            c
        }
        None => Command::new(gltop),
    };
    let out = cmd
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run gltop");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_line_exit_2(case: &str, wrap: &[&str], args: &[String], expect: &str) {
    let (code, err) = run(wrap, args);
    assert_eq!(code, Some(2), "{case}: exit code; stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{case}: one line on stderr, got {err:?}");
    assert!(lines[0].starts_with("gltop: "), "{case}: {err:?}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{case}: {err:?}"
    );
    assert!(
        err.to_lowercase().contains(&expect.to_lowercase()),
        "{case}: {err:?} should mention {expect:?}"
    );
}

fn s(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

#[test]
fn bad_flags_are_one_line_and_exit_2() {
    let me = std::process::id().to_string();
    let cases: &[(&str, Vec<String>, &str)] = &[
        (
            "no arguments",
            s(&[]),
            "required arguments were not provided: --pid <PID>",
        ),
        (
            "unknown flag",
            s(&["-p", &me, "--frobnicate"]),
            "--frobnicate",
        ),
        (
            "missing PID value",
            s(&["-p"]),
            "a value is required for '--pid <PID>'",
        ),
        (
            "non-numeric PID",
            s(&["-p", "abc"]),
            "a PID is a positive integer",
        ),
        ("PID zero", s(&["-p", "0"]), "a PID is a positive integer"),
        (
            "negative PID",
            s(&["-p", "-5"]),
            "a PID is a positive integer",
        ),
        (
            "non-numeric interval",
            s(&["-p", &me, "-d", "soon"]),
            "not a number of seconds",
        ),
        (
            "zero interval",
            s(&["-p", &me, "-d", "0"]),
            "between 0.05 and 3600 seconds",
        ),
        (
            "negative interval",
            s(&["-p", &me, "-d", "-1"]),
            "between 0.05 and 3600 seconds",
        ),
        (
            "missing interval",
            s(&["-p", &me, "-d"]),
            "a value is required for '--delay",
        ),
        (
            "zero count",
            s(&["-p", &me, "--json", "-n", "0"]),
            "a count is a positive integer",
        ),
        (
            "non-numeric count",
            s(&["-p", &me, "-n", "many"]),
            "a count is a positive integer",
        ),
        (
            "zero capacity",
            s(&["-p", &me, "--max-greenlets", "0"]),
            "a capacity is an integer",
        ),
        (
            "huge capacity",
            s(&["-p", &me, "--max-edges", "99999999999"]),
            "a capacity is",
        ),
        (
            "unknown attach mode",
            s(&["-p", &me, "--attach", "kprobe"]),
            "possible values",
        ),
        (
            "negative hit cost",
            s(&["-p", &me, "--hit-cost-ns", "-3"]),
            "non-negative",
        ),
    ];
    for (case, args, expect) in cases {
        assert_one_line_exit_2(case, &[], args, expect);
    }
}

#[test]
fn a_missing_process_is_one_line_and_exit_2() {
    // PIDs never go this high (pid_max is at most 4194304).
    assert_one_line_exit_2(
        "no such process",
        &[],
        &s(&["-p", "2000000000"]),
        "no such process",
    );
}

#[test]
fn a_process_without_greenlet_probes_is_one_line_and_exit_2() {
    if !bpf_or_skip("a_process_without_greenlet_probes_is_one_line_and_exit_2") {
        return;
    }
    let sleeper = Proc::spawn(Command::new("sleep").arg("30"));
    let pid = sleeper.pid().to_string();
    assert_one_line_exit_2(
        "process without probes",
        &[],
        &s(&["-p", &pid, "--json"]),
        "has no greenlet USDT probes",
    );
}

#[test]
fn running_without_bpf_privilege_names_the_missing_capabilities() {
    if !bpf_or_skip("running_without_bpf_privilege_names_the_missing_capabilities") {
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("setpriv (util-linux) is required under CI=true");
        }
        eprintln!("skipping: setpriv is not installed");
        return;
    }
    let t = target(&["--threads", "1", "--rounds", "10"]);
    let pid = t.pid().to_string();
    // Same user, every capability dropped from all sets.
    let drop_all = [
        "setpriv",
        "--inh-caps=-all",
        "--ambient-caps=-all",
        "--bounding-set=-all",
        "--",
    ];
    assert_one_line_exit_2(
        "no capabilities",
        &drop_all,
        &s(&["-p", &pid, "--json"]),
        "CAP_BPF and CAP_PERFMON",
    );
}

#[test]
fn help_lists_every_flag_and_exits_0() {
    let out = Command::new(env!("CARGO_BIN_EXE_gltop"))
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--pid",
        "--delay",
        "--json",
        "--iterations",
        "--max-greenlets",
        "--max-edges",
        "--attach",
        "--hit-cost-ns",
        "Keys:",
    ] {
        assert!(help.contains(flag), "--help mentions {flag}:\n{help}");
    }
}
