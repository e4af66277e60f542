//! Reporting a stack overflow inside a greenlet: a SIGSEGV/SIGBUS handler, run on an
//! alternate signal stack, that recognises a fault in a greenlet guard page, prints one line
//! naming the greenlet and aborts; any other fault goes to the handler that was installed
//! before (normally Rust's own, which reports overflows of thread stacks), or to the default
//! action.
//!
//! The handler only does async-signal-safe work: atomic loads of the slab registry and the
//! slot's owner record, formatting into a buffer on its own stack, `write(2)`, `abort()`,
//! and (for a foreign fault whose previous disposition was the default) `sigaction(2)`.

use std::cell::RefCell;
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
/// Size of the alternate stack this module maps when a thread has none (or too small a one).
const OWN_ALTSTACK: usize = 64 << 10;

/// Installs the process-wide handler (once) and makes sure the calling thread has an
/// alternate signal stack big enough for it. Idempotent and cheap after the first call on a
/// thread.
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
    THREAD_ALT.with(|t| {
        let mut t = t.borrow_mut();
        if t.armed {
            return Ok(());
        }
        t.own = ensure_altstack()?;
        t.armed = true;
        Ok(())
    })
}

fn install_process_handler() -> io::Result<()> {
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

/// The per-thread state: whether the thread is set up, and the alternate stack this module
/// mapped for it (if it had to), unmapped when the thread exits.
struct ThreadAlt {
    armed: bool,
    own: Option<AltStack>,
}

thread_local! {
    static THREAD_ALT: RefCell<ThreadAlt> = const { RefCell::new(ThreadAlt { armed: false, own: None }) };
}

/// An alternate signal stack mapped by this module: a guard page, then `len - page` bytes.
struct AltStack {
    map: NonNull<libc::c_void>,
    len: usize,
}

impl Drop for AltStack {
    fn drop(&mut self) {
        let sp = self.map.as_ptr() as usize + page_size();
        // SAFETY: querying and (if it is ours) disabling the calling thread's alternate
        // stack; `old` is a valid out-pointer. Disabling happens before the unmap so the
        // kernel never delivers a signal onto unmapped memory.
        unsafe {
            let mut old: libc::stack_t = std::mem::zeroed();
            if libc::sigaltstack(std::ptr::null(), &mut old) == 0
                && old.ss_flags & libc::SS_DISABLE == 0
                && old.ss_sp as usize == sp
            {
                let off = libc::stack_t {
                    ss_sp: std::ptr::null_mut(),
                    ss_flags: libc::SS_DISABLE,
                    ss_size: 0,
                };
                libc::sigaltstack(&off, std::ptr::null_mut());
            }
        }
        // SAFETY: `map`/`len` describe a mapping this type created and nobody else uses;
        // it is no longer registered as this thread's alternate stack.
        let _ = unsafe { mman::munmap(self.map, self.len) };
    }
}

fn min_signal_frame() -> usize {
    // SAFETY: getauxval has no preconditions; it returns 0 for an absent entry.
    let auxv = unsafe { libc::getauxval(libc::AT_MINSIGSTKSZ) } as usize;
    auxv.max(libc::MINSIGSTKSZ)
}

/// Keeps the thread's alternate stack if it has one big enough (Rust's runtime gives every
/// thread it starts one); otherwise maps one and registers it.
fn ensure_altstack() -> io::Result<Option<AltStack>> {
    let need = min_signal_frame() + HANDLER_NEEDS;
    // SAFETY: query only; `old` is a valid out-pointer.
    let old = unsafe {
        let mut old: libc::stack_t = std::mem::zeroed();
        if libc::sigaltstack(std::ptr::null(), &mut old) != 0 {
            return Err(io::Error::last_os_error());
        }
        old
    };
    if old.ss_flags & libc::SS_DISABLE == 0 && old.ss_size >= need {
        return Ok(None);
    }
    if old.ss_flags & libc::SS_ONSTACK != 0 {
        // Running on the alternate stack right now (inside a signal handler): leave it.
        return Ok(None);
    }
    let page = page_size();
    let size = (OWN_ALTSTACK.max(need * 2)).next_multiple_of(page);
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
    let st = libc::stack_t {
        ss_sp: (map.as_ptr() as usize + page) as *mut libc::c_void,
        ss_flags: 0,
        ss_size: size,
    };
    // SAFETY: registers [ss_sp, ss_sp + size), readable and writable memory owned by `alt`,
    // which outlives the registration (its Drop disables it before unmapping).
    if unsafe { libc::sigaltstack(&st, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Some(alt))
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
            for &b in &name[1..=len.min(slab::NAME_CAP)] {
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
    line.push(b" bytes); aborting\n");
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
