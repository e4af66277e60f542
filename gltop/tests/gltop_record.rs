//! `gltop record` with real BPF on the real demo (issue 12, "`gltop record`"): the cpu-hog's
//! hot path under its own `cpu-hog#ID` frame with no hub frame above it, the same function in
//! the SVG, filters by id and by name, a name that matches nothing, and a target that exits
//! while it is recorded; and the switch window on a thread that does nothing but switch: every
//! sample charged to the greenlet whose frames it holds.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use support::*;

/// The function the demo's hog computes in (`#[inline(never)]` in workloads/src/bin/demo.rs).
const HOG_FN: &str = "demo::spin";
/// The hub's loop: never above a greenlet's own frames.
const HUB_FN: &str = "hub_loop";

/// One folded line: the greenlet's frame (`NAME#ID` or `?#ID`) split, the frames after it
/// (outermost first) and the count.
#[derive(Debug, Clone)]
struct Line {
    name: String,
    id: u64,
    frames: Vec<String>,
    count: u64,
}

/// Parses folded stacks strictly: every line `NAME#ID;frame;... COUNT` with a positive count,
/// no empty frame, no line twice.
fn parse_folded(text: &str) -> Vec<Line> {
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "folded stacks end with a newline"
    );
    let mut seen = BTreeSet::new();
    text.lines()
        .map(|l| {
            let (stack, count) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("no count in {l:?}"));
            let count: u64 = count
                .parse()
                .unwrap_or_else(|_| panic!("bad count in {l:?}"));
            assert!(count > 0, "a zero count in {l:?}");
            assert!(seen.insert(stack.to_string()), "line twice: {l:?}");
            let mut frames = stack.split(';').map(str::to_string);
            let first = frames.next().unwrap();
            let (name, id) = first
                .rsplit_once('#')
                .unwrap_or_else(|| panic!("no NAME#ID first in {l:?}"));
            let id = id
                .parse()
                .unwrap_or_else(|_| panic!("bad greenlet id in {l:?}"));
            assert!(!name.is_empty(), "an empty name in {l:?}");
            let frames: Vec<String> = frames.collect();
            assert!(
                frames.iter().all(|f| !f.is_empty()),
                "an empty frame in {l:?}"
            );
            Line {
                name: name.to_string(),
                id,
                frames,
                count,
            }
        })
        .collect()
}

/// A scratch directory for one test's files.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gltop-record-{test}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The demo, on two threads, serving only once `start` exists (so that a recording that
/// started before sees every greenlet created, names included), for `seconds`.
fn demo(start: Option<&Path>, seconds: &str) -> Proc {
    let mut cmd = Command::new(example("demo"));
    cmd.args(["--threads", "2", "--seconds", seconds]);
    if let Some(start) = start {
        cmd.arg("--wait-for-file").arg(start);
    }
    Proc::spawn(cmd.stdout(Stdio::null()).stderr(Stdio::null()))
}

/// What one `gltop record` run left.
struct Run {
    status: ExitStatus,
    stderr: String,
    folded: Option<String>,
    svg: Option<String>,
}

/// Runs `gltop record -p PID -d SECONDS --hz 999 --folded DIR/TAG.folded [--svg ...] args...`;
/// once it says it records, creates `start` (if given).
fn record(
    pid: i32,
    seconds: &str,
    dir: &Path,
    tag: &str,
    svg: bool,
    args: &[&str],
    start: Option<&Path>,
) -> Run {
    let folded = dir.join(format!("{tag}.folded"));
    let svg_path = dir.join(format!("{tag}.svg"));
    let mut cmd = gltop();
    cmd.args([
        "record",
        "-p",
        &pid.to_string(),
        "-d",
        seconds,
        "--hz",
        "999",
    ])
    .arg("--folded")
    .arg(&folded);
    if svg {
        cmd.arg("--svg").arg(&svg_path);
    }
    let mut p = Proc::spawn(
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    if let Some(start) = start {
        let started = p.wait_stderr("gltop: recording process", TIMEOUT);
        assert!(started, "gltop record did not start: {}", p.stderr_so_far());
        std::fs::write(start, b"").unwrap();
    }
    let status = p.wait("gltop record", TIMEOUT);
    assert_eq!(p.stdout_text(), "", "gltop record writes nothing on stdout");
    Run {
        status,
        stderr: p.stderr_text(),
        folded: std::fs::read_to_string(&folded).ok(),
        svg: svg
            .then(|| std::fs::read_to_string(&svg_path).ok())
            .flatten(),
    }
}

/// The greenlet lines of `name`, hottest first.
fn lines_of<'a>(lines: &'a [Line], name: &str) -> Vec<&'a Line> {
    let mut of: Vec<&Line> = lines.iter().filter(|l| l.name == name).collect();
    of.sort_by_key(|l| std::cmp::Reverse(l.count));
    of
}

#[test]
fn record_profiles_the_demos_cpu_hog_under_its_own_frame() {
    if !bpf_or_skip("record_profiles_the_demos_cpu_hog_under_its_own_frame") {
        return;
    }
    let _serial = serial();
    let dir = scratch("hog");
    let start = dir.join("start");
    let target = demo(Some(&start), "60");

    let run = record(target.pid(), "5", &dir, "all", true, &[], Some(&start));
    assert!(run.status.success(), "{}: {}", run.status, run.stderr);
    assert!(
        !run.stderr.contains("frame pointers"),
        "the demo is built with frame pointers: {}",
        run.stderr
    );
    let lines = parse_folded(run.folded.as_deref().expect("the folded stacks"));
    let hog = lines_of(&lines, "cpu-hog");
    let hottest = hog
        .first()
        .unwrap_or_else(|| panic!("no cpu-hog line in:\n{}", run.folded.as_deref().unwrap()));
    let samples: u64 = lines.iter().map(|l| l.count).sum();
    let hog_samples: u64 = hog.iter().map(|l| l.count).sum();
    eprintln!(
        "{samples} samples in {} lines; cpu-hog#{}: {hog_samples} samples in {} lines, \
         hottest {} samples, {} frames deep: {}",
        lines.len(),
        hottest.id,
        hog.len(),
        hottest.count,
        hottest.frames.len(),
        hottest.frames.join(";")
    );
    assert!(
        hottest.frames.iter().any(|f| f == HOG_FN),
        "the hottest cpu-hog path has {HOG_FN}: {:?}",
        hottest.frames
    );
    // The hog's own frames: it started from its closure, so that is on its path too.
    assert!(
        hottest.frames.iter().any(|f| f.contains("hog")),
        "the hottest cpu-hog path has the hog's closure: {:?}",
        hottest.frames
    );
    // Cut at the greenlet's bottom: no hub frame, no trampoline, no main above it; and none of
    // the hub's switch code either: a sample taken between the hub's hand-off (which makes the
    // hog current) and the stack switch (which the hub makes from its own stack) is the hub's,
    // told apart by the stack pointer (bpf/sample.h, the switch window).
    for l in &hog {
        assert!(
            !l.frames.iter().any(|f| f.contains("stack_init_trampoline")),
            "a trampoline frame above the hog's: {:?}",
            l.frames
        );
        assert!(
            !l.frames.iter().any(|f| f.contains(HUB_FN)),
            "a frame of the hub in a sample of the hog ({} samples): {:?}",
            l.count,
            l.frames
        );
    }
    // The hog runs a good part of the time on one of two threads: at 999 Hz for 5 s that is
    // hundreds of samples (a loose bound: this checks that samples are counted, not a rate).
    assert!(hog_samples >= 100, "{hog_samples} samples of the hog");
    assert!(hog.iter().all(|l| l.id == hottest.id), "one hog");
    // The hub and the workers' greenlets are named too.
    assert!(
        lines
            .iter()
            .any(|l| l.name.starts_with("conn-") || l.name == "acceptor"),
        "other named greenlets: {:?}",
        lines.iter().map(|l| &l.name).collect::<BTreeSet<_>>()
    );
    let svg = run.svg.expect("the SVG");
    assert!(svg.starts_with("<?xml"), "an SVG");
    assert!(svg.contains(HOG_FN), "the SVG names {HOG_FN}");
    assert!(svg.contains(&format!("cpu-hog#{}", hottest.id)));

    // Recorded again, the hog was created before: `?#ID`, and --greenlet by id keeps it only.
    let id = hottest.id.to_string();
    let again = record(
        target.pid(),
        "2",
        &dir,
        "by-id",
        false,
        &["--greenlet", &id],
        None,
    );
    assert!(again.status.success(), "{}: {}", again.status, again.stderr);
    let lines = parse_folded(again.folded.as_deref().unwrap());
    assert!(!lines.is_empty(), "samples of the hog by id");
    for l in &lines {
        assert_eq!((l.name.as_str(), l.id), ("?", hottest.id), "{l:?}");
    }
    assert!(lines.iter().any(|l| l.frames.iter().any(|f| f == HOG_FN)));

    // Its name is unknown to this recording: no sample matches it, said in one line, exit 2.
    let none = record(
        target.pid(),
        "1",
        &dir,
        "by-name",
        false,
        &["--greenlet", "cpu-hog"],
        None,
    );
    assert_eq!(none.status.code(), Some(2), "{}", none.stderr);
    assert_eq!(none.stderr.lines().count(), 2, "{}", none.stderr);
    assert!(
        none.stderr
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("gltop: no samples matched --greenlet cpu-hog"),
        "{}",
        none.stderr
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The innermost frame every walk of the main greenlet of `switch_loop` goes through.
const MAIN_FN: &str = "switch_loop::main";
/// corosensei's first frame on a coroutine's stack: in every walk of a child's frames.
const CHILD_BOTTOM: &str = "coroutine_func";

#[test]
fn a_switch_window_is_charged_to_the_greenlet_whose_frames_it_holds() {
    if !bpf_or_skip("a_switch_window_is_charged_to_the_greenlet_whose_frames_it_holds") {
        return;
    }
    let _serial = serial();
    let dir = scratch("window");
    // Main and one child switch to each other and do nothing else: a good part of the time
    // is between a hand-off and its stack switch (a fifth of the samples were charged to the
    // wrong greenlet before the sampler told the window apart).
    let target = Proc::spawn(
        Command::new(example("switch_loop"))
            .args(["switch_main_child", "1000000000000"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let run = record(target.pid(), "3", &dir, "window", false, &[], None);
    drop(target);
    assert!(run.status.success(), "{}: {}", run.status, run.stderr);
    let lines = parse_folded(run.folded.as_deref().expect("the folded stacks"));
    let ids_with = |frame: &str| -> BTreeSet<u64> {
        lines
            .iter()
            .filter(|l| l.frames.iter().any(|f| f.contains(frame)))
            .map(|l| l.id)
            .collect()
    };
    let samples_of =
        |id: u64| -> u64 { lines.iter().filter(|l| l.id == id).map(|l| l.count).sum() };
    let (mains, children) = (ids_with(MAIN_FN), ids_with(CHILD_BOTTOM));
    let total: u64 = lines.iter().map(|l| l.count).sum();
    eprintln!(
        "{total} samples: main's frames under {mains:?}, a child's under {children:?}: {:?}",
        lines
            .iter()
            .map(|l| l.id)
            .collect::<BTreeSet<_>>()
            .iter()
            .map(|&id| (id, samples_of(id)))
            .collect::<Vec<_>>()
    );
    // Main's frames under one greenlet, the child's under another, and none of either under
    // the other: not one sample of the window (thousands of switches a millisecond) charged
    // to the switch's target while the sender's frames ran, or the other way round.
    assert_eq!(
        mains.len(),
        1,
        "main's frames under one greenlet: {mains:?}"
    );
    assert_eq!(children.len(), 1, "the child's under one: {children:?}");
    let (main, child) = (*mains.first().unwrap(), *children.first().unwrap());
    assert_ne!(
        main, child,
        "main's frames and the child's under one greenlet"
    );
    for l in &lines {
        assert!(
            l.frames
                .iter()
                .any(|f| f.contains(MAIN_FN) || f.contains(CHILD_BOTTOM)),
            "a sample of neither main's frames nor a child's: {l:?}"
        );
    }
    // Both ran (a loose bound: 3 s at 999 Hz of a thread that never sleeps).
    assert!(
        samples_of(main) >= 100 && samples_of(child) >= 100,
        "{total} samples"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_name_filter_keeps_only_that_greenlets_lines() {
    if !bpf_or_skip("a_name_filter_keeps_only_that_greenlets_lines") {
        return;
    }
    let _serial = serial();
    let dir = scratch("filter");
    let start = dir.join("start");
    let target = demo(Some(&start), "60");
    let run = record(
        target.pid(),
        "3",
        &dir,
        "hog",
        false,
        &["--greenlet", "cpu-hog"],
        Some(&start),
    );
    assert!(run.status.success(), "{}: {}", run.status, run.stderr);
    let lines = parse_folded(run.folded.as_deref().unwrap());
    assert!(!lines.is_empty(), "samples of the hog");
    let ids: BTreeSet<u64> = lines.iter().map(|l| l.id).collect();
    assert_eq!(ids.len(), 1, "one greenlet: {ids:?}");
    for l in &lines {
        assert_eq!(l.name, "cpu-hog", "{l:?}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_target_that_exits_ends_the_recording_with_what_was_collected() {
    if !bpf_or_skip("a_target_that_exits_ends_the_recording_with_what_was_collected") {
        return;
    }
    let _serial = serial();
    let dir = scratch("exit");
    let mut target = demo(None, "3");
    let begin = std::time::Instant::now();
    let run = record(target.pid(), "120", &dir, "exit", true, &[], None);
    assert!(
        begin.elapsed() < Duration::from_secs(100),
        "gltop record went on after the target exited"
    );
    target.wait("the demo", TIMEOUT);
    assert!(run.status.success(), "{}: {}", run.status, run.stderr);
    assert!(
        run.stderr
            .contains(&format!("process {} (demo) exited after", target.pid())),
        "{}",
        run.stderr
    );
    let lines = parse_folded(run.folded.as_deref().unwrap());
    assert!(!lines.is_empty(), "what was collected is written");
    assert!(run.svg.is_some_and(|s| s.contains(HOG_FN)));
    std::fs::remove_dir_all(&dir).ok();
}
