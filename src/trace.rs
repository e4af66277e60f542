//! In-process tracing: [`settrace`], [`gettrace`], the [`Event`]s a [`Tracer`] receives (spec
//! R5, the seed's tracing page).

use std::any::Any;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;

use crate::error::Error;
use crate::greenlet::Greenlet;
use crate::thread::{with_state, PinnedEvent, ThreadState};
use crate::transfer::Transfer;

/// A transfer between two greenlets, as a [`Tracer`] sees it.
///
/// Exactly one event fires per transfer, after the stack switch, in the target: inside the
/// tracer, [`getcurrent`](crate::getcurrent) is `target`. New kinds of events may be added, so
/// match with a wildcard arm, and read `origin`/`target` only from the kinds you know:
///
/// ```
/// use greenlet::Event;
///
/// fn describe(event: &Event) -> Option<String> {
///     match event {
///         Event::Switch { origin, target } => Some(format!("switch {origin} -> {target}")),
///         Event::Throw { origin, target } => Some(format!("throw {origin} -> {target}")),
///         _ => None,
///     }
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The transfer carries a value: a switch, or a greenlet's result going to its parent.
    Switch {
        /// The greenlet that was running.
        origin: Greenlet,
        /// The greenlet that runs now (never a dead greenlet that was redirected past).
        target: Greenlet,
    },
    /// The transfer carries an error, a `GreenletExit` or a panic: a throw, or an error going
    /// up to a parent.
    Throw {
        /// The greenlet that was running.
        origin: Greenlet,
        /// The greenlet that runs now.
        target: Greenlet,
    },
}

impl Event {
    /// Which kind of event this is.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Switch { .. } => EventKind::Switch,
            Event::Throw { .. } => EventKind::Throw,
        }
    }

    /// The greenlet that was running before the transfer.
    pub fn origin(&self) -> &Greenlet {
        match self {
            Event::Switch { origin, .. } | Event::Throw { origin, .. } => origin,
        }
    }

    /// The greenlet running now, after the transfer.
    pub fn target(&self) -> &Greenlet {
        match self {
            Event::Switch { target, .. } | Event::Throw { target, .. } => target,
        }
    }
}

/// The kind of an [`Event`], without its greenlets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// [`Event::Switch`].
    Switch,
    /// [`Event::Throw`].
    Throw,
}

impl EventKind {
    /// `"switch"` or `"throw"`, the names Python greenlet and the USDT probes use.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Switch => "switch",
            EventKind::Throw => "throw",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a tracer's callback returns: `()` for a callback that cannot fail, or
/// `Result<(), Error>`.
pub trait TraceOutcome {
    /// The outcome as a `Result`.
    fn into_result(self) -> Result<(), Error>;
}

impl TraceOutcome for () {
    #[inline]
    fn into_result(self) -> Result<(), Error> {
        Ok(())
    }
}

impl TraceOutcome for Result<(), Error> {
    #[inline]
    fn into_result(self) -> Result<(), Error> {
        self
    }
}

/// A trace callback, installed per thread with [`settrace`].
///
/// It runs in the target greenlet after every transfer and may do anything greenlet code can
/// do, switches included (those are traced too: there is no reentrancy guard). If it returns
/// an error or panics, it is removed from its thread and its error (or panic) replaces what
/// the transfer carried, raised in the target as if by [`Greenlet::throw`]; on a greenlet's
/// first switch, `run` is then never called (spec §12).
///
/// A `Tracer` is a cheap handle; `==` compares identity, so that what [`gettrace`] returned can
/// be recognised and restored.
#[derive(Clone)]
pub struct Tracer(Rc<Callback>);

/// The callback as stored: it returns whether it succeeded, and parks its error, if any, in
/// the thread state (taken at once by [`Tracer::call`] or the arrival). A `bool` comes back in
/// a register, where a `Result<(), Error>` is written to memory and read back. Boxed inside
/// the `Rc`, so that a `Tracer` is one pointer to an `Rc` of a known layout: a call loads the
/// callback's data and vtable at fixed offsets, where an `Rc<dyn Fn>` computes where its data
/// starts from the vtable's alignment.
type Callback = Box<dyn Fn(&Event) -> bool>;

/// Parks the error of a failing callback (see [`Callback`]); returns `false`.
#[cold]
#[inline(never)]
fn park_failure(error: Error) -> bool {
    with_state(|state| state.park_trace_failure(error));
    false
}

/// Takes the error a callback that returned `false` parked.
#[cold]
#[inline(never)]
fn take_failure() -> Error {
    with_state(ThreadState::take_trace_failure)
}

impl Tracer {
    /// Wraps a callback. It returns `()`, or a `Result<(), Error>` when it can fail: see
    /// [`TraceOutcome`].
    ///
    /// ```
    /// use std::cell::Cell;
    /// use std::rc::Rc;
    /// use greenlet::{Error, Tracer};
    ///
    /// let seen = Rc::new(Cell::new(0));
    /// let counter = seen.clone();
    /// let counting = Tracer::new(move |_| counter.set(counter.get() + 1)); // no `Ok(())`
    /// let refusing = Tracer::new(|event| {
    ///     if event.target().is_main() {
    ///         return Err(Error::msg("no switching to main"));
    ///     }
    ///     Ok(())
    /// });
    /// # drop((counting, refusing));
    /// ```
    pub fn new<R: TraceOutcome>(callback: impl Fn(&Event) -> R + 'static) -> Tracer {
        Tracer(Rc::new(Box::new(move |event: &Event| {
            match callback(event).into_result() {
                Ok(()) => true,
                Err(error) => park_failure(error),
            }
        })))
    }

    /// Calls the callback.
    pub fn call(&self, event: &Event) -> Result<(), Error> {
        if (self.0)(event) {
            Ok(())
        } else {
            Err(take_failure())
        }
    }
}

impl PartialEq for Tracer {
    fn eq(&self, other: &Tracer) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Tracer {}

impl fmt::Debug for Tracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tracer({:p})", Rc::as_ptr(&self.0) as *const ())
    }
}

/// Installs `tracer` for the calling thread (every greenlet of the thread, main included) and
/// returns the previous one; `None` removes it. A tracer installed from inside a tracer takes
/// effect from the next transfer.
///
/// ```
/// use std::{cell::RefCell, rc::Rc};
/// use greenlet::{settrace, Event, Greenlet, Tracer};
///
/// let log = Rc::new(RefCell::new(Vec::new()));
/// let sink = log.clone();
/// let previous = settrace(Some(Tracer::new(move |event: &Event| {
///     sink.borrow_mut().push(format!("{} -> {}", event.kind(), event.target().id()));
///     Ok(())
/// })));
/// let g = Greenlet::new(|_| Ok(()));
/// g.switch(())?;
/// settrace(previous);
/// assert_eq!(log.borrow().len(), 2); // main -> g, then g -> main when it finishes
/// # Ok::<(), greenlet::Error>(())
/// ```
pub fn settrace(tracer: Option<Tracer>) -> Option<Tracer> {
    with_state(|state| state.replace_tracer(tracer))
}

/// The calling thread's tracer, if any.
pub fn gettrace() -> Option<Tracer> {
    with_state(ThreadState::tracer)
}

/// Calls the thread's tracer for a transfer from `origin` that just arrived in the current
/// greenlet (`transfer::arrive_slow`); returns what the transfer now carries (arrival rule 4
/// in `transfer`). Releases `origin` (the arrival's handle on it) once the event has pinned
/// it: its drop, if it is the last handle, waits until the tracer has returned.
pub(crate) fn call_tracer(
    state: &ThreadState,
    kind: EventKind,
    origin: Greenlet,
    payload: Transfer,
) -> Transfer {
    let Some(tracer) = state.tracer() else {
        return payload;
    };
    let event = state.pin_event(kind, origin.as_ptr());
    drop(origin);
    call_pinned(state, tracer, event).unwrap_or(payload)
}

/// Calls the thread's tracer for a transfer of `kind` that just arrived in the current
/// greenlet from the transfer's origin (still alive: arrival rule 2 in `transfer`), whose
/// payload is already out of the thread state (arrival rules 1 and 4 in `transfer`). Returns
/// `None` if the transfer goes on unchanged, or what replaces its payload: the tracer's error
/// or panic (the tracer is then removed).
#[inline(always)]
pub(crate) fn trace_arrival(state: &ThreadState, kind: EventKind) -> Option<Transfer> {
    let tracer = state.installed_tracer();
    let event = state.pin_event(kind, state.origin_ptr());
    call_pinned(state, tracer, event)
}

/// Calls `tracer` (a handle of the caller's: it may replace itself, or switch, while it
/// runs) with `event`, then unpins the event (see [`trace_arrival`]).
#[inline(always)]
fn call_pinned(state: &ThreadState, tracer: Tracer, event: PinnedEvent) -> Option<Transfer> {
    // Matched arm by arm, so that the success path tests the `bool` in its register and never
    // builds the `Result` in memory for the failure path.
    match panic::catch_unwind(AssertUnwindSafe(|| (tracer.0)(&event))) {
        Ok(true) => {
            state.unpin_event(event);
            drop(tracer);
            None
        }
        Ok(false) => Some(tracer_failed(state, None, event, tracer)),
        Err(panic) => Some(tracer_failed(state, Some(panic), event, tracer)),
    }
}

/// A tracer failed with an error (parked by the callback) or a panic (`panic`, its payload):
/// it is removed, and what it raised replaces the transfer's payload. Then the event is
/// unpinned and the tracer's handle dropped: releasing the last handle on the origin kills
/// it, a transfer the failed tracer must not see.
#[cold]
#[inline(never)]
fn tracer_failed(
    state: &ThreadState,
    panic: Option<Box<dyn Any + Send>>,
    event: PinnedEvent,
    tracer: Tracer,
) -> Transfer {
    drop(state.replace_tracer(None));
    let replacement = match panic {
        None => Transfer::Error(take_failure()),
        Some(panic) => Transfer::Panic(panic),
    };
    state.unpin_event(event);
    drop(tracer);
    replacement
}
