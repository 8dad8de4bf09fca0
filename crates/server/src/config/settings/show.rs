//! `config show`: every `configure` parameter's effective value (secrets as
//! `set`/`unset`), its default and the key it is rendered as.

use super::*;

/// `config_show`: every `configure` parameter's effective value (secrets
/// as `set`/`unset`), its default, and the key it is rendered as.
pub fn show(c: &Config) -> ConfigShowResult {
    let target = c.livekit_version;
    let core: [(&str, Json, Json); 11] = [
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
        ("public_url", json!(c.public_url), Json::Null),
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

pub(super) fn is_set(s: &Settings, field: &str) -> bool {
    to_json(s).get(field) != to_json(&Settings::default()).get(field)
}
