//! The root package's test support, one module for every test under `tests/`:
//! - [`rules`] (re-exported here): skip or fail ([`require`]), [`poll_until`], [`serial`] and
//!   the child-process guard [`Proc`], which gltop's tests include too;
//! - [`workload`]: the test oracle `workload` and its JSON report (gltop's tests include it
//!   too), and the programs of this workspace that tests run;
//! - [`bpftrace`]: bpftrace run as the README says, its `-f json` output read strictly;
//! - [`stapsdt`]: the `.note.stapsdt` notes of a binary and its probes' semaphores;
//! - [`transcript`] (re-exported here): what the spec tests print, as the Python examples do;
//! - [`run_in_child`]: a scenario that may crash, in a child process.
//!
//! Each test crate uses a different subset of these helpers.
#![allow(dead_code, unused_imports)]

pub mod bpftrace;
pub mod rules;
pub mod stapsdt;
pub mod transcript;
pub mod workload;

pub use rules::*;
pub use transcript::*;

/// Set in the child process that [`run_in_child`] starts.
const CHILD_ENV: &str = "GREENLET_TEST_CHILD";

/// Runs the test `name` of this test binary again in a child process and returns its exit
/// status, stdout and stderr; returns `None` when called in that child, which then runs the
/// scenario itself. For scenarios that may crash or abort the process, which would otherwise
/// take every other test of the binary down with them, and for measurements that other tests
/// running in parallel would disturb. (An ignored test run by hand runs in its child too.)
pub fn run_in_child(name: &str) -> Option<(std::process::ExitStatus, String, String)> {
    if std::env::var_os(CHILD_ENV).is_some() {
        return None;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            name,
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "--include-ignored",
        ])
        .env(CHILD_ENV, "1")
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("cannot run the test binary again");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    Some((output.status, stdout, stderr))
}

/// [`run_in_child`], failing unless the child succeeds: returns its stdout and stderr, or
/// `None` in the child.
pub fn in_child_process(name: &str) -> Option<(String, String)> {
    let (status, stdout, stderr) = run_in_child(name)?;
    assert!(
        status.success(),
        "the scenario failed in a child process ({status}):\n{stdout}{stderr}"
    );
    Some((stdout, stderr))
}
