//! The livekit-server test double behaves like livekit-server where the
//! supervisor depends on it: strict config, exit 0 on startup errors, keys
//! only from the file, readiness and `/rtc/validate` texts, signals, and the
//! misbehaviour switches. Real processes, real files, sockets on 127.0.0.1.

use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use hero_livekit_tests::cluster::Redis;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use livekit_api::access_token::{AccessToken, VideoGrants};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

const KEY: &str = "APIdoubletest1";
const SECRET: &str = "0123456789abcdefghijABCDEFGHIJ0123456789xyz";
const DEADLINE: Duration = Duration::from_secs(15);

/// Two free ports (HTTP and RTC TCP), from the harness.
fn free_ports() -> (u16, u16) {
    (hero_livekit_tests::free_port(), hero_livekit_tests::free_port())
}

fn config_yaml(port: u16, rtc_port: u16, keys: &str) -> String {
    format!(
        "port: {port}\nrtc:\n  tcp_port: {rtc_port}\n  port_range_start: 50000\n  port_range_end: 60000\n  use_external_ip: false\n{keys}logging:\n  level: info\nroom:\n  auto_create: true\n"
    )
}

fn keys_section(key: &str, secret: &str) -> String {
    format!("keys:\n  {key}: {secret}\n")
}

/// A double running (or exited) in its own directory; killed on drop.
struct Double {
    child: Child,
    addr: SocketAddr,
    stdout: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Double {
    fn spawn(yaml: &str, port: u16, behaviour: Option<serde_json::Value>) -> Double {
        Double::spawn_with(yaml, port, behaviour, |_| {})
    }

    fn spawn_with(
        yaml: &str,
        port: u16,
        behaviour: Option<serde_json::Value>,
        adjust: impl FnOnce(&mut Command),
    ) -> Double {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("livekit.yaml");
        std::fs::write(&config, yaml).expect("write config");
        if let Some(b) = behaviour {
            std::fs::write(dir.path().join("double-behaviour.json"), b.to_string()).expect("write behaviour");
        }
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_livekit-server-double"));
        cmd.arg("--config")
            .arg(&config)
            .args(["--bind", "127.0.0.1", "--node-ip", "127.0.0.1"])
            .env_remove("LK_DOUBLE_BEHAVIOUR_FILE")
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        adjust(&mut cmd);
        let mut child = cmd.spawn().expect("spawn the double");
        let stdout = Arc::new(Mutex::new(String::new()));
        // Logs go to stderr and startup errors to stdout, as in the real
        // server; the tests read both as one text, as the supervisor's log
        // file holds them.
        let pipes: Vec<Box<dyn Read + Send>> = vec![
            Box::new(child.stdout.take().expect("stdout piped")),
            Box::new(child.stderr.take().expect("stderr piped")),
        ];
        let readers = pipes
            .into_iter()
            .map(|mut pipe| {
                let sink = Arc::clone(&stdout);
                std::thread::spawn(move || {
                    let mut chunk = [0u8; 4096];
                    while let Ok(n) = pipe.read(&mut chunk) {
                        if n == 0 {
                            break;
                        }
                        if let Ok(mut s) = sink.lock() {
                            s.push_str(&String::from_utf8_lossy(&chunk[..n]));
                        }
                    }
                })
            })
            .collect();
        Double {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            stdout,
            readers,
            _dir: dir,
        }
    }

    fn stdout(&self) -> String {
        self.stdout.lock().expect("stdout lock").clone()
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // The pipe closes with the process: joining the reader makes
                // sure its last lines are in `stdout`.
                for reader in self.readers.drain(..) {
                    reader.join().expect("output reader");
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the double did not exit; stdout: {}",
                self.stdout()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).expect("signal the double");
    }

    /// Polls `GET /` until 200, failing if the process exits first.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("the double exited with {status}: {}", self.stdout());
            }
            if let Ok((StatusCode::OK, _)) = try_get(self.addr, "/", None).await {
                return;
            }
            assert!(Instant::now() < deadline, "never ready: {}", self.stdout());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn validate(&self, token: &str) -> (StatusCode, String) {
        get(self.addr, &format!("/rtc/validate?access_token={token}"), None).await
    }
}

impl Drop for Double {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn try_get(addr: SocketAddr, path: &str, authorization: Option<&str>) -> Result<(StatusCode, String), String> {
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = Request::builder().uri(path).header("host", "127.0.0.1");
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

async fn get(addr: SocketAddr, path: &str, authorization: Option<&str>) -> (StatusCode, String) {
    try_get(addr, path, authorization)
        .await
        .expect("HTTP request to the double")
}

fn join_token(key: &str, secret: &str, grants: VideoGrants) -> String {
    AccessToken::with_api_key(key, secret)
        .with_identity("alice")
        .with_grants(grants)
        .to_jwt()
        .expect("livekit-api signs the token")
}

fn room_grant(room: &str) -> VideoGrants {
    VideoGrants {
        room_join: true,
        room: room.into(),
        ..Default::default()
    }
}

/// An HS256 JWT with exactly these claims, for cases livekit-api refuses to
/// build (expired, not yet valid, no identity).
fn raw_jwt(secret: &str, claims: serde_json::Value) -> String {
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

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

fn port_is_closed(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_probe_answers_ok_and_a_livekit_api_token_validates() {
    let (port, rtc) = free_ports();
    let mut d = Double::spawn(&config_yaml(port, rtc, &keys_section(KEY, SECRET)), port, None);
    d.wait_ready().await;
    assert_eq!(get(d.addr, "/", None).await, (StatusCode::OK, "OK".into()));
    let token = join_token(KEY, SECRET, room_grant("r1"));
    assert_eq!(d.validate(&token).await, (StatusCode::OK, "success".into()));
    let bearer = format!("Bearer {token}");
    assert_eq!(
        get(d.addr, "/rtc/validate", Some(&bearer)).await,
        (StatusCode::OK, "success".into())
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", rtc)).is_ok(),
        "rtc.tcp_port is held like the real server holds it"
    );
    let out = d.stdout();
    assert!(
        out.contains("starting LiveKit server") && out.contains(&format!("\"portHttp\": {port}")),
        "{out}"
    );
    assert!(!out.contains(SECRET), "the secret is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_tokens_get_livekits_status_and_text() {
    let (port, rtc) = free_ports();
    let mut d = Double::spawn(&config_yaml(port, rtc, &keys_section(KEY, SECRET)), port, None);
    d.wait_ready().await;
    let other_secret = "ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ";
    let t = now();
    let cases: Vec<(String, StatusCode, &str)> = vec![
        (
            join_token("APIunknown", SECRET, room_grant("r")),
            StatusCode::UNAUTHORIZED,
            "invalid API key: APIunknown",
        ),
        (
            join_token(KEY, other_secret, room_grant("r")),
            StatusCode::UNAUTHORIZED,
            "invalid token: <JWT>, error: token signature is invalid: signature is invalid",
        ),
        (
            raw_jwt(
                SECRET,
                json!({"iss": KEY, "sub": "a", "nbf": t - 7200, "exp": t - 3600, "video": {"roomJoin": true, "room": "r"}}),
            ),
            StatusCode::UNAUTHORIZED,
            "invalid token: <JWT>, error: token has invalid claims: token is expired",
        ),
        (
            raw_jwt(
                SECRET,
                json!({"iss": KEY, "sub": "a", "nbf": t + 3600, "exp": t + 7200, "video": {"roomJoin": true, "room": "r"}}),
            ),
            StatusCode::UNAUTHORIZED,
            "invalid token: <JWT>, error: token has invalid claims: token is not valid yet",
        ),
        (
            join_token(
                KEY,
                SECRET,
                VideoGrants {
                    room: "r".into(),
                    ..Default::default()
                },
            ),
            StatusCode::UNAUTHORIZED,
            "permissions denied",
        ),
        (
            raw_jwt(SECRET, json!({"iss": KEY, "sub": "a", "nbf": t, "exp": t + 600})),
            StatusCode::UNAUTHORIZED,
            "no permissions to access the room",
        ),
        (
            raw_jwt(
                SECRET,
                json!({"iss": KEY, "nbf": t, "exp": t + 600, "video": {"roomJoin": true, "room": "r"}}),
            ),
            StatusCode::BAD_REQUEST,
            "identity cannot be empty",
        ),
        (
            raw_jwt(
                SECRET,
                json!({"iss": KEY, "sub": "a", "nbf": t, "exp": t + 600, "video": {"roomJoin": true}}),
            ),
            StatusCode::BAD_REQUEST,
            "no room name",
        ),
        (
            "not.a.jwt".into(),
            StatusCode::UNAUTHORIZED,
            "invalid authorization token",
        ),
    ];
    for (token, status, text) in cases {
        // livekit-server 1.13.5 echoes a refused token whole.
        let text = text.replace("<JWT>", &token);
        assert_eq!(d.validate(&token).await, (status, text), "token {token}");
    }
    assert_eq!(
        get(d.addr, "/rtc/validate", None).await,
        (StatusCode::UNAUTHORIZED, "no permissions to access the room".into())
    );
    assert_eq!(
        get(d.addr, "/rtc/validate", Some("Token abc")).await,
        (
            StatusCode::UNAUTHORIZED,
            "invalid authorization header. Must start with Bearer ".into()
        )
    );
}

#[test]
fn unknown_yaml_key_prints_livekits_error_and_exits_zero() {
    let (port, rtc) = free_ports();
    let yaml = format!(
        "port: {port}\nnot_a_livekit_key: 1\nrtc:\n  tcp_port: {rtc}\n{}",
        keys_section(KEY, SECRET)
    );
    let mut d = Double::spawn(&yaml, port, None);
    let status = d.wait_exit();
    assert_eq!(status.code(), Some(0), "livekit-server exits 0 on config errors");
    assert!(
        d.stdout().contains(
            "could not parse config: yaml: unmarshal errors:\n  line 2: field not_a_livekit_key not found in type config.Config"
        ),
        "{}",
        d.stdout()
    );
    assert!(port_is_closed(d.addr));
}

#[test]
fn unknown_nested_key_names_the_section_type() {
    let (port, rtc) = free_ports();
    let yaml = format!(
        "port: {port}\nrtc:\n  tcp_port: {rtc}\n  udp_ports: 7882\n{}",
        keys_section(KEY, SECRET)
    );
    let mut d = Double::spawn(&yaml, port, None);
    assert_eq!(d.wait_exit().code(), Some(0));
    assert!(
        d.stdout()
            .contains("line 4: field udp_ports not found in type config.RTCConfig"),
        "{}",
        d.stdout()
    );
}

#[test]
fn no_keys_prints_livekits_error_and_exits_zero() {
    let (port, rtc) = free_ports();
    let mut d = Double::spawn(&config_yaml(port, rtc, ""), port, None);
    assert_eq!(d.wait_exit().code(), Some(0));
    assert!(
        d.stdout().contains("one of key-file or keys must be provided"),
        "{}",
        d.stdout()
    );
    assert!(port_is_closed(d.addr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livekit_environment_variables_are_ignored() {
    let (port, rtc) = free_ports();
    let env_secret = "EEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEE";
    let mut d = Double::spawn_with(&config_yaml(port, rtc, &keys_section(KEY, SECRET)), port, None, |cmd| {
        cmd.env("LIVEKIT_KEYS", format!("APIfromenv: {env_secret}"))
            .env("LIVEKIT_CONFIG", "port: 1\nkeys:\n  APIfromenv: x\n")
            .env("LIVEKIT_PORT", "1");
    });
    d.wait_ready().await;
    assert_eq!(
        d.validate(&join_token("APIfromenv", env_secret, room_grant("r"))).await,
        (StatusCode::UNAUTHORIZED, "invalid API key: APIfromenv".into())
    );
    assert_eq!(
        d.validate(&join_token(KEY, SECRET, room_grant("r"))).await,
        (StatusCode::OK, "success".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_secret_is_logged_and_the_server_runs() {
    let (port, rtc) = free_ports();
    let mut d = Double::spawn(&config_yaml(port, rtc, &keys_section(KEY, "shortsecret")), port, None);
    d.wait_ready().await;
    // The warning is written to stderr before the server listens, but the
    // thread reading that pipe may not have taken it in yet: wait for it.
    let out = hero_livekit_tests::wait_for(Duration::from_secs(10), "the short-secret warning", || {
        let out = d.stdout();
        out.contains("secret is too short, should be at least 32 characters for security")
            .then_some(out)
    });
    assert!(!out.contains("shortsecret"), "the secret itself is not logged");
    assert_eq!(
        d.validate(&join_token(KEY, "shortsecret", room_grant("r"))).await,
        (StatusCode::OK, "success".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_secret_starts_and_refuses_its_key() {
    let (port, rtc) = free_ports();
    let mut d = Double::spawn(&config_yaml(port, rtc, &format!("keys:\n  {KEY}: \"\"\n")), port, None);
    d.wait_ready().await;
    assert_eq!(
        d.validate(&raw_jwt(
            "",
            json!({"iss": KEY, "sub": "a", "nbf": now(), "exp": now() + 600, "video": {"roomJoin": true, "room": "r"}})
        ))
        .await,
        (StatusCode::UNAUTHORIZED, format!("invalid API key: {KEY}"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_file_replaces_keys_and_must_not_be_readable_by_others() {
    let (port, rtc) = free_ports();
    let key_dir = tempfile::tempdir().expect("temp dir");
    let key_file: PathBuf = key_dir.path().join("keys.yaml");
    std::fs::write(&key_file, format!("APIfromfile: {SECRET}\n")).expect("write key file");
    let yaml = |p: &Path| {
        config_yaml(
            port,
            rtc,
            &format!("key_file: {}\n{}", p.display(), keys_section(KEY, SECRET)),
        )
    };

    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut d = Double::spawn(&yaml(&key_file), port, None);
    assert_eq!(d.wait_exit().code(), Some(0));
    assert!(
        d.stdout().contains("key file others permissions must be set to 0"),
        "{}",
        d.stdout()
    );
    drop(d);

    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let mut d = Double::spawn(&yaml(&key_file), port, None);
    d.wait_ready().await;
    assert_eq!(
        d.validate(&join_token("APIfromfile", SECRET, room_grant("r"))).await,
        (StatusCode::OK, "success".into())
    );
    assert_eq!(
        d.validate(&join_token(KEY, SECRET, room_grant("r"))).await,
        (StatusCode::UNAUTHORIZED, format!("invalid API key: {KEY}")),
        "inline keys are replaced by the key file"
    );
}

#[test]
fn port_in_use_prints_the_bind_error_and_exits_zero() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let (_, rtc) = free_ports();
    let mut d = Double::spawn(&config_yaml(port, rtc, &keys_section(KEY, SECRET)), port, None);
    assert_eq!(d.wait_exit().code(), Some(0));
    assert!(
        d.stdout()
            .contains(&format!("listen tcp 127.0.0.1:{port}: bind: address already in use")),
        "{}",
        d.stdout()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_sigint_exit_zero() {
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        let (port, rtc) = free_ports();
        let mut d = Double::spawn(&config_yaml(port, rtc, &keys_section(KEY, SECRET)), port, None);
        d.wait_ready().await;
        d.signal(sig);
        assert_eq!(d.wait_exit().code(), Some(0), "{sig}");
        assert!(d.stdout().contains("exit requested, shutting down"));
    }
}

#[test]
fn unknown_flags_such_as_dev_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_livekit-server-double"))
        .args(["--dev", "--config", "/dev/null"])
        .output()
        .expect("run the double");
    assert_ne!(out.status.code(), Some(0));
    let help = Command::new(env!("CARGO_BIN_EXE_livekit-server-double"))
        .arg("--help")
        .output()
        .expect("run the double");
    assert!(String::from_utf8_lossy(&help.stdout).contains("test double"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_delay_answers_406_until_it_passes() {
    let (port, rtc) = free_ports();
    let mut d = Double::spawn(
        &config_yaml(port, rtc, &keys_section(KEY, SECRET)),
        port,
        Some(json!({"ready_delay_ms": 1500})),
    );
    let deadline = Instant::now() + DEADLINE;
    let first = loop {
        if let Ok(answer) = try_get(d.addr, "/", None).await {
            break answer;
        }
        assert!(Instant::now() < deadline, "never listened: {}", d.stdout());
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(first.0, StatusCode::NOT_ACCEPTABLE);
    assert!(first.1.starts_with("Not Ready\nNode Updated At "), "{first:?}");
    d.wait_ready().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_ms_exits_with_a_panic_status_after_being_ready() {
    let (port, rtc) = free_ports();
    let mut d = Double::spawn(
        &config_yaml(port, rtc, &keys_section(KEY, SECRET)),
        port,
        Some(json!({"crash_after_ms": 300})),
    );
    d.wait_ready().await;
    assert_eq!(d.wait_exit().code(), Some(2));
}

#[test]
fn exit_at_start_exits_before_binding() {
    let (port, rtc) = free_ports();
    let mut d = Double::spawn(
        &config_yaml(port, rtc, &keys_section(KEY, SECRET)),
        port,
        Some(json!({"exit_at_start": true, "exit_code": 7})),
    );
    assert_eq!(d.wait_exit().code(), Some(7));
    assert!(port_is_closed(d.addr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_sigterm_leaves_only_sigkill() {
    let (port, rtc) = free_ports();
    let mut d = Double::spawn(
        &config_yaml(port, rtc, &keys_section(KEY, SECRET)),
        port,
        Some(json!({"ignore_sigterm": true})),
    );
    d.wait_ready().await;
    d.signal(Signal::SIGTERM);
    let deadline = Instant::now() + DEADLINE;
    while !d.stdout().contains("ignoring signal") {
        assert!(Instant::now() < deadline, "{}", d.stdout());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(get(d.addr, "/", None).await.0, StatusCode::OK, "still serving");
    d.signal(Signal::SIGKILL);
    assert_eq!(d.wait_exit().code(), None, "killed by a signal");
}

/// A copy of the double claiming `version`, run once on `yaml`; its stdout.
fn run_as_version(version: &str, yaml: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = dir.path().join("livekit-server");
    std::fs::copy(env!("CARGO_BIN_EXE_livekit-server-double"), &exe).expect("copy");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(dir.path().join("livekit-server.version"), version).expect("version file");
    let config = dir.path().join("livekit.yaml");
    std::fs::write(&config, yaml).expect("write config");
    let out = Command::new(&exe)
        .arg("--config")
        .arg(&config)
        .args(["--bind", "127.0.0.1"])
        .env_remove("LK_DOUBLE_BEHAVIOUR_FILE")
        .stderr(Stdio::null())
        .output()
        .expect("run the double");
    let version_out = Command::new(&exe).arg("--version").output().expect("--version");
    assert_eq!(
        String::from_utf8_lossy(&version_out.stdout),
        format!("livekit-server version {version}\n")
    );
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn version_flag_answers_like_livekit_server() {
    let out = Command::new(env!("CARGO_BIN_EXE_livekit-server-double"))
        .arg("--version")
        .output()
        .expect("--version");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "livekit-server version 1.13.5\n");
}

#[test]
fn an_older_release_refuses_newer_keys_as_unknown_fields() {
    let (port, rtc) = free_ports();
    let yaml = format!(
        "port: {port}\nrtc:\n  tcp_port: {rtc}\n{}prometheus:\n  port: 6789\n",
        keys_section(KEY, SECRET)
    );
    let (code, stdout) = run_as_version("1.7.0", &yaml);
    assert_eq!(code, Some(0), "config errors exit 0");
    assert!(
        stdout.contains("could not parse config: yaml: unmarshal errors:\n  line 6: field prometheus not found in type config.Config"),
        "{stdout}"
    );
    let yaml = format!(
        "port: {port}\nrtc:\n  tcp_port: {rtc}\n  turn_servers:\n    - host: \"t.example.org\"\n      port: 3478\n      protocol: \"udp\"\n      secret_file: \"/etc/turn-secret\"\n{}",
        keys_section(KEY, SECRET)
    );
    let (_, stdout) = run_as_version("1.12.9", &yaml);
    assert!(
        stdout.contains("line 8: field secret_file not found in type config.TURNServer"),
        "{stdout}"
    );
}

#[test]
fn webhooks_naming_a_key_not_in_keys_refuse_to_start() {
    let (port, rtc) = free_ports();
    let yaml = format!(
        "{}webhook:\n  api_key: APInotinkeys00\n  urls:\n    - https://hooks.example.org/\n",
        config_yaml(port, rtc, &keys_section(KEY, SECRET))
    );
    let mut d = Double::spawn(&yaml, port, None);
    assert_eq!(d.wait_exit().code(), Some(0));
    assert!(
        d.stdout().contains("api_key is required to use webhooks"),
        "{}",
        d.stdout()
    );
    assert!(port_is_closed(d.addr));
}

// ------------------------------------------------------------ Redis

#[tokio::test]
async fn every_key_of_livekits_redis_section_parses_and_a_reachable_redis_lets_it_start() {
    let (port, rtc) = free_ports();
    let redis_server = Redis::start();
    let redis_port = redis_server.port;
    let redis = format!(
        "redis:\n  address: 127.0.0.1:{redis_port}\n  username: \"\"\n  password: \"\"\n  db: 1\n  use_tls: false\n\
         \x20 tls:\n    enabled: false\n    insecure: false\n    server_name: \"\"\n    ca_cert_file: \"\"\n    client_cert_file: \"\"\n    client_key_file: \"\"\n\
         \x20 sentinel_master_name: \"\"\n  sentinel_username: \"\"\n  sentinel_password: \"\"\n  sentinel_addresses: []\n  cluster_addresses: []\n\
         \x20 max_redirects: 3\n  dial_timeout: 500\n  read_timeout: 500\n  write_timeout: 500\n  pool_timeout: 5s\n  pool_size: 10\n"
    );
    let yaml = config_yaml(port, rtc, &(keys_section(KEY, SECRET) + &redis));
    let mut d = Double::spawn(&yaml, port, None);
    d.wait_ready().await;
}

#[test]
fn an_unknown_key_under_redis_tls_names_livekits_type() {
    let (port, rtc) = free_ports();
    let yaml = config_yaml(
        port,
        rtc,
        &(keys_section(KEY, SECRET)
            + "redis:\n  address: 127.0.0.1:6379\n  tls:\n    enabled: true\n    verify: true\n"),
    );
    let mut d = Double::spawn(&yaml, port, None);
    assert_eq!(d.wait_exit().code(), Some(0));
    assert!(
        d.stdout().contains("field verify not found in type redis.TLSConfig"),
        "{}",
        d.stdout()
    );
}

#[test]
fn an_unreachable_redis_prints_livekits_error_and_exits_zero() {
    let (port, rtc) = free_ports();
    let redis_port = hero_livekit_tests::free_port();
    let yaml = config_yaml(
        port,
        rtc,
        &(keys_section(KEY, SECRET) + &format!("redis:\n  address: 127.0.0.1:{redis_port}\n")),
    );
    let mut d = Double::spawn(&yaml, port, None);
    assert_eq!(d.wait_exit().code(), Some(0));
    assert!(d.stdout().contains("unable to connect to redis: "), "{}", d.stdout());
    assert!(port_is_closed(d.addr));
}

#[tokio::test]
async fn a_lost_redis_makes_get_root_answer_406_until_it_is_back() {
    let (port, rtc) = free_ports();
    let mut redis = Redis::start();
    let redis_port = redis.port;
    let yaml = config_yaml(
        port,
        rtc,
        &(keys_section(KEY, SECRET) + &format!("redis:\n  address: 127.0.0.1:{redis_port}\n")),
    );
    let mut d = Double::spawn(&yaml, port, None);
    d.wait_ready().await;
    redis.kill();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (status, body) = get(d.addr, "/", None).await;
        if status == StatusCode::NOT_ACCEPTABLE && body.starts_with("Not Ready\n") {
            break;
        }
        assert!(Instant::now() < deadline, "still ready without Redis");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    redis.restart();
    d.wait_ready().await;
}
