//! Validation of every configurable value, and the `configure` merge.
//!
//! Nothing reaches a renderer without passing through here: a value that
//! YAML, an env file or a shell could read differently is refused, and the
//! error names the field and the rule without echoing the value.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hero_livekit_proto::{fields, ConfigureParams};

use super::credential::{mint_credential, MintError};
use super::model::{Config, Credential, Secret};
use super::redis;
pub use super::rules::validate_port;
use super::rules::{self, is_placeholder_word, is_template, TEMPLATE_RULE};
pub(crate) use super::rules::{check_address, is_hostname};
use super::settings::{self, Files};

/// The config fields, in `runtime.json` order (the Redis settings of
/// [`redis::FIELDS`] follow `redis_address` there); the names of
/// `changed_fields` and of [`ValidationError::field`].
pub const FIELDS: [&str; fields::CORE.len()] = fields::CORE;

pub use super::rules::ValidationError;

/// Names the class of a refused character without printing it verbatim
/// when it could be part of a secret worth hiding.
fn describe(c: char) -> String {
    match c {
        '\n' | '\r' => "a line break".into(),
        c if c.is_whitespace() => "whitespace".into(),
        '"' | '\'' | '`' => "a quote".into(),
        '\\' => "a backslash".into(),
        c if c.is_control() => "a control character".into(),
        c if c.is_ascii_punctuation() => format!("'{c}'"),
        _ => "a non-ASCII character".into(),
    }
}

fn check_chars(
    field: &'static str,
    value: &str,
    min: usize,
    max: usize,
    allowed: impl Fn(char) -> bool,
    set: &str,
) -> Result<(), ValidationError> {
    if let Some(bad) = value.chars().find(|&c| !allowed(c)) {
        return Err(ValidationError::new(
            field,
            format!("may only contain {set}; found {}", describe(bad)),
        ));
    }
    if !(min..=max).contains(&value.len()) {
        return Err(ValidationError::new(
            field,
            format!("must be {min}-{max} characters long (got {})", value.len()),
        ));
    }
    Ok(())
}

/// Refuses what a template or tutorial left in a credential field, saying
/// so rather than which character or length rule it happens to break.
fn not_a_placeholder(field: &'static str, value: &str, what: &str) -> Result<(), ValidationError> {
    if is_template(value) {
        return Err(ValidationError::new(field, TEMPLATE_RULE));
    }
    if is_placeholder_word(value) {
        return Err(ValidationError::new(
            field,
            format!("is a placeholder word left by a template or tutorial, not a real {what}; give a real one, or leave it empty to keep the current one"),
        ));
    }
    Ok(())
}

/// `api_key`: 3-64 characters of `[A-Za-z0-9_-]`, not a placeholder.
///
/// # Errors
/// The rule broken.
pub fn validate_api_key(key: &str) -> Result<(), ValidationError> {
    not_a_placeholder("api_key", key, "key")?;
    check_chars(
        "api_key",
        key,
        3,
        64,
        |c| c.is_ascii_alphanumeric() || c == '_' || c == '-',
        "[A-Za-z0-9_-]",
    )?;
    Ok(())
}

/// `api_secret`: 32-256 characters of `[A-Za-z0-9_.~+/=-]`, not a
/// placeholder. The set excludes everything YAML, an env file or a shell
/// reads specially (whitespace, quotes, backslash, `$`, `#`, `:`).
///
/// # Errors
/// The rule broken.
pub fn validate_api_secret(secret: &str) -> Result<(), ValidationError> {
    not_a_placeholder("api_secret", secret, "secret")?;
    check_chars(
        "api_secret",
        secret,
        32,
        256,
        |c| c.is_ascii_alphanumeric() || "_.~+/=-".contains(c),
        "[A-Za-z0-9_.~+/=-]",
    )?;
    Ok(())
}

/// Both halves of a credential.
///
/// # Errors
/// The first rule broken.
pub fn validate_credential(c: &Credential) -> Result<(), ValidationError> {
    validate_api_key(&c.api_key)?;
    validate_api_secret(c.api_secret.expose())
}

/// `domain`: a hostname, an IPv4 address or an IPv6 address (without
/// brackets; `livekit_url` adds them).
///
/// # Errors
/// The rule broken.
pub fn validate_domain(domain: &str) -> Result<(), ValidationError> {
    if domain.parse::<IpAddr>().is_ok() || is_hostname(domain) {
        return Ok(());
    }
    let rule = if domain.starts_with('[') {
        "must be a hostname or an IP address; write an IPv6 address without brackets"
    } else {
        "must be a hostname (RFC 1123) or an IP address"
    };
    Err(ValidationError::new("domain", rule))
}

/// `redis_address`: `host:port` where host is a hostname or IPv4 address,
/// or `[v6]:port`.
///
/// # Errors
/// The rule broken.
pub fn validate_redis_address(address: &str) -> Result<(), ValidationError> {
    check_address("redis_address", address)
}

/// `node_ip`: an IPv4 or IPv6 address.
///
/// # Errors
/// The rule broken.
pub fn validate_node_ip(ip: &str) -> Result<(), ValidationError> {
    ip.parse::<IpAddr>()
        .map(|_| ())
        .map_err(|_| ValidationError::new("node_ip", "must be an IPv4 or IPv6 address"))
}

/// `public_url`: `ws://` or `wss://`, a host (hostname, IPv4 or
/// `[IPv6]`), an optional `:port`, nothing after but an optional `/`. It is
/// handed to browsers and SDKs as is, so anything they could read another
/// way (a path LiveKit's clients would append `/rtc` to, a query, user
/// info that would leak into logs) is refused rather than guessed at.
///
/// # Errors
/// The rule broken, naming `public_url`; never the value.
pub fn validate_public_url(url: &str) -> Result<(), ValidationError> {
    let bad = |rule: &str| Err(ValidationError::new("public_url", rule));
    let Some(rest) = url.strip_prefix("wss://").or_else(|| url.strip_prefix("ws://")) else {
        return bad("must start with ws:// or wss:// (the WebSocket URL clients open, e.g. wss://livekit.example.com)");
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('@') {
        return bad("must not carry user info (user:password@)");
    }
    if rest.contains(['?', '#']) {
        return bad("must not have a query or a fragment");
    }
    if rest.contains('/') {
        return bad("must not have a path other than /");
    }
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((host, after)) if host.parse::<Ipv6Addr>().is_ok() => match after {
                "" => (host, None),
                p => match p.strip_prefix(':') {
                    Some(p) => (host, Some(p)),
                    None => return bad("must be ws[s]://host[:port]; after an [IPv6] address only :port may follow"),
                },
            },
            _ => return bad("must name a host: a hostname, an IPv4 address or an IPv6 address in brackets"),
        },
        None => match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        },
    };
    // An IPv6 host was checked inside its brackets above.
    let host_ok = rest.starts_with('[') || host.parse::<Ipv4Addr>().is_ok() || is_hostname(host);
    if !host_ok {
        return bad("must name a host: a hostname, an IPv4 address or an IPv6 address in brackets");
    }
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || !p.parse::<u16>().is_ok_and(|p| p != 0) {
            return bad("must have a port 1-65535 after the host, or none");
        }
    }
    Ok(())
}

/// Rules across fields: the three TCP ports differ from each other and the
/// UDP range is not inverted. UDP and TCP ports never collide at the OS
/// level, so the TCP ports may lie inside the UDP range.
///
/// When two fields clash, the error names the one in `prefer` (the fields
/// the caller just changed) so that the operator is told about the value
/// they typed, not the one they left alone.
fn validate_cross(c: &Config, prefer: &[&str]) -> Result<(), ValidationError> {
    let tcp = [
        ("port", c.port),
        ("rtc_tcp_port", c.rtc_tcp_port),
        ("backend_port", c.backend_port),
    ];
    for i in 0..tcp.len() {
        for j in (i + 1)..tcp.len() {
            let ((a, pa), (b, pb)) = (tcp[i], tcp[j]);
            if pa == pb {
                let (field, other) = if prefer.contains(&a) && !prefer.contains(&b) {
                    (a, b)
                } else {
                    (b, a)
                };
                return Err(ValidationError::new(
                    field,
                    format!("must differ from {other} (both are {pa})"),
                ));
            }
        }
    }
    if c.rtc_port_range_start > c.rtc_port_range_end {
        let field = if prefer.contains(&"rtc_port_range_start") && !prefer.contains(&"rtc_port_range_end") {
            "rtc_port_range_start"
        } else {
            "rtc_port_range_end"
        };
        return Err(ValidationError::new(
            field,
            "rtc_port_range_start must not exceed rtc_port_range_end",
        ));
    }
    Ok(())
}

/// Every rule for a whole config.
///
/// # Errors
/// The first rule broken, in [`FIELDS`] order, then the cross-field rules.
pub fn validate_config(c: &Config) -> Result<(), ValidationError> {
    validate_api_key(&c.api_key)?;
    validate_api_secret(c.api_secret.expose())?;
    validate_domain(&c.domain)?;
    if let Some(r) = &c.redis_address {
        validate_redis_address(r)?;
    }
    redis::validate(c.redis_address.as_deref(), &c.redis, &[])?;
    for (field, port) in [
        ("port", c.port),
        ("rtc_tcp_port", c.rtc_tcp_port),
        ("rtc_port_range_start", c.rtc_port_range_start),
        ("rtc_port_range_end", c.rtc_port_range_end),
    ] {
        validate_port(field, u32::from(port))?;
    }
    if let Some(ip) = &c.node_ip {
        validate_node_ip(ip)?;
    }
    validate_port("backend_port", u32::from(c.backend_port))?;
    if let Some(url) = &c.public_url {
        validate_public_url(url)?;
    }
    validate_cross(c, &[])?;
    settings::validate_fields(&c.settings)?;
    settings::validate_cross(c, &[])
}

/// The outcome of `configure`: the new config and what changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigUpdate {
    /// The validated config to make the truth.
    pub config: Config,
    /// Names from [`FIELDS`] whose value differs from the current config;
    /// every field when there was none.
    pub changed_fields: Vec<String>,
    /// Whether a key or secret was minted because none was given or held.
    pub minted: bool,
}

/// Why `configure` refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigureError {
    /// Bad input: JSON-RPC -32602 naming `field`.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// A credential had to be minted and the OS RNG failed.
    #[error(transparent)]
    Mint(#[from] MintError),
}

/// Merges `configure` parameters into the current config and validates
/// the result. An absent or empty value keeps the current one (see
/// [`rules`] for templates and placeholder words);
/// without a current config, missing key and secret are minted and other
/// fields take their defaults. A key given without a secret (and none held)
/// mints only the secret, and vice versa.
///
/// # Errors
/// [`ConfigureError::Invalid`] naming the field, before anything is
/// minted; [`ConfigureError::Mint`] when the OS RNG fails.
pub fn apply_configure(current: Option<&Config>, params: &ConfigureParams) -> Result<ConfigUpdate, ConfigureError> {
    apply_configure_with(current, params, mint_credential)
}

/// [`apply_configure`] with the minting source injected, for tests.
///
/// # Errors
/// As [`apply_configure`].
pub fn apply_configure_with(
    current: Option<&Config>,
    params: &ConfigureParams,
    mint: impl FnOnce() -> Result<Credential, MintError>,
) -> Result<ConfigUpdate, ConfigureError> {
    let key = rules::given("api_key", params.api_key.as_deref())?;
    let secret = rules::given("api_secret", params.api_secret.as_deref())?;
    let domain = rules::given("domain", params.domain.as_deref())?;
    let redis = rules::given("redis_address", params.redis_address.as_deref())?;
    let node_ip = rules::given("node_ip", params.node_ip.as_deref())?;
    let public_url = rules::given("public_url", params.public_url.as_deref())?;
    // Each given value is checked on its own first, so the error names the
    // field the operator typed even when other fields are also wrong.
    if let Some(k) = key {
        validate_api_key(k)?;
    }
    if let Some(s) = secret {
        validate_api_secret(s)?;
    }
    if let Some(d) = domain {
        validate_domain(d)?;
    }
    if let Some(r) = redis {
        validate_redis_address(r)?;
    }
    let port = |field, v: Option<u32>| v.map(|v| validate_port(field, v)).transpose();
    let p_port = port("port", params.port)?;
    let p_tcp = port("rtc_tcp_port", params.rtc_tcp_port)?;
    let p_start = port("rtc_port_range_start", params.rtc_port_range_start)?;
    let p_end = port("rtc_port_range_end", params.rtc_port_range_end)?;
    if let Some(ip) = node_ip {
        validate_node_ip(ip)?;
    }
    let p_backend = port("backend_port", params.backend_port)?;
    if let Some(url) = public_url {
        validate_public_url(url)?;
    }
    let unset = params.unset.as_deref().unwrap_or_default();
    let [unset_redis, unset_node_ip, unset_public_url] = unset_fields(unset, [redis, node_ip, public_url])?;
    let redis_settings = redis::merge(current.map(|c| &c.redis).unwrap_or(&Default::default()), params, unset)?;
    let target = current.and_then(|c| c.livekit_version);
    settings::validate_target(params, target)?;
    let new_settings = settings::apply_params(
        &current.map(|c| c.settings.clone()).unwrap_or_default(),
        params,
        unset,
        Files::Check,
    )?;

    let held_key = key.map(str::to_string).or_else(|| current.map(|c| c.api_key.clone()));
    let held_secret = secret
        .map(Secret::new)
        .or_else(|| current.map(|c| c.api_secret.clone()));
    let (credential, minted) = match (held_key, held_secret) {
        (Some(api_key), Some(api_secret)) => (Credential { api_key, api_secret }, false),
        (k, s) => {
            let fresh = mint()?;
            let credential = Credential {
                api_key: k.unwrap_or(fresh.api_key),
                api_secret: s.unwrap_or(fresh.api_secret),
            };
            (credential, true)
        }
    };
    let base = current
        .cloned()
        .unwrap_or_else(|| Config::with_credential(credential.clone()));
    let config = Config {
        api_key: credential.api_key,
        api_secret: credential.api_secret,
        domain: domain.map_or(base.domain, str::to_string),
        redis_address: if unset_redis {
            None
        } else {
            redis.map(str::to_string).or(base.redis_address)
        },
        redis: redis_settings,
        port: p_port.unwrap_or(base.port),
        rtc_tcp_port: p_tcp.unwrap_or(base.rtc_tcp_port),
        rtc_port_range_start: p_start.unwrap_or(base.rtc_port_range_start),
        rtc_port_range_end: p_end.unwrap_or(base.rtc_port_range_end),
        node_ip: if unset_node_ip {
            None
        } else {
            node_ip.map(str::to_string).or(base.node_ip)
        },
        backend_port: p_backend.unwrap_or(base.backend_port),
        public_url: if unset_public_url {
            None
        } else {
            public_url.map(str::to_string).or(base.public_url)
        },
        settings: new_settings,
        livekit_version: base.livekit_version,
    };
    let changed_fields: Vec<String> = match current {
        None => FIELDS.iter().chain(&settings::FIELDS).map(|f| f.to_string()).collect(),
        Some(old) => changed(old, &config),
    };
    let prefer: Vec<&str> = changed_fields.iter().map(String::as_str).collect();
    redis::validate(config.redis_address.as_deref(), &config.redis, &prefer)?;
    validate_cross(&config, &prefer)?;
    settings::validate_cross(&config, &prefer)?;
    Ok(ConfigUpdate {
        config,
        changed_fields,
        minted,
    })
}

/// Which optional core fields `unset` removes, in the order of
/// [`UNSET_CORE`], given the values passed beside it. A field both given a
/// value and unset in one call is refused rather than guessed at.
fn unset_fields(unset: &[String], given: [Option<&str>; 3]) -> Result<[bool; 3], ValidationError> {
    let mut out = [false; 3];
    for name in unset {
        let Some(i) = UNSET_CORE.iter().position(|f| f == name) else {
            // `redis::merge` and the production settings' own merge remove these.
            if fields::field(name).is_some_and(|f| f.unset) {
                continue;
            }
            let core: Vec<&str> = FIELDS
                .into_iter()
                .filter(|f| fields::field(f).is_some_and(|f| f.unset))
                .collect();
            return Err(ValidationError::new(
                "unset",
                format!(
                    "each entry must be one of {}, {} or a production setting ({})",
                    core.join(", "),
                    redis::FIELDS.join(", "),
                    settings::FIELDS.join(", ")
                ),
            ));
        };
        if given[i].is_some() {
            return Err(ValidationError::new(
                UNSET_CORE[i],
                "is both given a value and unset; pick one",
            ));
        }
        out[i] = true;
    }
    Ok(out)
}

/// The core fields `unset` removes (the table's `unset` column within the
/// core group), in the order [`unset_fields`] answers.
const UNSET_CORE: [&str; 3] = ["redis_address", "node_ip", "public_url"];

/// Names of the fields that differ between two configs, in [`FIELDS`] order
/// with the Redis settings after `redis_address`.
pub fn changed(old: &Config, new: &Config) -> Vec<String> {
    let diffs = [
        old.api_key != new.api_key,
        old.api_secret != new.api_secret,
        old.domain != new.domain,
        old.redis_address != new.redis_address,
        old.port != new.port,
        old.rtc_tcp_port != new.rtc_tcp_port,
        old.rtc_port_range_start != new.rtc_port_range_start,
        old.rtc_port_range_end != new.rtc_port_range_end,
        old.node_ip != new.node_ip,
        old.backend_port != new.backend_port,
        old.public_url != new.public_url,
    ];
    let mut out: Vec<String> = Vec::new();
    for (f, d) in FIELDS.iter().zip(diffs) {
        if d {
            out.push(f.to_string());
        }
        if *f == "redis_address" {
            out.extend(old.redis.differing(&new.redis).into_iter().map(|(n, _)| n.to_string()));
        }
    }
    out.extend(settings::changed(&old.settings, &new.settings));
    out
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
