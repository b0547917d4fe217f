//! Docker's tables: rows padded as Go's tabwriter pads them, JSON lines, names in natural
//! order and cut to width.

use std::cmp::Ordering;

use serde_json::Value;

/// docker's `formatter.TruncateID`: the first 12 characters.
pub(crate) fn truncate_id(id: &str) -> &str {
    match id.char_indices().nth(12) {
        Some((end, _)) => &id[..end],
        None => id,
    }
}

/// A row of a list command (`service ls`, `service ps`, `node ls`).
pub(crate) trait ListRow {
    /// What `-q` prints.
    fn id(&self) -> &str;
    /// The table cells, in the header's order.
    fn cells(&self) -> Vec<String>;
    /// The object `--format json` prints, with docker's field names.
    fn json(&self) -> Value;
}

/// Prints list rows as docker does: IDs only (`-q`), one JSON object per line, or a table.
pub(crate) fn print_rows<Row: ListRow>(rows: &[Row], header: &[&str], quiet: bool, json: bool) {
    if quiet {
        for row in rows {
            println!("{}", row.id());
        }
    } else if json {
        for row in rows {
            println!("{}", row.json());
        }
    } else {
        let cells: Vec<Vec<String>> = rows.iter().map(Row::cells).collect();
        print!("{}", table(header, &cells));
    }
}

/// Lays rows out as docker's tabwriter does (minimum width 10, padding 3); the last column is
/// not padded.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                let width = (widths.get(i).copied().unwrap_or(0) + 3).max(10);
                let pad = width.saturating_sub(cell.chars().count());
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

/// Compares as `sortorder.NaturalLess` does: runs of digits compare by value.
pub(crate) fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let a_len = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let b_len = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (a_digits, b_digits) = (&a[..a_len], &b[..b_len]);
                let a_trimmed = trim_leading_zeros(a_digits);
                let b_trimmed = trim_leading_zeros(b_digits);
                let order = a_trimmed
                    .len()
                    .cmp(&b_trimmed.len())
                    .then_with(|| a_trimmed.cmp(b_trimmed))
                    .then_with(|| a_len.cmp(&b_len));
                if order != Ordering::Equal {
                    return order;
                }
                a = &a[a_len..];
                b = &b[b_len..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

pub(super) fn trim_leading_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|c| **c == b'0').count();
    &digits[zeros..]
}

/// docker's `formatter.Ellipsis`: at most `width` characters, the last one `…` when cut.
pub(crate) fn ellipsis(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// docker's `PrettyPrint`: the first letter upper-cased.
pub(crate) fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
