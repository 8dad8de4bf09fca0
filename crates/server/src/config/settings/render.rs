//! The settings' renderings: `runtime.json`'s form (the `configure`
//! parameters' JSON) and their `livekit.yaml` sections, and reading them
//! back.

use super::*;

/// The settings as `configure` parameters (secrets included: for
/// re-validation only): `runtime.json`'s form is the parameters' own.
pub(super) fn to_params(s: &Settings) -> Result<ConfigureParams, ValidationError> {
    serde_json::from_value(Json::Object(to_json(s))).map_err(|_| invalid("unset", "a setting has no configure form"))
}

/// Each field's value in `runtime.json` form: the `configure` parameter's
/// JSON, `null`/`false`/`[]` when not set. Secrets in clear (the file is
/// 0600, like the API secret in it).
pub fn to_json(s: &Settings) -> Map<String, Json> {
    to_json_with(s, false)
}

pub(super) fn to_json_with(s: &Settings, redact: bool) -> Map<String, Json> {
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

pub(super) fn yaml_list(out: &mut String, indent: &str, key: &str, items: &[String]) {
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

pub(super) fn yaml_str(out: &mut String, indent: &str, key: &str, v: &str) {
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
