//! CSV as an auditor opens it: RFC 4180 rows (CRLF line ends, a cell holding a comma, a
//! quote or a line break quoted with its quotes doubled) and cells that a spreadsheet
//! cannot run as a formula.

use std::io::{self, Write};

/// One cell. Text from the outside world (names, reasons, owners) is [`Cell::Text`] and
/// is defused; what keyturn formats itself (numbers, times, booleans) is
/// [`Cell::Value`] and written as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell<'a> {
    Text(&'a str),
    Value(String),
}

impl<'a> From<&'a str> for Cell<'a> {
    fn from(text: &'a str) -> Self {
        Self::Text(text)
    }
}

impl From<u64> for Cell<'_> {
    fn from(value: u64) -> Self {
        Self::Value(value.to_string())
    }
}

impl<'a> From<Option<&'a str>> for Cell<'a> {
    fn from(text: Option<&'a str>) -> Self {
        Self::Text(text.unwrap_or_default())
    }
}

/// Writes one row: the cells joined by commas and a CRLF (RFC 4180 section 2, rules 1, 4
/// to 7).
pub fn write_row(out: &mut dyn Write, cells: &[Cell<'_>]) -> io::Result<()> {
    for (index, cell) in cells.iter().enumerate() {
        if index > 0 {
            out.write_all(b",")?;
        }
        match cell {
            Cell::Text(text) => write_cell(out, &defused(text))?,
            Cell::Value(value) => write_cell(out, value)?,
        }
    }
    out.write_all(b"\r\n")
}

/// The header row: column names are keyturn's own.
pub fn write_header(out: &mut dyn Write, columns: &[&str]) -> io::Result<()> {
    let cells: Vec<Cell<'_>> = columns
        .iter()
        .map(|c| Cell::Value((*c).to_owned()))
        .collect();
    write_row(out, &cells)
}

fn write_cell(out: &mut dyn Write, cell: &str) -> io::Result<()> {
    if cell.contains([',', '"', '\n', '\r']) {
        out.write_all(b"\"")?;
        out.write_all(cell.replace('"', "\"\"").as_bytes())?;
        out.write_all(b"\"")
    } else {
        out.write_all(cell.as_bytes())
    }
}

/// Text a spreadsheet would read as a formula (OWASP "CSV Injection": a cell starting
/// with `=`, `+`, `-`, `@`, a tab or a carriage return) gets a leading `'`, which
/// spreadsheets show as text. A plain number (`-3`) is left alone: it cannot run.
fn defused(text: &str) -> std::borrow::Cow<'_, str> {
    let risky = text.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if risky && !is_plain_number(text) {
        std::borrow::Cow::Owned(format!("'{text}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

fn is_plain_number(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[Cell<'_>]) -> String {
        let mut out = Vec::new();
        write_row(&mut out, cells).expect("in memory");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn cells_with_separators_quotes_or_line_breaks_are_quoted_per_rfc_4180() {
        let line = row(&[
            "plain".into(),
            "a,b".into(),
            "say \"hi\"".into(),
            "two\nlines".into(),
            "cr\rhere".into(),
        ]);
        assert_eq!(
            line,
            "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",\"cr\rhere\"\r\n"
        );
    }

    #[test]
    fn text_a_spreadsheet_would_run_is_prefixed_and_numbers_are_not() {
        let cases = [
            ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"\"http://x\"\")"),
            ("+cmd", "'+cmd"),
            ("-1+2", "'-1+2"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("-42", "-42"),
            ("db-password", "db-password"),
        ];
        for (input, expected) in cases {
            let line = row(&[Cell::Text(input)]);
            let cell = line.trim_end_matches("\r\n");
            let cell = cell
                .strip_prefix('"')
                .and_then(|c| c.strip_suffix('"'))
                .unwrap_or(cell);
            assert_eq!(cell, expected, "{input}");
        }
    }

    #[test]
    fn values_keyturn_formats_are_written_as_they_are() {
        assert_eq!(row(&[Cell::Value("-3".into()), 7u64.into()]), "-3,7\r\n");
    }
}
