//! The supervisor's own metrics end to end (SPEC section 12): `GET /metrics`
//! on the socket and `--metrics-listen` on TCP, read by the Prometheus
//! project's own Python parsers (`tests/python/parse_metrics.py`) after a
//! scripted run, each counter checked against exactly what happened.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use hero_livekit_tests::cluster::Redis;
use hero_livekit_tests::observe::{pid_in, poll, wait_ready_for_tokens};
use hero_livekit_tests::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

/// Bound on every wait for something the daemon does on its own.
const WAIT: Duration = Duration::from_secs(60);

/// One scrape as a parser read it: `name{label="v",...}` (labels sorted)
/// to value.
type Samples = BTreeMap<String, f64>;

/// Parses `text` with `prometheus_client`'s parser for `format`
/// (`prometheus` or `openmetrics`); a scrape it rejects fails the test.
fn parse(text: &str, format: &str) -> Samples {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/parse_metrics.py");
    let mut child = Command::new(lk::python())
        .arg(script)
        .arg(format)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run python3 (LK_PYTHON names another interpreter)");
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(text.as_bytes())
        .expect("write the scrape");
    let out = child.wait_with_output().expect("parse_metrics.py output");
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "parse_metrics.py printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(
        out.status.code(),
        Some(0),
        "the {format} parser rejected the scrape: {answer}\n{text}"
    );
    let mut samples = Samples::new();
    for family in answer["families"].as_array().expect("families") {
        for s in family["samples"].as_array().expect("samples") {
            let labels: BTreeMap<String, String> = serde_json::from_value(s["labels"].clone()).expect("labels");
            let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            let key = format!("{}{{{}}}", s["name"].as_str().expect("name"), labels.join(","));
            samples.insert(key, s["value"].as_f64().expect("value"));
        }
    }
    samples
}

/// `GET /metrics` on the socket: the text, after checking status and type.
fn scrape(d: &Daemon) -> String {
    let r = get(&d.socket, "/metrics");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.headers
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{}",
        r.headers
    );
    String::from_utf8(r.body).expect("utf-8 scrape")
}

/// The value of one series (labels in name order), failing when absent.
fn at(s: &Samples, series: &str) -> f64 {
    *s.get(series)
        .unwrap_or_else(|| panic!("no series {series} in the scrape: {:?}", s.keys().collect::<Vec<_>>()))
}

/// Each series of `metric` whose value moved from `before` to `after`, with
/// the change.
fn moved(before: &Samples, after: &Samples, metric: &str) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{metric}{{")))
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d != 0.0)
        .collect()
}

fn deltas(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn api_secret(root: &Root) -> String {
    let rt: Value = serde_json::from_slice(&std::fs::read(root.file("runtime.json")).expect("runtime.json"))
        .expect("runtime.json is JSON");
    rt["api_secret"].as_str().expect("api_secret").to_string()
}

/// Replaces `path` in one rename, so the daemon never reads it half-written
/// (a truncated file would be a second drift of its own).
fn replace_file(path: &std::path::Path, bytes: &[u8]) {
    let tmp = path.with_extension("tampered");
    std::fs::write(&tmp, bytes).expect("write the replacement");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::rename(&tmp, path).expect("rename into place");
}

const HEALS: &str = "hero_livekit_heals_total";
const DRIFT: &str = "hero_livekit_drift_detections_total";
const RESTARTS: &str = "hero_livekit_child_restarts_total";
const STATES: &str = "hero_livekit_child_state_changes_total";
const HEALTH_CALLS: &str = "hero_livekit_health_calls_total";
const INSTALLS: &str = "hero_livekit_installs_total";
const PROBES: &str = "hero_livekit_token_chain_probes_total";

#[test]
fn a_scripted_run_moves_each_counter_by_exactly_what_happened() {
    let root = Root::new();
    // A quick tick, so that the drift below is healed by it (trigger
    // `drift`) and not by a call.
    let d = Daemon::start(&root, DaemonOpts::double().drift_check_ms(200));
    let mut texts = Vec::new();

    let text = scrape(&d);
    let boot = parse(&text, "prometheus");
    texts.push(text);
    for file in ["runtime.json", "livekit.yaml", "backend.env"] {
        assert_eq!(
            at(&boot, &format!(r#"{HEALS}{{file="{file}",trigger="boot"}}"#)),
            1.0,
            "boot minted and wrote {file}"
        );
    }
    for file in ["runtime.json", "livekit.yaml", "backend.env"] {
        assert_eq!(
            at(&boot, &format!(r#"{DRIFT}{{file="{file}"}}"#)),
            1.0,
            "{file} was missing"
        );
    }
    assert!(moved(&Samples::new(), &boot, RESTARTS).is_empty(), "no restart yet");

    // configure (new ports: all three files change), then start.
    configure_free_ports(&d);
    d.ok("livekitservice.start", json!({"timeout_ms": 30000}));
    let h = wait_ready_for_tokens(&d, WAIT);
    let text = scrape(&d);
    let started = parse(&text, "prometheus");
    texts.push(text);
    assert_eq!(
        moved(&boot, &started, HEALS),
        deltas(&[
            (
                r#"hero_livekit_heals_total{file="backend.env",trigger="configure"}"#,
                1.0
            ),
            (
                r#"hero_livekit_heals_total{file="livekit.yaml",trigger="configure"}"#,
                1.0
            ),
            (
                r#"hero_livekit_heals_total{file="runtime.json",trigger="configure"}"#,
                1.0
            ),
        ]),
        "configure rewrote each file once; start found the triple consistent"
    );
    assert!(moved(&boot, &started, DRIFT).is_empty(), "a new config is no drift");
    assert!(
        moved(&boot, &started, RESTARTS).is_empty(),
        "the children were started, not restarted"
    );
    for p in ["livekit-server", "lk-backend"] {
        assert_eq!(
            at(
                &started,
                &format!(r#"hero_livekit_child_state{{process="{p}",state="running"}}"#)
            ),
            1.0
        );
        assert_eq!(
            at(
                &started,
                &format!(r#"hero_livekit_child_state{{process="{p}",state="stopped"}}"#)
            ),
            0.0
        );
        assert_eq!(
            at(&started, &format!(r#"hero_livekit_child_ready{{process="{p}"}}"#)),
            1.0
        );
    }
    assert_eq!(at(&started, "hero_livekit_ready_for_tokens{}"), 1.0);
    assert_eq!(at(&started, "hero_livekit_consistent{}"), 1.0);
    assert_eq!(at(&started, "hero_livekit_redis_configured{}"), 0.0);
    assert!(at(&started, &format!(r#"{PROBES}{{result="accepted"}}"#)) >= 1.0);

    // A drift heal: livekit.yaml replaced by a file with another key. The
    // running livekit-server read the rendering, so nothing restarts.
    let yaml = root.file("livekit.yaml");
    let rendering = std::fs::read(&yaml).expect("livekit.yaml");
    let key = h["api_key"].as_str().expect("api_key");
    let tampered = String::from_utf8(rendering.clone())
        .expect("utf-8 yaml")
        .replace(key, "APItamperedKey1");
    assert_ne!(tampered.as_bytes(), &rendering[..], "the key is in livekit.yaml");
    replace_file(&yaml, tampered.as_bytes());
    wait_for(WAIT, "livekit.yaml healed by the tick", || {
        (std::fs::read(&yaml).ok()? == rendering).then_some(())
    });
    wait_ready_for_tokens(&d, WAIT);
    let text = scrape(&d);
    let healed = parse(&text, "prometheus");
    texts.push(text);
    assert_eq!(
        moved(&started, &healed, HEALS),
        deltas(&[(r#"hero_livekit_heals_total{file="livekit.yaml",trigger="drift"}"#, 1.0)])
    );
    assert_eq!(
        moved(&started, &healed, DRIFT),
        deltas(&[(r#"hero_livekit_drift_detections_total{file="livekit.yaml"}"#, 1.0)])
    );
    assert!(
        moved(&started, &healed, RESTARTS).is_empty(),
        "a drift heal restarts nothing"
    );

    // A crash: kill -9 of livekit-server; its supervisor brings it back.
    let old = pid_in(&d.health(), "livekit-server").expect("livekit-server pid");
    kill(Pid::from_raw(old), Signal::SIGKILL).expect("SIGKILL livekit-server");
    poll(WAIT, || {
        let h = d.health();
        (h["ready_for_tokens"] == true && pid_in(&h, "livekit-server").is_some_and(|p| p != old)).then_some(())
    })
    .expect("livekit-server back and the chain proven");
    let text = scrape(&d);
    let crashed = parse(&text, "prometheus");
    texts.push(text);
    assert_eq!(
        moved(&healed, &crashed, RESTARTS),
        deltas(&[(
            r#"hero_livekit_child_restarts_total{process="livekit-server",reason="crashed"}"#,
            1.0
        )])
    );
    assert!(moved(&healed, &crashed, HEALS).is_empty(), "a crash rewrites no file");
    let states = moved(&healed, &crashed, STATES);
    assert_eq!(
        states.get(r#"hero_livekit_child_state_changes_total{process="livekit-server",state="running"}"#),
        Some(&1.0),
        "{states:?}"
    );
    assert!(
        !states.keys().any(|k| k.contains("lk-backend")),
        "lk-backend was left alone: {states:?}"
    );

    // A restart asked for, then a new port while both run: livekit.yaml
    // (the port) and backend.env (the URL) change, so both children restart.
    d.ok("livekitservice.restart", json!({"process": "lk-backend"}));
    d.ok("livekitservice.configure", json!({"port": free_port()}));
    wait_ready_for_tokens(&d, WAIT);
    let text = scrape(&d);
    let changed = parse(&text, "prometheus");
    texts.push(text);
    assert_eq!(
        moved(&crashed, &changed, RESTARTS),
        deltas(&[
            (
                r#"hero_livekit_child_restarts_total{process="livekit-server",reason="config_changed"}"#,
                1.0
            ),
            (
                r#"hero_livekit_child_restarts_total{process="lk-backend",reason="config_changed"}"#,
                1.0
            ),
            (
                r#"hero_livekit_child_restarts_total{process="lk-backend",reason="requested"}"#,
                1.0
            ),
        ])
    );
    assert_eq!(
        moved(&crashed, &changed, HEALS),
        deltas(&[
            (
                r#"hero_livekit_heals_total{file="backend.env",trigger="configure"}"#,
                1.0
            ),
            (
                r#"hero_livekit_heals_total{file="livekit.yaml",trigger="configure"}"#,
                1.0
            ),
            (
                r#"hero_livekit_heals_total{file="runtime.json",trigger="configure"}"#,
                1.0
            ),
        ])
    );
    assert!(moved(&crashed, &changed, DRIFT).is_empty());

    // Health calls: exactly these, and a scrape is none of them. A failed
    // install: counted, and nothing else moves.
    for _ in 0..3 {
        d.health();
    }
    for _ in 0..2 {
        let r = get(&d.socket, "/health");
        assert_eq!(r.status, 200);
    }
    let missing = root.path().join("no-such-livekit-server.tar.gz");
    let r = d.call(
        "livekitservice.install",
        json!({"source": missing.display().to_string()}),
    );
    assert!(r.get("error").is_some(), "an install from a missing file fails: {r}");
    let text = scrape(&d);
    let last = parse(&text, "prometheus");
    texts.push(text);
    assert_eq!(
        moved(&changed, &last, HEALTH_CALLS),
        deltas(&[
            (r#"hero_livekit_health_calls_total{via="http"}"#, 2.0),
            (r#"hero_livekit_health_calls_total{via="rpc"}"#, 3.0),
        ])
    );
    assert_eq!(
        moved(&changed, &last, INSTALLS),
        deltas(&[(r#"hero_livekit_installs_total{outcome="failed"}"#, 1.0)])
    );
    assert!(moved(&changed, &last, HEALS).is_empty());
    assert!(moved(&changed, &last, RESTARTS).is_empty());

    // Every probe that ran has its latency in the histogram.
    let ran: f64 = ["accepted", "refused", "failed"]
        .iter()
        .map(|r| at(&last, &format!(r#"{PROBES}{{result="{r}"}}"#)))
        .sum();
    assert_eq!(at(&last, "hero_livekit_token_chain_probe_latency_seconds_count{}"), ran);
    assert_eq!(
        at(
            &last,
            r#"hero_livekit_token_chain_probe_latency_seconds_bucket{le="+Inf"}"#
        ),
        ran
    );

    // OpenMetrics for a scraper that asks for it, read by its own parser,
    // with the same counts.
    let r = parse_http(&raw(
        &d.socket,
        b"GET /metrics HTTP/1.1\r\nHost: l\r\nAccept: application/openmetrics-text; version=1.0.0\r\nConnection: close\r\n\r\n",
    ));
    assert_eq!(r.status, 200);
    assert!(
        r.headers
            .to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{}",
        r.headers
    );
    let text = String::from_utf8(r.body).expect("utf-8 scrape");
    let om = parse(&text, "openmetrics");
    texts.push(text);
    for series in [
        r#"hero_livekit_heals_total{file="livekit.yaml",trigger="drift"}"#,
        r#"hero_livekit_child_restarts_total{process="livekit-server",reason="crashed"}"#,
        r#"hero_livekit_installs_total{outcome="failed"}"#,
    ] {
        assert_eq!(at(&om, series), at(&last, series), "{series}");
    }

    // No label (nor anything else) carries the secret or the key.
    let secret = api_secret(&root);
    for text in &texts {
        assert!(!text.contains(&secret), "the api_secret is in a scrape");
        assert!(!text.contains(key), "the api_key is in a scrape");
    }

    let r = post(&d.socket, &json!({}));
    assert_ne!(r.status, 404, "POST / is still JSON-RPC");
    let r = parse_http(&raw(
        &d.socket,
        b"POST /metrics HTTP/1.1\r\nHost: l\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    ));
    assert_eq!(r.status, 405, "GET only");
}

/// Sends `request` on a fresh TCP connection and reads the whole answer.
fn tcp(port: u16, request: &str) -> HttpResponse {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics listener");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.write_all(request.as_bytes()).expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read");
    parse_http(&out)
}

#[test]
fn metrics_listen_serves_only_get_metrics_on_tcp() {
    let root = Root::new();
    let port = free_port();
    let d = Daemon::start(
        &root,
        DaemonOpts::default()
            .arg("--metrics-listen")
            .arg(format!("127.0.0.1:{port}")),
    );
    let r = tcp(port, "GET /metrics HTTP/1.1\r\nHost: l\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body).expect("utf-8");
    let s = parse(&text, "prometheus");
    assert_eq!(
        at(&s, r#"hero_livekit_heals_total{file="runtime.json",trigger="boot"}"#),
        1.0
    );
    assert!(!text.contains(&api_secret(&root)));
    for request in [
        "GET /health HTTP/1.1\r\nHost: l\r\nConnection: close\r\n\r\n",
        "GET /openrpc.json HTTP/1.1\r\nHost: l\r\nConnection: close\r\n\r\n",
        "POST /rpc HTTP/1.1\r\nHost: l\r\nContent-Type: application/json\r\nContent-Length: 59\r\nConnection: close\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"livekitservice.health\"}",
        "POST /metrics HTTP/1.1\r\nHost: l\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    ] {
        let r = tcp(port, request);
        assert_eq!(r.status, 404, "{request}");
        assert!(!String::from_utf8_lossy(&r.body).contains("api_key"), "{request}");
    }
    // The socket front serves the same metrics.
    assert_eq!(get(&d.socket, "/metrics").status, 200);
}

#[test]
fn metrics_listen_on_a_taken_port_stops_the_daemon_naming_the_flag() {
    let root = Root::new();
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let port = taken.local_addr().expect("addr").port();
    let err = match Daemon::try_start(
        &root,
        DaemonOpts::default().arg("--metrics-listen").arg(port.to_string()),
    ) {
        Ok(_) => panic!("a daemon started on a taken metrics port"),
        Err(e) => e,
    };
    assert!(
        err.contains("--metrics-listen") && err.contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    let err = match Daemon::try_start(&root, DaemonOpts::default().arg("--metrics-listen").arg("localhost:1")) {
        Ok(_) => panic!("a host name was accepted"),
        Err(e) => e,
    };
    assert!(err.contains("IP:PORT"), "{err}");
}

/// A scrape on a fresh TCP connection: its status, or `None` when the
/// connection was closed unanswered.
fn try_scrape_tcp(port: u16) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: l\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    (!out.is_empty()).then(|| parse_http(&out).status)
}

#[test]
fn the_metrics_listener_is_bounded_in_connections_and_header_time() {
    let root = Root::new();
    let port = free_port();
    let _d = Daemon::start(
        &root,
        DaemonOpts::default()
            .arg("--metrics-listen")
            .arg(port.to_string())
            .env_var("HERO_LIVEKIT_MAX_CONNECTIONS_READ_ONLY", 2)
            .env_var("HERO_LIVEKIT_HEADER_TIMEOUT_MS", 2000),
    );
    assert_eq!(try_scrape_tcp(port), Some(200), "a bare port is served on 127.0.0.1");
    // Connections that send nothing take the budget; once the accept loop
    // holds two, a scrape is closed unanswered. One more is opened until
    // then: the slot of the scrape above may not be free yet when the first
    // ones arrive, and those are refused.
    let mut idle = Vec::new();
    let opened = std::time::Instant::now();
    wait_for(WAIT, "a connection over the budget closed unanswered", || {
        idle.push(TcpStream::connect(("127.0.0.1", port)).ok()?);
        try_scrape_tcp(port).is_none().then_some(())
    });
    // The header timeout closes the idle ones (the daemon ends them: a read
    // that timed out on this side would be an error), which frees the budget.
    for mut s in idle {
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut out = Vec::new();
        let read = s.read_to_end(&mut out);
        assert!(read.is_ok(), "an idle connection outlived the header timeout: {read:?}");
        assert!(
            out.is_empty() || out.starts_with(b"HTTP/1.1 408"),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }
    // 2 s asked for, against hyper's own default of 30 s.
    assert!(
        opened.elapsed() < Duration::from_secs(20),
        "idle connections lasted {:?}",
        opened.elapsed()
    );
    wait_for(WAIT, "a scrape served again", || {
        (try_scrape_tcp(port) == Some(200)).then_some(())
    });
}

/// Sends `request` to `socket` from a process running as uid/gid 65534.
fn as_nobody(socket: &std::path::Path, request: &str) -> HttpResponse {
    let script = "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\ns.sendall(sys.stdin.buffer.read())\nd=b''\nwhile True:\n  c=s.recv(65536)\n  if not c: break\n  d+=c\nsys.stdout.buffer.write(d)\n";
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

#[test]
fn a_read_only_peer_may_scrape() {
    let root = Root::new();
    // A socket directory that uid nobody can traverse (the temp root is 0700).
    let public = tempfile::Builder::new()
        .prefix("hero_livekit_sock")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(public.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let socket = public.path().join("hero_livekit_server/rpc.sock");
    let _d = Daemon::start(
        &root,
        DaemonOpts::default()
            .arg("--socket")
            .arg(socket.display().to_string())
            .arg("--socket-group")
            .arg("65534"),
    );
    let r = as_nobody(&socket, "GET /metrics HTTP/1.1\r\nHost: l\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200);
    let s = parse(&String::from_utf8(r.body).expect("utf-8"), "prometheus");
    assert_eq!(
        at(&s, r#"hero_livekit_heals_total{file="backend.env",trigger="boot"}"#),
        1.0
    );
}

/// Waits until the scrape shows `series` at `value`.
fn wait_series(d: &Daemon, series: &str, value: f64) {
    let mut last = None;
    poll(WAIT, || {
        last = parse(&scrape(d), "prometheus").get(series).copied();
        (last == Some(value)).then_some(())
    })
    .unwrap_or_else(|| panic!("{series} not {value} within {WAIT:?} (last {last:?})"));
}

#[test]
fn redis_reachability_follows_a_real_redis_server() {
    let root = Root::new();
    let d = Daemon::start(&root, DaemonOpts::default().env_var("HERO_LIVEKIT_REDIS_CHECK_MS", 100));
    let s = parse(&scrape(&d), "prometheus");
    assert_eq!(at(&s, "hero_livekit_redis_configured{}"), 0.0);
    assert_eq!(at(&s, "hero_livekit_redis_reachable{}"), 0.0);

    let redis = Redis::start();
    d.ok("livekitservice.configure", json!({"redis_address": redis.address()}));
    wait_series(&d, "hero_livekit_redis_reachable{}", 1.0);
    assert_eq!(
        at(&parse(&scrape(&d), "prometheus"), "hero_livekit_redis_configured{}"),
        1.0
    );
    drop(redis);
    wait_series(&d, "hero_livekit_redis_reachable{}", 0.0);
    assert_eq!(
        at(&parse(&scrape(&d), "prometheus"), "hero_livekit_redis_configured{}"),
        1.0
    );
}
