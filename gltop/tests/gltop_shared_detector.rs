//! Several processes, one blocking detector: `gltop --listen -p A,B,C` loads one
//! `sched_switch` program and one `cpu-clock` program attached once per CPU, whatever the
//! number of processes (found among gltop's own file descriptors, so other BPF users and
//! tests running beside do not count); the detector still reports the one process that
//! blocks, and none of the others; a process that exits leaves the detector's `watched` and
//! `threads` maps while the others stay.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use libbpf_rs::query::{LinkInfoIter, ProgInfoIter, ProgInfoQueryOptions};
use libbpf_rs::{MapCore, MapHandle};
use support::exposition::{scrape, serving_addr};
use support::*;

/// The BPF program ids among the file descriptors of process `pid` (program and link fds
/// both name one in their fdinfo).
fn prog_ids_of(pid: i32) -> BTreeSet<u32> {
    let dir = format!("/proc/{pid}/fdinfo");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .flat_map(|info| {
            info.lines()
                .filter_map(|l| l.strip_prefix("prog_id:"))
                .filter_map(|v| v.trim().parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The online CPUs (`/sys/devices/system/cpu/online`: `0-3,6`).
fn online_cpus() -> usize {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").expect("online CPUs");
    text.trim()
        .split(',')
        .map(|r| match r.split_once('-') {
            Some((a, b)) => b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1,
            None => 1,
        })
        .sum()
}

/// gltop's detector as the kernel has it.
#[derive(Debug)]
struct Detector {
    /// Ids of its `on_switch` and `on_sample` programs.
    switch: Vec<u32>,
    sample: Vec<u32>,
    /// Links running each `on_sample` program (one per CPU each).
    sample_links: usize,
    /// Links running each `on_switch` program.
    switch_links: usize,
    /// The `watched` map of the (first) `on_switch` program.
    watched: Option<u32>,
    /// Its `threads` map.
    threads: Option<u32>,
}

fn detector_of(gltop: i32) -> Detector {
    let mine = prog_ids_of(gltop);
    let progs: Vec<_> =
        ProgInfoIter::with_query_opts(ProgInfoQueryOptions::default().include_map_ids(true))
            .filter(|p| mine.contains(&p.id))
            .collect();
    let named = |n: &str| -> Vec<u32> {
        progs
            .iter()
            .filter(|p| p.name.to_str() == Some(n))
            .map(|p| p.id)
            .collect()
    };
    let (switch, sample) = (named("on_switch"), named("on_sample"));
    let links: Vec<u32> = LinkInfoIter::default().map(|l| l.prog_id).collect();
    let count = |ids: &[u32]| links.iter().filter(|p| ids.contains(p)).count();
    let map_named = |n: &str| {
        let p = progs.iter().find(|p| Some(&p.id) == switch.first())?;
        p.map_ids
            .iter()
            .copied()
            .find(|&id| MapHandle::from_map_id(id).is_ok_and(|m| m.name().to_str() == Some(n)))
    };
    Detector {
        sample_links: count(&sample),
        switch_links: count(&switch),
        watched: map_named("watched"),
        threads: map_named("threads"),
        switch,
        sample,
    }
}

/// The keys of map `id` (`u32`s), or the first `u32` of each value (`threads`: the tgid).
fn map_u32s(id: u32, values: bool) -> BTreeSet<u32> {
    let m = MapHandle::from_map_id(id).expect("open the map");
    m.keys()
        .filter_map(|k| {
            let b = if values {
                m.lookup(&k, libbpf_rs::MapFlags::ANY).ok()??
            } else {
                k
            };
            Some(u32::from_ne_bytes(b.get(..4)?.try_into().ok()?))
        })
        .collect()
}

#[test]
fn three_processes_share_one_sched_switch_program_and_one_clock_per_cpu() {
    if !bpf_or_skip("three_processes_share_one_sched_switch_program_and_one_clock_per_cpu") {
        return;
    }
    let _serial = serial();
    let go = std::env::temp_dir().join(format!("gltop-shared-det-{}", std::process::id()));
    let _ = std::fs::remove_file(&go);
    let blocker = |scenario: &[&str], linger: &str| {
        let p = Proc::spawn(
            Command::new(example("blocker"))
                .args(scenario)
                .arg("--wait-for-file")
                .arg(&go)
                .args(["--linger-ms", linger])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        assert!(
            p.wait_stderr("waiting for", Duration::from_secs(60)),
            "blocker: {}",
            p.stderr_so_far()
        );
        p
    };
    // One process sleeps twice 250 ms in a greenlet (two off-CPU episodes); two wait in an
    // idle hub (no episode), then exit soon after their report.
    let sleep = blocker(
        &["--scenario", "sleep", "--ms", "250", "--repeat", "2"],
        "60000",
    );
    let mut hubs = [
        blocker(&["--scenario", "idle-hub", "--ms", "300"], "500"),
        blocker(&["--scenario", "idle-hub", "--ms", "300"], "500"),
    ];
    let pids = format!("{},{},{}", sleep.pid(), hubs[0].pid(), hubs[1].pid());
    let mut g = Proc::spawn(
        gltop()
            .args(["--listen", "127.0.0.1:0", "-p", &pids, "--per-pid"])
            .args(["--hit-cost-ns", "500", "-d", "0.25"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let addr = serving_addr(&g);
    let err = g.stderr_so_far();
    assert_eq!(
        err.matches(", blocking detector").count(),
        3,
        "every process gets the detector: {err}"
    );

    let d = detector_of(g.pid());
    let cpus = online_cpus();
    assert_eq!(d.switch.len(), 1, "one sched_switch program: {d:?}");
    assert_eq!(d.sample.len(), 1, "one cpu-clock program: {d:?}");
    assert_eq!(d.switch_links, 1, "attached once: {d:?}");
    assert_eq!(d.sample_links, cpus, "one cpu-clock event per CPU: {d:?}");
    let watched = d.watched.expect("the detector's watched map");
    let threads = d.threads.expect("the detector's threads map");
    let all: BTreeSet<u32> = [&sleep, &hubs[0], &hubs[1]]
        .iter()
        .map(|p| p.pid() as u32)
        .collect();

    std::fs::write(&go, b"").expect("create the go file");
    // The runtimes start: each publishes its layout, and the detector watches all three.
    let seen = poll_until(Instant::now() + Duration::from_secs(10), || {
        Some(map_u32s(watched, false)).filter(|w| *w == all)
    });
    assert_eq!(
        seen.as_ref(),
        Some(&all),
        "watched: {:?}",
        map_u32s(watched, false)
    );
    let report = |p: &Proc| -> serde_json::Value {
        let line = p
            .wait_stdout_line(Duration::from_secs(60), |l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("no report: {}", p.stderr_so_far()));
        serde_json::from_str(&line).expect("blocker's JSON report")
    };
    let r = report(&sleep);
    for h in &hubs {
        report(h);
    }
    let _ = std::fs::remove_file(&go);
    assert_eq!(r["episodes"].as_array().map(Vec::len), Some(2), "{r}");
    let label = |p: &Proc| format!("process=\"blocker\",pid=\"{}\"", p.pid());
    let m = poll_until(Instant::now() + Duration::from_secs(10), || {
        let m = scrape(&addr);
        (m.get(&("greenlet_blocking_episodes_total".into(), label(&sleep))) == Some(&2.0))
            .then_some(m)
    })
    .unwrap_or_else(|| {
        panic!(
            "the sleeper's 2 episodes never counted: {:?}",
            scrape(&addr)
        )
    });
    for h in &hubs {
        assert_eq!(
            m.get(&("greenlet_blocking_episodes_total".into(), label(h))),
            Some(&0.0),
            "an idle hub is not blocking: {m:?}"
        );
    }

    // The hubs exit: their entries leave the shared maps; the sleeper's stay, and the
    // programs are still the one set.
    for h in &mut hubs {
        assert!(
            h.wait_for(Duration::from_secs(30)).is_some(),
            "the hub exits"
        );
    }
    let left: BTreeSet<u32> = [sleep.pid() as u32].into();
    let gone = poll_until(Instant::now() + Duration::from_secs(10), || {
        Some(map_u32s(watched, false))
            .filter(|w| *w == left)
            .filter(|_| map_u32s(threads, true).is_subset(&left))
    });
    assert!(
        gone.is_some(),
        "watched {:?}, threads of {:?}",
        map_u32s(watched, false),
        map_u32s(threads, true)
    );
    let after = detector_of(g.pid());
    assert_eq!(
        (after.switch, after.sample, after.sample_links),
        (d.switch, d.sample, cpus)
    );
    drop(sleep);
    let status = g.wait("gltop", Duration::from_secs(30));
    assert!(status.success(), "{status}: {}", g.stderr_text());
}

/// Whether `python3` imports greenlet (as `gltop_python.rs` asks).
fn python_greenlet() -> Result<(), String> {
    let out = Command::new("python3")
        .args(["-c", "import greenlet"])
        .output()
        .map_err(|e| format!("cannot run python3: {e} (make deps installs it)"))?;
    match out.status.success() {
        true => Ok(()),
        false => Err("python3 cannot import greenlet: make deps installs it".into()),
    }
}

#[test]
fn a_mixed_fleet_shares_the_detector_among_rust_processes_and_python_keeps_its_own() {
    let what = "a_mixed_fleet_shares_the_detector_among_rust_processes_and_python_keeps_its_own";
    if !bpf_or_skip(what) || !require(what, python_greenlet()) {
        return;
    }
    let _serial = serial();
    let go = std::env::temp_dir().join(format!("gltop-shared-mixed-{}", std::process::id()));
    let _ = std::fs::remove_file(&go);
    let blocker = |scenario: &[&str]| {
        let p = Proc::spawn(
            Command::new(example("blocker"))
                .args(scenario)
                .arg("--wait-for-file")
                .arg(&go)
                .args(["--linger-ms", "60000"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        assert!(
            p.wait_stderr("waiting for", Duration::from_secs(60)),
            "blocker: {}",
            p.stderr_so_far()
        );
        p
    };
    let sleep = blocker(&["--scenario", "sleep", "--ms", "250", "--repeat", "2"]);
    let hub = blocker(&["--scenario", "idle-hub", "--ms", "300"]);
    // A Python greenlet process (the workload of gltop_python.rs, waiting for "go").
    let py = Proc::spawn(
        Command::new("python3")
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/workload.py"))
            .arg("--linger")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    assert!(
        py.wait_stdout_line(Duration::from_secs(60), |l| l == "ready")
            .is_some(),
        "workload.py: {}",
        py.stderr_so_far()
    );
    let pids = format!("{},{},{}", sleep.pid(), py.pid(), hub.pid());
    let mut g = Proc::spawn(
        gltop()
            .args(["--listen", "127.0.0.1:0", "-p", &pids, "--per-pid"])
            .args(["--hit-cost-ns", "500", "-d", "0.25"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let addr = serving_addr(&g);
    let err = g.stderr_so_far();
    assert_eq!(
        err.matches(", blocking detector").count(),
        3,
        "every process gets the detector: {err}"
    );
    let d = detector_of(g.pid());
    let cpus = online_cpus();
    assert_eq!(
        (
            d.switch.len(),
            d.sample.len(),
            d.switch_links,
            d.sample_links
        ),
        (2, 2, 2, 2 * cpus),
        "the two Rust processes' detector and the Python process's: {d:?}"
    );

    std::fs::write(&go, b"").expect("create the go file");
    let line = sleep
        .wait_stdout_line(Duration::from_secs(60), |l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no report: {}", sleep.stderr_so_far()));
    let _ = std::fs::remove_file(&go);
    let r: serde_json::Value = serde_json::from_str(&line).expect("blocker's JSON report");
    assert_eq!(r["episodes"].as_array().map(Vec::len), Some(2), "{r}");
    let label = |p: &Proc, comm: &str| format!("process=\"{comm}\",pid=\"{}\"", p.pid());
    let m = poll_until(Instant::now() + Duration::from_secs(10), || {
        let m = scrape(&addr);
        let key = (
            "greenlet_blocking_episodes_total".into(),
            label(&sleep, "blocker"),
        );
        (m.get(&key) == Some(&2.0)).then_some(m)
    })
    .unwrap_or_else(|| {
        panic!(
            "the sleeper's 2 episodes never counted: {:?}",
            scrape(&addr)
        )
    });
    assert_eq!(
        m.get(&(
            "greenlet_blocking_episodes_total".into(),
            label(&hub, "blocker")
        )),
        Some(&0.0),
        "{m:?}"
    );
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", py.pid())).expect("its comm");
    assert_eq!(
        m.get(&(
            "greenlet_blocking_episodes_total".into(),
            label(&py, comm.trim_end())
        )),
        Some(&0.0),
        "the Python process has its detector's series: {m:?}"
    );
    drop((sleep, hub, py));
    let status = g.wait("gltop", Duration::from_secs(30));
    assert!(status.success(), "{status}: {}", g.stderr_text());
}
