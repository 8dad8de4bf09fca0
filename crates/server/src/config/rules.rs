//! The leaf of `config`: the error every rule returns, and the one meaning
//! of "given" that every `configure` field follows (SPEC section 5).
//!
//! An absent or empty value keeps the current one. Anything else is input
//! and is either taken or refused, never dropped: a template left unfilled
//! (`<...>`, `${...}`) is refused in every field, since no value of any
//! field looks like one; a placeholder word (`changeme`, `secret`,
//! `xxxx...`) is refused only for the credential (by its own rules), since
//! a Redis or Prometheus password may really be `secret`.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A value that may not be written. Maps to JSON-RPC -32602 with `field`.
/// Never carries the offending value, which may be a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct ValidationError {
    /// The parameter name (a configure field, or `unset`).
    pub field: &'static str,
    /// The rule the value breaks, as a sentence fragment.
    pub rule: String,
}

impl ValidationError {
    pub(crate) fn new(field: &'static str, rule: impl Into<String>) -> ValidationError {
        ValidationError {
            field,
            rule: rule.into(),
        }
    }
}

/// Why a template is refused, for every field alike.
pub(crate) const TEMPLATE_RULE: &str =
    "is a template left unfilled (`<...>` or `${...}`); put in the real value, or leave it empty to keep the current one";

/// Words that templates and tutorials leave where a real value belongs.
const PLACEHOLDER_WORDS: &[&str] = &[
    "secret",
    "devkey",
    "changeme",
    "change-me",
    "change_me",
    "changethis",
    "apikey",
    "api_key",
    "api-key",
    "apisecret",
    "api_secret",
    "api-secret",
    "todo",
    "tbd",
    "fixme",
    "placeholder",
    "example",
    "none",
    "null",
];

/// Whether `value` holds a template left unfilled: a `<` closed by a later
/// `>`, or a `${`.
pub fn is_template(value: &str) -> bool {
    let angle = value.find('<').is_some_and(|open| value[open..].contains('>'));
    angle || value.contains("${")
}

/// Whether `value` is a word that templates and tutorials leave where a
/// real value belongs (`secret`, `devkey`, `changeme`, `your-api-key`, a
/// run of `x`). Case-insensitive.
pub fn is_placeholder_word(value: &str) -> bool {
    let lower = value.trim().to_ascii_lowercase();
    PLACEHOLDER_WORDS.contains(&lower.as_str())
        || lower.starts_with("your-")
        || lower.starts_with("your_")
        || (lower.len() >= 3 && lower.bytes().all(|b| b == b'x'))
}

/// Whether `value` is empty or blank: the spelling of "keep the current
/// value".
pub fn is_empty(value: &str) -> bool {
    value.trim().is_empty()
}

/// A string parameter as given: `None` when absent or empty (keep the
/// current value), else the value, to be checked by the field's own rule.
///
/// # Errors
/// A template left unfilled, naming `field`.
pub(crate) fn given<'a>(field: &'static str, v: Option<&'a str>) -> Result<Option<&'a str>, ValidationError> {
    match v {
        None => Ok(None),
        Some(s) if is_empty(s) => Ok(None),
        Some(s) if is_template(s) => Err(ValidationError::new(field, TEMPLATE_RULE)),
        Some(s) => Ok(Some(s)),
    }
}

/// A list parameter as given: `None` when absent or empty (keep), else the
/// entries. An empty entry in a non-empty list is the entry's own rule's to
/// refuse.
///
/// # Errors
/// An entry that is a template left unfilled, naming `field`.
pub(crate) fn given_list<'a>(
    field: &'static str,
    v: Option<&'a [String]>,
) -> Result<Option<&'a [String]>, ValidationError> {
    match v {
        None => Ok(None),
        Some([]) => Ok(None),
        Some(l) if l.iter().any(|s| is_template(s)) => Err(ValidationError::new(field, TEMPLATE_RULE)),
        Some(l) => Ok(Some(l)),
    }
}

/// Refuses a template in one string of a structured value (a TURN server's
/// host or credential).
///
/// # Errors
/// A template left unfilled, naming `field`.
pub(crate) fn no_template(field: &'static str, s: &str) -> Result<(), ValidationError> {
    if is_template(s) {
        Err(ValidationError::new(field, TEMPLATE_RULE))
    } else {
        Ok(())
    }
}

/// The parameters in their wire form, for asking [`given_in`] by name.
pub(crate) fn wire(p: &hero_livekit_proto::ConfigureParams) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(p) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    }
}

/// Whether the parameter `field` gives a value, by the one rule: absent,
/// `null`, an empty or blank string and an empty list keep the current
/// value; anything else is given.
pub(crate) fn given_in(wire: &serde_json::Map<String, serde_json::Value>, field: &str) -> bool {
    use serde_json::Value;
    match wire.get(field) {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !is_empty(s),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    }
}

/// Appends `s` as a JSON string literal. Control characters, and the
/// characters YAML refuses raw (BOM, non-characters) or treats as line
/// breaks in some versions (U+2028/2029), are escaped, so the literal is
/// also a valid YAML double-quoted scalar with the same value.
pub(crate) fn push_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}') => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Whether `host` is an RFC 1123 hostname: labels of 1-63 `[A-Za-z0-9-]`
/// not starting or ending with `-`, at most 253 characters, and not an
/// all-numeric dotted name that is no valid IPv4 address (`1.2.3`).
pub(crate) fn is_hostname(host: &str) -> bool {
    if host.is_empty() || host.len() > 253 {
        return false;
    }
    let labels_ok = host.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    let all_numeric = host.split('.').all(|l| l.bytes().all(|b| b.is_ascii_digit()));
    labels_ok && !all_numeric
}

/// A `host:port` Redis address given as `field` (the address, a sentinel's
/// or a cluster node's).
///
/// # Errors
/// The rule broken, naming `field`.
pub(crate) fn check_address(field: &'static str, address: &str) -> Result<(), ValidationError> {
    let bad = || ValidationError::new(field, "must be host:port (IPv6 as [addr]:port) with port 1-65535");
    let (host_ok, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, port) = rest.split_once("]:").ok_or_else(bad)?;
        (host.parse::<Ipv6Addr>().is_ok(), port)
    } else {
        let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
        (host.parse::<Ipv4Addr>().is_ok() || is_hostname(host), port)
    };
    let port_ok =
        !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok_and(|p| p != 0);
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

/// A port parameter: 1-65535.
///
/// # Errors
/// The value is 0 or above 65535.
pub fn validate_port(field: &'static str, value: u32) -> Result<u16, ValidationError> {
    match u16::try_from(value) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(ValidationError::new(field, "must be a port number 1-65535")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_keeps_a_template_is_refused_anything_else_is_taken() {
        for keep in [None, Some(""), Some("  "), Some("\t")] {
            assert_eq!(given("domain", keep), Ok(None), "{keep:?}");
        }
        for t in ["${DOMAIN}", "<your host>", "${REDIS}:6379", "<>", "a<b>c"] {
            let e = given("redis_address", Some(t)).expect_err(t);
            assert_eq!(e.field, "redis_address");
            assert!(e.rule.contains("template"), "{}", e.rule);
            assert!(!e.rule.contains(t), "the value is not echoed");
        }
        for v in [
            "secret",
            "changeme",
            "xxxxxxxxxxxx",
            "devkey",
            "your-password",
            "a>b<c",
            "$HOME",
        ] {
            assert_eq!(given("redis_password", Some(v)), Ok(Some(v)), "{v}");
        }
    }

    #[test]
    fn lists_follow_the_same_rule_entry_by_entry() {
        let empty: Vec<String> = Vec::new();
        assert_eq!(given_list("webhook_urls", Some(&empty)), Ok(None));
        let l = vec!["https://a.example.org".to_string(), "${HOOK}".to_string()];
        assert_eq!(
            given_list("webhook_urls", Some(&l)).expect_err("template").field,
            "webhook_urls"
        );
        let ok = vec!["secret".to_string()];
        assert_eq!(given_list("stun_servers", Some(&ok)), Ok(Some(&ok[..])));
    }

    #[test]
    fn placeholder_words_are_recognised_case_insensitively() {
        for p in [
            "secret",
            "SECRET",
            "Change-Me",
            "your-api-key",
            "YOUR_SECRET",
            "xxx",
            "XXXXXXXX",
            "todo",
        ] {
            assert!(is_placeholder_word(p), "{p:?}");
        }
        for v in ["mysecretkey", "x", "xx", "example.com", "APIabcdefghijkm"] {
            assert!(!is_placeholder_word(v), "{v:?}");
        }
    }
}
