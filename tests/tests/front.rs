//! The calls the HTTP front answers itself (single calls to `health`,
//! `rpc.discover` and to unknown methods) against jsonrpsee's own answers
//! to the same calls: a batch of one takes jsonrpsee's general path, so its
//! one entry must be byte for byte what the single call got.

use std::path::Path;

use hero_livekit_tests::*;
use serde_json::{json, Value};

/// `POST /rpc` with `body` as it is and `content_type`.
fn post_raw(socket: &Path, content_type: &str, body: &str) -> HttpResponse {
    let req = format!(
        "POST /rpc HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    parse_http(&raw(socket, req.as_bytes()))
}

/// The single call's answer and the one entry of the batch of one, as
/// bytes.
fn single_and_batched(socket: &Path, call: &Value) -> (Vec<u8>, Vec<u8>) {
    let single = post_raw(socket, "application/json", &call.to_string());
    let batch = post_raw(socket, "application/json", &format!("[{call}]"));
    assert_eq!(single.status, 200, "{}", String::from_utf8_lossy(&single.body));
    assert_eq!(batch.status, 200);
    assert!(
        single
            .headers
            .to_ascii_lowercase()
            .contains("content-type: application/json; charset=utf-8"),
        "jsonrpsee's content type: {}",
        single.headers
    );
    let b = batch.body;
    // A call jsonrpsee takes for a notification (an id that is no u64 nor
    // string, such as -7) is answered `null` alone and in a batch.
    if b == b"null" {
        return (single.body, b);
    }
    assert!(
        b.first() == Some(&b'[') && b.last() == Some(&b']'),
        "a batch answer to [{call}]: {}",
        String::from_utf8_lossy(&b[..b.len().min(300)])
    );
    (single.body, b[1..b.len() - 1].to_vec())
}

#[test]
fn single_calls_the_front_answers_are_jsonrpsees_answers() {
    let root = Root::new();
    let d = Daemon::start(&root, DaemonOpts::double());
    let ids = [
        json!(1),
        json!(0),
        json!(-7),
        json!(18446744073709551615u64),
        json!("abc"),
        json!("a \"quoted\" id \u{e9}\\"),
        json!(null),
    ];
    for id in &ids {
        for call in [
            json!({"jsonrpc": "2.0", "id": id, "method": "rpc.discover"}),
            json!({"jsonrpc": "2.0", "id": id, "method": "rpc.discover", "params": []}),
            // Errors: the callback's own, through the same path.
            json!({"jsonrpc": "2.0", "id": id, "method": "livekitservice.health", "params": {"x": 1}}),
            json!({"jsonrpc": "2.0", "id": id, "method": "livekitservice.health", "params": [1]}),
            json!({"jsonrpc": "2.0", "id": id, "method": "no.such.method", "params": {}}),
        ] {
            let (single, batched) = single_and_batched(&d.socket, &call);
            assert_eq!(
                String::from_utf8_lossy(&single),
                String::from_utf8_lossy(&batched),
                "{call}"
            );
        }
        // health is rebuilt each millisecond (uptimes); nothing here runs,
        // so both answers hold the same document.
        for params in [json!({}), json!(null), json!([])] {
            let call = json!({"jsonrpc": "2.0", "id": id, "method": "livekitservice.health", "params": params});
            let (single, batched) = single_and_batched(&d.socket, &call);
            let single: Value = serde_json::from_slice(&single).expect("JSON");
            let batched: Value = serde_json::from_slice(&batched).expect("JSON");
            assert_eq!(single, batched, "{call}");
            if id.as_i64().is_some_and(|n| n < 0) {
                assert_eq!(single, Value::Null, "taken for a notification");
                continue;
            }
            assert_eq!(&single["id"], id);
            assert!(single["result"]["in_memory_hash"].is_string(), "{single}");
        }
    }
}

#[test]
fn what_the_front_does_not_answer_itself_keeps_jsonrpsees_answers() {
    let root = Root::new();
    let d = Daemon::start(&root, DaemonOpts::double());
    let health = r#"{"jsonrpc":"2.0","id":1,"method":"livekitservice.health"}"#;
    // A content type jsonrpsee refuses.
    let r = post_raw(&d.socket, "text/plain", health);
    assert_eq!(r.status, 415, "{}", String::from_utf8_lossy(&r.body));
    // A notification: no answer body but jsonrpsee's `null`.
    let r = post_raw(
        &d.socket,
        "application/json",
        r#"{"jsonrpc":"2.0","method":"livekitservice.health"}"#,
    );
    assert_eq!((r.status, r.body.as_slice()), (200, &b"null"[..]));
    // Leading whitespace is skipped as jsonrpsee skips it.
    let r = post_raw(&d.socket, "application/json", &format!(" \n\t{health}"));
    assert_eq!(r.json()["id"], 1);
    assert!(r.json()["result"]["status"].is_string(), "{}", r.json());
    // Not JSON-RPC: a parse error from jsonrpsee, not a silence.
    let r = post_raw(&d.socket, "application/json", r#"{"id":1,"method":"#);
    assert_eq!(r.json()["error"]["code"], -32700, "{}", r.json());
    // A mutation still takes jsonrpsee's path and its task.
    let r = rpc(&d.socket, "livekitservice.configure", json!({"port": "x"}));
    assert_eq!(r["error"]["code"], -32602, "{r}");
}
