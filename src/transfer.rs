//! The switch algorithm (spec §1.4, R2): find the greenlet that really receives a transfer,
//! hand the payload over, switch stacks, and, in the target, take the payload and fire the
//! probes and the tracer.

use std::any::Any;
use std::panic;

use crate::error::Error;
use crate::greenlet::{Greenlet, State};
use crate::lifecycle;
use crate::probes;
use crate::switch;
use crate::thread::{with_state, ThreadState};
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

/// Switches to `target` with `value` and waits until a transfer comes back to the calling
/// greenlet: [`Greenlet::switch`]. The common case (an active target, a value coming back, no
/// tracer) is inlined into the caller; everything else goes through out-of-line functions
/// that leave what arrived in the thread state, so that the result is built in one place and
/// the caller's test of it folds away on the common path.
#[inline(always)]
pub(crate) fn switch_value<T: 'static>(target: &Greenlet, value: T) -> Result<Value, Error> {
    with_state(
        #[inline(always)]
        |state| {
            // A switch to the current greenlet takes this path too: it becomes current again
            // and, if it is not main, suspends to the trampoline, which resumes it at once.
            let value_arrived = if target.state() == State::Active {
                transfer_value(state, target, Value::new(value))
            } else {
                switch_unusual(state, target, Value::new(value))
            };
            if value_arrived {
                Ok(state.take_value())
            } else {
                Err(state.take_error())
            }
        },
    )
}

/// Transfers `value` to `target`, which is active and kept alive by the caller's handle, and
/// waits for a transfer back; returns what [`settle`] returns.
#[inline(always)]
fn transfer_value(state: &ThreadState, target: &Greenlet, value: Value) -> bool {
    let origin = state.current_ptr();
    state.hand_off_value(target, value);
    switch::switch_away(state, origin);
    if state.plain_arrival() {
        probes::switch(|| state.arrival_ids());
        true
    } else if state.traced_plain_arrival() {
        arrive_traced(state)
    } else {
        settle(state, arrive_unusual(state))
    }
}

/// [`switch_value`] to a greenlet that is not active; returns what [`settle`] returns.
#[inline(never)]
fn switch_unusual(state: &ThreadState, target: &Greenlet, value: Value) -> bool {
    if target.state() == State::Unstarted {
        // Started here, so that the caller's handle keeps it alive as on the fast path.
        if let Err(error) = lifecycle::start(state, target) {
            state.put_error(error);
            return false;
        }
        return transfer_value(state, target, value);
    }
    match send_from(state, target, Transfer::Value(value)) {
        Ok(arrival) => settle(state, arrival),
        Err(error) => {
            state.put_error(error);
            false
        }
    }
}

/// Leaves what arrived in the thread state for [`switch_value`] to take: a value (returns true)
/// or an error (returns false); a panic resumes unwinding here.
#[cold]
#[inline(never)]
fn settle(state: &ThreadState, arrival: Transfer) -> bool {
    match arrival {
        Transfer::Value(value) => {
            state.put_value(value);
            true
        }
        Transfer::Error(error) => {
            state.put_error(error);
            false
        }
        Transfer::Panic(payload) => panic::resume_unwind(payload),
        Transfer::Empty => unreachable!("a transfer arrived without a payload"),
    }
}

/// Sends `payload` to `target` (or the ancestor that stands in for it) and waits until a
/// transfer comes back to the calling greenlet; returns what that transfer carries.
///
/// # Errors
/// Before anything is transferred, if the greenlet that should receive the payload cannot be
/// started (its stack cannot be allocated).
pub(crate) fn send(target: &Greenlet, payload: Transfer) -> Result<Transfer, Error> {
    with_state(|state| send_from(state, target, payload))
}

fn send_from(state: &ThreadState, target: &Greenlet, payload: Transfer) -> Result<Transfer, Error> {
    // The target's handle moves into the thread state: the caller keeps none across the
    // switch (a redirect target must be killable while the caller waits, spec §8).
    let target = live_target(state, target)?;
    let origin = state.current_ptr();
    let to_self = state.is_current(&target);
    state.hand_off(target, payload);
    if !to_self {
        switch::switch_away(state, origin);
    }
    Ok(arrive(state))
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

/// In the greenlet that has just become current: takes the payload, fires the probe and the
/// tracer, releases the origin (which may kill it, if that was its last handle).
#[inline]
pub(crate) fn arrive(state: &ThreadState) -> Transfer {
    if state.plain_arrival() {
        Transfer::Value(arrive_plain(state))
    } else {
        arrive_unusual(state)
    }
}

/// [`arrive`] of a value with no tracer installed and no handle to release: the switch path.
#[inline(always)]
fn arrive_plain(state: &ThreadState) -> Value {
    probes::switch(|| state.arrival_ids());
    state.take_value()
}

/// The arrival of a value with a tracer installed and no handle to release, for
/// [`switch_value`]: the value waits outside the mailbox while the tracer runs (it may switch).
/// Returns what [`settle`] returns.
#[inline(never)]
fn arrive_traced(state: &ThreadState) -> bool {
    probes::switch(|| state.arrival_ids());
    let value = state.take_value();
    match trace::trace_arrival(state, EventKind::Switch, state.origin()) {
        None => {
            state.put_value(value);
            true
        }
        Some(replacement) => {
            drop(value);
            settle(state, replacement)
        }
    }
}

/// [`arrive`] for an error, an exit or a panic, with a tracer installed, or with handles to
/// release.
#[cold]
#[inline(never)]
fn arrive_unusual(state: &ThreadState) -> Transfer {
    let payload = state.take_payload();
    let kind = payload.kind();
    probes::transfer(kind, || state.arrival_ids());
    // A handle of our own: the origin may be released (and killed) below.
    let origin = state.origin();
    state.release_held();
    if state.tracing() {
        trace::call_tracer(state, kind, origin, payload)
    } else {
        drop(origin);
        payload
    }
}
