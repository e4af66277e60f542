//! The plain-data model of what the kernel aggregated: owned, `Clone`, no BPF types.

use super::skel::types;

/// Number of buckets of a slice histogram (`GreenletStats::hist`). Bucket 0 counts slices
/// shorter than 2 ns, bucket `i` those in `[2^i, 2^(i+1))` ns, the last one everything longer.
pub const HIST_BUCKETS: usize = 40;

/// How a greenlet ended (the `outcome` argument of the `dead` probe).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Its run function returned a value.
    Returned,
    /// Its run function returned an error.
    Error,
    /// It ended with `GreenletExit`.
    Exit,
    /// It panicked.
    Panic,
    /// Its thread exited (a main greenlet, or one still suspended then).
    ThreadExit,
    /// It was dropped before it ever started.
    Discarded,
    /// An outcome code this version does not know.
    Other(u8),
}

impl Outcome {
    /// From the probe's code.
    pub fn from_code(code: u8) -> Outcome {
        match code {
            0 => Outcome::Returned,
            1 => Outcome::Error,
            2 => Outcome::Exit,
            3 => Outcome::Panic,
            4 => Outcome::ThreadExit,
            5 => Outcome::Discarded,
            c => Outcome::Other(c),
        }
    }

    /// A short lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Returned => "returned",
            Outcome::Error => "error",
            Outcome::Exit => "exit",
            Outcome::Panic => "panic",
            Outcome::ThreadExit => "thread_exit",
            Outcome::Discarded => "discarded",
            Outcome::Other(_) => "other",
        }
    }
}

/// A greenlet's state as far as the probes tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// Its thread's current greenlet.
    Running,
    /// Switched out, alive.
    Suspended,
    /// Created and never switched to.
    Unstarted,
    /// Finished.
    Dead,
}

impl State {
    /// A short lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Suspended => "suspended",
            State::Unstarted => "unstarted",
            State::Dead => "dead",
        }
    }
}

/// Everything aggregated about one greenlet since attach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GreenletStats {
    /// Its id (`Greenlet::id()`).
    pub id: u64,
    /// Its name; empty when it has none or `new` was not seen.
    pub name: String,
    /// Whether its `new` probe was seen (false: it predates the attach, or its record was
    /// evicted and recreated).
    pub seen_new: bool,
    /// Its parent when created; `None` for a main greenlet or when `new` was not seen.
    pub parent: Option<u64>,
    /// Derived state.
    pub state: State,
    /// How it ended, once dead.
    pub outcome: Option<Outcome>,
    /// The kernel thread id it lives on.
    pub tid: u32,
    /// CLOCK_MONOTONIC nanoseconds of its creation and death, when seen.
    pub created_ns: Option<u64>,
    /// See `created_ns`.
    pub dead_ns: Option<u64>,
    /// When its current slice began, while it is running.
    pub running_since_ns: Option<u64>,
    /// Transfers into and out of it.
    pub switches_in: u64,
    /// See `switches_in`.
    pub switches_out: u64,
    /// See `switches_in`.
    pub throws_in: u64,
    /// See `switches_in`.
    pub throws_out: u64,
    /// Sum of its completed slices (switch-in to the next switch-out on its thread).
    pub on_cpu_ns: u64,
    /// Its longest completed slice.
    pub max_slice_ns: u64,
    /// Number of completed slices.
    pub slices: u64,
    /// Log2 histogram of completed slices, `HIST_BUCKETS` long.
    pub hist: Vec<u64>,
}

impl GreenletStats {
    /// A thread's main greenlet (created without a parent).
    pub fn is_main(&self) -> bool {
        self.seen_new && self.parent.is_none()
    }

    /// On-CPU time including the slice in progress at `at_ns`.
    pub fn on_cpu_at(&self, at_ns: u64) -> u64 {
        self.on_cpu_ns + self.running_since_ns.map_or(0, |s| at_ns.saturating_sub(s))
    }

    /// Longest slice including the one in progress at `at_ns`.
    pub fn max_slice_at(&self, at_ns: u64) -> u64 {
        let current = self.running_since_ns.map_or(0, |s| at_ns.saturating_sub(s));
        self.max_slice_ns.max(current)
    }

    /// The name to show: its own, `main` for a nameless main greenlet, `?` when unknown.
    pub fn display_name(&self) -> &str {
        match (self.name.as_str(), self.is_main(), self.seen_new) {
            ("", true, _) => "main",
            ("", false, false) => "?",
            (name, _, _) => name,
        }
    }

    pub(super) fn from_raw(id: u64, raw: &types::gl_stats) -> GreenletStats {
        let name: Vec<u8> = raw
            .name
            .iter()
            .map(|&c| c as u8)
            .take_while(|&c| c != 0)
            .collect();
        let seen_new = raw.seen_new != 0;
        let dead = raw.dead != 0;
        let running = raw.running != 0 && raw.last_in_ns != 0;
        let state = if dead {
            State::Dead
        } else if running {
            State::Running
        } else if seen_new && raw.parent != 0 && raw.switches_in + raw.throws_in == 0 {
            State::Unstarted
        } else {
            State::Suspended
        };
        let nonzero = |v: u64| (v != 0).then_some(v);
        GreenletStats {
            id,
            name: String::from_utf8_lossy(&name).into_owned(),
            seen_new,
            parent: if seen_new { nonzero(raw.parent) } else { None },
            state,
            outcome: dead.then(|| Outcome::from_code(raw.outcome)),
            tid: raw.tid,
            created_ns: nonzero(raw.created_ns),
            dead_ns: nonzero(raw.dead_ns),
            running_since_ns: if running { Some(raw.last_in_ns) } else { None },
            switches_in: raw.switches_in,
            switches_out: raw.switches_out,
            throws_in: raw.throws_in,
            throws_out: raw.throws_out,
            on_cpu_ns: raw.on_cpu_ns,
            max_slice_ns: raw.max_slice_ns,
            slices: raw.slices,
            hist: raw.hist.to_vec(),
        }
    }
}

/// Transfers along one origin -> target edge since attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EdgeStats {
    /// The greenlet transferred from.
    pub origin: u64,
    /// The greenlet transferred to.
    pub target: u64,
    /// Switches along it.
    pub switches: u64,
    /// Throws along it.
    pub throws: u64,
}

/// One thread with recorded greenlets, derived from them: the kernel marks each thread's
/// current greenlet (`running`, with its `tid` and switch-in time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ThreadStats {
    /// Kernel thread id.
    pub tid: u32,
    /// Its current greenlet, if recorded.
    pub current: Option<u64>,
    /// When `current` was switched in (CLOCK_MONOTONIC ns).
    pub since_ns: Option<u64>,
    /// Transfers into greenlets of this thread since attach (switches and throws).
    pub transfers: u64,
    /// Recorded greenlets of this thread, and how many of them are dead.
    pub greenlets: u64,
    /// See `greenlets`.
    pub dead: u64,
}

/// The threads of `greenlets` (sorted by id), sorted by tid.
pub fn threads_of(greenlets: &[GreenletStats]) -> Vec<ThreadStats> {
    let mut by_tid: std::collections::BTreeMap<u32, ThreadStats> = Default::default();
    for g in greenlets.iter().filter(|g| g.tid != 0) {
        let t = by_tid.entry(g.tid).or_insert(ThreadStats {
            tid: g.tid,
            current: None,
            since_ns: None,
            transfers: 0,
            greenlets: 0,
            dead: 0,
        });
        t.transfers += g.switches_in + g.throws_in;
        t.greenlets += 1;
        t.dead += u64::from(g.state == State::Dead);
        if let Some(since) = g.running_since_ns {
            // Only one greenlet per thread runs; if a stale record says otherwise, the
            // latest switch-in wins.
            if t.since_ns.is_none_or(|s| since >= s) {
                t.current = Some(g.id);
                t.since_ns = Some(since);
            }
        }
    }
    by_tid.into_values().collect()
}

/// Totals since attach, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Hits of the `switch` probe.
    pub switches: u64,
    /// Hits of the `throw` probe.
    pub throws: u64,
    /// Hits of the `new` probe.
    pub greenlets_created: u64,
    /// Hits of the `dead` probe.
    pub greenlets_dead: u64,
    /// Deaths per outcome code (the last slot gathers codes 7 and up).
    pub dead_by_outcome: [u64; 8],
    /// Greenlets first seen by something other than `new`: they predate the attach.
    pub late_greenlets: u64,
    /// Records evicted from the greenlet and edge maps because they were full.
    pub greenlets_evicted: u64,
    /// See `greenlets_evicted`.
    pub edges_evicted: u64,
    /// Events that could not be recorded in each map at all (an insert failed).
    pub greenlet_failures: u64,
    /// See `greenlet_failures`.
    pub edge_failures: u64,
}

impl Totals {
    /// Probe hits of all four probes: what the attachment cost the target.
    pub fn hits(&self) -> u64 {
        self.switches + self.throws + self.greenlets_created + self.greenlets_dead
    }

    /// Records lost to full maps: evictions plus failed inserts.
    pub fn dropped(&self) -> u64 {
        self.greenlets_evicted + self.edges_evicted + self.greenlet_failures + self.edge_failures
    }

    /// Sums the per-CPU copies and derives evictions from the entries present in each map.
    pub(super) fn from_raw(per_cpu: &[types::gl_totals], present: [u64; 2]) -> Totals {
        let mut s = types::gl_totals::default();
        for c in per_cpu {
            s.switches += c.switches;
            s.throws += c.throws;
            s.created += c.created;
            s.dead += c.dead;
            for (a, b) in s.dead_by_outcome.iter_mut().zip(c.dead_by_outcome) {
                *a += b;
            }
            s.greenlet_inserts += c.greenlet_inserts;
            s.edge_inserts += c.edge_inserts;
            s.greenlet_failures += c.greenlet_failures;
            s.edge_failures += c.edge_failures;
            s.late_greenlets += c.late_greenlets;
        }
        let [greenlets, edges] = present;
        Totals {
            switches: s.switches,
            throws: s.throws,
            greenlets_created: s.created,
            greenlets_dead: s.dead,
            dead_by_outcome: s.dead_by_outcome,
            late_greenlets: s.late_greenlets,
            greenlets_evicted: s.greenlet_inserts.saturating_sub(greenlets),
            edges_evicted: s.edge_inserts.saturating_sub(edges),
            greenlet_failures: s.greenlet_failures,
            edge_failures: s.edge_failures,
        }
    }
}

/// Everything the kernel aggregated, read at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// CLOCK_MONOTONIC nanoseconds when it was read (the clock of all `_ns` instants).
    pub at_ns: u64,
    /// Totals.
    pub totals: Totals,
    /// Greenlets, by id.
    pub greenlets: Vec<GreenletStats>,
    /// Edges, by (origin, target).
    pub edges: Vec<EdgeStats>,
    /// Threads with recorded greenlets, by tid (derived from `greenlets`).
    pub threads: Vec<ThreadStats>,
}

impl Snapshot {
    /// The greenlet with this id, if recorded.
    pub fn greenlet(&self, id: u64) -> Option<&GreenletStats> {
        self.greenlets
            .binary_search_by_key(&id, |g| g.id)
            .ok()
            .map(|i| &self.greenlets[i])
    }

    /// Greenlets recorded and not dead.
    pub fn alive(&self) -> usize {
        self.greenlets
            .iter()
            .filter(|g| g.state != State::Dead)
            .count()
    }

    /// Edges into `id`, most used first.
    pub fn edges_into(&self, id: u64) -> Vec<EdgeStats> {
        self.edges_sorted(|e| e.target == id)
    }

    /// Edges out of `id`, most used first.
    pub fn edges_out_of(&self, id: u64) -> Vec<EdgeStats> {
        self.edges_sorted(|e| e.origin == id)
    }

    fn edges_sorted(&self, keep: impl Fn(&EdgeStats) -> bool) -> Vec<EdgeStats> {
        let mut v: Vec<EdgeStats> = self.edges.iter().copied().filter(keep).collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.switches + e.throws));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> types::gl_stats {
        types::gl_stats::default()
    }

    #[test]
    fn histogram_length_matches_the_header() {
        assert_eq!(raw().hist.len(), HIST_BUCKETS);
    }

    #[test]
    fn derives_state_and_names() {
        let mut r = raw();
        r.seen_new = 1;
        r.parent = 7;
        r.name[..3].copy_from_slice(&[b'a' as i8, b'b' as i8, b'c' as i8]);
        let g = GreenletStats::from_raw(9, &r);
        assert_eq!(
            (g.state, g.display_name(), g.parent),
            (State::Unstarted, "abc", Some(7))
        );

        r.switches_in = 1;
        r.running = 1;
        r.last_in_ns = 100;
        let g = GreenletStats::from_raw(9, &r);
        assert_eq!((g.state, g.running_since_ns), (State::Running, Some(100)));
        assert_eq!((g.on_cpu_at(150), g.max_slice_at(150)), (50, 50));

        r.running = 0;
        r.last_in_ns = 0;
        assert_eq!(GreenletStats::from_raw(9, &r).state, State::Suspended);
        r.dead = 1;
        r.outcome = 3;
        let g = GreenletStats::from_raw(9, &r);
        assert_eq!((g.state, g.outcome), (State::Dead, Some(Outcome::Panic)));

        let mut m = raw();
        m.seen_new = 1;
        let g = GreenletStats::from_raw(1, &m);
        assert!(g.is_main());
        assert_eq!((g.display_name(), g.parent), ("main", None));
        // Seen only through a transfer: unknown name and parent.
        let mut late = raw();
        late.switches_out = 1;
        let g = GreenletStats::from_raw(2, &late);
        assert!(!g.is_main());
        assert_eq!((g.display_name(), g.state), ("?", State::Suspended));
    }

    #[test]
    fn sums_cpus_and_counts_evictions() {
        let mut a = types::gl_totals {
            switches: 5,
            greenlet_inserts: 10,
            edge_inserts: 4,
            edge_failures: 2,
            ..Default::default()
        };
        a.dead_by_outcome[4] = 1;
        let b = types::gl_totals {
            switches: 7,
            throws: 1,
            created: 3,
            dead: 1,
            greenlet_inserts: 5,
            ..Default::default()
        };
        let t = Totals::from_raw(&[a, b], [12, 4]);
        assert_eq!((t.switches, t.throws, t.hits()), (12, 1, 17));
        assert_eq!((t.greenlets_evicted, t.edges_evicted), (3, 0));
        assert_eq!(t.dropped(), 5);
        assert_eq!(t.dead_by_outcome[4], 1);
    }

    #[test]
    fn threads_are_derived_from_running_greenlets() {
        let mk = |id: u64, tid: u32, running: Option<u64>, dead: bool, sw: u64| {
            let mut r = raw();
            r.seen_new = 1;
            r.parent = 1;
            r.tid = tid;
            r.switches_in = sw;
            r.throws_in = 1;
            if let Some(t) = running {
                r.running = 1;
                r.last_in_ns = t;
            }
            r.dead = u8::from(dead);
            GreenletStats::from_raw(id, &r)
        };
        let gs = vec![
            mk(1, 10, None, false, 5),
            mk(2, 10, Some(700), false, 3),
            mk(3, 20, None, true, 1),
            mk(4, 20, Some(900), false, 2),
            mk(5, 20, Some(100), false, 0), // a stale record: the latest switch-in wins
            mk(6, 0, None, false, 0),       // no thread known: not counted
        ];
        let t = threads_of(&gs);
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t[0].tid, t[0].current, t[0].since_ns),
            (10, Some(2), Some(700))
        );
        assert_eq!((t[0].transfers, t[0].greenlets, t[0].dead), (10, 2, 0));
        assert_eq!(
            (t[1].tid, t[1].current, t[1].since_ns),
            (20, Some(4), Some(900))
        );
        assert_eq!((t[1].transfers, t[1].greenlets, t[1].dead), (6, 3, 1));
    }

    #[test]
    fn outcome_codes_round_trip() {
        for c in 0..=6u8 {
            let o = Outcome::from_code(c);
            assert_eq!(o == Outcome::Other(c), c > 5, "{c}");
        }
        assert_eq!(Outcome::from_code(4).as_str(), "thread_exit");
    }
}
