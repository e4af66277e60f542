//! `gltop`: `top` for greenlets. Attaches BPF programs to the `greenlet` USDT probes of a
//! running process and shows, live, what its greenlets do: a sortable table, a detail view
//! with the slice histogram and the busiest edges, and what the tracing itself costs.
//! `--json` prints one JSON object per interval instead, for scripts and tests.

mod app;
mod calibrate;
mod export;
mod format;
mod json;
mod pyrun;
mod record;
mod run;
mod table;
mod view;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use gltop::loader::{self, AttachMode, Capacities};

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(
    name = "gltop",
    version,
    about = "Live view of the greenlets of a running process, aggregated in the kernel by BPF",
    after_help = "Keys: q quit, j/k or arrows move, g/G top/bottom, s or h/l sort column, i invert, \
                  Enter detail, Esc back, space pause, d dead greenlets (recent, all, none), ? help.\n\
                  Needs CAP_BPF and CAP_PERFMON (or root). The target must be built with the \
                  greenlet crate (USDT provider `greenlet`), or be a CPython process that has \
                  loaded Python's greenlet >= 2.0 (found by itself, no flag).",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Args {
    /// Another command than the live view.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// PID of the process to trace, or several (`-p 1,2` or `-p 1 -p 2`): every one must
    /// exist, or nothing starts; the live view then has a PID column and `p` to show one.
    #[arg(short = 'p', long = "pid", value_name = "PID", value_parser = parse_pid,
          allow_negative_numbers = true, required_unless_present = "exe", value_delimiter = ',',
          action = clap::ArgAction::Append)]
    pub pids: Vec<i32>,

    /// Watch every process that runs the executable file PATH, those running now and those
    /// started later (found within a quarter of a second); runs until a signal. A process is
    /// detached when it exits or execs; --json then drops it, --listen and the live view keep
    /// it for --keep-exited.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["follow", "sample"])]
    pub exe: Option<std::path::PathBuf>,

    /// Also watch every descendant of the -p processes, those running now and those forked
    /// later (found within a quarter of a second), each on its own: a prefork server's
    /// workers, Python ones included. A -p process that cannot be traced itself (a master
    /// without greenlet) is said in one line and its descendants are still watched; runs
    /// while one of the -p processes does.
    #[arg(long, requires = "pids", conflicts_with_all = ["follow", "sample"])]
    pub children: bool,

    /// Several processes (-p A,B, --exe, --children): how long one that exited stays, one by one, in the
    /// live view (its rows, marked PID†) and in the metrics (its --per-pid series and its
    /// gltop_target_info, counted from the first scrape with its final counts); then only its
    /// process name's series keep its counts.
    #[arg(long, value_name = "SECONDS", default_value = "60", value_parser = parse_keep,
          allow_negative_numbers = true)]
    pub keep_exited: f64,

    /// Several processes: at most this many exited ones are kept, one by one (the oldest
    /// exits go first); the live view's header says how many went.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = parse_max_exited,
          allow_negative_numbers = true)]
    pub max_exited: usize,

    /// Refresh interval in seconds.
    #[arg(short = 'd', long = "delay", value_name = "SECONDS", default_value = "1",
          value_parser = parse_seconds, allow_negative_numbers = true)]
    pub delay: f64,

    /// Print one JSON object per interval on stdout instead of the TUI.
    #[arg(long)]
    pub json: bool,

    /// Stop after this many intervals.
    #[arg(short = 'n', long = "iterations", value_name = "COUNT", value_parser = parse_count,
          allow_negative_numbers = true)]
    pub count: Option<u64>,

    /// Greenlet records the kernel map holds: the live greenlets plus those that end between
    /// two refreshes (ended ones move out at each refresh).
    #[arg(long, value_name = "N", default_value_t = Capacities::default().greenlets,
          value_parser = parse_capacity)]
    pub max_greenlets: u32,

    /// Origin -> target edges the kernel map holds (edges move out with their greenlets).
    #[arg(long, value_name = "N", default_value_t = Capacities::default().edges,
          value_parser = parse_capacity)]
    pub max_edges: u32,

    /// Dead greenlets the live view keeps after they leave the kernel (the oldest are
    /// forgotten, and counted). --json keeps none: each line has those that ended since the
    /// previous one.
    #[arg(long, value_name = "N", default_value_t = 16384, value_parser = parse_max_dead,
          allow_negative_numbers = true)]
    pub max_dead: usize,

    /// How to attach: register-reading uprobes, libbpf's generic USDT decoding, or the
    /// cheapest that the probe sites allow.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = Mode::Auto)]
    pub attach: Mode,

    /// Also watch the processes forked from PID (and from them) after the attach, each as
    /// its own process. The probes are then armed in every process that runs the same
    /// executable file; those not watched pay the trap on each hit (README, "fork and
    /// prefork servers"). Without it a forked child is not watched and, after its first hit
    /// of each probe site, pays nothing.
    #[arg(short = 'f', long)]
    pub follow: bool,

    /// Serve Prometheus metrics on http://ADDR/metrics instead of the TUI, until a signal or
    /// until every process exits. ADDR is IP:PORT, or a PORT on 127.0.0.1 (README,
    /// "Prometheus").
    #[arg(long, value_name = "ADDR", value_parser = export::parse_listen,
          conflicts_with_all = ["json", "count", "follow", "sample"])]
    pub listen: Option<std::net::SocketAddr>,

    /// With --listen: a `pid` label on every series, besides `process`.
    #[arg(long)]
    pub per_pid: bool,

    /// With --listen: series per greenlet name for the first N names of each process (the
    /// busiest first), the others summed under `_other`; N is at most 100.
    #[arg(long, value_name = "N", value_parser = parse_names)]
    pub greenlet_names: Option<usize>,

    /// Cost of one probe hit in nanoseconds, instead of measuring it at start-up (with
    /// --sample: the cost of one sample).
    #[arg(long, value_name = "NS", value_parser = parse_cost, allow_negative_numbers = true)]
    pub hit_cost_ns: Option<f64>,

    /// Sampled mode: no probe in the switch (only `new`, to name greenlets). A cpu-clock
    /// sample reads each thread's running greenlet (CPU shares), sched_switch gives off-CPU
    /// time, the runtime's per-thread counter gives switch rates. Fields this mode cannot
    /// fill show as `-` (null in --json). Needs a target built with a runtime that publishes
    /// its sample layout.
    #[arg(long)]
    pub sample: bool,

    /// Samples per second per CPU, for --sample and for the blocking detector of both modes.
    #[arg(long, value_name = "N", default_value_t = 99, value_parser = parse_hz,
          allow_negative_numbers = true)]
    pub hz: u32,

    /// A greenlet that runs this long without switching (computing, or waiting in a system
    /// call) blocks its thread: the episode is reported (both modes). Greenlets marked idle
    /// (`Builder::idle`) never are.
    #[arg(long, value_name = "MS", default_value_t = 100, value_parser = parse_block_ms,
          allow_negative_numbers = true)]
    pub block_ms: u64,

    /// Print a bpftrace program for PID instead of tracing it: it counts switches and throws
    /// per (origin, target) greenlet, with this process's functions and offsets filled in
    /// (for Python greenlet, read from its _greenlet*.so), until the process exits.
    #[arg(long, conflicts_with_all = ["json", "count", "follow", "sample", "listen", "children"])]
    pub print_bpftrace: bool,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Record per-greenlet CPU profiles by sampling: folded stacks and a flame graph.
    Record(RecordArgs),
}

/// `gltop record` flags.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Samples the user stacks of every thread of PID on each CPU (software cpu-clock \
                  event) and keys them by the greenlet that ran, read from the greenlet runtime's \
                  published layout (no probe in the switch). Each stack is cut at the greenlet's \
                  own bottom frame, so a greenlet's frames never sit under its hub's. Folded \
                  lines are NAME#ID;outermost;...;innermost COUNT (?#ID: created before the \
                  recording). Stacks need frame pointers (README: gltop record): without them \
                  gltop says so and still writes what it got. Stops early, writing what was \
                  collected, on SIGINT or when the target exits. Exit status: 0 written, 1 \
                  nothing sampled, 2 bad input."
)]
pub struct RecordArgs {
    /// PID of the process to record.
    #[arg(short = 'p', long = "pid", value_name = "PID", value_parser = parse_pid,
          allow_negative_numbers = true)]
    pub pid: i32,

    /// How long to record, in seconds.
    #[arg(short = 'd', long = "duration", value_name = "SECONDS",
          value_parser = parse_duration, allow_negative_numbers = true)]
    pub duration: f64,

    /// Samples per second on each CPU.
    #[arg(long, value_name = "N", default_value_t = 99, value_parser = parse_hz,
          allow_negative_numbers = true)]
    pub hz: u32,

    /// Write the folded stacks to FILE.
    #[arg(long, value_name = "FILE")]
    pub folded: std::path::PathBuf,

    /// Also write an SVG flame graph to FILE.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<std::path::PathBuf>,

    /// Keep only this greenlet's samples: its id, or its name.
    #[arg(long, value_name = "ID|NAME")]
    pub greenlet: Option<String>,
}

/// `--attach` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Uprobes when the probe sites and the kernel (uprobe-multi links) allow them, else USDT.
    Auto,
    /// Register-reading uprobes.
    Uprobe,
    /// libbpf USDT argument decoding.
    Usdt,
}

impl Args {
    /// The PID of the TUI and of single-process --json (they watch one process; clap requires
    /// --pid without a subcommand or --exe).
    pub fn pid(&self) -> i32 {
        self.pids[0]
    }

    /// Whether several processes are (or may be) watched, each in its own session: several
    /// `-p`, `--exe` or `--children`.
    pub fn watches_many(&self) -> bool {
        self.exe.is_some() || self.children || self.pids.len() > 1
    }

    /// Loader options from the flags.
    pub fn options(&self) -> loader::Options {
        loader::Options {
            capacities: Capacities {
                greenlets: self.max_greenlets,
                edges: self.max_edges,
                ..Capacities::default()
            },
            mode: match self.attach {
                Mode::Auto => AttachMode::Auto,
                Mode::Uprobe => AttachMode::Uprobe,
                Mode::Usdt => AttachMode::Usdt,
            },
            follow: self.follow,
            ..loader::Options::default()
        }
    }

    /// Sampler options from the flags; `names`: attach the `new` probe (sampled mode).
    pub fn sample_options(&self, names: bool) -> loader::sample::SampleOptions {
        loader::sample::SampleOptions {
            hz: self.hz,
            block_ms: self.block_ms,
            names,
            capacities: Capacities {
                greenlets: self.max_greenlets,
                ..Capacities::default()
            },
        }
    }
}

fn parse_hz(s: &str) -> Result<u32, String> {
    let range = loader::sample::HZ_RANGE;
    match s.parse::<u32>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(format!(
            "a sampling frequency is an integer in {}..={}",
            range.start(),
            range.end()
        )),
    }
}

fn parse_block_ms(s: &str) -> Result<u64, String> {
    let range = loader::sample::BLOCK_MS_RANGE;
    match s.parse::<u64>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(format!(
            "a blocking threshold is an integer number of milliseconds in {}..={}",
            range.start(),
            range.end()
        )),
    }
}

fn parse_pid(s: &str) -> Result<i32, String> {
    match s.parse::<i32>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err("a PID is a positive integer".into()),
    }
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.05..=3600.0).contains(&v) => Ok(v),
        Ok(_) => Err("the interval must be between 0.05 and 3600 seconds".into()),
        Err(_) => Err("not a number of seconds".into()),
    }
}

/// The longest recording: a day.
const MAX_RECORD_SECONDS: f64 = 86400.0;

fn parse_duration(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= MAX_RECORD_SECONDS => Ok(v),
        Ok(_) => Err(format!(
            "a duration is a number of seconds above 0 and at most {MAX_RECORD_SECONDS}"
        )),
        Err(_) => Err("not a number of seconds".into()),
    }
}

fn parse_count(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("a count is a positive integer".into()),
    }
}

fn parse_capacity(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if (1..=Capacities::MAX).contains(&n) => Ok(n),
        _ => Err(format!(
            "a capacity is an integer in 1..={}",
            Capacities::MAX
        )),
    }
}

fn parse_max_dead(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n <= Capacities::MAX as usize => Ok(n),
        _ => Err(format!(
            "a number of dead greenlets is an integer in 0..={}",
            Capacities::MAX
        )),
    }
}

/// The longest `--keep-exited`: a day.
const MAX_KEEP_SECONDS: f64 = 86400.0;

fn parse_keep(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=MAX_KEEP_SECONDS).contains(&v) => Ok(v),
        Ok(_) => Err(format!(
            "a time to keep exited processes is a number of seconds in 0..={MAX_KEEP_SECONDS}"
        )),
        Err(_) => Err("not a number of seconds".into()),
    }
}

/// The largest `--max-exited`.
const MAX_EXITED: usize = 100_000;

fn parse_max_exited(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n <= MAX_EXITED => Ok(n),
        _ => Err(format!(
            "a number of exited processes is an integer in 0..={MAX_EXITED}"
        )),
    }
}

fn parse_names(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=export::metrics::MAX_NAMES).contains(&n) => Ok(n),
        _ => Err(format!(
            "a number of greenlet names is an integer in 1..={}",
            export::metrics::MAX_NAMES
        )),
    }
}

fn parse_cost(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err("a cost is a non-negative number of nanoseconds".into()),
    }
}

/// The first sentence of a clap error, on one line, without clap's `error: ` prefix.
fn one_line(err: &clap::Error) -> String {
    let text = err.render().to_string();
    let mut parts = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with("Usage:") || line.starts_with("For more") {
            break;
        }
        parts.push(line.strip_prefix("error: ").unwrap_or(line).to_string());
    }
    parts.join(" ")
}

/// clap reads a stray word as a subcommand that does not exist (`gltop -p 1 extra`): say
/// what it is, a stray argument, as gltop did before it had subcommands.
fn stray_not_subcommand(line: String) -> String {
    let word = ["unrecognized subcommand '", "the subcommand '"]
        .iter()
        .find_map(|p| line.strip_prefix(p))
        .and_then(|rest| rest.split_once('\'').map(|(w, _)| w.to_string()));
    match word {
        Some(w) if w != "record" && w != "help" => format!("unexpected argument '{w}' found"),
        _ => line,
    }
}

fn main() -> ExitCode {
    if let Some(code) = calibrate::child_main() {
        return code;
    }
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                print!("{}", e.render());
                return ExitCode::SUCCESS;
            }
            eprintln!("gltop: {}", stray_not_subcommand(one_line(&e)));
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Record(rec)) = &args.command {
        return record::main(rec);
    }
    if args.sample && args.attach != Mode::Auto {
        eprintln!("gltop: --sample attaches no switch probe: --attach does not apply to it");
        return ExitCode::from(2);
    }
    if args.sample && args.follow {
        eprintln!("gltop: --sample does not follow forks yet: drop --follow or --sample");
        return ExitCode::from(2);
    }
    if args.follow && args.attach == Mode::Usdt {
        eprintln!("gltop: --follow needs the uprobe attach mode (--attach auto or uprobe)");
        return ExitCode::from(2);
    }
    if let Some((_, pid)) = args
        .pids
        .iter()
        .enumerate()
        .find(|(i, p)| args.pids[..*i].contains(p))
    {
        eprintln!("gltop: PID {pid} is given twice");
        return ExitCode::from(2);
    }
    if args.listen.is_none() && (args.per_pid || args.greenlet_names.is_some()) {
        // Checked here: clap drops a requirement that conflicts with a flag given (--json).
        eprintln!("gltop: --per-pid and --greenlet-names label the metrics of --listen");
        return ExitCode::from(2);
    }
    if let Some(path) = &args.exe {
        if let Err(e) = gltop::loader::process::executable_id(path) {
            eprintln!("gltop: --exe {e}");
            return ExitCode::from(2);
        }
    }
    if let Some(addr) = args.listen {
        return match export::run(&args, addr) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gltop: {e}");
                ExitCode::from(e.exit_code())
            }
        };
    }
    if args.print_bpftrace {
        if args.watches_many() {
            eprintln!("gltop: --print-bpftrace takes one PID (-p), not --exe or --children");
            return ExitCode::from(2);
        }
        return match bpftrace_program(args.pid()) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("gltop: {e}");
                ExitCode::from(2)
            }
        };
    }
    if args.json && args.watches_many() {
        if args.sample || args.follow {
            eprintln!(
                "gltop: several processes in --json are watched in exact mode without --follow"
            );
            return ExitCode::from(2);
        }
        return match run::run_many_json(&args) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gltop: {e}");
                ExitCode::from(e.exit_code())
            }
        };
    }
    if !args.json && !std::io::stdout().is_terminal() {
        // Checked before attaching: the TUI would fail only after the attach and the cost
        // measurement, or draw escape sequences into a file.
        eprintln!(
            "gltop: the live view needs a terminal on stdout; use --json to write to a pipe or a file"
        );
        return ExitCode::from(2);
    }
    if args.watches_many() {
        if args.sample || args.follow {
            eprintln!(
                "gltop: several processes in the live view are watched in exact mode without --follow"
            );
            return ExitCode::from(2);
        }
        return match run::run_many_tui(&args) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gltop: {e}");
                ExitCode::from(e.exit_code())
            }
        };
    }
    match run::run(&args) {
        Ok(run::End::TargetExited(p)) => {
            report_exit(&p);
            ExitCode::SUCCESS
        }
        Ok(run::End::Done) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gltop: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// The bpftrace program of `--print-bpftrace` for process `pid`: for Python greenlet, uprobes
/// with the offsets of its `.so`; for the Rust runtime, its USDT probes.
fn bpftrace_program(pid: i32) -> Result<String, loader::Error> {
    let process = loader::Process::find(pid)?;
    if let Some(py) = loader::python::find(&process)? {
        return Ok(loader::python::bpftrace_program(pid, &py));
    }
    let exe = std::fs::read_link(process.exe()).unwrap_or_else(|_| process.exe());
    let notes = loader::elf::greenlet_sites(&process.exe())?;
    if notes.sites.is_empty() {
        return Err(loader::Error::NoProbes {
            pid,
            comm: process.comm.clone(),
            exe,
        });
    }
    let exe = exe.display();
    Ok(format!(
        "#!/usr/bin/env bpftrace
// Switches and throws per (origin, target) greenlet of process {pid} ({exe}), from the
// greenlet runtime's USDT probes. Made by `gltop -p {pid} --print-bpftrace`; run it as
// root with `bpftrace FILE`; a map holds 4096 pairs unless BPFTRACE_MAP_KEYS_MAX says more
// (in its environment).

BEGIN {{ printf(\"attached to process {pid}\\n\"); }}
usdt:{exe}:greenlet:switch /pid == {pid}/ {{ @switches[arg0, arg1] = count(); }}
usdt:{exe}:greenlet:throw /pid == {pid}/ {{ @throws[arg0, arg1] = count(); }}

// The process's main thread exits: print the counts and stop.
tracepoint:sched:sched_process_exit /pid == {pid} && tid == {pid}/ {{ exit(); }}
"
    ))
}

/// Says, in one line, that a watched process exited or replaced its program.
pub(crate) fn report_exit(p: &loader::Process) {
    if p.has_execed() {
        eprintln!(
            "gltop: process {} ({}) replaced its program (exec): its greenlet probes are gone",
            p.pid, p.comm
        );
    } else {
        eprintln!("gltop: process {} ({}) exited", p.pid, p.comm);
    }
}
