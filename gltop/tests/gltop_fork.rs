//! A process forked while gltop watches: by default the child is not watched and pays
//! nothing; with `--follow` it is watched from its first instruction, its counts exact.
//! `forker` (workloads/src/bin/forker.rs) ping-pongs two greenlets, forks, and reports in
//! each process what settrace saw and what one switch cost.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;
use support::*;

fn wait_file(path: &Path, timeout: Duration) {
    let appeared = poll_until(Instant::now() + timeout, || path.exists().then_some(()));
    assert!(
        appeared.is_some(),
        "{} did not appear within {timeout:?}",
        path.display()
    );
}

/// A fresh directory for forker's phase files.
fn sync_dir(test: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("gltop-fork-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create the sync directory");
    d
}

fn forker(dir: &Path, args: &[&str]) -> Proc {
    Proc::spawn(
        Command::new(example("forker"))
            .args(args)
            .arg("--wait-for-tracer")
            .arg("--sync-dir")
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
}

/// forker's two report lines, (parent, child).
fn reports(f: &mut Proc) -> (Value, Value) {
    let st = f.wait_for(Duration::from_secs(120)).expect("forker ended");
    let out = f.stdout_text();
    assert!(st.success(), "forker failed: {}", f.stderr_text());
    let lines = json_lines(&out);
    let role = |r: &str| {
        lines
            .iter()
            .find(|l| l["role"] == r)
            .unwrap_or_else(|| panic!("no {r} report in {out}"))
            .clone()
    };
    (role("parent"), role("child"))
}

fn ns(v: &Value, k: &str) -> f64 {
    v[k].as_f64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

/// The bound: within 3 times the untraced switch plus 20 ns.
fn within_bound(cost: f64, untraced: f64) -> bool {
    cost <= 3.0 * untraced + 20.0
}

#[test]
fn forked_child_pays_nothing_while_gltop_watches_only_the_parent() {
    if !bpf_or_skip("forked_child_pays_nothing_while_gltop_watches_only_the_parent") {
        return;
    }
    let _s = serial();
    let dir = sync_dir("default");
    let mut f = forker(&dir, &["--rounds", "1000"]);
    wait_file(&dir.join("baseline"), Duration::from_secs(60));
    let mut g = gltop_json(f.pid(), &["-d", "0.2"]);
    wait_file(&dir.join("child-measured"), Duration::from_secs(120));
    // The child's switch was timed while gltop watched the parent.
    assert!(
        g.wait_for(Duration::from_millis(1)).is_none(),
        "gltop ended early: {}",
        g.stderr_text()
    );
    let child = {
        let pid = std::fs::read_to_string(format!("/proc/{}/task/{}/children", f.pid(), f.pid()))
            .expect("the parent's children");
        pid.trim().parse::<i32>().expect("one child")
    };
    // A few intervals, so that gltop prints lines before it is stopped.
    std::thread::sleep(Duration::from_millis(700));
    g.signal(Signal::SIGINT);
    let st = g.wait_for(Duration::from_secs(60)).expect("gltop stopped");
    assert_eq!(st.code(), Some(0), "{}", g.stderr_text());
    let lines = json_lines(&g.stdout_text());
    let last = lines.last().expect("a JSON line");
    // Only the parent is watched: the child is neither a process nor counted.
    let procs = last["processes"].as_array().expect("processes");
    assert_eq!(procs.len(), 1, "{procs:?}");
    assert_eq!(procs[0]["pid"], f.pid());
    assert_eq!(
        last["totals"]["switches"], 2000,
        "the parent's 1000 round trips"
    );
    // After gltop: no semaphore is left raised in either process.
    for pid in [f.pid(), child] {
        assert!(
            semaphores_zero_within(pid, Duration::from_secs(10)),
            "process {pid} keeps semaphores {:?} after gltop exited",
            semaphores(pid)
        );
    }
    std::fs::write(dir.join("detached"), b"").unwrap();
    let (parent, child) = reports(&mut f);
    let untraced = ns(&parent, "baseline_ns");
    let during = ns(&child, "during_ns");
    eprintln!(
        "switch: untraced {untraced:.1} ns, child while gltop watched the parent {during:.1} ns, \
         after gltop: parent {:.1} ns, child {:.1} ns",
        ns(&parent, "after_ns"),
        ns(&child, "after_ns")
    );
    assert!(
        within_bound(during, untraced),
        "the child's switch cost {during:.1} ns while gltop watched the parent, untraced \
         {untraced:.1} ns"
    );
    for (who, r) in [("parent", &parent), ("child", &child)] {
        let after = ns(r, "after_ns");
        assert!(
            within_bound(after, untraced),
            "the {who}'s switch cost {after:.1} ns after gltop exited, untraced {untraced:.1} ns"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn follow_counts_a_forked_child_exactly_and_marks_it_exited() {
    if !bpf_or_skip("follow_counts_a_forked_child_exactly_and_marks_it_exited") {
        return;
    }
    let _s = serial();
    let dir = sync_dir("follow");
    let mut f = forker(
        &dir,
        &["--rounds", "3000", "--batches", "3", "--batch", "500"],
    );
    wait_file(&dir.join("baseline"), Duration::from_secs(60));
    let mut g = gltop_json(f.pid(), &["-d", "0.2", "--follow"]);
    wait_file(&dir.join("child-measured"), Duration::from_secs(120));
    std::fs::write(dir.join("detached"), b"").unwrap();
    let (parent, child) = reports(&mut f);
    // gltop stops by itself when the parent exits, after a last line.
    let st = g.wait_for(Duration::from_secs(60)).expect("gltop stopped");
    assert_eq!(st.code(), Some(0), "{}", g.stderr_text());
    let lines = json_lines(&g.stdout_text());
    let last = lines.last().expect("a JSON line");
    let procs = last["processes"].as_array().expect("processes");
    let find = |pid: &Value| {
        procs
            .iter()
            .find(|p| p["pid"] == *pid)
            .unwrap_or_else(|| panic!("process {pid} not in {procs:?}"))
    };
    let (p, c) = (find(&parent["pid"]), find(&child["pid"]));
    assert_eq!(procs.len(), 2, "{procs:?}");
    assert_eq!(c["ppid"], parent["pid"], "{c}");
    assert_eq!(c["exited"], true, "{c}");
    // The child's counts are its own settrace counts, from the fork on.
    assert_eq!(
        c["switches"], child["switches"],
        "child {c} vs settrace {child}"
    );
    assert_eq!(
        c["throws"], child["throws"],
        "child {c} vs settrace {child}"
    );
    // The parent's: what settrace saw after the tracer was attached (its baseline ran before).
    let baseline_switches = 3 * 500 * 2;
    assert_eq!(
        p["switches"].as_u64().unwrap() + baseline_switches,
        parent["switches"].as_u64().unwrap(),
        "parent {p} vs settrace {parent}"
    );
    // Greenlets are per process: the child's two greenlets carry its pid, and their switches
    // add up to its count.
    let in_child: u64 = last["greenlets"]
        .as_array()
        .expect("greenlets")
        .iter()
        .filter(|g| g["pid"] == child["pid"])
        .map(|g| g["switches_in"].as_u64().unwrap())
        .sum();
    assert_eq!(c["switches"].as_u64(), Some(in_child), "{last}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn follow_without_a_pid_is_one_line_and_exit_2() {
    let out = gltop().arg("--follow").output().expect("run gltop");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--pid"), "{err}");
    let out = gltop()
        .args(["-p", "1", "--follow", "--attach", "usdt", "--json"])
        .output()
        .expect("run gltop");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--follow"), "{err}");
}

#[test]
fn follow_in_the_tui_shows_each_process_its_own_rows() {
    let test = "follow_in_the_tui_shows_each_process_its_own_rows";
    if !tmux::bpf_and_tmux_or_skip(test) {
        return;
    }
    let _s = serial();
    let dir = sync_dir("follow-tui");
    let mut f = forker(
        &dir,
        &["--rounds", "3000", "--batches", "3", "--batch", "500"],
    );
    wait_file(&dir.join("baseline"), Duration::from_secs(60));
    let cmd = format!(
        "{} -p {} -d 0.3 --follow; sleep 60",
        env!("CARGO_BIN_EXE_gltop"),
        f.pid()
    );
    let tmux = tmux::Tmux::start("follow", &cmd);
    wait_file(&dir.join("child-measured"), Duration::from_secs(120));
    // Both processes are alive now, waiting for `detached`: the table lists the child's
    // greenlets beside the parent's, under the same ids, each under its own PID.
    let parent = f.pid().to_string();
    let rows_of = |screen: &str, pid: &str| -> Vec<String> {
        screen
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(pid))
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
            .collect()
    };
    let screen = tmux.wait_for("rows of two processes", Duration::from_secs(30), |s| {
        let pids: std::collections::BTreeSet<&str> = s
            .lines()
            .filter(|l| l.contains("suspended") || l.contains("running"))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        pids.len() >= 2
    });
    std::fs::write(dir.join("detached"), b"").unwrap();
    let (_, child) = reports(&mut f);
    let child = child["pid"].to_string();
    assert!(
        screen.lines().any(|l| l.trim_start().starts_with("PID")),
        "a PID column while following:\n{screen}"
    );
    let (in_parent, in_child) = (rows_of(&screen, &parent), rows_of(&screen, &child));
    assert!(
        !in_child.is_empty() && in_child.iter().all(|id| in_parent.contains(id)),
        "the child's greenlets keep their parent's ids, each listed for both \
         (parent {parent}: {in_parent:?}, child {child}: {in_child:?}):\n{screen}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
