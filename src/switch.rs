//! Stack switching: each greenlet's execution context (its corosensei coroutine), and symmetric
//! transfers made out of corosensei's asymmetric coroutines.
//!
//! corosensei gives asymmetric coroutines (`resume` / `suspend`); greenlets need symmetric
//! transfers (any greenlet to any other). A coroutine can be resumed from any stack, so the
//! greenlets of a thread form a *chain*: the main greenlet, the greenlet it resumed, the one
//! that greenlet resumed, and so on up to the running greenlet. Every other active greenlet is
//! *parked*: suspended, resumable by whoever runs. A transfer is one stack switch:
//! - to a parked greenlet: the sender resumes it from its own stack (the chain grows by one,
//!   the sender blocked in that resume: its `Mode::Chained`);
//! - to a greenlet on the chain: the sender suspends to the greenlet that resumed it, which
//!   wakes up in its resume, sees that it is not current, and suspends in turn, until the
//!   target wakes up (the chain shrinks to the target);
//! - a greenlet that dies returns from its coroutine to its resumer, which goes on the same
//!   way (resumes the new current greenlet if it is parked, suspends if it is below).
//!
//! Ping-pong between two greenlets is one resume and one suspend per round trip, whichever
//! they are; a transfer to a greenlet far down the chain wakes each greenlet above it once.
//! That never costs more than the former trampoline (every transfer between two non-main
//! greenlets was a suspend to main and a resume): each stack switch down the chain undoes
//! one resume that put a greenlet on it, and each transfer makes at most one resume, so over
//! any run there are at most twice as many stack switches as transfers.
//!
//! Invariants this module relies on (and the rest of the crate upholds):
//! 1. Only the current greenlet is ever resumed, and only if it is parked; a greenlet blocked
//!    in a resume is not resumed until that resume returns. The chain is exactly the greenlets
//!    blocked in a resume, plus the running one; the main greenlet is always its first (main
//!    is never a coroutine, and nothing resumes it: it is only ever returned to). (The spare
//!    coroutine of a dead greenlet, see [`keep_spare`], is resumed besides, to be reused or told
//!    to quit; it is no greenlet's then, and the quit returns at once. A ready greenlet,
//!    `Mode::Ready`, counts as parked: resumed as the current greenlet, its spare coroutine
//!    starts it.)
//! 2. A greenlet's coroutine slot is touched only by the greenlet resuming it (to resume it
//!    and to free it once it has finished), by [`Context::prepare`] (only while the greenlet is
//!    unstarted, when the slot is empty or holds a spare coroutine), by the context's drop
//!    (when no handle on the greenlet is left), and at thread exit while only main runs.
//! 3. The current greenlet is alive: it has a handle when it becomes current, and the drop of
//!    its last handle while it runs is turned into a handle the thread state keeps (see
//!    `ThreadState`). A greenlet that switched away (or died) stays alive until the target has
//!    arrived: nothing runs in between but the switch loop of the greenlets woken on the way,
//!    which drops no handle, and the handle the state may keep on it is released by the
//!    arrival, after the resume that ran it has returned. A greenlet on the chain is alive: it
//!    was alive when it joined, and its memory is only freed once it is dead, which it can
//!    only become by running, after it left the chain; one whose kill failed is leaked.
//!
//! Everything here is private to the crate. The per-thread state it switches for lives in
//! `thread.rs`, the switch algorithm around it in `transfer.rs`.

// Unsafe code: the coroutine slot (an `UnsafeCell` behind a shared reference), the yielder
// pointer kept across switches, and the pointers to the greenlet that switches away and to
// the one it resumes; every block rests on the invariants above.
#![allow(unsafe_code)]

use std::cell::{Cell, UnsafeCell};
use std::ptr;

use corosensei::{Coroutine, CoroutineResult, Yielder};

use crate::greenlet::{Inner, Mode};
use crate::thread::ThreadState;

use crate::stack::{GreenStack, StackLabel};

type GreenCoroutine = Coroutine<(), (), (), GreenStack>;
type GreenYielder = Yielder<(), ()>;

/// How many coroutines of dead greenlets a thread keeps spare (see [`keep_spare`]): each holds its
/// stack (the pages its greenlet touched, 4 KiB or more), so a program that keeps many dead
/// greenlets' handles keeps this many stacks at most; the others are freed when their
/// greenlet dies. Twice the pool of recycled `Inner`s (`thread::recycle`), which is where a
/// spare coroutine is reused from.
const SPARE_MAX: usize = 128;

thread_local! {
    /// How many spare coroutines this thread has: counted up by [`keep_spare`], down when one
    /// is reused ([`Context::prepare`]) or told to quit ([`Context`]'s drop). A plain
    /// counter with no destructor, usable at any point of thread exit.
    ///
    /// Its top bit, [`QUIT`], is set while a spare coroutine is resumed to be told to quit
    /// ([`drop_coroutine`]), and read by the spare body when it is resumed: a flag beside the
    /// coroutine, not its resume input, so that the resumes and suspends of switches pass
    /// nothing.
    static SPARES: Cell<usize> = const { Cell::new(0) };
}

/// [`SPARES`]' quit flag.
const QUIT: usize = 1 << (usize::BITS - 1);

/// A greenlet's execution context: its coroutine (stack) and the yielder its body was given.
///
/// The coroutine outlives the greenlet's death: its body keeps it spare ([`keep_spare`]) instead
/// of returning, so that the next greenlet built on the same `Inner` (`thread::recycle`) runs
/// on it without a new stack or a new coroutine. A spare coroutine that is not reused is
/// resumed once more when its context is dropped, told to quit, and returns.
pub(crate) struct Context {
    coroutine: UnsafeCell<Option<GreenCoroutine>>,
    yielder: Cell<*const GreenYielder>,
    /// The coroutine's stack: set with the coroutine, read only while it is spare (stale once
    /// the coroutine is gone).
    stack: Cell<Option<StackLabel>>,
    /// The coroutine is spare: its greenlet is dead and its body waits in [`keep_spare`].
    spare: Cell<bool>,
    /// Where the coroutine's stack lies, for samplers (`crate::sample`): set with the
    /// coroutine, kept while it is spare (a reused spare runs on the same stack), cleared when
    /// the coroutine returns; for a main greenlet, its thread's stack if known
    /// ([`Context::on_thread_stack`]). Never read by the runtime.
    bounds: Cell<StackBounds>,
}

/// The usable part of a greenlet's stack, `[low, high)`, as a sampler reads it from outside the
/// process (`crate::sample::SampleLayout::inner_stack`): two words, `low` first. Both zero
/// when unknown.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StackBounds {
    pub(crate) low: usize,
    pub(crate) high: usize,
}

impl StackBounds {
    /// No stack known: a context with no coroutine, or a main greenlet whose thread's stack
    /// could not be found.
    pub(crate) const UNKNOWN: StackBounds = StackBounds { low: 0, high: 0 };
}

/// Offset of a context's [`StackBounds`] in it (for `crate::greenlet::INNER_STACK`).
pub(crate) const CONTEXT_BOUNDS: usize = std::mem::offset_of!(Context, bounds);

impl Drop for Context {
    /// Inline and small: most contexts are dropped empty (a main greenlet's, or an unstarted
    /// greenlet's), so this is a load and a test wherever the drop glue is instantiated.
    #[inline]
    fn drop(&mut self) {
        if let Some(coroutine) = self.coroutine.get_mut().take() {
            drop_coroutine(coroutine, self.spare.get());
        }
    }
}

/// Drops a coroutine left in a [`Context`] being dropped. A spare one is told to quit: its
/// body returns, which frees nothing but its own frames, and the stack goes back to the pool.
/// One that is still suspended otherwise belongs to a greenlet nobody can kill any more (its
/// thread's state is gone): dropping it would make corosensei unwind its frames, running
/// greenlet code with no thread state, so it is abandoned instead (its stack leaks).
#[cold]
#[inline(never)]
fn drop_coroutine(mut coroutine: GreenCoroutine, spare: bool) {
    if spare {
        SPARES.set(SPARES.get() - 1);
        // The body, waiting in `keep_spare`, returns at once when told to quit: it runs no greenlet
        // code and touches neither the thread state nor this context.
        SPARES.set(SPARES.get() | QUIT);
        let finished = coroutine.resume(());
        SPARES.set(SPARES.get() & !QUIT);
        debug_assert!(matches!(finished, CoroutineResult::Return(())));
    } else if coroutine.started() && !coroutine.done() {
        std::mem::forget(coroutine);
    }
}

/// Keeps spare the coroutine of the greenlet that owns `context`, which has just died and handed
/// its result off (the greenlet now current is another): suspends to whoever resumed it, as a
/// switch away would. Returns `true` when resumed again for a new greenlet on the same
/// `Inner` (its body then runs the new greenlet's `run`), `false` when told to quit, or
/// at once if the thread has [`SPARE_MAX`] spare coroutines already; the body must then
/// return without touching `context` or the thread state again.
///
/// Takes a pointer, not a reference: when the coroutine is told to quit, its context is being
/// dropped.
#[inline]
pub(crate) fn keep_spare(context: *const Context) -> bool {
    let spares = SPARES.get();
    if spares >= SPARE_MAX {
        return false;
    }
    SPARES.set(spares + 1);
    // SAFETY: the dead greenlet is alive until the greenlet it handed off to has arrived,
    // which happens after this suspend (switch.rs invariant 3), and its context lives in it.
    let yielder = unsafe {
        (*context).spare.set(true);
        (*context).yielder.get()
    };
    debug_assert!(!yielder.is_null());
    // SAFETY: as in `Context::suspend`: the yielder of this very coroutine, alive in its
    // bottom frame. After it returns, nothing here touches `context`.
    unsafe { &*yielder }.suspend(());
    SPARES.get() & QUIT == 0
}

/// The handle a greenlet body receives; [`Context::bind`] records it so that later switches
/// out of this greenlet can suspend its coroutine.
pub(crate) struct Suspender<'a>(&'a GreenYielder);

impl Context {
    pub(crate) const fn new() -> Context {
        Context {
            coroutine: UnsafeCell::new(None),
            yielder: Cell::new(ptr::null()),
            stack: Cell::new(None),
            spare: Cell::new(false),
            bounds: Cell::new(StackBounds::UNKNOWN),
        }
    }

    /// A main greenlet's context: no coroutine, and the bounds of the calling thread's stack,
    /// which a main greenlet runs on (unknown if the thread's stack is not known, or the
    /// caller is not on it).
    pub(crate) fn on_thread_stack() -> Context {
        let context = Context::new();
        if let Some((low, high)) = crate::stack::thread_stack() {
            context.bounds.set(StackBounds { low, high });
        }
        context
    }

    /// Gets the coroutine ready to run `body` when it is first resumed, on a stack of
    /// `stack_size` usable bytes labelled with the greenlet's id and name (for the stack
    /// overflow report): the spare coroutine kept in this context if its stack has that size
    /// (its body is `body` already), else a new one.
    #[inline]
    pub(crate) fn prepare(
        &self,
        stack_size: usize,
        owner: (u64, Option<&str>),
        body: fn(&Suspender<'_>),
    ) -> std::io::Result<()> {
        if self.reuse_spare(stack_size, owner) {
            return Ok(());
        }
        self.prepare_new(stack_size, owner, body)
    }

    /// [`Context::prepare`] when it keeps a spare coroutine whose stack has that size: takes
    /// it (returns `true`); else does nothing (`false`).
    #[inline(always)]
    fn reuse_spare(&self, stack_size: usize, owner: (u64, Option<&str>)) -> bool {
        if !self.spare_fits(stack_size) {
            return false;
        }
        self.take_spare(owner);
        true
    }

    /// Whether this context keeps a spare coroutine whose stack has `stack_size` usable bytes
    /// (rounded as [`crate::stack::rounded_size`] does).
    #[inline(always)]
    pub(crate) fn spare_fits(&self, stack_size: usize) -> bool {
        if !self.spare.get() {
            return false;
        }
        let label = self.stack.get();
        debug_assert!(label.is_some(), "a spare coroutine without a stack");
        // SAFETY: a spare coroutine has its stack (it was recorded with the coroutine).
        let usable = unsafe { label.unwrap_unchecked() }.usable_size();
        stack_size == usable || crate::stack::rounded_size(stack_size) == Some(usable)
    }

    /// Takes the spare coroutine for the greenlet `owner` (id and name), which now runs on
    /// it: it is no longer spare, and its stack is labelled with its new owner for the
    /// overflow report. Called by [`Context::prepare`], or by the body itself when a switch
    /// resumed the spare coroutine of a ready greenlet (`Mode::Ready`).
    #[inline(always)]
    pub(crate) fn take_spare(&self, owner: (u64, Option<&str>)) {
        debug_assert!(self.spare.get(), "took a spare coroutine that is not spare");
        self.spare.set(false);
        SPARES.set(SPARES.get() - 1);
        let label = self.stack.get();
        // SAFETY: a spare coroutine has its stack (it was recorded with the coroutine).
        unsafe { label.unwrap_unchecked() }.set_owner(owner.0, owner.1);
    }

    /// [`Context::prepare`] with a new stack and coroutine (a spare one, of the wrong size,
    /// is told to quit first).
    #[inline(never)]
    fn prepare_new(
        &self,
        stack_size: usize,
        owner: (u64, Option<&str>),
        body: fn(&Suspender<'_>),
    ) -> std::io::Result<()> {
        // SAFETY: invariant 2: the greenlet is unstarted, so no greenlet is resuming it and
        // nothing else holds a reference into the slot (it is `None`, or holds a spare coroutine).
        let slot = unsafe { &mut *self.coroutine.get() };
        if let Some(spare) = slot.take() {
            drop_coroutine(spare, self.spare.replace(false));
            self.stack.set(None);
        }
        let stack = crate::stack::allocate(stack_size)?;
        stack.set_owner(owner.0, owner.1);
        self.stack.set(Some(stack.label()));
        let (low, high) = stack.bounds();
        self.bounds.set(StackBounds { low, high });
        let coroutine = Coroutine::with_stack(stack, move |yielder: &GreenYielder, ()| {
            body(&Suspender(yielder))
        });
        *slot = Some(coroutine);
        Ok(())
    }

    /// Whether a dead greenlet's `Inner` with this context can be reused, and if so the
    /// mode of the next greenlet on it that wants `stack_size` bytes of stack: it holds a
    /// spare coroutine (`Mode::Ready` if its stack has that size, see [`Context::spare_fits`],
    /// else `Mode::Unstarted`), or no coroutine (it never started, or its coroutine finished:
    /// `Mode::Unstarted`); `None` otherwise.
    #[inline(always)]
    pub(crate) fn reusable_mode(&mut self, stack_size: usize) -> Option<Mode> {
        if self.spare.get() {
            Some(if self.spare_fits(stack_size) {
                Mode::Ready
            } else {
                Mode::Unstarted
            })
        } else if self.coroutine.get_mut().is_none() {
            Some(Mode::Unstarted)
        } else {
            None
        }
    }

    /// Remembers the yielder of the running body; called first thing by the body.
    #[inline]
    pub(crate) fn bind(&self, suspender: &Suspender<'_>) {
        self.yielder.set(suspender.0);
    }

    /// Suspends the running greenlet back to the greenlet that resumed it (see the module
    /// documentation). Returns when this greenlet is resumed, which happens only when it is
    /// current again.
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
        unsafe { &*yielder }.suspend(());
    }

    /// Gives up a suspended coroutine for good, without unwinding it: its stack is leaked.
    /// Used at thread exit for greenlets that refused to die, whose frames must never run
    /// again.
    pub(crate) fn abandon(&self) {
        // SAFETY: invariant 2: called at thread exit while the main greenlet runs, so the chain
        // is main alone: no greenlet is resuming another and nothing else refers into the slot.
        let slot = unsafe { &mut *self.coroutine.get() };
        std::mem::forget(slot.take());
    }

    /// Resumes the coroutine until it suspends (a switch away, or kept spare after its
    /// greenlet died) or finishes; drops it when it finishes (its stack goes back to the pool).
    #[inline]
    fn resume(&self) {
        // SAFETY: invariant 2: only the greenlet resuming this one touches its started slot,
        // and invariant 1: this greenlet is parked, so nobody else is resuming it: this is the
        // only reference.
        let slot = unsafe { &mut *self.coroutine.get() };
        debug_assert!(slot.is_some(), "resumed a greenlet without a stack");
        // SAFETY: only the current greenlet is resumed, and a greenlet becomes
        // current only while it is active (a switch tests `State::Active`, starting an
        // unstarted target first; a dead greenlet's transfers are redirected to a live
        // ancestor); an active non-main greenlet has its coroutine until the coroutine returns,
        // and then it is dead (its body marks it so before returning) and never current again.
        let coroutine = unsafe { slot.as_mut().unwrap_unchecked() };
        if let CoroutineResult::Return(()) = coroutine.resume(()) {
            // The body returned (its greenlet died with `SPARE_MAX` coroutines spare):
            // nothing is left on the stack; free it. (`stack` is left stale: it is read only
            // while the coroutine is spare.) Its bounds are forgotten: the stack is someone
            // else's once it is back in the pool.
            *slot = None;
            self.bounds.set(StackBounds::UNKNOWN);
        }
    }
}

/// Switches stacks away from `from`, the greenlet that was current until
/// [`ThreadState::hand_off`] named the target; returns when `from` is current again.
#[inline]
pub(crate) fn switch_away(state: &ThreadState, from: *const Inner) {
    // SAFETY: invariant 3: the current greenlet (the target) is alive.
    let mode = unsafe { &*state.current_ptr() }.mode();
    switch_to(state, from, mode);
}

/// [`switch_away`] for a caller that read the target's mode before the hand-off (it cannot
/// have changed since: nothing ran).
///
/// Where the current greenlet is parked, `from` resumes it from its own stack (and is blocked
/// in that resume until it comes back: it joins the chain); where it is on the chain, below
/// `from`, `from` suspends to the greenlet that resumed it, which goes on the same way. Each
/// greenlet that wakes up in a resume does the same until the current one runs.
#[inline(always)]
pub(crate) fn switch_to(state: &ThreadState, from: *const Inner, mode: Mode) {
    // SAFETY: invariant 3: `from` was current until the hand-off and stays alive until the
    // target has arrived, after this switch has happened; and when `from` runs again (here,
    // after a resume or a suspend returned) it is alive because its frames are running.
    let from: &Inner = unsafe { &*from };
    if mode == Mode::Chained {
        // Below us on the chain: go down. Whoever resumes us again does so because we are
        // current (only the current greenlet is ever resumed).
        from.context().suspend();
        return;
    }
    let next = state.current_ptr();
    // Tested after the mode, which is `Active` for the running greenlet: a transfer to itself,
    // where there is nothing to switch.
    if ptr::eq(next, from) {
        return;
    }
    resume_from(from, next);
    if !ptr::eq(state.current_ptr(), from) {
        switch_on(state, from);
    }
}

/// Resumes `next`, the current greenlet, which is parked, from the stack of `from`, which is
/// on the chain meanwhile; returns when `next` (or a greenlet it resumed) suspends back or
/// `next` dies.
#[inline(always)]
fn resume_from(from: &Inner, next: *const Inner) {
    // SAFETY: invariant 3: the current greenlet is alive, and when it switches away or dies
    // (inside `resume`) it stays alive until the next greenlet to run has arrived.
    let target: &Inner = unsafe { &*next };
    debug_assert!(
        matches!(target.mode(), Mode::Active | Mode::Ready),
        "resumed a greenlet that is neither active nor ready"
    );
    from.set_chained(true);
    target.context().resume();
    from.set_chained(false);
}

/// [`switch_to`] once `from` has woken up in a resume that returned while another greenlet is
/// current: resume that one if it is parked, go down if it is on the chain, until `from` is
/// current again. Out of line: a transfer between two greenlets never gets here, only one
/// that passes through a greenlet on the way (a death, a transfer down the chain).
#[cold]
#[inline(never)]
fn switch_on(state: &ThreadState, from: &Inner) {
    loop {
        let next = state.current_ptr();
        if ptr::eq(next, from) {
            return;
        }
        // SAFETY: invariant 3, as in `resume_from`.
        if unsafe { &*next }.mode() == Mode::Chained {
            from.context().suspend();
            return;
        }
        resume_from(from, next);
    }
}
