//! Naming what differs in the settings' parts of `livekit.yaml` and
//! `runtime.json`, by key, never by value.

use super::*;

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
pub(super) fn yaml_owned(doc: &Yaml) -> Vec<(String, Option<&Yaml>)> {
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
