//! Per-thread state: the main greenlet, the current greenlet, the transfer mailbox, the tracer
//! slot, the registry of started greenlets, and id allocation.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::greenlet::{Greenlet, Inner, State};
use crate::lifecycle::{self, KillHook};
use crate::trace::Tracer;
use crate::transfer::Transfer;

/// `Inner::registry_index` of a greenlet that is not in the registry.
pub(crate) const NOT_REGISTERED: usize = usize::MAX;

/// Ids are handed to threads in blocks, so creating a greenlet touches no shared cache line.
const ID_BLOCK: u64 = 1024;
static NEXT_ID_BLOCK: AtomicU64 = AtomicU64::new(1);

pub(crate) struct ThreadState {
    main: Greenlet,
    /// The running greenlet. `None` only inside a hand-off, never when user code runs.
    current: Cell<Option<Greenlet>>,
    /// The same greenlet as `current`, as a plain pointer, for identity tests and the
    /// trampoline without touching reference counts.
    current_ptr: Cell<*const Inner>,
    /// The greenlet that switched away, handed to the target, which releases it on arrival.
    origin: Cell<Option<Greenlet>>,
    /// What the transfer in flight carries.
    payload: Cell<Transfer>,
    /// Whether a tracer is installed: the one test the switch path makes for tracing.
    pub(crate) trace_on: Cell<bool>,
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
            current: Cell::new(Some(main.clone())),
            current_ptr: Cell::new(main_ptr),
            main,
            origin: Cell::new(None),
            payload: Cell::new(Transfer::Empty),
            trace_on: Cell::new(false),
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
        current
            .clone()
            .expect("no current greenlet outside a hand-off")
    }

    #[inline]
    pub(crate) fn current_ptr(&self) -> *const Inner {
        self.current_ptr.get()
    }

    #[inline]
    pub(crate) fn is_current(&self, g: &Greenlet) -> bool {
        std::ptr::eq(self.current_ptr.get(), g.as_ptr())
    }

    /// Makes `target` current and parks the previous current greenlet as the origin of the
    /// transfer, with `payload` in the mailbox. The caller then switches stacks (or not, for a
    /// self-transfer, where `target` is the current greenlet) and the target calls
    /// [`ThreadState::take_origin`] and [`ThreadState::take_payload`].
    #[inline]
    pub(crate) fn hand_off(&self, target: Greenlet, payload: Transfer) {
        self.current_ptr.set(target.as_ptr());
        let origin = self.current.replace(Some(target));
        let stale = self.origin.replace(origin);
        debug_assert!(
            stale.is_none(),
            "a transfer started before the last one arrived"
        );
        // Both slots are empty between transfers (the arrival takes them): nothing to drop,
        // and not dropping saves the out-of-line drop glue of `Transfer` on every switch.
        std::mem::forget(stale);
        let empty = self.payload.replace(payload);
        debug_assert!(
            matches!(empty, Transfer::Empty),
            "a payload was sent before the last one arrived"
        );
        std::mem::forget(empty);
    }

    /// Takes who sent the arriving transfer.
    #[inline]
    pub(crate) fn take_origin(&self) -> Greenlet {
        self.origin.take().expect("arrival without an origin")
    }

    /// The ids of the arriving transfer's origin and target (for the probes), leaving the
    /// origin in place.
    #[cold]
    pub(crate) fn arrival_ids(&self) -> (u64, u64) {
        let origin = self.origin.take();
        let id = origin.as_ref().map_or(0, Greenlet::id);
        self.origin.set(origin);
        (id, self.current().id())
    }

    /// Takes what the arriving transfer carries.
    #[inline]
    pub(crate) fn take_payload(&self) -> Transfer {
        self.payload.replace(Transfer::Empty)
    }

    /// Whether the arriving transfer carries a value, without taking it.
    #[inline]
    pub(crate) fn value_arrived(&self) -> bool {
        // SAFETY: the mailbox is only accessed by this type's methods, which never hand out a
        // reference into it and never call out while reading or writing it, and the state
        // belongs to one thread: nothing writes the mailbox while this shared borrow lives.
        matches!(unsafe { &*self.payload.as_ptr() }, Transfer::Value(_))
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
        self.trace_on.set(false);
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
