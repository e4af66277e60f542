//! The BPF loader behind `gltop` (cargo feature `gltop`).
//!
//! [`Session::attach`] loads `bpf/greenlet.bpf.c` (compiled into a libbpf-rs skeleton by
//! `build.rs`), attaches it to the `greenlet` USDT probes of one running process, and
//! [`Session::snapshot`] reads what the kernel aggregated so far into plain data
//! ([`Snapshot`]). The arithmetic on snapshots (rates, deltas, CPU shares, the cost of
//! tracing) is in [`rates`], as pure functions.
//!
//! ```no_run
//! use gltop::loader::{Options, Session};
//! let mut session = Session::attach(1234, &Options::default())?;
//! let snap = session.snapshot()?;
//! println!("{} switches since attach", snap.totals.switches);
//! # Ok::<(), gltop::loader::Error>(())
//! ```

mod attach;
pub mod cpuclock;
pub mod dwarf;
pub mod elf;
pub mod layout;
mod model;
pub(crate) mod owned;
pub mod process;
pub mod pyframes;
pub mod pygreenlet;
pub mod pymodule;
pub mod pysample;
pub mod python;
pub mod rates;
pub mod sample;
pub mod semaphore;
mod skel;
pub mod symbolize;
pub mod syscalls;

use std::io;
use std::path::{Path, PathBuf};

pub use attach::{AttachMode, Capacities, Links, Options, Runtime, Session};
pub use model::{
    Aggregate, EdgeStats, Ended, GreenletKey, GreenletStats, MapUse, Outcome, ProcessStats,
    Snapshot, State, ThreadStats, Totals, HIST_BUCKETS, OUTCOME_SLOTS,
};
pub use process::Process;
pub use semaphore::semaphores;

/// Why attaching or reading failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No running process has this PID.
    #[error("no such process: {pid}")]
    NoSuchProcess {
        /// The PID asked for.
        pid: i32,
    },
    /// The process's executable has no `greenlet` USDT probes.
    #[error(
        "process {pid} ({comm}) has no greenlet USDT probes in {exe}: is it built with the greenlet crate?"
    )]
    NoProbes {
        /// The process.
        pid: i32,
        /// Its command name.
        comm: String,
        /// The executable that was searched.
        exe: PathBuf,
    },
    /// The kernel or `/proc` refused for lack of privilege.
    #[error("not permitted to {action}: needs {need}")]
    NotPermitted {
        /// What was attempted.
        action: String,
        /// The privilege that is missing.
        need: String,
    },
    /// The executable could not be parsed as ELF.
    #[error("cannot use the probes of {path}: {reason}")]
    BadExecutable {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The process cannot be sampled (the sampled mode, blocking detection): its runtime does
    /// not publish where its per-thread state is, or publishes it in a form this gltop does
    /// not read.
    #[error("cannot sample process {pid} ({comm}): {reason}")]
    CannotSample {
        /// The process.
        pid: i32,
        /// Its command name.
        comm: String,
        /// Why.
        reason: String,
    },
    /// A CPython process that cannot be traced: no greenlet loaded, greenlet 1.x, no DWARF.
    #[error("cannot trace Python process {pid} ({comm}): {reason}")]
    Python {
        /// The process.
        pid: i32,
        /// Its command name.
        comm: String,
        /// Why, and what to do about it.
        reason: String,
    },
    /// A capacity is out of range.
    #[error("bad capacity: {0}")]
    BadCapacity(String),
    /// Another I/O failure.
    #[error("{action}: {source}")]
    Io {
        /// What was attempted.
        action: String,
        /// The failure.
        source: io::Error,
    },
    /// libbpf failed.
    #[error("{action}: {source}")]
    Bpf {
        /// What was attempted.
        action: String,
        /// The failure.
        source: libbpf_rs::Error,
    },
}

impl Error {
    /// Classifies an I/O error met while reading `path` of the target.
    pub(crate) fn from_io(e: io::Error, path: &Path) -> Error {
        match e.kind() {
            io::ErrorKind::PermissionDenied => Error::NotPermitted {
                action: format!("read {}", path.display()),
                need: "CAP_SYS_PTRACE, or to run as the target's user".into(),
            },
            _ => Error::Io {
                action: format!("cannot read {}", path.display()),
                source: e,
            },
        }
    }

    /// Classifies a libbpf failure during `action`: a refusal becomes `NotPermitted`.
    pub(crate) fn bpf(action: impl Into<String>, e: libbpf_rs::Error) -> Error {
        let action = action.into();
        match e.kind() {
            libbpf_rs::ErrorKind::PermissionDenied => Error::NotPermitted {
                action,
                need: process::BPF_PRIVILEGE.into(),
            },
            _ => Error::Bpf { action, source: e },
        }
    }
}
