//! Harness for the end-to-end tests: real daemons on real sockets, real
//! child processes, real files.
//!
//! Each test gets its own root directory and its own free ports so tests
//! run in parallel without touching each other. Dropping a [`Daemon`] kills
//! the daemon and every child it recorded, so a failing test leaves no
//! process behind.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub mod cluster;
pub mod lk;
pub mod netns;
pub mod observe;
pub mod participant;
pub mod real;
mod squatter;

pub use squatter::Squatter;

/// A built binary of this workspace (`target/<profile>/<name>`). The test
/// command builds every binary before running the tests.
///
/// `HERO_LIVEKIT_DAEMON_BIN` names another daemon binary to drive, so that
/// the benchmarks can measure the shipped build (`--profile dist`, whole-
/// program optimized) beside everything else built in release.
pub fn bin(name: &str) -> PathBuf {
    if name == "hero_livekit_server" {
        if let Some(p) = std::env::var_os("HERO_LIVEKIT_DAEMON_BIN") {
            return PathBuf::from(p);
        }
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> (a test) or target/<profile>/<bench> (a
    // benchmark binary) -> target/<profile>/<name>
    let mut dir = exe.parent().expect("executable dir");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().expect("target profile dir");
    }
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} is not built: run `cargo build --workspace --bins` first",
        p.display()
    );
    p
}

/// A TCP port free right now, never handed out twice in this test process.
///
/// Chosen below the kernel's ephemeral range (32768-60999 by default), so
/// the many short loopback connections of the tests (probes, clients) can
/// never take it as their local port between this call and the child's
/// bind; and remembered, so two tests running in parallel never configure
/// the same port.
pub fn free_port() -> u16 {
    use std::sync::Mutex;
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
    let mut x = seed | 1;
    for _ in 0..10_000 {
        // xorshift: cheap, and enough to spread tests over the range.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = 20_000 + (x % 12_000) as u16;
        if given.contains(&port) {
            continue;
        }
        if bind_probe(port) {
            given.push(port);
            return port;
        }
    }
    panic!("no free TCP port found in 20000-31999");
}

/// Whether a bind to `port` on every IPv4 address succeeds, probed with
/// `SO_REUSEADDR` and without listening. A listening probe would hold the
/// port itself, and a daemon forked by a parallel test at that moment keeps
/// a copy of it until its exec, long enough for the child meant to use the
/// port to fail its bind. A non-listening probe still collides with any
/// listener.
fn bind_probe(port: u16) -> bool {
    let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
        return false;
    };
    socket.set_reuseaddr(true).is_ok() && socket.bind((std::net::Ipv4Addr::UNSPECIFIED, port).into()).is_ok()
}

/// `health` over a new connection, `None` when the daemon does not answer
/// (a chaos run kills it now and then): unlike [`rpc`], never panics.
pub fn try_health(socket: &Path) -> Option<Value> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "livekitservice.health", "params": {}}).to_string();
    let request = format!(
        "POST /rpc HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(request.as_bytes()).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let split = out.windows(4).position(|w| w == b"\r\n\r\n")?;
    let v: Value = serde_json::from_slice(&out[split + 4..]).ok()?;
    v.get("result").cloned()
}

/// Polls `f` until it returns `Some` or `timeout` passes; the interval grows
/// from 1 ms to 50 ms so fast events are seen fast.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(1);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::park_timeout(delay);
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

/// A test root directory, removed at the end.
pub struct Root {
    pub dir: tempfile::TempDir,
}

impl Root {
    pub fn new() -> Root {
        Root {
            dir: tempfile::Builder::new()
                .prefix("hero_livekit_e2e")
                .tempdir()
                .expect("tempdir"),
        }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn socket(&self) -> PathBuf {
        self.path().join("var/sockets/hero_livekit_server/rpc.sock")
    }
    pub fn state(&self) -> PathBuf {
        self.path().join("var/hero_livekit")
    }
    pub fn file(&self, name: &str) -> PathBuf {
        self.state().join(name)
    }
}

impl Default for Root {
    fn default() -> Self {
        Root::new()
    }
}

/// How to start a daemon.
#[derive(Clone, Default)]
pub struct DaemonOpts {
    pub extra_args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Use the livekit-server test double as the livekit binary.
    pub with_double: bool,
}

/// Set in [`DaemonOpts::env`] by [`DaemonOpts::max_open_files`]: the
/// daemon's `RLIMIT_NOFILE`, applied by [`Daemon::try_start`] before the
/// exec. (An entry of `env` rather than a field, so that tests spelling the
/// struct out keep compiling.)
const NOFILE_VAR: &str = "HERO_LIVEKIT_TEST_RLIMIT_NOFILE";

/// Set in [`DaemonOpts::env`] by [`DaemonOpts::in_netns`]: the network
/// namespace the daemon (and so its children) runs in.
const NETNS_VAR: &str = "HERO_LIVEKIT_TEST_NETNS";

impl DaemonOpts {
    /// With the livekit-server test double as the livekit binary.
    pub fn double() -> DaemonOpts {
        DaemonOpts {
            with_double: true,
            ..Default::default()
        }
    }

    /// With the real livekit-server v1.13.5 as the livekit binary
    /// ([`real::real_livekit_bin`]); `None` when it is not built and this is
    /// not CI, so that the test returns early.
    pub fn real() -> Option<DaemonOpts> {
        let bin = real::real_livekit_bin()?;
        Some(
            DaemonOpts::default()
                .arg("--livekit-bin")
                .arg(bin.display().to_string()),
        )
    }

    /// The period of the daemon's full drift check (`HERO_LIVEKIT_DRIFT_CHECK_MS`).
    pub fn drift_check_ms(mut self, ms: u64) -> DaemonOpts {
        self.env.push(("HERO_LIVEKIT_DRIFT_CHECK_MS".into(), ms.to_string()));
        self
    }

    /// A drift check too rare to repair a test's hand-made drift behind its
    /// back, so that the call under test is what heals.
    pub fn no_drift_check(self) -> DaemonOpts {
        self.drift_check_ms(600_000)
    }

    /// One more environment variable for the daemon (a limit override...).
    pub fn env_var(mut self, key: &str, value: impl ToString) -> DaemonOpts {
        self.env.push((key.into(), value.to_string()));
        self
    }

    /// One more command-line argument.
    pub fn arg(mut self, a: impl Into<String>) -> DaemonOpts {
        self.extra_args.push(a.into());
        self
    }

    /// The daemon runs with at most `n` open descriptors (soft and hard
    /// limit, so it cannot raise them).
    pub fn max_open_files(self, n: u64) -> DaemonOpts {
        self.env_var(NOFILE_VAR, n)
    }

    /// The daemon runs inside `ns` (started through `ip netns exec`), and
    /// so do the children it starts.
    pub fn in_netns(self, ns: &netns::Netns) -> DaemonOpts {
        self.env_var(NETNS_VAR, ns.name())
    }
}

/// A running `hero_livekit_server`.
pub struct Daemon {
    pub child: Option<Child>,
    pub socket: PathBuf,
    pub root: PathBuf,
    pub stderr_path: PathBuf,
}

impl Daemon {
    /// Starts a daemon on `root` and waits until its socket answers.
    pub fn start(root: &Root, opts: DaemonOpts) -> Daemon {
        Self::try_start(root, opts).unwrap_or_else(|e| panic!("daemon did not start: {e}"))
    }

    /// Starts a daemon; `Err` carries its stderr when it exits instead.
    pub fn try_start(root: &Root, opts: DaemonOpts) -> Result<Daemon, String> {
        let stderr_path = root.path().join(format!("daemon-{}.stderr", unique()));
        let stderr = std::fs::File::create(&stderr_path).map_err(|e| e.to_string())?;
        let netns = opts.env.iter().find(|(k, _)| k == NETNS_VAR).map(|(_, v)| v.clone());
        let mut cmd = match &netns {
            Some(name) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", name]).arg(bin("hero_livekit_server"));
                c
            }
            None => Command::new(bin("hero_livekit_server")),
        };
        cmd.arg("--root").arg(root.path());
        cmd.arg("--backend-bin").arg(bin("lk-backend"));
        if opts.with_double {
            cmd.arg("--livekit-bin").arg(bin("livekit-server-double"));
        }
        cmd.args(&opts.extra_args);
        cmd.env("RUST_LOG", "info").env_remove("NOTIFY_SOCKET");
        for (k, v) in opts.env.iter().filter(|(k, _)| k != NETNS_VAR) {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr);
        let nofile = opts
            .env
            .iter()
            .find(|(k, _)| k == NOFILE_VAR)
            .and_then(|(_, v)| v.parse::<u64>().ok());
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe and touches only the
            // forked child's own limits.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n as libc::rlim_t,
                        rlim_max: n as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().map_err(|e| e.to_string())?;
        let socket = opts
            .extra_args
            .iter()
            .position(|a| a == "--socket")
            .and_then(|i| opts.extra_args.get(i + 1))
            .map(PathBuf::from)
            .unwrap_or_else(|| root.socket());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                return Err(format!("exited with {status}: {err}"));
            }
            // Ready when the socket answers *and* the peer is this daemon
            // (another instance may already serve the same path).
            if let Ok(s) = UnixStream::connect(&socket) {
                let peer = nix::sys::socket::getsockopt(&s, nix::sys::socket::sockopt::PeerCredentials);
                if peer.is_ok_and(|c| c.pid() == child.id() as i32) {
                    break;
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err("socket did not appear within 20 s".into());
            }
            std::thread::park_timeout(Duration::from_millis(5));
        }
        Ok(Daemon {
            child: Some(child),
            socket,
            root: root.path().to_path_buf(),
            stderr_path,
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).expect("daemon running")
    }

    /// Calls a method; returns the whole JSON-RPC response object.
    pub fn call(&self, method: &str, params: Value) -> Value {
        rpc(&self.socket, method, params)
    }

    /// Calls a method and returns its `result`, failing the test on an error.
    pub fn ok(&self, method: &str, params: Value) -> Value {
        let r = self.call(method, params);
        assert!(r.get("error").is_none(), "{method} failed: {r}");
        r["result"].clone()
    }

    pub fn health(&self) -> Value {
        self.ok("livekitservice.health", json!({}))
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).expect("signal daemon");
    }

    /// Waits for the daemon process to exit and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("daemon running");
        let status = wait_for(timeout, "daemon exit", || child.try_wait().ok().flatten());
        self.child = None;
        status
    }

    /// Kills the daemon with SIGKILL (children are left running).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        kill_recorded_children(&self.root);
    }
}

/// Kills (SIGKILL, whole process group) every child recorded under `root`.
pub fn kill_recorded_children(root: &Path) {
    let dir = root.join("var/hero_livekit/children");
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    for e in entries.flatten() {
        if let Ok(text) = std::fs::read_to_string(e.path()) {
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                if let Some(pid) = v.get("pid").and_then(Value::as_i64) {
                    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGKILL);
                }
            }
        }
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Sends raw bytes on the socket and returns everything the daemon answers
/// until it closes the connection (send `Connection: close`).
pub fn raw(socket: &Path, request: &[u8]) -> Vec<u8> {
    let mut s = UnixStream::connect(socket).expect("connect to daemon socket");
    s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    s.write_all(request).expect("write request");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read response");
    out
}

/// An HTTP response split into status, headers and body.
pub struct HttpResponse {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Parses a raw HTTP/1.1 response (content-length or chunked body).
pub fn parse_http(raw: &[u8]) -> HttpResponse {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let rest = &raw[split + 4..];
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    HttpResponse {
        status,
        headers: head,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        out.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
    out
}

/// `GET path` on the socket.
pub fn get(socket: &Path, path: &str) -> HttpResponse {
    parse_http(&raw(
        socket,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    ))
}

/// `POST /rpc` with a JSON body on the socket.
pub fn post(socket: &Path, body: &Value) -> HttpResponse {
    let body = body.to_string();
    let req = format!(
        "POST /rpc HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        body
    );
    parse_http(&raw(socket, req.as_bytes()))
}

/// One JSON-RPC call over raw HTTP; returns the response object.
pub fn rpc(socket: &Path, method: &str, params: Value) -> Value {
    post(
        socket,
        &json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}),
    )
    .json()
}

/// Configures a daemon with free ports so parallel tests do not collide.
pub fn configure_free_ports(d: &Daemon) -> Value {
    let (p, t, b) = (free_port(), free_port(), free_port());
    d.ok(
        "livekitservice.configure",
        json!({"port": p, "rtc_tcp_port": t, "backend_port": b}),
    )
}

/// sha256 hex of a file's bytes.
pub fn sha256_file(p: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(p).expect("read file")))
}

/// The request that opens a WebSocket on the socket (RFC 6455 handshake).
pub const WEBSOCKET_UPGRADE: &str = "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Reads from `s` until the end of an HTTP response head (or EOF) and
/// returns what was read.
pub fn read_head(s: &mut UnixStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

/// Opens a WebSocket on `socket` and returns the open stream with the
/// status of the handshake's answer (101 when it was accepted) and the
/// whole answer (head, and body when it was refused).
pub fn websocket(socket: &Path) -> (UnixStream, u16, Vec<u8>) {
    let mut s = UnixStream::connect(socket).expect("connect to daemon socket");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    s.write_all(WEBSOCKET_UPGRADE.as_bytes()).expect("write upgrade");
    let mut head = read_head(&mut s);
    // Only the status line: a WebSocket frame (a ping) may follow the head
    // in the same read.
    let line_end = head.windows(2).position(|w| w == b"\r\n").unwrap_or(head.len());
    let status = std::str::from_utf8(&head[..line_end])
        .ok()
        .and_then(|h| h.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    if status != 101 {
        // A refusal closes the connection: its body follows the head.
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        head.extend_from_slice(&rest);
    }
    (s, status, head)
}

/// Resident set size of `pid` in KiB (`VmRSS` of /proc/<pid>/status).
pub fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("VmRSS line")
}

/// CPU time of `pid` so far (user + system), in clock ticks.
pub fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // Fields after the command (which may hold spaces) start after ')'.
    let rest = &stat[stat.rfind(')').expect("comm end") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the full line: 12 and 13 here.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// Number of open descriptors of `pid`.
pub fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A daemon on `root` supervising both children (the livekit-server test
/// double and lk-backend) on free ports, ready for tokens: what the
/// benchmarks measure against.
pub fn supervising_daemon(root: &Root) -> Daemon {
    let d = Daemon::start(root, DaemonOpts::double());
    configure_free_ports(&d);
    d.ok("livekitservice.start", json!({}));
    assert_eq!(
        d.health()["ready_for_tokens"],
        true,
        "bench a healthy, supervising daemon"
    );
    d
}

/// One keep-alive HTTP/1.1 connection on a Unix socket, as the benchmarks'
/// clients hold it.
pub type SocketSender = hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>;

/// Opens a [`SocketSender`] on `socket`; its connection is driven by a task
/// of the current runtime.
pub async fn connect_keep_alive(socket: &Path) -> SocketSender {
    let stream = tokio::net::UnixStream::connect(socket).await.expect("connect");
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    send
}
