//! Looking at supervised children from outside the daemon: plain HTTP on
//! loopback, `/proc`, the double's behaviour file, and tokens from the real
//! lk-backend checked by the double's `/rtc/validate`.
//!
//! The supervision tests must not take the daemon's word for anything they
//! can observe themselves, so these helpers talk to the children directly.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::{parse_http, Daemon, HttpResponse, Root};

/// One HTTP/1.1 request to `127.0.0.1:port` with `Connection: close`.
///
/// # Errors
/// Nothing listens, or the exchange fails or takes longer than 10 s.
pub fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> std::io::Result<HttpResponse> {
    exchange(port, method, path, "", body)
}

/// `POST /token` on the lk-backend on `port` with `body`, presenting its
/// mint secret (read from its env file, [`crate::lk::mint_secret_for`]) as
/// a service allowed to mint does.
///
/// # Errors
/// As [`http`].
pub fn post_token(port: u16, body: &Value) -> std::io::Result<HttpResponse> {
    let auth = crate::lk::mint_secret_for(port)
        .map(|s| format!("Authorization: Bearer {s}\r\n"))
        .unwrap_or_default();
    exchange(port, "POST", "/token", &auth, Some(body))
}

fn exchange(port: u16, method: &str, path: &str, headers: &str, body: Option<&Value>) -> std::io::Result<HttpResponse> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    if !out.windows(4).any(|w| w == b"\r\n\r\n") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed before a complete response head",
        ));
    }
    Ok(parse_http(&out))
}

/// Status of `GET path` on loopback, `None` when nothing answers.
pub fn status(port: u16, path: &str) -> Option<u16> {
    http(port, "GET", path, None).ok().map(|r| r.status)
}

/// Whether `pid` is a live process (a zombie is not).
pub fn alive(pid: i32) -> bool {
    stat_fields(pid).is_some_and(|f| !matches!(f.first().map(String::as_str), Some("Z" | "X")))
}

/// Fields of `/proc/<pid>/stat` after the command name: index 0 is field 3
/// (state), 2 is the process group, 3 the session, 19 the start time.
pub fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = text.get(text.rfind(')')? + 1..)?;
    Some(rest.split_ascii_whitespace().map(str::to_string).collect())
}

/// The environment of a live process, one `NAME=value` per entry.
pub fn environ(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .expect("read /proc/<pid>/environ")
        .split(|b| *b == 0)
        .filter(|e| !e.is_empty())
        .map(|e| String::from_utf8_lossy(e).to_string())
        .collect()
}

/// Writes the double's misbehaviour switches; it reads them when it starts.
pub fn set_behaviour(root: &Root, behaviour: &Value) {
    std::fs::write(root.file("double-behaviour.json"), behaviour.to_string()).expect("write double-behaviour.json");
}

/// Removes the double's misbehaviour switches.
pub fn clear_behaviour(root: &Root) {
    match std::fs::remove_file(root.file("double-behaviour.json")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("remove double-behaviour.json: {e}"),
        _ => {}
    }
}

/// The pid `health` reports for `process` (`livekit-server` or `lk-backend`).
pub fn pid_in(health: &Value, process: &str) -> Option<i32> {
    health["processes"][process]["pid"].as_i64().map(|p| p as i32)
}

/// The ports the daemon's config uses, read from the URLs in `health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// livekit-server's HTTP port.
    pub livekit: u16,
    /// lk-backend's HTTP port.
    pub backend: u16,
}

/// See [`Ports`].
pub fn ports(d: &Daemon) -> Ports {
    let h = d.health();
    let port_of = |url: &Value| -> u16 {
        url.as_str()
            .and_then(|u| u.rsplit(':').next())
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .unwrap_or_else(|| panic!("no port in {url}"))
    };
    Ports {
        livekit: port_of(&h["livekit_url"]),
        backend: port_of(&h["backend_url"]),
    }
}

/// Waits until `health` says `ready_for_tokens` and returns that document.
pub fn wait_ready_for_tokens(d: &Daemon, timeout: Duration) -> Value {
    let mut last = Value::Null;
    let found = poll(timeout, || {
        last = d.health();
        (last["ready_for_tokens"] == true).then(|| last.clone())
    });
    found.unwrap_or_else(|| panic!("not ready_for_tokens within {timeout:?}: {last}"))
}

/// A join token for room `r1` minted by the real lk-backend on `port`,
/// presenting its mint secret as a service allowed to mint does.
pub fn backend_token(port: u16) -> String {
    let r = post_token(port, &json!({"room": "r1", "identity": "alice"})).expect("POST /token to lk-backend");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["token"].as_str().expect("token in the answer").to_string()
}

/// `GET /rtc/validate` of livekit-server on `port` for `token`: status and body.
pub fn validate(port: u16, token: &str) -> (u16, String) {
    let r = http(port, "GET", &format!("/rtc/validate?access_token={token}"), None).expect("GET /rtc/validate");
    (r.status, String::from_utf8_lossy(&r.body).to_string())
}

/// Polls `f` until it returns `Some` or `timeout` passes (`None`); like
/// [`crate::wait_for`] but leaves the failure message to the caller.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    let mut delay = Duration::from_millis(1);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::park_timeout(delay);
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

/// (mtime in ns, inode) of a file: both change on any rewrite by rename.
pub fn stamp(p: &Path) -> (i128, u64) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
    (
        i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        m.ino(),
    )
}
