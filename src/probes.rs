//! The USDT probes of `probes/greenlet.d`: their vocabulary (probe names, death outcomes),
//! public, and the probe sites the runtime fires through the `usdt` crate.
//!
//! This module is the one definition of that vocabulary: `gltop`, the test oracle and the
//! tests use [`Outcome`] and [`PROBE_NAMES`] from here, and a test checks that
//! `probes/greenlet.d`, the bpftrace scripts and the README agree with them.
//!
//! ```
//! use greenlet::probes::{Outcome, PROBE_NAMES};
//! assert_eq!(PROBE_NAMES, ["switch", "throw", "new", "dead"]);
//! assert_eq!(Outcome::from_code(4), Some(Outcome::ThreadExit));
//! assert_eq!(Outcome::ThreadExit.name(), "thread_exit");
//! assert_eq!(Outcome::ALL.len(), 6);
//! ```
//!
//! Each probe site is a one-byte `nop` guarded by the probe's is-enabled semaphore: with no
//! tracer attached the cost is a load, a compare and a branch, and the argument closures are
//! never called. Every probe has a call site here, or the crate would emit no note for it.
//!
//! Built with `RUSTFLAGS="--cfg greenlet_no_probes"`, the probe sites are compiled out
//! entirely, and so is the switch counter of the sampling layout (`crate::sample`), which then
//! stays 0. That build exists only to measure what the compiled-in, unattached hooks cost
//! together (`benches/callgrind.py --no-probes-bin`); it is a cfg, not a cargo feature, so
//! that `--all-features` never removes them.

// Unsafe code: the volatile reads of the probes' semaphores (`semaphores`), the x86-64
// semaphore test of `if_enabled!`, the page-aligned `.probes` section start, and the probe
// sites the `usdt` crate generates (see the note above `fire_switch`).
#![allow(unsafe_code)]

use crate::trace::EventKind;

#[cfg(not(greenlet_no_probes))]
include!(concat!(env!("OUT_DIR"), "/greenlet.rs"));

/// Stand-ins for the generated probe macros: the arguments are never evaluated.
#[cfg(greenlet_no_probes)]
mod greenlet {
    macro_rules! none {
        ($args:expr) => {{
            let _ = $args;
        }};
    }
    pub(crate) use none as dead;
    pub(crate) use none as new;
    pub(crate) use none as switch;
    pub(crate) use none as throw;
}

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

/// The probes of the `greenlet` USDT provider, in the order of `probes/greenlet.d`.
pub const PROBE_NAMES: [&str; 4] = ["switch", "throw", "new", "dead"];

/// The USDT provider name of every probe.
pub const PROVIDER: &str = "greenlet";

/// How a greenlet ended: the `outcome` argument of `greenlet:dead`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
#[non_exhaustive]
pub enum Outcome {
    /// `run` returned a value.
    Returned = 0,
    /// `run` returned an error (or the greenlet died of one thrown before it started).
    Error = 1,
    /// A `GreenletExit` ended it.
    Exit = 2,
    /// A panic escaped `run`.
    Panic = 3,
    /// Its thread exited: a main greenlet whose thread exited, or a greenlet that survived
    /// the `GreenletExit` thrown into it at thread exit and was abandoned.
    ThreadExit = 4,
    /// Its last handle was dropped before it ever started.
    Discarded = 5,
}

impl Outcome {
    /// Every outcome, in code order (`ALL[i].code() == i`).
    pub const ALL: [Outcome; 6] = [
        Outcome::Returned,
        Outcome::Error,
        Outcome::Exit,
        Outcome::Panic,
        Outcome::ThreadExit,
        Outcome::Discarded,
    ];

    /// The code the `dead` probe carries.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The outcome with this code, if there is one.
    pub const fn from_code(code: u8) -> Option<Outcome> {
        if (code as usize) < Outcome::ALL.len() {
            Some(Outcome::ALL[code as usize])
        } else {
            None
        }
    }

    /// A short lower-case name (`returned`, `error`, `exit`, `panic`, `thread_exit`,
    /// `discarded`), as gltop, the JSON output and the bpftrace scripts print it.
    pub const fn name(self) -> &'static str {
        match self {
            Outcome::Returned => "returned",
            Outcome::Error => "error",
            Outcome::Exit => "exit",
            Outcome::Panic => "panic",
            Outcome::ThreadExit => "thread_exit",
            Outcome::Discarded => "discarded",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a tracer has enabled every `greenlet` probe of this process right now (each
/// probe's is-enabled semaphore is non-zero): what a program that wants to be watched from
/// its first switch waits for. Always `false` in a build with the probes compiled out.
///
/// The kernel raises a uprobe's semaphore just before it writes the breakpoint, so the
/// last probe armed may miss events for a few microseconds after this turns `true`: a
/// program that needs every event waits a little longer (the project's test programs
/// wait 20 ms).
pub fn all_enabled() -> bool {
    semaphores().iter().all(|&count| count > 0)
}

/// The is-enabled semaphores of [`PROBE_NAMES`], in that order: how many tracers enabled
/// each probe.
#[cfg(not(greenlet_no_probes))]
fn semaphores() -> [u16; 4] {
    extern "C" {
        // The semaphores the `usdt` probe sites define in this binary (unsigned short).
        #[link_name = "__usdt_sema_greenlet_switch"]
        static SWITCH: u16;
        #[link_name = "__usdt_sema_greenlet_throw"]
        static THROW: u16;
        #[link_name = "__usdt_sema_greenlet_new"]
        static NEW: u16;
        #[link_name = "__usdt_sema_greenlet_dead"]
        static DEAD: u16;
    }
    // SAFETY: each static is a two-byte semaphore that a probe site below defines in this
    // binary (every probe has one); the kernel changes it from outside the program, so it is
    // read with a volatile load through a raw pointer, never through a reference.
    unsafe {
        [
            std::ptr::read_volatile(&raw const SWITCH),
            std::ptr::read_volatile(&raw const THROW),
            std::ptr::read_volatile(&raw const NEW),
            std::ptr::read_volatile(&raw const DEAD),
        ]
    }
}

#[cfg(greenlet_no_probes)]
fn semaphores() -> [u16; 4] {
    [0; 4]
}

// The probe macros only accept a closure literal (a bare identifier hits their error arm), hence
// the `|| f()` closures below.
//
// The macros are generated by the `usdt` crate (build.rs) and expand to two unsafe blocks,
// which carry no `// SAFETY:` comment of their own, hence the `allow`s below. Both are sound
// as generated: one reads the probe's two-byte is-enabled semaphore (a static the same
// expansion defines, in assembly, in the writable `.probes` section) with a volatile load
// through a raw pointer; the other is the probe site itself, a `nop` and the directives that
// describe it in the `.note.stapsdt` section, which takes its arguments in registers and
// touches no memory (`options(nomem, nostack, preserves_flags)`).

/// `greenlet:switch` or `greenlet:throw`, in the target of a transfer.
#[inline(always)]
pub(crate) fn transfer(kind: EventKind, ids: impl FnOnce() -> (u64, u64)) {
    match kind {
        EventKind::Switch => switch(ids),
        EventKind::Throw => throw(ids),
    }
}

/// `greenlet:switch(origin, target)`: on the switch path, so its unattached cost is kept to
/// a compare and a branch (see `if_enabled!`).
#[inline(always)]
pub(crate) fn switch(ids: impl FnOnce() -> (u64, u64)) {
    if_enabled!("__usdt_sema_greenlet_switch", fire_switch(ids));
}

/// `greenlet:throw(origin, target)`.
#[inline(always)]
pub(crate) fn throw(ids: impl FnOnce() -> (u64, u64)) {
    if_enabled!("__usdt_sema_greenlet_throw", fire_throw(ids));
}

#[cold]
#[inline(never)]
#[allow(clippy::redundant_closure, clippy::undocumented_unsafe_blocks)]
fn fire_switch(ids: impl FnOnce() -> (u64, u64)) {
    self::greenlet::switch!(|| ids());
}

#[cold]
#[inline(never)]
#[allow(clippy::redundant_closure, clippy::undocumented_unsafe_blocks)]
fn fire_throw(ids: impl FnOnce() -> (u64, u64)) {
    self::greenlet::throw!(|| ids());
}

/// Runs `$fire` (which fires the probe through the `usdt` macro, itself checking the
/// semaphore again) when the probe's is-enabled semaphore is non-zero.
///
/// The `usdt` macros read the semaphore through an `extern` static, which the compiler
/// addresses through the GOT in a position-independent binary: a load of the address, a
/// compare and a branch. On x86-64 this tests the semaphore in place instead, addressed
/// relative to the instruction pointer (the semaphore is a hidden symbol of the same binary,
/// defined by the probe site's own assembly): one compare and one branch on the switch path.
///
/// The branch is taken when the semaphore is zero, to a label block that only clears a flag,
/// and the fall-through fires: the compiler then lays the common path out as the taken jump
/// and puts the firing code out of the way. (With the test the other way round, `jne` to a
/// label block that fires, it placed that block right after the test and reached the common
/// path with an extra `jmp`: one more instruction per switch.)
macro_rules! if_enabled {
    ($semaphore:literal, $fire:expr) => {{
        #[cfg(all(target_arch = "x86_64", not(greenlet_no_probes)))]
        {
            let mut enabled = true;
            // SAFETY: the assembly only reads the two bytes of the probe's semaphore (a static
            // the `usdt` probe site in `$fire` defines in this binary, in the writable
            // `.probes` section) and jumps to the label block or falls through; it touches no
            // register but the flags, and no stack.
            unsafe {
                std::arch::asm!(
                    concat!("cmp word ptr [rip + ", $semaphore, "], 0"),
                    "je {off}",
                    off = label { enabled = false; },
                    options(readonly, nostack),
                );
            }
            if enabled {
                $fire;
            }
        }
        #[cfg(all(not(target_arch = "x86_64"), not(greenlet_no_probes)))]
        $fire;
        #[cfg(greenlet_no_probes)]
        let _ = || $fire;
    }};
}
use if_enabled;

/// `greenlet:new(id, parent, name)`.
#[inline(always)]
#[allow(clippy::redundant_closure, clippy::undocumented_unsafe_blocks)]
pub(crate) fn new<'a>(args: impl FnOnce() -> (u64, u64, &'a str)) {
    self::greenlet::new!(|| args());
}

/// `greenlet:dead(id, outcome)`.
#[inline(always)]
#[allow(clippy::undocumented_unsafe_blocks)]
pub(crate) fn dead(id: u64, outcome: Outcome) {
    self::greenlet::dead!(|| (id, outcome.code()));
}
