//! Stack switching: each greenlet's execution context (its corosensei coroutine) and the
//! trampoline that makes symmetric transfers out of corosensei's asymmetric coroutines.
//!
//! corosensei gives asymmetric coroutines (`resume` / `suspend`). Greenlets need symmetric
//! transfers (any greenlet to any other), so every thread runs a *trampoline* on its main
//! greenlet's stack while the main greenlet is suspended: a greenlet that switches away
//! suspends back to the trampoline, which resumes whichever greenlet is now current. A switch
//! between two non-main greenlets is therefore two stack switches; to or from main, one.
//!
//! Invariants this module relies on (and the rest of the crate upholds):
//! 1. Only the thread's main greenlet runs the trampoline, and only while it is switching away,
//!    so at most one trampoline runs per thread and a non-main greenlet only ever runs inside
//!    it.
//! 2. A greenlet's coroutine slot is touched only by the trampoline (to resume it and to free
//!    it once it has finished) and by [`Context::prepare`] (only while the greenlet is
//!    unstarted, when no coroutine exists yet).
//! 3. The current greenlet is alive: it has a handle when it becomes current, and the drop of
//!    its last handle while it runs is turned into a handle the thread state keeps (see
//!    `ThreadState`). A greenlet that switched away (or died) stays alive until the target has
//!    arrived: nothing runs in between but the trampoline, which drops no handle, and the
//!    handle the state may keep on it is released by the arrival, after the trampoline is done
//!    with the greenlet it resumed.
//!
//! Everything here is private to the crate. The per-thread state it switches for lives in
//! `thread.rs`, the switch algorithm around it in `transfer.rs`.

// Unsafe code: the coroutine slot (an `UnsafeCell` behind a shared reference), the yielder
// pointer kept across switches, and the pointers to the greenlet that switches away and to
// the one the trampoline resumes; every block rests on the invariants above.
#![allow(unsafe_code)]

use std::cell::{Cell, UnsafeCell};
use std::ptr;

use corosensei::{Coroutine, CoroutineResult, Yielder};

use crate::greenlet::Inner;
use crate::thread::ThreadState;

use crate::stack::GreenStack;

type GreenCoroutine = Coroutine<(), (), (), GreenStack>;

/// A greenlet's execution context: its coroutine (stack) and the yielder its body was given.
pub(crate) struct Context {
    coroutine: UnsafeCell<Option<GreenCoroutine>>,
    yielder: Cell<*const Yielder<(), ()>>,
}

impl Drop for Context {
    /// Inline and small: a greenlet's `Inner` is dropped long after its coroutine finished and
    /// freed its stack (or before it ever had one), so this is a load and a test, wherever
    /// the drop glue is instantiated. Whether the compiler inlined the glue used to depend on
    /// what else shared its codegen unit.
    #[inline]
    fn drop(&mut self) {
        if let Some(coroutine) = self.coroutine.get_mut().take() {
            drop_coroutine(coroutine);
        }
    }
}

/// Drops a coroutine left in a [`Context`] being dropped. One that is still suspended belongs
/// to a greenlet nobody can kill any more (its thread's state is gone): dropping it would make
/// corosensei unwind its frames, running greenlet code with no thread state, so it is
/// abandoned instead (its stack leaks).
#[cold]
#[inline(never)]
fn drop_coroutine(coroutine: GreenCoroutine) {
    if coroutine.started() && !coroutine.done() {
        std::mem::forget(coroutine);
    }
}

/// The handle a greenlet body receives; [`Context::bind`] records it so that later switches
/// out of this greenlet can suspend its coroutine.
pub(crate) struct Suspender<'a>(&'a Yielder<(), ()>);

impl Context {
    pub(crate) const fn new() -> Context {
        Context {
            coroutine: UnsafeCell::new(None),
            yielder: Cell::new(ptr::null()),
        }
    }

    /// Creates the coroutine that will run `body` when the trampoline first resumes it, on a
    /// stack of `stack_size` usable bytes labelled with the greenlet's id and name (for the
    /// stack overflow report).
    pub(crate) fn prepare(
        &self,
        stack_size: usize,
        owner: (u64, Option<&str>),
        body: fn(&Suspender<'_>),
    ) -> std::io::Result<()> {
        let stack = crate::stack::allocate(stack_size)?;
        stack.set_owner(owner.0, owner.1);
        let coroutine = Coroutine::with_stack(stack, move |yielder: &Yielder<(), ()>, ()| {
            body(&Suspender(yielder))
        });
        // SAFETY: invariant 2: the greenlet is unstarted, so neither the trampoline nor anyone
        // else holds a reference into the slot (it is `None`).
        let slot = unsafe { &mut *self.coroutine.get() };
        debug_assert!(slot.is_none());
        *slot = Some(coroutine);
        Ok(())
    }

    /// Whether it holds no coroutine: unstarted, or finished (its stack freed).
    pub(crate) fn is_empty(&mut self) -> bool {
        self.coroutine.get_mut().is_none()
    }

    /// Remembers the yielder of the running body; called first thing by the body.
    pub(crate) fn bind(&self, suspender: &Suspender<'_>) {
        self.yielder.set(suspender.0);
    }

    /// Suspends the running greenlet back to the trampoline, which resumes the greenlet the
    /// thread state now names as current. Returns when this greenlet is resumed.
    ///
    /// Must only be called by the greenlet owning this context, while it is running.
    #[inline]
    pub(crate) fn suspend(&self) {
        let yielder = self.yielder.get();
        debug_assert!(!yielder.is_null());
        // SAFETY: the pointer was set by `bind` at the start of this greenlet's body to the
        // yielder corosensei passed it; that yielder lives in the body's bottom frame, which
        // outlives every switch the body makes. We are running on that very coroutine (the
        // caller is the running greenlet), which is what `Yielder::suspend` requires.
        unsafe { &*yielder }.suspend(())
    }

    /// Gives up a suspended coroutine for good, without unwinding it: its stack is leaked.
    /// Used at thread exit for greenlets that refused to die, whose frames must never run
    /// again.
    pub(crate) fn abandon(&self) {
        // SAFETY: invariant 2: called at thread exit while the main greenlet runs, so no
        // trampoline is running and nothing else refers into the slot.
        let slot = unsafe { &mut *self.coroutine.get() };
        std::mem::forget(slot.take());
    }

    /// Resumes the coroutine until it suspends or finishes; frees its stack when it finishes.
    #[inline]
    fn resume(&self) {
        // SAFETY: invariant 2: only the trampoline touches a started greenlet's slot, and
        // invariant 1: only one trampoline runs per thread, so this is the only reference.
        let slot = unsafe { &mut *self.coroutine.get() };
        debug_assert!(
            slot.is_some(),
            "the trampoline resumed a greenlet without a stack"
        );
        // SAFETY: the trampoline only resumes the current greenlet, and a greenlet becomes
        // current only while it is active (a switch tests `State::Active`, starting an
        // unstarted target first; a dead greenlet's transfers are redirected to a live
        // ancestor); an active non-main greenlet has its coroutine until the coroutine returns,
        // and then it is dead (its body marks it so before returning) and never current again.
        let coroutine = unsafe { slot.as_mut().unwrap_unchecked() };
        if let CoroutineResult::Return(()) = coroutine.resume(()) {
            // The body returned: nothing is left on the stack; free it.
            *slot = None;
        }
    }
}

/// Switches stacks away from `from`, the greenlet that was current until
/// [`ThreadState::hand_off`] named the target; returns when `from` is resumed.
#[inline(always)]
pub(crate) fn switch_away(state: &ThreadState, from: *const Inner) {
    // SAFETY: invariant 3: `from` was current until the hand-off and stays alive until the
    // target has arrived, after this switch has happened.
    let from: &Inner = unsafe { &*from };
    if from.is_main() {
        trampoline(state);
    } else {
        from.context().suspend();
    }
}

/// Runs on the main greenlet's stack while main is switched away: resumes whichever greenlet
/// is current until main is current again.
#[inline(always)]
fn trampoline(state: &ThreadState) {
    loop {
        let next = state.current_ptr();
        // SAFETY: invariant 3: the current greenlet is alive, and when it switches away or
        // dies (inside `resume`) it stays alive until the next greenlet to run has arrived,
        // after `resume` returns.
        let next: &Inner = unsafe { &*next };
        if next.is_main() {
            return;
        }
        next.context().resume();
    }
}
