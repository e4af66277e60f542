//! Issue 14, what `--exe` leaves of the processes that exit: a stream of short-lived oracle
//! workloads (a prefork server recycling its workers) under `gltop --listen --exe`. The
//! default `process` series are counters that never go back and end at the sum of every
//! process's own settrace totals; per-pid series (`--per-pid`) of an exited process go after
//! `--keep-exited`; the processes gltop keeps (`gltop_watched_processes`) and the number of
//! series it serves stay bounded however many processes came and went.

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::exposition::{scrape, serving_addr};
use support::*;

type Scrape = BTreeMap<(String, String), f64>;

/// Scrapes `addr` every 100 ms in a thread until dropped; keeps every scrape.
struct Scraper {
    stop: Arc<AtomicBool>,
    scrapes: Arc<Mutex<Vec<Scrape>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Scraper {
    fn start(addr: &str) -> Scraper {
        let stop = Arc::new(AtomicBool::new(false));
        let scrapes = Arc::new(Mutex::new(Vec::new()));
        let (s, out, addr) = (stop.clone(), scrapes.clone(), addr.to_string());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let m = scrape(&addr);
                out.lock().unwrap().push(m);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Scraper {
            stop,
            scrapes,
            thread: Some(thread),
        }
    }

    /// Stops and returns every scrape, in order.
    fn finish(mut self) -> Vec<Scrape> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("the scraper thread");
        }
        std::mem::take(&mut *self.scrapes.lock().unwrap())
    }
}

impl Drop for Scraper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// gltop's resident memory, kB.
fn rss_kb(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("gltop's status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// One short-lived oracle workload: waits for gltop, works `secs`, prints its report, exits.
fn short_lived(secs: &str) -> Proc {
    Proc::spawn(
        Command::new(workload::workload_bin())
            .args(["--threads", "1", "--greenlets", "3", "--throws", "20"])
            .args(["--kills", "1", "--duration", secs, "--wait-for-tracer"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
}

/// Runs `n` short-lived workloads, at most two at a time, each started once the previous
/// one is attached; returns their reports (each process exited).
fn stream(g: &Proc, n: usize, mut between: impl FnMut(usize)) -> Vec<Report> {
    let mut running: Vec<Proc> = Vec::new();
    let mut reports = Vec::new();
    let finish = |mut p: Proc, reports: &mut Vec<Report>| {
        let status = p.wait("a workload", Duration::from_secs(60));
        assert!(status.success(), "{status}: {}", p.stderr_text());
        let r = Report::parse(p.stdout_text().lines().next().expect("its report"));
        assert!(r.totals.switch > 0, "{:?}", r.totals);
        reports.push(r);
    };
    for i in 0..n {
        let p = short_lived("0.3");
        assert!(
            g.wait_stderr(
                &format!("attached to process {} (workload)", p.pid()),
                Duration::from_secs(30)
            ),
            "never attached to {}: {}",
            p.pid(),
            g.stderr_so_far()
        );
        running.push(p);
        if running.len() == 2 {
            finish(running.remove(0), &mut reports);
        }
        between(i);
    }
    for p in running {
        finish(p, &mut reports);
    }
    reports
}

/// The value of `name{labels}`, 0 when absent.
fn value(m: &Scrape, name: &str, labels: &str) -> f64 {
    m.get(&(name.to_string(), labels.to_string()))
        .copied()
        .unwrap_or(0.0)
}

/// Every series of `name` for process `workload` summed (per-pid and not).
fn summed(m: &Scrape, name: &str) -> f64 {
    m.iter()
        .filter(|((n, l), _)| n == name && l.starts_with("process=\"workload\""))
        .map(|(_, v)| v)
        .sum()
}

const COUNTERS: [&str; 4] = [
    "greenlet_switches_total",
    "greenlet_throws_total",
    "greenlet_created_total",
    "greenlet_finished_total",
];

/// Checks that each of [`COUNTERS`], summed over the workload's series, never went back
/// across `scrapes`, and that the processes kept one by one never exceeded `max_exited`
/// exited (and 2 running: the stream's).
fn check_monotonic_and_bounded(scrapes: &[Scrape], max_exited: f64) {
    assert!(scrapes.len() > 20, "only {} scrapes", scrapes.len());
    for name in COUNTERS {
        let mut high = 0.0;
        for (i, m) in scrapes.iter().enumerate() {
            let v = summed(m, name);
            assert!(
                v >= high,
                "{name} went back from {high} to {v} at scrape {i}"
            );
            high = v;
        }
    }
    for m in scrapes {
        let running = value(m, "gltop_watched_processes", "state=\"running\"");
        let exited = value(m, "gltop_watched_processes", "state=\"exited\"");
        assert!(running <= 2.0 && exited <= max_exited, "{running} {exited}");
        let infos = m.keys().filter(|(n, _)| n == "gltop_target_info").count() as f64;
        assert_eq!(infos, running + exited);
    }
}

/// The sums of the workloads' own counts, as the counters should end.
fn wanted(reports: &[Report]) -> [f64; 4] {
    let sum = |f: fn(&Report) -> u64| reports.iter().map(f).sum::<u64>() as f64;
    [
        sum(|r| r.totals.switch),
        sum(|r| r.totals.throw),
        sum(|r| r.totals.new),
        sum(|r| r.totals.dead),
    ]
}

fn start_gltop(extra: &[&str]) -> (Proc, String) {
    let g = Proc::spawn(
        gltop()
            .args(["--listen", "127.0.0.1:0", "--exe"])
            .arg(workload::workload_bin())
            .args(["--hit-cost-ns", "500", "-d", "0.25"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let addr = serving_addr(&g);
    (g, addr)
}

fn stop(mut g: Proc) {
    g.signal(Signal::SIGTERM);
    let status = g.wait("gltop", Duration::from_secs(30));
    assert!(status.success(), "{status}: {}", g.stderr_text());
}

#[test]
fn thirty_short_lived_processes_leave_exact_monotonic_counters_and_bounded_state() {
    if !bpf_or_skip("thirty_short_lived_processes_leave_exact_monotonic_counters_and_bounded_state")
    {
        return;
    }
    let _serial = serial();
    const N: usize = 30;
    let (g, addr) = start_gltop(&["--keep-exited", "1", "--max-exited", "3"]);
    let scraper = Scraper::start(&addr);
    let mut after_ten = None;
    let reports = stream(&g, N, |i| {
        if i == 9 {
            after_ten = Some(rss_kb(g.pid()));
        }
    });
    // Every one released: its exit seen, kept a second, then folded into `process`.
    let last = poll_until(Instant::now() + Duration::from_secs(20), || {
        let m = scrape(&addr);
        (value(&m, "gltop_released_processes_total", "") == N as f64).then_some(m)
    })
    .unwrap_or_else(|| panic!("not every process released: {:?}", scrape(&addr)));
    let scrapes = scraper.finish();
    check_monotonic_and_bounded(&scrapes, 3.0);
    let want = wanted(&reports);
    for (name, want) in COUNTERS.iter().zip(want) {
        let got = summed(&last, name);
        assert_eq!(
            got, want,
            "{name}: the sum of {N} processes' settrace totals"
        );
    }
    assert_eq!(
        value(&last, "greenlet_switches_total", "process=\"workload\""),
        want[0],
        "one series, no pid"
    );
    assert!(!last.keys().any(|(_, l)| l.contains("pid=")), "{last:?}");
    assert_eq!(
        value(&last, "gltop_watched_processes", "state=\"exited\""),
        0.0
    );
    // The series served do not grow with the processes that came and went: one
    // `gltop_target_info` per process kept (at most 2 running + 3 exited, checked above), and
    // of the others no scrape in the stream's second half has more than the most in its
    // first.
    let released = |m: &Scrape| value(m, "gltop_released_processes_total", "");
    let most = |early: bool| {
        scrapes
            .iter()
            .filter(|m| (released(m) < (N / 2) as f64) == early)
            .map(|m| m.keys().filter(|(n, _)| n != "gltop_target_info").count())
            .max()
            .expect("scrapes in both halves")
    };
    assert!(
        most(false) <= most(true),
        "{} > {}",
        most(false),
        most(true)
    );
    let end = rss_kb(g.pid());
    eprintln!(
        "{N} processes: {} switches, at most {} series besides the target infos while the \
         first half ran, {} in the second, {} in all at the end; gltop {} kB resident after 10 processes, {end} kB after {N}",
        want[0],
        most(true),
        most(false),
        last.len(),
        after_ten.unwrap_or(0)
    );
    stop(g);
}

#[test]
fn per_pid_series_of_exited_processes_go_after_keep_exited() {
    if !bpf_or_skip("per_pid_series_of_exited_processes_go_after_keep_exited") {
        return;
    }
    let _serial = serial();
    const N: usize = 8;
    let (g, addr) = start_gltop(&["--per-pid", "--keep-exited", "2"]);
    let scraper = Scraper::start(&addr);
    let reports = stream(&g, N, |_| {});
    let released = poll_until(Instant::now() + Duration::from_secs(20), || {
        let m = scrape(&addr);
        (value(&m, "gltop_released_processes_total", "") == N as f64).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    let scrapes = scraper.finish();
    assert!(released.is_some(), "{}", g.stderr_so_far());
    check_monotonic_and_bounded(&scrapes, 64.0);
    let last = scrapes.last().expect("scrapes");
    let kept = scrapes
        .iter()
        .filter(|m| value(m, "gltop_watched_processes", "state=\"exited\"") >= 1.0)
        .count();
    assert!(kept >= 5, "exited processes kept in {kept} scrapes only");
    for r in &reports {
        let l = format!("process=\"workload\",pid=\"{}\"", r.pid);
        // Its final count was served under its pid (gltop refreshes at each scrape, and
        // answers none while it attaches to the next process: how many varies) ...
        let seen = scrapes
            .iter()
            .filter(|m| value(m, "greenlet_switches_total", &l) == r.totals.switch as f64)
            .count();
        assert!(seen >= 1, "{}: final count never served", r.pid);
        // ... and is gone now.
        assert!(
            !last.keys().any(|(_, labels)| labels == &l),
            "{l} still served"
        );
        assert!(
            !last.iter().any(|((n, labels), _)| n == "gltop_target_info"
                && labels.contains(&format!("pid=\"{}\"", r.pid))),
            "{} still a target",
            r.pid
        );
    }
    let want = wanted(&reports);
    for (name, want) in COUNTERS.iter().zip(want) {
        assert_eq!(
            summed(last, name),
            want,
            "{name}: the released processes' counts under process alone"
        );
    }
    assert_eq!(
        value(last, "greenlet_switches_total", "process=\"workload\""),
        want[0]
    );
    stop(g);
}
