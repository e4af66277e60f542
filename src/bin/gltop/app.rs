//! The viewer's state and what each key does to it. No drawing and no terminal here.

use std::collections::VecDeque;

use greenlet::loader::rates::{GreenletRates, Interval};
use greenlet::loader::{
    AttachMode, Capacities, EdgeStats, GreenletStats, Process, Snapshot, State, Tracer,
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
    Detail(u64),
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
}

fn opt_rate(r: &Row, f: fn(&GreenletRates) -> f64) -> SortKey {
    SortKey::Num(r.rates.as_ref().map_or(f64::NAN, f))
}

/// The columns of the greenlet table.
pub fn columns() -> Vec<Column<Row>> {
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
            title: "CPU%",
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

/// Index of the CPU% column, the default sort.
pub const CPU_COLUMN: usize = 5;

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
}

impl Target {
    /// What `tracer` is attached to.
    pub fn of(tracer: &Tracer) -> Target {
        Target {
            process: tracer.process().clone(),
            mode: tracer.mode(),
            sites: tracer.sites(),
            capacities: tracer.capacities(),
            missing: tracer.missing_probes().to_vec(),
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
        greenlets.sort_by_key(|g| g.id);
        edges.extend(self.edges.iter().copied());
        edges.sort_by_key(|e| (e.origin, e.target));
        snap.greenlets = greenlets;
        snap.edges = edges;
        snap
    }
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
    /// When the tracer attached (CLOCK_MONOTONIC ns).
    pub attached_ns: u64,
    /// Threads of the process at the last refresh.
    pub threads: usize,
    /// The table's rows, filtered and sorted.
    pub rows: Vec<Row>,
    /// The table's columns.
    pub columns: Vec<Column<Row>>,
    /// The table's order.
    pub sort: Sort,
    /// Index of the selected row.
    pub selected: usize,
    /// Id of the selected greenlet: once the user has moved the selection, it follows that
    /// greenlet across refreshes and re-sorts; before, it stays on the top row.
    pub selected_id: Option<u64>,
    /// The user moved the selection.
    pub follow: bool,
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
    /// A viewer of `target`, starting from its first snapshot, keeping the last `max_dead`
    /// dead greenlets.
    pub fn new(
        target: Target,
        per_hit_ns: Option<f64>,
        delay: f64,
        first: Snapshot,
        max_dead: usize,
    ) -> App {
        let columns = columns();
        let mut history = History::new(max_dead);
        let first = history.absorb(first);
        let mut app = App {
            threads: target.process.threads(),
            target,
            per_hit_ns,
            delay,
            prev: None,
            attached_ns: first.at_ns,
            cur: first,
            history,
            rows: Vec::new(),
            sort: Sort::by(&columns, CPU_COLUMN),
            columns,
            selected: 0,
            selected_id: None,
            follow: false,
            screen: Screen::Table,
            help: false,
            paused: false,
            dead_view: DeadView::Recent,
            quit: false,
            page: 20,
        };
        app.rebuild();
        app
    }

    /// Applies a new snapshot. While paused, only the greenlets that ended are kept (their
    /// records have left the kernel): the screen does not change.
    pub fn update(&mut self, snap: Snapshot) {
        let snap = self.history.absorb(snap);
        if self.paused {
            return;
        }
        self.threads = self.target.process.threads();
        self.prev = Some(std::mem::replace(&mut self.cur, snap));
        self.rebuild();
    }

    /// The rates of the last interval, once there are two snapshots.
    pub fn interval(&self) -> Option<Interval<'_>> {
        self.prev.as_ref().map(|prev| Interval {
            prev,
            cur: &self.cur,
        })
    }

    /// Recomputes, filters and sorts the rows, keeping the selection on the same greenlet.
    fn rebuild(&mut self) {
        let at = self.cur.at_ns;
        let iv = self.interval();
        let mut rows: Vec<Row> = self
            .cur
            .greenlets
            .iter()
            .filter(|g| g.state != State::Dead || self.dead_view.shows(g.dead_ns, at))
            .map(|g| Row {
                rates: iv.and_then(|iv| iv.greenlet(g)),
                on_cpu_ns: g.on_cpu_at(at),
                max_slice_ns: g.max_slice_at(at),
                g: g.clone(),
            })
            .collect();
        sort_rows(&mut rows, &self.columns, self.sort);
        self.rows = rows;
        self.reselect();
    }

    fn reselect(&mut self) {
        if let Some(i) = self
            .selected_id
            .filter(|_| self.follow)
            .and_then(|id| self.rows.iter().position(|r| r.g.id == id))
        {
            self.selected = i;
        }
        self.select(self.selected);
    }

    /// Moves the selection at the user's request: from now on it follows the greenlet.
    fn move_to(&mut self, i: usize) {
        self.follow = true;
        self.select(i);
    }

    fn select(&mut self, i: usize) {
        self.selected = i.min(self.rows.len().saturating_sub(1));
        self.selected_id = self.rows.get(self.selected).map(|r| r.g.id);
    }

    /// The row of greenlet `id`, if shown.
    pub fn row(&self, id: u64) -> Option<&Row> {
        self.rows.iter().find(|r| r.g.id == id)
    }

    /// The display name of greenlet `id`, `?` if unknown.
    pub fn name_of(&self, id: u64) -> String {
        self.cur
            .greenlet(id)
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
            Key::Back => self.screen = Screen::Table,
            Key::Enter => {
                if let Some(id) = self.selected_id {
                    self.follow = true;
                    self.screen = Screen::Detail(id);
                }
            }
            Key::NextColumn | Key::PrevColumn | Key::Invert => {
                self.sort = match key {
                    Key::NextColumn => self.sort.next(&self.columns),
                    Key::PrevColumn => self.sort.prev(&self.columns),
                    _ => self.sort.inverted(),
                };
                self.rebuild();
            }
            Key::Up => self.move_to(self.selected.saturating_sub(1)),
            Key::Down => self.move_to(self.selected + 1),
            Key::PageUp => self.move_to(self.selected.saturating_sub(self.page)),
            Key::PageDown => self.move_to(self.selected + self.page),
            Key::Top => self.move_to(0),
            Key::Bottom => self.move_to(usize::MAX),
        }
        if let (Screen::Detail(_), Some(id)) = (self.screen, self.selected_id) {
            // Moving in the detail view moves to the next greenlet's detail.
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
    use greenlet::loader::{Totals, HIST_BUCKETS};

    fn g(id: u64, name: &str, state: State, switches_in: u64, on_cpu_ns: u64) -> GreenletStats {
        GreenletStats {
            id,
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

    fn app() -> App {
        let target = Target {
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
        };
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
        let mut app = App::new(target, Some(400.0), 1.0, snap(0, a), 3);
        app.page = 2;
        app.update(snap(1_000_000_000, b));
        app
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
        assert_eq!((app.selected, app.selected_id), (0, Some(2)));
        app.on_key(Key::Invert);
        assert_eq!(
            (app.selected, app.selected_id),
            (0, Some(4)),
            "still the top row"
        );
    }

    #[test]
    fn selection_follows_the_greenlet_and_enter_opens_detail() {
        let mut app = app();
        app.on_key(Key::Down);
        assert_eq!(app.selected_id, Some(3));
        app.on_key(Key::Invert); // 3 moves but stays selected
        assert_eq!(app.rows[app.selected].g.id, 3);
        app.on_key(Key::Enter);
        assert_eq!(app.screen, Screen::Detail(3));
        app.on_key(Key::Down);
        assert_eq!(app.screen, Screen::Detail(app.selected_id.unwrap()));
        app.on_key(Key::Back);
        assert_eq!(app.screen, Screen::Table);
        app.on_key(Key::Bottom);
        assert_eq!(app.selected, 2);
        app.on_key(Key::PageUp);
        assert_eq!(app.selected, 0);
        app.on_key(Key::Up);
        assert_eq!(app.selected, 0);
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
        app.update(later);
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
        app.update(s);
        let mut s = snap(1_200_000_000, vec![live.clone(), ended(12)]);
        s.edges = vec![edge(2, 3, false)];
        app.update(s);
        let ids: Vec<u64> = app.cur.greenlets.iter().map(|g| g.id).collect();
        assert_eq!(ids, [2, 10, 11, 12], "live ones, and the ended ones kept");
        assert_eq!(app.cur.edges.len(), 3);
        assert_eq!(app.cur.edges_into(10), [edge(2, 10, true)]);
        assert_eq!(app.history.forgotten_greenlets, 0);
        // Paused: the screen stays, but what ended is still kept (its record left the kernel).
        app.on_key(Key::Pause);
        app.update(snap(
            1_300_000_000,
            vec![live.clone(), ended(13), ended(14)],
        ));
        assert_eq!(app.cur.at_ns, 1_200_000_000);
        app.on_key(Key::Pause);
        app.update(snap(1_400_000_000, vec![live]));
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
        app.update(snap(5, vec![]));
        assert_eq!(app.cur.at_ns, before, "paused: the snapshot is not applied");
        app.on_key(Key::Help);
        assert!(app.help);
        app.on_key(Key::Down);
        assert!(!app.help && !app.quit, "a key closes the help");
        app.on_key(Key::Quit);
        assert!(app.quit);
    }
}
