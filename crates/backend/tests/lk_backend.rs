//! End-to-end tests of the real `lk-backend` binary: real env files, a real
//! process, real sockets on 127.0.0.1, real signals.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use livekit_api::access_token::TokenVerifier;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

const KEY: &str = "APItestkey0001";
const SECRET_A: &str = "AAAAaaaaAAAAaaaaAAAAaaaaAAAAaaaaAAAAaaaa01";
const SECRET_B: &str = "BBBBbbbbBBBBbbbbBBBBbbbbBBBBbbbbBBBBbbbb02";
/// The bearer secret every `POST /token` of these tests presents.
const MINT: &str = "MINTmintMINTmintMINTmintMINTmintMINTmint03";
const STARTUP: Duration = Duration::from_secs(20);

fn env_text(secret: &str, port: u16) -> String {
    format!(
        "LIVEKIT_API_KEY=\"{KEY}\"\nLIVEKIT_API_SECRET=\"{secret}\"\nLIVEKIT_URL=\"ws://127.0.0.1:7880\"\nPORT=\"{port}\"\nMINT_SECRET=\"{MINT}\"\n"
    )
}

/// Replaces a file the way the supervisor does: write aside, then rename.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write temp env file");
    std::fs::rename(&tmp, path).expect("rename env file");
}

/// A running lk-backend; killed on drop.
struct Backend {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
    env_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Backend {
    fn start_with_file(text: &str) -> Backend {
        Backend::start_with_file_and_env(text, &[])
    }

    /// With `vars` in its environment (limits, RUST_LOG) besides the file.
    fn start_with_file_and_env(text: &str, vars: &[(&str, &str)]) -> Backend {
        let dir = tempfile::tempdir().expect("temp dir");
        let env_file = dir.path().join("backend.env");
        std::fs::write(&env_file, text).expect("write env file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lk-backend"));
        cmd.arg("--env-file").arg(&env_file).env_clear();
        cmd.envs(vars.iter().copied());
        Backend::start(cmd, env_file, dir)
    }

    fn start(mut cmd: Command, env_file: PathBuf, dir: tempfile::TempDir) -> Backend {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lk-backend");
        let stderr = collect_stderr(&mut child);
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let addr = match rx.recv_timeout(STARTUP) {
            Ok(a) => a.parse().expect("listening line holds an address"),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "lk-backend did not announce its address; stderr: {}",
                    stderr.lock().expect("stderr lock")
                );
            }
        };
        Backend {
            child,
            addr,
            stderr,
            env_file,
            _dir: dir,
        }
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).expect("signal lk-backend");
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// Polls stderr until it contains `needle` or the deadline passes.
    fn wait_for_log(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.stderr().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        wait_exit(&mut self.child, within)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect_stderr(child: &mut Child) -> Arc<Mutex<String>> {
    let buf = Arc::new(Mutex::new(String::new()));
    let mut stderr = child.stderr.take().expect("stderr piped");
    let sink = Arc::clone(&buf);
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut chunk) {
            if n == 0 {
                break;
            }
            if let Ok(mut b) = sink.lock() {
                b.push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        }
    });
    buf
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// One keep-alive HTTP/1.1 connection.
struct Conn(SendRequest<Full<Bytes>>);

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to lk-backend");
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("http1 handshake");
        tokio::spawn(conn);
        Conn(send)
    }

    /// A request presenting the mint secret, as every allowed caller does.
    async fn send(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Bytes) {
        let bearer = format!("Bearer {MINT}");
        self.send_as(Some(&bearer), method, path, content_type, body).await
    }

    /// A request with `authorization` as its `Authorization` header, or none.
    async fn send_as(
        &mut self,
        authorization: Option<&str>,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Bytes) {
        let mut req = Request::builder().method(method).uri(path).header("host", "127.0.0.1");
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let req = req.body(Full::new(Bytes::from(body))).expect("request");
        self.0.ready().await.expect("connection ready");
        let resp = self.0.send_request(req).await.expect("response");
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("response body").to_bytes();
        (status, body)
    }

    async fn post_json(&mut self, body: &Value) -> (StatusCode, Value) {
        let (status, bytes) = self
            .send(
                "POST",
                "/token",
                Some("application/json"),
                body.to_string().into_bytes(),
            )
            .await;
        (status, parse_json(&bytes))
    }
}

fn parse_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issued_token_verifies_with_livekits_verifier_and_carries_the_grant() {
    let b = Backend::start_with_file(&env_text(SECRET_A, 0));
    let mut c = Conn::open(b.addr).await;
    let (status, body) = c
        .post_json(&json!({"room": "r1", "identity": "alice", "name": "Alice", "ttl_seconds": 600}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["api_key"], KEY);
    assert_eq!(body["url"], "ws://127.0.0.1:7880");
    let token = body["token"].as_str().expect("token is a string");
    let claims = TokenVerifier::with_api_key(KEY, SECRET_A)
        .verify(token)
        .expect("token verifies with the configured secret");
    assert_eq!(claims.iss, KEY);
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.name, "Alice");
    assert!(claims.video.room_join);
    assert_eq!(claims.video.room, "r1");
    assert_eq!(body["expires_at"].as_u64(), Some(claims.exp as u64));
    assert!(TokenVerifier::with_api_key(KEY, SECRET_B).verify(token).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_input_gets_400_naming_the_field() {
    let b = Backend::start_with_file(&env_text(SECRET_A, 0));
    let mut c = Conn::open(b.addr).await;
    let long = "x".repeat(257);
    let table = [
        (json!({"identity": "i"}), "missing_field", "room: "),
        (json!({"room": "r", "identity": ""}), "invalid_value", "identity: "),
        (json!({"room": long, "identity": "i"}), "invalid_value", "room: "),
        (json!({"room": "r", "identity": long}), "invalid_value", "identity: "),
        (json!({"room": "a\u{7}b", "identity": "i"}), "invalid_value", "room: "),
        (json!({"room": "r", "identity": "i\r\n"}), "invalid_value", "identity: "),
        (json!({"room": ["r"], "identity": "i"}), "invalid_type", "room: "),
        (
            json!({"room": "r", "identity": "i", "ttl_seconds": "60"}),
            "invalid_type",
            "ttl_seconds: ",
        ),
        (
            json!({"room": "r", "identity": "i", "can_publish": 1}),
            "invalid_type",
            "can_publish: ",
        ),
        (
            json!({"room": "r", "identity": "i", "ttl_seconds": 30}),
            "invalid_value",
            "ttl_seconds: ",
        ),
        (
            json!({"room": "r", "identity": "i", "ttl_seconds": 86401}),
            "invalid_value",
            "ttl_seconds: ",
        ),
        (
            json!({"room": "r", "identity": "i", "metadata": "m".repeat(64_001)}),
            "invalid_value",
            "metadata: ",
        ),
        (
            json!({"room": "r", "identity": "i", "roomJoin": true}),
            "unknown_field",
            "roomJoin: ",
        ),
    ];
    for (body, kind, prefix) in table {
        let (status, answer) = c.post_json(&body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {answer}");
        assert_eq!(answer["error"], kind, "{body} -> {answer}");
        let message = answer["message"].as_str().expect("message");
        assert!(message.starts_with(prefix), "{body} -> {answer}");
    }
    let (status, answer) = c
        .send("POST", "/token", Some("application/json"), b"{\"room\":".to_vec())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(parse_json(&answer)["error"], "invalid_json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_content_type_gets_415_in_the_json_shape() {
    let b = Backend::start_with_file(&env_text(SECRET_A, 0));
    let mut c = Conn::open(b.addr).await;
    let body = br#"{"room":"r","identity":"i"}"#.to_vec();
    for ct in [Some("text/plain"), None, Some("application/x-www-form-urlencoded")] {
        let (status, answer) = c.send("POST", "/token", ct, body.clone()).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}");
        let answer = parse_json(&answer);
        assert_eq!(answer["error"], "unsupported_media_type");
        assert!(answer["message"]
            .as_str()
            .expect("message")
            .starts_with("content-type: "));
    }
    let (status, _) = c
        .send("POST", "/token", Some("application/json; charset=utf-8"), body)
        .await;
    assert_eq!(status, StatusCode::OK, "parameters after the media type are accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_gets_413_in_the_json_shape() {
    let b = Backend::start_with_file(&env_text(SECRET_A, 0));
    let body = json!({"room": "r", "identity": "i", "metadata": "m".repeat(70 * 1024)});
    let (status, answer) = Conn::open(b.addr).await.post_json(&body).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer["error"], "payload_too_large");
    assert_eq!(
        answer["message"],
        "body: must be at most 65536 bytes (limits.max_body_bytes)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods_answer_json() {
    let b = Backend::start_with_file(&env_text(SECRET_A, 0));
    let mut c = Conn::open(b.addr).await;
    let (status, body) = c.send("GET", "/nope", None, Vec::new()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        parse_json(&body),
        json!({"error": "not_found", "message": "path: no route for GET /nope"})
    );
    let (status, body) = c.send("GET", "/token", None, Vec::new()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(parse_json(&body)["error"], "method_not_allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_shows_the_key_and_never_the_secret() {
    let text = env_text(SECRET_A, 0);
    let b = Backend::start_with_file(&text);
    let (status, body) = Conn::open(b.addr).await.send("GET", "/health", None, Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    // The hash of the file it loaded, so its supervisor can tell which one it runs.
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    };
    assert_eq!(
        parse_json(&body),
        json!({"status": "ok", "api_key": KEY, "config_sha256": sha})
    );
    assert!(!String::from_utf8_lossy(&body).contains(SECRET_A));
    assert!(!b.stderr().contains(SECRET_A));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_switches_the_signing_secret_while_requests_keep_succeeding() {
    let b = Backend::start_with_file(&env_text(SECRET_A, 0));
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut loops = Vec::new();
    for n in 0..4 {
        let (stop, ok, failed, addr) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed), b.addr);
        loops.push(tokio::spawn(async move {
            let mut c = Conn::open(addr).await;
            while !stop.load(Ordering::Relaxed) {
                let (status, body) = c.post_json(&json!({"room": "r", "identity": format!("loop{n}")})).await;
                let verifies = body["token"].as_str().is_some_and(|t| {
                    TokenVerifier::with_api_key(KEY, SECRET_A).verify(t).is_ok()
                        || TokenVerifier::with_api_key(KEY, SECRET_B).verify(t).is_ok()
                });
                if status == StatusCode::OK && verifies {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.lock().expect("lock").push(format!("{status} {body}"));
                }
            }
        }));
    }
    let served_before = |n: usize| {
        let ok = Arc::clone(&ok);
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while ok.load(Ordering::Relaxed) < n && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            ok.load(Ordering::Relaxed) >= n
        }
    };
    assert!(served_before(50).await, "the loop is running before the reload");

    write_atomically(&b.env_file, &env_text(SECRET_B, 0));
    b.signal(Signal::SIGHUP);

    let mut probe = Conn::open(b.addr).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let switched_token = loop {
        let (status, body) = probe.post_json(&json!({"room": "r", "identity": "probe"})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let token = body["token"].as_str().expect("token").to_string();
        if TokenVerifier::with_api_key(KEY, SECRET_B).verify(&token).is_ok() {
            break token;
        }
        assert!(Instant::now() < deadline, "the secret never switched after SIGHUP");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        TokenVerifier::with_api_key(KEY, SECRET_A)
            .verify(&switched_token)
            .is_err(),
        "the old secret no longer verifies new tokens"
    );
    let after = ok.load(Ordering::Relaxed);
    assert!(served_before(after + 50).await, "the loop keeps going after the reload");
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.expect("loop task");
    }
    let failed = failed.lock().expect("lock");
    assert!(failed.is_empty(), "requests failed across the reload: {failed:?}");
    assert!(b.stderr().contains("credential reloaded"));
    assert!(!b.stderr().contains(SECRET_B) && !b.stderr().contains(SECRET_A));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_the_port_and_warns_that_a_restart_is_needed() {
    let b = Backend::start_with_file(&env_text(SECRET_A, 0));
    write_atomically(&b.env_file, &env_text(SECRET_A, 1));
    b.signal(Signal::SIGHUP);
    assert!(b.wait_for_log("takes effect only after a restart"), "{}", b.stderr());
    let (status, _) = Conn::open(b.addr).await.send("GET", "/health", None, Vec::new()).await;
    assert_eq!(status, StatusCode::OK, "still serving on the original port");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_env_file_on_reload_keeps_the_current_credential() {
    let b = Backend::start_with_file(&env_text(SECRET_A, 0));
    write_atomically(
        &b.env_file,
        &format!("LIVEKIT_API_KEY={KEY}\nLIVEKIT_API_SECRET=\"{SECRET_B}\n"),
    );
    b.signal(Signal::SIGHUP);
    assert!(b.wait_for_log("env file rejected"), "{}", b.stderr());
    assert!(!b.stderr().contains(SECRET_B), "the rejected line is not echoed");
    let (status, body) = Conn::open(b.addr)
        .await
        .post_json(&json!({"room": "r", "identity": "i"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let token = body["token"].as_str().expect("token");
    assert!(TokenVerifier::with_api_key(KEY, SECRET_A).verify(token).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_file_with_crlf_export_comments_and_quotes_is_read() {
    let text = format!(
        "# written by hand on Windows\r\n\r\nexport LIVEKIT_API_KEY={KEY}\r\nLIVEKIT_API_SECRET='{SECRET_A}'\r\nLIVEKIT_URL=\"wss://lk.example.org\" # public\r\nPORT=\"0\"\r\nMINT_SECRET={MINT}\r\n"
    );
    let b = Backend::start_with_file(&text);
    let mut c = Conn::open(b.addr).await;
    let (_, health) = c.send("GET", "/health", None, Vec::new()).await;
    assert_eq!(parse_json(&health)["api_key"], KEY, "no stray \\r in the key");
    let (status, body) = c.post_json(&json!({"room": "r", "identity": "i"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["url"], "wss://lk.example.org");
    let token = body["token"].as_str().expect("token");
    assert!(TokenVerifier::with_api_key(KEY, SECRET_A).verify(token).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_configures_when_no_file_is_given_and_is_ignored_when_one_is() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lk-backend"));
    cmd.env_clear()
        .env("LIVEKIT_API_KEY", "APIfromenv")
        .env("LIVEKIT_API_SECRET", SECRET_B)
        .env("LIVEKIT_URL", "ws://h:1")
        .env("MINT_SECRET", MINT)
        .env("PORT", "0");
    let b = Backend::start(cmd, dir.path().join("unused"), dir);
    let (_, health) = Conn::open(b.addr).await.send("GET", "/health", None, Vec::new()).await;
    assert_eq!(parse_json(&health)["api_key"], "APIfromenv");
    drop(b);

    let dir = tempfile::tempdir().expect("temp dir");
    let env_file = dir.path().join("backend.env");
    std::fs::write(&env_file, env_text(SECRET_A, 0)).expect("write env file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lk-backend"));
    cmd.arg("--env-file")
        .arg(&env_file)
        .env_clear()
        .env("LIVEKIT_API_KEY", "APIstray")
        .env("LIVEKIT_API_SECRET", SECRET_B);
    let b = Backend::start(cmd, env_file, dir);
    let (_, health) = Conn::open(b.addr).await.send("GET", "/health", None, Vec::new()).await;
    assert_eq!(
        parse_json(&health)["api_key"],
        KEY,
        "the file wins over stray variables"
    );
}

#[test]
fn missing_or_empty_credential_exits_nonzero_naming_the_variable_without_the_secret() {
    let cases = [
        (
            format!("LIVEKIT_API_KEY={KEY}\nLIVEKIT_URL=ws://h:1\n"),
            "LIVEKIT_API_SECRET",
        ),
        (
            format!("LIVEKIT_API_KEY=\nLIVEKIT_API_SECRET={SECRET_A}\nLIVEKIT_URL=ws://h:1\n"),
            "LIVEKIT_API_KEY",
        ),
        (
            format!("LIVEKIT_API_KEY={KEY}\nLIVEKIT_API_SECRET=\"\"\nLIVEKIT_URL=ws://h:1\n"),
            "LIVEKIT_API_SECRET",
        ),
        (
            format!("LIVEKIT_API_KEY={KEY}\nLIVEKIT_API_SECRET={SECRET_A}\nLIVEKIT_URL=ws://h:1\n"),
            "MINT_SECRET",
        ),
    ];
    for (text, var) in cases {
        let dir = tempfile::tempdir().expect("temp dir");
        let env_file = dir.path().join("backend.env");
        std::fs::write(&env_file, &text).expect("write env file");
        let out = Command::new(env!("CARGO_BIN_EXE_lk-backend"))
            .arg("--env-file")
            .arg(&env_file)
            .env_clear()
            .output()
            .expect("run lk-backend");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(stderr.contains(&format!("{var} is missing or empty")), "{stderr}");
        assert!(!stderr.contains(SECRET_A), "{stderr}");
        assert!(out.stdout.is_empty(), "nothing was served");
    }
}

#[test]
fn missing_env_file_exits_nonzero_with_its_path() {
    let out = Command::new(env!("CARGO_BIN_EXE_lk-backend"))
        .args(["--env-file", "/nonexistent/backend.env"])
        .env_clear()
        .output()
        .expect("run lk-backend");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/backend.env"));
}

#[test]
fn port_flag_overrides_the_file_and_a_taken_port_fails_clearly() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let port = taken.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("temp dir");
    let env_file = dir.path().join("backend.env");
    std::fs::write(&env_file, env_text(SECRET_A, 0)).expect("write env file");
    let out = Command::new(env!("CARGO_BIN_EXE_lk-backend"))
        .arg("--env-file")
        .arg(&env_file)
        .args(["--port", &port.to_string()])
        .env_clear()
        .output()
        .expect("run lk-backend");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_sigint_stop_it_with_status_zero() {
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        let mut b = Backend::start_with_file(&env_text(SECRET_A, 0));
        let mut c = Conn::open(b.addr).await;
        let (status, _) = c.send("GET", "/health", None, Vec::new()).await;
        assert_eq!(status, StatusCode::OK);
        b.signal(sig);
        let status = b
            .wait_exit(Duration::from_secs(10))
            .expect("exits after the signal, idle keep-alive connection or not");
        assert_eq!(status.code(), Some(0), "{sig}");
    }
}

// ---- Limits of the listener (issue 21): each closes what it bounds at its
// own deadline, and names itself. Limits are short here (about a second);
// lower bounds are loose (a timer never fires early, and each bound below
// is measured from the client's connect, which the server's accept follows)
// and upper bounds generous for a loaded machine.

/// The most a close may come after its limit on a loaded machine.
const SLACK: Duration = Duration::from_secs(15);

/// Reads until the peer closes the connection (EOF or reset) or `deadline`
/// passes. Returns what arrived and when the close came, `None` if it did
/// not come by the deadline.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, deadline: Instant) -> (Vec<u8>, Option<Instant>) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline.into(), stream.read(&mut chunk)).await {
            Err(_) => return (got, None),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, Some(Instant::now())),
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Splits a raw HTTP/1.1 answer into its status line and its JSON body.
fn raw_answer(bytes: &[u8]) -> (String, Value) {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, parse_json(body.as_bytes()))
}

async fn connect(addr: SocketAddr) -> (tokio::net::TcpStream, Instant) {
    let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    (s, Instant::now())
}

/// Writes `bytes` one at a time every 100 ms until the peer is gone: a
/// slowloris client, whose every byte would restart a timer that is reset
/// by activity.
fn trickle(mut w: tokio::net::tcp::OwnedWriteHalf, bytes: &'static [u8]) {
    use tokio::io::AsyncWriteExt;
    tokio::spawn(async move {
        for b in bytes.iter().cycle() {
            if w.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slow_request_heads_get_408_naming_the_header_timeout() {
    use tokio::io::AsyncWriteExt;
    let limit = Duration::from_millis(1000);
    let b = Backend::start_with_file_and_env(
        &env_text(SECRET_A, 0),
        &[
            ("LK_BACKEND_HEADER_TIMEOUT_MS", "1000"),
            ("LK_BACKEND_IDLE_TIMEOUT_MS", "60000"),
        ],
    );
    let mut waits = Vec::new();
    for n in 0..10 {
        let addr = b.addr;
        waits.push(tokio::spawn(async move {
            let (s, opened) = connect(addr).await;
            let (mut r, mut w) = s.into_split();
            let slow = n % 2 == 1;
            if slow {
                w.write_all(b"POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                    .await
                    .expect("write part of a head");
                trickle(w, b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
            }
            let mut got = Vec::new();
            let mut chunk = [0u8; 4096];
            let deadline = opened + limit + SLACK;
            let closed = loop {
                use tokio::io::AsyncReadExt;
                match tokio::time::timeout_at(deadline.into(), r.read(&mut chunk)).await {
                    Err(_) => break None,
                    Ok(Ok(0)) | Ok(Err(_)) => break Some(Instant::now()),
                    Ok(Ok(k)) => got.extend_from_slice(&chunk[..k]),
                }
            };
            (slow, got, closed.map(|c| c - opened))
        }));
    }
    for w in waits {
        let (slow, got, after) = w.await.expect("connection task");
        let after = after.unwrap_or_else(|| panic!("slow={slow}: still open {SLACK:?} after the header timeout"));
        assert!(
            after >= limit * 9 / 10,
            "slow={slow}: closed after {after:?}, before the header timeout"
        );
        // A trickling client may reset the connection with its next byte
        // before the answer is read; a silent one always reads it.
        if !slow || !got.is_empty() {
            let (status, body) = raw_answer(&got);
            assert!(status.starts_with("HTTP/1.1 408"), "{status}");
            assert_eq!(body["error"], "header_timeout");
            assert_eq!(
                body["message"],
                "no whole request head arrived within 1000 ms (limits.header_timeout)"
            );
        }
    }
    // The service is unharmed.
    let (status, _) = Conn::open(b.addr).await.send("GET", "/health", None, Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_trickled_bodies_get_408_naming_the_body_timeout() {
    use tokio::io::AsyncWriteExt;
    let limit = Duration::from_millis(1000);
    let b = Backend::start_with_file_and_env(&env_text(SECRET_A, 0), &[("LK_BACKEND_BODY_TIMEOUT_MS", "1000")]);
    let head = format!("POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {MINT}\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n{{\"room\":");
    for slow in [false, true] {
        let (s, opened) = connect(b.addr).await;
        let (mut r, mut w) = s.into_split();
        w.write_all(head.as_bytes()).await.expect("write the head");
        if slow {
            trickle(w, b"\"rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr");
        } else {
            // Kept open, sending nothing more.
            tokio::spawn(async move {
                let _w = w;
                std::future::pending::<()>().await;
            });
        }
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        let deadline = opened + limit + SLACK;
        let closed = loop {
            use tokio::io::AsyncReadExt;
            match tokio::time::timeout_at(deadline.into(), r.read(&mut chunk)).await {
                Err(_) => break None,
                Ok(Ok(0)) | Ok(Err(_)) => break Some(Instant::now()),
                Ok(Ok(k)) => got.extend_from_slice(&chunk[..k]),
            }
        };
        let after =
            closed.unwrap_or_else(|| panic!("slow={slow}: still open {SLACK:?} after the body timeout")) - opened;
        assert!(after >= limit * 9 / 10, "slow={slow}: closed after {after:?}");
        if !slow || !got.is_empty() {
            let (status, body) = raw_answer(&got);
            assert!(status.starts_with("HTTP/1.1 408"), "{status}");
            assert_eq!(body["error"], "body_timeout");
            assert_eq!(
                body["message"],
                "body: did not arrive within 1000 ms of the request head (limits.body_timeout)"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_close_at_the_idle_timeout_and_new_ones_at_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let idle = Duration::from_millis(1000);
    let b = Backend::start_with_file_and_env(
        &env_text(SECRET_A, 0),
        &[
            ("LK_BACKEND_HEADER_TIMEOUT_MS", "60000"),
            ("LK_BACKEND_IDLE_TIMEOUT_MS", "1000"),
        ],
    );
    // Opened first and silent: it is bounded by the (long) header timeout,
    // not by the idle one, so it must outlive the idle connections.
    let (silent, _) = connect(b.addr).await;
    let mut waits = Vec::new();
    for _ in 0..5 {
        let addr = b.addr;
        waits.push(tokio::spawn(async move {
            let (mut s, _) = connect(addr).await;
            s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                .await
                .expect("write a request");
            // The whole answer: its head, then the Content-Length bytes.
            let mut got = Vec::new();
            let mut chunk = [0u8; 4096];
            let answered = loop {
                let n = s.read(&mut chunk).await.expect("read the answer");
                assert!(n > 0, "closed before answering");
                got.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&got).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(str::to_string)
                        })
                        .and_then(|v| v.trim().parse().ok())
                        .expect("content-length");
                    if body.len() >= len {
                        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                        break Instant::now();
                    }
                }
            };
            let (rest, closed) = read_until_closed(&mut s, answered + idle + SLACK).await;
            (rest, closed.map(|c| c - answered))
        }));
    }
    for w in waits {
        let (rest, after) = w.await.expect("connection task");
        let after = after.unwrap_or_else(|| panic!("idle connection still open {SLACK:?} after the idle timeout"));
        assert!(
            after >= idle * 9 / 10,
            "closed {after:?} after the answer, before the idle timeout"
        );
        assert!(
            rest.is_empty(),
            "closed without another answer: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }
    let mut probe = [0u8; 1];
    match silent.try_read(&mut probe) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the silent new connection was closed at the idle timeout: {other:?}"),
    }
}

fn raw_request(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {MINT}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Sends `request` on a new connection and reads one whole answer (its
/// JSON body parsed) within `SLACK`.
async fn exchange(addr: SocketAddr, request: &str) -> (tokio::net::TcpStream, String, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut c, opened) = connect(addr).await;
    c.write_all(request.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((opened + SLACK).into(), c.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&chunk[..n]),
            _ => break,
        }
        let text = String::from_utf8_lossy(&got);
        if text
            .split_once("\r\n\r\n")
            .is_some_and(|(_, body)| serde_json::from_str::<Value>(body).is_ok())
        {
            break;
        }
    }
    let (status, body) = raw_answer(&got);
    (c, status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_the_oldest_connection_makes_room_for_a_token_request() {
    let b = Backend::start_with_file_and_env(
        &env_text(SECRET_A, 0),
        &[
            ("LK_BACKEND_MAX_CONNECTIONS", "4"),
            ("LK_BACKEND_HEADER_TIMEOUT_MS", "60000"),
        ],
    );
    // Four silent connections take every slot (accepted in order).
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect(b.addr).await);
    }
    let token_request = raw_request("/token", r#"{"room":"r","identity":"i"}"#);
    let mut served = Vec::new();
    for round in 0..2 {
        // Kept open: each round's connection holds a slot from then on.
        let (c, status, body) = exchange(b.addr, &token_request).await;
        served.push(c);
        assert!(status.starts_with("HTTP/1.1 200"), "round {round}: {status} {body}");
        let token = body["token"].as_str().expect("token");
        assert!(TokenVerifier::with_api_key(KEY, SECRET_A).verify(token).is_ok());
        // The oldest silent connection was the one told to make room.
        let (mut oldest, opened) = held.remove(0);
        let (got, closed) = read_until_closed(&mut oldest, opened + SLACK).await;
        assert!(closed.is_some(), "round {round}: the oldest connection is closed");
        let (status, body) = raw_answer(&got);
        assert!(status.starts_with("HTTP/1.1 503"), "{status}");
        assert_eq!(body["error"], "too_many_connections");
        let message = body["message"].as_str().expect("message");
        assert!(
            message.contains("4 connections are open, the limit (limits.max_connections)"),
            "{message}"
        );
    }
    assert!(b.wait_for_log("(limits.max_connections)"), "{}", b.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_cap_with_every_slot_busy_a_connection_gets_503_naming_it_and_tokens_flow_once_under_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = Backend::start_with_file_and_env(
        &env_text(SECRET_A, 0),
        &[
            ("LK_BACKEND_MAX_CONNECTIONS", "2"),
            ("LK_BACKEND_BODY_TIMEOUT_MS", "60000"),
        ],
    );
    // Two requests in flight: their heads read and their handlers waiting
    // for the body, which hyper shows by answering `100 Continue`. A
    // connection in that state finishes its request before it makes room.
    let mut busy = Vec::new();
    for _ in 0..2 {
        let (mut c, _) = connect(b.addr).await;
        c.write_all(
            format!("POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {MINT}\r\nContent-Type: application/json\r\nContent-Length: 27\r\nExpect: 100-continue\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("write a head");
        let mut got = Vec::new();
        let mut chunk = [0u8; 256];
        while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
            let n = tokio::time::timeout(SLACK, c.read(&mut chunk))
                .await
                .expect("100 Continue in time")
                .expect("read");
            assert!(n > 0, "closed before 100 Continue");
            got.extend_from_slice(&chunk[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 100"), "{}", String::from_utf8_lossy(&got));
        busy.push(c);
    }
    let token_request = raw_request("/token", r#"{"room":"r","identity":"i"}"#);
    let asked = Instant::now();
    let (_c, status, body) = exchange(b.addr, &token_request).await;
    assert!(status.starts_with("HTTP/1.1 503"), "{status} {body}");
    assert_eq!(body["error"], "too_many_connections");
    assert_eq!(
        body["message"],
        "2 connections are open, the limit (limits.max_connections); close idle ones and retry"
    );
    assert!(asked.elapsed() < SLACK);

    // One busy request completes: its answer is sent and, told to make room
    // meanwhile, its connection closes; a token is served again.
    let mut first = busy.remove(0);
    first
        .write_all(br#"{"room":"r","identity":"i"}"#)
        .await
        .expect("send the body");
    let (got, closed) = read_until_closed(&mut first, Instant::now() + SLACK).await;
    assert!(
        closed.is_some(),
        "the connection told to make room closes after its answer"
    );
    assert!(
        String::from_utf8_lossy(&got).contains("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let (_c, status, body) = exchange(b.addr, &token_request).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status} {body}");
    drop(busy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_characters_in_names_get_400_naming_the_field() {
    let b = Backend::start_with_file(&env_text(SECRET_A, 0));
    let mut c = Conn::open(b.addr).await;
    for ch in [
        '\u{202E}', '\u{200B}', '\u{2028}', '\u{2029}', '\u{FEFF}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
        '\u{061C}', '\u{200D}', '\u{00AD}',
    ] {
        for field in ["identity", "name", "room"] {
            let mut body = json!({"room": "r", "identity": "i", "name": "n"});
            body[field] = Value::String(format!("admin{ch}gnp.exe"));
            let (status, answer) = c.post_json(&body).await;
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{field} U+{:04X}: {answer}",
                u32::from(ch)
            );
            assert_eq!(answer["error"], "invalid_value");
            let message = answer["message"].as_str().expect("message");
            assert!(
                message.starts_with(&format!("{field}: must not contain format characters")),
                "{message}"
            );
            assert!(message.ends_with(&format!("U+{:04X}", u32::from(ch))), "{message}");
        }
    }
    // The same text without the character is fine.
    let (status, _) = c
        .post_json(&json!({"room": "r", "identity": "admingnp.exe", "name": "Ådmin 😀"}))
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logging_never_shows_the_secret_the_token_or_the_body() {
    const CANARY: &str = "metadata-canary-7f3a9c";
    let b = Backend::start_with_file_and_env(&env_text(SECRET_A, 0), &[("RUST_LOG", "trace")]);
    let mut c = Conn::open(b.addr).await;
    let (status, body) = c
        .post_json(&json!({"room": "r", "identity": "alice", "metadata": CANARY}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["token"].as_str().expect("token").to_string();
    // lk-backend's own DEBUG line: RUST_LOG=trace is in force for it.
    assert!(b.wait_for_log("token issued"), "{}", b.stderr());
    let (status, _) = c.send("GET", "/health", None, Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    drop(c);
    let log = b.stderr();
    assert!(!log.contains(SECRET_A), "the secret is in the log");
    assert!(!log.contains(MINT), "the mint secret is in the log");
    assert!(!log.contains(&token), "the token is in the log");
    // The payload of the JWT (base64 of the claims) is not there either.
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    assert!(!log.contains(payload), "the token's claims are in the log");
    assert!(!log.contains(CANARY), "the request body is in the log");
    // What could carry them: other crates' DEBUG and TRACE lines (hyper's
    // reads and writes, axum's routing, were their `tracing` features on),
    // capped at INFO whatever RUST_LOG says.
    let foreign: Vec<&str> = log
        .lines()
        .filter(|l| (l.contains(" TRACE ") || l.contains(" DEBUG ")) && !l.contains("lk_backend"))
        .collect();
    assert!(foreign.is_empty(), "lines below INFO from other crates: {foreign:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_first_head_gets_431_naming_the_header_limit() {
    let b = Backend::start_with_file_and_env(&env_text(SECRET_A, 0), &[("LK_BACKEND_MAX_HEADER_BYTES", "8192")]);
    let request = format!(
        "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(9000)
    );
    let (_c, status, body) = exchange(b.addr, &request).await;
    assert!(status.starts_with("HTTP/1.1 431"), "{status}");
    assert_eq!(body["error"], "header_too_large");
    assert_eq!(
        body["message"],
        "the request head exceeds the 8192-byte limit (limits.max_header_bytes)"
    );
}

#[test]
fn an_invalid_limit_exits_2_naming_its_variable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let env_file = dir.path().join("backend.env");
    std::fs::write(&env_file, env_text(SECRET_A, 0)).expect("write env file");
    for (var, value) in [
        ("LK_BACKEND_HEADER_TIMEOUT_MS", "0"),
        ("LK_BACKEND_MAX_CONNECTIONS", "many"),
        ("LK_BACKEND_MAX_HEADER_BYTES", "100"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_lk-backend"))
            .arg("--env-file")
            .arg(&env_file)
            .env_clear()
            .env(var, value)
            .output()
            .expect("run lk-backend");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        assert!(stderr.contains(var), "{stderr}");
        assert!(out.stdout.is_empty(), "nothing was served");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_request_without_the_mint_secret_gets_401_and_nothing_else() {
    const CANARY: &str = "refused-canary-5d1e";
    let b = Backend::start_with_file_and_env(&env_text(SECRET_A, 0), &[("RUST_LOG", "trace")]);
    let body = json!({"room": "r", "identity": "mallory", "metadata": CANARY}).to_string();
    let wrong = format!("Bearer {}", MINT.replace('M', "N"));
    let truncated = format!("Bearer {}", &MINT[..MINT.len() - 1]);
    let api_secret = format!("Bearer {SECRET_A}");
    for authorization in [
        None,
        Some(wrong.as_str()),
        Some(truncated.as_str()),
        Some(api_secret.as_str()),
        Some("Bearer "),
    ] {
        let mut c = Conn::open(b.addr).await;
        let (status, bytes) = c
            .send_as(
                authorization,
                "POST",
                "/token",
                Some("application/json"),
                body.clone().into_bytes(),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{authorization:?}");
        let answer = parse_json(&bytes);
        assert_eq!(answer["error"], "unauthorized", "{answer}");
        let text = answer.to_string();
        assert!(
            answer.get("token").is_none() && !text.contains("eyJ"),
            "no token: {text}"
        );
        assert!(
            !text.contains(MINT) && !text.contains(&MINT[..8]),
            "no hint of the secret: {text}"
        );
        assert!(!text.contains(SECRET_A), "{text}");
        // Refused before anything else is looked at: a bad body gets 401 too.
        let (status, _) = c
            .send_as(
                authorization,
                "POST",
                "/token",
                Some("text/plain"),
                b"not json".to_vec(),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{authorization:?}");
    }
    // The same request with the secret is served.
    let (status, answer) = Conn::open(b.addr)
        .await
        .post_json(&json!({"room": "r", "identity": "alice"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let log = b.stderr();
    assert!(
        !log.contains(MINT) && !log.contains(&MINT.replace('M', "N")),
        "no secret in the log"
    );
    assert!(!log.contains(CANARY), "a refused body is not read, let alone logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_puts_a_new_mint_secret_in_force() {
    let b = Backend::start_with_file(&env_text(SECRET_A, 0));
    let next = "NEXTnextNEXTnextNEXTnextNEXTnextNEXTnext04";
    write_atomically(&b.env_file, &env_text(SECRET_A, 0).replace(MINT, next));
    b.signal(Signal::SIGHUP);
    let ask = json!({"room": "r", "identity": "i"}).to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = Conn::open(b.addr)
            .await
            .send_as(
                Some(&format!("Bearer {next}")),
                "POST",
                "/token",
                Some("application/json"),
                ask.clone().into_bytes(),
            )
            .await;
        if status == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new mint secret is not in force: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _) = Conn::open(b.addr)
        .await
        .post_json(&json!({"room": "r", "identity": "i"}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old one no longer mints");
}
