//! The switch algorithm (spec §1.4, R2): find the greenlet that really receives a transfer,
//! hand the payload over, switch stacks, and, in the target, take the payload and fire the
//! probes and the tracer.
//!
//! # Arrival
//!
//! Every transfer ends with an *arrival*, in its target, right after the stack switch (at once
//! for a transfer to the current greenlet). The sender's hand-off (`ThreadState::hand_off*`)
//! made the target current and left in the thread state the payload (a value in the mailbox,
//! or an error or a panic in the `thrown` slot), a plain pointer to the origin, and perhaps
//! handles to release. The arrival functions below share these rules:
//!
//! 1. **The payload is taken out of the state first**, before anything runs that can transfer
//!    again (the tracer, a greenlet killed by a release): the next transfer's hand-off finds
//!    the mailbox empty (a unit value, no `thrown` payload), as it asserts.
//! 2. **The origin pointer is followed only until the releases** (rule 3): the origin is
//!    alive until then because nothing ran since the hand-off but the switch loop, which drops
//!    no handle. The probe reads its id before the releases, and the tracer gets a handle on
//!    it taken before them (`ThreadState::origin`).
//! 3. **The state's handles are released once the payload is out** (`ThreadState::release_held`):
//!    the target's handle parked by the hand-off, and the adopted last handle of a greenlet
//!    that was running when it was dropped. Dropping that one kills the greenlet, which is a
//!    transfer of its own, using the mailbox: hence rule 1.
//! 4. **One probe and one tracer event per transfer, in the target**, the probe first:
//!    `greenlet:switch` for a value, `greenlet:throw` for an error or a panic; then the tracer,
//!    which may switch (the payload waits outside the state meanwhile, rule 1), and whose
//!    error or panic, if it fails, replaces the payload.
//! 5. **What is delivered**: a value, an error, or a panic that resumes unwinding in the
//!    target. To a pending `switch`, the value or the error goes back into the state ([`settle`])
//!    and [`switch_value`] takes it, with nothing running in between ([`Arrived`] says which);
//!    to a `throw`, a kill or a greenlet's first transfer, it is returned as a [`Transfer`].
//!
//! The state's flag byte says which rules have work to do, so that the common arrival tests
//! one byte: zero is a value with no tracer and nothing to release (rules 3 and the tracer of
//! 4 have nothing to do). The paths, fastest first:
//!
//! | path | when (flags) | what it does |
//! | --- | --- | --- |
//! | [`arrive_plain`], inlined into [`transfer_value`] | zero | probe, take the value |
//! | [`arrive_traced`], inlined too | a tracer only | probe, take the value, tracer, put it back |
//! | [`arrive_slow`] | anything else | every rule, through `trace::call_tracer` |
//!
//! [`arrive`] is the entry point for everything but `switch` (a `throw`, a kill, a greenlet's
//! first transfer): the plain path or the slow one.

use std::any::Any;
use std::panic;

use crate::error::Error;
use crate::greenlet::{Greenlet, Mode, State};
use crate::lifecycle;
use crate::probes;
use crate::switch;
use crate::thread::{with_state, with_state_of, ThreadState};
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

/// What arrived for a pending [`switch_value`], left in the thread state for it to take:
/// the rest of the switch path hands this back instead of the value or the error itself, so
/// that the result is built in one place and, on the fast path, the test folds away.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[must_use]
enum Arrived {
    /// A value, in the mailbox ([`ThreadState::take_value`]).
    Value,
    /// An error, parked ([`ThreadState::take_error`]).
    Error,
}

/// Switches to `target` with `value` and waits until a transfer comes back to the calling
/// greenlet: [`Greenlet::switch`]. The common case (an active target, a value coming back, no
/// tracer) is inlined into the caller; everything else goes through the out-of-line slow path,
/// which leaves what arrived in the thread state ([`Arrived`]).
#[inline(always)]
pub(crate) fn switch_value<T: 'static>(target: &Greenlet, value: T) -> Result<Value, Error> {
    // A switch to the current greenlet takes this path too: it becomes current again and
    // `switch_away` returns at once.
    let mode = target.mode();
    if mode.is_switchable() {
        with_state_of(
            target,
            #[inline(always)]
            |state| {
                let arrived = transfer_value(state, target, mode, Value::new(value));
                take_arrived(state, arrived)
            },
        )
    } else {
        with_state(|state| {
            let arrived = switch_slow(state, target, Value::new(value));
            take_arrived(state, arrived)
        })
    }
}

/// What [`switch_value`] returns for what arrived.
#[inline(always)]
fn take_arrived(state: &ThreadState, arrived: Arrived) -> Result<Value, Error> {
    match arrived {
        Arrived::Value => Ok(state.take_value()),
        Arrived::Error => Err(state.take_error()),
    }
}

/// Transfers `value` to `target`, which is active (in `mode`) and kept alive by the caller's
/// handle, and waits for a transfer back, which arrives by the path its flags select (see
/// [Arrival](self#arrival)).
#[inline(always)]
fn transfer_value(state: &ThreadState, target: &Greenlet, mode: Mode, value: Value) -> Arrived {
    let origin = state.current_ptr();
    state.hand_off_value(target, value);
    switch::switch_to(state, origin, mode);
    if state.plain_arrival() {
        // `arrive_plain`, with the value left in the mailbox for `switch_value`.
        probes::switch(|| state.arrival_ids());
        Arrived::Value
    } else if state.traced_plain_arrival() {
        arrive_traced(state)
    } else {
        settle(state, arrive_slow(state))
    }
}

/// The slow path of [`switch_value`]: a target that is not active (unstarted: started here;
/// dead: the transfer goes to its nearest live ancestor).
#[inline(never)]
fn switch_slow(state: &ThreadState, target: &Greenlet, value: Value) -> Arrived {
    if target.state() == State::Unstarted {
        // Started here, so that the caller's handle keeps it alive as on the fast path.
        if let Err(error) = lifecycle::start(state, target) {
            state.put_error(error);
            return Arrived::Error;
        }
        return transfer_value(state, target, Mode::Active, value);
    }
    match send_from(state, target, Transfer::Value(value)) {
        Ok(arrival) => settle(state, arrival),
        Err(error) => {
            state.put_error(error);
            Arrived::Error
        }
    }
}

/// Puts what arrived back into the thread state for [`switch_value`] to take (rule 5 of
/// [Arrival](self#arrival)); a panic resumes unwinding here.
#[cold]
#[inline(never)]
fn settle(state: &ThreadState, arrival: Transfer) -> Arrived {
    match arrival {
        Transfer::Value(value) => {
            state.put_value(value);
            Arrived::Value
        }
        Transfer::Error(error) => {
            state.put_error(error);
            Arrived::Error
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
                // A dead greenlet always has a live ancestor, its thread's main, unless the
                // thread has exited (`Inner::thread_exited`).
                candidate = candidate.parent().ok_or(Error::ThreadExited)?;
            }
        }
    }
}

/// The arrival of a transfer in the greenlet that has just become current, for everything but
/// `switch` (see [Arrival](self#arrival)): returns what the transfer carries.
#[inline]
pub(crate) fn arrive(state: &ThreadState) -> Transfer {
    if state.plain_arrival() {
        Transfer::Value(arrive_plain(state))
    } else {
        arrive_slow(state)
    }
}

/// [`arrive`] for a greenlet's first transfer, which wants a value: the value, or what
/// arrived instead of one (an error or a panic). The plain path hands the value over without
/// wrapping it in a [`Transfer`].
#[inline(always)]
pub(crate) fn arrive_value(state: &ThreadState) -> Result<Value, Transfer> {
    if state.plain_arrival() {
        Ok(arrive_plain(state))
    } else {
        match arrive_slow(state) {
            Transfer::Value(value) => Ok(value),
            other => Err(other),
        }
    }
}

/// The plain arrival: a value, no tracer, nothing to release (flags zero). The probe, then
/// the value out of the mailbox.
#[inline(always)]
fn arrive_plain(state: &ThreadState) -> Value {
    probes::switch(|| state.arrival_ids());
    state.take_value()
}

/// The traced arrival, for [`switch_value`]: a value with a tracer installed and nothing to
/// release. The probe, the value out of the mailbox (it waits here while the tracer runs: the
/// tracer may switch), the tracer, then the value back into the mailbox for `switch_value`,
/// or [`settle`] of the tracer's failure.
///
/// Inlined into `switch_value`, like the plain arrival: out of line, its own frame (saving and
/// restoring the five registers that hold what the tracer call must not clobber) cost 14 of
/// the traced switch's instructions. What is rare stays out of line: the probe when attached,
/// a failed tracer ([`traced_failure`]), handles waiting for the call to return.
#[inline(always)]
fn arrive_traced(state: &ThreadState) -> Arrived {
    probes::switch(|| state.arrival_ids());
    let value = state.take_value();
    match trace::trace_arrival(state, EventKind::Switch) {
        None => {
            state.put_value(value);
            Arrived::Value
        }
        Some(replacement) => traced_failure(state, value, replacement),
    }
}

/// The tracer of a traced arrival failed: its error or panic replaces the value.
#[cold]
#[inline(never)]
fn traced_failure(state: &ThreadState, value: Value, replacement: Transfer) -> Arrived {
    drop(value);
    settle(state, replacement)
}

/// The slow arrival: an error or a panic, or handles to release, with or without a tracer.
/// Every rule of [Arrival](self#arrival), in order: the payload out of the state, the probe, a
/// handle on the origin for the tracer, the releases, the tracer.
#[cold]
#[inline(never)]
fn arrive_slow(state: &ThreadState) -> Transfer {
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
