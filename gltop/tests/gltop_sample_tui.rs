//! The live view of the sampled mode, driven in tmux against `blocker`: sampled columns with
//! the unknown ones left out, the blocking pane listing the spin episode, its stack on Enter.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::tmux::{bpf_and_tmux_or_skip, Tmux};
use support::*;

#[test]
fn the_blocking_pane_lists_a_spin_and_shows_its_stack() {
    if !bpf_and_tmux_or_skip("the_blocking_pane_lists_a_spin_and_shows_its_stack") {
        return;
    }
    let _serial = serial();
    let go = std::env::temp_dir().join(format!("gltop-sample-tui-{}", std::process::id()));
    let _ = std::fs::remove_file(&go);
    let mut blocker = Proc::spawn(
        Command::new(example("blocker"))
            .args(["--scenario", "spin", "--ms", "300", "--linger-ms", "20000"])
            .arg("--wait-for-file")
            .arg(&go)
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    assert!(blocker.wait_stderr("waiting for", Duration::from_secs(60)));
    let pid = blocker.pid();
    let cmd = format!(
        "{} -p {pid} --sample -d 0.3 --hit-cost-ns 8000; echo GLTOP_EXIT=$?; sleep 60",
        env!("CARGO_BIN_EXE_gltop")
    );
    let tmux = Tmux::start("sample-blocking", &cmd);
    let long = Duration::from_secs(30);
    let screen = tmux.wait_for("the sampled header", long, |s| {
        s.contains(&format!("pid {pid} (blocker)")) && s.contains("sampled at 99 Hz")
    });
    assert!(
        screen.contains("samples/s") || screen.contains("per sample"),
        "{screen}"
    );
    let header = screen
        .lines()
        .find(|l| l.contains("SAMPLES"))
        .unwrap_or_default()
        .to_string();
    for want in ["CPU%▼", "BLOCKED", "PREEMPTED"] {
        assert!(header.contains(want), "{want} in {header:?}");
    }
    for absent in ["SW/S", "SWITCHES", "MAX SLICE", "THROWS"] {
        assert!(!header.contains(absent), "no {absent} in {header:?}");
    }
    std::fs::write(&go, b"").unwrap();
    let screen = tmux.wait_for("the episode in the header", long, |s| {
        s.contains("blocking >100ms 1 episodes")
    });
    assert!(screen.contains("spinner"), "{screen}");
    tmux.keys(&["b"]);
    let screen = tmux.wait_for("the blocking pane", long, |s| {
        s.contains("STARTED") && s.contains("spinner") && s.contains("on-CPU")
    });
    let row = screen
        .lines()
        .find(|l| l.contains("spinner"))
        .unwrap_or_default();
    assert!(!row.contains("ongoing"), "{row}");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("the stack", long, |s| {
        s.contains("user stack, innermost first")
    });
    assert!(screen.contains("spin_without_switching"), "{screen}");
    assert!(screen.contains("on-CPU"), "{screen}");
    tmux.keys(&["Escape"]);
    tmux.wait_for("back to the pane", long, |s| s.contains("STARTED"));
    tmux.keys(&["q"]);
    tmux.wait_for("gltop's exit", long, |s| s.contains("GLTOP_EXIT=0"));
    let _ = std::fs::remove_file(&go);
    blocker.kill();
}
