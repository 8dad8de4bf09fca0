//! Cross-check with a second implementation: tokens from the real lk-backend
//! verify with LiveKit's Python SDK (`tests/python/verify_token.py`), and do
//! not verify with another secret.
//!
//! Needs a Python with `livekit-api` (`pip install -r
//! tests/python/requirements.txt`, which `scripts/test` runs first);
//! `LK_PYTHON` names the interpreter (default `python3`). Without it the test
//! fails with the install hint instead of being skipped: a check that does
//! not run protects nothing.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

const KEY: &str = "APIpycheck0001";
const SECRET: &str = "PyPyPyPyPyPyPyPyPyPyPyPyPyPyPyPyPyPyPyPy42";

fn python() -> String {
    std::env::var("LK_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Runs verify_token.py with the secret on stdin, never on the command line.
fn verify_with_python(key: &str, secret: &str, token: &str) -> (i32, Value) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/python/verify_token.py");
    let mut child = Command::new(python())
        .arg(script)
        .env_remove("LIVEKIT_API_KEY")
        .env_remove("LIVEKIT_API_SECRET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run python (set LK_PYTHON to an interpreter with livekit-api)");
    let input = json!({"api_key": key, "api_secret": secret, "token": token});
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(input.to_string().as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("python output");
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify_token.py printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.code().unwrap_or(-1), answer)
}

/// Minimal HTTP/1.1 POST over a plain socket: one request, connection closed.
fn post_token(addr: &str, body: &Value) -> Value {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr).expect("connect lk-backend");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let body = body.to_string();
    write!(
        stream,
        "POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, payload) = response.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{response}");
    serde_json::from_str(payload).expect("JSON body")
}

#[test]
fn lk_backend_tokens_verify_with_livekits_python_sdk() {
    let dir = tempfile::tempdir().expect("temp dir");
    let env_file = dir.path().join("backend.env");
    std::fs::write(
        &env_file,
        format!("LIVEKIT_API_KEY={KEY}\nLIVEKIT_API_SECRET={SECRET}\nLIVEKIT_URL=ws://127.0.0.1:7880\nPORT=0\n"),
    )
    .expect("write env file");
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_lk-backend"))
            .arg("--env-file")
            .arg(&env_file)
            .env_clear()
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn lk-backend"),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("listening on ADDR")
        .to_string();

    let issued = post_token(
        &addr,
        &json!({"room": "py-room", "identity": "py-user", "name": "Py", "metadata": "{\"m\":1}", "can_publish": false}),
    );
    let token = issued["token"].as_str().expect("token");
    let (code, claims) = verify_with_python(KEY, SECRET, token);
    assert_eq!(
        code,
        0,
        "LiveKit's Python SDK must verify the token (`pip install -r tests/python/requirements.txt`, or set LK_PYTHON): {claims}"
    );
    assert_eq!(claims["identity"], "py-user");
    assert_eq!(claims["name"], "Py");
    assert_eq!(claims["metadata"], "{\"m\":1}");
    assert_eq!(claims["room"], "py-room");
    assert_eq!(claims["room_join"], true);
    assert_eq!(claims["can_publish"], false);

    let (code, answer) = verify_with_python(KEY, "another-secret-another-secret-another-1", token);
    assert_eq!(code, 1, "{answer}");
    assert_eq!(answer["error"], "InvalidSignatureError");
    let (code, answer) = verify_with_python("APIother", SECRET, token);
    assert_eq!(code, 1, "{answer}");
    assert_eq!(answer["error"], "InvalidIssuerError");
}

/// Kills lk-backend when the test ends, also when an assertion fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
