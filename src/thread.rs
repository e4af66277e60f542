//! Per-thread state: the main greenlet, the current greenlet, the transfer mailbox, the tracer
//! slot, the registry of started greenlets, and id allocation.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
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

    /// Adds `g`, which has just started, to the registry.
    #[inline]
    pub(crate) fn register(&self, g: &Greenlet) {
        self.registry.borrow_mut().insert(g.inner());
    }

    /// Removes `g` from the registry if it is in it (a greenlet that finished, or was
    /// abandoned, or whose memory is being freed).
    #[inline]
    pub(crate) fn unregister(&self, g: &Inner) {
        if g.registry_index.get() != NOT_REGISTERED {
            self.registry.borrow_mut().remove(g);
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

/// The started, unfinished greenlets of a thread: a dense array of pointers, each greenlet
/// knowing its index (`Inner::registry_index`). Insert pushes; remove moves the last entry into
/// the hole. Neither touches a reference count, and a greenlet that starts and finishes
/// without another greenlet starting meanwhile costs a push and a pop.
///
/// Invariant (what makes the pointers safe to follow): every entry points to a live `Inner`
/// whose `registry_index` is that entry's index. It holds because an entry is only added by
/// `insert` (with its index) and only removed by `remove`, which every way out of the registry
/// goes through: a greenlet's death (`lifecycle::finish`), its abandonment at thread exit
/// (`ThreadState::teardown`), and, as a backstop, the `Drop` of its `Inner`, which runs before
/// its memory is freed. A greenlet left in the registry of a thread state that is freed (one
/// started during the state's teardown, after the survivors were collected) keeps a stale
/// index: `remove` checks that the entry at that index is the greenlet itself, so a later
/// state's registry is never disturbed by it.
#[derive(Default)]
struct Registry {
    slots: Vec<*const Inner>,
}

impl Registry {
    #[inline]
    fn insert(&mut self, g: &Rc<Inner>) {
        debug_assert_eq!(g.registry_index.get(), NOT_REGISTERED);
        g.registry_index.set(self.slots.len());
        self.slots.push(Rc::as_ptr(g));
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
