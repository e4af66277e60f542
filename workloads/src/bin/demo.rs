//! A small server simulated on greenlets, to watch with `gltop` (`make demo`).
//!
//! Each worker thread runs a gevent-style hub: a `hub` greenlet owns a ready queue and a timer
//! heap and switches to whichever greenlet may run next. An `acceptor` greenlet "accepts"
//! connections at a fixed rate and starts a `conn-N` greenlet for each; a connection serves a
//! few requests, each a simulated I/O wait (a timer) followed by a little CPU work. Some
//! connections are slow: their wait exceeds the timeout, and the hub throws a timeout error
//! into them. Thread 0 also runs a `cpu-hog` that now and then computes for a long slice
//! without switching, starving everything else on its thread, which is what gltop's
//! MAX SLICE column and slice histogram are for.
//!
//! ```text
//! make demo                      # builds it and gltop, starts it, opens gltop on it
//! bash gltop/demo.sh --json -n 5  # the same with gltop's JSON lines instead of the TUI
//! ```
//!
//! `--wait-for-tracer` holds the demo back until every probe is enabled
//! (`greenlet::probes::all_enabled`), so that gltop sees every greenlet from its creation.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::hint::black_box;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::builder::RangedU64ValueParser;
use clap::Parser;
use greenlet::{getcurrent, Error, Greenlet};

use greenlet_workloads::cli;

/// The longest duration any option may ask for, in microseconds: one hour.
const HOUR_US: u64 = 3_600_000_000;

#[derive(Clone, Debug, Parser)]
#[command(about = "A simulated greenlet server to watch with gltop")]
struct Args {
    /// Worker threads, each with its own hub.
    #[arg(long, default_value_t = 2,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=1024))]
    threads: usize,
    /// Connections accepted per second on each thread.
    #[arg(long, default_value_t = 200)]
    conns_per_sec: u64,
    /// Requests served per connection.
    #[arg(long, default_value_t = 20)]
    requests: u32,
    /// Mean simulated I/O wait per request, microseconds.
    #[arg(long, default_value_t = 2000, value_parser = RangedU64ValueParser::<u64>::new().range(0..=HOUR_US))]
    io_us: u64,
    /// CPU work per request, microseconds.
    #[arg(long, default_value_t = 20, value_parser = RangedU64ValueParser::<u64>::new().range(0..=HOUR_US))]
    work_us: u64,
    /// Percentage of connections that are slow (their wait exceeds the timeout).
    #[arg(long, default_value_t = 5)]
    slow_percent: u64,
    /// Timeout of one I/O wait, milliseconds.
    #[arg(long, default_value_t = 50, value_parser = RangedU64ValueParser::<u64>::new().range(0..=HOUR_US / 1000))]
    timeout_ms: u64,
    /// Length of the hog's long slices, milliseconds.
    #[arg(long, default_value_t = 30, value_parser = RangedU64ValueParser::<u64>::new().range(0..=HOUR_US / 1000))]
    hog_slice_ms: u64,
    /// One hog slice in this many is long (1: all); the others take 200 µs.
    #[arg(long, default_value_t = 10)]
    hog_every: u64,
    /// The hog's pause between slices, milliseconds.
    #[arg(long, default_value_t = 5, value_parser = RangedU64ValueParser::<u64>::new().range(0..=HOUR_US / 1000))]
    hog_sleep_ms: u64,
    /// Stop after this many seconds (0: run until killed).
    #[arg(long, default_value_t = 0.0, value_parser = parse_seconds, allow_negative_numbers = true)]
    seconds: f64,
    /// Start serving only once a tracer (gltop, bpftrace) is attached, so that it sees every
    /// greenlet from its creation, names included.
    #[arg(long)]
    wait_for_tracer: bool,
    /// Start serving only once PATH exists (after --wait-for-tracer): for a tracer that
    /// enables only some probes, such as `gltop record`, to see every greenlet created.
    #[arg(long, value_name = "PATH")]
    wait_for_file: Option<std::path::PathBuf>,
}

/// `--seconds`: a finite number from 0 to a billion.
fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if (0.0..=1e9).contains(&s) => Ok(s),
        Ok(_) => Err("not in 0..=1e9 seconds".into()),
        Err(_) => Err("not a number of seconds".into()),
    }
}

/// Waits until something enables all of this process's `greenlet` probes (and the last
/// breakpoint is surely in place: [`greenlet_workloads::tracer::SETTLE`]).
fn wait_for_tracer() {
    while !greenlet::probes::all_enabled() {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(greenlet_workloads::tracer::SETTLE);
}

/// What the hub does to a greenlet when its turn comes.
enum Action {
    /// Resume (or start) it.
    Wake,
    /// Throw a timeout into it.
    Timeout,
}

/// One thread's scheduler, shared by the hub and the greenlets it runs.
#[derive(Default)]
struct Sched {
    ready: VecDeque<(Greenlet, Action)>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    waiting: std::collections::HashMap<u64, (Greenlet, Action)>,
    seq: u64,
}

impl Sched {
    fn at(&mut self, when: Instant, g: Greenlet, action: Action) {
        self.seq += 1;
        self.timers.push(Reverse((when, self.seq)));
        self.waiting.insert(self.seq, (g, action));
    }

    /// Moves due timers to the ready queue; returns the next deadline, if any.
    fn expire(&mut self, now: Instant) -> Option<Instant> {
        while let Some(&Reverse((when, seq))) = self.timers.peek() {
            if when > now {
                return Some(when);
            }
            self.timers.pop();
            if let Some(entry) = self.waiting.remove(&seq) {
                self.ready.push_back(entry);
            }
        }
        None
    }
}

/// A tiny deterministic PRNG (xorshift64*), so the demo needs no extra crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Computes for `d` without switching. Never inlined, so that it shows in sampled stacks
/// (`gltop record`) as the hog's hot function.
#[inline(never)]
fn spin(d: Duration) {
    let start = Instant::now();
    let mut x = 0u64;
    while start.elapsed() < d {
        for i in 0..64 {
            x = black_box(x.wrapping_mul(31).wrapping_add(i));
        }
    }
    black_box(x);
}

/// Everything a greenlet of one thread needs to block.
#[derive(Clone)]
struct Ctx {
    hub: Greenlet,
    sched: Rc<RefCell<Sched>>,
}

impl Ctx {
    /// Blocks the current greenlet for `d`, or until the hub throws a timeout into it when
    /// `d` exceeds `timeout`.
    fn wait(&self, d: Duration, timeout: Duration) -> Result<(), Error> {
        let now = Instant::now();
        let me = getcurrent();
        if d > timeout {
            self.sched
                .borrow_mut()
                .at(now + timeout, me, Action::Timeout);
        } else {
            self.sched.borrow_mut().at(now + d, me, Action::Wake);
        }
        self.hub.switch(())?;
        Ok(())
    }

    fn sleep(&self, d: Duration) -> Result<(), Error> {
        self.wait(d, Duration::MAX)
    }

    fn spawn(&self, g: Greenlet) {
        self.sched.borrow_mut().ready.push_back((g, Action::Wake));
    }
}

fn connection(
    ctx: Ctx,
    args: Args,
    seed: u64,
) -> impl FnOnce(greenlet::Value) -> Result<u32, Error> {
    move |_| {
        let mut rng = Rng(seed | 1);
        let slow = rng.below(100) < args.slow_percent;
        let timeout = Duration::from_millis(args.timeout_ms);
        for served in 0..args.requests {
            let io = if slow {
                timeout * 2
            } else {
                Duration::from_micros(args.io_us / 2 + rng.below(args.io_us.max(1)))
            };
            match ctx.wait(io, timeout) {
                Ok(()) => {}
                // Killed (the demo is ending): leave quietly.
                Err(e) if e.is_exit() => return Err(e),
                // A timeout: give up on this connection, as a server would.
                Err(e) => return Err(Error::msg(format!("request {served}: {e}"))),
            }
            spin(Duration::from_micros(args.work_us));
        }
        Ok(args.requests)
    }
}

fn acceptor(
    ctx: Ctx,
    args: Args,
    thread: usize,
) -> impl FnOnce(greenlet::Value) -> Result<(), Error> {
    move |_| {
        let period = Duration::from_secs_f64(1.0 / args.conns_per_sec.max(1) as f64);
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ thread as u64);
        for n in 0u64.. {
            let conn = Greenlet::builder()
                .name(format!("conn-{thread}-{n}"))
                .parent(&ctx.hub)
                .stack_size(64 << 10)
                .build(connection(ctx.clone(), args.clone(), rng.next()));
            ctx.spawn(conn);
            ctx.sleep(period)?;
        }
        Ok(())
    }
}

fn hog(ctx: Ctx, args: Args) -> impl FnOnce(greenlet::Value) -> Result<(), Error> {
    move |_| {
        for n in 0u64.. {
            let long = n % args.hog_every.max(1) == 0;
            spin(if long {
                Duration::from_millis(args.hog_slice_ms)
            } else {
                Duration::from_micros(200)
            });
            ctx.sleep(Duration::from_millis(args.hog_sleep_ms))?;
        }
        Ok(())
    }
}

/// The hub: runs whatever is ready, sleeps the thread until the next timer otherwise, and
/// returns at `until`.
fn hub_loop(sched: Rc<RefCell<Sched>>, until: Option<Instant>) -> Result<(), Error> {
    loop {
        let now = Instant::now();
        if until.is_some_and(|u| now >= u) {
            return Ok(());
        }
        let next = sched.borrow_mut().expire(now);
        let job = sched.borrow_mut().ready.pop_front();
        match job {
            // A finished greenlet's result (or error, such as a timeout) comes back here,
            // since the hub is every greenlet's parent: nothing more to do with it.
            Some((g, Action::Wake)) => drop(g.switch(())),
            Some((g, Action::Timeout)) => drop(g.throw(Error::msg("timed out"))),
            None => {
                let idle = next.map_or(Duration::from_millis(10), |n| n - now);
                std::thread::sleep(idle.min(Duration::from_millis(10)));
            }
        }
    }
}

fn serve(thread: usize, args: Args, until: Option<Instant>) {
    let sched = Rc::new(RefCell::new(Sched::default()));
    // Idle by design: the hub's sleeps while nothing is ready are not blocking.
    let hub = Greenlet::builder().name("hub").idle(true).build({
        let sched = sched.clone();
        move |_| hub_loop(sched, until)
    });
    let ctx = Ctx {
        hub: hub.clone(),
        sched: sched.clone(),
    };
    let accept = Greenlet::builder()
        .name("acceptor")
        .parent(&hub)
        .build(acceptor(ctx.clone(), args.clone(), thread));
    ctx.spawn(accept);
    if thread == 0 {
        let hog = Greenlet::builder()
            .name("cpu-hog")
            .parent(&hub)
            .build(hog(ctx.clone(), args.clone()));
        ctx.spawn(hog);
    }
    if let Err(e) = hub.switch(()) {
        eprintln!("demo: thread {thread}: hub failed: {e}");
    }
    // Tear the thread's greenlets down the greenlet way before the thread ends.
    drop(ctx);
    sched.borrow_mut().ready.clear();
    sched.borrow_mut().waiting.clear();
    greenlet::kill_all();
}

fn main() {
    let args: Args = cli::parse_or_exit("demo");
    println!("demo: pid {}, {} threads", std::process::id(), args.threads);
    if args.wait_for_tracer {
        println!(
            "demo: waiting for a tracer: gltop -p {}",
            std::process::id()
        );
        wait_for_tracer();
    }
    if let Some(path) = &args.wait_for_file {
        while !path.exists() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let until =
        (args.seconds > 0.0).then(|| Instant::now() + Duration::from_secs_f64(args.seconds));
    let workers: Vec<_> = (0..args.threads.max(1))
        .map(|t| {
            let args = args.clone();
            std::thread::Builder::new()
                .name(format!("worker-{t}"))
                .spawn(move || serve(t, args, until))
                .expect("cannot start a worker thread")
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
}
