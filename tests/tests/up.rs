//! `hero_livekit up` end to end: the real CLI binary starts the real daemon
//! (found next to it in target/), which installs the livekit-server test
//! double from a local release tarball, configures, starts and supervises
//! both children. Also: how the CLI treats a daemon older than itself, with
//! a fake daemon on the socket.
//!
//! Every test owns an [`Env`] whose drop kills every process that mentions
//! its root on the command line (the daemon `up` started and both
//! children), whether the test passed or not.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use hero_livekit_tests::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

/// Generous: a loaded 2-core machine runs several daemons at once.
const PATIENCE: Duration = Duration::from_secs(60);

/// One test's world: a root, free ports, and the install source.
struct Env {
    root: Root,
    port: u16,
    rtc_tcp_port: u16,
    backend_port: u16,
    /// A bare binary (the test double) unless [`Env::with_release_tarball`].
    source: PathBuf,
    _src: Option<tempfile::TempDir>,
}

/// What one CLI invocation did.
struct Run {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit: {}\n--- stdout\n{}\n--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            status: o.status,
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Env {
    /// Installs from the test double as a bare binary, which `install`
    /// accepts like a tarball.
    fn new() -> Env {
        Env {
            root: Root::new(),
            port: free_port(),
            rtc_tcp_port: free_port(),
            backend_port: free_port(),
            source: bin("livekit-server-double"),
            _src: None,
        }
    }

    /// Installs from a release tarball built around the test double, the
    /// shape of LiveKit's own releases.
    fn with_release_tarball() -> Env {
        let src = tempfile::Builder::new()
            .prefix("hero_livekit_release")
            .tempdir()
            .expect("tempdir for the release tarball");
        let tarball = src.path().join("livekit_test_linux_amd64.tar.gz");
        write_release_tarball(&tarball, &bin("livekit-server-double"));
        Env {
            root: Root::new(),
            port: free_port(),
            rtc_tcp_port: free_port(),
            backend_port: free_port(),
            source: tarball,
            _src: Some(src),
        }
    }

    /// Runs `hero_livekit --root <root> <args>` with an environment that
    /// cannot point it (or the daemon it starts) elsewhere.
    fn cli(&self, args: &[&str]) -> Run {
        self.cli_in(&std::env::current_dir().expect("current directory"), args)
    }

    /// [`Env::cli`] run in the working directory `cwd`.
    fn cli_in(&self, cwd: &Path, args: &[&str]) -> Run {
        Command::new(bin("hero_livekit"))
            .current_dir(cwd)
            .arg("--root")
            .arg(self.root.path())
            .args(args)
            .env_remove("PATH_ROOT")
            .env_remove("HERO_SOCKET_DIR")
            .env_remove("NOTIFY_SOCKET")
            .env("RUST_LOG", "info")
            .output()
            .expect("run hero_livekit")
            .into()
    }

    /// `up` with the local tarball, this test's ports, and `extra` flags.
    fn up(&self, extra: &[&str]) -> Run {
        let (p, t, b) = (
            self.port.to_string(),
            self.rtc_tcp_port.to_string(),
            self.backend_port.to_string(),
        );
        let source = self.source.display().to_string();
        let mut args = vec![
            "up",
            "--source",
            &source,
            "--port",
            &p,
            "--rtc-tcp-port",
            &t,
            "--backend-port",
            &b,
            "--timeout-ms",
            "60000",
        ];
        args.extend_from_slice(extra);
        self.cli(&args)
    }

    /// `up` that must succeed; fails the test with the CLI's output and
    /// the daemon's log otherwise.
    fn up_ok(&self, extra: &[&str]) -> Run {
        let r = self.up(extra);
        assert!(
            r.status.success(),
            "up failed:\n{r}\n--- daemon log\n{}",
            self.daemon_log()
        );
        r
    }

    fn health(&self) -> Value {
        let r = rpc(&self.root.socket(), "livekitservice.health", json!({}));
        assert!(r.get("error").is_none(), "health failed: {r}");
        r["result"].clone()
    }

    /// The pid of the process answering on the socket, by its peer
    /// credentials: the daemon that really serves, not one that merely runs.
    fn serving_daemon(&self) -> Option<i32> {
        let s = UnixStream::connect(self.root.socket()).ok()?;
        let cred = nix::sys::socket::getsockopt(&s, nix::sys::socket::sockopt::PeerCredentials).ok()?;
        Some(cred.pid())
    }

    /// Live `hero_livekit_server` processes working on this root.
    fn daemons(&self) -> Vec<i32> {
        processes_mentioning(self.root.path())
            .into_iter()
            .filter(|(_, argv)| argv.first().is_some_and(|a| a.ends_with("hero_livekit_server")))
            .map(|(pid, _)| pid)
            .collect()
    }

    /// pid of each child as health reports it.
    fn child_pids(&self) -> BTreeMap<String, i64> {
        let h = self.health();
        ["livekit-server", "lk-backend"]
            .iter()
            .map(|n| {
                let pid = h["processes"][n]["pid"]
                    .as_i64()
                    .unwrap_or_else(|| panic!("{n} has a pid: {h}"));
                (n.to_string(), pid)
            })
            .collect()
    }

    /// Content, mtime and inode of every file `up` writes: the triple, the
    /// install record, the binary, and the child records.
    fn stamps(&self) -> BTreeMap<PathBuf, Stamp> {
        let mut files: Vec<PathBuf> = hero_livekit_proto::TRIPLE_FILES
            .iter()
            .map(|f| self.root.file(f))
            .collect();
        files.push(self.root.file("install.json"));
        files.push(self.root.path().join("bin/livekit-server"));
        files.push(self.root.file("children/livekit-server.json"));
        files.push(self.root.file("children/lk-backend.json"));
        files.into_iter().map(|p| (p.clone(), Stamp::of(&p))).collect()
    }

    fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.root.file("logs/hero_livekit_server.log")).unwrap_or_default()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // The daemon first, so that it cannot restart a child killed below.
        let daemons = self.daemons();
        for pid in &daemons {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while daemons.iter().any(|p| alive(*p)) && std::time::Instant::now() < deadline {
            std::thread::park_timeout(Duration::from_millis(5));
        }
        kill_recorded_children(self.root.path());
        for (pid, _) in processes_mentioning(self.root.path()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// A file as `up` must leave it when it has nothing to do.
#[derive(Debug, PartialEq, Eq)]
struct Stamp {
    bytes: Vec<u8>,
    mtime: (i64, i64),
    inode: u64,
}

impl Stamp {
    fn of(p: &Path) -> Stamp {
        let meta = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        Stamp {
            bytes: std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            inode: meta.ino(),
        }
    }
}

/// A release tarball like LiveKit's: `livekit-server` (here the test
/// double) beside the license and readme.
fn write_release_tarball(path: &Path, binary: &Path) {
    let file = std::fs::File::create(path).expect("create tarball");
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (name, text) in [("LICENSE", "Apache-2.0\n"), ("README.md", "# LiveKit\n")] {
        let mut h = tar::Header::new_gnu();
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, text.as_bytes()).expect("append text");
    }
    let bytes = std::fs::read(binary).expect("read the double");
    let mut h = tar::Header::new_gnu();
    h.set_size(bytes.len() as u64);
    h.set_mode(0o755);
    h.set_cksum();
    tar.append_data(&mut h, "livekit-server", bytes.as_slice())
        .expect("append binary");
    tar.into_inner()
        .expect("finish tar")
        .finish()
        .expect("finish gzip")
        .sync_all()
        .expect("sync tarball");
}

/// Live (not zombie) processes whose command line mentions `needle`, with
/// their argv.
fn processes_mentioning(needle: &Path) -> Vec<(i32, Vec<String>)> {
    let needle = needle.display().to_string();
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me && alive(*pid))
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let argv: Vec<String> = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            argv.iter().any(|a| a.contains(&needle)).then_some((pid, argv))
        })
        .collect()
}

/// Whether `pid` exists and is not a zombie (a killed daemon is reparented
/// to an init that may be slow to reap it). A zombie main thread does not
/// mean the process let go of its files: its other threads may still be
/// exiting, holding the socket. `up` must cope with that, so the test waits
/// no longer than this.
fn alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name, which may hold spaces.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state != "Z" && state != "X")
}

/// `GET http://127.0.0.1:<port><path>` over plain TCP: status and body.
fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to livekit-server");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let resp = parse_http(&raw);
    (resp.status, String::from_utf8_lossy(&resp.body).into_owned())
}

#[test]
fn up_from_an_empty_root_installs_configures_starts_and_is_ready_for_tokens() {
    let env = Env::with_release_tarball();
    assert!(!env.root.path().join("var").exists(), "the root starts empty");

    let r = env.up_ok(&[]);

    let h = env.health();
    assert_eq!(h["ready_for_tokens"], true, "{h}");
    assert_eq!(h["consistent"], true, "{h}");
    let livekit_url = format!("ws://localhost:{}", env.port);
    let backend_url = format!("http://127.0.0.1:{}", env.backend_port);
    assert_eq!(h["livekit_url"], livekit_url.as_str());
    assert_eq!(h["backend_url"], backend_url.as_str());
    let api_key = h["api_key"].as_str().expect("api key").to_string();
    for shown in [&livekit_url, &backend_url, &api_key] {
        assert!(r.stdout.contains(shown.as_str()), "up prints {shown}:\n{r}");
    }
    // The secret is the one thing `up` must never print.
    let runtime: Value =
        serde_json::from_slice(&std::fs::read(env.root.file("runtime.json")).expect("runtime.json")).expect("json");
    assert_eq!(runtime["api_key"], api_key.as_str());
    let secret = runtime["api_secret"].as_str().expect("secret");
    assert!(
        !r.stdout.contains(secret) && !r.stderr.contains(secret),
        "secret leaked:\n{r}"
    );

    // The binary came out of the tarball, and the daemon `up` started is
    // the one serving, with its own lk-backend found next to it.
    assert_eq!(
        sha256_file(&env.root.path().join("bin/livekit-server")),
        sha256_file(&bin("livekit-server-double"))
    );
    assert_eq!(env.daemons(), vec![env.serving_daemon().expect("a daemon serves")]);

    // Ready for tokens means it: a token from lk-backend is accepted by
    // livekit-server.
    let t = env.cli(&["token", "--room", "r1", "--identity", "alice"]);
    assert!(t.status.success(), "token:\n{t}");
    let (status, body) = http_get(env.port, &format!("/rtc/validate?access_token={}", t.stdout.trim()));
    assert_eq!((status, body.trim()), (200, "success"));
}

#[test]
fn up_twice_the_second_run_changes_nothing() {
    let env = Env::new();
    env.up_ok(&[]);
    let files = env.stamps();
    let children = env.child_pids();
    let daemon = env.serving_daemon().expect("daemon");

    let r = env.up_ok(&[]);

    assert!(r.stdout.contains("nothing changed"), "{r}");
    for (path, before) in &files {
        assert_eq!(
            &Stamp::of(path),
            before,
            "{} untouched by the second up",
            path.display()
        );
    }
    assert_eq!(env.child_pids(), children, "children not restarted");
    assert_eq!(env.serving_daemon(), Some(daemon), "same daemon");
    assert_eq!(env.daemons(), vec![daemon], "no second daemon");
    assert_eq!(env.health()["ready_for_tokens"], true);
}

#[test]
fn up_uses_the_daemon_that_is_already_running() {
    let env = Env::new();
    let d = Daemon::start(&env.root, DaemonOpts::default());

    let r = env.up_ok(&["--json"]);

    assert_eq!(r.json()["daemon_started"], false, "{r}");
    assert!(!r.stderr.contains("started hero_livekit_server"), "{r}");
    assert_eq!(env.serving_daemon(), Some(d.pid()), "the test's daemon still serves");
    assert_eq!(env.daemons(), vec![d.pid()], "no second daemon");
    assert_eq!(d.health()["ready_for_tokens"], true);
}

#[test]
fn up_after_the_daemon_was_killed_starts_a_new_one_that_adopts_the_children() {
    let env = Env::new();
    env.up_ok(&[]);
    let children = env.child_pids();
    let old = env.serving_daemon().expect("daemon");

    kill(Pid::from_raw(old), Signal::SIGKILL).expect("SIGKILL the daemon");
    wait_for(PATIENCE, "the killed daemon to die", || (!alive(old)).then_some(()));
    for (name, pid) in &children {
        assert!(alive(*pid as i32), "{name} survives its daemon's SIGKILL");
    }

    let r = env.up_ok(&["--json"]);

    assert_eq!(r.json()["daemon_started"], true, "{r}");
    let new = env.serving_daemon().expect("a daemon serves");
    assert_ne!(new, old);
    assert_eq!(env.daemons(), vec![new], "exactly one daemon");
    assert_eq!(env.child_pids(), children, "the children were adopted, not restarted");
    let h = env.health();
    assert_eq!(h["ready_for_tokens"], true, "{h}");
    for name in children.keys() {
        assert_eq!(h["processes"][name]["restarts"], 0, "{name}: {h}");
    }
}

#[test]
fn up_with_a_bad_flag_fails_naming_the_field_and_changes_nothing() {
    let env = Env::new();
    env.up_ok(&[]);
    let files = env.stamps();
    let children = env.child_pids();
    let hash = env.health()["in_memory_hash"].clone();

    let r = env.up(&["--api-secret", "short"]);

    assert!(!r.status.success(), "{r}");
    assert!(
        r.stderr.contains("api_secret") && r.stderr.contains("32-256 characters"),
        "the daemon's message names the field and the rule:\n{r}"
    );
    for (path, before) in &files {
        assert_eq!(&Stamp::of(path), before, "{} untouched", path.display());
    }
    assert_eq!(env.child_pids(), children);
    assert_eq!(env.health()["in_memory_hash"], hash);

    // Scripts get the same failure as JSON, with the code to branch on.
    let r = env.up(&["--api-secret", "short", "--json"]);
    assert!(!r.status.success(), "{r}");
    let err = &r.json()["error"];
    assert_eq!(err["code"], -32602, "{r}");
    assert_eq!(err["kind"], "invalid_params", "{r}");
    assert_eq!(err["field"], "api_secret", "{r}");
    assert!(err["message"].as_str().is_some_and(|m| m.contains("api_secret")), "{r}");
}

#[test]
fn up_with_a_bad_flag_on_a_fresh_root_fails_before_installing_anything() {
    let env = Env::new();

    let r = env.up(&["--api-key", "k"]);

    assert!(!r.status.success(), "{r}");
    assert!(r.stderr.contains("api_key"), "{r}");
    assert!(
        !env.root.path().join("bin/livekit-server").exists(),
        "bad input is refused before the download"
    );
    let h = env.health();
    assert_eq!(h["processes"]["livekit-server"]["state"], "stopped", "{h}");
}

#[test]
fn up_json_is_one_valid_document_saying_ready_for_tokens() {
    let env = Env::new();

    let r = env.up_ok(&["--json"]);

    let v = r.json();
    assert_eq!(v["ready_for_tokens"], true, "{r}");
    assert_eq!(v["daemon_started"], true, "{r}");
    let h = env.health();
    assert_eq!(v["api_key"], h["api_key"]);
    assert_eq!(v["livekit_url"], h["livekit_url"]);
    assert_eq!(v["backend_url"], h["backend_url"]);
    assert_eq!(v["installed"]["changed"], true, "{r}");
    assert_eq!(v["socket"], env.root.socket().display().to_string().as_str(), "{r}");
}

// ------------------------------------------------ a daemon older than the CLI

/// A fake daemon of an older protocol on `socket`: it answers
/// `livekitservice.health` with `health` and every other method with
/// -32601, like a daemon that predates them.
fn fake_old_daemon(socket: &Path, health: Value) {
    std::fs::create_dir_all(socket.parent().expect("socket dir")).expect("mkdir socket dir");
    let listener = UnixListener::bind(socket).expect("bind the fake daemon's socket");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let health = health.clone();
            std::thread::spawn(move || serve_old(stream, &health));
        }
    });
}

/// Serves HTTP/1.1 requests on one connection until the client closes it.
fn serve_old(stream: UnixStream, health: &Value) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let post = line.starts_with("POST");
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (status, reply) = if post {
            let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let reply = if req["method"] == "livekitservice.health" {
                json!({"jsonrpc": "2.0", "id": req["id"], "result": health})
            } else {
                json!({"jsonrpc": "2.0", "id": req["id"], "error": {"code": -32601, "message": "Method not found"}})
            };
            ("200 OK", reply.to_string())
        } else {
            ("404 Not Found", String::new())
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            reply.len()
        );
        if writer
            .write_all(head.as_bytes())
            .and_then(|_| writer.write_all(reply.as_bytes()))
            .is_err()
        {
            return;
        }
    }
}

/// A health document of today's shape (the client's own type), from a
/// daemon of protocol 0.
fn protocol_0_health() -> Value {
    use hero_livekit_proto::{BinaryHealth, FileHealth, Health, OverallStatus, ProcessHealth, ProcessState};
    let file = FileHealth {
        present: true,
        sha256: Some("00".into()),
        expected_sha256: "00".into(),
        matches: true,
    };
    let process = ProcessHealth {
        state: ProcessState::Running,
        pid: Some(4242),
        ready: true,
        ..ProcessHealth::stopped()
    };
    let h = Health {
        status: OverallStatus::Ok,
        ready_for_tokens: true,
        consistent: true,
        in_memory_hash: "00".into(),
        files: hero_livekit_proto::TRIPLE_FILES
            .iter()
            .map(|f| (f.to_string(), file.clone()))
            .collect(),
        drift: Vec::new(),
        api_key: "APIoldoldoldold".into(),
        livekit_url: "ws://localhost:7880".into(),
        backend_url: "http://127.0.0.1:7890".into(),
        processes: ["livekit-server", "lk-backend"]
            .iter()
            .map(|n| (n.to_string(), process.clone()))
            .collect(),
        binary: BinaryHealth {
            path: "/old/bin/livekit-server".into(),
            installed: true,
            version: Some("1.8.0".into()),
            sha256: None,
            target_version: None,
        },
        token_chain: Default::default(),
        redis: None,
        cluster: Default::default(),
        version: "0.0.1".into(),
        protocol: 0,
    };
    let mut v = serde_json::to_value(h).expect("encode health");
    // An older daemon has no token-chain probe and no cluster.
    if let Some(o) = v.as_object_mut() {
        o.remove("token_chain");
        o.remove("cluster");
    }
    v
}

/// The upgrade advice: what to install and how to restart the daemon.
fn says_how_to_upgrade(text: &str) -> bool {
    text.contains("hero_livekit_server") && text.contains("restart")
}

#[test]
fn health_from_an_older_daemon_warns_and_says_how_to_upgrade() {
    let env = Env::new();
    fake_old_daemon(&env.root.socket(), protocol_0_health());

    let r = env.cli(&["health"]);

    assert!(r.status.success(), "the old daemon says it is ready:\n{r}");
    assert!(r.stdout.contains("APIoldoldoldold"), "health is still shown:\n{r}");
    assert!(r.stderr.contains("older than this client"), "{r}");
    assert!(r.stderr.contains("protocol 0"), "{r}");
    assert!(says_how_to_upgrade(&r.stderr), "{r}");
}

#[test]
fn health_in_an_older_shape_still_says_the_daemon_is_older_not_garbled() {
    let env = Env::new();
    let mut old = protocol_0_health();
    // Fields this client knows and the old daemon did not send.
    let obj = old.as_object_mut().expect("object");
    obj.remove("binary");
    obj.remove("backend_url");
    fake_old_daemon(&env.root.socket(), old);

    let r = env.cli(&["health"]);

    assert!(!r.status.success(), "{r}");
    assert!(r.stderr.contains("older than this client"), "{r}");
    assert!(r.stderr.contains("protocol 0"), "{r}");
    assert!(says_how_to_upgrade(&r.stderr), "{r}");
}

#[test]
fn a_method_the_older_daemon_lacks_gets_the_older_than_this_client_message() {
    let env = Env::new();
    fake_old_daemon(&env.root.socket(), protocol_0_health());

    let r = env.cli(&["logs", "livekit-server"]);

    assert!(!r.status.success(), "{r}");
    assert!(r.stderr.contains("older than this client"), "{r}");
    assert!(
        r.stderr.contains("livekitservice.logs"),
        "names the missing method:\n{r}"
    );
    assert!(says_how_to_upgrade(&r.stderr), "{r}");
}

#[test]
fn up_as_a_user_the_socket_refuses_says_permission_denied_and_starts_no_daemon() {
    use std::os::unix::process::CommandExt;
    let env = Env::new();
    let d = Daemon::start(&env.root, DaemonOpts::default());

    for args in [&["health"][..], &["up"][..]] {
        let r: Run = Command::new(bin("hero_livekit"))
            .arg("--root")
            .arg(env.root.path())
            .args(args)
            .env_remove("PATH_ROOT")
            .env_remove("HERO_SOCKET_DIR")
            .uid(65534)
            .gid(65534)
            .output()
            .expect("run hero_livekit as nobody")
            .into();
        assert!(!r.status.success(), "{args:?}: {r}");
        assert!(r.stderr.contains("permission denied"), "{args:?}: {r}");
        assert!(
            !r.stderr.contains("no hero_livekit daemon answers"),
            "a refused socket is not a missing daemon: {r}"
        );
    }
    assert_eq!(env.daemons(), vec![d.pid()], "no second daemon was started");
    let r: Run = Command::new(bin("hero_livekit"))
        .arg("--root")
        .arg(env.root.path())
        .args(["health", "--json"])
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run hero_livekit as nobody")
        .into();
    assert_eq!(r.json()["error"]["kind"], "permission_denied", "{r}");
}

// ------------------------------------ what the service definitions rely on

/// The systemd unit and the zinit service start only the daemon, never
/// `hero_livekit start`: after a reboot the daemon itself brings back the
/// children it ran before, from their records.
#[test]
fn after_a_reboot_the_daemon_alone_brings_back_the_children_it_ran() {
    let env = Env::new();
    env.up_ok(&[]);
    let before = env.child_pids();
    let old = env.serving_daemon().expect("daemon");

    // A reboot: every process gone at once, the records left on disk.
    kill(Pid::from_raw(old), Signal::SIGKILL).expect("kill the daemon");
    kill_recorded_children(env.root.path());
    wait_for(PATIENCE, "every process of the root to die", || {
        (!alive(old) && before.values().all(|p| !alive(*p as i32))).then_some(())
    });

    // The service manager starts the daemon, and nothing else.
    let d = Daemon::start(&env.root, DaemonOpts::default());

    let h = wait_for(PATIENCE, "ready for tokens again", || {
        let h = d.health();
        (h["ready_for_tokens"] == true).then_some(h)
    });
    for (name, pid) in &before {
        assert_ne!(
            h["processes"][name]["pid"].as_i64(),
            Some(*pid),
            "{name} is a new process"
        );
    }
}

/// ... and an operator's `hero_livekit stop` survives a daemon restart (an
/// unconditional `start` in the service definition would undo it).
#[test]
fn after_stop_a_restarted_daemon_leaves_the_children_stopped() {
    let env = Env::new();
    env.up_ok(&[]);
    let stop = env.cli(&["stop"]);
    assert!(stop.status.success(), "{stop}");
    let old = env.serving_daemon().expect("daemon");

    // `systemctl restart`: SIGTERM to the daemon alone.
    kill(Pid::from_raw(old), Signal::SIGTERM).expect("SIGTERM the daemon");
    wait_for(PATIENCE, "the daemon to exit", || (!alive(old)).then_some(()));
    let d = Daemon::start(&env.root, DaemonOpts::default());

    // The daemon starts children only from records, and stop removed them.
    let records: Vec<_> = std::fs::read_dir(env.root.file("children"))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(records.is_empty(), "no child records after stop: {records:?}");
    let h = d.health();
    for name in ["livekit-server", "lk-backend"] {
        assert_eq!(h["processes"][name]["state"], "stopped", "{name}: {h}");
    }
}

#[test]
fn up_takes_a_relative_source_as_one_in_the_current_directory() {
    let env = Env::new();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(bin("livekit-server-double"), dir.path().join("livekit-server")).expect("copy the double");
    let (p, t, b) = (
        env.port.to_string(),
        env.rtc_tcp_port.to_string(),
        env.backend_port.to_string(),
    );
    let r = env.cli_in(
        dir.path(),
        &[
            "up",
            "--source",
            "./livekit-server",
            "--port",
            &p,
            "--rtc-tcp-port",
            &t,
            "--backend-port",
            &b,
            "--timeout-ms",
            "60000",
        ],
    );
    assert!(r.status.success(), "{r}\n--- daemon log\n{}", env.daemon_log());
    assert_eq!(env.health()["ready_for_tokens"], true);
    assert_eq!(
        sha256_file(&env.root.path().join("bin/livekit-server")),
        sha256_file(&dir.path().join("livekit-server")),
        "installed from the file in that directory"
    );
}

#[test]
fn up_onto_the_ports_of_another_deployment_says_so_naming_its_root_and_starts_nothing() {
    let first = Env::new();
    first.up_ok(&[]);
    let mut second = Env::new();
    second.port = first.port;

    let r = second.up(&[]);

    assert!(!r.status.success(), "{r}");
    let first_root = first.root.path().display().to_string();
    assert!(
        r.stderr.contains("another hero_livekit deployment") && r.stderr.contains(&first_root),
        "names the other deployment's root: {r}"
    );
    assert!(
        r.stderr
            .lines()
            .any(|l| l.starts_with("hint: ") && l.contains(&first_root)),
        "{r}"
    );
    assert!(second.daemons().is_empty(), "no second daemon: {r}");
    assert!(
        !second.root.path().join("var").exists(),
        "nothing written under the second root"
    );
    assert_eq!(
        first.health()["ready_for_tokens"],
        true,
        "the first deployment serves on"
    );
}
