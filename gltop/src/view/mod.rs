//! Drawing: the header, the greenlet table or a greenlet's detail, the footer, and the
//! help overlay. Everything shown is computed by `app`; this only lays it out.

mod blocking;
mod detail;
mod header;
mod help;
pub mod histogram;
mod table;

use std::borrow::Cow;

use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::Frame;

use crate::app::{App, Screen};

/// Draws the whole screen.
pub fn draw(f: &mut Frame<'_>, app: &App) {
    let head_lines = header::lines(app, f.area().width);
    let [head, body, foot] = Layout::vertical([
        Constraint::Length(head_lines.len() as u16),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(f.area());
    header::draw(f, head, head_lines);
    match app.screen {
        Screen::Table => table::draw(f, body, &app.columns, &app.rows, app.sort, app.selected),
        Screen::Detail(id) if app.is_sampled() => detail::draw_sampled(f, body, app, id),
        Screen::Detail(id) => detail::draw(f, body, app, id),
        Screen::Blocking => blocking::draw_list(f, body, app),
        Screen::Stack(tid, start) => blocking::draw_stack(f, body, app, tid, start),
    }
    footer(f, foot, app);
    if app.help {
        help::draw(f, f.area());
    }
}

/// The key hints at the bottom. On a narrow screen the least needed go first (the higher
/// the number, the sooner); `q` and `?` always stay.
fn footer(f: &mut Frame<'_>, area: ratatui::layout::Rect, app: &App) {
    let mut items: Vec<(&'static str, Cow<'static, str>, u8)> = vec![("q", " quit ".into(), 0)];
    match app.screen {
        Screen::Table => items.extend([
            ("j/k", " move ".into(), 1),
            ("g", " top ".into(), 1),
            ("s h/l", " sort ".into(), 3),
            ("i", " invert ".into(), 5),
            ("Enter", " detail ".into(), 2),
            ("b", " blocking ".into(), 2),
            ("d", app.dead_label().into(), 4),
        ]),
        Screen::Detail(_) => {
            items.extend([("Esc", " back ".into(), 1), ("j/k", " next ".into(), 2)])
        }
        Screen::Blocking => items.extend([
            ("j/k", " move ".into(), 1),
            ("Enter", " stack ".into(), 1),
            ("b/Esc", " back ".into(), 1),
        ]),
        Screen::Stack(..) => items.extend([("Esc", " episodes ".into(), 1)]),
    }
    let pause = if app.paused { " resume " } else { " pause " };
    items.push(("space", pause.into(), 6));
    items.push(("?", " help".into(), 0));
    let width = |items: &[(&str, Cow<'static, str>, u8)]| -> usize {
        items
            .iter()
            .map(|(k, l, _)| Span::raw(*k).width() + Span::raw(l.as_ref()).width())
            .sum()
    };
    while width(&items) > area.width as usize {
        let Some(drop) = (0..items.len())
            .filter(|&i| items[i].2 > 0)
            .max_by_key(|&i| items[i].2)
        else {
            break;
        };
        items.remove(drop);
    }
    let key = |k: &'static str| Span::styled(k, Style::default().add_modifier(Modifier::REVERSED));
    let spans: Vec<Span> = items
        .into_iter()
        .flat_map(|(k, l, _)| [key(k), l.into()])
        .collect();
    f.render_widget(Line::from(spans), area);
}
