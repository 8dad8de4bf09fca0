//! Talking to the supervised children the way their users do: lk-backend's
//! `POST /token`, livekit-server's `/rtc/validate`, and reading the
//! credential livekit-server was given straight from `livekit.yaml`.
//!
//! Plain HTTP/1.1 over `std::net::TcpStream` with `Connection: close`, so a
//! test sees exactly the status and bytes a browser or a script would.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::{parse_http, HttpResponse};

/// `host:port` of an `http://` or `ws://` URL such as `health`'s
/// `backend_url` or `livekit_url`. The children bind loopback in the tests,
/// so the host is replaced by 127.0.0.1 (the domain may be a public name).
pub fn loopback_addr(url: &str) -> String {
    let port = url
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no port in {url}"));
    format!("127.0.0.1:{port}")
}

/// Sends `request` to `addr` and reads the answer until the peer closes.
/// A write error is ignored and whatever arrived is still read: a server may
/// answer (413) and close before it has read a large body, and the answer is
/// what the test checks.
pub fn http_tcp(addr: &str, request: &[u8]) -> HttpResponse {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("read timeout");
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // A reset after the answer arrived ends the read; the bytes are kept.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !out.is_empty() => break,
            Err(e) => panic!("read from {addr}: {e} (got {} bytes)", out.len()),
        }
    }
    parse_http(&out)
}

/// `POST /token` on lk-backend with `body` sent verbatim (so tests can send
/// malformed JSON), `Content-Type: application/json`, presenting the mint
/// secret of the lk-backend listening there (see [`mint_secret_for`]).
pub fn post_token_raw(backend_url: &str, body: &[u8]) -> HttpResponse {
    let addr = loopback_addr(backend_url);
    let port = addr.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0);
    post_token_as(backend_url, mint_secret_for(port).as_deref(), body)
}

/// `POST /token` with `bearer` as `Authorization: Bearer <it>`, or without
/// an `Authorization` header at all.
pub fn post_token_as(backend_url: &str, bearer: Option<&str>, body: &[u8]) -> HttpResponse {
    let auth = bearer
        .map(|b| format!("Authorization: Bearer {b}\r\n"))
        .unwrap_or_default();
    let mut req = format!(
        "POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    http_tcp(&loopback_addr(backend_url), &req)
}

/// The mint secret of the lk-backend serving `port`, as a service on the
/// host with the daemon's uid can read it: the `MINT_SECRET` of the env
/// file a running `lk-backend --env-file FILE` was given, whose `PORT` is
/// `port`, in this process's network namespace (the one its 127.0.0.1 is
/// in: tests run daemons in namespaces of their own, each with its 7890).
/// Read afresh on each call, so a rotation is followed. `None` when no such
/// process or file is found (the request then goes without one).
pub fn mint_secret_for(port: u16) -> Option<String> {
    let own_net = std::fs::read_link("/proc/self/ns/net").ok();
    let entries = std::fs::read_dir("/proc").ok()?;
    entries.flatten().find_map(|e| {
        e.file_name().to_str()?.parse::<u32>().ok()?;
        if own_net.is_some() && std::fs::read_link(e.path().join("ns/net")).ok() != own_net {
            return None;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if !args.first()?.ends_with(b"lk-backend") {
            return None;
        }
        let file = args.windows(2).find(|w| w[0] == b"--env-file")?[1];
        let text = std::fs::read_to_string(std::str::from_utf8(file).ok()?).ok()?;
        let vars = hero_livekit_proto::envfile::parse(&text).ok()?;
        let get = |k| hero_livekit_proto::envfile::get(&vars, k);
        (get("PORT")?.parse::<u16>().ok()? == port).then(|| get("MINT_SECRET").map(str::to_string))?
    })
}

/// A token for `room`/`identity` from lk-backend; fails the test unless 200.
/// Returns the whole response `{token, url, api_key, expires_at}`.
pub fn mint(backend_url: &str, room: &str, identity: &str) -> Value {
    let r = post_token_raw(
        backend_url,
        json!({"room": room, "identity": identity}).to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "POST /token: {}", String::from_utf8_lossy(&r.body));
    r.json()
}

/// `GET /rtc/validate?access_token=<token>` on livekit-server: its status
/// and plain-text body (`success`, `invalid API key`, ...).
pub fn rtc_validate(livekit_url: &str, token: &str) -> (u16, String) {
    let req =
        format!("GET /rtc/validate?access_token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let r = http_tcp(&loopback_addr(livekit_url), req.as_bytes());
    (r.status, String::from_utf8_lossy(&r.body).trim().to_string())
}

/// The single `keys:` entry of a `livekit.yaml`, parsed with a YAML parser:
/// the credential livekit-server reads, independent of the daemon's view.
pub fn yaml_credential(livekit_yaml: &Path) -> (String, String) {
    let text = std::fs::read_to_string(livekit_yaml).expect("read livekit.yaml");
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("livekit.yaml is YAML");
    let keys = doc
        .get("keys")
        .and_then(serde_yaml::Value::as_mapping)
        .expect("livekit.yaml has a keys map");
    assert_eq!(keys.len(), 1, "exactly one keys entry: {keys:?}");
    let (k, v) = keys.iter().next().expect("one entry");
    (
        k.as_str().expect("key is a string").to_string(),
        v.as_str().expect("secret is a string").to_string(),
    )
}

/// `LIVEKIT_API_KEY` and `LIVEKIT_API_SECRET` of a `backend.env`, read with
/// the same parser lk-backend uses.
pub fn env_credential(backend_env: &Path) -> (String, String) {
    let text = std::fs::read_to_string(backend_env).expect("read backend.env");
    let vars = hero_livekit_proto::envfile::parse(&text).expect("backend.env parses");
    let get = |k| {
        hero_livekit_proto::envfile::get(&vars, k)
            .unwrap_or_else(|| panic!("{k} in backend.env"))
            .to_string()
    };
    (get("LIVEKIT_API_KEY"), get("LIVEKIT_API_SECRET"))
}

/// `api_key` and `api_secret` of a `runtime.json`.
pub fn json_credential(runtime_json: &Path) -> (String, String) {
    let v: Value =
        serde_json::from_slice(&std::fs::read(runtime_json).expect("read runtime.json")).expect("runtime.json is JSON");
    let get = |k: &str| {
        v[k].as_str()
            .unwrap_or_else(|| panic!("{k} in runtime.json"))
            .to_string()
    };
    (get("api_key"), get("api_secret"))
}

/// The Python interpreter for [`verify_with_python`]: `LK_PYTHON`, else
/// `python3`.
pub fn python() -> String {
    std::env::var("LK_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Verifies `token` with LiveKit's Python SDK (`tests/python/verify_token.py`),
/// the secret passed on stdin so it never shows in the process list. Returns
/// the script's exit code (0 verified, 1 refused, 2 usage or missing
/// package) and its JSON answer.
pub fn verify_with_python(key: &str, secret: &str, token: &str) -> (i32, Value) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/verify_token.py");
    let mut child = Command::new(python())
        .arg(script)
        .env_remove("LIVEKIT_API_KEY")
        .env_remove("LIVEKIT_API_SECRET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run python3 (LK_PYTHON names another interpreter)");
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
