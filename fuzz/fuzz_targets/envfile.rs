//! The `backend.env` grammar shared by the supervisor and lk-backend.
//!
//! Every input is used twice: as file text for `parse` (raw mode; the seeds
//! are real `backend.env` files and hand edits), and through
//! `arbitrary::Unstructured` as a list of assignments to render (structured
//! mode).
//!
//! Properties:
//! - `parse` never panics, and what it accepts has valid, unique keys;
//! - parse is a fixed point of render: rendering what was parsed and parsing
//!   that gives the same assignments;
//! - `parse(render(x)) == x` for any assignments with valid, unique keys and
//!   any values (the renderer escapes everything it must);
//! - error messages never hold a value.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use hero_livekit_proto::envfile::{get, parse, render_line};
use libfuzzer_sys::fuzz_target;

fn valid_key(k: &str) -> bool {
    let mut c = k.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

fn render_all(vars: &[(String, String)]) -> String {
    vars.iter().map(|(k, v)| render_line(k, v)).collect()
}

fuzz_target!(|data: &[u8]| {
    // Raw mode.
    if let Ok(text) = std::str::from_utf8(data) {
        match parse(text) {
            Ok(vars) => {
                for (i, (k, v)) in vars.iter().enumerate() {
                    assert!(valid_key(k), "accepted an invalid key {k:?}");
                    assert!(vars[..i].iter().all(|(o, _)| o != k), "accepted {k} twice");
                    assert_eq!(get(&vars, k), Some(v.as_str()));
                }
                let again = parse(&render_all(&vars));
                assert_eq!(again.as_ref(), Ok(&vars), "render of a parsed file parses differently");
            }
            Err(e) => {
                assert!(e.line >= 1, "line numbers are 1-based");
                // The message is a line number and a fixed reason.
                let msg = e.to_string();
                assert_eq!(msg, format!("line {}: {}", e.line, e.reason));
            }
        }
    }

    // Structured mode.
    let mut u = Unstructured::new(data);
    let Ok(pairs) = Vec::<(String, String)>::arbitrary(&mut u) else {
        return;
    };
    let mut vars: Vec<(String, String)> = Vec::new();
    for (k, v) in pairs {
        // Keys the grammar allows; a few fixed ones so that real names and
        // duplicates of them come up often.
        let k = if valid_key(&k) {
            k
        } else {
            ["LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "LIVEKIT_URL", "PORT"][k.len() % 4].to_string()
        };
        if vars.iter().all(|(o, _)| *o != k) {
            vars.push((k, v));
        }
    }
    let text = render_all(&vars);
    match parse(&text) {
        Ok(back) => assert_eq!(back, vars, "parse(render(x)) != x for {text:?}"),
        Err(e) => panic!("a rendered file does not parse: {e} in {text:?}"),
    }
    // A comment and CRLF line ends, as an editor may leave them, mean the same.
    let crlf = format!("# edited\r\n{}", text.replace("\"\n", "\"\r\n"));
    if let Ok(back) = parse(&crlf) {
        assert_eq!(back, vars, "CRLF line ends change the values");
    } else {
        panic!("a rendered file with CRLF line ends does not parse: {crlf:?}");
    }
});
