//! Helpers shared by the spec tests: a print log, greenlet labels, a printing tracer.
#![allow(dead_code)]

use std::cell::RefCell;
use std::rc::Rc;

use greenlet::{getcurrent, Event, Greenlet, Tracer};

/// Collects what a Python example would print, one line per entry.
#[derive(Clone, Default)]
pub struct Log(Rc<RefCell<Vec<String>>>);

impl Log {
    pub fn new() -> Log {
        Log::default()
    }

    pub fn say(&self, line: impl Into<String>) {
        self.0.borrow_mut().push(line.into());
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.borrow().clone()
    }

    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.0.borrow_mut())
    }
}

/// The examples' `nm(g)`: the greenlet's name, `main` for a main greenlet, `?` otherwise.
pub fn nm(g: &Greenlet) -> String {
    match g.name() {
        Some(name) => name.to_string(),
        None if g.is_main() => "main".to_string(),
        None => "?".to_string(),
    }
}

/// `switch` or `throw`.
pub fn kind(event: &Event) -> &'static str {
    event.kind().as_str()
}

/// The examples' usual trace line: `TRACE kind origin -> target | current: name`.
pub fn trace_line(event: &Event) -> String {
    format!(
        "TRACE {} {} -> {} | current: {}",
        kind(event),
        nm(event.origin()),
        nm(event.target()),
        nm(&getcurrent())
    )
}

/// The examples' usual tracer: logs a [`trace_line`] per event.
pub fn printing_tracer(log: &Log) -> Tracer {
    let log = log.clone();
    Tracer::new(move |event: &Event| {
        log.say(trace_line(event));
        Ok(())
    })
}

/// A greenlet's state words as Python's repr ends them (`suspended active started main>`),
/// read from its `Debug` form (`<greenlet #N "name" WORDS>`), for comparing transcripts that
/// print greenlets.
pub fn words(g: &Greenlet) -> String {
    let debug = format!("{g:?}");
    let rest = debug
        .strip_prefix(&format!("<greenlet #{} ", g.id()))
        .expect("Debug starts with the id");
    match g.name() {
        Some(name) => rest
            .strip_prefix(&format!("{name:?} "))
            .expect("then the name")
            .to_string(),
        None => rest.to_string(),
    }
}

/// A named child greenlet.
pub fn named<F, R>(name: &str, run: F) -> Greenlet
where
    F: FnOnce(greenlet::Value) -> Result<R, greenlet::Error> + 'static,
    R: 'static,
{
    Greenlet::builder().name(name).build(run)
}

/// Set in the child process that [`run_in_child`] starts.
const CHILD_ENV: &str = "GREENLET_TEST_CHILD";

/// Runs the test `name` of this test binary again in a child process and returns its exit
/// status, stdout and stderr; returns `None` when called in that child, which then runs the
/// scenario itself. For scenarios that may crash or abort the process, which would otherwise
/// take every other test of the binary down with them.
pub fn run_in_child(name: &str) -> Option<(std::process::ExitStatus, String, String)> {
    if std::env::var_os(CHILD_ENV).is_some() {
        return None;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("cannot run the test binary again");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    Some((output.status, stdout, stderr))
}

/// [`run_in_child`], failing unless the child succeeds: returns its stdout and stderr, or
/// `None` in the child.
pub fn in_child_process(name: &str) -> Option<(String, String)> {
    let (status, stdout, stderr) = run_in_child(name)?;
    assert!(
        status.success(),
        "the scenario failed in a child process ({status}):\n{stdout}{stderr}"
    );
    Some((stdout, stderr))
}
