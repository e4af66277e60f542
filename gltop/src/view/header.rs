//! The header: which process, how it is doing, and what watching it costs.

use gltop::loader::rates::tracing_cost;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use crate::app::App;
use crate::format::{count, duration_ns, percent, rate};

/// Lines the header takes.
pub const HEIGHT: u16 = 4;

fn bold(s: String) -> Span<'static> {
    Span::styled(s, Style::default().add_modifier(Modifier::BOLD))
}

pub fn draw(f: &mut Frame<'_>, area: Rect, app: &App) {
    let t = &app.cur.totals;
    let iv = app.interval();
    let per_s = |v: Option<f64>| v.map_or("-".to_string(), rate);
    let (alive, dead) = app.alive_dead();
    let target = &app.target;

    let mut first = vec![
        bold("gltop".into()),
        format!(" pid {} ({})", target.process.pid, target.process.comm).into(),
        format!(
            "  attached {} ago, {} on {} sites  refresh {}s",
            duration_ns(app.cur.at_ns.saturating_sub(app.attached_ns)),
            target.mode.as_str(),
            target.sites,
            app.delay
        )
        .into(),
    ];
    if app.paused {
        first.push("  ".into());
        first.push(Span::styled(
            " PAUSED ",
            Style::default().add_modifier(Modifier::REVERSED),
        ));
    }

    let second = Line::from(vec![
        "threads ".into(),
        bold(app.threads.to_string()),
        format!(" ({} with greenlets)", app.cur.threads.len()).into(),
        "   greenlets ".into(),
        bold(count(alive as u64)),
        " alive, ".into(),
        bold(count(dead)),
        " dead".into(),
        format!(
            "   created {}/s",
            per_s(iv.map(|iv| gltop::loader::rates::per_second(
                iv.prev.totals.greenlets_created,
                t.greenlets_created,
                iv.dt_ns()
            )))
        )
        .into(),
    ]);

    let third = Line::from(vec![
        "switches ".into(),
        bold(format!("{}/s", per_s(iv.map(|iv| iv.switches_per_s())))),
        format!(" ({} total)", count(t.switches)).into(),
        "   throws ".into(),
        bold(format!("{}/s", per_s(iv.map(|iv| iv.throws_per_s())))),
        format!(" ({} total)", count(t.throws)).into(),
    ]);

    let hits = iv.map(|iv| iv.hits_per_s());
    let cost = match (hits, app.per_hit_ns) {
        (Some(h), Some(c)) => format!(
            "{} hits/s × {c:.0}ns = {} of a CPU",
            rate(h),
            percent(tracing_cost(h, c))
        ),
        (None, Some(c)) => format!("{c:.0}ns per probe hit"),
        (_, None) => "per-hit cost unknown".into(),
    };
    let dropped = t.dropped();
    let drop_style = if dropped > 0 {
        Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
    } else {
        Style::default()
    };
    let mut fourth = vec![
        "tracing cost ".into(),
        bold(cost),
        "   dropped ".into(),
        Span::styled(count(dropped), drop_style),
    ];
    if dropped > 0 {
        fourth.push(
            format!(
                " (events lost: maps of {} greenlets and {} edges full, see --max-greenlets)",
                target.capacities.greenlets, target.capacities.edges,
            )
            .into(),
        );
    }
    if !target.missing.is_empty() {
        fourth.push(format!("   missing probes: {}", target.missing.join(",")).into());
    }
    let text = vec![Line::from(first), second, third, Line::from(fourth)];
    f.render_widget(Paragraph::new(text), area);
}
