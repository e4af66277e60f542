//! The TUI, driven in tmux against the demo: header, a known greenlet name, sorting, the
//! detail view, help, and the exit when the demo ends.

mod gltop_common;

use std::process::{Command, Stdio};
use std::time::Duration;

use gltop_common::tmux::{tmux_or_skip, Tmux};
use gltop_common::*;

/// The header line of the table, e.g. `ID NAME▲ PARENT ...`.
fn table_header(screen: &str) -> String {
    screen
        .lines()
        .find(|l| l.contains("PARENT") && l.contains("STATE"))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn tui_shows_header_names_sorting_detail_help_and_exits_with_the_demo() {
    if !bpf_or_skip("tui_shows_header_names_sorting_detail_help_and_exits_with_the_demo") {
        return;
    }
    if !tmux_or_skip() {
        return;
    }
    let mut demo = Proc::spawn(
        Command::new(example("demo"))
            .args(["--wait-for-tracer", "--seconds", "20", "--hog-every", "2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let pid = demo.pid();
    let cmd = format!(
        "{} -p {pid} -d 0.5; echo GLTOP_EXIT=$?; sleep 60",
        env!("CARGO_BIN_EXE_gltop")
    );
    let tmux = Tmux::start("tour", &cmd);
    let long = Duration::from_secs(30);

    // The header: process, threads, greenlets, rates, tracing cost.
    let screen = tmux.wait_for("the header with rates", long, |s| {
        s.contains(&format!("pid {pid} (demo)")) && s.contains("of a CPU")
    });
    for want in [
        "threads",
        "greenlets",
        "alive",
        "dead",
        "throws",
        "tracing cost",
        "of a CPU",
    ] {
        assert!(screen.contains(want), "header shows {want:?}:\n{screen}");
    }
    // Known names: the demo's long-lived greenlets, seen from their creation.
    tmux.wait_for("the demo's greenlets by name", long, |s| {
        s.contains("cpu-hog") && s.contains("hub") && s.contains("acceptor")
    });
    assert!(
        table_header(&tmux.screen()).contains("CPU%▼"),
        "default sort: CPU% descending"
    );

    // Sorting: h moves the sort to the left (SW/S, STATE, PARENT, NAME), i inverts it.
    tmux.keys(&["h", "h", "h", "h"]);
    tmux.wait_for("sort by NAME ascending", long, |s| {
        table_header(s).contains("NAME▲")
    });
    tmux.keys(&["i"]);
    let screen = tmux.wait_for("sort by NAME descending", long, |s| {
        table_header(s).contains("NAME▼")
    });
    // Descending by name: `main` (the nameless main greenlets) sorts first.
    let first_row = screen
        .lines()
        .skip_while(|l| !l.contains("PARENT"))
        .nth(1)
        .unwrap_or_default();
    assert!(first_row.contains(" main "), "{screen}");
    tmux.keys(&["s"]);
    tmux.wait_for("s moves to the next column", long, |s| {
        table_header(s).contains("PARENT▲")
    });

    // Detail of the first greenlet by name: an acceptor.
    tmux.keys(&["h"]);
    tmux.wait_for("NAME ascending", long, |s| {
        table_header(s).contains("NAME▲")
    });
    tmux.keys(&["g", "Enter"]);
    // Wait for the whole view: a capture can land in the middle of a redraw.
    let screen = tmux.wait_for("the detail view", long, |s| {
        s.contains("slices (switch-in to switch-out)")
            && s.contains("top edges in")
            && s.contains("top edges out")
            && s.contains("switches in")
    });
    assert!(screen.contains("\"acceptor\""), "{screen}");
    assert!(screen.contains("top edges out"), "{screen}");
    assert!(screen.contains("switches in"), "{screen}");
    tmux.keys(&["Escape"]);
    tmux.wait_for("back to the table", long, |s| !table_header(s).is_empty());

    // Help, closed by any key.
    tmux.keys(&["?"]);
    tmux.wait_for("the help", long, |s| {
        s.contains("gltop help") && s.contains("invert the sort")
    });
    tmux.keys(&["j"]);
    tmux.wait_for("the help closed", long, |s| !s.contains("gltop help"));

    // Pause shows in the header.
    tmux.keys(&["Space"]);
    tmux.wait_for("paused", long, |s| s.contains("PAUSED"));
    tmux.keys(&["Space"]);
    tmux.wait_for("resumed", long, |s| !s.contains("PAUSED"));

    // The demo ends: gltop says so and exits 0.
    let screen = tmux.wait_for("the demo's end", Duration::from_secs(60), |s| {
        s.contains("GLTOP_EXIT=")
    });
    assert!(
        screen.contains(&format!("gltop: process {pid} (demo) exited")),
        "{screen}"
    );
    assert!(screen.contains("GLTOP_EXIT=0"), "{screen}");
    demo.wait_for(Duration::from_secs(10));
}

#[test]
fn q_quits_and_detaches() {
    if !bpf_or_skip("q_quits_and_detaches") {
        return;
    }
    if !tmux_or_skip() {
        return;
    }
    let t = target(&["--threads", "1", "--rounds", "100000000"]);
    let cmd = format!(
        "{} -p {} -d 0.5 --hit-cost-ns 500; echo GLTOP_EXIT=$?; sleep 60",
        env!("CARGO_BIN_EXE_gltop"),
        t.pid()
    );
    let tmux = Tmux::start("quit", &cmd);
    tmux.wait_for("the table", Duration::from_secs(30), |s| s.contains("t0-0"));
    assert!(semaphores(t.pid()).iter().all(|(_, v)| *v > 0));
    tmux.keys(&["q"]);
    let screen = tmux.wait_for("exit", Duration::from_secs(30), |s| {
        s.contains("GLTOP_EXIT=")
    });
    assert!(screen.contains("GLTOP_EXIT=0"), "{screen}");
    assert!(semaphores_zero_within(t.pid(), Duration::from_secs(10)));
}
