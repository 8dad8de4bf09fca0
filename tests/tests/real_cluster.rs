//! A real cluster: three real livekit-servers v1.13.5, each under its own
//! hero_livekit daemon, one real redis-server, and real participants that
//! join through different nodes' URLs, meet in one room (LiveKit routes
//! them over Redis) and hear each other. A credential change on one node:
//! afterwards joins through every node succeed and are heard.
//!
//! Everything runs in one network namespace of the test's own; see
//! `netns`. Also prints how long a joining node takes to be listed in
//! every member's `health.cluster.nodes` (announced, not polled), and
//! asserts it is well under the poll period.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use hero_livekit_tests::netns::Netns;
use hero_livekit_tests::observe::poll;
use hero_livekit_tests::participant::{Participant, HEARD_FRAMES};
use hero_livekit_tests::real::real_livekit_bin;
use hero_livekit_tests::*;
use serde_json::{json, Value};

/// Generous: three daemons, three real servers, Redis and Python
/// participants on two loaded cores.
const WAIT: Duration = Duration::from_secs(90);
const REDIS_PORT: u16 = 6379;

/// A redis-server inside the namespace; killed and reaped on drop.
struct NsRedis {
    child: Child,
    _dir: tempfile::TempDir,
}

impl NsRedis {
    fn start(ns: &Netns) -> NsRedis {
        let dir = tempfile::Builder::new()
            .prefix("hero_livekit_redis")
            .tempdir()
            .expect("redis dir");
        let child = ns
            .command("redis-server")
            .args([
                "--port",
                &REDIS_PORT.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
            ])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run redis-server (Debian package redis-server)");
        let r = NsRedis { child, _dir: dir };
        wait_for(WAIT, "redis-server to answer PING inside the namespace", || {
            let out = ns
                .command("redis-cli")
                .args(["-p", &REDIS_PORT.to_string(), "ping"])
                .stderr(Stdio::null())
                .output()
                .ok()?;
            String::from_utf8_lossy(&out.stdout).trim().eq("PONG").then_some(())
        });
        r
    }
}

impl Drop for NsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One node: a daemon in the namespace supervising the real server.
struct RealNode {
    d: Daemon,
    _root: Root,
    backend: u16,
}

impl RealNode {
    /// Node `i`: its own ports (HTTP 7000+i, ICE/TCP 7100+i, lk-backend
    /// 7200+i, UDP 50000+1000i..), loopback candidates, started.
    fn start(ns: &Netns, real: &Path, i: u16) -> RealNode {
        let root = Root::new();
        let d = Daemon::start(
            &root,
            DaemonOpts::default()
                .in_netns(ns)
                .arg("--livekit-bin")
                .arg(real.display().to_string()),
        );
        let udp = 50_000 + 1_000 * u32::from(i);
        d.ok(
            "livekitservice.configure",
            json!({
                "port": 7000 + i,
                "rtc_tcp_port": 7100 + i,
                "backend_port": 7200 + i,
                "rtc_port_range_start": udp,
                "rtc_port_range_end": udp + 999,
                "rtc_enable_loopback_candidate": true,
            }),
        );
        let r = d.ok("livekitservice.start", json!({"timeout_ms": 60000}));
        assert_eq!(r["ready_for_tokens"], true, "node {i}: {r}\n{}", d.stderr());
        RealNode {
            d,
            _root: root,
            backend: 7200 + i,
        }
    }

    fn join(&self, cluster: &str, token: Option<&str>) -> Value {
        let mut p = json!({"redis_address": format!("127.0.0.1:{REDIS_PORT}"), "cluster": cluster});
        if let Some(t) = token {
            p["cluster_token"] = json!(t);
        }
        self.d.ok("livekitservice.configure", p)
    }

    fn node_id(&self) -> String {
        let mut last = Value::Null;
        poll(WAIT, || {
            last = self.d.health();
            last["cluster"]["node_id"].as_str().map(str::to_string)
        })
        .unwrap_or_else(|| panic!("no cluster.node_id in health within {WAIT:?}: {last}"))
    }

    fn lists(&self, id: &str) -> bool {
        self.d.health()["cluster"]["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["id"] == id))
    }
}

/// Waits until every node runs `api_key`, proven ready, joined.
fn wait_all_run(nodes: &[RealNode], api_key: &str, what: &str) {
    for (i, n) in nodes.iter().enumerate() {
        let mut last = Value::Null;
        let ok = poll(WAIT, || {
            last = n.d.health();
            (last["api_key"] == api_key && last["ready_for_tokens"] == true && last["cluster"]["state"] == "joined")
                .then_some(())
        });
        assert!(ok.is_some(), "{what}: node {i} does not run {api_key}: {last}");
    }
}

/// How long until the node just joined (`id`) is listed in every member's
/// `health.cluster.nodes`, from `since` (the join call).
fn listed_everywhere(nodes: &[RealNode], id: &str, since: Instant) -> Duration {
    wait_for(
        WAIT,
        &format!("node {id} in every member's health.cluster.nodes"),
        || nodes.iter().all(|n| n.lists(id)).then(|| since.elapsed()),
    )
}

#[test]
fn participants_joining_through_different_nodes_hear_each_other_and_follow_a_credential_change() {
    let Some(real): Option<PathBuf> = real_livekit_bin() else {
        return;
    };
    let ns = Netns::new();
    let _redis = NsRedis::start(&ns);
    let mut nodes = vec![RealNode::start(&ns, &real, 0)];
    nodes[0].join("media", None);
    let token = nodes[0].d.ok("livekitservice.cluster_token", json!({}))["cluster_token"]
        .as_str()
        .expect("cluster_token")
        .to_string();
    let mut listing = Vec::new();
    for i in 1..3u16 {
        let n = RealNode::start(&ns, &real, i);
        let t = Instant::now();
        n.join("media", Some(&token));
        let id = n.node_id();
        nodes.push(n);
        listing.push(listed_everywhere(&nodes, &id, t));
    }
    println!(
        "a joining node listed in every member's health.cluster.nodes after: {} ms (issue 19 asks within 1000 ms)",
        listing
            .iter()
            .map(|d| format!("{:.0}", d.as_secs_f64() * 1e3))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // A join's first heartbeat is announced on the channel and members
    // sync on any message (about 0.1-0.2 s here; issue 19 asks 1 s). A
    // member that lost its Redis link reconnects and subscribes again
    // within 100 ms, not at its next poll (5 s), and lists what it missed in
    // the round that follows, so even a Redis call timing out (1 s) on a
    // loaded machine stays well inside this bound.
    for took in &listing {
        assert!(
            *took < Duration::from_millis(2500),
            "a joining node listed everywhere after {took:?}, not at once"
        );
    }
    let key = nodes[0].d.health()["api_key"].as_str().expect("api_key").to_string();
    wait_all_run(&nodes, &key, "after the joins");

    // One room, three nodes' URLs: each participant's token and URL come
    // from its own node's lk-backend.
    let mut alice = Participant::join(&ns, nodes[0].backend, "mesh", "alice", true);
    let mut bob = Participant::join(&ns, nodes[1].backend, "mesh", "bob", true);
    let mut carol = Participant::join(&ns, nodes[2].backend, "mesh", "carol", false);
    for (i, p) in [&mut alice, &mut bob, &mut carol].into_iter().enumerate() {
        let c = p.wait_connected(WAIT);
        let port = format!(":{}", 7000 + i);
        assert!(
            c["url"].as_str().is_some_and(|u| u.ends_with(&port)),
            "joined through node {i}: {c}"
        );
    }
    alice.wait_heard("bob", 0, HEARD_FRAMES, false, WAIT);
    bob.wait_heard("alice", 0, HEARD_FRAMES, false, WAIT);
    carol.wait_heard("alice", 0, HEARD_FRAMES, false, WAIT);
    carol.wait_heard("bob", 0, HEARD_FRAMES, false, WAIT);
    drop((alice, bob, carol));

    // A new credential on node 2: every node follows, and a join through
    // each node succeeds and is heard.
    let new_key = "APIrealcluster2".to_string();
    nodes[2].d.ok(
        "livekitservice.configure",
        json!({"api_key": new_key, "api_secret": "a-new-secret-for-the-real-cluster-".repeat(2)}),
    );
    wait_all_run(&nodes, &new_key, "after the change on node 2");
    let mut dave = Participant::join(&ns, nodes[0].backend, "after", "dave", true);
    let mut erin = Participant::join(&ns, nodes[1].backend, "after", "erin", false);
    let mut frank = Participant::join(&ns, nodes[2].backend, "after", "frank", false);
    for p in [&mut dave, &mut erin, &mut frank] {
        p.wait_connected(WAIT);
    }
    erin.wait_heard("dave", 0, HEARD_FRAMES, false, WAIT);
    frank.wait_heard("dave", 0, HEARD_FRAMES, false, WAIT);
}
