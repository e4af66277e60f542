//! A program that forks while it may be traced, for gltop's fork tests. One thread ping-pongs
//! two greenlets (main and `pong`), counting every transfer with `settrace`; then it forks,
//! and the child does the same. Each process prints one JSON line on stdout when it ends:
//!
//! ```text
//! {"role": "parent"|"child", "pid": N, "ppid": N, "switches": N, "throws": N,
//!  "baseline_ns": X|null, "during_ns": X|null, "after_ns": X|null}
//! ```
//!
//! `switches` and `throws` are what settrace saw in that process (the child's from the fork
//! on). The `*_ns` fields are the cost of one switch, timed in batches of the same ping-pong
//! loop (the fastest batch): `baseline_ns` in the parent before any tracer (`--sync-dir`
//! only), `during_ns` in the child right after its counted rounds (while the parent may still
//! be traced), `after_ns` in both once the file `DIR/detached` exists.
//!
//! With `--sync-dir DIR`: the parent creates `DIR/baseline` once `baseline_ns` is measured;
//! the child creates `DIR/child-measured` once `during_ns` is; both wait for `DIR/detached`
//! before measuring `after_ns`. The parent waits for its child before it exits.
//!
//! ```text
//! forker --rounds 1000 --wait-for-tracer --sync-dir /tmp/x
//! ```

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Parser;
use greenlet::{getcurrent, settrace, EventKind, Greenlet, Tracer};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult};

use greenlet_workloads::cli;

#[derive(Clone, Debug, Parser)]
struct Args {
    /// Counted round trips (two switches each) in the parent before the fork, and in the
    /// child after it.
    #[arg(long, default_value_t = 1000)]
    rounds: u64,
    /// Timed batches per measurement.
    #[arg(long, default_value_t = 30)]
    batches: u32,
    /// Round trips per timed batch.
    #[arg(long, default_value_t = 2000)]
    batch: u64,
    /// Start the counted rounds only once all greenlet probes are enabled.
    #[arg(long)]
    wait_for_tracer: bool,
    /// Directory of the files that order the phases (see the module documentation).
    #[arg(long, value_name = "DIR")]
    sync_dir: Option<PathBuf>,
}

/// Polls `ready` every 5 ms for up to two minutes; exits the process if it never holds.
fn wait(what: &str, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready() {
        if Instant::now() > deadline {
            eprintln!("forker: no {what} within 120 s");
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn touch(path: &Path) {
    if let Err(e) = std::fs::write(path, b"") {
        eprintln!("forker: cannot create {}: {e}", path.display());
        std::process::exit(1);
    }
}

/// Transfers settrace saw in this process.
#[derive(Default)]
struct Counts {
    switches: Cell<u64>,
    throws: Cell<u64>,
}

/// The ping-pong partner of the main greenlet: it switches back at once, forever.
fn pong() -> Greenlet {
    let main = getcurrent();
    Greenlet::new(move |_| -> Result<(), greenlet::Error> {
        loop {
            main.switch(())?;
        }
    })
}

/// `n` round trips main -> pong -> main.
fn ping(pong: &Greenlet, n: u64) {
    for _ in 0..n {
        if let Err(e) = pong.switch(()) {
            eprintln!("forker: {e}");
            std::process::exit(1);
        }
    }
}

/// Nanoseconds per switch: the fastest of `batches` batches of `batch` round trips.
fn time_switch(pong: &Greenlet, args: &Args) -> f64 {
    (0..args.batches)
        .map(|_| {
            let start = Instant::now();
            ping(pong, args.batch);
            start.elapsed().as_nanos() as f64 / (2 * args.batch) as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// Ends `pong` (GreenletExit thrown into it: one throw and its return, both traced), so that
/// no transfer happens after the report, when the process exits.
fn end(pong: &Greenlet) {
    if let Err(e) = pong.kill() {
        eprintln!("forker: cannot end pong: {e}");
        std::process::exit(1);
    }
}

fn report(role: &str, counts: &Counts, ns: [Option<f64>; 3]) {
    let line = serde_json::json!({
        "role": role,
        "pid": std::process::id(),
        "ppid": nix::unistd::getppid().as_raw(),
        "switches": counts.switches.get(),
        "throws": counts.throws.get(),
        "baseline_ns": ns[0],
        "during_ns": ns[1],
        "after_ns": ns[2],
    });
    println!("{line}");
}

fn main() {
    let args: Args = cli::parse_or_exit("forker");
    let counts = Rc::new(Counts::default());
    let sink = counts.clone();
    settrace(Some(Tracer::new(move |ev| {
        match ev.kind() {
            EventKind::Switch => sink.switches.set(sink.switches.get() + 1),
            _ => sink.throws.set(sink.throws.get() + 1),
        }
        Ok(())
    })));
    let pong = pong();
    let file = |name: &str| args.sync_dir.as_ref().map(|d| d.join(name));
    let mut baseline = None;
    if let Some(path) = file("baseline") {
        baseline = Some(time_switch(&pong, &args));
        touch(&path);
    }
    if args.wait_for_tracer {
        if let Err(e) = greenlet_workloads::tracer::wait_for_tracer(Duration::from_secs(120)) {
            eprintln!("forker: {e}");
            std::process::exit(1);
        }
    }
    ping(&pong, args.rounds);
    // SAFETY: the process has one thread (nothing was spawned), so the child may run any
    // code; it exits through `std::process::exit` and never returns into the parent's frames.
    match unsafe { fork() } {
        Err(e) => {
            eprintln!("forker: fork failed: {e}");
            std::process::exit(1);
        }
        Ok(ForkResult::Child) => {
            // The child's counts start at the fork.
            counts.switches.set(0);
            counts.throws.set(0);
            ping(&pong, args.rounds);
            let during = Some(time_switch(&pong, &args));
            let mut after = None;
            if let Some(path) = file("child-measured") {
                touch(&path);
                let detached = file("detached").expect("sync_dir is set");
                wait("detached file", || detached.exists());
                after = Some(time_switch(&pong, &args));
            }
            end(&pong);
            report("child", &counts, [None, during, after]);
            std::process::exit(0);
        }
        Ok(ForkResult::Parent { child }) => {
            let mut after = None;
            if let Some(detached) = file("detached") {
                wait("detached file", || detached.exists());
                after = Some(time_switch(&pong, &args));
            }
            if let Err(e) = waitpid(child, None) {
                eprintln!("forker: waitpid: {e}");
                std::process::exit(1);
            }
            end(&pong);
            report("parent", &counts, [baseline, None, after]);
            std::process::exit(0);
        }
    }
}
