//! Draws any `crate::table` model: header with the sort marker, rows, the selection.

use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Cell, Row, Table, TableState};
use ratatui::Frame;

use crate::table::{Column, Sort};

/// The header text of column `i`: its title, with ▼ or ▲ when the table is sorted by it.
pub fn title<R>(columns: &[Column<R>], sort: Sort, i: usize) -> String {
    let c = &columns[i];
    if i == sort.column {
        format!("{}{}", c.title, if sort.descending { "▼" } else { "▲" })
    } else {
        c.title.to_string()
    }
}

fn aligned(text: String, right: bool) -> Cell<'static> {
    let line = Line::from(text);
    Cell::from(if right { line.right_aligned() } else { line })
}

pub fn draw<R>(
    f: &mut Frame<'_>,
    area: Rect,
    columns: &[Column<R>],
    rows: &[R],
    sort: Sort,
    selected: usize,
) {
    let header =
        Row::new((0..columns.len()).map(|i| aligned(title(columns, sort, i), columns[i].right)))
            .style(Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    // Only the visible rows are formatted: a table of 100,000 greenlets stays cheap.
    let visible = area.height.saturating_sub(3) as usize;
    let start = selected.saturating_sub(visible.saturating_sub(1));
    let body = rows
        .iter()
        .skip(start)
        .take(visible.max(1))
        .map(|r| Row::new(columns.iter().map(|c| aligned((c.cell)(r), c.right))));
    let widths: Vec<Constraint> = columns
        .iter()
        .map(|c| Constraint::Length(c.width))
        .collect();
    let table = Table::new(body, widths)
        .header(header)
        .block(
            Block::default()
                .borders(Borders::TOP)
                .title(format!(" greenlets ({}) ", rows.len())),
        )
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .column_spacing(1);
    let mut state =
        TableState::default().with_selected((!rows.is_empty()).then_some(selected - start));
    f.render_stateful_widget(table, area, &mut state);
}
