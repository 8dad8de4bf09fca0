//! Fixtures and generators shared by the config module's tests.

use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::credential::is_placeholder;
use super::heal::{FileObs, Observed};
use super::model::{Config, Credential, Secret};
use super::redis::RedisSettings;
use super::render::{render, TripleFile};
use super::settings::Settings;
use super::validate::validate_config;

/// A config with every field away from its default, so a test notices a
/// field that is lost or defaulted.
pub fn config_a() -> Config {
    Config {
        api_key: "APIaaaaaaaaaaaa".into(),
        api_secret: Secret::new("aaaaSecretaaaaSecretaaaaSecretaaaaSecret123"),
        domain: "media.example.org".into(),
        redis_address: Some("redis.internal:6380".into()),
        redis: RedisSettings {
            username: Some("livekit".into()),
            password: Some(Secret::new("redis pass with spaces")),
            db: 3,
            tls: true,
            tls_ca_file: Some("/etc/redis/ca.pem".into()),
            tls_server_name: Some("redis.internal".into()),
            tls_cert_file: Some("/etc/redis/client.pem".into()),
            tls_key_file: Some("/etc/redis/client.key".into()),
            ..RedisSettings::default()
        },
        port: 7980,
        rtc_tcp_port: 7981,
        rtc_port_range_start: 51000,
        rtc_port_range_end: 52000,
        node_ip: Some("192.0.2.10".into()),
        backend_port: 7990,
        public_url: None,
        settings: Settings::default(),
        livekit_version: None,
    }
}

/// Different from [`config_a`] in every field.
pub fn config_b() -> Config {
    Config {
        api_key: "APIbbbbbbbbbbbb".into(),
        api_secret: Secret::new("bbbbSecretbbbbSecretbbbbSecretbbbbSecret456"),
        domain: "2001:db8::7".into(),
        redis_address: None,
        redis: RedisSettings {
            sentinel_master: Some("mymaster".into()),
            sentinel_addresses: vec!["10.0.0.1:26379".into(), "[2001:db8::2]:26379".into()],
            sentinel_username: Some("sentinel-user".into()),
            sentinel_password: Some(Secret::new("sentinelpass")),
            ..RedisSettings::default()
        },
        port: 8080,
        rtc_tcp_port: 8081,
        rtc_port_range_start: 40000,
        rtc_port_range_end: 40100,
        node_ip: None,
        backend_port: 8090,
        // None like `config_a`'s: the boot tests salvage `domain` and
        // `port` from a `backend.env` whose `LIVEKIT_URL` is the derived one.
        public_url: None,
        settings: Settings::default(),
        livekit_version: None,
    }
}

/// The credential the deterministic minter of the tests hands out.
pub fn minted() -> Credential {
    Credential {
        api_key: "APImmmmmmmmmmmm".into(),
        api_secret: Secret::new("mmmmSecretmmmmSecretmmmmSecretmmmmSecret789"),
    }
}

/// The three renderings of `c`, as if freshly written.
pub fn observed_of(c: &Config) -> Observed {
    Observed {
        runtime_json: FileObs::Present(render(c, TripleFile::RuntimeJson)),
        livekit_yaml: FileObs::Present(render(c, TripleFile::LivekitYaml)),
        backend_env: FileObs::Present(render(c, TripleFile::BackendEnv)),
    }
}

fn arb_hostname() -> impl Strategy<Value = String> {
    "[a-z]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z][a-z0-9-]{0,6}[a-z0-9]){0,3}"
}

fn arb_domain() -> impl Strategy<Value = String> {
    prop_oneof![
        arb_hostname(),
        any::<Ipv4Addr>().prop_map(|ip| ip.to_string()),
        any::<Ipv6Addr>().prop_map(|ip| ip.to_string()),
    ]
}

fn arb_redis() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            arb_hostname(),
            any::<Ipv4Addr>().prop_map(|ip| ip.to_string()),
            any::<Ipv6Addr>().prop_map(|ip| format!("[{ip}]")),
        ],
        1u16..,
    )
        .prop_map(|(h, p)| format!("{h}:{p}"))
}

fn arb_secret() -> impl Strategy<Value = String> {
    // Digits-only and punctuation-led secrets are the ones a careless YAML
    // or env rendering would turn into numbers, lists or comments.
    prop_oneof![
        "[A-Za-z0-9_.~+/=-]{32,256}",
        "[0-9]{32,40}",
        "[-~=+/._][A-Za-z0-9_.~+/=-]{31,60}",
    ]
}

fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_-]{3,64}",
        "(yes|off|true|null|0x1f|1e3|-[a-z]{2}|[0-9]{3,10})"
    ]
}

fn arb_public_url() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just("ws"), Just("wss")],
        prop_oneof![
            arb_hostname(),
            any::<Ipv4Addr>().prop_map(|ip| ip.to_string()),
            any::<Ipv6Addr>().prop_map(|ip| format!("[{ip}]")),
        ],
        proptest::option::of(1u16..),
        any::<bool>(),
    )
        .prop_map(|(scheme, host, port, slash)| {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            format!("{scheme}://{host}{port}{}", if slash { "/" } else { "" })
        })
}

prop_compose! {
    /// Any config that passes validation.
    pub fn arb_config()(
        api_key in arb_key().prop_filter("placeholder", |k| !is_placeholder(k)),
        api_secret in arb_secret().prop_filter("placeholder", |s| !is_placeholder(s)),
        domain in arb_domain(),
        redis_address in proptest::option::of(arb_redis()),
        // Any printable password, quotes, `#`, `: ` and a leading `-` included.
        redis_password in proptest::option::of("[ -~]{1,40}"),
        redis_db in 0u32..=15,
        redis_tls in any::<bool>(),
        tcp in proptest::array::uniform3(1u16..).prop_filter("distinct TCP ports", |p| p[0] != p[1] && p[1] != p[2] && p[0] != p[2]),
        range in (1u16.., 1u16..).prop_map(|(a, b)| (a.min(b), a.max(b))),
        node_ip in proptest::option::of(prop_oneof![
            any::<Ipv4Addr>().prop_map(|ip| ip.to_string()),
            any::<Ipv6Addr>().prop_map(|ip| ip.to_string()),
        ]),
        public_url in proptest::option::of(arb_public_url()),
    ) -> Config {
        let c = Config {
            api_key,
            api_secret: Secret::new(api_secret),
            domain,
            redis: if redis_address.is_some() {
                RedisSettings {
                    password: redis_password.map(Secret::new),
                    db: redis_db,
                    tls: redis_tls,
                    ..RedisSettings::default()
                }
            } else {
                RedisSettings::default()
            },
            redis_address,
            port: tcp[0],
            rtc_tcp_port: tcp[1],
            rtc_port_range_start: range.0,
            rtc_port_range_end: range.1,
            node_ip,
            backend_port: tcp[2],
            public_url,
            settings: Settings::default(),
            livekit_version: None,
        };
        assert!(validate_config(&c).is_ok(), "generator yields only valid configs: {:?}", validate_config(&c));
        c
    }
}
