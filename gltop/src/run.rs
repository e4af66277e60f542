//! The main loop of both modes: attach, measure the per-hit cost, then refresh every
//! interval until the user quits, a signal arrives, the count is reached or the target exits.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use gltop::loader::rates::DetectorCost;
use gltop::loader::sample::{SampleSnapshot, Sampler, SharedDetector};
use gltop::loader::{self, EdgeStats, GreenletStats, Process, Session, Snapshot};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::app::{App, Key, Target};
use crate::{calibrate, json, view, Args};

/// How a run ended without error.
#[derive(Debug)]
pub enum End {
    /// The traced process exited.
    TargetExited(Process),
    /// The user quit, a signal asked us to stop, or the count was reached.
    Done,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Attaching failed: misuse or an environment problem the user must fix (exit code 2).
    #[error("{0}")]
    Attach(#[from] loader::Error),
    /// Something failed later (exit code 1).
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
    /// Misuse found past the flags, e.g. an address already in use (exit code 2).
    #[error("{0}")]
    Usage(String),
}

impl Failure {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Attach(_) | Failure::Usage(_) => 2,
            Failure::Other(_) => 1,
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP, blocked and read from a non-blocking signalfd so that the
/// loop can detach and restore the terminal before exiting.
pub(crate) struct Signals(SignalFd);

impl Signals {
    pub(crate) fn block() -> anyhow::Result<Signals> {
        let mut mask = SigSet::empty();
        for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
            mask.add(s);
        }
        mask.thread_block()?;
        Ok(Signals(SignalFd::with_flags(
            &mask,
            SfdFlags::SFD_NONBLOCK,
        )?))
    }

    /// Whether a stop signal arrived.
    pub(crate) fn pending(&mut self) -> bool {
        matches!(self.0.read_signal(), Ok(Some(_)))
    }
}

/// CLOCK_MONOTONIC now, in nanoseconds: the clock of the snapshots' instants.
pub(crate) fn monotonic_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available on Linux");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// What the loop waits for between refreshes.
pub(crate) enum Wake {
    Tick,
    Stop,
    TargetExited,
}

/// How often the loop looks at signals and the target while waiting.
const POLL: Duration = Duration::from_millis(50);

pub fn run(args: &Args) -> Result<End, Failure> {
    if std::env::var_os("GLTOP_DEBUG").is_none() {
        // libbpf logs multi-line diagnostics on stderr; gltop reports one line per error.
        libbpf_rs::set_print(None);
    }
    let mut signals = Signals::block()?;
    if args.sample {
        return run_sampled(args, &mut signals);
    }
    let mut session = Session::attach(args.pid(), &args.options())?;
    // The blocking detector beside the probes; a target whose runtime does not publish its
    // sample layout is traced without it. On Python greenlet, it takes each thread's running
    // greenlet from the switch probes' map instead.
    // Its failures never stop the exact mode: it goes on without blocking detection.
    let mut sampler = {
        let opts = args.sample_options(false);
        let attached = match session.python_current_map(args.block_ms) {
            Some(fd) => Sampler::attach_python(args.pid(), &opts, fd),
            None => Sampler::attach(args.pid(), &opts),
        };
        match attached {
            Ok(s) => Some(s),
            Err(loader::Error::CannotSample { reason, .. }) => {
                eprintln!("gltop: no blocking detection: {reason}");
                None
            }
            Err(e) => {
                eprintln!("gltop: no blocking detection: {e}");
                None
            }
        }
    };
    let per_hit_ns = match args.hit_cost_ns {
        Some(ns) => Some(ns),
        None => calibrate::per_hit_ns_of(&session),
    };
    // The detector's samples cost the target too: measured like the sampled mode's, unless
    // the per-hit cost is given (then the cost line names them as not measured).
    let detector = sampler.as_ref().map(|_| {
        DetectorCost::new(match args.hit_cost_ns {
            Some(_) => None,
            None => calibrate::per_sample_ns(),
        })
    });
    let first = session.snapshot()?;
    let first_read_ns = monotonic_ns();
    if args.json {
        eprintln!(
            "gltop: attached to process {} ({}): {} probe sites ({}), {}",
            session.process().pid,
            session.process().comm,
            session.sites(),
            session.mode().as_str(),
            per_hit_ns.map_or("per-hit cost unknown".into(), |c| format!(
                "{c:.0} ns per hit"
            )),
        );
        run_json(
            args,
            &mut session,
            &mut sampler,
            first,
            Costs {
                per_hit_ns,
                detector,
            },
            &mut signals,
        )
    } else {
        let mut target = Target::of(&session);
        target.block_ms = sampler.as_ref().map(|_| args.block_ms);
        let mut app = App::new(
            target,
            per_hit_ns,
            args.delay,
            first,
            first_read_ns,
            args.max_dead,
        );
        app.detector = detector;
        let process = session.process().clone();
        let sampler = std::cell::RefCell::new(sampler);
        run_tui(
            args,
            Some(&process),
            &mut app,
            &mut signals,
            |app| {
                let snap = session.snapshot()?;
                let read = detector_read(&mut sampler.borrow_mut());
                app.update(snap, monotonic_ns());
                if let Some(r) = read {
                    app.update_detector(&r);
                }
                Ok(None)
            },
            || {
                sampler
                    .borrow_mut()
                    .as_mut()
                    .is_some_and(|s| !s.poll_layout().unwrap_or(true))
            },
        )
    }
}

fn run_json(
    args: &Args,
    session: &mut Session,
    sampler: &mut Option<Sampler>,
    mut prev: Snapshot,
    mut costs: Costs,
    signals: &mut Signals,
) -> Result<End, Failure> {
    let interval = Duration::from_secs_f64(args.delay);
    let mut out = io::stdout().lock();
    let mut printed = 0u64;
    let mut next = Instant::now() + interval;
    // The first snapshot only starts the first interval, but the records that ended in it
    // have left the kernel: they go in the first line.
    let mut carried = Some(ended_of(&prev));
    loop {
        let wake = wait_polling(next, session.process(), signals, sampler.as_mut());
        if let Wake::Stop = wake {
            return Ok(End::Done);
        }
        let mut snap = session.snapshot()?;
        if let Some((greenlets, edges)) = carried.take() {
            snap.greenlets.extend(greenlets);
            snap.greenlets.sort_by_key(|g| g.id);
            snap.edges.extend(edges);
            snap.edges.sort_by_key(|e| (e.origin, e.target));
        }
        let blocking = match detector_read(sampler) {
            Some(read) => {
                if let Some(d) = costs.detector.as_mut() {
                    d.read(read.totals.samples, read.at_ns);
                }
                let pid = session.process().pid;
                let names = |id: u64| {
                    snap.greenlet(loader::GreenletKey { pid, id })
                        .map(|g| g.display_name().to_string())
                };
                Some(json::blocking(&read.episodes, names))
            }
            None => None,
        };
        let line = json::interval_line(session, &prev, &snap, &costs, blocking);
        if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
            // A closed pipe (`gltop --json | head -1`) is a normal way to stop.
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
            return Ok(End::TargetExited(session.process().clone()));
        }
        if args.count.is_some_and(|n| printed >= n) {
            return Ok(End::Done);
        }
        next = (next + interval).max(Instant::now());
    }
}

/// What exact mode costs the target: probe hits, and the blocking detector's samples.
pub(crate) struct Costs {
    /// Cost of one probe hit, if known.
    pub(crate) per_hit_ns: Option<f64>,
    /// The detector, when it runs.
    pub(crate) detector: Option<DetectorCost>,
}

/// A read of the exact mode's blocking detector, if it runs; a failure to read it (the
/// target exec'd another program, or is gone) stops it, with one line, and never the probes.
fn detector_read(sampler: &mut Option<Sampler>) -> Option<SampleSnapshot> {
    match sampler.as_mut()?.snapshot() {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("gltop: blocking detection stopped: {e}");
            *sampler = None;
            None
        }
    }
}

/// Sampled mode: attach the sampler alone, measure what a sample costs, then refresh.
fn run_sampled(args: &Args, signals: &mut Signals) -> Result<End, Failure> {
    // A Python process is sampled through greenlet's own thread state (issue 18).
    if let Some(layout) = crate::pyrun::detect(args.pid())? {
        return crate::pyrun::run(args, signals, layout);
    }
    let mut sampler = Sampler::attach(args.pid(), &args.sample_options(true))?;
    let per_sample_ns = match args.hit_cost_ns {
        Some(ns) => Some(ns),
        None => calibrate::per_sample_ns(),
    };
    let first = sampler.snapshot()?;
    let first_read_ns = monotonic_ns();
    if args.json {
        eprintln!(
            "gltop: attached to process {} ({}): sampling at {} Hz on {} CPUs, {} new-probe sites (sample), {}",
            sampler.process().pid,
            sampler.process().comm,
            args.hz,
            sampler.cpus(),
            sampler.new_sites(),
            per_sample_ns.map_or("per-sample cost unknown".into(), |c| format!(
                "{c:.0} ns per sample"
            )),
        );
        run_sampled_json(args, &mut sampler, first, per_sample_ns, signals)
    } else {
        let mut app = App::new_sampled(
            Target::of_sampler(&sampler),
            per_sample_ns,
            args.delay,
            first,
            first_read_ns,
        );
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
            || !sampler.borrow_mut().poll_layout().unwrap_or(true),
        )
    }
}

fn run_sampled_json(
    args: &Args,
    sampler: &mut Sampler,
    mut prev: SampleSnapshot,
    per_sample_ns: Option<f64>,
    signals: &mut Signals,
) -> Result<End, Failure> {
    let interval = Duration::from_secs_f64(args.delay);
    let mut out = io::stdout().lock();
    let mut printed = 0u64;
    let mut next = Instant::now() + interval;
    // Episodes that ended before the first line go in it.
    let mut carried = Some(prev.episodes.clone());
    loop {
        let process = sampler.process().clone();
        let wake = wait_polling(next, &process, signals, Some(sampler));
        if let Wake::Stop = wake {
            return Ok(End::Done);
        }
        let mut snap = sampler.snapshot()?;
        if let Some(early) = carried.take() {
            let ended = early.into_iter().filter(|e| !e.ongoing);
            snap.episodes.splice(0..0, ended);
        }
        let line = json::sampled_line(
            &json::SampledSource::of(sampler),
            &prev,
            &snap,
            per_sample_ns,
        );
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
            return Ok(End::TargetExited(sampler.process().clone()));
        }
        if args.count.is_some_and(|n| printed >= n) {
            return Ok(End::Done);
        }
        next = (next + interval).max(Instant::now());
    }
}

/// The greenlets and edges of `snap` whose records left the kernel with it.
fn ended_of(snap: &Snapshot) -> (Vec<GreenletStats>, Vec<EdgeStats>) {
    (
        snap.greenlets.iter().filter(|g| g.ended).cloned().collect(),
        snap.edges.iter().filter(|e| e.ended).copied().collect(),
    )
}

/// How often a sampler whose target has no runtime thread state yet looks for it.
const LAYOUT_POLL: Duration = Duration::from_millis(2);

/// Waits until `deadline`, watching for stop signals and for the target's exit; and
/// meanwhile, while the sampler's target has not published where its
/// runtime state is, looks for it every [`LAYOUT_POLL`].
pub(crate) fn wait_polling(
    deadline: Instant,
    process: &Process,
    signals: &mut Signals,
    mut sampler: Option<&mut Sampler>,
) -> Wake {
    loop {
        if signals.pending() {
            return Wake::Stop;
        }
        if !process.is_alive() {
            return Wake::TargetExited;
        }
        let now = Instant::now();
        if now >= deadline {
            return Wake::Tick;
        }
        let mut nap = (deadline - now).min(POLL);
        if let Some(s) = sampler.as_deref_mut() {
            // A failure here shows at the next snapshot, which reads the layout again.
            if !s.poll_layout().unwrap_or(true) {
                nap = nap.min(LAYOUT_POLL);
            }
        }
        std::thread::sleep(nap);
    }
}

/// What the terminal has for the TUI.
enum Input {
    Nothing,
    Ready,
    Gone,
}

/// Waits up to `timeout` for terminal input. crossterm keeps reading a terminal that hung up
/// (each read returns end-of-file at once) without ever returning, so the hang-up is caught
/// here first.
fn wait_input(timeout: Duration) -> anyhow::Result<Input> {
    use nix::errno::Errno;
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::io::IsTerminal;
    use std::os::fd::AsFd;

    let stdin = io::stdin();
    if !stdin.is_terminal() {
        // crossterm reads /dev/tty then, which it polls properly.
        let ready = ratatui::crossterm::event::poll(timeout)?;
        return Ok(if ready { Input::Ready } else { Input::Nothing });
    }
    let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
    let t = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, t) {
        Ok(0) | Err(Errno::EINTR) => Ok(Input::Nothing),
        Ok(_) => {
            let events = fds[0].revents().unwrap_or(PollFlags::empty());
            let gone = PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL;
            Ok(if events.intersects(gone) {
                Input::Gone
            } else {
                Input::Ready
            })
        }
        Err(e) => Err(anyhow::Error::new(e).context("cannot poll the terminal")),
    }
}

/// The live view: draws `app`, applies `refresh` every interval and the keys meanwhile
/// (`refresh` may end the run); `looking` is called while waiting, and says whether a
/// sampler is still looking for its target's layout (then it is called again within a few
/// milliseconds). The run ends when `process`, if given, exits.
pub(crate) fn run_tui(
    args: &Args,
    process: Option<&Process>,
    app: &mut App,
    signals: &mut Signals,
    mut refresh: impl FnMut(&mut App) -> Result<Option<End>, Failure>,
    mut looking: impl FnMut() -> bool,
) -> Result<End, Failure> {
    use ratatui::crossterm::event::{self, Event, KeyEventKind};

    let mut terminal =
        ratatui::try_init().map_err(|e| anyhow::anyhow!("cannot open the terminal: {e}"))?;
    let result = (|| -> Result<End, Failure> {
        let interval = Duration::from_secs_f64(args.delay);
        let mut next = Instant::now() + interval;
        let mut refreshes = 0u64;
        // Draw only when something changed: a refresh, a key, a resized terminal.
        let mut dirty = true;
        loop {
            if std::mem::take(&mut dirty) {
                terminal
                    .draw(|f| view::draw(f, app))
                    .map_err(anyhow::Error::from)?;
            }
            if signals.pending() || app.quit {
                return Ok(End::Done);
            }
            if let Some(p) = process.filter(|p| !p.is_alive()) {
                return Ok(End::TargetExited(p.clone()));
            }
            let now = Instant::now();
            if now >= next {
                if let Some(end) = refresh(app)? {
                    return Ok(end);
                }
                dirty = true;
                refreshes += 1;
                if args.count.is_some_and(|n| refreshes >= n) {
                    return Ok(End::Done);
                }
                // After a slow refresh, skip the ticks already missed rather than catch up.
                next = (next + interval).max(Instant::now());
                continue;
            }
            let wait = if looking() { LAYOUT_POLL } else { POLL };
            match wait_input((next - now).min(wait))? {
                Input::Nothing => continue,
                // The terminal went away (its window closed): nobody is watching.
                Input::Gone => return Ok(End::Done),
                Input::Ready => {}
            }
            // One read from the terminal can carry several keys: handle every one crossterm
            // has buffered before polling the terminal again.
            while event::poll(Duration::ZERO).map_err(anyhow::Error::from)? {
                match event::read().map_err(anyhow::Error::from)? {
                    Event::Key(k) if k.kind != KeyEventKind::Release => {
                        if let Some(key) = Key::from_crossterm(&k) {
                            app.on_key(key);
                            dirty = true;
                        }
                    }
                    Event::Resize(..) => dirty = true,
                    _ => {}
                }
            }
        }
    })();
    ratatui::restore();
    result
}

/// One process of a multi-process `--json` run.
struct JsonWatched {
    session: Session,
    sampler: Option<Sampler>,
    /// The sampler as the cost line counts it.
    detector: Option<DetectorCost>,
    prev: Snapshot,
    /// Records that ended before its first line, which go in it.
    carried: Option<(Vec<GreenletStats>, Vec<EdgeStats>)>,
}

impl JsonWatched {
    /// Its line for the interval since the previous one.
    fn line(&mut self, per_hit_ns: Option<f64>) -> Result<String, Failure> {
        let mut snap = self.session.snapshot()?;
        if let Some((greenlets, edges)) = self.carried.take() {
            snap.greenlets.extend(greenlets);
            snap.greenlets.sort_by_key(|g| g.id);
            snap.edges.extend(edges);
            snap.edges.sort_by_key(|e| (e.origin, e.target));
        }
        let blocking = detector_read(&mut self.sampler).map(|read| {
            if let Some(d) = self.detector.as_mut() {
                d.read(read.totals.samples, read.at_ns);
            }
            let pid = self.session.process().pid;
            json::blocking(&read.episodes, |id| {
                snap.greenlet(loader::GreenletKey { pid, id })
                    .map(|g| g.display_name().to_string())
            })
        });
        let costs = Costs {
            per_hit_ns,
            detector: self.detector,
        };
        let line = json::interval_line(&self.session, &self.prev, &snap, &costs, blocking);
        self.prev = snap;
        Ok(line)
    }
}

/// `--json` with several `-p` or with `--exe`: each interval, one line per watched process
/// (the single-process schema, in the order they were attached). A process that exits gets
/// its last line, then one line on stderr, and the others go on; a process met later by
/// `--exe` gets its first line at the first interval after its attach. Ends at a signal,
/// after `--iterations` intervals, or (without `--exe`) when every process has exited.
pub fn run_many_json(args: &Args) -> Result<End, Failure> {
    if std::env::var_os("GLTOP_DEBUG").is_none() {
        libbpf_rs::set_print(None);
    }
    let mut signals = Signals::block()?;
    let mut discovery = crate::export::Discovery::new(args)?;
    let mut per_hit_ns = args.hit_cost_ns;
    // The detectors' per-sample cost: measured once, at the first detector (not measured
    // when the per-hit cost is given, as for one process).
    let mut per_sample_ns: Option<Option<f64>> = args.hit_cost_ns.map(|_| None);
    let mut watched: Vec<JsonWatched> = Vec::new();
    // One blocking detector for every process (`crate::export::attach`).
    let mut detector = SharedDetector::new();
    let mut attach =
        |p: &Process, later: bool, watched: &mut Vec<JsonWatched>, per_hit_ns: &mut Option<f64>| {
            let Some((mut session, sampler)) =
                crate::export::attach(args, p, later, false, false, &mut detector)?
            else {
                return Ok::<(), Failure>(());
            };
            if per_hit_ns.is_none() {
                *per_hit_ns = calibrate::per_hit_ns_of(&session);
            }
            let detector = sampler.as_ref().map(|_| {
                DetectorCost::new(*per_sample_ns.get_or_insert_with(calibrate::per_sample_ns))
            });
            let first = session.snapshot()?;
            eprintln!(
                "gltop: attached to process {} ({}): {} probe sites ({}), {}",
                p.pid,
                p.comm,
                session.sites(),
                session.mode().as_str(),
                per_hit_ns.map_or("per-hit cost unknown".into(), |c| format!(
                    "{c:.0} ns per hit"
                )),
            );
            watched.push(JsonWatched {
                carried: Some(ended_of(&first)),
                prev: first,
                session,
                sampler,
                detector,
            });
            Ok(())
        };
    for (i, p) in discovery.poll(&args.pids)?.iter().enumerate() {
        attach(
            p,
            i >= args.pids.len() || discovery.roots_optional(),
            &mut watched,
            &mut per_hit_ns,
        )?;
    }
    let interval = Duration::from_secs_f64(args.delay);
    let mut out = io::stdout().lock();
    let mut printed = 0u64;
    let mut next = Instant::now() + interval;
    loop {
        if signals.pending() {
            return Ok(End::Done);
        }
        for p in discovery.poll(&[])? {
            attach(&p, true, &mut watched, &mut per_hit_ns)?;
        }
        let exited: Vec<bool> = watched
            .iter()
            .map(|w| !w.session.process().is_alive())
            .collect();
        let tick = Instant::now() >= next;
        let mut lines = Vec::new();
        for (w, &gone) in watched.iter_mut().zip(&exited) {
            if tick || gone {
                lines.push(w.line(per_hit_ns)?);
            }
        }
        for line in &lines {
            if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                return match e.kind() {
                    io::ErrorKind::BrokenPipe => Ok(End::Done),
                    _ => Err(anyhow::Error::new(e)
                        .context("cannot write to stdout")
                        .into()),
                };
            }
        }
        let mut i = 0;
        watched.retain(|w| {
            let keep = !exited[i];
            i += 1;
            if !keep {
                crate::report_exit(w.session.process());
            }
            keep
        });
        if tick {
            printed += 1;
            if args.count.is_some_and(|n| printed >= n) {
                return Ok(End::Done);
            }
            next = (next + interval).max(Instant::now());
        }
        if !discovery.open_ended() && watched.is_empty() {
            return Ok(End::Done);
        }
        let mut wake = next;
        if let Some(scan) = discovery.next_scan() {
            wake = wake.min(scan);
        }
        let mut nap = POLL;
        for s in watched.iter_mut().filter_map(|w| w.sampler.as_mut()) {
            if !s.poll_layout().unwrap_or(true) {
                nap = LAYOUT_POLL;
            }
        }
        std::thread::sleep(wake.saturating_duration_since(Instant::now()).min(nap));
    }
}

/// One process of a multi-process live view.
struct TuiWatched {
    process: Process,
    /// Its session while it runs (dropped at its exit, with its BPF objects).
    session: Option<Session>,
    /// Its blocking detector while it runs.
    sampler: Option<Sampler>,
    /// The detector's samples at its last read.
    samples: u64,
    /// Its last snapshot once it exited (frozen), and when its exit was seen.
    last: Option<(Snapshot, Instant)>,
}

/// One read of every process of a multi-process live view.
struct ManyRead {
    snap: Snapshot,
    /// The blocking episodes of every detector.
    episodes: Vec<loader::sample::Episode>,
    /// Detector samples since the first attach, those of released processes included.
    samples: u64,
    /// Exited processes released so far.
    released: u64,
}

/// The live view of several `-p` or of `--exe`: a session per process, with the blocking
/// detector beside it where the runtime publishes its sample layout, their snapshots merged
/// into one model (greenlets keyed by PID and id, a PID column; episodes of every process
/// in the blocking view, with their PID). A process that exits keeps its last rows, marked
/// exited, for `--keep-exited` seconds and among the last `--max-exited` exits; then its
/// rows go and its counts stay in the totals (the header counts the processes that went).
/// One that `--exe` meets later joins at the next refresh. Ends at `q` or a signal, after
/// `--iterations` refreshes, or (without `--exe`) once every process has exited.
pub fn run_many_tui(args: &Args) -> Result<End, Failure> {
    if std::env::var_os("GLTOP_DEBUG").is_none() {
        libbpf_rs::set_print(None);
    }
    let mut signals = Signals::block()?;
    let mut discovery = crate::export::Discovery::new(args)?;
    let retention = crate::export::Retention::of(args);
    let mut watched: Vec<TuiWatched> = Vec::new();
    let drawn = std::cell::Cell::new(false);
    // One blocking detector for every process (`crate::export::attach`).
    let detector = std::cell::RefCell::new(SharedDetector::new());
    let attach = |p: &Process, later: bool, watched: &mut Vec<TuiWatched>| {
        // Once the view is drawn, a process met later gets no line when it cannot have the
        // detector (the line would land on the screen); the header's blocking count is then
        // of the others.
        if let Some((session, sampler)) = crate::export::attach(
            args,
            p,
            later,
            drawn.get(),
            false,
            &mut detector.borrow_mut(),
        )? {
            watched.push(TuiWatched {
                process: session.process().clone(),
                session: Some(session),
                sampler,
                samples: 0,
                last: None,
            });
        }
        Ok::<(), Failure>(())
    };
    for (i, p) in discovery.poll(&args.pids)?.iter().enumerate() {
        attach(
            p,
            i >= args.pids.len() || discovery.roots_optional(),
            &mut watched,
        )?;
    }
    // With --exe or --children, the first process may come later: wait for it.
    if watched.is_empty() {
        eprintln!(
            "gltop: waiting for {}",
            if args.exe.is_some() {
                "a process of the --exe file"
            } else {
                "a traceable descendant of the -p processes (--children)"
            }
        );
    }
    while watched.is_empty() {
        if signals.pending() {
            return Ok(End::Done);
        }
        if !discovery.open_ended() {
            eprintln!("gltop: the -p processes exited before any of them could be watched");
            return Ok(End::Done);
        }
        std::thread::sleep(crate::export::SCAN);
        for p in discovery.poll(&[])? {
            attach(&p, true, &mut watched)?;
        }
    }
    let first_session = watched[0].session.as_ref().expect("attached just now");
    let per_hit_ns = match args.hit_cost_ns {
        Some(ns) => Some(ns),
        None => calibrate::per_hit_ns_of(first_session),
    };
    let mut target = Target::of(first_session);
    // The totals of the exited processes no longer shown: the header's counts never go
    // back when one goes.
    let mut released = Snapshot::default();
    let mut released_count = 0u64;
    let mut released_samples = 0u64;
    // Reads every process: a live one's snapshot and detector, an exited one's last (read
    // once more when its exit is first seen, then frozen, its session and detector
    // dropped); then drops the exited ones kept long enough.
    let mut read = |watched: &mut Vec<TuiWatched>| -> Result<ManyRead, Failure> {
        let mut parts = Vec::with_capacity(watched.len() + 1);
        let mut episodes = Vec::new();
        for w in watched.iter_mut() {
            if w.last.is_none() {
                let alive = w.process.is_alive();
                let read = match (alive, w.sampler.as_mut()) {
                    (true, _) => detector_read(&mut w.sampler),
                    // Its last episodes, if its maps can still be read (nothing to say
                    // otherwise: it exited).
                    (false, Some(s)) => s.snapshot().ok(),
                    (false, None) => None,
                };
                if let Some(r) = read {
                    w.samples = r.totals.samples;
                    episodes.extend(r.episodes);
                }
            }
            match (&w.last, &mut w.session) {
                (Some((last, _)), _) => parts.push(last.clone()),
                (None, Some(session)) if w.process.is_alive() => parts.push(session.snapshot()?),
                (None, session) => {
                    let mut snap = match session.as_mut() {
                        Some(s) => s.snapshot()?,
                        None => Snapshot::default(),
                    };
                    *session = None;
                    w.sampler = None;
                    w.last = Some((crate::app::frozen(snap.clone()), Instant::now()));
                    for p in &mut snap.processes {
                        p.exited = true;
                    }
                    parts.push(snap);
                }
            }
        }
        // Drawn at the refresh that saw the exit.
        let exits: Vec<Option<crate::export::Exit>> = watched
            .iter()
            .map(|w| w.last.as_ref().map(|l| (l.1, Some(l.1))))
            .collect();
        let expired = retention.expired(&exits, Instant::now());
        let mut kept = Vec::with_capacity(parts.len() + 1);
        for (i, part) in parts.into_iter().enumerate() {
            if expired[i] {
                let only = Snapshot {
                    totals: part.totals,
                    ..Snapshot::default()
                };
                released = crate::app::merge(0, [std::mem::take(&mut released), only]);
                released_count += 1;
                released_samples += watched[i].samples;
            } else {
                kept.push(part);
            }
        }
        let mut i = 0;
        watched.retain(|_| {
            i += 1;
            !expired[i - 1]
        });
        kept.push(released.clone());
        Ok(ManyRead {
            snap: crate::app::merge(monotonic_ns(), kept),
            episodes,
            samples: released_samples + watched.iter().map(|w| w.samples).sum::<u64>(),
            released: released_count,
        })
    };
    let first = read(&mut watched)?;
    let first_read_ns = monotonic_ns();
    target.several = true;
    let sites = |watched: &[TuiWatched]| {
        watched
            .iter()
            .filter_map(|w| w.session.as_ref())
            .map(|s| s.sites())
            .sum()
    };
    target.sites = sites(&watched);
    let detecting = |watched: &[TuiWatched]| watched.iter().any(|w| w.sampler.is_some());
    // The detector's samples cost the targets too: measured as for one process (once, at
    // the first process with a detector), unless the per-hit cost is given.
    let detector_cost = || {
        DetectorCost::new(match args.hit_cost_ns {
            Some(_) => None,
            None => calibrate::per_sample_ns(),
        })
    };
    if detecting(&watched) {
        target.block_ms = Some(args.block_ms);
    }
    let mut app = App::new(
        target,
        per_hit_ns,
        args.delay,
        first.snap,
        first_read_ns,
        args.max_dead,
    );
    if app.target.block_ms.is_some() {
        app.detector = Some(detector_cost());
        app.update_blocking(&first.episodes);
        if let Some(d) = app.detector.as_mut() {
            d.read(first.samples, first_read_ns);
        }
    }
    let watched = std::cell::RefCell::new(watched);
    drawn.set(true);
    let end = run_tui(
        args,
        None,
        &mut app,
        &mut signals,
        |app| {
            let mut watched = watched.borrow_mut();
            for p in discovery.poll(&[])? {
                attach(&p, true, &mut watched)?;
            }
            let r = read(&mut watched)?;
            let read_ns = monotonic_ns();
            app.target.sites = sites(&watched);
            app.released_processes = r.released;
            app.update(r.snap, read_ns);
            if app.target.block_ms.is_none() && detecting(&watched) {
                // The first process with a detector came later.
                app.target.block_ms = Some(args.block_ms);
                app.detector = Some(detector_cost());
            }
            if app.target.block_ms.is_some() {
                app.update_blocking(&r.episodes);
                if let Some(d) = app.detector.as_mut() {
                    d.read(r.samples, read_ns);
                }
            }
            let all_exited = watched.iter().all(|w| w.last.is_some());
            Ok((all_exited && !discovery.open_ended()).then_some(End::Done))
        },
        || {
            // Every detector still looking for its layout looks now, not only the first.
            let mut looking = false;
            for s in watched
                .borrow_mut()
                .iter_mut()
                .filter_map(|w| w.sampler.as_mut())
            {
                looking |= !s.poll_layout().unwrap_or(true);
            }
            looking
        },
    );
    // Once the terminal is restored: which processes exited meanwhile.
    for w in watched.borrow().iter().filter(|w| w.last.is_some()) {
        crate::report_exit(&w.process);
    }
    if app.released_processes > 0 {
        eprintln!(
            "gltop: {} more processes exited and left the view (--keep-exited {}, --max-exited {})",
            app.released_processes, args.keep_exited, args.max_exited
        );
    }
    end
}
