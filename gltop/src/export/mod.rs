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

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gltop::loader::elf::PROVIDER;
use gltop::loader::{Process, Session};
use prometheus_client::registry::Registry;

use crate::run::{End, Failure, Signals};
use crate::{calibrate, Args};
use metrics::{ExportCollector, Exported, Labelling, Target};

/// How often the loop looks at signals and the processes while no request comes.
const POLL: Duration = Duration::from_millis(50);

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

/// One watched process: its session while it runs, and what is exported of it.
struct Watched {
    session: Option<Session>,
    index: usize,
}

/// Runs the exporter for `args` (`args.listen` is set).
pub fn run(args: &Args, addr: SocketAddr) -> Result<End, Failure> {
    if std::env::var_os("GLTOP_DEBUG").is_none() {
        libbpf_rs::set_print(None);
    }
    // Blocked before the server starts its threads, which inherit the mask: a stop signal
    // then reaches the signalfd, never a thread that would die of it.
    let mut signals = Signals::block()?;
    // Every PID is checked before anything is attached: one that is not there stops it all.
    for &pid in &args.pids {
        Process::find(pid)?;
    }
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
    }));
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ExportCollector(exported.clone())));

    let mut watched = Vec::new();
    let mut per_hit_ns = args.hit_cost_ns;
    for &pid in &args.pids {
        let session = Session::attach(pid, &args.options())?;
        if per_hit_ns.is_none() {
            // Measured once, on the first process: the attach mode is the same for every
            // process of one gltop (a Python process's cost is measured on its greenlet).
            per_hit_ns = match session.runtime() {
                gltop::loader::Runtime::Python(py) => calibrate::per_hit_ns_python(pid, &py.so),
                gltop::loader::Runtime::Rust => calibrate::per_hit_ns(session.mode()),
            };
        }
        let p = session.process();
        let exe = std::fs::read_link(p.exe())
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let target = Target::new(
            p.pid,
            p.comm.clone(),
            exe,
            PROVIDER,
            per_hit_ns,
            labelling.names,
        );
        eprintln!(
            "gltop: attached to process {} ({}): {} probe sites ({})",
            p.pid,
            p.comm,
            session.sites(),
            session.mode().as_str(),
        );
        let mut st = exported.lock().unwrap_or_else(|e| e.into_inner());
        st.targets.push(target);
        watched.push(Watched {
            session: Some(session),
            index: st.targets.len() - 1,
        });
    }
    {
        // The first snapshot: the rate window starts, and the per-hit cost is now known.
        let mut st = exported.lock().unwrap_or_else(|e| e.into_inner());
        let window = window_ns(args);
        for w in &mut watched {
            refresh(w, &mut st, window)?;
        }
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
        for w in watched.iter_mut().filter(|w| w.session.is_some()) {
            let process = w.session.as_ref().map(|s| s.process().clone());
            let Some(process) = process.filter(|p| !p.is_alive()) else {
                continue;
            };
            // Its last counts, then it is detached; what it did stays exported.
            let mut st = exported.lock().unwrap_or_else(|e| e.into_inner());
            refresh(w, &mut st, window_ns(args))?;
            st.targets[w.index].mark_exited();
            w.session = None;
            crate::report_exit(&process);
        }
        if watched.iter().all(|w| w.session.is_none()) {
            return Ok(End::Done);
        }
        if Instant::now() >= next {
            let mut st = exported.lock().unwrap_or_else(|e| e.into_inner());
            for w in &mut watched {
                refresh(w, &mut st, window_ns(args))?;
            }
            drop(st);
            next = (next + interval).max(Instant::now());
        }
        let wait = next.saturating_duration_since(Instant::now()).min(POLL);
        let request = server
            .recv_timeout(wait)
            .map_err(|e| anyhow::Error::new(e).context("cannot accept a request"))?;
        if let Some(request) = request {
            answer(request, &registry, || {
                let mut st = exported.lock().unwrap_or_else(|e| e.into_inner());
                for w in &mut watched {
                    refresh(w, &mut st, window_ns(args))?;
                }
                Ok(())
            })?;
        }
    }
}

/// The probe-hit rate's window: the refresh interval.
fn window_ns(args: &Args) -> u64 {
    (args.delay * 1e9) as u64
}

/// Snapshots `w`'s session, if it still has one, into its target.
fn refresh(w: &mut Watched, st: &mut Exported, window_ns: u64) -> Result<(), Failure> {
    if let Some(session) = &mut w.session {
        let snap = session.snapshot()?;
        st.targets[w.index].absorb(&snap, window_ns);
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
