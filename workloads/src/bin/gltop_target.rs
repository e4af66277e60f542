//! A deterministic program for gltop's tests: it waits until a tracer is attached, runs a fixed
//! amount of greenlet traffic on several threads, records what `settrace` saw, and prints
//! those totals as one JSON object on stdout when it exits:
//! `{"switches": N, "throws": N, "edges": [[origin, target, switches, throws], ...],
//! "names": {"id": "name", ...}, "spun": [[id, slices, total ns], ...]}`; `spun` is what the
//! spinning greenlets timed of their own slices, from inside.
//!
//! Each thread's main greenlet creates `--greenlets` named greenlets `t<T>-<I>` and drives a
//! ring: main -> 0 -> 1 -> ... -> last -> main, `--rounds` times. Every `--throw-every`th
//! hop is a `throw` instead of a `switch` (the target catches it and goes on). Greenlet
//! `t<T>-0` computes for `--spin-us` microseconds in each of its slices. At the end every
//! greenlet returns (dead, outcome "returned") and the thread exits.
//!
//! ```text
//! gltop_target --threads 4 --greenlets 8 --rounds 30000 --wait-for-tracer
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Parser;
use greenlet::{getcurrent, settrace, Error, Event, EventKind, Greenlet, Tracer};

use greenlet_workloads::cli;

#[derive(Clone, Debug, Parser)]
struct Args {
    /// Threads.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: u32,
    /// Greenlets per thread besides main.
    #[arg(long, default_value_t = 8)]
    greenlets: u32,
    /// Trips around each thread's ring.
    #[arg(long, default_value_t = 1000)]
    rounds: u64,
    /// Every Nth hop is a throw (0: never).
    #[arg(long, default_value_t = 0)]
    throw_every: u64,
    /// Microseconds greenlet `t<T>-0` computes in each of its slices.
    #[arg(long, default_value_t = 0)]
    spin_us: u64,
    /// Start only once all greenlet probes are enabled.
    #[arg(long)]
    wait_for_tracer: bool,
    /// Start only once this file exists (after --wait-for-tracer, if both are given).
    #[arg(long, value_name = "PATH")]
    wait_for_file: Option<std::path::PathBuf>,
    /// Once the threads have ended, wait this long before the report (their greenlets are
    /// gone, the process lives on).
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    linger: u32,
    /// At the end, replace this program with `sleep SECONDS` (exec) instead of exiting.
    #[arg(long, value_name = "SECONDS")]
    then_exec_sleep: Option<u32>,
}

/// Polls `ready` every 10 ms for up to a minute; exits the process if it never holds.
fn wait(what: &str, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        if Instant::now() > deadline {
            eprintln!("gltop_target: no {what} within 60 s");
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What settrace saw on one thread.
#[derive(Default)]
struct Seen {
    switches: u64,
    throws: u64,
    /// (origin, target) -> (switches, throws)
    edges: BTreeMap<(u64, u64), (u64, u64)>,
    /// id -> name
    names: BTreeMap<u64, String>,
    /// id -> (slices, total ns) of the spinning greenlet, timed from inside: from the moment
    /// it gets control to its next switch out.
    spun: BTreeMap<u64, (u64, u64)>,
}

fn spin(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// Where a hop goes: a switch, or every `throw_every`th hop a throw.
#[derive(Clone)]
struct Hop {
    count: Rc<RefCell<u64>>,
    throw_every: u64,
}

impl Hop {
    fn to(&self, g: &Greenlet) -> Result<(), Error> {
        let n = {
            let mut c = self.count.borrow_mut();
            *c += 1;
            *c
        };
        // Throwing into a greenlet that never started would kill it: those get a switch.
        let r = if self.throw_every != 0 && n % self.throw_every == 0 && g.is_started() {
            g.throw(Error::msg("hop"))
        } else {
            g.switch(())
        };
        match r {
            // A thrown hop arrives as an error: catch it and carry on.
            Ok(_) => Ok(()),
            Err(e) if e.is_exit() => Err(e),
            Err(_) => Ok(()),
        }
    }
}

fn thread_main(t: u32, args: Args) -> Seen {
    let seen = Rc::new(RefCell::new(Seen::default()));
    let sink = seen.clone();
    settrace(Some(Tracer::new(move |ev: &Event| {
        let mut s = sink.borrow_mut();
        let key = (ev.origin().id(), ev.target().id());
        let e = s.edges.entry(key).or_default();
        match ev.kind() {
            EventKind::Switch => {
                e.0 += 1;
                s.switches += 1;
            }
            _ => {
                e.1 += 1;
                s.throws += 1;
            }
        }
        Ok(())
    })));
    let main = getcurrent();
    seen.borrow_mut().names.insert(main.id(), String::new());
    let hop = Hop {
        count: Rc::new(RefCell::new(0)),
        throw_every: args.throw_every,
    };
    // ring[i] switches to ring[i + 1]; the last one back to main.
    let ring: Rc<RefCell<Vec<Greenlet>>> = Rc::new(RefCell::new(Vec::new()));
    for i in 0..args.greenlets {
        let name = format!("t{t}-{i}");
        let (ring2, main2, hop2) = (ring.clone(), main.clone(), hop.clone());
        let seen2 = seen.clone();
        let spin_us = if i == 0 { args.spin_us } else { 0 };
        let rounds = args.rounds;
        let g = Greenlet::builder().name(name.clone()).build(move |_| {
            let next = ring2
                .borrow()
                .get(i as usize + 1)
                .cloned()
                .unwrap_or_else(|| main2.clone());
            for r in 0..rounds {
                let slice = Instant::now();
                spin(Duration::from_micros(spin_us));
                if spin_us > 0 {
                    let ns = slice.elapsed().as_nanos() as u64;
                    let mut s = seen2.borrow_mut();
                    let e = s.spun.entry(getcurrent().id()).or_default();
                    e.0 += 1;
                    e.1 += ns;
                }
                if r + 1 < rounds {
                    hop2.to(&next)?;
                }
            }
            // The last trip ends here: returning goes to the parent (main).
            Ok(())
        });
        seen.borrow_mut().names.insert(g.id(), name);
        ring.borrow_mut().push(g);
    }
    let first = ring.borrow().first().cloned();
    if let Some(first) = first {
        for _ in 0..args.rounds {
            // Each trip starts at greenlet 0 and comes back to main from the last one (or,
            // on the final trip, from the greenlets returning to their parent, main).
            if let Err(e) = hop.to(&first) {
                eprintln!("gltop_target: {e}");
            }
        }
        // Greenlets that returned early to main are dead; switch to the rest until all are.
        for g in ring.borrow().iter() {
            while !g.is_dead() {
                let _ = g.switch(());
            }
        }
    }
    settrace(None);
    drop(ring);
    Rc::try_unwrap(seen)
        .ok()
        .expect("the tracer was removed")
        .into_inner()
}

fn main() {
    let args: Args = cli::parse_or_exit("gltop_target");
    if args.wait_for_tracer {
        wait("tracer attached", greenlet::probes::all_enabled);
    }
    if let Some(path) = &args.wait_for_file {
        wait("start file", || path.exists());
    }
    let threads: Vec<_> = (0..args.threads)
        .map(|t| {
            let args = args.clone();
            std::thread::spawn(move || thread_main(t, args))
        })
        .collect();
    let mut out = Seen::default();
    for h in threads {
        let s = h.join().expect("a worker thread panicked");
        out.switches += s.switches;
        out.throws += s.throws;
        out.edges.extend(s.edges);
        out.names.extend(s.names);
        out.spun.extend(s.spun);
    }
    std::thread::sleep(Duration::from_secs(args.linger.into()));
    let edges: Vec<[u64; 4]> = out
        .edges
        .iter()
        .map(|(&(o, t), &(s, th))| [o, t, s, th])
        .collect();
    let spun: Vec<[u64; 3]> = out.spun.iter().map(|(&id, &(n, ns))| [id, n, ns]).collect();
    let report = serde_json::json!({
        "switches": out.switches,
        "throws": out.throws,
        "edges": edges,
        "names": out.names,
        "spun": spun,
    });
    println!("{report}");
    if let Some(secs) = args.then_exec_sleep {
        use std::os::unix::process::CommandExt;
        let err = std::process::Command::new("sleep")
            .arg(secs.to_string())
            .exec();
        eprintln!("gltop_target: cannot exec sleep: {err}");
        std::process::exit(1);
    }
}
