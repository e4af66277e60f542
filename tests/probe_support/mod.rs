//! Helpers shared by the probe and script tests (`tests/probes_*.rs`, `tests/scripts_*.rs`): the workload example and its JSON report,
//! bpftrace and its JSON output, the `.note.stapsdt` notes of a binary, and the rule for
//! skipping when BPF is not available.
//!
//! Each test crate uses a different subset of these helpers.
#![allow(dead_code)]

pub mod bpftrace;
pub mod stapsdt;
pub mod workload;

use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long any one child process may take: generous, because the machines that run these
/// tests are small and shared, and bpftrace compiles each program with LLVM.
pub const TIMEOUT: Duration = Duration::from_secs(180);

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether this run is under CI, where tests needing BPF must run rather than skip.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Serialises the tests of one test binary that run bpftrace, so that they do not compete
/// for the machine's few cores (and attach times stay short).
pub fn bpf_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Waits for `child` to exit, for at most `timeout`; kills it and panics after that.
pub fn wait_timeout(child: &mut Child, what: &str, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} did not exit within {timeout:?}; killed it");
            }
            Err(e) => panic!("cannot wait for {what}: {e}"),
        }
    }
}
