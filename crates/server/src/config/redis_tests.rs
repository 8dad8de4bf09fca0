//! Unit tests of [`super`] (redis.rs).

use hero_livekit_proto::ConfigureParams;

use super::super::model::{Config, Credential, Secret};
use super::super::validate::{apply_configure_with, ConfigureError};
use super::*;

fn current() -> Config {
    let mut c = Config::with_credential(Credential {
        api_key: "APIabcdefghijkm".into(),
        api_secret: Secret::new("0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"),
    });
    c.redis_address = Some("10.0.0.5:6379".into());
    c
}

fn configure(c: &Config, p: ConfigureParams) -> Result<Config, ValidationError> {
    match apply_configure_with(Some(c), &p, || panic!("must not mint")) {
        Ok(u) => Ok(u.config),
        Err(ConfigureError::Invalid(e)) => Err(e),
        Err(e) => panic!("{e}"),
    }
}

fn pem(dir: &std::path::Path, name: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").expect("write");
    path.to_string_lossy().into_owned()
}

#[test]
fn each_bad_value_is_refused_naming_its_field_without_echoing_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = pem(dir.path(), "ca.pem");
    let not_pem = dir.path().join("x.txt");
    std::fs::write(&not_pem, "hello").expect("write");
    let not_pem = not_pem.to_string_lossy().into_owned();
    let c = current();
    let cases: Vec<(ConfigureParams, &str, &str)> = vec![
        (
            ConfigureParams {
                redis_password: Some("pass\nLEAKED".into()),
                ..Default::default()
            },
            "redis_password",
            "line break",
        ),
        (
            ConfigureParams {
                redis_sentinel_password: Some("pass\rLEAKED".into()),
                redis_sentinel_master: Some("m".into()),
                ..Default::default()
            },
            "redis_sentinel_password",
            "line break",
        ),
        (
            ConfigureParams {
                redis_username: Some("a user".into()),
                ..Default::default()
            },
            "redis_username",
            "without whitespace",
        ),
        (
            ConfigureParams {
                redis_username: Some("livekit".into()),
                ..Default::default()
            },
            "redis_username",
            "needs redis_password",
        ),
        (
            ConfigureParams {
                redis_db: Some(16),
                ..Default::default()
            },
            "redis_db",
            "0-15",
        ),
        (
            ConfigureParams {
                redis_tls_ca_file: Some(ca.clone()),
                ..Default::default()
            },
            "redis_tls_ca_file",
            "needs redis_tls: true",
        ),
        (
            ConfigureParams {
                redis_tls: Some(true),
                redis_tls_ca_file: Some("relative/ca.pem".into()),
                ..Default::default()
            },
            "redis_tls_ca_file",
            "absolute path",
        ),
        (
            ConfigureParams {
                redis_tls: Some(true),
                redis_tls_ca_file: Some(format!("{ca}.missing")),
                ..Default::default()
            },
            "redis_tls_ca_file",
            "readable file",
        ),
        (
            ConfigureParams {
                redis_tls: Some(true),
                redis_tls_ca_file: Some(not_pem),
                ..Default::default()
            },
            "redis_tls_ca_file",
            "PEM",
        ),
        (
            ConfigureParams {
                redis_tls: Some(true),
                redis_tls_cert_file: Some(ca.clone()),
                ..Default::default()
            },
            "redis_tls_cert_file",
            "needs redis_tls_key_file",
        ),
        (
            ConfigureParams {
                redis_tls: Some(true),
                redis_tls_server_name: Some("not a host".into()),
                ..Default::default()
            },
            "redis_tls_server_name",
            "hostname",
        ),
        (
            ConfigureParams {
                redis_sentinel_master: Some("mymaster".into()),
                unset: Some(vec!["redis_address".into()]),
                ..Default::default()
            },
            "redis_sentinel_master",
            "needs redis_sentinel_addresses",
        ),
        (
            ConfigureParams {
                redis_sentinel_addresses: Some(vec!["10.0.0.1:26379".into()]),
                redis_sentinel_master: Some("mymaster".into()),
                ..Default::default()
            },
            "redis_sentinel_addresses",
            "exclude each other",
        ),
        (
            ConfigureParams {
                redis_cluster_addresses: Some(vec!["10.0.0.1:7000".into(), "nope".into()]),
                ..Default::default()
            },
            "redis_cluster_addresses",
            "host:port",
        ),
        (
            ConfigureParams {
                redis_cluster_addresses: Some(vec!["10.0.0.1:7000".into(), "10.0.0.1:7000".into()]),
                ..Default::default()
            },
            "redis_cluster_addresses",
            "twice",
        ),
        (
            ConfigureParams {
                redis_cluster_addresses: Some(vec!["10.0.0.1:7000".into()]),
                redis_db: Some(2),
                unset: Some(vec!["redis_address".into()]),
                ..Default::default()
            },
            "redis_db",
            "database 0",
        ),
        (
            ConfigureParams {
                redis_password: Some("pw-for-nothing".into()),
                unset: Some(vec!["redis_address".into()]),
                ..Default::default()
            },
            "redis_password",
            "needs redis_address",
        ),
        (
            ConfigureParams {
                redis_db: Some(1),
                unset: Some(vec!["redis_db".into()]),
                ..Default::default()
            },
            "redis_db",
            "both given a value and unset",
        ),
    ];
    for (params, field, rule) in cases {
        let e = configure(&c, params.clone()).expect_err(field);
        assert_eq!(e.field, field, "{params:?}: {e}");
        assert!(e.rule.contains(rule), "{field}: {}", e.rule);
        assert!(!e.to_string().contains("LEAKED"), "{e}");
    }
}

#[test]
fn every_setting_is_taken_kept_and_unset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = (
        pem(dir.path(), "ca.pem"),
        pem(dir.path(), "c.pem"),
        pem(dir.path(), "c.key"),
    );
    let c = configure(
        &current(),
        ConfigureParams {
            redis_username: Some("livekit".into()),
            redis_password: Some("p@ss: #word \"q\"".into()),
            redis_db: Some(15),
            redis_tls: Some(true),
            redis_tls_ca_file: Some(ca.clone()),
            redis_tls_server_name: Some("redis.internal".into()),
            redis_tls_cert_file: Some(cert.clone()),
            redis_tls_key_file: Some(key.clone()),
            ..Default::default()
        },
    )
    .expect("valid");
    assert_eq!(
        c.redis,
        RedisSettings {
            username: Some("livekit".into()),
            password: Some(Secret::new("p@ss: #word \"q\"")),
            db: 15,
            tls: true,
            tls_ca_file: Some(ca),
            tls_server_name: Some("redis.internal".into()),
            tls_cert_file: Some(cert),
            tls_key_file: Some(key),
            ..Default::default()
        }
    );
    // Empty values keep; a password is never in Debug output.
    let kept = configure(
        &c,
        ConfigureParams {
            redis_password: Some(String::new()),
            redis_cluster_addresses: Some(vec![]),
            ..Default::default()
        },
    )
    .expect("valid");
    assert_eq!(kept, c);
    assert!(!format!("{kept:?}").contains("p@ss"));
    // Sentinel instead of an address, in one call.
    let s = configure(
        &c,
        ConfigureParams {
            redis_sentinel_master: Some("mymaster".into()),
            redis_sentinel_addresses: Some(vec!["10.0.0.1:26379".into(), "s2.internal:26379".into()]),
            redis_sentinel_username: Some("sentinel".into()),
            redis_sentinel_password: Some("sentinel-pass".into()),
            unset: Some(vec!["redis_address".into()]),
            ..Default::default()
        },
    )
    .expect("valid");
    assert_eq!(s.redis_address, None);
    assert_eq!(s.redis.sentinel_addresses.len(), 2);
    // Everything unset at once.
    let all: Vec<String> = FIELDS
        .iter()
        .map(|f| f.to_string())
        .chain(["redis_address".to_string()])
        .collect();
    let none = configure(
        &s,
        ConfigureParams {
            unset: Some(all),
            ..Default::default()
        },
    )
    .expect("valid");
    assert!(none.redis.is_empty() && none.redis_address.is_none());
}
