//! Unit tests of [`super`] (parse.rs).

use proptest::prelude::*;

use super::super::model::Config;
use super::super::render::render;
use super::super::testutil::{arb_config, config_a};
use super::*;

fn reading(file: TripleFile, text: &str) -> Reading {
    read(file, text.as_bytes()).expect("readable")
}

/// Problem texts, sorted: JSON object order depends on serde_json features.
fn texts(r: &Reading) -> Vec<&str> {
    let mut t: Vec<&str> = r.problems.iter().map(|p| p.text.as_str()).collect();
    t.sort_unstable();
    t
}

proptest! {
    #[test]
    fn runtime_json_round_trips_every_field(c in arb_config()) {
        let r = read(TripleFile::RuntimeJson, &render(&c, TripleFile::RuntimeJson)).expect("readable");
        prop_assert!(r.problems.is_empty(), "{:?}", r.problems);
        let p = r.partial;
        let back = Config {
            api_key: p.api_key.expect("api_key"),
            api_secret: p.api_secret.expect("api_secret"),
            domain: p.domain.expect("domain"),
            redis_address: p.redis_address.expect("redis_address"),
            redis: p.redis.expect("redis"),
            port: p.port.expect("port"),
            rtc_tcp_port: p.rtc_tcp_port.expect("rtc_tcp_port"),
            rtc_port_range_start: p.rtc_port_range_start.expect("start"),
            rtc_port_range_end: p.rtc_port_range_end.expect("end"),
            node_ip: p.node_ip.expect("node_ip"),
            backend_port: p.backend_port.expect("backend_port"),
            public_url: p.public_url.expect("public_url"),
            settings: settings::from_json(&p.settings_json.0),
            livekit_version: c.livekit_version,
        };
        prop_assert_eq!(p.livekit_url, Some(c.livekit_url()));
        prop_assert_eq!(back, c);
    }

    #[test]
    fn livekit_yaml_round_trips_the_fields_it_carries(c in arb_config()) {
        let r = read(TripleFile::LivekitYaml, &render(&c, TripleFile::LivekitYaml)).expect("readable");
        prop_assert!(r.problems.is_empty(), "{:?}", r.problems);
        let p = r.partial;
        prop_assert_eq!(p.api_key, Some(c.api_key.clone()));
        prop_assert_eq!(p.api_secret, Some(c.api_secret.clone()));
        prop_assert_eq!(p.port, Some(c.port));
        prop_assert_eq!(p.rtc_tcp_port, Some(c.rtc_tcp_port));
        prop_assert_eq!(p.rtc_port_range_start, Some(c.rtc_port_range_start));
        prop_assert_eq!(p.rtc_port_range_end, Some(c.rtc_port_range_end));
        prop_assert_eq!(p.node_ip, Some(c.node_ip.clone()));
        prop_assert_eq!(p.redis_address, Some(c.redis_address.clone()));
        prop_assert_eq!(p.redis, Some(c.redis.clone()));
        prop_assert_eq!(p.use_external_ip, Some(false));
        prop_assert_eq!(p.logging_level.as_deref(), Some("info"));
        prop_assert_eq!((p.domain, p.backend_port), (None, None));
    }

    #[test]
    fn backend_env_round_trips_the_fields_it_carries(c in arb_config()) {
        let r = read(TripleFile::BackendEnv, &render(&c, TripleFile::BackendEnv)).expect("readable");
        prop_assert!(r.problems.is_empty(), "{:?}", r.problems);
        let p = r.partial;
        prop_assert_eq!(p.api_key, Some(c.api_key.clone()));
        prop_assert_eq!(p.api_secret, Some(c.api_secret.clone()));
        // `LIVEKIT_URL` says where livekit-server is only when it is the
        // derived `ws://` address, not a proxy's `wss://` one.
        match c.public_url.as_deref() {
            None => {
                prop_assert_eq!(p.domain, Some(c.domain.clone()));
                prop_assert_eq!(p.port, Some(c.port));
            }
            Some(u) if u.starts_with("wss://") => prop_assert_eq!((p.domain, p.port), (None, None)),
            Some(_) => {}
        }
        prop_assert_eq!(p.backend_port, Some(c.backend_port));
        prop_assert_eq!(p.livekit_url, Some(c.client_url()));
        prop_assert_eq!(p.mint_secret, Some(c.mint_secret()));
    }

    #[test]
    fn readers_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        for f in TripleFile::ALL {
            let _ = read(f, &bytes);
        }
    }
}

#[test]
fn garbage_is_classified_without_echoing_content() {
    assert_eq!(
        read(TripleFile::RuntimeJson, b"\xff\xfe\x00binary"),
        Err(Unparseable::NotUtf8)
    );
    assert_eq!(read(TripleFile::LivekitYaml, b" \n\n"), Err(Unparseable::Empty));
    let truncated = &render(&config_a(), TripleFile::RuntimeJson)[..60];
    let e = read(TripleFile::RuntimeJson, truncated).expect_err("truncated");
    assert_eq!(e.to_string(), "line 3: unexpected end of file");
    assert_eq!(
        read(TripleFile::RuntimeJson, b"[1, 2]"),
        Err(Unparseable::WrongShape("a JSON object"))
    );
    assert_eq!(
        read(TripleFile::LivekitYaml, b"- a\n- b\n"),
        Err(Unparseable::WrongShape("a YAML mapping"))
    );
    let e = read(
        TripleFile::BackendEnv,
        b"LIVEKIT_API_KEY=\"k\"\nLIVEKIT_API_SECRET=\"abc\n",
    )
    .expect_err("open quote");
    assert_eq!(e.to_string(), "line 2: unterminated double quote");
}

#[test]
fn duplicate_yaml_keys_are_refused_and_the_key_is_not_echoed() {
    let text = "port: 7880\nkeys:\n  SECRETKEYNAME: a\n  SECRETKEYNAME: b\n";
    let e = read(TripleFile::LivekitYaml, text.as_bytes()).expect_err("duplicate");
    assert_eq!(e.to_string(), "duplicate key in the mapping starting at line 3");
    assert!(!e.to_string().contains("SECRETKEYNAME"));
}

#[test]
fn wrong_types_and_foreign_keys_are_problems_with_labels() {
    let r = reading(
        TripleFile::RuntimeJson,
        r#"{"api_key": 5, "port": "7880", "backend_port": 70000, "colour": 1}"#,
    );
    assert_eq!(
        texts(&r),
        vec![
            "api_key has the wrong type (expected a string)",
            "backend_port is not a port number 1-65535",
            "port has the wrong type (expected a port number)",
            "unexpected key `colour`",
        ]
    );
    assert!(r.has_problem("api_key") && r.has_problem("port") && !r.has_problem("domain"));
    let r = reading(
        TripleFile::LivekitYaml,
        "port: x\ndevelopment: true\nrtc: 3\nkeys:\n  a: b\n  c: d\n",
    );
    assert_eq!(
        texts(&r),
        vec![
            "keys has 2 entries (expected exactly one)",
            "port has the wrong type (expected a port number)",
            "rtc has the wrong type (expected a mapping)",
            "unexpected key `development`",
        ]
    );
    assert!(r.has_problem("rtc.tcp_port"), "a broken section covers its fields");
    assert_eq!(r.partial.api_key, None);
    let r = reading(
        TripleFile::BackendEnv,
        "PORT=\"x\"\nAPIzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz=1\n",
    );
    assert_eq!(
        texts(&r),
        vec![
            "PORT is not a port number 1-65535",
            "unexpected variable (name withheld)"
        ]
    );
}

#[test]
fn a_credential_survives_foreign_keys_in_livekit_yaml() {
    let text = "development: true\nkeys:\n  mykey: 0123456789abcdefghijklmnopqrstuvwxyz\n";
    let r = reading(TripleFile::LivekitYaml, text);
    assert_eq!(r.partial.api_key.as_deref(), Some("mykey"));
    assert_eq!(
        r.partial.api_secret.as_ref().map(Secret::expose),
        Some("0123456789abcdefghijklmnopqrstuvwxyz")
    );
}

#[test]
fn crlf_files_read_to_the_same_values() {
    let c = config_a();
    for f in TripleFile::ALL {
        let lf = read(f, &render(&c, f)).expect("lf");
        let crlf_text = String::from_utf8(render(&c, f)).expect("utf8").replace('\n', "\r\n");
        let crlf = read(f, crlf_text.as_bytes()).expect("crlf");
        assert_eq!(lf, crlf, "{f}");
    }
}

#[test]
fn ws_urls_split_into_host_and_port() {
    assert_eq!(
        split_ws_url("ws://media.example.org:7880"),
        Some(("media.example.org".into(), 7880))
    );
    assert_eq!(
        split_ws_url("wss://[2001:db8::1]:443/"),
        Some(("2001:db8::1".into(), 443))
    );
    for bad in ["http://x:1", "ws://x", "ws://:1", "ws://x:0", "ws://x:+1", "ws://[::1]"] {
        assert_eq!(split_ws_url(bad), None, "{bad}");
    }
}
