//! `--json`: one JSON object per interval. The schema is documented in the README
//! ("gltop --json"); counts are cumulative since attach. Each line holds the live greenlets
//! and edges, and those that ended since the previous line (`ended`), each in exactly one
//! line: a reader that keeps every line's greenlets has all of them, and gltop keeps none.

use gltop::loader::rates::{nonempty_span, tracing_cost, Interval};
use gltop::loader::{Ended, GreenletStats, Outcome, Session, Snapshot, OUTCOME_SLOTS};
use serde::Serialize;

#[derive(Serialize)]
struct Line<'a> {
    /// Wall-clock time of the snapshot, seconds since the Unix epoch.
    time_unix_s: f64,
    pid: i32,
    process: &'a str,
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
    /// probe_hits_per_s × per_hit_ns, as a share of one CPU.
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
    per_hit_ns: Option<f64>,
) -> String {
    let iv = Interval { prev, cur };
    let t = &cur.totals;
    let o = &t.dead_by_outcome;
    let hits_per_s = iv.hits_per_s();
    let process = session.process();
    let caps = session.capacities();
    let line = Line {
        time_unix_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
        pid: process.pid,
        process: &process.comm,
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
            cpu_share: per_hit_ns.map(|c| tracing_cost(hits_per_s, c)),
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
    };
    serde_json::to_string(&line).expect("plain structs always serialize")
}
