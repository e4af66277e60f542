//! `--json`: one JSON object per interval. The schema is documented in the README
//! ("gltop --json"); counts are cumulative since attach. Each line holds the live greenlets
//! and edges, and those that ended since the previous line (`ended`), each in exactly one
//! line: a reader that keeps every line's greenlets has all of them, and gltop keeps none.

use gltop::loader::rates::{nonempty_span, tracing_cost, Interval};
use gltop::loader::sample::{Episode, SampleSnapshot, Sampler};
use gltop::loader::{Ended, GreenletStats, Outcome, Session, Snapshot, OUTCOME_SLOTS};
use serde::Serialize;

#[derive(Serialize)]
struct Line<'a> {
    /// `exact` (a probe in every switch) or `sample`.
    mode: &'static str,
    /// Wall-clock time of the snapshot, seconds since the Unix epoch.
    time_unix_s: f64,
    pid: i32,
    process: &'a str,
    /// The target's greenlet runtime: `rust-greenlet` or `python-greenlet`.
    runtime: &'static str,
    /// Its version, where the target says (Python greenlet's `__version__`).
    runtime_version: Option<&'a str>,
    threads: usize,
    attach: Attach<'a>,
    /// Seconds between this snapshot and the previous one.
    interval_s: f64,
    totals: Totals,
    rates: Rates,
    cost: Cost,
    greenlets: Vec<Greenlet<'a>>,
    edges: Vec<Edge>,
    per_thread: Vec<Thread>,
    /// The watched processes: the traced one, and with --follow those forked from it.
    processes: Vec<ProcessLine<'a>>,
    maps: Maps,
    /// Blocking episodes: those that ended since the previous line and those still going
    /// (`ongoing`), newest first; null when the target cannot be sampled.
    blocking: Option<Vec<Blocking>>,
}

/// Most blocking episodes in one line (the newest); the rest are counted in the next field.
pub const MAX_BLOCKING_PER_LINE: usize = 100;

/// One blocking episode: the finding of the runtime's lint catalogue
/// (`greenlet::lint::Blocking`, as its in-process checker gives it), with what only the
/// kernel-side detector knows.
#[derive(Serialize)]
pub struct Blocking {
    /// `"blocking"` (`Lint::name`).
    lint: &'static str,
    greenlet_id: u64,
    greenlet_name: Option<String>,
    thread: u64,
    duration_ns: u64,
    ongoing: bool,
    /// `"on-cpu"` or `"off-cpu"` (off the CPU, blocked, for most of it).
    cpu: &'static str,
    syscall: Option<String>,
    /// Symbolized user stack, innermost first.
    stack: Vec<String>,
    /// `Lint::summary`.
    summary: String,
    /// CLOCK_MONOTONIC ns of its first observation.
    start_ns: u64,
    /// Time blocked (off the CPU, not runnable) within it.
    off_cpu_ns: u64,
}

/// The episodes as JSON, newest first, at most [`MAX_BLOCKING_PER_LINE`]; `name` names a
/// greenlet by id.
pub fn blocking(episodes: &[Episode], name: impl Fn(u64) -> Option<String>) -> Vec<Blocking> {
    use greenlet::lint::Lint;
    let mut v: Vec<&Episode> = episodes.iter().collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.start_ns));
    v.truncate(MAX_BLOCKING_PER_LINE);
    v.into_iter()
        .map(|e| {
            let f = e.finding(name(e.greenlet));
            Blocking {
                lint: f.name(),
                summary: f.summary(),
                greenlet_id: f.greenlet_id,
                greenlet_name: f.greenlet_name,
                thread: f.thread,
                duration_ns: f.duration.as_nanos() as u64,
                ongoing: f.ongoing,
                cpu: f.cpu.as_str(),
                syscall: f.syscall,
                stack: f.stack,
                start_ns: e.start_ns,
                off_cpu_ns: e.off_cpu_ns,
            }
        })
        .collect()
}

#[derive(Serialize)]
struct ProcessLine<'a> {
    pid: i32,
    ppid: i32,
    process: &'a str,
    exited: bool,
    switches: u64,
    throws: u64,
    greenlets_created: u64,
    greenlets_dead: u64,
}

#[derive(Serialize)]
struct Attach<'a> {
    mode: &'a str,
    sites: usize,
    missing_probes: &'a [&'static str],
}

#[derive(Serialize)]
struct Totals {
    switches: u64,
    throws: u64,
    greenlets_created: u64,
    greenlets_dead: u64,
    /// Events lost to full maps (failed inserts).
    dropped: u64,
    /// Live greenlets in this line (state other than dead).
    alive: u64,
    probe_hits: u64,
    late_greenlets: u64,
    dead_by_outcome: DeadByOutcome,
    failed: Failed,
    /// Greenlets and edges that ended since attach (each was in one line with `ended`).
    ended: PerMap,
}

/// Deaths per outcome, keyed by the runtime's outcome names in code order, then `other`
/// for codes this gltop does not know.
struct DeadByOutcome([u64; OUTCOME_SLOTS]);

impl Serialize for DeadByOutcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let known = Outcome::ALL
            .iter()
            .map(|o| (o.name(), self.0[usize::from(o.code())]));
        let other: u64 = self.0[Outcome::ALL.len()..].iter().sum();
        s.collect_map(known.chain([("other", other)]))
    }
}

#[derive(Serialize)]
struct PerMap {
    greenlets: u64,
    edges: u64,
}

#[derive(Serialize)]
struct Failed {
    greenlets: u64,
    edges: u64,
    threads: u64,
}

#[derive(Serialize)]
struct Maps {
    greenlets: MapUse,
    edges: MapUse,
    threads: MapUse,
}

/// Entries a kernel map holds after this snapshot, and how many it can hold.
#[derive(Serialize)]
struct MapUse {
    entries: u64,
    capacity: u32,
}

#[derive(Serialize)]
struct Rates {
    switches_per_s: f64,
    throws_per_s: f64,
    probe_hits_per_s: f64,
}

#[derive(Serialize)]
struct Cost {
    /// Nanoseconds one probe hit costs the target (measured at start-up or given).
    per_hit_ns: Option<f64>,
    /// The blocking detector's cpu-clock samples of the target per second (null when it
    /// does not run, and on the first line).
    detector_samples_per_s: Option<f64>,
    /// Nanoseconds one of its samples costs the target (null: not measured, as when
    /// `--hit-cost-ns` is given, or no detector).
    per_sample_ns: Option<f64>,
    /// probe_hits_per_s × per_hit_ns, plus detector_samples_per_s × per_sample_ns where both
    /// are known, as a share of one CPU.
    cpu_share: Option<f64>,
}

#[derive(Serialize)]
struct Greenlet<'a> {
    id: u64,
    pid: i32,
    name: &'a str,
    parent: Option<u64>,
    main: bool,
    seen_new: bool,
    state: &'static str,
    ended: bool,
    outcome: Option<&'static str>,
    tid: u32,
    switches_in: u64,
    switches_out: u64,
    throws_in: u64,
    throws_out: u64,
    on_cpu_ns: u64,
    running_ns: u64,
    max_slice_ns: u64,
    slices: u64,
    created_ns: Option<u64>,
    dead_ns: Option<u64>,
    /// `[lower bound in ns, count]` for each non-empty log2 bucket.
    slice_hist: Vec<[u64; 2]>,
}

#[derive(Serialize)]
struct Edge {
    pid: i32,
    origin: u64,
    target: u64,
    switches: u64,
    throws: u64,
    ended: bool,
}

#[derive(Serialize)]
struct Thread {
    tid: u32,
    current: Option<u64>,
    since_ns: Option<u64>,
    transfers: u64,
    alive: u64,
}

fn greenlet(g: &GreenletStats, at_ns: u64) -> Greenlet<'_> {
    let slice_hist = nonempty_span(&g.hist)
        .map(|span| {
            span.filter(|&i| g.hist[i] != 0)
                .map(|i| [gltop::loader::rates::bucket_range(i).0, g.hist[i]])
                .collect()
        })
        .unwrap_or_default();
    Greenlet {
        id: g.id,
        pid: g.pid,
        name: &g.name,
        parent: g.parent,
        main: g.is_main(),
        seen_new: g.seen_new,
        state: g.state.as_str(),
        ended: g.ended,
        outcome: g.outcome.map(Ended::name),
        tid: g.tid,
        switches_in: g.switches_in,
        switches_out: g.switches_out,
        throws_in: g.throws_in,
        throws_out: g.throws_out,
        on_cpu_ns: g.on_cpu_ns,
        running_ns: g.on_cpu_at(at_ns) - g.on_cpu_ns,
        max_slice_ns: g.max_slice_ns,
        slices: g.slices,
        created_ns: g.created_ns,
        dead_ns: g.dead_ns,
        slice_hist,
    }
}

/// The JSON line for the interval from `prev` to `cur`.
pub fn interval_line(
    session: &Session,
    prev: &Snapshot,
    cur: &Snapshot,
    costs: &crate::run::Costs,
    blocking: Option<Vec<Blocking>>,
) -> String {
    let iv = Interval { prev, cur };
    let per_hit_ns = costs.per_hit_ns;
    let detector = costs.detector.as_ref();
    let t = &cur.totals;
    let o = &t.dead_by_outcome;
    let hits_per_s = iv.hits_per_s();
    let process = session.process();
    let caps = session.capacities();
    let line = Line {
        mode: "exact",
        time_unix_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
        pid: process.pid,
        process: &process.comm,
        runtime: session.runtime().name(),
        runtime_version: session.runtime().version(),
        threads: process.threads(),
        attach: Attach {
            mode: session.mode().as_str(),
            sites: session.sites(),
            missing_probes: session.missing_probes(),
        },
        interval_s: iv.dt_ns() as f64 / 1e9,
        totals: Totals {
            switches: t.switches,
            throws: t.throws,
            greenlets_created: t.greenlets_created,
            greenlets_dead: t.greenlets_dead,
            dropped: t.dropped(),
            alive: cur.alive() as u64,
            probe_hits: t.hits(),
            late_greenlets: t.late_greenlets,
            dead_by_outcome: DeadByOutcome(*o),
            failed: Failed {
                greenlets: t.greenlet_failures,
                edges: t.edge_failures,
                threads: t.thread_failures,
            },
            ended: PerMap {
                greenlets: t.ended_greenlets,
                edges: t.ended_edges,
            },
        },
        rates: Rates {
            switches_per_s: iv.switches_per_s(),
            throws_per_s: iv.throws_per_s(),
            probe_hits_per_s: hits_per_s,
        },
        cost: Cost {
            per_hit_ns,
            detector_samples_per_s: detector.and_then(|d| d.samples_per_s),
            per_sample_ns: detector.and_then(|d| d.per_sample_ns),
            cpu_share: per_hit_ns.map(|c| {
                tracing_cost(hits_per_s, c) + detector.and_then(|d| d.cpu_share()).unwrap_or(0.0)
            }),
        },
        greenlets: cur
            .greenlets
            .iter()
            .map(|g| greenlet(g, cur.at_ns))
            .collect(),
        edges: cur
            .edges
            .iter()
            .map(|e| Edge {
                pid: e.pid,
                origin: e.origin,
                target: e.target,
                switches: e.switches,
                throws: e.throws,
                ended: e.ended,
            })
            .collect(),
        per_thread: cur
            .threads
            .iter()
            .map(|t| Thread {
                tid: t.tid,
                current: t.current,
                since_ns: t.since_ns,
                transfers: t.transfers,
                alive: t.alive,
            })
            .collect(),
        processes: cur
            .processes
            .iter()
            .map(|p| ProcessLine {
                pid: p.pid,
                ppid: p.ppid,
                process: &p.comm,
                exited: p.exited,
                switches: p.switches,
                throws: p.throws,
                greenlets_created: p.greenlets_created,
                greenlets_dead: p.greenlets_dead,
            })
            .collect(),
        maps: Maps {
            greenlets: MapUse {
                entries: cur.maps.greenlets,
                capacity: caps.greenlets,
            },
            edges: MapUse {
                entries: cur.maps.edges,
                capacity: caps.edges,
            },
            threads: MapUse {
                entries: cur.maps.threads,
                capacity: caps.threads,
            },
        },
        blocking,
    };
    serde_json::to_string(&line).expect("plain structs always serialize")
}

/// A line of the sampled mode: the exact mode's fields, those it cannot fill null.
#[derive(Serialize)]
struct SampledLine<'a> {
    mode: &'static str,
    /// `rust-greenlet` (the greenlet crate's runtime) or `python-greenlet`, as in exact mode.
    runtime: &'static str,
    time_unix_s: f64,
    pid: i32,
    process: &'a str,
    threads: usize,
    attach: SampledAttach,
    interval_s: f64,
    totals: SampledTotals,
    rates: SampledRates,
    cost: SampledCost,
    greenlets: Vec<SampledGreenletLine<'a>>,
    /// No edges are known without a probe in the switch.
    edges: Option<()>,
    per_thread: Vec<SampledThreadLine>,
    /// Null where no blocking detector runs (Python greenlet: no per-thread switch counter).
    blocking: Option<Vec<Blocking>>,
}

#[derive(Serialize)]
struct SampledAttach {
    mode: &'static str,
    hz: u32,
    cpus: usize,
    block_ms: Option<u64>,
    /// Call sites of the `new` probe attached (names and parents).
    new_sites: usize,
    /// The runtime's layout is known (it has created a thread state): greenlets are read.
    layout_known: bool,
    /// Python greenlet only: the module read and what was found in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    python: Option<PythonAttach>,
}

/// Where a Python greenlet process keeps its current greenlet (`loader::pygreenlet`).
#[derive(Clone, Debug, Serialize)]
pub struct PythonAttach {
    /// The `_greenlet*.so` mapped in the process.
    pub module: String,
    /// greenlet's version (from its dist-info), if known.
    pub greenlet_version: Option<String>,
    /// CPython's tag of the module (`cpython-311`).
    pub python: Option<String>,
    /// The module's TLS module id, once a sample found it (null before).
    pub module_id: Option<u32>,
}

/// What a sampled-mode line says about the sampler: the Rust runtime's or Python greenlet's.
pub struct SampledSource<'a> {
    pub process: &'a gltop::loader::Process,
    pub runtime: &'static str,
    pub hz: u32,
    pub cpus: usize,
    /// The blocking threshold, where blocking is detected.
    pub block_ms: Option<u64>,
    pub new_sites: usize,
    /// The runtime counts transfers per thread (switch rates are known).
    pub counts_switches: bool,
    pub python: Option<PythonAttach>,
}

impl<'a> SampledSource<'a> {
    /// The Rust runtime's sampler.
    pub fn of(sampler: &'a Sampler) -> Self {
        SampledSource {
            process: sampler.process(),
            runtime: "rust-greenlet",
            hz: sampler.options().hz,
            cpus: sampler.cpus(),
            block_ms: Some(sampler.options().block_ms),
            new_sites: sampler.new_sites(),
            counts_switches: true,
            python: None,
        }
    }
}

#[derive(Serialize)]
struct SampledTotals {
    /// Transfers since attach, from the threads' counters (null: the runtime keeps none).
    switches: Option<u64>,
    throws: Option<u64>,
    greenlets_created: u64,
    greenlets_dead: Option<u64>,
    samples: u64,
    unreadable_samples: u64,
    sched_switch_events: u64,
    episodes: u64,
    dropped: u64,
    stacks_lost: u64,
}

#[derive(Serialize)]
struct SampledRates {
    switches_per_s: Option<f64>,
    throws_per_s: Option<f64>,
    samples_per_s: f64,
}

#[derive(Serialize)]
struct SampledCost {
    /// Nanoseconds one sample costs the target (measured at start-up or given).
    per_sample_ns: Option<f64>,
    /// samples_per_s × per_sample_ns, as a share of one CPU.
    cpu_share: Option<f64>,
}

#[derive(Serialize)]
struct SampledGreenletLine<'a> {
    id: u64,
    pid: i32,
    tid: u32,
    name: Option<&'a str>,
    parent: Option<u64>,
    main: Option<bool>,
    seen_new: bool,
    /// Its thread's greenlet at the thread's last observation.
    current: bool,
    state: Option<&'static str>,
    samples: u64,
    /// Samples of the interval / hz / interval × 100: percent of one CPU.
    cpu_pct: Option<f64>,
    offcpu_ns: u64,
    offcpu_sleeping_ns: u64,
    offcpu_preempted_ns: u64,
    switches_in: Option<u64>,
    switches_out: Option<u64>,
    throws_in: Option<u64>,
    throws_out: Option<u64>,
    on_cpu_ns: Option<u64>,
    max_slice_ns: Option<u64>,
    slices: Option<u64>,
    outcome: Option<&'static str>,
}

#[derive(Serialize)]
struct SampledThreadLine {
    tid: u32,
    current: Option<u64>,
    /// Transfers since attach (the runtime's counter; null: it keeps none).
    switches: Option<u64>,
    switches_per_s: Option<f64>,
    samples: u64,
    off_cpu: bool,
}

/// The JSON line of the sampled mode for the interval from `prev` to `cur`.
pub fn sampled_line(
    source: &SampledSource<'_>,
    prev: &SampleSnapshot,
    cur: &SampleSnapshot,
    per_sample_ns: Option<f64>,
) -> String {
    use gltop::loader::rates::per_second;
    let counts = source.counts_switches;
    let dt = cur.at_ns.saturating_sub(prev.at_ns);
    let dt_s = dt as f64 / 1e9;
    let t = &cur.totals;
    let samples_per_s = per_second(prev.totals.samples, t.samples, dt);
    let rates = gltop::loader::sample::thread_switch_rates(prev, cur);
    let process = source.process;
    let names: std::collections::HashMap<u64, String> = cur
        .greenlets
        .iter()
        .filter(|g| g.id != 0 && (g.name.is_some() || g.seen_new))
        .map(|g| (g.id, g.display_name().to_string()))
        .collect();
    let total_switches: u64 = cur.threads.iter().map(|t| t.switches).sum();
    let prev_switches: u64 = prev.threads.iter().map(|t| t.switches).sum();
    let line = SampledLine {
        mode: "sample",
        runtime: source.runtime,
        time_unix_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
        pid: process.pid,
        process: &process.comm,
        threads: process.threads(),
        attach: SampledAttach {
            mode: "sample",
            hz: source.hz,
            cpus: source.cpus,
            block_ms: source.block_ms,
            new_sites: source.new_sites,
            layout_known: cur.layout_known,
            python: source.python.clone(),
        },
        interval_s: dt_s,
        totals: SampledTotals {
            switches: counts.then_some(total_switches),
            throws: None,
            greenlets_created: t.created,
            greenlets_dead: None,
            samples: t.samples,
            unreadable_samples: t.unreadable,
            sched_switch_events: t.switch_events,
            episodes: t.episodes,
            dropped: t.dropped(),
            stacks_lost: t.stack_failures,
        },
        rates: SampledRates {
            switches_per_s: (counts && dt > 0 && !prev.threads.is_empty())
                .then(|| per_second(prev_switches, total_switches, dt)),
            throws_per_s: None,
            samples_per_s,
        },
        cost: SampledCost {
            per_sample_ns,
            cpu_share: per_sample_ns.map(|c| tracing_cost(samples_per_s, c)),
        },
        greenlets: cur
            .greenlets
            .iter()
            .map(|g| {
                let before = prev
                    .greenlets
                    .iter()
                    .find(|p| p.tid == g.tid && p.id == g.id && p.name == g.name)
                    .map_or(0, |p| p.samples);
                let d = g.samples.saturating_sub(before);
                SampledGreenletLine {
                    id: g.id,
                    pid: g.pid,
                    tid: g.tid,
                    name: g.name.as_deref(),
                    parent: g.parent,
                    main: g.main,
                    seen_new: g.seen_new,
                    current: g.current,
                    state: None,
                    samples: g.samples,
                    cpu_pct: (dt > 0).then(|| d as f64 / f64::from(source.hz) / dt_s * 100.0),
                    offcpu_ns: g.offcpu_ns(),
                    offcpu_sleeping_ns: g.sleep_ns,
                    offcpu_preempted_ns: g.preempt_ns,
                    switches_in: None,
                    switches_out: None,
                    throws_in: None,
                    throws_out: None,
                    on_cpu_ns: None,
                    max_slice_ns: None,
                    slices: None,
                    outcome: None,
                }
            })
            .collect(),
        edges: None,
        per_thread: cur
            .threads
            .iter()
            .map(|th| SampledThreadLine {
                tid: th.tid,
                current: th.current,
                switches: counts.then_some(th.switches),
                switches_per_s: rates.get(&th.tid).copied().filter(|_| counts),
                samples: th.samples,
                off_cpu: th.off_cpu,
            })
            .collect(),
        blocking: source
            .block_ms
            .map(|_| blocking(&cur.episodes, |id| names.get(&id).cloned())),
    };
    serde_json::to_string(&line).expect("plain structs always serialize")
}
