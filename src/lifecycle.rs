//! A greenlet's life: start, `run`, death and the delivery of its result up the parent chain
//! (spec §1.5, §5); the kill when its last handle is dropped (§8); killing every greenlet of a
//! thread, explicitly or at thread exit (R4).

// Unsafe code: in `running`, the running greenlet borrowed by its own body through the thread
// state's pointer, without a handle; in `finish`, its parent borrowed from its field.
#![allow(unsafe_code)]

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::ptr;
use std::rc::Rc;

use crate::error::{Error, GreenletExit};
use crate::greenlet::{Greenlet, Inner, Mode, State};
use crate::probes::{self, Outcome};
use crate::switch::{self, Context, Suspender};
use crate::thread::{try_with_state, with_live_state, with_state, ThreadState};
use crate::transfer::{self, Transfer};
use crate::value::Value;

/// Gives `g`, which is unstarted, a stack with its body ready to run; it becomes active.
/// Inlined into its two callers (a switch's and a finishing greenlet's slow paths): a
/// reused greenlet's start is a few tests and stores.
#[inline(always)]
pub(crate) fn start(state: &ThreadState, g: &Greenlet) -> Result<(), Error> {
    if g.inner().thread_exited() {
        return Err(Error::ThreadExited);
    }
    let size = g.inner().stack_size();
    g.inner()
        .context()
        .prepare(size, (g.id(), g.name()), greenlet_body)
        .map_err(|source| Error::StackAllocation { size, source })?;
    g.inner().set_state(State::Active);
    state.register(g);
    Ok(())
}

/// The bottom frame of every greenlet's stack: runs the greenlet's life, then keeps the
/// coroutine spare (`switch::keep_spare`) for the next greenlet built on the same `Inner`, and
/// runs that one's life when resumed, until it is told to quit.
fn greenlet_body(suspender: &Suspender<'_>) {
    loop {
        // The state exists: the switch that resumed this coroutine ran with it.
        let context = with_live_state(|state| live(state, suspender));
        if !switch::keep_spare(context) {
            // Returning ends the coroutine: its stack is freed by whoever resumed it (the
            // greenlet that resumed this one, which then switches on to the greenlet `finish`
            // made current; or the drop of a spare coroutine's context).
            return;
        }
    }
}

/// One greenlet's life on this coroutine, from its first arrival to the hand-off of its
/// result; returns its context, for the body to keep spare.
///
/// No panic may leave it (it would unwind across the stack switch): everything that can run
/// user code (the tracer and the releases in the first arrival, `run`, dropping an unused
/// `run`) runs under `catch_unwind`, and a panic there is this greenlet's death.
#[inline(always)]
fn live(state: &ThreadState, suspender: &Suspender<'_>) -> *const Context {
    let (context, run) = {
        let me = running(state);
        if me.mode() == Mode::Ready {
            // Resumed by a switch as it was: its start, here (see `Mode::Ready`).
            me.context().take_spare((me.id(), me.name()));
            me.set_state(State::Active);
            state.register_running();
        }
        me.context().bind(suspender);
        (ptr::from_ref(me.context()), me.take_run())
    };
    let lived = panic::catch_unwind(AssertUnwindSafe(|| {
        // The first transfer into this greenlet: its tracer event fires before `run`.
        match transfer::arrive_value(state) {
            Ok(value) => {
                match run.expect("a started greenlet without run")(value) {
                    // The common ending, handed off at once (nothing in it can panic).
                    Ok(value) => finish_returned(state, value),
                    Err(error) => Some(outcome_of(error)),
                }
            }
            Err(other) => {
                drop(run);
                Some(died_on_arrival(other))
            }
        }
    }));
    match lived {
        Ok(None) => {}
        Ok(Some((outcome, result))) => finish(state, outcome, result),
        Err(panic) => finish(state, Outcome::Panic, Transfer::Panic(panic)),
    }
    context
}

/// The running greenlet, borrowed without touching its reference count: for the body's own
/// bookkeeping, which runs only while its greenlet is current.
#[inline(always)]
fn running(state: &ThreadState) -> &Inner {
    // SAFETY: the running greenlet is alive while it is current (switch.rs invariant 3: the
    // drop of its last handle is turned into a handle the thread state keeps). Callers use
    // the reference only in a block that makes no transfer, so it stays current until the
    // reference is gone.
    unsafe { &*state.current_ptr() }
}

/// How a `run` that returned `error` ended, and what goes to the parent.
fn outcome_of(error: Error) -> (Outcome, Transfer) {
    match error {
        Error::Exit(exit) => (Outcome::Exit, Transfer::Value(Value::new(exit))),
        error => (Outcome::Error, Transfer::Error(error)),
    }
}

/// [`finish`] for a `run` that returned `value`, when the parent is active: the greenlet
/// dies and hands the value to its parent (`None`). Otherwise nothing happens yet, and the
/// result is returned for [`finish`]. Runs no user code and cannot panic, so the body may call
/// it under its `catch_unwind`.
#[inline(always)]
fn finish_returned(state: &ThreadState, value: Value) -> Option<(Outcome, Transfer)> {
    let me = running(state);
    // SAFETY: nothing runs between here and the end of this greenlet's body but the
    // hand-off, which runs no user code, so nothing can replace our parent meanwhile.
    let parent = unsafe { me.parent_ref() };
    debug_assert!(parent.is_some(), "a running greenlet without a parent");
    // SAFETY: a greenlet that runs a body is not a main greenlet, so it has a parent: it is
    // built with one, and every later write of the field (`set_parent`, a kill's temporary
    // parent and its restore) puts one back; only `recycle` empties it, in a dead greenlet's
    // `Inner`, which is built again (with a parent) before its body runs again.
    let parent = unsafe { parent.unwrap_unchecked() };
    if parent.state() != State::Active {
        return Some((Outcome::Returned, Transfer::Value(value)));
    }
    // It stays in the registry (see `thread::Registry`), for its `Inner`'s next life.
    me.set_state(State::Dead);
    probes::dead(me.id(), Outcome::Returned);
    // The dead greenlet's `parent` field keeps the parent alive until it has arrived
    // (`ThreadState::hand_off_to_parent`).
    state.hand_off_value(parent, value);
    None
}

/// A greenlet whose first transfer carried an error (a throw into an unstarted greenlet, or a
/// failing tracer) dies with it, without calling `run` (spec §6.4, §12.2).
fn died_on_arrival(arrival: Transfer) -> (Outcome, Transfer) {
    match arrival {
        Transfer::Error(Error::Exit(exit)) => (Outcome::Exit, Transfer::Value(Value::new(exit))),
        Transfer::Error(error) => (Outcome::Error, Transfer::Error(error)),
        Transfer::Panic(panic) => (Outcome::Panic, Transfer::Panic(panic)),
        Transfer::Value(_) | Transfer::Empty => unreachable!(),
    }
}

/// The greenlet is dead: send its result to the first parent that can take it.
#[inline]
fn finish(state: &ThreadState, outcome: Outcome, result: Transfer) {
    let me = running(state);
    // It stays in the registry (see `thread::Registry`), for its `Inner`'s next life.
    me.set_state(State::Dead);
    probes::dead(me.id(), outcome);
    // The common case: a value for an active parent, handed off without a handle of our own.
    if let Transfer::Value(value) = result {
        // SAFETY: nothing runs between here and the end of this greenlet's body (the
        // hand-off runs no user code), so nothing can replace our parent meanwhile.
        match unsafe { me.parent_ref() } {
            Some(parent) if parent.state() == State::Active => {
                // The dead greenlet's `parent` field keeps the parent alive until it has
                // arrived (`ThreadState::hand_off_to_parent`).
                state.hand_off_value(parent, value);
            }
            _ => finish_slow(state, me.parent(), Transfer::Value(value)),
        }
    } else {
        finish_slow(state, me.parent(), result);
    }
}

/// [`finish`] when the parent is not active, or the result is an error or a panic: walks up
/// to the first parent that can take the result.
#[inline(never)]
fn finish_slow(state: &ThreadState, mut next: Option<Greenlet>, mut result: Transfer) {
    let target = loop {
        let parent = next.expect("a greenlet always has a live ancestor: its thread's main");
        match parent.state() {
            State::Active => break parent,
            State::Dead => next = parent.parent(),
            State::Unstarted => match start(state, &parent) {
                Ok(()) => break parent,
                // A parent that cannot start passes the failure on (spec §5.3).
                Err(error) => {
                    result = Transfer::Error(error);
                    next = parent.parent();
                }
            },
        }
    };
    state.hand_off_to_parent(target, result);
}

/// What went wrong while killing a greenlet whose last handle was dropped (or in
/// [`kill_all`]): reported to the [kill hook](set_kill_hook), never lost.
#[derive(Debug)]
#[non_exhaustive]
pub enum KillFailure {
    /// The greenlet answered the `GreenletExit` with another error.
    Error(Error),
    /// The greenlet panicked while being killed.
    Panic(Box<dyn Any + Send>),
    /// The greenlet caught the `GreenletExit` and is still suspended, with no handle left: it
    /// is leaked (its stack stays allocated), as Python greenlet does.
    Survived,
}

/// A function told about every [`KillFailure`] of its thread.
pub type KillHook = Rc<dyn Fn(&Greenlet, &KillFailure)>;

/// Installs this thread's kill hook and returns the previous one; `None` restores the
/// default, which writes one line to stderr (`GreenletExit did not kill <greenlet ...>` for a
/// greenlet that survived, as Python does).
///
/// ```
/// use std::{cell::RefCell, rc::Rc};
/// use greenlet::{getcurrent, set_kill_hook, Error, Greenlet, KillFailure};
///
/// let seen = Rc::new(RefCell::new(Vec::new()));
/// let log = seen.clone();
/// set_kill_hook(Some(Rc::new(move |_g: &Greenlet, failure: &KillFailure| {
///     log.borrow_mut().push(format!("{failure:?}"));
/// })));
/// let main = getcurrent();
/// let g = Greenlet::new(move |_| -> Result<(), Error> {
///     main.switch(())?; // the kill arrives here...
///     Ok(())
/// });
/// g.switch(())?;
/// let g2 = g.clone();
/// drop(g);
/// drop(g2); // ...and the GreenletExit escapes: a clean death, nothing to report
/// assert!(seen.borrow().is_empty());
/// set_kill_hook(None);
/// # Ok::<(), Error>(())
/// ```
pub fn set_kill_hook(hook: Option<KillHook>) -> Option<KillHook> {
    with_state(|state| state.kill_hook.replace(hook))
}

pub(crate) fn report(state: &ThreadState, g: &Greenlet, failure: KillFailure) {
    let hook = state.kill_hook.borrow().clone();
    match hook {
        Some(hook) => {
            // The hook runs where a kill happened, often inside a drop: a panic out of it
            // would cross a stack switch or abort, so it is reported here instead.
            if let Err(panic) = panic::catch_unwind(AssertUnwindSafe(|| hook(g, &failure))) {
                eprintln!(
                    "greenlet: the kill hook panicked while reporting {failure:?} for {g:?}: {}",
                    panic_message(panic.as_ref())
                );
            }
        }
        None => match &failure {
            KillFailure::Error(error) => eprintln!("greenlet: killing {g:?} failed: {error}"),
            KillFailure::Panic(panic) => eprintln!(
                "greenlet: {g:?} panicked while being killed: {}",
                panic_message(panic.as_ref())
            ),
            KillFailure::Survived => eprintln!("GreenletExit did not kill {g:?}"),
        },
    }
}

/// The message of a panic payload, when it has one.
pub fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "<non-string panic payload>"
    }
}

/// Called when the last handle to `g`, which is not dead, is being dropped.
///
/// Never inlined: its probe site must stay in one function. Inlined into `Greenlet`'s drop
/// glue, which every codegen unit instantiates, it would leave a note in each copy, and the
/// copies the linker discards would leave notes pointing nowhere.
#[inline(never)]
pub(crate) fn last_handle_dropped(g: &Greenlet) {
    // Held by a tracer call (its event's origin or target): as if the call held a handle.
    if g.inner().is_pinned() {
        crate::thread::defer_last(g.clone());
        return;
    }
    // The running greenlet lives on, held by the thread state until it switches away.
    if try_with_state(|state| state.adopt(g)) == Some(true) {
        return;
    }
    match g.state() {
        State::Unstarted => probes::dead(g.id(), Outcome::Discarded),
        State::Active if !g.is_main() => {
            // No state: the thread is exiting and its greenlets were already torn down.
            try_with_state(|state| kill_last_handle(state, g));
        }
        _ => {}
    }
}

fn kill_last_handle(state: &ThreadState, g: &Greenlet) {
    let exit =
        GreenletExit::with_message("Killing the greenlet because all references have vanished.");
    kill(state, g, exit);
    if g.handle_count() == 1 && g.inner().is_pinned() {
        // The kill pinned it (its first arrival runs the tracer) and that tracer call has not
        // returned (the tracer switched away): the call holds it, as a counted handle would,
        // until it returns (`Inner::pins`).
        crate::thread::defer_last(g.clone());
        return;
    }
    if g.is_active() && g.handle_count() == 1 {
        report(state, g, KillFailure::Survived);
        std::mem::forget(g.clone());
    }
}

/// Throws `exit` into `g` with the current greenlet as its temporary parent (spec §8.3); the
/// value it returns is discarded, anything else is reported.
fn kill(state: &ThreadState, g: &Greenlet, exit: GreenletExit) {
    let parent = g.inner().replace_parent(Some(state.current()));
    let arrival = transfer::send(g, Transfer::Error(exit.into()));
    drop(g.inner().replace_parent(parent));
    match arrival {
        Ok(Transfer::Value(_)) | Ok(Transfer::Empty) => {}
        Ok(Transfer::Error(error)) | Err(error) => report(state, g, KillFailure::Error(error)),
        Ok(Transfer::Panic(panic)) => report(state, g, KillFailure::Panic(panic)),
    }
}

/// Kills every suspended greenlet of the calling thread (except the caller), as if their last
/// handles had been dropped: each receives a [`GreenletExit`] with the caller as temporary
/// parent, so its destructors run. Returns how many are dead afterwards.
///
/// A thread does this by itself when it exits, so greenlets left suspended at thread exit are
/// killed with their destructors run, not abandoned as Python greenlet abandons them.
///
/// ```
/// use greenlet::{getcurrent, kill_all, Greenlet};
///
/// let main = getcurrent();
/// let workers: Vec<Greenlet> = (0..3)
///     .map(|_| {
///         let main = main.clone();
///         Greenlet::new(move |_| main.switch(()))
///     })
///     .collect();
/// for w in &workers {
///     w.switch(())?;
/// }
/// assert_eq!(kill_all(), 3);
/// assert!(workers.iter().all(Greenlet::is_dead));
/// # Ok::<(), greenlet::Error>(())
/// ```
pub fn kill_all() -> usize {
    with_state(kill_all_in)
}

/// How many times [`kill_all_in`] sweeps: greenlets started while others are being killed are
/// killed in the next sweep.
const KILL_SWEEPS: usize = 4;

pub(crate) fn kill_all_in(state: &ThreadState) -> usize {
    let mut tried = std::collections::HashSet::new();
    let mut killed = 0;
    for _ in 0..KILL_SWEEPS {
        let victims: Vec<Greenlet> = state
            .live_greenlets()
            .into_iter()
            .filter(|g| !state.is_current(g) && !tried.contains(&g.id()))
            .collect();
        if victims.is_empty() {
            break;
        }
        for g in &victims {
            // Each greenlet gets one GreenletExit: one that survives it is left alone.
            tried.insert(g.id());
            if g.is_active() {
                kill(
                    state,
                    g,
                    GreenletExit::with_message("Killing all greenlets of the thread."),
                );
                killed += usize::from(g.is_dead());
            }
        }
    }
    killed
}
