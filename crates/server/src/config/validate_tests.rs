//! Unit tests of [`super`] (validate.rs).
//! Longer than 600 lines: the merge's table and property tests share their
//! fixtures, and the property test needs them all.

use super::*;

const KEY: &str = "APIabcdefghijkm";
const SECRET: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";

fn current() -> Config {
    Config::with_credential(Credential {
        api_key: KEY.into(),
        api_secret: Secret::new(SECRET),
    })
}

fn no_mint() -> Result<Credential, MintError> {
    Err(MintError::new("this test must not mint"))
}

fn fixed_mint() -> Result<Credential, MintError> {
    Ok(Credential {
        api_key: "APImintedkey234".into(),
        api_secret: Secret::new("mintedSecretmintedSecretmintedSecret1234567"),
    })
}

fn invalid(params: ConfigureParams) -> ValidationError {
    match apply_configure_with(Some(&current()), &params, no_mint) {
        Err(ConfigureError::Invalid(e)) => e,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[test]
fn bad_keys_and_secrets_name_their_field_and_never_echo_the_secret() {
    let long_ok = "A".repeat(40);
    let cases: Vec<(ConfigureParams, &str)> = vec![
        (
            ConfigureParams {
                api_key: Some("APIab\ncd".into()),
                ..Default::default()
            },
            "api_key",
        ),
        (
            ConfigureParams {
                api_key: Some("API\"quoted".into()),
                ..Default::default()
            },
            "api_key",
        ),
        (
            ConfigureParams {
                api_key: Some("API:colon".into()),
                ..Default::default()
            },
            "api_key",
        ),
        (
            ConfigureParams {
                api_key: Some("API#hash".into()),
                ..Default::default()
            },
            "api_key",
        ),
        (
            ConfigureParams {
                api_key: Some("API space".into()),
                ..Default::default()
            },
            "api_key",
        ),
        (
            ConfigureParams {
                api_key: Some("ab".into()),
                ..Default::default()
            },
            "api_key",
        ),
        (
            ConfigureParams {
                api_key: Some("k".repeat(65)),
                ..Default::default()
            },
            "api_key",
        ),
        (
            ConfigureParams {
                api_secret: Some(format!("{long_ok}\nLEAK")),
                ..Default::default()
            },
            "api_secret",
        ),
        (
            ConfigureParams {
                api_secret: Some(format!("{long_ok}\"LEAK")),
                ..Default::default()
            },
            "api_secret",
        ),
        (
            ConfigureParams {
                api_secret: Some(format!("{long_ok}:LEAK")),
                ..Default::default()
            },
            "api_secret",
        ),
        (
            ConfigureParams {
                api_secret: Some(format!("{long_ok}#LEAK")),
                ..Default::default()
            },
            "api_secret",
        ),
        (
            ConfigureParams {
                api_secret: Some(format!("{long_ok} LEAK")),
                ..Default::default()
            },
            "api_secret",
        ),
        (
            ConfigureParams {
                api_secret: Some(format!("{long_ok}$LEAK")),
                ..Default::default()
            },
            "api_secret",
        ),
        (
            ConfigureParams {
                api_secret: Some(format!("{long_ok}\\LEAK")),
                ..Default::default()
            },
            "api_secret",
        ),
        (
            ConfigureParams {
                api_secret: Some("shortLEAKsecret".into()),
                ..Default::default()
            },
            "api_secret",
        ),
        (
            ConfigureParams {
                api_secret: Some("L".repeat(257)),
                ..Default::default()
            },
            "api_secret",
        ),
    ];
    for (params, field) in cases {
        let e = invalid(params.clone());
        assert_eq!(e.field, field, "{params:?}");
        assert!(!e.to_string().contains("LEAK"), "error echoes the value: {e}");
        assert!(e.to_string().starts_with(&format!("{field}: ")));
    }
}

#[test]
fn bad_domains_redis_addresses_and_node_ips_name_their_field() {
    let cases: Vec<(ConfigureParams, &str)> = vec![
        (
            ConfigureParams {
                domain: Some("bad domain".into()),
                ..Default::default()
            },
            "domain",
        ),
        (
            ConfigureParams {
                domain: Some("-lead.example.com".into()),
                ..Default::default()
            },
            "domain",
        ),
        (
            ConfigureParams {
                domain: Some("a..b".into()),
                ..Default::default()
            },
            "domain",
        ),
        (
            ConfigureParams {
                domain: Some("[::1]".into()),
                ..Default::default()
            },
            "domain",
        ),
        (
            ConfigureParams {
                domain: Some("host:7880".into()),
                ..Default::default()
            },
            "domain",
        ),
        (
            ConfigureParams {
                domain: Some("1.2.3".into()),
                ..Default::default()
            },
            "domain",
        ),
        (
            ConfigureParams {
                domain: Some(format!("{}.com", "a".repeat(64))),
                ..Default::default()
            },
            "domain",
        ),
        (
            ConfigureParams {
                redis_address: Some("redis".into()),
                ..Default::default()
            },
            "redis_address",
        ),
        (
            ConfigureParams {
                redis_address: Some("redis:0".into()),
                ..Default::default()
            },
            "redis_address",
        ),
        (
            ConfigureParams {
                redis_address: Some("redis:65536".into()),
                ..Default::default()
            },
            "redis_address",
        ),
        (
            ConfigureParams {
                redis_address: Some("redis:+80".into()),
                ..Default::default()
            },
            "redis_address",
        ),
        (
            ConfigureParams {
                redis_address: Some("::1:6379".into()),
                ..Default::default()
            },
            "redis_address",
        ),
        (
            ConfigureParams {
                redis_address: Some("[nothex]:6379".into()),
                ..Default::default()
            },
            "redis_address",
        ),
        (
            ConfigureParams {
                redis_address: Some("re dis:6379".into()),
                ..Default::default()
            },
            "redis_address",
        ),
        (
            ConfigureParams {
                node_ip: Some("example.com".into()),
                ..Default::default()
            },
            "node_ip",
        ),
        (
            ConfigureParams {
                node_ip: Some("10.0.0.256".into()),
                ..Default::default()
            },
            "node_ip",
        ),
    ];
    for (params, field) in cases {
        assert_eq!(invalid(params.clone()).field, field, "{params:?}");
    }
}

#[test]
fn good_domains_redis_addresses_and_node_ips_are_accepted() {
    for d in [
        "localhost",
        "media.example.com",
        "10.0.0.1",
        "2001:db8::1",
        "a-b.c9",
        "xn--bcher-kva.example",
    ] {
        assert!(validate_domain(d).is_ok(), "{d}");
    }
    for r in ["redis:6379", "10.0.0.2:6379", "[::1]:6379", "cache.internal.example:1"] {
        assert!(validate_redis_address(r).is_ok(), "{r}");
    }
    for ip in ["10.0.0.1", "::1", "fe80::1"] {
        assert!(validate_node_ip(ip).is_ok(), "{ip}");
    }
}

#[test]
fn ports_out_of_range_or_clashing_name_the_field_that_was_given() {
    let cases: Vec<(ConfigureParams, &str)> = vec![
        (
            ConfigureParams {
                port: Some(0),
                ..Default::default()
            },
            "port",
        ),
        (
            ConfigureParams {
                port: Some(65536),
                ..Default::default()
            },
            "port",
        ),
        (
            ConfigureParams {
                rtc_tcp_port: Some(70000),
                ..Default::default()
            },
            "rtc_tcp_port",
        ),
        (
            ConfigureParams {
                backend_port: Some(0),
                ..Default::default()
            },
            "backend_port",
        ),
        (
            ConfigureParams {
                rtc_port_range_start: Some(0),
                ..Default::default()
            },
            "rtc_port_range_start",
        ),
        (
            ConfigureParams {
                port: Some(7890),
                ..Default::default()
            },
            "port",
        ),
        (
            ConfigureParams {
                backend_port: Some(7880),
                ..Default::default()
            },
            "backend_port",
        ),
        (
            ConfigureParams {
                rtc_tcp_port: Some(7890),
                ..Default::default()
            },
            "rtc_tcp_port",
        ),
        (
            ConfigureParams {
                rtc_port_range_start: Some(60001),
                ..Default::default()
            },
            "rtc_port_range_start",
        ),
        (
            ConfigureParams {
                rtc_port_range_end: Some(49999),
                ..Default::default()
            },
            "rtc_port_range_end",
        ),
    ];
    for (params, field) in cases {
        assert_eq!(invalid(params.clone()).field, field, "{params:?}");
    }
}

#[test]
fn tcp_ports_may_lie_inside_the_udp_range() {
    let p = ConfigureParams {
        port: Some(55000),
        ..Default::default()
    };
    let u = apply_configure_with(Some(&current()), &p, no_mint).expect("UDP and TCP do not collide");
    assert_eq!(u.config.port, 55000);
}

#[test]
fn a_failed_validation_happens_before_minting() {
    let p = ConfigureParams {
        domain: Some("bad domain".into()),
        ..Default::default()
    };
    let r = apply_configure_with(None, &p, no_mint);
    assert!(
        matches!(r, Err(ConfigureError::Invalid(ValidationError { field: "domain", .. }))),
        "{r:?}"
    );
}

#[test]
fn absent_and_empty_values_keep_the_current_ones() {
    let cur = current();
    for v in [None, Some(""), Some("  ")] {
        let p = ConfigureParams {
            api_key: v.map(String::from),
            api_secret: v.map(String::from),
            domain: v.map(String::from),
            redis_address: v.map(String::from),
            node_ip: v.map(String::from),
            ..Default::default()
        };
        let u = apply_configure_with(Some(&cur), &p, no_mint).expect("keeps everything");
        assert_eq!(u.config, cur);
        assert!(u.changed_fields.is_empty());
        assert!(!u.minted);
    }
}

fn refusal(p: &ConfigureParams) -> ValidationError {
    match apply_configure_with(Some(&current()), p, no_mint) {
        Err(ConfigureError::Invalid(e)) => e,
        other => panic!("refused, got {other:?}"),
    }
}

#[test]
fn a_template_is_refused_in_every_field_naming_it() {
    for t in ["${DOMAIN}", "<your-value>", "${REDIS}:6379"] {
        let cases: [(&str, ConfigureParams); 5] = [
            (
                "api_key",
                ConfigureParams {
                    api_key: Some(t.into()),
                    ..Default::default()
                },
            ),
            (
                "api_secret",
                ConfigureParams {
                    api_secret: Some(t.into()),
                    ..Default::default()
                },
            ),
            (
                "domain",
                ConfigureParams {
                    domain: Some(t.into()),
                    ..Default::default()
                },
            ),
            (
                "redis_address",
                ConfigureParams {
                    redis_address: Some(t.into()),
                    ..Default::default()
                },
            ),
            (
                "node_ip",
                ConfigureParams {
                    node_ip: Some(t.into()),
                    ..Default::default()
                },
            ),
        ];
        for (field, p) in cases {
            let e = refusal(&p);
            assert_eq!(e.field, field, "{t}");
            assert!(e.rule.contains("template"), "{e}");
        }
    }
}

#[test]
fn a_placeholder_word_is_refused_for_the_credential_and_taken_elsewhere() {
    for w in ["changeme", "secret", "devkey", "xxxxxxxxxxxx", "your-api-key"] {
        let e = refusal(&ConfigureParams {
            api_key: Some(w.into()),
            ..Default::default()
        });
        assert_eq!(e.field, "api_key");
        assert!(e.rule.contains("placeholder"), "{e}");
        let e = refusal(&ConfigureParams {
            api_secret: Some(w.into()),
            ..Default::default()
        });
        assert_eq!(e.field, "api_secret");
        assert!(e.rule.contains("placeholder"), "{e}");
    }
    let p = ConfigureParams {
        domain: Some("secret".into()),
        ..Default::default()
    };
    let u = apply_configure_with(Some(&current()), &p, no_mint).expect("a hostname");
    assert_eq!(u.config.domain, "secret");
    assert_eq!(u.changed_fields, ["domain"]);
}

#[test]
fn without_current_config_a_credential_is_minted_and_defaults_apply() {
    let u = apply_configure_with(None, &ConfigureParams::default(), fixed_mint).expect("mints");
    assert!(u.minted);
    assert_eq!(u.config.api_key, "APImintedkey234");
    assert_eq!(u.config.port, 7880);
    assert_eq!(
        u.changed_fields,
        FIELDS
            .iter()
            .chain(&settings::FIELDS)
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_key_without_a_secret_mints_only_the_secret() {
    let p = ConfigureParams {
        api_key: Some("mykey".into()),
        ..Default::default()
    };
    let u = apply_configure_with(None, &p, fixed_mint).expect("mints secret");
    assert_eq!(u.config.api_key, "mykey");
    assert_eq!(
        u.config.api_secret.expose(),
        "mintedSecretmintedSecretmintedSecret1234567"
    );
    assert!(u.minted);
    let p = ConfigureParams {
        api_secret: Some(SECRET.into()),
        ..Default::default()
    };
    let u = apply_configure_with(None, &p, fixed_mint).expect("mints key");
    assert_eq!(u.config.api_key, "APImintedkey234");
    assert_eq!(u.config.api_secret.expose(), SECRET);
}

#[test]
fn a_new_key_keeps_the_held_secret_and_reports_only_what_changed() {
    let p = ConfigureParams {
        api_key: Some("otherkey".into()),
        domain: Some("media.example.com".into()),
        port: Some(7880),
        ..Default::default()
    };
    let u = apply_configure_with(Some(&current()), &p, no_mint).expect("valid");
    assert_eq!(u.config.api_secret.expose(), SECRET);
    assert_eq!(u.changed_fields, vec!["api_key".to_string(), "domain".to_string()]);
    assert!(!u.minted);
}

#[test]
fn optional_fields_are_set_when_given() {
    let p = ConfigureParams {
        redis_address: Some("[::1]:6379".into()),
        node_ip: Some("192.0.2.7".into()),
        ..Default::default()
    };
    let u = apply_configure_with(Some(&current()), &p, no_mint).expect("valid");
    assert_eq!(u.config.redis_address.as_deref(), Some("[::1]:6379"));
    assert_eq!(u.config.node_ip.as_deref(), Some("192.0.2.7"));
    assert_eq!(
        u.changed_fields,
        vec!["redis_address".to_string(), "node_ip".to_string()]
    );
}

#[test]
fn validate_config_refuses_placeholder_credentials() {
    let mut c = current();
    c.api_secret = Secret::new("x".repeat(40));
    assert_eq!(validate_config(&c).expect_err("placeholder").field, "api_secret");
    c = current();
    c.api_key = "devkey".into();
    assert_eq!(validate_config(&c).expect_err("placeholder").field, "api_key");
    assert!(validate_config(&current()).is_ok());
}

#[test]
fn unset_removes_optional_fields_and_refuses_what_it_cannot_mean() {
    let mut with = current();
    with.redis_address = Some("10.0.0.5:6379".into());
    with.node_ip = Some("10.0.0.7".into());
    let unset = |names: &[&str]| ConfigureParams {
        unset: Some(names.iter().map(|n| n.to_string()).collect()),
        ..ConfigureParams::default()
    };

    let u = apply_configure_with(Some(&with), &unset(&["redis_address"]), no_mint).expect("unset redis");
    assert_eq!(
        (u.config.redis_address.as_deref(), u.config.node_ip.as_deref()),
        (None, Some("10.0.0.7"))
    );
    assert_eq!(u.changed_fields, ["redis_address"]);
    let u = apply_configure_with(Some(&with), &unset(&["node_ip", "redis_address"]), no_mint).expect("both");
    assert_eq!((u.config.redis_address, u.config.node_ip), (None, None));
    assert_eq!(u.changed_fields, ["redis_address", "node_ip"]);
    // Unsetting what is not set changes nothing.
    let u = apply_configure_with(Some(&current()), &unset(&["node_ip"]), no_mint).expect("no-op");
    assert!(u.changed_fields.is_empty());

    let e = invalid(unset(&["api_secret"]));
    assert_eq!(
        (e.field, e.rule.as_str()),
        ("unset", "each entry must be one of redis_address, node_ip, public_url, redis_username, redis_password, redis_db, redis_tls, redis_tls_ca_file, redis_tls_server_name, redis_tls_cert_file, redis_tls_key_file, redis_sentinel_master, redis_sentinel_addresses, redis_sentinel_username, redis_sentinel_password, redis_cluster_addresses or a production setting (bind_addresses, use_external_ip, rtc_enable_loopback_candidate, rtc_udp_port, stun_servers, turn_servers, turn_enabled, turn_domain, turn_tls_port, turn_udp_port, turn_external_tls, turn_cert_file, turn_key_file, webhook_urls, room_auto_create, room_empty_timeout, room_departure_timeout, room_max_participants, room_enabled_codecs, log_level, log_json, prometheus_port, prometheus_username, prometheus_password, region)")
    );
    let e = invalid(ConfigureParams {
        redis_address: Some("10.0.0.6:6379".into()),
        ..unset(&["redis_address"])
    });
    assert_eq!(
        (e.field, e.rule.as_str()),
        ("redis_address", "is both given a value and unset; pick one")
    );
}

/// The string fields the property drives, and values from every class:
/// empty, blank, placeholder words, templates, valid and invalid ones.
const STRING_FIELDS: [&str; 12] = [
    "api_key",
    "api_secret",
    "domain",
    "redis_address",
    "node_ip",
    "redis_username",
    "redis_password",
    "prometheus_port",
    "prometheus_username",
    "prometheus_password",
    "log_level",
    "region",
];
const VALUES: [&str; 20] = [
    "",
    "  ",
    "secret",
    "changeme",
    "xxxxxxxxxxxx",
    "devkey",
    "your-value",
    "${X}",
    "<value>",
    "${REDIS}:6379",
    "media.example.org",
    "10.0.0.7",
    "redis.internal:6380",
    "info",
    "scraper",
    "eu-west-1",
    "APIabcdefghijkm",
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG",
    "two words",
    "a\nb",
];

fn runtime_map(c: &Config) -> serde_json::Map<String, serde_json::Value> {
    let bytes = super::super::render::render(c, super::super::render::TripleFile::RuntimeJson);
    match serde_json::from_slice(&bytes) {
        Ok(serde_json::Value::Object(m)) => m,
        other => panic!("runtime.json is an object: {other:?}"),
    }
}

proptest::proptest! {
    /// For any current config and any params, `configure` either is the
    /// field-wise merge (every non-empty value given is what is stored,
    /// every other field is what it was) or an error naming a field; a
    /// template is never stored anywhere, and a placeholder word never
    /// in the credential.
    #[test]
    fn configure_is_the_field_wise_merge_or_an_error_naming_a_field(
        current in proptest::option::of(super::super::testutil::arb_config()),
        picks in proptest::collection::vec(proptest::option::of(0..VALUES.len()), STRING_FIELDS.len()),
        port in proptest::option::of(1u32..=65535),
    ) {
        let mut obj = serde_json::Map::new();
        let mut given: Vec<(&str, &str)> = Vec::new();
        for (field, pick) in STRING_FIELDS.iter().zip(&picks) {
            let Some(i) = pick else { continue };
            let v = VALUES[*i];
            if *field == "prometheus_port" {
                if let Some(p) = port {
                    obj.insert((*field).into(), serde_json::json!(p));
                }
                continue;
            }
            obj.insert((*field).into(), serde_json::json!(v));
            if !v.trim().is_empty() {
                given.push((field, v));
            }
        }
        let params: ConfigureParams = serde_json::from_value(serde_json::Value::Object(obj)).expect("params");
        let before = current.clone();
        let fixed = || Ok(Credential { api_key: "APImintedkey234".into(), api_secret: Secret::new("mintedSecretmintedSecretmintedSecret12345") });
        let result = apply_configure_with(current.as_ref(), &params, fixed);
        proptest::prop_assert_eq!(&current, &before, "the current config is never touched");
        match result {
            Ok(u) => {
                let new = runtime_map(&u.config);
                for (field, v) in &given {
                    proptest::prop_assert!(!rules::is_template(v), "{} took a template", field);
                    if ["api_key", "api_secret"].contains(field) {
                        proptest::prop_assert!(!is_placeholder_word(v), "{} took a placeholder", field);
                    }
                    proptest::prop_assert_eq!(new.get(*field), Some(&serde_json::json!(v)), "{} is stored as given", field);
                }
                if let Some(old) = &current {
                    let old = runtime_map(old);
                    for (k, was) in &old {
                        let derived = k == "livekit_url";
                        let named = given.iter().any(|(f, _)| f == k) || (k == "prometheus_port" && port.is_some() && params.prometheus_port.is_some());
                        if !derived && !named {
                            proptest::prop_assert_eq!(new.get(k), Some(was), "{} kept", k);
                        }
                    }
                }
            }
            Err(ConfigureError::Invalid(e)) => {
                let known = FIELDS.iter().chain(&redis::FIELDS).chain(&settings::FIELDS).any(|f| *f == e.field);
                proptest::prop_assert!(known, "names a configure field: {}", e.field);
            }
            Err(ConfigureError::Mint(e)) => proptest::prop_assert!(false, "the fixed mint never fails: {}", e),
        }
    }
}

#[test]
fn a_public_url_is_a_websocket_url_of_a_host_and_nothing_more() {
    for good in [
        "wss://media.example.org",
        "wss://media.example.org/",
        "wss://media.example.org:443",
        "ws://10.0.0.5:7880",
        "wss://[2001:db8::1]:8443/",
        "ws://[::1]",
        "ws://localhost",
    ] {
        assert_eq!(validate_public_url(good), Ok(()), "{good}");
    }
    let cases = [
        ("https://media.example.org", "must start with ws:// or wss://"),
        ("media.example.org", "must start with ws:// or wss://"),
        ("WSS://media.example.org", "must start with ws:// or wss://"),
        ("wss://user:pw@media.example.org", "must not carry user info"),
        ("wss://media.example.org/rtc", "must not have a path other than /"),
        ("wss://media.example.org//", "must not have a path other than /"),
        ("wss://media.example.org?x=1", "must not have a query or a fragment"),
        ("wss://media.example.org/#top", "must not have a query or a fragment"),
        ("wss://", "must name a host"),
        ("wss://:443", "must name a host"),
        ("wss://bad_host.example", "must name a host"),
        ("wss://2001:db8::1", "must name a host"),
        ("wss://[not-v6]:443", "must name a host"),
        (
            "wss://[::1]x",
            "must be ws[s]://host[:port]; after an [IPv6] address only :port",
        ),
        ("wss://media.example.org:0", "must have a port 1-65535"),
        ("wss://media.example.org:65536", "must have a port 1-65535"),
        ("wss://media.example.org:", "must have a port 1-65535"),
        ("wss://media .example.org", "must name a host"),
        ("wss://media.example.org\n", "must name a host"),
    ];
    for (bad, rule) in cases {
        let e = validate_public_url(bad).expect_err(bad);
        assert_eq!(e.field, "public_url", "{bad}");
        assert!(e.rule.starts_with(rule), "{bad}: {}", e.rule);
        assert!(!e.rule.contains("media"), "the rule never echoes the value: {}", e.rule);
    }
}

#[test]
fn configure_sets_a_public_url_and_unset_removes_it() {
    let u = apply_configure_with(
        Some(&current()),
        &ConfigureParams {
            public_url: Some("wss://media.example.org".into()),
            ..ConfigureParams::default()
        },
        no_mint,
    )
    .expect("valid");
    assert_eq!(u.config.public_url.as_deref(), Some("wss://media.example.org"));
    assert_eq!(u.changed_fields, ["public_url"]);
    let with = u.config;
    // Refused: nothing changes, and the error names the field and the rule.
    let e = invalid(ConfigureParams {
        public_url: Some("https://media.example.org/path".into()),
        ..ConfigureParams::default()
    });
    assert_eq!(e.field, "public_url");
    let u = apply_configure_with(
        Some(&with),
        &ConfigureParams {
            unset: Some(vec!["public_url".into()]),
            ..ConfigureParams::default()
        },
        no_mint,
    )
    .expect("unset");
    assert_eq!(u.config.public_url, None);
    assert_eq!(u.changed_fields, ["public_url"]);
    let both = apply_configure_with(
        Some(&with),
        &ConfigureParams {
            public_url: Some("wss://other.example.org".into()),
            unset: Some(vec!["public_url".into()]),
            ..ConfigureParams::default()
        },
        no_mint,
    );
    assert!(
        matches!(both, Err(ConfigureError::Invalid(ref e)) if e.field == "public_url"),
        "{both:?}"
    );
}
