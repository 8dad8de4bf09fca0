//! The production settings of livekit-server (`bind_addresses`, STUN and
//! TURN, webhooks, rooms, logging, Prometheus, region): typed, validated,
//! rendered into `livekit.yaml` and `runtime.json`, and gated by the
//! livekit-server version the renderings target.
//!
//! Nothing outside this typed surface reaches `livekit.yaml`: livekit-server
//! parses its file strictly, so a key it does not know stops it. For the
//! same reason a key newer than the installed binary is left out of the
//! rendering (the table's `since`, [`version_needed`]), and `configure`
//! refuses to set one.
//!
//! `webhook.api_key` is not a setting: it is always the active API key,
//! rendered from the one credential, since livekit-server refuses to start
//! when it names a key that is not in `keys`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv6Addr};

use hero_livekit_proto::{fields, ConfigShowResult, ConfigureParams, SettingShow, TurnServerParam, UdpPortParam};
use serde_json::{json, Map, Value as Json};
use serde_yaml::Value as Yaml;

use super::model::{
    Config, Secret, DEFAULT_BACKEND_PORT, DEFAULT_DOMAIN, DEFAULT_PORT, DEFAULT_RTC_PORT_RANGE_END,
    DEFAULT_RTC_PORT_RANGE_START, DEFAULT_RTC_TCP_PORT,
};
pub use super::model::{LivekitVersion, Settings, TurnAuth, TurnServer, UdpPort};
use super::rules::{self, given, given_list, is_hostname, no_template, push_quoted, validate_port, ValidationError};

/// The release `key` needs, when some 1.x release does not accept it: the
/// table's `since` of the fields rendered at or under `key` (a key names
/// itself and everything under it).
pub fn version_needed(key: &str) -> Option<LivekitVersion> {
    let under = |a: &str, b: &str| a.strip_prefix(b).is_some_and(|rest| rest.starts_with('.'));
    fields::CONFIGURE_FIELDS
        .iter()
        .filter_map(|f| Some((f.livekit_key?, f.since?)))
        .filter(|(k, _)| *k == key || under(k, key) || under(key, k))
        .map(|(_, v)| LivekitVersion::new(v.major, v.minor, v.patch))
        .min()
}

/// Whether a binary of version `target` accepts `key`. An unknown target
/// (no binary, or one that does not say) is taken as the newest.
pub fn accepts(target: Option<LivekitVersion>, key: &str) -> bool {
    match (target, version_needed(key)) {
        (Some(t), Some(needed)) => t >= needed,
        _ => true,
    }
}

/// The settings' `configure` names, in `runtime.json` order: the table's.
pub const FIELDS: [&str; fields::SETTINGS.len()] = fields::SETTINGS;

/// Fields `runtime.json` records only when set: they came after files were
/// in the field, and a config that does not use them keeps the bytes (and
/// the `in_memory_hash`) it had before.
const JSON_WHEN_SET: [&str; 1] = ["rtc_enable_loopback_candidate"];

/// The value `runtime.json` holds for `field`, `None` when it leaves the
/// field out.
fn json_entry(map: &Map<String, Json>, field: &str) -> Option<Json> {
    let v = map.get(field).cloned().unwrap_or(Json::Null);
    (!(JSON_WHEN_SET.contains(&field) && v == Json::Bool(false))).then_some(v)
}

/// The `runtime.json` key recording the version the renderings target.
pub const VERSION_KEY: &str = "livekit_version";

/// livekit-server's defaults for what `config show` compares with.
pub const DEFAULT_TURN_TLS_PORT: u16 = 5349;
pub const DEFAULT_TURN_UDP_PORT: u16 = 3478;
pub const DEFAULT_ROOM_EMPTY_TIMEOUT: u32 = 300;
pub const DEFAULT_ROOM_DEPARTURE_TIMEOUT: u32 = 20;
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// Log levels livekit-server accepts.
pub const LOG_LEVELS: [&str; 4] = ["debug", "info", "warn", "error"];

/// Codec MIME types livekit-server knows (protocol `mime` package), as
/// `room.enabled_codecs[].mime` takes them.
pub const CODECS: [&str; 9] = [
    "audio/opus",
    "audio/red",
    "audio/pcmu",
    "audio/pcma",
    "video/vp8",
    "video/vp9",
    "video/h264",
    "video/h265",
    "video/av1",
];

const MAX_LIST: usize = 16;

// ------------------------------------------------------------ validation

/// Whether `configure` checks that certificate files exist. Loading a
/// config from `runtime.json` does not: a certificate that is renewed (or
/// briefly missing) must not throw the TURN settings away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Files {
    Check,
    Skip,
}

fn invalid(field: &'static str, rule: impl Into<String>) -> ValidationError {
    ValidationError::new(field, rule)
}

/// A string free of anything that could break out of a quoted value or a
/// line, at most `max` long.
fn plain(field: &'static str, s: &str, max: usize) -> Result<(), ValidationError> {
    if s.chars()
        .any(|c| c.is_control() || c == '"' || c == '\\' || c.is_whitespace())
    {
        return Err(invalid(
            field,
            "may not contain whitespace, quotes, backslashes or control characters",
        ));
    }
    if s.is_empty() || s.len() > max {
        return Err(invalid(field, format!("must be 1-{max} characters long")));
    }
    Ok(())
}

fn charset(field: &'static str, s: &str, max: usize, extra: &str) -> Result<(), ValidationError> {
    if s.is_empty() || s.len() > max || !s.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(c)) {
        return Err(invalid(
            field,
            format!("must be 1-{max} characters of [A-Za-z0-9{extra}]"),
        ));
    }
    Ok(())
}

fn list<'a>(field: &'static str, items: &'a [String]) -> Result<&'a [String], ValidationError> {
    if items.len() > MAX_LIST {
        return Err(invalid(field, format!("may hold at most {MAX_LIST} entries")));
    }
    let distinct: BTreeSet<&String> = items.iter().collect();
    if distinct.len() != items.len() {
        return Err(invalid(field, "may not repeat an entry"));
    }
    Ok(items)
}

fn host_or_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok() || is_hostname(s)
}

/// `host:port`, `[v6]:port`.
fn host_port(field: &'static str, s: &str) -> Result<(), ValidationError> {
    let bad = || {
        invalid(
            field,
            "each entry must be host:port (IPv6 as [addr]:port) with port 1-65535",
        )
    };
    let (host_ok, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:").ok_or_else(bad)?;
        (h.parse::<Ipv6Addr>().is_ok(), p)
    } else {
        let (h, p) = s.rsplit_once(':').ok_or_else(bad)?;
        (!h.contains(':') && host_or_ip(h), p)
    };
    let port_ok =
        !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok_and(|p| p != 0);
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

fn udp_port(p: &UdpPortParam) -> Result<UdpPort, ValidationError> {
    let bad = || invalid("rtc_udp_port", "must be a port 1-65535 or a range start-end of them");
    let one = |t: &str| -> Result<u16, ValidationError> {
        let t = t.trim();
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        t.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(bad)
    };
    let (start, end) = match p {
        UdpPortParam::Port(n) => {
            let p = validate_port("rtc_udp_port", *n)?;
            (p, p)
        }
        UdpPortParam::Text(t) => match t.split_once('-') {
            Some((a, b)) => (one(a)?, one(b)?),
            None => {
                let p = one(t)?;
                (p, p)
            }
        },
    };
    if start > end {
        return Err(invalid("rtc_udp_port", "the range start must not exceed its end"));
    }
    Ok(UdpPort { start, end })
}

fn turn_server(t: &TurnServerParam) -> Result<TurnServer, ValidationError> {
    const F: &str = "turn_servers";
    for s in [
        Some(&t.host),
        t.username.as_ref(),
        t.credential.as_ref(),
        t.secret.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        no_template(F, s)?;
    }
    if !host_or_ip(&t.host) {
        return Err(invalid(F, "host must be a hostname or an IP address"));
    }
    let port = validate_port(F, t.port)?;
    if !["udp", "tcp", "tls"].contains(&t.protocol.as_str()) {
        return Err(invalid(F, "protocol must be udp, tcp or tls"));
    }
    let secret_ok = |s: &str| {
        plain(F, s, 256).map_err(|_| {
            invalid(
                F,
                "credential and secret must be 1-256 characters without whitespace, quotes or control characters",
            )
        })
    };
    let auth = match (&t.username, &t.credential, &t.secret) {
        (Some(u), Some(c), None) => {
            plain(F, u, 128).map_err(|_| {
                invalid(
                    F,
                    "username must be 1-128 characters without whitespace, quotes or control characters",
                )
            })?;
            secret_ok(c)?;
            TurnAuth::Credential {
                username: u.clone(),
                credential: Secret::new(c.clone()),
            }
        }
        (None, None, Some(s)) => {
            secret_ok(s)?;
            TurnAuth::Secret(Secret::new(s.clone()))
        }
        _ => return Err(invalid(F, "each entry needs username and credential, or secret alone")),
    };
    Ok(TurnServer {
        host: t.host.clone(),
        port,
        protocol: t.protocol.clone(),
        auth,
    })
}

fn readable_file(field: &'static str, path: &str, files: Files) -> Result<(), ValidationError> {
    if !path.starts_with('/') {
        return Err(invalid(field, "must be an absolute path"));
    }
    if path.len() > 4096 || path.chars().any(char::is_control) {
        return Err(invalid(
            field,
            "must be a path of at most 4096 characters without control characters",
        ));
    }
    if files == Files::Skip {
        return Ok(());
    }
    match std::fs::File::open(path).and_then(|f| f.metadata()) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(invalid(field, "must name a regular file")),
        Err(e) => Err(invalid(
            field,
            format!("must name a file the daemon can read ({})", e.kind()),
        )),
    }
}

fn webhook_url(u: &str) -> Result<(), ValidationError> {
    const F: &str = "webhook_urls";
    plain(F, u, 2048)?;
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"))
        .ok_or_else(|| invalid(F, "each entry must be an http:// or https:// URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map(|(h, _)| h.parse::<Ipv6Addr>().is_ok()),
        None => {
            let h = authority.rsplit_once(':').map_or(authority, |(h, p)| {
                if p.bytes().all(|b| b.is_ascii_digit()) {
                    h
                } else {
                    authority
                }
            });
            Some(host_or_ip(h))
        }
    };
    if host != Some(true) || authority.contains('@') {
        return Err(invalid(F, "each entry must name a host (hostname or IP, no user info)"));
    }
    Ok(())
}

/// A given list of structured entries: `None` when absent or empty (keeps
/// the value).
fn given_entries<T>(v: &Option<Vec<T>>) -> Option<&[T]> {
    v.as_deref().filter(|l| !l.is_empty())
}

/// A given `rtc_udp_port`: `None` when absent or an empty string (keeps).
fn given_udp_port(v: &Option<UdpPortParam>) -> Result<Option<&UdpPortParam>, ValidationError> {
    match v {
        Some(UdpPortParam::Text(t)) => Ok(given("rtc_udp_port", Some(t))?.and(v.as_ref())),
        other => Ok(other.as_ref()),
    }
}

/// Merges the settings of `p` into `base`: each given value validated on
/// its own, then `unset` applied. Rules across fields are
/// [`validate_cross`]'s.
///
/// # Errors
/// The first rule broken, naming its field.
pub fn apply_params(
    base: &Settings,
    p: &ConfigureParams,
    unset: &[String],
    files: Files,
) -> Result<Settings, ValidationError> {
    let mut s = base.clone();
    if let Some(l) = given_list("bind_addresses", p.bind_addresses.as_deref())? {
        for a in list("bind_addresses", l)? {
            if a.parse::<IpAddr>().is_err() {
                return Err(invalid("bind_addresses", "each entry must be an IPv4 or IPv6 address"));
            }
        }
        s.bind_addresses = l.to_vec();
    }
    if let Some(b) = p.use_external_ip {
        s.use_external_ip = b;
    }
    if let Some(b) = p.rtc_enable_loopback_candidate {
        s.rtc_enable_loopback_candidate = b;
    }
    if let Some(u) = given_udp_port(&p.rtc_udp_port)? {
        s.rtc_udp_port = Some(udp_port(u)?);
    }
    if let Some(l) = given_list("stun_servers", p.stun_servers.as_deref())? {
        for h in list("stun_servers", l)? {
            host_port("stun_servers", h)?;
        }
        s.stun_servers = l.to_vec();
    }
    if let Some(l) = given_entries(&p.turn_servers) {
        if l.len() > MAX_LIST {
            return Err(invalid("turn_servers", format!("may hold at most {MAX_LIST} entries")));
        }
        s.turn_servers = l.iter().map(turn_server).collect::<Result<_, _>>()?;
    }
    if let Some(b) = p.turn_enabled {
        s.turn_enabled = b;
    }
    if let Some(d) = given("turn_domain", p.turn_domain.as_deref())? {
        if !is_hostname(d) {
            return Err(invalid(
                "turn_domain",
                "must be a hostname (RFC 1123): TURN/TLS clients check the certificate against it",
            ));
        }
        s.turn_domain = Some(d.to_string());
    }
    if let Some(v) = p.turn_tls_port {
        s.turn_tls_port = Some(validate_port("turn_tls_port", v)?);
    }
    if let Some(v) = p.turn_udp_port {
        s.turn_udp_port = Some(validate_port("turn_udp_port", v)?);
    }
    if let Some(b) = p.turn_external_tls {
        s.turn_external_tls = b;
    }
    if let Some(f) = given("turn_cert_file", p.turn_cert_file.as_deref())? {
        readable_file("turn_cert_file", f, files)?;
        s.turn_cert_file = Some(f.to_string());
    }
    if let Some(f) = given("turn_key_file", p.turn_key_file.as_deref())? {
        readable_file("turn_key_file", f, files)?;
        s.turn_key_file = Some(f.to_string());
    }
    if let Some(l) = given_list("webhook_urls", p.webhook_urls.as_deref())? {
        for u in list("webhook_urls", l)? {
            webhook_url(u)?;
        }
        s.webhook_urls = l.to_vec();
    }
    if let Some(b) = p.room_auto_create {
        s.room_auto_create = Some(b);
    }
    if let Some(v) = p.room_empty_timeout {
        s.room_empty_timeout = Some(v);
    }
    if let Some(v) = p.room_departure_timeout {
        s.room_departure_timeout = Some(v);
    }
    if let Some(v) = p.room_max_participants {
        s.room_max_participants = Some(v);
    }
    if let Some(l) = given_list("room_enabled_codecs", p.room_enabled_codecs.as_deref())? {
        for c in list("room_enabled_codecs", l)? {
            if !CODECS.contains(&c.as_str()) {
                return Err(invalid(
                    "room_enabled_codecs",
                    format!("each entry must be one of {}", CODECS.join(", ")),
                ));
            }
        }
        s.room_enabled_codecs = l.to_vec();
    }
    if let Some(l) = given("log_level", p.log_level.as_deref())? {
        if !LOG_LEVELS.contains(&l) {
            return Err(invalid(
                "log_level",
                format!("must be one of {}", LOG_LEVELS.join(", ")),
            ));
        }
        s.log_level = Some(l.to_string());
    }
    if let Some(b) = p.log_json {
        s.log_json = b;
    }
    if let Some(v) = p.prometheus_port {
        s.prometheus_port = Some(validate_port("prometheus_port", v)?);
    }
    if let Some(u) = given("prometheus_username", p.prometheus_username.as_deref())? {
        charset("prometheus_username", u, 64, "_.-")?;
        s.prometheus_username = Some(u.to_string());
    }
    if let Some(pw) = given("prometheus_password", p.prometheus_password.as_deref())? {
        plain("prometheus_password", pw, 256)?;
        s.prometheus_password = Some(Secret::new(pw));
    }
    if let Some(r) = given("region", p.region.as_deref())? {
        charset("region", r, 64, "_-")?;
        s.region = Some(r.to_string());
    }
    let wire = rules::wire(p);
    for name in unset {
        let Some(&field) = FIELDS.iter().find(|f| **f == name.as_str()) else {
            continue;
        };
        if rules::given_in(&wire, field) {
            return Err(invalid(field, "is both given a value and unset; pick one"));
        }
        reset(&mut s, field);
    }
    Ok(s)
}

/// Returns `field` to "not set": the settings read back without it.
fn reset(s: &mut Settings, field: &str) {
    let entries: Vec<(String, Json)> = to_json(s).into_iter().filter(|(k, _)| k != field).collect();
    *s = from_json(&entries);
}

/// The fields whose value differs between two settings, in [`FIELDS`] order.
pub fn changed(old: &Settings, new: &Settings) -> Vec<String> {
    let (a, b) = (to_json(old), to_json(new));
    FIELDS
        .iter()
        .filter(|f| a.get(**f) != b.get(**f))
        .map(|f| f.to_string())
        .collect()
}

/// Picks which of two clashing fields to name: the one the caller changed.
fn pick(prefer: &[&str], a: &'static str, b: &'static str) -> (&'static str, &'static str) {
    if prefer.contains(&b) && !prefer.contains(&a) {
        (b, a)
    } else {
        (a, b)
    }
}

/// Rules across fields: no port shared by two listeners of the same
/// protocol (TURN's included, when TURN is on), the TURN TLS choice (a
/// proxy in front, or a cert pair: not both, and one of them when TURN is
/// on), the Prometheus credentials as a pair on a configured port. When
/// two fields clash, the one in `prefer` (just changed) is named.
///
/// # Errors
/// The first rule broken.
pub fn validate_cross(c: &Config, prefer: &[&str]) -> Result<(), ValidationError> {
    let s = &c.settings;
    let mut tcp: Vec<(&'static str, u16)> = vec![
        ("port", c.port),
        ("rtc_tcp_port", c.rtc_tcp_port),
        ("backend_port", c.backend_port),
    ];
    if let Some(p) = s.prometheus_port {
        tcp.push(("prometheus_port", p));
    }
    if s.turn_enabled {
        tcp.push(("turn_tls_port", s.turn_tls_port.unwrap_or(DEFAULT_TURN_TLS_PORT)));
    }
    // The first three are checked against each other by the core rules.
    for i in 0..tcp.len() {
        for j in (i + 1).max(3)..tcp.len() {
            let ((a, pa), (b, pb)) = (tcp[i], tcp[j]);
            if pa == pb {
                let (field, other) = pick(prefer, b, a);
                return Err(invalid(
                    field,
                    format!("must differ from {other} (both are TCP port {pa})"),
                ));
            }
        }
    }
    if s.turn_enabled {
        let turn_udp = s.turn_udp_port.unwrap_or(DEFAULT_TURN_UDP_PORT);
        let (other, range) = match s.rtc_udp_port {
            Some(u) => ("rtc_udp_port", u),
            None => (
                "rtc_port_range_start",
                UdpPort {
                    start: c.rtc_port_range_start,
                    end: c.rtc_port_range_end,
                },
            ),
        };
        if range.contains(turn_udp) {
            let (field, other) = pick(prefer, "turn_udp_port", other);
            return Err(invalid(
                field,
                format!("must not overlap {other}: UDP port {turn_udp} is the media's"),
            ));
        }
    }
    match (&s.turn_cert_file, &s.turn_key_file) {
        (Some(_), None) => return Err(invalid("turn_key_file", "is needed with turn_cert_file")),
        (None, Some(_)) => return Err(invalid("turn_cert_file", "is needed with turn_key_file")),
        _ => {}
    }
    let cert_pair = s.turn_cert_file.is_some();
    if s.turn_external_tls && cert_pair {
        let field = if prefer.contains(&"turn_external_tls") {
            "turn_external_tls"
        } else {
            "turn_cert_file"
        };
        return Err(invalid(field, "TLS for TURN is either ended by a proxy (turn_external_tls) or by livekit-server with turn_cert_file/turn_key_file, not both"));
    }
    if s.turn_enabled {
        if s.turn_domain.is_none() {
            return Err(invalid("turn_domain", "is needed when turn_enabled is true"));
        }
        if !s.turn_external_tls && !cert_pair {
            return Err(invalid(
                "turn_enabled",
                "TURN/TLS needs turn_external_tls (TLS ended by a proxy) or turn_cert_file and turn_key_file",
            ));
        }
    }
    match (&s.prometheus_username, &s.prometheus_password) {
        (Some(_), None) => return Err(invalid("prometheus_password", "is needed with prometheus_username")),
        (None, Some(_)) => return Err(invalid("prometheus_username", "is needed with prometheus_password")),
        (Some(_), Some(_)) if s.prometheus_port.is_none() => {
            return Err(invalid(
                "prometheus_port",
                "is needed with prometheus_username/prometheus_password",
            ))
        }
        _ => {}
    }
    Ok(())
}

/// Whether `s` is what validated input makes: each value passes its own rule.
///
/// # Errors
/// The first rule broken.
pub fn validate_fields(s: &Settings) -> Result<(), ValidationError> {
    let params = to_params(s)?;
    let back = apply_params(&Settings::default(), &params, &[], Files::Skip)?;
    if back == *s {
        Ok(())
    } else {
        // Only a hand-built value can get here (an empty string in a field
        // that validated input never leaves empty).
        let field = FIELDS
            .iter()
            .copied()
            .find(|f| changed(&back, s).iter().any(|c| c == f))
            .unwrap_or("unset");
        Err(invalid(field, "is not a value configure accepts"))
    }
}

/// Refuses to set what the target binary does not read.
///
/// # Errors
/// The first given field whose key is newer than `target`, naming the
/// version it needs.
pub fn validate_target(p: &ConfigureParams, target: Option<LivekitVersion>) -> Result<(), ValidationError> {
    let wire = rules::wire(p);
    for field in FIELDS {
        if !rules::given_in(&wire, field) {
            continue;
        }
        let Some(key) = livekit_key(field, None) else { continue };
        if accepts(target, &key) || fallback_key(field).is_some() {
            continue;
        }
        if let (Some(t), Some(needed)) = (target, version_needed(&key)) {
            return Err(invalid(
                field,
                format!("needs livekit-server {needed} or later for `{key}` (the installed one is {t}); run `hero_livekit install` first"),
            ));
        }
    }
    Ok(())
}

// ------------------------------------------------------------ keys

/// The `livekit.yaml` key a field is rendered as for `target` (`None`: the
/// newest), when livekit-server reads it: the table's key, or the older key
/// a target before the key's release reads instead.
pub fn livekit_key(field: &str, target: Option<LivekitVersion>) -> Option<String> {
    let f = fields::field(field)?;
    let key = f.livekit_key?;
    if accepts(target, key) {
        Some(key.to_string())
    } else {
        f.older_key.map(str::to_string)
    }
}

/// The older key a field is rendered as when the target predates its own.
fn fallback_key(field: &str) -> Option<&'static str> {
    fields::field(field).and_then(|f| f.older_key)
}

// ------------------------------------------------------------ renderings

/// The settings as `configure` parameters (secrets included: for
/// re-validation only): `runtime.json`'s form is the parameters' own.
fn to_params(s: &Settings) -> Result<ConfigureParams, ValidationError> {
    serde_json::from_value(Json::Object(to_json(s))).map_err(|_| invalid("unset", "a setting has no configure form"))
}

/// Each field's value in `runtime.json` form: the `configure` parameter's
/// JSON, `null`/`false`/`[]` when not set. Secrets in clear (the file is
/// 0600, like the API secret in it).
pub fn to_json(s: &Settings) -> Map<String, Json> {
    to_json_with(s, false)
}

fn to_json_with(s: &Settings, redact: bool) -> Map<String, Json> {
    let mut map = match serde_json::to_value(s) {
        Ok(Json::Object(m)) => m,
        _ => Map::new(),
    };
    if redact {
        for f in fields::secrets() {
            if let Some(v) = map.get_mut(f).filter(|v| !v.is_null()) {
                *v = json!("set");
            }
        }
        let turn = map.get_mut("turn_servers").and_then(Json::as_array_mut);
        for server in turn.into_iter().flatten().filter_map(Json::as_object_mut) {
            for k in ["credential", "secret"] {
                if let Some(v) = server.get_mut(k) {
                    *v = json!("set");
                }
            }
        }
    }
    map
}

/// The lines `runtime.json` holds for the settings and the target version,
/// each `  "key": <compact JSON>,\n`, in [`FIELDS`] order.
pub(crate) fn render_runtime_json(out: &mut String, c: &Config) {
    let map = to_json(&c.settings);
    for f in FIELDS {
        if let Some(v) = json_entry(&map, f) {
            let _ = writeln!(out, "  \"{f}\": {v},");
        }
    }
    let version = c.livekit_version.map(|v| v.to_string()).unwrap_or_default();
    let _ = write!(out, "  \"{VERSION_KEY}\": ");
    push_quoted(out, &version);
    out.push_str(",\n");
}

/// Reads the settings back from `runtime.json`'s entries, leniently: each
/// value that is what `configure` would accept is kept, any other is left
/// at its default, so that one bad value does not cost the others. An old
/// file without the settings gives the defaults.
pub(crate) fn from_json(entries: &[(String, Json)]) -> Settings {
    let mut s = Settings::default();
    for (k, v) in entries {
        if v.is_null() || !FIELDS.contains(&k.as_str()) {
            continue;
        }
        let mut one = Map::new();
        one.insert(k.clone(), v.clone());
        let Ok(p) = serde_json::from_value::<ConfigureParams>(Json::Object(one)) else {
            continue;
        };
        if let Ok(next) = apply_params(&s, &p, &[], Files::Skip) {
            s = next;
        }
    }
    s
}

fn yaml_list(out: &mut String, indent: &str, key: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    let _ = writeln!(out, "{indent}{key}:");
    for i in items {
        let _ = write!(out, "{indent}  - ");
        push_quoted(out, i);
        out.push('\n');
    }
}

fn yaml_str(out: &mut String, indent: &str, key: &str, v: &str) {
    let _ = write!(out, "{indent}{key}: ");
    push_quoted(out, v);
    out.push('\n');
}

/// `bind_addresses`, after `port`.
pub(crate) fn render_yaml_top(out: &mut String, c: &Config) {
    yaml_list(out, "", "bind_addresses", &c.settings.bind_addresses);
}

/// The `rtc` keys beyond the ports and `node_ip`.
pub(crate) fn render_yaml_rtc(out: &mut String, c: &Config) {
    let s = &c.settings;
    if s.rtc_enable_loopback_candidate && accepts(c.livekit_version, "rtc.enable_loopback_candidate") {
        out.push_str("  enable_loopback_candidate: true\n");
    }
    if let Some(u) = s.rtc_udp_port {
        let _ = writeln!(out, "  udp_port: {}", u.to_json());
    }
    yaml_list(out, "  ", "stun_servers", &s.stun_servers);
    if !s.turn_servers.is_empty() {
        out.push_str("  turn_servers:\n");
        for t in &s.turn_servers {
            yaml_str(out, "    - ", "host", &t.host);
            let _ = writeln!(out, "      port: {}", t.port);
            yaml_str(out, "      ", "protocol", &t.protocol);
            match &t.auth {
                TurnAuth::Credential { username, credential } => {
                    yaml_str(out, "      ", "username", username);
                    yaml_str(out, "      ", "credential", credential.expose());
                }
                TurnAuth::Secret(secret) => yaml_str(out, "      ", "secret", secret.expose()),
            }
        }
    }
}

/// `logging.level` and `logging.json`, under `logging:`.
pub(crate) fn render_yaml_logging(out: &mut String, c: &Config) {
    let s = &c.settings;
    let _ = writeln!(out, "  level: {}", s.log_level.as_deref().unwrap_or(DEFAULT_LOG_LEVEL));
    if s.log_json {
        out.push_str("  json: true\n");
    }
}

/// The sections after `logging`: `turn`, `webhook`, `room`, `prometheus`
/// (or `prometheus_port` for a target older than it), `region`.
pub(crate) fn render_yaml_tail(out: &mut String, c: &Config) {
    let s = &c.settings;
    let target = c.livekit_version;
    let turn_set = s.turn_enabled
        || s.turn_domain.is_some()
        || s.turn_tls_port.is_some()
        || s.turn_udp_port.is_some()
        || s.turn_external_tls
        || s.turn_cert_file.is_some();
    if turn_set {
        let _ = writeln!(out, "turn:\n  enabled: {}", s.turn_enabled);
        if let Some(d) = &s.turn_domain {
            yaml_str(out, "  ", "domain", d);
        }
        if let Some(p) = s.turn_tls_port {
            let _ = writeln!(out, "  tls_port: {p}");
        }
        if let Some(p) = s.turn_udp_port {
            let _ = writeln!(out, "  udp_port: {p}");
        }
        if s.turn_external_tls {
            out.push_str("  external_tls: true\n");
        }
        if let (Some(cert), Some(key)) = (&s.turn_cert_file, &s.turn_key_file) {
            yaml_str(out, "  ", "cert_file", cert);
            yaml_str(out, "  ", "key_file", key);
        }
    }
    if !s.webhook_urls.is_empty() {
        out.push_str("webhook:\n");
        yaml_str(out, "  ", "api_key", &c.api_key);
        yaml_list(out, "  ", "urls", &s.webhook_urls);
    }
    let room_set = s.room_auto_create.is_some()
        || s.room_empty_timeout.is_some()
        || s.room_departure_timeout.is_some()
        || s.room_max_participants.is_some()
        || !s.room_enabled_codecs.is_empty();
    if room_set {
        out.push_str("room:\n");
        if let Some(b) = s.room_auto_create {
            let _ = writeln!(out, "  auto_create: {b}");
        }
        if let Some(v) = s.room_empty_timeout {
            let _ = writeln!(out, "  empty_timeout: {v}");
        }
        if let Some(v) = s.room_departure_timeout {
            let _ = writeln!(out, "  departure_timeout: {v}");
        }
        if let Some(v) = s.room_max_participants {
            let _ = writeln!(out, "  max_participants: {v}");
        }
        if !s.room_enabled_codecs.is_empty() {
            out.push_str("  enabled_codecs:\n");
            for codec in &s.room_enabled_codecs {
                yaml_str(out, "    - ", "mime", codec);
            }
        }
    }
    if let Some(port) = s.prometheus_port {
        if accepts(target, "prometheus") {
            let _ = writeln!(out, "prometheus:\n  port: {port}");
            if let (Some(u), Some(p)) = (&s.prometheus_username, &s.prometheus_password) {
                yaml_str(out, "  ", "username", u);
                yaml_str(out, "  ", "password", p.expose());
            }
        } else {
            let _ = writeln!(out, "prometheus_port: {port}");
        }
    }
    if let Some(r) = &s.region {
        yaml_str(out, "", "region", r);
    }
}

// ------------------------------------------------------------ drift

/// Top-level `livekit.yaml` keys this module owns; the sections among them
/// are compared key by key.
pub(crate) const YAML_TOP: [&str; 7] = [
    "bind_addresses",
    "turn",
    "webhook",
    "room",
    "prometheus",
    "prometheus_port",
    "region",
];
const YAML_SECTIONS: [&str; 4] = ["turn", "webhook", "room", "prometheus"];
/// `rtc` keys this module owns.
pub(crate) const YAML_RTC: [&str; 4] = ["enable_loopback_candidate", "udp_port", "stun_servers", "turn_servers"];
/// `logging` keys this module owns besides `level`.
pub(crate) const YAML_LOGGING: [&str; 1] = ["json"];

/// The owned entries of a parsed `livekit.yaml`, by dotted path.
fn yaml_owned(doc: &Yaml) -> Vec<(String, Option<&Yaml>)> {
    let mut out = Vec::new();
    let Some(top) = doc.as_mapping() else { return out };
    for k in YAML_TOP {
        let Some(v) = top.get(k) else { continue };
        match (YAML_SECTIONS.contains(&k), v.as_mapping()) {
            (true, Some(m)) => {
                for (sk, sv) in m {
                    let name = sk.as_str().unwrap_or("?");
                    out.push((format!("{k}.{name}"), Some(sv)));
                }
            }
            (true, None) => out.push((k.to_string(), None)),
            (false, _) => out.push((k.to_string(), Some(v))),
        }
    }
    for (section, keys) in [("rtc", &YAML_RTC[..]), ("logging", &YAML_LOGGING[..])] {
        if let Some(m) = top.get(section).and_then(Yaml::as_mapping) {
            for k in keys {
                if let Some(v) = m.get(*k) {
                    out.push((format!("{section}.{k}"), Some(v)));
                }
            }
        }
    }
    out
}

/// Drift sentences for the owned keys of `livekit.yaml`, naming paths only,
/// never values.
pub(crate) fn yaml_drift(observed: &[u8], expected: &[u8]) -> Vec<String> {
    let (Ok(obs), Ok(exp)) = (
        serde_yaml::from_slice::<Yaml>(observed),
        serde_yaml::from_slice::<Yaml>(expected),
    ) else {
        return Vec::new();
    };
    let (obs, exp) = (yaml_owned(&obs), yaml_owned(&exp));
    let mut out = Vec::new();
    for (path, want) in &exp {
        match obs.iter().find(|(p, _)| p == path) {
            None => out.push(format!("{path} missing")),
            Some((_, None)) => out.push(format!("{path} has the wrong type (expected a mapping)")),
            Some((_, got)) if got != want => out.push(format!("{path} differs")),
            _ => {}
        }
    }
    for (path, got) in &obs {
        if !exp.iter().any(|(p, _)| p == path) {
            out.push(match got {
                None => format!("{path} has the wrong type (expected a mapping)"),
                Some(_) => format!("{path} present but not configured"),
            });
        }
    }
    out
}

/// Drift sentences for the settings entries of `runtime.json`.
pub(crate) fn json_drift(observed: &[(String, Json)], c: &Config) -> Vec<String> {
    let mut expected = to_json(&c.settings);
    expected.insert(
        VERSION_KEY.to_string(),
        json!(c.livekit_version.map(|v| v.to_string()).unwrap_or_default()),
    );
    let mut out = Vec::new();
    for key in FIELDS.iter().copied().chain([VERSION_KEY]) {
        let want = json_entry(&expected, key);
        match (observed.iter().find(|(k, _)| k == key), want) {
            (None, None) => {}
            (None, Some(_)) => out.push(format!("{key} missing")),
            (Some(_), None) => out.push(format!("{key} present but not configured")),
            (Some((_, v)), Some(w)) if *v != w => out.push(format!("{key} differs")),
            _ => {}
        }
    }
    out
}

// ------------------------------------------------------------ show

/// `config_show`: every `configure` parameter's effective value (secrets
/// as `set`/`unset`), its default, and the key it is rendered as.
pub fn show(c: &Config) -> ConfigShowResult {
    let target = c.livekit_version;
    let core: [(&str, Json, Json); 10] = [
        ("api_key", json!(c.api_key), Json::Null),
        ("api_secret", json!("set"), json!("unset")),
        ("domain", json!(c.domain), json!(DEFAULT_DOMAIN)),
        ("redis_address", json!(c.redis_address), Json::Null),
        ("port", json!(c.port), json!(DEFAULT_PORT)),
        ("rtc_tcp_port", json!(c.rtc_tcp_port), json!(DEFAULT_RTC_TCP_PORT)),
        (
            "rtc_port_range_start",
            json!(c.rtc_port_range_start),
            json!(DEFAULT_RTC_PORT_RANGE_START),
        ),
        (
            "rtc_port_range_end",
            json!(c.rtc_port_range_end),
            json!(DEFAULT_RTC_PORT_RANGE_END),
        ),
        ("node_ip", json!(c.node_ip), Json::Null),
        ("backend_port", json!(c.backend_port), json!(DEFAULT_BACKEND_PORT)),
    ];
    let r = &c.redis;
    let secret = |v: &Option<Secret>| json!(if v.is_some() { "set" } else { "unset" });
    let redis: [(&str, Json, Json); 13] = [
        ("redis_username", json!(r.username), Json::Null),
        ("redis_password", secret(&r.password), json!("unset")),
        ("redis_db", json!(r.db), json!(0)),
        ("redis_tls", json!(r.tls), json!(false)),
        ("redis_tls_ca_file", json!(r.tls_ca_file), Json::Null),
        ("redis_tls_server_name", json!(r.tls_server_name), Json::Null),
        ("redis_tls_cert_file", json!(r.tls_cert_file), Json::Null),
        ("redis_tls_key_file", json!(r.tls_key_file), Json::Null),
        ("redis_sentinel_master", json!(r.sentinel_master), Json::Null),
        ("redis_sentinel_addresses", json!(r.sentinel_addresses), json!([])),
        ("redis_sentinel_username", json!(r.sentinel_username), Json::Null),
        ("redis_sentinel_password", secret(&r.sentinel_password), json!("unset")),
        ("redis_cluster_addresses", json!(r.cluster_addresses), json!([])),
    ];
    let values = to_json_with(&c.settings, true);
    let defaults = to_json_with(&Settings::default(), true);
    let mut settings: Vec<SettingShow> = core
        .into_iter()
        .chain(redis)
        .map(|(name, value, default)| SettingShow {
            name: name.to_string(),
            differs: value != default,
            value,
            default,
            livekit_key: livekit_key(name, target),
            needs_version: None,
        })
        .collect();
    for f in FIELDS {
        let value = values.get(f).cloned().unwrap_or(Json::Null);
        let mut default = defaults.get(f).cloned().unwrap_or(Json::Null);
        // What livekit-server does when the key is absent.
        default = match f {
            "turn_tls_port" => json!(DEFAULT_TURN_TLS_PORT),
            "turn_udp_port" => json!(DEFAULT_TURN_UDP_PORT),
            "room_auto_create" => json!(true),
            "room_empty_timeout" => json!(DEFAULT_ROOM_EMPTY_TIMEOUT),
            "room_departure_timeout" => json!(DEFAULT_ROOM_DEPARTURE_TIMEOUT),
            "room_max_participants" => json!(0),
            "log_level" => json!(DEFAULT_LOG_LEVEL),
            "prometheus_password" => json!("unset"),
            _ => default,
        };
        let value = match (f, value) {
            ("prometheus_password", Json::Null) => json!("unset"),
            (_, Json::Null) => default.clone(),
            (_, v) => v,
        };
        let key = livekit_key(f, None);
        let needs_version = key
            .as_deref()
            .filter(|k| is_set(&c.settings, f) && livekit_key(f, target).is_none() && !accepts(target, k))
            .and_then(version_needed)
            .map(|v| v.to_string());
        settings.push(SettingShow {
            name: f.to_string(),
            differs: value != default,
            value,
            default,
            livekit_key: livekit_key(f, target),
            needs_version,
        });
    }
    ConfigShowResult {
        target_version: target.map(|v| v.to_string()),
        settings,
    }
}

fn is_set(s: &Settings, field: &str) -> bool {
    to_json(s).get(field) != to_json(&Settings::default()).get(field)
}

#[cfg(test)]
mod tests {
    use super::super::check::check;
    use super::super::heal::{plan, FileObs};
    use super::super::render::{render, TripleFile};
    use super::super::testutil::{config_a, observed_of};
    use super::super::validate::{apply_configure_with, validate_config, ConfigureError};
    use super::super::{Credential, MintError};
    use super::*;

    const OLD: LivekitVersion = LivekitVersion::new(1, 7, 0);

    #[test]
    fn config_show_lists_the_redis_settings_with_secrets_as_set() {
        let mut c = config_a();
        c.redis_address = Some("10.0.0.5:6379".into());
        c.redis.username = Some("livekit".into());
        c.redis.password = Some(Secret::new("redisPasswordNeverShown"));
        c.redis.db = 3;
        c.redis.tls = false;
        let shown = show(&c);
        let text = serde_json::to_string(&shown).expect("json");
        assert!(!text.contains("redisPasswordNeverShown"), "{text}");
        let row = |name: &str| shown.settings.iter().find(|s| s.name == name).cloned().expect(name);
        assert_eq!(
            (row("redis_password").value, row("redis_password").differs),
            (json!("set"), true)
        );
        assert_eq!(row("redis_sentinel_password").value, json!("unset"));
        assert_eq!(row("redis_db").value, json!(3));
        assert_eq!(row("redis_db").livekit_key.as_deref(), Some("redis.db"));
        assert_eq!(row("redis_username").value, json!("livekit"));
        assert!(!row("redis_tls").differs);
        // Every configure parameter but the cluster's (its own record).
        let names: Vec<&str> = shown.settings.iter().map(|s| s.name.as_str()).collect();
        for p in ["redis_cluster_addresses", "redis_tls_ca_file", "region", "api_key"] {
            assert!(names.contains(&p), "{p}");
        }
    }

    fn no_mint() -> Result<Credential, MintError> {
        Err(MintError::new("must not mint"))
    }

    /// Every setting away from its default.
    fn full_params() -> ConfigureParams {
        ConfigureParams {
            bind_addresses: Some(vec!["10.0.0.5".into(), "::1".into()]),
            use_external_ip: Some(true),
            rtc_udp_port: Some(UdpPortParam::Text("7882-7892".into())),
            stun_servers: Some(vec!["stun.example.org:3478".into(), "[2001:db8::3]:19302".into()]),
            turn_servers: Some(vec![
                TurnServerParam {
                    host: "turn.example.org".into(),
                    port: 443,
                    protocol: "tls".into(),
                    username: Some("alice".into()),
                    credential: Some("turnCredentialValue".into()),
                    secret: None,
                },
                TurnServerParam {
                    host: "192.0.2.44".into(),
                    port: 3478,
                    protocol: "udp".into(),
                    username: None,
                    credential: None,
                    secret: Some("turnRestSecretValue".into()),
                },
            ]),
            turn_enabled: Some(true),
            turn_domain: Some("turn.media.example.org".into()),
            turn_tls_port: Some(5350),
            turn_udp_port: Some(3479),
            turn_external_tls: Some(true),
            webhook_urls: Some(vec![
                "https://hooks.example.org/livekit".into(),
                "http://10.0.0.9:8080/wh".into(),
            ]),
            room_auto_create: Some(false),
            room_empty_timeout: Some(600),
            room_departure_timeout: Some(30),
            room_max_participants: Some(50),
            room_enabled_codecs: Some(vec!["audio/opus".into(), "video/vp8".into(), "video/h264".into()]),
            log_level: Some("warn".into()),
            log_json: Some(true),
            prometheus_port: Some(6789),
            prometheus_username: Some("scraper".into()),
            prometheus_password: Some("promPasswordValue".into()),
            region: Some("eu-west-1".into()),
            ..ConfigureParams::default()
        }
    }

    fn configured(params: &ConfigureParams, target: Option<LivekitVersion>) -> Result<Config, ValidationError> {
        let mut base = config_a();
        base.livekit_version = target;
        match apply_configure_with(Some(&base), params, no_mint) {
            Ok(u) => Ok(u.config),
            Err(ConfigureError::Invalid(v)) => Err(v),
            Err(e) => panic!("unexpected {e:?}"),
        }
    }

    fn yaml(c: &Config) -> Yaml {
        serde_yaml::from_slice(&render(c, TripleFile::LivekitYaml)).expect("livekit.yaml parses")
    }

    fn at<'a>(doc: &'a Yaml, path: &str) -> Option<&'a Yaml> {
        path.split('.').try_fold(doc, |v, k| v.as_mapping()?.get(k))
    }

    #[test]
    fn versions_parse_from_records_and_from_the_binary() {
        assert_eq!(LivekitVersion::parse("1.9.1"), Some(LivekitVersion::new(1, 9, 1)));
        assert_eq!(LivekitVersion::parse("v1.13.5"), Some(LivekitVersion::new(1, 13, 5)));
        assert_eq!(LivekitVersion::parse("1.8.0-rc1"), Some(LivekitVersion::new(1, 8, 0)));
        for bad in ["custom-0123456789ab", "1.9", "1.9.1.2", "", "v", "1.x.3"] {
            assert_eq!(LivekitVersion::parse(bad), None, "{bad}");
        }
        assert_eq!(
            LivekitVersion::from_version_output("livekit-server version 1.7.2\n"),
            Some(LivekitVersion::new(1, 7, 2))
        );
        assert!(LivekitVersion::new(1, 10, 0) > LivekitVersion::new(1, 9, 9));
        assert_eq!(LivekitVersion::new(1, 7, 1).to_string(), "1.7.1");
    }

    #[test]
    fn every_setting_is_rendered_under_livekit_s_names() {
        let c = configured(&full_params(), None).expect("valid");
        let doc = yaml(&c);
        let s = |p: &str| at(&doc, p).and_then(Yaml::as_str).map(str::to_string);
        let n = |p: &str| at(&doc, p).and_then(Yaml::as_u64);
        let b = |p: &str| at(&doc, p).and_then(Yaml::as_bool);
        assert_eq!(
            at(&doc, "bind_addresses"),
            Some(&serde_yaml::from_str::<Yaml>("[\"10.0.0.5\", \"::1\"]").expect("yaml"))
        );
        assert_eq!(b("rtc.use_external_ip"), Some(true));
        assert_eq!(s("rtc.udp_port").as_deref(), Some("7882-7892"));
        assert_eq!(
            at(&doc, "rtc.stun_servers").and_then(Yaml::as_sequence).map(Vec::len),
            Some(2)
        );
        let turn_servers = at(&doc, "rtc.turn_servers")
            .and_then(Yaml::as_sequence)
            .expect("turn_servers");
        assert_eq!(
            turn_servers[0].get("credential").and_then(Yaml::as_str),
            Some("turnCredentialValue")
        );
        assert_eq!(
            turn_servers[1].get("secret").and_then(Yaml::as_str),
            Some("turnRestSecretValue")
        );
        assert_eq!(b("turn.enabled"), Some(true));
        assert_eq!(s("turn.domain").as_deref(), Some("turn.media.example.org"));
        assert_eq!((n("turn.tls_port"), n("turn.udp_port")), (Some(5350), Some(3479)));
        assert_eq!(b("turn.external_tls"), Some(true));
        assert_eq!(s("webhook.api_key").as_deref(), Some(c.api_key.as_str()));
        assert_eq!(
            at(&doc, "webhook.urls").and_then(Yaml::as_sequence).map(Vec::len),
            Some(2)
        );
        assert_eq!(b("room.auto_create"), Some(false));
        assert_eq!(
            (
                n("room.empty_timeout"),
                n("room.departure_timeout"),
                n("room.max_participants")
            ),
            (Some(600), Some(30), Some(50))
        );
        let codecs = at(&doc, "room.enabled_codecs")
            .and_then(Yaml::as_sequence)
            .expect("codecs");
        assert_eq!(codecs[2].get("mime").and_then(Yaml::as_str), Some("video/h264"));
        assert_eq!(
            (s("logging.level").as_deref(), b("logging.json")),
            (Some("warn"), Some(true))
        );
        assert_eq!(n("prometheus.port"), Some(6789));
        assert_eq!(s("prometheus.username").as_deref(), Some("scraper"));
        assert_eq!(s("prometheus.password").as_deref(), Some("promPasswordValue"));
        assert_eq!(s("region").as_deref(), Some("eu-west-1"));
        assert!(at(&doc, "prometheus_port").is_none());
        assert!(validate_config(&c).is_ok(), "{:?}", validate_config(&c));
        // The renderings read back as the config, and are consistent.
        assert!(check(&c, &observed_of(&c)).consistent);
    }

    #[test]
    fn a_cert_pair_must_exist_and_excludes_external_tls() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = (dir.path().join("turn.crt"), dir.path().join("turn.key"));
        std::fs::write(&cert, "cert").expect("cert");
        std::fs::write(&key, "key").expect("key");
        let pair = ConfigureParams {
            turn_enabled: Some(true),
            turn_domain: Some("turn.example.org".into()),
            turn_cert_file: Some(cert.display().to_string()),
            turn_key_file: Some(key.display().to_string()),
            ..ConfigureParams::default()
        };
        let c = configured(&pair, None).expect("a readable pair");
        let doc = yaml(&c);
        assert_eq!(
            at(&doc, "turn.cert_file").and_then(Yaml::as_str),
            Some(cert.to_str().expect("utf8"))
        );
        assert!(at(&doc, "turn.external_tls").is_none());
        let both = ConfigureParams {
            turn_external_tls: Some(true),
            ..pair.clone()
        };
        assert_eq!(configured(&both, None).expect_err("both").field, "turn_external_tls");
        let missing = ConfigureParams {
            turn_key_file: Some(dir.path().join("absent.key").display().to_string()),
            ..pair.clone()
        };
        let e = configured(&missing, None).expect_err("missing key file");
        assert_eq!(e.field, "turn_key_file");
        assert!(e.rule.contains("can read"), "{e}");
        let neither = ConfigureParams {
            turn_cert_file: None,
            turn_key_file: None,
            ..pair
        };
        assert_eq!(configured(&neither, None).expect_err("neither").field, "turn_enabled");
    }

    #[test]
    fn bad_values_are_refused_naming_their_field() {
        let turn = |f: fn(&mut TurnServerParam)| {
            let mut t = TurnServerParam {
                host: "turn.example.org".into(),
                port: 3478,
                protocol: "udp".into(),
                username: Some("u".into()),
                credential: Some("c".into()),
                secret: None,
            };
            f(&mut t);
            ConfigureParams {
                turn_servers: Some(vec![t]),
                ..ConfigureParams::default()
            }
        };
        let p = ConfigureParams::default;
        let cases: Vec<(ConfigureParams, &str)> = vec![
            (
                ConfigureParams {
                    bind_addresses: Some(vec!["example.org".into()]),
                    ..p()
                },
                "bind_addresses",
            ),
            (
                ConfigureParams {
                    bind_addresses: Some(vec!["10.0.0.1".into(), "10.0.0.1".into()]),
                    ..p()
                },
                "bind_addresses",
            ),
            (
                ConfigureParams {
                    rtc_udp_port: Some(UdpPortParam::Port(0)),
                    ..p()
                },
                "rtc_udp_port",
            ),
            (
                ConfigureParams {
                    rtc_udp_port: Some(UdpPortParam::Text("7892-7882".into())),
                    ..p()
                },
                "rtc_udp_port",
            ),
            (
                ConfigureParams {
                    rtc_udp_port: Some(UdpPortParam::Text("77a".into())),
                    ..p()
                },
                "rtc_udp_port",
            ),
            (
                ConfigureParams {
                    stun_servers: Some(vec!["stun.example.org".into()]),
                    ..p()
                },
                "stun_servers",
            ),
            (
                ConfigureParams {
                    stun_servers: Some(vec!["::1:3478".into()]),
                    ..p()
                },
                "stun_servers",
            ),
            (turn(|t| t.protocol = "sctp".into()), "turn_servers"),
            (turn(|t| t.port = 70000), "turn_servers"),
            (turn(|t| t.host = "bad host".into()), "turn_servers"),
            (turn(|t| t.secret = Some("s".into())), "turn_servers"),
            (turn(|t| t.credential = Some("has space".into())), "turn_servers"),
            (
                ConfigureParams {
                    turn_domain: Some("10.0.0.1.".into()),
                    ..p()
                },
                "turn_domain",
            ),
            (
                ConfigureParams {
                    turn_tls_port: Some(0),
                    ..p()
                },
                "turn_tls_port",
            ),
            (
                ConfigureParams {
                    turn_udp_port: Some(65536),
                    ..p()
                },
                "turn_udp_port",
            ),
            (
                ConfigureParams {
                    turn_cert_file: Some("relative/cert.pem".into()),
                    ..p()
                },
                "turn_cert_file",
            ),
            (
                ConfigureParams {
                    turn_enabled: Some(true),
                    turn_external_tls: Some(true),
                    ..p()
                },
                "turn_domain",
            ),
            (
                ConfigureParams {
                    webhook_urls: Some(vec!["ftp://hooks.example.org/".into()]),
                    ..p()
                },
                "webhook_urls",
            ),
            (
                ConfigureParams {
                    webhook_urls: Some(vec!["https://user:pw@hooks.example.org/".into()]),
                    ..p()
                },
                "webhook_urls",
            ),
            (
                ConfigureParams {
                    webhook_urls: Some(vec!["https://hooks.example.org/a b".into()]),
                    ..p()
                },
                "webhook_urls",
            ),
            (
                ConfigureParams {
                    webhook_urls: Some(vec!["https:///path".into()]),
                    ..p()
                },
                "webhook_urls",
            ),
            (
                ConfigureParams {
                    room_enabled_codecs: Some(vec!["video/mpeg2".into()]),
                    ..p()
                },
                "room_enabled_codecs",
            ),
            (
                ConfigureParams {
                    log_level: Some("verbose".into()),
                    ..p()
                },
                "log_level",
            ),
            (
                ConfigureParams {
                    prometheus_port: Some(7980),
                    ..p()
                },
                "prometheus_port",
            ),
            (
                ConfigureParams {
                    prometheus_port: Some(6789),
                    prometheus_username: Some("a b".into()),
                    ..p()
                },
                "prometheus_username",
            ),
            (
                ConfigureParams {
                    prometheus_port: Some(6789),
                    prometheus_username: Some("scraper".into()),
                    ..p()
                },
                "prometheus_password",
            ),
            (
                ConfigureParams {
                    prometheus_username: Some("scraper".into()),
                    prometheus_password: Some("pw".into()),
                    ..p()
                },
                "prometheus_port",
            ),
            (
                ConfigureParams {
                    region: Some("eu west".into()),
                    ..p()
                },
                "region",
            ),
            // TURN's ports collide with the others, TCP with TCP, UDP with UDP.
            (
                ConfigureParams {
                    turn_enabled: Some(true),
                    turn_domain: Some("t.example.org".into()),
                    turn_external_tls: Some(true),
                    turn_tls_port: Some(7981),
                    ..p()
                },
                "turn_tls_port",
            ),
            (
                ConfigureParams {
                    turn_enabled: Some(true),
                    turn_domain: Some("t.example.org".into()),
                    turn_external_tls: Some(true),
                    turn_udp_port: Some(51500),
                    ..p()
                },
                "turn_udp_port",
            ),
            (
                ConfigureParams {
                    turn_enabled: Some(true),
                    turn_domain: Some("t.example.org".into()),
                    turn_external_tls: Some(true),
                    rtc_udp_port: Some(UdpPortParam::Port(3478)),
                    ..p()
                },
                "rtc_udp_port",
            ),
            (
                ConfigureParams {
                    prometheus_port: Some(6789),
                    unset: Some(vec!["prometheus_port".into()]),
                    ..p()
                },
                "prometheus_port",
            ),
        ];
        for (params, field) in cases {
            let e = configured(&params, None).expect_err(field);
            assert_eq!(e.field, field, "{params:?}: {e}");
            for secret in ["pw", "has space", "a b"] {
                assert!(!e.rule.contains(secret) || field == "region", "{e} echoes a value");
            }
        }
    }

    #[test]
    fn unset_returns_a_setting_to_livekit_s_default() {
        let c = configured(&full_params(), None).expect("valid");
        let unset = ConfigureParams {
            unset: Some(vec![
                "webhook_urls".into(),
                "prometheus_username".into(),
                "prometheus_password".into(),
                "region".into(),
            ]),
            ..ConfigureParams::default()
        };
        let u = apply_configure_with(Some(&c), &unset, no_mint).expect("unset");
        assert_eq!(
            u.changed_fields,
            ["webhook_urls", "prometheus_username", "prometheus_password", "region"]
        );
        let doc = yaml(&u.config);
        assert!(at(&doc, "webhook").is_none() && at(&doc, "region").is_none());
        assert!(at(&doc, "prometheus.username").is_none());
        assert_eq!(at(&doc, "prometheus.port").and_then(Yaml::as_u64), Some(6789));
    }

    #[test]
    fn runtime_json_round_trips_and_an_old_one_loads_with_the_defaults() {
        let c = configured(&full_params(), None).expect("valid");
        let observed = observed_of(&c);
        let booted = plan(None, &observed, false).expect("boot plan");
        assert!(booted.is_noop(), "{:?}", booted.drift);
        assert_eq!(booted.config.settings, c.settings);

        // A runtime.json from before the settings existed: the credential
        // is kept, the settings take their defaults, the file is rewritten.
        let old = config_a();
        let text = String::from_utf8(render(&old, TripleFile::RuntimeJson)).expect("utf8");
        let legacy: String = text
            .lines()
            .filter(|l| {
                !FIELDS
                    .iter()
                    .chain([&VERSION_KEY])
                    .any(|f| l.contains(&format!("\"{f}\"")))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let mut obs = observed_of(&old);
        obs.runtime_json = FileObs::Present(legacy.into_bytes());
        let p = plan(None, &obs, false).expect("boot plan");
        assert!(!p.minted);
        assert_eq!(p.config, old);
        assert_eq!(p.writes, [TripleFile::RuntimeJson]);
        assert!(
            p.drift.contains(&"runtime.json: webhook_urls missing".to_string()),
            "{:?}",
            p.drift
        );
    }

    #[test]
    fn webhook_api_key_follows_the_credential_and_its_drift_is_named() {
        let params = ConfigureParams {
            webhook_urls: Some(vec!["https://hooks.example.org/lk".into()]),
            ..ConfigureParams::default()
        };
        let c = configured(&params, None).expect("valid");
        let rotated = {
            let mut r = c.clone();
            r.api_key = "APIrotatedkey23".into();
            r
        };
        assert_eq!(
            at(&yaml(&rotated), "webhook.api_key").and_then(Yaml::as_str),
            Some("APIrotatedkey23")
        );
        let text = String::from_utf8(render(&c, TripleFile::LivekitYaml)).expect("utf8");
        let edited = text.replace(&format!("api_key: \"{}\"", c.api_key), "api_key: \"APIsomeotherkey\"");
        assert_ne!(edited, text);
        let mut obs = observed_of(&c);
        obs.livekit_yaml = FileObs::Present(edited.into_bytes());
        let drift = check(&c, &obs).drift;
        assert_eq!(drift, ["livekit.yaml: webhook.api_key differs"]);
    }

    #[test]
    fn loopback_candidate_is_recorded_only_when_on_and_its_drift_is_named() {
        let on = ConfigureParams {
            rtc_enable_loopback_candidate: Some(true),
            ..ConfigureParams::default()
        };
        let c = configured(&on, None).expect("valid");
        assert_eq!(
            at(&yaml(&c), "rtc.enable_loopback_candidate").and_then(Yaml::as_bool),
            Some(true)
        );
        let json_text = String::from_utf8(render(&c, TripleFile::RuntimeJson)).expect("utf8");
        assert!(json_text.contains("\n  \"rtc_enable_loopback_candidate\": true,\n"));
        let off = String::from_utf8(render(&config_a(), TripleFile::RuntimeJson)).expect("utf8");
        assert!(!off.contains("rtc_enable_loopback_candidate"));

        // Dropped from runtime.json while on, and written while off.
        let mut obs = observed_of(&c);
        obs.runtime_json = FileObs::Present(
            json_text
                .replace("  \"rtc_enable_loopback_candidate\": true,\n", "")
                .into_bytes(),
        );
        assert_eq!(
            check(&c, &obs).drift,
            ["runtime.json: rtc_enable_loopback_candidate missing"]
        );
        let a = config_a();
        let mut obs = observed_of(&a);
        let stray = off.replacen("{\n", "{\n  \"rtc_enable_loopback_candidate\": false,\n", 1);
        obs.runtime_json = FileObs::Present(stray.into_bytes());
        assert_eq!(
            check(&a, &obs).drift,
            ["runtime.json: rtc_enable_loopback_candidate present but not configured"]
        );

        // 1.3.1 does not know the key: left out of its rendering, refused.
        let mut old = c.clone();
        old.livekit_version = Some(LivekitVersion::new(1, 3, 1));
        assert!(at(&yaml(&old), "rtc.enable_loopback_candidate").is_none());
        let e = configured(&on, Some(LivekitVersion::new(1, 3, 1))).expect_err("needs 1.3.2");
        assert_eq!(e.field, "rtc_enable_loopback_candidate");
    }

    #[test]
    fn an_older_target_leaves_newer_keys_out_and_refuses_to_set_them() {
        let port_only = ConfigureParams {
            prometheus_port: Some(6789),
            ..ConfigureParams::default()
        };
        let c = configured(&port_only, Some(OLD)).expect("prometheus_port is read by every 1.x");
        let doc = yaml(&c);
        assert_eq!(at(&doc, "prometheus_port").and_then(Yaml::as_u64), Some(6789));
        assert!(at(&doc, "prometheus").is_none());
        let newer = configured(&port_only, Some(LivekitVersion::new(1, 7, 1))).expect("valid");
        assert_eq!(at(&yaml(&newer), "prometheus.port").and_then(Yaml::as_u64), Some(6789));

        let e = configured(&full_params(), Some(OLD)).expect_err("username needs 1.7.1");
        assert_eq!(e.field, "prometheus_username");
        assert!(e.rule.contains("1.7.1") && e.rule.contains("1.7.0"), "{e}");

        // Set for a newer binary, then an older one installed: left out,
        // and config show says what it needs.
        let mut c = configured(&full_params(), None).expect("valid");
        c.livekit_version = Some(OLD);
        let doc = yaml(&c);
        assert!(at(&doc, "prometheus").is_none());
        assert_eq!(at(&doc, "prometheus_port").and_then(Yaml::as_u64), Some(6789));
        let shown = show(&c);
        let user = shown
            .settings
            .iter()
            .find(|s| s.name == "prometheus_username")
            .expect("row");
        assert_eq!(user.needs_version.as_deref(), Some("1.7.1"));
        assert_eq!(shown.target_version.as_deref(), Some("1.7.0"));
    }

    #[test]
    fn show_hides_secrets_and_names_what_differs_from_the_defaults() {
        let c = configured(&full_params(), None).expect("valid");
        let shown = show(&c);
        let text = serde_json::to_string(&shown).expect("json");
        for secret in [
            c.api_secret.expose(),
            "turnCredentialValue",
            "turnRestSecretValue",
            "promPasswordValue",
        ] {
            assert!(!text.contains(secret), "config show leaks a secret");
        }
        let row = |n: &str| shown.settings.iter().find(|s| s.name == n).expect(n).clone();
        assert_eq!(row("prometheus_password").value, json!("set"));
        assert_eq!(row("api_secret").value, json!("set"));
        assert!(row("log_json").differs && row("room_auto_create").differs);
        assert_eq!(row("turn_servers").value[0]["credential"], json!("set"));
        let plain = show(&config_a());
        let row = |n: &str| plain.settings.iter().find(|s| s.name == n).expect(n).clone();
        assert!(!row("log_level").differs && !row("turn_enabled").differs);
        assert_eq!(row("log_level").value, json!("info"));
        assert_eq!(row("prometheus_password").value, json!("unset"));
        assert_eq!(row("room_empty_timeout").value, json!(300));
        assert_eq!(plain.settings.len(), 10 + 13 + FIELDS.len());
    }
}
