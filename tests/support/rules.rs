//! The rules every test of the workspace follows, written once: when a test that needs
//! something of the machine skips and when it fails instead ([`require`]), how a test waits
//! for something ([`poll_until`]), which tests must not overlap ([`serial`]), and the guard
//! of every child process a test starts ([`Proc`]).
//!
//! The root package's `tests/support/mod.rs` declares this file; gltop's
//! `gltop/tests/support/mod.rs` includes it with `#[path]`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long any one child process may take: generous, because the machines that run these
/// tests are small and shared, and bpftrace compiles each program with LLVM.
pub const TIMEOUT: Duration = Duration::from_secs(180);

/// The workspace's root directory (where `Cargo.lock` is), whichever package this test is of.
pub fn root() -> PathBuf {
    let package = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    package
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").exists())
        .unwrap_or(&package)
        .to_path_buf()
}

/// Whether this run is under CI (`CI=true`), where every test must run rather than skip.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The one rule for a test (or part of one), `what`, that needs something of the machine:
/// BPF privilege, bpftrace, tmux, Python greenlet... `check` says whether it is there (`Err`:
/// why not). Returns whether `what` can run. Outside CI a missing requirement prints
/// `skipping WHAT: WHY` and returns false, so the caller returns early; under `CI=true` it
/// panics instead: CI machines have everything, and a test that skipped there would hide.
pub fn require(what: &str, check: Result<(), String>) -> bool {
    match check {
        Ok(()) => true,
        Err(why) if ci() => panic!("CI=true, but {what} cannot run: {why}"),
        Err(why) => {
            // Straight to stderr, past the test harness's capture, so the skip is seen.
            let _ = writeln!(std::io::stderr(), "skipping {what}: {why}");
            false
        }
    }
}

/// Whether `program` can be run (as `program arg`, e.g. `--version`), for [`require`].
pub fn tool(program: &str, arg: &str) -> Result<(), String> {
    Command::new(program)
        .arg(arg)
        .stdin(Stdio::null())
        .output()
        .map(drop)
        .map_err(|e| format!("cannot run {program}: {e}"))
}

/// Serialises the tests of one test binary that must not overlap: those that attach BPF
/// programs or run bpftrace, so that they do not compete for the machine's few cores (and
/// attach times and system-wide counts of BPF objects stay meaningful).
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Calls `ready` until it returns `Some` or `deadline` passes; its value, or `None` if
/// `deadline` passed first. `ready` is called at least once, and once more at the deadline.
/// Between calls it sleeps 10 ms at first, doubling to at most 100 ms: quick to see a fast
/// change, cheap over a long wait.
pub fn poll_until<T>(deadline: Instant, mut ready: impl FnMut() -> Option<T>) -> Option<T> {
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(value) = ready() {
            return Some(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// A child process that dies with the test: killed (with its process group, if it leads
/// one) when dropped, so a failing test leaves nothing behind. Its piped stdout and stderr are
/// read by threads as it runs (a full pipe would block it).
pub struct Proc {
    pub child: Child,
    /// Leader of a process group of its own: signals go to the whole group.
    group: bool,
    stdout: Option<Collector>,
    stderr: Option<Collector>,
}

/// Reads a pipe to its end in a thread, keeping everything read so far.
struct Collector {
    text: Arc<Mutex<String>>,
    thread: Option<JoinHandle<()>>,
}

impl Collector {
    fn start(pipe: impl Read + Send + 'static) -> Collector {
        let text = Arc::new(Mutex::new(String::new()));
        let sink = text.clone();
        let thread = std::thread::spawn(move || {
            let mut r = BufReader::new(pipe);
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 0) {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        Collector {
            text,
            thread: Some(thread),
        }
    }

    fn so_far(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    /// Whether the pipe is at its end: nothing more will come.
    fn ended(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    fn all(&mut self) -> String {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.so_far()
    }
}

impl Proc {
    /// Starts `cmd`.
    pub fn spawn(cmd: &mut Command) -> Proc {
        Proc::start(cmd, false)
    }

    /// Starts `cmd` as the leader of a process group of its own, as a shell starts a job:
    /// [`Proc::signal`] and the kill on drop reach the whole group.
    pub fn spawn_group(cmd: &mut Command) -> Proc {
        Proc::start(cmd.process_group(0), true)
    }

    fn start(cmd: &mut Command, group: bool) -> Proc {
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stdout = child.stdout.take().map(Collector::start);
        let stderr = child.stderr.take().map(Collector::start);
        Proc {
            child,
            group,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits up to `timeout` for the exit; the exit status, or None if it is still running.
    pub fn wait_for(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = &mut self.child;
        poll_until(Instant::now() + timeout, || {
            child.try_wait().expect("cannot wait for a child process")
        })
    }

    /// Waits up to `timeout` for the exit; the exit status, or a panic (which kills it) if
    /// it is still running. `what` names it in the panic.
    pub fn wait(&mut self, what: &str, timeout: Duration) -> ExitStatus {
        self.wait_for(timeout)
            .unwrap_or_else(|| panic!("{what} did not exit within {timeout:?}; killed it"))
    }

    /// Sends `sig` to it (to its group, if it leads one).
    pub fn signal(&self, sig: Signal) {
        let pid = if self.group { -self.pid() } else { self.pid() };
        let _ = kill(Pid::from_raw(pid), sig);
    }

    /// Kills it (and its group) if it is still running, and reaps it.
    pub fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }

    /// All of its stdout (waits for the pipe to close: call after it exited).
    pub fn stdout_text(&mut self) -> String {
        self.stdout.as_mut().map(Collector::all).unwrap_or_default()
    }

    /// All of its stderr (waits for the pipe to close: call after it exited).
    pub fn stderr_text(&mut self) -> String {
        self.stderr.as_mut().map(Collector::all).unwrap_or_default()
    }

    /// Its stdout so far, while it runs.
    pub fn stdout_so_far(&self) -> String {
        self.stdout
            .as_ref()
            .map(Collector::so_far)
            .unwrap_or_default()
    }

    /// Its stderr so far, while it runs.
    pub fn stderr_so_far(&self) -> String {
        self.stderr
            .as_ref()
            .map(Collector::so_far)
            .unwrap_or_default()
    }

    /// Waits up to `timeout` until its stderr contains `what`; false if it did not (or
    /// closed its stderr without).
    pub fn wait_stderr(&self, what: &str, timeout: Duration) -> bool {
        self.wait_stderr_line(timeout, |l| l.contains(what))
            .is_some()
    }

    /// Waits up to `timeout` for a line of its stderr that satisfies `pred`; that line, or
    /// None if none came (or it closed its stderr without).
    pub fn wait_stderr_line(
        &self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        wait_line(self.stderr.as_ref(), timeout, pred)
    }

    /// [`Proc::wait_stderr_line`] for its stdout.
    pub fn wait_stdout_line(
        &self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        wait_line(self.stdout.as_ref(), timeout, pred)
    }
}

/// Waits up to `timeout` for a line that satisfies `pred` in what `pipe` collects.
fn wait_line(
    pipe: Option<&Collector>,
    timeout: Duration,
    pred: impl Fn(&str) -> bool,
) -> Option<String> {
    let pipe = pipe?;
    poll_until(Instant::now() + timeout, || {
        // Whether the pipe had ended is read before the text, so the last text read counts.
        let ended = pipe.ended();
        match pipe.so_far().lines().find(|l| pred(l)) {
            Some(line) => Some(Some(line.to_string())),
            None => ended.then_some(None),
        }
    })
    .flatten()
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
