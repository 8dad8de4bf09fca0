//! The production settings' tests: merge, rules, renderings, drift, show.
//! Longer than 600 lines: every setting is exercised through the same
//! fixtures (`configured`, `yaml`, `at`).
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
    assert_eq!(plain.settings.len(), 11 + 13 + FIELDS.len());
}
