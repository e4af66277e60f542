//! `blocker`: its JSON report line, `--wait-for-file`, and its one-line errors.

use std::collections::BTreeSet;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn blocker(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_blocker"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run blocker")
}

/// The one report line, with exactly the documented keys.
fn report(out: &Output) -> Value {
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stdout: {text:?}");
    let report: Value = serde_json::from_str(lines[0]).expect("JSON");
    let keys: BTreeSet<&str> = report
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    let want: BTreeSet<&str> = [
        "scenario",
        "pid",
        "tid",
        "main",
        "greenlets",
        "episodes",
        "work",
        "switches",
        "elapsed_ns",
        "thread_cpu_ns",
        "switches_per_s",
    ]
    .into();
    assert_eq!(keys, want);
    report
}

#[test]
fn sleep_reports_its_greenlet_thread_and_duration() {
    let out = blocker(&["--scenario", "sleep", "--ms", "120", "--repeat", "2"]);
    let r = report(&out);
    assert_eq!(r["scenario"], "sleep");
    assert_eq!(r["tid"], r["pid"], "it runs on the main thread");
    let greenlets = r["greenlets"].as_array().unwrap();
    let episodes = r["episodes"].as_array().unwrap();
    assert_eq!((greenlets.len(), episodes.len()), (2, 2));
    for (g, e) in greenlets.iter().zip(episodes) {
        assert_eq!(g["name"], "sleeper");
        assert_eq!(g["idle"], false);
        assert_eq!(e["greenlet"], g["id"]);
        assert_eq!(e["syscall"], "nanosleep");
        assert_eq!(e["function"], "sleep_blocking");
        assert_eq!(e["cpu"], "off");
        let measured = e["measured_ns"].as_u64().unwrap();
        assert!(measured >= 120_000_000, "slept {measured} ns");
        assert!(e["cpu_ns"].as_u64().unwrap() < measured / 2);
        assert!(e["turn_ns"].as_u64().unwrap() >= measured, "{e}");
    }
    assert_ne!(greenlets[0]["id"], greenlets[1]["id"]);
    // Each repetition: main -> sleeper, 100 round trips, the result back.
    assert_eq!(r["switches"], 2 * 202);
}

#[test]
fn split_shares_its_work_70_30() {
    let r = report(&blocker(&["--scenario", "split", "--seconds", "0.3"]));
    let work = r["work"].as_array().unwrap();
    assert_eq!(work.len(), 2);
    assert_eq!(
        (work[0]["name"].as_str(), work[1]["name"].as_str()),
        (Some("seventy"), Some("thirty"))
    );
    let turns = (
        work[0]["turns"].as_u64().unwrap(),
        work[1]["turns"].as_u64().unwrap(),
    );
    assert_eq!(
        turns.0,
        turns.1 + 1,
        "they take turns; seventy has the last"
    );
    assert_eq!(r["switches"].as_u64().unwrap(), turns.0 + turns.1 + 3);
    let share = work[0]["share"].as_f64().unwrap();
    assert!((0.65..0.75).contains(&share), "seventy's share {share}");
    // The work is CPU work: the thread had at least that much CPU time (the rate is measured
    // against the same clock, over 20 ms of a shared machine: 25% for its error), and spent most of it working, not
    // switching (a debug build's switch costs about a microsecond).
    let busy: u64 = work.iter().map(|w| w["busy_ns"].as_u64().unwrap()).sum();
    let cpu = r["thread_cpu_ns"].as_u64().unwrap();
    assert!(
        busy as f64 <= cpu as f64 * 1.25,
        "work {busy} ns > CPU {cpu} ns"
    );
    assert!(
        busy as f64 >= cpu as f64 * 0.3,
        "work {busy} ns of CPU {cpu} ns"
    );
}

#[test]
fn wait_for_file_waits_for_the_file() {
    let dir = std::env::temp_dir().join(format!("blocker-wait-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let go = dir.join("go");
    let mut child = Command::new(env!("CARGO_BIN_EXE_blocker"))
        .args(["--scenario", "spin", "--ms", "10", "--wait-for-file"])
        .arg(&go)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "it waits");
    std::fs::write(&go, b"").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "blocker did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let r = report(&out);
    assert_eq!(r["episodes"][0]["cpu"], "on");
}

#[test]
fn bad_input_is_one_line_and_status_2() {
    for args in [
        &["--scenario", "nope"][..],
        &["--scenario", "spin", "--ms", "0"],
        &["--scenario", "split", "--seconds", "nan"],
        &[],
    ] {
        let out = blocker(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{args:?}: {err:?}");
        assert!(err.starts_with("blocker: "), "{err:?}");
        assert!(out.stdout.is_empty());
    }
}
