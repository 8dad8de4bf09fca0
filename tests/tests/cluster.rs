//! One credential across nodes through Redis (SPEC section 11): several
//! daemons with their own roots and ports on one machine, one real
//! `redis-server`, the livekit-server double and the real lk-backend on
//! every node; tokens minted by each node validated by every node.

use std::time::Duration;

use hero_livekit_tests::cluster::{cross_validate, wait_all_run, Node, Redis, Relay, WAIT};
use hero_livekit_tests::observe::{backend_token, poll, ports, validate};
use serde_json::{json, Value};

/// The cluster's poll period in these tests; pub/sub is the fast path.
const POLL_MS: u64 = 200;

/// A credential of our own making, valid for `configure`.
fn credential(tag: &str) -> (String, String) {
    (format!("APItest{tag:0>8}"), format!("secret-of-{tag}-").repeat(4))
}

fn change(n: &Node, tag: &str) -> Value {
    let (k, s) = credential(tag);
    n.d.call("livekitservice.configure", json!({"api_key": k, "api_secret": s}))
}

fn error_kind(r: &Value) -> &str {
    r["error"]["data"]["kind"].as_str().unwrap_or("")
}

/// A first node and `more` nodes joined with its join secret.
fn cluster(redis: &Redis, more: usize) -> Vec<Node> {
    let a = Node::start(POLL_MS);
    let r = a.join(&redis.address(), "c1", None);
    assert_eq!(r["cluster"]["published"], true, "{r}");
    assert_eq!(r["cluster"]["generation"], 1, "{r}");
    let token = a.cluster_token();
    let mut nodes = vec![a];
    for _ in 0..more {
        let n = Node::start(POLL_MS);
        n.join(&redis.address(), "c1", Some(&token));
        nodes.push(n);
    }
    nodes
}

fn refs(nodes: &[Node]) -> Vec<&Node> {
    nodes.iter().collect()
}

fn wait_cluster(n: &Node, what: &str, want: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    poll(WAIT, || {
        last = n.health()["cluster"].clone();
        want(&last).then(|| last.clone())
    })
    .unwrap_or_else(|| panic!("{what} within {WAIT:?}; last: {last}"))
}

#[test]
fn three_nodes_share_the_first_nodes_credential_and_follow_a_change_on_any_node() {
    let redis = Redis::start();
    let a = Node::start(POLL_MS);
    let first_key = a.health()["api_key"].as_str().expect("api key").to_string();
    let first_secret = a.secret();
    // A token issued before the cluster existed stays valid: the first node
    // publishes the credential it holds.
    let early = backend_token(ports(&a.d).backend);
    let r = a.join(&redis.address(), "c1", None);
    assert_eq!(r["cluster"]["published"], true, "{r}");
    assert_eq!(r["cluster"]["credential_replaced"], false, "{r}");
    assert_eq!(a.secret(), first_secret, "the first node keeps its secret");
    let token = a.cluster_token();

    let b = Node::start(POLL_MS);
    let c = Node::start(POLL_MS);
    let b_events = Events::tap(&b);
    for n in [&b, &c] {
        let own_key = n.health()["api_key"].as_str().expect("key").to_string();
        assert_ne!(own_key, first_key, "each node minted its own credential");
        let r = n.join(&redis.address(), "c1", Some(&token));
        assert_eq!(r["cluster"]["published"], false, "{r}");
        assert_eq!(
            r["cluster"]["credential_replaced"], true,
            "a node with its own credential says it replaced it: {r}"
        );
        assert_eq!(r["api_key"], first_key.as_str());
        assert!(r["changed_fields"].to_string().contains("api_secret"), "{r}");
    }
    let joined = b_events.wait("cluster_joined");
    assert_eq!(joined["published"], false, "{joined}");
    let replaced = b_events.wait("credential_replaced");
    assert_eq!(replaced["api_key"], first_key.as_str(), "{replaced}");
    assert_eq!(replaced["cluster"], "c1", "{replaced}");
    assert!(!replaced.to_string().contains(&first_secret), "{replaced}");
    let nodes = [&a, &b, &c];
    wait_all_run(&nodes, &first_key, "after joining");
    cross_validate(&nodes);
    for n in nodes {
        assert_eq!(
            validate(ports(&n.d).livekit, &early).0,
            200,
            "the early token on every node"
        );
        assert_eq!(n.secret(), first_secret);
    }
    let status = wait_cluster(&a, "three nodes in the heartbeats", |c| {
        c["nodes"].as_array().is_some_and(|n| n.len() == 3)
    });
    assert_eq!(status["name"], "c1");
    assert_eq!(status["generation"], 1);

    // A change on B: written to Redis first, then every node follows.
    let r = change(&b, "b2");
    assert!(r.get("error").is_none(), "{r}");
    let (k2, s2) = credential("b2");
    let changed = b_events.wait("cluster_credential_changed");
    assert_eq!(
        (changed["generation"].as_u64(), changed["api_key"].as_str()),
        (Some(2), Some(k2.as_str()))
    );
    wait_all_run(&nodes, &k2, "after the change on B");
    cross_validate(&nodes);
    for n in nodes {
        assert_eq!(n.secret(), s2);
        assert_eq!(n.health()["cluster"]["generation"], 2);
    }

    // start --reset on C rotates the cluster's credential, not only C's.
    let r = c.d.ok("livekitservice.start", json!({"reset": true}));
    assert_eq!(r["rotated"], true);
    let k3 = c.health()["api_key"].as_str().expect("key").to_string();
    assert_ne!(k3, k2);
    wait_all_run(&nodes, &k3, "after start --reset on C");
    cross_validate(&nodes);
    let status = wait_cluster(&b, "generation 3 everywhere", |c| {
        c["generation"] == 3
            && c["nodes"]
                .as_array()
                .is_some_and(|n| n.len() == 3 && n.iter().all(|n| n["generation"] == 3))
    });
    assert!(!status.to_string().contains(&c.secret()), "{status}");

    // The operator's table.
    let out = std::process::Command::new(hero_livekit_tests::bin("hero_livekit"))
        .arg("--socket")
        .arg(&a.d.socket)
        .args(["cluster", "status"])
        .output()
        .expect("run hero_livekit cluster status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("c1") && text.contains("(this node)") && text.contains("GENERATION"),
        "{text}"
    );
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(hero_livekit_tests::bin("hero_livekit"))
            .arg("--socket")
            .arg(&b.d.socket)
            .args(args)
            .output()
            .expect("run hero_livekit");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let data: Value = serde_json::from_str(&cli(&["--json", "cluster", "status"])).expect("json");
    assert_eq!(data["state"], "joined", "{data}");
    assert_eq!(data["nodes"].as_array().map(Vec::len), Some(3), "{data}");
    assert_eq!(
        cli(&["cluster", "token"]).trim(),
        token,
        "every member prints the join secret"
    );
}

/// A node's event stream, subscribed before `tap` returns.
struct Events {
    lines: std::sync::mpsc::Receiver<Value>,
}

impl Events {
    fn tap(n: &Node) -> Events {
        let socket = n.d.socket.clone();
        let (tx, lines) = std::sync::mpsc::channel();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let client = hero_livekit_client::Client::new(&socket);
                let mut events = client.subscribe_events().await.expect("subscribe");
                let _ = ready_tx.send(());
                while let Some(m) = events.next().await {
                    let v = serde_json::to_value(&m).expect("event as json");
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            });
        });
        ready.recv_timeout(WAIT).expect("subscribed to events");
        Events { lines }
    }

    /// The next event of `kind`, skipping others.
    fn wait(&self, kind: &str) -> Value {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) if v["type"] == kind => return v,
                Ok(_) => {}
                Err(e) => panic!("no {kind} event within {WAIT:?}: {e}"),
            }
        }
    }
}

/// A peer admitted through `--socket-group` (uid nobody here) reads the
/// cluster's status but never its join secret.
fn as_nobody(socket: &std::path::Path, method: &str) -> Value {
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": {}}).to_string();
    let request = format!(
        "POST /rpc HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let script = "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\ns.sendall(sys.stdin.buffer.read())\nd=b''\nwhile True:\n  c=s.recv(65536)\n  if not c: break\n  d+=c\nsys.stdout.buffer.write(d)\n";
    let mut child = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(socket)
        .uid(65534)
        .gid(65534)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn python3 as nobody");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(request.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    hero_livekit_tests::parse_http(&out.stdout).json()
}

#[test]
fn the_join_secret_is_for_full_access_peers_only_and_kept_in_a_0600_file() {
    use std::os::unix::fs::PermissionsExt;
    let redis = Redis::start();
    let root = hero_livekit_tests::Root::new();
    let public = tempfile::Builder::new()
        .prefix("hero_livekit_sock")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(public.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let socket = public.path().join("hero_livekit_server/rpc.sock");
    let d = hero_livekit_tests::Daemon::start(
        &root,
        hero_livekit_tests::DaemonOpts::default()
            .arg("--socket")
            .arg(socket.display().to_string())
            .arg("--socket-group")
            .arg("65534")
            .env_var("HERO_LIVEKIT_CLUSTER_POLL_MS", POLL_MS),
    );
    d.ok(
        "livekitservice.configure",
        json!({"redis_address": redis.address(), "cluster": "c1"}),
    );
    let token = d.ok("livekitservice.cluster_token", json!({}))["cluster_token"]
        .as_str()
        .expect("token")
        .to_string();
    let file = root.file("cluster.json");
    assert_eq!(
        std::fs::metadata(&file).expect("cluster.json").permissions().mode() & 0o777,
        0o600
    );

    let r = as_nobody(&socket, "livekitservice.cluster_token");
    assert_eq!(r["error"]["data"]["kind"], "unauthorized", "{r}");
    assert!(!r.to_string().contains(&token));
    let status = poll(WAIT, || {
        let r = as_nobody(&socket, "livekitservice.cluster_status");
        (r["result"]["state"] == "joined").then_some(r)
    })
    .expect("the status, readable by the group");
    assert_eq!(status["result"]["name"], "c1", "{status}");
    for m in ["livekitservice.cluster_status", "livekitservice.health"] {
        assert!(!as_nobody(&socket, m).to_string().contains(&token), "{m}");
    }
    // Nor is it in the daemon's log.
    assert!(!d.stderr().contains(&token));
}

#[test]
fn a_wrong_join_secret_changes_nothing_on_the_node_or_in_redis() {
    let redis = Redis::start();
    let nodes = cluster(&redis, 0);
    let b = Node::start(POLL_MS);
    let before = b.triple();
    let record = || redis.cli(&["GET", "hero_livekit:{c1}:credential"]);
    let record_before = record();
    assert!(!record_before.trim().is_empty());

    let wrong = "a-join-secret-of-another-cluster-0123456789";
    let r = b.d.call(
        "livekitservice.configure",
        json!({"redis_address": redis.address(), "cluster": "c1", "cluster_token": wrong}),
    );
    assert_eq!(error_kind(&r), "cluster_token_rejected", "{r}");
    assert_eq!(r["error"]["data"]["retryable"], false);
    let msg = r["error"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("does not open") && msg.contains("nothing was changed"),
        "{msg}"
    );
    assert!(!msg.contains(wrong), "{msg}");

    // No join secret at all for a cluster that exists: refused too.
    let r = b.d.call(
        "livekitservice.configure",
        json!({"redis_address": redis.address(), "cluster": "c1"}),
    );
    assert_eq!(error_kind(&r), "cluster_token_rejected", "{r}");

    assert_eq!(b.triple(), before, "no file of the triple changed");
    assert!(!b.root.file("cluster.json").exists(), "no membership stored");
    assert_eq!(b.health()["cluster"]["state"], "not_configured");
    assert_eq!(record(), record_before, "the record in Redis is untouched");
    let r = b.d.call("livekitservice.cluster_token", json!({}));
    assert_eq!(error_kind(&r), "not_in_cluster", "{r}");

    // Bad input names its field and writes nothing.
    for (params, field) in [
        (json!({"cluster": "c1"}), "cluster"),
        (json!({"redis_address": redis.address(), "cluster": "a:b"}), "cluster"),
        (
            json!({"redis_address": redis.address(), "cluster": "c1", "cluster_token": "short"}),
            "cluster_token",
        ),
        (json!({"cluster_token": "x".repeat(40)}), "cluster_token"),
        (
            json!({"redis_address": redis.address(), "cluster": "c1", "api_key": "APIabcdefghijkm"}),
            "cluster",
        ),
    ] {
        let r = b.d.call("livekitservice.configure", params.clone());
        assert_eq!(r["error"]["code"], -32602, "{params}: {r}");
        assert_eq!(r["error"]["data"]["field"], field, "{params}: {r}");
    }
    assert_eq!(b.triple(), before);
    drop(nodes);
}

#[test]
fn redis_trouble_never_costs_a_credential() {
    let mut redis = Redis::start();
    let nodes = cluster(&redis, 2);
    let all = refs(&nodes);
    let key = nodes[0].health()["api_key"].as_str().expect("key").to_string();
    wait_all_run(&all, &key, "after joining");
    let triples: Vec<_> = nodes.iter().map(Node::triple).collect();

    wait_cluster(&nodes[0], "three nodes in the heartbeats", |c| {
        c["nodes"].as_array().is_some_and(|n| n.len() == 3)
    });

    // Redis gone: every node keeps serving with what it has and says so.
    redis.kill();
    for n in &nodes {
        wait_cluster(n, "unreachable", |c| c["state"] == "unreachable");
    }
    // The nodes last seen are still listed, their age growing.
    wait_cluster(&nodes[0], "the nodes' heartbeats ageing", |c| {
        c["nodes"]
            .as_array()
            .is_some_and(|n| n.len() == 3 && n.iter().all(|n| n["last_seen_ms"].as_u64().is_some_and(|ms| ms >= 500)))
    });
    cross_validate(&all);
    let r = change(&nodes[1], "x1");
    assert_eq!(error_kind(&r), "redis_unavailable", "{r}");
    assert_eq!(r["error"]["data"]["retryable"], true, "{r}");
    let r = nodes[2].d.call("livekitservice.start", json!({"reset": true}));
    assert_eq!(error_kind(&r), "redis_unavailable", "{r}");
    for (n, t) in nodes.iter().zip(&triples) {
        assert_eq!(&n.triple(), t, "a refused change changed nothing");
    }

    // Back empty (no persistence): re-published, nobody rotates.
    redis.restart();
    wait_all_run(&all, &key, "after Redis came back empty");
    assert!(!redis.cli(&["GET", "hero_livekit:{c1}:credential"]).trim().is_empty());
    cross_validate(&all);
    for (n, t) in nodes.iter().zip(&triples) {
        assert_eq!(&n.triple(), t, "secrets byte-for-byte unchanged");
    }

    // Flushed while all serve: the same.
    redis.cli(&["FLUSHALL"]);
    poll(WAIT, || {
        (!redis.cli(&["GET", "hero_livekit:{c1}:credential"]).trim().is_empty()).then_some(())
    })
    .expect("re-published after FLUSHALL");
    wait_all_run(&all, &key, "after FLUSHALL");
    for (n, t) in nodes.iter().zip(&triples) {
        assert_eq!(&n.triple(), t, "secrets byte-for-byte unchanged after FLUSHALL");
    }
    // And the cluster still changes as one.
    let r = change(&nodes[2], "after");
    assert!(r.get("error").is_none(), "{r}");
    wait_all_run(&all, &credential("after").0, "a change after the outage");
    cross_validate(&all);
}

#[test]
fn two_nodes_changing_the_credential_at_once_end_with_one_winner_everywhere() {
    let redis = Redis::start();
    let nodes = cluster(&redis, 2);
    let all = refs(&nodes);
    let key = nodes[0].health()["api_key"].as_str().expect("key").to_string();
    wait_all_run(&all, &key, "after joining");

    let (ra, rb) = std::thread::scope(|s| {
        let a = s.spawn(|| change(&nodes[0], "racea"));
        let b = s.spawn(|| change(&nodes[1], "raceb"));
        (a.join().expect("a"), b.join().expect("b"))
    });
    let ok: Vec<&str> = [(&ra, "racea"), (&rb, "raceb")]
        .iter()
        .filter(|(r, _)| r.get("error").is_none())
        .map(|(_, t)| *t)
        .collect();
    assert!(!ok.is_empty(), "at least one change wins: {ra} {rb}");
    for r in [&ra, &rb] {
        if r.get("error").is_some() {
            assert_eq!(error_kind(r), "generation_conflict", "{r}");
            let msg = r["error"]["message"].as_str().unwrap_or("");
            assert!(
                msg.contains("generation 2"),
                "the loser hears the winner's generation: {msg}"
            );
        }
    }
    // Both may have succeeded one after the other (the second node had
    // already applied the first); the last generation wins everywhere.
    let last = wait_cluster(&nodes[2], "the last generation", |c| {
        c["generation"] == 1 + ok.len() as u64
    });
    let winner_key = nodes[2].health()["api_key"].as_str().expect("key").to_string();
    assert!(
        ok.iter().any(|t| credential(t).0 == winner_key),
        "the winner is one of the changes: {winner_key} {last}"
    );
    wait_all_run(&all, &winner_key, "one winner everywhere");
    cross_validate(&all);
}

#[test]
fn the_secret_is_never_in_clear_in_redis_nor_in_its_files() {
    let redis = Redis::start_with(true);
    let nodes = cluster(&redis, 1);
    let all = refs(&nodes);
    let first = nodes[0].secret();
    let token = nodes[0].cluster_token();
    let r = change(&nodes[1], "sealed");
    assert!(r.get("error").is_none(), "{r}");
    let (k2, s2) = credential("sealed");
    wait_all_run(&all, &k2, "after the change");
    redis.cli(&["SAVE"]);

    let dump = redis.dump();
    assert!(
        dump.iter().any(|(k, _)| k == "hero_livekit:{c1}:credential"),
        "{dump:?}"
    );
    assert!(
        dump.iter().all(|(k, _)| k.starts_with("hero_livekit:{c1}:")),
        "only our prefix: {dump:?}"
    );
    for (k, v) in &dump {
        for secret in [&first, &s2, &token] {
            assert!(
                !v.contains(secret.as_str()) && !k.contains(secret.as_str()),
                "{k} holds a secret in clear"
            );
        }
    }
    let files = redis.files();
    assert!(
        files.iter().any(|(p, _)| p.ends_with("dump.rdb"))
            && files.iter().any(|(p, _)| p.to_string_lossy().contains("appendonly")),
        "RDB and AOF written: {:?}",
        files.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    for (p, bytes) in &files {
        for secret in [&first, &s2, &token] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds a secret in clear",
                p.display()
            );
        }
    }
    // The health documents do not either.
    for n in &nodes {
        let h = n.health().to_string();
        assert!(!h.contains(&s2) && !h.contains(&token), "{h}");
    }
}

#[test]
fn a_node_cut_off_from_redis_keeps_serving_and_converges_when_the_path_is_back() {
    let redis = Redis::start();
    let relay = Relay::start(&redis.address());
    let a = Node::start(POLL_MS);
    a.join(&redis.address(), "c1", None);
    let token = a.cluster_token();
    let b = Node::start(POLL_MS);
    b.join(&relay.address(), "c1", Some(&token));
    let key = a.health()["api_key"].as_str().expect("key").to_string();
    wait_all_run(&[&a, &b], &key, "after joining");

    relay.cut();
    let r = change(&a, "cut");
    assert!(r.get("error").is_none(), "{r}");
    let (k2, _) = credential("cut");
    wait_all_run(&[&a], &k2, "A runs the change");
    wait_cluster(&b, "B unreachable", |c| c["state"] == "unreachable");
    // B keeps serving with what it holds.
    let p = ports(&b.d);
    assert_eq!(validate(p.livekit, &backend_token(p.backend)).0, 200);
    assert_eq!(b.health()["api_key"], key.as_str());
    // A change on the cut node is refused, retryable, within its bound.
    let started = std::time::Instant::now();
    let r = change(&b, "refused");
    assert_eq!(error_kind(&r), "redis_unavailable", "{r}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());

    relay.mend();
    wait_all_run(&[&a, &b], &k2, "B converges once its path is back");
    cross_validate(&[&a, &b]);
}

#[test]
fn a_member_that_was_down_during_a_change_catches_up_from_its_stored_membership() {
    let redis = Redis::start();
    let mut nodes = cluster(&redis, 1);
    let key = nodes[0].health()["api_key"].as_str().expect("key").to_string();
    wait_all_run(&refs(&nodes), &key, "after joining");

    // B goes down, daemon and children; the cluster moves on without it.
    let Node { d, root } = nodes.pop().expect("B");
    drop(d);
    let r = change(&nodes[0], "whiledown");
    assert!(r.get("error").is_none(), "{r}");
    let (k2, s2) = credential("whiledown");

    // B boots on its root: its stored membership brings it in step.
    let d = hero_livekit_tests::Daemon::start(
        &root,
        hero_livekit_tests::DaemonOpts::double().env_var("HERO_LIVEKIT_CLUSTER_POLL_MS", POLL_MS),
    );
    nodes.push(Node { d, root });
    wait_all_run(&refs(&nodes), &k2, "B caught up after its restart");
    assert_eq!(nodes[1].secret(), s2);
    assert_eq!(nodes[1].health()["cluster"]["generation"], 2);
    cross_validate(&refs(&nodes));
}

#[test]
fn a_redis_back_with_an_older_snapshot_gets_the_current_generation_back() {
    let mut redis = Redis::start();
    let nodes = cluster(&redis, 1);
    let all = refs(&nodes);
    let key = nodes[0].health()["api_key"].as_str().expect("key").to_string();
    wait_all_run(&all, &key, "after joining");
    // A snapshot at generation 1, then the cluster moves to generation 2.
    redis.cli(&["SAVE"]);
    let r = change(&nodes[1], "newer");
    assert!(r.get("error").is_none(), "{r}");
    let (k2, _) = credential("newer");
    wait_all_run(&all, &k2, "after the change");
    let triples: Vec<_> = nodes.iter().map(Node::triple).collect();

    // Redis restarts from the old snapshot: nobody goes back to it.
    redis.kill();
    redis.restart();
    poll(WAIT, || {
        let raw = redis.cli(&["GET", "hero_livekit:{c1}:credential"]);
        let rec: Value = serde_json::from_str(raw.trim()).ok()?;
        (rec["generation"] == 2).then_some(())
    })
    .expect("generation 2 written back over the snapshot's generation 1");
    assert!(
        nodes
            .iter()
            .any(|n| n.d.stderr().contains("redis held an older generation")),
        "a node found the snapshot's generation 1 and restored over it"
    );
    wait_all_run(&all, &k2, "after the old snapshot came back");
    for (n, t) in nodes.iter().zip(&triples) {
        assert_eq!(&n.triple(), t, "no node went back to the snapshot's credential");
    }
    cross_validate(&all);
}

/// A joining node is listed in every member's `health.cluster.nodes` at
/// once: its first heartbeat is announced on the channel, and members sync
/// on any message. The poll here is 30 s, so only the announcement can make
/// the bound (issue 19 item 7 asks 1 s; 2.5 s leaves room for a loaded
/// 2-core machine).
#[test]
fn a_joining_node_is_listed_by_every_member_within_a_second_not_at_the_next_poll() {
    const SLOW_POLL_MS: u64 = 30_000;
    let redis = Redis::start();
    let a = Node::start(SLOW_POLL_MS);
    a.join(&redis.address(), "c1", None);
    let token = a.cluster_token();
    wait_cluster(&a, "the first node joined", |c| c["state"] == "joined");
    let mut nodes = vec![a];
    let mut listing = Vec::new();
    for _ in 0..2 {
        let n = Node::start(SLOW_POLL_MS);
        let t = std::time::Instant::now();
        let r = n.join(&redis.address(), "c1", Some(&token));
        let id = r["cluster"]["node_id"].as_str().expect("node_id").to_string();
        nodes.push(n);
        let took = poll(WAIT, || {
            nodes
                .iter()
                .all(|n| {
                    n.health()["cluster"]["nodes"]
                        .as_array()
                        .is_some_and(|l| l.iter().any(|x| x["id"] == id))
                })
                .then(|| t.elapsed())
        })
        .unwrap_or_else(|| panic!("node {id} never listed by every member"));
        listing.push(took);
    }
    println!("a joining node listed by every member after: {listing:?} (poll {SLOW_POLL_MS} ms)");
    for took in listing {
        assert!(took < Duration::from_millis(2500), "listed after {took:?}, not at once");
    }
}

/// A burst of announcements makes a few sync rounds, not one each: every
/// round reads the record once (a bounded GETRANGE), and 500 messages published at once
/// cost the member a handful of reads. The member syncing at all is shown by
/// a node joined after the burst being listed; that one round per message
/// never comes is a non-event, watched for over a window (one round takes
/// about a millisecond here: uncoalesced, the 500 would be read well within
/// it even on a loaded machine).
#[test]
fn a_burst_of_announcements_is_coalesced_into_a_few_sync_rounds() {
    const SLOW_POLL_MS: u64 = 30_000;
    const BURST: u64 = 500;
    const MOST: u64 = 50;
    let redis = Redis::start();
    let a = Node::start(SLOW_POLL_MS);
    a.join(&redis.address(), "c1", None);
    let token = a.cluster_token();
    wait_cluster(&a, "the first node joined", |c| c["state"] == "joined");
    let before = redis.calls("getrange");
    redis.cli(&[
        "EVAL",
        "for i = 1, tonumber(ARGV[1]) do redis.call('PUBLISH', KEYS[1], '1') end return 0",
        "1",
        "hero_livekit:{c1}:changed",
        &BURST.to_string(),
    ]);
    let b = Node::start(SLOW_POLL_MS);
    let r = b.join(&redis.address(), "c1", Some(&token));
    let id = r["cluster"]["node_id"].as_str().expect("node_id").to_string();
    wait_cluster(&a, "the member lists the node joined after the burst", |c| {
        c["nodes"]
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x["id"] == id.as_str()))
    });
    let too_many = poll(Duration::from_secs(3), || {
        let reads = redis.calls("getrange") - before;
        (reads > MOST).then_some(reads)
    });
    let reads = redis.calls("getrange") - before;
    println!("{BURST} announcements at once: {reads} record reads in all (both nodes)");
    assert_eq!(
        too_many, None,
        "a burst of {BURST} made more than {MOST} reads: not coalesced"
    );
}

/// `cluster leave` (issue 20, item 8): a member cannot strand itself by
/// removing its Redis; leaving removes its heartbeat (no member lists it)
/// and its membership file, and it keeps serving with the credential it ran.
#[test]
fn a_member_leaves_keeping_its_credential_and_no_member_lists_it_any_more() {
    let redis = Redis::start();
    let nodes = cluster(&redis, 1);
    let all = refs(&nodes);
    let key = nodes[0].health()["api_key"].as_str().expect("key").to_string();
    wait_all_run(&all, &key, "after joining");
    let leaver = nodes[1].health()["cluster"]["node_id"]
        .as_str()
        .expect("node_id")
        .to_string();
    let lists_leaver = |c: &Value| {
        c["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["id"] == leaver.as_str()))
    };
    wait_cluster(&nodes[0], "both nodes in the heartbeats", |c| lists_leaver(c));
    let before = nodes[1].triple();

    // Removing the Redis of a member is refused, naming the field, with
    // the way out; nothing changes.
    let r = nodes[1]
        .d
        .call("livekitservice.configure", json!({"unset": ["redis_address"]}));
    assert_eq!(r["error"]["code"], -32602, "{r}");
    let message = r["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("redis_address") && message.contains("c1"), "{r}");
    assert!(
        r["error"]["data"]["hint"]
            .as_str()
            .unwrap_or("")
            .contains("cluster leave"),
        "{r}"
    );
    assert_eq!(nodes[1].triple(), before, "a refused unset changed nothing");
    assert!(nodes[1].runs(&key));

    let r = nodes[1].d.ok("livekitservice.cluster_leave", json!({}));
    assert_eq!(r["cluster"], "c1", "{r}");
    assert_eq!(r["node_id"], leaver.as_str(), "{r}");
    assert_eq!(r["heartbeat_removed"], true, "{r}");
    assert_eq!(r["api_key"], key.as_str(), "{r}");
    // At once: health and cluster_status say so, the file is gone, and
    // Redis no longer holds its heartbeat.
    assert_eq!(nodes[1].health()["cluster"]["state"], "not_configured");
    let status = nodes[1].d.ok("livekitservice.cluster_status", json!({}));
    assert_eq!(status["state"], "not_configured", "{status}");
    assert!(!nodes[1].root.file("cluster.json").exists(), "cluster.json removed");
    let beat = format!("hero_livekit:{{c1}}:node:{leaver}");
    assert_eq!(redis.cli(&["EXISTS", &beat]).trim(), "0", "heartbeat removed");
    assert_eq!(
        redis.cli(&["SISMEMBER", "hero_livekit:{c1}:members", &leaver]).trim(),
        "0",
        "no longer in the member set"
    );
    // Announced: the remaining member drops it well before any expiry.
    wait_cluster(&nodes[0], "the leaver no longer listed", |c| !lists_leaver(c));
    // It keeps serving with the same credential, proven.
    let h = nodes[1].health();
    assert_eq!(h["api_key"], key.as_str(), "{h}");
    assert_eq!(
        nodes[1].triple()[1..],
        before[1..],
        "livekit.yaml and backend.env untouched"
    );
    poll(WAIT, || (nodes[1].health()["ready_for_tokens"] == true).then_some(()))
        .expect("the node that left stays ready for tokens");
    // Now alone, it may drop its Redis; leaving twice says it is in none.
    let r = nodes[1].d.call("livekitservice.cluster_leave", json!({}));
    assert_eq!(error_kind(&r), "not_in_cluster", "{r}");
    let r = nodes[1]
        .d
        .call("livekitservice.configure", json!({"unset": ["redis_address"]}));
    assert!(r.get("error").is_none(), "a single node may drop its Redis: {r}");
    // The remaining member is unaffected.
    assert!(nodes[0].runs(&key));
}

/// A member whose Redis connection was reset reconnects and subscribes
/// again at once, not at its next poll: a node joining right after is
/// listed by it as fast as by any other member. The poll is 30 s, so only
/// a prompt resubscription makes the bound.
#[test]
fn a_member_that_lost_its_redis_link_lists_a_join_right_after_without_waiting_for_its_poll() {
    const SLOW_POLL_MS: u64 = 30_000;
    let redis = Redis::start();
    let mut relay = Relay::start(&redis.address());
    let a = Node::start(SLOW_POLL_MS);
    a.join(&redis.address(), "c1", None);
    let token = a.cluster_token();
    let b = Node::start(SLOW_POLL_MS);
    b.join(&relay.address(), "c1", Some(&token));
    wait_cluster(&b, "B joined through the relay", |c| c["state"] == "joined");

    // Every connection B has to Redis is reset; the relay is back at once.
    relay.restart(&redis.address());
    let c = Node::start(SLOW_POLL_MS);
    let t = std::time::Instant::now();
    let r = c.join(&redis.address(), "c1", Some(&token));
    let id = r["cluster"]["node_id"].as_str().expect("node_id").to_string();
    let listed = wait_cluster(&b, "B lists the node that joined", |c| {
        c["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["id"] == id.as_str()))
    });
    let took = t.elapsed();
    println!("listed by a member whose link was reset after {took:?} (poll {SLOW_POLL_MS} ms)");
    assert!(took < Duration::from_millis(2500), "listed after {took:?}: {listed}");
    assert_eq!(b.health()["cluster"]["state"], "joined");
}
