//! The plain-data model of what the kernel aggregated: owned, `Clone`, no BPF types.

use super::skel::types;

/// Number of buckets of a slice histogram (`GreenletStats::hist`). Bucket 0 counts slices
/// shorter than 2 ns, bucket `i` those in `[2^i, 2^(i+1))` ns, the last one everything longer.
pub const HIST_BUCKETS: usize = 40;

pub use greenlet::probes::Outcome;

/// Slots of `Totals::dead_by_outcome`: `GL_OUTCOMES` of `bpf/greenlet.h` (the skeleton's
/// array has this length, or `Totals::from_raw` does not compile). Every code of the
/// runtime's [`Outcome`] has a slot of its own; larger codes share the last.
pub const OUTCOME_SLOTS: usize = 8;
const _: () = assert!(Outcome::ALL.len() < OUTCOME_SLOTS);

/// How a finished greenlet's record says it ended: the `outcome` code of the `dead` probe,
/// read as one of the runtime's [`Outcome`]s (their one definition is
/// `greenlet::probes`), or kept as a number when this gltop does not know the code (a target
/// built with a newer runtime).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ended {
    /// One of the runtime's outcomes.
    As(Outcome),
    /// A code this version does not know.
    Unknown(u8),
}

impl Ended {
    /// From the probe's code.
    pub fn from_code(code: u8) -> Ended {
        Outcome::from_code(code).map_or(Ended::Unknown(code), Ended::As)
    }

    /// The outcome's name (`Outcome::name`), or `other` for an unknown code.
    pub fn name(self) -> &'static str {
        match self {
            Ended::As(o) => o.name(),
            Ended::Unknown(_) => "other",
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

/// What names one greenlet among every watched process: ids are unique within a process
/// only (a process forked while followed starts with its parent's ids). Orders by process,
/// then id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GreenletKey {
    /// The process.
    pub pid: i32,
    /// The greenlet's id in it.
    pub id: u64,
}

impl GreenletKey {
    /// Greenlet `id` of the same process as `self` (a parent, an edge's other end).
    pub fn sibling(self, id: u64) -> GreenletKey {
        GreenletKey { pid: self.pid, id }
    }
}

/// Everything aggregated about one greenlet since attach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GreenletStats {
    /// Its id (`Greenlet::id()`), unique within its process.
    pub id: u64,
    /// The process it lives in.
    pub pid: i32,
    /// Its name; empty when it has none or `new` was not seen.
    pub name: String,
    /// Whether its `new` probe was seen (false: it predates the attach).
    pub seen_new: bool,
    /// Its parent when created; `None` for a main greenlet or when `new` was not seen.
    pub parent: Option<u64>,
    /// Derived state: `Running` when the kernel's per-thread map names it as its thread's
    /// current greenlet, which it does for exactly one greenlet per thread.
    pub state: State,
    /// Its record left the kernel's map with this snapshot: it is dead, no probe will name it
    /// again, and these counts are final. It is in no later snapshot.
    pub ended: bool,
    /// How it ended, once dead.
    pub outcome: Option<Ended>,
    /// The kernel thread id it lives on.
    pub tid: u32,
    /// CLOCK_MONOTONIC nanoseconds of its creation and death, when seen.
    pub created_ns: Option<u64>,
    /// See `created_ns`.
    pub dead_ns: Option<u64>,
    /// When its current slice began, while it is running (from the per-thread map).
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
    /// Log2 histogram of completed slices, `HIST_BUCKETS` long (shared: a snapshot and the
    /// viewer's history clone records every refresh, and this is most of a record).
    pub hist: std::sync::Arc<[u64]>,
}

impl GreenletStats {
    /// Its process and id.
    pub fn key(&self) -> GreenletKey {
        GreenletKey {
            pid: self.pid,
            id: self.id,
        }
    }

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

    /// A record read from the kernel; `running_since` is the switch-in time when the
    /// per-thread map names it as its thread's current greenlet.
    pub(super) fn from_raw(
        id: u64,
        raw: &types::gl_stats,
        running_since: Option<u64>,
        ended: bool,
    ) -> GreenletStats {
        let name: Vec<u8> = raw
            .name
            .iter()
            .map(|&c| c as u8)
            .take_while(|&c| c != 0)
            .collect();
        let seen_new = raw.seen_new != 0;
        let dead = raw.dead != 0;
        // A greenlet whose `dead` probe fired is still its thread's current greenlet until
        // its last transfer (to its parent): it is running then, its outcome already known.
        let state = if running_since.is_some() {
            State::Running
        } else if dead {
            State::Dead
        } else if seen_new && raw.parent != 0 && raw.switches_in + raw.throws_in == 0 {
            State::Unstarted
        } else {
            State::Suspended
        };
        let nonzero = |v: u64| (v != 0).then_some(v);
        GreenletStats {
            id,
            pid: 0,
            name: String::from_utf8_lossy(&name).into_owned(),
            seen_new,
            parent: if seen_new { nonzero(raw.parent) } else { None },
            state,
            ended,
            outcome: dead.then(|| Ended::from_code(raw.outcome)),
            tid: raw.tid,
            created_ns: nonzero(raw.created_ns),
            dead_ns: nonzero(raw.dead_ns),
            running_since_ns: running_since,
            switches_in: raw.switches_in,
            switches_out: raw.switches_out,
            throws_in: raw.throws_in,
            throws_out: raw.throws_out,
            on_cpu_ns: raw.on_cpu_ns,
            max_slice_ns: raw.max_slice_ns,
            slices: raw.slices,
            hist: raw.hist[..].into(),
        }
    }
}

/// Transfers along one origin -> target edge since attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EdgeStats {
    /// The process of both greenlets.
    pub pid: i32,
    /// The greenlet transferred from.
    pub origin: u64,
    /// The greenlet transferred to.
    pub target: u64,
    /// Switches along it.
    pub switches: u64,
    /// Throws along it.
    pub throws: u64,
    /// Its entry left the kernel's map with this snapshot (a greenlet at one of its ends
    /// ended): these counts are final, and it is in no later snapshot.
    pub ended: bool,
}

/// One thread with greenlets: an entry of the kernel's per-thread map (its current greenlet),
/// or the thread of a live greenlet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ThreadStats {
    /// Kernel thread id.
    pub tid: u32,
    /// Its current greenlet; `None` until its first transfer when its greenlets predate the
    /// attach, and once its main greenlet died (thread exit).
    pub current: Option<u64>,
    /// When `current` was switched in (CLOCK_MONOTONIC ns).
    pub since_ns: Option<u64>,
    /// Transfers into greenlets of this thread since attach (switches and throws).
    pub transfers: u64,
    /// Live greenlets of this thread in the snapshot.
    pub alive: u64,
}

/// The threads of a snapshot, sorted by tid: every entry of the per-thread map (`(tid,
/// entry)`), and the thread of every live greenlet.
pub(super) fn threads_of(
    greenlets: &[GreenletStats],
    entries: &[(u32, types::gl_thread)],
) -> Vec<ThreadStats> {
    let mut by_tid: std::collections::BTreeMap<u32, ThreadStats> = Default::default();
    let blank = |tid| ThreadStats {
        tid,
        current: None,
        since_ns: None,
        transfers: 0,
        alive: 0,
    };
    for (tid, e) in entries {
        let t = by_tid.entry(*tid).or_insert(blank(*tid));
        if e.current != 0 {
            t.current = Some(e.current);
            t.since_ns = Some(e.since_ns);
        }
        t.transfers = e.transfers;
    }
    for g in greenlets
        .iter()
        .filter(|g| g.tid != 0 && g.state != State::Dead)
    {
        by_tid.entry(g.tid).or_insert(blank(g.tid)).alive += 1;
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
    /// Deaths per outcome code (the last slot gathers codes `OUTCOME_SLOTS - 1` and up).
    pub dead_by_outcome: [u64; OUTCOME_SLOTS],
    /// Greenlets first seen by something other than `new`: they predate the attach.
    pub late_greenlets: u64,
    /// Events that could not be recorded in each map because an insert failed (the map was
    /// full): the only losses. The kernel never evicts a record.
    pub greenlet_failures: u64,
    /// See `greenlet_failures`.
    pub edge_failures: u64,
    /// See `greenlet_failures`.
    pub thread_failures: u64,
    /// Greenlet records and edges moved out of the kernel's maps since attach (their
    /// greenlet ended and they were read for the last time).
    pub ended_greenlets: u64,
    /// See `ended_greenlets`.
    pub ended_edges: u64,
}

impl Totals {
    /// Probe hits of all four probes: what the attachment cost the target.
    pub fn hits(&self) -> u64 {
        self.switches + self.throws + self.greenlets_created + self.greenlets_dead
    }

    /// Events lost to full maps: failed inserts.
    pub fn dropped(&self) -> u64 {
        self.greenlet_failures + self.edge_failures + self.thread_failures
    }

    /// Sums the per-CPU copies; `ended` is what user space moved out of the maps so far.
    pub(super) fn from_raw(per_cpu: &[types::gl_totals], ended: [u64; 2]) -> Totals {
        let mut s = types::gl_totals::default();
        for c in per_cpu {
            s.switches += c.switches;
            s.throws += c.throws;
            s.created += c.created;
            s.dead += c.dead;
            for (a, b) in s.dead_by_outcome.iter_mut().zip(c.dead_by_outcome) {
                *a += b;
            }
            s.greenlet_failures += c.greenlet_failures;
            s.edge_failures += c.edge_failures;
            s.thread_failures += c.thread_failures;
            s.late_greenlets += c.late_greenlets;
        }
        let [ended_greenlets, ended_edges] = ended;
        Totals {
            switches: s.switches,
            throws: s.throws,
            greenlets_created: s.created,
            greenlets_dead: s.dead,
            dead_by_outcome: s.dead_by_outcome,
            late_greenlets: s.late_greenlets,
            greenlet_failures: s.greenlet_failures,
            edge_failures: s.edge_failures,
            thread_failures: s.thread_failures,
            ended_greenlets,
            ended_edges,
        }
    }
}

/// One watched process: the traced one, and (with `Options::follow`) every process forked
/// from a watched one after the attach.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessStats {
    /// Its PID.
    pub pid: i32,
    /// The watched process it was forked from; for the traced process, its parent.
    pub ppid: i32,
    /// Its command name when first seen.
    pub comm: String,
    /// It exited (or replaced its program): its counts are final.
    pub exited: bool,
    /// Hits of the `switch` probe in it.
    pub switches: u64,
    /// Hits of the `throw` probe.
    pub throws: u64,
    /// Hits of the `new` probe.
    pub greenlets_created: u64,
    /// Hits of the `dead` probe.
    pub greenlets_dead: u64,
}

/// Entries of each kernel map, and their capacities.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapUse {
    /// Entries left in each map after the snapshot moved ended records out.
    pub greenlets: u64,
    /// See `greenlets`.
    pub edges: u64,
    /// See `greenlets`.
    pub threads: u64,
}

/// The sums of a session at one refresh, all kept by the kernel as they happen: what the
/// exporter needs, read without reading any greenlet record (see [`super::Session::aggregate`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Aggregate {
    /// CLOCK_MONOTONIC nanoseconds when it was read.
    pub at_ns: u64,
    /// Totals, as in a [`Snapshot`].
    pub totals: Totals,
    /// Greenlet records not dead (inserted minus marked dead).
    pub live: u64,
    /// Completed slices of every greenlet since attach: their number, sum (ns) and log2
    /// histogram (`HIST_BUCKETS` buckets, as a record's).
    pub slices: u64,
    /// See `slices`.
    pub slice_ns: u64,
    /// See `slices`.
    pub hist: [u64; HIST_BUCKETS],
    /// This refresh read every record (the first after a failed push or insert).
    pub full_read: bool,
}

/// What the kernel aggregated, read in one pass.
///
/// The per-thread map is read once, after the greenlet records, so each thread has exactly
/// one current greenlet (`State::Running`), and its record is in the snapshot. Counters are
/// read record by record while the process runs: totals first, then greenlets, threads and
/// edges, so a count may be a few events newer in a later-read map (e.g. a greenlet created
/// after the totals were read is in `greenlets`, not yet in `totals.greenlets_created`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// CLOCK_MONOTONIC nanoseconds when it was read (the clock of all `_ns` instants).
    pub at_ns: u64,
    /// Totals.
    pub totals: Totals,
    /// Greenlets, by [`GreenletKey`] (process, then id): every record in the kernel, plus (`ended`) those whose record left
    /// the kernel with this snapshot.
    pub greenlets: Vec<GreenletStats>,
    /// Edges, by (process, origin, target), likewise.
    pub edges: Vec<EdgeStats>,
    /// Threads with greenlets, by tid.
    pub threads: Vec<ThreadStats>,
    /// The watched processes, by PID.
    pub processes: Vec<ProcessStats>,
    /// Kernel map entries after this snapshot.
    pub maps: MapUse,
}

impl Snapshot {
    /// The greenlet with this key, if recorded.
    pub fn greenlet(&self, key: GreenletKey) -> Option<&GreenletStats> {
        self.greenlets
            .binary_search_by_key(&key, GreenletStats::key)
            .ok()
            .map(|i| &self.greenlets[i])
    }

    /// Greenlets recorded and not dead: derived from the records, so it always equals the
    /// number of live greenlets in the snapshot.
    pub fn alive(&self) -> usize {
        self.greenlets
            .iter()
            .filter(|g| g.state != State::Dead)
            .count()
    }

    /// Edges into `key`, most used first.
    pub fn edges_into(&self, key: GreenletKey) -> Vec<EdgeStats> {
        self.edges_sorted(|e| e.pid == key.pid && e.target == key.id)
    }

    /// Edges out of `key`, most used first.
    pub fn edges_out_of(&self, key: GreenletKey) -> Vec<EdgeStats> {
        self.edges_sorted(|e| e.pid == key.pid && e.origin == key.id)
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
        let g = GreenletStats::from_raw(9, &r, None, false);
        assert_eq!(
            (g.state, g.display_name(), g.parent),
            (State::Unstarted, "abc", Some(7))
        );

        r.switches_in = 1;
        let g = GreenletStats::from_raw(9, &r, Some(100), false);
        assert_eq!((g.state, g.running_since_ns), (State::Running, Some(100)));
        assert_eq!((g.on_cpu_at(150), g.max_slice_at(150)), (50, 50));

        assert_eq!(
            GreenletStats::from_raw(9, &r, None, false).state,
            State::Suspended
        );
        r.dead = 1;
        r.outcome = 3;
        // Dead, but still its thread's current greenlet until its last transfer.
        let g = GreenletStats::from_raw(9, &r, Some(100), false);
        assert_eq!(
            (g.state, g.outcome),
            (State::Running, Some(Ended::As(Outcome::Panic)))
        );
        let g = GreenletStats::from_raw(9, &r, None, true);
        assert_eq!((g.state, g.ended), (State::Dead, true));

        let mut m = raw();
        m.seen_new = 1;
        let g = GreenletStats::from_raw(1, &m, None, false);
        assert!(g.is_main());
        assert_eq!((g.display_name(), g.parent), ("main", None));
        // Seen only through a transfer: unknown name and parent.
        let mut late = raw();
        late.switches_out = 1;
        let g = GreenletStats::from_raw(2, &late, None, false);
        assert!(!g.is_main());
        assert_eq!((g.display_name(), g.state), ("?", State::Suspended));
    }

    #[test]
    fn sums_cpus_and_counts_only_failed_inserts_as_dropped() {
        let mut a = types::gl_totals {
            switches: 5,
            greenlet_failures: 1,
            edge_failures: 2,
            ..Default::default()
        };
        a.dead_by_outcome[4] = 1;
        let b = types::gl_totals {
            switches: 7,
            throws: 1,
            created: 3,
            dead: 1,
            thread_failures: 4,
            ..Default::default()
        };
        let t = Totals::from_raw(&[a, b], [12, 30]);
        assert_eq!((t.switches, t.throws, t.hits()), (12, 1, 17));
        assert_eq!((t.ended_greenlets, t.ended_edges), (12, 30));
        assert_eq!(t.dropped(), 7);
        assert_eq!(t.dead_by_outcome[4], 1);
    }

    #[test]
    fn threads_come_from_the_per_thread_map_and_live_greenlets() {
        let mk = |id: u64, tid: u32, dead: bool| {
            let mut r = raw();
            r.seen_new = 1;
            r.parent = 1;
            r.tid = tid;
            r.switches_in = 1;
            r.dead = u8::from(dead);
            GreenletStats::from_raw(id, &r, None, dead)
        };
        let gs = vec![
            mk(1, 10, false),
            mk(2, 10, false),
            mk(3, 20, true),
            mk(4, 20, false),
            mk(5, 30, false), // a thread with no entry (its greenlets predate the attach)
            mk(6, 0, false),  // no thread known: not counted
            mk(7, 40, true),  // only dead greenlets, no entry: not a thread with greenlets
        ];
        let entry = |current, since_ns, transfers| types::gl_thread {
            current,
            since_ns,
            transfers,
        };
        let t = threads_of(&gs, &[(20, entry(4, 900, 6)), (10, entry(2, 700, 10))]);
        let got: Vec<_> = t
            .iter()
            .map(|t| (t.tid, t.current, t.since_ns, t.transfers, t.alive))
            .collect();
        assert_eq!(
            got,
            [
                (10, Some(2), Some(700), 10, 2),
                (20, Some(4), Some(900), 6, 1),
                (30, None, None, 0, 1),
            ]
        );
    }

    #[test]
    fn outcome_codes_round_trip() {
        for c in 0..=255u8 {
            match Ended::from_code(c) {
                Ended::As(o) => assert_eq!(o.code(), c),
                Ended::Unknown(u) => {
                    assert_eq!(u, c);
                    assert!(usize::from(c) >= Outcome::ALL.len(), "{c}");
                }
            }
        }
        assert_eq!(Ended::from_code(4).name(), "thread_exit");
        assert_eq!(Ended::from_code(6).name(), "other");
    }
}
