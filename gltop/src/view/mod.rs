//! Drawing: the header, the greenlet table or a greenlet's detail, the footer, and the
//! help overlay. Everything shown is computed by `app`; this only lays it out.

mod detail;
mod header;
mod help;
pub mod histogram;
mod table;

use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::Frame;

use crate::app::{App, Screen};

/// Draws the whole screen.
pub fn draw(f: &mut Frame<'_>, app: &App) {
    let [head, body, foot] = Layout::vertical([
        Constraint::Length(header::HEIGHT),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(f.area());
    header::draw(f, head, app);
    match app.screen {
        Screen::Table => table::draw(f, body, &app.columns, &app.rows, app.sort, app.selected),
        Screen::Detail(id) => detail::draw(f, body, app, id),
    }
    footer(f, foot, app);
    if app.help {
        help::draw(f, f.area());
    }
}

fn footer(f: &mut Frame<'_>, area: ratatui::layout::Rect, app: &App) {
    let key = |k: &'static str| Span::styled(k, Style::default().add_modifier(Modifier::REVERSED));
    let mut spans = vec![key("q"), " quit ".into()];
    match app.screen {
        Screen::Table => spans.extend([
            key("j/k"),
            " move ".into(),
            key("s h/l"),
            " sort ".into(),
            key("i"),
            " invert ".into(),
            key("Enter"),
            " detail ".into(),
            key("d"),
            app.dead_label().into(),
        ]),
        Screen::Detail(_) => {
            spans.extend([key("Esc"), " back ".into(), key("j/k"), " next ".into()])
        }
    }
    spans.extend([
        key("space"),
        if app.paused { " resume " } else { " pause " }.into(),
        key("?"),
        " help".into(),
    ]);
    f.render_widget(Line::from(spans), area);
}
