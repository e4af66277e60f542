//! [`Recorder`]: a tracer that records events, for tests of greenlet code.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;

use crate::error::Error;
use crate::greenlet::Greenlet;
use crate::trace::{settrace, Event, EventKind, Tracer};

/// A tracer for tests: install it, run greenlet code, read back the events it saw and assert
/// on them. Dropping it restores the tracer that was installed before.
///
/// Events are recorded by greenlet id (and a label for messages), not by handle, so recording
/// never keeps a greenlet alive and never changes when one is killed.
///
/// ```
/// use greenlet::{getcurrent, Greenlet, RecordedEvent, Recorder};
///
/// let main = getcurrent();
/// let ping = Greenlet::builder().name("ping").build({
///     let main = main.clone();
///     move |_| main.switch("ping!")
/// });
/// let recorder = Recorder::install();
/// ping.switch(())?; // main -> ping, then ping -> main with "ping!"
/// ping.switch(())?; // main -> ping, ping returns: ping -> main
/// assert_eq!(
///     recorder.lines(),
///     ["switch main -> ping", "switch ping -> main", "switch main -> ping", "switch ping -> main"]
/// );
/// assert_eq!(recorder.events()[0], RecordedEvent::switch(&main, &ping));
/// drop(recorder); // the previous tracer (here: none) is back
/// assert!(greenlet::gettrace().is_none());
/// # Ok::<(), greenlet::Error>(())
/// ```
pub struct Recorder {
    log: Rc<RefCell<Vec<RecordedEvent>>>,
    tracer: Tracer,
    previous: Option<Tracer>,
}

impl Recorder {
    /// Installs a recorder as the calling thread's tracer.
    pub fn install() -> Recorder {
        Recorder::install_inner(None)
    }

    /// Installs a recorder whose `n`th event (counting from 1) fails with an
    /// [`InjectedFailure`] error, which removes it as every failing tracer is removed; the
    /// failing event is recorded too.
    pub fn failing_on(n: usize) -> Recorder {
        Recorder::install_inner(Some(n))
    }

    fn install_inner(fail_on: Option<usize>) -> Recorder {
        let log = Rc::new(RefCell::new(Vec::new()));
        let sink = log.clone();
        let seen = Cell::new(0_usize);
        let tracer = Tracer::new(move |event: &Event| {
            sink.borrow_mut().push(RecordedEvent::from_event(event));
            seen.set(seen.get() + 1);
            match fail_on {
                Some(n) if n == seen.get() => Err(Error::user(InjectedFailure { event: n })),
                _ => Ok(()),
            }
        });
        let previous = settrace(Some(tracer.clone()));
        Recorder {
            log,
            tracer,
            previous,
        }
    }

    /// The tracer this recorder installed (to compare with [`gettrace`](crate::gettrace)).
    pub fn tracer(&self) -> &Tracer {
        &self.tracer
    }

    /// The events recorded so far.
    pub fn events(&self) -> Vec<RecordedEvent> {
        self.log.borrow().clone()
    }

    /// Takes the events recorded so far, leaving the log empty.
    pub fn take(&self) -> Vec<RecordedEvent> {
        std::mem::take(&mut self.log.borrow_mut())
    }

    /// The events as lines like `switch main -> worker-7` (see [`RecordedEvent`]'s `Display`).
    pub fn lines(&self) -> Vec<String> {
        self.log.borrow().iter().map(ToString::to_string).collect()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // Put back the previous tracer only if this recorder is still the installed one: a
        // recorder removed by a failure (or replaced by the test) leaves the slot alone.
        let current = crate::trace::gettrace();
        if current.as_ref() == Some(&self.tracer) {
            settrace(self.previous.take());
        }
    }
}

/// One recorded event: its kind and its two greenlets, by id.
///
/// Equality compares the kind and the ids. `Display` gives `KIND ORIGIN -> TARGET` with each
/// greenlet shown by name, as `main` for a main greenlet, or as `#ID`.
#[derive(Clone, Debug)]
pub struct RecordedEvent {
    /// Switch or throw.
    pub kind: EventKind,
    /// The id of the greenlet that was running.
    pub origin: u64,
    /// The id of the greenlet that runs after the transfer.
    pub target: u64,
    origin_label: Rc<str>,
    target_label: Rc<str>,
}

impl RecordedEvent {
    /// The event a switch from `origin` to `target` records.
    pub fn switch(origin: &Greenlet, target: &Greenlet) -> RecordedEvent {
        RecordedEvent::new(EventKind::Switch, origin, target)
    }

    /// The event a throw from `origin` to `target` records.
    pub fn throw(origin: &Greenlet, target: &Greenlet) -> RecordedEvent {
        RecordedEvent::new(EventKind::Throw, origin, target)
    }

    fn from_event(event: &Event) -> RecordedEvent {
        RecordedEvent::new(event.kind(), event.origin(), event.target())
    }

    fn new(kind: EventKind, origin: &Greenlet, target: &Greenlet) -> RecordedEvent {
        RecordedEvent {
            kind,
            origin: origin.id(),
            target: target.id(),
            origin_label: label(origin),
            target_label: label(target),
        }
    }
}

fn label(g: &Greenlet) -> Rc<str> {
    match g.name() {
        Some(name) => name.into(),
        None if g.is_main() => "main".into(),
        None => format!("#{}", g.id()).into(),
    }
}

impl PartialEq for RecordedEvent {
    fn eq(&self, other: &RecordedEvent) -> bool {
        (self.kind, self.origin, self.target) == (other.kind, other.origin, other.target)
    }
}

impl Eq for RecordedEvent {}

impl fmt::Display for RecordedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} -> {}",
            self.kind, self.origin_label, self.target_label
        )
    }
}

/// The error a [`Recorder::failing_on`] recorder returns on its chosen event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("injected tracer failure on event {event}")]
pub struct InjectedFailure {
    /// Which event failed, counting from 1.
    pub event: usize,
}
