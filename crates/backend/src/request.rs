//! The `POST /token` request: decoding and validation, as pure functions of
//! the body bytes, so every rule is tested without a server.

use std::time::Duration;

use serde::Deserialize;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Default token lifetime, LiveKit's own default.
pub const DEFAULT_TTL: Duration = Duration::from_secs(6 * 3600);
/// Shortest lifetime accepted: below a minute a token expires before a slow
/// client has connected.
pub const MIN_TTL_SECONDS: u64 = 60;
/// Longest lifetime accepted: a leaked token stays useful for at most a day.
pub const MAX_TTL_SECONDS: u64 = 24 * 3600;
/// Longest room, identity and name, in characters.
pub const MAX_NAME_CHARS: usize = 256;
/// Largest metadata, in bytes: livekit-server's default `limit.max_metadata_size`,
/// so a token the backend issues is never refused by the server for its size.
pub const MAX_METADATA_BYTES: usize = 64_000;

/// The body as sent. Every field is optional here so that a missing field
/// gets this service's own message instead of serde's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTokenRequest {
    room: Option<String>,
    identity: Option<String>,
    name: Option<String>,
    ttl_seconds: Option<u64>,
    metadata: Option<String>,
    can_publish: Option<bool>,
    can_subscribe: Option<bool>,
    can_publish_data: Option<bool>,
}

/// A request that passed every rule: what the token will say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// The room the token may join (`video.room`).
    pub room: String,
    /// The participant identity (`sub`).
    pub identity: String,
    /// The display name, when given and not empty.
    pub name: Option<String>,
    /// How long the token is valid.
    pub ttl: Duration,
    /// Participant metadata, when given and not empty.
    pub metadata: Option<String>,
    /// `None` leaves LiveKit's default (allowed).
    pub can_publish: Option<bool>,
    /// `None` leaves LiveKit's default (allowed).
    pub can_subscribe: Option<bool>,
    /// `None` leaves LiveKit's default (same as `can_publish`).
    pub can_publish_data: Option<bool>,
}

/// The stable `error` values of a 4xx response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The body is not JSON.
    InvalidJson,
    /// A field has the wrong JSON type.
    InvalidType,
    /// A field this API does not know (a typo such as `ttl`).
    UnknownField,
    /// A required field is absent or null.
    MissingField,
    /// A field has the right type but breaks a rule.
    InvalidValue,
    /// The body is over `limits.max_body_bytes`.
    PayloadTooLarge,
    /// The body did not arrive within `limits.body_timeout`.
    BodyTimeout,
    /// The content type is not `application/json`.
    UnsupportedMediaType,
    /// No such route.
    NotFound,
    /// The route exists for another method.
    MethodNotAllowed,
    /// The token could not be signed.
    Internal,
    /// `POST /token` without the bearer secret, or with another one.
    Unauthorized,
}

impl ErrorKind {
    /// The wire name, the `error` member of the response.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidJson => "invalid_json",
            ErrorKind::InvalidType => "invalid_type",
            ErrorKind::UnknownField => "unknown_field",
            ErrorKind::MissingField => "missing_field",
            ErrorKind::InvalidValue => "invalid_value",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::BodyTimeout => "body_timeout",
            ErrorKind::UnsupportedMediaType => "unsupported_media_type",
            ErrorKind::NotFound => "not_found",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::Internal => "internal",
            ErrorKind::Unauthorized => "unauthorized",
        }
    }
}

/// A refused request: its kind, and a message `"<field>: <rule>"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    /// The `error` member of the response.
    pub kind: ErrorKind,
    /// The `message` member: `"<field>: <rule>"`.
    pub message: String,
}

impl InputError {
    /// An error about one field.
    pub fn field(kind: ErrorKind, field: &str, rule: impl std::fmt::Display) -> InputError {
        InputError {
            kind,
            message: format!("{field}: {rule}"),
        }
    }
}

/// Decodes and validates a `POST /token` body.
///
/// # Errors
/// The first problem found, naming the field (or `body` when the JSON itself
/// is malformed).
pub fn parse_token_request(body: &[u8]) -> Result<TokenRequest, InputError> {
    // serde reads a struct from a JSON array too (fields by position); a
    // client sending one has misread the API, so it is told so.
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(InputError::field(
            ErrorKind::InvalidType,
            "body",
            "must be a JSON object",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let raw: RawTokenRequest = serde_path_to_error::deserialize(&mut de).map_err(|e| decode_error(&e))?;
    de.end().map_err(|e| decode_error_plain(&e))?;
    validate(raw)
}

fn decode_error(err: &serde_path_to_error::Error<serde_json::Error>) -> InputError {
    let inner = err.inner();
    let text = strip_position(&inner.to_string());
    if let Some(field) = backticked_after(&text, "unknown field `") {
        return InputError::field(ErrorKind::UnknownField, &field, "is not a field of this request");
    }
    match inner.classify() {
        serde_json::error::Category::Data => {
            let path = err.path().to_string();
            let field = if path == "." { "body" } else { path.as_str() };
            InputError::field(ErrorKind::InvalidType, field, text)
        }
        _ => InputError::field(ErrorKind::InvalidJson, "body", text),
    }
}

fn decode_error_plain(err: &serde_json::Error) -> InputError {
    InputError::field(ErrorKind::InvalidJson, "body", strip_position(&err.to_string()))
}

/// serde_json appends ` at line L column C`; the client sent one line of
/// JSON, so the column is kept as a hint but phrased as part of the rule.
fn strip_position(text: &str) -> String {
    match text.rfind(" at line ") {
        Some(i) => format!("{} ({})", &text[..i], &text[i + 1..]),
        None => text.to_string(),
    }
}

fn backticked_after(text: &str, prefix: &str) -> Option<String> {
    let rest = text.strip_prefix(prefix)?;
    rest.split_once('`').map(|(name, _)| name.to_string())
}

fn validate(raw: RawTokenRequest) -> Result<TokenRequest, InputError> {
    let room = required("room", raw.room)?;
    check_name("room", &room)?;
    let identity = required("identity", raw.identity)?;
    check_name("identity", &identity)?;
    if let Some(name) = &raw.name {
        check_name("name", name)?;
    }
    let ttl = match raw.ttl_seconds {
        None => DEFAULT_TTL,
        Some(s) if (MIN_TTL_SECONDS..=MAX_TTL_SECONDS).contains(&s) => Duration::from_secs(s),
        Some(_) => {
            return Err(InputError::field(
                ErrorKind::InvalidValue,
                "ttl_seconds",
                format_args!("must be between {MIN_TTL_SECONDS} and {MAX_TTL_SECONDS}"),
            ))
        }
    };
    if raw.metadata.as_ref().is_some_and(|m| m.len() > MAX_METADATA_BYTES) {
        return Err(InputError::field(
            ErrorKind::InvalidValue,
            "metadata",
            format_args!("must be at most {MAX_METADATA_BYTES} bytes"),
        ));
    }
    Ok(TokenRequest {
        room,
        identity,
        name: raw.name.filter(|n| !n.is_empty()),
        ttl,
        metadata: raw.metadata.filter(|m| !m.is_empty()),
        can_publish: raw.can_publish,
        can_subscribe: raw.can_subscribe,
        can_publish_data: raw.can_publish_data,
    })
}

fn required(field: &str, value: Option<String>) -> Result<String, InputError> {
    match value {
        None => Err(InputError::field(ErrorKind::MissingField, field, "is required")),
        Some(v) if v.is_empty() => Err(InputError::field(ErrorKind::InvalidValue, field, "must not be empty")),
        Some(v) => Ok(v),
    }
}

/// Control characters are refused: they end up in logs, in the server's room
/// list and in other participants' UIs, where they can forge lines or hide text.
/// So are format characters: an identity is the token's `sub`, shown to
/// people and compared by applications, and a bidi override (U+202E), a
/// zero-width space (U+200B) or a BOM makes it display as another string
/// than the one signed. Metadata is not checked: it is the application's
/// own payload (often JSON), never displayed as an identity by LiveKit,
/// and refusing characters in it would break applications that carry
/// user text there.
fn check_name(field: &str, value: &str) -> Result<(), InputError> {
    if value.chars().count() > MAX_NAME_CHARS {
        return Err(InputError::field(
            ErrorKind::InvalidValue,
            field,
            format_args!("must be at most {MAX_NAME_CHARS} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(InputError::field(
            ErrorKind::InvalidValue,
            field,
            "must not contain control characters",
        ));
    }
    if let Some(c) = value.chars().find(|c| is_format(*c)) {
        return Err(InputError::field(
            ErrorKind::InvalidValue,
            field,
            format_args!(
                "must not contain format characters (bidi controls, zero-width characters, line and paragraph separators: Unicode categories Cf, Zl, Zp); found U+{:04X}",
                u32::from(c)
            ),
        ));
    }
    Ok(())
}

/// Unicode general category Cf (format: bidi controls, zero-width
/// characters, BOM, soft hyphen, tags...), Zl (U+2028) and Zp (U+2029):
/// characters that change how the text around them displays, or break
/// lines, without being visible themselves.
pub fn is_format(c: char) -> bool {
    matches!(
        c.general_category(),
        GeneralCategory::Format | GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<TokenRequest, InputError> {
        parse_token_request(body.as_bytes())
    }

    #[test]
    fn minimal_request_takes_defaults() {
        let r = parse(r#"{"room":"r1","identity":"alice"}"#).expect("valid");
        assert_eq!(r.room, "r1");
        assert_eq!(r.identity, "alice");
        assert_eq!(r.ttl, DEFAULT_TTL);
        assert_eq!((r.can_publish, r.can_subscribe, r.can_publish_data), (None, None, None));
    }

    #[test]
    fn every_field_is_carried() {
        let r = parse(r#"{"room":"r","identity":"i","name":"Al","ttl_seconds":60,"metadata":"{}","can_publish":false,"can_subscribe":true,"can_publish_data":false}"#)
            .expect("valid");
        assert_eq!(r.name.as_deref(), Some("Al"));
        assert_eq!(r.ttl, Duration::from_secs(60));
        assert_eq!(r.metadata.as_deref(), Some("{}"));
        assert_eq!(
            (r.can_publish, r.can_subscribe, r.can_publish_data),
            (Some(false), Some(true), Some(false))
        );
    }

    #[test]
    fn each_bad_input_names_its_field_and_kind() {
        let long = "x".repeat(MAX_NAME_CHARS + 1);
        let big_meta = "m".repeat(MAX_METADATA_BYTES + 1);
        let table: Vec<(String, ErrorKind, &str)> = vec![
            (
                r#"{"identity":"i"}"#.into(),
                ErrorKind::MissingField,
                "room: is required",
            ),
            (
                r#"{"room":null,"identity":"i"}"#.into(),
                ErrorKind::MissingField,
                "room: is required",
            ),
            (
                r#"{"room":"r"}"#.into(),
                ErrorKind::MissingField,
                "identity: is required",
            ),
            (
                r#"{"room":"","identity":"i"}"#.into(),
                ErrorKind::InvalidValue,
                "room: must not be empty",
            ),
            (
                r#"{"room":"r","identity":""}"#.into(),
                ErrorKind::InvalidValue,
                "identity: must not be empty",
            ),
            (
                format!(r#"{{"room":"{long}","identity":"i"}}"#),
                ErrorKind::InvalidValue,
                "room: must be at most 256 characters",
            ),
            (
                format!(r#"{{"room":"r","identity":"{long}"}}"#),
                ErrorKind::InvalidValue,
                "identity: must be at most 256 characters",
            ),
            (
                format!(r#"{{"room":"r","identity":"i","name":"{long}"}}"#),
                ErrorKind::InvalidValue,
                "name: must be at most 256 characters",
            ),
            (
                r#"{"room":"a\nb","identity":"i"}"#.into(),
                ErrorKind::InvalidValue,
                "room: must not contain control characters",
            ),
            (
                r#"{"room":"r","identity":"i\u0000"}"#.into(),
                ErrorKind::InvalidValue,
                "identity: must not contain control characters",
            ),
            (
                r#"{"room":"r","identity":"i","ttl_seconds":59}"#.into(),
                ErrorKind::InvalidValue,
                "ttl_seconds: must be between 60 and 86400",
            ),
            (
                r#"{"room":"r","identity":"i","ttl_seconds":86401}"#.into(),
                ErrorKind::InvalidValue,
                "ttl_seconds: must be between 60 and 86400",
            ),
            (
                format!(r#"{{"room":"r","identity":"i","metadata":"{big_meta}"}}"#),
                ErrorKind::InvalidValue,
                "metadata: must be at most 64000 bytes",
            ),
            (
                r#"{"room":5,"identity":"i"}"#.into(),
                ErrorKind::InvalidType,
                "room: invalid type: integer `5`, expected a string",
            ),
            (
                r#"{"room":"r","identity":"i","ttl_seconds":"60"}"#.into(),
                ErrorKind::InvalidType,
                "ttl_seconds: invalid type",
            ),
            (
                r#"{"room":"r","identity":"i","ttl_seconds":-1}"#.into(),
                ErrorKind::InvalidType,
                "ttl_seconds: invalid value",
            ),
            (
                r#"{"room":"r","identity":"i","can_publish":"yes"}"#.into(),
                ErrorKind::InvalidType,
                "can_publish: invalid type",
            ),
            (
                r#"{"room":"r","identity":"i","ttl":60}"#.into(),
                ErrorKind::UnknownField,
                "ttl: is not a field of this request",
            ),
            (
                r#"["r","i"]"#.into(),
                ErrorKind::InvalidType,
                "body: must be a JSON object",
            ),
            ("42".into(), ErrorKind::InvalidType, "body: invalid type: integer"),
            (
                r#"{"room":"r","identity":"i""#.into(),
                ErrorKind::InvalidJson,
                "body: EOF while parsing",
            ),
            (
                r#"{"room":"r","identity":"i"} x"#.into(),
                ErrorKind::InvalidJson,
                "body: trailing characters",
            ),
            ("".into(), ErrorKind::InvalidJson, "body: EOF while parsing"),
        ];
        for (body, kind, message) in table {
            let err = parse(&body).expect_err(&body);
            assert_eq!(err.kind, kind, "{body} -> {err:?}");
            assert!(err.message.starts_with(message), "{body} -> {err:?}");
        }
    }

    /// The characters of the report and the Cf ranges around them, by code
    /// point, against the Unicode data (UnicodeData.txt, field 2).
    const FORMAT_EXAMPLES: [char; 16] = [
        '\u{00AD}',
        '\u{061C}',
        '\u{180E}',
        '\u{200B}',
        '\u{200C}',
        '\u{200D}',
        '\u{200E}',
        '\u{200F}',
        '\u{202A}',
        '\u{202E}',
        '\u{2028}',
        '\u{2029}',
        '\u{2066}',
        '\u{2069}',
        '\u{FEFF}',
        '\u{E0001}',
    ];

    #[test]
    fn format_characters_are_refused_in_each_name_field_naming_it() {
        for c in FORMAT_EXAMPLES {
            for field in ["room", "identity", "name"] {
                let mut body = serde_json::json!({"room": "r", "identity": "i"});
                body[field] = serde_json::Value::String(format!("admin{c}gnp.exe"));
                let err = parse(&body.to_string()).expect_err(&format!("{field} U+{:04X}", u32::from(c)));
                assert_eq!(err.kind, ErrorKind::InvalidValue);
                assert!(
                    err.message
                        .starts_with(&format!("{field}: must not contain format characters")),
                    "{err:?}"
                );
                assert!(err.message.ends_with(&format!("U+{:04X}", u32::from(c))), "{err:?}");
            }
        }
    }

    #[test]
    fn is_format_follows_the_unicode_categories() {
        for c in FORMAT_EXAMPLES {
            assert!(is_format(c), "U+{:04X}", u32::from(c));
        }
        // Neighbours of the Cf ranges, and what people's names are made of.
        for c in [
            'a', 'é', 'ß', 'Ж', 'ع', '中', '😀', ' ', '\u{00A0}', '\u{061B}', '\u{2027}', '\u{202F}', '\u{2065}',
            '\u{FEFE}', '\u{0301}',
        ] {
            assert!(!is_format(c), "U+{:04X}", u32::from(c));
        }
    }

    #[test]
    fn metadata_stays_free_text() {
        let r = parse(r#"{"room":"r","identity":"i","metadata":"a\u202eb\u200bc\u2028d\n"}"#).expect("valid");
        assert_eq!(r.metadata.as_deref(), Some("a\u{202e}b\u{200b}c\u{2028}d\n"));
    }

    #[test]
    fn limits_are_inclusive() {
        let at_limit = "é".repeat(MAX_NAME_CHARS);
        let body = format!(r#"{{"room":"{at_limit}","identity":"i","ttl_seconds":86400}}"#);
        assert!(parse(&body).is_ok());
        let meta = "m".repeat(MAX_METADATA_BYTES);
        let body = format!(r#"{{"room":"r","identity":"i","ttl_seconds":60,"metadata":"{meta}"}}"#);
        assert!(parse(&body).is_ok());
    }

    proptest::proptest! {
        #[test]
        fn any_body_is_answered_without_panicking(body in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse_token_request(&body);
        }

        #[test]
        fn accepted_rooms_have_no_control_characters(room in "(?s).{1,300}") {
            let body = serde_json::json!({"room": room, "identity": "i"}).to_string();
            if let Ok(r) = parse(&body) {
                proptest::prop_assert!(r.room.chars().count() <= MAX_NAME_CHARS);
                proptest::prop_assert!(!r.room.chars().any(|c| c.is_control() || is_format(c)));
            }
        }
    }
}
