//! The in-process blocking checker (`greenlet::lint::BlockingChecker`) on the `blocker`
//! program's own scenarios, run in-process (no BPF): the same four cases gltop's blocking
//! detection is tested with, a case with no finding, and the checker's tracer chaining.
//!
//! Each test runs on its own thread (the test harness's), and the checker watches only its
//! own thread, so the tests may run in parallel: the scenarios time themselves by the wall
//! clock, and a spin on a loaded machine is still a spin (preempted, not waiting).

#[path = "../workloads/src/blocking.rs"]
#[allow(dead_code)]
mod blocking;

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use greenlet::lint::{Blocking, BlockingChecker, Lint, Where, BLOCKING, DEFAULT_THRESHOLD};
use greenlet::{gettrace, settrace, Event, Greenlet, Tracer};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The one finding of a scenario whose one greenlet blocked: checked against the scenario's
/// own report (its greenlet, its thread, its measured duration).
///
fn one_finding(report: &blocking::Report, found: &[Blocking]) -> Blocking {
    let found = scenario_findings(report, found);
    assert_eq!(found.len(), 1, "one episode expected, got {found:#?}");
    let finding = found[0].clone();
    let episode = &report.episodes[0];
    assert_eq!(finding.greenlet_id, episode.greenlet);
    assert_eq!(finding.greenlet_name.as_deref(), Some(episode.name));
    assert_eq!(finding.thread, report.tid as u64);
    assert!(!finding.ongoing);
    assert!(finding.stack.is_empty() && finding.syscall.is_none());
    // The turn holds the measured call and lies inside main's switch into the greenlet.
    assert!(
        finding.duration >= episode.measured && finding.duration <= episode.outer,
        "turn {:?}, call measured {:?}, main's switch {:?}",
        finding.duration,
        episode.measured,
        episode.outer
    );
    assert_eq!(finding.name(), BLOCKING);
    finding
}

/// The findings of a scenario: none may be about the test's main greenlet, which is marked
/// idle while the scenario runs ([`scenario`]): its own turns (setting up, spawning and
/// joining a writer thread, taking seconds under valgrind) are the harness's, not the
/// scenario's, and a finding about main would be a scenario episode put on the wrong greenlet.
fn scenario_findings(report: &blocking::Report, found: &[Blocking]) -> Vec<Blocking> {
    assert!(
        found.iter().all(|b| b.greenlet_id != report.main),
        "a finding about the idle main greenlet: {found:#?}"
    );
    found.to_vec()
}

/// Runs a scenario under `checker` with the test's main greenlet marked idle from before
/// its first switch until the checker is uninstalled (see [`scenario_findings`]); returns
/// the scenario's report and every finding.
fn scenario(
    checker: BlockingChecker,
    run: impl FnOnce() -> Result<blocking::Report, greenlet::Error>,
) -> (blocking::Report, Vec<Blocking>) {
    let main = greenlet::getcurrent();
    main.set_idle(true);
    let report = run();
    let found = checker.uninstall();
    main.set_idle(false);
    (report.expect("the scenario runs"), found)
}

/// The episode lasted what the scenario asked for: not shorter (less 30 ms for a writer
/// thread that started early), and not grossly longer. How exactly the finding matches the
/// episode is `one_finding`'s check, against times measured in the same run; a fixed upper
/// band here would fail under valgrind (`make memcheck`), where starting a thread is slow.
fn assert_about(d: Duration, want: u64) {
    let (low, high) = (ms(want - 30), ms(want * 2));
    assert!(
        d >= low && d <= high,
        "{d:?} not within [{low:?}, {high:?}]"
    );
}

#[test]
fn a_300_ms_spin_is_one_on_cpu_episode() {
    let checker = BlockingChecker::install();
    assert_eq!(checker.threshold(), DEFAULT_THRESHOLD);
    let (report, found) = scenario(checker, || blocking::spin(300));
    let finding = one_finding(&report, &found);
    assert_about(finding.duration, 300);
    assert_eq!(finding.cpu, Where::OnCpu);
    assert_eq!(finding.greenlet_name.as_deref(), Some("spinner"));
}

#[test]
fn a_300_ms_read_on_a_pipe_is_one_off_cpu_episode() {
    let checker = BlockingChecker::install();
    let (report, found) = scenario(checker, || blocking::read(300));
    let finding = one_finding(&report, &found);
    assert_about(finding.duration, 300);
    assert_eq!(finding.cpu, Where::OffCpu);
    assert_eq!(finding.greenlet_name.as_deref(), Some("reader"));
}

#[test]
fn a_300_ms_nanosleep_is_one_off_cpu_episode() {
    let checker = BlockingChecker::install();
    let (report, found) = scenario(checker, || blocking::sleep(300));
    let finding = one_finding(&report, &found);
    assert_about(finding.duration, 300);
    assert_eq!(finding.cpu, Where::OffCpu);
    assert!(
        finding.summary().contains("\"sleeper\" blocked thread")
            && finding.summary().contains("off-CPU"),
        "{}",
        finding.summary()
    );
}

#[test]
fn an_idle_hub_waiting_1_s_is_not_reported() {
    let checker = BlockingChecker::install();
    let (report, found) = scenario(checker, || blocking::idle_hub(1000));
    assert!(report.greenlets[0].idle);
    assert!(report.episodes[0].measured >= ms(1000), "the hub did wait");
    assert_eq!(scenario_findings(&report, &found), []);
}

#[test]
fn an_80_ms_spin_is_not_reported_at_100_ms() {
    let checker = BlockingChecker::install();
    let (report, found) = scenario(checker, || blocking::spin(80));
    assert!(report.episodes[0].measured >= ms(80), "the spin did spin");
    assert_eq!(scenario_findings(&report, &found), []);
}

/// "No greenlet blocked longer than 50 ms": a program that switches often passes.
#[test]
fn a_busy_program_that_switches_often_has_no_finding() {
    let checker = BlockingChecker::with_threshold(ms(50));
    let (report, found) = scenario(checker, || blocking::split(0.3));
    assert!(report.switches > 1000, "it did switch: {report:?}");
    let found = scenario_findings(&report, &found);
    assert!(
        found.is_empty(),
        "no greenlet blocked longer than 50 ms: {found:#?}"
    );
}

/// The same checker catches an idle mark lifted (the greenlet is judged as it is at the end
/// of its turn too), and reports the running greenlet's long turn as ongoing.
#[test]
fn a_turn_still_running_is_reported_as_ongoing() {
    let checker = BlockingChecker::with_threshold(ms(50));
    let main = greenlet::getcurrent();
    std::thread::sleep(ms(80));
    let found = checker.findings();
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].ongoing && found[0].greenlet_id == main.id());
    assert!(found[0].summary().ends_with("(still going)"));
    // Marked idle now: no longer reported, even though it has not switched.
    main.set_idle(true);
    assert_eq!(checker.uninstall(), []);
    main.set_idle(false);
}

#[test]
fn it_chains_to_the_previous_tracer_and_puts_it_back() {
    let calls = Rc::new(Cell::new(0));
    let counter = calls.clone();
    let mine = Tracer::new(move |_: &Event| {
        counter.set(counter.get() + 1);
        Ok(())
    });
    let before = settrace(Some(mine.clone()));
    let checker = BlockingChecker::install();
    assert_ne!(gettrace().as_ref(), Some(&mine), "the checker is installed");
    let g = Greenlet::new(|_| Ok(()));
    g.switch(()).unwrap();
    assert_eq!(
        calls.get(),
        2,
        "main -> g and back, seen by the previous tracer"
    );
    assert_eq!(checker.uninstall(), []);
    assert_eq!(gettrace(), Some(mine), "the previous tracer is back");
    settrace(before);
}
