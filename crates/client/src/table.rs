//! Aligned tables for the human output. Widths come from the plain text of
//! every cell, and colour is applied after the padding: an escape sequence
//! counted as width (or a cell padded by hand to a guessed width) is what
//! put a column out of line with its header.

use crate::terminal;

/// One cell: its text and, when painted on a terminal, its SGR colour code.
/// The text is cleaned for the terminal ([`terminal::clean`]) as the cell
/// is made: a cell holds one line, and its width is that of what is shown.
pub struct Cell {
    text: String,
    color: Option<&'static str>,
}

impl Cell {
    pub fn plain(text: impl Into<String>) -> Cell {
        Cell {
            text: clean(text.into()),
            color: None,
        }
    }

    pub fn colored(text: impl Into<String>, color: &'static str) -> Cell {
        Cell {
            text: clean(text.into()),
            color: Some(color),
        }
    }
}

fn clean(text: String) -> String {
    match terminal::clean(&text) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(c) => c,
    }
}

impl<T: Into<String>> From<T> for Cell {
    fn from(text: T) -> Cell {
        Cell::plain(text)
    }
}

/// Columns are this many spaces apart.
const GAP: usize = 2;

/// A header and its rows.
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Table {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are blank, extra ones are dropped.
    pub fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }

    /// The header line, then one line per row, in order. `color` paints
    /// the cells that carry a colour.
    pub fn lines(&self, color: bool) -> Vec<String> {
        let widths: Vec<usize> = (0..self.header.len())
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| c.text.chars().count())
                    .chain(std::iter::once(self.header[i].chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let render = |cells: Vec<(&str, Option<&str>)>| {
            let mut line = String::new();
            let last = cells.len().saturating_sub(1);
            for (i, (text, code)) in cells.into_iter().enumerate() {
                match code {
                    Some(code) if color => line.push_str(&format!("\x1b[{code}m{text}\x1b[0m")),
                    _ => line.push_str(text),
                }
                if i < last {
                    let pad = widths[i] - text.chars().count() + GAP;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            line
        };
        let mut out = vec![render(self.header.iter().map(|h| (*h, None)).collect())];
        for r in &self.rows {
            out.push(render(
                (0..self.header.len())
                    .map(|i| r.get(i).map_or(("", None), |c| (c.text.as_str(), c.color)))
                    .collect(),
            ));
        }
        out
    }
}

/// Whether every row of `lines` (a header, then rows) starts each column
/// where the header starts it: the character before is a space and the one
/// there is not (a blank cell aside). Lines that begin with a space (the
/// details printed under a row) are not rows. `Err` names the first line
/// out of place.
#[cfg(test)]
pub fn columns_line_up(lines: &[String]) -> Result<(), String> {
    let Some(header) = lines.first() else {
        return Err("no header".into());
    };
    let starts = column_starts(header);
    for line in lines.iter().skip(1).filter(|l| !l.starts_with(' ') && !l.is_empty()) {
        let chars: Vec<char> = line.chars().collect();
        for &s in starts.iter().skip(1) {
            let before = chars.get(s - 1).copied().unwrap_or(' ');
            let at = chars.get(s).copied().unwrap_or(' ');
            if before != ' ' || at == ' ' && chars.len() > s && !blank_cell(&chars, s) {
                return Err(format!("column at {s} out of line in {line:?} under {header:?}"));
            }
        }
    }
    Ok(())
}

/// Where each header word begins (header words hold no double space).
#[cfg(test)]
fn column_starts(header: &str) -> Vec<usize> {
    let chars: Vec<char> = header.chars().collect();
    (0..chars.len())
        .filter(|&i| chars[i] != ' ' && (i == 0 || (chars[i - 1] == ' ' && i >= 2 && chars[i - 2] == ' ')))
        .collect()
}

/// A cell left blank: only spaces from `at` to the next column's gap.
#[cfg(test)]
fn blank_cell(chars: &[char], at: usize) -> bool {
    chars[at..].iter().take(GAP + 1).all(|c| *c == ' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_does_not_move_a_column() {
        let mut t = Table::new(&["PROCESS", "STATE", "PID"]);
        t.row(vec![
            "livekit-server".into(),
            Cell::colored("running", "32"),
            "41".into(),
        ]);
        t.row(vec!["lk-backend".into(), Cell::colored("failed", "31"), "-".into()]);
        t.row(vec!["x".into(), "backoff".into(), "7".into()]);
        let plain = t.lines(false);
        columns_line_up(&plain).expect("plain table aligned");
        let strip = |l: &String| l.replace("\x1b[32m", "").replace("\x1b[31m", "").replace("\x1b[0m", "");
        let painted: Vec<String> = t.lines(true).iter().map(strip).collect();
        assert_eq!(painted, plain);
    }

    #[test]
    fn the_checker_catches_a_column_one_off() {
        let lines = vec![
            "PROCESS         STATE     PID".to_string(),
            "livekit-server  running  41".to_string(),
        ];
        assert!(columns_line_up(&lines).is_err());
        let lines = vec![
            "PROCESS         STATE     PID".to_string(),
            "livekit-server  running   41".to_string(),
        ];
        columns_line_up(&lines).expect("aligned");
    }
}
