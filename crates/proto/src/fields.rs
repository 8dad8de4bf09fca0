//! The one table of `configure`'s fields: each declared once, below, with
//! its type, whether `unset` removes it, the `livekit.yaml` key it is
//! rendered as, the livekit-server release that first reads that key, and
//! whether it is a secret. [`ConfigureParams`] (and so the OpenRPC
//! document), [`CONFIGURE_FIELDS`] and the name lists of each group are
//! generated from that one declaration; the daemon's merge, renderings,
//! readers and `config show`, and the CLI's flags and `--unset`, are driven
//! by (or tested against) the table.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A livekit-server release number, as the table states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LivekitRelease {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl LivekitRelease {
    pub const fn new(major: u32, minor: u32, patch: u32) -> LivekitRelease {
        LivekitRelease { major, minor, patch }
    }
}

/// Which part of the config a field belongs to (and so which of the
/// daemon's modules merges and renders it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// The credential, the addresses and the ports: fields of the config itself.
    Core,
    /// The list of fields to remove: not a field itself.
    Unset,
    /// The Redis settings beyond `redis_address`.
    Redis,
    /// The production settings of livekit-server.
    Setting,
    /// Joining a cluster: acted on, not stored in the triple.
    Cluster,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// The parameter name (and `runtime.json` key).
    pub name: &'static str,
    /// The parameter's type, as Rust spells it inside its `Option`.
    pub ty: &'static str,
    pub group: Group,
    /// Whether `configure {unset: [name]}` (`--unset`) removes it.
    pub unset: bool,
    /// The `livekit.yaml` key it is rendered as (dotted), if any.
    pub livekit_key: Option<&'static str>,
    /// The first livekit-server release that reads `livekit_key`, when some
    /// 1.x release does not.
    pub since: Option<LivekitRelease>,
    /// The key releases before `since` read instead, if any.
    pub older_key: Option<&'static str>,
    /// A secret: never shown by `Debug`, `config show`, logs or errors.
    pub secret: bool,
}

impl Field {
    /// The CLI flag: the name in kebab case.
    pub fn flag(&self) -> String {
        format!("--{}", self.name.replace('_', "-"))
    }
}

/// The row of `name`.
pub fn field(name: &str) -> Option<&'static Field> {
    CONFIGURE_FIELDS.iter().find(|f| f.name == name)
}

const fn same(a: Group, b: Group) -> bool {
    a as u8 == b as u8
}

const fn count(g: Group) -> usize {
    let (mut i, mut n) = (0, 0);
    while i < CONFIGURE_FIELDS.len() {
        if same(CONFIGURE_FIELDS[i].group, g) {
            n += 1;
        }
        i += 1;
    }
    n
}

const fn names<const N: usize>(g: Group) -> [&'static str; N] {
    let mut out = [""; N];
    let (mut i, mut j) = (0, 0);
    while i < CONFIGURE_FIELDS.len() {
        if same(CONFIGURE_FIELDS[i].group, g) {
            out[j] = CONFIGURE_FIELDS[i].name;
            j += 1;
        }
        i += 1;
    }
    out
}

/// The core fields, in table (and `runtime.json`) order.
pub const CORE: [&str; count(Group::Core)] = names(Group::Core);
/// The Redis settings beyond `redis_address`, in table order.
pub const REDIS: [&str; count(Group::Redis)] = names(Group::Redis);
/// The production settings, in table (and `runtime.json`) order.
pub const SETTINGS: [&str; count(Group::Setting)] = names(Group::Setting);

/// The names `unset` takes, in table order.
pub fn unsettable() -> impl Iterator<Item = &'static str> {
    CONFIGURE_FIELDS.iter().filter(|f| f.unset).map(|f| f.name)
}

/// The parameters that carry a secret, in table order.
pub fn secrets() -> impl Iterator<Item = &'static str> {
    CONFIGURE_FIELDS.iter().filter(|f| f.secret).map(|f| f.name)
}

macro_rules! configure_fields {
    ($(
        $(#[$doc:meta])*
        $name:ident : $ty:ty => $group:ident, unset: $unset:literal, key: $key:expr, since: $since:expr,
            older_key: $older:expr, secret: $secret:literal;
    )*) => {
        /// `configure` parameters. An absent or empty value keeps the current one;
        /// a template left unfilled (`<...>`, `${...}`) is refused in every field,
        /// a placeholder word (`changeme`, `secret`, ...) in the credential.
        /// `Debug` shows which secrets are given, never their value.
        #[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct ConfigureParams {
            $(
                $(#[$doc])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $name: Option<$ty>,
            )*
        }

        /// Every parameter of `configure`, in the order of [`ConfigureParams`].
        pub const CONFIGURE_FIELDS: &[Field] = &[$(
            Field {
                name: stringify!($name),
                ty: stringify!($ty),
                group: Group::$group,
                unset: $unset,
                livekit_key: $key,
                since: $since,
                older_key: $older,
                secret: $secret,
            },
        )*];
    };
}

use crate::types::{TurnServerParam, UdpPortParam};

configure_fields! {
    /// 3-64 characters of `[A-Za-z0-9_-]`.
    api_key: String => Core, unset: false, key: Some("keys"), since: None, older_key: None, secret: false;
    /// 32-256 characters of `[A-Za-z0-9_.~+/=-]`.
    api_secret: String => Core, unset: false, key: Some("keys"), since: None, older_key: None, secret: true;
    /// Public hostname or IP of this LiveKit node.
    domain: String => Core, unset: false, key: None, since: None, older_key: None, secret: false;
    /// `host:port` of Redis, for multi-node deployments.
    redis_address: String => Core, unset: true, key: Some("redis.address"), since: None, older_key: None, secret: false;
    /// Redis ACL user (`AUTH username password`); needs `redis_password`.
    redis_username: String => Redis, unset: true, key: Some("redis.username"), since: None, older_key: None, secret: false;
    /// Redis password (`requirepass` or the ACL user's); a secret.
    redis_password: String => Redis, unset: true, key: Some("redis.password"), since: None, older_key: None, secret: true;
    /// Redis database number, 0-15 (0 for Redis Cluster).
    redis_db: u32 => Redis, unset: true, key: Some("redis.db"), since: None, older_key: None, secret: false;
    /// Connect to Redis over TLS.
    redis_tls: bool => Redis, unset: true, key: Some("redis.tls.enabled"), since: None, older_key: None, secret: false;
    /// PEM file of the CA that signed the Redis server's certificate (absolute path).
    redis_tls_ca_file: String => Redis, unset: true, key: Some("redis.tls.ca_cert_file"), since: None, older_key: None, secret: false;
    /// Name the Redis server's certificate is verified against, when it differs from the host.
    redis_tls_server_name: String => Redis, unset: true, key: Some("redis.tls.server_name"), since: None, older_key: None, secret: false;
    /// PEM client certificate for mutual TLS; needs `redis_tls_key_file`.
    redis_tls_cert_file: String => Redis, unset: true, key: Some("redis.tls.client_cert_file"), since: None, older_key: None, secret: false;
    /// PEM private key of `redis_tls_cert_file`.
    redis_tls_key_file: String => Redis, unset: true, key: Some("redis.tls.client_key_file"), since: None, older_key: None, secret: false;
    /// Sentinel master name; needs `redis_sentinel_addresses`.
    redis_sentinel_master: String => Redis, unset: true, key: Some("redis.sentinel_master_name"), since: None, older_key: None, secret: false;
    /// `host:port` of each sentinel; replaces the list (an empty list keeps it).
    redis_sentinel_addresses: Vec<String> => Redis, unset: true, key: Some("redis.sentinel_addresses"), since: None, older_key: None, secret: false;
    /// User the sentinels are asked as; needs `redis_sentinel_password`.
    redis_sentinel_username: String => Redis, unset: true, key: Some("redis.sentinel_username"), since: None, older_key: None, secret: false;
    /// Password of the sentinels (a secret).
    redis_sentinel_password: String => Redis, unset: true, key: Some("redis.sentinel_password"), since: None, older_key: None, secret: true;
    /// `host:port` of Redis Cluster nodes; replaces the list (an empty list keeps it).
    redis_cluster_addresses: Vec<String> => Redis, unset: true, key: Some("redis.cluster_addresses"), since: None, older_key: None, secret: false;
    /// livekit-server HTTP/WebSocket port (default 7880).
    port: u32 => Core, unset: false, key: Some("port"), since: None, older_key: None, secret: false;
    /// ICE/TCP port (default 7881).
    rtc_tcp_port: u32 => Core, unset: false, key: Some("rtc.tcp_port"), since: None, older_key: None, secret: false;
    /// First UDP media port (default 50000).
    rtc_port_range_start: u32 => Core, unset: false, key: Some("rtc.port_range_start"), since: None, older_key: None, secret: false;
    /// Last UDP media port (default 60000).
    rtc_port_range_end: u32 => Core, unset: false, key: Some("rtc.port_range_end"), since: None, older_key: None, secret: false;
    /// IP address livekit-server advertises to clients.
    node_ip: String => Core, unset: true, key: Some("rtc.node_ip"), since: None, older_key: None, secret: false;
    /// lk-backend HTTP port (default 7890).
    backend_port: u32 => Core, unset: false, key: None, since: None, older_key: None, secret: false;
    /// The URL clients are handed to reach livekit-server (lk-backend's
    /// `POST /token` answer, `LIVEKIT_URL` in `backend.env`), when it is not
    /// `ws://{domain}:{port}`: e.g. `wss://media.example.org` behind a TLS
    /// proxy. `ws://` or `wss://`, a host, an optional port, no path, query
    /// or user info.
    public_url: String => Core, unset: true, key: None, since: None, older_key: None, secret: false;
    /// Optional fields to remove, since an empty value keeps the current
    /// one: `redis_address`, `node_ip`, `public_url`, any other `redis_*` setting, or any
    /// production setting below (it returns to LiveKit's default).
    unset: Vec<String> => Unset, unset: false, key: None, since: None, older_key: None, secret: false;
    /// IP addresses livekit-server listens on (`bind_addresses`; default: all).
    bind_addresses: Vec<String> => Setting, unset: true, key: Some("bind_addresses"), since: None, older_key: None, secret: false;
    /// Discover the public IP through STUN (`rtc.use_external_ip`; default false).
    use_external_ip: bool => Setting, unset: true, key: Some("rtc.use_external_ip"), since: None, older_key: None, secret: false;
    /// Offer loopback addresses as ICE candidates
    /// (`rtc.enable_loopback_candidate`; default false; livekit-server
    /// 1.3.2+): for local development and tests on one machine.
    rtc_enable_loopback_candidate: bool => Setting, unset: true, key: Some("rtc.enable_loopback_candidate"), since: Some(LivekitRelease::new(1, 3, 2)), older_key: None, secret: false;
    /// One muxed UDP media port (`7882`) or a range (`"7882-7892"`)
    /// (`rtc.udp_port`); when set, livekit-server uses it instead of the port range.
    rtc_udp_port: UdpPortParam => Setting, unset: true, key: Some("rtc.udp_port"), since: None, older_key: None, secret: false;
    /// STUN servers as `host:port` (`rtc.stun_servers`).
    stun_servers: Vec<String> => Setting, unset: true, key: Some("rtc.stun_servers"), since: None, older_key: None, secret: false;
    /// External TURN servers handed to clients (`rtc.turn_servers`).
    turn_servers: Vec<TurnServerParam> => Setting, unset: true, key: Some("rtc.turn_servers"), since: None, older_key: None, secret: false;
    /// Run the embedded TURN server (`turn.enabled`; default false). Needs
    /// `turn_domain` and either `turn_external_tls` or a cert pair.
    turn_enabled: bool => Setting, unset: true, key: Some("turn.enabled"), since: None, older_key: None, secret: false;
    /// Public hostname of the embedded TURN server (`turn.domain`).
    turn_domain: String => Setting, unset: true, key: Some("turn.domain"), since: None, older_key: None, secret: false;
    /// TURN/TLS port (`turn.tls_port`; default 5349).
    turn_tls_port: u32 => Setting, unset: true, key: Some("turn.tls_port"), since: None, older_key: None, secret: false;
    /// TURN/UDP port (`turn.udp_port`; default 3478).
    turn_udp_port: u32 => Setting, unset: true, key: Some("turn.udp_port"), since: None, older_key: None, secret: false;
    /// TLS for TURN is ended by a proxy in front (`turn.external_tls`);
    /// excludes `turn_cert_file`/`turn_key_file`.
    turn_external_tls: bool => Setting, unset: true, key: Some("turn.external_tls"), since: None, older_key: None, secret: false;
    /// Absolute path of the TURN/TLS certificate (`turn.cert_file`); must exist and be readable.
    turn_cert_file: String => Setting, unset: true, key: Some("turn.cert_file"), since: None, older_key: None, secret: false;
    /// Absolute path of the TURN/TLS private key (`turn.key_file`); must exist and be readable.
    turn_key_file: String => Setting, unset: true, key: Some("turn.key_file"), since: None, older_key: None, secret: false;
    /// http(s) URLs livekit-server posts webhooks to (`webhook.urls`);
    /// `webhook.api_key` is always the active API key.
    webhook_urls: Vec<String> => Setting, unset: true, key: Some("webhook.urls"), since: None, older_key: None, secret: false;
    /// Create rooms on first join (`room.auto_create`; default true).
    room_auto_create: bool => Setting, unset: true, key: Some("room.auto_create"), since: None, older_key: None, secret: false;
    /// Seconds an empty room lives (`room.empty_timeout`; default 300).
    room_empty_timeout: u32 => Setting, unset: true, key: Some("room.empty_timeout"), since: None, older_key: None, secret: false;
    /// Seconds a room lives after the last participant left (`room.departure_timeout`; default 20).
    room_departure_timeout: u32 => Setting, unset: true, key: Some("room.departure_timeout"), since: None, older_key: None, secret: false;
    /// Most participants in a room, 0 for no limit (`room.max_participants`; default 0).
    room_max_participants: u32 => Setting, unset: true, key: Some("room.max_participants"), since: None, older_key: None, secret: false;
    /// Codec MIME types rooms may use (`room.enabled_codecs`), e.g. `audio/opus`, `video/vp8`.
    room_enabled_codecs: Vec<String> => Setting, unset: true, key: Some("room.enabled_codecs"), since: None, older_key: None, secret: false;
    /// `debug`, `info`, `warn` or `error` (`logging.level`; default info).
    log_level: String => Setting, unset: true, key: Some("logging.level"), since: None, older_key: None, secret: false;
    /// JSON log lines, for production log pipelines (`logging.json`; default false).
    log_json: bool => Setting, unset: true, key: Some("logging.json"), since: None, older_key: None, secret: false;
    /// Port of livekit-server's Prometheus endpoint (`prometheus.port`,
    /// `prometheus_port` before livekit-server 1.7.1).
    prometheus_port: u32 => Setting, unset: true, key: Some("prometheus.port"), since: Some(LivekitRelease::new(1, 7, 1)), older_key: Some("prometheus_port"), secret: false;
    /// Basic-auth user of the Prometheus endpoint (livekit-server 1.7.1 and later).
    prometheus_username: String => Setting, unset: true, key: Some("prometheus.username"), since: Some(LivekitRelease::new(1, 7, 1)), older_key: None, secret: false;
    /// Basic-auth password of the Prometheus endpoint (a secret; 1.7.1 and later).
    prometheus_password: String => Setting, unset: true, key: Some("prometheus.password"), since: Some(LivekitRelease::new(1, 7, 1)), older_key: None, secret: true;
    /// Region of this node, for multi-region routing (`region`).
    region: String => Setting, unset: true, key: Some("region"), since: None, older_key: None, secret: false;
    /// Join the named cluster on the configured Redis (1-64 characters of
    /// `[A-Za-z0-9_-]`): its first node publishes its credential, the
    /// others adopt it.
    cluster: String => Cluster, unset: false, key: None, since: None, older_key: None, secret: false;
    /// The cluster's join secret (32-256 characters of
    /// `[A-Za-z0-9_.~+/=-]`), as `cluster_token` prints it on a member; a
    /// first node given none mints one. A secret like `api_secret`.
    cluster_token: String => Cluster, unset: false, key: None, since: None, older_key: None, secret: true;
}

impl fmt::Debug for ConfigureParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Through the wire form, so that a field added later is shown
        // without touching this impl; secrets are replaced by a marker.
        let mut value = serde_json::to_value(self).map_err(|_| fmt::Error)?;
        if let Some(map) = value.as_object_mut() {
            for field in secrets() {
                if let Some(v) = map.get_mut(field) {
                    *v = serde_json::Value::from("<redacted>");
                }
            }
            if let Some(servers) = map.get_mut("turn_servers").and_then(|v| v.as_array_mut()) {
                for server in servers.iter_mut().filter_map(|s| s.as_object_mut()) {
                    for field in ["credential", "secret"] {
                        if let Some(v) = server.get_mut(field) {
                            *v = serde_json::Value::from("<redacted>");
                        }
                    }
                }
            }
        }
        write!(f, "ConfigureParams {value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_the_wire_form_of_the_params() {
        let schema = serde_json::to_value(schemars::schema_for!(ConfigureParams)).expect("schema");
        let props: Vec<&str> = schema["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .map(String::as_str)
            .collect();
        let mut names: Vec<&str> = CONFIGURE_FIELDS.iter().map(|f| f.name).collect();
        names.sort_unstable();
        let mut props = props;
        props.sort_unstable();
        assert_eq!(names, props);
    }

    #[test]
    fn groups_keep_their_order_and_keys_are_unique() {
        assert_eq!(CORE.len() + REDIS.len() + SETTINGS.len() + 3, CONFIGURE_FIELDS.len());
        assert_eq!(CORE[0], "api_key");
        assert_eq!(REDIS[0], "redis_username");
        assert_eq!(SETTINGS[SETTINGS.len() - 1], "region");
        let mut keys: Vec<&str> = CONFIGURE_FIELDS
            .iter()
            .filter(|f| f.name != "api_secret")
            .filter_map(|f| f.livekit_key)
            .collect();
        let n = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), n, "one field per livekit.yaml key");
        assert!(CONFIGURE_FIELDS
            .iter()
            .all(|f| f.since.is_none() || f.livekit_key.is_some()));
    }
}
