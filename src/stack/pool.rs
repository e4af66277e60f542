//! Free stacks: a pool per thread (no lock, no system call) in front of a free list per size
//! class shared by the process.
//!
//! Policy:
//! * `take` pops from the calling thread's pool; if it is empty, from the class's shared free
//!   list (one uncontended lock); if that is empty too, it carves a new slot (a system call
//!   to install the guard page, and now and then one to map a new slab).
//! * `give` pushes onto the calling thread's pool while that pool holds fewer than
//!   `high_water(class)` stacks of the class: their touched pages stay resident, so reusing
//!   them costs nothing. Above the mark the stack is trimmed (`MADV_DONTNEED` on its usable
//!   range) and moved to the shared free list, where any thread can reuse its address range.
//! * The high-water mark is `POOL_HOT_BYTES / class size` stacks: each thread keeps at most
//!   32 MiB of untrimmed stack address space per class (512 stacks of the 64 KiB default,
//!   32 of 1 MiB, none of classes above 32 MiB).
//! * When a thread exits, its pool is trimmed into the shared lists. A stack given back after
//!   that (from a later thread-local destructor) is trimmed and goes to the shared list too.

// Safe code (the parent module allows unsafe code for its siblings).
#![deny(unsafe_code)]

use std::cell::RefCell;
use std::io;
use std::sync::Mutex;

use super::slab::{class_size, Carver, RawSlot, NCLASSES};

/// Untrimmed stack address space each thread may keep per size class.
pub(crate) const POOL_HOT_BYTES: usize = 32 << 20;

/// How many released stacks of `class` a thread keeps untrimmed.
pub(crate) fn high_water(class: usize) -> usize {
    POOL_HOT_BYTES / class_size(class)
}

/// Per-class shared state: trimmed free stacks and the carver.
struct Shared {
    free: Vec<RawSlot>,
    carver: Carver,
}

static SHARED: [Mutex<Shared>; NCLASSES] = [const {
    Mutex::new(Shared {
        free: Vec::new(),
        carver: Carver::new(),
    })
}; NCLASSES];

fn shared(class: usize) -> std::sync::MutexGuard<'static, Shared> {
    // A panic while holding the lock cannot leave `Shared` inconsistent (push/pop/carve are
    // each complete or not done), so a poisoned lock is still usable.
    SHARED[class].lock().unwrap_or_else(|e| e.into_inner())
}

/// The calling thread's pool.
struct Local {
    /// Whether this thread's overflow handling (alternate signal stack) is set up.
    armed: bool,
    lists: [Vec<RawSlot>; NCLASSES],
}

impl Drop for Local {
    fn drop(&mut self) {
        for (class, list) in self.lists.iter_mut().enumerate() {
            if !list.is_empty() {
                give_shared(class, list.drain(..));
            }
        }
    }
}

thread_local! {
    static LOCAL: RefCell<Local> = const {
        RefCell::new(Local { armed: false, lists: [const { Vec::new() }; NCLASSES] })
    };
}

/// Trims each stack and puts them on the shared list of `class`.
fn give_shared(class: usize, slots: impl Iterator<Item = RawSlot>) {
    let slots: Vec<RawSlot> = slots.inspect(|s| s.trim()).collect();
    shared(class).free.extend(slots);
}

/// Takes a free stack of `class`: the thread's pool, then the shared list, then a new slot.
/// `arm` (idempotent) runs on the thread's first allocation, and on every allocation made
/// after the thread's pool is destroyed.
#[inline]
pub(crate) fn take(class: usize, arm: fn() -> io::Result<()>) -> io::Result<RawSlot> {
    let hit = LOCAL.try_with(|l| match l.try_borrow_mut() {
        Ok(mut l) if l.armed => l.lists[class].pop(),
        _ => None,
    });
    match hit {
        Ok(Some(slot)) => Ok(slot),
        _ => take_slow(class, arm),
    }
}

#[cold]
#[inline(never)]
fn take_slow(class: usize, arm: fn() -> io::Result<()>) -> io::Result<RawSlot> {
    let armed = LOCAL
        .try_with(|l| l.try_borrow().is_ok_and(|l| l.armed))
        .unwrap_or(false);
    if !armed {
        // First allocation on this thread, or the pool is gone (thread exiting): make sure
        // overflows on this thread are reported.
        arm()?;
        let pooled = LOCAL.try_with(|l| match l.try_borrow_mut() {
            Ok(mut l) => {
                l.armed = true;
                // Stacks released on this thread before its first allocation.
                l.lists[class].pop()
            }
            Err(_) => None,
        });
        if let Ok(Some(slot)) = pooled {
            return Ok(slot);
        }
    }
    let mut shared = shared(class);
    match shared.free.pop() {
        Some(slot) => Ok(slot),
        None => shared.carver.carve(class),
    }
}

/// Returns a stack nobody uses any more.
#[inline]
pub(crate) fn give(slot: RawSlot) {
    let class = slot.slab.class();
    let kept = LOCAL
        .try_with(|l| match l.try_borrow_mut() {
            Ok(mut l) if l.lists[class].len() < high_water(class) => {
                l.lists[class].push(slot);
                true
            }
            _ => false,
        })
        .unwrap_or(false);
    if !kept {
        give_shared_one(class, slot);
    }
}

/// [`give`] when the thread's pool is full or gone: out of line, so that the pool's fast path
/// stays small.
#[cold]
#[inline(never)]
fn give_shared_one(class: usize, slot: RawSlot) {
    give_shared(class, std::iter::once(slot));
}

/// Trims every stack in the calling thread's pool and moves them to the shared lists.
pub(crate) fn trim_local() {
    let taken: Vec<(usize, Vec<RawSlot>)> = LOCAL
        .try_with(|l| match l.try_borrow_mut() {
            Ok(mut l) => l
                .lists
                .iter_mut()
                .enumerate()
                .filter(|(_, v)| !v.is_empty())
                .map(|(c, v)| (c, std::mem::take(v)))
                .collect(),
            Err(_) => Vec::new(),
        })
        .unwrap_or_default();
    for (class, list) in taken {
        give_shared(class, list.into_iter());
    }
}

/// Stacks in the calling thread's pool, all classes.
pub(crate) fn local_count() -> usize {
    LOCAL
        .try_with(|l| {
            l.try_borrow()
                .map_or(0, |l| l.lists.iter().map(Vec::len).sum())
        })
        .unwrap_or(0)
}

/// Stacks on the shared free lists, all classes.
pub(crate) fn shared_count() -> usize {
    (0..NCLASSES).map(|c| shared(c).free.len()).sum()
}
