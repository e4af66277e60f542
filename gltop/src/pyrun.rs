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
use crate::{calibrate, Args, RecordArgs};

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
            several: false,
            sampled: Some((o.hz, sampler.cpus(), 0)),
            block_ms: None,
            python: true,
        };
        let mut app = App::new_sampled(target, per_sample_ns, args.delay, first, first_read_ns);
        let process = sampler.process().clone();
        let sampler = std::cell::RefCell::new(sampler);
        run_tui(
            args,
            Some(&process),
            &mut app,
            signals,
            |app| {
                let snap = sampler.borrow_mut().snapshot()?;
                app.update_sampled(snap, monotonic_ns());
                Ok(None)
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

/// `gltop record` on a Python greenlet process: each greenlet's Python stacks (qualified
/// names), first frame `TYPE#ADDR`; where CPython's frames cannot be read (said in one
/// line), each greenlet's samples alone.
pub(crate) fn record(
    args: &RecordArgs,
    layout: PyGreenletLayout,
    folded_file: std::fs::File,
    svg_file: Option<std::fs::File>,
    signals: &mut Signals,
) -> std::process::ExitCode {
    use gltop::loader::pyframes::PyFrameOffsets;
    use gltop::profile::{Ending, Lost, Recording, Stack};
    use std::collections::HashMap;
    use std::process::ExitCode;

    use crate::record::{say, write_out};

    let pid = args.pid;
    let frames = match PyFrameOffsets::find(pid) {
        Ok(f) => Some(f),
        Err(e) => {
            say(format!(
                "no Python stacks for process {pid}: {e}; recording each greenlet's samples only"
            ));
            None
        }
    };
    let opts = gltop::loader::sample::SampleOptions {
        hz: args.hz,
        ..Default::default()
    };
    let mut sampler = match PySampler::attach_with(pid, layout, &opts, frames.as_ref()) {
        Ok(s) => s,
        Err(e) => {
            say(&e);
            return ExitCode::from(2);
        }
    };
    let process = sampler.process().clone();
    say(format!(
        "recording process {} ({}) for {} s at {} Hz on {} CPUs (Python greenlet{})",
        process.pid,
        process.comm,
        args.duration,
        args.hz,
        sampler.cpus(),
        frames.as_ref().map_or(String::new(), |f| format!(
            ", CPython {} frames from {}",
            f.version, f.source
        ))
    ));
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).ok();
    let mut names: HashMap<u64, Option<String>> = HashMap::new();
    // Names are read while the target lives: code objects are looked up as stacks arrive.
    let resolve = |sampler: &PySampler, names: &mut HashMap<u64, Option<String>>| {
        let (Some(f), Some(mem)) = (frames.as_ref(), mem.as_ref()) else {
            return;
        };
        if let Ok((stacks, _)) = sampler.python_stacks() {
            for code in stacks.iter().flat_map(|s| s.code.iter()) {
                names
                    .entry(*code)
                    .or_insert_with(|| f.read_name(mem, *code));
            }
        }
    };
    let start = Instant::now();
    let duration = Duration::from_secs_f64(args.duration);
    let mut last_resolve = start;
    let ending = loop {
        if signals.pending() {
            break Ending::Stopped;
        }
        if !process.is_alive() {
            break Ending::TargetExited;
        }
        if start.elapsed() >= duration {
            break Ending::Done;
        }
        if last_resolve.elapsed() >= Duration::from_millis(500) {
            resolve(&sampler, &mut names);
            last_resolve = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20).min(duration.saturating_sub(start.elapsed())));
    };
    let elapsed = start.elapsed();
    if ending != Ending::TargetExited {
        resolve(&sampler, &mut names);
    }
    let snap = sampler.snapshot();
    let (stacks, totals) = match sampler.python_stacks() {
        Ok(s) => s,
        Err(e) => {
            say(&e);
            return ExitCode::from(1);
        }
    };
    let mut out: Vec<Stack> = Vec::new();
    if frames.is_some() {
        for s in &stacks {
            let mut f: Vec<String> = s
                .code
                .iter()
                .map(|c| {
                    names
                        .get(c)
                        .cloned()
                        .flatten()
                        .unwrap_or_else(|| format!("?{c:#x}"))
                })
                .collect();
            if s.truncated {
                f.push("[deeper frames not kept]".into());
            }
            out.push(Stack {
                greenlet: s.greenlet,
                name: s.type_name.clone(),
                frames: f,
                count: s.count,
            });
        }
    } else if let Ok(snap) = &snap {
        out.extend(snap.greenlets.iter().filter(|g| g.id != 0).map(|g| Stack {
            greenlet: g.id,
            name: g.name.clone(),
            frames: Vec::new(),
            count: g.samples,
        }));
    }
    let rec = Recording {
        process,
        stacks: out,
        shapes: Vec::new(),
        lost: Lost {
            samples: totals.samples,
            no_runtime: totals.no_state,
            unreadable: totals.unreadable,
            no_stack: if frames.is_some() {
                totals.no_tstate + totals.failures
            } else {
                0
            },
            count_failures: 0,
        },
        named: None,
        ending,
        elapsed,
        layout_late: false,
        layout_missing: false,
    };
    write_out(args, &rec, folded_file, svg_file)
}
