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

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gltop::loader::sample::Sampler;
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
}

/// The processes to watch: those of `-p`, and with `--exe` those that run the file, looked
/// for every [`SCAN`].
pub(crate) struct Discovery {
    exe: Option<(u64, u64)>,
    /// Every process met so far (PID, start time), attached or not: none is tried twice.
    met: HashSet<(i32, u64)>,
    next_scan: Instant,
}

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
            met: HashSet::new(),
            next_scan: Instant::now(),
        })
    }

    /// Whether processes can still come (`--exe`): the loop runs until a signal then.
    pub(crate) fn open_ended(&self) -> bool {
        self.exe.is_some()
    }

    /// The processes to attach now: at the first call those of `-p` (every one must exist)
    /// and, every [`SCAN`], those of `--exe` not met yet.
    pub(crate) fn poll(&mut self, pids: &[i32]) -> Result<Vec<Process>, Failure> {
        let mut out = Vec::new();
        if self.met.is_empty() {
            for &pid in pids {
                let p = Process::find(pid)?;
                self.met.insert((p.pid, p.start_ticks));
                out.push(p);
            }
        }
        let Some(id) = self.exe else {
            return Ok(out);
        };
        let now = Instant::now();
        if now < self.next_scan {
            return Ok(out);
        }
        self.next_scan = now + SCAN;
        for pid in process::running_exe(id) {
            // Gone meanwhile: nothing to watch.
            let Ok(p) = Process::find(pid) else { continue };
            if p.exe_id == id && self.met.insert((p.pid, p.start_ticks)) {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// When the next scan is due (`None` without `--exe`).
    pub(crate) fn next_scan(&self) -> Option<Instant> {
        self.exe.map(|_| self.next_scan)
    }
}

/// Attaches the probes and the blocking detector to `p`. The detector's failure leaves the
/// probes without it (one line); a process gone before it is attached gives `Ok(None)` when
/// `found_later` (a scan met it), an error otherwise. Without `detector`, only the probes.
pub(crate) fn attach(
    args: &Args,
    p: &Process,
    found_later: bool,
    detector: bool,
    track_ended: bool,
) -> Result<Option<(Session, Option<Sampler>)>, Failure> {
    let opts = loader::Options {
        track_ended,
        ..args.options()
    };
    let session = match Session::attach(p.pid, &opts) {
        Ok(s) => s,
        Err(e) if found_later => {
            if p.is_alive() {
                eprintln!("gltop: process {} ({}) not watched: {e}", p.pid, p.comm);
            }
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    if !detector {
        return Ok(Some((session, None)));
    }
    let sampler = match Sampler::attach(p.pid, &args.sample_options(false)) {
        Ok(s) => Some(s),
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
    }));
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ExportCollector(exported.clone())));

    let mut watched = Vec::new();
    let mut per_hit_ns = args.hit_cost_ns;
    let window = window_ns(args);
    for (i, p) in first.into_iter().enumerate() {
        add(
            args,
            &p,
            i >= args.pids.len(),
            &mut per_hit_ns,
            &exported,
            &mut watched,
            window,
        )?;
    }
    eprintln!(
        "gltop: serving metrics on http://{bound}/metrics ({})",
        per_hit_ns.map_or("per-hit cost unknown".into(), |c| format!(
            "{c:.0} ns per hit"
        ))
    );

    let interval = Duration::from_secs_f64(args.delay);
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
                &mut per_hit_ns,
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
            crate::report_exit(&w.process);
        }
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
                refresh_all(&mut watched, &mut st, window)
            })?;
        }
    }
}

/// Attaches to `p` and exports it from now on (`found_later`: a scan met it, and a failure
/// to attach is reported and skipped).
fn add(
    args: &Args,
    p: &Process,
    found_later: bool,
    per_hit_ns: &mut Option<f64>,
    exported: &Mutex<Exported>,
    watched: &mut Vec<Watched>,
    window: u64,
) -> Result<(), Failure> {
    // Sums only, unless per-name counts need every record (`Target::absorb`).
    let track = args.greenlet_names.unwrap_or(0) == 0;
    let Some((session, sampler)) = attach(args, p, found_later, true, track)? else {
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
    };
    // The first snapshot: the rate window starts.
    refresh(&mut w, &mut st, window)?;
    watched.push(w);
    Ok(())
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
