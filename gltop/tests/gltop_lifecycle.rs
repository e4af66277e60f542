//! The life of an attachment: the target exits or execs, gltop is told to stop, and maps ten
//! times too small. (SIGKILL of gltop or of the target, and several gltops at once:
//! `faults_attach.rs`.)

mod gltop_common;

use std::time::Duration;

use gltop_common::*;
use libbpf_rs::query::ProgInfoIter;
use nix::sys::signal::Signal;

/// Loaded BPF programs named like gltop's switch handler.
fn gltop_programs() -> usize {
    ProgInfoIter::default()
        .filter(|p| {
            p.name
                .to_str()
                .is_some_and(|n| n == "up_switch" || n == "usdt_switch")
        })
        .count()
}

fn wait_programs_gone(timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while gltop_programs() != 0 {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// A target that keeps switching for a long time once a tracer is attached.
fn long_target() -> Proc {
    target(&[
        "--threads",
        "2",
        "--greenlets",
        "3",
        "--rounds",
        "100000000",
    ])
}

#[test]
fn sigterm_and_sigint_detach_cleanly_and_exit_zero() {
    if !bpf_or_skip("sigterm_and_sigint_detach_cleanly_and_exit_zero") {
        return;
    }
    let _s = serial();
    let t = long_target();
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        let mut g = gltop_json(t.pid(), &["-d", "1"]);
        assert!(wait_attached(t.pid(), Duration::from_secs(30)));
        g.signal(sig);
        let st = g.wait_for(Duration::from_secs(30)).expect("gltop stopped");
        assert_eq!(st.code(), Some(0), "{sig}: {}", g.stderr_text());
        assert!(
            semaphores_zero_within(t.pid(), Duration::from_secs(10)),
            "{sig}"
        );
    }
    assert!(wait_programs_gone(Duration::from_secs(10)));
}

#[test]
fn the_target_exiting_ends_gltop_with_a_message_and_exit_zero() {
    if !bpf_or_skip("the_target_exiting_ends_gltop_with_a_message_and_exit_zero") {
        return;
    }
    let _s = serial();
    let mut t = target(&["--threads", "1", "--rounds", "1000"]);
    let mut g = gltop_json(t.pid(), &["-d", "60"]);
    t.wait_for(Duration::from_secs(60))
        .expect("the target ends");
    // Long before the 60 s interval: gltop notices the exit within a poll.
    let st = g
        .wait_for(Duration::from_secs(10))
        .expect("gltop ends with its target");
    let err = g.stderr_text();
    assert_eq!(st.code(), Some(0), "{err}");
    assert!(
        err.contains(&format!("process {} (gltop_target) exited", t.pid())),
        "{err}"
    );
    let lines = json_lines(&g.stdout_text());
    assert_eq!(lines.len(), 1, "the final snapshot is printed");
    assert!(lines[0]["totals"]["switches"].as_u64().unwrap() > 0);
}

#[test]
fn a_target_that_execs_ends_gltop_with_a_message() {
    if !bpf_or_skip("a_target_that_execs_ends_gltop_with_a_message") {
        return;
    }
    let _s = serial();
    // The target runs, then replaces itself with `sleep 30` under the same PID.
    let t = target(&[
        "--threads",
        "1",
        "--rounds",
        "1000",
        "--then-exec-sleep",
        "30",
    ]);
    let mut g = gltop_json(t.pid(), &["-d", "60"]);
    let st = g
        .wait_for(Duration::from_secs(20))
        .expect("gltop ends when its target execs");
    let err = g.stderr_text();
    assert_eq!(st.code(), Some(0), "{err}");
    assert!(err.contains("replaced its program (exec)"), "{err}");
    assert!(
        std::fs::read_link(format!("/proc/{}/exe", t.pid())).is_ok_and(|p| p.ends_with("sleep"))
    );
    assert!(wait_programs_gone(Duration::from_secs(10)));
}

#[test]
fn ten_times_more_greenlets_than_the_map_holds_are_counted_as_dropped() {
    if !bpf_or_skip("ten_times_more_greenlets_than_the_map_holds_are_counted_as_dropped") {
        return;
    }
    let _s = serial();
    let mut t = target(&["--threads", "1", "--greenlets", "640", "--rounds", "20"]);
    let mut g = gltop_json(
        t.pid(),
        &["-d", "0.5", "--max-greenlets", "64", "--max-edges", "64"],
    );
    assert!(t
        .wait_for(Duration::from_secs(120))
        .is_some_and(|s| s.success()));
    let st = g.wait_for(Duration::from_secs(30)).expect("gltop ends");
    assert_eq!(st.code(), Some(0), "{}", g.stderr_text());
    let report: serde_json::Value = serde_json::from_str(t.stdout_text().trim()).unwrap();
    let last = json_lines(&g.stdout_text()).pop().unwrap();
    let totals = &last["totals"];
    // Totals live in their own map: still exact.
    assert_eq!(totals["switches"], report["switches"]);
    assert_eq!(totals["greenlets_created"], 641);
    let recorded = last["greenlets"].as_array().unwrap().len() as u64;
    assert!(recorded <= 64, "{recorded} records in a map of 64");
    let evicted = totals["evicted"]["greenlets"].as_u64().unwrap();
    let failed = totals["failed"]["greenlets"].as_u64().unwrap();
    assert!(evicted + failed >= 641 - 64, "{totals}");
    assert!(totals["evicted"]["edges"].as_u64().unwrap() > 0, "{totals}");
    assert_eq!(
        totals["dropped"].as_u64().unwrap(),
        evicted
            + failed
            + totals["evicted"]["edges"].as_u64().unwrap()
            + totals["failed"]["edges"].as_u64().unwrap()
    );
}
