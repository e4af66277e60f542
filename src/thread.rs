//! Per-thread state: the main greenlet, the current greenlet, the transfer mailbox, the tracer
//! slot, the registry of started greenlets, and id allocation; and the thread-local pointer to
//! it ([`with_state`]), set on first use and cleared when the thread's greenlets are torn down
//! at thread exit.

// Unsafe code: handles made from the pointers to the running greenlet and to a transfer's
// origin (`handle_at`), and the uncounted handles of a tracer's event on them, with the pin
// counts that stand for them (`ThreadState::pin_event`, `unpin_event`); the tracer slot and
// the deferred last handles read in place; the word-wise read of the mailbox
// (`ThreadState::take_value`), the registry's plain pointers (`Registry`), and the
// thread-local pointer to the state (`with_state`, `try_with_state`, `Teardown`).
#![allow(unsafe_code)]

use std::cell::{Cell, RefCell, UnsafeCell};
use std::mem::{self, ManuallyDrop, MaybeUninit};
use std::ptr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Error;
use crate::greenlet::{Greenlet, Inner, Mode, State};
use crate::lifecycle::{self, KillHook};
use crate::trace::{Event, EventKind, Tracer};
use crate::transfer::Transfer;
use crate::value::Value;

/// [`ThreadState::flags`]: a tracer is installed.
const TRACING: u8 = 1;
/// [`ThreadState::flags`]: the transfer in flight carries an error or a panic (in `thrown`),
/// not a value.
const THROWN: u8 = 2;
/// [`ThreadState::flags`]: the state holds a handle in `adopted`.
const ADOPTED: u8 = 4;
/// [`ThreadState::flags`]: the state holds a handle in `incoming`.
const INCOMING: u8 = 8;

/// `Inner::registry_index` of a greenlet that is not in the registry.
pub(crate) const NOT_REGISTERED: usize = usize::MAX;

/// Ids are handed to threads in blocks, so creating a greenlet touches no shared cache line.
const ID_BLOCK: u64 = 1024;
static NEXT_ID_BLOCK: AtomicU64 = AtomicU64::new(1);

/// Per-thread state.
///
/// # Handles on the running greenlet
///
/// The state points to the running greenlet without holding a handle on it, so that a switch
/// touches no reference count. The running greenlet is alive all the same: it has a handle
/// when it becomes current, and that handle cannot be the last one to go while it runs.
/// - A greenlet becomes current with a handle somewhere: a switch ([`ThreadState::hand_off_value`]
///   from `transfer::switch_value`, which also starts an unstarted target) goes through the
///   caller's `&Greenlet`; a dead greenlet's result goes to a parent held by the dead
///   greenlet's `parent` field ([`ThreadState::hand_off_to_parent`]); every other transfer
///   ([`ThreadState::hand_off`]) parks an owned handle on its target in `incoming`, released
///   by the target once it has arrived.
/// - When the last handle on the running greenlet is dropped, [`ThreadState::adopt`] keeps it
///   in `adopted` instead, released at the next arrival, after the greenlet has switched away
///   (which kills it then, as greenlet kills a greenlet whose last reference is dropped).
pub(crate) struct ThreadState {
    main: Greenlet,
    /// The running greenlet (see the type's documentation for why it is alive).
    current: Cell<*const Inner>,
    /// The greenlet that sent the transfer in flight: it was running until the hand-off, and
    /// nothing runs between the hand-off and the arrival but the switch loop (`switch`), which
    /// drops no handle, so it is alive until the target has arrived.
    origin: Cell<*const Inner>,
    /// A handle on the running greenlet, taken when its last other handle was dropped
    /// ([`ADOPTED`]).
    adopted: Cell<Option<Greenlet>>,
    /// A handle on the target of the transfer in flight ([`INCOMING`]).
    incoming: Cell<Option<Greenlet>>,
    /// The value the transfer in flight carries, between its hand-off and its arrival; between
    /// transfers it holds nothing (what is left in it is a moved-out copy, never read or
    /// dropped).
    value: Cell<MaybeUninit<Value>>,
    /// Whether `value` holds a value (debug builds: the mailbox's protocol checked).
    #[cfg(debug_assertions)]
    value_full: Cell<bool>,
    /// What the transfer in flight carries when it is an error or a panic ([`THROWN`]).
    thrown: Cell<Transfer>,
    /// The error a switch returns, between its arrival and its return (see
    /// `transfer::switch_value`).
    error: Cell<Option<Error>>,
    /// [`TRACING`] | [`THROWN`] | [`ADOPTED`] | [`INCOMING`]: zero for the common arrival (a
    /// value, no tracer, no handle to release), so that the arrival tests one byte for all
    /// (see `transfer`'s module documentation, Arrival).
    flags: Cell<u8>,
    tracer: Cell<Option<Tracer>>,
    /// The error of the tracer callback that has just failed, between its return and its
    /// caller's taking it (`trace::Callback`).
    trace_failure: Cell<Option<Error>>,
    /// The last handles of pinned greenlets (`Inner::pins`), dropped when their tracer calls
    /// have returned ([`ThreadState::unpin_event`]).
    deferred: Cell<Vec<Greenlet>>,
    pub(crate) kill_hook: RefCell<Option<KillHook>>,
    /// Started, not yet finished greenlets of this thread (and some others: see [`Registry`]),
    /// for `kill_all` and thread exit.
    /// Not a `RefCell`: its methods ([`ThreadState::register`], [`ThreadState::unregister`],
    /// [`ThreadState::live_greenlets`]) run no code that could reach it again, so a borrow
    /// flag would guard nothing.
    registry: UnsafeCell<Registry>,
    /// The next id to hand out and the end of this thread's block.
    ids: Cell<(u64, u64)>,
    /// Transfers made on this thread (wrapping): one add per transfer, in
    /// [`ThreadState::make_current`], read by samplers (`crate::sample`).
    switches: Cell<u64>,
    /// Dead greenlets' emptied `Inner`s, each with its `Rc` and no other handle, for
    /// `Builder::build` to reuse: a greenlet's lifetime allocates and frees nothing on the
    /// heap once the pool has one ([`recycle`]).
    recycled: [Cell<Option<Rc<Inner>>>; RECYCLED_MAX],
    /// How many of `recycled`'s first slots hold an `Inner` (the others hold `None`).
    recycled_len: Cell<usize>,
}

/// How many dead greenlets' `Inner`s a thread keeps for reuse (128 bytes each).
const RECYCLED_MAX: usize = 64;

/// `crate::sample::SampleLayout::state_current`: where a sampler finds the running greenlet.
pub(crate) const STATE_CURRENT: u32 = mem::offset_of!(ThreadState, current) as u32;
/// `crate::sample::SampleLayout::state_switches`: where a sampler finds the switch counter.
pub(crate) const STATE_SWITCHES: u32 = mem::offset_of!(ThreadState, switches) as u32;
/// `crate::sample::SampleLayout::state_origin`: where a sampler finds the sender of the last
/// transfer (which runs on its own stack until the stack switch).
pub(crate) const STATE_ORIGIN: u32 = mem::offset_of!(ThreadState, origin) as u32;

impl ThreadState {
    pub(crate) fn new(main_name: Option<Box<str>>) -> ThreadState {
        let ids = Cell::new((0, 0));
        let main_id = next_id(&ids);
        let main = Greenlet::new_main(main_id, main_name);
        let main_ptr = main.as_ptr();
        ThreadState {
            current: Cell::new(main_ptr),
            origin: Cell::new(main_ptr),
            main,
            adopted: Cell::new(None),
            incoming: Cell::new(None),
            value: Cell::new(MaybeUninit::uninit()),
            #[cfg(debug_assertions)]
            value_full: Cell::new(false),
            thrown: Cell::new(Transfer::Empty),
            error: Cell::new(None),
            flags: Cell::new(0),
            tracer: Cell::new(None),
            trace_failure: Cell::new(None),
            deferred: Cell::new(Vec::new()),
            kill_hook: RefCell::new(None),
            registry: UnsafeCell::new(Registry::default()),
            ids,
            switches: Cell::new(0),
            recycled: std::array::from_fn(|_| Cell::new(None)),
            recycled_len: Cell::new(0),
        }
    }

    /// A new handle to the running greenlet.
    #[inline]
    pub(crate) fn current(&self) -> Greenlet {
        // SAFETY: `current` points to the running greenlet, which is alive (see the type's
        // documentation).
        unsafe { handle_at(self.current.get()) }
    }

    /// A new handle to the greenlet that sent the arriving transfer; only valid until the
    /// arrival has released the handles it holds ([`ThreadState::release_held`]: arrival
    /// rule 2 in `transfer`).
    pub(crate) fn origin(&self) -> Greenlet {
        // SAFETY: `origin` points to the sender of the transfer in flight, which is alive
        // until the arrival is done (see the field's documentation); callers use it before the
        // arrival releases anything.
        unsafe { handle_at(self.origin.get()) }
    }

    /// The greenlet that sent the arriving transfer, valid as long as [`ThreadState::origin`]
    /// is.
    #[inline(always)]
    pub(crate) fn origin_ptr(&self) -> *const Inner {
        self.origin.get()
    }

    #[inline]
    pub(crate) fn current_ptr(&self) -> *const Inner {
        self.current.get()
    }

    #[inline]
    pub(crate) fn is_current(&self, g: &Greenlet) -> bool {
        std::ptr::eq(self.current.get(), g.as_ptr())
    }

    /// Called when the last handle on `g` is being dropped: if `g` is the running greenlet,
    /// the state keeps a handle on it (released after it has switched away) and returns true.
    pub(crate) fn adopt(&self, g: &Greenlet) -> bool {
        if !self.is_current(g) {
            return false;
        }
        let none = self.adopted.replace(Some(g.clone()));
        debug_assert!(none.is_none(), "a running greenlet adopted twice");
        std::mem::forget(none);
        self.flags.set(self.flags.get() | ADOPTED);
        true
    }

    /// Releases the handles the state holds for the arrival that has just happened: on the
    /// greenlet that was running when its last handle was dropped (which kills it, unless it
    /// is running again), and on the transfer's target (which is running: the state adopts it
    /// if that was its last handle). The arriving payload must have been taken first: killing
    /// a greenlet uses the mailbox (arrival rules 1 and 3 in `transfer`).
    #[inline(never)]
    pub(crate) fn release_held(&self) {
        let flags = self.flags.get();
        if flags & (ADOPTED | INCOMING) == 0 {
            return;
        }
        self.flags.set(flags & !(ADOPTED | INCOMING));
        let incoming = self.incoming.take();
        let adopted = self.adopted.take();
        drop(incoming);
        drop(adopted);
    }

    /// A handle to this thread's tracer.
    #[inline]
    pub(crate) fn tracer(&self) -> Option<Tracer> {
        // SAFETY: the slot is only accessed by this type's methods, which never hand out a
        // reference into it; cloning an `Rc` runs no code that could reach the slot, and the
        // state belongs to one thread: nothing writes the slot while this borrow lives.
        unsafe { &*self.tracer.as_ptr() }.clone()
    }

    /// A handle to this thread's tracer, which is installed: [`ThreadState::tracing`] is true
    /// (the traced arrival's flags say so).
    #[inline(always)]
    pub(crate) fn installed_tracer(&self) -> Tracer {
        debug_assert!(self.tracing(), "no tracer installed");
        // SAFETY: as in `tracer`, the slot is not written while this borrow lives; and it
        // holds a tracer, because `replace_tracer`, its only writer, sets the `TRACING` flag
        // exactly when it installs one, and the caller has seen that flag set.
        match unsafe { &*self.tracer.as_ptr() } {
            // Cloned from a copy of the handle, not from the slot: the copy stays in a register
            // across the count's increment (which could write the slot, as far as the compiler
            // knows).
            Some(tracer) => Tracer::clone(&ManuallyDrop::new(
                // SAFETY: a bitwise copy of the slot's handle, never dropped (`ManuallyDrop`),
                // only cloned, which takes a count of its own.
                unsafe { ptr::read(tracer) },
            )),
            // SAFETY: see above: the slot is not empty.
            None => unsafe { std::hint::unreachable_unchecked() },
        }
    }

    /// Installs `tracer`; returns the previous one.
    pub(crate) fn replace_tracer(&self, tracer: Option<Tracer>) -> Option<Tracer> {
        self.set_tracing(tracer.is_some());
        self.tracer.replace(tracer)
    }

    /// Parks the error of a tracer callback that is about to return its failure.
    pub(crate) fn park_trace_failure(&self, error: Error) {
        let none = self.trace_failure.replace(Some(error));
        debug_assert!(none.is_none(), "a tracer's error was parked twice");
    }

    /// Takes the error parked by [`ThreadState::park_trace_failure`].
    pub(crate) fn take_trace_failure(&self) -> Error {
        self.trace_failure
            .take()
            .expect("a failed tracer parked its error")
    }

    /// The event for a tracer call on the arriving transfer: from `origin` (the transfer's
    /// origin, alive: arrival rule 2 in `transfer`, or held by the caller) to the running
    /// greenlet. Its handles hold no count: both greenlets are pinned instead
    /// (`Inner::pins`), which costs no last-handle test when the call returns. Give it back
    /// to [`ThreadState::unpin_event`].
    #[inline(always)]
    pub(crate) fn pin_event(&self, kind: EventKind, origin: *const Inner) -> PinnedEvent {
        let target = self.current.get();
        // SAFETY: `origin` points to a live greenlet (this function's contract) and `target`
        // to the running one, alive (see the type's documentation). The handles made here
        // own no count: they live in a `ManuallyDrop` and are never dropped or moved out;
        // the pins keep both greenlets alive until `unpin_event` (a last handle dropped
        // meanwhile waits in `deferred`).
        unsafe {
            (*origin).pin();
            (*target).pin();
            let origin = Greenlet::from_inner(Rc::from_raw(origin));
            let target = Greenlet::from_inner(Rc::from_raw(target));
            PinnedEvent(ManuallyDrop::new(match kind {
                EventKind::Switch => Event::Switch { origin, target },
                EventKind::Throw => Event::Throw { origin, target },
            }))
        }
    }

    /// Unpins an event's greenlets, once its tracer call has returned; then drops the last
    /// handles that waited for it, origin first, as the call's own handles would have been.
    #[inline(always)]
    pub(crate) fn unpin_event(&self, event: PinnedEvent) {
        let origin = event.origin().as_ptr();
        let target = event.target().as_ptr();
        // SAFETY: both are pinned, hence alive, until these decrements; nothing runs between
        // them and the test below.
        unsafe {
            (*origin).unpin();
            (*target).unpin();
        }
        // SAFETY: the vector is only accessed by this type's methods, which hold no
        // reference into it while code that could reach it runs: this reads its length.
        if !unsafe { &*self.deferred.as_ptr() }.is_empty() {
            self.release_deferred(origin, target);
        }
    }

    /// [`ThreadState::unpin_event`] with last handles waiting: origin's first (the target
    /// pinned again meanwhile, as if its own handle were still held), then the target's.
    #[cold]
    #[inline(never)]
    fn release_deferred(&self, origin: *const Inner, target: *const Inner) {
        // SAFETY: the target is alive: unpinned just now, so any last handle dropped while it
        // was pinned is in `deferred`, and any other is still held.
        let target_inner = unsafe { &*target };
        target_inner.pin();
        self.release_deferred_one(origin);
        target_inner.unpin();
        self.release_deferred_one(target);
    }

    /// Drops the deferred last handle on `g`, if there is one and `g` is no longer pinned.
    fn release_deferred_one(&self, g: *const Inner) {
        let mut deferred = self.deferred.take();
        let last = deferred
            .iter()
            .position(|handle| ptr::eq(handle.as_ptr(), g))
            .filter(|&at| !deferred[at].inner().is_pinned())
            .map(|at| deferred.swap_remove(at));
        self.deferred.set(deferred);
        drop(last);
    }

    /// Keeps `last`, the last handle on a pinned greenlet, until it is unpinned.
    fn defer(&self, last: Greenlet) {
        let mut deferred = self.deferred.take();
        deferred.push(last);
        self.deferred.set(deferred);
    }

    /// Whether a tracer is installed.
    #[inline]
    pub(crate) fn tracing(&self) -> bool {
        self.flags.get() & TRACING != 0
    }

    fn set_tracing(&self, on: bool) {
        let flags = self.flags.get() & !TRACING;
        self.flags.set(if on { flags | TRACING } else { flags });
    }

    /// Whether the arriving transfer is a value with a tracer installed and no handle to
    /// release: `transfer::arrive_traced`.
    #[inline(always)]
    pub(crate) fn traced_plain_arrival(&self) -> bool {
        self.flags.get() == TRACING
    }

    /// Whether the arriving transfer is the common one: a value, with no tracer installed and
    /// no handle to release (`transfer::arrive_plain`).
    ///
    /// On x86-64 the byte is compared in memory by a line of assembly: read with a plain load,
    /// it is shared with the test that follows on the other paths
    /// ([`ThreadState::traced_plain_arrival`]), and the compiler loaded it into a register to
    /// test it there, one instruction more on every switch.
    #[inline(always)]
    pub(crate) fn plain_arrival(&self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let mut plain = false;
            // SAFETY: the assembly reads one byte, the flag byte of this state (the `Cell<u8>`
            // at its offset in `self`, a live reference), and jumps to the label block or falls
            // through; it writes no memory, no register but the flags, and not the stack.
            unsafe {
                std::arch::asm!(
                    "cmp byte ptr [{state} + {flags}], 0",
                    "je {plain}",
                    state = in(reg) self,
                    flags = const mem::offset_of!(ThreadState, flags),
                    plain = label { plain = true; },
                    options(readonly, nostack),
                );
            }
            plain
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self.flags.get() == 0
        }
    }

    /// Makes `target` current and parks the previous current greenlet as the origin of the
    /// transfer, with `payload` in the mailbox; the state holds `target`'s handle until it has
    /// arrived. The caller then switches stacks (or not, for a self-transfer, where `target` is
    /// the current greenlet) and the target takes the payload.
    pub(crate) fn hand_off(&self, target: Greenlet, payload: Transfer) {
        let ptr = target.as_ptr();
        let none = self.incoming.replace(Some(target));
        debug_assert!(
            none.is_none(),
            "a transfer started before the last one arrived"
        );
        std::mem::forget(none);
        let mut flags = self.flags.get() | INCOMING;
        match payload {
            Transfer::Value(value) => self.put_value(value),
            thrown => {
                flags |= THROWN;
                let empty = self.thrown.replace(thrown);
                debug_assert!(
                    matches!(empty, Transfer::Empty),
                    "a payload was sent before the last one arrived"
                );
                std::mem::forget(empty);
            }
        }
        self.flags.set(flags);
        self.make_current(ptr);
    }

    /// [`ThreadState::hand_off`] from a greenlet that has just died to `parent`, taken from
    /// the `parent` field of the dead greenlet or of one of its dead ancestors: that field
    /// keeps `parent` alive until it has arrived, so a value needs no handle in the state.
    pub(crate) fn hand_off_to_parent(&self, parent: Greenlet, result: Transfer) {
        match result {
            Transfer::Value(value) => {
                self.hand_off_value(&parent, value);
                // Not the last handle: the field it was cloned from holds another.
                drop(parent);
            }
            thrown => self.hand_off(parent, thrown),
        }
    }

    /// [`ThreadState::hand_off`] of a value to a greenlet kept alive by the caller (see the
    /// type's documentation): the state takes no handle.
    #[inline(always)]
    pub(crate) fn hand_off_value(&self, target: &Greenlet, value: Value) {
        self.put_value(value);
        self.make_current(target.as_ptr());
    }

    /// Parks the error a switch is about to return.
    pub(crate) fn put_error(&self, error: Error) {
        let none = self.error.replace(Some(error));
        debug_assert!(none.is_none(), "an error was parked twice");
    }

    /// Takes the error parked by [`ThreadState::put_error`].
    #[inline]
    pub(crate) fn take_error(&self) -> Error {
        self.error.take().expect("no error parked")
    }

    #[inline(always)]
    pub(crate) fn put_value(&self, value: Value) {
        #[cfg(debug_assertions)]
        assert!(
            !self.value_full.replace(true),
            "a value was sent before the last one arrived"
        );
        // The mailbox holds nothing between transfers (its old bytes were moved out).
        self.value.set(MaybeUninit::new(value));
    }

    /// Every transfer goes through here, once (from [`ThreadState::hand_off`] or
    /// [`ThreadState::hand_off_value`]): it also counts the transfer.
    #[inline(always)]
    fn make_current(&self, target: *const Inner) {
        // The origin is written before the current greenlet, and the compiler may not swap the
        // two stores (a fence that emits no instruction): a sampler that interrupts the thread
        // between them finds the sender both current and origin, never a target current with
        // a stale origin (`crate::sample`, the switch window).
        self.origin.set(self.current.get());
        std::sync::atomic::compiler_fence(Ordering::Release);
        self.current.set(target);
        // The sampling word (`crate::sample`): compiled out with the probes, so that the
        // benches' no-probes build measures what every hook costs together.
        #[cfg(not(greenlet_no_probes))]
        self.switches.set(self.switches.get().wrapping_add(1));
    }

    /// The ids of the arriving transfer's origin and target (for the probes).
    #[cold]
    pub(crate) fn arrival_ids(&self) -> (u64, u64) {
        (self.origin().id(), self.current().id())
    }

    /// Takes what the arriving transfer carries.
    pub(crate) fn take_payload(&self) -> Transfer {
        let flags = self.flags.get();
        if flags & THROWN != 0 {
            self.flags.set(flags & !THROWN);
            self.thrown.replace(Transfer::Empty)
        } else {
            Transfer::Value(self.take_value())
        }
    }

    /// Takes the value of an arriving transfer known to carry one.
    ///
    /// The value is read one word at a time. Its sender wrote it a moment ago, often in
    /// pieces of other sizes (a unit is one word, a `u64` two); a wider read that straddles
    /// two of those writes cannot be served from the processor's store buffer and waits for
    /// them to reach the cache, which costs more than the rest of a switch. The compiler would
    /// copy the three words as one word and a 16-byte pair. The tag is read as a volatile
    /// word, so that it is never merged with the word after it; the other two words are plain
    /// reads, which the compiler drops where the receiver does not use them (all of them for a
    /// unit it drops, the last one for a `u64`: 2 and 1 instructions per switch). Where both
    /// are used (a box or a handle), they may be read as one 16-byte pair: a stall that only
    /// payloads already paying for an allocation or a reference count can meet. The mailbox
    /// is left as it is: its bytes are a moved-out copy from now on, overwritten by the next
    /// hand-off.
    #[inline(always)]
    pub(crate) fn take_value(&self) -> Value {
        #[cfg(debug_assertions)]
        assert!(
            self.value_full.replace(false),
            "took a value from an empty mailbox"
        );
        let words = self.value.as_ptr().cast::<MaybeUninit<u64>>();
        // SAFETY: `words` points to the mailbox, 3 aligned words (checked below, at compile
        // time) owned by this thread's state; nothing else refers into it while this runs.
        // The caller knows the arriving transfer carries a value, so the mailbox holds one,
        // written by `put_value` since the last take: this take moves it out, and the
        // mailbox's bytes are never read again as a value before the next `put_value`
        // overwrites them (the mailbox is a `MaybeUninit`, never dropped). `MaybeUninit` words
        // may hold any bytes, the value's padding and its pointers' provenance included, so
        // the three reads copy the value exactly, and the copy is a valid `Value`.
        unsafe {
            let copy = [
                ptr::read_volatile(words),
                ptr::read(words.add(1)),
                ptr::read(words.add(2)),
            ];
            mem::transmute::<[MaybeUninit<u64>; 3], Value>(copy)
        }
    }

    /// An emptied `Inner` of a dead greenlet, if the pool has one ([`recycle`]).
    #[inline]
    pub(crate) fn take_recycled(&self) -> Option<Rc<Inner>> {
        let len = self.recycled_len.get().checked_sub(1)?;
        self.recycled_len.set(len);
        // `len` is below `RECYCLED_MAX` (`keep_recycled` never counts past it): the mask
        // changes nothing, and is one instruction where a bounds check would be two.
        self.recycled[len % RECYCLED_MAX].take()
    }

    /// Keeps `inner` in the pool of [`recycle`]d `Inner`s; gives it back if the pool is full.
    #[inline]
    fn keep_recycled(&self, inner: Rc<Inner>) -> Option<Rc<Inner>> {
        let len = self.recycled_len.get();
        let Some(slot) = self.recycled.get(len) else {
            return Some(inner);
        };
        self.recycled_len.set(len + 1);
        // The slots from `recycled_len` on hold `None`: nothing to drop.
        std::mem::forget(slot.replace(Some(inner)));
        None
    }

    /// The registry, borrowed for one of its methods.
    ///
    /// # Safety
    /// The caller must not call out to code that could reach the registry again while the
    /// reference lives (no user code, no greenlet drop).
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    unsafe fn registry(&self) -> &mut Registry {
        // SAFETY: the state belongs to one thread, and the caller guarantees that nothing
        // else borrows the registry while this reference lives.
        unsafe { &mut *self.registry.get() }
    }

    pub(crate) fn next_id(&self) -> u64 {
        next_id(&self.ids)
    }

    /// Adds `g`, which has just started, to the registry, unless it is in it already (its
    /// `Inner` was registered by an earlier greenlet: see [`Registry`]).
    #[inline(always)]
    pub(crate) fn register(&self, g: &Greenlet) {
        // SAFETY: a pointer from `Greenlet::as_ptr`, alive while `g` is.
        unsafe { self.register_at(g.as_ptr()) }
    }

    /// [`ThreadState::register`] for the running greenlet, which has just started (a ready
    /// greenlet, started by its own body: `Mode::Ready`).
    #[inline(always)]
    pub(crate) fn register_running(&self) {
        // SAFETY: the running greenlet is alive (see the type's documentation), and `current`
        // comes from `Greenlet::as_ptr`.
        unsafe { self.register_at(self.current.get()) }
    }

    /// # Safety
    /// `g` points to a live `Inner`, and comes from `Rc::as_ptr` (`Greenlet::as_ptr`).
    #[inline(always)]
    unsafe fn register_at(&self, g: *const Inner) {
        // SAFETY: the caller passes a live `Inner`.
        if unsafe { &*g }.registry_index.get() == NOT_REGISTERED {
            // SAFETY: as above.
            unsafe { self.register_new(g) };
        }
    }

    /// # Safety
    /// As [`ThreadState::register_at`].
    #[inline(never)]
    unsafe fn register_new(&self, g: *const Inner) {
        // SAFETY: `insert` runs no code that reaches the registry; `g` is as it requires.
        unsafe { self.registry().insert(g) };
    }

    /// Removes `g` from the registry if it is in it (a greenlet abandoned at thread exit, or
    /// whose memory is being freed).
    #[inline]
    pub(crate) fn unregister(&self, g: &Inner) {
        if g.registry_index.get() != NOT_REGISTERED {
            // SAFETY: `remove` runs no code that reaches the registry.
            unsafe { self.registry() }.remove(g);
        }
    }

    /// Handles to every started greenlet of this thread that has not finished, main excluded.
    pub(crate) fn live_greenlets(&self) -> Vec<Greenlet> {
        // SAFETY: `live` only clones `Rc`s, which runs no code that reaches the registry.
        unsafe { self.registry() }.live()
    }

    /// Thread exit: kill what is still suspended; abandon what refuses to die (reported dead,
    /// its stack leaked: it can never run again); then the main greenlet is dead.
    pub(crate) fn teardown(&self) {
        // Rust has already disabled this thread's alternate signal stack (its main function
        // returned): put ours back, so an overflow while the greenlets die is still reported.
        let _ = crate::stack::install_overflow_handler();
        lifecycle::kill_all_in(self);
        for survivor in self.live_greenlets() {
            lifecycle::report(self, &survivor, lifecycle::KillFailure::Survived);
            self.abandon(&survivor);
        }
        drop(self.replace_tracer(None));
        // Greenlets started since the survivors were collected (by the kill hook or the
        // tracer's drop) are abandoned too, without running anything more: once the state is
        // freed, no greenlet of this thread is active (`with_live_state` relies on it).
        loop {
            let late = self.live_greenlets();
            if late.is_empty() {
                break;
            }
            for g in &late {
                self.abandon(g);
            }
        }
        // Pinned by tracer calls that will never return (in abandoned greenlets): leaked, as
        // the handles those calls would have held.
        mem::forget(self.deferred.take());
        // What is left in it is dead or unstarted, and may outlive the state.
        // SAFETY: `clear` runs no code that reaches the registry.
        unsafe { self.registry() }.clear();
        self.main.inner().mark_dead_at_thread_exit();
    }

    /// Gives up a suspended greenlet at thread exit: out of the registry, its coroutine
    /// leaked without unwinding (its frames never run again), reported dead.
    fn abandon(&self, g: &Greenlet) {
        self.unregister(g.inner());
        g.inner().context().abandon();
        g.inner().mark_dead_at_thread_exit();
    }
}

// -------------------------------------------------------------------------------------------
// The thread's state: created on first use, torn down at thread exit.

thread_local! {
    /// This thread's state, allocated on first use and freed by [`Teardown`]. A plain pointer
    /// with no destructor, so it stays readable while other thread-locals are destroyed.
    static STATE: Cell<*const ThreadState> = const { Cell::new(ptr::null()) };
    /// Set once this thread's state has been torn down.
    static GONE: Cell<bool> = const { Cell::new(false) };
    /// Its destructor tears this thread's greenlets down at thread exit.
    static TEARDOWN: Teardown = const { Teardown };
}

/// Dropped at thread exit: kills the thread's remaining greenlets
/// ([`ThreadState::teardown`]), then frees the state.
struct Teardown;

impl Drop for Teardown {
    fn drop(&mut self) {
        let state = STATE.get();
        if state.is_null() {
            return;
        }
        // SAFETY: `state` came from `Box::into_raw` in `init_state` and is freed only here.
        // Killing the remaining greenlets runs while the state is still allocated and
        // reachable through `STATE`.
        unsafe { &*state }.teardown();
        STATE.set(ptr::null());
        GONE.set(true);
        // SAFETY: nothing reachable refers to the state any more: `STATE` is cleared, and
        // the only frames still holding references to it are those of greenlets that refused
        // to die, which `teardown` abandoned: marked dead, their coroutines leaked, so they
        // are never resumed or unwound.
        drop(unsafe { Box::from_raw(state as *mut ThreadState) });
    }
}

#[cold]
fn init_state() -> *const ThreadState {
    init_state_with(None)
}

/// Creates this thread's state with a main greenlet named `name` and returns the main
/// greenlet; `None` if the state exists already.
pub(crate) fn init_state_named(name: Box<str>) -> Option<Greenlet> {
    if !STATE.get().is_null() {
        return None;
    }
    let state = init_state_with(Some(name));
    // SAFETY: `init_state_with` returns this thread's live state (see `with_state`).
    Some(unsafe { &*state }.current())
}

fn init_state_with(main_name: Option<Box<str>>) -> *const ThreadState {
    // Greenlet code that runs in another thread-local's destructor after this thread's
    // teardown gets a fresh state; it is never torn down (the teardown hook cannot be
    // registered again), so what it holds at thread exit is leaked, not killed.
    if !GONE.get() {
        TEARDOWN.with(|_| {});
    }
    let state = Box::into_raw(Box::new(ThreadState::new(main_name)));
    // SAFETY: just allocated, alive.
    unsafe { &*state }.main.inner().set_thread(state);
    STATE.set(state);
    // Where samplers find the state from the thread pointer (`crate::sample`).
    crate::sample::publish_tls_offset(STATE.with(|slot| ptr::from_ref(slot) as usize));
    state
}

/// Runs `f` with this thread's state, creating it (and the main greenlet) on first use.
#[inline(always)]
pub(crate) fn with_state<R>(f: impl FnOnce(&ThreadState) -> R) -> R {
    let mut state = STATE.get();
    if state.is_null() {
        state = init_state();
    }
    // SAFETY: non-null `STATE` points to this thread's live state (see `Teardown`), and the
    // state is only used through shared references (its fields are cells).
    f(unsafe { &*state })
}

/// [`with_state`] for a caller that holds a handle on an active greenlet: the state exists
/// (a greenlet is active only while its thread's state is: thread exit kills or abandons
/// every active greenlet before the state is freed, `ThreadState::teardown`), so the
/// thread-local pointer is not tested.
#[inline(always)]
pub(crate) fn with_live_state<R>(f: impl FnOnce(&ThreadState) -> R) -> R {
    let state = STATE.get();
    debug_assert!(
        !state.is_null(),
        "an active greenlet without a thread state"
    );
    // SAFETY: non-null, as the caller's active greenlet shows (above); then as in
    // `with_state`.
    f(unsafe { &*state })
}

/// [`with_live_state`] for a switch to `target`, which is active or ready
/// ([`Mode::is_switchable`]): the state is read from the target (`Inner::thread_state`), one
/// load from a greenlet the switch reads anyway, where the thread-local pointer takes two.
#[inline(always)]
pub(crate) fn with_state_of<R>(target: &Greenlet, f: impl FnOnce(&ThreadState) -> R) -> R {
    debug_assert!(target.mode().is_switchable());
    // SAFETY: the caller's target is active or ready, so its thread's state is alive
    // (`Mode::Ready`: the teardown leaves no greenlet in those modes), and it is this
    // thread's, since a greenlet never leaves its thread (`Greenlet` is neither `Send` nor
    // `Sync`).
    let state = unsafe { target.inner().thread_state() };
    debug_assert!(ptr::eq(state, STATE.get()));
    f(state)
}

/// Like [`with_state`], but `None` once the state is gone (thread exit) or if it never
/// existed, without creating it.
pub(crate) fn try_with_state<R>(f: impl FnOnce(&ThreadState) -> R) -> Option<R> {
    let state = STATE.try_with(Cell::get).ok()?;
    if state.is_null() {
        return None;
    }
    // SAFETY: as in `with_state`.
    Some(f(unsafe { &*state }))
}

/// Frees the last handle on a dead greenlet, keeping its `Inner` (and its `Rc` allocation)
/// in the thread's pool for the next `Builder::build` when it can be reused: no other handle
/// (strong or weak), not a main greenlet, nothing left in it to free but what it owns
/// (`Inner::empty_for_reuse`). What it owned (name, parent, unused `run`) is dropped first, in
/// field order, as freeing the `Inner` would have (the parent and `run` in place,
/// `Inner::drop_leftovers`): dropping a parent's last handle can run a kill, which may build
/// and recycle greenlets; this one joins the pool after that (it is no one else's meanwhile:
/// the registry lists only active greenlets, and it is unstarted).
#[inline(never)]
pub(crate) fn recycle(mut last: Rc<Inner>) {
    if last.is_pinned() {
        defer_last(Greenlet::from_inner(last));
        return;
    }
    let Some(options) = Rc::get_mut(&mut last).and_then(Inner::empty_for_reuse) else {
        return;
    };
    drop(options);
    last.drop_leftovers();
    let refused = try_with_state(|state| state.keep_recycled(last));
    drop(refused);
}

/// Keeps `last`, the last handle on a pinned greenlet (`Inner::pins`), until its tracer
/// calls have returned; leaked if the thread's state is gone (the calls never return).
#[cold]
pub(crate) fn defer_last(last: Greenlet) {
    let mut last = Some(last);
    if try_with_state(|state| state.defer(last.take().expect("deferred once"))).is_none() {
        mem::forget(last);
    }
}

/// A tracer event whose handles hold no count ([`ThreadState::pin_event`]).
pub(crate) struct PinnedEvent(ManuallyDrop<Event>);

impl std::ops::Deref for PinnedEvent {
    type Target = Event;

    #[inline(always)]
    fn deref(&self) -> &Event {
        &self.0
    }
}

/// A new handle on the greenlet at `ptr`.
///
/// # Safety
/// `ptr` must point to the `Inner` of a live greenlet (one with a handle somewhere).
#[inline]
unsafe fn handle_at(ptr: *const Inner) -> Greenlet {
    // SAFETY: the caller guarantees that `ptr` came from `Rc::as_ptr` on a live `Rc<Inner>`
    // (every `Inner` lives in one), so its strong count is at least one: adding one and
    // taking ownership of it is what `Rc::clone` does.
    unsafe {
        Rc::increment_strong_count(ptr);
        Greenlet::from_inner(Rc::from_raw(ptr))
    }
}

const _: () = assert!(
    mem::size_of::<Value>() == 3 * mem::size_of::<u64>()
        && mem::align_of::<Value>() == mem::align_of::<u64>(),
    "`ThreadState::take_value` reads a value as three words"
);

fn next_id(ids: &Cell<(u64, u64)>) -> u64 {
    let (mut next, mut end) = ids.get();
    if next == end {
        next = NEXT_ID_BLOCK.fetch_add(ID_BLOCK, Ordering::Relaxed);
        end = next + ID_BLOCK;
    }
    ids.set((next + 1, end));
    next
}

/// Every started greenlet of a thread that has not finished, among others: a dense array of
/// pointers, each greenlet knowing its index (`Inner::registry_index`). Insert pushes; remove
/// moves the last entry into the hole. Neither touches a reference count.
///
/// A greenlet joins when it first starts and stays when it dies: its death and the reuse of
/// its `Inner` for a new greenlet (`thread::recycle`) touch no entry, and the new greenlet,
/// registered already, costs nothing to register when it starts. So the registry also holds
/// dead greenlets and pooled or unstarted reused `Inner`s; [`Registry::live`] keeps the active
/// ones. Entries that are not active are swept out when the array is full ([`Registry::insert`]),
/// so it holds at most about twice what was active or pooled at the last sweep, whatever the
/// program keeps of dead greenlets.
///
/// Invariant (what makes the pointers safe to follow): every entry points to a live `Inner`
/// whose `registry_index` is that entry's index. It holds because an entry is only added by
/// `insert` (with its index) and only removed by `remove`, by a sweep (which resets the index),
/// or at teardown (which resets every index): the `Drop` of an `Inner` removes it before its
/// memory is freed, and a greenlet abandoned at thread exit is removed then
/// (`ThreadState::teardown`). A greenlet left in the registry of a thread state that is freed
/// (one started during the state's teardown, after the registry was emptied) keeps a stale
/// index: `remove` checks that the entry at that index is the greenlet itself, so a later
/// state's registry is never disturbed by it (and such a greenlet is never swept or killed
/// there: a state made after teardown is never torn down).
#[derive(Default)]
struct Registry {
    slots: Vec<*const Inner>,
}

impl Registry {
    /// Adds `g`, which is not in it.
    ///
    /// # Safety
    /// `g` points to a live `Inner`, and comes from `Rc::as_ptr` (`Greenlet::as_ptr`): `live`
    /// makes handles from it.
    #[inline]
    unsafe fn insert(&mut self, g: *const Inner) {
        if self.slots.len() == self.slots.capacity() {
            self.sweep();
        }
        // SAFETY: the caller passes a live `Inner`.
        let inner = unsafe { &*g };
        debug_assert_eq!(inner.registry_index.get(), NOT_REGISTERED);
        inner.registry_index.set(self.slots.len());
        self.slots.push(g);
    }

    /// Removes every entry that is not active (dead greenlets, pooled or unstarted `Inner`s),
    /// resetting their indices; then makes room for as many entries again as are left, so
    /// that the sweeps cost a constant per insert.
    #[cold]
    #[inline(never)]
    fn sweep(&mut self) {
        let mut kept = 0;
        for at in 0..self.slots.len() {
            let g = self.slots[at];
            // SAFETY: (type invariant) every entry points to a live `Inner`.
            let inner = unsafe { &*g };
            // Active and ready greenlets stay (a ready one must stay registered: `Mode::Ready`).
            if inner.mode().is_switchable() {
                inner.registry_index.set(kept);
                self.slots[kept] = g;
                kept += 1;
            } else {
                inner.registry_index.set(NOT_REGISTERED);
            }
        }
        self.slots.truncate(kept);
        self.slots.reserve(kept.max(4));
    }

    /// Empties the registry, resetting every entry's index (thread exit: the `Inner`s that
    /// outlive the state must not point into it).
    /// Empties the registry at teardown. A ready greenlet becomes unstarted: the state a switch
    /// would take for granted for it is about to be freed (`Mode::Ready`).
    fn clear(&mut self) {
        for g in self.slots.drain(..) {
            // SAFETY: (type invariant) every entry points to a live `Inner`.
            let inner = unsafe { &*g };
            inner.registry_index.set(NOT_REGISTERED);
            if inner.mode() == Mode::Ready {
                inner.set_state(State::Unstarted);
            }
        }
    }

    #[inline]
    fn remove(&mut self, g: &Inner) {
        let index = g.registry_index.replace(NOT_REGISTERED);
        if self.slots.get(index).copied() != Some(g as *const Inner) {
            // Registered in another (freed) thread state: nothing of ours to remove.
            return;
        }
        let last = self.slots.pop().expect("the registry holds `g`");
        if index < self.slots.len() {
            self.slots[index] = last;
            // SAFETY: `last` was an entry of the registry, so (type invariant) it points to a
            // live `Inner`; it is not `g`, whose entry is at `index`, below the last one.
            unsafe { &*last }.registry_index.set(index);
        }
    }

    fn live(&self) -> Vec<Greenlet> {
        self.slots
            .iter()
            .copied()
            .filter(|&g| {
                // SAFETY: (type invariant) every entry points to a live `Inner`.
                let g = unsafe { &*g };
                g.state() == State::Active && !g.is_main()
            })
            .map(|g| {
                // SAFETY: (type invariant) every entry points to a live `Inner` owned by an
                // `Rc` (`insert` takes one) whose strong count is not zero: when the count
                // reaches zero, the `Inner`'s `Drop` removes it from the registry before any
                // other code runs, and the entries are read under this registry's borrow.
                unsafe {
                    Rc::increment_strong_count(g);
                    Greenlet::from_inner(Rc::from_raw(g))
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::greenlet::getcurrent;

    fn registry_len() -> usize {
        // SAFETY: reads the length only; nothing else runs meanwhile.
        with_state(|state| unsafe { state.registry() }.slots.len())
    }

    /// Dead greenlets stay registered (their `Inner`s are reused registered), but a program
    /// that keeps many of them does not grow the registry: the sweeps drop them, and what is
    /// suspended meanwhile stays listed and is killed.
    #[test]
    fn registry_sweeps_dead_greenlets_and_keeps_suspended_ones() {
        let main = getcurrent();
        let parked: Vec<Greenlet> = (0..3)
            .map(|_| {
                let main = main.clone();
                let g = Greenlet::new(move |_| main.switch(()));
                g.switch(()).expect("parked");
                g
            })
            .collect();
        let dead: Vec<Greenlet> = (0..10_000)
            .map(|_| {
                let g = Greenlet::new(|_| Ok(()));
                g.switch(()).expect("a lifetime");
                assert!(g.is_dead());
                g
            })
            .collect();
        assert!(
            registry_len() < 64,
            "the registry holds {} entries for 3 suspended greenlets",
            registry_len()
        );
        assert_eq!(with_state(|state| state.live_greenlets().len()), 3);
        drop(dead);
        assert_eq!(crate::kill_all(), 3);
        assert!(parked.iter().all(Greenlet::is_dead));
    }
}
