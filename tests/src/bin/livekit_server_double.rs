//! `livekit-server-double`: a TEST DOUBLE of livekit-server, not LiveKit.
//!
//! The end-to-end tests also run the real livekit-server v1.13.5 (built by
//! `scripts/test`); the double stays for what the real server cannot be made
//! to do: serve with keys other than its file's, crash or exit at a chosen
//! point, answer 406 for a chosen time, ignore SIGTERM (the switches below),
//! and claim an older release. Every behaviour it shares with LiveKit is run
//! against both binaries by `tests/tests/conformance.rs`, which fails when
//! their status or text differ. It imitates the parts of livekit-server that
//! the supervisor depends on, as read from LiveKit's sources
//! (`shared/reference/livekit.md`) and checked against the real binary:
//!
//! - the command line the supervisor uses: `--config FILE` (required),
//!   `--bind ADDR` (repeatable, replaces `bind_addresses`), `--node-ip IP`.
//!   Every other livekit-server flag (`--dev`, `--keys`, `--config-body`, ...)
//!   is refused, because the supervisor must not rely on them;
//! - the strict YAML parser: an unknown key prints
//!   `could not parse config: yaml: unmarshal errors:` /
//!   `  line N: field X not found in type config.Config` and exits **0**, as
//!   the real server does for every startup error (no keys, a key file
//!   readable by others, a port in use, webhooks without a known key);
//! - keys come **only** from the file (`keys`, or `key_file` which replaces
//!   them). The real server also honours `LIVEKIT_KEYS`, `LIVEKIT_CONFIG` and
//!   every `LIVEKIT_<PATH>` variable; the supervisor scrubs the child's
//!   environment so they never apply, and the double reads no `LIVEKIT_*`
//!   variable at all so that a test cannot pass because of a stray one;
//! - a secret shorter than 32 characters is logged
//!   (`secret is too short, ...`) and the server runs;
//! - HTTP on `port` (7880) at each bind address (all interfaces when none),
//!   and a TCP listener on `rtc.tcp_port` (7881) and a UDP socket on
//!   `rtc.udp_port` when set, so port conflicts behave like the real ones;
//! - with a `redis:` section (address, Sentinel or Cluster, AUTH, db, TLS,
//!   every key of LiveKit's `redis.RedisConfig`, strictly), a PING at
//!   startup through the `redis` crate; when it fails the double prints
//!   `unable to connect to redis: <err>` and exits **0**, as the real
//!   server does. While running it PINGs every second, and `GET /` answers
//!   406 `Not Ready` while the last PING failed (LiveKit's node stats go
//!   stale without Redis);
//! - `GET /` answers 200 `OK` (406 `Not Ready\nNode Updated At <time>`
//!   while not ready); `/rtc/validate` checks a join token exactly like
//!   LiveKit's auth middleware and `validate` handler, with the same status
//!   codes and texts, the whole refused token echoed as 1.13.5 does (and,
//!   as there, a token without `exp` never expires); Twirp
//!   `RoomService/ListRooms` answers `{"rooms":[]}` to a `roomList` grant;
//!   the auth middleware wraps every path, `GET /` included;
//! - `--version` prints `livekit-server version X.Y.Z`. The double claims
//!   LiveKit's release that hero_livekit pins, or the version written in
//!   `<its own path>.version`; a key newer than that release (`prometheus`
//!   1.7.1, `rtc.turn_servers[].secret_file` 1.13.0, `debug_handler` 1.13.2)
//!   is an unknown field, as in that release's strict decoder;
//! - SIGTERM, SIGINT and SIGQUIT end it with status 0. Logs go to stdout in
//!   the real server's console format, never with a secret.
//!
//! Misbehaviour for supervisor tests: the supervisor passes only the flags
//! above and a scrubbed environment, so switches are read from a side file,
//! `double-behaviour.json` next to the config file, or the file named by
//! `LK_DOUBLE_BEHAVIOUR_FILE` (the only variable the double reads):
//!
//! ```json
//! { "exit_at_start": true,   // exit before binding anything
//!   "exit_code": 0,          // status for exit_at_start (default 0, like a
//!                            // config error) or crash_after_ms (default 2,
//!                            // like a Go panic)
//!   "crash_after_ms": 500,   // exit this long after becoming ready
//!   "ready_delay_ms": 800,   // `GET /` answers 406 until then
//!   "ignore_sigterm": true } // only SIGKILL ends it (tests stop escalation)
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use base64::Engine;
use clap::Parser;
use serde::Deserialize;
use serde_yaml::Value;

#[path = "../double/redis.rs"]
mod redis_link;
use redis_link::RedisConfig;

/// A test double of livekit-server for hero_livekit's end-to-end tests.
/// It is not LiveKit: it serves only readiness and token validation.
#[derive(Debug, Parser)]
#[command(name = "livekit-server-double", disable_version_flag = true)]
struct Cli {
    /// Print `livekit-server version X.Y.Z`, as the real binary does.
    #[arg(long)]
    version: bool,
    /// Path to the livekit.yaml config file.
    #[arg(long, value_name = "FILE", required_unless_present = "version")]
    config: Option<PathBuf>,
    /// IP address to listen on; repeat for several. Replaces bind_addresses.
    #[arg(long, value_name = "ADDR")]
    bind: Vec<String>,
    /// IP address of the node, announced to clients.
    #[arg(long, value_name = "IP")]
    node_ip: Option<String>,
}

/// The subset of livekit-server's `config.Config` that matters here, with
/// every other real top-level section accepted as opaque YAML so that a
/// valid real config also parses; unknown keys are refused like the real
/// (strict) parser does.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "the field list is the schema the strict parser checks; the double acts on few fields"
)]
struct Config {
    port: Option<u32>,
    bind_addresses: Option<Vec<String>>,
    prometheus_port: Option<u32>,
    prometheus: Option<PrometheusConfig>,
    rtc: Option<RtcConfig>,
    redis: Option<RedisConfig>,
    audio: Option<Value>,
    video: Option<Value>,
    room: Option<RoomConfig>,
    turn: Option<TurnConfig>,
    ingress: Option<Value>,
    sip: Option<Value>,
    webhook: Option<WebHookConfig>,
    node_selector: Option<Value>,
    key_file: Option<String>,
    keys: Option<serde_yaml::Mapping>,
    region: Option<String>,
    signal_relay: Option<Value>,
    psrpc: Option<Value>,
    log_level: Option<String>,
    logging: Option<LoggingConfig>,
    limit: Option<Value>,
    development: Option<bool>,
    metric: Option<Value>,
    /// 1.13.2 and later (see [`NEWER_KEYS`]).
    debug_handler: Option<Value>,
    agents: Option<Value>,
    api: Option<Value>,
    enable_data_tracks: Option<Value>,
    enable_participant_data_blob: Option<Value>,
    node_stats: Option<Value>,
    trace: Option<Value>,
}

/// `prometheus:` (1.7.1 and later; `prometheus_port` before).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(dead_code, reason = "the field list is the schema the strict parser checks")]
struct PrometheusConfig {
    port: Option<u32>,
    username: Option<String>,
    password: Option<String>,
}

/// One entry of `rtc.turn_servers`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(dead_code, reason = "the field list is the schema the strict parser checks")]
struct TurnServerConfig {
    host: Option<String>,
    port: Option<u32>,
    protocol: Option<String>,
    username: Option<String>,
    credential: Option<String>,
    secret: Option<String>,
    /// 1.13.0 and later (see [`NEWER_KEYS`]).
    secret_file: Option<String>,
}

/// One entry of `room.enabled_codecs`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(dead_code, reason = "the field list is the schema the strict parser checks")]
struct CodecSpec {
    mime: Option<String>,
    fmtp_line: Option<String>,
}

/// What this double claims to be: LiveKit's release that hero_livekit pins,
/// unless `<its own path>.version` says otherwise (an older double refuses
/// the newer keys exactly as that release does).
struct Version {
    text: String,
    number: (u32, u32, u32),
}

const DEFAULT_VERSION: &str = "1.13.5";

/// Keys some releases do not know, with the release that added them and
/// the Go type that holds them (LiveKit's `pkg/config` history).
const NEWER_KEYS: &[(&str, (u32, u32, u32), &str)] = &[
    ("prometheus", (1, 7, 1), "config.Config"),
    ("secret_file", (1, 13, 0), "config.TURNServer"),
    ("debug_handler", (1, 13, 2), "config.Config"),
];

fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts = text
        .trim()
        .trim_start_matches('v')
        .split('.')
        .map(|p| p.parse::<u32>().ok());
    let v = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(v)
}

fn own_version() -> Version {
    let side = std::env::current_exe().ok().map(|p| {
        let mut name = p.into_os_string();
        name.push(".version");
        PathBuf::from(name)
    });
    let text = side
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|t| t.trim().to_string())
        .filter(|t| parse_version(t).is_some())
        .unwrap_or_else(|| DEFAULT_VERSION.to_string());
    let number = parse_version(&text).unwrap_or((1, 13, 5));
    Version { text, number }
}

/// A key newer than this release is unknown to its strict decoder: the
/// same error as any unknown field.
fn refuse_newer_keys(text: &str, version: &Version) -> Result<(), String> {
    for (key, since, go_type) in NEWER_KEYS {
        if version.number >= *since {
            continue;
        }
        let top_level = *go_type == "config.Config";
        let found = text.lines().enumerate().find(|(_, l)| {
            let t = if top_level {
                *l
            } else {
                l.trim_start().trim_start_matches("- ")
            };
            t.starts_with(&format!("{key}:"))
        });
        if let Some((i, _)) = found {
            return Err(format!(
                "could not parse config: yaml: unmarshal errors:\n  line {}: field {key} not found in type {go_type}",
                i + 1
            ));
        }
    }
    Ok(())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "the field list is the schema the strict parser checks; the double acts on few fields"
)]
struct RtcConfig {
    udp_port: Option<Value>,
    tcp_port: Option<u32>,
    port_range_start: Option<u32>,
    port_range_end: Option<u32>,
    use_external_ip: Option<bool>,
    node_ip: Option<String>,
    stun_servers: Option<Vec<String>>,
    turn_servers: Option<Vec<TurnServerConfig>>,
    use_ice_lite: Option<bool>,
    interfaces: Option<Value>,
    ips: Option<Value>,
    use_mdns: Option<bool>,
    enable_loopback_candidate: Option<bool>,
    batch_io: Option<Value>,
    strict_acks: Option<bool>,
    packet_buffer_size: Option<i64>,
    packet_buffer_size_video: Option<i64>,
    packet_buffer_size_audio: Option<i64>,
    pli_throttle: Option<Value>,
    congestion_control: Option<Value>,
    allow_tcp_fallback: Option<bool>,
    reconnect_on_publication_error: Option<bool>,
    reconnect_on_subscription_error: Option<bool>,
    reconnect_on_data_channel_error: Option<bool>,
    datachannel_slow_threshold: Option<i64>,
    forward_stats: Option<Value>,
    advertise_internal_ip: Option<Value>,
    allow_udp_unstable_fallback: Option<Value>,
    data_channel_max_buffered_amount: Option<Value>,
    datachannel_data_track_target_latency: Option<Value>,
    datachannel_lossy_target_latency: Option<Value>,
    enable_rtp_stream_restart_detection: Option<Value>,
    external_ip_only: Option<Value>,
    force_tcp: Option<Value>,
    host_acceptance_min_wait: Option<Value>,
    prflx_acceptance_min_wait: Option<Value>,
    relay_acceptance_min_wait: Option<Value>,
    sctp_cwnd_ca_step: Option<Value>,
    sctp_fast_rtx_wnd: Option<Value>,
    sctp_min_cwnd: Option<Value>,
    skip_external_ip_validation: Option<Value>,
    srflx_acceptance_min_wait: Option<Value>,
    tcp_fallback_rtt_threshold: Option<Value>,
    use_stun_port_as_ice: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "the field list is the schema the strict parser checks; the double acts on few fields"
)]
struct LoggingConfig {
    json: Option<bool>,
    level: Option<String>,
    sample: Option<bool>,
    component_levels: Option<BTreeMap<String, String>>,
    pion_level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "the field list is the schema the strict parser checks; the double acts on few fields"
)]
struct RoomConfig {
    auto_create: Option<bool>,
    enabled_codecs: Option<Vec<CodecSpec>>,
    max_participants: Option<u32>,
    empty_timeout: Option<u32>,
    departure_timeout: Option<u32>,
    enable_remote_unmute: Option<bool>,
    playout_delay: Option<Value>,
    sync_streams: Option<bool>,
    create_room_timeout: Option<Value>,
    create_room_attempts: Option<i64>,
    max_metadata_size: Option<u32>,
    max_room_name_length: Option<i64>,
    max_participant_identity_length: Option<i64>,
    room_configurations: Option<Value>,
    update_batch_target_size: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "the field list is the schema the strict parser checks; the double acts on few fields"
)]
struct TurnConfig {
    enabled: Option<bool>,
    domain: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    tls_port: Option<i64>,
    udp_port: Option<i64>,
    relay_range_start: Option<u16>,
    relay_range_end: Option<u16>,
    external_tls: Option<bool>,
    allow_restricted_peer_cidrs: Option<Value>,
    bind_addresses: Option<Value>,
    deny_peer_cidrs: Option<Value>,
    ttl_seconds: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebHookConfig {
    urls: Option<Vec<String>>,
    api_key: Option<String>,
}

/// Misbehaviour switches (see the file header).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Behaviour {
    #[serde(default)]
    exit_at_start: bool,
    exit_code: Option<u8>,
    crash_after_ms: Option<u64>,
    ready_delay_ms: Option<u64>,
    #[serde(default)]
    ignore_sigterm: bool,
}

const DEFAULT_PORT: u32 = 7880;
const DEFAULT_RTC_TCP_PORT: u32 = 7881;
/// livekit-server's default `limit.max_room_name_length` and
/// `limit.max_participant_identity_length`.
const MAX_NAME_LENGTH: usize = 256;
const MIN_SECRET_LENGTH: usize = 32;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let version = own_version();
    if cli.version {
        println!("livekit-server version {}", version.text);
        return ExitCode::SUCCESS;
    }
    let Some(config) = cli.config.clone() else {
        println!("livekit-server-double: --config is required");
        return ExitCode::from(2);
    };
    let behaviour = match load_behaviour(&config) {
        Ok(b) => b,
        Err(e) => {
            // A broken switch file is a broken test, not a server fault: fail
            // loudly with a status the real server never uses.
            println!("livekit-server-double: {e}");
            return ExitCode::from(97);
        }
    };
    if behaviour.exit_at_start {
        println!("livekit-server-double: exiting at start as double-behaviour.json asks");
        return ExitCode::from(behaviour.exit_code.unwrap_or(0));
    }
    // Every startup error is printed on stdout and the process exits 0,
    // exactly like livekit-server's `main` (it prints the error of `app.Run`).
    match startup(&cli, &config, &version) {
        Ok(server) => run(server, behaviour),
        Err(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
    }
}

fn load_behaviour(config: &Path) -> Result<Behaviour, String> {
    let path = match std::env::var_os("LK_DOUBLE_BEHAVIOUR_FILE") {
        Some(p) => PathBuf::from(p),
        None => config.parent().unwrap_or(Path::new(".")).join("double-behaviour.json"),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Behaviour::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// What `startup` decided: the keys, where to listen, what to log.
struct Server {
    keys: BTreeMap<String, String>,
    redis: Option<RedisConfig>,
    http: Vec<std::net::TcpListener>,
    rtc_tcp: Vec<std::net::TcpListener>,
    rtc_udp: Vec<std::net::UdpSocket>,
    json_logs: bool,
}

fn startup(cli: &Cli, path: &Path, version: &Version) -> Result<Server, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("open {}: {}", path.display(), io_text(&e)))?;
    let config = parse_config(&text)?;
    refuse_newer_keys(&text, version)?;
    let keys = resolve_keys(&config)?;
    check_webhook(&config, &keys)?;
    let development = config.development.unwrap_or(false);
    let json_logs = config.logging.as_ref().and_then(|l| l.json).unwrap_or(false);
    let log = Logger { json: json_logs };
    if !development {
        for key in short_secret_keys(&keys) {
            log.error(
                "secret is too short, should be at least 32 characters for security",
                &[("apiKey", json_str(key))],
            );
        }
    }

    let port = config.port.unwrap_or(DEFAULT_PORT);
    let binds = if cli.bind.is_empty() {
        config.bind_addresses.clone().unwrap_or_default()
    } else {
        cli.bind.clone()
    };
    let rtc = config.rtc.unwrap_or_default();
    let tcp_port = rtc.tcp_port.unwrap_or(DEFAULT_RTC_TCP_PORT);
    let node_ip = cli
        .node_ip
        .clone()
        .or(rtc.node_ip.clone())
        .unwrap_or_else(|| Ipv4Addr::LOCALHOST.to_string());
    let (range_start, range_end) = match (rtc.port_range_start, rtc.port_range_end) {
        (None, None) if rtc.udp_port.is_none() => (50000, 60000),
        (s, e) => (s.unwrap_or(0), e.unwrap_or(0)),
    };
    log.info(
        "starting LiveKit server",
        &[
            ("portHttp", port.to_string()),
            ("nodeIP", json_str(&node_ip)),
            ("version", json_str(&version.text)),
            ("bindAddresses", format!("{binds:?}")),
            ("rtc.portTCP", tcp_port.to_string()),
            ("rtc.portICERange", format!("[{range_start}, {range_end}]")),
        ],
    );

    let ips = bind_ips(&binds)?;
    let listen_tcp = |port: u32| -> Result<Vec<std::net::TcpListener>, String> {
        ips.iter()
            .map(|ip| {
                let addr = SocketAddr::new(*ip, port as u16);
                std::net::TcpListener::bind(addr).map_err(|e| format!("listen tcp {addr}: bind: {}", io_text(&e)))
            })
            .collect()
    };
    let http = listen_tcp(port)?;
    let rtc_tcp = if tcp_port > 0 {
        listen_tcp(tcp_port)?
    } else {
        Vec::new()
    };
    let rtc_udp = match udp_port(rtc.udp_port.as_ref())? {
        Some(p) => ips
            .iter()
            .map(|ip| {
                let addr = SocketAddr::new(*ip, p);
                std::net::UdpSocket::bind(addr).map_err(|e| format!("listen udp {addr}: bind: {}", io_text(&e)))
            })
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    Ok(Server {
        keys,
        redis: config.redis.clone().filter(RedisConfig::is_configured),
        http,
        rtc_tcp,
        rtc_udp,
        json_logs,
    })
}

/// Go's text for the common errors, so log scrapers see the same words.
fn io_text(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::AddrInUse => "address already in use".into(),
        std::io::ErrorKind::AddrNotAvailable => "cannot assign requested address".into(),
        _ => e.to_string(),
    }
}

fn bind_ips(binds: &[String]) -> Result<Vec<IpAddr>, String> {
    if binds.is_empty() || binds.iter().all(String::is_empty) {
        return Ok(vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)]);
    }
    binds
        .iter()
        .map(|b| b.parse().map_err(|_| format!("listen tcp: lookup {b}: no such host")))
        .collect()
}

/// `rtc.udp_port` is a number or a `start-end` range; a range binds its start.
fn udp_port(value: Option<&Value>) -> Result<Option<u16>, String> {
    let text = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err("could not parse config: rtc.udp_port: not a port".into()),
    };
    let first = text.split('-').next().unwrap_or_default().trim();
    match first.parse::<u16>() {
        Ok(0) => Ok(None),
        Ok(p) => Ok(Some(p)),
        Err(_) => Err(format!("could not parse config: invalid udp_port {text}")),
    }
}

/// Parses the config like livekit-server's strict decoder and reports the
/// first problem in its words.
fn parse_config(text: &str) -> Result<Config, String> {
    if text.trim().is_empty() {
        return Ok(Config::default());
    }
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| yaml_error_text(&e))
}

fn yaml_error_text(e: &serde_path_to_error::Error<serde_yaml::Error>) -> String {
    let path = e.path().to_string();
    let line = e.inner().location().map(|l| l.line()).unwrap_or(1);
    let mut message = e.inner().to_string();
    if let Some(i) = message.rfind(" at line ") {
        message.truncate(i);
    }
    // serde_yaml prefixes its message with the path of the enclosing map.
    for marker in ["unknown field `", "invalid type: ", "duplicate field `"] {
        if let Some(i) = message.find(marker) {
            message = message[i..].to_string();
            break;
        }
    }
    let unmarshal =
        |detail: String| format!("could not parse config: yaml: unmarshal errors:\n  line {line}: {detail}");
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or_default();
        let parent = path.rsplit_once('.').map(|(p, _)| p).unwrap_or("");
        return unmarshal(format!("field {field} not found in type {}", go_type(parent)));
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        let (got, want) = rest.split_once(", expected ").unwrap_or((rest, "value"));
        return unmarshal(format!("cannot unmarshal {got} into {want}"));
    }
    if let Some(rest) = message.strip_prefix("duplicate field `") {
        let field = rest.split('`').next().unwrap_or_default();
        return unmarshal(format!("mapping key \"{field}\" already defined"));
    }
    if path == "." || path.is_empty() {
        format!("could not parse config: yaml: line {line}: {message}")
    } else {
        unmarshal(format!("{path}: {message}"))
    }
}

/// The Go type that holds a section, as yaml.v3 names it in its errors.
fn go_type(section: &str) -> &'static str {
    if section.starts_with("rtc.turn_servers") {
        return "config.TURNServer";
    }
    if section.starts_with("room.enabled_codecs") {
        return "config.CodecSpec";
    }
    match section {
        "rtc" => "config.RTCConfig",
        "redis" => "redis.RedisConfig",
        "redis.tls" => "redis.TLSConfig",
        "logging" => "config.LoggingConfig",
        "room" => "config.RoomConfig",
        "turn" => "config.TURNConfig",
        "webhook" => "config.WebHookConfig",
        "prometheus" => "config.PrometheusConfig",
        _ => "config.Config",
    }
}

/// `keys`, or the `key_file` that replaces them (`ValidateKeys`).
fn resolve_keys(config: &Config) -> Result<BTreeMap<String, String>, String> {
    let mapping = match config.key_file.as_deref().filter(|f| !f.is_empty()) {
        Some(file) => read_key_file(Path::new(file))?,
        None => config.keys.clone().unwrap_or_default(),
    };
    let mut keys = BTreeMap::new();
    for (k, v) in &mapping {
        let key = scalar_text(k).ok_or("could not parse config: keys: cannot unmarshal key into string")?;
        let secret = scalar_text(v).ok_or("could not parse config: keys: cannot unmarshal value into string")?;
        keys.insert(key, secret);
    }
    if keys.is_empty() {
        return Err("one of key-file or keys must be provided".into());
    }
    Ok(keys)
}

fn read_key_file(path: &Path) -> Result<serde_yaml::Mapping, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("stat {}: {}", path.display(), io_text(&e)))?;
    if meta.permissions().mode() & 0o007 != 0 {
        return Err("key file others permissions must be set to 0".into());
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("open {}: {}", path.display(), io_text(&e)))?;
    serde_yaml::from_str(&text).map_err(|e| format!("yaml: {e}"))
}

/// yaml.v3 decodes any scalar into a Go string; null becomes "".
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => Some(String::new()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn short_secret_keys(keys: &BTreeMap<String, String>) -> Vec<&str> {
    keys.iter()
        .filter(|(_, s)| s.len() < MIN_SECRET_LENGTH)
        .map(|(k, _)| k.as_str())
        .collect()
}

fn check_webhook(config: &Config, keys: &BTreeMap<String, String>) -> Result<(), String> {
    let Some(webhook) = &config.webhook else {
        return Ok(());
    };
    if webhook.urls.as_ref().is_none_or(Vec::is_empty) {
        return Ok(());
    }
    let known = webhook
        .api_key
        .as_ref()
        .is_some_and(|k| keys.get(k).is_some_and(|s| !s.is_empty()));
    if known {
        Ok(())
    } else {
        Err("api_key is required to use webhooks".into())
    }
}

/// LiveKit's `APIKeyAuthMiddleware`, which wraps every path: the token's
/// claims (`None` without a token), or the 401 it answers. At 1.13.5 a
/// refused token's text echoes the whole token; the double does the same,
/// so that the supervisor's redaction is tested against it too.
fn authenticate(
    keys: &BTreeMap<String, String>,
    authorization: Option<&str>,
    query_token: Option<&str>,
) -> Result<Option<serde_json::Value>, (StatusCode, String)> {
    let unauthorized = |text: String| Err((StatusCode::UNAUTHORIZED, text));
    let token = match authorization {
        Some(h) if !h.is_empty() => match h.strip_prefix("Bearer ") {
            Some(t) => t,
            None => return unauthorized("invalid authorization header. Must start with Bearer ".into()),
        },
        _ => query_token.unwrap_or(""),
    };
    if token.is_empty() {
        return Ok(None);
    }
    let Some(payload) = unverified_payload(token) else {
        return unauthorized("invalid authorization token".into());
    };
    let iss = payload.get("iss").and_then(serde_json::Value::as_str).unwrap_or("");
    let secret = keys.get(iss).map(String::as_str).unwrap_or("");
    if secret.is_empty() {
        return unauthorized(format!("invalid API key: {iss}"));
    }
    if let Err(e) = verify(token, secret, &payload) {
        return unauthorized(format!("invalid token: {token}, error: {e}"));
    }
    Ok(Some(payload))
}

/// Status and plain-text body of `/rtc/validate`, decided from the request
/// and the keys. Mirrors `APIKeyAuthMiddleware` then `RTCService.validate`.
fn validate(
    keys: &BTreeMap<String, String>,
    authorization: Option<&str>,
    query_token: Option<&str>,
    query_room: Option<&str>,
) -> (StatusCode, String) {
    let unauthorized = |text: String| (StatusCode::UNAUTHORIZED, text);
    let grants = match authenticate(keys, authorization, query_token) {
        Ok(g) => g,
        Err(refused) => return refused,
    };
    let Some(video) = grants.as_ref().and_then(|g| g.get("video")).filter(|v| v.is_object()) else {
        return unauthorized("no permissions to access the room".into());
    };
    if video.get("roomJoin").and_then(serde_json::Value::as_bool) != Some(true) {
        return unauthorized("permissions denied".into());
    }
    let identity = grants
        .as_ref()
        .and_then(|g| g.get("sub"))
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    if identity.is_empty() {
        return (StatusCode::BAD_REQUEST, "identity cannot be empty".into());
    }
    if identity.len() > MAX_NAME_LENGTH {
        return (
            StatusCode::BAD_REQUEST,
            format!("participant identity length exceeds limits: max length {MAX_NAME_LENGTH}"),
        );
    }
    let room = video
        .get("room")
        .and_then(serde_json::Value::as_str)
        .filter(|r| !r.is_empty())
        .or(query_room)
        .unwrap_or("");
    if room.is_empty() {
        return (StatusCode::BAD_REQUEST, "no room name".into());
    }
    if room.len() > MAX_NAME_LENGTH {
        return (
            StatusCode::BAD_REQUEST,
            format!("room name length exceeds limits: max length {MAX_NAME_LENGTH}"),
        );
    }
    (StatusCode::OK, "success".into())
}

/// The JWT payload without checking the signature: LiveKit reads `iss` this
/// way to find which secret to verify with. Its parser already refuses a
/// signing method other than HMAC.
fn unverified_payload(token: &str) -> Option<serde_json::Value> {
    let mut parts = token.split('.');
    let (header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let decode = |segment: &str| -> Option<serde_json::Value> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(segment.trim_end_matches('='))
            .ok()?;
        serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .filter(serde_json::Value::is_object)
    };
    let alg = decode(header)?.get("alg")?.as_str()?.to_string();
    ["HS256", "HS384", "HS512"].contains(&alg.as_str()).then_some(())?;
    decode(payload)
}

/// LiveKit's leeway on `exp` and `nbf` (protocol `auth.tokenLeeway`).
const TOKEN_LEEWAY_SECS: i64 = 60;

/// `APIKeyTokenVerifier.Verify` at 1.13.5 (golang-jwt v5 with HMAC methods,
/// the issuer, and a minute of leeway): the signature first, then `exp` and
/// `nbf` when present. A token without `exp` never expires at this release.
/// The error is golang-jwt's wording.
fn verify(token: &str, secret: &str, claims: &serde_json::Value) -> Result<(), &'static str> {
    use hmac::{Hmac, Mac};
    let (signing_input, signature) = token.rsplit_once('.').ok_or("token is malformed")?;
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signature.trim_end_matches('='))
        .map_err(|_| "token is malformed: could not base64 decode signature")?;
    let header = signing_input.split('.').next().unwrap_or_default();
    let alg = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|h| h.get("alg")?.as_str().map(str::to_string))
        .unwrap_or_default();
    let key = secret.as_bytes();
    let input = signing_input.as_bytes();
    let valid = match alg.as_str() {
        "HS384" => Hmac::<sha2::Sha384>::new_from_slice(key)
            .map(|m| m.chain_update(input).verify_slice(&signature).is_ok())
            .unwrap_or(false),
        "HS512" => Hmac::<sha2::Sha512>::new_from_slice(key)
            .map(|m| m.chain_update(input).verify_slice(&signature).is_ok())
            .unwrap_or(false),
        _ => Hmac::<sha2::Sha256>::new_from_slice(key)
            .map(|m| m.chain_update(input).verify_slice(&signature).is_ok())
            .unwrap_or(false),
    };
    if !valid {
        return Err("token signature is invalid: signature is invalid");
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let time = |name: &str| claims.get(name).and_then(serde_json::Value::as_f64).map(|v| v as i64);
    if time("exp").is_some_and(|exp| now > exp + TOKEN_LEEWAY_SECS) {
        return Err("token has invalid claims: token is expired");
    }
    if time("nbf").is_some_and(|nbf| now + TOKEN_LEEWAY_SECS < nbf) {
        return Err("token has invalid claims: token is not valid yet");
    }
    Ok(())
}

/// Console or JSON log lines on stderr, like the real server's zap logger
/// (stdout carries only a startup error, as in the real server).
#[derive(Debug, Clone, Copy)]
struct Logger {
    json: bool,
}

impl Logger {
    fn info(&self, msg: &str, fields: &[(&str, String)]) {
        self.line("INFO", msg, fields);
    }

    fn error(&self, msg: &str, fields: &[(&str, String)]) {
        self.line("ERROR", msg, fields);
    }

    /// `fields` values are already JSON (numbers, quoted strings, arrays).
    fn line(&self, level: &str, msg: &str, fields: &[(&str, String)]) {
        let ts = timestamp();
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
        if self.json {
            let extra: String = body.iter().map(|f| format!(", {f}")).collect();
            eprintln!(
                "{{\"level\": \"{}\", \"ts\": \"{ts}\", \"logger\": \"livekit\", \"msg\": {}{extra}}}",
                level.to_lowercase(),
                json_str(msg)
            );
        } else {
            eprintln!("{ts}\t{level}\tlivekit\t{msg}\t{{{}}}", body.join(", "));
        }
    }
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn timestamp() -> String {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:03}", since.as_secs(), since.subsec_millis())
}

/// Shared by the HTTP handlers.
struct AppState {
    keys: BTreeMap<String, String>,
    ready_at: Instant,
    /// The last PING of the configured Redis answered (always true without one).
    redis_ok: std::sync::atomic::AtomicBool,
    /// Unix seconds of the last moment the node was known healthy (its
    /// start, then each answered PING): LiveKit's node stats' `UpdatedAt`.
    stats_updated: std::sync::atomic::AtomicU64,
}

/// How often the running double PINGs its Redis, and how long one may take.
const REDIS_PING_PERIOD: Duration = Duration::from_millis(500);

fn run(server: Server, behaviour: Behaviour) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            println!("could not start runtime: {e}");
            return ExitCode::SUCCESS;
        }
    };
    runtime.block_on(async move {
        if let Some(redis) = &server.redis {
            if let Err(e) = redis_link::ping(redis, Duration::from_secs(2)).await {
                println!("unable to connect to redis: {}", go_dial_error(redis, &e));
                return ExitCode::SUCCESS;
            }
        }
        serve(server, behaviour).await
    })
}

async fn serve(server: Server, behaviour: Behaviour) -> ExitCode {
    let log = Logger { json: server.json_logs };
    let signals = match ExitSignals::install() {
        Ok(s) => s,
        Err(e) => {
            println!("could not install signal handlers: {e}");
            return ExitCode::SUCCESS;
        }
    };
    let state = Arc::new(AppState {
        keys: server.keys,
        ready_at: Instant::now() + Duration::from_millis(behaviour.ready_delay_ms.unwrap_or(0)),
        redis_ok: std::sync::atomic::AtomicBool::new(true),
        stats_updated: std::sync::atomic::AtomicU64::new(unix_now()),
    });
    if let Some(redis) = server.redis.clone() {
        let state = Arc::clone(&state);
        let log = Logger { json: server.json_logs };
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REDIS_PING_PERIOD).await;
                let ok = redis_link::ping(&redis, REDIS_PING_PERIOD * 2).await;
                let was = state.redis_ok.swap(ok.is_ok(), std::sync::atomic::Ordering::Relaxed);
                if ok.is_ok() {
                    state
                        .stats_updated
                        .store(unix_now(), std::sync::atomic::Ordering::Relaxed);
                }
                match ok {
                    Err(e) if was => log.error("redis ping failed, node stats going stale", &[("error", json_str(&e))]),
                    Ok(()) if !was => log.info("redis answers again", &[]),
                    _ => {}
                }
            }
        });
    }
    let app = Router::new()
        .route("/", get(readiness))
        .route("/rtc/validate", any(rtc_validate))
        .route("/twirp/livekit.RoomService/ListRooms", post(list_rooms))
        .fallback(|| async { (StatusCode::NOT_FOUND, "404 page not found\n") })
        .with_state(state);
    for listener in server.http {
        let app = app.clone();
        let listener = match listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(listener))
        {
            Ok(l) => l,
            Err(e) => {
                println!("could not serve: {e}");
                return ExitCode::SUCCESS;
            }
        };
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                println!("http server stopped: {e}");
            }
        });
    }
    // The RTC sockets are held open, not served: they exist so that a port
    // taken by another process fails startup as it does for the real server.
    let _rtc = (server.rtc_tcp, server.rtc_udp);

    if let Some(ms) = behaviour.crash_after_ms {
        let code = behaviour.exit_code.unwrap_or(2);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            eprintln!("panic: livekit-server-double crashing as double-behaviour.json asks");
            std::process::exit(i32::from(code));
        });
    }
    wait_for_exit_signal(signals, log, behaviour.ignore_sigterm).await
}

/// SIGTERM, SIGINT and SIGQUIT, installed before anything is served so that
/// a signal sent as soon as `GET /` answers is never met by the default
/// action.
struct ExitSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
}

impl ExitSignals {
    fn install() -> std::io::Result<ExitSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(ExitSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
        })
    }
}

async fn wait_for_exit_signal(signals: ExitSignals, log: Logger, ignore_sigterm: bool) -> ExitCode {
    let ExitSignals {
        mut term,
        mut int,
        mut quit,
    } = signals;
    loop {
        let name = tokio::select! {
            _ = term.recv() => "terminated",
            _ = int.recv() => "interrupt",
            _ = quit.recv() => "quit",
        };
        if ignore_sigterm {
            log.info(
                "ignoring signal as double-behaviour.json asks",
                &[("signal", json_str(name))],
            );
            continue;
        }
        log.info("exit requested, shutting down", &[("signal", json_str(name))]);
        return ExitCode::SUCCESS;
    }
}

async fn readiness(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<ValidateQuery>,
) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if let Err((status, body)) = authenticate(&state.keys, authorization, query.access_token.as_deref()) {
        return text(status, body);
    }
    if Instant::now() < state.ready_at || !state.redis_ok.load(std::sync::atomic::Ordering::Relaxed) {
        // LiveKit's `healthCheck`: the time its node stats were last
        // updated, as Go prints a `time.Time` in UTC.
        let updated = state.stats_updated.load(std::sync::atomic::Ordering::Relaxed);
        return text(
            StatusCode::NOT_ACCEPTABLE,
            format!("Not Ready\nNode Updated At {}", go_utc_time(updated)),
        );
    }
    text(StatusCode::OK, "OK".into())
}

/// `2026-12-07 17:35:39 +0000 UTC`: Go's `time.Time.String()` in UTC for
/// whole seconds since the epoch.
fn go_utc_time(unix: u64) -> String {
    let (days, secs) = (unix / 86_400, unix % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} +0000 UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// go-redis's words for a refused connection to a plain address (`dial
/// tcp 127.0.0.1:6379: connect: connection refused`); other failures keep
/// the Rust client's words.
fn go_dial_error(redis: &RedisConfig, error: &str) -> String {
    let plain = redis.sentinel_addresses.as_ref().is_none_or(Vec::is_empty)
        && redis.cluster_addresses.as_ref().is_none_or(Vec::is_empty);
    match redis.address.as_deref() {
        Some(address) if plain && error.contains("Connection refused") => {
            format!("dial tcp {address}: connect: connection refused")
        }
        _ => error.to_string(),
    }
}

/// Twirp `RoomService.ListRooms`: the middleware's refusals as plain text,
/// a missing `roomList` grant as Twirp's JSON error. The double has no
/// rooms.
async fn list_rooms(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<ValidateQuery>,
) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let grants = match authenticate(&state.keys, authorization, query.access_token.as_deref()) {
        Ok(g) => g,
        Err((status, body)) => return text(status, body),
    };
    let listed = grants
        .as_ref()
        .and_then(|g| g.get("video"))
        .and_then(|v| v.get("roomList"))
        .and_then(serde_json::Value::as_bool)
        == Some(true);
    let (status, body) = if listed {
        (StatusCode::OK, r#"{"rooms":[]}"#)
    } else {
        (
            StatusCode::UNAUTHORIZED,
            r#"{"code":"unauthenticated","msg":"permissions denied"}"#,
        )
    };
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[derive(Debug, Deserialize)]
struct ValidateQuery {
    access_token: Option<String>,
    room: Option<String>,
}

async fn rtc_validate(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<ValidateQuery>,
) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let (status, body) = validate(
        &state.keys,
        authorization,
        query.access_token.as_deref(),
        query.room.as_deref(),
    );
    let mut resp = text(status, body);
    // LiveKit sets this on /rtc/validate so browsers can probe it.
    resp.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        header::HeaderValue::from_static("*"),
    );
    resp
}

fn text(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_reported_with_line_and_go_type() {
        let table = [
            (
                "port: 7880\nfoo: 1\n",
                "line 2: field foo not found in type config.Config",
            ),
            (
                "rtc:\n  tcp_port: 7881\n  bogus: 1\n",
                "line 3: field bogus not found in type config.RTCConfig",
            ),
            (
                "redis:\n  addr: x\n",
                "line 2: field addr not found in type redis.RedisConfig",
            ),
            (
                "logging:\n  colour: true\n",
                "line 2: field colour not found in type config.LoggingConfig",
            ),
            ("port: abc\n", "line 1: cannot unmarshal string \"abc\" into u32"),
        ];
        for (yaml, expected) in table {
            let err = parse_config(yaml).expect_err(yaml);
            assert!(
                err.starts_with("could not parse config: yaml: unmarshal errors:\n  "),
                "{err}"
            );
            assert!(err.ends_with(expected), "{yaml}: {err}");
        }
    }

    #[test]
    fn a_config_as_the_supervisor_writes_it_parses() {
        let yaml = "port: 7880\nbind_addresses:\n  - 127.0.0.1\nrtc:\n  tcp_port: 7881\n  port_range_start: 50000\n  port_range_end: 60000\n  use_external_ip: false\nredis:\n  address: 127.0.0.1:6379\nkeys:\n  APIabc: secretsecretsecretsecretsecretsecret\nlogging:\n  level: info\n  json: false\nroom:\n  auto_create: true\n";
        let c = parse_config(yaml).expect("parses");
        assert_eq!(c.port, Some(7880));
        let keys = resolve_keys(&c).expect("keys");
        assert_eq!(
            keys.get("APIabc").map(String::as_str),
            Some("secretsecretsecretsecretsecretsecret")
        );
    }

    #[test]
    fn keys_are_required_and_scalars_become_strings() {
        let c = parse_config("port: 1\n").expect("parses");
        assert_eq!(
            resolve_keys(&c).expect_err("no keys"),
            "one of key-file or keys must be provided"
        );
        let c = parse_config("keys:\n  k1: 12345\n  k2:\n").expect("parses");
        let keys = resolve_keys(&c).expect("keys");
        assert_eq!(keys["k1"], "12345");
        assert_eq!(keys["k2"], "");
    }

    #[test]
    fn webhook_needs_a_known_key() {
        let keys: BTreeMap<String, String> = [("k".to_string(), "s".repeat(40))].into();
        let with = |yaml: &str| check_webhook(&parse_config(yaml).expect("parses"), &keys);
        assert!(with("webhook:\n  urls: [http://x]\n").is_err());
        assert!(with("webhook:\n  urls: [http://x]\n  api_key: other\n").is_err());
        assert!(with("webhook:\n  urls: [http://x]\n  api_key: k\n").is_ok());
        assert!(with("webhook:\n  api_key: nothing\n").is_ok());
    }

    #[test]
    fn missing_token_and_bad_header_get_livekits_texts() {
        let keys = BTreeMap::new();
        assert_eq!(
            validate(&keys, None, None, None),
            (StatusCode::UNAUTHORIZED, "no permissions to access the room".into())
        );
        assert_eq!(
            validate(&keys, Some("Basic abc"), None, None),
            (
                StatusCode::UNAUTHORIZED,
                "invalid authorization header. Must start with Bearer ".into()
            )
        );
        assert_eq!(
            validate(&keys, None, Some("not-a-jwt"), None),
            (StatusCode::UNAUTHORIZED, "invalid authorization token".into())
        );
    }
}
