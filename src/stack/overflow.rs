//! Reporting a stack overflow inside a greenlet: a SIGSEGV/SIGBUS handler, run on an
//! alternate signal stack, that recognises a fault in a greenlet guard page, prints one line
//! naming the greenlet and aborts; any other fault goes to the handler that was installed
//! before (normally Rust's own, which reports overflows of thread stacks), or to the default
//! action.
//!
//! The handler only does async-signal-safe work: atomic loads of the slab registry and the
//! slot's owner record, formatting into a buffer on its own stack, `write(2)`, `abort()`,
//! and (for a foreign fault whose previous disposition was the default) `sigaction(2)`.

// Unsafe code: the signal handler and its installation (`sigaction`), the per-thread
// alternate signal stacks (`mmap`, `sigaltstack`, a pthread key owning them), and the
// handler's reads of `siginfo` and writes to fd 2.
#![allow(unsafe_code)]

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::BorrowedFd;
use std::ptr::NonNull;
use std::sync::{Once, OnceLock};

use nix::sys::mman::{self, MapFlags, ProtFlags};
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};

use super::slab::{self, page_size};

/// Previous dispositions of SIGSEGV and SIGBUS, for chaining.
static PREV_SEGV: OnceLock<SigAction> = OnceLock::new();
static PREV_BUS: OnceLock<SigAction> = OnceLock::new();
static INSTALL: Once = Once::new();
static INSTALL_ERROR: OnceLock<io::ErrorKind> = OnceLock::new();

/// Stack the handler needs beyond the kernel's signal frame: its message buffer and calls.
const HANDLER_NEEDS: usize = 4096;
/// Least size of the alternate stack this module maps for each thread.
const OWN_ALTSTACK: usize = 64 << 10;

/// Installs the process-wide handler (once) and makes sure the calling thread's alternate
/// signal stack is ours and enabled. Idempotent; after the first call on a thread it costs
/// one `sigaltstack` query.
///
/// Every thread gets its own alternate stack (Rust gives its threads one of
/// `AT_MINSIGSTKSZ` bytes, which on machines with AMX leaves the handler no room). It is
/// owned through a pthread key, whose destructor runs after every Rust thread-local
/// destructor, so it outlives any greenlet teardown done in one. Rust disables the thread's
/// alternate stack when the thread's main function returns, before thread-local destructors
/// run; calling this again at the start of such a teardown re-enables ours.
pub(crate) fn install() -> io::Result<()> {
    INSTALL.call_once(|| {
        if let Err(e) = install_process_handler() {
            let _ = INSTALL_ERROR.set(e.kind());
        }
    });
    if let Some(kind) = INSTALL_ERROR.get() {
        return Err(io::Error::new(
            *kind,
            "cannot install the greenlet stack overflow handler",
        ));
    }
    let key = *ALT_KEY
        .get()
        .ok_or_else(|| io::Error::other("no pthread key for the signal stack"))?;
    // SAFETY: `key` was created by pthread_key_create and is never deleted.
    let ours = unsafe { libc::pthread_getspecific(key) }.cast::<AltStack>();
    if ours.is_null() {
        let alt = Box::new(AltStack::map()?);
        alt.register()?;
        // SAFETY: as above; the value is a leaked `Box<AltStack>` that `drop_alt` frees when
        // the thread exits.
        let r = unsafe { libc::pthread_setspecific(key, Box::into_raw(alt).cast()) };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        return Ok(());
    }
    // SAFETY: non-null values of the key are `Box<AltStack>`s this thread leaked above and
    // only `drop_alt` (at thread exit, after this can no longer run) frees.
    let alt = unsafe { &*ours };
    if !alt.is_current()? {
        alt.register()?;
    }
    Ok(())
}

fn install_process_handler() -> io::Result<()> {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is a valid out-pointer; `drop_alt` is a valid destructor for the values
    // this module stores (leaked `Box<AltStack>`s).
    let r = unsafe { libc::pthread_key_create(&mut key, Some(drop_alt)) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    let _ = ALT_KEY.set(key);
    let action = SigAction::new(
        SigHandler::SigAction(on_fault),
        SaFlags::SA_ONSTACK | SaFlags::SA_SIGINFO,
        SigSet::empty(),
    );
    for (sig, prev) in [(Signal::SIGSEGV, &PREV_SEGV), (Signal::SIGBUS, &PREV_BUS)] {
        // SAFETY: `on_fault` is an `extern "C"` handler that only does async-signal-safe work
        // (see the module docs); the previous action is kept and called for faults that are
        // not ours, so installing it takes nothing away from earlier handlers.
        let old = unsafe { signal::sigaction(sig, &action) }.map_err(io::Error::from)?;
        let _ = prev.set(old);
    }
    Ok(())
}

/// The pthread key owning each thread's `AltStack`.
static ALT_KEY: OnceLock<libc::pthread_key_t> = OnceLock::new();

extern "C" fn drop_alt(value: *mut libc::c_void) {
    if !value.is_null() {
        // SAFETY: the key's values are `Box<AltStack>`s leaked by `install`; pthread calls
        // this once per thread with that thread's value, after which the key reads null.
        drop(unsafe { Box::from_raw(value.cast::<AltStack>()) });
    }
}

/// An alternate signal stack mapped by this module: a guard page, then `len - page` bytes.
struct AltStack {
    map: NonNull<libc::c_void>,
    len: usize,
}

impl AltStack {
    fn map() -> io::Result<AltStack> {
        let page = page_size();
        let size = (OWN_ALTSTACK.max(min_signal_frame() + HANDLER_NEEDS)).next_multiple_of(page);
        let len = size + page;
        // SAFETY: a fresh private anonymous mapping; it aliases nothing.
        let map = unsafe {
            mman::mmap_anonymous(
                None,
                NonZeroUsize::new(len).expect("non-zero"),
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        }
        .map_err(io::Error::from)?;
        let alt = AltStack { map, len };
        // SAFETY: the lowest page of our own fresh mapping becomes a guard page.
        unsafe { mman::mprotect(map, page, ProtFlags::PROT_NONE) }.map_err(io::Error::from)?;
        Ok(alt)
    }

    fn sp(&self) -> *mut libc::c_void {
        (self.map.as_ptr() as usize + page_size()) as *mut libc::c_void
    }

    /// Whether this is the calling thread's enabled alternate stack.
    fn is_current(&self) -> io::Result<bool> {
        let cur = current_altstack()?;
        Ok(cur.ss_flags & libc::SS_DISABLE == 0 && cur.ss_sp == self.sp())
    }

    /// Makes this the calling thread's alternate stack (unless the thread is running on its
    /// current alternate stack, which cannot be changed).
    fn register(&self) -> io::Result<()> {
        if current_altstack()?.ss_flags & libc::SS_ONSTACK != 0 {
            return Ok(());
        }
        let st = libc::stack_t {
            ss_sp: self.sp(),
            ss_flags: 0,
            ss_size: self.len - page_size(),
        };
        // SAFETY: registers [ss_sp, ss_sp + ss_size), readable and writable memory owned by
        // `self`, which outlives the registration (its Drop disables it before unmapping).
        if unsafe { libc::sigaltstack(&st, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for AltStack {
    fn drop(&mut self) {
        if matches!(self.is_current(), Ok(true)) {
            let off = libc::stack_t {
                ss_sp: std::ptr::null_mut(),
                ss_flags: libc::SS_DISABLE,
                ss_size: 0,
            };
            // SAFETY: disables the calling thread's alternate stack (ours), so the kernel
            // never delivers a signal onto the memory unmapped below.
            unsafe { libc::sigaltstack(&off, std::ptr::null_mut()) };
        }
        // SAFETY: `map`/`len` describe a mapping this type created and nobody else uses;
        // it is no longer this thread's alternate stack.
        let _ = unsafe { mman::munmap(self.map, self.len) };
    }
}

fn current_altstack() -> io::Result<libc::stack_t> {
    // SAFETY: query only; `cur` is a valid out-pointer, and all-zero is a valid `stack_t`.
    unsafe {
        let mut cur: libc::stack_t = std::mem::zeroed();
        if libc::sigaltstack(std::ptr::null(), &mut cur) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(cur)
    }
}

fn min_signal_frame() -> usize {
    // SAFETY: getauxval has no preconditions; it returns 0 for an absent entry.
    let auxv = unsafe { libc::getauxval(libc::AT_MINSIGSTKSZ) } as usize;
    auxv.max(libc::MINSIGSTKSZ)
}

// -------------------------------------------------------------------------------------------
// The handler.

extern "C" fn on_fault(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler; for SIGSEGV and
    // SIGBUS `si_addr` is the faulting address.
    let addr = unsafe { (*info).si_addr() } as usize;
    if let Some((slab, index)) = slab::find_guard(addr) {
        report_overflow(slab.owner(index), slab.usable());
        std::process::abort();
    }
    chain(sig, info, ctx);
}

/// Hands a fault that is not a greenlet overflow to the previous disposition.
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let prev = if sig == libc::SIGBUS {
        PREV_BUS.get()
    } else {
        PREV_SEGV.get()
    };
    match prev.map(SigAction::handler) {
        Some(SigHandler::SigAction(f)) => f(sig, info, ctx),
        Some(SigHandler::Handler(f)) => f(sig),
        Some(SigHandler::SigDfl) | Some(SigHandler::SigIgn) | None => {
            // Restore the default action and return: the faulting instruction runs again and
            // the kernel kills the process with the original signal (and a core dump if
            // enabled). An ignored SIGSEGV cannot be ignored for a real fault anyway.
            let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
            if let Ok(signal) = Signal::try_from(sig) {
                // SAFETY: restoring SIG_DFL is always sound; sigaction(2) is
                // async-signal-safe.
                let _ = unsafe { signal::sigaction(signal, &dfl) };
            }
        }
    }
}

/// A fixed buffer for building the message without allocating.
struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Line {
    fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn push_u64(&mut self, mut v: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }
}

/// Formats the one-line overflow message for `owner`. Async-signal-safe.
fn format_overflow(owner: &slab::SlotOwner, usable: usize) -> Line {
    let (id, name, name_len, truncated) = owner.read();
    let mut line = Line {
        buf: [0; 256],
        len: 0,
    };
    if id == 0 {
        line.push(b"greenlet: stack overflow in a greenlet stack with no owner");
    } else {
        line.push(b"greenlet: stack overflow in greenlet ");
        line.push_u64(id);
        if let Some(len) = name_len {
            line.push(b" \"");
            for &b in &name[..len] {
                // Keep the line one line and the quotes balanced.
                let b = if b < 0x20 || b == 0x7f || b == b'"' {
                    b'?'
                } else {
                    b
                };
                line.push(&[b]);
            }
            if truncated {
                line.push(b"...");
            }
            line.push(b"\"");
        }
    }
    line.push(b" (stack ");
    line.push_u64(usable as u64);
    line.push(b" bytes; Builder::stack_size sets more); aborting\n");
    line
}

fn report_overflow(owner: &slab::SlotOwner, usable: usize) {
    let line = format_overflow(owner, usable);
    // SAFETY: fd 2 is only borrowed for the duration of the writes; if it is closed the
    // writes fail with EBADF, which is harmless.
    let stderr = unsafe { BorrowedFd::borrow_raw(2) };
    let mut out = &line.buf[..line.len];
    while !out.is_empty() {
        match nix::unistd::write(stderr, out) {
            Ok(0) => break,
            Ok(n) => out = &out[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => break,
        }
    }
}

/// The message the handler would print for `owner` (for tests).
#[cfg(test)]
pub(crate) fn message_for(owner: &slab::SlotOwner, usable: usize) -> String {
    let line = format_overflow(owner, usable);
    String::from_utf8_lossy(&line.buf[..line.len]).into_owned()
}
