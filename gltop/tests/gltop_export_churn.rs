//! Issue 14, gltop's own cost at scale: the exporter (`--listen`) reads the kernel's sums and
//! only the records of greenlets that died (bpf/greenlet.h, "Ended sets"), falling back to
//! reading every record when a push into those sets fails. Both ways must move every ended
//! record out of maps far smaller than the number of greenlets the oracle `workload` makes
//! (else inserts fail and gltop_dropped_total grows), with its settrace totals exactly.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use support::exposition::{scrape, serving_addr};
use support::*;

/// The workload against `gltop --listen` with maps of 64 records and 128 edges, gltop's
/// environment variable `GLTOP_TEST_SET_CAPACITY` set to `set_capacity` when given.
fn churn(test: &str, set_capacity: Option<&str>) {
    if !bpf_or_skip(test) {
        return;
    }
    let _serial = serial();
    // 2 threads x 40 iterations x 4 workers: over 300 greenlets, a few dozen at a time
    // (10 steps a millisecond: about 0.1 s an iteration), and edges likewise.
    let mut w = target(&[
        "--threads",
        "2",
        "--greenlets",
        "4",
        "--switches",
        "100",
        "--throws",
        "10",
        "--kills",
        "1",
        "--iterations",
        "40",
        "--pace",
        "1000",
        "--linger",
        "stdin",
    ]);
    let mut cmd = gltop();
    cmd.args(["--listen", "127.0.0.1:0", "-p", &w.pid().to_string()])
        .args(["--hit-cost-ns", "500", "-d", "0.1"])
        .args(["--max-greenlets", "64", "--max-edges", "128"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match set_capacity {
        Some(n) => cmd.env("GLTOP_TEST_SET_CAPACITY", n),
        None => cmd.env_remove("GLTOP_TEST_SET_CAPACITY"),
    };
    let mut g = Proc::spawn(&mut cmd);
    let addr = serving_addr(&g);

    let line = w
        .wait_stdout_line(Duration::from_secs(120), |l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no report; stderr: {}", w.stderr_so_far()));
    let report = Report::parse(&line);
    let want = &report.totals;
    assert!(want.new > 300 && want.dead > 300, "{want:?}");

    let l = "process=\"workload\"".to_string();
    let m = poll_until(Instant::now() + Duration::from_secs(30), || {
        let m = scrape(&addr);
        let done = m.get(&("greenlet_switches_total".into(), l.clone()))
            == Some(&(want.switch as f64))
            && m.get(&("greenlet_live".into(), l.clone())) == Some(&0.0);
        done.then_some(m)
    })
    .unwrap_or_else(|| {
        panic!(
            "switches never reached {} with nothing live: {:?}",
            want.switch,
            scrape(&addr)
        )
    });
    let get = |name: &str| m[&(name.to_string(), l.clone())];
    assert_eq!(get("greenlet_throws_total"), want.throw as f64);
    assert_eq!(get("greenlet_created_total"), want.new as f64);
    let finished: f64 = m
        .iter()
        .filter(|((n, labels), _)| n == "greenlet_finished_total" && labels.starts_with(&l))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(finished, want.dead as f64);
    // Every record and edge moved out in time: no insert into the small maps failed.
    assert_eq!(get("gltop_dropped_total"), 0.0, "{m:?}");
    // The kernel's slice count: one per transfer, plus a thread exit's last slice.
    let count = get("greenlet_slice_seconds_count");
    let transfers = (want.switch + want.throw) as f64;
    assert!(
        (transfers..=transfers + f64::from(report.threads)).contains(&count),
        "{count} slices for {transfers} transfers"
    );

    drop(w.child.stdin.take());
    assert!(w
        .wait_for(Duration::from_secs(30))
        .is_some_and(|s| s.success()));
    let status = g.wait("gltop", Duration::from_secs(30));
    assert!(status.success(), "gltop: {status}: {}", g.stderr_text());
    eprintln!(
        "{test}: {} greenlets through maps of 64, {} switches exact",
        want.new, want.switch
    );
}

#[test]
fn exporter_moves_ended_records_out_reading_only_those() {
    churn("exporter_moves_ended_records_out_reading_only_those", None);
}

#[test]
fn exporter_reads_every_record_when_the_ended_sets_overflow() {
    // Sets of one key: nearly every death and new edge fails to push, so nearly every
    // refresh is a full read.
    churn(
        "exporter_reads_every_record_when_the_ended_sets_overflow",
        Some("1"),
    );
}
