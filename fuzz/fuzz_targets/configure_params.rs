//! `configure`'s parameters: the wire parser (`rpc::parse_params`) and the
//! merge and validation (`config::apply_configure`) against a held config.
//!
//! Input: JSON text when it starts with `{`, `[`, `n` or blank (raw mode, as
//! a client sends it), else bytes an `arbitrary::Unstructured` turns into a
//! params object of mostly plausible values (structured mode, to get past
//! the parser into the validators more often).
//!
//! Properties:
//! - neither step panics (the production settings included: TURN, webhooks,
//!   rooms, logging, Prometheus);
//! - an accepted config is valid, renders to files `check` finds consistent,
//!   and booting from those files loads exactly that config back (the
//!   renderers and the lenient readers agree on every accepted value);
//! - no error message holds a secret: neither the held config's nor the
//!   `api_secret` given (when no other string of the input contains it,
//!   since serde may rightly echo a value given for another field).
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use hero_livekit_proto::ConfigureParams;
use hero_livekit_server::config::{
    apply_configure, check, plan_with, render, validate_config, Config, Credential, FileObs, MintError, Observed,
    RedisSettings, Secret, Settings, TripleFile,
};
use hero_livekit_server::rpc::parse_params;
use jsonrpsee::types::Params;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};

const BASE_SECRET: &str = "base/Secret+base/Secret+base/Secret+base==";

fn base() -> Config {
    Config {
        api_key: "APIbasebasebase".into(),
        api_secret: Secret::new(BASE_SECRET),
        domain: "media.example.org".into(),
        redis_address: Some("redis.internal:6380".into()),
        redis: RedisSettings::default(),
        port: 7980,
        rtc_tcp_port: 7981,
        rtc_port_range_start: 51000,
        rtc_port_range_end: 52000,
        node_ip: Some("192.0.2.10".into()),
        backend_port: 7990,
        public_url: Some("wss://media.example.org".into()),
        settings: Settings::default(),
        livekit_version: None,
    }
}

/// Used by the boot re-read only; apply_configure with a held config never
/// mints (both key and secret are held).
fn no_mint() -> Result<Credential, MintError> {
    Err(MintError::new("a triple holding a valid credential must not mint"))
}

fn pick<'a>(u: &mut Unstructured<'_>, dict: &[&'a str]) -> arbitrary::Result<String> {
    if u.ratio(3, 4)? {
        Ok(u.choose(dict)?.to_string())
    } else {
        Ok(String::arbitrary(u)?)
    }
}

fn port(u: &mut Unstructured<'_>) -> arbitrary::Result<Value> {
    Ok(match u.int_in_range(0..=5)? {
        0 => json!(u32::arbitrary(u)?),
        1 => json!(u.choose(&[0u32, 1, 1023, 1024, 7880, 7881, 7890, 50000, 60000, 65535, 65536])?),
        2 => json!(String::arbitrary(u)?),
        3 => json!(-1),
        4 => Value::Null,
        _ => json!(u.int_in_range(1024u32..=65535)?),
    })
}

/// A params object of mostly plausible values; each field present or not.
fn structured(u: &mut Unstructured<'_>) -> arbitrary::Result<Value> {
    let mut m = Map::new();
    let strings: [(&str, &[&str]); 6] = [
        (
            "api_key",
            &["APIkeykeykeykey", "ab", "key-with_dash", "", "your_api_key", "API key"],
        ),
        (
            "api_secret",
            &[
                "given/Secret+given/Secret+given/Secret+given==",
                "short",
                "",
                "changeme",
                "given Secret given Secret given Secret given",
            ],
        ),
        (
            "domain",
            &[
                "localhost",
                "media.example.org",
                "2001:db8::1",
                "192.0.2.1",
                "-bad-",
                "a..b",
                "",
            ],
        ),
        (
            "redis_address",
            &["redis:6379", "[::1]:6379", "127.0.0.1:6379", "redis", "redis:0", ""],
        ),
        (
            "node_ip",
            &["192.0.2.10", "::1", "2001:db8::7", "not-an-ip", "0.0.0.0", ""],
        ),
        (
            "public_url",
            &[
                "wss://media.example.org",
                "ws://[::1]:7880/",
                "https://media.example.org",
                "wss://u:p@media.example.org",
                "wss://media.example.org/rtc?x=1",
                "",
            ],
        ),
    ];
    for (name, dict) in strings {
        if u.arbitrary()? {
            m.insert(name.into(), json!(pick(u, dict)?));
        }
    }
    for name in [
        "port",
        "rtc_tcp_port",
        "rtc_port_range_start",
        "rtc_port_range_end",
        "backend_port",
    ] {
        if u.arbitrary()? {
            m.insert(name.into(), port(u)?);
        }
    }
    settings(u, &mut m)?;
    if u.arbitrary()? {
        let n = u.int_in_range(0..=3)?;
        let mut unset = Vec::new();
        for _ in 0..n {
            unset.push(json!(pick(
                u,
                &[
                    "redis_address",
                    "node_ip",
                    "public_url",
                    "port",
                    "",
                    "webhook_urls",
                    "turn_key_file",
                    "prometheus_password"
                ]
            )?));
        }
        m.insert("unset".into(), Value::Array(unset));
    }
    if u.ratio(1, 16)? {
        m.insert(pick(u, &["extra", "apiKey", "api_key "])?, json!(1));
    }
    Ok(Value::Object(m))
}

/// The production settings, each present or not, mostly plausible.
fn settings(u: &mut Unstructured<'_>, m: &mut Map<String, Value>) -> arbitrary::Result<()> {
    let lists: [(&str, &[&str]); 5] = [
        ("bind_addresses", &["127.0.0.1", "::1", "10.0.0.1", "eth0", ""]),
        (
            "stun_servers",
            &["stun.example.org:3478", "[::1]:19302", "stun", "::1:3478"],
        ),
        (
            "webhook_urls",
            &[
                "https://hooks.example.org/lk",
                "http://10.0.0.1:8080/",
                "ftp://x",
                "https://",
            ],
        ),
        (
            "room_enabled_codecs",
            &["audio/opus", "video/vp8", "video/h264", "video/mpeg2", ""],
        ),
        ("unset", &[]),
    ];
    for (name, dict) in lists.into_iter().filter(|(_, d)| !d.is_empty()) {
        if u.ratio(1, 4)? {
            let n = u.int_in_range(0..=3)?;
            let mut items = Vec::new();
            for _ in 0..n {
                items.push(json!(pick(u, dict)?));
            }
            m.insert(name.into(), Value::Array(items));
        }
    }
    let strings: [(&str, &[&str]); 6] = [
        ("turn_domain", &["turn.example.org", "10.0.0.1", "bad domain"]),
        ("turn_cert_file", &["/etc/hostname", "/nonexistent.pem", "relative.pem"]),
        ("turn_key_file", &["/etc/hostname", "/nonexistent.key"]),
        ("log_level", &["debug", "info", "warn", "error", "trace"]),
        ("prometheus_username", &["scraper", "a b"]),
        ("region", &["eu-west-1", "eu/west"]),
    ];
    for (name, dict) in strings {
        if u.ratio(1, 4)? {
            m.insert(name.into(), json!(pick(u, dict)?));
        }
    }
    for name in ["turn_tls_port", "turn_udp_port", "prometheus_port", "rtc_udp_port"] {
        if u.ratio(1, 4)? {
            m.insert(name.into(), port(u)?);
        }
    }
    if u.ratio(1, 8)? {
        m.insert("rtc_udp_port".into(), json!(pick(u, &["7882-7892", "9-1", "7882"])?));
    }
    for name in [
        "use_external_ip",
        "rtc_enable_loopback_candidate",
        "turn_enabled",
        "turn_external_tls",
        "log_json",
        "room_auto_create",
    ] {
        if u.ratio(1, 4)? {
            m.insert(name.into(), json!(bool::arbitrary(u)?));
        }
    }
    for name in ["room_empty_timeout", "room_departure_timeout", "room_max_participants"] {
        if u.ratio(1, 6)? {
            m.insert(name.into(), json!(u32::arbitrary(u)?));
        }
    }
    if u.ratio(1, 6)? {
        m.insert(
            "prometheus_password".into(),
            json!(pick(u, &["promPassword+promPassword+promPassword"])?),
        );
    }
    if u.ratio(1, 6)? {
        let auth = if u.arbitrary()? {
            json!({"username": pick(u, &["alice"])?, "credential": pick(u, &["turnCredential"])?})
        } else {
            json!({"secret": pick(u, &["turnSecret"])?})
        };
        let mut t = json!({"host": pick(u, &["turn.example.org", "192.0.2.1", "bad host"])?, "port": port(u)?, "protocol": pick(u, &["udp", "tcp", "tls", "quic"])?});
        if let (Some(t), Some(a)) = (t.as_object_mut(), auth.as_object()) {
            t.extend(a.clone());
        }
        m.insert("turn_servers".into(), json!([t]));
    }
    Ok(())
}

/// Every string of `v` (keys and values), except the top-level `api_secret`
/// value.
fn other_strings(v: &Value, top: bool, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| other_strings(x, false, out)),
        Value::Object(m) => {
            for (k, x) in m {
                out.push(k.clone());
                if !(top && k == "api_secret") {
                    other_strings(x, false, out);
                }
            }
        }
        _ => {}
    }
}

/// The secrets no error may hold: only values that look like a secret (32+
/// characters of the secret alphabet, so no sentence of a message can hold
/// them by chance) and that no other string of the input contains.
fn secrets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        // Not JSON as a whole: serde may still echo a key or value decoded
        // before the error, so only the held secret is checked, and only
        // when the text cannot spell it (literally or through escapes).
        if text.contains(BASE_SECRET) || text.contains('\\') {
            return Vec::new();
        }
        return vec![BASE_SECRET.to_string()];
    };
    let mut others = Vec::new();
    other_strings(&v, true, &mut others);
    let candidates = [v.get("api_secret").and_then(Value::as_str).unwrap_or(""), BASE_SECRET];
    for s in candidates {
        let secret_like = s.len() >= 32 && s.chars().all(|c| c.is_ascii_alphanumeric() || "_.~+/=-".contains(c));
        if secret_like && !others.iter().any(|o| o.contains(s)) {
            out.push(s.to_string());
        }
    }
    out
}

fn assert_secret_free(message: &str, secrets: &[String]) {
    for s in secrets {
        assert!(
            !message.contains(s.as_str()),
            "an error message holds a secret: {message:?}"
        );
    }
}

fn observed_of(c: &Config) -> Observed {
    Observed {
        runtime_json: FileObs::Present(render(c, TripleFile::RuntimeJson)),
        livekit_yaml: FileObs::Present(render(c, TripleFile::LivekitYaml)),
        backend_env: FileObs::Present(render(c, TripleFile::BackendEnv)),
    }
}

fuzz_target!(|data: &[u8]| {
    let raw = matches!(data.first(), None | Some(b'{' | b'[' | b'n' | b' ' | b'\t' | b'\n'));
    let text = if raw {
        match std::str::from_utf8(data) {
            Ok(t) => t.to_string(),
            // jsonrpsee hands parse_params text only; bytes that are not
            // UTF-8 never get this far.
            Err(_) => return,
        }
    } else {
        match structured(&mut Unstructured::new(data)) {
            Ok(v) => v.to_string(),
            Err(_) => return,
        }
    };
    let secrets = secrets(&text);

    let params: ConfigureParams = match parse_params(&Params::new(Some(&text))) {
        Ok(p) => p,
        Err(e) => return assert_secret_free(&e.message, &secrets),
    };
    let base = base();
    let update = match apply_configure(Some(&base), &params) {
        Ok(u) => u,
        Err(e) => return assert_secret_free(&e.to_string(), &secrets),
    };
    assert!(!update.minted, "a held credential was replaced by a minted one");
    let config = update.config;
    if let Err(e) = validate_config(&config) {
        panic!("configure accepted an invalid config: {e}");
    }
    let observed = observed_of(&config);
    let consistency = check(&config, &observed);
    assert!(
        consistency.consistent,
        "fresh renderings drift: {:?}",
        consistency.drift
    );
    // Boot from exactly these files: the readers must give the config back.
    match plan_with(None, &observed, false, no_mint) {
        Ok(p) => {
            assert!(p.is_noop(), "booting from fresh renderings plans writes: {:?}", p.drift);
            assert_eq!(p.config, config, "the readers do not give the rendered config back");
        }
        Err(e) => panic!("booting from a valid triple wanted to mint: {e}"),
    }
});
