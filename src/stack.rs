//! Stacks for [corosensei] coroutines: carved from large slabs, guarded, pooled per thread,
//! and reported by name when they overflow. Every greenlet runs on one; any other corosensei
//! coroutine can too.
//!
//! A [`GreenStack`] implements corosensei's [`Stack`] trait (corosensei 0.3), so it goes
//! wherever corosensei takes a stack. Allocating one from the pool costs about 15 ns and no
//! system call; a guard page under it turns an overflow into a one-line report naming the
//! stack's owner, then an abort; its memory costs only the pages the coroutine touches.
//!
//! ```
//! use corosensei::{Coroutine, CoroutineResult, Yielder};
//! use greenlet::stack::{self, GreenStack};
//!
//! // At least 64 KiB usable, plus a guard page: from the thread's pool if it has one.
//! let stack = stack::allocate(64 << 10)?;
//! assert_eq!(stack.usable_size(), 64 << 10);
//! // Named in the overflow message, should the coroutine overflow it.
//! stack.set_owner(7, Some("parser"));
//!
//! let mut co: Coroutine<u32, u32, u32, GreenStack> =
//!     Coroutine::with_stack(stack, |yielder: &Yielder<u32, u32>, first: u32| {
//!         let second = yielder.suspend(first + 1);
//!         first + second
//!     });
//! assert!(matches!(co.resume(1), CoroutineResult::Yield(2)));
//! assert!(matches!(co.resume(10), CoroutineResult::Return(11)));
//!
//! // Back to this thread's pool (dropping the stack, or the coroutine, does the same).
//! stack::release(co.into_stack());
//! assert!(stack::stats().thread_pooled >= 1);
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! * [`allocate`]`(size)` returns a [`GreenStack`] with at least `size` usable bytes plus a
//!   guard page. On the thread's first allocation it also installs the process's overflow
//!   handler (a SIGSEGV/SIGBUS handler that passes every other fault on to the one installed
//!   before it) and the calling thread's alternate signal stack
//!   ([`install_overflow_handler`] does the same explicitly and is idempotent).
//! * [`release`] (or dropping the `GreenStack`) puts the stack in the pool of the thread that
//!   releases it, whichever thread allocated it. A `GreenStack` is `Send`.
//! * [`GreenStack::set_owner`] records an id and a name (the name is copied, up to
//!   [`OWNER_NAME_CAP`] bytes) for the overflow message; releasing the stack clears them.
//! * [`stats`], [`guard_mode`], [`pool_high_water`] and [`trim_pool`] observe and trim the
//!   allocator.
//!
//! # Layout and guard pages
//!
//! Sizes are rounded up to a power of two, from 16 KiB ([`MIN_STACK_SIZE`]) to 1 TiB
//! ([`MAX_STACK_SIZE`]); each power of two is a size class with its own slabs and free lists.
//! 16 KiB is enough to panic and unwind, but not to print a panic backtrace
//! (`RUST_BACKTRACE=1` overflows a 16 KiB stack in a debug build; 32 KiB is enough). The
//! default, [`DEFAULT_STACK_SIZE`], is 64 KiB: enough to panic and print a backtrace (a test
//! checks it), and small enough that a suspended greenlet's page tables cost 128 bytes, not
//! the 2 KiB of a 1 MiB stack (see below); the resident cost is the same at any size. A
//! greenlet that recurses deeply asks for more with
//! [`Builder::stack_size`](crate::Builder::stack_size). A slab is one
//! `mmap(MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE)` of about 256 MiB holding a table of owner
//! records (64 bytes a slot) and then slots of `guard page + class size` (about 3,850 slots of the
//! 64 KiB default). Slots are carved lazily; carving installs the slot's guard page:
//!
//! * Linux 6.13+: `madvise(MADV_GUARD_INSTALL)`, a page-table marker, so the slab stays one
//!   kernel mapping however many stacks it holds. Support is detected on the first carve.
//! * Fallback (older kernels): `mprotect(PROT_NONE)` on the guard page, which splits the
//!   mapping, so every stack costs two kernel mappings, the same as one mapping per stack
//!   with a guard (corosensei's `DefaultStack`). With the default `vm.max_map_count` of 65530
//!   that caps a process at about 32,000 live greenlets, and near the cap `malloc` itself
//!   starts failing; raise `vm.max_map_count` or use a 6.13+ kernel for more.
//!
//! Slabs are never unmapped; a stack nobody uses keeps its address range in a free list.
//! With `MAP_NORESERVE` and the default heuristic overcommit (`vm.overcommit_memory=0`)
//! address space costs nothing until touched: 1,000,000 stacks of 1 MiB would reserve 1 TiB
//! of the 128 TiB user address space (of the 64 KiB default, 66 GiB). Under strict overcommit (`vm.overcommit_memory=2`) the kernel
//! ignores `MAP_NORESERVE` and charges the whole slab, so use small stacks there.
//!
//! The memory a live stack really costs is the pages it touched (4 KiB for a suspended
//! greenlet that never went deep) plus page tables: one 4 KiB page table covers 2 MiB of
//! address space, so with 1 MiB stacks every two stacks share one page table (about 2 KiB
//! per stack, not counted in RSS; see `VmPTE` in `/proc/self/status`). Smaller stacks share
//! page tables more (64 KiB stacks, the default: 32 to a page table, 128 bytes each).
//! Consecutive slabs usually merge into one kernel mapping (1,000,000 stacks of 1 MiB: 3,922
//! slabs, 4 new mappings).
//!
//! A stack's first use costs a few microseconds (installing the guard, which allocates a page
//! table, and faulting in the first page); reuse from the pool costs about 15 ns.
//!
//! # Pool and trimming
//!
//! Released stacks go to the releasing thread's pool (no lock, no system call)
//! up to 32 MiB of stacks per class per thread (512 of the 64 KiB default); beyond that, a
//! released stack is trimmed with `MADV_DONTNEED` and moved to the class's shared free list.
//! A thread's pool is trimmed into the shared lists when the thread exits, and a stack
//! released after that goes straight to the shared list. [`trim_pool`] trims the calling
//! thread's pool on demand.
//!
//! # Overflow
//!
//! A SIGSEGV/SIGBUS handler, installed once per process, looks the faulting address up in a
//! lock-free, append-only registry of slabs. A fault in a greenlet guard page prints one line,
//! e.g. `greenlet: stack overflow in greenlet 42 "worker-7" (stack 65536 bytes; Builder::stack_size sets more); aborting`,
//! and aborts. Any other fault goes to the previous handler (Rust's own, which reports
//! overflows of thread stacks), or to the default action. Code that allocates a frame larger
//! than a page without probing it can jump over a one-page guard; Rust code probes large
//! frames. The lookup is a linear scan of the slabs (3,922 at a million 1 MiB stacks), so a
//! program that takes SIGSEGV on purpose (a GC barrier, a wasm runtime) pays microseconds a
//! fault before its handler runs.
//!
//! The handler runs on an alternate signal stack, 64 KiB that each thread gets on its first
//! allocation (Rust's own is `AT_MINSIGSTKSZ` bytes, 11,952 on this machine kind, which leaves
//! the handler no guaranteed room). Rust disables a thread's alternate stack when the thread's
//! main function returns, before thread-local destructors run. A runtime that runs greenlets
//! from a thread-local destructor (to kill them at thread exit) must call
//! [`install_overflow_handler`] first, which re-enables it; allocations made after the
//! allocator's own thread-locals are gone do that by themselves.

// Unsafe code: here, the `corosensei::stack::Stack` impl of `GreenStack`; in `slab.rs`, the
// mappings, guard pages and the slab registry the signal handler reads; in `overflow.rs`, the
// signal handler and the alternate signal stacks. `pool.rs` is safe code.
#![allow(unsafe_code)]

mod overflow;
mod pool;
mod slab;

use std::fmt;
use std::io;

use corosensei::stack::{Stack, StackPointer};

pub use slab::GuardMode;
use slab::{RawSlot, MAX_CLASS_SHIFT, MIN_CLASS_SHIFT};

/// Stack size of a greenlet that does not ask for one: 64 KiB. Enough to panic and print a
/// backtrace; small enough that the page tables of a suspended greenlet cost 128 bytes (a
/// 1 MiB stack's cost 2 KiB: see the module documentation). Ask for more with
/// [`Builder::stack_size`](crate::Builder::stack_size) for a greenlet that recurses deeply;
/// an overflow is reported in one line naming the greenlet, then the process aborts.
pub const DEFAULT_STACK_SIZE: usize = 1 << 16;
/// Smallest usable size a stack gets; smaller requests are rounded up to it.
pub const MIN_STACK_SIZE: usize = 1 << MIN_CLASS_SHIFT;
/// Largest usable size a stack can have.
pub const MAX_STACK_SIZE: usize = 1 << MAX_CLASS_SHIFT;
/// Longest greenlet name kept for the overflow message, in bytes; longer names are cut.
pub const OWNER_NAME_CAP: usize = slab::NAME_CAP;

/// A greenlet stack: a guarded slot of a slab. Returns to a pool when dropped.
pub struct GreenStack {
    slot: RawSlot,
    /// `slot.base()`, computed once: corosensei asks for it on every resume.
    base: StackPointer,
}

impl GreenStack {
    /// Usable bytes (the size class: the requested size rounded up to a power of two).
    pub fn usable_size(&self) -> usize {
        self.slot.slab.usable()
    }

    /// Records which greenlet (or other coroutine: the message calls it a greenlet) runs on
    /// this stack, for the overflow message: `id` (0 for none) and an optional name, copied
    /// and cut at [`OWNER_NAME_CAP`] bytes. Cleared when the stack is released.
    #[inline]
    pub fn set_owner(&self, id: u64, name: Option<&str>) {
        self.slot.owner().set(id, name);
    }

    /// Forgets the owner recorded by [`set_owner`](Self::set_owner).
    #[inline]
    pub fn clear_owner(&self) {
        self.slot.owner().clear();
    }

    /// The usable part of the stack, `(low, high)`: the addresses a coroutine's stack pointer
    /// stays within, from the top of the guard page to the base (exclusive).
    #[inline]
    pub(crate) fn bounds(&self) -> (usize, usize) {
        let high = self.slot.base();
        (high - self.usable_size(), high)
    }

    /// The stack's size and owner record, for whoever keeps the stack where it cannot reach
    /// it (inside a corosensei coroutine, which gives no access to its stack).
    #[inline]
    pub(crate) fn label(&self) -> StackLabel {
        StackLabel {
            owner: self.slot.owner(),
            usable: self.usable_size(),
        }
    }
}

/// A stack's size and owner record ([`GreenStack::label`]); valid for as long as its stack
/// is owned by the same holder (slabs are never unmapped, so it is never dangling, but a
/// stack given back to a pool belongs to someone else).
#[derive(Clone, Copy)]
pub(crate) struct StackLabel {
    owner: &'static slab::SlotOwner,
    usable: usize,
}

impl StackLabel {
    /// [`GreenStack::usable_size`].
    #[inline]
    pub(crate) fn usable_size(self) -> usize {
        self.usable
    }

    /// [`GreenStack::set_owner`].
    #[inline]
    pub(crate) fn set_owner(self, id: u64, name: Option<&str>) {
        self.owner.set(id, name);
    }
}

impl fmt::Debug for GreenStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GreenStack")
            .field("base", &format_args!("{:#x}", self.slot.base()))
            .field("limit", &format_args!("{:#x}", self.slot.limit()))
            .field("usable", &self.usable_size())
            .finish()
    }
}

impl Drop for GreenStack {
    fn drop(&mut self) {
        self.slot.owner().clear();
        pool::give(self.slot);
    }
}

// SAFETY: `limit()..base()` is a slot of a live (never unmapped) read-write mapping that
// this `GreenStack` exclusively owns until it is dropped: the guard page at `limit()` is
// installed (MADV_GUARD_INSTALL or PROT_NONE) before the slot is first handed out and never
// removed, and above it are `usable_size()` >= 16 KiB (> MIN_STACK_SIZE) usable bytes. Both
// ends are page-aligned, hence aligned to STACK_ALIGNMENT.
unsafe impl Stack for GreenStack {
    #[inline]
    fn base(&self) -> StackPointer {
        self.base
    }

    #[inline]
    fn limit(&self) -> StackPointer {
        StackPointer::new(self.slot.limit()).expect("stack limit is never null")
    }
}

/// The calling thread's stack, `(low, high)`, as the C library describes it, if the calling
/// code runs on it (the address of a local lies within); `None` where it is not known, or the
/// caller runs on another stack (a coroutine of some other library). Reads `/proc/self/maps`
/// on the process's initial thread (glibc): call it once per thread, not on a hot path.
#[cfg(target_os = "linux")]
pub(crate) fn thread_stack() -> Option<(usize, usize)> {
    let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
    let mut addr: *mut libc::c_void = std::ptr::null_mut();
    let mut size: libc::size_t = 0;
    // SAFETY: `pthread_getattr_np` initialises `attr` when it returns 0 (and only then is it
    // read or destroyed); `pthread_attr_getstack` writes the two locals it is given pointers
    // to; `attr` is destroyed once, after its last use.
    let found = unsafe {
        if libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()) != 0 {
            return None;
        }
        let found = libc::pthread_attr_getstack(attr.as_ptr(), &mut addr, &mut size);
        libc::pthread_attr_destroy(attr.as_mut_ptr());
        found
    };
    let low = addr as usize;
    let high = low.checked_add(size)?;
    let here = std::ptr::from_ref(&size) as usize;
    (found == 0 && low < here && here < high).then_some((low, high))
}

/// Not known on this target.
#[cfg(not(target_os = "linux"))]
pub(crate) fn thread_stack() -> Option<(usize, usize)> {
    None
}

/// The size class index for a request of `size` bytes.
#[inline]
fn class_of(size: usize) -> io::Result<usize> {
    if size > MAX_STACK_SIZE {
        return Err(too_large(size));
    }
    let rounded = size.max(MIN_STACK_SIZE).next_power_of_two();
    Ok((rounded.trailing_zeros() - MIN_CLASS_SHIFT) as usize)
}

#[cold]
#[inline(never)]
fn too_large(size: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("greenlet stack size {size} exceeds the maximum of {MAX_STACK_SIZE} bytes"),
    )
}

/// The usable size a request for `size` bytes gets, or `None` if it is too large.
pub fn rounded_size(size: usize) -> Option<usize> {
    class_of(size).ok().map(slab::class_size)
}

/// Allocates a stack with at least `size` usable bytes (see the module docs for rounding).
/// From the calling thread's pool if it has one of that size (no system call), else from the
/// shared free list, else carved from a slab.
///
/// Errors: `InvalidInput` above [`MAX_STACK_SIZE`]; the OS error if a slab cannot be mapped
/// or a guard page installed (address space, `vm.max_map_count`, strict overcommit).
#[inline]
pub fn allocate(size: usize) -> io::Result<GreenStack> {
    let class = class_of(size)?;
    let slot = pool::take(class, overflow::install)?;
    let base = StackPointer::new(slot.base()).expect("stack base is never null");
    Ok(GreenStack { slot, base })
}

/// Returns a stack to the calling thread's pool (the same as dropping it).
pub fn release(stack: GreenStack) {
    drop(stack);
}

/// Trims (`MADV_DONTNEED`) every stack in the calling thread's pool and moves them to the
/// shared free lists. The next allocations on this thread then cost a lock each and fault
/// their pages in again.
pub fn trim_pool() {
    pool::trim_local();
}

/// Installs the stack-overflow handler for the process (once) and makes sure the calling
/// thread's alternate signal stack is enabled (one `sigaltstack` query after the first call
/// on a thread). [`allocate`] calls it on each thread's first allocation. Code that resumes
/// coroutines from a thread-local destructor (as the greenlet runtime does to kill a thread's
/// greenlets at thread exit) must call it first, because Rust disables the thread's
/// alternate signal stack before those destructors run (see [Overflow](self#overflow)); and
/// anyone may call it early, to see an error early.
///
/// # Errors
/// The OS error if the handler cannot be installed, or the alternate stack mapped or
/// registered.
pub fn install_overflow_handler() -> io::Result<()> {
    overflow::install()
}

/// How guard pages are made in this process (`None` until the first stack is carved).
pub fn guard_mode() -> Option<GuardMode> {
    slab::guard_mode()
}

/// Uses `mprotect(PROT_NONE)` guard pages (the pre-6.13 fallback) even where
/// `MADV_GUARD_INSTALL` works, to test the fallback. Only effective before the first stack
/// is carved; returns whether the process uses `mprotect` guards.
#[doc(hidden)]
pub fn force_mprotect_guards() -> bool {
    slab::force_mprotect_guards()
}

/// Allocator counters, for tests and diagnostics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackStats {
    /// Slabs mapped by the process.
    pub slabs: usize,
    /// Slots ever carved (each has had its guard page installed).
    pub carved: usize,
    /// Stacks in the calling thread's pool.
    pub thread_pooled: usize,
    /// Stacks on the shared free lists.
    pub shared_free: usize,
}

/// How many released stacks of `size` a thread keeps untrimmed in its pool (the high-water
/// mark: `32 MiB / rounded size`); `None` if `size` is too large.
pub fn pool_high_water(size: usize) -> Option<usize> {
    class_of(size).ok().map(pool::high_water)
}

/// Current allocator counters.
pub fn stats() -> StackStats {
    StackStats {
        slabs: slab::slab_count(),
        carved: slab::carved_count(),
        thread_pooled: pool::local_count(),
        shared_free: pool::shared_count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_up_to_power_of_two_classes() {
        assert_eq!(rounded_size(0), Some(16 << 10));
        assert_eq!(rounded_size(4096), Some(16 << 10));
        assert_eq!(rounded_size(16 << 10), Some(16 << 10));
        assert_eq!(rounded_size((16 << 10) + 1), Some(32 << 10));
        assert_eq!(rounded_size(100_000), Some(128 << 10));
        assert_eq!(rounded_size(DEFAULT_STACK_SIZE), Some(DEFAULT_STACK_SIZE));
        assert_eq!(rounded_size(MAX_STACK_SIZE), Some(MAX_STACK_SIZE));
        assert_eq!(rounded_size(MAX_STACK_SIZE + 1), None);
        assert_eq!(
            allocate(usize::MAX).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    fn owner_message(id: u64, name: Option<&str>, usable: usize) -> String {
        let owner = slab::SlotOwner::default();
        owner.set(id, name);
        overflow::message_for(&owner, usable)
    }

    #[test]
    fn overflow_message_names_the_greenlet() {
        assert_eq!(
            owner_message(42, Some("worker-7"), 65536),
            "greenlet: stack overflow in greenlet 42 \"worker-7\" (stack 65536 bytes; Builder::stack_size sets more); aborting\n"
        );
        assert_eq!(
            owner_message(7, None, 1 << 20),
            "greenlet: stack overflow in greenlet 7 (stack 1048576 bytes; Builder::stack_size sets more); aborting\n"
        );
        assert_eq!(
            owner_message(u64::MAX, Some(""), 16384),
            "greenlet: stack overflow in greenlet 18446744073709551615 \"\" (stack 16384 bytes; Builder::stack_size sets more); aborting\n"
        );
        assert_eq!(
            owner_message(0, Some("x"), 16384),
            "greenlet: stack overflow in a greenlet stack with no owner (stack 16384 bytes; Builder::stack_size sets more); aborting\n"
        );
        // Control characters and quotes cannot break the line.
        assert_eq!(
            owner_message(3, Some("a\"b\nc"), 16384),
            "greenlet: stack overflow in greenlet 3 \"a?b?c\" (stack 16384 bytes; Builder::stack_size sets more); aborting\n"
        );
    }

    #[test]
    fn long_names_are_cut_on_a_char_boundary() {
        let long = format!("a{}", "é".repeat(40)); // 81 bytes
        let msg = owner_message(9, Some(&long), 16384);
        let cut = format!("a{}", "é".repeat(23)); // 47 bytes: the 48th would split a character
        assert_eq!(
            msg,
            format!("greenlet: stack overflow in greenlet 9 \"{cut}...\" (stack 16384 bytes; Builder::stack_size sets more); aborting\n")
        );
        let exact = "n".repeat(OWNER_NAME_CAP);
        assert!(owner_message(1, Some(&exact), 16384).contains(&format!("\"{exact}\" (")));
    }

    #[test]
    fn owner_records_every_name_length_and_overwrite() {
        let owner = slab::SlotOwner::default();
        let long: String = (0..70).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        for len in 0..70 {
            // Overwrite a long name with a shorter one: no stale bytes show.
            owner.set(1, Some(&long));
            owner.set(2, Some(&long[..len]));
            let kept = len.min(OWNER_NAME_CAP);
            let cut = if len > OWNER_NAME_CAP { "..." } else { "" };
            assert_eq!(
                overflow::message_for(&owner, 16384),
                format!(
                    "greenlet: stack overflow in greenlet 2 \"{}{cut}\" (stack 16384 bytes; Builder::stack_size sets more); aborting\n",
                    &long[..kept]
                ),
                "name length {len}"
            );
        }
        owner.set(3, None);
        assert!(overflow::message_for(&owner, 16384)
            .starts_with("greenlet: stack overflow in greenlet 3 (stack"));
        owner.clear();
        assert!(overflow::message_for(&owner, 16384).contains("no owner"));
    }
}
