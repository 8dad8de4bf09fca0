//! Reading the three files back with real parsers (serde_json, serde_yaml,
//! the shared envfile grammar), leniently: a reading keeps every field that
//! has the right type and records every structural problem, so that boot can
//! salvage a valid credential from an otherwise broken file and `check` can
//! name each difference. Nothing here ever formats a value into a message.

use std::fmt;

use hero_livekit_proto::envfile;
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

use super::model::Secret;
use super::redis::{self, RedisSettings};
use super::render::TripleFile;
use super::settings;

/// The values one file carries. `None` means the file does not say (absent,
/// wrong type or not a field of this format); for the optional fields,
/// `Some(None)` means the file says "unset". Fields mirror [`super::Config`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Partial {
    pub api_key: Option<String>,
    pub api_secret: Option<Secret>,
    pub domain: Option<String>,
    pub redis_address: Option<Option<String>>,
    /// The Redis settings the file carries (at their defaults when it
    /// names none); `None` for a file that does not carry them.
    pub redis: Option<RedisSettings>,
    pub port: Option<u16>,
    pub rtc_tcp_port: Option<u16>,
    pub rtc_port_range_start: Option<u16>,
    pub rtc_port_range_end: Option<u16>,
    pub node_ip: Option<Option<String>>,
    pub backend_port: Option<u16>,
    /// `runtime.json`'s `public_url` (`Some(None)` when it has none: it
    /// records the field only when set).
    pub public_url: Option<Option<String>>,
    /// `backend.env`'s `MINT_SECRET`, compared with the one derived from
    /// the credential.
    pub mint_secret: Option<Secret>,
    /// `runtime.json`'s `livekit_url` or `backend.env`'s `LIVEKIT_URL`, verbatim.
    pub livekit_url: Option<String>,
    /// `livekit.yaml`'s `rtc.use_external_ip`.
    pub use_external_ip: Option<bool>,
    /// `livekit.yaml`'s `logging.level`.
    pub logging_level: Option<String>,
    /// `runtime.json`'s settings entries and `livekit_version`, as found.
    pub settings_json: RawEntries,
}

/// JSON entries that may hold secrets (the Prometheus password, TURN
/// credentials): `Debug` shows only their names.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct RawEntries(pub Vec<(String, Json)>);

impl fmt::Debug for RawEntries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(k, _)| k)).finish()
    }
}

/// A structural problem of a readable file, under the label of the field it
/// concerns (so that `check` does not also call that field "missing").
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    /// The field or section concerned (`""` for a foreign key).
    pub label: &'static str,
    /// The sentence for the drift list, without the file name.
    pub text: String,
}

/// What a readable file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Reading {
    /// The values of the right type.
    pub partial: Partial,
    /// Everything wrong in the file's structure.
    pub problems: Vec<Problem>,
}

impl Reading {
    /// Whether a problem was recorded for `label` or a section containing it.
    pub fn has_problem(&self, label: &str) -> bool {
        self.problems.iter().any(|p| {
            !p.label.is_empty()
                && (p.label == label || label.strip_prefix(p.label).is_some_and(|rest| rest.starts_with('.')))
        })
    }

    fn problem(&mut self, label: &'static str, text: impl Into<String>) {
        self.problems.push(Problem {
            label,
            text: text.into(),
        });
    }

    pub(super) fn wrong_type(&mut self, label: &'static str, expected: &str) {
        self.problem(label, format!("{label} has the wrong type (expected {expected})"));
    }

    pub(super) fn unexpected(&mut self, what: &str, name: &str) {
        let shown = shown_name(name);
        self.problem("", format!("unexpected {what} {shown}"));
    }
}

/// A file that no parser accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unparseable {
    NotUtf8,
    Empty,
    /// Syntax error, with the 1-based line when the parser knows it.
    Syntax {
        line: Option<usize>,
        what: String,
    },
    /// Parsed, but the top level is not the object/mapping this format needs.
    WrongShape(&'static str),
}

impl fmt::Display for Unparseable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unparseable::NotUtf8 => f.write_str("not UTF-8 text"),
            Unparseable::Empty => f.write_str("empty"),
            Unparseable::Syntax { line: Some(l), what } => write!(f, "line {l}: {what}"),
            Unparseable::Syntax { line: None, what } => f.write_str(what),
            Unparseable::WrongShape(what) => write!(f, "not {what}"),
        }
    }
}

/// Quotes a foreign key or variable name when it looks like a config key
/// (short lowercase or uppercase snake case); anything else may be a
/// credential pasted in the wrong place and is withheld.
fn shown_name(name: &str) -> String {
    let snake = |upper: bool| {
        name.len() <= 31
            && name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
            && name.bytes().all(|b| {
                b == b'_'
                    || b.is_ascii_digit()
                    || if upper {
                        b.is_ascii_uppercase()
                    } else {
                        b.is_ascii_lowercase()
                    }
            })
    };
    if snake(false) || snake(true) {
        format!("`{name}`")
    } else {
        "(name withheld)".to_string()
    }
}

/// Reads `bytes` as `file`.
pub(crate) fn read(file: TripleFile, bytes: &[u8]) -> Result<Reading, Unparseable> {
    let text = std::str::from_utf8(bytes).map_err(|_| Unparseable::NotUtf8)?;
    if text.trim().is_empty() {
        return Err(Unparseable::Empty);
    }
    match file {
        TripleFile::RuntimeJson => read_runtime_json(text),
        TripleFile::LivekitYaml => read_livekit_yaml(text),
        TripleFile::BackendEnv => read_backend_env(text),
    }
}

fn json_port(r: &mut Reading, label: &'static str, v: &Json) -> Option<u16> {
    port(r, label, v.as_u64())
}

/// A port read as a number: 1-65535, else a problem naming `label`.
fn port(r: &mut Reading, label: &'static str, n: Option<u64>) -> Option<u16> {
    match n {
        Some(n) => match u16::try_from(n) {
            Ok(p) if p != 0 => Some(p),
            _ => {
                r.problem(label, format!("{label} is not a port number 1-65535"));
                None
            }
        },
        None => {
            r.wrong_type(label, "a port number");
            None
        }
    }
}

fn json_string(r: &mut Reading, label: &'static str, v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        _ => {
            r.wrong_type(label, "a string");
            None
        }
    }
}

/// `""` means unset in `runtime.json`.
fn unset_if_empty(s: String) -> Option<String> {
    Some(s).filter(|s| !s.is_empty())
}

fn read_runtime_json(text: &str) -> Result<Reading, Unparseable> {
    let value: Json = serde_json::from_str(text).map_err(|e| Unparseable::Syntax {
        line: Some(e.line()),
        what: match e.classify() {
            serde_json::error::Category::Eof => "unexpected end of file".to_string(),
            _ => "syntax error".to_string(),
        },
    })?;
    let Json::Object(map) = value else {
        return Err(Unparseable::WrongShape("a JSON object"));
    };
    let mut r = Reading::default();
    let mut settings = RedisSettings::default();
    for (k, v) in &map {
        if read_redis_json(&mut r, &mut settings, k, v) {
            continue;
        }
        match k.as_str() {
            "api_key" => r.partial.api_key = json_string(&mut r, "api_key", v),
            "api_secret" => r.partial.api_secret = json_string(&mut r, "api_secret", v).map(Secret::new),
            "domain" => r.partial.domain = json_string(&mut r, "domain", v),
            "redis_address" => r.partial.redis_address = json_string(&mut r, "redis_address", v).map(unset_if_empty),
            "port" => r.partial.port = json_port(&mut r, "port", v),
            "rtc_tcp_port" => r.partial.rtc_tcp_port = json_port(&mut r, "rtc_tcp_port", v),
            "rtc_port_range_start" => r.partial.rtc_port_range_start = json_port(&mut r, "rtc_port_range_start", v),
            "rtc_port_range_end" => r.partial.rtc_port_range_end = json_port(&mut r, "rtc_port_range_end", v),
            "node_ip" => r.partial.node_ip = json_string(&mut r, "node_ip", v).map(unset_if_empty),
            "backend_port" => r.partial.backend_port = json_port(&mut r, "backend_port", v),
            "public_url" => r.partial.public_url = json_string(&mut r, "public_url", v).map(unset_if_empty),
            "livekit_url" => r.partial.livekit_url = json_string(&mut r, "livekit_url", v),
            k if settings::FIELDS.contains(&k) || k == settings::VERSION_KEY => {
                r.partial.settings_json.0.push((k.to_string(), v.clone()));
            }
            other => r.unexpected("key", other),
        }
    }
    r.partial.redis = Some(settings);
    if r.partial.public_url.is_none() && !r.has_problem("public_url") {
        r.partial.public_url = Some(None);
    }
    Ok(r)
}

fn yaml_port(r: &mut Reading, label: &'static str, v: &Yaml) -> Option<u16> {
    port(r, label, v.as_u64())
}

fn yaml_string(r: &mut Reading, label: &'static str, v: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) => Some(s.clone()),
        _ => {
            r.wrong_type(label, "a string");
            None
        }
    }
}

/// The entries of a YAML mapping section with string keys; a non-string key
/// is recorded as a problem and skipped.
fn yaml_section<'a>(r: &mut Reading, label: &'static str, v: &'a Yaml) -> Option<Vec<(&'a str, &'a Yaml)>> {
    let Yaml::Mapping(m) = v else {
        r.wrong_type(label, "a mapping");
        return None;
    };
    let mut out = Vec::with_capacity(m.len());
    for (k, v) in m {
        match k {
            Yaml::String(k) => out.push((k.as_str(), v)),
            _ => r.problem(label, format!("{label} has a key that is not a string")),
        }
    }
    Some(out)
}

fn yaml_syntax(e: &serde_yaml::Error) -> Unparseable {
    // serde_yaml's messages may quote the offending text (a duplicate key
    // is printed), so only the class of error is kept.
    let msg = e.to_string();
    let line = e.location().map(|l| l.line());
    if msg.contains("duplicate entry") {
        // serde_yaml locates a duplicate at the start of its mapping.
        let what = match line {
            Some(l) => format!("duplicate key in the mapping starting at line {l}"),
            None => "duplicate key".to_string(),
        };
        return Unparseable::Syntax { line: None, what };
    }
    let what = if msg.contains("recursion limit") {
        "nested too deeply"
    } else {
        "syntax error"
    };
    Unparseable::Syntax {
        line,
        what: what.to_string(),
    }
}

fn read_livekit_yaml(text: &str) -> Result<Reading, Unparseable> {
    let value: Yaml = serde_yaml::from_str(text).map_err(|e| yaml_syntax(&e))?;
    let mut r = Reading::default();
    let Some(top) = (match &value {
        Yaml::Mapping(_) => yaml_section(&mut r, "", &value),
        _ => None,
    }) else {
        return Err(Unparseable::WrongShape("a YAML mapping"));
    };
    // Sections that are absent mean "unset" for the optional fields.
    r.partial.redis_address = Some(None);
    r.partial.redis = Some(RedisSettings::default());
    let mut saw_rtc = false;
    for (k, v) in top {
        match k {
            "port" => r.partial.port = yaml_port(&mut r, "port", v),
            "rtc" => {
                saw_rtc = true;
                read_yaml_rtc(&mut r, v);
            }
            "redis" => read_yaml_redis(&mut r, v),
            "keys" => read_yaml_keys(&mut r, v),
            // Compared key by key with the rendering by `check`.
            k if settings::YAML_TOP.contains(&k) => {}
            "logging" => {
                let Some(section) = yaml_section(&mut r, "logging", v) else {
                    continue;
                };
                for (k, v) in section {
                    match k {
                        "level" => r.partial.logging_level = yaml_string(&mut r, "logging.level", v),
                        k if settings::YAML_LOGGING.contains(&k) => {}
                        other => r.unexpected("key", &format!("logging.{other}")),
                    }
                }
            }
            other => r.unexpected("key", other),
        }
    }
    if !saw_rtc {
        r.problem("rtc", "rtc missing");
    }
    Ok(r)
}

fn read_yaml_rtc(r: &mut Reading, v: &Yaml) {
    let Some(section) = yaml_section(r, "rtc", v) else {
        return;
    };
    r.partial.node_ip = Some(None);
    for (k, v) in section {
        match k {
            "tcp_port" => r.partial.rtc_tcp_port = yaml_port(r, "rtc.tcp_port", v),
            "port_range_start" => r.partial.rtc_port_range_start = yaml_port(r, "rtc.port_range_start", v),
            "port_range_end" => r.partial.rtc_port_range_end = yaml_port(r, "rtc.port_range_end", v),
            "use_external_ip" => match v {
                Yaml::Bool(b) => r.partial.use_external_ip = Some(*b),
                _ => r.wrong_type("rtc.use_external_ip", "true or false"),
            },
            "node_ip" => r.partial.node_ip = yaml_string(r, "rtc.node_ip", v).map(unset_if_empty),
            k if settings::YAML_RTC.contains(&k) => {}
            other => r.unexpected("key", &format!("rtc.{other}")),
        }
    }
}

fn read_yaml_redis(r: &mut Reading, v: &Yaml) {
    // `redis:` with nothing under it is unset, as livekit-server reads it.
    if v.is_null() {
        return;
    }
    r.partial.redis_address = None;
    let Some(section) = yaml_section(r, "redis", v) else {
        return;
    };
    let mut settings = RedisSettings::default();
    for (k, v) in section {
        if read_redis_yaml(r, &mut settings, k, v) {
            continue;
        }
        match k {
            "address" => r.partial.redis_address = yaml_string(r, "redis.address", v).map(Some),
            other => r.unexpected("key", &format!("redis.{other}")),
        }
    }
    // Sentinels or cluster nodes stand in for the address.
    let elsewhere = !settings.sentinel_addresses.is_empty() || !settings.cluster_addresses.is_empty();
    r.partial.redis = Some(settings);
    if r.partial.redis_address.is_none() && elsewhere {
        r.partial.redis_address = Some(None);
    }
    if r.partial.redis_address.is_none() && !r.has_problem("redis.address") {
        r.problem("redis.address", "redis.address missing");
    }
}

fn read_yaml_keys(r: &mut Reading, v: &Yaml) {
    let Some(entries) = yaml_section(r, "keys", v) else {
        return;
    };
    match entries.as_slice() {
        [] => r.problem("keys", "keys has no entry"),
        [(key, Yaml::String(secret))] => {
            r.partial.api_key = Some((*key).to_string());
            r.partial.api_secret = Some(Secret::new(secret.clone()));
        }
        [_] => r.problem("keys", "keys entry is not a string"),
        many => r.problem(
            "keys",
            format!("keys has {} entries (expected exactly one)", many.len()),
        ),
    }
}

/// Splits `ws://host:port` (or `wss://`, with `[v6]` hosts) into host and port.
pub(crate) fn split_ws_url(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("ws://").or_else(|| url.strip_prefix("wss://"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, port) = v6.split_once("]:")?;
        (host, port)
    } else {
        rest.rsplit_once(':')?
    };
    if host.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port: u16 = port.parse().ok().filter(|&p| p != 0)?;
    Some((host.to_string(), port))
}

fn read_backend_env(text: &str) -> Result<Reading, Unparseable> {
    let vars = envfile::parse(text).map_err(|e| Unparseable::Syntax {
        line: Some(e.line),
        what: e.reason.to_string(),
    })?;
    let mut r = Reading::default();
    for (k, v) in vars {
        match k.as_str() {
            "LIVEKIT_API_KEY" => r.partial.api_key = Some(v),
            "LIVEKIT_API_SECRET" => r.partial.api_secret = Some(Secret::new(v)),
            "LIVEKIT_URL" => {
                // Only the form the daemon derives from `domain` and
                // `port` says what they are; a `public_url` (a proxy's
                // `wss://` address) does not.
                if let Some((host, port)) = split_ws_url(&v).filter(|_| v.starts_with("ws://")) {
                    r.partial.domain = Some(host);
                    r.partial.port = Some(port);
                }
                r.partial.livekit_url = Some(v);
            }
            "PORT" => match v.parse::<u16>() {
                Ok(p) if p != 0 && v.bytes().all(|b| b.is_ascii_digit()) => r.partial.backend_port = Some(p),
                _ => r.problem("PORT", "PORT is not a port number 1-65535"),
            },
            "MINT_SECRET" => r.partial.mint_secret = Some(Secret::new(v)),
            other => r.unexpected("variable", other),
        }
    }
    Ok(r)
}

// ------------------------------------------------------------ Redis settings

/// Reads one `runtime.json` member into `s` when it is a Redis setting;
/// `false` when `key` is not one of [`redis::FIELDS`].
fn read_redis_json(r: &mut Reading, s: &mut RedisSettings, key: &str, v: &Json) -> bool {
    let Some(&label) = redis::FIELDS.iter().find(|f| **f == key) else {
        return false;
    };
    let string = |r: &mut Reading| match v {
        Json::String(s) if s.is_empty() => None,
        Json::String(s) => Some(s.clone()),
        _ => {
            r.wrong_type(label, "a string");
            None
        }
    };
    let list = |r: &mut Reading| match v {
        Json::Array(items) if items.iter().all(Json::is_string) => {
            items.iter().filter_map(|i| i.as_str().map(str::to_string)).collect()
        }
        _ => {
            r.wrong_type(label, "a list of strings");
            Vec::new()
        }
    };
    match key {
        "redis_username" => s.username = string(r),
        "redis_password" => s.password = string(r).map(Secret::new),
        "redis_db" => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) => s.db = n,
            None => r.wrong_type(label, "a database number"),
        },
        "redis_tls" => match v {
            Json::Bool(b) => s.tls = *b,
            _ => r.wrong_type(label, "true or false"),
        },
        "redis_tls_ca_file" => s.tls_ca_file = string(r),
        "redis_tls_server_name" => s.tls_server_name = string(r),
        "redis_tls_cert_file" => s.tls_cert_file = string(r),
        "redis_tls_key_file" => s.tls_key_file = string(r),
        "redis_sentinel_master" => s.sentinel_master = string(r),
        "redis_sentinel_addresses" => s.sentinel_addresses = list(r),
        "redis_sentinel_username" => s.sentinel_username = string(r),
        "redis_sentinel_password" => s.sentinel_password = string(r).map(Secret::new),
        _ => s.cluster_addresses = list(r),
    }
    true
}

/// Reads one key of `livekit.yaml`'s `redis:` section (other than
/// `address`) into `s`; `false` when it is not one hero_livekit writes.
fn read_redis_yaml(r: &mut Reading, s: &mut RedisSettings, key: &str, v: &Yaml) -> bool {
    fn string(r: &mut Reading, label: &'static str, v: &Yaml) -> Option<String> {
        match v {
            Yaml::String(s) if s.is_empty() => None,
            Yaml::String(s) => Some(s.clone()),
            _ => {
                r.wrong_type(label, "a string");
                None
            }
        }
    }
    fn list(r: &mut Reading, label: &'static str, v: &Yaml) -> Vec<String> {
        match v {
            Yaml::Sequence(items) if items.iter().all(Yaml::is_string) => {
                items.iter().filter_map(|i| i.as_str().map(str::to_string)).collect()
            }
            _ => {
                r.wrong_type(label, "a list of strings");
                Vec::new()
            }
        }
    }
    match key {
        "username" => s.username = string(r, "redis.username", v),
        "password" => s.password = string(r, "redis.password", v).map(Secret::new),
        "db" => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) => s.db = n,
            None => r.wrong_type("redis.db", "a database number"),
        },
        "tls" => read_yaml_tls(r, s, v),
        "sentinel_master_name" => s.sentinel_master = string(r, "redis.sentinel_master_name", v),
        "sentinel_username" => s.sentinel_username = string(r, "redis.sentinel_username", v),
        "sentinel_password" => s.sentinel_password = string(r, "redis.sentinel_password", v).map(Secret::new),
        "sentinel_addresses" => s.sentinel_addresses = list(r, "redis.sentinel_addresses", v),
        "cluster_addresses" => s.cluster_addresses = list(r, "redis.cluster_addresses", v),
        _ => return false,
    }
    true
}

fn read_yaml_tls(r: &mut Reading, s: &mut RedisSettings, v: &Yaml) {
    let Yaml::Mapping(m) = v else {
        return r.wrong_type("redis.tls", "a mapping");
    };
    for (k, v) in m {
        let path = |r: &mut Reading, label: &'static str| match v {
            Yaml::String(p) if !p.is_empty() => Some(p.clone()),
            _ => {
                r.wrong_type(label, "a file path");
                None
            }
        };
        match k.as_str() {
            Some("enabled") => match v {
                Yaml::Bool(b) => s.tls = *b,
                _ => r.wrong_type("redis.tls.enabled", "true or false"),
            },
            Some("server_name") => s.tls_server_name = path(r, "redis.tls.server_name"),
            Some("ca_cert_file") => s.tls_ca_file = path(r, "redis.tls.ca_cert_file"),
            Some("client_cert_file") => s.tls_cert_file = path(r, "redis.tls.client_cert_file"),
            Some("client_key_file") => s.tls_key_file = path(r, "redis.tls.client_key_file"),
            // `insecure` and anything else: not a key hero_livekit writes.
            Some(other) => r.unexpected("key", &format!("redis.tls.{other}")),
            None => r.wrong_type("redis.tls", "a mapping with string keys"),
        }
    }
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
