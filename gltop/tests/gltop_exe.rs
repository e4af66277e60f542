//! Issue 14, `--exe PATH`: every process that runs the file is watched, those running when
//! gltop starts and those started later, each with the oracle `workload`'s exact settrace
//! totals; one killed with SIGKILL is dropped and the others stay watched. In the exporter
//! (per-pid series) and in `--json` (one line per process per interval).

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;
use support::exposition::scrape;
use support::*;

/// A file removed when dropped: the go signal of the workloads (`--wait-for-file`).
struct GoFile(PathBuf);

impl GoFile {
    fn new(tag: &str) -> GoFile {
        let p = std::env::temp_dir().join(format!("gltop-exe-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        GoFile(p)
    }

    fn go(&self) {
        std::fs::write(&self.0, b"").expect("create the go file");
    }
}

impl Drop for GoFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One oracle workload: waits for a tracer, then for `go`, runs `args`, prints its report
/// and lingers until its stdin closes.
fn workload(go: &Path, args: &[&str]) -> Proc {
    Proc::spawn(
        Command::new(workload::workload_bin())
            .args(args)
            .arg("--wait-for-tracer")
            .arg("--wait-for-file")
            .arg(go)
            .args(["--linger", "stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
}

const WORK: [&str; 10] = [
    "--threads",
    "2",
    "--greenlets",
    "4",
    "--throws",
    "60",
    "--kills",
    "1",
    "--duration",
    "2",
];

/// Waits until gltop's stderr says it attached to every one of `pids`.
fn wait_attached_all(g: &Proc, pids: &[i32]) {
    for pid in pids {
        assert!(
            g.wait_stderr(
                &format!("attached to process {pid} (workload)"),
                Duration::from_secs(30)
            ),
            "never attached to {pid}: {}",
            g.stderr_so_far()
        );
    }
}

/// The report a workload prints once its work is done (it then lingers).
fn report(p: &Proc) -> Report {
    let line = p
        .wait_stdout_line(Duration::from_secs(120), |l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no report: {}", p.stderr_so_far()));
    Report::parse(&line)
}

#[test]
fn exe_exports_five_workloads_two_started_later_and_survives_a_sigkill() {
    if !bpf_or_skip("exe_exports_five_workloads_two_started_later_and_survives_a_sigkill") {
        return;
    }
    let _serial = serial();
    let go = GoFile::new("listen");
    let bin = workload::workload_bin();
    let early: Vec<Proc> = (0..3).map(|_| workload(&go.0, &WORK)).collect();
    let mut g = Proc::spawn(
        gltop()
            .args(["--listen", "127.0.0.1:0", "--exe"])
            .arg(&bin)
            .args(["--per-pid", "--hit-cost-ns", "500", "-d", "0.5"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let serving = g
        .wait_stderr_line(Duration::from_secs(60), |l| {
            l.contains("serving metrics on")
        })
        .unwrap_or_else(|| panic!("gltop never served: {}", g.stderr_so_far()));
    let addr = serving
        .split("http://")
        .nth(1)
        .and_then(|s| s.split("/metrics").next())
        .expect("the address")
        .to_string();
    let early_pids: Vec<i32> = early.iter().map(Proc::pid).collect();
    wait_attached_all(&g, &early_pids);
    // Two more, and a sixth that works until it is killed, all started after gltop.
    let late: Vec<Proc> = (0..2).map(|_| workload(&go.0, &WORK)).collect();
    let mut victim = workload(&go.0, &["--threads", "1", "--greenlets", "3", "--forever"]);
    let mut all: Vec<Proc> = early;
    all.extend(late);
    let pids: Vec<i32> = all.iter().map(Proc::pid).collect();
    wait_attached_all(&g, &pids);
    wait_attached_all(&g, &[victim.pid()]);
    go.go();

    // SIGKILL of one while the five work: gltop says it exited and goes on.
    std::thread::sleep(Duration::from_millis(700));
    victim.signal(Signal::SIGKILL);
    assert!(victim.wait_for(Duration::from_secs(10)).is_some());
    assert!(
        g.wait_stderr(
            &format!("process {} (workload) exited", victim.pid()),
            Duration::from_secs(10)
        ),
        "{}",
        g.stderr_so_far()
    );

    let reports: Vec<Report> = all.iter().map(report).collect();
    for (p, r) in all.iter().zip(&reports) {
        assert_eq!(r.pid as i32, p.pid());
        let l = format!("process=\"workload\",pid=\"{}\"", p.pid());
        let want = &r.totals;
        assert!(want.switch > 1000, "{want:?}");
        let m = poll_until(Instant::now() + Duration::from_secs(15), || {
            let m = scrape(&addr);
            (m.get(&("greenlet_switches_total".into(), l.clone())) == Some(&(want.switch as f64)))
                .then_some(m)
        })
        .unwrap_or_else(|| {
            panic!(
                "{}: switches never reached {}: {:?}",
                p.pid(),
                want.switch,
                scrape(&addr).get(&("greenlet_switches_total".into(), l.clone()))
            )
        });
        let get = |name: &str| m[&(name.to_string(), l.clone())];
        assert_eq!(
            get("greenlet_throws_total"),
            want.throw as f64,
            "{}",
            p.pid()
        );
        assert_eq!(
            get("greenlet_created_total"),
            want.new as f64,
            "{}",
            p.pid()
        );
        let finished: f64 = m
            .iter()
            .filter(|((n, labels), _)| n == "greenlet_finished_total" && labels.starts_with(&l))
            .map(|(_, v)| v)
            .sum();
        assert_eq!(finished, want.dead as f64, "{}", p.pid());
        assert_eq!(get("gltop_dropped_total"), 0.0);
        assert_eq!(get("greenlet_live"), 0.0);
    }
    let m = scrape(&addr);
    let infos = m.keys().filter(|(n, _)| n == "gltop_target_info").count();
    assert_eq!(infos, 6, "five watched and the killed one");
    eprintln!(
        "--exe: {} switches in 5 processes, each exact",
        reports.iter().map(|r| r.totals.switch).sum::<u64>()
    );

    // The processes exit; gltop keeps watching for more, until a signal.
    for mut p in all {
        drop(p.child.stdin.take());
        assert!(p.wait_for(Duration::from_secs(30)).is_some());
    }
    for r in &reports {
        assert!(g.wait_stderr(
            &format!("process {} (workload) exited", r.pid),
            Duration::from_secs(10)
        ));
    }
    assert!(
        g.wait_for(Duration::from_millis(500)).is_none(),
        "still running"
    );
    g.signal(Signal::SIGTERM);
    let status = g.wait("gltop", Duration::from_secs(30));
    assert!(status.success(), "{status}: {}", g.stderr_text());
}

#[test]
fn exe_json_has_one_exact_line_per_process_per_interval() {
    if !bpf_or_skip("exe_json_has_one_exact_line_per_process_per_interval") {
        return;
    }
    let _serial = serial();
    let go = GoFile::new("json");
    let bin = workload::workload_bin();
    // The second one ends by exec'ing `sleep`: the same process, another program.
    let mut execs = WORK.to_vec();
    execs.extend(["--then-exec-sleep", "30"]);
    let mut procs: Vec<Proc> = vec![workload(&go.0, &WORK), workload(&go.0, &execs)];
    let mut g = Proc::spawn(
        gltop()
            .args(["--json", "--exe"])
            .arg(&bin)
            .args(["--hit-cost-ns", "500", "-d", "0.25"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let pids: Vec<i32> = procs.iter().map(Proc::pid).collect();
    wait_attached_all(&g, &pids);
    procs.push(workload(&go.0, &WORK));
    let pids: Vec<i32> = procs.iter().map(Proc::pid).collect();
    wait_attached_all(&g, &pids);
    go.go();
    for p in &procs {
        report(p);
    }
    let mut reports = Vec::new();
    for (i, p) in procs.iter_mut().enumerate() {
        if i == 1 {
            // Its report now: after the exec its stdout is `sleep`'s.
            reports.push(report(p));
        }
        drop(p.child.stdin.take());
        if i != 1 {
            assert!(p.wait_for(Duration::from_secs(30)).is_some());
        }
    }
    for (i, pid) in pids.iter().enumerate() {
        let said = if i == 1 {
            format!("process {pid} (workload) replaced its program (exec)")
        } else {
            format!("process {pid} (workload) exited")
        };
        assert!(
            g.wait_stderr(&said, Duration::from_secs(10)),
            "{said}: {}",
            g.stderr_so_far()
        );
    }
    g.signal(Signal::SIGINT);
    let status = g.wait("gltop", Duration::from_secs(30));
    assert!(status.success(), "{status}: {}", g.stderr_text());
    let lines = json_lines(&g.stdout_text());
    let mut by_pid: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    for l in lines {
        by_pid
            .entry(l["pid"].as_i64().expect("a pid"))
            .or_default()
            .push(l);
    }
    assert_eq!(by_pid.keys().map(|&p| p as i32).collect::<Vec<_>>(), {
        let mut p = pids.clone();
        p.sort_unstable();
        p
    });
    for (i, p) in procs.iter_mut().enumerate() {
        let r = if i == 1 {
            reports.remove(0)
        } else {
            report_of(p)
        };
        let lines = &by_pid[&(p.pid() as i64)];
        // One line per interval while it ran (2 s of work, 0.25 s intervals), each with
        // the single-process schema.
        assert!(lines.len() >= 3, "{}: {} lines", p.pid(), lines.len());
        assert!(lines
            .iter()
            .all(|l| l["mode"] == "exact" && l["process"] == "workload"));
        assert_exact(
            &format!("gltop --exe, process {}", p.pid()),
            &r,
            &merged(lines),
        );
    }
}
