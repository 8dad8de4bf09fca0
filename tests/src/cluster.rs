//! Several nodes on one machine sharing one real `redis-server` (Debian's,
//! installed by the test command): what the cluster tests and
//! `bench-cluster` drive.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::observe::{backend_token, ports, validate};
use crate::{bin, configure_free_ports, free_port, wait_for, Daemon, DaemonOpts, Root};

/// Generous: three daemons and six children share two cores.
pub const WAIT: Duration = Duration::from_secs(60);

/// A real redis-server on 127.0.0.1; killed and reaped on drop.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    /// Its working directory (RDB and AOF files).
    pub dir: tempfile::TempDir,
    appendonly: bool,
}

impl Redis {
    /// Without persistence: a restart comes back empty.
    pub fn start() -> Redis {
        Self::start_with(false)
    }

    /// With `appendonly` as asked (and RDB on `SAVE`).
    pub fn start_with(appendonly: bool) -> Redis {
        let dir = tempfile::Builder::new()
            .prefix("hero_livekit_redis")
            .tempdir()
            .expect("redis dir");
        let mut r = Redis {
            child: None,
            port: free_port(),
            dir,
            appendonly,
        };
        r.restart();
        r
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and directory.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                if self.appendonly { "yes" } else { "no" },
                "--dir",
            ])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run redis-server (Debian package redis-server; the test command installs it)");
        self.child = Some(child);
        let port = self.port;
        wait_for(WAIT, "redis-server to answer PING", || {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.write_all(b"PING\r\n").ok()?;
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).ok()?;
            buf[..n].starts_with(b"+PONG").then_some(())
        });
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `redis-cli` against this server; its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "--raw"])
            .args(args)
            .output()
            .expect("run redis-cli");
        assert!(
            out.status.success(),
            "redis-cli {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// How many calls of `command` (lower case) Redis has served so far
    /// (`INFO commandstats`).
    pub fn calls(&self, command: &str) -> u64 {
        let info = self.cli(&["INFO", "commandstats"]);
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Writes `n` forged members into `cluster`'s member set, each with a
    /// 1 KiB heartbeat that is not sealed (what anyone who can write Redis
    /// can add), under ids of the members' own format.
    pub fn forge_members(&self, cluster: &str, n: u64) {
        self.cli(&[
            "EVAL",
            "for i = 1, tonumber(ARGV[1]) do local id = string.format('%016x', i + 4096) \
             redis.call('SET', KEYS[1] .. id, string.rep('u', 1024), 'PX', 3600000) \
             redis.call('SADD', KEYS[2], id) end return 0",
            "2",
            &format!("hero_livekit:{{{cluster}}}:node:"),
            &format!("hero_livekit:{{{cluster}}}:nodes"),
            &n.to_string(),
        ]);
    }

    /// Every key and its value (strings, sets, hashes, lists), as text.
    pub fn dump(&self) -> Vec<(String, String)> {
        let keys = self.cli(&["--scan"]);
        let mut out: Vec<(String, String)> = keys
            .lines()
            .filter(|k| !k.is_empty())
            .map(|k| {
                let value = match self.cli(&["TYPE", k]).trim() {
                    "string" => self.cli(&["GET", k]),
                    "set" => self.cli(&["SMEMBERS", k]),
                    "hash" => self.cli(&["HGETALL", k]),
                    "list" => self.cli(&["LRANGE", k, "0", "-1"]),
                    "zset" => self.cli(&["ZRANGE", k, "0", "-1", "WITHSCORES"]),
                    other => format!("<{other}>"),
                };
                (k.to_string(), value)
            })
            .collect();
        out.sort();
        out
    }

    /// Every file under its directory, with its bytes.
    pub fn files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
            for e in std::fs::read_dir(dir).expect("read redis dir").flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if let Ok(bytes) = std::fs::read(&p) {
                    out.push((p, bytes));
                }
            }
        }
        let mut out = Vec::new();
        walk(self.dir.path(), &mut out);
        out
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A small TCP relay process between a node and Redis, that a test can stop.
pub struct Relay {
    child: Child,
    pub port: u16,
}

impl Relay {
    pub fn start(target: &str) -> Relay {
        Relay::start_on(free_port(), target)
    }

    fn start_on(port: u16, target: &str) -> Relay {
        let child = Command::new(bin("tcp-relay"))
            .arg(port.to_string())
            .arg(target)
            .stdout(Stdio::null())
            .spawn()
            .expect("run tcp-relay");
        wait_for(WAIT, "the relay to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
        });
        Relay { child, port }
    }
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).expect("signal relay");
    }
    /// Every connection through it hangs, as across a partition.
    pub fn cut(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }
    pub fn mend(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }
    /// Kills the relay (every connection through it is reset) and starts
    /// a new one on the same port to `target`, once the old one is gone.
    pub fn restart(&mut self, target: &str) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let next = Relay::start_on(self.port, target);
        // The old relay is reaped: only its handle goes, not its Drop.
        let old = std::mem::replace(self, next);
        std::mem::forget(old);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.mend();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One node: a daemon on its own root and ports, supervising the
/// livekit-server double and lk-backend, started (not yet in a cluster).
pub struct Node {
    pub d: Daemon,
    pub root: Root,
}

impl Node {
    /// `poll_ms`: the cluster poll period (`HERO_LIVEKIT_CLUSTER_POLL_MS`).
    pub fn start(poll_ms: u64) -> Node {
        let root = Root::new();
        let d = Daemon::start(
            &root,
            DaemonOpts::double().env_var("HERO_LIVEKIT_CLUSTER_POLL_MS", poll_ms),
        );
        configure_free_ports(&d);
        d.ok("livekitservice.start", json!({}));
        Node { d, root }
    }

    pub fn health(&self) -> Value {
        self.d.health()
    }

    /// Joins `cluster` on `redis` (with `token` when given).
    pub fn join(&self, redis: &str, cluster: &str, token: Option<&str>) -> Value {
        let mut p = json!({"redis_address": redis, "cluster": cluster});
        if let Some(t) = token {
            p["cluster_token"] = json!(t);
        }
        self.d.ok("livekitservice.configure", p)
    }

    pub fn cluster_token(&self) -> String {
        self.d.ok("livekitservice.cluster_token", json!({}))["cluster_token"]
            .as_str()
            .expect("cluster_token")
            .to_string()
    }

    /// The bytes of the three files.
    pub fn triple(&self) -> Vec<Vec<u8>> {
        ["runtime.json", "livekit.yaml", "backend.env"]
            .iter()
            .map(|f| std::fs::read(self.root.file(f)).expect("read a file of the triple"))
            .collect()
    }

    /// The API secret in `runtime.json`.
    pub fn secret(&self) -> String {
        crate::lk::json_credential(&self.root.file("runtime.json")).1
    }

    /// Whether this node runs `api_key`, proven ready for tokens, joined.
    pub fn runs(&self, api_key: &str) -> bool {
        let h = self.health();
        h["api_key"] == api_key && h["ready_for_tokens"] == true && h["cluster"]["state"] == "joined"
    }
}

/// Waits until every node runs `api_key`, proven, joined.
pub fn wait_all_run(nodes: &[&Node], api_key: &str, what: &str) {
    for (i, n) in nodes.iter().enumerate() {
        let mut last = Value::Null;
        let ok = crate::observe::poll(WAIT, || {
            last = n.health();
            n.runs(api_key).then_some(())
        });
        assert!(ok.is_some(), "{what}: node {i} does not run {api_key}: {last}");
    }
}

/// A token minted by each node's lk-backend is accepted by every node's
/// livekit-server.
pub fn cross_validate(nodes: &[&Node]) {
    let ports: Vec<_> = nodes.iter().map(|n| ports(&n.d)).collect();
    for (i, from) in ports.iter().enumerate() {
        let token = backend_token(from.backend);
        for (j, to) in ports.iter().enumerate() {
            let (status, body) = validate(to.livekit, &token);
            assert_eq!(status, 200, "a token of node {i} on node {j}: {body}");
        }
    }
}
