//! What `--listen` exposes, as plain data: each watched process's counts, kept cumulative
//! across the snapshots that move ended greenlets out of the kernel ([`Target::absorb`]), and
//! the [`Collector`] that encodes them, grouped by the bounded label set, at scrape time.
//!
//! Names are in base units (seconds, plain counts) and follow the table of issue 14. The
//! slice histogram is the kernel's log2 histogram converted as ebpf_exporter converts its
//! `exp2` buckets: bucket `k` becomes the cumulative bucket `le = 2^k × multiplier`. The
//! kernel's bucket `i` holds slices in `[2^i, 2^(i+1))` ns (`rates::bucket_range`), so it
//! is key `i + 1` with a multiplier of 1e-9 s: every slice it counts is below its `le`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use gltop::loader::rates::{bucket_range, tracing_cost};
use gltop::loader::sample::Episode;
use gltop::loader::{
    Aggregate, GreenletKey, Outcome, Snapshot, Totals, HIST_BUCKETS, OUTCOME_SLOTS,
};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

/// The greenlet name series of one process beyond `--greenlet-names N` go under this name.
pub const OTHER_NAMES: &str = "_other";
/// The largest `--greenlet-names`.
pub const MAX_NAMES: usize = 100;

/// How the exporter labels its series.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Labelling {
    /// Add a `pid` label to every per-process series (`--per-pid`).
    pub per_pid: bool,
    /// Per process, the greenlet names that get series of their own (`--greenlet-names`);
    /// 0: no per-name series.
    pub names: usize,
}

/// Counts of one greenlet name (or of [`OTHER_NAMES`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NameCounts {
    /// Switches into greenlets of this name.
    pub switches: u64,
    /// Their on-CPU time in completed slices, ns.
    pub on_cpu_ns: u64,
}

/// Per-name counts of one process, bounded: the first `bound` names seen (the busiest first
/// when several appear in one snapshot) keep series of their own for good, every other name
/// goes under [`OTHER_NAMES`]. Counts grow by each greenlet's increase since the previous
/// snapshot, so every series only grows.
#[derive(Clone, Debug, Default)]
pub struct Names {
    bound: usize,
    counts: BTreeMap<String, NameCounts>,
    /// Each live greenlet's counts at the previous snapshot: (switches in, on-CPU ns).
    seen: HashMap<GreenletKey, (u64, u64)>,
}

impl Names {
    fn new(bound: usize) -> Names {
        Names {
            bound,
            ..Names::default()
        }
    }

    fn absorb(&mut self, snap: &Snapshot) {
        // Increases first, then names in order of activity, so the busiest get the slots.
        let mut grew: Vec<(&str, u64, u64)> = Vec::new();
        let mut live = HashMap::with_capacity(snap.greenlets.len());
        for g in &snap.greenlets {
            let (sw, cpu) = self.seen.get(&g.key()).copied().unwrap_or_default();
            let d = (
                g.switches_in.saturating_sub(sw),
                g.on_cpu_ns.saturating_sub(cpu),
            );
            if d != (0, 0) {
                grew.push((g.display_name(), d.0, d.1));
            }
            if !g.ended {
                live.insert(g.key(), (g.switches_in, g.on_cpu_ns));
            }
        }
        self.seen = live;
        grew.sort_by_key(|&(_, sw, cpu)| std::cmp::Reverse((sw, cpu)));
        for (name, sw, cpu) in grew {
            let tracked = self.counts.len() - usize::from(self.counts.contains_key(OTHER_NAMES));
            let key = if self.counts.contains_key(name) || tracked < self.bound {
                name
            } else {
                OTHER_NAMES
            };
            let c = self.counts.entry(key.to_string()).or_default();
            c.switches += sw;
            c.on_cpu_ns += cpu;
        }
    }

    /// The series: name -> counts, at most `bound + 1` of them.
    pub fn counts(&self) -> &BTreeMap<String, NameCounts> {
        &self.counts
    }
}

/// One watched process, as the exporter keeps it.
#[derive(Clone, Debug)]
pub struct Target {
    /// Its PID.
    pub pid: i32,
    /// Its command name.
    pub process: String,
    /// Its executable's path when attached.
    pub exe: String,
    /// Its greenlet runtime, as `--json` names it: `rust-greenlet` or `python-greenlet`.
    pub runtime: &'static str,
    /// It exited: its counts are final.
    pub exited: bool,
    /// Totals since attach at the last snapshot.
    pub totals: Totals,
    /// Live greenlets at the last snapshot (0 once it exited).
    pub live: u64,
    /// Slice histogram, count and sum of the greenlets whose records left the kernel.
    ended_hist: [u64; HIST_BUCKETS],
    ended_on_cpu_ns: u64,
    /// The same of the records still in the kernel at the last snapshot.
    live_hist: [u64; HIST_BUCKETS],
    live_on_cpu_ns: u64,
    /// Cost of one probe hit, ns, when known.
    pub per_hit_ns: Option<f64>,
    /// Where the current rate window started: (CLOCK_MONOTONIC ns, probe hits).
    mark: Option<(u64, u64)>,
    /// Probe hits per second over the last full window.
    hits_per_s: f64,
    /// Per-name counts (`--greenlet-names`).
    pub names: Option<Names>,
    /// Blocking episodes, while the blocking detector runs beside the probes.
    pub blocking: Option<Blocking>,
}

/// Blocking episodes of one process since the detector attached: those that ended, plus
/// those going on at the last snapshot (an ongoing episode is counted once, and its time up
/// to the snapshot; when it ends, its record replaces it). Both exported values only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Blocking {
    ended: u64,
    ended_ns: u64,
    ongoing: u64,
    ongoing_ns: u64,
    /// The largest values exported so far: (episodes, ns).
    high: (u64, u64),
}

impl Blocking {
    /// Takes in one snapshot's episodes: those that ended since the previous one, then
    /// those still going on.
    pub fn absorb(&mut self, episodes: &[Episode]) {
        self.ongoing = 0;
        self.ongoing_ns = 0;
        for e in episodes {
            if e.ongoing {
                self.ongoing += 1;
                self.ongoing_ns += e.duration_ns;
            } else {
                self.ended += 1;
                self.ended_ns += e.duration_ns;
            }
        }
        // An ongoing episode's duration runs to the snapshot; its ended record runs to the
        // last moment the thread was seen in it, which can be a little earlier: a counter
        // never goes back.
        self.high = (
            self.high.0.max(self.ended + self.ongoing),
            self.high.1.max(self.ended_ns + self.ongoing_ns),
        );
    }

    /// Episodes so far.
    pub fn episodes(&self) -> u64 {
        self.high.0
    }

    /// Their time so far, ns.
    pub fn ns(&self) -> u64 {
        self.high.1
    }
}

impl Target {
    /// A process just attached; `names` is the `--greenlet-names` bound (0: none).
    pub fn new(
        pid: i32,
        process: String,
        exe: String,
        runtime: &'static str,
        per_hit_ns: Option<f64>,
        names: usize,
    ) -> Target {
        Target {
            pid,
            process,
            exe,
            runtime,
            exited: false,
            totals: Totals::default(),
            live: 0,
            ended_hist: [0; HIST_BUCKETS],
            ended_on_cpu_ns: 0,
            live_hist: [0; HIST_BUCKETS],
            live_on_cpu_ns: 0,
            per_hit_ns,
            mark: None,
            hits_per_s: 0.0,
            names: (names > 0).then(|| Names::new(names)),
            blocking: None,
        }
    }

    /// Takes in a snapshot of this process's session. The records that left the kernel with
    /// it (`ended`) are added for good; the others replace those of the previous snapshot.
    /// The probe-hit rate is measured over windows of at least `window_ns`.
    pub fn absorb(&mut self, snap: &Snapshot, window_ns: u64) {
        self.totals = snap.totals;
        self.live = snap.alive() as u64;
        self.live_hist = [0; HIST_BUCKETS];
        self.live_on_cpu_ns = 0;
        for g in &snap.greenlets {
            let (hist, sum) = if g.ended {
                (&mut self.ended_hist, &mut self.ended_on_cpu_ns)
            } else {
                (&mut self.live_hist, &mut self.live_on_cpu_ns)
            };
            for (a, b) in hist.iter_mut().zip(g.hist.iter()) {
                *a += b;
            }
            *sum += g.on_cpu_ns;
        }
        if let Some(names) = &mut self.names {
            names.absorb(snap);
        }
        self.mark_hits(snap.at_ns, window_ns);
    }

    /// Takes in a session's sums ([`gltop::loader::Session::aggregate`]): the same figures as
    /// [`Target::absorb`] gives without per-name counts, read without the records.
    pub fn absorb_aggregate(&mut self, agg: &Aggregate, window_ns: u64) {
        self.totals = agg.totals;
        self.live = agg.live;
        // The kernel's sums cover every slice, of records still there or moved out.
        self.ended_hist = [0; HIST_BUCKETS];
        self.ended_on_cpu_ns = 0;
        self.live_hist = agg.hist;
        self.live_on_cpu_ns = agg.slice_ns;
        self.mark_hits(agg.at_ns, window_ns);
    }

    /// The probe-hit rate's window moves on to `at_ns` once it spans `window_ns`.
    fn mark_hits(&mut self, at_ns: u64, window_ns: u64) {
        let hits = self.totals.hits();
        match self.mark {
            None => self.mark = Some((at_ns, hits)),
            Some((at, before)) if at_ns.saturating_sub(at) >= window_ns.max(1) => {
                let dt = at_ns - at;
                self.hits_per_s = hits.saturating_sub(before) as f64 * 1e9 / dt as f64;
                self.mark = Some((at_ns, hits));
            }
            Some(_) => {}
        }
    }

    /// After its last snapshot: it exited, nothing is live and nothing runs any more.
    pub fn mark_exited(&mut self) {
        self.exited = true;
        self.live = 0;
        self.hits_per_s = 0.0;
    }

    /// The slice histogram since attach: per-bucket counts, and the sum of the slices in ns.
    pub fn slices(&self) -> ([u64; HIST_BUCKETS], u64) {
        let mut h = self.ended_hist;
        for (a, b) in h.iter_mut().zip(self.live_hist) {
            *a += b;
        }
        (h, self.ended_on_cpu_ns + self.live_on_cpu_ns)
    }

    /// What tracing costs it now, as a share of one CPU; `None` when the per-hit cost is
    /// unknown.
    pub fn tracing_cpu_ratio(&self) -> Option<f64> {
        self.per_hit_ns.map(|c| tracing_cost(self.hits_per_s, c))
    }
}

/// A label set: (name, value) pairs in a fixed order.
type Labels = Vec<(&'static str, String)>;

/// The sums of the processes that share one label set.
#[derive(Clone, Debug)]
struct Group {
    totals: Totals,
    live: u64,
    hist: [u64; HIST_BUCKETS],
    on_cpu_ns: u64,
    /// `None` when the cost of no process in the group is known.
    cpu_ratio: Option<f64>,
    names: BTreeMap<String, NameCounts>,
    /// Blocking (episodes, ns); `None` when the detector runs for no process in the group.
    blocking: Option<(u64, u64)>,
}

impl Default for Group {
    fn default() -> Group {
        Group {
            totals: Totals::default(),
            live: 0,
            hist: [0; HIST_BUCKETS],
            on_cpu_ns: 0,
            cpu_ratio: None,
            names: BTreeMap::new(),
            blocking: None,
        }
    }
}

fn add_totals(a: &mut Totals, b: &Totals) {
    a.switches += b.switches;
    a.throws += b.throws;
    a.greenlets_created += b.greenlets_created;
    a.greenlets_dead += b.greenlets_dead;
    for (x, y) in a.dead_by_outcome.iter_mut().zip(b.dead_by_outcome) {
        *x += y;
    }
    a.greenlet_failures += b.greenlet_failures;
    a.edge_failures += b.edge_failures;
    a.thread_failures += b.thread_failures;
}

impl Group {
    /// Adds `t`'s counts.
    fn add_target(&mut self, t: &Target) {
        add_totals(&mut self.totals, &t.totals);
        self.live += t.live;
        let (hist, sum) = t.slices();
        for (a, b) in self.hist.iter_mut().zip(hist) {
            *a += b;
        }
        self.on_cpu_ns += sum;
        if let Some(r) = t.tracing_cpu_ratio() {
            *self.cpu_ratio.get_or_insert(0.0) += r;
        }
        if let Some(b) = &t.blocking {
            let s = self.blocking.get_or_insert((0, 0));
            s.0 += b.episodes();
            s.1 += b.ns();
        }
        if let Some(names) = &t.names {
            for (name, c) in names.counts() {
                let s = self.names.entry(name.clone()).or_default();
                s.switches += c.switches;
                s.on_cpu_ns += c.on_cpu_ns;
            }
        }
    }

    /// Adds the counters of `other` (the processes released under one name): not its gauges.
    fn add_counters(&mut self, other: &Group) {
        add_totals(&mut self.totals, &other.totals);
        for (a, b) in self.hist.iter_mut().zip(other.hist) {
            *a += b;
        }
        self.on_cpu_ns += other.on_cpu_ns;
        if let Some((n, ns)) = other.blocking {
            let s = self.blocking.get_or_insert((0, 0));
            s.0 += n;
            s.1 += ns;
        }
        for (name, c) in &other.names {
            let s = self.names.entry(name.clone()).or_default();
            s.switches += c.switches;
            s.on_cpu_ns += c.on_cpu_ns;
        }
    }
}

/// The final counts of the exited processes the exporter no longer keeps one by one (see
/// [`Exported::release`]), summed per process name: every counter of the `process` label
/// set goes on from where those processes left it, so it never goes back when one of them
/// is dropped.
#[derive(Clone, Debug, Default)]
pub struct Released {
    by_process: BTreeMap<String, Group>,
    /// Processes released so far.
    pub count: u64,
}

impl Released {
    /// Folds exited target `t` in: its counters under its process name; its greenlet names
    /// keep their series while the name's released series hold fewer than `names` of them,
    /// the rest go under [`OTHER_NAMES`].
    fn fold(&mut self, t: &Target, names: usize) {
        let g = self.by_process.entry(t.process.clone()).or_default();
        let mut one = Group::default();
        one.add_target(t);
        one.live = 0;
        one.cpu_ratio = None;
        let named = std::mem::take(&mut one.names);
        g.add_counters(&one);
        for (name, c) in named {
            let tracked = g.names.len() - usize::from(g.names.contains_key(OTHER_NAMES));
            let key = if g.names.contains_key(&name) || (name != OTHER_NAMES && tracked < names) {
                name
            } else {
                OTHER_NAMES.to_string()
            };
            let s = g.names.entry(key).or_default();
            s.switches += c.switches;
            s.on_cpu_ns += c.on_cpu_ns;
        }
        self.count += 1;
    }
}

/// The targets summed by label set: `process`, and `pid` with `per_pid`; the released
/// processes' counts go under their `process` label alone.
fn groups(
    targets: &[Target],
    released: &Released,
    labelling: Labelling,
) -> BTreeMap<Labels, Group> {
    let mut out: BTreeMap<Labels, Group> = BTreeMap::new();
    for (process, g) in &released.by_process {
        out.entry(vec![("process", process.clone())])
            .or_default()
            .add_counters(g);
    }
    for t in targets {
        let mut labels = vec![("process", t.process.clone())];
        if labelling.per_pid {
            labels.push(("pid", t.pid.to_string()));
        }
        out.entry(labels).or_default().add_target(t);
    }
    out
}

/// The outcome label of each slot of `Totals::dead_by_outcome`: the runtime's names, then
/// `other` for the codes this gltop does not know (the last slot).
fn outcome_slots() -> impl Iterator<Item = (&'static str, std::ops::Range<usize>)> {
    let known = Outcome::ALL
        .iter()
        .map(|o| (o.name(), usize::from(o.code())..usize::from(o.code()) + 1));
    known.chain([("other", Outcome::ALL.len()..OUTCOME_SLOTS)])
}

/// The histogram buckets in Prometheus's terms: (upper bound in seconds, count in that
/// bucket alone); the last kernel bucket, open-ended, is `+Inf`.
pub fn prometheus_buckets(hist: &[u64; HIST_BUCKETS]) -> Vec<(f64, u64)> {
    hist.iter()
        .enumerate()
        .map(|(i, &n)| {
            let le = match bucket_range(i).1 {
                // ebpf_exporter's exp2 key i + 1, multiplier 1e-9: 2^(i+1) ns.
                Some(hi) => hi as f64 * 1e-9,
                None => f64::INFINITY,
            };
            (le, n)
        })
        .collect()
}

/// What the exporter serves, shared between the loop that refreshes it and the collector
/// that encodes it.
#[derive(Debug, Default)]
pub struct Exported {
    /// The watched processes, in the order given.
    pub targets: Vec<Target>,
    /// The label options.
    pub labelling: Labelling,
    /// gltop's refreshes of every watched process (each interval, and each scrape).
    pub refreshes: Refreshes,
    /// The exited processes dropped from `targets`, their counts summed per process name.
    pub released: Released,
}

impl Exported {
    /// Drops exited target `i` (the next ones move down by one) after folding its final
    /// counts into [`Released`]: its per-pid series and its `gltop_target_info` go, the
    /// series of its process name keep its counts.
    pub fn release(&mut self, i: usize) {
        let t = self.targets.remove(i);
        self.released.fold(&t, self.labelling.names);
    }
}

/// How long gltop's refreshes took: each reads every watched process's kernel maps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refreshes {
    /// Refreshes so far.
    pub count: u64,
    /// Their total duration, ns.
    pub total_ns: u64,
    /// The longest, ns.
    pub max_ns: u64,
}

impl Refreshes {
    /// Records one refresh that took `ns`.
    pub fn record(&mut self, ns: u64) {
        self.count += 1;
        self.total_ns += ns;
        self.max_ns = self.max_ns.max(ns);
    }
}

/// The [`Collector`] registered once: encodes [`Exported`] as it is when a scrape comes (the
/// loop snapshots the sessions into it just before).
#[derive(Debug, Clone)]
pub struct ExportCollector(pub Arc<Mutex<Exported>>);

fn counter<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    series: impl IntoIterator<Item = (&'a Labels, u64)>,
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, unit, MetricType::Counter)?;
    for (labels, v) in series {
        ConstCounter::new(v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge<'a, V: prometheus_client::encoding::EncodeGaugeValue + 'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (&'a Labels, V)>,
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in series {
        m.encode_family(labels)?.encode_gauge(&v)?;
    }
    Ok(())
}

impl Collector for ExportCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let st = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let groups = groups(&st.targets, &st.released, st.labelling);
        let each = |f: fn(&Group) -> u64| groups.iter().map(move |(l, g)| (l, f(g)));

        counter(
            &mut enc,
            "greenlet_switches",
            "Switches between greenlets since gltop attached (the switch probe's hits).",
            None,
            each(|g| g.totals.switches),
        )?;
        counter(
            &mut enc,
            "greenlet_throws",
            "Exceptions thrown into greenlets since gltop attached (the throw probe's hits).",
            None,
            each(|g| g.totals.throws),
        )?;
        counter(
            &mut enc,
            "greenlet_created",
            "Greenlets created since gltop attached.",
            None,
            each(|g| g.totals.greenlets_created),
        )?;
        {
            let mut m = enc.encode_descriptor(
                "greenlet_finished",
                "Greenlets that finished since gltop attached, by how they ended.",
                None,
                MetricType::Counter,
            )?;
            for (labels, g) in &groups {
                for (outcome, slots) in outcome_slots() {
                    let mut l = labels.clone();
                    l.push(("outcome", outcome.to_string()));
                    let n: u64 = g.totals.dead_by_outcome[slots].iter().sum();
                    ConstCounter::new(n).encode(m.encode_family(&l)?)?;
                }
            }
        }
        gauge(
            &mut enc,
            "greenlet_live",
            "Greenlets alive now among those gltop has seen.",
            each(|g| g.live),
        )?;
        {
            let mut m = enc.encode_descriptor(
                "greenlet_slice",
                "Time a greenlet ran between a switch into it and the next switch out of it (completed slices).",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for (labels, g) in &groups {
                let buckets = prometheus_buckets(&g.hist);
                let count = g.hist.iter().sum();
                m.encode_family(labels)?
                    .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                        g.on_cpu_ns as f64 * 1e-9,
                        count,
                        &buckets,
                        None,
                    )?;
            }
        }
        {
            let blocking: Vec<(&Labels, (u64, u64))> = groups
                .iter()
                .filter_map(|(l, g)| g.blocking.map(|b| (l, b)))
                .collect();
            counter(
                &mut enc,
                "greenlet_blocking_episodes",
                "Blocking episodes: a greenlet ran longer than --block-ms without switching (computing, or waiting in a system call), those going on included.",
                None,
                blocking.iter().map(|(l, b)| (*l, b.0)),
            )?;
            let mut m = enc.encode_descriptor(
                "greenlet_blocking",
                "Time within blocking episodes (greenlet_blocking_episodes_total), from the start of each to its end or to now.",
                Some(&Unit::Seconds),
                MetricType::Counter,
            )?;
            for (l, b) in &blocking {
                ConstCounter::new(b.1 as f64 * 1e-9).encode(m.encode_family(*l)?)?;
            }
        }
        if st.labelling.names > 0 {
            let mut series: Vec<(Labels, u64, u64)> = Vec::new();
            for (labels, g) in &groups {
                for (name, c) in &g.names {
                    let mut l = labels.clone();
                    l.push(("greenlet", name.clone()));
                    series.push((l, c.switches, c.on_cpu_ns));
                }
            }
            counter(
                &mut enc,
                "greenlet_named_switches",
                "Switches into the greenlets of each name (--greenlet-names busiest names per process, the rest as _other).",
                None,
                series.iter().map(|(l, sw, _)| (l, *sw)),
            )?;
            let mut m = enc.encode_descriptor(
                "greenlet_named_cpu",
                "On-CPU time in completed slices of the greenlets of each name (same names as greenlet_named_switches_total).",
                Some(&Unit::Seconds),
                MetricType::Counter,
            )?;
            for (l, _, cpu) in &series {
                ConstCounter::new(*cpu as f64 * 1e-9).encode(m.encode_family(l)?)?;
            }
        }
        counter(
            &mut enc,
            "gltop_probe_hits",
            "Probe hits gltop's BPF programs handled: what tracing cost the target, in hits.",
            None,
            each(|g| g.totals.hits()),
        )?;
        gauge(
            &mut enc,
            "gltop_tracing_cpu_ratio",
            "Share of one CPU that the probe hits cost the target: hits per second over the last refresh interval times the measured cost of one hit.",
            groups
                .iter()
                .filter_map(|(l, g)| g.cpu_ratio.map(|r| (l, r))),
        )?;
        counter(
            &mut enc,
            "gltop_dropped",
            "Events lost because a kernel map was full (failed inserts).",
            None,
            each(|g| g.totals.dropped()),
        )?;
        {
            let none: Labels = Vec::new();
            let r = st.refreshes;
            counter(
                &mut enc,
                "gltop_refreshes",
                "Refreshes: every watched process's kernel maps read (each --delay, and each scrape).",
                None,
                [(&none, r.count)],
            )?;
            {
                let mut m = enc.encode_descriptor(
                    "gltop_refresh",
                    "Time gltop spent in its refreshes (gltop_refreshes_total).",
                    Some(&Unit::Seconds),
                    MetricType::Counter,
                )?;
                ConstCounter::new(r.total_ns as f64 * 1e-9).encode(m.encode_family(&none)?)?;
            }
            let mut m = enc.encode_descriptor(
                "gltop_refresh_max",
                "The longest refresh since gltop started; it should stay well below --delay.",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            m.encode_family(&none)?
                .encode_gauge(&(r.max_ns as f64 * 1e-9))?;
        }
        {
            let exited = st.targets.iter().filter(|t| t.exited).count();
            let state = |s: &str| vec![("state", s.to_string())];
            let (running, gone) = (state("running"), state("exited"));
            gauge(
                &mut enc,
                "gltop_watched_processes",
                "Processes gltop watches (running) and exited ones it still exports one by one (exited, at most --max-exited, each for --keep-exited seconds).",
                [(&running, (st.targets.len() - exited) as i64), (&gone, exited as i64)],
            )?;
            let none: Labels = Vec::new();
            counter(
                &mut enc,
                "gltop_released_processes",
                "Exited processes dropped from the per-process data (their counts stay in their process name's series).",
                None,
                [(&none, st.released.count)],
            )?;
        }
        {
            let mut m = enc.encode_descriptor(
                "gltop_build",
                "The gltop build serving these metrics.",
                None,
                MetricType::Info,
            )?;
            m.encode_info(&[("version", env!("CARGO_PKG_VERSION"))])?;
        }
        let mut m = enc.encode_descriptor(
            "gltop_target",
            "A process gltop watches.",
            None,
            MetricType::Info,
        )?;
        for t in &st.targets {
            m.encode_info(&vec![
                ("pid", t.pid.to_string()),
                ("process", t.process.clone()),
                ("exe", t.exe.clone()),
                ("runtime", t.runtime.to_string()),
            ])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gltop::loader::{GreenletStats, State};
    use prometheus_client::registry::Registry;

    fn greenlet(
        id: u64,
        name: &str,
        ended: bool,
        switches_in: u64,
        hist: &[(usize, u64)],
    ) -> GreenletStats {
        let mut h = vec![0u64; HIST_BUCKETS];
        for &(i, n) in hist {
            h[i] = n;
        }
        GreenletStats {
            id,
            pid: 7,
            name: name.into(),
            seen_new: true,
            parent: Some(1),
            state: if ended { State::Dead } else { State::Suspended },
            ended,
            outcome: None,
            tid: 1,
            created_ns: None,
            dead_ns: None,
            running_since_ns: None,
            switches_in,
            switches_out: 0,
            throws_in: 0,
            throws_out: 0,
            on_cpu_ns: hist.iter().map(|&(i, n)| n << i).sum(),
            max_slice_ns: 0,
            slices: hist.iter().map(|&(_, n)| n).sum(),
            hist: h.into(),
        }
    }

    fn snap(at_ns: u64, switches: u64, greenlets: Vec<GreenletStats>) -> Snapshot {
        Snapshot {
            at_ns,
            totals: Totals {
                switches,
                ..Totals::default()
            },
            greenlets,
            ..Snapshot::default()
        }
    }

    #[test]
    fn ended_records_stay_counted_after_they_leave_the_kernel() {
        let mut t = Target::new(7, "w".into(), "/w".into(), "greenlet", Some(1000.0), 0);
        t.absorb(
            &snap(0, 10, vec![greenlet(2, "a", false, 5, &[(10, 3)])]),
            1,
        );
        assert_eq!(t.slices().0[10], 3);
        // Greenlet 2 ends: its record comes once with `ended`, then never again.
        t.absorb(
            &snap(
                1_000_000_000,
                20,
                vec![greenlet(2, "a", true, 6, &[(10, 4)])],
            ),
            1,
        );
        t.absorb(
            &snap(
                2_000_000_000,
                30,
                vec![greenlet(3, "b", false, 1, &[(3, 1)])],
            ),
            1,
        );
        let (h, sum) = t.slices();
        assert_eq!((h[10], h[3], h.iter().sum::<u64>()), (4, 1, 5));
        assert_eq!(sum, 4 * 1024 + 8);
        assert_eq!(t.live, 1);
        // 10 hits per second, 1000 ns each: 1% of a CPU.
        assert!((t.tracing_cpu_ratio().unwrap() - 1e-5).abs() < 1e-12);
        t.mark_exited();
        assert_eq!((t.live, t.tracing_cpu_ratio()), (0, Some(0.0)));
        assert_eq!(t.slices().0.iter().sum::<u64>(), 5, "final counts stay");
    }

    #[test]
    fn buckets_are_ebpf_exporter_exp2_in_seconds() {
        let mut h = [0u64; HIST_BUCKETS];
        h[0] = 1;
        h[10] = 2;
        h[HIST_BUCKETS - 1] = 3;
        let b = prometheus_buckets(&h);
        assert_eq!(b.len(), HIST_BUCKETS);
        assert_eq!(b[0], (2e-9, 1));
        assert_eq!(b[10], (2048e-9, 2));
        assert_eq!(b[HIST_BUCKETS - 1], (f64::INFINITY, 3));
        assert!(b.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn names_are_bounded_and_only_grow() {
        let mut n = Names::new(1);
        n.absorb(&snap(
            0,
            0,
            vec![
                greenlet(2, "busy", false, 9, &[]),
                greenlet(3, "idle", false, 1, &[]),
            ],
        ));
        assert_eq!(n.counts()["busy"].switches, 9);
        assert_eq!(n.counts()[OTHER_NAMES].switches, 1);
        n.absorb(&snap(
            1,
            0,
            vec![
                greenlet(2, "busy", true, 10, &[]),
                greenlet(3, "idle", false, 4, &[]),
                greenlet(4, "new", false, 2, &[]),
            ],
        ));
        assert_eq!(n.counts()["busy"].switches, 10);
        assert_eq!(n.counts()[OTHER_NAMES].switches, 1 + 3 + 2);
        assert_eq!(n.counts().len(), 2);
        // Greenlet 2 ended: its record is gone and counted.
        n.absorb(&snap(2, 0, vec![greenlet(3, "idle", false, 4, &[])]));
        assert_eq!(n.counts()["busy"].switches, 10);
    }

    fn encoded(exported: Exported, openmetrics: bool) -> String {
        let mut r = Registry::default();
        r.register_collector(Box::new(ExportCollector(Arc::new(Mutex::new(exported)))));
        let mut s = String::new();
        if openmetrics {
            prometheus_client::encoding::text::encode(&mut s, &r).unwrap();
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut s, &r).unwrap();
        }
        s
    }

    #[test]
    fn processes_of_one_name_are_summed_unless_per_pid() {
        let mk = |pid, sw| {
            let mut t = Target::new(pid, "w".into(), "/w".into(), "greenlet", None, 0);
            let mut s = snap(0, sw, vec![]);
            s.totals.dead_by_outcome[Outcome::Panic.code() as usize] = 1;
            s.totals.dead_by_outcome[OUTCOME_SLOTS - 1] = 2;
            t.absorb(&s, 1);
            t
        };
        let text = encoded(
            Exported {
                targets: vec![mk(1, 5), mk(2, 7)],
                labelling: Labelling::default(),
                refreshes: Refreshes::default(),
                released: Released::default(),
            },
            true,
        );
        assert!(
            text.contains("greenlet_switches_total{process=\"w\"} 12\n"),
            "{text}"
        );
        assert!(
            text.contains("greenlet_finished_total{process=\"w\",outcome=\"panic\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("greenlet_finished_total{process=\"w\",outcome=\"other\"} 4\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE gltop_target info\n"), "{text}");
        assert!(
            !text.contains("gltop_tracing_cpu_ratio{"),
            "no cost known: {text}"
        );
        assert!(text.ends_with("# EOF\n"));
        let text = encoded(
            Exported {
                targets: vec![mk(1, 5), mk(2, 7)],
                labelling: Labelling {
                    per_pid: true,
                    names: 0,
                },
                refreshes: Refreshes::default(),
                released: Released::default(),
            },
            false,
        );
        assert!(
            text.contains("greenlet_switches_total{process=\"w\",pid=\"2\"} 7\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE gltop_target_info gauge\n"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
    }

    /// The series of `metric` in `text`: labels as written -> value.
    fn series(text: &str, metric: &str) -> BTreeMap<String, f64> {
        text.lines()
            .filter_map(|l| l.strip_prefix(metric))
            .filter_map(|l| l.strip_prefix('{'))
            .map(|l| {
                let (labels, v) = l.rsplit_once("} ").unwrap();
                (labels.to_string(), v.parse().unwrap())
            })
            .collect()
    }

    #[test]
    fn a_released_process_leaves_its_counts_to_its_name_and_its_pid_series_go() {
        let mk = |pid, process: &str, sw, names: &[(&str, u64)]| {
            let mut t = Target::new(pid, process.into(), "/w".into(), "greenlet", Some(100.0), 2);
            let gs = names
                .iter()
                .enumerate()
                .map(|(i, &(n, s))| greenlet(i as u64 + 2, n, false, s, &[(4, 1)]))
                .collect();
            t.absorb(&snap(0, sw, gs), 1);
            t.blocking = Some(Blocking::default());
            t.blocking.as_mut().unwrap().absorb(&[]);
            t
        };
        for per_pid in [false, true] {
            let mut st = Exported {
                targets: vec![
                    mk(1, "w", 5, &[("a", 3), ("b", 2)]),
                    mk(2, "w", 7, &[("c", 4), ("a", 1)]),
                    mk(3, "x", 11, &[]),
                ],
                labelling: Labelling { per_pid, names: 2 },
                ..Exported::default()
            };
            let before = encoded_ref(&st);
            let sum = |text: &str, m: &str, process: &str| -> f64 {
                series(text, m)
                    .iter()
                    .filter(|(l, _)| l.starts_with(&format!("process=\"{process}\"")))
                    .map(|(_, v)| v)
                    .sum()
            };
            assert_eq!(sum(&before, "greenlet_switches_total", "w"), 12.0);
            st.targets[0].mark_exited();
            st.targets[1].mark_exited();
            st.release(1);
            st.release(0);
            assert_eq!(st.targets.len(), 1);
            assert_eq!(st.released.count, 2);
            let after = encoded_ref(&st);
            for m in [
                "greenlet_switches_total",
                "greenlet_slice_seconds_count",
                "greenlet_blocking_episodes_total",
            ] {
                assert_eq!(sum(&after, m, "w"), sum(&before, m, "w"), "{m}: {after}");
            }
            assert_eq!(sum(&after, "greenlet_switches_total", "x"), 11.0);
            // Names: a (3 + 1) and c kept their series (the bound is 2), b went to _other.
            let named = series(&after, "greenlet_named_switches_total");
            assert_eq!(named["process=\"w\",greenlet=\"a\""], 4.0, "{after}");
            assert_eq!(named["process=\"w\",greenlet=\"c\""], 4.0, "{after}");
            assert_eq!(named["process=\"w\",greenlet=\"_other\""], 2.0, "{after}");
            assert!(
                !after.contains("pid=\"1\"") && !after.contains("pid=\"2\""),
                "{after}"
            );
            assert!(
                after.contains("greenlet_switches_total{process=\"w\"} 12\n"),
                "{after}"
            );
            if per_pid {
                assert!(after.contains("greenlet_switches_total{process=\"x\",pid=\"3\"} 11\n"));
            }
            assert!(
                after.contains("gltop_released_processes_total 2\n"),
                "{after}"
            );
            assert!(after.contains("gltop_watched_processes{state=\"running\"} 1\n"));
            assert!(after.contains("gltop_watched_processes{state=\"exited\"} 0\n"));
        }
    }

    fn encoded_ref(st: &Exported) -> String {
        encoded(
            Exported {
                targets: st.targets.clone(),
                labelling: st.labelling,
                refreshes: st.refreshes,
                released: st.released.clone(),
            },
            false,
        )
    }
}
