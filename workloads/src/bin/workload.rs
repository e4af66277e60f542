//! A deterministic greenlet workload that knows what it did: the test oracle, the one program
//! whose report the probe tests, the bpftrace script tests and gltop's tests compare their
//! counts against.
//!
//! ```text
//! cargo run -p greenlet-workloads --bin workload -- --threads 2 --greenlets 4 --switches 100 --throws 10 --kills 1
//! ```
//!
//! # Topology
//! The process's main thread only coordinates: it spawns `--threads` worker threads, and each
//! of them runs `--iterations` iterations of the same fixed pattern on its own greenlets:
//!
//! 1. the thread's main greenlet creates a greenlet named `hub` and switches to it;
//! 2. the hub creates `--greenlets` greenlets named `worker` (parent: the hub) and starts each
//!    one (hub -> worker, worker -> hub), then switches to itself once (hub -> hub);
//! 3. the hub kills a greenlet named `unborn` before it ever ran (it dies on arrival: `exit`)
//!    and drops a greenlet named `discarded` that never started (`discarded`): from here on no
//!    greenlet of the iteration is created, so none is created after another died;
//! 4. `--switches` plus `--throws` steps, interleaved evenly. A step picks a worker (round
//!    robin, or pseudo-randomly from `--seed`). A switch step resumes it and it yields back to
//!    the hub; every fourth switch step (or one in four at random) it is told to pass instead:
//!    it switches to the next worker, which yields back to the hub (hub -> w, w -> w', w' ->
//!    hub). A throw step throws an error into the worker, which catches it and yields back;
//! 5. a flush round resumes every worker once (so none holds a handle to another);
//! 6. the last `--kills` workers are killed by dropping their last handle (a `GreenletExit`
//!    thrown by the runtime, which they let escape: outcome `exit`);
//! 7. the other workers are told to finish, in turn: the first returns (`returned`), the
//!    second returns an error (`error`), the third panics (`panic`), the fourth returns, ...;
//!    the hub catches the error and the panic, and returns to main (`returned`).
//!
//! With `--spin-us N` the first worker of each hub computes for N microseconds each time it
//! gets control (in each of its slices), and times those slices from inside.
//!
//! When its iterations are done a thread checks that nothing is left suspended, removes its
//! tracer and exits; its main greenlet then dies with outcome `thread_exit`.
//! With the defaults every probe (`switch`, `throw`, `new`, `dead`), both event kinds and
//! every death outcome occur.
//!
//! # What it counts
//! Each thread installs a [`greenlet::settrace`] tracer before anything else, which counts
//! every event per kind and per origin -> target edge (`--no-trace` leaves it out, to check
//! that the probes fire without a tracer; the report then has no events). The workload also records every
//! greenlet it creates (id, name, parent, thread) and how each one died, from its own point of
//! view (what `run` returned, what it dropped), and the slices of the spinning workers
//! (`--spin-us`) as they timed them. Nothing is read from the probes.
//!
//! # Output
//! On exit it prints one JSON object on stdout (one line; `--pretty` indents it):
//!
//! ```text
//! {
//!   "pid": 1234,                  // this process
//!   "threads": 2,                 // worker threads that ran greenlets
//!   "config": { "threads": 2, "greenlets": 4, "switches": 100, "throws": 10, "kills": 1,
//!               "iterations": 1, "seed": 0, "duration": null, "forever": false, "pace": 0,
//!               "spin_us": 0, "trace": true,    // false with --no-trace: no events are counted
//!               "main_name": null },            // --main-name
//!   "totals": { "switch": 520, "throw": 28, "new": 16, "dead": 16 },
//!                                 // switch/throw: settrace events; new/dead: greenlets
//!                                 // created (main greenlets included) and deaths
//!   "deaths": { "returned": 4, "error": 2, "exit": 4, "panic": 2,
//!               "thread_exit": 2, "discarded": 2 },
//!   "edges": [ { "origin": 1, "target": 2, "kind": "switch", "count": 1 }, ... ],
//!                                 // one entry per (origin id, target id, kind) seen by
//!                                 // settrace, sorted; kind is "switch" or "throw"
//!   "per_thread": [ { "thread": 0, "tid": 1236, "main": 1, "iterations": 1, "switch": 260,
//!                     "throw": 14, "new": 8, "dead": 8 }, ... ],
//!                                 // tid: the Linux thread id, as bpftrace's `tid`
//!   "greenlets": [ { "id": 1, "name": "", "parent": 0, "thread": 0, "tid": 1236,
//!                    "main": true, "outcome": "thread_exit" }, ... ],
//!                                 // every greenlet, in creation order per thread; name is ""
//!                                 // for main greenlets (--main-name's without it); outcome
//!                                 // is one of the `deaths` keys
//!   "spun": [ { "id": 3, "slices": 81, "ns": 810123456 }, ... ]
//!                                 // per spinning worker (--spin-us; else empty), by id: its
//!                                 // slices and their time, measured from inside
//! }
//! ```
//!
//! The outcome names map to the `outcome` argument of `greenlet:dead`: 0 `returned`,
//! 1 `error`, 2 `exit`, 3 `panic`, 4 `thread_exit`, 5 `discarded`.
//!
//! # Attaching a tracer
//! `--wait stdin|signal` makes it print `workload: ready pid=PID` on stderr and wait, before
//! any greenlet exists, for a line (or end of file) on stdin, or for `SIGUSR1`. After the JSON
//! it prints `workload: done` on stderr; `--linger stdin|signal` then waits the same way before
//! exiting, so a tracer can read its maps while the process is still alive. (`bpftrace -p PID`
//! also prints its maps by itself when the process exits.)
//!
//! `--wait-for-tracer` then waits until every greenlet probe is enabled (a tracer such as
//! gltop is attached), and `--wait-for-file PATH` until PATH exists (for at most a minute
//! each); `--then-exec-sleep SECS` makes it end, after `--linger`, by replacing itself with
//! `sleep SECS`: the same process, another program.
//!
//! `--duration SECS` repeats iterations until the time is up; `--forever` until `SIGINT` or
//! `SIGTERM`. Either signal also stops a `--duration` run early. A stopped run cuts the
//! current iteration's steps short but still finishes it (kills, deaths), so the totals stay
//! exact. `--pace N` limits each thread to N steps per second.
//!
//! Bad options print one line on stderr and exit with status 2; a runtime failure exits
//! with status 1.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use greenlet::probes::Outcome;
use greenlet::{getcurrent, kill_all, settrace, Error, EventKind, Greenlet, Tracer, Value};
use greenlet_workloads::cli;
use nix::sys::signal::{SigSet, Signal};
use serde::Serialize;

const AFTER_HELP: &str = "\
Topology, per thread and iteration: main switches to a greenlet named 'hub', which starts
--greenlets greenlets named 'worker', switches to itself once, kills a never-started 'unborn'
greenlet, drops a never-started 'discarded' one, runs --switches switch steps (one in four
passes through a second worker) and --throws throws (caught) interleaved, resumes every
worker once more, kills the last --kills workers by dropping their last handle, tells the
others to return, fail, panic, return, ... in turn, and returns to main. With --spin-us the
first worker of each hub computes in each of its slices.

Protocol: with --wait, 'workload: ready pid=PID' goes to stderr before any greenlet exists,
then it waits for a line on stdin (or EOF) or SIGUSR1; then --wait-for-tracer and
--wait-for-file wait in turn. The JSON report goes to stdout at the end, then
'workload: done' to stderr; --linger waits again before exiting (or before
--then-exec-sleep).

JSON report (one object): pid, threads, config, totals {switch, throw, new, dead},
deaths {returned, error, exit, panic, thread_exit, discarded}, edges [{origin, target, kind,
count}], per_thread [{thread, tid, main, iterations, switch, throw, new, dead}],
greenlets [{id, name, parent, thread, tid, main, outcome}], spun [{id, slices, ns}]. Ids are
greenlet ids, as in the greenlet:* USDT probes; tid is the Linux thread id. See the module
docs of workloads/src/bin/workload.rs for the topology.";

/// A deterministic greenlet workload that counts its own trace events and prints them as JSON.
#[derive(Parser, Debug)]
#[command(name = "workload", after_long_help = AFTER_HELP)]
struct Cli {
    /// Worker threads; each runs its own hub and workers (the main thread only coordinates)
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: u32,
    /// Worker greenlets per hub
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    greenlets: u32,
    /// Switch steps per iteration (hub -> worker -> hub, or a pass through a second worker)
    #[arg(long, default_value_t = 100)]
    switches: u64,
    /// Errors thrown into workers (which catch them) per iteration
    #[arg(long, default_value_t = 10)]
    throws: u64,
    /// Workers killed by dropping their last handle per iteration (at most --greenlets)
    #[arg(long, default_value_t = 1)]
    kills: u32,
    /// Iterations per thread (ignored with --duration or --forever)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    iterations: u64,
    /// 0: workers are picked round robin; otherwise pseudo-randomly, the same way for a seed
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Repeat iterations for this many seconds (at least one iteration)
    #[arg(long, value_name = "SECS", value_parser = parse_seconds, allow_negative_numbers = true)]
    duration: Option<f64>,
    /// Repeat iterations until SIGINT or SIGTERM
    #[arg(long, conflicts_with = "duration")]
    forever: bool,
    /// At most this many steps per second per thread (0: no limit)
    #[arg(long, default_value_t = 0)]
    pace: u64,
    /// Microseconds the first worker of each hub computes in each of its slices
    #[arg(long, default_value_t = 0)]
    spin_us: u64,
    /// Before starting: print 'workload: ready pid=PID' on stderr and wait
    #[arg(long, value_enum, default_value_t = Wait::None)]
    wait: Wait,
    /// Before starting (after --wait): wait until every greenlet probe is enabled
    #[arg(long)]
    wait_for_tracer: bool,
    /// Before starting (after --wait-for-tracer): wait until this file exists
    #[arg(long, value_name = "PATH")]
    wait_for_file: Option<PathBuf>,
    /// After printing the report: wait before exiting
    #[arg(long, value_enum, default_value_t = Wait::None)]
    linger: Wait,
    /// At the end (after --linger): replace this program with `sleep SECS` instead of exiting
    #[arg(long, value_name = "SECS")]
    then_exec_sleep: Option<u32>,
    /// Install no settrace tracer: the probes still fire, the report has no events
    #[arg(long)]
    no_trace: bool,
    /// Name every thread's main greenlet (`greenlet::name_main`): its `greenlet:new` probe
    /// and the report carry the name
    #[arg(long, value_name = "NAME")]
    main_name: Option<String>,
    /// Indent the JSON report
    #[arg(long)]
    pretty: bool,
}

/// How to wait for the go-ahead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Wait {
    /// Don't wait
    None,
    /// Wait for a line on stdin (or end of file)
    Stdin,
    /// Wait for SIGUSR1
    Signal,
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a number of seconds"))?;
    if secs.is_finite() && secs > 0.0 && secs < 1e9 {
        Ok(secs)
    } else {
        Err(format!("'{text}' is not a positive number of seconds"))
    }
}

/// The options every thread runs with.
#[derive(Clone, Debug, Serialize)]
struct Config {
    threads: u32,
    greenlets: u32,
    switches: u64,
    throws: u64,
    kills: u32,
    iterations: u64,
    seed: u64,
    duration: Option<f64>,
    forever: bool,
    pace: u64,
    spin_us: u64,
    /// Whether a settrace tracer counted the events (not with `--no-trace`).
    trace: bool,
    /// The name of every thread's main greenlet (`--main-name`; none by default).
    main_name: Option<&'static str>,
}

impl Config {
    /// Whether iterations repeat until a deadline or a signal rather than a count.
    fn timed(&self) -> bool {
        self.forever || self.duration.is_some()
    }
}

/// Serialises an outcome by its name (`greenlet::probes::Outcome::name`).
fn outcome_name<S: serde::Serializer>(o: &Option<Outcome>, s: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&o.map(Outcome::name), s)
}

/// Serialises a count per outcome as a map keyed by the outcomes' names.
fn by_outcome_name<S: serde::Serializer>(
    counts: &BTreeMap<Outcome, u64>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(counts.iter().map(|(o, n)| (o.name(), n)))
}

/// A greenlet the workload created (or a thread's main greenlet).
#[derive(Clone, Debug, Serialize)]
struct GreenletRecord {
    id: u64,
    name: &'static str,
    parent: u64,
    thread: u32,
    tid: i32,
    main: bool,
    #[serde(serialize_with = "outcome_name")]
    outcome: Option<Outcome>,
}

/// One thread's records: its greenlets and what its tracer saw.
#[derive(Default)]
struct Book {
    thread: u32,
    tid: i32,
    greenlets: Vec<GreenletRecord>,
    index: HashMap<u64, usize>,
    edges: HashMap<(u64, u64, EventKind), u64>,
    /// id -> (slices, total ns) of a spinning worker, timed from inside.
    spun: BTreeMap<u64, (u64, u64)>,
}

impl Book {
    fn born(&mut self, id: u64, name: &'static str, parent: u64, main: bool) {
        self.index.insert(id, self.greenlets.len());
        self.greenlets.push(GreenletRecord {
            id,
            name,
            parent,
            thread: self.thread,
            tid: self.tid,
            main,
            outcome: None,
        });
    }

    fn outcome(&self, id: u64) -> Option<Outcome> {
        self.greenlets[self.index[&id]].outcome
    }

    fn died(&mut self, id: u64, outcome: Outcome) {
        let record = &mut self.greenlets[self.index[&id]];
        debug_assert!(record.outcome.is_none(), "greenlet {id} died twice");
        record.outcome = Some(outcome);
    }
}

type SharedBook = Rc<RefCell<Book>>;

/// What the hub tells a worker.
enum Cmd {
    /// Yield back to the hub (your parent).
    Work,
    /// Switch to this other worker, which yields back to the hub.
    Pass(Greenlet),
    /// Finish: return, fail or panic.
    Finish(Fate),
}

#[derive(Clone, Copy, Debug)]
enum Fate {
    Return,
    Fail,
    Panic,
}

/// The errors and the panic the workload raises on purpose.
#[derive(Debug)]
enum Planned {
    /// Thrown into a worker, which catches it.
    Throw,
    /// Returned by a worker told to fail; the hub expects it.
    Fail,
}

impl std::fmt::Display for Planned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Planned::Throw => f.write_str("planned throw"),
            Planned::Fail => f.write_str("planned failure"),
        }
    }
}

impl std::error::Error for Planned {}

/// The payload of the planned panics; the panic hook keeps quiet about it.
struct PlannedPanic;

/// splitmix64: a small deterministic generator for `--seed`.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, thread: u32) -> Rng {
        Rng(seed ^ (u64::from(thread) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// When a thread should stop starting new steps and iterations.
struct Stop {
    deadline: Option<Instant>,
    signalled: Arc<AtomicBool>,
}

impl Stop {
    fn now(&self) -> bool {
        self.signalled.load(Ordering::Relaxed) || self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// Limits a thread to `pace` steps per second.
struct Pacer {
    pace: u64,
    start: Instant,
    steps: u64,
}

impl Pacer {
    fn step(&mut self) {
        if self.pace == 0 {
            return;
        }
        self.steps += 1;
        let due = self.start + Duration::from_secs_f64(self.steps as f64 / self.pace as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }
}

/// Everything a thread's greenlets share.
struct ThreadCtx {
    cfg: Config,
    book: SharedBook,
    rng: RefCell<Rng>,
    stop: Stop,
    pacer: RefCell<Pacer>,
}

/// Creates a greenlet whose death the book records from inside: what its `run` returned, or
/// that it panicked.
fn spawn<F, R>(ctx: &Rc<ThreadCtx>, name: &'static str, parent: &Greenlet, run: F) -> Greenlet
where
    F: FnOnce(Value) -> Result<R, Error> + 'static,
    R: 'static,
{
    let book = ctx.book.clone();
    let g = Greenlet::builder()
        .name(name)
        .parent(parent)
        .build(move |value: Value| {
            let me = getcurrent().id();
            let result = panic::catch_unwind(AssertUnwindSafe(|| run(value)));
            let outcome = match &result {
                Ok(Ok(_)) => Outcome::Returned,
                Ok(Err(e)) if e.is_exit() => Outcome::Exit,
                Ok(Err(_)) => Outcome::Error,
                Err(_) => Outcome::Panic,
            };
            book.borrow_mut().died(me, outcome);
            match result {
                Ok(r) => r,
                Err(payload) => panic::resume_unwind(payload),
            }
        });
    ctx.book.borrow_mut().born(g.id(), name, parent.id(), false);
    g
}

fn yield_to_parent() -> Result<Value, Error> {
    let parent = getcurrent().parent().expect("a worker always has a parent");
    parent.switch(())
}

fn unexpected(what: impl std::fmt::Display) -> Error {
    Error::msg(format!("unexpected {what}"))
}

/// What `--spin-us` makes the first worker of a hub do each time it gets control: compute
/// for `each`, and book the slice and the time it measured.
struct Spinner {
    each: Duration,
    book: SharedBook,
}

impl Spinner {
    fn slice(&self) {
        let start = Instant::now();
        while start.elapsed() < self.each {
            std::hint::spin_loop();
        }
        let ns = start.elapsed().as_nanos() as u64;
        let mut book = self.book.borrow_mut();
        let spun = book.spun.entry(getcurrent().id()).or_default();
        spun.0 += 1;
        spun.1 += ns;
    }
}

/// A worker: obeys the hub's commands until told to finish or killed; with a spinner, spins
/// each time it gets control.
fn worker(first: Value, spinner: Option<Spinner>) -> Result<(), Error> {
    let mut arrival: Result<Value, Error> = Ok(first);
    loop {
        if let Some(spinner) = &spinner {
            spinner.slice();
        }
        let cmd = match arrival {
            Ok(value) => value
                .downcast::<Cmd>()
                .map_err(|_| unexpected("value sent to a worker"))?,
            Err(e) if e.is_exit() => return Err(e),
            Err(e) if matches!(e.downcast_ref::<Planned>(), Some(Planned::Throw)) => Cmd::Work,
            Err(e) => return Err(e),
        };
        arrival = match cmd {
            Cmd::Work => yield_to_parent(),
            // `next` is released as soon as someone switches back here.
            Cmd::Pass(next) => next.switch(Cmd::Work),
            Cmd::Finish(Fate::Return) => return Ok(()),
            Cmd::Finish(Fate::Fail) => return Err(Error::user(Planned::Fail)),
            Cmd::Finish(Fate::Panic) => panic::panic_any(PlannedPanic),
        };
    }
}

/// Expects a worker to have yielded back to the hub with a unit value.
fn expect_yield(result: Result<Value, Error>) -> Result<(), Error> {
    match result {
        Ok(v) if v.is_unit() => Ok(()),
        Ok(_) => Err(unexpected("value from a worker")),
        Err(e) => Err(e),
    }
}

/// One iteration, run by the hub (see the module docs).
fn hub(ctx: Rc<ThreadCtx>) -> Result<(), Error> {
    let cfg = &ctx.cfg;
    let me = getcurrent();
    let n = cfg.greenlets as usize;
    let mut workers: Vec<Option<Greenlet>> = (0..n)
        .map(|j| {
            let spinner = (j == 0 && cfg.spin_us > 0).then(|| Spinner {
                each: Duration::from_micros(cfg.spin_us),
                book: ctx.book.clone(),
            });
            Some(spawn(&ctx, "worker", &me, move |first| {
                worker(first, spinner)
            }))
        })
        .collect();
    let worker = |workers: &[Option<Greenlet>], j: usize| -> Greenlet {
        workers[j].clone().expect("a live worker")
    };

    // Start every worker; each yields straight back.
    for j in 0..n {
        expect_yield(worker(&workers, j).switch(Cmd::Work))?;
    }
    expect_yield(me.switch(()))?; // a switch to yourself is traced too

    // A greenlet killed before it ever ran, and one dropped before it ever ran: the last
    // greenlets of the iteration.
    let unborn = spawn(&ctx, "unborn", &me, |_| Ok(()));
    let exit = unborn.kill()?;
    if !unborn.is_dead() || !exit.is::<greenlet::GreenletExit>() {
        return Err(unexpected("survivor: the unborn greenlet"));
    }
    ctx.book.borrow_mut().died(unborn.id(), Outcome::Exit);
    let discarded = spawn(&ctx, "discarded", &me, |_| Ok(()));
    ctx.book
        .borrow_mut()
        .died(discarded.id(), Outcome::Discarded);
    drop(discarded);

    // The steps: switches and throws interleaved evenly.
    let total = cfg.switches + cfg.throws;
    let (mut switches, mut throws) = (0_u64, 0_u64);
    for step in 0..total {
        if cfg.timed() && ctx.stop.now() {
            break;
        }
        let throw = throws * total < cfg.throws * (step + 1);
        let j = if cfg.seed == 0 {
            (step % n as u64) as usize
        } else {
            ctx.rng.borrow_mut().below(n as u64) as usize
        };
        let target = worker(&workers, j);
        if throw {
            throws += 1;
            expect_yield(target.throw(Error::user(Planned::Throw)))?;
        } else {
            let pass = n > 1
                && if cfg.seed == 0 {
                    switches % 4 == 3
                } else {
                    ctx.rng.borrow_mut().below(4) == 0
                };
            switches += 1;
            let cmd = if pass {
                Cmd::Pass(worker(&workers, (j + 1) % n))
            } else {
                Cmd::Work
            };
            expect_yield(target.switch(cmd))?;
        }
        ctx.pacer.borrow_mut().step();
    }

    // Flush: every worker resumes once, releasing any handle it got in a pass.
    for j in 0..n {
        expect_yield(worker(&workers, j).switch(Cmd::Work))?;
    }

    // Kills: drop the last handle of the last `kills` workers.
    let kills = cfg.kills as usize;
    for slot in &mut workers[n - kills..] {
        let victim = slot.take().expect("a live worker");
        let id = victim.id();
        drop(victim);
        if ctx.book.borrow().outcome(id) != Some(Outcome::Exit) {
            return Err(unexpected(format!(
                "survivor: dropping worker {id} did not kill it"
            )));
        }
    }

    // Finishes: return, fail, panic, return, ...
    for (k, slot) in workers[..n - kills].iter_mut().enumerate() {
        let w = slot.take().expect("a live worker");
        let fate = [Fate::Return, Fate::Fail, Fate::Panic][k % 3];
        let result = panic::catch_unwind(AssertUnwindSafe(|| w.switch(Cmd::Finish(fate))));
        let as_planned = match (fate, result) {
            (Fate::Return, Ok(Ok(v))) => v.is_unit(),
            (Fate::Fail, Ok(Err(e))) => matches!(e.downcast_ref::<Planned>(), Some(Planned::Fail)),
            (Fate::Panic, Err(payload)) => payload.is::<PlannedPanic>(),
            _ => false,
        };
        if !as_planned || !w.is_dead() {
            return Err(unexpected(format!("end of worker {} ({fate:?})", w.id())));
        }
    }
    Ok(())
}

/// What a thread hands back to the main thread.
struct ThreadReport {
    index: u32,
    tid: i32,
    main: u64,
    iterations: u64,
    greenlets: Vec<GreenletRecord>,
    edges: HashMap<(u64, u64, EventKind), u64>,
    spun: BTreeMap<u64, (u64, u64)>,
}

fn run_thread(index: u32, cfg: Config, stop: Stop) -> Result<ThreadReport, String> {
    let tid = nix::unistd::gettid().as_raw();
    let book: SharedBook = Rc::new(RefCell::new(Book {
        thread: index,
        tid,
        ..Book::default()
    }));
    // The main greenlet is named (or not) by the first call into the runtime, which creates
    // it; the tracer goes in next, before any transfer.
    if let Some(name) = cfg.main_name {
        greenlet::name_main(name).map_err(|e| format!("thread {index}: {e}"))?;
    }
    if cfg.trace {
        let sink = book.clone();
        settrace(Some(Tracer::new(move |event| {
            let key = (event.origin().id(), event.target().id(), event.kind());
            *sink.borrow_mut().edges.entry(key).or_insert(0) += 1;
            Ok(())
        })));
    }
    let main = getcurrent();
    book.borrow_mut()
        .born(main.id(), cfg.main_name.unwrap_or(""), 0, true);

    let ctx = Rc::new(ThreadCtx {
        rng: RefCell::new(Rng::new(cfg.seed, index)),
        pacer: RefCell::new(Pacer {
            pace: cfg.pace,
            start: Instant::now(),
            steps: 0,
        }),
        cfg,
        book: book.clone(),
        stop,
    });
    let mut iterations = 0;
    let result = loop {
        let hub_ctx = ctx.clone();
        let hub = spawn(&ctx, "hub", &main, move |_| hub(hub_ctx));
        if let Err(e) = hub.switch(()) {
            break Err(format!("thread {index}: {e}"));
        }
        iterations += 1;
        let more = if ctx.cfg.timed() {
            !ctx.stop.now()
        } else {
            iterations < ctx.cfg.iterations
        };
        if !more {
            break Ok(());
        }
    };
    let leftover = kill_all();
    settrace(None);
    result?;
    if leftover != 0 {
        return Err(format!(
            "thread {index}: {leftover} greenlets were left suspended"
        ));
    }
    drop(ctx);
    let book = Rc::try_unwrap(book)
        .map_err(|_| format!("thread {index}: the book is still shared"))?
        .into_inner();
    Ok(ThreadReport {
        index,
        tid,
        main: main.id(),
        iterations,
        greenlets: book.greenlets,
        edges: book.edges,
        spun: book.spun,
    })
}

#[derive(Serialize)]
struct Report {
    pid: u32,
    threads: u32,
    config: Config,
    totals: Totals,
    #[serde(serialize_with = "by_outcome_name")]
    deaths: BTreeMap<Outcome, u64>,
    edges: Vec<Edge>,
    per_thread: Vec<PerThread>,
    greenlets: Vec<GreenletRecord>,
    spun: Vec<Spun>,
}

#[derive(Serialize, Default)]
struct Totals {
    switch: u64,
    throw: u64,
    new: u64,
    dead: u64,
}

#[derive(Serialize)]
struct Edge {
    origin: u64,
    target: u64,
    kind: &'static str,
    count: u64,
}

/// The slices of a spinning worker, as it timed them.
#[derive(Serialize)]
struct Spun {
    id: u64,
    slices: u64,
    ns: u64,
}

#[derive(Serialize)]
struct PerThread {
    thread: u32,
    tid: i32,
    main: u64,
    iterations: u64,
    switch: u64,
    throw: u64,
    new: u64,
    dead: u64,
}

fn report(cfg: Config, mut threads: Vec<ThreadReport>) -> Report {
    threads.sort_by_key(|t| t.index);
    let mut totals = Totals::default();
    let mut deaths: BTreeMap<Outcome, u64> = Outcome::ALL.iter().map(|&o| (o, 0)).collect();
    let mut edges = Vec::new();
    let mut per_thread = Vec::new();
    let mut greenlets = Vec::new();
    let mut spun = Vec::new();
    for t in threads {
        let mut row = PerThread {
            thread: t.index,
            tid: t.tid,
            main: t.main,
            iterations: t.iterations,
            switch: 0,
            throw: 0,
            new: 0,
            dead: 0,
        };
        for (&(origin, target, kind), &count) in &t.edges {
            match kind {
                EventKind::Switch => row.switch += count,
                _ => row.throw += count,
            }
            edges.push(Edge {
                origin,
                target,
                kind: kind.as_str(),
                count,
            });
        }
        for mut g in t.greenlets {
            if g.main {
                // The thread has exited (it was joined): its main greenlet died with it.
                g.outcome = Some(Outcome::ThreadExit);
            }
            row.new += 1;
            if let Some(outcome) = g.outcome {
                row.dead += 1;
                *deaths.entry(outcome).or_insert(0) += 1;
            }
            greenlets.push(g);
        }
        spun.extend(
            t.spun
                .iter()
                .map(|(&id, &(slices, ns))| Spun { id, slices, ns }),
        );
        totals.switch += row.switch;
        totals.throw += row.throw;
        totals.new += row.new;
        totals.dead += row.dead;
        per_thread.push(row);
    }
    edges.sort_by(|a, b| (a.origin, a.target, a.kind).cmp(&(b.origin, b.target, b.kind)));
    spun.sort_by_key(|s| s.id);
    Report {
        pid: std::process::id(),
        threads: per_thread.len() as u32,
        config: cfg,
        totals,
        deaths,
        edges,
        per_thread,
        greenlets,
        spun,
    }
}

/// Blocks the signals this process waits for synchronously, in this thread and every thread
/// it spawns later, so they stay pending until someone waits for them.
/// Returns them, to unblock before an exec.
fn block_signals(cli: &Cli) -> Result<SigSet, String> {
    let mut set = SigSet::empty();
    if cli.wait == Wait::Signal || cli.linger == Wait::Signal {
        set.add(Signal::SIGUSR1);
    }
    if cli.forever || cli.duration.is_some() {
        set.add(Signal::SIGINT);
        set.add(Signal::SIGTERM);
    }
    set.thread_block()
        .map_err(|e| format!("cannot block signals: {e}"))?;
    Ok(set)
}

fn wait(how: Wait) -> Result<(), String> {
    match how {
        Wait::None => Ok(()),
        Wait::Stdin => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map(drop)
                .map_err(|e| format!("cannot read stdin: {e}"))
        }
        Wait::Signal => {
            let mut set = SigSet::empty();
            set.add(Signal::SIGUSR1);
            set.wait()
                .map(drop)
                .map_err(|e| format!("cannot wait for SIGUSR1: {e}"))
        }
    }
}

/// Polls `ready` every 10 ms until it holds, for at most a minute.
fn wait_until(what: &str, ready: impl Fn() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        if Instant::now() > deadline {
            return Err(format!("no {what} within 60 s"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Keeps quiet about the planned panics; every other panic is reported as usual.
fn install_panic_hook() {
    let default = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        if !info.payload().is::<PlannedPanic>() {
            default(info);
        }
    }));
}

fn main() -> ExitCode {
    let cli: Cli = cli::parse_or_exit("workload");
    if cli.kills > cli.greenlets {
        return usage_error(&format!(
            "--kills {} is more than --greenlets {}",
            cli.kills, cli.greenlets
        ));
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("workload: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Bad options: one line on stderr, status 2.
fn usage_error(line: &str) -> ExitCode {
    eprintln!("workload: {}", line.trim_start_matches("error: "));
    ExitCode::from(2)
}

fn run(cli: Cli) -> Result<(), String> {
    let cfg = Config {
        threads: cli.threads,
        greenlets: cli.greenlets,
        switches: cli.switches,
        throws: cli.throws,
        kills: cli.kills,
        iterations: cli.iterations,
        seed: cli.seed,
        duration: cli.duration,
        forever: cli.forever,
        pace: cli.pace,
        spin_us: cli.spin_us,
        trace: !cli.no_trace,
        // Leaked once: every thread's records borrow it for the whole run.
        main_name: cli
            .main_name
            .clone()
            .map(|n| &*Box::leak(n.into_boxed_str())),
    };
    install_panic_hook();
    let blocked = block_signals(&cli)?;
    let signalled = Arc::new(AtomicBool::new(false));
    if cfg.timed() {
        let flag = signalled.clone();
        let mut set = SigSet::empty();
        set.add(Signal::SIGINT);
        set.add(Signal::SIGTERM);
        std::thread::Builder::new()
            .name("workload-signals".into())
            .spawn(move || {
                if set.wait().is_ok() {
                    flag.store(true, Ordering::Relaxed);
                }
            })
            .map_err(|e| format!("cannot spawn a thread: {e}"))?;
    }

    if cli.wait != Wait::None {
        eprintln!("workload: ready pid={}", std::process::id());
        wait(cli.wait)?;
    }
    if cli.wait_for_tracer {
        greenlet_workloads::tracer::wait_for_tracer(Duration::from_secs(60))?;
    }
    if let Some(path) = &cli.wait_for_file {
        wait_until("start file", || path.exists())?;
    }
    let deadline = cfg
        .duration
        .map(|s| Instant::now() + Duration::from_secs_f64(s));
    let handles = (0..cfg.threads)
        .map(|index| {
            let cfg = cfg.clone();
            let stop = Stop {
                deadline,
                signalled: signalled.clone(),
            };
            std::thread::Builder::new()
                .name(format!("workload-{index}"))
                .spawn(move || run_thread(index, cfg, stop))
                .map_err(|e| format!("cannot spawn a thread: {e}"))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let mut reports = Vec::new();
    for handle in handles {
        let report = handle
            .join()
            .map_err(|_| "a worker thread panicked".to_string())??;
        reports.push(report);
    }

    let report = report(cfg, reports);
    let json = if cli.pretty {
        serde_json::to_string_pretty(&report)
    } else {
        serde_json::to_string(&report)
    }
    .map_err(|e| format!("cannot encode the report: {e}"))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{json}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write the report: {e}"))?;
    drop(out);
    eprintln!("workload: done");
    wait(cli.linger)?;
    if let Some(secs) = cli.then_exec_sleep {
        // The same process goes on as another program, with the signal mask it started with.
        let _ = blocked.thread_unblock();
        let err = Command::new("sleep").arg(secs.to_string()).exec();
        return Err(format!("cannot exec sleep: {err}"));
    }
    Ok(())
}
