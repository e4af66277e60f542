//! The header: which process, how it is doing, and what watching it costs.

use gltop::loader::rates::{tracing_cost, DetectorCost};
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use crate::app::App;
use crate::format::{count, duration_ns, percent, rate};

/// Separates groups on one line.
const GAP: &str = "   ";
/// Starts a line continued from the one above.
const INDENT: &str = "  ";

/// Spans kept together on one line.
type Group = Vec<Span<'static>>;

fn bold(s: String) -> Span<'static> {
    Span::styled(s, Style::default().add_modifier(Modifier::BOLD))
}

/// Lays out `lines` (each a list of groups) in `width` columns: groups go on one line,
/// `GAP` apart, while they fit; the next one starts a continuation line, indented. Every
/// group is short enough for 80 columns, so nothing is cut there or wider.
pub fn pack(lines: Vec<Vec<Group>>, width: usize) -> Vec<Line<'static>> {
    let mut out = Vec::new();
    for groups in lines {
        let mut line: Vec<Span<'static>> = Vec::new();
        let mut used = 0;
        for group in groups {
            let w: usize = group.iter().map(Span::width).sum();
            if used > 0 && used + GAP.len() + w <= width {
                line.push(GAP.into());
                used += GAP.len();
            } else if used > 0 {
                out.push(Line::from(std::mem::take(&mut line)));
                line.push(INDENT.into());
                used = INDENT.len();
            }
            line.extend(group);
            used += w;
        }
        if !line.is_empty() {
            out.push(Line::from(line));
        }
    }
    out
}

/// The blocking group: episodes seen, or why there are none.
fn blocking_group(app: &App) -> Group {
    match (app.blocking_detected, app.target.block_ms) {
        (true, Some(ms)) => {
            let list = app.episode_list();
            let ongoing = list.iter().filter(|e| e.ongoing).count();
            let style = if ongoing > 0 {
                Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
            } else {
                Style::default()
            };
            vec![
                format!("blocking >{ms}ms ").into(),
                Span::styled(format!("{} episodes", list.len()), style),
                format!(", {ongoing} ongoing (b)").into(),
            ]
        }
        _ => vec!["blocking not detected".into()],
    }
}

/// The header of the sampled mode.
fn sampled_lines(app: &App, width: u16) -> Vec<Line<'static>> {
    let target = &app.target;
    let (hz, cpus, sites) = target.sampled.unwrap_or_default();
    let cur = app.sample_cur.as_ref();
    let prev = app.sample_prev.as_ref();
    let first: Vec<Group> = vec![
        vec![
            bold("gltop".into()),
            format!(" pid {} ({})", target.process.pid, target.process.comm).into(),
        ],
        vec![format!(
            "attached {} ago, sampled at {hz} Hz on {cpus} CPUs, {}",
            duration_ns(app.cur.at_ns.saturating_sub(app.attached_ns)),
            if target.python {
                "Python greenlet (no probe)".to_string()
            } else {
                format!("new probe on {sites} sites")
            }
        )
        .into()],
        vec![format!("refresh {}s", app.delay).into()],
    ];
    let th = app.threads;
    let second: Vec<Group> = vec![
        vec![
            "threads ".into(),
            bold(th.alive.to_string()),
            " alive, with greenlets: ".into(),
            bold(th.with_greenlets_now.to_string()),
            " now".into(),
        ],
        vec![
            "greenlets ".into(),
            bold(count(app.rows.iter().filter(|r| r.g.id != 0).count() as u64)),
            " sampled or named".into(),
        ],
    ];
    let dt = match (prev, cur) {
        (Some(p), Some(c)) => c.at_ns.saturating_sub(p.at_ns),
        _ => 0,
    };
    let per_s = |f: &dyn Fn(&gltop::loader::sample::SampleSnapshot) -> u64| -> Option<f64> {
        match (prev, cur) {
            (Some(p), Some(c)) if dt > 0 => Some(gltop::loader::rates::per_second(f(p), f(c), dt)),
            _ => None,
        }
    };
    let switches = |s: &gltop::loader::sample::SampleSnapshot| {
        s.threads.iter().map(|t| t.counter).sum::<u64>()
    };
    let samples_per_s = per_s(&|s| s.totals.samples);
    let third: Vec<Group> = vec![
        if target.python {
            vec![
                "switches ".into(),
                bold("-".into()),
                " (greenlet counts none)".into(),
            ]
        } else {
            vec![
                "switches ".into(),
                bold(format!("{}/s", per_s(&switches).map_or("-".into(), rate))),
                " (runtime counters)".into(),
            ]
        },
        vec![
            "samples ".into(),
            bold(format!("{}/s", samples_per_s.map_or("-".into(), rate))),
        ],
    ];
    let cost = match (samples_per_s, app.per_hit_ns) {
        (Some(h), Some(c)) => format!(
            "{} samples/s × {:.1}µs = {} of a CPU",
            rate(h),
            c / 1000.0,
            percent(tracing_cost(h, c))
        ),
        (None, Some(c)) => format!("{:.1}µs per sample", c / 1000.0),
        (_, None) => "per-sample cost unknown".into(),
    };
    let dropped = cur.map_or(0, |c| c.totals.dropped());
    let drop_style = if dropped > 0 {
        Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
    } else {
        Style::default()
    };
    let mut fourth: Vec<Group> = vec![
        vec!["tracing cost ".into(), bold(cost)],
        vec!["dropped ".into(), Span::styled(count(dropped), drop_style)],
        blocking_group(app),
    ];
    if cur.is_some_and(|c| !c.layout_known) {
        fourth.push(vec!["waiting for the runtime's first thread state".into()]);
    }
    pack(vec![first, second, third, fourth], width as usize)
}

/// Exact mode's cost line: probe hits per second × the cost of one, plus the blocking
/// detector's samples × the cost of one when it runs; a part whose cost is not measured is
/// named as such and left out of the total, never counted as free.
fn exact_cost(
    hits: Option<f64>,
    per_hit_ns: Option<f64>,
    detector: Option<&DetectorCost>,
) -> String {
    let probes = match (hits, per_hit_ns) {
        (Some(h), Some(c)) => Some((format!("{} hits/s × {c:.0}ns", rate(h)), tracing_cost(h, c))),
        _ => None,
    };
    let samples = detector.and_then(|d| {
        let s = d.samples_per_s?;
        Some(match d.per_sample_ns {
            Some(c) => (
                format!("{} samples/s × {:.1}µs", rate(s), c / 1000.0),
                Some(tracing_cost(s, c)),
            ),
            None => (format!("{} samples/s (cost not measured)", rate(s)), None),
        })
    });
    match (probes, samples) {
        (Some((p, ps)), Some((s, Some(ss)))) => {
            format!("{p} + {s} = {} of a CPU", percent(ps + ss))
        }
        (Some((p, ps)), Some((s, None))) => format!("{p} = {} of a CPU + {s}", percent(ps)),
        (Some((p, ps)), None) => format!("{p} = {} of a CPU", percent(ps)),
        (None, _) => match per_hit_ns {
            Some(c) => format!("{c:.0}ns per probe hit"),
            None => "per-hit cost unknown".into(),
        },
    }
}

/// The header's lines for a screen `width` columns wide.
pub fn lines(app: &App, width: u16) -> Vec<Line<'static>> {
    if app.is_sampled() {
        return sampled_lines(app, width);
    }
    let t = &app.cur.totals;
    let iv = app.interval();
    let per_s = |v: Option<f64>| v.map_or("-".to_string(), rate);
    let (alive, dead) = app.alive_dead();
    let target = &app.target;

    let who = if target.several {
        let pids: Vec<String> = app
            .cur
            .processes
            .iter()
            .map(|p| p.pid.to_string())
            .collect();
        let pids = match pids.len() {
            0..=4 => pids.join(","),
            _ => format!("{},…", pids[..4].join(",")),
        };
        format!(" pids {pids} ({})", target.process.comm)
    } else {
        format!(" pid {} ({})", target.process.pid, target.process.comm)
    };
    let mut first: Vec<Group> = vec![
        vec![bold("gltop".into()), who.into()],
        vec![format!(
            "attached {} ago, {} on {} sites",
            duration_ns(app.cur.at_ns.saturating_sub(app.attached_ns)),
            target.mode.as_str(),
            target.sites,
        )
        .into()],
        vec![format!("refresh {}s", app.delay).into()],
    ];
    if app.paused {
        first.push(vec![Span::styled(
            " PAUSED ",
            Style::default().add_modifier(Modifier::REVERSED),
        )]);
    }

    let th = app.threads;
    let mut second: Vec<Group> = vec![
        vec![
            "threads ".into(),
            bold(th.alive.to_string()),
            " alive, with greenlets: ".into(),
            bold(th.with_greenlets_now.to_string()),
            " now, ".into(),
            bold(th.with_greenlets_since_attach.to_string()),
            " since attach".into(),
        ],
        vec![
            "greenlets ".into(),
            bold(count(alive as u64)),
            " alive, ".into(),
            bold(count(dead)),
            " dead".into(),
        ],
        vec![format!(
            "created {}/s",
            per_s(iv.map(|iv| gltop::loader::rates::per_second(
                iv.prev.totals.greenlets_created,
                t.greenlets_created,
                iv.dt_ns()
            )))
        )
        .into()],
    ];
    // With --follow, the processes forked from the target: how many, and which have exited
    // (their greenlets stay in the table under their PID until they are forgotten).
    // Several processes: those that exited and left the view (`--keep-exited`) are counted.
    let procs = &app.cur.processes;
    if procs.len() > 1 || app.released_processes > 0 {
        let exited = procs.iter().filter(|p| p.exited).count();
        let pids: Vec<String> = procs
            .iter()
            .take(6)
            .map(|p| format!("{}{}", p.pid, if p.exited { "†" } else { "" }))
            .collect();
        let more = if procs.len() > 6 { " …" } else { "" };
        let mut group = vec![
            "processes ".into(),
            bold(procs.len().to_string()),
            format!(" watched, {exited} exited ({}{more})", pids.join(" ")).into(),
        ];
        if app.released_processes > 0 {
            group.push(
                format!(
                    ", {} more exited and left the view",
                    count(app.released_processes)
                )
                .into(),
            );
        }
        second.push(group);
    }
    // `p` shows one process's greenlets.
    if procs.len() > 1 || app.pid_filter.is_some() {
        second.push(vec![
            "showing ".into(),
            bold(app.pid_filter.map_or("all".into(), |p| format!("pid {p}"))),
            " (p)".into(),
        ]);
    }

    let third: Vec<Group> = vec![
        vec![
            "switches ".into(),
            bold(format!("{}/s", per_s(iv.map(|iv| iv.switches_per_s())))),
            format!(" ({} total)", count(t.switches)).into(),
        ],
        vec![
            "throws ".into(),
            bold(format!("{}/s", per_s(iv.map(|iv| iv.throws_per_s())))),
            format!(" ({} total)", count(t.throws)).into(),
        ],
    ];

    let hits = iv.map(|iv| iv.hits_per_s());
    let cost = exact_cost(hits, app.per_hit_ns, app.detector.as_ref());
    let dropped = t.dropped();
    let drop_style = if dropped > 0 {
        Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
    } else {
        Style::default()
    };
    let mut fourth: Vec<Group> = vec![
        vec!["tracing cost ".into(), bold(cost)],
        vec!["dropped ".into(), Span::styled(count(dropped), drop_style)],
        blocking_group(app),
    ];
    if dropped > 0 {
        fourth.push(vec![format!(
            "events lost: maps of {} greenlets and {} edges full,",
            target.capacities.greenlets, target.capacities.edges,
        )
        .into()]);
        fourth.push(vec!["see --max-greenlets, --max-edges".into()]);
    }
    if !target.missing.is_empty() {
        fourth.push(vec![format!(
            "missing probes: {}",
            target.missing.join(",")
        )
        .into()]);
    }
    pack(vec![first, second, third, fourth], width as usize)
}

pub fn draw(f: &mut Frame<'_>, area: Rect, lines: Vec<Line<'static>>) {
    f.render_widget(Paragraph::new(lines), area);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(lines: &[Line<'_>]) -> Vec<String> {
        lines.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn groups_wrap_to_indented_lines_and_never_split() {
        let g = |s: &'static str| -> Group { vec![Span::raw(s)] };
        let lines = || vec![vec![g("aaaa bbbb"), g("cc"), g("dddddd")], vec![g("e")]];
        assert_eq!(
            text(&pack(lines(), 80)),
            ["aaaa bbbb   cc   dddddd", "e"],
            "one line each when they fit"
        );
        assert_eq!(
            text(&pack(lines(), 15)),
            ["aaaa bbbb   cc", "  dddddd", "e"]
        );
        assert_eq!(
            text(&pack(lines(), 4)),
            ["aaaa bbbb", "  cc", "  dddddd", "e"],
            "a group wider than the line is kept whole"
        );
    }

    #[test]
    fn exact_mode_cost_adds_the_detectors_samples_or_names_them_unmeasured() {
        let mut d = DetectorCost::new(Some(20_000.0));
        d.read(0, 0);
        d.read(100, 1_000_000_000);
        assert_eq!(
            exact_cost(Some(10_000.0), Some(900.0), Some(&d)),
            format!(
                "10.0k hits/s × 900ns + 100 samples/s × 20.0µs = {} of a CPU",
                percent(0.009 + 0.002)
            )
        );
        let mut u = DetectorCost::new(None);
        u.read(0, 0);
        u.read(100, 1_000_000_000);
        let line = exact_cost(Some(10_000.0), Some(900.0), Some(&u));
        assert_eq!(
            line,
            format!(
                "10.0k hits/s × 900ns = {} of a CPU + 100 samples/s (cost not measured)",
                percent(0.009)
            )
        );
        // Before two reads of the detector, and with none: the probes alone.
        let probes_only = format!("10.0k hits/s × 900ns = {} of a CPU", percent(0.009));
        assert_eq!(
            exact_cost(
                Some(10_000.0),
                Some(900.0),
                Some(&DetectorCost::new(Some(1.0)))
            ),
            probes_only
        );
        assert_eq!(exact_cost(Some(10_000.0), Some(900.0), None), probes_only);
        assert_eq!(exact_cost(None, None, Some(&d)), "per-hit cost unknown");
    }
}
