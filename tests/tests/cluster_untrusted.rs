//! Redis is not trusted (issue 21, items 1-3): what anyone who can write
//! the cluster's Redis puts there is data, checked before use. Forged,
//! oversized, escaped or future heartbeats are never listed; the member set
//! is read within a bound; an oversized record is a `conflict` naming its
//! size and is never read whole; a replayed older record is never adopted
//! by a joining node. Against a real `redis-server` and real daemons.

use std::time::Duration;

use hero_livekit_tests::cluster::{wait_all_run, Node, Redis, WAIT};
use hero_livekit_tests::observe::poll;
use hero_livekit_tests::rss_kib;
use serde_json::{json, Value};

/// The cluster's poll period here: long, so that a round runs when a
/// message asks for it (a `PUBLISH` on the channel), and the test knows
/// which trigger acted.
const POLL_MS: u64 = 30_000;

fn wait_cluster(n: &Node, what: &str, want: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    poll(WAIT, || {
        last = n.health()["cluster"].clone();
        want(&last).then(|| last.clone())
    })
    .unwrap_or_else(|| panic!("{what} within {WAIT:?}; last: {last}"))
}

/// Asks every member for a sync round now (members sync on any message).
fn nudge(redis: &Redis) {
    redis.cli(&["PUBLISH", "hero_livekit:{c1}:changed", "0"]);
}

fn first_node(redis: &Redis) -> (Node, String) {
    let a = Node::start(POLL_MS);
    a.join(&redis.address(), "c1", None);
    let token = a.cluster_token();
    wait_cluster(&a, "joined", |c| c["state"] == "joined");
    (a, token)
}

/// No control character and no bidi or invisible format character in `s`.
fn assert_clean(s: &str, what: &str) {
    for c in s.chars() {
        let bad =
            c.is_control() || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        assert!(!bad, "{what} holds {c:?}: {s}");
    }
}

#[test]
fn forged_escaped_future_and_oversized_heartbeats_are_never_listed() {
    let redis = Redis::start();
    let (a, _token) = first_node(&redis);
    let own = a.health()["cluster"]["node_id"].as_str().expect("node_id").to_string();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    // Plain JSON as the old format was: anyone could write it.
    let forged = [
        (
            "\u{1b}[2J\u{1b}[31mevil".to_string(),
            json!({"id": "x", "generation": 999, "livekit_url": "ws://evil", "at_ms": now_ms}),
        ),
        (
            "00000000deadbeef".to_string(),
            json!({"id": "00000000deadbeef", "generation": 999,
                   "livekit_url": "ws://\u{1b}]0;pwned\u{7}evil:7880", "at_ms": now_ms + 3_600_000}),
        ),
    ];
    for (id, v) in &forged {
        let key = format!("hero_livekit:{{c1}}:node:{id}");
        redis.cli(&["SET", &key, &v.to_string(), "PX", "600000"]);
        redis.cli(&["SADD", "hero_livekit:{c1}:nodes", id]);
    }
    // A heartbeat value far over the limit under a valid-looking id.
    redis.cli(&[
        "EVAL",
        "redis.call('SET', KEYS[1], string.rep('x', tonumber(ARGV[1])), 'PX', 600000) return redis.call('SADD', KEYS[2], ARGV[2])",
        "2",
        "hero_livekit:{c1}:node:0000000000000bad",
        "hero_livekit:{c1}:nodes",
        "1048576",
        "0000000000000bad",
    ]);
    // 5,000 forged members with 1 KiB values.
    redis.forge_members("c1", 5000);
    nudge(&redis);
    let c = wait_cluster(&a, "the forged entries reported as not listed", |c| {
        c["error"]
            .as_str()
            .is_some_and(|e| e.contains("not listed") && e.contains("sample"))
    });
    let ids: Vec<&str> = c["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    assert_eq!(ids, vec![own.as_str()], "only the real member is listed: {c}");
    assert_eq!(c["state"], "joined", "{c}");
    assert!(c["generation"].as_u64() < Some(999), "{c}");
    let h = a.health();
    assert_clean(&h.to_string(), "health");
    assert_eq!(h["ready_for_tokens"], true, "forged members cost no token: {h}");
    let status = a.d.ok("livekitservice.cluster_status", json!({}));
    assert_clean(&status.to_string(), "cluster_status");
}

#[test]
fn a_real_member_is_listed_and_a_forged_copy_of_its_heartbeat_under_another_id_is_not() {
    let redis = Redis::start();
    let (a, token) = first_node(&redis);
    let b = Node::start(POLL_MS);
    b.join(&redis.address(), "c1", Some(&token));
    let id_b = b.health()["cluster"]["node_id"].as_str().expect("node_id").to_string();
    wait_cluster(&a, "B listed", |c| {
        c["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["id"] == id_b.as_str()))
    });
    // B's genuine sealed beat copied under another id: the id is sealed in.
    let sealed = redis.cli(&["GET", &format!("hero_livekit:{{c1}}:node:{id_b}")]);
    let copy = "0123456789abcdef";
    redis.cli(&[
        "SET",
        &format!("hero_livekit:{{c1}}:node:{copy}"),
        sealed.trim(),
        "PX",
        "600000",
    ]);
    redis.cli(&["SADD", "hero_livekit:{c1}:nodes", copy]);
    nudge(&redis);
    let c = wait_cluster(&a, "the copy reported as not listed", |c| {
        c["error"].as_str().is_some_and(|e| e.contains("not listed"))
    });
    let ids: Vec<&str> = c["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    assert!(ids.contains(&id_b.as_str()) && !ids.contains(&copy), "{c}");
}

#[test]
fn an_oversized_record_is_a_conflict_naming_its_size_never_read_whole() {
    const SIZE: u64 = 20 * 1024 * 1024;
    let redis = Redis::start();
    let (a, _token) = first_node(&redis);
    let key = a.health()["api_key"].as_str().expect("api_key").to_string();
    let before_kib = rss_kib(a.d.pid());
    redis.cli(&[
        "EVAL",
        "redis.call('SET', KEYS[1], string.rep('x', tonumber(ARGV[1]))) return 0",
        "1",
        "hero_livekit:{c1}:credential",
        &SIZE.to_string(),
    ]);
    nudge(&redis);
    let c = wait_cluster(&a, "a conflict naming the size", |c| c["state"] == "conflict");
    let error = c["error"].as_str().unwrap_or("");
    assert!(error.contains(&SIZE.to_string()) && error.contains("limit"), "{c}");
    // Several rounds over it, and the daemon never held it whole.
    for _ in 0..5 {
        nudge(&redis);
    }
    wait_cluster(&a, "still a conflict", |c| c["state"] == "conflict");
    let grew_kib = rss_kib(a.d.pid()).saturating_sub(before_kib);
    println!("RSS growth with a {SIZE}-byte record in Redis: {grew_kib} KiB");
    assert!(grew_kib < 8 * 1024, "the daemon's RSS grew {grew_kib} KiB: read whole?");
    // It keeps serving with its credential, proven.
    let h = a.health();
    assert_eq!(h["api_key"], key.as_str(), "{h}");
    assert_eq!(h["ready_for_tokens"], true, "{h}");
    // Gone: the node republishes what it runs, and is joined again.
    redis.cli(&["DEL", "hero_livekit:{c1}:credential"]);
    nudge(&redis);
    wait_cluster(&a, "joined again", |c| c["state"] == "joined");
    assert_eq!(a.health()["api_key"], key.as_str());
}

#[test]
fn a_replayed_older_record_is_never_adopted_by_a_joining_node() {
    let redis = Redis::start();
    let (a, token) = first_node(&redis);
    let old_record = redis.cli(&["GET", "hero_livekit:{c1}:credential"]).trim().to_string();
    let old_key = a.health()["api_key"].as_str().expect("api_key").to_string();
    // The cluster moves to generation 2 with a new key.
    a.d.ok("livekitservice.start", json!({"reset": true}));
    let new_key = wait_cluster(&a, "generation 2", |c| c["generation"] == 2);
    let _ = new_key;
    let new_key = a.health()["api_key"].as_str().expect("api_key").to_string();
    assert_ne!(new_key, old_key);
    // Wait until A's heartbeat says generation 2 (its next beat after the
    // change), so that the replay is older than a live member's.
    poll(WAIT, || {
        nudge(&redis);
        let n = a.health()["cluster"]["nodes"].clone();
        n.as_array()
            .is_some_and(|n| n.iter().all(|n| n["generation"] == 2))
            .then_some(())
    })
    .expect("A's heartbeat carries generation 2");

    // The saved generation-1 record written back, then a fresh node joins
    // at once with the join secret.
    redis.cli(&["SET", "hero_livekit:{c1}:credential", &old_record]);
    let b = Node::start(POLL_MS);
    let r = b.d.call(
        "livekitservice.configure",
        json!({"redis_address": redis.address(), "cluster": "c1", "cluster_token": token}),
    );
    // Either the join waited for A to restore generation 2 and adopted it,
    // or it was refused naming the replay; never the old key.
    if r.get("error").is_none() {
        assert_eq!(r["result"]["cluster"]["generation"], 2, "{r}");
        assert_eq!(b.health()["api_key"], new_key.as_str());
        wait_all_run(&[&a, &b], &new_key, "both on generation 2");
    } else {
        let m = r["error"]["message"].as_str().unwrap_or("");
        assert!(m.contains("older than generation 2"), "{r}");
        assert_ne!(b.health()["api_key"], old_key.as_str());
    }
    assert_ne!(
        b.health()["api_key"],
        old_key.as_str(),
        "the replayed key is never served"
    );
    // And Redis holds generation 2 again (A restored it).
    poll(Duration::from_secs(10), || {
        let raw = redis.cli(&["GET", "hero_livekit:{c1}:credential"]);
        serde_json::from_str::<Value>(raw.trim())
            .ok()
            .filter(|v| v["generation"] == 2)
            .map(|_| ())
    })
    .expect("the member restored generation 2");
}

/// Anything answering on Redis's address, with escapes in its error text.
fn hostile_redis() -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let h = std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    let reply = b"-ERR \x1b]0;pwned\x07\x1b[2J\x1b[31mforged \xe2\x80\xae text\r\n";
                    if s.write_all(reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, h)
}

#[test]
fn escapes_in_a_redis_error_reach_neither_health_nor_errors() {
    let redis = Redis::start();
    let (a, _token) = first_node(&redis);
    let (hostile, _h) = hostile_redis();
    // A member pointed at it: the sync's error is shown cleaned.
    let r = a.d.call(
        "livekitservice.configure",
        json!({"redis_address": hostile.to_string()}),
    );
    assert_clean(&r.to_string(), "the configure answer");
    let c = wait_cluster(&a, "the cluster unreachable", |c| c["state"] != "joined");
    assert_clean(&c.to_string(), "health.cluster");
    assert_clean(&a.health().to_string(), "health");
    // A fresh node joining through it: the refusal is cleaned too.
    let b = Node::start(POLL_MS);
    let r = b.d.call(
        "livekitservice.configure",
        json!({"redis_address": hostile.to_string(), "cluster": "c9"}),
    );
    assert!(r.get("error").is_some(), "{r}");
    assert_clean(&r.to_string(), "the join's refusal");
    assert_clean(&b.health().to_string(), "health of the refused node");
    for (n, what) in [(&a, "the member's log"), (&b, "the refused node's log")] {
        for line in n.d.stderr().lines() {
            assert_clean(line, what);
        }
    }
}
