//! The viewer's state and what each key does to it. No drawing and no terminal here.

use std::collections::{BTreeSet, VecDeque};

use gltop::loader::rates::{DetectorCost, GreenletRates, Interval};
use gltop::loader::sample::{Episode, EpisodeLog, SampleSnapshot, SampledGreenlet, Sampler};
use gltop::loader::{
    AttachMode, Capacities, EdgeStats, GreenletKey, GreenletStats, Process, Session, Snapshot,
    State, Totals, HIST_BUCKETS,
};

use crate::format;
use crate::table::{sort_rows, Column, Sort, SortKey};

/// A key the viewer understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Quit,
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    NextColumn,
    PrevColumn,
    Invert,
    Enter,
    Back,
    Pause,
    Help,
    CycleDead,
    Blocking,
    /// Shows one watched process's greenlets, the next one's, ..., then all again.
    CycleProcess,
}

impl Key {
    /// Maps a terminal key press; `None` for keys without a meaning.
    pub fn from_crossterm(k: &ratatui::crossterm::event::KeyEvent) -> Option<Key> {
        use ratatui::crossterm::event::{KeyCode, KeyModifiers};
        if k.modifiers.contains(KeyModifiers::CONTROL) {
            return matches!(k.code, KeyCode::Char('c') | KeyCode::Char('d')).then_some(Key::Quit);
        }
        Some(match k.code {
            KeyCode::Char('q') => Key::Quit,
            KeyCode::Char('k') | KeyCode::Up => Key::Up,
            KeyCode::Char('j') | KeyCode::Down => Key::Down,
            KeyCode::PageUp => Key::PageUp,
            KeyCode::PageDown => Key::PageDown,
            KeyCode::Char('g') | KeyCode::Home => Key::Top,
            KeyCode::Char('G') | KeyCode::End => Key::Bottom,
            KeyCode::Char('s') | KeyCode::Char('l') | KeyCode::Right | KeyCode::Tab => {
                Key::NextColumn
            }
            KeyCode::Char('h') | KeyCode::Left | KeyCode::BackTab => Key::PrevColumn,
            KeyCode::Char('i') => Key::Invert,
            KeyCode::Enter => Key::Enter,
            KeyCode::Esc | KeyCode::Backspace => Key::Back,
            KeyCode::Char(' ') => Key::Pause,
            KeyCode::Char('?') => Key::Help,
            KeyCode::Char('d') => Key::CycleDead,
            KeyCode::Char('b') => Key::Blocking,
            KeyCode::Char('p') => Key::CycleProcess,
            _ => return None,
        })
    }
}

/// Which screen is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Screen {
    /// The greenlet table.
    Table,
    /// One greenlet in detail.
    Detail(GreenletKey),
    /// The blocking episodes, newest first.
    Blocking,
    /// One episode's stack: (thread, start) of the episode.
    Stack(u32, u64),
}

/// One greenlet as the table shows it.
#[derive(Clone, Debug)]
pub struct Row {
    /// Cumulative stats.
    pub g: GreenletStats,
    /// Rates over the last interval (none before the second snapshot).
    pub rates: Option<GreenletRates>,
    /// On-CPU time including the slice in progress.
    pub on_cpu_ns: u64,
    /// Longest slice including the one in progress.
    pub max_slice_ns: u64,
    /// In the sampled mode: what the samples and sched_switch tell (the other fields of the
    /// row are then unknown, and shown as `-`).
    pub s: Option<SampledRow>,
    /// Its process exited (its figures are final).
    pub exited: bool,
}

/// One greenlet's sampled figures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampledRow {
    /// Samples since attach.
    pub samples: u64,
    /// Share of one CPU over the last interval (samples / hz / interval); none before the
    /// second snapshot.
    pub cpu_share: Option<f64>,
    /// Off-CPU time since attach: blocked, preempted.
    pub sleep_ns: u64,
    /// See `sleep_ns`.
    pub preempt_ns: u64,
    /// Its thread's current greenlet at the thread's last observation.
    pub current: bool,
}

fn opt_sampled(r: &Row, f: fn(&SampledRow) -> f64) -> SortKey {
    SortKey::Num(r.s.as_ref().map_or(f64::NAN, f))
}

/// The columns of the greenlet table in the sampled mode: what a sample can tell; the rest is
/// not shown rather than shown as zero.
pub fn sampled_columns() -> Vec<Column<Row>> {
    let mut cols = columns(false);
    cols.retain(|c| matches!(c.title, "ID" | "NAME" | "PARENT" | "TID"));
    let tid = cols.pop().expect("the TID column");
    let sampled: [Column<Row>; 5] = [
        Column {
            title: "STATE",
            width: 9,
            right: false,
            cell: |r| match r.s {
                Some(s) if s.current => "running".into(),
                _ => "-".into(),
            },
            key: |r| SortKey::Num(f64::from(u8::from(r.s.is_some_and(|s| s.current)))),
            descending_first: true,
        },
        Column {
            title: "CPU%",
            width: 6,
            right: true,
            cell: |r| {
                r.s.and_then(|s| s.cpu_share)
                    .map_or("-".into(), format::percent)
            },
            key: |r| opt_sampled(r, |s| s.cpu_share.unwrap_or(f64::NAN)),
            descending_first: true,
        },
        Column {
            title: "SAMPLES",
            width: 8,
            right: true,
            cell: |r| r.s.map_or("-".into(), |s| format::count(s.samples)),
            key: |r| opt_sampled(r, |s| s.samples as f64),
            descending_first: true,
        },
        Column {
            title: "BLOCKED",
            width: 8,
            right: true,
            cell: |r| r.s.map_or("-".into(), |s| format::duration_ns(s.sleep_ns)),
            key: |r| opt_sampled(r, |s| s.sleep_ns as f64),
            descending_first: true,
        },
        Column {
            title: "PREEMPTED",
            width: 9,
            right: true,
            cell: |r| {
                r.s.map_or("-".into(), |s| format::duration_ns(s.preempt_ns))
            },
            key: |r| opt_sampled(r, |s| s.preempt_ns as f64),
            descending_first: true,
        },
    ];
    cols.extend(sampled);
    cols.push(tid);
    cols
}

/// Index of the CPU% column of [`sampled_columns`], their default sort.
pub const SAMPLED_CPU_COLUMN: usize = 4;

fn opt_rate(r: &Row, f: fn(&GreenletRates) -> f64) -> SortKey {
    SortKey::Num(r.rates.as_ref().map_or(f64::NAN, f))
}

/// The columns of the greenlet table; with `follow` (several processes watched) a PID column
/// comes first, since greenlet ids are unique only within a process.
pub fn columns(follow: bool) -> Vec<Column<Row>> {
    let pid = Column {
        title: "PID",
        width: 8,
        right: true,
        cell: |r: &Row| format!("{}{}", r.g.pid, if r.exited { "†" } else { "" }),
        key: |r: &Row| SortKey::Num(r.g.pid as f64),
        descending_first: false,
    };
    let mut columns = Vec::from_iter(follow.then_some(pid));
    columns.extend(greenlet_columns());
    columns
}

fn greenlet_columns() -> Vec<Column<Row>> {
    vec![
        Column {
            title: "ID",
            width: 8,
            right: true,
            cell: |r| r.g.id.to_string(),
            key: |r| SortKey::Num(r.g.id as f64),
            descending_first: false,
        },
        Column {
            title: "NAME",
            width: 20,
            right: false,
            cell: |r| r.g.display_name().to_string(),
            key: |r| SortKey::Text(r.g.display_name().to_string()),
            descending_first: false,
        },
        Column {
            title: "PARENT",
            width: 8,
            right: true,
            cell: |r| r.g.parent.map_or("-".into(), |p| p.to_string()),
            key: |r| SortKey::Num(r.g.parent.map_or(-1.0, |p| p as f64)),
            descending_first: false,
        },
        Column {
            title: "STATE",
            width: 9,
            right: false,
            cell: |r| r.g.state.as_str().to_string(),
            key: |r| SortKey::Num(r.g.state as u8 as f64),
            descending_first: false,
        },
        Column {
            title: "SW/S",
            width: 7,
            right: true,
            cell: |r| {
                r.rates
                    .map_or("-".into(), |x| format::rate(x.switches_per_s))
            },
            key: |r| opt_rate(r, |x| x.switches_per_s),
            descending_first: true,
        },
        Column {
            title: CPU_TITLE,
            width: 6,
            right: true,
            cell: |r| r.rates.map_or("-".into(), |x| format::percent(x.cpu_share)),
            key: |r| opt_rate(r, |x| x.cpu_share),
            descending_first: true,
        },
        Column {
            title: "ON-CPU",
            width: 8,
            right: true,
            cell: |r| format::duration_ns(r.on_cpu_ns),
            key: |r| SortKey::Num(r.on_cpu_ns as f64),
            descending_first: true,
        },
        Column {
            title: "MAX SLICE",
            width: 9,
            right: true,
            cell: |r| format::duration_ns(r.max_slice_ns),
            key: |r| SortKey::Num(r.max_slice_ns as f64),
            descending_first: true,
        },
        Column {
            title: "SWITCHES",
            width: 8,
            right: true,
            cell: |r| format::count(r.g.switches_in),
            key: |r| SortKey::Num(r.g.switches_in as f64),
            descending_first: true,
        },
        Column {
            title: "THROWS",
            width: 8,
            right: true,
            cell: |r| format::count(r.g.throws_in + r.g.throws_out),
            key: |r| SortKey::Num((r.g.throws_in + r.g.throws_out) as f64),
            descending_first: true,
        },
        Column {
            title: "TID",
            width: 7,
            right: true,
            cell: |r| r.g.tid.to_string(),
            key: |r| SortKey::Num(r.g.tid as f64),
            descending_first: false,
        },
    ]
}

/// Title of the CPU% column, the default sort.
pub const CPU_TITLE: &str = "CPU%";

/// Index of the CPU% column in `columns`.
pub fn cpu_column(columns: &[Column<Row>]) -> usize {
    columns
        .iter()
        .position(|c| c.title == CPU_TITLE)
        .expect("the table has a CPU% column")
}

/// What gltop is attached to, and how.
#[derive(Clone, Debug)]
pub struct Target {
    /// The traced process.
    pub process: Process,
    /// How the probes are attached.
    pub mode: AttachMode,
    /// Probe sites attached.
    pub sites: usize,
    /// Map capacities.
    pub capacities: Capacities,
    /// Probes the target lacks.
    pub missing: Vec<&'static str>,
    /// Processes forked from the target are watched too (`--follow`).
    pub follow: bool,
    /// Several processes are watched, each with its own session (`-p A,B`, `--exe`):
    /// `process` is the first of them.
    pub several: bool,
    /// The sampled mode: (samples per second per CPU, CPUs sampled, `new` sites attached).
    pub sampled: Option<(u32, usize, usize)>,
    /// The blocking threshold, when blocking is detected (ms).
    pub block_ms: Option<u64>,
    /// A Python greenlet process (sampled mode): no switch counter, no `new` probe.
    pub python: bool,
}

impl Target {
    /// What `session` is attached to.
    pub fn of(session: &Session) -> Target {
        Target {
            process: session.process().clone(),
            mode: session.mode(),
            sites: session.sites(),
            capacities: session.capacities(),
            missing: session.missing_probes().to_vec(),
            follow: session.follows(),
            several: false,
            sampled: None,
            block_ms: None,
            python: false,
        }
    }

    /// What `sampler` (the sampled mode) is attached to.
    pub fn of_sampler(sampler: &Sampler) -> Target {
        let o = sampler.options();
        Target {
            process: sampler.process().clone(),
            mode: AttachMode::Auto,
            sites: sampler.new_sites(),
            capacities: o.capacities,
            missing: Vec::new(),
            follow: false,
            several: false,
            sampled: Some((o.hz, sampler.cpus(), sampler.new_sites())),
            block_ms: Some(o.block_ms),
            python: false,
        }
    }
}

/// The greenlets and edges that ended (their records left the kernel's maps), oldest first:
/// what the viewer still shows of the dead. Bounded: past `max_greenlets` greenlets and
/// `EDGES_PER_GREENLET` times as many edges, the oldest are forgotten, and counted.
#[derive(Debug)]
pub struct History {
    /// Most dead greenlets kept.
    pub max_greenlets: usize,
    greenlets: VecDeque<GreenletStats>,
    edges: VecDeque<EdgeStats>,
    /// Dead greenlets forgotten since attach.
    pub forgotten_greenlets: u64,
    /// Ended edges forgotten since attach.
    pub forgotten_edges: u64,
}

/// Ended edges kept per dead greenlet kept.
pub const EDGES_PER_GREENLET: usize = 4;

impl History {
    pub fn new(max_greenlets: usize) -> History {
        History {
            max_greenlets,
            greenlets: VecDeque::new(),
            edges: VecDeque::new(),
            forgotten_greenlets: 0,
            forgotten_edges: 0,
        }
    }

    /// Keeps the ended records of `snap`, forgetting the oldest past the bounds, and returns
    /// `snap` with every kept ended record in place of its own.
    pub fn absorb(&mut self, mut snap: Snapshot) -> Snapshot {
        let (ended, mut greenlets): (Vec<_>, Vec<_>) =
            snap.greenlets.into_iter().partition(|g| g.ended);
        self.greenlets.extend(ended);
        let (ended, mut edges): (Vec<_>, Vec<_>) = snap.edges.into_iter().partition(|e| e.ended);
        self.edges.extend(ended);
        while self.greenlets.len() > self.max_greenlets {
            self.greenlets.pop_front();
            self.forgotten_greenlets += 1;
        }
        while self.edges.len() > self.max_greenlets * EDGES_PER_GREENLET {
            self.edges.pop_front();
            self.forgotten_edges += 1;
        }
        greenlets.extend(self.greenlets.iter().cloned());
        greenlets.sort_by_key(GreenletStats::key);
        edges.extend(self.edges.iter().copied());
        edges.sort_by_key(|e| (e.pid, e.origin, e.target));
        snap.greenlets = greenlets;
        snap.edges = edges;
        snap
    }
}

/// One snapshot of several processes watched by sessions of their own, read at `at_ns`:
/// their records side by side (keys hold the PID), their totals and map entries summed.
pub fn merge(at_ns: u64, parts: impl IntoIterator<Item = Snapshot>) -> Snapshot {
    let mut out = Snapshot {
        at_ns,
        ..Default::default()
    };
    for p in parts {
        let Totals {
            switches,
            throws,
            greenlets_created,
            greenlets_dead,
            dead_by_outcome,
            late_greenlets,
            greenlet_failures,
            edge_failures,
            thread_failures,
            ended_greenlets,
            ended_edges,
        } = p.totals;
        let t = &mut out.totals;
        t.switches += switches;
        t.throws += throws;
        t.greenlets_created += greenlets_created;
        t.greenlets_dead += greenlets_dead;
        for (sum, n) in t.dead_by_outcome.iter_mut().zip(dead_by_outcome) {
            *sum += n;
        }
        t.late_greenlets += late_greenlets;
        t.greenlet_failures += greenlet_failures;
        t.edge_failures += edge_failures;
        t.thread_failures += thread_failures;
        t.ended_greenlets += ended_greenlets;
        t.ended_edges += ended_edges;
        out.maps.greenlets += p.maps.greenlets;
        out.maps.edges += p.maps.edges;
        out.maps.threads += p.maps.threads;
        out.greenlets.extend(p.greenlets);
        out.edges.extend(p.edges);
        out.threads.extend(p.threads);
        out.processes.extend(p.processes);
    }
    out.greenlets.sort_by_key(GreenletStats::key);
    out.edges.sort_by_key(|e| (e.pid, e.origin, e.target));
    out.threads.sort_by_key(|t| t.tid);
    out.processes.sort_by_key(|p| p.pid);
    out
}

/// The last snapshot of a process that exited, as it stays in a merged view: marked exited,
/// without the records that left the kernel with it (the viewer took those already), and
/// no slice in progress any more (its time would grow with the clock).
pub fn frozen(mut snap: Snapshot) -> Snapshot {
    snap.greenlets.retain(|g| !g.ended);
    snap.edges.retain(|e| !e.ended);
    for g in &mut snap.greenlets {
        g.running_since_ns = None;
    }
    for t in &mut snap.threads {
        t.since_ns = None;
    }
    for p in &mut snap.processes {
        p.exited = true;
    }
    snap
}

/// Everything the viewer shows and remembers.
pub struct App {
    /// What gltop is attached to, and how.
    pub target: Target,
    /// Cost of one probe hit, if known.
    pub per_hit_ns: Option<f64>,
    /// Refresh interval, seconds.
    pub delay: f64,
    /// The snapshot before `cur`, if any.
    pub prev: Option<Snapshot>,
    /// The latest snapshot shown: live greenlets and edges, and those `history` keeps.
    pub cur: Snapshot,
    /// Dead greenlets and ended edges kept.
    pub history: History,
    /// When gltop had finished reading `cur` (CLOCK_MONOTONIC ns): every record in it was
    /// read before this instant, so a slice in progress began before it.
    pub read_ns: u64,
    /// When the session attached (CLOCK_MONOTONIC ns).
    pub attached_ns: u64,
    /// Threads of the process at the last refresh, and which of them have greenlets.
    pub threads: ThreadCounts,
    /// Every thread seen with a recorded greenlet since attach (records may be evicted
    /// later; the thread stays counted).
    pub tids_seen: BTreeSet<u32>,
    /// The table's rows, filtered and sorted.
    pub rows: Vec<Row>,
    /// The table's columns.
    pub columns: Vec<Column<Row>>,
    /// The table's order.
    pub sort: Sort,
    /// Index of the selected row. The selection is a position, as in `top`: it stays on
    /// that row across refreshes and re-sorts, whichever greenlet the row shows (a greenlet
    /// followed by id would sink out of sight as it dies).
    pub selected: usize,
    /// The greenlet in the selected row.
    pub selected_id: Option<GreenletKey>,
    /// The screen shown.
    pub screen: Screen,
    /// The help overlay is open.
    pub help: bool,
    /// Refreshes are not applied.
    pub paused: bool,
    /// Which dead greenlets the table shows.
    pub dead_view: DeadView,
    /// The user asked to quit.
    pub quit: bool,
    /// Rows a page moves.
    pub page: usize,
    /// The sampled mode's last two snapshots (the table is built from `sample_cur`).
    pub sample_prev: Option<SampleSnapshot>,
    /// See `sample_prev`.
    pub sample_cur: Option<SampleSnapshot>,
    /// Blocking episodes seen (ended ones bounded, and those going on).
    pub episodes: EpisodeLog,
    /// Whether blocking is detected (the target publishes its sample layout).
    pub blocking_detected: bool,
    /// Selected row of the blocking view.
    pub episode_selected: usize,
    /// Exact mode's blocking detector, for the cost line (None: it does not run).
    pub detector: Option<DetectorCost>,
    /// The table shows only this process's greenlets (`p` cycles; None: every process).
    pub pid_filter: Option<i32>,
    /// Several processes: the exited ones whose rows left the view (`--keep-exited`,
    /// `--max-exited`); their counts stay in the totals.
    pub released_processes: u64,
}

/// Ended blocking episodes the live view keeps.
pub const MAX_EPISODES: usize = 1000;

/// The process's threads and those with greenlets, for the header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadCounts {
    /// Threads of the process alive now.
    pub alive: usize,
    /// Of those, threads with recorded greenlets.
    pub with_greenlets_now: usize,
    /// Threads seen with recorded greenlets since attach, those that exited included.
    pub with_greenlets_since_attach: usize,
}

impl ThreadCounts {
    /// The counts from the threads alive now (`live`), the threads of the greenlets recorded
    /// now (`recorded`) and every thread seen with greenlets since attach (`seen`, which
    /// includes `recorded`).
    pub fn of(live: &BTreeSet<u32>, recorded: &BTreeSet<u32>, seen: &BTreeSet<u32>) -> Self {
        ThreadCounts {
            alive: live.len(),
            with_greenlets_now: live.intersection(recorded).count(),
            with_greenlets_since_attach: seen.len(),
        }
    }
}

/// The table row of a sampled greenlet: its identity in a `GreenletStats` (counts unknown,
/// never shown), and what the samples tell.
fn sampled_row(g: &SampledGreenlet, prev: Option<&SampleSnapshot>, at_ns: u64, hz: u32) -> Row {
    let cpu_share = prev.and_then(|p| {
        let dt = at_ns.checked_sub(p.at_ns).filter(|&dt| dt > 0)?;
        let before = p
            .greenlets
            .iter()
            .find(|q| q.tid == g.tid && q.id == g.id)
            .map_or(0, |q| q.samples);
        let d = g.samples.saturating_sub(before) as f64;
        Some(d / f64::from(hz) / (dt as f64 / 1e9))
    });
    let name = match (&g.name, g.id) {
        (Some(n), _) => n.clone(),
        (None, 0) => "(no runtime)".into(),
        (None, _) => String::new(),
    };
    Row {
        g: GreenletStats {
            id: g.id,
            pid: g.pid,
            name,
            seen_new: g.seen_new,
            parent: g.parent,
            state: if g.current {
                State::Running
            } else {
                State::Suspended
            },
            ended: false,
            outcome: None,
            tid: g.tid,
            created_ns: None,
            dead_ns: None,
            running_since_ns: None,
            switches_in: 0,
            switches_out: 0,
            throws_in: 0,
            throws_out: 0,
            on_cpu_ns: 0,
            max_slice_ns: 0,
            slices: 0,
            hist: vec![0; HIST_BUCKETS].into(),
        },
        rates: None,
        on_cpu_ns: 0,
        max_slice_ns: 0,
        s: Some(SampledRow {
            samples: g.samples,
            cpu_share,
            sleep_ns: g.sleep_ns,
            preempt_ns: g.preempt_ns,
            current: g.current,
        }),
        exited: false,
    }
}

/// The thread ids of process `pid` now (empty once it is gone).
fn live_tids(pid: i32) -> BTreeSet<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// How long a dead greenlet stays in the table by default, after its death.
pub const RETAIN_DEAD_NS: u64 = 5_000_000_000;

/// Which dead greenlets the table shows (`d` cycles through them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeadView {
    /// Those that died in the last [`RETAIN_DEAD_NS`] (the default, like a process leaving
    /// `top`): the table holds what is alive and what just ended.
    Recent,
    /// Every dead greenlet kept (the last `--max-dead`).
    All,
    /// None.
    None,
}

impl DeadView {
    /// Whether a greenlet that died at `dead_ns` (if known) is shown at `now_ns`.
    pub fn shows(self, dead_ns: Option<u64>, now_ns: u64) -> bool {
        match self {
            DeadView::All => true,
            DeadView::None => false,
            DeadView::Recent => dead_ns.is_some_and(|t| now_ns.saturating_sub(t) < RETAIN_DEAD_NS),
        }
    }

    /// The next view in the `d` cycle.
    pub fn next(self) -> DeadView {
        match self {
            DeadView::Recent => DeadView::All,
            DeadView::All => DeadView::None,
            DeadView::None => DeadView::Recent,
        }
    }

    /// A word for the footer.
    pub fn label(self) -> &'static str {
        match self {
            DeadView::Recent => " dead: recent ",
            DeadView::All => " dead: all ",
            DeadView::None => " dead: none ",
        }
    }
}

impl App {
    /// A viewer of `target`, starting from its first snapshot (read completely by
    /// `read_ns`), keeping the last `max_dead` dead greenlets.
    pub fn new(
        target: Target,
        per_hit_ns: Option<f64>,
        delay: f64,
        first: Snapshot,
        read_ns: u64,
        max_dead: usize,
    ) -> App {
        let columns = columns(target.follow || target.several);
        let mut history = History::new(max_dead);
        let first = history.absorb(first);
        let mut app = App {
            threads: ThreadCounts::default(),
            tids_seen: BTreeSet::new(),
            target,
            per_hit_ns,
            delay,
            prev: None,
            read_ns,
            attached_ns: first.at_ns,
            cur: first,
            history,
            rows: Vec::new(),
            sort: Sort::by(&columns, cpu_column(&columns)),
            columns,
            selected: 0,
            selected_id: None,
            screen: Screen::Table,
            help: false,
            paused: false,
            dead_view: DeadView::Recent,
            quit: false,
            page: 20,
            sample_prev: None,
            sample_cur: None,
            episodes: EpisodeLog::new(MAX_EPISODES),
            blocking_detected: false,
            episode_selected: 0,
            detector: None,
            pid_filter: None,
            released_processes: 0,
        };
        app.count_threads();
        app.rebuild();
        app
    }

    /// A viewer of the sampled mode, from its first snapshot (read completely by `read_ns`).
    pub fn new_sampled(
        target: Target,
        per_sample_ns: Option<f64>,
        delay: f64,
        first: SampleSnapshot,
        read_ns: u64,
    ) -> App {
        let snap = Snapshot {
            at_ns: first.at_ns,
            ..Default::default()
        };
        let mut app = App::new(target, per_sample_ns, delay, snap, read_ns, 0);
        app.columns = sampled_columns();
        app.sort = Sort::by(&app.columns, SAMPLED_CPU_COLUMN);
        app.blocking_detected = true;
        app.episodes.absorb(&first.episodes);
        app.sample_cur = Some(first);
        app.count_threads();
        app.rebuild();
        app
    }

    /// Whether this is the sampled mode.
    pub fn is_sampled(&self) -> bool {
        self.target.sampled.is_some()
    }

    /// Applies a snapshot of the sampled mode, read completely by `read_ns`.
    pub fn update_sampled(&mut self, snap: SampleSnapshot, read_ns: u64) {
        self.episodes.absorb(&snap.episodes);
        if self.paused {
            return;
        }
        self.cur.at_ns = snap.at_ns;
        self.sample_prev = self.sample_cur.replace(snap);
        self.read_ns = read_ns;
        self.count_threads();
        self.rebuild();
    }

    /// Takes a read of exact mode's blocking detector: its episodes and its sample count.
    pub fn update_detector(&mut self, read: &SampleSnapshot) {
        if let Some(d) = self.detector.as_mut() {
            d.read(read.totals.samples, read.at_ns);
        }
        self.update_blocking(&read.episodes);
    }

    /// Takes blocking episodes (the detector's latest read, in either mode).
    pub fn update_blocking(&mut self, episodes: &[Episode]) {
        self.blocking_detected = true;
        self.episodes.absorb(episodes);
    }

    /// The episodes shown by the blocking view, newest first.
    pub fn episode_list(&self) -> Vec<&Episode> {
        self.episodes.newest_first()
    }

    /// The episode that started at `start_ns` on thread `tid`, if still kept.
    pub fn episode(&self, tid: u32, start_ns: u64) -> Option<&Episode> {
        self.episode_list()
            .into_iter()
            .find(|e| e.tid == tid && e.start_ns == start_ns)
    }

    /// The display name of the greenlet of episode `e`, `?` if unknown.
    pub fn episode_greenlet_name(&self, e: &Episode) -> String {
        match &self.sample_cur {
            Some(_) => self.greenlet_name(e.greenlet),
            None => self.name_of(GreenletKey {
                pid: e.pid,
                id: e.greenlet,
            }),
        }
    }

    /// The display name of greenlet `id` in either mode, `?` if unknown.
    pub fn greenlet_name(&self, id: u64) -> String {
        match &self.sample_cur {
            Some(s) => s
                .greenlets
                .iter()
                .find(|g| g.id == id)
                .map_or("?".into(), |g| g.display_name().to_string()),
            None => self.name_of(GreenletKey {
                pid: self.target.process.pid,
                id,
            }),
        }
    }

    /// Applies a new snapshot, read completely by `read_ns`. While paused, only the
    /// greenlets that ended are kept (their records have left the kernel): the screen does
    /// not change.
    pub fn update(&mut self, snap: Snapshot, read_ns: u64) {
        let snap = self.history.absorb(snap);
        if self.paused {
            return;
        }
        self.prev = Some(std::mem::replace(&mut self.cur, snap));
        self.read_ns = read_ns;
        self.count_threads();
        self.rebuild();
    }

    /// Counts the process's threads now and those with greenlets.
    fn count_threads(&mut self) {
        let recorded: BTreeSet<u32> = match &self.sample_cur {
            Some(s) => s
                .threads
                .iter()
                .filter(|t| t.current.is_some())
                .map(|t| t.tid)
                .collect(),
            None => self.cur.threads.iter().map(|t| t.tid).collect(),
        };
        self.tids_seen.extend(&recorded);
        let live = if self.target.several {
            // Thread ids are unique system-wide: the union is every watched thread.
            self.cur
                .processes
                .iter()
                .flat_map(|p| live_tids(p.pid))
                .collect()
        } else {
            live_tids(self.target.process.pid)
        };
        self.threads = ThreadCounts::of(&live, &recorded, &self.tids_seen);
    }

    /// The rates of the last interval, once there are two snapshots.
    pub fn interval(&self) -> Option<Interval<'_>> {
        self.prev.as_ref().map(|prev| Interval {
            prev,
            cur: &self.cur,
        })
    }

    /// Recomputes, filters and sorts the rows; the selection keeps its position.
    fn rebuild(&mut self) {
        if let Some(cur) = &self.sample_cur {
            let hz = self.target.sampled.map_or(1, |(hz, _, _)| hz);
            let mut rows: Vec<Row> = cur
                .greenlets
                .iter()
                .map(|g| sampled_row(g, self.sample_prev.as_ref(), cur.at_ns, hz))
                .collect();
            sort_rows(&mut rows, &self.columns, self.sort);
            self.rows = rows;
            self.select(self.selected);
            return;
        }
        let at = self.cur.at_ns;
        let iv = self.interval();
        let exited: BTreeSet<i32> = self
            .cur
            .processes
            .iter()
            .filter(|p| p.exited)
            .map(|p| p.pid)
            .collect();
        let listed: BTreeSet<i32> = self.cur.processes.iter().map(|p| p.pid).collect();
        // Several processes: a dead greenlet the view keeps may be of a process that left
        // the view (exited, and kept long enough).
        let gone =
            |pid: i32| exited.contains(&pid) || (self.target.several && !listed.contains(&pid));
        let mut rows: Vec<Row> = self
            .cur
            .greenlets
            .iter()
            .filter(|g| self.pid_filter.is_none_or(|pid| g.pid == pid))
            .filter(|g| g.state != State::Dead || self.dead_view.shows(g.dead_ns, at))
            .map(|g| Row {
                rates: iv.and_then(|iv| iv.greenlet(g)),
                on_cpu_ns: g.on_cpu_at(at),
                max_slice_ns: g.max_slice_at(at),
                g: g.clone(),
                s: None,
                exited: gone(g.pid),
            })
            .collect();
        sort_rows(&mut rows, &self.columns, self.sort);
        self.rows = rows;
        self.select(self.selected);
    }

    fn select(&mut self, i: usize) {
        self.selected = i.min(self.rows.len().saturating_sub(1));
        self.selected_id = self.rows.get(self.selected).map(|r| r.g.key());
    }

    /// The row of greenlet `key`, if shown.
    pub fn row(&self, key: GreenletKey) -> Option<&Row> {
        self.rows.iter().find(|r| r.g.key() == key)
    }

    /// The display name of greenlet `key`, `?` if unknown.
    pub fn name_of(&self, key: GreenletKey) -> String {
        self.cur
            .greenlet(key)
            .map_or("?".into(), |g| g.display_name().to_string())
    }

    /// Does what `key` means on the current screen.
    pub fn on_key(&mut self, key: Key) {
        if self.help {
            // Any key closes the help; q still quits.
            self.help = false;
            self.quit = key == Key::Quit;
            return;
        }
        match key {
            Key::Quit => self.quit = true,
            Key::Help => self.help = true,
            Key::Pause => self.paused = !self.paused,
            Key::CycleDead => {
                self.dead_view = self.dead_view.next();
                self.rebuild();
            }
            Key::CycleProcess => {
                let pids: Vec<i32> = self.cur.processes.iter().map(|p| p.pid).collect();
                self.pid_filter = match self.pid_filter {
                    _ if pids.len() < 2 => None,
                    None => pids.first().copied(),
                    Some(pid) => pids.iter().copied().find(|&p| p > pid),
                };
                self.rebuild();
            }
            Key::Blocking => {
                self.screen = match self.screen {
                    Screen::Blocking | Screen::Stack(..) => Screen::Table,
                    _ => Screen::Blocking,
                }
            }
            Key::Back => {
                self.screen = match self.screen {
                    Screen::Stack(..) => Screen::Blocking,
                    _ => Screen::Table,
                }
            }
            Key::Enter if self.screen == Screen::Blocking => {
                if let Some(e) = self.episode_list().get(self.episode_selected) {
                    self.screen = Screen::Stack(e.tid, e.start_ns);
                }
            }
            Key::Enter => {
                if let Some(id) = self.selected_id {
                    self.screen = Screen::Detail(id);
                }
            }
            Key::Up | Key::Down | Key::PageUp | Key::PageDown | Key::Top | Key::Bottom
                if self.screen == Screen::Blocking =>
            {
                let n = self.episode_list().len();
                let i = self.episode_selected;
                let i = match key {
                    Key::Up => i.saturating_sub(1),
                    Key::Down => i.saturating_add(1),
                    Key::PageUp => i.saturating_sub(self.page),
                    Key::PageDown => i.saturating_add(self.page),
                    Key::Top => 0,
                    _ => usize::MAX,
                };
                self.episode_selected = i.min(n.saturating_sub(1));
            }
            Key::NextColumn | Key::PrevColumn | Key::Invert => {
                self.sort = match key {
                    Key::NextColumn => self.sort.next(&self.columns),
                    Key::PrevColumn => self.sort.prev(&self.columns),
                    _ => self.sort.inverted(),
                };
                self.rebuild();
            }
            Key::Up | Key::Down | Key::PageUp | Key::PageDown | Key::Top | Key::Bottom => {
                self.move_selection(key)
            }
        }
    }

    /// Moves the selection. In the detail view the move starts from the row of the greenlet
    /// shown (rows move under a fixed position) and shows the detail of the row moved to.
    fn move_selection(&mut self, key: Key) {
        let detail = match self.screen {
            Screen::Detail(id) => Some(id),
            _ => None,
        };
        if let Some(i) = detail.and_then(|key| self.rows.iter().position(|r| r.g.key() == key)) {
            self.selected = i;
        }
        let i = self.selected;
        self.select(match key {
            Key::Up => i.saturating_sub(1),
            Key::Down => i.saturating_add(1),
            Key::PageUp => i.saturating_sub(self.page),
            Key::PageDown => i.saturating_add(self.page),
            Key::Top => 0,
            _ => usize::MAX,
        });
        if let (Some(_), Some(id)) = (detail, self.selected_id) {
            self.screen = Screen::Detail(id);
        }
    }

    /// Greenlets recorded and alive, and deaths since attach.
    pub fn alive_dead(&self) -> (usize, u64) {
        (self.cur.alive(), self.cur.totals.greenlets_dead)
    }

    /// The footer's word for the dead greenlets shown, with how many were forgotten.
    pub fn dead_label(&self) -> String {
        match (self.dead_view, self.history.forgotten_greenlets) {
            (DeadView::All, n) if n > 0 => {
                format!(" dead: all but {} forgotten ", format::count(n))
            }
            (view, _) => view.label().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gltop::loader::{ProcessStats, HIST_BUCKETS};

    fn g(id: u64, name: &str, state: State, switches_in: u64, on_cpu_ns: u64) -> GreenletStats {
        GreenletStats {
            id,
            pid: 0,
            name: name.into(),
            seen_new: true,
            parent: Some(1),
            state,
            ended: false,
            outcome: None,
            tid: 7,
            created_ns: Some(1),
            dead_ns: None,
            running_since_ns: None,
            switches_in,
            switches_out: switches_in,
            throws_in: 0,
            throws_out: 0,
            on_cpu_ns,
            max_slice_ns: on_cpu_ns,
            slices: switches_in,
            hist: vec![0; HIST_BUCKETS].into(),
        }
    }

    fn snap(at_ns: u64, greenlets: Vec<GreenletStats>) -> Snapshot {
        Snapshot {
            at_ns,
            totals: Totals::default(),
            greenlets,
            ..Default::default()
        }
    }

    fn target(follow: bool) -> Target {
        Target {
            process: Process {
                pid: 1,
                start_ticks: 0,
                comm: "t".into(),
                exe_id: (0, 0),
            },
            mode: AttachMode::Uprobe,
            sites: 4,
            capacities: Capacities::default(),
            missing: vec![],
            follow,
            several: false,
            sampled: None,
            block_ms: None,
            python: false,
        }
    }

    fn app() -> App {
        let target = target(false);
        let mut gone = g(4, "gone", State::Dead, 1, 50);
        gone.dead_ns = Some(900_000_000);
        let a = vec![
            g(2, "busy", State::Suspended, 10, 100),
            g(3, "idle", State::Suspended, 10, 0),
            gone,
        ];
        let mut b = a.clone();
        b[0].on_cpu_ns = 600_000_000; // 60% of the second
        b[1].on_cpu_ns = 100_000_000;
        b[2].on_cpu_ns = 50;
        let mut app = App::new(target, Some(400.0), 1.0, snap(0, a), 1_000, 3);
        app.page = 2;
        app.update(snap(1_000_000_000, b), 1_000_001_000);
        app
    }

    /// A process's own snapshot, as its session reads it: one greenlet `id`, its totals.
    fn process_snap(pid: i32, at_ns: u64, id: u64, switches: u64) -> Snapshot {
        let mut gl = g(id, "w", State::Running, switches, 100);
        gl.pid = pid;
        gl.running_since_ns = Some(at_ns - 10);
        let mut s = snap(at_ns, vec![gl]);
        s.totals.switches = switches;
        s.totals.dead_by_outcome[1] = 1;
        s.maps.greenlets = 1;
        s.processes = vec![ProcessStats {
            pid,
            ..Default::default()
        }];
        s
    }

    #[test]
    fn merged_processes_sum_their_totals_keep_their_rows_and_filter_by_pid() {
        let merged = merge(
            5_000,
            [process_snap(30, 4_000, 2, 7), process_snap(20, 4_500, 2, 5)],
        );
        assert_eq!(merged.at_ns, 5_000);
        assert_eq!(merged.totals.switches, 12);
        assert_eq!(merged.totals.dead_by_outcome[1], 2);
        assert_eq!(merged.maps.greenlets, 2);
        let keys: Vec<_> = merged.greenlets.iter().map(GreenletStats::key).collect();
        assert_eq!(keys, [key_in(20, 2), key_in(30, 2)]);
        let pids: Vec<i32> = merged.processes.iter().map(|p| p.pid).collect();
        assert_eq!(pids, [20, 30]);

        let mut t = target(false);
        t.several = true;
        let mut app = App::new(t, None, 1.0, merged, 5_000, 10);
        assert_eq!(app.columns[0].title, "PID");
        let shown = |app: &App| -> Vec<i32> { app.rows.iter().map(|r| r.g.pid).collect() };
        let mut both = shown(&app);
        both.sort();
        assert_eq!(both, [20, 30]);
        app.on_key(Key::CycleProcess);
        assert_eq!((app.pid_filter, shown(&app)), (Some(20), vec![20]));
        app.on_key(Key::CycleProcess);
        assert_eq!((app.pid_filter, shown(&app)), (Some(30), vec![30]));
        app.on_key(Key::CycleProcess);
        assert_eq!(app.pid_filter, None);
        assert_eq!(app.rows.len(), 2);

        // Process 30 exits: its last rows stay, marked, their time no longer growing.
        let last = process_snap(30, 6_000, 2, 9);
        let merged = merge(9_000, [frozen(last), process_snap(20, 8_500, 2, 6)]);
        assert_eq!(merged.totals.switches, 15);
        app.update(merged, 9_000);
        let row = |pid| app.rows.iter().find(|r| r.g.pid == pid).expect("a row");
        assert!(row(30).exited && !row(20).exited);
        assert_eq!(row(30).on_cpu_ns, 100, "no slice in progress once exited");
        assert_eq!(row(20).on_cpu_ns, 100 + 9_000 - 8_490);
        assert_eq!((app.columns[0].cell)(row(30)), "30†");
        assert_eq!((app.columns[0].cell)(row(20)), "20");
    }

    fn key_in(pid: i32, id: u64) -> GreenletKey {
        GreenletKey { pid, id }
    }

    #[test]
    fn a_followed_child_with_its_parents_ids_has_rows_rates_and_detail_of_its_own() {
        // A child forked while followed starts with its parent's greenlet ids: the table,
        // the rates and the detail view tell them apart by process.
        let in_process = |pid, on_cpu_ns| {
            let mut parent_side = g(2, "worker", State::Suspended, 10, on_cpu_ns);
            parent_side.pid = pid;
            parent_side
        };
        let first = snap(0, vec![in_process(1, 0), in_process(9, 0)]);
        let second = snap(
            1_000_000_000,
            vec![in_process(1, 100_000_000), in_process(9, 700_000_000)],
        );
        let mut app = App::new(target(true), None, 1.0, first, 1_000, 3);
        app.update(second, 1_000_001_000);
        assert_eq!(app.columns[0].title, "PID");
        let rows: Vec<(i32, u64, f64)> = app
            .rows
            .iter()
            .map(|r| (r.g.pid, r.g.id, r.rates.unwrap().cpu_share))
            .collect();
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!((rows[0].0, rows[0].1), (9, 2), "the child's 70% first");
        assert!((rows[0].2 - 0.7).abs() < 1e-6 && (rows[1].2 - 0.1).abs() < 1e-6);
        app.on_key(Key::Down);
        app.on_key(Key::Enter);
        assert_eq!(app.screen, Screen::Detail(GreenletKey { pid: 1, id: 2 }));
        let shown = app.cur.greenlet(GreenletKey { pid: 1, id: 2 }).unwrap();
        assert_eq!(shown.on_cpu_ns, 100_000_000);
    }

    fn key(id: u64) -> GreenletKey {
        GreenletKey { pid: 0, id }
    }

    fn ids(app: &App) -> Vec<u64> {
        app.rows.iter().map(|r| r.g.id).collect()
    }

    #[test]
    fn default_sort_is_cpu_and_keys_change_it() {
        let mut app = app();
        assert_eq!(ids(&app), [2, 3, 4]);
        assert!((app.rows[0].rates.unwrap().cpu_share - 0.6).abs() < 1e-6);
        app.on_key(Key::Invert);
        assert_eq!(ids(&app), [4, 3, 2]);
        app.on_key(Key::PrevColumn);
        assert_eq!(app.columns[app.sort.column].title, "SW/S");
        app.on_key(Key::PrevColumn); // ascending: running, suspended, unstarted, dead
        assert_eq!(app.columns[app.sort.column].title, "STATE");
        assert_eq!(ids(&app).last(), Some(&4));
        app.on_key(Key::NextColumn);
        app.on_key(Key::NextColumn);
        assert_eq!(app.columns[app.sort.column].title, "CPU%");
        assert_eq!(ids(&app), [2, 3, 4], "back to the largest CPU share first");
    }

    #[test]
    fn selection_stays_on_top_until_moved() {
        let mut app = app();
        assert_eq!((app.selected, app.selected_id), (0, Some(key(2))));
        app.on_key(Key::Invert);
        assert_eq!(
            (app.selected, app.selected_id),
            (0, Some(key(4))),
            "still the top row"
        );
    }

    #[test]
    fn selection_keeps_its_position_and_enter_opens_detail() {
        let mut app = app();
        app.on_key(Key::Down);
        app.on_key(Key::Down);
        assert_eq!((app.selected, app.selected_id), (2, Some(key(4))));
        // Re-sorted (least CPU first: greenlet 4 goes to the top): the selection stays on
        // the third row, which now shows greenlet 2.
        app.on_key(Key::Invert);
        assert_eq!(ids(&app), [4, 3, 2]);
        assert_eq!((app.selected, app.selected_id), (2, Some(key(2))));
        // A refresh in which the greenlet of the selected row dies and leaves the table.
        let mut later = app.cur.clone();
        later.at_ns += RETAIN_DEAD_NS;
        let busy = later.greenlets.iter_mut().find(|g| g.id == 2).unwrap();
        busy.state = State::Dead;
        busy.dead_ns = Some(1_000_000_000);
        app.update(later, 0);
        assert_eq!(ids(&app), [3]);
        assert_eq!(
            (app.selected, app.selected_id),
            (0, Some(key(3))),
            "the last row"
        );
    }

    #[test]
    fn detail_view_keeps_its_greenlet_and_moves_from_it() {
        let mut app = app();
        app.on_key(Key::Bottom);
        assert_eq!(app.selected_id, Some(key(4)));
        app.on_key(Key::Enter);
        assert_eq!(app.screen, Screen::Detail(GreenletKey { pid: 0, id: 4 }));
        // Keys other than moves leave the detail on its greenlet, though the row at the
        // selected position now shows another one.
        app.on_key(Key::Invert);
        assert_eq!(ids(&app), [4, 3, 2]);
        app.on_key(Key::Pause);
        assert_eq!(app.screen, Screen::Detail(GreenletKey { pid: 0, id: 4 }));
        // A move starts from the row of the greenlet shown.
        app.on_key(Key::Down);
        assert_eq!(app.screen, Screen::Detail(GreenletKey { pid: 0, id: 3 }));
        app.on_key(Key::Back);
        assert_eq!(app.screen, Screen::Table);
        app.on_key(Key::Bottom);
        assert_eq!(app.selected, 2);
        app.on_key(Key::PageUp);
        assert_eq!(app.selected, 0);
        app.on_key(Key::Up);
        assert_eq!(app.selected, 0);
        app.on_key(Key::PageDown);
        app.on_key(Key::Top);
        assert_eq!(app.selected, 0);
    }

    #[test]
    fn thread_counts_tell_alive_from_seen() {
        let set = |v: &[u32]| v.iter().copied().collect::<BTreeSet<u32>>();
        // Threads 10 (no greenlets), 11 and 12 alive; 13 exited, its records still there;
        // 14 exited, its records evicted.
        let counts = ThreadCounts::of(
            &set(&[10, 11, 12]),
            &set(&[11, 12, 13]),
            &set(&[11, 12, 13, 14]),
        );
        assert_eq!(
            counts,
            ThreadCounts {
                alive: 3,
                with_greenlets_now: 2,
                with_greenlets_since_attach: 4
            }
        );
    }

    #[test]
    fn dead_greenlets_recent_all_none() {
        let mut app = app();
        assert_eq!(app.dead_view, DeadView::Recent);
        let mut rows = ids(&app);
        rows.sort();
        assert_eq!(rows, [2, 3, 4], "died 0.1 s ago: still shown");
        let mut later = app.cur.clone();
        later.at_ns += RETAIN_DEAD_NS;
        app.update(later, 0);
        assert!(
            !ids(&app).contains(&4),
            "died over 5 s ago: gone from the table"
        );
        app.on_key(Key::CycleDead);
        assert_eq!(app.dead_view, DeadView::All);
        assert!(ids(&app).contains(&4));
        app.on_key(Key::CycleDead);
        assert_eq!(app.dead_view, DeadView::None);
        assert!(!ids(&app).contains(&4));
        app.on_key(Key::CycleDead);
        assert_eq!(app.dead_view, DeadView::Recent);
    }

    fn edge(origin: u64, target: u64, ended: bool) -> EdgeStats {
        EdgeStats {
            pid: 0,
            origin,
            target,
            switches: 1,
            throws: 0,
            ended,
        }
    }

    #[test]
    fn ended_greenlets_are_kept_up_to_the_bound_and_the_rest_counted() {
        let mut app = app(); // keeps 3 dead greenlets, 12 edges
        let ended = |id: u64| {
            let mut d = g(id, "done", State::Dead, 1, 5);
            d.ended = true;
            d.dead_ns = Some(1_000_000_000);
            d
        };
        let live = g(2, "busy", State::Suspended, 10, 100);
        let mut s = snap(1_100_000_000, vec![live.clone(), ended(10), ended(11)]);
        s.edges = vec![edge(2, 10, true), edge(10, 2, true), edge(2, 3, false)];
        app.update(s, 1_100_001_000);
        let mut s = snap(1_200_000_000, vec![live.clone(), ended(12)]);
        s.edges = vec![edge(2, 3, false)];
        app.update(s, 1_200_001_000);
        let ids: Vec<u64> = app.cur.greenlets.iter().map(|g| g.id).collect();
        assert_eq!(ids, [2, 10, 11, 12], "live ones, and the ended ones kept");
        assert_eq!(app.cur.edges.len(), 3);
        assert_eq!(app.cur.edges_into(key(10)), [edge(2, 10, true)]);
        assert_eq!(app.history.forgotten_greenlets, 0);
        // Paused: the screen stays, but what ended is still kept (its record left the kernel).
        app.on_key(Key::Pause);
        app.update(
            snap(1_300_000_000, vec![live.clone(), ended(13), ended(14)]),
            1_300_001_000,
        );
        assert_eq!(app.cur.at_ns, 1_200_000_000);
        app.on_key(Key::Pause);
        app.update(snap(1_400_000_000, vec![live]), 1_400_001_000);
        let ids: Vec<u64> = app.cur.greenlets.iter().map(|g| g.id).collect();
        assert_eq!(ids, [2, 12, 13, 14], "the oldest two forgotten");
        assert_eq!(app.history.forgotten_greenlets, 2);
        assert_eq!(app.cur.alive(), 1);
        app.on_key(Key::CycleDead);
        assert_eq!(app.dead_label(), " dead: all but 2 forgotten ");
        app.on_key(Key::CycleDead);
        assert_eq!(app.dead_label(), " dead: none ");
    }

    #[test]
    fn hide_dead_pause_help_and_quit() {
        let mut app = app();
        app.on_key(Key::CycleDead);
        app.on_key(Key::CycleDead);
        assert_eq!(ids(&app), [2, 3]);
        app.on_key(Key::Pause);
        assert!(app.paused);
        let before = app.cur.at_ns;
        app.update(snap(5, vec![]), 6);
        assert_eq!(app.cur.at_ns, before, "paused: the snapshot is not applied");
        app.on_key(Key::Help);
        assert!(app.help);
        app.on_key(Key::Down);
        assert!(!app.help && !app.quit, "a key closes the help");
        app.on_key(Key::Quit);
        assert!(app.quit);
    }
}
