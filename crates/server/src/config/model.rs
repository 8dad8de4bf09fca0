//! The in-memory config: the one source of truth the triple is rendered from.

use std::fmt;
use std::net::Ipv6Addr;

use hero_livekit_proto::{fields, ProcessName, TurnServerParam};
use hmac::{Hmac, Mac};
use serde::{Serialize, Serializer};
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};

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
/// What [`Config::mint_secret`] is the HMAC of: versioned, so that another
/// derivation can follow without two meanings for one label.
const MINT_SECRET_LABEL: &[u8] = b"hero_livekit lk-backend mint v1";

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
    /// The URL clients are handed, when it is not [`Config::livekit_url`]
    /// (a TLS proxy's `wss://` address): see [`Config::client_url`].
    pub public_url: Option<String>,
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
            public_url: None,
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

    /// The URL clients are handed with each token (`LIVEKIT_URL` in
    /// `backend.env`): `public_url` when configured, else
    /// [`Config::livekit_url`]. Nothing of the daemon's own connects to it
    /// (the probe reaches livekit-server on loopback at `port`).
    pub fn client_url(&self) -> String {
        self.public_url.clone().unwrap_or_else(|| self.livekit_url())
    }

    /// The bearer secret lk-backend requires on `POST /token`
    /// (`MINT_SECRET` in `backend.env`): HMAC-SHA256 keyed with the API
    /// secret over a fixed label, in hex. Derived, not stored, so that it
    /// is a rendering of the credential like the rest of the triple: it can
    /// never disagree with the key pair, it changes when the credential is
    /// rotated, and every node of a cluster (one credential) has the same.
    /// Knowing it reveals nothing of the API secret.
    pub fn mint_secret(&self) -> Secret {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.api_secret.expose().as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(MINT_SECRET_LABEL);
        Secret::new(hex::encode(mac.finalize().into_bytes()))
    }

    /// Where lk-backend listens (it binds loopback).
    pub fn backend_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.backend_port)
    }
}

/// One file of the config triple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TripleFile {
    /// The supervisor's own record; holds every field.
    RuntimeJson,
    /// Read by livekit-server at startup.
    LivekitYaml,
    /// Read by lk-backend (at startup and on SIGHUP).
    BackendEnv,
}

impl TripleFile {
    /// All three, in write order: `runtime.json` first, so that a crash
    /// between two writes leaves the new values in the file boot trusts most.
    pub const ALL: [TripleFile; 3] = [TripleFile::RuntimeJson, TripleFile::LivekitYaml, TripleFile::BackendEnv];

    /// The file name inside the state directory.
    pub const fn name(self) -> &'static str {
        match self {
            TripleFile::RuntimeJson => "runtime.json",
            TripleFile::LivekitYaml => "livekit.yaml",
            TripleFile::BackendEnv => "backend.env",
        }
    }

    /// The child that reads this file and must restart when it changes.
    pub const fn reader(self) -> Option<ProcessName> {
        match self {
            TripleFile::RuntimeJson => None,
            TripleFile::LivekitYaml => Some(ProcessName::LivekitServer),
            TripleFile::BackendEnv => Some(ProcessName::LkBackend),
        }
    }

    /// Position in [`TripleFile::ALL`].
    pub const fn index(self) -> usize {
        match self {
            TripleFile::RuntimeJson => 0,
            TripleFile::LivekitYaml => 1,
            TripleFile::BackendEnv => 2,
        }
    }
}

impl fmt::Display for TripleFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// ------------------------------------------------------------ production settings

/// A livekit-server release number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LivekitVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl LivekitVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> LivekitVersion {
        LivekitVersion { major, minor, patch }
    }

    /// `1.9.1` or `v1.9.1`; a pre-release or build suffix (`-rc1`, `+x`) is
    /// ignored. `None` for anything else, e.g. a custom build's label.
    pub fn parse(text: &str) -> Option<LivekitVersion> {
        let t = text.trim();
        let t = t.strip_prefix('v').unwrap_or(t);
        let core = t.split(['-', '+']).next()?;
        let mut parts = core.split('.');
        let mut num = || -> Option<u32> {
            let p = parts.next()?;
            (!p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse().ok())
                .flatten()
        };
        let v = LivekitVersion::new(num()?, num()?, num()?);
        parts.next().is_none().then_some(v)
    }

    /// What `livekit-server --version` prints: `livekit-server version 1.9.1`.
    pub fn from_version_output(output: &str) -> Option<LivekitVersion> {
        output.lines().find_map(|line| {
            let rest = line.trim().strip_prefix("livekit-server version ")?;
            LivekitVersion::parse(rest)
        })
    }
}

impl fmt::Display for LivekitVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// `rtc.udp_port`: one port (`start == end`) or a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpPort {
    pub start: u16,
    pub end: u16,
}

impl UdpPort {
    pub(crate) fn contains(&self, p: u16) -> bool {
        (self.start..=self.end).contains(&p)
    }

    pub(crate) fn to_json(self) -> Json {
        if self.start == self.end {
            json!(self.start)
        } else {
            json!(format!("{}-{}", self.start, self.end))
        }
    }
}

/// How an external TURN server authenticates clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnAuth {
    /// Long-term credentials.
    Credential { username: String, credential: Secret },
    /// The shared secret of the TURN REST API.
    Secret(Secret),
}

/// One entry of `rtc.turn_servers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnServer {
    pub host: String,
    pub port: u16,
    /// `udp`, `tcp` or `tls`.
    pub protocol: String,
    pub auth: TurnAuth,
}

/// The production settings. `None`, `false` and empty lists mean "not set":
/// livekit-server's own default applies and the key is not rendered.
/// Serialized, it is `runtime.json`'s form of each field (the `configure`
/// parameter's JSON), secrets in clear: see [`super::settings::to_json`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Settings {
    pub bind_addresses: Vec<String>,
    pub use_external_ip: bool,
    pub rtc_enable_loopback_candidate: bool,
    #[serde(serialize_with = "udp_port_json")]
    pub rtc_udp_port: Option<UdpPort>,
    pub stun_servers: Vec<String>,
    #[serde(serialize_with = "turn_servers_json")]
    pub turn_servers: Vec<TurnServer>,
    pub turn_enabled: bool,
    pub turn_domain: Option<String>,
    pub turn_tls_port: Option<u16>,
    pub turn_udp_port: Option<u16>,
    pub turn_external_tls: bool,
    pub turn_cert_file: Option<String>,
    pub turn_key_file: Option<String>,
    pub webhook_urls: Vec<String>,
    pub room_auto_create: Option<bool>,
    pub room_empty_timeout: Option<u32>,
    pub room_departure_timeout: Option<u32>,
    pub room_max_participants: Option<u32>,
    pub room_enabled_codecs: Vec<String>,
    pub log_level: Option<String>,
    pub log_json: bool,
    pub prometheus_port: Option<u16>,
    pub prometheus_username: Option<String>,
    #[serde(serialize_with = "exposed")]
    pub prometheus_password: Option<Secret>,
    pub region: Option<String>,
}

fn udp_port_json<S: Serializer>(v: &Option<UdpPort>, s: S) -> Result<S::Ok, S::Error> {
    v.map(UdpPort::to_json).serialize(s)
}

fn turn_servers_json<S: Serializer>(v: &[TurnServer], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(turn_param))
}

fn exposed<S: Serializer>(v: &Option<Secret>, s: S) -> Result<S::Ok, S::Error> {
    v.as_ref().map(Secret::expose).serialize(s)
}

pub(crate) fn turn_param(t: &TurnServer) -> TurnServerParam {
    let (username, credential, secret) = match &t.auth {
        TurnAuth::Credential { username, credential } => {
            (Some(username.clone()), Some(credential.expose().to_string()), None)
        }
        TurnAuth::Secret(s) => (None, None, Some(s.expose().to_string())),
    };
    TurnServerParam {
        host: t.host.clone(),
        port: u32::from(t.port),
        protocol: t.protocol.clone(),
        username,
        credential,
        secret,
    }
}

// ------------------------------------------------------------ Redis settings

/// How livekit-server reaches Redis, beyond `redis_address`. The default
/// is "nothing more than the address".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisSettings {
    /// ACL user; always paired with `password`.
    pub username: Option<String>,
    /// `requirepass` or the ACL user's password.
    pub password: Option<Secret>,
    /// Database number, `0..=MAX_DB`.
    pub db: u32,
    /// Connect over TLS (LiveKit's `tls.enabled`).
    pub tls: bool,
    /// PEM CA bundle the server certificate is verified with (`tls.ca_cert_file`).
    pub tls_ca_file: Option<String>,
    /// Name the server certificate must carry (`tls.server_name`).
    pub tls_server_name: Option<String>,
    /// PEM client certificate (`tls.client_cert_file`); paired with the key.
    pub tls_cert_file: Option<String>,
    /// PEM client key (`tls.client_key_file`).
    pub tls_key_file: Option<String>,
    /// Sentinel master name (`sentinel_master_name`); paired with the addresses.
    pub sentinel_master: Option<String>,
    /// `host:port` of each sentinel.
    pub sentinel_addresses: Vec<String>,
    /// User the sentinels are asked as; paired with `sentinel_password`.
    pub sentinel_username: Option<String>,
    /// Password of the sentinels.
    pub sentinel_password: Option<Secret>,
    /// `host:port` of Redis Cluster nodes.
    pub cluster_addresses: Vec<String>,
}

impl RedisSettings {
    /// Whether every setting is at its default.
    pub fn is_empty(&self) -> bool {
        *self == RedisSettings::default()
    }

    /// The settings whose value differs, as `(runtime.json name,
    /// livekit.yaml label)`, in the table's order.
    pub(crate) fn differing(&self, other: &RedisSettings) -> Vec<(&'static str, &'static str)> {
        let diffs = [
            self.username != other.username,
            self.password != other.password,
            self.db != other.db,
            self.tls != other.tls,
            self.tls_ca_file != other.tls_ca_file,
            self.tls_server_name != other.tls_server_name,
            self.tls_cert_file != other.tls_cert_file,
            self.tls_key_file != other.tls_key_file,
            self.sentinel_master != other.sentinel_master,
            self.sentinel_addresses != other.sentinel_addresses,
            self.sentinel_username != other.sentinel_username,
            self.sentinel_password != other.sentinel_password,
            self.cluster_addresses != other.cluster_addresses,
        ];
        fields::REDIS
            .into_iter()
            .zip(diffs)
            .filter(|(_, d)| *d)
            .map(|(f, _)| (f, fields::field(f).and_then(|row| row.livekit_key).unwrap_or(f)))
            .collect()
    }

    /// Whether a Redis is configured at all: an address, sentinels or
    /// cluster nodes (LiveKit's `RedisConfig.IsConfigured`).
    pub fn configured(&self, address: Option<&str>) -> bool {
        address.is_some() || !self.sentinel_addresses.is_empty() || !self.cluster_addresses.is_empty()
    }
}

/// sha256 of `bytes`, lowercase hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::super::render::render;
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
    fn the_client_url_is_the_public_url_when_configured() {
        let mut c = sample();
        assert_eq!(c.client_url(), "ws://localhost:7880");
        c.public_url = Some("wss://media.example.org".into());
        assert_eq!(c.client_url(), "wss://media.example.org");
        assert_eq!(
            c.livekit_url(),
            "ws://localhost:7880",
            "the node's own address is unchanged"
        );
    }

    #[test]
    fn the_mint_secret_is_derived_from_the_api_secret_alone() {
        let c = sample();
        let m = c.mint_secret();
        // HMAC-SHA256(api_secret, label), computed independently.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(c.api_secret.expose().as_bytes()).expect("key");
        mac.update(b"hero_livekit lk-backend mint v1");
        assert_eq!(m.expose(), hex::encode(mac.finalize().into_bytes()));
        assert_eq!(m.expose().len(), 64);
        assert!(!m.expose().contains(c.api_secret.expose()));
        let mut d = c.clone();
        d.domain = "example.org".into();
        d.public_url = Some("wss://example.org".into());
        assert_eq!(d.mint_secret(), m, "only the secret decides");
        d.api_secret = Secret::new("another-secret-value-of-enough-length-000");
        assert_ne!(d.mint_secret(), m, "a rotation changes it");
        assert_eq!(format!("{m:?}"), "<redacted>");
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
