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

/// The width of each column for the rows shown (`cells`: each row's text in every column):
/// its own [`width`], widened to its widest cell in a right-aligned (number) column, since a
/// cut number reads as another number (a Python greenlet's id is its object's address, 15
/// digits or so); a text column (a name) keeps its width and cuts what is longer.
pub fn widths<R>(columns: &[Column<R>], cells: &[Vec<String>]) -> Vec<u16> {
    columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let own = width(c);
            if !c.right {
                return own;
            }
            cells
                .iter()
                .filter_map(|row| row.get(i))
                .map(|t| u16::try_from(t.chars().count()).unwrap_or(u16::MAX))
                .fold(own, u16::max)
        })
        .collect()
}

/// Space between columns.
const SPACING: u16 = 1;

/// The columns shown in `width_cells` cells, each at its full width of `widths`: all when
/// they fit, else without the rightmost ones, but always the first two (id and name) and the
/// sort column.
pub fn shown<R>(columns: &[Column<R>], widths: &[u16], sort: Sort, width_cells: u16) -> Vec<usize> {
    let mut shown: Vec<usize> = (0..columns.len()).collect();
    let total = |shown: &[usize]| -> u32 {
        let cells: u32 = shown.iter().map(|&i| u32::from(widths[i])).sum();
        cells + u32::from(SPACING) * shown.len().saturating_sub(1) as u32
    };
    // The identifying columns stay: every one up to the first text column (the name).
    let kept = columns.iter().position(|c| !c.right).map_or(1, |i| i + 1);
    while total(&shown) > u32::from(width_cells) {
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
    // Only the visible rows are formatted: a table of 100,000 greenlets stays cheap.
    let visible = area.height.saturating_sub(3) as usize;
    let start = selected.saturating_sub(visible.saturating_sub(1));
    let cells: Vec<Vec<String>> = rows
        .iter()
        .skip(start)
        .take(visible.max(1))
        .map(|r| columns.iter().map(|c| (c.cell)(r)).collect())
        .collect();
    let fitted = widths(columns, &cells);
    let cols = shown(columns, &fitted, sort, area.width);
    let header = Row::new(
        cols.iter()
            .map(|&i| aligned(title(columns, sort, i), columns[i].right)),
    )
    .style(Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    let body = cells.into_iter().map(|mut row| {
        Row::new(
            cols.iter()
                .map(|&i| aligned(std::mem::take(&mut row[i]), columns[i].right))
                .collect::<Vec<_>>(),
        )
    });
    let widths: Vec<Constraint> = cols
        .iter()
        .map(|&i| Constraint::Length(fitted[i]))
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
        let own: Vec<u16> = cols.iter().map(width).collect();
        let full: u16 = own.iter().sum::<u16>() + cols.len() as u16 - 1;
        let cpu = Sort::by(&cols, cpu_column);
        assert_eq!(shown(&cols, &own, cpu, full), all);
        let narrow = shown(&cols, &own, cpu, 80);
        assert!(narrow.len() < cols.len() && narrow.contains(&cpu_column));
        assert_eq!(narrow, (0..narrow.len()).collect::<Vec<_>>(), "a prefix");
        let last = Sort::by(&cols, cols.len() - 1);
        let narrow = shown(&cols, &own, last, 80);
        assert_eq!(narrow.last(), Some(&(cols.len() - 1)), "{narrow:?}");
        let used: u16 =
            narrow.iter().map(|&i| width(&cols[i])).sum::<u16>() + narrow.len() as u16 - 1;
        assert!(used <= 80, "{used}");
        assert_eq!(
            shown(&cols, &own, cpu, 10),
            [0, 1, cpu_column],
            "never fewer"
        );
    }

    #[test]
    fn following_puts_the_process_first_and_keeps_it_on_narrow_screens() {
        let cols = columns(true);
        assert_eq!(
            cols.iter().take(3).map(|c| c.title).collect::<Vec<_>>(),
            ["PID", "ID", "NAME"]
        );
        let own: Vec<u16> = cols.iter().map(width).collect();
        let cpu = Sort::by(&cols, cpu_column(&cols));
        assert_eq!(shown(&cols, &own, cpu, 10), [0, 1, 2, cpu_column(&cols)]);
    }

    /// A Python greenlet's row: its id and its parent's are object addresses.
    fn python_row(id: u64, parent: u64, name: &str) -> AppRow {
        use gltop::loader::{GreenletStats, State, HIST_BUCKETS};
        AppRow {
            g: GreenletStats {
                id,
                pid: 4242,
                name: name.into(),
                seen_new: true,
                parent: Some(parent),
                state: State::Suspended,
                ended: false,
                outcome: None,
                tid: 4242,
                created_ns: Some(1),
                dead_ns: None,
                running_since_ns: None,
                switches_in: 3,
                switches_out: 3,
                throws_in: 0,
                throws_out: 0,
                on_cpu_ns: 0,
                max_slice_ns: 0,
                slices: 3,
                hist: vec![0; HIST_BUCKETS].into(),
            },
            rates: None,
            on_cpu_ns: 0,
            max_slice_ns: 0,
            s: None,
            exited: false,
        }
    }

    const PY_ID: u64 = 140_234_567_890_123;
    const PY_PARENT: u64 = 140_234_500_000_008;

    fn cells(cols: &[Column<AppRow>], rows: &[AppRow]) -> Vec<Vec<String>> {
        rows.iter()
            .map(|r| cols.iter().map(|c| (c.cell)(r)).collect())
            .collect()
    }

    #[test]
    fn number_columns_widen_to_their_widest_cell_and_names_do_not() {
        let cols = columns(false);
        let own: Vec<u16> = cols.iter().map(width).collect();
        let at = |t: &str| cols.iter().position(|c| c.title == t).unwrap();
        let (id, name, parent) = (at("ID"), at("NAME"), at("PARENT"));
        // Rust greenlet ids fit: the widths are the columns' own.
        let rust = python_row(12, 1, "worker");
        assert_eq!(widths(&cols, &cells(&cols, &[rust])), own);
        let long = "gevent._gevent_cgreenlet.Greenlet";
        let rows = [python_row(PY_ID, PY_PARENT, long), python_row(3, 1, "main")];
        let w = widths(&cols, &cells(&cols, &rows));
        assert_eq!(w[id], 15, "{PY_ID} in full");
        assert_eq!(w[parent], 15);
        assert_eq!(w[name], own[name], "a name is cut, not widened for");
        for (i, (&w, &o)) in w.iter().zip(&own).enumerate() {
            if i != id && i != parent {
                assert_eq!(w, o, "{}", cols[i].title);
            }
        }
        // The wider columns count when choosing what fits: fewer columns in 80 cells.
        let cpu = Sort::by(&cols, cpu_column(&cols));
        assert!(shown(&cols, &w, cpu, 80).len() < shown(&cols, &own, cpu, 80).len());
    }

    #[test]
    fn a_python_greenlets_id_and_parent_are_drawn_in_full() {
        use ratatui::backend::TestBackend;
        use ratatui::Terminal;
        let cols = columns(false);
        let rows = [python_row(PY_ID, PY_PARENT, "Worker")];
        let mut term = Terminal::new(TestBackend::new(120, 6)).unwrap();
        let sort = Sort::by(&cols, cpu_column(&cols));
        term.draw(|f| draw(f, f.area(), &cols, &rows, sort, 0))
            .unwrap();
        let buf = term.backend().buffer();
        let line = |y: u16| -> String {
            (0..buf.area.width)
                .map(|x| buf[(x, y)].symbol().to_string())
                .collect()
        };
        let row = (0..buf.area.height)
            .map(line)
            .find(|l| l.contains("Worker"))
            .unwrap_or_else(|| panic!("no row drawn: {buf:?}"));
        let words: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            &words[..3],
            [PY_ID.to_string(), "Worker".into(), PY_PARENT.to_string()],
            "{row:?}"
        );
    }
}
