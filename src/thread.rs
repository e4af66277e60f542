//! Per-thread state: the main greenlet, the current greenlet, the transfer mailbox, the tracer
//! slot, the registry of started greenlets, and id allocation.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::greenlet::{Greenlet, Inner, State};
use crate::lifecycle::{self, KillHook};
use crate::trace::Tracer;
use crate::transfer::Transfer;
use crate::value::Value;

/// [`ThreadState::flags`]: a tracer is installed.
const TRACING: u8 = 1;
/// [`ThreadState::flags`]: the transfer in flight carries an error or a panic, not a value.
const UNUSUAL: u8 = 2;

/// `Inner::registry_index` of a greenlet that is not in the registry.
pub(crate) const NOT_REGISTERED: usize = usize::MAX;

/// Ids are handed to threads in blocks, so creating a greenlet touches no shared cache line.
const ID_BLOCK: u64 = 1024;
static NEXT_ID_BLOCK: AtomicU64 = AtomicU64::new(1);

pub(crate) struct ThreadState {
    main: Greenlet,
    /// The running greenlet. `None` only inside a hand-off, never when user code runs.
    current: Cell<Option<Rc<Inner>>>,
    /// The same greenlet as `current`, as a plain pointer, for identity tests and the
    /// trampoline without touching reference counts.
    current_ptr: Cell<*const Inner>,
    /// The greenlet that switched away, handed to the target, which releases it on arrival.
    origin: Cell<Option<Rc<Inner>>>,
    /// The value the transfer in flight carries (a unit between transfers).
    value: Cell<Value>,
    /// What the transfer in flight carries when it is an error or a panic ([`UNUSUAL`]).
    unusual: Cell<Transfer>,
    /// [`TRACING`] | [`UNUSUAL`]: zero for the common arrival (a value, no tracer), so that
    /// the arrival tests one byte for both.
    flags: Cell<u8>,
    pub(crate) tracer: RefCell<Option<Tracer>>,
    pub(crate) kill_hook: RefCell<Option<KillHook>>,
    /// Started, not yet finished greenlets of this thread, for `kill_all` and thread exit.
    registry: RefCell<Registry>,
    /// The next id to hand out and the end of this thread's block.
    ids: Cell<(u64, u64)>,
}

impl ThreadState {
    pub(crate) fn new() -> ThreadState {
        let ids = Cell::new((0, 0));
        let main_id = next_id(&ids);
        let main = Greenlet::new_main(main_id);
        let main_ptr = main.as_ptr();
        ThreadState {
            current: Cell::new(Some(main.inner().clone())),
            current_ptr: Cell::new(main_ptr),
            main,
            origin: Cell::new(None),
            value: Cell::new(Value::unit()),
            unusual: Cell::new(Transfer::Empty),
            flags: Cell::new(0),
            tracer: RefCell::new(None),
            kill_hook: RefCell::new(None),
            registry: RefCell::new(Registry::default()),
            ids,
        }
    }

    /// A new handle to the running greenlet.
    #[inline]
    pub(crate) fn current(&self) -> Greenlet {
        // SAFETY: the slot is only accessed by this type's methods, which never hand out a
        // reference into it; cloning an `Rc` runs no code that could reach the slot, and the
        // state belongs to one thread: nothing writes the slot while this borrow lives.
        let current = unsafe { &*self.current.as_ptr() };
        let current = current
            .clone()
            .expect("no current greenlet outside a hand-off");
        Greenlet::from_inner(current)
    }

    #[inline]
    pub(crate) fn current_ptr(&self) -> *const Inner {
        self.current_ptr.get()
    }

    #[inline]
    pub(crate) fn is_current(&self, g: &Greenlet) -> bool {
        std::ptr::eq(self.current_ptr.get(), g.as_ptr())
    }

    /// Whether a tracer is installed.
    #[inline]
    pub(crate) fn tracing(&self) -> bool {
        self.flags.get() & TRACING != 0
    }

    pub(crate) fn set_tracing(&self, on: bool) {
        let flags = self.flags.get() & !TRACING;
        self.flags.set(if on { flags | TRACING } else { flags });
    }

    /// Whether the arriving transfer is the common one: a value, with no tracer installed.
    #[inline(always)]
    pub(crate) fn plain_arrival(&self) -> bool {
        self.flags.get() == 0
    }

    /// Makes `target` current and parks the previous current greenlet as the origin of the
    /// transfer, with `payload` in the mailbox. The caller then switches stacks (or not, for a
    /// self-transfer, where `target` is the current greenlet) and the target calls
    /// [`ThreadState::take_origin`] and [`ThreadState::take_payload`] (or
    /// [`ThreadState::take_value`] after a [`ThreadState::plain_arrival`] test).
    pub(crate) fn hand_off(&self, target: Greenlet, payload: Transfer) {
        match payload {
            Transfer::Value(value) => self.hand_off_value(target.inner().clone(), value),
            unusual => {
                self.flags.set(self.flags.get() | UNUSUAL);
                let empty = self.unusual.replace(unusual);
                debug_assert!(
                    matches!(empty, Transfer::Empty),
                    "a payload was sent before the last one arrived"
                );
                std::mem::forget(empty);
                self.make_current(target.inner().clone());
            }
        }
    }

    /// [`ThreadState::hand_off`] of a value.
    #[inline(always)]
    pub(crate) fn hand_off_value(&self, target: Rc<Inner>, value: Value) {
        let unit = self.value.replace(value);
        debug_assert!(unit.is_unit(), "a value was sent before the last one arrived");
        // The slot holds a unit between transfers: nothing to drop.
        std::mem::forget(unit);
        self.make_current(target);
    }

    #[inline(always)]
    fn make_current(&self, target: Rc<Inner>) {
        self.current_ptr.set(Rc::as_ptr(&target));
        let origin = self.current.replace(Some(target));
        let stale = self.origin.replace(origin);
        debug_assert!(
            stale.is_none(),
            "a transfer started before the last one arrived"
        );
        // Empty between transfers (the arrival takes it): nothing to drop, and not dropping
        // saves the out-of-line drop glue on every switch.
        std::mem::forget(stale);
    }

    /// Takes who sent the arriving transfer.
    #[inline]
    pub(crate) fn take_origin(&self) -> Greenlet {
        Greenlet::from_inner(self.take_origin_inner())
    }

    /// [`ThreadState::take_origin`], as the bare reference-counted greenlet: dropping it does
    /// not check for a last handle (see `transfer::arrive_plain`).
    #[inline(always)]
    pub(crate) fn take_origin_inner(&self) -> Rc<Inner> {
        self.origin.take().expect("arrival without an origin")
    }

    /// The ids of the arriving transfer's origin and target (for the probes), leaving the
    /// origin in place.
    #[cold]
    pub(crate) fn arrival_ids(&self) -> (u64, u64) {
        let origin = self.origin.take();
        let id = origin.as_ref().map_or(0, |origin| origin.id());
        self.origin.set(origin);
        (id, self.current().id())
    }

    /// Takes what the arriving transfer carries.
    pub(crate) fn take_payload(&self) -> Transfer {
        let flags = self.flags.get();
        if flags & UNUSUAL != 0 {
            self.flags.set(flags & !UNUSUAL);
            self.unusual.replace(Transfer::Empty)
        } else {
            Transfer::Value(self.take_value())
        }
    }

    /// Puts back a value taken by [`ThreadState::take_value`], once the mailbox is free again.
    pub(crate) fn restore_value(&self, value: Value) {
        let unit = self.value.replace(value);
        debug_assert!(unit.is_unit(), "a value was restored into a busy mailbox");
        std::mem::forget(unit);
    }

    /// Takes the value of an arriving transfer known to carry one.
    #[inline(always)]
    pub(crate) fn take_value(&self) -> Value {
        self.value.replace(Value::unit())
    }

    pub(crate) fn next_id(&self) -> u64 {
        next_id(&self.ids)
    }

    pub(crate) fn register(&self, g: &Greenlet) {
        let index = self.registry.borrow_mut().insert(Rc::downgrade(g.inner()));
        g.inner().registry_index.set(index);
    }

    pub(crate) fn unregister(&self, g: &Inner) {
        let index = g.registry_index.replace(NOT_REGISTERED);
        if index != NOT_REGISTERED {
            self.registry.borrow_mut().remove(index);
        }
    }

    /// Handles to every started greenlet of this thread that has not finished, main excluded.
    pub(crate) fn live_greenlets(&self) -> Vec<Greenlet> {
        self.registry.borrow().live()
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
            self.unregister(survivor.inner());
            survivor.inner().context().abandon();
            survivor.inner().mark_dead_at_thread_exit();
        }
        self.set_tracing(false);
        drop(self.tracer.take());
        self.main.inner().mark_dead_at_thread_exit();
    }
}

fn next_id(ids: &Cell<(u64, u64)>) -> u64 {
    let (mut next, mut end) = ids.get();
    if next == end {
        next = NEXT_ID_BLOCK.fetch_add(ID_BLOCK, Ordering::Relaxed);
        end = next + ID_BLOCK;
    }
    ids.set((next + 1, end));
    next
}

/// A slab of weak references with O(1) insert and remove.
#[derive(Default)]
struct Registry {
    slots: Vec<Weak<Inner>>,
    free: Vec<usize>,
}

impl Registry {
    fn insert(&mut self, g: Weak<Inner>) -> usize {
        match self.free.pop() {
            Some(index) => {
                self.slots[index] = g;
                index
            }
            None => {
                self.slots.push(g);
                self.slots.len() - 1
            }
        }
    }

    fn remove(&mut self, index: usize) {
        self.slots[index] = Weak::new();
        self.free.push(index);
    }

    fn live(&self) -> Vec<Greenlet> {
        self.slots
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|g| g.state() == State::Active && !g.is_main())
            .map(Greenlet::from_inner)
            .collect()
    }
}
