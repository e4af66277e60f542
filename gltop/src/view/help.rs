//! The help overlay.

use ratatui::layout::{Constraint, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use ratatui::Frame;

const TEXT: &[&str] = &[
    "q, Ctrl-C      quit (detaches)",
    "j/k, ↓/↑       move the selection (it keeps its row as the table changes)",
    "g/Home, G/End  jump to the top or the bottom;  PgUp/PgDn: a page",
    "s, l/→, Tab    sort by the next column;  h/←: the previous column",
    "i              invert the sort",
    "Enter          detail of the selected greenlet;  Esc: back",
    "d              dead greenlets shown: recent (died < 5 s ago), all, none",
    "b              blocking episodes, newest first (Enter: the stack; Esc: back)",
    "p              several processes: show one PID's greenlets, the next, ..., all",
    "space          pause or resume refreshing",
    "?              this help (any key closes it)",
    "",
    "SW/S     switches into the greenlet per second, last interval",
    "CPU%     share of a CPU it ran: time as its thread's current greenlet",
    "ON-CPU   total time it ran since attach (switch-in to next switch-out)",
    "MAX SLICE  its longest run without switching",
    "tracing cost  probe hits/s × measured cost of one hit, as a share of a CPU",
    "dropped  records lost because a map was full (see --max-greenlets)",
    "--sample: CPU% from cpu-clock samples; BLOCKED/PREEMPTED off-CPU time; - = unknown",
];

pub fn draw(f: &mut Frame<'_>, area: Rect) {
    let width = (TEXT.iter().map(|l| l.chars().count()).max().unwrap_or(0) + 4) as u16;
    let popup = area.centered(
        Constraint::Length(width.min(area.width)),
        Constraint::Length((TEXT.len() as u16 + 2).min(area.height)),
    );
    f.render_widget(Clear, popup);
    let lines: Vec<Line> = TEXT.iter().map(|l| Line::from(*l)).collect();
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(" gltop help ")),
        popup,
    );
}
