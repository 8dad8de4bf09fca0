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
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        if let Some(p) = password {
            cmd.args(["--requirepass", p]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run redis-server (Debian package redis-server; the test command installs it)");
        let redis = Redis { child };
        wait_for(WAIT, "redis-server to answer PING", || {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
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
