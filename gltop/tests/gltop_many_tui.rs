//! The live view of several processes (`-p A,B`), driven in tmux against two oracle
//! workloads: each one's greenlets under its own PID, `p` showing one process then the
//! other then both, and one exiting while the other goes on.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::tmux::{bpf_and_tmux_or_skip, Tmux};
use support::*;

/// The first cell of each table row with a greenlet state: its PID cell (`1234` or, for an
/// exited process, `1234†`).
fn row_pids(screen: &str) -> BTreeSet<String> {
    screen
        .lines()
        .filter(|l| {
            ["running", "suspended", "unstarted", "dead"]
                .iter()
                .any(|s| l.contains(s))
        })
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| c.trim_end_matches('†').parse::<i32>().is_ok())
        .map(str::to_string)
        .collect()
}

/// The header's switch rate, e.g. `1.98k` of `switches 1.98k/s (12.3k total)`.
fn switch_rate(screen: &str) -> Option<String> {
    let rest = screen.split("switches ").nth(1)?;
    Some(rest.split("/s").next()?.to_string())
}

#[test]
fn several_pids_each_under_its_own_pid_filtered_and_one_exiting() {
    let test = "several_pids_each_under_its_own_pid_filtered_and_one_exiting";
    if !bpf_and_tmux_or_skip(test) {
        return;
    }
    let _s = serial();
    let args = [
        "--threads",
        "1",
        "--greenlets",
        "3",
        "--forever",
        "--pace",
        "2000",
    ];
    let mut a = target(&args);
    let b = target(&args);
    let (pa, pb) = (a.pid().to_string(), b.pid().to_string());
    let cmd = format!(
        "{} -p {pa},{pb} -d 0.3 --hit-cost-ns 500; echo GLTOP_EXIT=$?; sleep 60",
        env!("CARGO_BIN_EXE_gltop"),
    );
    let tmux = Tmux::start_sized("many", &cmd, 140, 50);
    let long = Duration::from_secs(60);
    // Both workloads' rows, each under its own PID, and the PID column.
    let both: BTreeSet<String> = [pa.clone(), pb.clone()].into();
    let header = [
        format!("pids {pa},{pb}"),
        "processes 2 watched, 0 exited".into(),
        "showing all".into(),
    ];
    let screen = tmux.wait_for("rows of both processes", long, |s| {
        row_pids(s).is_superset(&both) && header.iter().all(|h| s.contains(h.as_str()))
    });
    assert!(
        screen.lines().any(|l| l.trim_start().starts_with("PID")),
        "a PID column:\n{screen}"
    );
    // `p` shows the first process only, then the second, then both again.
    let mut order = [pa.clone(), pb.clone()];
    order.sort_by_key(|p| p.parse::<i32>().expect("a PID"));
    for pid in &order {
        tmux.keys(&["p"]);
        let want = format!("showing pid {pid}");
        let only: BTreeSet<String> = [pid.clone()].into();
        tmux.wait_for(&want, long, |s| s.contains(&want) && row_pids(s) == only);
    }
    tmux.keys(&["p"]);
    tmux.wait_for("both again", long, |s| {
        s.contains("showing all") && row_pids(s).is_superset(&both)
    });
    // Every dead greenlet stays listed, then the first workload ends: its rows stay, marked
    // exited, and the second goes on switching.
    tmux.keys(&["d"]);
    tmux.wait_for("dead: all", long, |s| s.contains("dead: all"));
    a.signal(Signal::SIGTERM);
    let st = a
        .wait_for(Duration::from_secs(30))
        .expect("workload A ended");
    assert!(st.success(), "workload A: {}", a.stderr_text());
    tmux.wait_for("A exited, B switching", long, |s| {
        s.contains("processes 2 watched, 1 exited")
            && s.contains(&format!("{pa}†"))
            && switch_rate(s).is_some_and(|r| r != "0" && r != "-")
    });
    // Shown alone, A's rows are all marked exited; B's are live, unmarked. (A capture can
    // fall in the middle of a redraw: each is waited for until the whole screen agrees.)
    for pid in &order {
        tmux.keys(&["p"]);
        let want = format!("showing pid {pid}");
        if *pid == pa {
            let marked: BTreeSet<String> = [format!("{pa}†")].into();
            tmux.wait_for("A's rows alone, marked exited", long, |s| {
                s.contains(&want) && row_pids(s) == marked
            });
        } else {
            let live: BTreeSet<String> = [pb.clone()].into();
            tmux.wait_for("B's rows alone, live", long, |s| {
                s.contains(&want)
                    && row_pids(s) == live
                    && s.lines().any(|l| {
                        l.split_whitespace().next() == Some(pb.as_str())
                            && (l.contains("running") || l.contains("suspended"))
                    })
            });
        }
    }
    // The last one ends: so does the view, with a line for each.
    b.signal(Signal::SIGTERM);
    let screen = tmux.wait_for("gltop's end", long, |s| s.contains("GLTOP_EXIT="));
    for pid in [&pa, &pb] {
        let line = format!("gltop: process {pid} (workload) exited");
        assert!(screen.contains(&line), "{line:?}:\n{screen}");
    }
    assert!(screen.contains("GLTOP_EXIT=0"), "{screen}");
}

#[test]
fn exe_in_the_live_view_adds_a_process_started_later() {
    let test = "exe_in_the_live_view_adds_a_process_started_later";
    if !bpf_and_tmux_or_skip(test) {
        return;
    }
    let _s = serial();
    let args = [
        "--threads",
        "1",
        "--greenlets",
        "3",
        "--forever",
        "--pace",
        "2000",
    ];
    let a = target(&args);
    let pa = a.pid().to_string();
    let cmd = format!(
        "{} --exe {} -d 0.3 --hit-cost-ns 500; sleep 60",
        env!("CARGO_BIN_EXE_gltop"),
        workload::workload_bin().display(),
    );
    let tmux = Tmux::start_sized("many-exe", &cmd, 140, 50);
    let long = Duration::from_secs(60);
    let only: BTreeSet<String> = [pa.clone()].into();
    tmux.wait_for("the first process's rows", long, |s| row_pids(s) == only);
    // A process started after gltop: found by the next scan, its rows join the table.
    let b = target(&args);
    let pb = b.pid().to_string();
    let both: BTreeSet<String> = [pa.clone(), pb.clone()].into();
    let screen = tmux.wait_for("both processes' rows", long, |s| {
        row_pids(s).is_superset(&both) && s.contains("processes 2 watched, 0 exited")
    });
    assert!(
        screen.lines().any(|l| l.trim_start().starts_with("PID")),
        "{screen}"
    );
    drop((a, b));
}

#[test]
fn exe_in_the_live_view_lets_exited_processes_go_and_says_how_many() {
    let test = "exe_in_the_live_view_lets_exited_processes_go_and_says_how_many";
    if !bpf_and_tmux_or_skip(test) {
        return;
    }
    let _s = serial();
    let forever = [
        "--threads",
        "1",
        "--greenlets",
        "3",
        "--forever",
        "--pace",
        "2000",
    ];
    let a = target(&forever);
    let pa = a.pid().to_string();
    let cmd = format!(
        "{} --exe {} -d 0.3 --hit-cost-ns 500 --keep-exited 3 --max-exited 1; \
         echo GLTOP_EXIT=$?; sleep 60",
        env!("CARGO_BIN_EXE_gltop"),
        workload::workload_bin().display(),
    );
    let tmux = Tmux::start_sized("many-keep", &cmd, 160, 50);
    let long = Duration::from_secs(60);
    let only: BTreeSet<String> = [pa.clone()].into();
    tmux.wait_for("the first process's rows", long, |s| row_pids(s) == only);
    tmux.keys(&["d"]);
    tmux.wait_for("dead: all", long, |s| s.contains("dead: all"));
    // Short-lived ones, each lingering until its stdin closes once gltop watches it: the
    // probes A's session armed may let it start before gltop attached to it.
    let short = [
        "--threads",
        "1",
        "--greenlets",
        "3",
        "--duration",
        "0.3",
        "--linger",
        "stdin",
    ];
    let mut p1 = target(&short);
    let p1_pid = p1.pid().to_string();
    // Shown alone (`p`: A, then the later PID), its rows; marked once it exited; then it
    // leaves the view: the header counts it, its dead greenlets the view keeps stay marked,
    // its other rows go.
    tmux.wait_for("a second process", long, |s| {
        s.contains("processes 2 watched, 0 exited")
    });
    let alone = format!("showing pid {p1_pid}");
    // `p` goes through the PIDs in ascending order: twice for the later process, unless
    // the kernel's PIDs wrapped between the two and it has the lower one.
    let shown = (0..3).any(|_| {
        tmux.keys(&["p"]);
        poll_until(Instant::now() + Duration::from_secs(2), || {
            tmux.screen().contains(&alone).then_some(())
        })
        .is_some()
    });
    assert!(shown, "`p` never showed {p1_pid}:\n{}", tmux.screen());
    let live: BTreeSet<String> = [p1_pid.clone()].into();
    tmux.wait_for("its rows alone", long, |s| {
        s.contains(&alone) && row_pids(s) == live
    });
    drop(p1.child.stdin.take());
    assert!(p1.wait("a short-lived workload", long).success());
    let marked: BTreeSet<String> = [format!("{p1_pid}†")].into();
    tmux.wait_for("its rows marked exited", long, |s| {
        s.contains(&alone) && row_pids(s) == marked && s.contains("processes 2 watched, 1 exited")
    });
    tmux.wait_for("it left the view", long, |s| {
        s.contains("processes 1 watched, 0 exited")
            && s.contains("1 more exited and left the view")
            && s.contains(&alone)
            && row_pids(s).is_subset(&marked)
    });
    tmux.keys(&["p"]);
    // One process left: `p` shows every row again (no "showing" then).
    tmux.wait_for("all again", long, |s| {
        !s.contains("showing pid") && row_pids(s).contains(&pa)
    });
    // Two more, one after the other: past --max-exited 1, the older goes at once.
    for _ in 0..2 {
        let mut p = target(&short);
        tmux.wait_for("a second process", long, |s| {
            s.contains("processes 2 watched, 0 exited")
        });
        drop(p.child.stdin.take());
        assert!(p.wait("a short-lived workload", long).success());
    }
    let screen = tmux.wait_for("three went", long, |s| {
        s.contains("processes 1 watched, 0 exited") && s.contains("3 more exited and left the view")
    });
    assert!(
        row_pids(&screen)
            .iter()
            .all(|p| *p == pa || p.ends_with('†')),
        "only the running process's rows unmarked:\n{screen}"
    );
    tmux.keys(&["q"]);
    let screen = tmux.wait_for("gltop's end", long, |s| s.contains("GLTOP_EXIT="));
    assert!(
        screen.contains("gltop: 3 more processes exited and left the view"),
        "{screen}"
    );
    assert!(screen.contains("GLTOP_EXIT=0"), "{screen}");
    drop(a);
}

#[test]
fn the_blocking_pane_of_several_processes_has_each_ones_episode_under_its_pid() {
    let test = "the_blocking_pane_of_several_processes_has_each_ones_episode_under_its_pid";
    if !bpf_and_tmux_or_skip(test) {
        return;
    }
    let _s = serial();
    let go = std::env::temp_dir().join(format!("gltop-many-blocking-{}", std::process::id()));
    let _ = std::fs::remove_file(&go);
    let blocker = |scenario: &str| {
        let p = Proc::spawn(
            std::process::Command::new(example("blocker"))
                .args([
                    "--scenario",
                    scenario,
                    "--ms",
                    "300",
                    "--linger-ms",
                    "30000",
                ])
                .arg("--wait-for-file")
                .arg(&go)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped()),
        );
        assert!(p.wait_stderr("waiting for", Duration::from_secs(60)));
        p
    };
    let (mut spin, mut sleep) = (blocker("spin"), blocker("sleep"));
    let (ps, pl) = (spin.pid().to_string(), sleep.pid().to_string());
    let cmd = format!(
        "{} -p {ps},{pl} -d 0.3 --hit-cost-ns 500; echo GLTOP_EXIT=$?; sleep 60",
        env!("CARGO_BIN_EXE_gltop"),
    );
    let tmux = Tmux::start_sized("many-blocking", &cmd, 160, 50);
    let long = Duration::from_secs(60);
    tmux.wait_for("both processes, no episode yet", long, |s| {
        s.contains("processes 2 watched") && s.contains("blocking >100ms 0 episodes")
    });
    std::fs::write(&go, b"").expect("the go file");
    tmux.wait_for("both episodes in the header", long, |s| {
        s.contains("blocking >100ms 2 episodes")
    });
    tmux.keys(&["b"]);
    // Each episode's row: its process's PID, its greenlet by name, where it blocked.
    let screen = tmux.wait_for("the blocking pane", long, |s| {
        let row = |pid: &str, name: &str, place: &str| {
            s.lines().any(|l| {
                let cells: Vec<&str> = l.split_whitespace().collect();
                cells.get(2) == Some(&pid) && l.contains(name) && l.contains(place)
            })
        };
        s.contains("STARTED")
            && s.contains("PID")
            && row(&ps, "spinner", "on-CPU")
            && row(&pl, "sleeper", "off-CPU")
    });
    assert!(
        !screen
            .lines()
            .any(|l| l.contains(" ago ") && l.contains("ongoing")),
        "both ended: {screen}"
    );
    tmux.keys(&["q"]);
    tmux.wait_for("gltop's exit", long, |s| s.contains("GLTOP_EXIT=0"));
    let _ = std::fs::remove_file(&go);
    spin.kill();
    sleep.kill();
}
