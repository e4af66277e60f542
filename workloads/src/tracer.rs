//! Waiting for a tracer: what a program that wants to be watched from its first event does.

use std::time::{Duration, Instant};

/// How long to wait, once every probe's semaphore is raised, before the first event.
///
/// The kernel raises a uprobe's semaphore (`ref_ctr`) just before it writes the breakpoint
/// into the page, and gltop arms the probe with the fewest sites last; so when the last
/// semaphore reads non-zero, that probe's own site may still be a plain `nop` for the few
/// microseconds the page replacement takes (a loaded VM once lost 28 throws so). A settle
/// far longer than that (the whole attach takes milliseconds) leaves nothing to chance.
pub const SETTLE: Duration = Duration::from_millis(20);

/// Waits until a tracer has enabled every greenlet probe of this process
/// ([`greenlet::probes::all_enabled`]) and the last breakpoint is surely in place
/// ([`SETTLE`]); `Err` naming the wait if none came within `timeout`.
pub fn wait_for_tracer(timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while !greenlet::probes::all_enabled() {
        if Instant::now() > deadline {
            return Err(format!("no tracer attached within {} s", timeout.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(SETTLE);
    Ok(())
}
