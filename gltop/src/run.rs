//! The main loop of both modes: attach, measure the per-hit cost, then refresh every
//! interval until the user quits, a signal arrives, the count is reached or the target exits.

use std::io::{self, Write};
use std::time::{Duration, Instant};

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
}

impl Failure {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Attach(_) => 2,
            Failure::Other(_) => 1,
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP, blocked and read from a non-blocking signalfd so that the
/// loop can detach and restore the terminal before exiting.
pub struct Signals(SignalFd);

impl Signals {
    pub fn block() -> anyhow::Result<Signals> {
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
    pub fn pending(&mut self) -> bool {
        matches!(self.0.read_signal(), Ok(Some(_)))
    }
}

/// CLOCK_MONOTONIC now, in nanoseconds: the clock of the snapshots' instants.
fn monotonic_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available on Linux");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// What the loop waits for between refreshes.
enum Wake {
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
    let mut session = Session::attach(args.pid(), &args.options())?;
    let per_hit_ns = match args.hit_cost_ns {
        Some(ns) => Some(ns),
        None => calibrate::per_hit_ns(session.mode()),
    };
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
        run_json(args, &mut session, first, per_hit_ns, &mut signals)
    } else {
        let mut app = App::new(
            Target::of(&session),
            per_hit_ns,
            args.delay,
            first,
            first_read_ns,
            args.max_dead,
        );
        run_tui(args, &mut session, &mut app, &mut signals)
    }
}

fn run_json(
    args: &Args,
    session: &mut Session,
    mut prev: Snapshot,
    per_hit_ns: Option<f64>,
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
        let wake = wait_until(next, session.process(), signals);
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
        let line = json::interval_line(session, &prev, &snap, per_hit_ns);
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

/// The greenlets and edges of `snap` whose records left the kernel with it.
fn ended_of(snap: &Snapshot) -> (Vec<GreenletStats>, Vec<EdgeStats>) {
    (
        snap.greenlets.iter().filter(|g| g.ended).cloned().collect(),
        snap.edges.iter().filter(|e| e.ended).copied().collect(),
    )
}

/// Waits until `deadline`, watching for stop signals and for the target's exit.
fn wait_until(deadline: Instant, process: &Process, signals: &mut Signals) -> Wake {
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
        std::thread::sleep((deadline - now).min(POLL));
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

fn run_tui(
    args: &Args,
    session: &mut Session,
    app: &mut App,
    signals: &mut Signals,
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
            if !session.process().is_alive() {
                return Ok(End::TargetExited(session.process().clone()));
            }
            let now = Instant::now();
            if now >= next {
                let snap = session.snapshot()?;
                app.update(snap, monotonic_ns());
                dirty = true;
                refreshes += 1;
                if args.count.is_some_and(|n| refreshes >= n) {
                    return Ok(End::Done);
                }
                // After a slow refresh, skip the ticks already missed rather than catch up.
                next = (next + interval).max(Instant::now());
                continue;
            }
            match wait_input((next - now).min(POLL))? {
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
