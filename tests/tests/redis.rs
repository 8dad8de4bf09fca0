//! `health` says whether the Redis that `livekit.yaml` names answers
//! (SPEC section 11), checked against a real `redis-server` (Debian's,
//! installed by the test command) on loopback.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hero_livekit_tests::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

/// A real redis-server on 127.0.0.1:`port`, without persistence; killed
/// and reaped on drop.
struct Redis {
    child: Child,
}

impl Redis {
    fn start(port: u16, password: Option<&str>) -> Redis {
        let port_arg = port.to_string();
        let mut args = vec!["--port", &port_arg];
        if let Some(p) = password {
            args.extend(["--requirepass", p]);
        }
        Redis::spawn(port, &args)
    }

    /// A redis-server (or sentinel) with `args` after the loopback and
    /// no-persistence ones, up once `port` accepts connections.
    fn spawn(port: u16, args: &[&str]) -> Redis {
        let mut cmd = Command::new("redis-server");
        cmd.args(args);
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run redis-server (Debian package redis-server; the test command installs it)");
        let redis = Redis { child };
        wait_for(WAIT, "redis-server to accept connections", || {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            if args.contains(&"--tls-port") {
                return Some(());
            }
            s.write_all(b"PING\r\n").ok()?;
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).ok()?;
            // A password-protected server answers -NOAUTH: it is up.
            (n > 0).then_some(())
        });
        redis
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn daemon(root: &Root) -> Daemon {
    let d = Daemon::start(
        root,
        DaemonOpts {
            env: vec![("HERO_LIVEKIT_REDIS_CHECK_MS".into(), "100".into())],
            ..Default::default()
        },
    );
    configure_free_ports(&d);
    d
}

/// Polls `health` until its `redis` entry satisfies `want`.
fn wait_redis(d: &Daemon, what: &str, want: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    hero_livekit_tests::observe::poll(WAIT, || {
        last = d.health();
        want(&last["redis"]).then(|| last["redis"].clone())
    })
    .unwrap_or_else(|| panic!("{what} within {WAIT:?}; last health: {last}"))
}

#[test]
fn health_reports_whether_the_configured_redis_answers() {
    let root = Root::new();
    let d = daemon(&root);
    assert!(d.health().get("redis").is_none(), "no redis_address, no redis entry");

    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let redis = Redis::start(port, None);
    d.ok("livekitservice.configure", json!({"redis_address": address}));
    let yaml = std::fs::read_to_string(root.file("livekit.yaml")).expect("livekit.yaml");
    assert!(yaml.contains(&format!("redis:\n  address: \"{address}\"\n")), "{yaml}");
    let r = wait_redis(&d, "redis reachable", |r| r["reachable"] == true);
    assert_eq!(r, json!({"address": address, "reachable": true, "error": null}));

    // Redis goes away: health says so, naming the address and the cause.
    drop(redis);
    let r = wait_redis(&d, "redis unreachable", |r| r["reachable"] == false);
    let error = r["error"].as_str().expect("an error");
    assert!(
        error.starts_with(&format!("redis at {address}: ")) && error.contains("refused"),
        "{error}"
    );
    assert_eq!(r["address"], address.as_str());

    // And back.
    let _redis = Redis::start(port, None);
    wait_redis(&d, "redis reachable again", |r| r["reachable"] == true);
}

#[test]
fn a_redis_that_wants_a_password_is_reported_as_such() {
    let root = Root::new();
    let d = daemon(&root);
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let password = "a-password-the-daemon-never-sees";
    let _redis = Redis::start(port, Some(password));
    d.ok("livekitservice.configure", json!({"redis_address": address}));
    let r = wait_redis(&d, "the NOAUTH answer", |r| {
        r["error"].as_str().is_some_and(|e| e.contains("requires a password"))
    });
    assert_eq!(r["reachable"], false, "{r}");
    let error = r["error"].as_str().expect("error");
    assert!(
        error.contains(&address) && error.contains("requires a password"),
        "{error}"
    );
    assert!(!d.health().to_string().contains(password));

    // The operator's view says the same.
    let out = Command::new(bin("hero_livekit"))
        .arg("--socket")
        .arg(&d.socket)
        .arg("health")
        .output()
        .expect("run hero_livekit health");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("redis             {address} reachable: no")) && text.contains(error),
        "{text}"
    );
}

#[test]
fn a_new_redis_address_is_checked_at_once_not_at_the_next_period() {
    let root = Root::new();
    // A period far beyond the test: only configure's wake-up can check it.
    let d = Daemon::start(
        &root,
        DaemonOpts {
            env: vec![("HERO_LIVEKIT_REDIS_CHECK_MS".into(), "600000".into())],
            ..Default::default()
        },
    );
    configure_free_ports(&d);
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let _redis = Redis::start(port, None);
    d.ok("livekitservice.configure", json!({"redis_address": address}));
    let r = wait_redis(&d, "redis checked after configure", |r| r["reachable"] == true);
    assert_eq!(r["address"], address.as_str());
}

// ------------------------------------------------------------ the whole surface

/// A daemon supervising the livekit-server test double, checking Redis
/// every 100 ms.
fn double_daemon(root: &Root) -> Daemon {
    let d = Daemon::start(root, DaemonOpts::double().env_var("HERO_LIVEKIT_REDIS_CHECK_MS", 100));
    configure_free_ports(&d);
    d
}

/// `redis-cli` against 127.0.0.1:`port` (as `auth` when given); its stdout.
fn redis_cli(port: u16, auth: Option<(&str, &str)>, args: &[&str]) -> String {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "--no-auth-warning"]);
    if let Some((user, pass)) = auth {
        cmd.args(["--user", user, "--pass", pass]);
    }
    let out = cmd
        .args(args)
        .output()
        .expect("run redis-cli (Debian package redis-tools)");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn livekit(h: &Value) -> Value {
    h["processes"]["livekit-server"].clone()
}

/// Polls `health` until `want` holds for the whole document.
fn wait_health(d: &Daemon, what: &str, want: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    hero_livekit_tests::observe::poll(WAIT, || {
        last = d.health();
        want(&last).then(|| last.clone())
    })
    .unwrap_or_else(|| panic!("{what} within {WAIT:?}; last health: {last}"))
}

fn state_files(root: &Root) -> Vec<Vec<u8>> {
    ["runtime.json", "livekit.yaml", "backend.env"]
        .iter()
        .map(|f| std::fs::read(root.file(f)).expect("read"))
        .collect()
}

/// The ACL docs/operations.md gives for a Redis user shared by hero_livekit
/// and livekit-server: hero_livekit's own prefix, LiveKit's unprefixed
/// keys, every pub/sub channel, and no administrative command.
const ACL_RULES: &[&str] = &[
    "on",
    "resetkeys",
    "~hero_livekit:*",
    "~nodes",
    "~room_node_map",
    "~rooms",
    "~room_internal",
    "~room_participants:*",
    "~room_lock:*",
    "~egress*",
    "~ingress*",
    "~agent_dispatch:*",
    "~sip_*",
    "~livekit_version",
    "resetchannels",
    "&*",
    "-@all",
    "+@connection",
    "+@read",
    "+@write",
    "+@keyspace",
    "+@pubsub",
    "+@transaction",
    "+@scripting",
    "-@dangerous",
];

#[test]
fn an_acl_user_with_a_password_and_a_db_is_rendered_checked_and_accepted_by_the_double() {
    let root = Root::new();
    let d = double_daemon(&root);
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let admin = "admin-password-never-in-files";
    let password = "user pw: #with \"quotes\" and spaces";
    let _redis = Redis::start(port, Some(admin));
    let mut acl = vec!["ACL", "SETUSER", "livekit", ">user pw: #with \"quotes\" and spaces"];
    acl.extend(ACL_RULES);
    assert_eq!(redis_cli(port, Some(("default", admin)), &acl), "OK");
    // The ACL is real: the user may not touch a key outside it.
    let refused = redis_cli(port, Some(("livekit", password)), &["SET", "elsewhere", "1"]);
    assert!(refused.contains("NOPERM"), "{refused}");
    assert_eq!(
        redis_cli(
            port,
            Some(("livekit", password)),
            &["SET", "hero_livekit:{c}:probe", "1"]
        ),
        "OK"
    );

    d.ok(
        "livekitservice.configure",
        json!({"redis_address": address, "redis_username": "livekit", "redis_password": password, "redis_db": 3}),
    );
    let yaml = std::fs::read_to_string(root.file("livekit.yaml")).expect("yaml");
    assert!(
        yaml.contains(&format!(
            "redis:\n  address: \"{address}\"\n  username: \"livekit\"\n  password: \"user pw: #with \\\"quotes\\\" and spaces\"\n  db: 3\n"
        )),
        "{yaml}"
    );
    let runtime: Value =
        serde_json::from_slice(&std::fs::read(root.file("runtime.json")).expect("runtime")).expect("json");
    assert_eq!(
        (
            &runtime["redis_username"],
            &runtime["redis_password"],
            &runtime["redis_db"]
        ),
        (&json!("livekit"), &json!(password), &json!(3))
    );
    let r = wait_redis(&d, "the ACL user is accepted", |r| r["reachable"] == true);
    assert_eq!(r["address"], address);

    d.ok("livekitservice.start", json!({}));
    let h = wait_health(&d, "ready for tokens over Redis", |h| h["ready_for_tokens"] == true);
    assert_eq!(livekit(&h)["state"], "running");
    let text = h.to_string() + &d.stderr();
    assert!(
        !text.contains("user pw") && !text.contains(admin),
        "a Redis password leaked"
    );

    // A wrong password is refused in plain words, without the password;
    // the restarted livekit-server cannot connect and waits for Redis.
    let r = d.call(
        "livekitservice.configure",
        json!({"redis_password": "not-the-password"}),
    );
    assert_eq!(r["error"]["data"]["kind"], "start_failed", "{r}");
    let r = wait_redis(&d, "the wrong password", |r| r["reachable"] == false);
    let error = r["error"].as_str().expect("error");
    assert!(
        error.contains("auth refused") && !error.contains("not-the-password"),
        "{error}"
    );
    let h = wait_health(&d, "livekit-server waiting for Redis", |h| {
        livekit(h)["reason"]
            .as_str()
            .is_some_and(|r| r.contains("auth refused"))
    });
    assert_eq!(livekit(&h)["state"], "backoff", "{h}");
    assert!(!h.to_string().contains("not-the-password"));

    // The fix starts the waiting livekit-server from the new file at once.
    d.ok("livekitservice.configure", json!({"redis_password": password}));
    let h = wait_health(&d, "ready again with the right password", |h| {
        h["ready_for_tokens"] == true
    });
    assert_eq!(livekit(&h)["state"], "running");
}

#[test]
fn bad_redis_values_are_refused_naming_the_field_and_nothing_is_written() {
    let root = Root::new();
    let d = daemon(&root);
    d.ok("livekitservice.configure", json!({"redis_address": "127.0.0.1:6379"}));
    let before = state_files(&root);
    let cases = [
        (json!({"redis_db": 16}), "redis_db"),
        (json!({"redis_password": "line\nbreak-LEAK"}), "redis_password"),
        (json!({"redis_username": "u"}), "redis_username"),
        (json!({"redis_tls_ca_file": "/etc/passwd"}), "redis_tls_ca_file"),
        (
            json!({"redis_tls": true, "redis_tls_ca_file": "/nonexistent/ca.pem"}),
            "redis_tls_ca_file",
        ),
        (
            json!({"redis_tls": true, "redis_tls_cert_file": "/etc/hostname"}),
            "redis_tls_cert_file",
        ),
        (
            json!({"redis_sentinel_addresses": ["10.0.0.1:26379"]}),
            "redis_sentinel_addresses",
        ),
        (json!({"redis_cluster_addresses": ["nope"]}), "redis_cluster_addresses"),
        (
            json!({"redis_cluster_addresses": "10.0.0.1:7000"}),
            "redis_cluster_addresses",
        ),
        (json!({"unset": ["redis_address"], "redis_db": 2}), "redis_db"),
    ];
    for (params, field) in cases {
        let r = d.call("livekitservice.configure", params.clone());
        assert_eq!(r["error"]["code"], -32602, "{params}: {r}");
        let message = r["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{params}: {message}");
        assert!(!r.to_string().contains("LEAK"), "{r}");
        assert_eq!(state_files(&root), before, "{params} changed a file");
    }
}

#[test]
fn the_cli_takes_every_redis_flag_and_unset_removes_them() {
    let root = Root::new();
    let d = daemon(&root);
    let cli = |args: &[&str]| {
        Command::new(bin("hero_livekit"))
            .arg("--socket")
            .arg(&d.socket)
            .args(args)
            .output()
            .expect("run hero_livekit")
    };
    let out = cli(&[
        "configure",
        "--redis-sentinel-master",
        "mymaster",
        "--redis-sentinel-addresses",
        "10.0.0.1:26379",
        "--redis-sentinel-addresses",
        "10.0.0.2:26379",
        "--redis-sentinel-username",
        "watcher",
        "--redis-sentinel-password",
        "sentinel-pw",
        "--redis-password",
        "master-pw",
        "--redis-db",
        "2",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let yaml = std::fs::read_to_string(root.file("livekit.yaml")).expect("yaml");
    assert!(
        yaml.contains(
            "redis:\n  password: \"master-pw\"\n  db: 2\n  sentinel_master_name: \"mymaster\"\n  sentinel_username: \"watcher\"\n  sentinel_password: \"sentinel-pw\"\n  sentinel_addresses: [\"10.0.0.1:26379\", \"10.0.0.2:26379\"]\n"
        ),
        "{yaml}"
    );
    assert_eq!(
        d.health()["redis"]["address"],
        "sentinel mymaster@10.0.0.1:26379,10.0.0.2:26379"
    );
    let out = cli(&[
        "configure",
        "--unset",
        "redis-sentinel-master",
        "--unset",
        "redis-sentinel-addresses",
        "--unset",
        "redis-sentinel-username",
        "--unset",
        "redis-sentinel-password",
        "--unset",
        "redis-password",
        "--unset",
        "redis-db",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let yaml = std::fs::read_to_string(root.file("livekit.yaml")).expect("yaml");
    assert!(!yaml.contains("redis"), "{yaml}");
    assert!(d.health().get("redis").is_none());
}

#[test]
fn an_old_runtime_json_with_only_redis_address_loads_unchanged() {
    let root = Root::new();
    {
        let d = daemon(&root);
        d.ok("livekitservice.configure", json!({"redis_address": "10.0.0.5:6379"}));
    }
    // The triple as a version without the other Redis settings wrote it:
    // no redis_* key besides the address. The next daemon takes it as it
    // is and writes nothing.
    let before = state_files(&root);
    let runtime = String::from_utf8(before[0].clone()).expect("utf8");
    assert!(!runtime.contains("redis_username") && runtime.contains("\"redis_address\": \"10.0.0.5:6379\""));
    let mtimes: Vec<_> = ["runtime.json", "livekit.yaml", "backend.env"]
        .iter()
        .map(|f| {
            std::fs::metadata(root.file(f))
                .and_then(|m| m.modified())
                .expect("mtime")
        })
        .collect();
    let d = Daemon::start(&root, DaemonOpts::default());
    let h = d.health();
    assert_eq!(h["consistent"], true, "{h}");
    assert_eq!(h["redis"]["address"], "10.0.0.5:6379");
    assert_eq!(state_files(&root), before);
    let after: Vec<_> = ["runtime.json", "livekit.yaml", "backend.env"]
        .iter()
        .map(|f| {
            std::fs::metadata(root.file(f))
                .and_then(|m| m.modified())
                .expect("mtime")
        })
        .collect();
    assert_eq!(mtimes, after, "an upgrade rewrote a consistent triple");
}

// ------------------------------------------------------------ TLS

/// A CA, a server certificate for 127.0.0.1, `localhost` and `redis.test`,
/// and a client certificate, made with openssl in `dir`.
fn make_certificates(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("run openssl (Debian package openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=hero_livekit test CA",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:redis.test\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("ext");
    for (name, ext) in [("server", "server.ext"), ("client", "client.ext")] {
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            ext,
        ]);
    }
    // A second CA that signed nothing here: trusting it must fail.
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "other.key",
        "-out",
        "other.pem",
        "-days",
        "2",
        "-subj",
        "/CN=another CA",
    ]);
}

#[test]
fn redis_over_tls_with_a_client_certificate_and_a_server_name() {
    let root = Root::new();
    let certs = tempfile::tempdir().expect("tempdir");
    make_certificates(certs.path());
    let p = |f: &str| certs.path().join(f).to_string_lossy().into_owned();
    let port = free_port();
    let (tls_port, server_pem, server_key, ca_pem) = (port.to_string(), p("server.pem"), p("server.key"), p("ca.pem"));
    // tls-auth-clients defaults to yes: the client certificate is required.
    let _redis = Redis::spawn(
        port,
        &[
            "--port",
            "0",
            "--tls-port",
            &tls_port,
            "--tls-cert-file",
            &server_pem,
            "--tls-key-file",
            &server_key,
            "--tls-ca-cert-file",
            &ca_pem,
        ],
    );
    let d = double_daemon(&root);
    let address = format!("127.0.0.1:{port}");
    d.ok(
        "livekitservice.configure",
        json!({
            "redis_address": address, "redis_tls": true, "redis_tls_ca_file": ca_pem,
            "redis_tls_cert_file": p("client.pem"), "redis_tls_key_file": p("client.key"),
        }),
    );
    let yaml = std::fs::read_to_string(root.file("livekit.yaml")).expect("yaml");
    assert!(
        yaml.contains(&format!(
            "  tls:\n    enabled: true\n    ca_cert_file: \"{ca_pem}\"\n    client_cert_file: \"{}\"\n    client_key_file: \"{}\"\n",
            p("client.pem"),
            p("client.key")
        )) && !yaml.contains("use_tls"),
        "{yaml}"
    );
    wait_redis(&d, "TLS with a client certificate", |r| r["reachable"] == true);
    d.ok("livekitservice.start", json!({}));
    wait_health(&d, "ready over TLS Redis", |h| h["ready_for_tokens"] == true);

    // The certificate is verified against the server name, not the address.
    d.ok(
        "livekitservice.configure",
        json!({"redis_tls_server_name": "redis.test"}),
    );
    wait_redis(&d, "verified as redis.test", |r| r["reachable"] == true);
    wait_health(&d, "ready with the server name", |h| h["ready_for_tokens"] == true);

    // A CA that did not sign the server's certificate: a TLS failure.
    let _ = d.call("livekitservice.configure", json!({"redis_tls_ca_file": p("other.pem")}));
    let r = wait_redis(&d, "an untrusted certificate", |r| r["reachable"] == false);
    assert!(r["error"].as_str().is_some_and(|e| e.contains("TLS failed")), "{r}");
}

// ------------------------------------------------------------ Sentinel

#[test]
fn sentinels_name_the_master_with_their_own_credentials() {
    let root = Root::new();
    let (master_port, sentinel_port) = (free_port(), free_port());
    let master_pw = "master-pw";
    let sentinel_pw = "sentinel-pw";
    let _master = Redis::start(master_port, Some(master_pw));
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
    let _sentinel = Redis::spawn(sentinel_port, &[&conf, "--sentinel"]);
    let d = double_daemon(&root);
    d.ok(
        "livekitservice.configure",
        json!({
            "redis_sentinel_master": "mymaster",
            "redis_sentinel_addresses": [format!("127.0.0.1:{sentinel_port}")],
            "redis_sentinel_password": sentinel_pw,
            "redis_password": master_pw,
        }),
    );
    let r = wait_redis(&d, "the sentinel's master answers", |r| r["reachable"] == true);
    assert_eq!(r["address"], format!("sentinel mymaster@127.0.0.1:{sentinel_port}"));
    d.ok("livekitservice.start", json!({}));
    wait_health(&d, "ready through Sentinel", |h| h["ready_for_tokens"] == true);

    // A wrong sentinel password is the sentinels refusing, not the master.
    let _ = d.call(
        "livekitservice.configure",
        json!({"redis_sentinel_password": "wrong-pw"}),
    );
    let r = wait_redis(&d, "the sentinel refuses", |r| r["reachable"] == false);
    assert!(!r.to_string().contains("wrong-pw"), "{r}");
}

// ------------------------------------------------------------ Redis trouble

#[test]
fn livekit_server_waits_for_a_redis_that_starts_late_and_never_ends_failed() {
    let root = Root::new();
    let d = double_daemon(&root);
    let port = free_port();
    d.ok(
        "livekitservice.configure",
        json!({"redis_address": format!("127.0.0.1:{port}")}),
    );
    wait_redis(&d, "nothing on the port yet", |r| r["reachable"] == false);
    // livekit-server exits 0 at startup (`unable to connect to redis`): it
    // waits for Redis, in backoff with the reason, instead of crash-looping.
    let _ = d.call("livekitservice.start", json!({"timeout_ms": 10000}));
    let h = wait_health(&d, "livekit-server waiting for Redis", |h| {
        livekit(h)["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("waiting for Redis"))
    });
    assert_eq!(livekit(&h)["state"], "backoff", "{h}");
    let out = Command::new(bin("hero_livekit"))
        .arg("--socket")
        .arg(&d.socket)
        .arg("health")
        .output()
        .expect("run hero_livekit health");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("reason: waiting for Redis"), "{text}");
    let log = std::fs::read_to_string(root.state().join("logs/livekit-server.log")).unwrap_or_default();
    assert!(log.contains("unable to connect to redis"), "{log}");
    // Long enough for a crash loop to reach `failed` several times over.
    let until = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < until {
        let state = livekit(&d.health())["state"].clone();
        assert_ne!(
            state, "failed",
            "livekit-server burnt its crash budget waiting for Redis"
        );
        std::thread::park_timeout(Duration::from_millis(50));
    }
    let _redis = Redis::start(port, None);
    let h = wait_health(&d, "ready once Redis answers", |h| h["ready_for_tokens"] == true);
    assert_eq!(livekit(&h)["state"], "running");
    assert!(livekit(&h).get("reason").is_none(), "{h}");
}

#[test]
fn a_running_livekit_server_is_degraded_not_restarted_while_redis_is_gone() {
    let root = Root::new();
    let d = double_daemon(&root);
    let port = free_port();
    let redis = Redis::start(port, None);
    d.ok(
        "livekitservice.configure",
        json!({"redis_address": format!("127.0.0.1:{port}")}),
    );
    d.ok("livekitservice.start", json!({}));
    let h = wait_health(&d, "ready", |h| h["ready_for_tokens"] == true);
    let (pid, restarts) = (livekit(&h)["pid"].clone(), livekit(&h)["restarts"].clone());

    drop(redis);
    let h = wait_health(&d, "degraded while Redis is gone", |h| {
        livekit(h)["reason"].as_str().is_some_and(|r| r.contains("406"))
    });
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["ready_for_tokens"], false);
    let lk = livekit(&h);
    assert_eq!(
        (&lk["state"], &lk["ready"], &lk["pid"]),
        (&json!("running"), &json!(false), &pid),
        "{h}"
    );
    assert!(
        lk["reason"]
            .as_str()
            .is_some_and(|r| r.contains("Redis is unreachable")),
        "{lk}"
    );

    let _redis = Redis::start(port, None);
    let h = wait_health(&d, "ready again with Redis back", |h| h["ready_for_tokens"] == true);
    let lk = livekit(&h);
    assert_eq!(
        (&lk["pid"], &lk["restarts"]),
        (&pid, &restarts),
        "livekit-server was restarted: {h}"
    );
}

// ------------------------------------------------------------ Cluster

#[test]
fn a_redis_cluster_is_checked_and_accepted_by_the_double() {
    let ports = [free_port(), free_port(), free_port()];
    let dirs: Vec<tempfile::TempDir> = ports.iter().map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let _nodes: Vec<Redis> = ports
        .iter()
        .zip(&dirs)
        .map(|(port, dir)| {
            let conf = dir.path().join("nodes.conf").to_string_lossy().into_owned();
            let port = port.to_string();
            // The bus port is named: Redis's default, the port + 10000, may
            // be another test's port or in the kernel's ephemeral range.
            let bus = free_port().to_string();
            Redis::spawn(
                port.parse().expect("port"),
                &[
                    "--port",
                    &port,
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
            .all(|p| redis_cli(*p, None, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
            .then_some(())
    });
    let root = Root::new();
    let d = double_daemon(&root);
    d.ok("livekitservice.configure", json!({"redis_cluster_addresses": addrs}));
    let yaml = std::fs::read_to_string(root.file("livekit.yaml")).expect("yaml");
    assert!(yaml.contains("redis:\n  cluster_addresses: [\"127.0.0.1:"), "{yaml}");
    let r = wait_redis(&d, "the cluster answers", |r| r["reachable"] == true);
    assert!(
        r["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("cluster 127.0.0.1:")),
        "{r}"
    );
    d.ok("livekitservice.start", json!({}));
    wait_health(&d, "ready on a Redis Cluster", |h| h["ready_for_tokens"] == true);
}

/// `restart` never trades a working child for one that cannot start
/// (issue 20, item 2): while the configured Redis does not answer,
/// restarting livekit-server (which would exit at startup) is refused
/// before anything is stopped, retryable, and the process keeps running.
#[test]
fn restart_while_redis_is_down_is_refused_and_the_running_server_is_kept() {
    let root = Root::new();
    let d = double_daemon(&root);
    let port = free_port();
    let redis = Redis::start(port, None);
    d.ok(
        "livekitservice.configure",
        json!({"redis_address": format!("127.0.0.1:{port}")}),
    );
    let s = d.ok("livekitservice.start", json!({"timeout_ms": 30000}));
    assert_eq!(s["ready_for_tokens"], true, "{s}");
    let pid = livekit(&d.health())["pid"].as_u64().expect("pid");

    drop(redis);
    wait_redis(&d, "redis unreachable", |r| r["reachable"] == false);
    let r = d.call("livekitservice.restart", json!({"process": "livekit-server"}));
    let e = r.get("error").unwrap_or_else(|| panic!("refused: {r}"));
    assert_eq!(e["data"]["kind"], "redis_unavailable", "{r}");
    assert_eq!(e["data"]["retryable"], true, "{r}");
    assert!(e["message"].as_str().unwrap_or("").contains("keeps serving"), "{r}");
    let lk = livekit(&d.health());
    assert_eq!(lk["pid"].as_u64(), Some(pid), "not stopped: {lk}");
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the same process still runs"
    );

    // Redis back: the restart goes through.
    let _redis = Redis::start(port, None);
    wait_redis(&d, "redis reachable again", |r| r["reachable"] == true);
    d.ok(
        "livekitservice.restart",
        json!({"process": "livekit-server", "timeout_ms": 30000}),
    );
    assert_ne!(livekit(&d.health())["pid"].as_u64(), Some(pid), "restarted");
}
