//! The daemon supervising the real livekit-server v1.13.5 (built by the
//! test command), not the double: every production setting through the real
//! strict parser, the token-chain probe's 401 without the token LiveKit
//! echoes, drift and heal, kill -9 and re-adoption, install of the real
//! binary, and Redis with a password.
//!
//! Each test returns early (with a line on stderr) when the real binary is
//! not built and this is not CI; under CI it fails instead.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hero_livekit_proto::Event;
use hero_livekit_tests::lk::env_credential;
use hero_livekit_tests::observe::{backend_token, pid_in, ports, validate, wait_ready_for_tokens};
use hero_livekit_tests::real::{real_livekit_bin, REAL_VERSION};
use hero_livekit_tests::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);
const LK: &str = "livekit-server";
const BE: &str = "lk-backend";

/// Free ports for everything the real server binds at startup: HTTP,
/// ICE/TCP, lk-backend, and a one-port UDP media range (bound only per
/// connection, but kept apart from other tests all the same).
fn free_ports() -> Value {
    let udp = free_port();
    json!({
        "port": free_port(),
        "rtc_tcp_port": free_port(),
        "backend_port": free_port(),
        "rtc_port_range_start": udp,
        "rtc_port_range_end": udp,
    })
}

fn merged(mut a: Value, b: &Value) -> Value {
    if let (Some(a), Some(b)) = (a.as_object_mut(), b.as_object()) {
        for (k, v) in b {
            a.insert(k.clone(), v.clone());
        }
    }
    a
}

fn livekit_log(root: &Root) -> String {
    std::fs::read_to_string(root.file("logs/livekit-server.log")).unwrap_or_default()
}

/// A daemon on the real server, configured with `settings` on free ports and
/// started until ready for tokens.
fn running(root: &Root, opts: DaemonOpts, settings: &Value) -> Daemon {
    let d = Daemon::start(root, opts);
    d.ok("livekitservice.configure", merged(free_ports(), settings));
    let r = d.call("livekitservice.start", json!({"timeout_ms": 30000}));
    assert!(
        r["result"]["ready_for_tokens"] == true,
        "not ready with {settings}: {r}\nlivekit-server's log:\n{}\ndaemon:\n{}",
        livekit_log(root),
        d.stderr()
    );
    d
}

fn real() -> Option<DaemonOpts> {
    DaemonOpts::real()
}

/// A self-signed certificate and its key for the embedded TURN server's TLS.
fn turn_cert(dir: &Path) -> (String, String) {
    let (cert, key) = (dir.join("turn.crt"), dir.join("turn.key"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args(["-days", "1", "-subj", "/CN=turn.example.org", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl (the test command installs it)");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert.display().to_string(), key.display().to_string())
}

/// Every production setting `configure` takes, each alone and then all
/// together, rendered into `livekit.yaml` and accepted by the real strict
/// parser: the real server answers `GET /` 200 and accepts lk-backend's
/// token (`ready_for_tokens`).
#[test]
fn every_setting_alone_and_all_together_start_the_real_server() {
    let Some(opts) = real() else { return };
    let certs = tempfile::tempdir().expect("cert dir");
    let (cert, key) = turn_cert(certs.path());
    let embedded_turn = json!({
        "turn_enabled": true,
        "turn_domain": "turn.example.org",
        "turn_external_tls": true,
        "turn_tls_port": free_port(),
        "turn_udp_port": free_port(),
    });
    let turn_with_certs = json!({
        "turn_enabled": true,
        "turn_domain": "turn.example.org",
        "turn_cert_file": cert,
        "turn_key_file": key,
        "turn_tls_port": free_port(),
        "turn_udp_port": free_port(),
    });
    let alone = vec![
        json!({"domain": "media.example.org"}),
        json!({"node_ip": "127.0.0.1"}),
        json!({"bind_addresses": ["127.0.0.1"]}),
        json!({"use_external_ip": false}),
        json!({"rtc_enable_loopback_candidate": true}),
        json!({"rtc_udp_port": free_port()}),
        json!({"stun_servers": ["127.0.0.1:3478"]}),
        json!({"turn_servers": [
            {"host": "turn.example.org", "port": 443, "protocol": "tls", "username": "u", "credential": "c"},
            {"host": "turn.example.org", "port": 3478, "protocol": "udp", "secret": "0123456789abcdef0123456789abcdef"}
        ]}),
        embedded_turn.clone(),
        turn_with_certs,
        json!({"webhook_urls": ["http://127.0.0.1:9/hook"]}),
        json!({"room_empty_timeout": 60}),
        json!({"room_departure_timeout": 10}),
        json!({"room_max_participants": 5}),
        json!({"room_enabled_codecs": ["audio/opus", "video/vp8"]}),
        json!({"log_level": "debug"}),
        json!({"log_json": true}),
        json!({"prometheus_port": free_port()}),
        json!({"prometheus_port": free_port(), "prometheus_username": "scraper", "prometheus_password": "0123456789abcdef0123456789abcdef"}),
        json!({"region": "eu-west"}),
    ];
    let mut all = json!({});
    for s in alone.iter().filter(|s| s.get("turn_cert_file").is_none()) {
        all = merged(all, s);
    }
    // The ports each case took once are not reused by the combination.
    all = merged(
        all,
        &json!({"rtc_udp_port": free_port(), "prometheus_port": free_port(), "turn_tls_port": free_port(), "turn_udp_port": free_port()}),
    );
    // Without auto_create the probe's room does not exist: the real server
    // answers its token 404 `requested room does not exist` after its auth
    // middleware accepted it, which the probe counts as accepted, so the
    // daemon is ready for tokens on that rendering too.
    {
        let root = Root::new();
        let d = running(&root, opts.clone(), &json!({"room_auto_create": false}));
        let p = ports(&d);
        assert_eq!(
            validate(p.livekit, &backend_token(p.backend)),
            (404, "requested room does not exist".to_string())
        );
        assert_eq!(d.health()["ready_for_tokens"], true);
    }
    all = merged(all, &json!({"room_auto_create": true}));
    for settings in alone.iter().chain(std::iter::once(&all)) {
        let root = Root::new();
        let d = running(&root, opts.clone(), settings);
        let yaml = std::fs::read_to_string(root.file("livekit.yaml")).expect("read livekit.yaml");
        let p = ports(&d);
        let token = backend_token(p.backend);
        assert_eq!(
            validate(p.livekit, &token),
            (200, "success".to_string()),
            "{settings}: {yaml}"
        );
        // The real server's own log says it started on this rendering.
        let log = livekit_log(&root);
        assert!(log.contains("starting LiveKit server"), "{settings}: {log}");
    }
}

/// livekit-server 1.13.5 echoes the refused JWT in its 401 body: the
/// token-chain probe's error in events, health and the daemon's log keeps
/// LiveKit's words and loses the token.
#[test]
fn the_jwt_livekit_echoes_in_a_401_reaches_no_output() {
    let Some(opts) = real() else { return };
    let root = Root::new();
    // No periodic drift check: only the token-chain probe can see this.
    let opts = opts.no_drift_check().env_var("HERO_LIVEKIT_TOKEN_PROBE_MS", 300);
    let d = running(&root, opts, &json!({}));
    let be0 = pid_in(&d.health(), BE).expect("lk-backend pid");
    let env_path = root.file("backend.env");
    let good = std::fs::read(&env_path).expect("read backend.env");
    let (_, secret) = env_credential(&env_path);
    let wrong: String = "W".repeat(43);
    let tampered = String::from_utf8(good.clone()).expect("utf-8").replace(&secret, &wrong);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut seen = Vec::new();
    let error = rt.block_on(async {
        let client = hero_livekit_client::Client::new(&d.socket);
        let mut events = client.subscribe_events().await.expect("subscribe");
        // lk-backend re-reads backend.env on SIGHUP: it signs with the wrong
        // secret behind files that are put back at once.
        std::fs::write(&env_path, &tampered).expect("tamper backend.env");
        kill(Pid::from_raw(be0), Signal::SIGHUP).expect("SIGHUP lk-backend");
        let log = root.file("logs/lk-backend.log");
        wait_for(WAIT, "lk-backend to reload the tampered file", || {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|l| l.contains("SIGHUP: credential reloaded"))
                .map(|_| ())
        });
        std::fs::write(&env_path, &good).expect("restore backend.env");
        loop {
            let ev = tokio::time::timeout(WAIT, events.next())
                .await
                .unwrap_or_else(|_| panic!("token_chain_failed within {WAIT:?}"))
                .expect("stream open");
            seen.push(format!("{:?}", ev.event));
            if let Event::TokenChainFailed { error } = ev.event {
                // Health while the chain is broken, before the repair.
                seen.push(d.health().to_string());
                return error;
            }
        }
    });
    assert!(
        error.contains("401 invalid token: [redacted JWT], error: token signature is invalid: signature is invalid"),
        "LiveKit's own words: {error}"
    );
    let h = wait_ready_for_tokens(&d, WAIT);
    seen.push(h.to_string());
    seen.push(d.stderr());
    for text in &seen {
        assert!(!text.contains("eyJ"), "a token reached an output: {text}");
        assert!(!text.contains(&wrong) && !text.contains(&secret), "a secret: {text}");
    }
    // The real server did echo it: its own log holds the token, the
    // daemon's outputs do not.
    assert!(
        livekit_log(&root).contains("invalid token: eyJ"),
        "the real server's echo"
    );
}

/// A corrupted `livekit.yaml` is healed by `restart`, which rewrites the
/// file from the in-memory config before it restarts the real server onto
/// it; tokens are accepted again.
#[test]
fn a_corrupted_livekit_yaml_is_healed_and_the_real_server_restarted() {
    let Some(opts) = real() else { return };
    let root = Root::new();
    let d = running(&root, opts.no_drift_check(), &json!({}));
    let yaml = root.file("livekit.yaml");
    let good = std::fs::read(&yaml).expect("read livekit.yaml");
    let lk0 = pid_in(&d.health(), LK).expect("livekit-server pid");
    std::fs::write(&yaml, b"port: [not yaml\n").expect("corrupt livekit.yaml");
    let r = d.ok("livekitservice.restart", json!({"process": LK, "timeout_ms": 30000}));
    assert_eq!(std::fs::read(&yaml).expect("read livekit.yaml"), good, "{r}");
    let h = wait_ready_for_tokens(&d, WAIT);
    assert_ne!(pid_in(&h, LK), Some(lk0), "restarted onto the healed file: {h}");
    let p = ports(&d);
    assert_eq!(validate(p.livekit, &backend_token(p.backend)), (200, "success".into()));
}

/// kill -9 of the real server: the supervisor restarts it and tokens are
/// accepted again.
#[test]
fn a_killed_real_server_is_restarted() {
    let Some(opts) = real() else { return };
    let root = Root::new();
    let d = running(&root, opts, &json!({}));
    let lk0 = pid_in(&d.health(), LK).expect("livekit-server pid");
    kill(Pid::from_raw(lk0), Signal::SIGKILL).expect("kill -9 livekit-server");
    let h = hero_livekit_tests::observe::poll(WAIT, || {
        let h = d.health();
        (h["ready_for_tokens"] == true && pid_in(&h, LK).is_some_and(|p| p != lk0)).then_some(h)
    })
    .unwrap_or_else(|| panic!("not restarted: {}\n{}", d.health(), livekit_log(&root)));
    let p = ports(&d);
    assert_eq!(
        validate(p.livekit, &backend_token(p.backend)),
        (200, "success".into()),
        "{h}"
    );
}

/// SIGKILL of the daemon leaves the real children running; the next
/// daemon adopts them (same pids) and is ready for tokens.
#[test]
fn a_new_daemon_adopts_the_real_children() {
    let Some(opts) = real() else { return };
    let root = Root::new();
    let mut d = running(&root, opts.clone(), &json!({}));
    let h0 = d.health();
    let (lk0, be0) = (pid_in(&h0, LK).expect("lk pid"), pid_in(&h0, BE).expect("be pid"));
    d.kill9();
    let d2 = Daemon::start(&root, opts);
    let h = wait_ready_for_tokens(&d2, WAIT);
    assert_eq!(pid_in(&h, LK), Some(lk0), "livekit-server adopted: {h}");
    assert_eq!(pid_in(&h, BE), Some(be0), "lk-backend adopted: {h}");
    let p = ports(&d2);
    assert_eq!(validate(p.livekit, &backend_token(p.backend)), (200, "success".into()));
}

/// `install --source <the real binary>`: its own `--version` is what health
/// reports and what `livekit.yaml` is rendered for; it then serves.
#[test]
fn install_of_the_real_binary_reports_its_real_version() {
    let Some(bin) = real_livekit_bin() else { return };
    let root = Root::new();
    let d = Daemon::start(&root, DaemonOpts::default());
    let r = d.ok("livekitservice.install", json!({"source": bin.display().to_string()}));
    assert_eq!(r["changed"], true, "{r}");
    let h = d.health();
    assert_eq!(h["binary"]["installed"], true, "{h}");
    assert_eq!(h["binary"]["target_version"], REAL_VERSION, "{h}");
    d.ok("livekitservice.configure", free_ports());
    let r = d.call("livekitservice.start", json!({"timeout_ms": 30000}));
    assert_eq!(r["result"]["ready_for_tokens"], true, "{r}\n{}", livekit_log(&root));
}

/// A redis-server (or sentinel, or cluster node) on loopback, without
/// persistence; killed on drop.
struct RedisProc {
    child: std::process::Child,
}

impl RedisProc {
    /// Runs `redis-server` with `args` and waits until `port` listens.
    fn spawn(port: u16, args: &[&str]) -> RedisProc {
        let child = Command::new("redis-server")
            .args(args)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("run redis-server (the test command installs it)");
        let r = RedisProc { child };
        wait_for(WAIT, "redis-server to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
        });
        r
    }

    fn with_password(port: u16, password: &str) -> RedisProc {
        RedisProc::spawn(port, &["--port", &port.to_string(), "--requirepass", password])
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real server's own log says it uses Redis, not single-node routing.
fn assert_routes_over_redis(root: &Root, d: &Daemon, secrets: &[&str]) {
    let log = livekit_log(root);
    assert!(log.contains("connecting to redis"), "{log}");
    assert!(!log.contains("using single-node routing"), "{log}");
    for s in secrets {
        assert!(!d.stderr().contains(s), "a Redis password in the daemon's log");
    }
    assert_eq!(d.health()["ready_for_tokens"], true);
}

/// The real server connects to a Redis that wants a password, through the
/// daemon's rendering of it.
#[test]
fn the_real_server_connects_to_redis_with_a_password() {
    let Some(opts) = real() else { return };
    let password = "redis-pass-0123456789abcdef0123456789";
    let port = free_port();
    let _redis = RedisProc::with_password(port, password);
    let root = Root::new();
    let settings = json!({"redis_address": format!("127.0.0.1:{port}"), "redis_password": password});
    let d = running(&root, opts, &settings);
    assert_routes_over_redis(&root, &d, &[password]);
}

/// Through Sentinel: the sentinels and the master each with a password of
/// their own.
#[test]
fn the_real_server_connects_through_sentinel() {
    let Some(opts) = real() else { return };
    let (master_port, sentinel_port) = (free_port(), free_port());
    let (master_pw, sentinel_pw) = ("master-pw-0123456789abcdef", "sentinel-pw-0123456789abcdef");
    let _master = RedisProc::with_password(master_port, master_pw);
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {sentinel_port}\nbind 127.0.0.1\nrequirepass {sentinel_pw}\n\
             sentinel monitor mymaster 127.0.0.1 {master_port} 1\nsentinel auth-pass mymaster {master_pw}\n"
        ),
    )
    .expect("sentinel.conf");
    let conf = conf.to_string_lossy().into_owned();
    let _sentinel = RedisProc::spawn(sentinel_port, &[&conf, "--sentinel"]);
    let root = Root::new();
    let settings = json!({
        "redis_sentinel_master": "mymaster",
        "redis_sentinel_addresses": [format!("127.0.0.1:{sentinel_port}")],
        "redis_sentinel_password": sentinel_pw,
        "redis_password": master_pw,
    });
    let d = running(&root, opts, &settings);
    assert_routes_over_redis(&root, &d, &[master_pw, sentinel_pw]);
}

/// Through a three-node Redis Cluster.
#[test]
fn the_real_server_connects_to_a_redis_cluster() {
    let Some(opts) = real() else { return };
    let ports = [free_port(), free_port(), free_port()];
    let dirs: Vec<tempfile::TempDir> = ports.iter().map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let _nodes: Vec<RedisProc> = ports
        .iter()
        .zip(&dirs)
        .map(|(port, dir)| {
            let conf = dir.path().join("nodes.conf").to_string_lossy().into_owned();
            // The bus port is named: Redis's default, the port + 10000, may
            // be another test's port or past 65535.
            let bus = free_port().to_string();
            let p = port.to_string();
            RedisProc::spawn(
                *port,
                &[
                    "--port",
                    &p,
                    "--cluster-port",
                    &bus,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &conf,
                ],
            )
        })
        .collect();
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let out = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("run redis-cli (Debian package redis-tools)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    wait_for(WAIT, "the cluster to serve every slot", || {
        ports
            .iter()
            .all(|p| {
                Command::new("redis-cli")
                    .args(["-p", &p.to_string(), "CLUSTER", "INFO"])
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
            })
            .then_some(())
    });
    let root = Root::new();
    let d = running(&root, opts, &json!({"redis_cluster_addresses": addrs}));
    assert_routes_over_redis(&root, &d, &[]);
}

/// A CA, and a server (for 127.0.0.1) and a client certificate it signed,
/// in `dir` (`ca.pem`, `server.pem`/`.key`, `client.pem`/`.key`).
fn tls_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("run openssl (the test command installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=test CA",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("ext");
    for name in ["server", "client"] {
        let (key, csr, pem, ext, subj) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
            format!("/CN={name}"),
        );
        run(&[&["req"][..], &ec, &["-keyout", &key, "-out", &csr, "-subj", &subj]].concat());
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }
}

/// Over TLS, with a client certificate the Redis server requires.
#[test]
fn the_real_server_connects_to_redis_over_tls_with_a_client_certificate() {
    let Some(opts) = real() else { return };
    let certs = tempfile::tempdir().expect("tempdir");
    tls_certificates(certs.path());
    let p = |f: &str| certs.path().join(f).to_string_lossy().into_owned();
    let port = free_port();
    let tls_port = port.to_string();
    // tls-auth-clients defaults to yes: the client certificate is required.
    let _redis = RedisProc::spawn(
        port,
        &[
            "--port",
            "0",
            "--tls-port",
            &tls_port,
            "--tls-cert-file",
            &p("server.pem"),
            "--tls-key-file",
            &p("server.key"),
            "--tls-ca-cert-file",
            &p("ca.pem"),
        ],
    );
    let root = Root::new();
    let settings = json!({
        "redis_address": format!("127.0.0.1:{port}"), "redis_tls": true, "redis_tls_ca_file": p("ca.pem"),
        "redis_tls_cert_file": p("client.pem"), "redis_tls_key_file": p("client.key"),
    });
    let d = running(&root, opts, &settings);
    assert_routes_over_redis(&root, &d, &[]);
}
