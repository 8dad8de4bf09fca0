//! The daemon on rpc.sock: transport, routes, socket hygiene, peer
//! authorization and graceful shutdown, driven over a real socket.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::process::{Command, Stdio};
use std::time::Duration;

use hero_livekit_tests::*;
use nix::sys::signal::Signal;
use serde_json::{json, Value};

#[test]
fn json_rpc_over_raw_http_bytes_single_and_batch() {
    let root = Root::new();
    let d = Daemon::start(&root, DaemonOpts::default());

    // A single call on POST / (not only /rpc).
    let body = r#"{"jsonrpc":"2.0","id":7,"method":"livekitservice.health","params":{}}"#;
    let req = format!(
        "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let resp = parse_http(&raw(&d.socket, req.as_bytes()));
    assert_eq!(resp.status, 200);
    let v = resp.json();
    assert_eq!(v["id"], 7);
    assert_eq!(v["result"]["protocol"], 1);
    assert!(v["result"]["in_memory_hash"].as_str().is_some_and(|h| h.len() == 64));

    // A batch mixing a read, discovery, an invalid param and an unknown method.
    let batch = json!([
        {"jsonrpc":"2.0","id":1,"method":"livekitservice.health"},
        {"jsonrpc":"2.0","id":2,"method":"rpc.discover","params":[]},
        {"jsonrpc":"2.0","id":3,"method":"livekitservice.configure","params":{"port": "eighty"}},
        {"jsonrpc":"2.0","id":4,"method":"livekitservice.nope","params":{}}
    ]);
    let resp = post(&d.socket, &batch);
    assert_eq!(resp.status, 200);
    let arr = resp.json();
    let by_id = |id: i64| {
        arr.as_array()
            .expect("batch array")
            .iter()
            .find(|r| r["id"] == id)
            .cloned()
            .expect("entry")
    };
    assert!(by_id(1)["result"]["files"].is_object());
    assert!(
        by_id(2)["result"]["methods"].is_array(),
        "rpc.discover returns an object, not a string"
    );
    assert_eq!(by_id(3)["error"]["code"], -32602);
    assert_eq!(by_id(3)["error"]["data"]["field"], "port");
    assert_eq!(by_id(4)["error"]["code"], -32601);
}

#[test]
fn get_routes_health_openrpc_and_well_known() {
    let root = Root::new();
    let d = Daemon::start(&root, DaemonOpts::default());

    let h = get(&d.socket, "/health");
    // Nothing is started yet: not ready for tokens, so 503 with the document.
    assert_eq!(h.status, 503);
    let doc = h.json();
    assert_eq!(doc["ready_for_tokens"], false);
    assert_eq!(doc["consistent"], true, "boot heals the triple: {doc}");

    let o = get(&d.socket, "/openrpc.json");
    assert_eq!(o.status, 200);
    let o = o.json();
    assert_eq!(o["openrpc"], "1.3.2");
    let names: Vec<&str> = o["methods"]
        .as_array()
        .expect("methods")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    for m in hero_livekit_proto::METHODS {
        assert!(names.contains(&m.name), "{} documented", m.name);
    }

    let w = get(&d.socket, "/.well-known/heroservice.json").json();
    assert_eq!(w["name"], "hero_livekit_server");
    assert_eq!(w["protocol"], "openrpc");
    assert_eq!(w["socket"], d.socket.display().to_string());

    assert_eq!(get(&d.socket, "/nope").status, 404);
}

#[test]
fn rpc_discover_equals_openrpc_json() {
    let root = Root::new();
    let d = Daemon::start(&root, DaemonOpts::default());
    let via_rpc = d.ok("rpc.discover", json!({}));
    let via_get = get(&d.socket, "/openrpc.json").json();
    assert_eq!(via_rpc, via_get);
}

#[test]
fn socket_and_state_have_private_modes() {
    let root = Root::new();
    let d = Daemon::start(&root, DaemonOpts::default());
    let meta = std::fs::metadata(&d.socket).expect("socket");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let dir = d.socket.parent().expect("dir");
    assert_eq!(std::fs::metadata(dir).expect("dir").permissions().mode() & 0o777, 0o700);
    assert_eq!(
        std::fs::metadata(root.state()).expect("state").permissions().mode() & 0o777,
        0o700
    );
    for f in hero_livekit_proto::TRIPLE_FILES {
        assert_eq!(
            std::fs::metadata(root.file(f)).expect(f).permissions().mode() & 0o777,
            0o600,
            "{f}"
        );
    }
}

#[test]
fn second_daemon_on_the_same_root_is_refused() {
    let root = Root::new();
    let d = Daemon::start(&root, DaemonOpts::default());
    let err = Daemon::try_start(&root, DaemonOpts::default())
        .err()
        .expect("second daemon must fail");
    assert!(err.contains("another hero_livekit_server"), "{err}");
    // The first one is unharmed.
    assert!(d.health()["in_memory_hash"].is_string());
}

#[test]
fn stale_socket_left_by_kill_9_is_replaced() {
    let root = Root::new();
    let mut d = Daemon::start(&root, DaemonOpts::default());
    let hash = d.health()["in_memory_hash"].clone();
    d.kill9();
    assert!(root.socket().exists(), "SIGKILL leaves the socket file behind");
    let d2 = Daemon::start(&root, DaemonOpts::default());
    assert_eq!(d2.health()["in_memory_hash"], hash, "same config after restart");
}

#[test]
fn regular_file_at_the_socket_path_is_refused_and_kept() {
    let root = Root::new();
    let sock = root.socket();
    std::fs::create_dir_all(sock.parent().expect("dir")).expect("mkdir");
    std::fs::write(&sock, b"precious").expect("write file");
    let err = Daemon::try_start(&root, DaemonOpts::default())
        .err()
        .expect("must refuse");
    assert!(err.contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(&sock).expect("still there"), b"precious");
}

/// Sends `request` to `socket` from a process running as uid/gid 65534.
fn as_nobody(socket: &std::path::Path, request: &str) -> HttpResponse {
    let script = "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\ns.sendall(sys.stdin.buffer.read())\nd=b''\nwhile True:\n  c=s.recv(65536)\n  if not c: break\n  d+=c\nsys.stdout.buffer.write(d)\n";
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(socket)
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3 as nobody");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(request.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "client as nobody failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_http(&out.stdout)
}

fn post_req(body: &Value) -> String {
    let b = body.to_string();
    format!(
        "POST /rpc HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
        b.len()
    )
}

#[test]
fn another_uid_is_refused_every_mutating_method_even_in_a_batch() {
    let root = Root::new();
    // A socket directory that uid nobody can traverse (the temp root is 0700).
    let public = tempfile::Builder::new()
        .prefix("hero_livekit_sock")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(public.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let socket = public.path().join("hero_livekit_server/rpc.sock");
    let d = Daemon::start(
        &root,
        DaemonOpts {
            extra_args: vec![
                "--socket".into(),
                socket.display().to_string(),
                "--socket-group".into(),
                "65534".into(),
            ],
            ..Default::default()
        },
    );
    assert_eq!(
        std::fs::metadata(&socket).expect("socket").permissions().mode() & 0o777,
        0o660
    );
    let before = std::fs::read(root.file("runtime.json")).expect("runtime.json");

    let mutating = [
        "livekitservice.install",
        "livekitservice.configure",
        "livekitservice.start",
        "livekitservice.stop",
        "livekitservice.restart",
    ];
    for m in mutating {
        let params = if m == "livekitservice.configure" {
            json!({"domain": "evil.example"})
        } else {
            json!({})
        };
        let r = as_nobody(
            &socket,
            &post_req(&json!({"jsonrpc":"2.0","id":1,"method":m,"params":params})),
        )
        .json();
        assert_eq!(r["error"]["code"], -32008, "{m}: {r}");
        assert_eq!(r["error"]["data"]["kind"], "unauthorized");
    }
    // The same inside a batch, next to an allowed read.
    let batch = json!([
        {"jsonrpc":"2.0","id":1,"method":"livekitservice.health"},
        {"jsonrpc":"2.0","id":2,"method":"livekitservice.configure","params":{"domain":"evil.example"}},
        {"jsonrpc":"2.0","id":3,"method":"livekitservice.stop","params":{}}
    ]);
    let arr = as_nobody(&socket, &post_req(&batch)).json();
    let arr = arr.as_array().expect("batch");
    for r in arr {
        if r["id"] == 1 {
            assert!(r["result"]["api_key"].is_string(), "read-only health is allowed: {r}");
        } else {
            assert_eq!(r["error"]["code"], -32008, "batch entry refused: {r}");
        }
    }
    // GET /health is a read: allowed for the group.
    let h = as_nobody(&socket, "GET /health HTTP/1.1\r\nHost: l\r\nConnection: close\r\n\r\n");
    assert!(h.status == 200 || h.status == 503);
    // Nothing changed on disk; and the owner still may configure.
    assert_eq!(std::fs::read(root.file("runtime.json")).expect("runtime.json"), before);
    assert_ne!(d.health()["api_key"], Value::Null);
}

#[test]
fn sigterm_drains_in_flight_requests_and_removes_the_socket() {
    let root = Root::new();
    let mut d = Daemon::start(&root, DaemonOpts::double());
    configure_free_ports(&d);
    // A start whose livekit-server takes a while to become ready keeps a
    // request in flight while SIGTERM arrives.
    std::fs::write(root.state().join("double-behaviour.json"), r#"{"ready_delay_ms": 700}"#).expect("behaviour");
    let socket = d.socket.clone();
    let inflight = std::thread::spawn(move || rpc(&socket, "livekitservice.start", json!({"timeout_ms": 20000})));
    // Wait until the start is really in progress: livekit-server is spawned.
    wait_for(Duration::from_secs(20), "livekit-server spawned", || {
        (d.health()["processes"]["livekit-server"]["pid"].is_number()).then_some(())
    });
    d.signal(Signal::SIGTERM);
    let resp = inflight.join().expect("in-flight request thread");
    assert!(
        resp.get("result").is_some() || resp.get("error").is_some(),
        "the in-flight call got a complete answer: {resp}"
    );
    let status = d.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "clean exit: {status}");
    assert!(!root.socket().exists(), "socket removed on shutdown");
}

#[test]
fn subscription_over_websocket_receives_events() {
    let root = Root::new();
    let d = Daemon::start(&root, DaemonOpts::default());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = hero_livekit_client::Client::new(&d.socket);
        let mut events = client.subscribe_events().await.expect("subscribe");
        let cfg = client
            .configure(&hero_livekit_proto::ConfigureParams {
                domain: Some("media.example.org".into()),
                ..Default::default()
            })
            .await
            .expect("configure");
        assert_eq!(cfg.changed_fields, vec!["domain".to_string()]);
        let mut saw_heal = false;
        let mut saw_configured = false;
        while !(saw_heal && saw_configured) {
            let ev = tokio::time::timeout(Duration::from_secs(10), events.next())
                .await
                .expect("an event within 10 s")
                .expect("stream open");
            match ev.event {
                hero_livekit_proto::Event::Healed { trigger, written, .. } => {
                    assert_eq!(trigger, "configure");
                    assert!(
                        written.contains(&"livekit.yaml".to_string()) || written.contains(&"runtime.json".to_string())
                    );
                    saw_heal = true;
                }
                hero_livekit_proto::Event::Configured { changed_fields, .. } => {
                    assert_eq!(changed_fields, vec!["domain".to_string()]);
                    saw_configured = true;
                }
                _ => {}
            }
        }
    });
}

#[test]
fn subscription_over_plain_http_gets_a_clear_error() {
    let root = Root::new();
    let d = Daemon::start(&root, DaemonOpts::default());
    let r = d.call("livekitservice.subscribe_events", json!({}));
    assert_eq!(r["error"]["code"], -32009, "{r}");
    assert!(r["error"]["data"]["hint"]
        .as_str()
        .is_some_and(|h| h.contains("WebSocket")));
}

#[test]
fn cli_without_a_daemon_says_where_it_looked_and_how_to_start_one() {
    let root = Root::new();
    let out = Command::new(bin("hero_livekit"))
        .arg("--root")
        .arg(root.path())
        .arg("health")
        .output()
        .expect("run cli");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&root.socket().display().to_string()), "{err}");
    assert!(err.contains("hero_livekit up"), "{err}");
}

#[test]
fn ready_is_sent_to_notify_socket_once_the_socket_answers() {
    let root = Root::new();
    let notify_path = root.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("bind notify socket");
    notify.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let d = Daemon::start(
        &root,
        DaemonOpts {
            env: vec![("NOTIFY_SOCKET".into(), notify_path.display().to_string())],
            ..Default::default()
        },
    );
    let mut buf = [0u8; 64];
    let n = notify.recv(&mut buf).expect("a notification within 20 s");
    assert_eq!(&buf[..n], b"READY=1");
    assert!(d.socket.exists(), "READY=1 comes after the socket is bound");
}

/// Median wall time of `n` runs of `f`.
fn median_of(n: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let t0 = std::time::Instant::now();
            f();
            t0.elapsed()
        })
        .collect();
    times.sort();
    times[n / 2]
}

#[test]
fn health_answers_promptly_while_a_large_log_is_read() {
    let root = Root::new();
    let d = Daemon::start(&root, DaemonOpts::default());
    // A log of more than 1 MiB, read whole by each `logs` call below.
    let log = root.state().join("logs/livekit-server.log");
    std::fs::create_dir_all(log.parent().expect("logs dir")).expect("mkdir logs");
    let line = format!("{}\n", "x".repeat(99));
    std::fs::write(&log, line.repeat(11_000)).expect("write the log");

    let empty = median_of(41, || {
        d.call("livekitservice.no_such_method", json!({}));
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (socket, stop) = (d.socket.clone(), std::sync::Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut reads = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = rpc(
                        &socket,
                        "livekitservice.logs",
                        json!({"process": "livekit-server", "lines": 10000}),
                    );
                    assert_eq!(r["result"]["lines"].as_array().map(Vec::len), Some(10000), "{r}");
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    let health = median_of(41, || {
        d.health();
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads: u32 = readers.into_iter().map(|r| r.join().expect("reader")).sum();
    assert!(reads > 0, "the log was read while health was called");
    // Read on the runtime thread, each 1 MiB read would stall every call
    // queued behind it; off it, health stays within a small multiple of an
    // idle empty call (generous: the readers share the machine's cores).
    assert!(
        health <= empty * 25,
        "health median {health:?} while the log is read, against {empty:?} for an idle empty call ({reads} reads)"
    );
}
