//! The three renderings: pure functions from a [`Config`] to bytes.
//!
//! Output is deterministic (same config, same bytes) because consistency is
//! defined as byte equality with the rendering. Every string is written
//! double-quoted with JSON escapes, which JSON and YAML read identically (a
//! JSON string is a valid YAML double-quoted scalar), so a value can never
//! change type (`yes`, `1e3`, `null`) or break out of its line, whatever it
//! holds; `backend.env` lines come from the shared envfile renderer.

use std::fmt::{self, Write as _};

use hero_livekit_proto::envfile;

pub use super::model::TripleFile;
use super::model::{sha256_hex, Config};
pub(crate) use super::rules::push_quoted;
use super::settings;

impl Config {
    /// The `in_memory_hash` of `health`: sha256 (hex) of the canonical
    /// `runtime.json` rendering, which holds every field. Equal configs give
    /// equal hashes and the hash is comparable with `files.runtime.json.sha256`.
    pub fn hash(&self) -> String {
        sha256_hex(&render(self, TripleFile::RuntimeJson))
    }
}

const HEADER: &str = "# written by hero_livekit; edit with `hero_livekit configure`\n\
                      # any other change is overwritten: hero_livekit keeps this file equal to its config\n";

/// The bytes `file` must hold for `config`. Ends with a newline.
pub fn render(config: &Config, file: TripleFile) -> Vec<u8> {
    match file {
        TripleFile::RuntimeJson => render_runtime_json(config),
        TripleFile::LivekitYaml => render_livekit_yaml(config),
        TripleFile::BackendEnv => render_backend_env(config),
    }
    .into_bytes()
}

fn render_runtime_json(c: &Config) -> String {
    let mut out = String::with_capacity(512);
    out.push_str("{\n");
    let strings: [(&str, &str); 3] = [
        ("api_key", &c.api_key),
        ("api_secret", c.api_secret.expose()),
        ("domain", &c.domain),
    ];
    for (k, v) in strings {
        let _ = write!(out, "  \"{k}\": ");
        push_quoted(&mut out, v);
        out.push_str(",\n");
    }
    out.push_str("  \"redis_address\": ");
    push_quoted(&mut out, c.redis_address.as_deref().unwrap_or(""));
    super::redis::render_json(&c.redis, &mut out);
    let _ = write!(
        out,
        ",\n  \"port\": {},\n  \"rtc_tcp_port\": {},\n  \"rtc_port_range_start\": {},\n  \"rtc_port_range_end\": {},\n",
        c.port, c.rtc_tcp_port, c.rtc_port_range_start, c.rtc_port_range_end
    );
    out.push_str("  \"node_ip\": ");
    push_quoted(&mut out, c.node_ip.as_deref().unwrap_or(""));
    let _ = writeln!(out, ",\n  \"backend_port\": {},", c.backend_port);
    // Recorded only when set: a config without it keeps the bytes (and the
    // `in_memory_hash`) it had before the field existed.
    if let Some(url) = &c.public_url {
        out.push_str("  \"public_url\": ");
        push_quoted(&mut out, url);
        out.push_str(",\n");
    }
    settings::render_runtime_json(&mut out, c);
    out.push_str("  \"livekit_url\": ");
    push_quoted(&mut out, &c.livekit_url());
    out.push_str("\n}\n");
    out
}

fn render_livekit_yaml(c: &Config) -> String {
    let mut out = String::with_capacity(512);
    out.push_str(HEADER);
    let _ = writeln!(out, "port: {}", c.port);
    settings::render_yaml_top(&mut out, c);
    let _ = write!(
        out,
        "rtc:\n  tcp_port: {}\n  port_range_start: {}\n  port_range_end: {}\n  use_external_ip: {}\n",
        c.rtc_tcp_port, c.rtc_port_range_start, c.rtc_port_range_end, c.settings.use_external_ip
    );
    if let Some(ip) = &c.node_ip {
        out.push_str("  node_ip: ");
        push_quoted(&mut out, ip);
        out.push('\n');
    }
    settings::render_yaml_rtc(&mut out, c);
    super::redis::render_yaml(c.redis_address.as_deref(), &c.redis, &mut out);
    out.push_str("keys:\n  ");
    push_quoted(&mut out, &c.api_key);
    out.push_str(": ");
    push_quoted(&mut out, c.api_secret.expose());
    out.push_str("\nlogging:\n");
    settings::render_yaml_logging(&mut out, c);
    settings::render_yaml_tail(&mut out, c);
    out
}

fn render_backend_env(c: &Config) -> String {
    let mut out = String::with_capacity(256);
    out.push_str(HEADER);
    out.push_str(&envfile::render_line("LIVEKIT_API_KEY", &c.api_key));
    out.push_str(&envfile::render_line("LIVEKIT_API_SECRET", c.api_secret.expose()));
    out.push_str(&envfile::render_line("LIVEKIT_URL", &c.client_url()));
    out.push_str(&envfile::render_line("PORT", &c.backend_port.to_string()));
    out.push_str(&envfile::render_line("MINT_SECRET", c.mint_secret().expose()));
    out
}

/// A config with its three renderings and their sha256, computed once per
/// config change so that `health` compares hashes instead of re-rendering.
#[derive(Clone)]
pub struct Rendered {
    config: Config,
    bytes: [Vec<u8>; 3],
    sha256: [String; 3],
}

impl Rendered {
    /// Renders and hashes the three files of `config`.
    pub fn new(config: Config) -> Rendered {
        let bytes = TripleFile::ALL.map(|f| render(&config, f));
        let sha256 = [sha256_hex(&bytes[0]), sha256_hex(&bytes[1]), sha256_hex(&bytes[2])];
        Rendered { config, bytes, sha256 }
    }

    /// The config these renderings come from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The bytes `file` must hold.
    pub fn bytes(&self, file: TripleFile) -> &[u8] {
        &self.bytes[file.index()]
    }

    /// sha256 (hex) of [`Rendered::bytes`]: `expected_sha256` in `health`.
    pub fn sha256(&self, file: TripleFile) -> &str {
        &self.sha256[file.index()]
    }

    /// `in_memory_hash`: equal to [`Config::hash`].
    pub fn in_memory_hash(&self) -> &str {
        self.sha256(TripleFile::RuntimeJson)
    }
}

impl fmt::Debug for Rendered {
    // The bytes hold the secret: show only the hashes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rendered")
            .field("api_key", &self.config.api_key)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use hero_livekit_proto::ProcessName;

    use proptest::prelude::*;
    use serde::Deserialize;

    use super::super::testutil::{arb_config, config_a, config_b};
    use super::*;

    /// Mirror of the part of livekit-server's `config.Config` we write,
    /// parsed as strictly as livekit-server parses it (unknown keys fail).
    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct StrictYaml {
        port: u16,
        rtc: StrictRtc,
        #[serde(default)]
        redis: Option<StrictRedis>,
        keys: BTreeMap<String, String>,
        logging: StrictLogging,
    }
    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct StrictRtc {
        tcp_port: u16,
        port_range_start: u16,
        port_range_end: u16,
        use_external_ip: bool,
        #[serde(default)]
        node_ip: Option<String>,
    }
    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct StrictRedis {
        #[serde(default)]
        address: Option<String>,
        #[serde(default)]
        username: Option<String>,
        #[serde(default)]
        password: Option<String>,
        #[serde(default)]
        db: Option<i64>,
        #[serde(default)]
        tls: Option<StrictTls>,
        #[serde(default)]
        sentinel_master_name: Option<String>,
        #[serde(default)]
        sentinel_username: Option<String>,
        #[serde(default)]
        sentinel_password: Option<String>,
        #[serde(default)]
        sentinel_addresses: Option<Vec<String>>,
        #[serde(default)]
        cluster_addresses: Option<Vec<String>>,
    }
    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct StrictTls {
        enabled: bool,
        #[serde(default)]
        server_name: Option<String>,
        #[serde(default)]
        ca_cert_file: Option<String>,
        #[serde(default)]
        client_cert_file: Option<String>,
        #[serde(default)]
        client_key_file: Option<String>,
    }
    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct StrictLogging {
        level: String,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct StrictRuntime {
        api_key: String,
        api_secret: String,
        domain: String,
        redis_address: String,
        port: u16,
        rtc_tcp_port: u16,
        rtc_port_range_start: u16,
        rtc_port_range_end: u16,
        node_ip: String,
        backend_port: u16,
        livekit_url: String,
        #[serde(default)]
        public_url: Option<String>,
        #[serde(default)]
        redis_password: Option<String>,
        #[serde(default)]
        redis_db: Option<u32>,
        #[serde(default)]
        redis_tls: Option<bool>,
    }

    fn text(c: &Config, f: TripleFile) -> String {
        String::from_utf8(render(c, f)).expect("renderings are UTF-8")
    }

    #[test]
    fn names_readers_and_write_order() {
        assert_eq!(TripleFile::ALL.map(TripleFile::name), hero_livekit_proto::TRIPLE_FILES);
        assert_eq!(
            TripleFile::ALL.map(TripleFile::reader),
            [None, Some(ProcessName::LivekitServer), Some(ProcessName::LkBackend)]
        );
        for (i, f) in TripleFile::ALL.into_iter().enumerate() {
            assert_eq!(f.index(), i);
        }
    }

    #[test]
    fn renderings_are_byte_stable() {
        // A change here changes every deployed file's bytes and rewrites
        // them on upgrade: it must be deliberate. Without the newer Redis
        // settings the bytes are those older versions wrote, so an upgrade
        // rewrites nothing.
        let mut c = config_a();
        c.redis = super::super::redis::RedisSettings::default();
        assert_eq!(
            text(&c, TripleFile::RuntimeJson),
            r#"{
  "api_key": "APIaaaaaaaaaaaa",
  "api_secret": "aaaaSecretaaaaSecretaaaaSecretaaaaSecret123",
  "domain": "media.example.org",
  "redis_address": "redis.internal:6380",
  "port": 7980,
  "rtc_tcp_port": 7981,
  "rtc_port_range_start": 51000,
  "rtc_port_range_end": 52000,
  "node_ip": "192.0.2.10",
  "backend_port": 7990,
  "bind_addresses": [],
  "use_external_ip": false,
  "rtc_udp_port": null,
  "stun_servers": [],
  "turn_servers": [],
  "turn_enabled": false,
  "turn_domain": null,
  "turn_tls_port": null,
  "turn_udp_port": null,
  "turn_external_tls": false,
  "turn_cert_file": null,
  "turn_key_file": null,
  "webhook_urls": [],
  "room_auto_create": null,
  "room_empty_timeout": null,
  "room_departure_timeout": null,
  "room_max_participants": null,
  "room_enabled_codecs": [],
  "log_level": null,
  "log_json": false,
  "prometheus_port": null,
  "prometheus_username": null,
  "prometheus_password": null,
  "region": null,
  "livekit_version": "",
  "livekit_url": "ws://media.example.org:7980"
}
"#
        );
        assert_eq!(
            text(&c, TripleFile::LivekitYaml),
            "# written by hero_livekit; edit with `hero_livekit configure`\n\
             # any other change is overwritten: hero_livekit keeps this file equal to its config\n\
             port: 7980\n\
             rtc:\n  tcp_port: 7981\n  port_range_start: 51000\n  port_range_end: 52000\n  use_external_ip: false\n  node_ip: \"192.0.2.10\"\n\
             redis:\n  address: \"redis.internal:6380\"\n\
             keys:\n  \"APIaaaaaaaaaaaa\": \"aaaaSecretaaaaSecretaaaaSecretaaaaSecret123\"\n\
             logging:\n  level: info\n"
        );
        assert_eq!(
            text(&c, TripleFile::BackendEnv),
            "# written by hero_livekit; edit with `hero_livekit configure`\n\
             # any other change is overwritten: hero_livekit keeps this file equal to its config\n\
             LIVEKIT_API_KEY=\"APIaaaaaaaaaaaa\"\n\
             LIVEKIT_API_SECRET=\"aaaaSecretaaaaSecretaaaaSecretaaaaSecret123\"\n\
             LIVEKIT_URL=\"ws://media.example.org:7980\"\n\
             PORT=\"7990\"\n\
             MINT_SECRET=\"b10bb479bc66e84a44152349f9ca77ca39a82b5f34766150775f5a0f3ac80055\"\n"
        );
    }

    #[test]
    fn a_public_url_is_what_lk_backend_hands_out_and_runtime_json_records() {
        let mut c = config_a();
        let before = text(&c, TripleFile::RuntimeJson);
        assert!(
            !before.contains("public_url"),
            "left out while unset: the bytes older versions wrote"
        );
        c.public_url = Some("wss://media.example.org".into());
        let json = text(&c, TripleFile::RuntimeJson);
        assert!(json.contains("  \"backend_port\": 7990,\n  \"public_url\": \"wss://media.example.org\",\n"));
        assert!(
            json.contains("\"livekit_url\": \"ws://media.example.org:7980\""),
            "the node's own address"
        );
        let env = text(&c, TripleFile::BackendEnv);
        assert!(env.contains("LIVEKIT_URL=\"wss://media.example.org\"\n"), "{env}");
        assert_eq!(
            text(&c, TripleFile::LivekitYaml),
            text(&config_a(), TripleFile::LivekitYaml)
        );
    }

    #[test]
    fn redis_settings_render_under_livekits_names() {
        let a = config_a();
        assert_eq!(
            text(&a, TripleFile::LivekitYaml).split("redis:\n").nth(1).and_then(|r| r.split("keys:").next()),
            Some(
                "  address: \"redis.internal:6380\"\n  username: \"livekit\"\n  password: \"redis pass with spaces\"\n  db: 3\n\
                 \x20 tls:\n    enabled: true\n    server_name: \"redis.internal\"\n    ca_cert_file: \"/etc/redis/ca.pem\"\n\
                 \x20   client_cert_file: \"/etc/redis/client.pem\"\n    client_key_file: \"/etc/redis/client.key\"\n"
            )
        );
        assert!(text(&a, TripleFile::RuntimeJson).contains(
            "  \"redis_address\": \"redis.internal:6380\",\n  \"redis_username\": \"livekit\",\n  \"redis_password\": \"redis pass with spaces\",\n  \"redis_db\": 3,\n  \"redis_tls\": true,\n  \"redis_tls_ca_file\": \"/etc/redis/ca.pem\",\n  \"redis_tls_server_name\": \"redis.internal\",\n  \"redis_tls_cert_file\": \"/etc/redis/client.pem\",\n  \"redis_tls_key_file\": \"/etc/redis/client.key\",\n  \"port\""
        ));
        let b = config_b();
        assert_eq!(
            text(&b, TripleFile::LivekitYaml).split("redis:\n").nth(1).and_then(|r| r.split("keys:").next()),
            Some(
                "  sentinel_master_name: \"mymaster\"\n  sentinel_username: \"sentinel-user\"\n  sentinel_password: \"sentinelpass\"\n\
                 \x20 sentinel_addresses: [\"10.0.0.1:26379\", \"[2001:db8::2]:26379\"]\n"
            )
        );
        let doc: StrictYaml = serde_yaml::from_slice(&render(&b, TripleFile::LivekitYaml)).expect("strict parse");
        let redis = doc.redis.expect("redis section");
        assert_eq!(
            redis.sentinel_addresses,
            Some(vec!["10.0.0.1:26379".to_string(), "[2001:db8::2]:26379".to_string()])
        );
        assert_eq!(redis.address, None);
        let mut cluster = config_b();
        cluster.redis = super::super::redis::RedisSettings {
            cluster_addresses: vec!["10.0.0.1:7000".into(), "10.0.0.2:7000".into()],
            ..Default::default()
        };
        assert!(text(&cluster, TripleFile::LivekitYaml)
            .contains("redis:\n  cluster_addresses: [\"10.0.0.1:7000\", \"10.0.0.2:7000\"]\nkeys:"));
        // Never the deprecated flag.
        assert!(!text(&a, TripleFile::LivekitYaml).contains("use_tls"));
    }

    #[test]
    fn optional_sections_are_left_out_when_unset() {
        let mut c = config_a();
        c.redis_address = None;
        c.node_ip = None;
        let yaml = text(&c, TripleFile::LivekitYaml);
        assert!(!yaml.contains("redis"));
        assert!(!yaml.contains("node_ip"));
        let json = text(&c, TripleFile::RuntimeJson);
        assert!(json.contains("\"redis_address\": \"\","));
        assert!(json.contains("\"node_ip\": \"\","));
    }

    #[test]
    fn rendered_caches_the_hashes_of_the_renderings() {
        let c = config_a();
        let r = Rendered::new(c.clone());
        for f in TripleFile::ALL {
            assert_eq!(r.bytes(f), render(&c, f).as_slice());
            assert_eq!(r.sha256(f), sha256_hex(&render(&c, f)));
        }
        assert_eq!(r.in_memory_hash(), c.hash());
        assert!(!format!("{r:?}").contains(c.api_secret.expose()));
    }

    proptest! {
        #[test]
        fn quoted_strings_read_back_identically_in_json_and_yaml(s in any::<String>()) {
            let mut q = String::new();
            push_quoted(&mut q, &s);
            let from_json: String = serde_json::from_str(&q).expect("valid JSON string");
            prop_assert_eq!(&from_json, &s);
            let from_yaml: String = serde_yaml::from_str(&q).expect("valid YAML scalar");
            prop_assert_eq!(&from_yaml, &s);
        }

        #[test]
        fn livekit_yaml_parses_strictly_to_the_config_values(c in arb_config()) {
            let doc: StrictYaml = serde_yaml::from_slice(&render(&c, TripleFile::LivekitYaml)).expect("strict parse");
            prop_assert_eq!(doc.port, c.port);
            prop_assert_eq!(doc.rtc.tcp_port, c.rtc_tcp_port);
            prop_assert_eq!(doc.rtc.port_range_start, c.rtc_port_range_start);
            prop_assert_eq!(doc.rtc.port_range_end, c.rtc_port_range_end);
            prop_assert!(!doc.rtc.use_external_ip);
            prop_assert_eq!(doc.rtc.node_ip, c.node_ip.clone());
            let redis = doc.redis;
            prop_assert_eq!(redis.as_ref().and_then(|r| r.address.clone()), c.redis_address.clone());
            prop_assert_eq!(redis.as_ref().and_then(|r| r.password.clone()), c.redis.password.as_ref().map(|p| p.expose().to_string()));
            prop_assert_eq!(redis.as_ref().and_then(|r| r.db).unwrap_or(0), i64::from(c.redis.db));
            prop_assert_eq!(redis.as_ref().and_then(|r| r.tls.as_ref()).is_some_and(|t| t.enabled), c.redis.tls);
            prop_assert_eq!(doc.keys.len(), 1);
            prop_assert_eq!(doc.keys.get(&c.api_key).map(String::as_str), Some(c.api_secret.expose()));
            prop_assert_eq!(doc.logging.level, "info");
        }

        #[test]
        fn runtime_json_parses_strictly_to_the_config_values(c in arb_config()) {
            // The settings' entries are the settings module's to check.
            let mut value: serde_json::Value = serde_json::from_slice(&render(&c, TripleFile::RuntimeJson)).expect("JSON");
            let map = value.as_object_mut().expect("object");
            for f in settings::FIELDS.iter().chain([&settings::VERSION_KEY]) {
                let when_set = *f == "rtc_enable_loopback_candidate" && !c.settings.rtc_enable_loopback_candidate;
                prop_assert!(map.remove(*f).is_some() != when_set, "{} rendered", f);
            }
            let doc: StrictRuntime = serde_json::from_value(value).expect("strict parse");
            prop_assert_eq!(doc, StrictRuntime {
                api_key: c.api_key.clone(),
                api_secret: c.api_secret.expose().to_string(),
                domain: c.domain.clone(),
                redis_address: c.redis_address.clone().unwrap_or_default(),
                port: c.port,
                rtc_tcp_port: c.rtc_tcp_port,
                rtc_port_range_start: c.rtc_port_range_start,
                rtc_port_range_end: c.rtc_port_range_end,
                node_ip: c.node_ip.clone().unwrap_or_default(),
                backend_port: c.backend_port,
                livekit_url: c.livekit_url(),
                public_url: c.public_url.clone(),
                redis_password: c.redis.password.as_ref().map(|p| p.expose().to_string()),
                redis_db: Some(c.redis.db).filter(|d| *d != 0),
                redis_tls: c.redis.tls.then_some(true),
            });
        }

        #[test]
        fn backend_env_parses_to_the_config_values(c in arb_config()) {
            let text = String::from_utf8(render(&c, TripleFile::BackendEnv)).expect("utf8");
            let vars = envfile::parse(&text).expect("parses");
            let port = c.backend_port.to_string();
            let url = c.client_url();
            let mint = c.mint_secret();
            let expected: Vec<(&str, &str)> = vec![
                ("LIVEKIT_API_KEY", &c.api_key),
                ("LIVEKIT_API_SECRET", c.api_secret.expose()),
                ("LIVEKIT_URL", &url),
                ("PORT", &port),
                ("MINT_SECRET", mint.expose()),
            ];
            let got: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn rendering_is_deterministic_and_newline_terminated(c in arb_config()) {
            for f in TripleFile::ALL {
                let a = render(&c, f);
                prop_assert_eq!(&a, &render(&c.clone(), f));
                prop_assert_eq!(a.last(), Some(&b'\n'));
            }
        }
    }
}
