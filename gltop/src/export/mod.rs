//! `--listen ADDR`: gltop without a screen, serving what it traces as Prometheus metrics on
//! `http://ADDR/metrics` until a signal, or until every watched process has exited.
//!
//! One BPF session per `-p` process. The loop that owns them (libbpf objects stay on one
//! thread) answers each request: it snapshots every live session into the [`Exported`]
//! data under its mutex, then the registry's one [`ExportCollector`] encodes that data in
//! the format the scraper asked for. Between scrapes it snapshots every `--delay` seconds
//! too, so that the records of finished greenlets leave the kernel's maps (which would fill
//! up otherwise) and are added to the cumulative counts for good.

pub mod http;
pub mod metrics;

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gltop::loader::sample::{Sampler, SharedDetector};
use gltop::loader::{self, process, Process, Session};
use prometheus_client::registry::Registry;

use crate::run::{End, Failure, Signals};
use crate::{calibrate, Args};
use metrics::{Blocking, ExportCollector, Exported, Labelling, Target};

/// How often the loop looks at signals and the processes while no request comes.
const POLL: Duration = Duration::from_millis(50);

/// How often the loop looks for the runtime layout of a target whose blocking detector does
/// not know it yet (the runtime has not started on any thread).
const LAYOUT_POLL: Duration = Duration::from_millis(2);

/// The default port: the one ebpf_exporter's neighbours leave free, registered for
/// OpenTelemetry's Prometheus exporter.
pub const DEFAULT_PORT: u16 = 9464;

/// Parses `--listen`: `IP:PORT` (`[IPv6]:PORT`), or a bare `PORT` on the loopback address.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse::<SocketAddr>().map_err(|_| {
        format!("an address to listen on is IP:PORT or a port (loopback), e.g. 127.0.0.1:{DEFAULT_PORT}")
    })
}

/// One watched process: its session and blocking detector while it runs, and where its
/// exported data is.
struct Watched {
    session: Option<Session>,
    sampler: Option<Sampler>,
    process: Process,
    index: usize,
    /// When its exit was seen, and when a scrape first had its final counts.
    exited: Option<Exit>,
}

/// How long exited processes stay, one by one, in what gltop shows (`--keep-exited`,
/// `--max-exited`): each for `keep` once its final state was shown (the exporter: answered
/// to a scrape; the live view: drawn), and at most `max` of them (the oldest exits go first,
/// shown or not). A prefork server that recycles its workers would grow gltop without end
/// otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Retention {
    pub keep: Duration,
    pub max: usize,
}

/// An exited process, as [`Retention`] sees it: when its exit was seen, and when its final
/// state was first shown.
pub(crate) type Exit = (Instant, Option<Instant>);

impl Retention {
    pub(crate) fn of(args: &Args) -> Retention {
        Retention {
            keep: Duration::from_secs_f64(args.keep_exited),
            max: args.max_exited,
        }
    }

    /// Which of the processes with `exits` (`None`: running) go at `now`: those shown
    /// `keep` ago or more, then the oldest exits past `max`.
    pub(crate) fn expired(&self, exits: &[Option<Exit>], now: Instant) -> Vec<bool> {
        let mut out: Vec<bool> = exits
            .iter()
            .map(|e| {
                e.and_then(|(_, shown)| shown)
                    .is_some_and(|t| now.saturating_duration_since(t) >= self.keep)
            })
            .collect();
        let mut kept: Vec<(Instant, usize)> = exits
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.filter(|_| !out[i]).map(|(t, _)| (t, i)))
            .collect();
        if kept.len() > self.max {
            kept.sort();
            for &(_, i) in &kept[..kept.len() - self.max] {
                out[i] = true;
            }
        }
        out
    }
}

/// The processes to watch: those of `-p`, with `--exe` those that run the file, and with
/// `--children` the descendants of those of `-p`, looked for every [`SCAN`].
pub(crate) struct Discovery {
    exe: Option<(u64, u64)>,
    /// `--children`: the processes of `-p` (PID, start time), whose descendants are watched.
    roots: Option<Vec<(i32, u64)>>,
    /// The processes met (PID, start time, executable), attached or not: none is tried
    /// twice. An `exec` makes the same process another one to try (`--children`: a worker
    /// the master forked, then exec'd). Entries leave once their process is not found.
    met: HashSet<(i32, u64, (u64, u64))>,
    /// Python processes met before they loaded greenlet (a worker imports it after its
    /// fork), with when they were first met: held back, and looked at again at each scan
    /// for up to [`IMPORT_WAIT`].
    importing: HashMap<(i32, u64), Instant>,
    /// The `-p` processes were looked up (`met` may empty out later).
    started: bool,
    next_scan: Instant,
}

/// How long a Python process found by a scan may take to import greenlet before it is
/// tried anyway (and refused, in one line, if it still has not).
pub const IMPORT_WAIT: Duration = Duration::from_secs(10);

/// How often `--exe` looks for new processes of its file: one pass over `/proc` (about a
/// millisecond with a few hundred processes), so that one started later is watched within
/// this time.
pub const SCAN: Duration = Duration::from_millis(250);

impl Discovery {
    pub(crate) fn new(args: &Args) -> Result<Discovery, Failure> {
        let exe = match &args.exe {
            Some(path) => Some(process::executable_id(path).map_err(Failure::Usage)?),
            None => None,
        };
        Ok(Discovery {
            exe,
            roots: args.children.then(Vec::new),
            met: HashSet::new(),
            started: false,
            importing: HashMap::new(),
            next_scan: Instant::now(),
        })
    }

    /// Whether processes can still come: with `--exe` always (the loop runs until a signal),
    /// with `--children` while one of the `-p` processes runs.
    pub(crate) fn open_ended(&self) -> bool {
        self.exe.is_some()
            || self.roots.as_ref().is_some_and(|roots| {
                roots
                    .iter()
                    .any(|&(pid, start)| Process::find(pid).is_ok_and(|p| p.start_ticks == start))
            })
    }

    /// Whether a `-p` process that cannot be traced is only said (one line), not an error:
    /// with `--children` its descendants may be (a prefork server's master often has no
    /// greenlet; its workers do).
    pub(crate) fn roots_optional(&self) -> bool {
        self.roots.is_some()
    }

    /// The processes to attach now: at the first call those of `-p` (every one must exist)
    /// and, every [`SCAN`], those of `--exe` not met yet.
    pub(crate) fn poll(&mut self, pids: &[i32]) -> Result<Vec<Process>, Failure> {
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            for &pid in pids {
                let p = Process::find(pid)?;
                self.met.insert((p.pid, p.start_ticks, p.exe_id));
                if let Some(roots) = &mut self.roots {
                    roots.push((p.pid, p.start_ticks));
                }
                out.push(p);
            }
        }
        if self.exe.is_none() && self.roots.is_none() {
            return Ok(out);
        }
        let now = Instant::now();
        if now < self.next_scan {
            return Ok(out);
        }
        self.next_scan = now + SCAN;
        let mut found = Vec::new();
        if let Some(id) = self.exe {
            found.extend(process::running_exe(id));
        }
        if let Some(roots) = &self.roots {
            found.extend(process::descendants(roots));
        }
        found.sort_unstable();
        found.dedup();
        let roots: Vec<i32> = self.roots.iter().flatten().map(|r| r.0).collect();
        self.met
            .retain(|m| roots.contains(&m.0) || found.binary_search(&m.0).is_ok());
        self.importing
            .retain(|k, _| found.binary_search(&k.0).is_ok());
        for pid in found {
            // Gone meanwhile: nothing to watch.
            let Ok(p) = Process::find(pid) else { continue };
            let matches = self.exe.is_none_or(|id| p.exe_id == id) || self.roots.is_some();
            if !matches || self.met.contains(&(p.pid, p.start_ticks, p.exe_id)) {
                continue;
            }
            let key = (p.pid, p.start_ticks);
            if loader::pymodule::awaits_greenlet(p.pid) {
                let since = *self.importing.entry(key).or_insert(now);
                if now.duration_since(since) < IMPORT_WAIT {
                    continue;
                }
            }
            self.importing.remove(&key);
            self.met.insert((p.pid, p.start_ticks, p.exe_id));
            out.push(p);
        }
        Ok(out)
    }

    /// When the next scan is due (`None` without `--exe` or `--children`).
    pub(crate) fn next_scan(&self) -> Option<Instant> {
        (self.exe.is_some() || self.roots.is_some()).then_some(self.next_scan)
    }
}

/// Attaches the probes and the blocking detector to `p`. The detector's failure leaves the
/// probes without it (one line, unless `quiet`: the live view is drawn); a process gone
/// before it is attached gives `Ok(None)` when `found_later` (a scan met it), an error
/// otherwise. `track_ended`: the session keeps the kernel's sums and ended sets, and a
/// refresh reads only the records that ended (the exporter, without `--greenlet-names`).
/// The detector is `detector`'s, shared with the run's other processes (one set of BPF
/// programs for all), except on a Python greenlet process, which gets its own.
pub(crate) fn attach(
    args: &Args,
    p: &Process,
    found_later: bool,
    quiet: bool,
    track_ended: bool,
    detector: &mut SharedDetector,
) -> Result<Option<(Session, Option<Sampler>)>, Failure> {
    let opts = loader::Options {
        track_ended,
        ..args.options()
    };
    let mut session = match Session::attach(p.pid, &opts) {
        Ok(s) => s,
        Err(e) if found_later => {
            if p.is_alive() {
                eprintln!("gltop: process {} ({}) not watched: {e}", p.pid, p.comm);
            }
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    // On Python greenlet the detector takes each thread's running greenlet from the switch
    // probes' map, as for one process (`run::run`).
    let sample_opts = args.sample_options(false);
    let attached = match session.python_current_map(args.block_ms) {
        Some(fd) => Sampler::attach_python(p.pid, &sample_opts, fd),
        None => detector.attach(p.pid, &sample_opts),
    };
    let sampler = match attached {
        Ok(s) => Some(s),
        Err(_) if quiet => None,
        Err(e) => {
            let reason = match e {
                loader::Error::CannotSample { reason, .. } => reason,
                e => e.to_string(),
            };
            eprintln!(
                "gltop: no blocking detection in process {} ({}): {reason}",
                p.pid, p.comm
            );
            None
        }
    };
    Ok(Some((session, sampler)))
}

/// A refresh that reads every record (with `--greenlet-names`, see [`refresh`]) reads a
/// kernel map in one batch into buffers sized to the map's capacity
/// (tens of MB with `--max-greenlets` in the 100,000s), freed once read. glibc serves such
/// blocks with `mmap` and returns them at once, so every refresh faulted the pages in anew
/// (a quarter of gltop's CPU at 100,000 greenlets). Served from the heap and kept, they are
/// reused: less CPU for more resident memory (benches/README.md, "gltop's own cost at
/// scale", has both).
fn keep_large_allocations() {
    const LARGE: libc::c_int = 1 << 30;
    // SAFETY: mallopt only changes glibc's allocation thresholds (under glibc's own lock),
    // touches no memory of ours, and any positive value is valid for these two parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, LARGE);
        libc::mallopt(libc::M_TRIM_THRESHOLD, LARGE);
    }
}

/// Runs the exporter for `args` (`args.listen` is set).
pub fn run(args: &Args, addr: SocketAddr) -> Result<End, Failure> {
    if std::env::var_os("GLTOP_DEBUG").is_none() {
        libbpf_rs::set_print(None);
    }
    // Only when every refresh reads every record (per-name counts); otherwise a refresh
    // reads sums and the records that ended, and a full read is rare (a failed push).
    if args.greenlet_names.unwrap_or(0) > 0 {
        keep_large_allocations();
    }
    // Blocked before the server starts its threads, which inherit the mask: a stop signal
    // then reaches the signalfd, never a thread that would die of it.
    let mut signals = Signals::block()?;
    let mut discovery = Discovery::new(args)?;
    // Every PID is checked before anything is attached: one that is not there stops it all.
    let first = discovery.poll(&args.pids)?;
    let listener = TcpListener::bind(addr)
        .map_err(|e| Failure::Usage(format!("cannot listen on {addr}: {e}")))?;
    let bound = listener.local_addr().unwrap_or(addr);
    let server = tiny_http::Server::from_listener(listener, None)
        .map_err(|e| Failure::Usage(format!("cannot listen on {addr}: {e}")))?;

    let labelling = Labelling {
        per_pid: args.per_pid,
        names: args.greenlet_names.unwrap_or(0),
    };
    let exported = Arc::new(Mutex::new(Exported {
        targets: Vec::new(),
        labelling,
        refreshes: Default::default(),
        released: Default::default(),
    }));
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ExportCollector(exported.clone())));

    let mut watched = Vec::new();
    let mut attaching = Attaching {
        per_hit_ns: args.hit_cost_ns,
        detector: SharedDetector::new(),
    };
    let window = window_ns(args);
    for (i, p) in first.into_iter().enumerate() {
        add(
            args,
            &p,
            i >= args.pids.len() || discovery.roots_optional(),
            &mut attaching,
            &exported,
            &mut watched,
            window,
        )?;
    }
    eprintln!(
        "gltop: serving metrics on http://{bound}/metrics ({})",
        attaching
            .per_hit_ns
            .map_or("per-hit cost unknown".into(), |c| format!(
                "{c:.0} ns per hit"
            ))
    );

    let interval = Duration::from_secs_f64(args.delay);
    let retention = Retention::of(args);
    let mut next = Instant::now() + interval;
    loop {
        if signals.pending() {
            return Ok(End::Done);
        }
        for p in discovery.poll(&[])? {
            add(
                args,
                &p,
                true,
                &mut attaching,
                &exported,
                &mut watched,
                window,
            )?;
        }
        for w in watched.iter_mut().filter(|w| w.session.is_some()) {
            if w.process.is_alive() {
                continue;
            }
            // Its last counts, then it is detached; what it did stays exported.
            let mut st = exported.lock().unwrap_or_else(|e| e.into_inner());
            refresh(w, &mut st, window)?;
            st.targets[w.index].mark_exited();
            w.session = None;
            w.sampler = None;
            w.exited = Some((Instant::now(), None));
            crate::report_exit(&w.process);
        }
        release_expired(&mut watched, &exported, retention);
        if !discovery.open_ended() && watched.iter().all(|w| w.session.is_none()) {
            return Ok(End::Done);
        }
        if Instant::now() >= next {
            let mut st = exported.lock().unwrap_or_else(|e| e.into_inner());
            refresh_all(&mut watched, &mut st, window)?;
            drop(st);
            next = (next + interval).max(Instant::now());
        }
        let mut wake = next;
        if let Some(scan) = discovery.next_scan() {
            wake = wake.min(scan);
        }
        let mut poll = POLL;
        for s in watched.iter_mut().filter_map(|w| w.sampler.as_mut()) {
            // A failure here shows at the next snapshot, which reads the layout again.
            if !s.poll_layout().unwrap_or(true) {
                poll = LAYOUT_POLL;
            }
        }
        let wait = wake.saturating_duration_since(Instant::now()).min(poll);
        let request = server
            .recv_timeout(wait)
            .map_err(|e| anyhow::Error::new(e).context("cannot accept a request"))?;
        if let Some(request) = request {
            answer(request, &registry, || {
                let mut st = exported.lock().unwrap_or_else(|e| e.into_inner());
                refresh_all(&mut watched, &mut st, window)?;
                // This scrape has the final counts of those that exited: their time to go
                // starts now (one whose exit took longer to serve, while gltop attached to
                // another process, say, is still scraped at least once).
                let now = Instant::now();
                for (_, shown) in watched.iter_mut().filter_map(|w| w.exited.as_mut()) {
                    shown.get_or_insert(now);
                }
                Ok(())
            })?;
        }
    }
}

/// What every attach of one exporter shares: the per-hit cost, measured at the first, and
/// the blocking detector (one for every process, see [`attach`]).
struct Attaching {
    per_hit_ns: Option<f64>,
    detector: SharedDetector,
}

/// Attaches to `p` and exports it from now on (`found_later`: a scan met it, and a failure
/// to attach is reported and skipped).
fn add(
    args: &Args,
    p: &Process,
    found_later: bool,
    attaching: &mut Attaching,
    exported: &Mutex<Exported>,
    watched: &mut Vec<Watched>,
    window: u64,
) -> Result<(), Failure> {
    let Attaching {
        per_hit_ns,
        detector,
    } = attaching;
    // Sums only, unless per-name counts need every record (`Target::absorb`).
    let track = args.greenlet_names.unwrap_or(0) == 0;
    let Some((session, sampler)) = attach(args, p, found_later, false, track, detector)? else {
        return Ok(());
    };
    if per_hit_ns.is_none() {
        // Measured once: the attach mode is the same for every process of one gltop.
        // Measured once, on the first process (a Python process's on its own greenlet).
        *per_hit_ns = calibrate::per_hit_ns_of(&session);
        if let Some(c) = *per_hit_ns {
            let mut st = exported.lock().unwrap_or_else(|e| e.into_inner());
            for t in &mut st.targets {
                t.per_hit_ns = Some(c);
            }
        }
    }
    let p = session.process().clone();
    let exe = std::fs::read_link(p.exe())
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut target = Target::new(
        p.pid,
        p.comm.clone(),
        exe,
        session.runtime().name(),
        *per_hit_ns,
        args.greenlet_names.unwrap_or(0),
    );
    if sampler.is_some() {
        target.blocking = Some(Blocking::default());
    }
    eprintln!(
        "gltop: attached to process {} ({}): {} probe sites ({}){}",
        p.pid,
        p.comm,
        session.sites(),
        session.mode().as_str(),
        if sampler.is_some() {
            ", blocking detector"
        } else {
            ""
        }
    );
    let mut st = exported.lock().unwrap_or_else(|e| e.into_inner());
    st.targets.push(target);
    let mut w = Watched {
        session: Some(session),
        sampler,
        process: p,
        index: st.targets.len() - 1,
        exited: None,
    };
    // The first snapshot: the rate window starts.
    refresh(&mut w, &mut st, window)?;
    watched.push(w);
    Ok(())
}

/// Drops the exited processes `retention` no longer keeps: their watch, and their target
/// once its counts are folded into its process name's ([`Exported::release`]).
fn release_expired(watched: &mut Vec<Watched>, exported: &Mutex<Exported>, retention: Retention) {
    let exits: Vec<Option<Exit>> = watched.iter().map(|w| w.exited).collect();
    let expired = retention.expired(&exits, Instant::now());
    if !expired.contains(&true) {
        return;
    }
    let mut st = exported.lock().unwrap_or_else(|e| e.into_inner());
    // From the last: a release moves the targets after it down by one.
    for i in (0..watched.len()).rev().filter(|&i| expired[i]) {
        st.release(watched[i].index);
        watched.remove(i);
    }
    for (i, w) in watched.iter_mut().enumerate() {
        w.index = i;
    }
}

/// The probe-hit rate's window: the refresh interval.
fn window_ns(args: &Args) -> u64 {
    (args.delay * 1e9) as u64
}

/// Refreshes every watched process, timed for gltop's self-metrics.
fn refresh_all(watched: &mut [Watched], st: &mut Exported, window_ns: u64) -> Result<(), Failure> {
    let start = Instant::now();
    for w in watched.iter_mut() {
        refresh(w, st, window_ns)?;
    }
    st.refreshes.record(start.elapsed().as_nanos() as u64);
    Ok(())
}

/// Snapshots `w`'s session and detector, if it still has them, into its target. A detector
/// that cannot be read any more stops (one line), never the probes.
fn refresh(w: &mut Watched, st: &mut Exported, window_ns: u64) -> Result<(), Failure> {
    let t = &mut st.targets[w.index];
    if let Some(session) = &mut w.session {
        if t.names.is_some() {
            let snap = session.snapshot()?;
            t.absorb(&snap, window_ns);
        } else {
            let agg = session.aggregate()?;
            t.absorb_aggregate(&agg, window_ns);
        }
    }
    if let Some(sampler) = &mut w.sampler {
        match sampler.snapshot() {
            Ok(s) => {
                if let Some(b) = &mut t.blocking {
                    b.absorb(&s.episodes);
                }
            }
            Err(e) => {
                eprintln!(
                    "gltop: blocking detection stopped in process {}: {e}",
                    w.process.pid
                );
                w.sampler = None;
            }
        }
    }
    Ok(())
}

/// Answers one request; `scrape` reads the kernel's maps before `/metrics` is encoded.
fn answer(
    request: tiny_http::Request,
    registry: &Registry,
    scrape: impl FnOnce() -> Result<(), Failure>,
) -> Result<(), Failure> {
    let accept = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Accept"))
        .map(|h| h.value.as_str().to_string());
    let response = match http::route(request.method(), request.url(), accept.as_deref()) {
        http::Route::Metrics(format) => {
            scrape()?;
            match http::encode(registry, format) {
                Ok((body, content_type)) => http::text(200, &body, content_type),
                Err(_) => http::text(500, "cannot encode the metrics\n", "text/plain"),
            }
        }
        http::Route::Index => http::text(
            200,
            "gltop: the metrics are at /metrics\n",
            "text/plain; charset=utf-8",
        ),
        http::Route::NotFound => http::text(
            404,
            "not found: the metrics are at /metrics\n",
            "text/plain",
        ),
        http::Route::BadMethod => http::text(405, "only GET and HEAD\n", "text/plain"),
    };
    // A scraper that went away before its answer is its own business.
    let _ = request.respond(response);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exited_processes_go_after_keep_or_past_max_the_oldest_first() {
        let t0 = Instant::now();
        let at = |n: u64| t0 + Duration::from_secs(n);
        // Exited at `n` s and shown at once.
        let s = |n: u64| Some((at(n), Some(at(n))));
        let r = Retention {
            keep: Duration::from_secs(60),
            max: 2,
        };
        let now = at(100);
        // Running ones never go; exits at 10 s (kept 90 s), 50, 70, 80 and 90 s.
        let exits = [None, s(70), s(10), s(90), None, s(50), s(80)];
        assert_eq!(
            r.expired(&exits, now),
            [false, true, true, false, false, true, false],
            "10 and 50 kept 60 s already, 70 is the oldest of the three left past 2"
        );
        // Exited long ago but never shown (no scrape came): it stays, unless past the cap.
        let unseen = Some((at(0), None));
        assert_eq!(r.expired(&[unseen, s(99)], now), [false, false]);
        assert_eq!(
            r.expired(&[unseen, s(99), s(98)], now),
            [true, false, false]
        );
        // Shown 60 s after its exit: its time runs from then.
        assert_eq!(r.expired(&[Some((at(0), Some(at(50))))], now), [false]);
        let r = Retention {
            keep: Duration::ZERO,
            max: 10,
        };
        assert_eq!(r.expired(&[None, s(100)], now), [false, true]);
        assert_eq!(r.expired(&[Some((at(100), None))], now), [false]);
        let r = Retention {
            keep: Duration::from_secs(600),
            max: 0,
        };
        assert_eq!(r.expired(&[s(99), None], now), [true, false]);
    }
}
