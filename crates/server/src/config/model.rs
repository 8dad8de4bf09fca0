//! The in-memory config: the one source of truth the triple is rendered from.

use std::fmt;
use std::net::Ipv6Addr;

use sha2::{Digest, Sha256};

use super::redis::RedisSettings;
use super::render::{render, TripleFile};
use super::settings::{LivekitVersion, Settings};

/// Default public hostname of the node.
pub const DEFAULT_DOMAIN: &str = "localhost";
/// livekit-server's own default HTTP/WebSocket port.
pub const DEFAULT_PORT: u16 = 7880;
/// livekit-server's own default ICE/TCP port.
pub const DEFAULT_RTC_TCP_PORT: u16 = 7881;
/// livekit-server's own default first UDP media port.
pub const DEFAULT_RTC_PORT_RANGE_START: u16 = 50000;
/// livekit-server's own default last UDP media port.
pub const DEFAULT_RTC_PORT_RANGE_END: u16 = 60000;
/// lk-backend's default HTTP port.
pub const DEFAULT_BACKEND_PORT: u16 = 7890;

/// An API secret. Its `Debug` and `Display` print `<redacted>` so that a
/// secret cannot reach a log line, an error or an event by accident; the
/// value is reachable only through [`Secret::expose`], which is easy to grep.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the renderers and the token signer only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One LiveKit credential: the key is public (it travels in every token as
/// `iss`), the secret signs tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// 3-64 characters of `[A-Za-z0-9_-]`; LiveKit's own are `API` + 12.
    pub api_key: String,
    /// 32-256 characters of `[A-Za-z0-9_.~+/=-]`.
    pub api_secret: Secret,
}

/// Everything the three files of the triple are rendered from.
///
/// Values are validated before a `Config` is built by this module
/// ([`super::apply_configure`], [`super::plan`]); the renderers still escape
/// every string so that a hand-built invalid value cannot break out of its
/// quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The API key: public, it travels in every token as `iss`.
    pub api_key: String,
    /// The API secret that signs tokens.
    pub api_secret: Secret,
    /// Public hostname or IP clients reach livekit-server at.
    pub domain: String,
    /// `host:port` of Redis for multi-node deployments.
    pub redis_address: Option<String>,
    /// Everything else about reaching Redis: credentials, db, TLS, Sentinel, Cluster.
    pub redis: RedisSettings,
    /// livekit-server HTTP/WebSocket port.
    pub port: u16,
    /// ICE/TCP port.
    pub rtc_tcp_port: u16,
    /// First UDP media port.
    pub rtc_port_range_start: u16,
    /// Last UDP media port.
    pub rtc_port_range_end: u16,
    /// IP livekit-server advertises to clients.
    pub node_ip: Option<String>,
    /// lk-backend HTTP port.
    pub backend_port: u16,
    /// The production settings (TURN, webhooks, rooms, logging, ...).
    pub settings: Settings,
    /// The livekit-server version the renderings target: not configured but
    /// observed (install record, else `livekit-server --version`), and part
    /// of the config because `livekit.yaml` depends on it (a key newer than
    /// the binary stops it) and renderers are pure functions of the config.
    /// `None` when unknown: every key is rendered.
    pub livekit_version: Option<LivekitVersion>,
}

impl Config {
    /// A config holding `credential` and the defaults for everything else.
    pub fn with_credential(credential: Credential) -> Config {
        Config {
            api_key: credential.api_key,
            api_secret: credential.api_secret,
            domain: DEFAULT_DOMAIN.to_string(),
            redis_address: None,
            redis: RedisSettings::default(),
            port: DEFAULT_PORT,
            rtc_tcp_port: DEFAULT_RTC_TCP_PORT,
            rtc_port_range_start: DEFAULT_RTC_PORT_RANGE_START,
            rtc_port_range_end: DEFAULT_RTC_PORT_RANGE_END,
            node_ip: None,
            backend_port: DEFAULT_BACKEND_PORT,
            settings: Settings::default(),
            livekit_version: None,
        }
    }

    /// The credential this config holds.
    pub fn credential(&self) -> Credential {
        Credential {
            api_key: self.api_key.clone(),
            api_secret: self.api_secret.clone(),
        }
    }

    /// Replaces the credential, keeping every other field.
    pub fn set_credential(&mut self, credential: Credential) {
        self.api_key = credential.api_key;
        self.api_secret = credential.api_secret;
    }

    /// Where clients reach livekit-server: `ws://{domain}:{port}`, with an
    /// IPv6 domain in brackets.
    pub fn livekit_url(&self) -> String {
        if self.domain.parse::<Ipv6Addr>().is_ok() {
            format!("ws://[{}]:{}", self.domain, self.port)
        } else {
            format!("ws://{}:{}", self.domain, self.port)
        }
    }

    /// Where lk-backend listens (it binds loopback).
    pub fn backend_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.backend_port)
    }

    /// The `in_memory_hash` of `health`: sha256 (hex) of the canonical
    /// `runtime.json` rendering, which holds every field. Equal configs give
    /// equal hashes and the hash is comparable with `files.runtime.json.sha256`.
    pub fn hash(&self) -> String {
        sha256_hex(&render(self, TripleFile::RuntimeJson))
    }
}

/// sha256 of `bytes`, lowercase hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Config {
        Config::with_credential(Credential {
            api_key: "APIabcdefghijkm".into(),
            api_secret: Secret::new("s3cr3tValueThatMustNeverBePrinted0123456789"),
        })
    }

    #[test]
    fn secret_is_redacted_in_debug_and_display() {
        let c = sample();
        let shown = format!("{c:?} {} {:?}", c.api_secret, c.credential());
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn defaults_match_livekit_server_defaults() {
        let c = sample();
        assert_eq!(
            (
                c.domain.as_str(),
                c.port,
                c.rtc_tcp_port,
                c.rtc_port_range_start,
                c.rtc_port_range_end,
                c.backend_port
            ),
            ("localhost", 7880, 7881, 50000, 60000, 7890)
        );
        assert_eq!((c.redis_address, c.node_ip), (None, None));
    }

    #[test]
    fn urls_bracket_ipv6_and_use_loopback_for_the_backend() {
        let mut c = sample();
        assert_eq!(c.livekit_url(), "ws://localhost:7880");
        c.domain = "2001:db8::1".into();
        c.port = 443;
        assert_eq!(c.livekit_url(), "ws://[2001:db8::1]:443");
        c.domain = "10.0.0.1".into();
        assert_eq!(c.livekit_url(), "ws://10.0.0.1:443");
        assert_eq!(c.backend_url(), "http://127.0.0.1:7890");
    }

    #[test]
    fn hash_is_the_runtime_json_digest_and_changes_with_any_field() {
        let c = sample();
        assert_eq!(c.hash(), sha256_hex(&render(&c, TripleFile::RuntimeJson)));
        assert_eq!(c.hash().len(), 64);
        let mut d = c.clone();
        d.backend_port = 7891;
        assert_ne!(c.hash(), d.hash());
        let mut e = c.clone();
        e.api_secret = Secret::new("another-secret-value-of-enough-length-000");
        assert_ne!(c.hash(), e.hash());
    }
}
