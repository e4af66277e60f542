//! What watching costs a thread that switches greenlets more than a million times a second,
//! side by side in one run: no tracer, gltop's exact mode (a uprobe in every switch, with the
//! blocking detector beside it at 99 Hz, as `gltop -p PID` runs), and the sampled mode at
//! 99 and 999 Hz (`gltop -p PID --sample --hz N`: a cpu-clock sample per 1/N s, sched_switch,
//! the `new` probe), and at 10 kHz, where one sample's cost stands out of the noise.
//!
//! This process is the target: its main greenlet and a child switch back and forth a fixed
//! number of times, and the thread's CPU time per switch (user + system: a uprobe trap and a
//! sample's interrupt are charged to the thread they stop) is compared. Variants run in
//! turns, rounds times, and the least of each is kept: other load on a shared machine only
//! ever adds time. The exact mode does a fiftieth of the switches (each costs about a
//! microsecond more there).
//!
//! `cargo run --release -p gltop --example tracer_cost [-- --rounds N] [--json]` (needs root);
//! part of `make bench`.

use std::time::Instant;

use gltop::loader::sample::{SampleOptions, Sampler};
use gltop::loader::{AttachMode, Options, Session};
use greenlet::{getcurrent, Error, Greenlet, Value};
use nix::time::{clock_gettime, ClockId};

fn thread_cpu_ns() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).expect("thread CPU clock");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// The main greenlet and a child switching back and forth: `rounds` round trips are
/// `2 * rounds` switches; the thread CPU time they took.
fn ping_pong(child: &Greenlet, rounds: u64) -> u64 {
    let start = thread_cpu_ns();
    for _ in 0..rounds {
        child.switch(()).expect("the child answers");
    }
    thread_cpu_ns() - start
}

/// What is attached during one measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    None,
    Exact,
    Sample(u32),
}

impl Variant {
    fn label(self) -> String {
        match self {
            Variant::None => "no tracer".into(),
            Variant::Exact => "exact (uprobe per switch)".into(),
            Variant::Sample(hz) => format!("--sample --hz {hz}"),
        }
    }
}

/// Attachments held while measuring (dropped to detach).
type Held = (Option<Session>, Option<Sampler>);

fn attach(v: Variant) -> Held {
    let pid = std::process::id() as i32;
    let sampler = |hz: u32, names: bool| {
        Sampler::attach(
            pid,
            &SampleOptions {
                hz,
                names,
                ..SampleOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("cannot attach the sampler: {e}"))
    };
    match v {
        Variant::None => (None, None),
        Variant::Exact => {
            let opts = Options {
                mode: AttachMode::Uprobe,
                ..Options::default()
            };
            let s = Session::attach(pid, &opts)
                .unwrap_or_else(|e| panic!("cannot attach the probes: {e}"));
            (Some(s), Some(sampler(99, false)))
        }
        Variant::Sample(hz) => (None, Some(sampler(hz, true))),
    }
}

fn main() {
    let mut rounds = 9usize;
    let mut json = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .unwrap_or_else(|| {
                        eprintln!("tracer_cost: --rounds takes a positive integer");
                        std::process::exit(2)
                    })
            }
            "--json" => json = true,
            other => {
                eprintln!("tracer_cost: unexpected argument {other:?} (--rounds N, --json)");
                std::process::exit(2)
            }
        }
    }
    if std::env::var_os("GLTOP_DEBUG").is_none() {
        libbpf_rs::set_print(None);
    }
    let main_greenlet = getcurrent();
    let child = Greenlet::new(move |_: Value| -> Result<(), Error> {
        loop {
            main_greenlet.switch(())?;
        }
    });
    child.switch(()).expect("the child starts");
    // About a fifth of a second of switching per measurement, unattached.
    ping_pong(&child, 100_000);
    let probe = 1_000_000;
    let ns = ping_pong(&child, probe);
    let n = (probe as f64 * 0.2e9 / ns.max(1) as f64) as u64;
    let variants = [
        Variant::None,
        Variant::Exact,
        Variant::Sample(99),
        Variant::Sample(999),
        Variant::Sample(10_000),
    ];
    // Nanoseconds of thread CPU per switch, per round.
    let mut per_switch: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let started = Instant::now();
    for _ in 0..rounds {
        for (i, &v) in variants.iter().enumerate() {
            let m = if v == Variant::Exact { n / 50 } else { n };
            let held = attach(v);
            ping_pong(&child, m / 20); // warm up
            let ns = ping_pong(&child, m);
            drop(held);
            per_switch[i].push(ns as f64 / (2 * m) as f64);
        }
    }
    let best: Vec<f64> = per_switch
        .iter()
        .map(|v| v.iter().copied().fold(f64::INFINITY, f64::min))
        .collect();
    let base = best[0];
    let switches = 2 * n;
    if json {
        let items: Vec<String> = variants
            .iter()
            .zip(&best)
            .map(|(v, &b)| {
                format!(
                    "{{\"variant\":\"{}\",\"cpu_ns_per_switch\":{b:.3},\"switches_per_s\":{:.0},\"extra_cpu_pct\":{:.3}}}",
                    v.label(),
                    1e9 / b,
                    (b / base - 1.0) * 100.0
                )
            })
            .collect();
        let per_sample_ns = (best[4] / base - 1.0) * 1e9 / 10_000.0;
        println!(
            "{{\"switches\":{switches},\"rounds\":{rounds},\"per_sample_ns\":{per_sample_ns:.1},\"variants\":[{}]}}",
            items.join(",")
        );
        return;
    }
    println!(
        "What watching costs a thread switching greenlets ({switches} switches per measurement, \
         least of {rounds} rounds, {:.0} s):",
        started.elapsed().as_secs_f64()
    );
    println!(
        "{:<28} {:>14} {:>14} {:>16}",
        "", "CPU/switch", "switches/s", "extra CPU"
    );
    for (v, &b) in variants.iter().zip(&best) {
        println!(
            "{:<28} {:>12.2}ns {:>14.0} {:>15.2}%",
            v.label(),
            b,
            1e9 / b,
            (b / base - 1.0) * 100.0
        );
    }
    // At 99 and 999 Hz the difference is smaller than what a shared VM's noise does to a
    // thread's CPU time; at 10 kHz it is not: the cost of one sample from there, times the
    // rate, is what the sampled mode's header shows.
    let extra_10k = best[4] / base - 1.0;
    let per_sample_ns = extra_10k * 1e9 / 10_000.0;
    println!(
        "one sample costs the thread {per_sample_ns:.0} ns (from 10 kHz): at 99 Hz {:.3}% of a busy CPU, at 999 Hz {:.2}%",
        per_sample_ns * 99.0 / 1e7,
        per_sample_ns * 999.0 / 1e7,
    );
}
