//! Fault tests of an attachment, with real BPF (issue 6, item 3): gltop killed with SIGKILL
//! leaves no BPF link, program or map and the probe semaphores back at zero (both attach
//! modes); a target killed with SIGKILL ends gltop cleanly; gltops attached to one process
//! at once count exactly and come and go independently; maps ten times too small show their
//! overflow in the TUI header; the detail view of a greenlet the view forgot says so.
//!
//! The BPF objects are found by the target's PID (see `support::kernel`), so other BPF
//! users on the machine do not disturb these checks.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use support::kernel::{gltop_objects, Objects};
use support::tmux::{bpf_and_tmux_or_skip, Tmux};
use support::*;

const LONG: Duration = Duration::from_secs(30);

/// A target that keeps switching (for hours) once a tracer is attached: one iteration of
/// a billion steps, every fifth a throw. Its first greenlets die before the steps (the
/// `unborn` and `discarded` greenlets of each thread), the others at the end.
fn long_target(threads: &str) -> Proc {
    target(&[
        "--threads",
        threads,
        "--greenlets",
        "3",
        "--switches",
        "800000000",
        "--throws",
        "200000000",
    ])
}

/// Waits until gltop's stderr says it is attached.
fn wait_gltop_attached(g: &Proc) {
    assert!(
        g.wait_stderr("attached to process", LONG),
        "gltop did not attach: {}",
        g.stderr_so_far()
    );
}

/// The BPF links an attached gltop holds, from its `attached to process ...: N probe sites
/// (MODE)` line: one per-process uprobe per call site in `uprobe` mode, one uprobe-multi link
/// per probe (libbpf's USDT) in `usdt` mode.
fn expected_links(g: &Proc) -> usize {
    let err = g.stderr_so_far();
    let line = err
        .lines()
        .find(|l| l.contains("attached to process"))
        .expect("the attach line");
    let (_, after) = line.split_once("): ").expect("the attach line's sites");
    let mut words = after.split_whitespace();
    let sites: usize = words
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a site count");
    match words.nth(2) {
        Some("(uprobe),") => sites,
        Some("(usdt),") => greenlet::probes::PROBE_NAMES.len(),
        other => panic!("an attach mode in {line:?}: {other:?}"),
    }
}

#[test]
fn gltop_killed_with_sigkill_leaves_no_link_program_or_map_and_zero_semaphores() {
    if !bpf_or_skip("gltop_killed_with_sigkill_leaves_no_link_program_or_map_and_zero_semaphores") {
        return;
    }
    let _s = serial();
    for mode in ["uprobe", "usdt"] {
        let t = long_target("2");
        assert_eq!(gltop_objects(t.pid()), Default::default(), "{mode}");
        let mut g = gltop_json(t.pid(), &["-d", "1", "--attach", mode]);
        wait_gltop_attached(&g);
        let attached = gltop_objects(t.pid());
        // One link per site (uprobe) or per probe (usdt), the programs of both modes (one
        // object is loaded), and the maps: greenlets, edges, totals and libbpf's own.
        assert_eq!(
            attached.links.len(),
            expected_links(&g),
            "{mode}: {attached:?}"
        );
        assert!(attached.programs.len() >= 4, "{mode}: {attached:?}");
        assert!(attached.maps.len() >= 3, "{mode}: {attached:?}");
        assert!(
            semaphores(t.pid()).iter().all(|(_, v)| *v > 0),
            "{mode}: {:?}",
            semaphores(t.pid())
        );

        g.signal(Signal::SIGKILL);
        let st = g.wait_for(LONG).expect("gltop died");
        assert_eq!(st.signal(), Some(Signal::SIGKILL as i32), "{mode}");
        assert!(
            semaphores_zero_within(t.pid(), Duration::from_secs(10)),
            "{mode}: semaphores after SIGKILL: {:?}",
            semaphores(t.pid())
        );
        let left = attached.wait_gone(Duration::from_secs(10));
        assert!(left.is_empty(), "{mode}: outlived gltop: {left:?}");
        assert_eq!(gltop_objects(t.pid()), Default::default(), "{mode}");
        // The target goes on unharmed.
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            gltop::loader::Process::find(t.pid()).is_ok(),
            "{mode}: the target died with gltop"
        );
    }
}

#[test]
fn a_target_killed_with_sigkill_ends_gltop_with_a_message_and_exit_zero() {
    if !bpf_or_skip("a_target_killed_with_sigkill_ends_gltop_with_a_message_and_exit_zero") {
        return;
    }
    let _s = serial();
    let mut t = long_target("2");
    // An interval far longer than the test: only the target's death makes gltop print.
    let mut g = gltop_json(t.pid(), &["-d", "3600"]);
    wait_gltop_attached(&g);
    assert!(wait_attached(t.pid(), LONG));
    let attached = gltop_objects(t.pid());
    assert_eq!(attached.links.len(), expected_links(&g), "{attached:?}");
    // Let it switch a while, then kill it mid-flight.
    std::thread::sleep(Duration::from_millis(500));
    t.signal(Signal::SIGKILL);
    let t_st = t.wait_for(LONG).expect("the target died");
    assert_eq!(t_st.signal(), Some(Signal::SIGKILL as i32));

    let st = g.wait_for(Duration::from_secs(10)).expect("gltop ends");
    let err = g.stderr_text();
    assert_eq!(st.code(), Some(0), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "attached, then exited: {err}");
    assert_eq!(
        lines[1],
        format!("gltop: process {} (workload) exited", t.pid())
    );
    let out = json_lines(&g.stdout_text());
    assert_eq!(out.len(), 1, "one final snapshot");
    let totals = &out[0]["totals"];
    assert!(totals["switches"].as_u64().unwrap() > 0, "{totals}");
    assert!(totals["throws"].as_u64().unwrap() > 0, "{totals}");
    // Killed mid-flight: no worker, hub or main greenlet died (SIGKILL runs no code in the
    // target), only the unborn and discarded greenlets of the two threads, before the steps.
    assert_eq!(totals["greenlets_dead"], 4, "{totals}");
    let left = attached.wait_gone(Duration::from_secs(10));
    assert!(left.is_empty(), "outlived gltop: {left:?}");
}

#[test]
fn gltops_on_one_process_count_exactly_and_come_and_go_independently() {
    if !bpf_or_skip("gltops_on_one_process_count_exactly_and_come_and_go_independently") {
        return;
    }
    let _s = serial();
    let dir = std::env::temp_dir().join(format!("gltop-faults-two-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let go = dir.join("go");
    let _ = std::fs::remove_file(&go);
    let mut t = Proc::spawn(
        Command::new(example("workload"))
            .args([
                "--threads",
                "3",
                "--greenlets",
                "4",
                "--switches",
                "40000",
                "--throws",
                "20000",
            ])
            .arg("--wait-for-file")
            .arg(&go)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    // Two that stay, one per attach mode, with different intervals.
    let mut a = gltop_json(t.pid(), &["-d", "0.5", "--attach", "uprobe"]);
    let mut b = gltop_json(t.pid(), &["-d", "0.7", "--attach", "usdt"]);
    wait_gltop_attached(&a);
    wait_gltop_attached(&b);
    let two = semaphores(t.pid());
    let objects_ab = gltop_objects(t.pid());
    assert_eq!(
        objects_ab.links.len(),
        expected_links(&a) + expected_links(&b),
        "{objects_ab:?}"
    );

    // The kernel counts each probe site once per process in its semaphore, however many
    // tracers share the site's uprobe.
    assert!(two.iter().all(|(_, n)| *n > 0), "{two:?}");

    // A third one comes and is killed: the other two keep their links and the semaphores.
    let mut c = gltop_json(t.pid(), &["-d", "0.5"]);
    wait_gltop_attached(&c);
    assert_eq!(semaphores(t.pid()), two, "with a third gltop");
    let objects_abc = gltop_objects(t.pid());
    assert_eq!(
        objects_abc.links.len(),
        objects_ab.links.len() + expected_links(&c),
        "{objects_abc:?}"
    );
    c.signal(Signal::SIGKILL);
    assert!(c.wait_for(LONG).is_some());
    let c_only = Objects {
        links: &objects_abc.links - &objects_ab.links,
        programs: &objects_abc.programs - &objects_ab.programs,
        maps: &objects_abc.maps - &objects_ab.maps,
    };
    let left = c_only.wait_gone(Duration::from_secs(10));
    assert!(left.is_empty(), "outlived the killed gltop: {left:?}");
    // The other two are untouched: their objects, and their share of the semaphores.
    assert_eq!(gltop_objects(t.pid()), objects_ab);
    assert_eq!(semaphores(t.pid()), two, "semaphores after the third left");

    std::fs::write(&go, b"").unwrap();
    let st = t
        .wait_for(Duration::from_secs(120))
        .expect("the target ends");
    assert!(st.success(), "{}", t.stderr_text());
    let report = report_of(&mut t);
    assert!(report.totals.switch > 100_000, "{:?}", report.totals);
    for (who, g) in [("uprobe gltop", &mut a), ("usdt gltop", &mut b)] {
        let st = g.wait_for(LONG).expect("gltop ends with its target");
        assert_eq!(st.code(), Some(0), "{who}: {}", g.stderr_text());
        let last = merged(&json_lines(&g.stdout_text()));
        assert_eq!(last["attach"]["mode"], who.split(' ').next().unwrap());
        assert_exact(who, &report, &last);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The `dropped N` of the TUI header, if shown.
fn header_dropped(screen: &str) -> Option<String> {
    let line = screen.lines().find(|l| l.contains("tracing cost"))?;
    let rest = &line[line.find("dropped ")? + "dropped ".len()..];
    Some(rest.split_whitespace().next()?.to_string())
}

#[test]
fn overflowing_maps_show_in_the_tui_header() {
    if !bpf_and_tmux_or_skip("overflowing_maps_show_in_the_tui_header") {
        return;
    }
    let _s = serial();
    // 640 workers alive under one hub, maps of 64: most events find no room.
    let t = target(&[
        "--threads",
        "1",
        "--greenlets",
        "640",
        "--switches",
        "1000000000",
        "--throws",
        "0",
    ]);
    let cmd = format!(
        "{} -p {} -d 0.5 --hit-cost-ns 500 --max-greenlets 64 --max-edges 64; \
         echo GLTOP_EXIT=$?; sleep 60",
        env!("CARGO_BIN_EXE_gltop"),
        t.pid()
    );
    let tmux = Tmux::start("overflow", &cmd);
    let screen = tmux.wait_for("a non-zero dropped count", LONG, |s| {
        header_dropped(s).is_some_and(|d| d != "0")
    });
    assert!(
        screen.contains("events lost: maps of 64 greenlets and 64 edges full"),
        "{screen}"
    );
    // The table never shows more than the map holds.
    let shown = screen
        .lines()
        .find_map(|l| {
            let rest = &l[l.find(" greenlets (")? + " greenlets (".len()..];
            rest[..rest.find(')')?].parse::<u64>().ok()
        })
        .unwrap_or_else(|| panic!("no table title:\n{screen}"));
    assert!(shown <= 64, "{shown} rows from maps of 64:\n{screen}");
    // A recorded greenlet keeps its record: its detail stays.
    tmux.keys(&["j", "Enter"]);
    tmux.wait_for("a worker's detail", LONG, |s| {
        s.contains("slices (switch-in")
    });
    std::thread::sleep(Duration::from_secs(2));
    let screen = tmux.screen();
    assert!(!screen.contains("no longer recorded"), "{screen}");
    tmux.keys(&["Escape", "q"]);
    let screen = tmux.wait_for("gltop's exit", LONG, |s| s.contains("GLTOP_EXIT="));
    assert!(screen.contains("GLTOP_EXIT=0"), "{screen}");
    assert!(semaphores_zero_within(t.pid(), Duration::from_secs(10)));
}

#[test]
fn the_detail_of_a_forgotten_greenlet_says_so() {
    if !bpf_and_tmux_or_skip("the_detail_of_a_forgotten_greenlet_says_so") {
        return;
    }
    let _s = serial();
    let demo = Proc::spawn(
        Command::new(example("demo"))
            .args(["--wait-for-tracer", "--seconds", "60"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    // Keep no dead greenlet: one that dies while shown is forgotten at the next refresh.
    let cmd = format!(
        "{} -p {} -d 0.5 --hit-cost-ns 500 --max-dead 0; echo GLTOP_EXIT=$?; sleep 60",
        env!("CARGO_BIN_EXE_gltop"),
        demo.pid()
    );
    let tmux = Tmux::start("forgotten", &cmd);
    tmux.wait_for("connections in the table", LONG, |s| s.contains("conn-"));
    // Sort by id, newest first: the top row is the newest connection, which ends within
    // a few tens of milliseconds.
    tmux.keys(&["h", "h", "h", "h", "h", "i"]);
    tmux.wait_for("the table sorted by id", LONG, |s| s.contains("ID▼"));
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("the detail of a forgotten greenlet", LONG, |s| {
        s.contains("is no longer recorded (dead and forgotten")
    });
    assert!(
        screen.contains("keeps the last 0 dead greenlets"),
        "{screen}"
    );
    tmux.keys(&["Escape", "q"]);
    let screen = tmux.wait_for("gltop's exit", LONG, |s| s.contains("GLTOP_EXIT="));
    assert!(screen.contains("GLTOP_EXIT=0"), "{screen}");
}
