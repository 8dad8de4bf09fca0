//! The socket keeps answering under abuse, and the directories the daemon
//! keeps its state and socket in cannot be used against it (issue 11, and
//! the instance lock of issue 10). Real daemons on real sockets, real
//! files; abusive clients are real connections.
//!
//! Numbers the tests measure (RSS, CPU ticks) are printed; run with
//! `--nocapture` to see them.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use hero_livekit_tests::{
    configure_free_ports, cpu_ticks, get, parse_http, post, read_head, rss_kib, wait_for, websocket, Daemon,
    DaemonOpts, HttpResponse, Root,
};
use serde_json::{json, Value};

/// Whether a test that needs root may run; with `CI` set a test that
/// cannot run fails instead of passing silently.
fn privileged(what: &str) -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set and this test needs root to {what}"
    );
    println!("skipping: needs root to {what}");
    false
}

/// `GET /health` answered with the health document (200 or 503), not a
/// refusal of capacity.
fn assert_health_answers(socket: &Path) {
    let h = get(socket, "/health");
    assert!(h.status == 200 || h.status == 503, "health status {}", h.status);
    assert!(
        h.json()["in_memory_hash"].is_string(),
        "{}",
        String::from_utf8_lossy(&h.body)
    );
    let r = post(
        socket,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "livekitservice.health"}),
    )
    .json();
    assert!(r["result"]["in_memory_hash"].is_string(), "{r}");
}

/// A connection that sent part of a request head and stops there.
fn half_open(socket: &Path) -> UnixStream {
    let mut s = UnixStream::connect(socket).expect("connect");
    s.write_all(b"GET /health HTTP/1.1\r\nHost: loc").expect("write");
    s
}

/// Whether the daemon closed `s` (EOF on a read that times out quickly
/// while it is still open).
fn closed_by_daemon(s: &mut UnixStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(1))).expect("timeout");
    let mut b = [0u8; 64];
    matches!(s.read(&mut b), Ok(0))
        || matches!(s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
}

#[test]
fn idle_websockets_and_half_open_connections_leave_health_answering() {
    let root = Root::new();
    let d = Daemon::start(
        &root,
        DaemonOpts::default().env_var("HERO_LIVEKIT_HEADER_TIMEOUT_MS", 2000),
    );
    assert_health_answers(&d.socket);
    let rss_before = rss_kib(d.pid());
    // The first 64 (the owner's WebSocket budget) are upgraded; the rest
    // are refused at once, naming the limit, and cost nothing.
    let mut sockets = Vec::new();
    for i in 0..200 {
        let (s, status, head) = websocket(&d.socket);
        let want = if i < 64 { 101 } else { 429 };
        assert_eq!(status, want, "websocket {i}: {}", String::from_utf8_lossy(&head));
        sockets.push(s);
    }
    let mut half: Vec<UnixStream> = (0..600).map(|_| half_open(&d.socket)).collect();
    // Before: 100 idle WebSockets made every POST, health included, a 429.
    assert_health_answers(&d.socket);
    let rss_under = rss_kib(d.pid());
    println!("RSS: {rss_before} KiB idle, {rss_under} KiB with 200 idle WebSockets and 600 half-open connections");
    // The header timeout closes every half-open connection.
    wait_for(Duration::from_secs(30), "half-open connections closed", || {
        half.retain_mut(|s| !closed_by_daemon(s));
        half.is_empty().then_some(())
    });
    assert_health_answers(&d.socket);
}

#[test]
fn websockets_have_their_own_budget_named_when_full() {
    let root = Root::new();
    let d = Daemon::start(
        &root,
        DaemonOpts::default().env_var("HERO_LIVEKIT_MAX_WEBSOCKETS_FULL", 4),
    );
    let mut open: Vec<UnixStream> = (0..4)
        .map(|i| {
            let (s, status, _) = websocket(&d.socket);
            assert_eq!(status, 101, "websocket {i}");
            s
        })
        .collect();
    let (_s, status, answer) = websocket(&d.socket);
    assert_eq!(status, 429);
    let answer = parse_http(&answer);
    assert_eq!(answer.json()["error"], "too_many_websockets");
    let msg = answer.json()["message"].as_str().expect("message").to_string();
    assert!(msg.contains("limits.max_websockets_full"), "{msg}");
    // Calls are not subscriptions: they still get through.
    assert_health_answers(&d.socket);
    // A closed session gives its slot back.
    drop(open.pop());
    wait_for(Duration::from_secs(10), "a WebSocket slot freed", || {
        let (s, status, _) = websocket(&d.socket);
        (status == 101).then_some(s)
    });
}

/// Sends a request head announcing a body, then as much of `body_len`
/// bytes as the daemon takes, and returns its answer.
fn send_big_body(socket: &Path, head: &str, body_len: usize) -> HttpResponse {
    let mut s = UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    s.set_write_timeout(Some(Duration::from_secs(5))).expect("timeout");
    s.write_all(head.as_bytes()).expect("head");
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    // The daemon answers and closes without reading it all: a write error
    // (EPIPE) is the expected end.
    while sent < body_len {
        if s.write_all(&chunk).is_err() {
            break;
        }
        sent += chunk.len();
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    parse_http(&out)
}

#[test]
fn a_huge_body_is_refused_before_it_is_read_naming_the_limit() {
    let root = Root::new();
    let d = Daemon::start(&root, DaemonOpts::default());
    assert_health_answers(&d.socket);
    let rss_before = rss_kib(d.pid());
    let declared = 50 << 20;
    let head = format!(
        "POST /rpc HTTP/1.1\r\nHost: l\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    );
    let r = send_big_body(&d.socket, &head, declared);
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"], "body_too_large");
    assert_eq!(
        r.json()["message"],
        "request body exceeds the 1048576-byte limit (limits.max_body_bytes)"
    );
    // Without a Content-Length the limit applies while reading.
    let chunked =
        "POST /rpc HTTP/1.1\r\nHost: l\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut s = UnixStream::connect(&d.socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    s.write_all(chunked.as_bytes()).expect("head");
    let piece = vec![b' '; 64 * 1024];
    for _ in 0..40 {
        let framed = [format!("{:x}\r\n", piece.len()).as_bytes(), &piece, b"\r\n"].concat();
        if s.write_all(&framed).is_err() {
            break;
        }
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let r = parse_http(&out);
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"], "body_too_large");
    let rss_after = rss_kib(d.pid());
    println!("RSS: {rss_before} KiB before, {rss_after} KiB after a refused 50 MiB body and a 2.5 MiB chunked one");
    assert_health_answers(&d.socket);
}

#[test]
fn a_deep_document_and_a_long_batch_are_refused_naming_the_limit() {
    let root = Root::new();
    let d = Daemon::start(&root, DaemonOpts::default());
    let deep = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"livekitservice.health","params":{{"x":{}{}}}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let req = format!(
        "POST /rpc HTTP/1.1\r\nHost: l\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{deep}",
        deep.len()
    );
    let r = parse_http(&hero_livekit_tests::raw(&d.socket, req.as_bytes())).json();
    assert_eq!(r["error"]["code"], -32600, "{r}");
    assert_eq!(r["error"]["data"]["limit"], "max_json_depth");
    assert!(r["error"]["message"]
        .as_str()
        .expect("message")
        .contains("limits.max_json_depth"));

    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "livekitservice.health"});
    let batch = |n: usize| Value::Array(vec![call.clone(); n]);
    let r = post(&d.socket, &batch(65)).json();
    assert_eq!(r["error"]["data"]["limit"], "max_batch_len", "{r}");
    assert!(r["error"]["message"]
        .as_str()
        .expect("message")
        .contains("64-call limit"));
    let ok = post(&d.socket, &batch(64)).json();
    assert_eq!(ok.as_array().map(Vec::len), Some(64), "a batch at the limit is served");
    assert_health_answers(&d.socket);
}

/// A socket directory uid 65534 can traverse, with the socket's group
/// 65534 (read-only peers), and a daemon on it.
fn group_daemon(root: &Root, env: &[(&str, u64)]) -> (tempfile::TempDir, Daemon) {
    let public = tempfile::Builder::new()
        .prefix("hero_livekit_sock")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(public.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let socket = public.path().join("hero_livekit_server/rpc.sock");
    let mut opts = DaemonOpts::default()
        .arg("--socket")
        .arg(socket.display().to_string())
        .arg("--socket-group")
        .arg("65534");
    for (k, v) in env {
        opts = opts.env_var(k, v);
    }
    let d = Daemon::start(root, opts);
    (public, d)
}

/// A client running as `uid`:`uid` that opens `ws` WebSockets, then `half`
/// half-open connections, then one more `GET /health`, prints what each
/// got, and keeps everything open until its stdin closes.
const HOLDER: &str = r#"
import socket,sys
path=sys.argv[1]; ws=int(sys.argv[2]); half=int(sys.argv[3])
UP=b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
held=[]
def answer(s, whole):
    d=b""
    try:
        while whole or b"\r\n\r\n" not in d:
            c=s.recv(65536)
            if not c: break
            d+=c
    except OSError:
        pass
    return d
def status(d):
    p=d.split(b" ",2)
    return p[1].decode() if len(p)>1 else "closed"
def connect(req):
    s=socket.socket(socket.AF_UNIX); s.connect(path)
    try:
        s.sendall(req)
    except OSError:
        pass
    held.append(s)
    return s
out=[]
for i in range(ws):
    out.append("ws "+status(answer(connect(UP), False)))
HALF=b"GET /health HTTP/1.1\r\nHost: l\r\n"
for i in range(half):
    connect(HALF)
# A WebSocket's HTTP slot is freed once the daemon has handed the stream
# over, which may be after its 101 arrived: while a probe is still served,
# the budget had room, and one more half-open connection takes it.
for attempt in range(50):
    d=answer(connect(b"GET /health HTTP/1.1\r\nHost: l\r\nConnection: close\r\n\r\n"), True)
    if half == 0 or b"too_many_connections" in d or b" 403 " in d.split(b"\r\n")[0] or not d:
        break
    connect(HALF)
out.append("extra "+status(d)+" "+d.split(b"\r\n\r\n",1)[-1].decode())
print("\n".join(out)); sys.stdout.flush()
sys.stdin.read()
"#;

/// Runs [`HOLDER`] as `uid`; returns the process (stdin open) and its report.
fn hold_as(uid: u32, socket: &Path, ws: usize, half: usize) -> (std::process::Child, String) {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(HOLDER)
        .arg(socket)
        .arg(ws.to_string())
        .arg(half.to_string())
        .uid(uid)
        .gid(uid)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn python3");
    let mut out = child.stdout.take().expect("stdout");
    let mut report = String::new();
    let mut buf = [0u8; 4096];
    while !report.contains("extra ") || !report.ends_with('\n') {
        match out.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => report.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    (child, report)
}

#[test]
fn read_only_and_refused_peers_cannot_take_the_owners_capacity() {
    if !privileged("run clients as other uids") {
        return;
    }
    let root = Root::new();
    let (_public, d) = group_daemon(
        &root,
        &[
            ("HERO_LIVEKIT_MAX_CONNECTIONS_READ_ONLY", 4),
            ("HERO_LIVEKIT_MAX_WEBSOCKETS_READ_ONLY", 2),
        ],
    );
    // A read-only peer (group 65534) fills its budgets.
    let (mut reader, report) = hold_as(65534, &d.socket, 3, 4);
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(&lines[..3], ["ws 101", "ws 101", "ws 429"], "{report}");
    assert!(lines[3].starts_with("extra 503 "), "{report}");
    assert!(lines[3].contains("limits.max_connections_read_only"), "{report}");
    // The owner keeps both its calls and its subscriptions.
    assert_health_answers(&d.socket);
    let (_ws, status, _) = websocket(&d.socket);
    assert_eq!(status, 101, "the owner's own WebSocket budget is untouched");

    // A peer with no access at all (the operator loosened the socket by
    // hand): answered 403 naming its uid, closed, and no capacity taken.
    let dir = d.socket.parent().expect("socket dir");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).expect("chmod socket");
    let (mut stranger, report) = hold_as(65533, &d.socket, 2, 40);
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(&lines[..2], ["ws 403", "ws 403"], "{report}");
    assert!(
        lines[2].starts_with("extra 403 ") || lines[2] == "extra closed ",
        "answered 403 or, past the refusal budget, closed unanswered: {report}"
    );
    assert_health_answers(&d.socket);
    let (_ws2, status, _) = websocket(&d.socket);
    assert_eq!(status, 101);
    for c in [&mut reader, &mut stranger] {
        drop(c.stdin.take());
        let _ = c.wait();
    }
}

#[test]
fn a_refused_peer_is_told_its_uid() {
    if !privileged("run a client as another uid") {
        return;
    }
    let root = Root::new();
    let (_public, d) = group_daemon(&root, &[]);
    let dir = d.socket.parent().expect("socket dir");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).expect("chmod socket");
    let (mut c, report) = hold_as(65533, &d.socket, 0, 0);
    assert!(report.starts_with("extra 403 "), "{report}");
    assert!(report.contains("uid 65533 may not use this daemon"), "{report}");
    drop(c.stdin.take());
    let _ = c.wait();
}

#[test]
fn accept_errors_back_off_and_the_daemon_answers_once_descriptors_free_up() {
    let root = Root::new();
    let d = Daemon::start(
        &root,
        DaemonOpts::default()
            .max_open_files(64)
            .env_var("HERO_LIVEKIT_HEADER_TIMEOUT_MS", 600_000),
    );
    assert_health_answers(&d.socket);
    // Hold connections until the daemon runs out of descriptors; the
    // listen backlog keeps taking connections it can no longer accept.
    let held: Vec<UnixStream> = (0..90).map(|_| half_open(&d.socket)).collect();
    wait_for(Duration::from_secs(20), "the daemon to hit EMFILE", || {
        d.stderr().contains("accept failed").then_some(())
    });
    // A spinning accept loop burns a whole core; a backing-off one almost
    // nothing. The window is what is measured, not a wait for an event.
    let ticks_before = cpu_ticks(d.pid());
    std::thread::sleep(Duration::from_secs(2));
    let ticks = cpu_ticks(d.pid()) - ticks_before;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    println!("CPU under EMFILE: {ticks} ticks of 1/{hz} s over a 2 s window");
    assert!(ticks < hz / 2, "accept loop spins: {ticks} ticks in 2 s");
    assert_eq!(
        d.stderr().matches("accept failed").count(),
        1,
        "one log line per burst:\n{}",
        d.stderr()
    );
    drop(held);
    wait_for(Duration::from_secs(20), "health answering again", || {
        let mut s = UnixStream::connect(&d.socket).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: l\r\nConnection: close\r\n\r\n")
            .ok()?;
        let head = read_head(&mut s);
        (head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.1 503")).then_some(())
    });
    // The end of a burst is logged by the first accept that comes 5 s
    // (the daemon's quiet period) after its last error.
    wait_for(Duration::from_secs(30), "the end of the burst logged", || {
        assert_health_answers(&d.socket);
        d.stderr().contains("accepting connections again").then_some(())
    });
}

#[test]
fn two_daemons_on_one_root_with_different_sockets_the_second_is_refused() {
    let root = Root::new();
    let d = Daemon::start(&root, DaemonOpts::default());
    let other = root.path().join("other.sock");
    let err = Daemon::try_start(
        &root,
        DaemonOpts::default().arg("--socket").arg(other.display().to_string()),
    )
    .err()
    .expect("second daemon must fail");
    assert!(err.contains(&format!("pid {}", d.pid())), "{err}");
    assert!(err.contains(&d.socket.display().to_string()), "{err}");
    assert!(!err.starts_with("exited with exit status: 0"), "{err}");
    assert!(!other.exists(), "the refused daemon bound nothing");
    assert_health_answers(&d.socket);
    // HERO_SOCKET_DIR differing (a service unit and a shell) is the same.
    let err = Daemon::try_start(
        &root,
        DaemonOpts::default().env_var("HERO_SOCKET_DIR", root.path().join("elsewhere").display()),
    )
    .err()
    .expect("refused");
    assert!(err.contains(&format!("pid {}", d.pid())), "{err}");
    assert_health_answers(&d.socket);
}

#[test]
fn a_socket_in_a_world_writable_sticky_directory_is_refused_and_the_mode_kept() {
    let root = Root::new();
    let shared = root.path().join("shared");
    std::fs::create_dir(&shared).expect("mkdir");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    let socket = shared.join("x.sock");
    let err = Daemon::try_start(
        &root,
        DaemonOpts::default().arg("--socket").arg(socket.display().to_string()),
    )
    .err()
    .expect("refused");
    assert!(err.contains(&shared.display().to_string()), "{err}");
    assert!(err.contains("directory of its own"), "{err}");
    assert_eq!(
        std::fs::metadata(&shared).expect("stat").mode() & 0o7777,
        0o1777,
        "its mode is unchanged"
    );
    // In a directory of its own beneath it, the daemon runs.
    let own = shared.join("hero_livekit_server").join("rpc.sock");
    let d = Daemon::start(
        &root,
        DaemonOpts::default().arg("--socket").arg(own.display().to_string()),
    );
    assert_health_answers(&d.socket);
    assert_eq!(std::fs::metadata(&shared).expect("stat").mode() & 0o7777, 0o1777);
}

#[test]
fn a_state_directory_owned_by_another_uid_or_writable_by_others_is_refused() {
    let root = Root::new();
    let state = root.state();
    std::fs::create_dir_all(&state).expect("mkdir");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let err = Daemon::try_start(&root, DaemonOpts::default()).err().expect("refused");
    assert!(err.contains(&state.display().to_string()), "{err}");
    assert!(
        err.contains("writable by group or others") && err.contains("chmod 0700"),
        "{err}"
    );
    assert_eq!(
        std::fs::metadata(&state).expect("stat").mode() & 0o7777,
        0o777,
        "not changed"
    );

    if privileged("give a directory to another uid") {
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        nix::unistd::chown(&state, Some(nix::unistd::Uid::from_raw(65534)), None).expect("chown");
        let err = Daemon::try_start(&root, DaemonOpts::default()).err().expect("refused");
        assert!(err.contains("owned by uid 65534"), "{err}");
        assert_eq!(std::fs::metadata(&state).expect("stat").uid(), 65534, "not taken over");
    }
}

#[test]
fn a_credential_planted_by_another_uid_is_not_adopted() {
    if !privileged("plant files owned by another uid") {
        return;
    }
    // A valid triple with a known key, written by a daemon of its own.
    let donor = Root::new();
    let d = Daemon::start(&donor, DaemonOpts::default());
    let planted_key = "APIplantedKey01";
    d.ok(
        "livekitservice.configure",
        json!({"api_key": planted_key, "api_secret": "plantedsecretplantedsecretplanted12345"}),
    );
    drop(d);
    let root = Root::new();
    std::fs::create_dir_all(root.state()).expect("mkdir");
    std::fs::set_permissions(root.state(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    for f in hero_livekit_proto::TRIPLE_FILES {
        std::fs::copy(donor.file(f), root.file(f)).expect("plant");
        nix::unistd::chown(&root.file(f), Some(nix::unistd::Uid::from_raw(65534)), None).expect("chown");
    }
    let d = Daemon::start(&root, DaemonOpts::default());
    let h = d.health();
    assert_ne!(h["api_key"], planted_key, "{h}");
    assert_eq!(h["consistent"], true, "{h}");
    for f in hero_livekit_proto::TRIPLE_FILES {
        assert_eq!(
            std::fs::metadata(root.file(f)).expect("stat").uid(),
            nix::unistd::Uid::effective().as_raw(),
            "{f} rewritten as the daemon's own"
        );
    }
}

/// A file outside the root that a symlink in the state directory points at.
struct Victim {
    path: std::path::PathBuf,
    bytes: Vec<u8>,
}

impl Victim {
    fn new(dir: &Path, name: &str) -> Victim {
        let path = dir.join(name);
        let bytes = format!("victim {name}: must never change\n").into_bytes();
        std::fs::write(&path, &bytes).expect("victim");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        Victim { path, bytes }
    }

    fn assert_untouched(&self) {
        assert_eq!(
            std::fs::read(&self.path).expect("victim"),
            self.bytes,
            "{}",
            self.path.display()
        );
        assert_eq!(
            std::fs::metadata(&self.path).expect("stat").mode() & 0o7777,
            0o644,
            "{} mode",
            self.path.display()
        );
    }
}

#[test]
fn symlinks_in_the_state_directory_are_replaced_never_followed() {
    let outside = tempfile::tempdir().expect("tempdir");
    let root = Root::new();
    let state = root.state();
    std::fs::create_dir_all(state.join("logs")).expect("mkdir");
    std::fs::create_dir_all(state.join("children")).expect("mkdir");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let mut victims = Vec::new();
    let links = [
        "runtime.json",
        "livekit.yaml",
        "backend.env",
        "logs/livekit-server.log",
        "logs/lk-backend.log",
        "children/livekit-server.json",
        "children/lk-backend.json",
    ];
    for (i, link) in links.iter().enumerate() {
        let v = Victim::new(outside.path(), &format!("victim{i}"));
        std::os::unix::fs::symlink(&v.path, state.join(link)).expect("symlink");
        victims.push(v);
    }
    let d = Daemon::start(&root, DaemonOpts::double().drift_check_ms(200));
    configure_free_ports(&d);
    d.ok("livekitservice.start", json!({}));
    // A drift heal: the periodic check rewrites a tampered file.
    let yaml = root.file("livekit.yaml");
    std::fs::write(&yaml, b"port: 1\n").expect("tamper");
    wait_for(Duration::from_secs(20), "the drift heal", || {
        (d.health()["consistent"] == true).then_some(())
    });
    // The heal restarts livekit-server, whose record is rewritten once it
    // runs again: wait for every file, then check that none is a link.
    wait_for(Duration::from_secs(20), "every replaced file in place", || {
        links
            .iter()
            .all(|l| std::fs::symlink_metadata(state.join(l)).is_ok_and(|m| m.is_file()))
            .then_some(())
    });
    for v in &victims {
        v.assert_untouched();
    }
}

#[test]
fn a_symlink_in_place_of_the_state_directory_is_refused() {
    let outside = tempfile::tempdir().expect("tempdir");
    let victim_dir = outside.path().join("victim_state");
    std::fs::create_dir(&victim_dir).expect("mkdir");
    let v = Victim::new(&victim_dir, "runtime.json");
    let root = Root::new();
    std::fs::create_dir_all(root.path().join("var")).expect("mkdir");
    std::os::unix::fs::symlink(&victim_dir, root.state()).expect("symlink");
    let err = Daemon::try_start(&root, DaemonOpts::default()).err().expect("refused");
    assert!(err.contains("is a symlink"), "{err}");
    v.assert_untouched();
    let names: Vec<_> = std::fs::read_dir(&victim_dir)
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["runtime.json"], "nothing created in the target");
}

#[test]
fn an_oversized_head_and_a_trickling_body_are_refused() {
    let root = Root::new();
    let d = Daemon::start(
        &root,
        DaemonOpts::default().env_var("HERO_LIVEKIT_BODY_TIMEOUT_MS", 300),
    );
    let big = format!(
        "GET /health HTTP/1.1\r\nHost: l\r\nX-Padding: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let r = parse_http(&hero_livekit_tests::raw(&d.socket, big.as_bytes()));
    assert_eq!(r.status, 431, "a head over limits.max_header_bytes");
    assert_eq!(r.json()["error"], "header_too_large");
    assert!(r.json()["message"]
        .as_str()
        .is_some_and(|m| m.contains("limits.max_header_bytes")));

    let mut s = UnixStream::connect(&d.socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    s.write_all(
        b"POST /rpc HTTP/1.1\r\nHost: l\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"jsonrpc\"",
    )
    .expect("partial body");
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).expect("answered and closed");
    let r = parse_http(&answer);
    assert_eq!(r.status, 408);
    assert_eq!(r.json()["error"], "body_timeout");
    assert!(r.json()["message"]
        .as_str()
        .expect("message")
        .contains("limits.body_timeout"));
    assert_health_answers(&d.socket);
}

#[test]
fn an_invalid_limit_in_the_environment_stops_the_daemon_before_it_touches_the_root() {
    let root = Root::new();
    let err = Daemon::try_start(
        &root,
        DaemonOpts::default().env_var("HERO_LIVEKIT_MAX_BODY_BYTES", "lots"),
    )
    .err()
    .expect("refused");
    assert!(err.contains("HERO_LIVEKIT_MAX_BODY_BYTES"), "{err}");
    assert!(!root.state().exists(), "nothing created under the root");
}

#[test]
fn a_timeout_outside_its_bounds_is_refused_naming_the_field_and_nothing_is_done() {
    let root = Root::new();
    let d = Daemon::start(&root, DaemonOpts::default());
    for (method, ms) in [
        ("livekitservice.stop", 0u64),
        ("livekitservice.stop", u64::MAX),
        ("livekitservice.start", 0),
        ("livekitservice.restart", 600_001),
    ] {
        let r = d.call(method, serde_json::json!({"timeout_ms": ms}));
        assert_eq!(r["error"]["code"], -32602, "{method} {ms}: {r}");
        assert_eq!(r["error"]["data"]["field"], "timeout_ms", "{method} {ms}: {r}");
        assert!(
            r["error"]["message"].as_str().is_some_and(|m| m.contains("1-600000")),
            "{method} {ms}: {r}"
        );
    }
    for (method, ms) in [("livekitservice.stop", 0u64), ("livekitservice.restart", 600_001)] {
        let r = d.call(method, serde_json::json!({"drain_timeout_ms": ms}));
        assert_eq!(r["error"]["code"], -32602, "{method} {ms}: {r}");
        assert_eq!(r["error"]["data"]["field"], "drain_timeout_ms", "{method} {ms}: {r}");
    }
    let h = d.health();
    assert_eq!(h["processes"]["livekit-server"]["state"], "stopped", "{h}");
}

#[test]
fn event_subscriptions_have_a_total_limit_named_when_reached_and_calls_go_on() {
    let root = Root::new();
    let d = Daemon::start(
        &root,
        DaemonOpts::default().env_var("HERO_LIVEKIT_MAX_SUBSCRIPTIONS_TOTAL", 3),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = hero_livekit_client::Client::new(&d.socket);
        let mut held = Vec::new();
        for i in 0..3 {
            held.push(
                client
                    .subscribe_events()
                    .await
                    .unwrap_or_else(|e| panic!("subscription {i}: {e}")),
            );
        }
        let refused = client
            .subscribe_events()
            .await
            .err()
            .expect("a fourth subscription is refused");
        let text = refused.to_string();
        assert!(text.contains("limits.max_subscriptions_total"), "{text}");
        assert_health_answers(&d.socket);
        // A place freed (the daemon sees the connection close) is a place
        // to take again: polled until a deadline.
        drop(held.pop());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if client.subscribe_events().await.is_ok() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the freed place was never given again"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}

#[test]
fn a_head_that_never_completes_is_answered_408_naming_the_limit_then_closed() {
    let root = Root::new();
    let d = Daemon::start(
        &root,
        DaemonOpts::default().env_var("HERO_LIVEKIT_HEADER_TIMEOUT_MS", 300),
    );
    let mut s = half_open(&d.socket);
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).expect("answered and closed");
    let r = parse_http(&answer);
    assert_eq!(r.status, 408);
    assert_eq!(r.json()["error"], "header_timeout");
    assert!(r.json()["message"]
        .as_str()
        .is_some_and(|m| m.contains("limits.header_timeout")));
    assert_health_answers(&d.socket);
}

/// jsonrpsee logs whole request bodies at TRACE; a `configure` body holds the
/// API secret and the Redis password. Whatever RUST_LOG says, neither reaches
/// the daemon's log, through the front's own path (a single call) or
/// jsonrpsee's (a batch).
#[test]
fn no_secret_reaches_the_log_at_rust_log_trace() {
    let root = Root::new();
    let d = Daemon::start(&root, DaemonOpts::double().env_var("RUST_LOG", "trace"));
    let secret = "TraceMarkerSecret0123456789abcdefghijklmnop";
    let password = "TraceMarkerRedisPassword";
    let single = d.call(
        "livekitservice.configure",
        json!({"api_secret": secret, "redis_address": "127.0.0.1:1", "redis_password": password}),
    );
    assert!(single.get("result").is_some(), "{single}");
    let batch = post(
        &d.socket,
        &json!([{"jsonrpc": "2.0", "id": 7, "method": "livekitservice.configure",
                 "params": {"api_secret": format!("{secret}X"), "redis_password": format!("{password}X")}}]),
    );
    assert_eq!(batch.status, 200, "{}", String::from_utf8_lossy(&batch.body));
    let log = d.stderr();
    // The log is really at TRACE: the daemon's own verbose lines are there.
    assert!(log.contains("TRACE") || log.contains("DEBUG"), "{log}");
    for s in [secret, password] {
        assert!(!log.contains(s), "{s} in the daemon's log:\n{log}");
    }
}
