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

/// The width of column `c`: its own, or its title and a sort marker if they are wider, so
/// that the marker never cuts the title.
pub fn width<R>(c: &Column<R>) -> u16 {
    c.width.max(c.title.chars().count() as u16 + 1)
}

/// Space between columns.
const SPACING: u16 = 1;

/// The columns shown in `width` cells, each at its full [`width`]: all when they fit, else
/// without the rightmost ones, but always the first two (id and name) and the sort column.
pub fn shown<R>(columns: &[Column<R>], sort: Sort, width_cells: u16) -> Vec<usize> {
    let mut shown: Vec<usize> = (0..columns.len()).collect();
    let total = |shown: &[usize]| -> u16 {
        let cells: u16 = shown.iter().map(|&i| width(&columns[i])).sum();
        cells + SPACING * shown.len().saturating_sub(1) as u16
    };
    // The identifying columns stay: every one up to the first text column (the name).
    let kept = columns.iter().position(|c| !c.right).map_or(1, |i| i + 1);
    while total(&shown) > width_cells {
        let Some(pos) = shown.iter().rposition(|&i| i >= kept && i != sort.column) else {
            break;
        };
        shown.remove(pos);
    }
    shown
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
    let cols = shown(columns, sort, area.width);
    let header = Row::new(
        cols.iter()
            .map(|&i| aligned(title(columns, sort, i), columns[i].right)),
    )
    .style(Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    // Only the visible rows are formatted: a table of 100,000 greenlets stays cheap.
    let visible = area.height.saturating_sub(3) as usize;
    let start = selected.saturating_sub(visible.saturating_sub(1));
    let body = rows.iter().skip(start).take(visible.max(1)).map(|r| {
        Row::new(cols.iter().map(|&i| {
            let c = &columns[i];
            aligned((c.cell)(r), c.right)
        }))
    });
    let widths: Vec<Constraint> = cols
        .iter()
        .map(|&i| Constraint::Length(width(&columns[i])))
        .collect();
    let table = Table::new(body, widths)
        .header(header)
        .block(
            Block::default()
                .borders(Borders::TOP)
                .title(format!(" greenlets ({}) ", rows.len())),
        )
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .column_spacing(SPACING);
    let mut state =
        TableState::default().with_selected((!rows.is_empty()).then_some(selected - start));
    f.render_stateful_widget(table, area, &mut state);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::{columns, cpu_column, Row as AppRow};

    fn titles(cols: &[Column<AppRow>], sort: Sort) -> Vec<String> {
        (0..cols.len()).map(|i| title(cols, sort, i)).collect()
    }

    #[test]
    fn every_title_fits_its_column_with_the_marker() {
        let cols = columns(true);
        for i in 0..cols.len() {
            let sort = Sort::by(&cols, i);
            for sort in [sort, sort.inverted()] {
                let t = &titles(&cols, sort)[i];
                assert!(
                    t.chars().count() <= width(&cols[i]) as usize,
                    "{t:?} is wider than its column ({})",
                    width(&cols[i])
                );
            }
        }
    }

    #[test]
    fn narrow_screens_drop_whole_columns_from_the_right_but_not_the_sort_column() {
        let cols = columns(false);
        let cpu_column = cpu_column(&cols);
        let all: Vec<usize> = (0..cols.len()).collect();
        let full: u16 = cols.iter().map(width).sum::<u16>() + cols.len() as u16 - 1;
        let cpu = Sort::by(&cols, cpu_column);
        assert_eq!(shown(&cols, cpu, full), all);
        let narrow = shown(&cols, cpu, 80);
        assert!(narrow.len() < cols.len() && narrow.contains(&cpu_column));
        assert_eq!(narrow, (0..narrow.len()).collect::<Vec<_>>(), "a prefix");
        let last = Sort::by(&cols, cols.len() - 1);
        let narrow = shown(&cols, last, 80);
        assert_eq!(narrow.last(), Some(&(cols.len() - 1)), "{narrow:?}");
        let used: u16 =
            narrow.iter().map(|&i| width(&cols[i])).sum::<u16>() + narrow.len() as u16 - 1;
        assert!(used <= 80, "{used}");
        assert_eq!(shown(&cols, cpu, 10), [0, 1, cpu_column], "never fewer");
    }

    #[test]
    fn following_puts_the_process_first_and_keeps_it_on_narrow_screens() {
        let cols = columns(true);
        assert_eq!(
            cols.iter().take(3).map(|c| c.title).collect::<Vec<_>>(),
            ["PID", "ID", "NAME"]
        );
        let cpu = Sort::by(&cols, cpu_column(&cols));
        assert_eq!(shown(&cols, cpu, 10), [0, 1, 2, cpu_column(&cols)]);
    }
}
