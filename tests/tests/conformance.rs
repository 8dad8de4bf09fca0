//! The livekit-server test double against the real livekit-server v1.13.5:
//! every behaviour the double claims to share with LiveKit is run against
//! both binaries, and both must give the same status and the same text.
//!
//! Each server runs directly (no daemon) on a minimal `livekit.yaml` with
//! free ports, in a scrubbed environment as the supervisor starts it. A
//! refused token's 401 text echoes the whole JWT at 1.13.5; the token sent
//! is replaced by `<JWT>` before the comparison, which therefore also
//! checks that the echo is that exact token.
//!
//! Without the real binary (a developer without Go) only the double's side
//! runs, against the texts written here, which are the real server's.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hero_livekit_tests::cluster::Redis;
use hero_livekit_tests::lk::http_tcp;
use hero_livekit_tests::real::{real_livekit_bin, REAL_VERSION};
use hero_livekit_tests::{free_port, wait_for, HttpResponse};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};

const KEY: &str = "APIconformance1";
const SECRET: &str = "0123456789abcdefghijABCDEFGHIJ0123456789xyz";
const WRONG_SECRET: &str = "ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ";
const START: Duration = Duration::from_secs(30);

/// The binaries under comparison: the double always, the real server when
/// it is built.
fn servers() -> Vec<(&'static str, PathBuf)> {
    let mut v = vec![("double", PathBuf::from(env!("CARGO_BIN_EXE_livekit-server-double")))];
    if let Some(real) = real_livekit_bin() {
        v.push(("real", real));
    }
    v
}

/// A livekit-server (either one) on its own config in its own directory;
/// killed on drop.
struct Lk {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

/// Ports of a minimal config: HTTP, ICE/TCP, and one UDP media port, all
/// free, so parallel tests never collide.
fn minimal_yaml(port: u16, extra: &str) -> String {
    let (tcp, udp) = (free_port(), free_port());
    format!(
        "port: {port}\nbind_addresses:\n  - 127.0.0.1\nrtc:\n  tcp_port: {tcp}\n  port_range_start: {udp}\n  port_range_end: {udp}\n  use_external_ip: false\nkeys:\n  {KEY}: {SECRET}\n{extra}"
    )
}

impl Lk {
    fn spawn(bin: &Path, yaml: &str, port: u16) -> Lk {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("livekit.yaml");
        std::fs::write(&config, yaml).expect("write config");
        let out = std::fs::File::create(dir.path().join("stdout")).expect("stdout file");
        let err = std::fs::File::create(dir.path().join("stderr")).expect("stderr file");
        // Scrubbed like the supervisor's children: a stray LIVEKIT_* variable
        // would override the file in the real server.
        let child = Command::new(bin)
            .arg("--config")
            .arg(&config)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        Lk { child, port, dir }
    }

    /// Runs until `GET /` answers 200.
    fn running(bin: &Path, yaml: &str, port: u16) -> Lk {
        let mut lk = Lk::spawn(bin, yaml, port);
        wait_for(START, "GET / to answer 200", || {
            if let Ok(Some(status)) = lk.child.try_wait() {
                panic!("{} exited with {status}: {}", bin.display(), lk.output());
            }
            lk.try_get("/").filter(|r| r.status == 200).map(|_| ())
        });
        lk
    }

    /// Runs until it exits by itself; its status and stdout.
    fn exit(bin: &Path, yaml: &str) -> (ExitStatus, String) {
        let mut lk = Lk::spawn(bin, yaml, 0);
        let status = wait_for(START, "a startup error to end the process", || {
            lk.child.try_wait().ok().flatten()
        });
        (status, lk.stdout())
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    fn output(&self) -> String {
        let err = std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default();
        format!("stdout:\n{}\nstderr:\n{err}", self.stdout())
    }

    fn try_get(&self, path: &str) -> Option<HttpResponse> {
        std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        Some(self.request("GET", path, None, b""))
    }

    fn request(&self, method: &str, path: &str, bearer: Option<&str>, body: &[u8]) -> HttpResponse {
        let auth = bearer
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        http_tcp(&format!("127.0.0.1:{}", self.port), &req)
    }
}

impl Drop for Lk {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a request got: status, the media type, and the body with the token
/// sent replaced by `<JWT>`.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    what: String,
    status: u16,
    content_type: String,
    body: String,
}

fn seen(what: &str, r: &HttpResponse, token: &str) -> Seen {
    let content_type = r
        .headers
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    let mut body = String::from_utf8_lossy(&r.body).to_string();
    if !token.is_empty() {
        body = body.replace(token, "<JWT>");
    }
    Seen {
        what: what.to_string(),
        status: r.status,
        content_type,
        body,
    }
}

/// Runs `scenario` against every server and checks each answer against
/// the real server's, written in `expected`.
fn each_server_sees(expected: &[Seen], scenario: impl Fn(&Path) -> Vec<Seen>) {
    for (name, bin) in servers() {
        let got = scenario(&bin);
        assert_eq!(got.len(), expected.len(), "{name}: {got:#?}");
        for (g, e) in got.iter().zip(expected) {
            assert_eq!(g, e, "{name} differs from livekit-server {REAL_VERSION}");
        }
    }
}

fn expect(what: &str, status: u16, content_type: &str, body: &str) -> Seen {
    Seen {
        what: what.into(),
        status,
        content_type: content_type.into(),
        body: body.into(),
    }
}

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// An HS256 JWT with exactly `claims`, signed with `secret`.
fn jwt(secret: &str, claims: Value) -> String {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let signing_input = format!(
        "{}.{}",
        b64(br#"{"alg":"HS256","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    );
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", b64(&mac.finalize().into_bytes()))
}

fn claims(iss: &str, video: Value) -> Value {
    let t = now();
    json!({"iss": iss, "sub": "alice", "nbf": t - 10, "exp": t + 600, "video": video})
}

#[test]
fn readiness_and_rtc_validate_answer_alike() {
    let join = json!({"roomJoin": true, "room": "r1"});
    let t = now();
    let cases: Vec<(&str, String)> = vec![
        ("a good token", jwt(SECRET, claims(KEY, join.clone()))),
        ("a bad signature", jwt(WRONG_SECRET, claims(KEY, join.clone()))),
        ("an unknown key", jwt(SECRET, claims("APIunknown", join.clone()))),
        (
            "an expired token",
            jwt(
                SECRET,
                json!({"iss": KEY, "sub": "alice", "nbf": t - 7200, "exp": t - 3600, "video": join.clone()}),
            ),
        ),
        (
            "a token not valid yet",
            jwt(
                SECRET,
                json!({"iss": KEY, "sub": "alice", "nbf": t + 3600, "exp": t + 7200, "video": join}),
            ),
        ),
        (
            "a token without the join grant",
            jwt(SECRET, claims(KEY, json!({"room": "r1", "roomCreate": true}))),
        ),
        (
            "a token without exp",
            jwt(
                SECRET,
                json!({"iss": KEY, "sub": "alice", "nbf": t - 10, "video": {"roomJoin": true, "room": "r1"}}),
            ),
        ),
        ("no token", String::new()),
        ("not a JWT", "not-a-jwt".into()),
    ];
    let expected = vec![
        expect("GET /", 200, TEXT, "OK"),
        expect("a good token", 200, TEXT, "success"),
        expect(
            "a bad signature",
            401,
            TEXT,
            "invalid token: <JWT>, error: token signature is invalid: signature is invalid",
        ),
        expect("an unknown key", 401, TEXT, "invalid API key: APIunknown"),
        expect(
            "an expired token",
            401,
            TEXT,
            "invalid token: <JWT>, error: token has invalid claims: token is expired",
        ),
        expect(
            "a token not valid yet",
            401,
            TEXT,
            "invalid token: <JWT>, error: token has invalid claims: token is not valid yet",
        ),
        expect("a token without the join grant", 401, TEXT, "permissions denied"),
        // At 1.13.5 a token without `exp` never expires.
        expect("a token without exp", 200, TEXT, "success"),
        expect("no token", 401, TEXT, "no permissions to access the room"),
        expect("not a JWT", 401, TEXT, "invalid authorization token"),
        // The auth middleware wraps every path, readiness included.
        expect("GET / with a bad token", 401, TEXT, "invalid authorization token"),
    ];
    each_server_sees(&expected, |bin| {
        let port = free_port();
        let lk = Lk::running(bin, &minimal_yaml(port, ""), port);
        let mut got = vec![seen("GET /", &lk.request("GET", "/", None, b""), "")];
        for (what, token) in &cases {
            let path = if token.is_empty() {
                "/rtc/validate".to_string()
            } else {
                format!("/rtc/validate?access_token={token}")
            };
            got.push(seen(what, &lk.request("GET", &path, None, b""), token));
        }
        got.push(seen(
            "GET / with a bad token",
            &lk.request("GET", "/?access_token=not-a-jwt", None, b""),
            "",
        ));
        got
    });
}

#[test]
fn twirp_list_rooms_answers_alike() {
    let list = jwt(SECRET, claims(KEY, json!({"roomList": true})));
    let no_list = jwt(SECRET, claims(KEY, json!({"roomJoin": true, "room": "r1"})));
    let bad = jwt(WRONG_SECRET, claims(KEY, json!({"roomList": true})));
    let denied = r#"{"code":"unauthenticated","msg":"permissions denied"}"#;
    let expected = vec![
        expect("roomList", 200, JSON, r#"{"rooms":[]}"#),
        expect("no roomList", 401, JSON, denied),
        expect("no Authorization", 401, JSON, denied),
        expect(
            "a bad signature",
            401,
            TEXT,
            "invalid token: <JWT>, error: token signature is invalid: signature is invalid",
        ),
    ];
    each_server_sees(&expected, |bin| {
        let port = free_port();
        let lk = Lk::running(bin, &minimal_yaml(port, ""), port);
        let path = "/twirp/livekit.RoomService/ListRooms";
        [
            ("roomList", Some(&list)),
            ("no roomList", Some(&no_list)),
            ("no Authorization", None),
            ("a bad signature", Some(&bad)),
        ]
        .into_iter()
        .map(|(what, token)| {
            let r = lk.request("POST", path, token.map(String::as_str), b"{}");
            seen(what, &r, token.map(String::as_str).unwrap_or(""))
        })
        .collect()
    });
}

/// Startup errors: each printed on stdout, and the process exits 0.
#[test]
fn startup_errors_print_the_same_words_and_exit_0() {
    let dead_redis = free_port();
    let cases: Vec<(&str, String, String)> = vec![
        (
            "an unknown top-level key",
            minimal_yaml(free_port(), "foo: 1\n"),
            "could not parse config: yaml: unmarshal errors:\n  line 11: field foo not found in type config.Config\n"
                .into(),
        ),
        (
            "a key 1.13.5 does not have",
            minimal_yaml(free_port(), "environment: production\n"),
            "could not parse config: yaml: unmarshal errors:\n  line 11: field environment not found in type config.Config\n"
                .into(),
        ),
        (
            "an unknown rtc key",
            minimal_yaml(free_port(), "").replace("  use_external_ip: false\n", "  use_external_ip: false\n  bogus: 1\n"),
            "could not parse config: yaml: unmarshal errors:\n  line 9: field bogus not found in type config.RTCConfig\n"
                .into(),
        ),
        (
            "webhooks without a key",
            minimal_yaml(free_port(), "webhook:\n  urls:\n    - http://127.0.0.1:9/hook\n"),
            "api_key is required to use webhooks\n".into(),
        ),
        (
            "webhooks with a key not in keys",
            minimal_yaml(
                free_port(),
                "webhook:\n  urls:\n    - http://127.0.0.1:9/hook\n  api_key: APInotakey\n",
            ),
            "api_key is required to use webhooks\n".into(),
        ),
        (
            "no keys",
            format!("port: {}\n", free_port()),
            "one of key-file or keys must be provided\n".into(),
        ),
        (
            "Redis down at startup",
            minimal_yaml(free_port(), &format!("redis:\n  address: 127.0.0.1:{dead_redis}\n")),
            format!("unable to connect to redis: dial tcp 127.0.0.1:{dead_redis}: connect: connection refused\n"),
        ),
    ];
    for (name, bin) in servers() {
        for (what, yaml, words) in &cases {
            let (status, stdout) = Lk::exit(&bin, yaml);
            assert_eq!(status.code(), Some(0), "{name}, {what}: {stdout}");
            assert_eq!(&stdout, words, "{name}, {what}");
        }
    }
}

#[test]
fn the_webhook_key_rule_accepts_a_key_of_keys() {
    for (name, bin) in servers() {
        let port = free_port();
        let yaml = minimal_yaml(
            port,
            &format!("webhook:\n  urls:\n    - http://127.0.0.1:9/hook\n  api_key: {KEY}\n"),
        );
        let lk = Lk::running(&bin, &yaml, port);
        assert_eq!(lk.request("GET", "/", None, b"").status, 200, "{name}");
    }
}

#[test]
fn version_says_the_pinned_release() {
    for (name, bin) in servers() {
        let out = Command::new(&bin)
            .arg("--version")
            .env_clear()
            .output()
            .unwrap_or_else(|e| panic!("{name} --version: {e}"));
        assert_eq!(out.status.code(), Some(0), "{name}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("livekit-server version {REAL_VERSION}\n"),
            "{name}"
        );
    }
}

/// Redis lost at runtime: node stats go stale and `GET /` answers 406 with
/// the time of the last update, until Redis is back.
#[test]
fn readiness_answers_406_while_redis_is_lost() {
    for (name, bin) in servers() {
        let mut redis = Redis::start();
        let port = free_port();
        let yaml = minimal_yaml(port, &format!("redis:\n  address: {}\n", redis.address()));
        let lk = Lk::running(&bin, &yaml, port);
        redis.kill();
        let r = wait_for(Duration::from_secs(30), "GET / to answer 406", || {
            lk.try_get("/").filter(|r| r.status == 406)
        });
        let body = String::from_utf8_lossy(&r.body).to_string();
        let when = body
            .strip_prefix("Not Ready\nNode Updated At ")
            .unwrap_or_else(|| panic!("{name}: {body:?}"));
        // Go's time.Time in UTC, to the second: `2026-12-07 17:35:39 +0000 UTC`.
        let shape = when.len() == 29
            && when.ends_with(" +0000 UTC")
            && when
                .bytes()
                .zip("0000-00-00 00:00:00".bytes())
                .all(|(c, p)| if p == b'0' { c.is_ascii_digit() } else { c == p });
        assert!(shape, "{name}: {body:?}");
        redis.restart();
        wait_for(Duration::from_secs(30), "GET / to answer 200 again", || {
            lk.try_get("/").filter(|r| r.status == 200).map(|_| ())
        });
    }
}

/// Every key of livekit-server 1.13.5's `config.Config`, `RTCConfig`,
/// `RoomConfig` and `TURNConfig` (read in its source), set to null so that
/// only the schema is under test: both servers parse it and serve.
#[test]
fn every_key_of_the_real_schema_is_known_to_both() {
    let top = [
        "agents",
        "api",
        "audio",
        "debug_handler",
        "development",
        "enable_data_tracks",
        "enable_participant_data_blob",
        "ingress",
        "key_file",
        "limit",
        "log_level",
        "metric",
        "node_selector",
        "node_stats",
        "prometheus",
        "prometheus_port",
        "psrpc",
        "region",
        "signal_relay",
        "sip",
        "trace",
        "video",
    ];
    let rtc = [
        "advertise_internal_ip",
        "allow_tcp_fallback",
        "allow_udp_unstable_fallback",
        "batch_io",
        "congestion_control",
        "data_channel_max_buffered_amount",
        "datachannel_data_track_target_latency",
        "datachannel_lossy_target_latency",
        "datachannel_slow_threshold",
        "enable_loopback_candidate",
        "enable_rtp_stream_restart_detection",
        "external_ip_only",
        "force_tcp",
        "forward_stats",
        "host_acceptance_min_wait",
        "interfaces",
        "ips",
        "node_ip",
        "packet_buffer_size",
        "packet_buffer_size_audio",
        "packet_buffer_size_video",
        "pli_throttle",
        "prflx_acceptance_min_wait",
        "reconnect_on_data_channel_error",
        "reconnect_on_publication_error",
        "reconnect_on_subscription_error",
        "relay_acceptance_min_wait",
        "sctp_cwnd_ca_step",
        "sctp_fast_rtx_wnd",
        "sctp_min_cwnd",
        "skip_external_ip_validation",
        "srflx_acceptance_min_wait",
        "strict_acks",
        "stun_servers",
        "tcp_fallback_rtt_threshold",
        "turn_servers",
        "udp_port",
        "use_ice_lite",
        "use_mdns",
        "use_stun_port_as_ice",
    ];
    let room = [
        "create_room_attempts",
        "create_room_timeout",
        "departure_timeout",
        "empty_timeout",
        "enable_remote_unmute",
        "enabled_codecs",
        "max_metadata_size",
        "max_participant_identity_length",
        "max_participants",
        "max_room_name_length",
        "playout_delay",
        "room_configurations",
        "sync_streams",
        "update_batch_target_size",
    ];
    let turn = [
        "allow_restricted_peer_cidrs",
        "bind_addresses",
        "cert_file",
        "deny_peer_cidrs",
        "domain",
        "external_tls",
        "key_file",
        "relay_range_end",
        "relay_range_start",
        "tls_port",
        "ttl_seconds",
        "udp_port",
    ];
    let nulls = |keys: &[&str], indent: &str| keys.iter().map(|k| format!("{indent}{k}: null\n")).collect::<String>();
    for (name, bin) in servers() {
        let port = free_port();
        let base = minimal_yaml(port, "");
        let yaml = base.replace("rtc:\n", &format!("rtc:\n{}", nulls(&rtc, "  ")))
            + &nulls(&top, "")
            + &format!("room:\n{}turn:\n{}", nulls(&room, "  "), nulls(&turn, "  "));
        let lk = Lk::running(&bin, &yaml, port);
        assert_eq!(lk.request("GET", "/", None, b"").status, 200, "{name}: {}", lk.output());
    }
}
