//! What the spec tests print, as the Python examples they port do: a print [`Log`], greenlet
//! labels, a printing tracer.

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
