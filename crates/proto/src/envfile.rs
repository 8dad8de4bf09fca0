//! The `backend.env` format, shared by the supervisor (which renders and
//! checks it) and lk-backend (which reads it), so the two can never read the
//! same bytes differently.
//!
//! Grammar, one assignment per line (LF or CRLF):
//! - blank lines and lines whose first non-blank character is `#` are ignored;
//! - an optional `export ` prefix;
//! - `KEY=value` where KEY is `[A-Za-z_][A-Za-z0-9_]*`;
//! - value unquoted (taken verbatim up to the end of the line, trailing
//!   blanks trimmed), single-quoted (verbatim), or double-quoted with the
//!   escapes `\\`, `\"`, `\$`, `\n`, `` \` ``.
//!
//! [`render_line`] always writes the double-quoted form.

use std::fmt;

/// A line that does not follow the grammar. Never carries the line's value,
/// because values may be secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFileError {
    /// 1-based line number.
    pub line: usize,
    pub reason: &'static str,
}

impl fmt::Display for EnvFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for EnvFileError {}

/// Parses an env file into its assignments, in file order. A key assigned
/// twice is an error: which one wins differs between readers (shells, docker,
/// dotenv), so the file would mean different things to different tools.
///
/// # Errors
/// The first line that breaks the grammar, or a duplicate key.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, EnvFileError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line_no = i + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let body = trimmed.strip_prefix("export ").map(str::trim_start).unwrap_or(trimmed);
        let err = |reason| EnvFileError { line: line_no, reason };
        let (key, rest) = body.split_once('=').ok_or(err("expected KEY=value"))?;
        if !is_valid_key(key) {
            return Err(err("invalid variable name"));
        }
        let value = parse_value(rest).map_err(err)?;
        if out.iter().any(|(k, _)| k == key) {
            return Err(err("variable assigned twice"));
        }
        out.push((key.to_string(), value));
    }
    Ok(out)
}

fn is_valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(rest: &str) -> Result<String, &'static str> {
    if let Some(inner) = rest.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = inner.chars();
        loop {
            match chars.next() {
                None => return Err("unterminated double quote"),
                Some('"') => break,
                Some('\\') => match chars.next() {
                    Some('\\') => out.push('\\'),
                    Some('"') => out.push('"'),
                    Some('$') => out.push('$'),
                    Some('`') => out.push('`'),
                    Some('n') => out.push('\n'),
                    _ => return Err("unknown escape in double quotes"),
                },
                Some(c) => out.push(c),
            }
        }
        let tail = chars.as_str().trim();
        if !tail.is_empty() && !tail.starts_with('#') {
            return Err("text after closing quote");
        }
        Ok(out)
    } else if let Some(inner) = rest.strip_prefix('\'') {
        let (value, tail) = inner.split_once('\'').ok_or("unterminated single quote")?;
        let tail = tail.trim();
        if !tail.is_empty() && !tail.starts_with('#') {
            return Err("text after closing quote");
        }
        Ok(value.to_string())
    } else {
        let value = rest.trim_end();
        if value.contains(['"', '\'', '\\', '`']) {
            return Err("quote or backslash in unquoted value");
        }
        Ok(value.to_string())
    }
}

/// Renders one `KEY="value"\n` line that [`parse`] reads back to exactly
/// `value`, and that a POSIX shell's `.` would read the same way.
pub fn render_line(key: &str, value: &str) -> String {
    let mut out = String::with_capacity(key.len() + value.len() + 4);
    out.push_str(key);
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '$' => out.push_str("\\$"),
            '`' => out.push_str("\\`"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push_str("\"\n");
    out
}

/// Looks a key up in parsed assignments.
pub fn get<'a>(vars: &'a [(String, String)], key: &str) -> Option<&'a str> {
    vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_lines_parse_back_exactly() {
        for v in [
            "plain",
            "with space",
            "q\"uote",
            "back\\slash",
            "$HOME",
            "a`b`",
            "multi\nline",
            "",
        ] {
            let text = render_line("K", v);
            assert_eq!(parse(&text).expect("parses"), vec![("K".to_string(), v.to_string())]);
        }
    }

    #[test]
    fn comments_blank_lines_export_and_crlf_are_read() {
        let text = "# c\r\n\r\nexport A=1\r\nB=\"two\" # note\nC='x y'\n";
        let vars = parse(text).expect("parses");
        assert_eq!(get(&vars, "A"), Some("1"));
        assert_eq!(get(&vars, "B"), Some("two"));
        assert_eq!(get(&vars, "C"), Some("x y"));
    }

    #[test]
    fn malformed_lines_are_refused_with_their_number() {
        assert_eq!(parse("A=1\nnot an assignment\n").expect_err("bad").line, 2);
        assert_eq!(
            parse("A=\"open\n").expect_err("bad").reason,
            "unterminated double quote"
        );
        assert_eq!(parse("A=1\nA=2\n").expect_err("dup").reason, "variable assigned twice");
        assert_eq!(parse("1A=1\n").expect_err("key").reason, "invalid variable name");
        assert!(parse("A=\"x\" y\n").is_err());
    }

    #[test]
    fn errors_never_echo_the_value() {
        let e = parse("SECRET=\"abc\\q\"\n").expect_err("bad escape");
        assert!(!e.to_string().contains("abc"));
    }
}
