//! Removes JSON Web Tokens from text a child wrote, before that text can
//! reach health, events, the daemon's log or metrics.
//!
//! livekit-server 1.13.5 echoes the whole token it refused in its 401 body
//! (`invalid token: <JWT>, error: token signature is invalid: ...`). A
//! token is a bearer credential until it expires: quoting it would hand a
//! working join (or admin) grant to whoever reads the health output.
//!
//! A JWT's header is a JSON object, `{"...`, whose base64url encoding
//! always starts with `eyJ`. Every run of base64url characters and dots
//! that starts there, at the start of a word, is replaced whole: the three
//! segments of a token, or whatever part of one a truncated text kept.

use std::borrow::Cow;

/// What a removed token is replaced with.
pub const REDACTED: &str = "[redacted JWT]";

/// `text` with every token replaced by [`REDACTED`]; borrowed unchanged
/// when it holds none.
pub fn jwts(text: &str) -> Cow<'_, str> {
    match redact_bytes(text.as_bytes()) {
        // Only ASCII runs are cut out and an ASCII marker put in, so the
        // result is UTF-8 whenever the input was.
        Cow::Owned(bytes) => {
            Cow::Owned(String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
        }
        Cow::Borrowed(_) => Cow::Borrowed(text),
    }
}

/// [`jwts`] over bytes that need not be UTF-8 (an HTTP body as read).
pub fn redact_bytes(bytes: &[u8]) -> Cow<'_, [u8]> {
    let Some(first) = find_token(bytes, 0) else {
        return Cow::Borrowed(bytes);
    };
    let mut out = Vec::with_capacity(bytes.len());
    let mut from = 0;
    let mut at = Some(first);
    while let Some(start) = at {
        let end = start + bytes[start..].iter().take_while(|b| is_token_byte(**b)).count();
        out.extend_from_slice(&bytes[from..start]);
        out.extend_from_slice(REDACTED.as_bytes());
        from = end;
        at = find_token(bytes, end);
    }
    out.extend_from_slice(&bytes[from..]);
    Cow::Owned(out)
}

/// The next `eyJ` at or after `from` that begins a word (a token glued to
/// other base64url characters is part of a longer word, not a header).
fn find_token(bytes: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(pos) = bytes.get(i..)?.windows(3).position(|w| w == b"eyJ") {
        let start = i + pos;
        if start == 0 || !is_word_byte(bytes[start - 1]) {
            return Some(start);
        }
        i = start + 1;
    }
    None
}

/// base64url, the dots between segments, and `=` padding some encoders add.
fn is_token_byte(b: u8) -> bool {
    is_word_byte(b) || matches!(b, b'.' | b'=')
}

/// The base64url alphabet: `eyJ` after one of these is inside a word
/// (`keyJoin`); after `=` or `.` it starts one (`access_token=eyJ...`).
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token as livekit-server 1.13.5 echoed it in a 401 body.
    const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ2aWRlbyI6eyJyb29tSm9pbiI6dHJ1ZX0sInN1YiI6ImJvYiIsImlzcyI6IkFQSWtleTEifQ.1wZUoMI68FkrywJ63MhZkQ9EH90TvpsHYo005XpFHMc";

    #[test]
    fn livekits_echo_keeps_its_words_and_loses_the_token() {
        let body = format!("invalid token: {JWT}, error: token signature is invalid: signature is invalid");
        assert_eq!(
            jwts(&body),
            "invalid token: [redacted JWT], error: token signature is invalid: signature is invalid"
        );
    }

    #[test]
    fn every_token_and_every_fragment_goes() {
        let header_only = &JWT[..JWT.find('.').expect("a dot")];
        let cut = &JWT[..60];
        let text = format!("a={JWT} b=\"{header_only}\" c:{cut}\n({JWT}) ?access_token={JWT}&x");
        let out = jwts(&text);
        assert!(!out.contains("eyJ"), "{out}");
        assert_eq!(
            out,
            "a=[redacted JWT] b=\"[redacted JWT]\" c:[redacted JWT]\n([redacted JWT]) ?access_token=[redacted JWT]&x"
        );
    }

    #[test]
    fn text_without_a_token_is_borrowed_unchanged() {
        for text in [
            "",
            "invalid API key: APIabc",
            "permissions denied",
            "keyJoin and theyJust hold the letters inside a word",
            "{\"code\":\"unauthenticated\",\"msg\":\"permissions denied\"}",
            "naïve ünïcode stays",
        ] {
            assert!(matches!(jwts(text), Cow::Borrowed(t) if t == text), "{text}");
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_around_a_token_are_kept() {
        let mut body = b"\xff\xfe ".to_vec();
        body.extend_from_slice(JWT.as_bytes());
        body.extend_from_slice(b" \x80");
        let out = redact_bytes(&body);
        assert_eq!(&out[..], b"\xff\xfe [redacted JWT] \x80");
    }

    #[test]
    fn a_token_at_the_very_end_and_start_goes() {
        assert_eq!(jwts(JWT), REDACTED);
        assert_eq!(jwts("eyJ"), REDACTED);
        assert_eq!(jwts(&format!("{JWT}{JWT}")), REDACTED, "one run, one marker");
    }
}
