//! Every limit lk-backend's HTTP listener enforces, in one value, with the
//! daemon's habits (`crates/server/src/limits.rs`): production defaults,
//! overrides from the environment for tests, and each refusal naming its
//! limit as `limits.<field>` so an operator finds it here and in
//! docs/operations.md.
//!
//! lk-backend listens on TCP (loopback by default), where any local user
//! can connect: without these a few hundred connections that send nothing,
//! half a request head or a trickled body hold sockets and memory for ever.

use std::time::Duration;

/// The limits, with [`Limits::default`] as the production values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest `POST /token` body. The largest valid request (64 000 bytes of
    /// metadata plus three 256-character names) fits; `Content-Length` is
    /// checked before a byte is read, a chunked body is read through a
    /// counting limit.
    pub max_body_bytes: usize,
    /// Largest request head (request line plus headers). A browser's or a
    /// proxy's head is 1-4 KiB; 16 KiB is the daemon's number too.
    pub max_header_bytes: usize,
    /// How long a new connection may take to send its first whole request
    /// head, counted from the accept. A client connects to send a request at
    /// once, so a connection silent or trickling for 10 s is not a client.
    pub header_timeout: Duration,
    /// How long the body may take to arrive after its head. The body is at
    /// most 64 KiB, sent with the head by every HTTP client: 10 s is a very
    /// slow link, not a normal one.
    pub body_timeout: Duration,
    /// How long a keep-alive connection may wait between two requests, until
    /// the next request's head is whole (hyper arms one timer for both). A
    /// web application's connection pool keeps connections between token
    /// requests; 60 s spares it most reconnects, and what an idle connection
    /// costs (a few KiB) is bounded by `max_connections`.
    pub idle_timeout: Duration,
    /// Open connections served at one time. lk-backend's clients are the
    /// operator's web application (a pool of a few connections) and the
    /// supervisor's probe; 256 is far above that and within the default
    /// open-file limit (1024), at about 20 KiB each (two hyper buffers)
    /// about 5 MiB at worst.
    pub max_connections: usize,
    /// Connections being answered 503 (over `max_connections`) at one time;
    /// beyond it they are closed unanswered, so a flood of refusals costs a
    /// bounded amount.
    pub max_connections_refused: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 64 * 1024,
            max_header_bytes: 16 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 256,
            max_connections_refused: 16,
        }
    }
}

/// How long a refused connection is given to send its head and read the
/// 503 before it is closed.
pub const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);

/// The most connections (and refusals) a budget can hold.
pub const MAX_PERMITS: usize = if (u32::MAX as usize) < tokio::sync::Semaphore::MAX_PERMITS {
    u32::MAX as usize
} else {
    tokio::sync::Semaphore::MAX_PERMITS
};

/// hyper refuses a read buffer smaller than this (and panics on one).
const HYPER_MIN_BUF: usize = 8192;

/// The environment variables that override a limit (for tests and for
/// operators who need other numbers), each a positive integer. They are read
/// from the process environment even with `--env-file`: the file carries the
/// credential the supervisor writes, not these.
pub const ENV_OVERRIDES: [(&str, &str); 7] = [
    ("LK_BACKEND_MAX_BODY_BYTES", "max_body_bytes"),
    ("LK_BACKEND_MAX_HEADER_BYTES", "max_header_bytes"),
    ("LK_BACKEND_HEADER_TIMEOUT_MS", "header_timeout"),
    ("LK_BACKEND_BODY_TIMEOUT_MS", "body_timeout"),
    ("LK_BACKEND_IDLE_TIMEOUT_MS", "idle_timeout"),
    ("LK_BACKEND_MAX_CONNECTIONS", "max_connections"),
    ("LK_BACKEND_MAX_CONNECTIONS_REFUSED", "max_connections_refused"),
];

impl Limits {
    /// The defaults with the overrides of [`ENV_OVERRIDES`] applied.
    ///
    /// # Errors
    /// A variable that is set but is not a positive integer (or, for
    /// `LK_BACKEND_MAX_HEADER_BYTES`, is below hyper's 8192-byte floor), named.
    pub fn from_env() -> Result<Limits, String> {
        Limits::from_lookup(|k| std::env::var(k).ok())
    }

    /// [`Limits::from_env`] over any lookup, for tests.
    ///
    /// # Errors
    /// As [`Limits::from_env`].
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Limits, String> {
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
                "LK_BACKEND_MAX_BODY_BYTES" => l.max_body_bytes = size,
                "LK_BACKEND_MAX_HEADER_BYTES" => {
                    if size < HYPER_MIN_BUF {
                        return Err(format!("{var}={raw:?}: must be at least {HYPER_MIN_BUF}"));
                    }
                    l.max_header_bytes = size;
                }
                "LK_BACKEND_HEADER_TIMEOUT_MS" => l.header_timeout = Duration::from_millis(n),
                "LK_BACKEND_BODY_TIMEOUT_MS" => l.body_timeout = Duration::from_millis(n),
                "LK_BACKEND_IDLE_TIMEOUT_MS" => l.idle_timeout = Duration::from_millis(n),
                "LK_BACKEND_MAX_CONNECTIONS" => l.max_connections = size,
                "LK_BACKEND_MAX_CONNECTIONS_REFUSED" => l.max_connections_refused = size,
                _ => {}
            }
        }
        // Shutdown waits for every connection's permit at once, which tokio
        // counts in a u32; no host has that many sockets anyway.
        l.max_connections = l.max_connections.min(MAX_PERMITS);
        l.max_connections_refused = l.max_connections_refused.min(MAX_PERMITS);
        Ok(l)
    }

    /// hyper's read buffer: large enough for a whole head, and never below
    /// hyper's floor; a body is read through it in pieces.
    pub fn hyper_buf_size(&self) -> usize {
        self.max_header_bytes.max(HYPER_MIN_BUF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_hold_the_largest_valid_request() {
        let l = Limits::default();
        // Every field at its longest, in plain ASCII. (Metadata full of
        // characters JSON must escape can still exceed the body limit: the
        // limit bounds bytes on the wire, the metadata rule bytes decoded.)
        let body = serde_json::json!({
            "room": "r".repeat(256),
            "identity": "i".repeat(256),
            "name": "n".repeat(256),
            "metadata": "m".repeat(crate::request::MAX_METADATA_BYTES),
            "ttl_seconds": 86400,
            "can_publish": true,
            "can_subscribe": true,
            "can_publish_data": true,
        })
        .to_string();
        assert!(body.len() <= l.max_body_bytes, "{}", body.len());
    }

    #[test]
    fn env_overrides_are_parsed_and_bad_values_named() {
        let l = Limits::from_lookup(|k| match k {
            "LK_BACKEND_IDLE_TIMEOUT_MS" => Some("250".into()),
            "LK_BACKEND_MAX_CONNECTIONS" => Some(" 3 ".into()),
            _ => None,
        })
        .expect("valid");
        assert_eq!(l.idle_timeout, Duration::from_millis(250));
        assert_eq!(l.max_connections, 3);
        assert_eq!(l.header_timeout, Limits::default().header_timeout);
        for (var, value) in [
            ("LK_BACKEND_HEADER_TIMEOUT_MS", "0"),
            ("LK_BACKEND_BODY_TIMEOUT_MS", "-1"),
            ("LK_BACKEND_MAX_BODY_BYTES", "1k"),
            ("LK_BACKEND_MAX_HEADER_BYTES", "4096"),
        ] {
            let e = Limits::from_lookup(|k| (k == var).then(|| value.to_string())).expect_err(value);
            assert!(e.starts_with(var), "{e}");
        }
    }
}
