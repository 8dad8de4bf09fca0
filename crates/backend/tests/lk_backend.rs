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
const STARTUP: Duration = Duration::from_secs(20);

fn env_text(secret: &str, port: u16) -> String {
    format!(
        "LIVEKIT_API_KEY=\"{KEY}\"\nLIVEKIT_API_SECRET=\"{secret}\"\nLIVEKIT_URL=\"ws://127.0.0.1:7880\"\nPORT=\"{port}\"\n"
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
        let dir = tempfile::tempdir().expect("temp dir");
        let env_file = dir.path().join("backend.env");
        std::fs::write(&env_file, text).expect("write env file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lk-backend"));
        cmd.arg("--env-file").arg(&env_file).env_clear();
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

    async fn send(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Bytes) {
        let mut req = Request::builder().method(method).uri(path).header("host", "127.0.0.1");
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
    assert_eq!(answer["message"], "body: must be at most 65536 bytes");
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
        "# written by hand on Windows\r\n\r\nexport LIVEKIT_API_KEY={KEY}\r\nLIVEKIT_API_SECRET='{SECRET_A}'\r\nLIVEKIT_URL=\"wss://lk.example.org\" # public\r\nPORT=\"0\"\r\n"
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
