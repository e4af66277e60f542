//! `gltop -p PID --sample` on a Python greenlet process (issue 18): the Python sampler
//! (`loader::pysample`) in the sampled mode's JSON lines and live view.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use gltop::loader::pygreenlet::{self, PyGreenletLayout};
use gltop::loader::pysample::{PySampler, RUNTIME};
use gltop::loader::sample::SampleSnapshot;
use gltop::loader::{self, AttachMode, Process};

use crate::app::{App, Target};
use crate::json::{self, PythonAttach, SampledSource};
use crate::run::{monotonic_ns, run_tui, wait_polling, End, Failure, Signals, Wake};
use crate::{calibrate, Args};

/// The Python greenlet layout of process `pid` if it is a Python process (`None`: it is
/// not one); a Python process that cannot be sampled is refused, as a misuse.
pub(crate) fn detect(pid: i32) -> Result<Option<PyGreenletLayout>, Failure> {
    let process = Process::find(pid)?;
    pygreenlet::detect(pid).map_err(|e| {
        Failure::Attach(loader::Error::CannotSample {
            pid,
            comm: process.comm.clone(),
            reason: e.to_string(),
        })
    })
}

fn source<'a>(sampler: &'a PySampler, args: &Args) -> SampledSource<'a> {
    let l = sampler.layout();
    SampledSource {
        process: sampler.process(),
        runtime: RUNTIME,
        hz: args.hz,
        cpus: sampler.cpus(),
        block_ms: None,
        new_sites: 0,
        counts_switches: false,
        python: Some(PythonAttach {
            module: l.module.display().to_string(),
            greenlet_version: l.version.clone(),
            python: l.python.clone(),
            module_id: sampler.module_id(),
        }),
    }
}

pub(crate) fn run(
    args: &Args,
    signals: &mut Signals,
    layout: PyGreenletLayout,
) -> Result<End, Failure> {
    let mut sampler = PySampler::attach(args.pid(), layout, &args.sample_options(false))?;
    let per_sample_ns = match args.hit_cost_ns {
        Some(ns) => Some(ns),
        None => calibrate::per_sample_ns(),
    };
    let first = sampler.snapshot()?;
    let first_read_ns = monotonic_ns();
    if args.json {
        let l = sampler.layout();
        eprintln!(
            "gltop: attached to process {} ({}): sampling Python greenlet {} ({}) at {} Hz on {} CPUs, no probe in the switch, {}",
            sampler.process().pid,
            sampler.process().comm,
            l.version.as_deref().unwrap_or("(version unknown)"),
            l.module.display(),
            args.hz,
            sampler.cpus(),
            per_sample_ns.map_or("per-sample cost unknown".into(), |c| format!(
                "{c:.0} ns per sample"
            )),
        );
        run_json(args, &mut sampler, first, per_sample_ns, signals)
    } else {
        let o = sampler.options();
        let target = Target {
            process: sampler.process().clone(),
            mode: AttachMode::Auto,
            sites: 0,
            capacities: o.capacities,
            missing: Vec::new(),
            follow: false,
            sampled: Some((o.hz, sampler.cpus(), 0)),
            block_ms: None,
        };
        let mut app = App::new_sampled(target, per_sample_ns, args.delay, first, first_read_ns);
        let process = sampler.process().clone();
        let sampler = std::cell::RefCell::new(sampler);
        run_tui(
            args,
            &process,
            &mut app,
            signals,
            |app| {
                let snap = sampler.borrow_mut().snapshot()?;
                app.update_sampled(snap, monotonic_ns());
                Ok(())
            },
            || false,
        )
    }
}

fn run_json(
    args: &Args,
    sampler: &mut PySampler,
    mut prev: SampleSnapshot,
    per_sample_ns: Option<f64>,
    signals: &mut Signals,
) -> Result<End, Failure> {
    let interval = Duration::from_secs_f64(args.delay);
    let mut out = io::stdout().lock();
    let mut printed = 0u64;
    let mut next = Instant::now() + interval;
    loop {
        let process = sampler.process().clone();
        let wake = wait_polling(next, &process, signals, None);
        if let Wake::Stop = wake {
            return Ok(End::Done);
        }
        let snap = sampler.snapshot()?;
        let line = json::sampled_line(&source(sampler, args), &prev, &snap, per_sample_ns);
        if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
            return match e.kind() {
                io::ErrorKind::BrokenPipe => Ok(End::Done),
                _ => Err(anyhow::Error::new(e)
                    .context("cannot write to stdout")
                    .into()),
            };
        }
        printed += 1;
        prev = snap;
        if let Wake::TargetExited = wake {
            return Ok(End::TargetExited(process));
        }
        if args.count.is_some_and(|n| printed >= n) {
            return Ok(End::Done);
        }
        next = (next + interval).max(Instant::now());
    }
}
