//! What reaches the operator's terminal. Every string the daemon (or
//! lk-backend, or a log file) supplies is outside text: a heartbeat in
//! Redis, a child's log line, a path quoted in an error. Printed raw, a
//! `\x1b[2J` in it clears the screen, a `\x1b]0;...\x07` retitles the
//! window, a `\n` forges a row, a U+202E reverses what follows. So:
//!
//! - Human output: [`clean`] (fields) and [`clean_log_line`] (log lines)
//!   replace each control or format character with a visible escape,
//!   `\u{1b}` for ESC, `\u{202e}` for a right-to-left override: the
//!   operator sees that a character was there and which one, and the
//!   escape cannot pass for the text around it. The classes: C0 controls
//!   (a tab is kept in log lines and shown as a space elsewhere), DEL, C1
//!   controls (U+0080-U+009F), and the characters that reorder or hide
//!   text without being visible (Unicode category Cf: bidi controls,
//!   zero-width characters, BOM, soft hyphen, tags; Zl and Zp: U+2028,
//!   U+2029). Every other character, `é` or `中` or an emoji, is kept.
//!   [`cleaned`] applies [`clean`] to every string of a result (map keys
//!   included) before it is laid out, so no field is missed.
//! - `--json`: [`json_text`]; serde escapes C0 controls already, and DEL,
//!   C1 and format characters are written as `\uXXXX` too: the same JSON
//!   value, and nothing in it a terminal acts on.
//! - Last: [`guard`] on every line the CLI writes, which lets through only
//!   the colour codes the CLI adds itself (`ESC [ digits m`), new lines and
//!   tabs.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Whether `c` would act on a terminal or change how the text around it
/// displays, rather than show as itself: C0, DEL, C1, Cf, Zl, Zp.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c.general_category(),
            GeneralCategory::Format | GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator
        )
}

/// A field from outside, for human output: every control and format
/// character as a visible escape (`\u{1b}`), a tab as a space.
pub fn clean(s: &str) -> Cow<'_, str> {
    replace(s, |c, out| {
        if c == '\t' {
            out.push(' ');
        } else {
            escape(c, out);
        }
    })
}

/// A log line, for human output: as [`clean`], but a tab stays a tab
/// (log lines are aligned with them).
pub fn clean_log_line(s: &str) -> Cow<'_, str> {
    replace(s, |c, out| {
        if c == '\t' {
            out.push('\t');
        } else {
            escape(c, out);
        }
    })
}

/// Outside text that may hold several lines (an error message, a hint):
/// each line cleaned, the lines after the first indented by two spaces, so
/// that a line break in the text can start neither an `error:` nor a
/// `hint:` line of its own.
pub fn clean_lines(s: &str) -> String {
    s.split('\n').map(clean).collect::<Vec<_>>().join("\n  ")
}

fn replace(s: &str, mut with: impl FnMut(char, &mut String)) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_unsafe(c) {
            with(c, &mut out);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn escape(c: char, out: &mut String) {
    // `{:x}` of a u32 cannot fail to write into a String.
    let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
}

/// Every string in `v`, object keys included, through [`clean`].
pub fn clean_value(v: &mut Value) {
    match v {
        Value::String(s) => {
            if let Cow::Owned(c) = clean(s) {
                *s = c;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(clean_value),
        Value::Object(o) => {
            let entries = std::mem::take(o);
            for (k, mut val) in entries {
                clean_value(&mut val);
                o.insert(clean(&k).into_owned(), val);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// A copy of a result with every string in it through [`clean`]: what the
/// human layouts print. `Err` holds the cleaned document when the copy does
/// not read back as its type (a cleaned string that no longer parses as an
/// enum of the wire, say); the caller then prints that document.
pub fn cleaned<T: Serialize + DeserializeOwned>(v: &T) -> Result<T, Value> {
    let mut doc = serde_json::to_value(v).unwrap_or(Value::Null);
    clean_value(&mut doc);
    serde_json::from_value(doc.clone()).map_err(|_| doc)
}

/// `v` as JSON text (`pretty` or one line) with nothing a terminal acts on:
/// serde escapes C0 controls, and DEL, C1 and format characters, which it
/// writes as they are, are written as `\uXXXX` (a UTF-16 pair above the
/// BMP). Such characters can only be inside strings (JSON's own syntax is
/// ASCII), where the escape means the same character.
///
/// # Errors
/// `v` cannot be encoded as JSON (a map with non-string keys).
pub fn json_text<T: Serialize + ?Sized>(v: &T, pretty: bool) -> serde_json::Result<String> {
    let s = if pretty {
        serde_json::to_string_pretty(v)?
    } else {
        serde_json::to_string(v)?
    };
    // Below DEL: serde's escapes in strings, the pretty layout's new lines
    // outside them.
    let left = |c: char| c >= '\u{7f}' && is_unsafe(c);
    if !s.chars().any(left) {
        return Ok(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if left(c) {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{u:04x}");
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// A line the CLI is about to write: the colour codes it adds itself
/// (`ESC [` digits and `;` `m`), new lines and tabs pass; any other control
/// or format character, which only outside text that skipped the cleaning
/// can hold, is escaped as [`clean`] does.
pub fn guard(s: &str) -> Cow<'_, str> {
    let chars: Vec<char> = s.chars().collect();
    let sgr_end = |i: usize| -> Option<usize> {
        if chars.get(i + 1) != Some(&'[') {
            return None;
        }
        let mut j = i + 2;
        while chars.get(j).is_some_and(|c| c.is_ascii_digit() || *c == ';') {
            j += 1;
        }
        (chars.get(j) == Some(&'m')).then_some(j)
    };
    let needs = chars
        .iter()
        .enumerate()
        .any(|(i, &c)| is_unsafe(c) && c != '\n' && c != '\t' && !(c == '\x1b' && sgr_end(i).is_some()));
    if !needs {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\n' | '\t' => out.push(c),
            '\x1b' if sgr_end(i).is_some() => {
                let end = sgr_end(i).unwrap_or(i);
                out.extend(&chars[i..=end]);
                i = end;
            }
            c if is_unsafe(c) => escape(c, &mut out),
            c => out.push(c),
        }
        i += 1;
    }
    Cow::Owned(out)
}

/// Turns the bytes of a log file into text for the terminal, line by line
/// as [`clean_log_line`] does (new lines kept). A UTF-8 sequence cut at the
/// end of a read is kept for the next one; invalid bytes show as U+FFFD.
#[derive(Default)]
pub struct LogStream {
    pending: Vec<u8>,
}

impl LogStream {
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let whole = complete_prefix(&self.pending);
        let rest = self.pending.split_off(whole);
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending = rest;
        text.split('\n').map(clean_log_line).collect::<Vec<_>>().join("\n")
    }
}

/// How many bytes of `b` to decode now: all of them, unless its last
/// character is a UTF-8 sequence cut short (a lead byte followed by fewer
/// continuation bytes than it announces), which waits for the next read.
fn complete_prefix(b: &[u8]) -> usize {
    let n = b.len();
    for back in 1..=n.min(4) {
        let byte = b[n - back];
        if byte & 0xc0 != 0x80 {
            let need = match byte {
                0xc0..=0xdf => 2,
                0xe0..=0xef => 3,
                0xf0..=0xf7 => 4,
                _ => 1,
            };
            return if need > back { n - back } else { n };
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No byte a terminal acts on: nothing below 0x20 but `\n` (and `\t`
    /// when `tab`), no DEL, no C1, no format character.
    fn inert(s: &str, tab: bool) -> bool {
        s.chars().all(|c| c == '\n' || (tab && c == '\t') || !is_unsafe(c))
    }

    #[test]
    fn each_class_is_escaped_visibly() {
        let cases = [
            ("\x1b[2J", "\\u{1b}[2J"),
            ("\x1b]0;owned\x07", "\\u{1b}]0;owned\\u{7}"),
            ("a\0b", "a\\u{0}b"),
            ("row\nforged", "row\\u{a}forged"),
            ("cr\rover", "cr\\u{d}over"),
            ("del\x7f", "del\\u{7f}"),
            ("c1 \u{9b}2J \u{85}", "c1 \\u{9b}2J \\u{85}"),
            ("admin\u{202e}gnp.exe", "admin\\u{202e}gnp.exe"),
            ("zw\u{200b}sp\u{200d}j\u{feff}", "zw\\u{200b}sp\\u{200d}j\\u{feff}"),
            ("ls\u{2028}ps\u{2029}", "ls\\u{2028}ps\\u{2029}"),
            ("iso\u{2066}x\u{2069}", "iso\\u{2066}x\\u{2069}"),
            ("shy\u{ad} tag\u{e0001}", "shy\\u{ad} tag\\u{e0001}"),
        ];
        for (raw, shown) in cases {
            assert_eq!(clean(raw), shown, "{raw:?}");
            assert_eq!(clean_log_line(raw), shown, "{raw:?}");
            assert!(inert(&clean(raw), false), "{raw:?}");
        }
    }

    #[test]
    fn a_tab_is_a_space_in_a_field_and_stays_in_a_log_line() {
        assert_eq!(clean("a\tb"), "a b");
        assert_eq!(clean_log_line("a\tb"), "a\tb");
    }

    #[test]
    fn printable_text_passes_unchanged() {
        for s in [
            "ws://10.0.0.1:7880",
            "café é ß Ж عربي 中文 日本語 한국어 😀",
            "\u{a0}nbsp \u{301}combining",
            "quotes \" ' \\ backslash",
            "",
        ] {
            assert!(matches!(clean(s), Cow::Borrowed(_)), "{s:?}");
            assert!(matches!(clean_log_line(s), Cow::Borrowed(_)), "{s:?}");
            assert!(matches!(guard(s), Cow::Borrowed(_)), "{s:?}");
        }
    }

    #[test]
    fn cleaning_twice_changes_nothing_more() {
        let once = clean("x\x1b[31m\u{202e}\t\u{9b}").into_owned();
        assert_eq!(clean(&once), once);
        assert_eq!(guard(&once), once);
    }

    #[test]
    fn the_guard_keeps_only_the_clis_own_colours() {
        assert_eq!(guard("\x1b[32mok\x1b[0m\n"), "\x1b[32mok\x1b[0m\n");
        assert_eq!(guard("\x1b[1;31mx\x1b[m"), "\x1b[1;31mx\x1b[m");
        assert_eq!(guard("\x1b[2J"), "\\u{1b}[2J");
        assert_eq!(guard("\x1b]0;t\x07"), "\\u{1b}]0;t\\u{7}");
        assert_eq!(guard("a\tb\u{202e}\r"), "a\tb\\u{202e}\\u{d}");
        assert_eq!(guard("\x1b"), "\\u{1b}");
        assert_eq!(guard("\x1b["), "\\u{1b}[");
    }

    #[test]
    fn lines_after_the_first_are_indented() {
        assert_eq!(clean_lines("bad\nhint: forged\x1b[2J"), "bad\n  hint: forged\\u{1b}[2J");
    }

    #[test]
    fn a_document_is_cleaned_in_every_string_and_key() {
        let mut v = serde_json::json!({
            "a\x1b": ["x\u{202e}", 1, true, null, {"k": "é\x07"}],
        });
        clean_value(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"a\\u{1b}": ["x\\u{202e}", 1, true, null, {"k": "é\\u{7}"}]})
        );
    }

    #[test]
    fn a_wire_result_reads_back_cleaned() {
        use hero_livekit_client::wire as proto;
        let c = proto::ClusterHealth {
            name: Some("media".into()),
            state: proto::ClusterState::Joined,
            generation: 3,
            node_id: Some("a".into()),
            nodes: vec![proto::ClusterNode {
                id: "evil\x1b[2J".into(),
                generation: 999,
                livekit_url: "ws://中\u{202e}:1".into(),
                last_seen_ms: 0,
            }],
            error: Some("redis said \x1b]0;x\x07".into()),
        };
        let c = cleaned(&c).expect("reads back");
        assert_eq!(c.nodes[0].id, "evil\\u{1b}[2J");
        assert_eq!(c.nodes[0].livekit_url, "ws://中\\u{202e}:1");
        assert_eq!(c.error.as_deref(), Some("redis said \\u{1b}]0;x\\u{7}"));
        assert_eq!(c.state, proto::ClusterState::Joined);
    }

    #[test]
    fn an_event_reads_back_cleaned() {
        use hero_livekit_client::wire::{Event, EventMessage};
        let m = EventMessage {
            seq: 7,
            unix_ms: 1,
            event: Event::TokenChainFailed {
                error: "401 \x1b[2Jinvalid\u{2028}key".into(),
            },
        };
        let m = cleaned(&m).expect("reads back");
        assert_eq!(m.seq, 7);
        assert!(matches!(
            m.event,
            Event::TokenChainFailed { ref error } if error == "401 \\u{1b}[2Jinvalid\\u{2028}key"
        ));
    }

    #[test]
    fn json_escapes_what_serde_leaves_and_keeps_the_value() {
        let v = serde_json::json!({
            "s": "\x1b[2J \u{7f} \u{9b} \u{202e} \u{2028} \u{e0001} é 中 😀 \t\n",
        });
        for pretty in [false, true] {
            let text = json_text(&v, pretty).expect("encodes");
            assert!(inert(&text, false), "{text:?}");
            assert_eq!(text.contains('\n'), pretty);
            assert!(text.contains("é 中 😀"), "{text}");
            assert!(text.contains("\\u007f") && text.contains("\\u202e") && text.contains("\\udb40\\udc01"));
            let back: Value = serde_json::from_str(&text).expect("still JSON");
            assert_eq!(back, v);
        }
    }

    #[test]
    fn a_log_stream_waits_for_a_cut_character() {
        let mut s = LogStream::default();
        let bytes = "é\x1b[2J\t中\n".as_bytes();
        // Cut inside `中` (3 bytes).
        let cut = bytes.len() - 2;
        let first = s.push(&bytes[..cut]);
        let second = s.push(&bytes[cut..]);
        assert_eq!(format!("{first}{second}"), "é\\u{1b}[2J\t中\n");
        assert!(inert(&first, true) && inert(&second, true));
        assert_eq!(s.push(b"\xff\n"), "\u{fffd}\n");
        // An invalid byte before a cut character: the character still whole.
        let cut = "中".as_bytes();
        let first = s.push(&[b'a', 0xff, cut[0]]);
        assert_eq!(format!("{first}{}", s.push(&cut[1..])), "a\u{fffd}中");
    }
}
