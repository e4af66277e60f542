//! The blocking episodes, newest first, and one episode's stack.

use gltop::loader::sample::Episode;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState};
use ratatui::Frame;

use crate::app::App;
use crate::format::duration_ns;

/// The duration of an episode, marked while it lasts.
fn duration(e: &Episode) -> String {
    let d = duration_ns(e.duration_ns);
    if e.ongoing {
        format!("{d}+ ongoing")
    } else {
        d
    }
}

/// Where an episode was: on the CPU, or off it in a system call.
fn place(e: &Episode) -> String {
    match (e.is_off_cpu(), e.syscall_name()) {
        (false, _) => "on-CPU".into(),
        (true, Some(s)) => format!("off-CPU in {s}"),
        (true, None) => "off-CPU".into(),
    }
}

/// The innermost frame of the program's own code: the first one with a path (libc's have
/// none) that names nothing of Rust's standard library (trait glue such as
/// `<u64 as core::iter::Step>` included); else the innermost named one.
fn where_in_code(frames: &[String]) -> Option<&str> {
    let own = |f: &&String| {
        let outer = f.rsplit(" <- ").next().unwrap_or(f);
        outer.contains("::")
            && !["core::", "std::", "alloc::"]
                .iter()
                .any(|p| outer.contains(p))
    };
    frames
        .iter()
        .find(own)
        .or_else(|| frames.iter().find(|f| !f.starts_with("0x")))
        .map(String::as_str)
}

/// The list of episodes.
pub fn draw_list(f: &mut Frame<'_>, area: Rect, app: &App) {
    let title = match (app.blocking_detected, app.target.block_ms) {
        (false, _) => " blocking: not detected (the target publishes no sample layout) ".into(),
        (true, Some(ms)) => format!(
            " blocking: greenlets that did not switch for over {ms} ms ({}) ",
            app.episode_list().len()
        ),
        (true, None) => " blocking ".into(),
    };
    let block = Block::default().borders(Borders::TOP).title(title);
    let list = app.episode_list();
    if list.is_empty() {
        let msg = if app.blocking_detected {
            "no greenlet has blocked its thread since attach"
        } else {
            ""
        };
        f.render_widget(Paragraph::new(msg).block(block), area);
        return;
    }
    let now = app.cur.at_ns;
    // Several processes: which one each episode is of.
    let several = app.target.several;
    let mut titles = vec!["STARTED", "GREENLET", "TID", "DURATION", "WHERE", "AT"];
    if several {
        titles.insert(1, "PID");
    }
    let header = Row::new(titles)
        .style(Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    let visible = area.height.saturating_sub(3) as usize;
    let selected = app.episode_selected.min(list.len() - 1);
    let start = selected.saturating_sub(visible.saturating_sub(1));
    let rows = list.iter().skip(start).take(visible.max(1)).map(|e| {
        let at = where_in_code(&e.frames).unwrap_or("-").to_string();
        let mut cells = vec![
            Cell::from(format!(
                "{} ago",
                duration_ns(now.saturating_sub(e.start_ns))
            )),
            Cell::from(format!("{} {}", e.greenlet, app.episode_greenlet_name(e))),
            Cell::from(e.tid.to_string()),
            Cell::from(duration(e)),
            Cell::from(place(e)),
            Cell::from(at),
        ];
        if several {
            cells.insert(1, Cell::from(e.pid.to_string()));
        }
        Row::new(cells)
    });
    let mut widths = vec![
        Constraint::Length(10),
        Constraint::Length(22),
        Constraint::Length(7),
        Constraint::Length(16),
        Constraint::Length(22),
        Constraint::Min(10),
    ];
    if several {
        widths.insert(1, Constraint::Length(7));
    }
    let table = Table::new(rows, widths)
        .header(header)
        .block(block)
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .column_spacing(1);
    let mut state = TableState::default().with_selected(Some(selected - start));
    f.render_stateful_widget(table, area, &mut state);
}

/// One episode and its stack, innermost frame first.
pub fn draw_stack(f: &mut Frame<'_>, area: Rect, app: &App, tid: u32, start_ns: u64) {
    let Some(e) = app.episode(tid, start_ns) else {
        f.render_widget(
            Paragraph::new("this episode is no longer kept (the view keeps the last 1000)"),
            area,
        );
        return;
    };
    let mut lines = vec![
        Line::from(format!(
            "greenlet {} ({}) on thread {}{}: {} without switching, {}",
            e.greenlet,
            app.episode_greenlet_name(e),
            e.tid,
            if app.target.several {
                format!(" of process {}", e.pid)
            } else {
                String::new()
            },
            duration(e),
            place(e),
        )),
        Line::from(format!(
            "blocked (off the CPU, not runnable) {} of it",
            duration_ns(e.off_cpu_ns)
        )),
        Line::from(""),
    ];
    if e.frames.is_empty() {
        lines.push(Line::from("no user stack was captured"));
    }
    for (i, name) in e.frames.iter().enumerate() {
        lines.push(Line::from(format!("#{i:<3} {name}")));
    }
    f.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::TOP)
                .title(" blocking episode: user stack, innermost first "),
        ),
        area,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_place_in_code_skips_the_standard_library_and_libc() {
        let frames: Vec<String> = [
            "__GI___libc_read",
            "<u64>::unchecked_add <- <u64 as core::iter::range::Step>::forward_unchecked",
            "std::io::default_read_exact",
            "demo::spin",
            "main",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(where_in_code(&frames), Some("demo::spin"));
        let libc_only: Vec<String> = vec!["0x10".into(), "syscall".into()];
        assert_eq!(where_in_code(&libc_only), Some("syscall"));
        assert_eq!(where_in_code(&[]), None);
    }
}
