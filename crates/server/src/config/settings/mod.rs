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
//!
//! Longer than 600 lines because it holds one job whole: the rule of each
//! setting and the rules across settings; its renderings, drift and `config
//! show` are the files beside it.

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
use super::rules::{
    self, check_address, given, given_list, is_hostname, no_template, push_quoted, validate_port, ValidationError,
};

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

/// `host:port`, `[v6]:port`: the one parser of [`rules::check_address`],
/// worded for a list.
fn host_port(field: &'static str, s: &str) -> Result<(), ValidationError> {
    check_address(field, s).map_err(|_| {
        invalid(
            field,
            "each entry must be host:port (IPv6 as [addr]:port) with port 1-65535",
        )
    })
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

mod drift;
mod render;
mod show;
#[cfg(test)]
mod tests;

pub(crate) use drift::{json_drift, yaml_drift, YAML_LOGGING, YAML_RTC, YAML_TOP};
pub(crate) use render::from_json;
pub use render::to_json;
pub(crate) use render::{render_runtime_json, render_yaml_logging, render_yaml_rtc, render_yaml_tail, render_yaml_top};
use render::{to_json_with, to_params};
pub use show::show;
