//! `gltop record`: samples the target, then writes the folded stacks and the flame graph.
//!
//! Exit status: 0 when the files are written (also when the target exited early, or when its
//! stacks look like it has no frame pointers: both said in one line on stderr, and the
//! files hold what was collected), 1 when nothing could be sampled or a file could not be
//! written, 2 for bad input (the command line, a PID that is not a greenlet process, a
//! `--greenlet` that matched no sample).

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use gltop::profile::{self, fold, Ending, Folded, GreenletFilter, Options, Recording};

use crate::run::Signals;
use crate::RecordArgs;

/// One line on stderr, prefixed like every gltop message.
pub(crate) fn say(line: impl std::fmt::Display) {
    eprintln!("gltop: {line}");
}

/// Creates (truncating) an output file, as a misuse when it cannot be.
fn create(path: &Path, what: &str) -> Result<File, String> {
    File::create(path).map_err(|e| format!("cannot write the {what} to {}: {e}", path.display()))
}

pub fn main(args: &RecordArgs) -> ExitCode {
    if std::env::var_os("GLTOP_DEBUG").is_none() {
        libbpf_rs::set_print(None);
    }
    // The files are created first: a path that cannot be written is bad input, found
    // before any time goes to recording.
    let folded_file = match create(&args.folded, "folded stacks") {
        Ok(f) => f,
        Err(e) => {
            say(e);
            return ExitCode::from(2);
        }
    };
    let svg_file = match args
        .svg
        .as_deref()
        .map(|p| create(p, "flame graph"))
        .transpose()
    {
        Ok(f) => f,
        Err(e) => {
            say(e);
            return ExitCode::from(2);
        }
    };
    let mut signals = match Signals::block() {
        Ok(s) => s,
        Err(e) => {
            say(format!("cannot block the stop signals: {e:#}"));
            return ExitCode::from(1);
        }
    };
    // A Python greenlet process: its own sampler and Python stacks (issue 18).
    if gltop::loader::Process::find(args.pid).is_ok() {
        match gltop::loader::pygreenlet::detect(args.pid) {
            Ok(Some(layout)) => {
                return crate::pyrun::record(args, layout, folded_file, svg_file, &mut signals)
            }
            Ok(None) => {}
            Err(e) => {
                say(format!("cannot record process {}: {e}", args.pid));
                return ExitCode::from(2);
            }
        }
    }
    let opts = Options {
        pid: args.pid,
        duration: Duration::from_secs_f64(args.duration),
        hz: u64::from(args.hz),
    };
    let rec = profile::record(
        &opts,
        || signals.pending(),
        |p, cpus| {
            say(format!(
                "recording process {} ({}) for {} s at {} Hz on {cpus} CPUs",
                p.pid, p.comm, args.duration, args.hz
            ))
        },
    );
    let rec = match rec {
        Ok(r) => r,
        Err(e) => {
            say(&e);
            return ExitCode::from(match e {
                profile::Error::Loader(_) | profile::Error::Layout(_) => 2,
                _ => 1,
            });
        }
    };
    write_out(args, &rec, folded_file, svg_file)
}

pub(crate) fn write_out(
    args: &RecordArgs,
    rec: &Recording,
    folded_file: File,
    svg: Option<File>,
) -> ExitCode {
    let pid = rec.process.pid;
    if rec.ending == Ending::TargetExited {
        say(format!(
            "process {pid} ({}) exited after {:.1} s: writing what was collected",
            rec.process.comm,
            rec.elapsed.as_secs_f64()
        ));
    }
    if rec.layout_missing {
        say(format!(
            "process {pid}: its greenlet runtime made no thread state during the recording: nothing to sample"
        ));
        return ExitCode::from(1);
    }
    let filter = args.greenlet.clone().map(GreenletFilter);
    let all = Folded::build(&rec.stacks, None);
    let folded = match &filter {
        Some(f) => Folded::build(&rec.stacks, Some(f)),
        None => all.clone(),
    };
    if let Some(f) = &filter {
        if folded.is_empty() && !all.is_empty() {
            say(format!(
                "no samples matched --greenlet {} ({} samples of other greenlets)",
                f.0,
                all.samples()
            ));
            return ExitCode::from(2);
        }
    }
    if let Err(e) = write_file(folded_file, folded.text().as_bytes()) {
        say(format!(
            "cannot write the folded stacks to {}: {e}",
            args.folded.display()
        ));
        return ExitCode::from(1);
    }
    if folded.is_empty() {
        say(format!(
            "no samples of process {pid} in {:.1} s ({} unreadable, {} without a user stack, \
             {} on threads without a greenlet runtime): it did not run on a CPU",
            rec.elapsed.as_secs_f64(),
            rec.lost.unreadable,
            rec.lost.no_stack,
            rec.lost.no_runtime
        ));
        return ExitCode::from(1);
    }
    if let (Some(file), Some(path)) = (svg, &args.svg) {
        let title = format!(
            "gltop record: process {pid} ({}), {:.1} s at {} Hz",
            rec.process.comm,
            rec.elapsed.as_secs_f64(),
            args.hz
        );
        let mut out = io::BufWriter::new(file);
        if let Err(e) = profile::write_svg(&folded, &title, &mut out).and_then(|()| out.flush()) {
            say(format!(
                "cannot write the flame graph to {}: {e}",
                path.display()
            ));
            return ExitCode::from(1);
        }
    }
    if fold::lacks_frame_pointers(&rec.shapes) {
        say(format!(
            "process {pid} looks built without frame pointers: most stacks are a few frames \
             that skip to its threads' roots, so the profile is of innermost frames only \
             (build it with -C force-frame-pointers=yes)"
        ));
    }
    let greenlets = rec
        .stacks
        .iter()
        .filter(|s| {
            filter
                .as_ref()
                .is_none_or(|f| f.matches(s.greenlet, s.name.as_deref()))
        })
        .map(|s| s.greenlet)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let lost = rec.lost.unreadable + rec.lost.no_stack + rec.lost.count_failures;
    say(format!(
        "{} samples of {greenlets} greenlets in {} stacks ({}{}) written to {}{}",
        folded.samples(),
        folded.len(),
        rec.named
            .map_or("each named by its Python type".to_string(), |n| format!(
                "{n} greenlets named by the recording"
            )),
        if lost > 0 {
            format!(", {lost} samples lost")
        } else {
            String::new()
        },
        args.folded.display(),
        args.svg
            .as_ref()
            .map_or(String::new(), |p| format!(" and {}", p.display()))
    ));
    ExitCode::SUCCESS
}

fn write_file(mut file: File, bytes: &[u8]) -> io::Result<()> {
    file.write_all(bytes)?;
    file.flush()
}
