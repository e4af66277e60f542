//! One greenlet in detail: identity, counters, the slice histogram, the busiest edges.

use gltop::loader::rates::quantile_upper;
use gltop::loader::{EdgeStats, GreenletKey};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::Frame;

use super::histogram;
use crate::app::App;
use crate::format::{count, duration_ns, percent, rate};

/// Edges listed in each direction.
const TOP_EDGES: usize = 10;

pub fn draw(f: &mut Frame<'_>, area: Rect, app: &App, key: GreenletKey) {
    let id = key.id;
    let Some(g) = app.cur.greenlet(key) else {
        let msg = format!(
            "greenlet {id} is no longer recorded (dead and forgotten: the view keeps the last {} \
             dead greenlets, see --max-dead)",
            app.history.max_greenlets
        );
        f.render_widget(Paragraph::new(msg), area);
        return;
    };
    let at = app.cur.at_ns;
    let ago = |t: Option<u64>| {
        t.map_or("before attach".to_string(), |t| {
            format!("{} ago", duration_ns(at.saturating_sub(t)))
        })
    };
    let parent = match g.parent {
        Some(p) => format!("{p} ({})", app.name_of(key.sibling(p))),
        None if g.is_main() => "none (main greenlet)".into(),
        None => "unknown (created before attach)".into(),
    };
    let mut info = vec![
        Line::from(format!(
            "state {}   thread {}   parent {parent}",
            g.state.as_str(),
            g.tid
        )),
        Line::from(match (g.dead_ns, g.outcome) {
            (Some(d), Some(o)) => format!(
                "created {}   died {} ({})",
                ago(g.created_ns),
                ago(Some(d)),
                o.name()
            ),
            _ => format!("created {}", ago(g.created_ns)),
        }),
        Line::from(format!(
            "switches in {} out {}   throws in {} out {}",
            count(g.switches_in),
            count(g.switches_out),
            count(g.throws_in),
            count(g.throws_out)
        )),
    ];
    let mean = g.on_cpu_ns.checked_div(g.slices).unwrap_or(0);
    let q = |p: f64| quantile_upper(&g.hist, p).map_or("-".into(), duration_ns);
    info.push(Line::from(format!(
        "on-CPU {} in {} slices   mean {}   p50 < {}   p99 < {}   max {}",
        duration_ns(g.on_cpu_at(at)),
        count(g.slices),
        duration_ns(mean),
        q(0.5),
        q(0.99),
        duration_ns(g.max_slice_at(at)),
    )));
    if let Some(r) = app.row(key).and_then(|r| r.rates) {
        info.push(Line::from(format!(
            "last interval: {} switches/s, {} throws/s, {} CPU",
            rate(r.switches_per_s),
            rate(r.throws_per_s),
            percent(r.cpu_share)
        )));
    }
    if let Some(since) = g.running_since_ns {
        // Measured to when gltop had read the record, not to the snapshot's instant: a
        // greenlet switched in while the maps were being read began its slice after that.
        info.push(Line::from(if app.read_ns > since {
            format!("running now, for {}", duration_ns(app.read_ns - since))
        } else {
            "running now, switched in as the last refresh read it".to_string()
        }));
    }

    let [top, bottom] = Layout::vertical([
        Constraint::Length(info.len() as u16 + 1),
        Constraint::Min(3),
    ])
    .areas(area);
    let title = format!(" greenlet {} \"{}\" ", g.id, g.display_name());
    f.render_widget(
        Paragraph::new(info).block(Block::default().borders(Borders::TOP).title(title)),
        top,
    );

    let [hist_area, edges_area] =
        Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(bottom);
    let bar_width = (hist_area.width as usize).saturating_sub(28).max(4);
    let hist: Vec<Line> = histogram::lines(&g.hist, bar_width)
        .into_iter()
        .map(Line::from)
        .collect();
    f.render_widget(
        Paragraph::new(hist).block(
            Block::default()
                .borders(Borders::TOP)
                .title(" slices (switch-in to switch-out) "),
        ),
        hist_area,
    );

    let [ins, outs] = Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)])
        .areas(edges_area);
    edges(
        f,
        ins,
        app,
        " top edges in ",
        &app.cur.edges_into(key),
        |e| e.origin,
    );
    edges(
        f,
        outs,
        app,
        " top edges out ",
        &app.cur.edges_out_of(key),
        |e| e.target,
    );
}

fn edges(
    f: &mut Frame<'_>,
    area: Rect,
    app: &App,
    title: &str,
    list: &[EdgeStats],
    peer: fn(&EdgeStats) -> u64,
) {
    let mut lines: Vec<Line> = vec![Line::styled(
        format!("{:>8} {:<16} {:>7} {:>6}", "ID", "NAME", "SWITCH", "THROW"),
        Style::default().add_modifier(Modifier::BOLD),
    )];
    lines.extend(list.iter().take(TOP_EDGES).map(|e| {
        let name: String = app
            .name_of(GreenletKey {
                pid: e.pid,
                id: peer(e),
            })
            .chars()
            .take(16)
            .collect();
        Line::from(format!(
            "{:>8} {:<16} {:>7} {:>6}",
            peer(e),
            name,
            count(e.switches),
            count(e.throws)
        ))
    }));
    if list.is_empty() {
        lines.push(Line::from("none recorded"));
    }
    f.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::TOP)
                .title(title.to_string()),
        ),
        area,
    );
}

/// One greenlet in the sampled mode: what samples and sched_switch tell, and its blocking
/// episodes. Counts only a probe in the switch gives are shown as unknown.
pub fn draw_sampled(f: &mut Frame<'_>, area: Rect, app: &App, key: gltop::loader::GreenletKey) {
    let id = key.id;
    let Some(r) = app.row(key) else {
        f.render_widget(
            Paragraph::new(format!("greenlet {id} is no longer sampled")),
            area,
        );
        return;
    };
    let s = r.s.expect("sampled rows carry samples");
    let g = &r.g;
    let parent = match g.parent {
        Some(p) => format!("{p} ({})", app.greenlet_name(p)),
        None if g.is_main() => "none (main greenlet)".into(),
        None => "unknown (created before attach)".into(),
    };
    let mut lines = vec![
        Line::from(format!("{}  {}", g.id, g.display_name()))
            .style(Style::default().add_modifier(Modifier::BOLD)),
        Line::from(format!(
            "thread {}   parent {parent}   {}",
            g.tid,
            if s.current { "running" } else { "state -" }
        )),
        Line::from(format!(
            "samples {}   CPU {} (last interval)",
            count(s.samples),
            s.cpu_share.map_or("-".into(), percent)
        )),
        Line::from(format!(
            "off the CPU: blocked {}, preempted {}",
            duration_ns(s.sleep_ns),
            duration_ns(s.preempt_ns)
        )),
        Line::from("switches, throws, slices: - (sampled mode: no probe in the switch)"),
        Line::from(""),
    ];
    let mine: Vec<_> = app
        .episode_list()
        .into_iter()
        .filter(|e| e.greenlet == id && e.tid == g.tid)
        .collect();
    lines.push(Line::from(format!("blocking episodes: {}", mine.len())));
    for e in mine.iter().take(10) {
        lines.push(Line::from(format!(
            "  {}{} {}",
            duration_ns(e.duration_ns),
            if e.ongoing { "+ ongoing" } else { "" },
            match (e.is_off_cpu(), e.syscall_name()) {
                (false, _) => "on-CPU".to_string(),
                (true, Some(sc)) => format!("off-CPU in {sc}"),
                (true, None) => "off-CPU".to_string(),
            }
        )));
    }
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::TOP).title(" greenlet ")),
        area,
    );
}
