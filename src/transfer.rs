//! The switch algorithm (spec §1.4, R2): find the greenlet that really receives a transfer,
//! hand the payload over, switch stacks, and, in the target, take the payload and fire the
//! probes and the tracer.

use std::any::Any;
use std::panic;

use crate::error::Error;
use crate::greenlet::{Greenlet, State};
use crate::lifecycle;
use crate::probes;
use crate::switch::{self, with_state};
use crate::thread::ThreadState;
use crate::trace::{self, EventKind};
use crate::value::Value;

/// What a transfer carries.
pub(crate) enum Transfer {
    /// Nothing: the mailbox between transfers.
    Empty,
    /// A value: traced as a switch.
    Value(Value),
    /// An error (a `GreenletExit` included): traced as a throw.
    Error(Error),
    /// A panic on its way to a parent, where it resumes unwinding: traced as a throw.
    Panic(Box<dyn Any + Send>),
}

impl Transfer {
    #[inline]
    pub(crate) fn kind(&self) -> EventKind {
        match self {
            Transfer::Value(_) => EventKind::Switch,
            _ => EventKind::Throw,
        }
    }

    /// What the pending `switch`/`throw` call returns: the value, the error, or a panic that
    /// resumes unwinding here, in the greenlet that received it.
    #[inline]
    pub(crate) fn into_result(self) -> Result<Value, Error> {
        match self {
            Transfer::Value(value) => Ok(value),
            Transfer::Error(error) => Err(error),
            Transfer::Panic(payload) => panic::resume_unwind(payload),
            Transfer::Empty => unreachable!("a transfer arrived without a payload"),
        }
    }
}

/// Sends `payload` to `target` (or the ancestor that stands in for it) and waits until a
/// transfer comes back to the calling greenlet; returns what that transfer carries.
///
/// # Errors
/// Before anything is transferred, if the greenlet that should receive the payload cannot be
/// started (its stack cannot be allocated).
#[inline(always)]
pub(crate) fn send(target: &Greenlet, payload: Transfer) -> Result<Transfer, Error> {
    with_state(
        #[inline(always)]
        |state| {
            // The target's handle moves into the thread state: the caller keeps none across the
            // switch (a redirect target must be killable while the caller waits, spec §8).
            if target.state() == State::Active {
                Ok(go(state, target.clone(), payload))
            } else {
                send_redirected(state, target, payload)
            }
        },
    )
}

/// [`send`] to a greenlet that is not active: it starts, or a live ancestor stands in.
#[cold]
#[inline(never)]
fn send_redirected(
    state: &ThreadState,
    target: &Greenlet,
    payload: Transfer,
) -> Result<Transfer, Error> {
    let target = live_target(state, target)?;
    Ok(go(state, target, payload))
}

/// The greenlet that receives a transfer addressed to `target`: `target` itself if it is
/// active or can be started; for a dead greenlet, its nearest live ancestor (spec §4.7-4.9).
pub(crate) fn live_target(state: &ThreadState, target: &Greenlet) -> Result<Greenlet, Error> {
    let mut candidate = target.clone();
    loop {
        match candidate.state() {
            State::Active => return Ok(candidate),
            State::Unstarted => {
                lifecycle::start(state, &candidate)?;
                return Ok(candidate);
            }
            State::Dead => {
                candidate = candidate
                    .parent()
                    .expect("a dead greenlet always has a live ancestor: its thread's main");
            }
        }
    }
}

/// Transfers `payload` to `target`, which is active, and returns what arrives back.
#[inline(always)]
fn go(state: &ThreadState, target: Greenlet, payload: Transfer) -> Transfer {
    let origin = state.current_ptr();
    let to_self = state.is_current(&target);
    state.hand_off(target, payload);
    if !to_self {
        switch::switch_away(state, origin);
    }
    arrive(state)
}

/// In the greenlet that has just become current: takes the payload, fires the probe and the
/// tracer, releases the origin (which may kill it, if that was its last handle).
#[inline(always)]
pub(crate) fn arrive(state: &ThreadState) -> Transfer {
    // The common case: a value, no tracer, and an origin that someone else still holds, so
    // releasing it runs no code. The payload then goes straight from the mailbox to the
    // caller, and the payload's kind is tested once, for the probe and the path alike.
    if state.value_arrived() {
        // Fired before the origin is taken, so that the probe's out-of-line part needs
        // nothing but the state, which the switch path keeps in a register anyway.
        probes::switch(|| state.arrival_ids());
        let origin = state.take_origin();
        if state.trace_on.get() {
            return arrive_traced(state, origin);
        }
        if origin.handle_count() > 1 {
            drop(origin);
            return state.take_payload();
        }
        return arrive_releasing(state, origin);
    }
    arrive_slow(state, state.take_origin())
}

/// [`arrive`] when the origin's handle is its last one: releasing it kills it.
#[cold]
#[inline(never)]
fn arrive_releasing(state: &ThreadState, origin: Greenlet) -> Transfer {
    let payload = state.take_payload();
    drop(origin);
    payload
}

/// [`arrive`] for a value with a tracer installed (the probe has fired).
#[inline(never)]
fn arrive_traced(state: &ThreadState, origin: Greenlet) -> Transfer {
    let payload = state.take_payload();
    trace::call_tracer(state, EventKind::Switch, origin, payload)
}

/// [`arrive`] for an error, an exit or a panic.
#[cold]
#[inline(never)]
fn arrive_slow(state: &ThreadState, origin: Greenlet) -> Transfer {
    let payload = state.take_payload();
    let kind = payload.kind();
    probes::transfer(kind, || (origin.id(), state.current().id()));
    if state.trace_on.get() {
        trace::call_tracer(state, kind, origin, payload)
    } else {
        drop(origin);
        payload
    }
}
