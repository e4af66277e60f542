//! The software cpu-clock perf event, opened on every CPU for every task: what each sampler
//! (the blocking detector, `--sample`, Python sampling, `gltop record`) runs its BPF program
//! on. This VM has no PMU, and the cpu-clock event counts only time a task is on a CPU.

use std::io;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};

/// `struct perf_event_attr` up to `PERF_ATTR_SIZE_VER5` (112 bytes), as the kernel lays it
/// out; the fields gltop does not set are zero.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    /// `sample_period`, or `sample_freq` with [`ATTR_FREQ`].
    sample: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved_2: u16,
}
const _: () = assert!(std::mem::size_of::<PerfEventAttr>() == 112);

const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;
/// `attr.disabled`: the event starts when the BPF program is attached to it.
const ATTR_DISABLED: u64 = 1;
/// `attr.freq`: `sample` is a frequency, not a period.
const ATTR_FREQ: u64 = 1 << 10;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;

/// How often the clock fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rate {
    /// Every this many nanoseconds of a CPU's time: exactly periodic.
    PeriodNs(u64),
    /// About this many times a second (the kernel adjusts the period).
    Hz(u64),
}

/// Why the clock is not running on every CPU.
#[derive(Debug)]
pub enum ClockError<E> {
    /// `perf_event_open` failed on this CPU (`PermissionDenied`: no CAP_PERFMON).
    Open {
        /// The CPU.
        cpu: usize,
        /// The kernel's answer.
        source: io::Error,
    },
    /// The possible CPUs could not be counted.
    Cpus(String),
    /// Attaching the program to an event failed.
    Attach(E),
}

/// Opens the cpu-clock event on `cpu` for every task, disabled until a program is attached.
fn open(cpu: usize, rate: Rate) -> io::Result<OwnedFd> {
    let (sample, freq) = match rate {
        Rate::PeriodNs(ns) => (ns, 0),
        Rate::Hz(hz) => (hz, ATTR_FREQ),
    };
    let attr = PerfEventAttr {
        type_: PERF_TYPE_SOFTWARE,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: PERF_COUNT_SW_CPU_CLOCK,
        sample,
        flags: ATTR_DISABLED | freq,
        ..Default::default()
    };
    // SAFETY: perf_event_open reads `size` bytes of `attr`, a live, initialised #[repr(C)]
    // value laid out as the kernel's struct (checked size, fields it does not know are
    // zero); pid -1 with a CPU, group fd -1 and a flag are plain integers. It returns a new
    // descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            -1 as libc::pid_t,
            cpu as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Opens the clock on every CPU that is online and hands each event to `attach`, whose
/// link then owns the descriptor (libbpf closes it on detach); returns the links. A possible
/// CPU that is offline is skipped.
pub fn attach_every_cpu<L, E>(
    rate: Rate,
    mut attach: impl FnMut(RawFd) -> Result<L, E>,
) -> Result<Vec<L>, ClockError<E>> {
    let possible = libbpf_rs::num_possible_cpus().map_err(|e| ClockError::Cpus(e.to_string()))?;
    let mut links = Vec::with_capacity(possible);
    for cpu in 0..possible {
        let fd = match open(cpu, rate) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => continue,
            Err(source) => return Err(ClockError::Open { cpu, source }),
        };
        let raw = fd.into_raw_fd();
        match attach(raw) {
            Ok(link) => links.push(link),
            Err(e) => {
                // SAFETY: the attach failed, so no link took the descriptor: it is still
                // ours, and this is its only owner.
                drop(unsafe { OwnedFd::from_raw_fd(raw) });
                return Err(ClockError::Attach(e));
            }
        }
    }
    Ok(links)
}
