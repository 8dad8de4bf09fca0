//! The Redis connection settings beyond `redis_address` (SPEC section 11):
//! credentials, database, TLS, Sentinel and Cluster, as one value beside
//! the address in [`super::Config`].
//!
//! Each setting has a flat `configure` name (`redis_username`, ...), the
//! same name in `runtime.json`, and LiveKit's own name under `redis:` in
//! `livekit.yaml` (livekit/protocol `redis.RedisConfig`; TLS under the
//! `tls:` sub-section, never the deprecated `use_tls`). A setting at its
//! default is written nowhere, so a triple written before these settings
//! existed is still the rendering of the config it loads to, byte for byte.

use std::fmt::Write as _;
use std::io::Read as _;

use hero_livekit_proto::{fields, ConfigureParams};

pub use super::model::RedisSettings;
use super::model::Secret;
use super::rules::{check_address, given, given_list, is_hostname, push_quoted, ValidationError};

/// The highest database number: Redis's default `databases 16`, which
/// managed Redis services do not raise.
pub const MAX_DB: u32 = 15;

/// Sentinels or cluster nodes one list may name.
const MAX_ADDRESSES: usize = 16;

/// The `configure`/`runtime.json` names of the settings, in rendering
/// order (`redis_address` is a field of its own in [`super::Config`]).
pub const FIELDS: [&str; fields::REDIS.len()] = fields::REDIS;

// ------------------------------------------------------------ rendering

fn push_list(out: &mut String, list: &[String]) {
    out.push('[');
    for (i, a) in list.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        push_quoted(out, a);
    }
    out.push(']');
}

/// The `runtime.json` members of the settings that are set, each as
/// `,\n  "name": value` (to follow the `redis_address` member).
pub(crate) fn render_json(s: &RedisSettings, out: &mut String) {
    fn string(out: &mut String, key: &str, v: Option<&str>) {
        if let Some(v) = v {
            let _ = write!(out, ",\n  \"{key}\": ");
            push_quoted(out, v);
        }
    }
    fn list(out: &mut String, key: &str, v: &[String]) {
        if !v.is_empty() {
            let _ = write!(out, ",\n  \"{key}\": ");
            push_list(out, v);
        }
    }
    string(out, "redis_username", s.username.as_deref());
    string(out, "redis_password", s.password.as_ref().map(Secret::expose));
    if s.db != 0 {
        let _ = write!(out, ",\n  \"redis_db\": {}", s.db);
    }
    if s.tls {
        out.push_str(",\n  \"redis_tls\": true");
    }
    string(out, "redis_tls_ca_file", s.tls_ca_file.as_deref());
    string(out, "redis_tls_server_name", s.tls_server_name.as_deref());
    string(out, "redis_tls_cert_file", s.tls_cert_file.as_deref());
    string(out, "redis_tls_key_file", s.tls_key_file.as_deref());
    string(out, "redis_sentinel_master", s.sentinel_master.as_deref());
    list(out, "redis_sentinel_addresses", &s.sentinel_addresses);
    string(out, "redis_sentinel_username", s.sentinel_username.as_deref());
    string(
        out,
        "redis_sentinel_password",
        s.sentinel_password.as_ref().map(Secret::expose),
    );
    list(out, "redis_cluster_addresses", &s.cluster_addresses);
}

/// The `redis:` section of `livekit.yaml`, under LiveKit's names, or
/// nothing when no Redis is configured.
pub(crate) fn render_yaml(address: Option<&str>, s: &RedisSettings, out: &mut String) {
    if !s.configured(address) {
        return;
    }
    out.push_str("redis:\n");
    let line = |out: &mut String, key: &str, v: Option<&str>| {
        if let Some(v) = v {
            let _ = write!(out, "  {key}: ");
            push_quoted(out, v);
            out.push('\n');
        }
    };
    line(out, "address", address);
    line(out, "username", s.username.as_deref());
    line(out, "password", s.password.as_ref().map(Secret::expose));
    if s.db != 0 {
        let _ = writeln!(out, "  db: {}", s.db);
    }
    if s.tls {
        out.push_str("  tls:\n    enabled: true\n");
        for (key, v) in [
            ("server_name", s.tls_server_name.as_deref()),
            ("ca_cert_file", s.tls_ca_file.as_deref()),
            ("client_cert_file", s.tls_cert_file.as_deref()),
            ("client_key_file", s.tls_key_file.as_deref()),
        ] {
            if let Some(v) = v {
                let _ = write!(out, "    {key}: ");
                push_quoted(out, v);
                out.push('\n');
            }
        }
    }
    line(out, "sentinel_master_name", s.sentinel_master.as_deref());
    line(out, "sentinel_username", s.sentinel_username.as_deref());
    line(
        out,
        "sentinel_password",
        s.sentinel_password.as_ref().map(Secret::expose),
    );
    if !s.sentinel_addresses.is_empty() {
        out.push_str("  sentinel_addresses: ");
        push_list(out, &s.sentinel_addresses);
        out.push('\n');
    }
    if !s.cluster_addresses.is_empty() {
        out.push_str("  cluster_addresses: ");
        push_list(out, &s.cluster_addresses);
        out.push('\n');
    }
}

// ------------------------------------------------------------ validation

fn bad(field: &'static str, rule: impl Into<String>) -> ValidationError {
    ValidationError::new(field, rule)
}

/// A password: 1-512 characters, no control character (a line break would
/// end the YAML scalar livekit-server reads it from). The value is never
/// named in the error.
fn check_password(field: &'static str, p: &str) -> Result<(), ValidationError> {
    if p.chars().any(char::is_control) {
        return Err(bad(field, "may not contain a line break or control character"));
    }
    if p.len() > 512 {
        return Err(bad(field, "must be at most 512 bytes long"));
    }
    Ok(())
}

/// A user name or a sentinel master name: 1-128 printable ASCII characters
/// without whitespace.
fn check_name(field: &'static str, n: &str) -> Result<(), ValidationError> {
    if n.len() > 128 || !n.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(
            field,
            "must be 1-128 printable ASCII characters without whitespace",
        ));
    }
    Ok(())
}

fn check_path_shape(field: &'static str, p: &str) -> Result<(), ValidationError> {
    if !p.starts_with('/') || p.len() > 4096 || p.chars().any(char::is_control) {
        return Err(bad(field, "must be an absolute path without control characters"));
    }
    Ok(())
}

/// A PEM file livekit-server will read: an absolute path to a regular file
/// that opens for reading and holds a PEM block. Checked when the operator
/// gives it, so that a typo is refused now instead of a crash later.
fn check_pem_file(field: &'static str, p: &str) -> Result<(), ValidationError> {
    check_path_shape(field, p)?;
    let mut file = std::fs::File::open(p).map_err(|e| bad(field, format!("must name a readable file ({e})")))?;
    let meta = file
        .metadata()
        .map_err(|e| bad(field, format!("must name a readable file ({e})")))?;
    if !meta.is_file() {
        return Err(bad(field, "must name a regular file"));
    }
    let mut head = Vec::with_capacity(4096);
    (&mut file)
        .take(64 * 1024)
        .read_to_end(&mut head)
        .map_err(|e| bad(field, format!("must name a readable file ({e})")))?;
    if !head.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(bad(field, "must name a PEM file (no -----BEGIN line found)"));
    }
    Ok(())
}

fn check_list(field: &'static str, list: &[String]) -> Result<(), ValidationError> {
    if list.len() > MAX_ADDRESSES {
        return Err(bad(field, format!("may hold at most {MAX_ADDRESSES} addresses")));
    }
    for a in list {
        check_address(field, a)?;
    }
    for (i, a) in list.iter().enumerate() {
        if list[..i].contains(a) {
            return Err(bad(field, "may not name the same address twice"));
        }
    }
    Ok(())
}

/// The rules each setting and the settings together must pass; pure (the
/// files are only opened by [`merge`], when the operator gives them).
/// `prefer` names the fields just given, so that a clash between two
/// settings names the one the operator typed.
///
/// # Errors
/// The first rule broken, naming the `configure` field.
pub fn validate(address: Option<&str>, s: &RedisSettings, prefer: &[&str]) -> Result<(), ValidationError> {
    if let Some(u) = &s.username {
        check_name("redis_username", u)?;
    }
    if let Some(p) = &s.password {
        check_password("redis_password", p.expose())?;
    }
    if s.db > MAX_DB {
        return Err(bad("redis_db", format!("must be a database number 0-{MAX_DB}")));
    }
    for (field, p) in [
        ("redis_tls_ca_file", &s.tls_ca_file),
        ("redis_tls_cert_file", &s.tls_cert_file),
        ("redis_tls_key_file", &s.tls_key_file),
    ] {
        if let Some(p) = p {
            check_path_shape(field, p)?;
        }
    }
    if let Some(n) = &s.tls_server_name {
        if !is_hostname(n) {
            return Err(bad("redis_tls_server_name", "must be a hostname (RFC 1123)"));
        }
    }
    if let Some(m) = &s.sentinel_master {
        check_name("redis_sentinel_master", m)?;
    }
    check_list("redis_sentinel_addresses", &s.sentinel_addresses)?;
    if let Some(u) = &s.sentinel_username {
        check_name("redis_sentinel_username", u)?;
    }
    if let Some(p) = &s.sentinel_password {
        check_password("redis_sentinel_password", p.expose())?;
    }
    check_list("redis_cluster_addresses", &s.cluster_addresses)?;
    validate_together(address, s, prefer)
}

/// Names `a` when the operator just gave it and not `b`, else `b`.
fn pick(prefer: &[&str], a: &'static str, b: &'static str) -> &'static str {
    if prefer.contains(&a) && !prefer.contains(&b) {
        a
    } else {
        b
    }
}

fn validate_together(address: Option<&str>, s: &RedisSettings, prefer: &[&str]) -> Result<(), ValidationError> {
    let sentinel = !s.sentinel_addresses.is_empty();
    let cluster = !s.cluster_addresses.is_empty();
    if sentinel && cluster {
        return Err(bad(
            pick(prefer, "redis_sentinel_addresses", "redis_cluster_addresses"),
            "redis_sentinel_addresses and redis_cluster_addresses exclude each other (LiveKit would use only the sentinels)",
        ));
    }
    if address.is_some() && (sentinel || cluster) {
        let other = if sentinel {
            "redis_sentinel_addresses"
        } else {
            "redis_cluster_addresses"
        };
        return Err(bad(
            pick(prefer, "redis_address", other),
            format!("redis_address and {other} exclude each other (LiveKit would ignore redis_address); unset one"),
        ));
    }
    if s.sentinel_master.is_some() != sentinel {
        return Err(if sentinel {
            bad("redis_sentinel_addresses", "needs redis_sentinel_master")
        } else {
            bad("redis_sentinel_master", "needs redis_sentinel_addresses")
        });
    }
    if !s.is_empty() && !s.configured(address) {
        let field = FIELDS
            .iter()
            .copied()
            .find(|f| s.differing(&RedisSettings::default()).iter().any(|(n, _)| n == f))
            .unwrap_or("redis_address");
        return Err(bad(
            field,
            "needs redis_address, redis_sentinel_addresses or redis_cluster_addresses",
        ));
    }
    if s.username.is_some() && s.password.is_none() {
        return Err(bad("redis_username", "needs redis_password (AUTH takes both)"));
    }
    if s.sentinel_username.is_some() && s.sentinel_password.is_none() {
        return Err(bad(
            "redis_sentinel_username",
            "needs redis_sentinel_password (AUTH takes both)",
        ));
    }
    if (s.sentinel_username.is_some() || s.sentinel_password.is_some()) && !sentinel {
        let field = if s.sentinel_username.is_some() {
            "redis_sentinel_username"
        } else {
            "redis_sentinel_password"
        };
        return Err(bad(field, "needs redis_sentinel_addresses"));
    }
    if cluster && s.db != 0 {
        return Err(bad(
            pick(prefer, "redis_cluster_addresses", "redis_db"),
            "must be 0 with redis_cluster_addresses (Redis Cluster has only database 0)",
        ));
    }
    for (field, set) in [
        ("redis_tls_ca_file", s.tls_ca_file.is_some()),
        ("redis_tls_server_name", s.tls_server_name.is_some()),
        ("redis_tls_cert_file", s.tls_cert_file.is_some()),
        ("redis_tls_key_file", s.tls_key_file.is_some()),
    ] {
        if set && !s.tls {
            return Err(bad(field, "needs redis_tls: true"));
        }
    }
    if s.tls_cert_file.is_some() != s.tls_key_file.is_some() {
        return Err(if s.tls_cert_file.is_some() {
            bad(
                "redis_tls_cert_file",
                "needs redis_tls_key_file (a certificate and its key go together)",
            )
        } else {
            bad(
                "redis_tls_key_file",
                "needs redis_tls_cert_file (a certificate and its key go together)",
            )
        });
    }
    Ok(())
}

/// Merges the Redis parameters of `configure` into `current`: a given value
/// replaces, an absent or empty one keeps, an `unset` entry removes. Each
/// given value is checked on its own (files opened and read) before the
/// result is; the cross-setting rules are left to [`validate`], which needs
/// the merged address.
///
/// # Errors
/// The first rule broken, naming the field.
pub fn merge(current: &RedisSettings, p: &ConfigureParams, unset: &[String]) -> Result<RedisSettings, ValidationError> {
    let mut s = current.clone();
    let mut given_names: Vec<&'static str> = Vec::new();
    macro_rules! take_string {
        ($field:literal, $param:expr, $slot:expr, $check:expr) => {
            if let Some(v) = given($field, $param.as_deref())? {
                $check($field, v)?;
                $slot = Some(v.to_string());
                given_names.push($field);
            }
        };
    }
    take_string!("redis_username", p.redis_username, s.username, check_name);
    if let Some(v) = given("redis_password", p.redis_password.as_deref())? {
        check_password("redis_password", v)?;
        s.password = Some(Secret::new(v));
        given_names.push("redis_password");
    }
    if let Some(db) = p.redis_db {
        if db > MAX_DB {
            return Err(bad("redis_db", format!("must be a database number 0-{MAX_DB}")));
        }
        s.db = db;
        given_names.push("redis_db");
    }
    if let Some(tls) = p.redis_tls {
        s.tls = tls;
        given_names.push("redis_tls");
    }
    take_string!("redis_tls_ca_file", p.redis_tls_ca_file, s.tls_ca_file, check_pem_file);
    take_string!(
        "redis_tls_server_name",
        p.redis_tls_server_name,
        s.tls_server_name,
        |f, n: &str| if is_hostname(n) {
            Ok(())
        } else {
            Err(bad(f, "must be a hostname (RFC 1123)"))
        }
    );
    take_string!(
        "redis_tls_cert_file",
        p.redis_tls_cert_file,
        s.tls_cert_file,
        check_pem_file
    );
    take_string!(
        "redis_tls_key_file",
        p.redis_tls_key_file,
        s.tls_key_file,
        check_pem_file
    );
    take_string!(
        "redis_sentinel_master",
        p.redis_sentinel_master,
        s.sentinel_master,
        check_name
    );
    if let Some(l) = given_list("redis_sentinel_addresses", p.redis_sentinel_addresses.as_deref())? {
        check_list("redis_sentinel_addresses", l)?;
        s.sentinel_addresses = l.to_vec();
        given_names.push("redis_sentinel_addresses");
    }
    take_string!(
        "redis_sentinel_username",
        p.redis_sentinel_username,
        s.sentinel_username,
        check_name
    );
    if let Some(v) = given("redis_sentinel_password", p.redis_sentinel_password.as_deref())? {
        check_password("redis_sentinel_password", v)?;
        s.sentinel_password = Some(Secret::new(v));
        given_names.push("redis_sentinel_password");
    }
    if let Some(l) = given_list("redis_cluster_addresses", p.redis_cluster_addresses.as_deref())? {
        check_list("redis_cluster_addresses", l)?;
        s.cluster_addresses = l.to_vec();
        given_names.push("redis_cluster_addresses");
    }
    for name in unset {
        let Some(&field) = FIELDS.iter().find(|f| *f == name) else {
            continue;
        };
        if given_names.contains(&field) {
            return Err(bad(field, "is both given a value and unset; pick one"));
        }
        match field {
            "redis_username" => s.username = None,
            "redis_password" => s.password = None,
            "redis_db" => s.db = 0,
            "redis_tls" => s.tls = false,
            "redis_tls_ca_file" => s.tls_ca_file = None,
            "redis_tls_server_name" => s.tls_server_name = None,
            "redis_tls_cert_file" => s.tls_cert_file = None,
            "redis_tls_key_file" => s.tls_key_file = None,
            "redis_sentinel_master" => s.sentinel_master = None,
            "redis_sentinel_addresses" => s.sentinel_addresses.clear(),
            "redis_sentinel_username" => s.sentinel_username = None,
            "redis_sentinel_password" => s.sentinel_password = None,
            _ => s.cluster_addresses.clear(),
        }
    }
    Ok(s)
}

#[cfg(test)]
#[path = "redis_tests.rs"]
mod tests;
