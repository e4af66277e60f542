//! The public [`Greenlet`] handle and its [`Builder`].

// Unsafe code: a pair of blocks in `Greenlet`'s `Drop`: the handle's `Rc` is kept in a
// `ManuallyDrop` so that the drop can move the last handle on a dead greenlet out, to the
// thread's pool of reusable `Inner`s (`thread::recycle`), instead of freeing it; and
// `Inner::parent_ref`, the parent borrowed in place for a finishing greenlet's hand-off.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::mem::ManuallyDrop;
use std::rc::Rc;

use crate::error::{Error, GreenletExit};
use crate::lifecycle;
use crate::probes;
use crate::sample::FLAG_IDLE;
use crate::switch::Context;
use crate::thread::{try_with_state, with_state, ThreadState, NOT_REGISTERED};
use crate::transfer::{self, Transfer};
use crate::value::Value;

pub use crate::stack::DEFAULT_STACK_SIZE;

pub(crate) type Run = Box<dyn FnOnce(Value) -> Result<Value, Error>>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum State {
    /// Created, `run` not started yet: no stack.
    Unstarted,
    /// Started and not finished: running (current) or suspended.
    Active,
    /// Finished (or, for a main greenlet, its thread has exited).
    Dead,
}

/// A greenlet's state as a switch needs it, in one byte: whether a switch can resume it at once
/// (it is active, or ready to start on a spare coroutine), and if it is active, whether it is
/// blocked in a resume of another greenlet (on the chain, see `switch`). The modes a switch
/// takes inline come first, so that testing for them is one compare, and the two active ones
/// first of all, so that "active" is one compare too.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
#[repr(u8)]
pub(crate) enum Mode {
    /// Active and not blocked in a resume: running, or parked (suspended, resumable).
    Active = 0,
    /// Active and blocked in its resume of another greenlet.
    Chained = 1,
    /// [`State::Unstarted`], built on a dead greenlet's `Inner` whose spare coroutine (its
    /// stack of the size this greenlet wants) waits to run the next greenlet's life
    /// (`switch::keep_spare`): a switch resumes it as it resumes a parked greenlet, and the
    /// body starts it there (`lifecycle::live`), so the first switch needs no start of its
    /// own. Any other way in (a throw, a dead child's result) starts it first
    /// (`lifecycle::start`), as an unstarted greenlet.
    ///
    /// A switch takes the thread state for granted for this mode as for the active ones, so a
    /// ready greenlet must not outlive its thread's state in this mode: it is always in the
    /// thread's registry (a sweep keeps it), and the teardown makes every registered ready
    /// greenlet [`Mode::Unstarted`] (code that runs after the teardown, in another
    /// thread-local's destructor, then starts it under the fresh state it gets).
    Ready = 2,
    /// [`State::Unstarted`] otherwise.
    Unstarted = 3,
    /// [`State::Dead`].
    Dead = 4,
}

impl Mode {
    /// Whether a switch resumes a greenlet in this mode (or suspends to it, if it is
    /// [`Mode::Chained`]) without starting it first: an active one or a ready one.
    #[inline(always)]
    pub(crate) fn is_switchable(self) -> bool {
        self <= Mode::Ready
    }
}

pub(crate) struct Inner {
    id: u64,
    /// What a builder set beyond the defaults: `None` for a greenlet with no name and the
    /// default stack size, which keeps `Inner` small (it is built on the stack and copied into
    /// its `Rc`: a shorter copy).
    options: Option<Box<Options>>,
    is_main: bool,
    /// Its [`State`], and on the chain or not (see [`Mode`]).
    mode: Cell<Mode>,
    /// [`FLAG_IDLE`]: read by samplers (`crate::sample`) from outside the process, at the
    /// offset [`INNER_FLAGS`].
    flags: Cell<u8>,
    /// A `Cell`, not a `RefCell`: read by taking and putting back (see `parent`), which runs
    /// no user code in between.
    parent: Cell<Option<Greenlet>>,
    run: Cell<Option<Run>>,
    context: Context,
    pub(crate) registry_index: Cell<usize>,
    /// Its thread's state: what a switch to it uses instead of the thread-local pointer (one
    /// load from the target, which the switch reads anyway, instead of two for the
    /// thread-local). Set when it is built (for a main greenlet, once its state is allocated),
    /// kept when its `Inner` is recycled (the pool is per thread). Followed only while the
    /// greenlet is active or ready, when its thread's state is alive (`Mode::Ready`).
    thread: Cell<*const ThreadState>,
    /// How many tracer calls hold this greenlet as their event's origin or target
    /// (`thread::PinnedEvent`): their handles hold no count, so while it is not zero, dropping
    /// the last handle is deferred until the calls have returned, as if each held one.
    pins: Cell<u32>,
}

/// `crate::sample::SampleLayout::inner_id`.
pub(crate) const INNER_ID: u32 = std::mem::offset_of!(Inner, id) as u32;
/// `crate::sample::SampleLayout::inner_flags`.
pub(crate) const INNER_FLAGS: u32 = std::mem::offset_of!(Inner, flags) as u32;
/// `crate::sample::SampleLayout::inner_stack`: the bounds of the greenlet's stack, kept in its
/// context.
pub(crate) const INNER_STACK: u32 =
    (std::mem::offset_of!(Inner, context) + crate::switch::CONTEXT_BOUNDS) as u32;

/// The rarely set parts of a greenlet's configuration.
pub(crate) struct Options {
    name: Option<Box<str>>,
    stack_size: usize,
}

impl Inner {
    #[inline]
    pub(crate) fn is_main(&self) -> bool {
        self.is_main
    }

    #[inline]
    pub(crate) fn state(&self) -> State {
        match self.mode.get() {
            Mode::Active | Mode::Chained => State::Active,
            Mode::Ready | Mode::Unstarted => State::Unstarted,
            Mode::Dead => State::Dead,
        }
    }

    #[inline(always)]
    pub(crate) fn mode(&self) -> Mode {
        self.mode.get()
    }

    /// Marks the running greenlet as blocked in a resume ([`Mode::Chained`]) or not
    /// ([`Mode::Active`]): only `switch` does.
    #[inline(always)]
    pub(crate) fn set_chained(&self, chained: bool) {
        self.mode
            .set(if chained { Mode::Chained } else { Mode::Active });
    }

    #[inline]
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    #[inline]
    pub(crate) fn is_idle(&self) -> bool {
        self.flags.get() & FLAG_IDLE != 0
    }

    /// A handle to the parent (`None` only for a main greenlet).
    #[inline]
    pub(crate) fn parent(&self) -> Option<Greenlet> {
        let parent = self.parent.take();
        let copy = parent.clone();
        self.parent.set(parent);
        copy
    }

    /// Whether the main greenlet at the root of its parent chain is dead: its thread has
    /// exited (its greenlets were torn down), and this greenlet can never run; only code
    /// running after the teardown, in another thread-local's destructor, can meet one.
    pub(crate) fn thread_exited(&self) -> bool {
        let mut at = self;
        while !at.is_main {
            // SAFETY: nothing runs during this walk that could replace a parent.
            match unsafe { at.parent_ref() } {
                Some(parent) => at = parent.inner(),
                None => return true,
            }
        }
        at.mode() == Mode::Dead
    }

    /// The parent, borrowed from its field without a handle of its own.
    ///
    /// # Safety
    /// Nothing may replace this greenlet's parent (`set_parent`, a kill's temporary parent)
    /// while the reference lives.
    #[inline]
    pub(crate) unsafe fn parent_ref(&self) -> Option<&Greenlet> {
        // SAFETY: the caller guarantees the field is not written while the reference lives;
        // the field is only ever accessed by `take`/`set`/`replace`, which hand out no
        // reference into it, so nothing else refers into it either.
        unsafe { &*self.parent.as_ptr() }.as_ref()
    }

    #[inline]
    pub(crate) fn name(&self) -> Option<&str> {
        self.options.as_ref().and_then(|o| o.name.as_deref())
    }

    pub(crate) fn set_state(&self, state: State) {
        self.mode.set(match state {
            State::Unstarted => Mode::Unstarted,
            State::Active => Mode::Active,
            State::Dead => Mode::Dead,
        });
    }

    #[inline]
    pub(crate) fn context(&self) -> &Context {
        &self.context
    }

    pub(crate) fn stack_size(&self) -> usize {
        self.options
            .as_ref()
            .map_or(DEFAULT_STACK_SIZE, |o| o.stack_size)
    }

    pub(crate) fn take_run(&self) -> Option<Run> {
        self.run.take()
    }

    /// Replaces the parent, returning the old one (dropped by the caller, outside any borrow).
    pub(crate) fn replace_parent(&self, parent: Option<Greenlet>) -> Option<Greenlet> {
        self.parent.replace(parent)
    }

    /// Readies a dead greenlet's `Inner` for reuse by [`Builder::build`] (the per-thread pool
    /// of `thread::recycle`): sets the mode of the next greenlet on it and returns its
    /// options, for the caller to drop, then the rest it owns ([`Inner::drop_leftovers`]);
    /// `None` (and nothing changed) if it cannot be reused: a main greenlet, or one whose
    /// coroutine is neither spare nor gone. (It may be in its thread's registry: it stays
    /// there, see `thread::Registry`.)
    #[inline(always)]
    pub(crate) fn empty_for_reuse(&mut self) -> Option<Option<Box<Options>>> {
        if self.is_main || self.mode.get() != Mode::Dead {
            return None;
        }
        // Set to the mode of the next greenlet built on it with the default stack size
        // (`build`): `Ready` if its spare coroutine fits, and only if it is still in its
        // thread's registry (a sweep may have dropped it while it was dead): a ready greenlet
        // is always registered, so that the teardown finds it (`Registry`).
        let mode = self.context.reusable_mode(DEFAULT_STACK_SIZE)?;
        self.mode.set(
            if mode == Mode::Ready && self.registry_index.get() == NOT_REGISTERED {
                Mode::Unstarted
            } else {
                mode
            },
        );
        Some(self.options.take())
    }

    /// Drops what a dead greenlet being recycled still owns beside its options, in field
    /// order: its parent's handle (which may be the parent's last, and kill it), and its
    /// `run` if it never ran. Through a shared reference: the kill runs code that may read
    /// the registry, which points to this `Inner`.
    #[inline(always)]
    pub(crate) fn drop_leftovers(&self) {
        drop(self.parent.take());
        drop(self.run.take());
    }

    /// The mode of an unstarted greenlet on this `Inner` that wants a stack of `stack_size`
    /// bytes: [`Mode::Ready`] if its spare coroutine has such a stack and it is registered
    /// (see [`Inner::empty_for_reuse`]).
    #[inline(always)]
    fn unstarted_mode(&self, stack_size: usize) -> Mode {
        if self.context.spare_fits(stack_size) && self.registry_index.get() != NOT_REGISTERED {
            Mode::Ready
        } else {
            Mode::Unstarted
        }
    }

    /// Records its thread's state, for a main greenlet, once the state is allocated.
    pub(crate) fn set_thread(&self, state: *const ThreadState) {
        self.thread.set(state);
    }

    /// Its thread's state.
    ///
    /// # Safety
    /// The greenlet is active or ready ([`Mode::is_switchable`]): its thread's state is alive
    /// (see `thread`), and it is this thread's (a greenlet never leaves its thread).
    #[inline(always)]
    pub(crate) unsafe fn thread_state(&self) -> &ThreadState {
        let state = self.thread.get();
        debug_assert!(
            !state.is_null(),
            "a switchable greenlet without a thread state"
        );
        // SAFETY: the caller guarantees the state is alive; it is only used through shared
        // references (its fields are cells).
        unsafe { &*state }
    }

    /// Counts one more tracer call holding this greenlet without a handle (see `pins`).
    #[inline(always)]
    pub(crate) fn pin(&self) {
        self.pins.set(self.pins.get() + 1);
    }

    /// Undoes [`Inner::pin`].
    #[inline(always)]
    pub(crate) fn unpin(&self) {
        self.pins.set(self.pins.get() - 1);
    }

    /// Whether a tracer call holds this greenlet without a handle: dropping its last handle
    /// waits until it does not (`ThreadState::defer_last`).
    #[inline]
    pub(crate) fn is_pinned(&self) -> bool {
        self.pins.get() != 0
    }

    pub(crate) fn mark_dead_at_thread_exit(&self) {
        if self.mode.get() != Mode::Dead {
            self.mode.set(Mode::Dead);
            probes::dead(self.id, probes::Outcome::ThreadExit);
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // A greenlet that started stays in its thread's registry until its memory is freed (or
        // it is swept out, or abandoned at thread exit: see `thread::Registry`).
        if self.registry_index.get() != NOT_REGISTERED {
            try_with_state(|state| state.unregister(self));
        }
    }
}

/// A greenlet: a function running on its own stack, which any greenlet of the same thread can
/// switch to and from.
///
/// `Greenlet` is a cheap handle (an `Rc`): clone it freely; `==` compares identity. It is
/// neither `Send` nor `Sync`, so a greenlet can only be switched to from its own thread, and
/// that is checked at compile time:
///
/// ```compile_fail
/// let g = greenlet::Greenlet::new(|_| Ok(()));
/// std::thread::spawn(move || g.switch(())); // error: `Rc<..>` cannot be sent between threads
/// ```
///
/// When the last handle to a suspended greenlet is dropped, the greenlet is killed: a
/// [`GreenletExit`] is thrown into it, with the dropping greenlet as its temporary parent, so
/// its destructors run (spec §8).
///
/// # Killing outside a `RefCell` borrow
/// The kill runs where the last handle is dropped, before the drop returns. If that is inside
/// a `RefCell` borrow, the killed greenlet's cleanup cannot borrow the same cell: in
/// `registry.borrow_mut().remove(&k);` the removed handle is dropped at the end of the
/// statement while the `RefMut` temporary still holds the cell, and a greenlet that touches
/// the registry as it dies panics on that re-entrant borrow (reported to the
/// [kill hook](crate::set_kill_hook)). Take the handle out first, then drop it:
///
/// ```
/// use std::{cell::RefCell, collections::HashMap, rc::Rc};
/// use greenlet::{getcurrent, Greenlet};
///
/// let registry: Rc<RefCell<HashMap<u32, Greenlet>>> = Rc::default();
/// let left = Rc::new(RefCell::new(Vec::new()));
/// let main = getcurrent();
/// let (reg, log) = (registry.clone(), left.clone());
/// let worker = Greenlet::new(move |_| {
///     let woken = main.switch(()); // suspended here; a kill arrives as `Err(Error::Exit)`
///     log.borrow_mut().push(reg.borrow().len()); // cleanup that reads the registry
///     woken.map(drop)
/// });
/// worker.switch(())?;
/// registry.borrow_mut().insert(7, worker);
///
/// let removed = registry.borrow_mut().remove(&7); // the borrow ends with this statement
/// drop(removed); // the kill runs here, with the cell free
/// assert_eq!(*left.borrow(), [0]);
/// # Ok::<(), greenlet::Error>(())
/// ```
///
/// ```
/// use greenlet::{getcurrent, Greenlet, Value};
///
/// let main = getcurrent();
/// let child = Greenlet::new(move |first: Value| {
///     let n = first.downcast::<u32>().unwrap();
///     let again = main.switch(n + 1)?; // back to main, suspended until main switches again
///     Ok(again.downcast::<u32>().unwrap() * 10)
/// });
/// assert_eq!(child.switch(1_u32)?.downcast::<u32>().unwrap(), 2);
/// assert_eq!(child.switch(5_u32)?.downcast::<u32>().unwrap(), 50); // `run` returned
/// assert!(child.is_dead());
/// # Ok::<(), greenlet::Error>(())
/// ```
#[derive(Clone)]
pub struct Greenlet(ManuallyDrop<Rc<Inner>>);

impl Greenlet {
    /// Creates a greenlet that will call `run` with the value of the first switch into it.
    /// Its parent is the current greenlet; nothing runs and no stack is allocated until the
    /// first switch.
    ///
    /// What `run` returns goes to the parent: `Ok(v)` as the value of the parent's pending
    /// `switch`, `Err(e)` as its error (a [`GreenletExit`] error arrives as a value).
    ///
    /// ```
    /// let g = greenlet::Greenlet::new(|v| Ok(v.downcast::<i32>()? * 2));
    /// assert_eq!(g.switch(21)?.downcast::<i32>()?, 42);
    /// # Ok::<(), greenlet::Error>(())
    /// ```
    ///
    /// The result type `R` is any `'static` type, so a `run` that only fails leaves it
    /// open: `Greenlet::new(|_| Err(Error::msg("no")))` does not compile ("type annotations
    /// needed"). Say it once, in the `Err` or in the closure's signature:
    ///
    /// ```
    /// use greenlet::{Error, Greenlet};
    ///
    /// let a = Greenlet::new(|_| Err::<(), _>(Error::msg("no")));
    /// let b = Greenlet::new(|_| -> Result<(), Error> { Err("no".into()) });
    /// assert_eq!(a.switch(()).unwrap_err().to_string(), "no"); // out of the switch
    /// assert_eq!(b.switch(()).unwrap_err().to_string(), "no");
    /// ```
    // Inlined into the caller: each closure type has its own copy of this function anyway, and
    // out of line its frame (five saved registers, room for a new `Inner`) and the call cost a
    // lifetime 18 instructions.
    #[inline(always)]
    pub fn new<F, R>(run: F) -> Greenlet
    where
        F: FnOnce(Value) -> Result<R, Error> + 'static,
        R: 'static,
    {
        // `Builder::new().build(run)`, with the builder's defaults folded in.
        build(
            None,
            None,
            false,
            Box::new(move |value| run(value).map(Value::new)),
        )
    }

    /// A builder, to give the greenlet a name, a parent other than the current greenlet, or a
    /// stack size.
    ///
    /// ```
    /// use greenlet::{getcurrent, Greenlet};
    ///
    /// let hub = Greenlet::new(|_| Ok(()));
    /// let worker = Greenlet::builder()
    ///     .name("worker-7")
    ///     .parent(&hub)
    ///     .stack_size(64 * 1024)
    ///     .build(|_| Ok("done"));
    /// assert_eq!(worker.name(), Some("worker-7"));
    /// assert_eq!(worker.parent(), Some(hub));
    /// ```
    pub fn builder() -> Builder {
        Builder::new()
    }

    pub(crate) fn new_main(id: u64, name: Option<Box<str>>) -> Greenlet {
        probes::new(|| (id, 0, name.as_deref().unwrap_or("")));
        Greenlet::from_inner(Rc::new(Inner {
            id,
            options: name.map(|name| {
                Box::new(Options {
                    name: Some(name),
                    stack_size: DEFAULT_STACK_SIZE,
                })
            }),
            is_main: true,
            mode: Cell::new(Mode::Active),
            flags: Cell::new(0),
            parent: Cell::new(None),
            run: Cell::new(None),
            context: Context::on_thread_stack(),
            registry_index: Cell::new(NOT_REGISTERED),
            thread: Cell::new(std::ptr::null()),
            pins: Cell::new(0),
        }))
    }

    pub(crate) fn from_inner(inner: Rc<Inner>) -> Greenlet {
        Greenlet(ManuallyDrop::new(inner))
    }

    #[inline]
    pub(crate) fn inner(&self) -> &Rc<Inner> {
        &self.0
    }

    #[inline]
    pub(crate) fn as_ptr(&self) -> *const Inner {
        Rc::as_ptr(&*self.0)
    }

    #[inline]
    pub(crate) fn state(&self) -> State {
        self.0.state()
    }

    #[inline(always)]
    pub(crate) fn mode(&self) -> Mode {
        self.0.mode()
    }

    #[inline]
    pub(crate) fn handle_count(&self) -> usize {
        Rc::strong_count(&*self.0)
    }

    /// Switches to this greenlet, passing `value`; returns what some later transfer brings
    /// back to the caller.
    ///
    /// - An unstarted greenlet starts: `run` receives `value`.
    /// - A suspended greenlet resumes: its pending `switch` returns `Ok(value)`.
    /// - The current greenlet (a switch to yourself) gets `value` back at once.
    /// - A dead greenlet redirects to its nearest live ancestor (spec §4.7).
    ///
    /// `value` can be any `'static` value; a [`Value`] is passed through unchanged.
    ///
    /// # Errors
    /// Whatever error is thrown into the caller while it waits (an error escaping a child
    /// whose parent is the caller, a [`Greenlet::throw`], a failing tracer), or
    /// [`Error::StackAllocation`] if this greenlet cannot be started (nothing is transferred).
    #[inline(always)]
    pub fn switch<T: 'static>(&self, value: T) -> Result<Value, Error> {
        transfer::switch_value(self, value)
    }

    /// Raises `error` in this greenlet: out of its pending `switch` if it is suspended; at the
    /// start of an unstarted greenlet, which then dies without running `run`; at once if it is
    /// the current greenlet. Into a dead greenlet, a [`GreenletExit`] becomes a value for its
    /// nearest live ancestor and any other error is raised there (spec §6).
    ///
    /// Returns what some later transfer brings back to the caller, like [`Greenlet::switch`].
    ///
    /// ```
    /// use greenlet::{getcurrent, Error, Greenlet};
    ///
    /// let main = getcurrent();
    /// let g = Greenlet::new(move |_| match main.switch(()) {
    ///     Err(e) => Ok(format!("caught: {e}")),
    ///     Ok(_) => Ok("not thrown".to_string()),
    /// });
    /// g.switch(())?;
    /// let r = g.throw(Error::msg("ciao"))?;
    /// assert_eq!(r.downcast::<String>().unwrap(), "caught: ciao");
    /// # Ok::<(), Error>(())
    /// ```
    pub fn throw(&self, error: impl Into<Error>) -> Result<Value, Error> {
        let payload = match error.into() {
            Error::Exit(exit) if self.is_dead() => Transfer::Value(Value::new(exit)),
            error => Transfer::Error(error),
        };
        transfer::send(self, payload)?.into_result()
    }

    /// Throws a [`GreenletExit`] into this greenlet: the polite way to ask it to finish. If it
    /// lets the exit escape `run`, the exit comes back as a value.
    pub fn kill(&self) -> Result<Value, Error> {
        self.throw(GreenletExit::new())
    }

    /// The greenlet's id: unique in the process for its whole life, never reused, never 0.
    /// The USDT probes and `gltop` name greenlets by it.
    #[inline]
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// The name given by [`Builder::name`] (or [`name_main`] for a main greenlet), if any.
    pub fn name(&self) -> Option<&str> {
        self.0.name()
    }

    /// The parent, which receives this greenlet's result when it finishes. `None` only for a
    /// main greenlet.
    pub fn parent(&self) -> Option<Greenlet> {
        self.0.parent()
    }

    /// Makes `parent` this greenlet's parent (spec §7), for unstarted and started greenlets
    /// alike: it changes where the result goes when this greenlet finishes.
    ///
    /// # Errors
    /// [`Error::CyclicParent`] if this greenlet is `parent` or one of its ancestors;
    /// [`Error::MainGreenletParent`] if this is a main greenlet.
    ///
    /// ```
    /// use greenlet::{Error, Greenlet};
    ///
    /// let a = Greenlet::new(|_| Ok(()));
    /// let b = Greenlet::builder().parent(&a).build(|_| Ok(()));
    /// assert!(matches!(a.set_parent(&b), Err(Error::CyclicParent)));
    /// ```
    pub fn set_parent(&self, parent: &Greenlet) -> Result<(), Error> {
        if self.is_main() {
            return Err(Error::MainGreenletParent);
        }
        let mut ancestor = Some(parent.clone());
        while let Some(g) = ancestor {
            if g == *self {
                return Err(Error::CyclicParent);
            }
            ancestor = g.parent();
        }
        drop(self.0.replace_parent(Some(parent.clone())));
        Ok(())
    }

    /// Whether it has finished (returned, failed, or was killed). A main greenlet is dead
    /// only after its thread has exited.
    #[inline]
    pub fn is_dead(&self) -> bool {
        self.state() == State::Dead
    }

    /// Whether it has started and not finished: Python's `bool(g)`.
    #[inline]
    pub fn is_active(&self) -> bool {
        self.state() == State::Active
    }

    /// Whether it has ever been switched (or thrown) into. Main greenlets are born started.
    #[inline]
    pub fn is_started(&self) -> bool {
        self.state() != State::Unstarted
    }

    /// Whether this is a thread's main greenlet (the one that runs the thread's own stack).
    #[inline]
    pub fn is_main(&self) -> bool {
        self.0.is_main
    }

    /// Marks this greenlet as idle by design (`true`), or not (`false`): a hub or a
    /// scheduler loop whose waiting for work is its job. Blocking detection (the in-process
    /// [`lint::BlockingChecker`](crate::lint::BlockingChecker), and gltop, which reads the
    /// mark from the process's memory) never reports a greenlet while it is marked idle.
    /// [`Builder::idle`] sets it at creation; any greenlet, a main greenlet included, can be
    /// marked or unmarked at any time.
    ///
    /// ```
    /// let main = greenlet::getcurrent();
    /// assert!(!main.is_idle());
    /// main.set_idle(true); // this thread's main greenlet runs an event loop
    /// assert!(main.is_idle());
    /// main.set_idle(false);
    /// ```
    pub fn set_idle(&self, idle: bool) {
        let flags = self.0.flags.get();
        self.0.flags.set(if idle {
            flags | FLAG_IDLE
        } else {
            flags & !FLAG_IDLE
        });
    }

    /// Whether this greenlet is marked idle by design ([`Greenlet::set_idle`]).
    #[inline]
    pub fn is_idle(&self) -> bool {
        self.0.is_idle()
    }

    /// Whether this greenlet is the one running now.
    pub fn is_current(&self) -> bool {
        try_with_state(|state| state.is_current(self)).unwrap_or(false)
    }

    /// Python's state words (spec §2.3): `current`/`suspended`, `active`, `pending`/`started`,
    /// `main`, or just `dead`.
    fn state_words(&self) -> Vec<&'static str> {
        if self.is_dead() {
            return vec!["dead"];
        }
        let mut words = Vec::with_capacity(4);
        if self.is_current() {
            words.push("current");
        } else if self.is_active() {
            words.push("suspended");
        }
        if self.is_active() {
            words.push("active");
        }
        words.push(if self.is_started() {
            "started"
        } else {
            "pending"
        });
        if self.is_main() {
            words.push("main");
        }
        words
    }
}

impl Drop for Greenlet {
    #[inline]
    fn drop(&mut self) {
        // A dead greenlet needs nothing more than its memory freed: test that inline, so that
        // dropping a finished greenlet's last handle calls nothing but `Rc`'s own drop. (A
        // dead greenlet is current only inside `lifecycle::finish`, which drops no handle on
        // it, so none of its last handles needs adopting by the thread state.)
        if Rc::strong_count(&*self.0) == 1 {
            if self.0.mode.get() == Mode::Dead {
                // SAFETY: `self.0` is taken once, here, and `self` is never used again: this
                // is its drop, and the function returns right after.
                let last = unsafe { ManuallyDrop::take(&mut self.0) };
                crate::thread::recycle(last);
                return;
            }
            lifecycle::last_handle_dropped(self);
        }
        // SAFETY: `self.0` is dropped once, here, at the end of `self`'s drop; the branch
        // above that takes it returns before reaching this.
        unsafe { ManuallyDrop::drop(&mut self.0) }
    }
}

impl PartialEq for Greenlet {
    fn eq(&self, other: &Greenlet) -> bool {
        Rc::ptr_eq(&*self.0, &*other.0)
    }
}

impl Eq for Greenlet {}

impl Hash for Greenlet {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.id.hash(state);
    }
}

/// `<greenlet #ID "NAME" WORDS>`, with the state words of Python's repr (spec §2.3), e.g.
/// `<greenlet #1 current active started main>` or `<greenlet #7 "worker" suspended active
/// started>`.
impl fmt::Debug for Greenlet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<greenlet #{}", self.id())?;
        if let Some(name) = self.name() {
            write!(f, " {name:?}")?;
        }
        for word in self.state_words() {
            write!(f, " {word}")?;
        }
        f.write_str(">")
    }
}

/// A named greenlet displays as `<NAME>`; an unnamed one as its [`Debug`] form.
///
/// ```
/// let g = greenlet::Greenlet::builder().name("origin").build(|_| Ok(()));
/// assert_eq!(g.to_string(), "<origin>");
/// let main = greenlet::getcurrent();
/// assert_eq!(main.to_string(), format!("<greenlet #{} current active started main>", main.id()));
/// ```
impl fmt::Display for Greenlet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "<{name}>"),
            None => fmt::Debug::fmt(self, f),
        }
    }
}

/// Configures a greenlet before it is created: see [`Greenlet::builder`].
#[derive(Default)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder {
    name: Option<String>,
    parent: Option<Greenlet>,
    stack_size: Option<usize>,
    idle: bool,
}

impl Builder {
    /// A builder with the defaults: no name, the current greenlet as parent,
    /// [`DEFAULT_STACK_SIZE`].
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Names the greenlet. The name shows in `Debug`/`Display`, in the `greenlet:new` probe and
    /// in `gltop`.
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = Some(name.into());
        self
    }

    /// The parent that receives the greenlet's result (default: the current greenlet).
    pub fn parent(mut self, parent: &Greenlet) -> Builder {
        self.parent = Some(parent.clone());
        self
    }

    /// The usable size of the greenlet's stack in bytes (default [`DEFAULT_STACK_SIZE`],
    /// 64 KiB), rounded up to a power of two between 16 KiB and 1 TiB. Memory is committed
    /// only where the greenlet touches its stack, and a guard page under it turns an overflow
    /// into a one-line report naming the greenlet, then an abort. A stack that cannot be
    /// allocated makes the first switch fail with [`Error::StackAllocation`].
    ///
    /// The default is enough to panic and print a backtrace, and for ordinary code; give a
    /// greenlet that recurses deeply, keeps big arrays on its stack, or runs code built
    /// without optimizations (whose frames are larger) more. A bigger stack costs address
    /// space and page tables (size / 512 per suspended greenlet), not resident memory.
    ///
    /// ```
    /// use greenlet::Greenlet;
    ///
    /// fn depth(n: u32) -> u32 {
    ///     let frame = std::hint::black_box([n; 256]); // 1 KiB a level
    ///     if n == 0 { 0 } else { 1 + depth(n - 1) + frame[0] - n }
    /// }
    /// // About 1 MiB of recursion: more than the 64 KiB default would hold.
    /// let deep = Greenlet::builder()
    ///     .name("parser")
    ///     .stack_size(4 << 20)
    ///     .build(|_| Ok(depth(1000)));
    /// assert_eq!(deep.switch(())?.downcast::<u32>()?, 1000);
    /// # Ok::<(), greenlet::Error>(())
    /// ```
    pub fn stack_size(mut self, bytes: usize) -> Builder {
        self.stack_size = Some(bytes);
        self
    }

    /// Marks the greenlet as idle by design (default `false`): a hub or a scheduler loop,
    /// whose waiting for work is no blocking. See [`Greenlet::set_idle`].
    ///
    /// ```
    /// use greenlet::Greenlet;
    ///
    /// let hub = Greenlet::builder().name("hub").idle(true).build(|_| Ok(()));
    /// assert!(hub.is_idle());
    /// assert!(!Greenlet::new(|_| Ok(())).is_idle());
    /// ```
    pub fn idle(mut self, idle: bool) -> Builder {
        self.idle = idle;
        self
    }

    /// Creates the greenlet; `run` is called with the value of the first switch into it.
    pub fn build<F, R>(self, run: F) -> Greenlet
    where
        F: FnOnce(Value) -> Result<R, Error> + 'static,
        R: 'static,
    {
        let options = match (self.name, self.stack_size) {
            (None, None) => None,
            (name, size) => Some(Box::new(Options {
                name: name.map(String::into_boxed_str),
                stack_size: size.unwrap_or(DEFAULT_STACK_SIZE),
            })),
        };
        let run: Run = Box::new(move |value| run(value).map(Value::new));
        build(self.parent, options, self.idle, run)
    }
}

/// Creates a greenlet: [`Builder::build`] once the builder's settings are made into an
/// `Inner`'s fields. Inline, so that [`Greenlet::new`] folds the defaults in.
#[inline(always)]
fn build(
    parent: Option<Greenlet>,
    options: Option<Box<Options>>,
    idle: bool,
    run: Run,
) -> Greenlet {
    let (id, parent, recycled, thread) = with_state(|state| {
        let parent = parent.unwrap_or_else(|| state.current());
        (
            state.next_id(),
            parent,
            state.take_recycled(),
            std::ptr::from_ref(state),
        )
    });
    let name = options.as_ref().and_then(|o| o.name.as_deref());
    probes::new(|| (id, parent.id(), name.unwrap_or("")));
    let flags = if idle { FLAG_IDLE } else { 0 };
    let Some(mut rc) = recycled else {
        return build_new(Inner {
            id,
            options,
            is_main: false,
            mode: Cell::new(Mode::Unstarted),
            flags: Cell::new(flags),
            parent: Cell::new(Some(parent)),
            run: Cell::new(Some(run)),
            context: Context::new(),
            registry_index: Cell::new(NOT_REGISTERED),
            thread: Cell::new(thread),
            pins: Cell::new(0),
        });
    };
    // Recycled from this thread's pool: built for this thread's state already.
    debug_assert!(std::ptr::eq(rc.thread.get(), thread));
    // A dead greenlet's `Inner`, emptied by `Inner::empty_for_reuse` (not main, its coroutine
    // spare or gone, no options, parent or run, its mode set) and with no other handle: the
    // fields left to set are those that differ from a new one's.
    let inner = Rc::get_mut(&mut rc);
    debug_assert!(inner.is_some(), "a recycled greenlet has another handle");
    // SAFETY: the pool holds only `Rc`s with no other handle (`thread::recycle` tests that
    // with `Rc::get_mut` before keeping one), and this one has just left it.
    let inner = unsafe { inner.unwrap_unchecked() };
    inner.id = id;
    // The emptied fields hold nothing to drop: overwritten, not replaced.
    debug_assert!(inner.options.is_none());
    // Its mode was set for the default stack size when it was emptied: `Ready` if its spare
    // coroutine's stack has that size (`Mode::Ready`); another size is checked here.
    if let Some(options) = options {
        inner.mode.set(inner.unstarted_mode(options.stack_size));
        std::mem::forget(inner.options.replace(options));
    }
    inner.flags.set(flags);
    std::mem::forget(inner.parent.replace(Some(parent)));
    std::mem::forget(inner.run.replace(Some(run)));
    Greenlet::from_inner(rc)
}

/// [`build`] when the pool has no `Inner` to reuse: a new allocation.
#[inline(never)]
fn build_new(inner: Inner) -> Greenlet {
    Greenlet::from_inner(Rc::new(inner))
}

/// The greenlet running now. Each thread has a main greenlet, created on first use, which is
/// current until something switches away from it.
///
/// The handle it returns keeps the greenlet alive like any other: a greenlet that keeps a
/// handle to itself on its own stack while it is suspended is never killed by dropping its
/// other handles. Mind Rust's temporaries: in `getcurrent().parent().unwrap().switch(v)` the
/// handle from `getcurrent()` lives until the end of the statement, across the switch; bind
/// the parent first (`let parent = getcurrent().parent().unwrap();`).
///
/// ```
/// let main = greenlet::getcurrent();
/// assert!(main.is_main() && main.is_current() && main.parent().is_none());
/// let g = greenlet::Greenlet::new(|_| Ok(greenlet::getcurrent().is_main()));
/// assert_eq!(g.switch(())?.downcast::<bool>().unwrap(), false);
/// # Ok::<(), greenlet::Error>(())
/// ```
pub fn getcurrent() -> Greenlet {
    with_state(|state| state.current())
}

/// Creates this thread's main greenlet with a name, and returns it: a thread whose main
/// greenlet runs a hub or an event loop can be told apart from the others in `Debug`,
/// `Display`, the `greenlet:new` probe, and so in `gltop` and the bpftrace scripts, which show a
/// nameless main greenlet as `main` or `<main>`.
///
/// A thread's main greenlet is created by the first call into this crate on the thread
/// ([`getcurrent`], [`Greenlet::new`], ...), and its `greenlet:new` probe fires then, with its
/// name; so call `name_main` first.
///
/// # Errors
/// [`Error::MainGreenletExists`] if this thread's main greenlet exists already (nothing
/// changes then): a name given later would never reach a tracer that saw it created.
///
/// ```
/// use greenlet::{getcurrent, name_main, Error, Greenlet};
///
/// std::thread::spawn(|| {
///     let hub = name_main("hub")?; // first thing on the thread
///     assert_eq!(hub.name(), Some("hub"));
///     assert_eq!(getcurrent(), hub);
///     assert_eq!(hub.to_string(), "<hub>");
///     // Too late now: the main greenlet exists.
///     assert!(matches!(name_main("loop"), Err(Error::MainGreenletExists)));
///     let g = Greenlet::new(|_| Ok(greenlet::getcurrent().parent().unwrap()));
///     assert_eq!(g.switch(())?.downcast::<Greenlet>()?.name(), Some("hub"));
///     Ok::<(), Error>(())
/// })
/// .join()
/// .unwrap()?;
/// # Ok::<(), Error>(())
/// ```
pub fn name_main(name: impl Into<String>) -> Result<Greenlet, Error> {
    crate::thread::init_state_named(name.into().into_boxed_str()).ok_or(Error::MainGreenletExists)
}
