//! Where a sampling profiler finds the running greenlet: the [`SampleLayout`] the runtime
//! publishes in the ELF section `.greenlet_sample` of the program it is linked into.
//!
//! A BPF program that interrupts a thread (a `cpu-clock` perf event, a `sched_switch`
//! tracepoint) can tell which greenlet was running without any probe on the switch path, by
//! following pointers from the thread pointer (`fs` base on x86-64):
//!
//! ```text
//! state    = *(u64 *)(fsbase + tls_offset)         // 0: no greenlet runtime on this thread
//! current  = *(u64 *)(state + state_current)       // the running greenlet
//! id       = *(u64 *)(current + inner_id)          // its id (the main greenlet's included)
//! flags    = *(u8  *)(current + inner_flags)       // bit 0: IDLE (Greenlet::set_idle)
//! switches = *(u64 *)(state + state_switches)      // +1 per transfer on this thread
//! origin   = *(u64 *)(state + state_origin)        // the sender of the last transfer
//! [low, high) = *(u64[2] *)(g + inner_stack)       // g's stack (current's, origin's); 0, 0: unknown
//! ```
//!
//! # The switch window
//!
//! A transfer makes its target current (and its sender `origin`, written first) a few
//! instructions before the stack switch, which the sender makes from its own stack; and
//! corosensei's switch moves the stack pointer and the frame pointer one instruction apart. A
//! sampler that interrupts the thread in between finds the target current while the sender's
//! frames run. The registers tell them apart, at no cost to the switch: of the current
//! greenlet and the origin, the one whose stack holds the frame pointer (what a stack walk
//! follows), else the one whose stack holds the stack pointer, is the one running. A
//! greenlet's bounds are its coroutine stack's, set when it gets its stack; a main
//! greenlet's are its thread's stack (`pthread_getattr_np`, once per thread), or unknown
//! (zero) where that cannot be found or the runtime is first used off the thread's stack.
//! What this cannot tell: the switch loop of a greenlet woken on the way by a transfer down
//! the chain, or by a death, runs on a stack that is neither the target's nor the sender's;
//! and `origin` may point to a greenlet freed since its transfer arrived (a sampler reads it
//! as a candidate only, with reads that may fail).
//!
//! The offsets come from [`SAMPLE_LAYOUT`], which lives in its own section so that a loader
//! finds it in a stripped executable (section headers survive `strip`; `.symtab` does not):
//! parse `/proc/PID/exe`, take the section's address, add the load bias, read 56 bytes from
//! `/proc/PID/mem`, and check the magic, the version and the size.
//!
//! `tls_offset` is known only once the runtime has created its first thread state (on a
//! thread's first use of the runtime): until then `tls_status` is 0. Each later thread state
//! checks that its thread gives the same offset (static TLS, as in an executable); if one does
//! not (TLS allocated per thread, as in a library loaded with `dlopen`), `tls_status` becomes
//! 2 for good and sampling is unavailable.
//!
//! The section is published on x86-64 Linux only; elsewhere [`SAMPLE_LAYOUT`] exists but is
//! in no named section, and its `tls_status` stays 0.
//!
//! The runtime's cost for this is one add per transfer (the switch counter); the rest is read
//! from fields a switch already writes (`current`, `origin`) and from the stack bounds each
//! greenlet records when it gets its stack (not per switch: a greenlet that reuses a spare
//! coroutine keeps its stack, hence its bounds).
//!
//! ```
//! use std::sync::atomic::Ordering;
//! use greenlet::sample::{SAMPLE_LAYOUT, TLS_UNKNOWN, TLS_VALID};
//!
//! assert_eq!(&SAMPLE_LAYOUT.magic, b"GRNLTSMP");
//! assert_eq!(SAMPLE_LAYOUT.size as usize, std::mem::size_of_val(&SAMPLE_LAYOUT));
//! greenlet::getcurrent(); // creates this thread's state: the offset is now known
//! let status = SAMPLE_LAYOUT.tls_status.load(Ordering::Acquire);
//! if cfg!(all(target_arch = "x86_64", target_os = "linux")) {
//!     assert_eq!(status, TLS_VALID);
//! } else {
//!     assert_eq!(status, TLS_UNKNOWN);
//! }
//! ```

// Unsafe code: one block, reading the thread pointer (`fs:0`) with inline assembly.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::Mutex;

use crate::greenlet::{INNER_FLAGS, INNER_ID, INNER_STACK};
use crate::thread::{STATE_CURRENT, STATE_ORIGIN, STATE_SWITCHES};

/// The name of the ELF section that holds [`SAMPLE_LAYOUT`].
pub const SECTION: &str = ".greenlet_sample";
/// [`SampleLayout::magic`].
pub const MAGIC: [u8; 8] = *b"GRNLTSMP";
/// [`SampleLayout::version`] of this layout (2: `state_origin` and `inner_stack` added).
pub const VERSION: u32 = 2;
/// [`SampleLayout::tls_status`]: no thread state created yet; `tls_offset` is not known.
pub const TLS_UNKNOWN: u32 = 0;
/// [`SampleLayout::tls_status`]: `tls_offset` is valid, and was the same on every thread so
/// far.
pub const TLS_VALID: u32 = 1;
/// [`SampleLayout::tls_status`]: two threads gave different offsets (TLS not static):
/// sampling is unavailable.
pub const TLS_DISAGREE: u32 = 2;
/// Bit of the byte at [`SampleLayout::inner_flags`]: the greenlet is idle by design
/// ([`Greenlet::set_idle`](crate::Greenlet::set_idle)).
pub const FLAG_IDLE: u8 = 1;

/// The offsets a sampler needs to find the running greenlet of a thread (see the
/// [module documentation](self)). 56 bytes, `repr(C)`, little-endian on the targets that
/// publish it.
#[repr(C)]
#[derive(Debug)]
pub struct SampleLayout {
    /// [`MAGIC`]: `b"GRNLTSMP"`.
    pub magic: [u8; 8],
    /// [`VERSION`].
    pub version: u32,
    /// `size_of::<SampleLayout>()`: 56.
    pub size: u32,
    /// [`TLS_UNKNOWN`], [`TLS_VALID`] or [`TLS_DISAGREE`].
    pub tls_status: AtomicU32,
    /// Zero.
    pub _reserved: u32,
    /// The address of the thread-local pointer to the thread's state minus the thread
    /// pointer (`fs:0`); valid when `tls_status` is [`TLS_VALID`].
    pub tls_offset: AtomicI64,
    /// Offset in the thread state of the pointer to the running greenlet.
    pub state_current: u32,
    /// Offset in the thread state of the `u64` switch counter.
    pub state_switches: u32,
    /// Offset in a greenlet of its `u64` id.
    pub inner_id: u32,
    /// Offset in a greenlet of its flag byte (bit 0: [`FLAG_IDLE`]).
    pub inner_flags: u32,
    /// Offset in the thread state of the pointer to the greenlet that sent the last transfer
    /// (the one whose code runs until the stack switch: see [the switch
    /// window](self#the-switch-window)).
    pub state_origin: u32,
    /// Offset in a greenlet of the bounds of its stack: two `u64`s, `low` and `high`, the
    /// usable part `[low, high)` of the stack it runs on (a main greenlet's: its thread's
    /// stack); both zero when unknown (a greenlet that has no stack, or a main greenlet whose
    /// thread's stack could not be found).
    pub inner_stack: u32,
}

const _: () = assert!(std::mem::size_of::<SampleLayout>() == 56);
const _: () = assert!(std::mem::align_of::<SampleLayout>() == 8);

/// The runtime's published layout. `#[used]` and referenced by the runtime (which writes its
/// TLS fields), so neither the compiler nor the linker drops it.
#[cfg_attr(
    all(target_arch = "x86_64", target_os = "linux"),
    link_section = ".greenlet_sample"
)]
#[used]
pub static SAMPLE_LAYOUT: SampleLayout = SampleLayout {
    magic: MAGIC,
    version: VERSION,
    size: std::mem::size_of::<SampleLayout>() as u32,
    tls_status: AtomicU32::new(TLS_UNKNOWN),
    _reserved: 0,
    tls_offset: AtomicI64::new(0),
    state_current: STATE_CURRENT,
    state_switches: STATE_SWITCHES,
    inner_id: INNER_ID,
    inner_flags: INNER_FLAGS,
    state_origin: STATE_ORIGIN,
    inner_stack: INNER_STACK,
};

/// Serialises [`publish_tls_offset`] (thread-state creation: rare).
static PUBLISH: Mutex<()> = Mutex::new(());

/// Records the offset of the state pointer `tls_slot` (its address on the calling thread) from
/// the calling thread's thread pointer: the first call publishes it; later ones check it.
#[cold]
pub(crate) fn publish_tls_offset(tls_slot: usize) {
    let Some(tp) = thread_pointer() else {
        return;
    };
    let offset = (tls_slot as i64).wrapping_sub(tp as i64);
    let _guard = PUBLISH
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    record_offset(&SAMPLE_LAYOUT, offset);
}

/// The first offset is published; a later different one marks TLS as not static, for good.
/// Callers serialise calls ([`PUBLISH`]).
fn record_offset(layout: &SampleLayout, offset: i64) {
    match layout.tls_status.load(Ordering::Relaxed) {
        TLS_UNKNOWN => {
            layout.tls_offset.store(offset, Ordering::Relaxed);
            layout.tls_status.store(TLS_VALID, Ordering::Release);
        }
        TLS_VALID if layout.tls_offset.load(Ordering::Relaxed) != offset => {
            layout.tls_status.store(TLS_DISAGREE, Ordering::Release);
        }
        _ => {}
    }
}

/// The calling thread's thread pointer: the value at `fs:0` (the TCB's pointer to itself),
/// which is the `fs` base the kernel keeps as `task->thread.fsbase`.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn thread_pointer() -> Option<usize> {
    let tp: usize;
    // SAFETY: on x86-64 Linux the `fs` base of every thread points to its thread control
    // block, whose first word is its own address (the x86-64 TLS ABI; glibc and musl both set
    // it before any Rust code runs). The load reads that word, writes nothing, and touches
    // neither the stack nor the flags.
    unsafe {
        std::arch::asm!(
            "mov {tp}, qword ptr fs:[0]",
            tp = out(reg) tp,
            options(nostack, readonly, preserves_flags)
        );
    }
    Some(tp)
}

/// Not published on this target.
#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn thread_pointer() -> Option<usize> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> SampleLayout {
        SampleLayout {
            magic: MAGIC,
            version: VERSION,
            size: 56,
            tls_status: AtomicU32::new(TLS_UNKNOWN),
            _reserved: 0,
            tls_offset: AtomicI64::new(0),
            state_current: 0,
            state_switches: 0,
            inner_id: 0,
            inner_flags: 0,
            state_origin: 0,
            inner_stack: 0,
        }
    }

    fn status(layout: &SampleLayout) -> (u32, i64) {
        (
            layout.tls_status.load(Ordering::Relaxed),
            layout.tls_offset.load(Ordering::Relaxed),
        )
    }

    #[test]
    fn the_first_offset_is_published_and_a_disagreement_is_final() {
        let layout = fresh();
        record_offset(&layout, -64);
        assert_eq!(status(&layout), (TLS_VALID, -64));
        record_offset(&layout, -64);
        assert_eq!(status(&layout), (TLS_VALID, -64));
        record_offset(&layout, -128);
        assert_eq!(status(&layout).0, TLS_DISAGREE);
        record_offset(&layout, -64);
        assert_eq!(status(&layout).0, TLS_DISAGREE, "never valid again");
    }

    #[test]
    fn the_offsets_are_the_fields() {
        assert_eq!(SAMPLE_LAYOUT.state_current, STATE_CURRENT);
        assert_eq!(SAMPLE_LAYOUT.state_switches, STATE_SWITCHES);
        assert_eq!(SAMPLE_LAYOUT.state_origin, STATE_ORIGIN);
        assert_eq!(SAMPLE_LAYOUT.inner_stack, INNER_STACK);
        let state = [STATE_CURRENT, STATE_SWITCHES, STATE_ORIGIN];
        assert!(state
            .iter()
            .enumerate()
            .all(|(i, a)| !state[..i].contains(a)));
        assert_ne!(INNER_ID, INNER_FLAGS);
        // The stack's two words overlap neither the id nor the flag byte.
        for (field, len) in [(INNER_ID, 8), (INNER_FLAGS, 1)] {
            assert!(field + len <= INNER_STACK || field >= INNER_STACK + 16);
        }
    }
}
