//! Greenlets that block the thread, on purpose and measured: the scenarios gltop's blocking
//! detection, sampled mode and `record` are tested against (see `src/blocking.rs` for what each
//! one does).
//!
//! ```text
//! cargo run -p greenlet-workloads --bin blocker -- --scenario spin --ms 300
//! ```
//!
//! Everything runs on the process's main thread, whose greenlet runtime is first used after
//! `--wait-for-file` (so a tracer attached meanwhile sees every greenlet created). At the end
//! it prints one JSON line on stdout, then marks the main greenlet idle and lingers
//! `--linger-ms`:
//!
//! ```text
//! {"scenario":"spin","pid":1234,"tid":1234,"main":1,
//!  "greenlets":[{"id":2,"name":"spinner","idle":false}],
//!  "episodes":[{"greenlet":2,"name":"spinner","function":"spin_without_switching",
//!               "syscall":null,"cpu":"on","requested_ms":300,"measured_ns":300000123,
//!               "cpu_ns":299871234,"turn_ns":300012345}],
//!  "work":[],"switches":202,"elapsed_ns":300456789,"thread_cpu_ns":2345678,
//!  "switches_per_s":672.3}
//! ```
//!
//! `measured_ns` is the blocking call's wall time, timed around it inside the greenlet;
//! `turn_ns` is main's wall time around its switch into the greenlet, so the greenlet's
//! whole turn (the call, and the few instructions and any preemption either side of it)
//! lies inside it: a tracer's episode is at most `turn_ns` long.
//! `episodes` has one entry per repetition (`--repeat`), for every scenario but `split`, whose
//! `work` lists each greenlet's turns and CPU work (`busy_ns`: its steps of arithmetic at the
//! rate measured against the thread's CPU clock at start; `share` is
//! its part of the two greenlets' work). `switches` counts every transfer the scenario made;
//! `thread_cpu_ns` is the thread's CPU time over the scenario(s).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use greenlet_workloads::cli;
use serde_json::{json, Value};

#[path = "../blocking.rs"]
#[allow(dead_code)]
mod blocking;

use blocking::Report;

/// Greenlets that block their thread (spin, read, sleep), an idle hub that must not count as
/// blocking, and a 70/30 CPU split; prints a JSON report line.
#[derive(Parser, Debug)]
#[command(name = "blocker", version)]
struct Args {
    /// The scenario to run
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// How long the greenlet blocks (spin, read, sleep; default 300) or the hub waits
    /// (idle-hub; default 1000), in milliseconds
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    ms: Option<u64>,
    /// How long `split` runs, in seconds
    #[arg(long, default_value_t = 5.0, value_parser = seconds)]
    seconds: f64,
    /// Run the scenario this many times in a row (new greenlets each time)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    repeat: u32,
    /// Before starting: wait until this file exists (at most a minute), so that a tracer can
    /// attach first
    #[arg(long, value_name = "PATH")]
    wait_for_file: Option<PathBuf>,
    /// After the report: stay alive this long (the main greenlet marked idle), for tracers to
    /// read what they collected
    #[arg(long, default_value_t = 0, value_name = "MS")]
    linger_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// `seventy` and `thirty` ping-pong with a 70/30 split of CPU work (--seconds)
    Split,
    /// `spinner` computes --ms without switching (spin_without_switching)
    Spin,
    /// `reader` blocks --ms in read(2) on a pipe (read_blocking)
    Read,
    /// `sleeper` blocks --ms in nanosleep (sleep_blocking)
    Sleep,
    /// `hub`, marked idle, sleeps --ms (default 1000) with nothing to do
    IdleHub,
}

fn seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 3600.0 => Ok(s),
        _ => Err(format!(
            "expected a number of seconds in (0, 3600], got {text:?}"
        )),
    }
}

fn main() -> ExitCode {
    let args: Args = cli::parse_or_exit("blocker");
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("blocker: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    // The runtime's thread state exists before a tracer attaches: a sampler finds where it is
    // (the published layout) at once, and sees every scenario from its first instant. Waiting
    // for the tracer is idle by design: the main greenlet is marked so meanwhile.
    let main = greenlet::getcurrent();
    main.set_idle(true);
    if let Some(path) = &args.wait_for_file {
        eprintln!(
            "blocker: pid {} waiting for {}",
            std::process::id(),
            path.display()
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while !path.exists() {
            if Instant::now() > deadline {
                return Err(format!("{} did not appear within 60 s", path.display()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    main.set_idle(false);
    let mut reports = Vec::new();
    for _ in 0..args.repeat {
        let report = match args.scenario {
            Scenario::Split => blocking::split(args.seconds),
            Scenario::Spin => blocking::spin(args.ms.unwrap_or(300)),
            Scenario::Read => blocking::read(args.ms.unwrap_or(300)),
            Scenario::Sleep => blocking::sleep(args.ms.unwrap_or(300)),
            Scenario::IdleHub => blocking::idle_hub(args.ms.unwrap_or(1000)),
        }
        .map_err(|e| format!("the scenario failed: {e}"))?;
        reports.push(report);
    }
    println!("{}", to_json(&reports));
    // Nothing left to do: waiting here is by design, not blocking.
    greenlet::getcurrent().set_idle(true);
    std::thread::sleep(Duration::from_millis(args.linger_ms));
    Ok(())
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One JSON object for all repetitions (they ran on one thread, one after the other).
fn to_json(reports: &[Report]) -> Value {
    let first = &reports[0];
    let greenlets: Vec<Value> = reports
        .iter()
        .flat_map(|r| &r.greenlets)
        .map(|g| json!({"id": g.id, "name": g.name, "idle": g.idle}))
        .collect();
    let episodes: Vec<Value> = reports
        .iter()
        .flat_map(|r| &r.episodes)
        .map(|e| {
            json!({
                "greenlet": e.greenlet,
                "name": e.name,
                "function": e.function,
                "syscall": e.syscall,
                "cpu": if e.on_cpu { "on" } else { "off" },
                "requested_ms": e.requested.as_millis() as u64,
                "measured_ns": ns(e.measured),
                "cpu_ns": ns(e.cpu),
                "turn_ns": ns(e.outer),
            })
        })
        .collect();
    let work: Vec<Value> = reports
        .iter()
        .flat_map(|r| {
            let total: Duration = r.work.iter().map(|w| w.busy).sum();
            r.work.iter().map(move |w| {
                json!({
                    "greenlet": w.greenlet,
                    "name": w.name,
                    "slice_ns": ns(w.slice),
                    "turns": w.turns,
                    "busy_ns": ns(w.busy),
                    "share": if total.is_zero() { 0.0 } else { w.busy.as_secs_f64() / total.as_secs_f64() },
                })
            })
        })
        .collect();
    let switches: u64 = reports.iter().map(|r| r.switches).sum();
    let elapsed: Duration = reports.iter().map(|r| r.elapsed).sum();
    json!({
        "scenario": first.scenario,
        "pid": std::process::id(),
        "tid": first.tid,
        "main": first.main,
        "greenlets": greenlets,
        "episodes": episodes,
        "work": work,
        "switches": switches,
        "elapsed_ns": ns(elapsed),
        "thread_cpu_ns": ns(reports.iter().map(|r| r.cpu).sum()),
        "switches_per_s": switches as f64 / elapsed.as_secs_f64().max(1e-9),
    })
}
