//! The USDT probes of `probes/greenlet.d`, fired through the `usdt` crate.
//!
//! Each probe site is a one-byte `nop` guarded by the probe's is-enabled semaphore: with no
//! tracer attached the cost is a load, a compare and a branch, and the argument closures are
//! never called. Every probe has a call site here, or the crate would emit no note for it.

use crate::trace::EventKind;

include!(concat!(env!("OUT_DIR"), "/greenlet.rs"));

/// Starts the `.probes` section, which holds the probes' is-enabled semaphores, on a page of
/// its own.
///
/// A tracer names a semaphore by its offset in the binary's file, and the kernel increments it
/// in the first writable mapping of the process that covers that offset. rust-lld lets the
/// last file page of the RELRO segment (writable while the program loads) be the first page of
/// the data segment, so when `.probes` lands on that page, a process that starts after a
/// tracer attached (bpftrace by binary path or `-c`, libbpf with pid -1) gets the RELRO copy
/// of the page incremented instead, and the probes never fire. A page-aligned object in
/// `.probes` puts every semaphore on a page that only the data segment maps. It is empty,
/// and interior-mutable so that it lands in writable data like the semaphores.
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".probes"]
static PROBES_PAGE_START: PageStart = PageStart([]);

/// An empty object with the alignment of the largest page size of the target.
#[cfg(target_os = "linux")]
#[cfg_attr(target_arch = "x86_64", repr(C, align(4096)))]
#[cfg_attr(not(target_arch = "x86_64"), repr(C, align(65536)))]
struct PageStart([std::sync::atomic::AtomicU8; 0]);

/// How a greenlet ended: the `outcome` argument of `greenlet:dead`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Outcome {
    /// `run` returned a value.
    Returned = 0,
    /// `run` returned an error (or the greenlet died of one thrown before it started).
    Error = 1,
    /// A `GreenletExit` ended it.
    Exit = 2,
    /// A panic escaped `run`.
    Panic = 3,
    /// Its thread exited (main greenlets).
    ThreadExit = 4,
    /// Its last handle was dropped before it ever started.
    Discarded = 5,
}

// The probe macros only accept a closure literal (a bare identifier hits their error arm), hence
// the `|| f()` closures below.

/// `greenlet:switch` or `greenlet:throw`, in the target of a transfer.
#[inline(always)]
#[allow(clippy::redundant_closure)]
pub(crate) fn transfer(kind: EventKind, ids: impl FnOnce() -> (u64, u64)) {
    match kind {
        EventKind::Switch => self::greenlet::switch!(|| ids()),
        EventKind::Throw => self::greenlet::throw!(|| ids()),
    }
}

/// `greenlet:new(id, parent, name)`.
#[inline(always)]
#[allow(clippy::redundant_closure)]
pub(crate) fn new<'a>(args: impl FnOnce() -> (u64, u64, &'a str)) {
    self::greenlet::new!(|| args());
}

/// `greenlet:dead(id, outcome)`.
#[inline(always)]
pub(crate) fn dead(id: u64, outcome: Outcome) {
    self::greenlet::dead!(|| (id, outcome as u8));
}
