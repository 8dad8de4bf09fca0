//! Every limit the socket enforces, in one value (SPEC section 4).
//!
//! The HTTP front ([`crate::http`]) and the accept loop
//! ([`crate::daemon`]) read it, and [`Limits::jsonrpsee_config`] hands the
//! same numbers to jsonrpsee for what only it sees (WebSocket messages and
//! their batches). Each limit is applied before any work it protects, and
//! the answer that enforces it names it as `limits.<field>`, so an
//! operator can find it here and in docs/operations.md.
//!
//! Capacity is split by access class and by kind: owners (the daemon's uid
//! and root), read-only peers (`--socket-group`) and refused peers each
//! have their own connection budget, and WebSocket connections (which live
//! as long as their subscriptions) have budgets of their own, released by
//! the HTTP connection they upgraded from. So neither idle subscribers nor
//! a flood of read-only peers can lock the owner's calls out.

use std::time::Duration;

use jsonrpsee::server::{BatchRequestConfig, PingConfig, ServerConfig};

use crate::peer::PeerAccess;

/// The limits, with [`Limits::default`] as the production values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body (a JSON-RPC call or batch, or one WebSocket
    /// message). `Content-Length` is checked before anything is read; a
    /// chunked body is read through a counting limit.
    pub max_body_bytes: usize,
    /// Largest request head (request line plus headers): hyper answers 431.
    pub max_header_bytes: usize,
    /// Most headers in one request: hyper's own default (100), kept because
    /// setting it moves header parsing from the stack to the heap for every
    /// request, `GET /health` included.
    pub max_headers: usize,
    /// Most calls in one batch (HTTP and WebSocket).
    pub max_batch_len: u32,
    /// Deepest nesting of arrays and objects in a request body.
    pub max_json_depth: usize,
    /// Open HTTP connections from owners (the daemon's uid and root).
    pub max_connections_full: usize,
    /// Open HTTP connections from read-only peers (`--socket-group`).
    pub max_connections_read_only: usize,
    /// Connections being answered "403" (refused peers) or "503" (a class
    /// over its budget) at one time; beyond it they are closed unanswered.
    pub max_connections_refused: usize,
    /// Open WebSocket connections from owners.
    pub max_websockets_full: usize,
    /// Open WebSocket connections from read-only peers.
    pub max_websockets_read_only: usize,
    /// Subscriptions on one WebSocket connection; in total at most this
    /// times the WebSocket budgets.
    pub max_subscriptions_per_connection: u32,
    /// How long a connection may take to send a request head. hyper arms
    /// this timer whenever the connection waits for a request, so it is
    /// also how long an idle keep-alive connection stays open.
    pub header_timeout: Duration,
    /// How long the body of a request may take to arrive after its head.
    pub body_timeout: Duration,
    /// How often a WebSocket peer is pinged.
    pub websocket_ping_interval: Duration,
    /// A WebSocket peer that has not answered a ping for this long is
    /// disconnected (its subscriptions end).
    pub websocket_inactive_limit: Duration,
    /// Longest pause of the accept loop after accept errors (EMFILE...):
    /// the pause starts at 5 ms and doubles up to this.
    pub accept_backoff_max: Duration,
}

/// Largest JSON-RPC response (jsonrpsee's default, 10 MiB, stated so the
/// front's direct answers and jsonrpsee's own use the same bound).
pub const MAX_RESPONSE_BODY_BYTES: u32 = 10 * 1024 * 1024;

/// The shortest pause after an accept error.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1 << 20,
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            max_batch_len: 64,
            max_json_depth: 64,
            max_connections_full: 1024,
            max_connections_read_only: 128,
            max_connections_refused: 16,
            // Sized so that every budget full of idle WebSockets (about 22
            // KiB each inside jsonrpsee) stays within the 2 MiB the daemon
            // may grow under abuse; a handful of event watchers is the use.
            max_websockets_full: 64,
            max_websockets_read_only: 16,
            max_subscriptions_per_connection: 16,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            websocket_ping_interval: Duration::from_secs(30),
            websocket_inactive_limit: Duration::from_secs(40),
            accept_backoff_max: Duration::from_secs(1),
        }
    }
}

/// The environment variables that override a limit (for tests and for
/// operators who need other numbers), each an integer.
pub const ENV_OVERRIDES: [(&str, &str); 8] = [
    ("HERO_LIVEKIT_MAX_BODY_BYTES", "max_body_bytes"),
    ("HERO_LIVEKIT_MAX_CONNECTIONS_FULL", "max_connections_full"),
    ("HERO_LIVEKIT_MAX_CONNECTIONS_READ_ONLY", "max_connections_read_only"),
    ("HERO_LIVEKIT_MAX_WEBSOCKETS_FULL", "max_websockets_full"),
    ("HERO_LIVEKIT_MAX_WEBSOCKETS_READ_ONLY", "max_websockets_read_only"),
    ("HERO_LIVEKIT_MAX_BATCH_LEN", "max_batch_len"),
    ("HERO_LIVEKIT_HEADER_TIMEOUT_MS", "header_timeout"),
    ("HERO_LIVEKIT_BODY_TIMEOUT_MS", "body_timeout"),
];

impl Limits {
    /// The defaults with the overrides of [`ENV_OVERRIDES`] applied.
    ///
    /// # Errors
    /// A variable that is set but is not a positive integer, named.
    pub fn from_env() -> Result<Limits, String> {
        Limits::from_lookup(|k| std::env::var(k).ok())
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Limits, String> {
        let mut l = Limits::default();
        for (var, _) in ENV_OVERRIDES {
            let Some(raw) = get(var) else { continue };
            let n: u64 = raw
                .trim()
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{var}={raw:?}: must be a positive integer"))?;
            let size = usize::try_from(n).map_err(|_| format!("{var}={raw:?}: too large"))?;
            match var {
                "HERO_LIVEKIT_MAX_BODY_BYTES" => l.max_body_bytes = size,
                "HERO_LIVEKIT_MAX_CONNECTIONS_FULL" => l.max_connections_full = size,
                "HERO_LIVEKIT_MAX_CONNECTIONS_READ_ONLY" => l.max_connections_read_only = size,
                "HERO_LIVEKIT_MAX_WEBSOCKETS_FULL" => l.max_websockets_full = size,
                "HERO_LIVEKIT_MAX_WEBSOCKETS_READ_ONLY" => l.max_websockets_read_only = size,
                "HERO_LIVEKIT_MAX_BATCH_LEN" => {
                    l.max_batch_len = u32::try_from(n).map_err(|_| format!("{var}={raw:?}: too large"))?
                }
                "HERO_LIVEKIT_HEADER_TIMEOUT_MS" => l.header_timeout = Duration::from_millis(n),
                "HERO_LIVEKIT_BODY_TIMEOUT_MS" => l.body_timeout = Duration::from_millis(n),
                _ => {}
            }
        }
        Ok(l)
    }

    /// The HTTP connection budget of an access class, and the name of the
    /// limit that sets it.
    pub fn connections(&self, access: PeerAccess) -> (usize, &'static str) {
        match access {
            PeerAccess::Full => (self.max_connections_full, "max_connections_full"),
            PeerAccess::ReadOnly => (self.max_connections_read_only, "max_connections_read_only"),
            PeerAccess::None => (self.max_connections_refused, "max_connections_refused"),
        }
    }

    /// The WebSocket budget of an access class, and the name of its limit.
    pub fn websockets(&self, access: PeerAccess) -> (usize, &'static str) {
        match access {
            PeerAccess::Full => (self.max_websockets_full, "max_websockets_full"),
            PeerAccess::ReadOnly | PeerAccess::None => (self.max_websockets_read_only, "max_websockets_read_only"),
        }
    }

    /// The jsonrpsee configuration carrying the same limits. Its own
    /// connection guard is set out of the way (the front enforces the
    /// per-class budgets before jsonrpsee sees a request; jsonrpsee's guard
    /// is one pool for all, which is what let idle WebSockets lock calls out).
    pub fn jsonrpsee_config(&self) -> ServerConfig {
        let body = u32::try_from(self.max_body_bytes).unwrap_or(u32::MAX);
        ServerConfig::builder()
            .max_request_body_size(body)
            .max_response_body_size(MAX_RESPONSE_BODY_BYTES)
            .max_connections(u32::MAX)
            .max_subscriptions_per_connection(self.max_subscriptions_per_connection)
            .set_batch_request_config(BatchRequestConfig::Limit(self.max_batch_len))
            .enable_ws_ping(
                PingConfig::new()
                    .ping_interval(self.websocket_ping_interval)
                    .inactive_limit(self.websocket_inactive_limit),
            )
            .build()
    }
}

/// What a cheap scan of a request body found before it is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Within the limits.
    Fine,
    /// Nested deeper than `max_json_depth`.
    TooDeep,
    /// A batch of more than `max_batch_len` calls.
    BatchTooLong,
}

/// Scans `body` once, without allocating: counts `[`/`{` nesting outside
/// strings (escapes honoured) and, when the top level is an array, its
/// elements (commas at depth one). Stops at the first limit crossed. Not a
/// validator: malformed JSON is the parser's to refuse.
pub fn scan(body: &[u8], max_depth: usize, max_batch: u32) -> Shape {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let batch = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    // Separators at depth one: a batch of n calls has n - 1.
    let mut separators: u32 = 0;
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Shape::TooDeep;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' if batch && depth == 1 => {
                separators = separators.saturating_add(1);
                if separators >= max_batch {
                    return Shape::BatchTooLong;
                }
            }
            _ => {}
        }
    }
    Shape::Fine
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_counts_depth_outside_strings_only() {
        assert_eq!(scan(br#"{"a":[1,{"b":2}]}"#, 3, 10), Shape::Fine);
        assert_eq!(scan(br#"{"a":[1,{"b":2}]}"#, 2, 10), Shape::TooDeep);
        assert_eq!(scan(br#"{"a":"[[[[[[[[[[[\"[[[["}"#, 2, 10), Shape::Fine);
        let deep = "[".repeat(10_000);
        assert_eq!(scan(deep.as_bytes(), 64, 64), Shape::TooDeep);
    }

    #[test]
    fn scan_counts_batch_entries_at_the_top_level() {
        let call = r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"a":[1,2,3]}}"#;
        let batch = |n: usize| format!("[{}]", vec![call; n].join(","));
        assert_eq!(scan(batch(64).as_bytes(), 64, 64), Shape::Fine);
        assert_eq!(scan(batch(65).as_bytes(), 64, 64), Shape::BatchTooLong);
        assert_eq!(scan(call.as_bytes(), 64, 1), Shape::Fine, "a single call is no batch");
        assert_eq!(scan(b"[]", 64, 1), Shape::Fine);
    }

    #[test]
    fn env_overrides_are_parsed_and_bad_values_named() {
        let l =
            Limits::from_lookup(|k| (k == "HERO_LIVEKIT_MAX_WEBSOCKETS_FULL").then(|| "3".to_string())).expect("valid");
        assert_eq!(l.max_websockets_full, 3);
        let e = Limits::from_lookup(|k| (k == "HERO_LIVEKIT_HEADER_TIMEOUT_MS").then(|| "0".to_string()))
            .expect_err("zero");
        assert!(e.contains("HERO_LIVEKIT_HEADER_TIMEOUT_MS"), "{e}");
    }
}
