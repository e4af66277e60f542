//! Lints: findings about how a program uses its greenlets, one small struct per kind behind
//! the [`Lint`] trait, shared by gltop (which finds them from outside, with BPF) and by tests
//! (which find them in-process, with a checker built on [`settrace`]).
//!
//! The first lint is [`Blocking`]: a greenlet that kept its thread for longer than a threshold
//! without switching ([`DEFAULT_THRESHOLD`]: 100 ms, gevent's `max_blocking_time`), whether it
//! computed (on-CPU) or waited in a system call (off-CPU). A greenlet marked idle by design
//! ([`Greenlet::set_idle`], [`Builder::idle`](crate::Builder::idle)), such as a hub waiting
//! for work, is never reported.
//!
//! # The in-process checker
//! [`BlockingChecker::install`] installs a tracer on the calling thread that times every
//! greenlet's turn (from the transfer into it to the transfer out of it) and keeps the turns
//! longer than the threshold. A test runs its code, then asserts on
//! [`BlockingChecker::findings`]:
//!
//! ```
//! use std::time::Duration;
//! use greenlet::lint::BlockingChecker;
//! use greenlet::{getcurrent, Greenlet};
//!
//! let checker = BlockingChecker::with_threshold(Duration::from_millis(50));
//! let main = getcurrent();
//! let worker = Greenlet::builder().name("worker").build(move |_| {
//!     std::thread::sleep(Duration::from_millis(80)); // blocks the thread: a finding
//!     main.switch(())
//! });
//! worker.switch(())?;
//! let found = checker.uninstall();
//! assert_eq!(found.len(), 1);
//! assert_eq!(found[0].greenlet_name.as_deref(), Some("worker"));
//! assert!(found[0].duration >= Duration::from_millis(80));
//! assert_eq!(found[0].cpu, greenlet::lint::Where::OffCpu);
//! println!("{}", found[0]); // greenlet #2 "worker" blocked thread 1234 for 80 ms, off-CPU
//! # Ok::<(), greenlet::Error>(())
//! ```
//!
//! What it reports, and what it cannot:
//! - one [`Blocking`] per turn longer than the threshold, when the turn ends (the greenlet
//!   switches away), and the running greenlet's turn if it is already longer ([`ongoing`]);
//! - on-CPU or off-CPU from the thread's resource usage over the turn
//!   (`getrusage(RUSAGE_THREAD)`): off-CPU when the thread gave up the CPU of its own accord
//!   (a voluntary context switch: it waited in the kernel) and ran for less than half of the
//!   turn. CPU time alone would call a computation off-CPU on a loaded machine, where it
//!   spends much of its turn preempted;
//! - no system call name and no stack: the tracer runs in the greenlet switched *to*, after the
//!   blocked one has left, so neither is known in-process ([`Blocking::syscall`] is `None`,
//!   [`Blocking::stack`] empty). gltop fills both from the kernel.
//!
//! It costs a clock read and a `getrusage` system call per switch (about a microsecond), on top
//! of a tracer's cost: for tests, not for production, where gltop watches from outside.
//!
//! [`ongoing`]: Blocking::ongoing

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use crate::greenlet::{Greenlet, Inner};
use crate::trace::{gettrace, settrace, Event, Tracer};

/// The blocking threshold of gltop's `--block-ms` and of [`BlockingChecker::install`]:
/// 100 ms, as gevent's `max_blocking_time`.
pub const DEFAULT_THRESHOLD: Duration = Duration::from_millis(100);

/// A finding: one kind of problem, about one greenlet on one thread. Each kind is a small
/// struct (as tokio-console's warnings are) that says what it is and describes itself in one
/// line; a viewer lists findings of every kind through this trait.
pub trait Lint: fmt::Debug {
    /// The lint's name, as gltop's JSON and TUI show it: `"blocking"` for [`Blocking`].
    fn name(&self) -> &'static str;
    /// The greenlet the finding is about.
    fn greenlet_id(&self) -> u64;
    /// The OS thread (Linux thread id) it ran on.
    fn thread(&self) -> u64;
    /// One line describing the finding.
    fn summary(&self) -> String;
}

/// Where a blocking greenlet spent its turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Where {
    /// Running: it computed.
    OnCpu,
    /// Waiting in the kernel (a system call that blocked: `read`, `nanosleep`...).
    OffCpu,
}

impl Where {
    /// `"on-cpu"` or `"off-cpu"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Where::OnCpu => "on-cpu",
            Where::OffCpu => "off-cpu",
        }
    }
}

impl fmt::Display for Where {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Where::OnCpu => "on-CPU",
            Where::OffCpu => "off-CPU",
        })
    }
}

/// The blocking lint: a greenlet kept its thread longer than the threshold without switching
/// (one episode).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocking {
    /// The greenlet's id.
    pub greenlet_id: u64,
    /// Its name, if it has one (and, for gltop, if it knows it).
    pub greenlet_name: Option<String>,
    /// The OS thread (Linux thread id, `gettid`).
    pub thread: u64,
    /// How long it went without switching (so far, if [`ongoing`](Blocking::ongoing)).
    pub duration: Duration,
    /// Whether it was still going when reported.
    pub ongoing: bool,
    /// On-CPU (it computed) or off-CPU (it waited in the kernel).
    pub cpu: Where,
    /// Off-CPU: the system call it blocked in (`"read"`, `"nanosleep"`). `None` in-process.
    pub syscall: Option<String>,
    /// Where it was, innermost frame first, symbolized. Empty in-process.
    pub stack: Vec<String>,
}

/// [`Lint::name`] of [`Blocking`].
pub const BLOCKING: &str = "blocking";

impl Lint for Blocking {
    fn name(&self) -> &'static str {
        BLOCKING
    }

    fn greenlet_id(&self) -> u64 {
        self.greenlet_id
    }

    fn thread(&self) -> u64 {
        self.thread
    }

    /// `greenlet #7 "reader" blocked thread 1234 for 301 ms, off-CPU in read`, with
    /// `(still going)` while it lasts.
    fn summary(&self) -> String {
        let mut line = format!("greenlet #{}", self.greenlet_id);
        if let Some(name) = &self.greenlet_name {
            line.push_str(&format!(" {name:?}"));
        }
        line.push_str(&format!(
            " blocked thread {} for {} ms, {}",
            self.thread,
            self.duration.as_millis(),
            self.cpu
        ));
        if let Some(syscall) = &self.syscall {
            line.push_str(&format!(" in {syscall}"));
        }
        if self.ongoing {
            line.push_str(" (still going)");
        }
        line
    }
}

impl fmt::Display for Blocking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())
    }
}

/// The thread's clock and resource usage at one instant.
#[derive(Clone, Copy)]
struct Mark {
    at: Instant,
    cpu: Duration,
    voluntary: i64,
}

impl Mark {
    fn now() -> Mark {
        let at = Instant::now();
        match nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_THREAD) {
            Ok(usage) => {
                let micros = |t: nix::sys::time::TimeVal| {
                    Duration::from_secs(t.tv_sec().max(0) as u64)
                        + Duration::from_micros(t.tv_usec().max(0) as u64)
                };
                Mark {
                    at,
                    cpu: micros(usage.user_time()) + micros(usage.system_time()),
                    voluntary: usage.voluntary_context_switches(),
                }
            }
            // Not expected on Linux; without usage every turn counts as on-CPU.
            Err(_) => Mark {
                at,
                cpu: Duration::MAX,
                voluntary: 0,
            },
        }
    }

    /// How the turn from `self` to `end` was spent.
    fn classify(&self, end: &Mark) -> Where {
        let wall = end.at.saturating_duration_since(self.at);
        let cpu = end.cpu.saturating_sub(self.cpu);
        if end.voluntary > self.voluntary && cpu < wall / 2 {
            Where::OffCpu
        } else {
            Where::OnCpu
        }
    }
}

/// The running greenlet's turn. The checker holds no handle on the greenlet: it must not keep
/// alive (nor kill, by releasing it) what the program dropped.
struct Turn {
    id: u64,
    greenlet: Weak<Inner>,
    idle_at_start: bool,
    start: Mark,
}

impl Turn {
    fn of(g: &Greenlet, start: Mark) -> Turn {
        Turn {
            id: g.id(),
            greenlet: Rc::downgrade(g.inner()),
            idle_at_start: g.is_idle(),
            start,
        }
    }
}

struct Shared {
    threshold: Duration,
    thread: u64,
    turn: RefCell<Turn>,
    found: RefCell<Vec<Blocking>>,
    /// Whether our tracer is still installed (set false by `uninstall`).
    active: Cell<bool>,
}

impl Shared {
    /// The finding for `turn` at `end`, if it is one.
    fn judge(&self, turn: &Turn, end: &Mark, ongoing: bool) -> Option<Blocking> {
        let duration = end.at.saturating_duration_since(turn.start.at);
        let greenlet = turn.greenlet.upgrade();
        let idle_now = greenlet.as_ref().is_some_and(|g| g.is_idle());
        if duration <= self.threshold || turn.idle_at_start || idle_now {
            return None;
        }
        Some(Blocking {
            greenlet_id: turn.id,
            greenlet_name: greenlet.as_ref().and_then(|g| g.name()).map(str::to_string),
            thread: self.thread,
            duration,
            ongoing,
            cpu: turn.start.classify(end),
            syscall: None,
            stack: Vec::new(),
        })
    }

    /// A transfer arrived in `target`: the origin's turn ends, the target's begins.
    fn on_event(&self, target: &Greenlet) {
        let end = Mark::now();
        let next = Turn::of(target, end);
        let ended = self.turn.replace(next);
        if let Some(finding) = self.judge(&ended, &end, false) {
            self.found.borrow_mut().push(finding);
        }
    }
}

/// The in-process blocking checker (see the [module documentation](self)): a tracer on the
/// calling thread that records every [`Blocking`] episode of its greenlets.
///
/// It chains to the tracer that was installed before it (which it calls after its own
/// bookkeeping, for every event, passing on its result), and puts that tracer back when it is
/// uninstalled or dropped, provided it is still the thread's tracer then; if something
/// replaced it meanwhile, that replacement is left in place. Python greenlet's `settrace` only
/// replaces; chaining is what gevent's monitor does, so that a checker can run under a test's
/// own tracer.
///
/// Per thread, like [`settrace`]: greenlets of other threads are not watched.
pub struct BlockingChecker {
    shared: Rc<Shared>,
    tracer: Tracer,
    previous: Option<Tracer>,
}

impl BlockingChecker {
    /// Installs a checker with the [`DEFAULT_THRESHOLD`] (100 ms).
    pub fn install() -> BlockingChecker {
        BlockingChecker::with_threshold(DEFAULT_THRESHOLD)
    }

    /// Installs a checker that reports turns longer than `threshold`. The running greenlet's
    /// turn starts now.
    pub fn with_threshold(threshold: Duration) -> BlockingChecker {
        let current = crate::getcurrent();
        let shared = Rc::new(Shared {
            threshold,
            thread: nix::unistd::gettid().as_raw() as u64,
            turn: RefCell::new(Turn::of(&current, Mark::now())),
            found: RefCell::new(Vec::new()),
            active: Cell::new(true),
        });
        let previous = gettrace();
        let tracer = Tracer::new({
            let shared = Rc::downgrade(&shared);
            let previous = previous.clone();
            move |event: &Event| {
                if let Some(shared) = shared.upgrade() {
                    if shared.active.get() {
                        shared.on_event(event.target());
                    }
                }
                match &previous {
                    Some(previous) => previous.call(event),
                    None => Ok(()),
                }
            }
        });
        settrace(Some(tracer.clone()));
        BlockingChecker {
            shared,
            tracer,
            previous,
        }
    }

    /// The threshold.
    pub fn threshold(&self) -> Duration {
        self.shared.threshold
    }

    /// The episodes found so far, oldest first; then, if the running greenlet's turn is
    /// already longer than the threshold, that one, marked [`ongoing`](Blocking::ongoing).
    pub fn findings(&self) -> Vec<Blocking> {
        let mut found = self.shared.found.borrow().clone();
        if self.shared.active.get() {
            let now = Mark::now();
            if let Some(ongoing) = self.shared.judge(&self.shared.turn.borrow(), &now, true) {
                found.push(ongoing);
            }
        }
        found
    }

    /// Removes the checker (see the type's documentation for the tracer put back) and returns
    /// its [findings](BlockingChecker::findings).
    pub fn uninstall(self) -> Vec<Blocking> {
        let found = self.findings();
        drop(self);
        found
    }
}

impl Drop for BlockingChecker {
    fn drop(&mut self) {
        self.shared.active.set(false);
        if gettrace().as_ref() == Some(&self.tracer) {
            settrace(self.previous.take());
        }
    }
}

impl fmt::Debug for BlockingChecker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingChecker")
            .field("threshold", &self.shared.threshold)
            .field("thread", &self.shared.thread)
            .field("found", &self.shared.found.borrow().len())
            .finish()
    }
}
