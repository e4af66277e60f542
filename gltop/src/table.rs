//! A generic sortable table model: columns with a title, a cell renderer and a sort key.
//! Drawing is in `view::table`; this part is pure and unit-tested.

use std::cmp::Ordering;

/// What a column sorts by.
#[derive(Clone, Debug, PartialEq)]
pub enum SortKey {
    /// A number; NaN sorts as the smallest.
    Num(f64),
    /// Text, compared byte-wise.
    Text(String),
}

impl SortKey {
    fn cmp(&self, other: &SortKey) -> Ordering {
        match (self, other) {
            (SortKey::Num(a), SortKey::Num(b)) => {
                let fix = |v: f64| if v.is_nan() { f64::NEG_INFINITY } else { v };
                fix(*a).total_cmp(&fix(*b))
            }
            (SortKey::Text(a), SortKey::Text(b)) => a.cmp(b),
            (SortKey::Num(_), SortKey::Text(_)) => Ordering::Less,
            (SortKey::Text(_), SortKey::Num(_)) => Ordering::Greater,
        }
    }
}

/// One column of a table of `R`.
pub struct Column<R> {
    /// Header text.
    pub title: &'static str,
    /// Width in cells.
    pub width: u16,
    /// Right-aligned (numbers).
    pub right: bool,
    /// The text of this column's cell for a row.
    pub cell: fn(&R) -> String,
    /// What this column sorts by.
    pub key: fn(&R) -> SortKey,
    /// Whether sorting by this column starts with the largest value (numbers) or the
    /// smallest (names, ids).
    pub descending_first: bool,
}

/// The sort order of a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sort {
    /// Index of the column sorted by.
    pub column: usize,
    /// Largest first.
    pub descending: bool,
}

impl Sort {
    /// Sort by column `column` in its natural direction.
    pub fn by<R>(columns: &[Column<R>], column: usize) -> Sort {
        let column = column.min(columns.len().saturating_sub(1));
        Sort {
            column,
            descending: columns.get(column).is_some_and(|c| c.descending_first),
        }
    }

    /// The next column to the right, wrapping around.
    pub fn next<R>(self, columns: &[Column<R>]) -> Sort {
        Sort::by(columns, (self.column + 1) % columns.len().max(1))
    }

    /// The next column to the left, wrapping around.
    pub fn prev<R>(self, columns: &[Column<R>]) -> Sort {
        let n = columns.len().max(1);
        Sort::by(columns, (self.column + n - 1) % n)
    }

    /// The same column, the other way round.
    pub fn inverted(self) -> Sort {
        Sort {
            descending: !self.descending,
            ..self
        }
    }
}

/// Sorts `rows` by `sort`; rows with equal keys keep their order (sort them by id first).
pub fn sort_rows<R>(rows: &mut [R], columns: &[Column<R>], sort: Sort) {
    let Some(col) = columns.get(sort.column) else {
        return;
    };
    rows.sort_by(|a, b| {
        let o = (col.key)(a).cmp(&(col.key)(b));
        if sort.descending {
            o.reverse()
        } else {
            o
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols() -> Vec<Column<(u32, &'static str, f64)>> {
        vec![
            Column {
                title: "ID",
                width: 4,
                right: true,
                cell: |r| r.0.to_string(),
                key: |r| SortKey::Num(r.0 as f64),
                descending_first: false,
            },
            Column {
                title: "NAME",
                width: 8,
                right: false,
                cell: |r| r.1.to_string(),
                key: |r| SortKey::Text(r.1.to_string()),
                descending_first: false,
            },
            Column {
                title: "CPU",
                width: 6,
                right: true,
                cell: |r| r.2.to_string(),
                key: |r| SortKey::Num(r.2),
                descending_first: true,
            },
        ]
    }

    #[test]
    fn sorts_by_any_column_both_ways() {
        let c = cols();
        let mut rows = vec![
            (2, "b", 0.5),
            (1, "c", f64::NAN),
            (3, "a", 0.9),
            (4, "d", 0.5),
        ];
        let cpu = Sort::by(&c, 2);
        assert!(cpu.descending);
        sort_rows(&mut rows, &c, cpu);
        assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), [3, 2, 4, 1]);
        sort_rows(&mut rows, &c, cpu.inverted());
        // NaN first when ascending; rows with equal keys keep their current order.
        assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 4, 3]);
        let name = Sort::by(&c, 1);
        assert!(!name.descending);
        sort_rows(&mut rows, &c, name);
        assert_eq!(
            rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            ["a", "b", "c", "d"]
        );
    }

    #[test]
    fn column_cycling_wraps() {
        let c = cols();
        let s = Sort::by(&c, 0);
        assert_eq!(s.next(&c).column, 1);
        assert_eq!(s.prev(&c).column, 2);
        assert_eq!(s.next(&c).next(&c).next(&c), s);
        assert_eq!(Sort::by(&c, 99).column, 2);
        assert!(
            s.next(&c).next(&c).descending,
            "numbers start largest first"
        );
    }
}
