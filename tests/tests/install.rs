//! `install` through the daemon, end to end: a release server on 127.0.0.1
//! serves a real tarball holding the livekit-server test double as
//! `livekit-server`, the daemon installs it at `<root>/bin/livekit-server`,
//! and `start` (without `--livekit-bin`) runs that file to ready. Each test
//! names the promise it protects: a wrong or partial binary never lands,
//! the previous one survives every failure, a repeated install downloads
//! nothing, and install and start never interleave.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use futures_util::StreamExt;
use hero_livekit_proto::{Event, EventMessage};
use hero_livekit_tests::lk::{mint, rtc_validate};
use hero_livekit_tests::*;
use serde_json::{json, Value};
use sha2::Digest;

const VERSION: &str = "1.9.0";
const DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------- release server

/// How the server answers for one path.
#[derive(Clone)]
enum Mode {
    Full,
    /// Announces the full length, sends half, then breaks the connection.
    DropHalfway,
    /// `chunk`-byte pieces with `gap` between them, like a slow link.
    Slow {
        chunk: usize,
        gap: Duration,
    },
}

#[derive(Default)]
struct Shared {
    files: Mutex<HashMap<String, (Bytes, Mode)>>,
    hits: Mutex<HashMap<String, usize>>,
    total: AtomicUsize,
}

/// An HTTP server on 127.0.0.1 laid out like LiveKit's GitHub releases,
/// counting the requests it gets.
struct ReleaseServer {
    base: String,
    shared: Arc<Shared>,
    _rt: tokio::runtime::Runtime,
}

impl ReleaseServer {
    fn start() -> ReleaseServer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let shared = Arc::new(Shared::default());
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let app = Router::new().fallback(serve).with_state(shared.clone());
        rt.spawn(async move { axum::serve(listener, app).await });
        ReleaseServer {
            base: format!("http://{addr}"),
            shared,
            _rt: rt,
        }
    }

    fn put(&self, path: &str, bytes: Bytes, mode: Mode) {
        self.shared
            .files
            .lock()
            .expect("lock")
            .insert(path.to_string(), (bytes, mode));
    }

    fn asset_path(version: &str) -> String {
        format!("/releases/v{version}/livekit_{version}_linux_amd64.tar.gz")
    }

    /// Publishes `tarball` as release `version` with a `checksums.txt` that
    /// lists `listed_sha256` for it (and another architecture's asset).
    fn publish(&self, version: &str, tarball: Bytes, listed_sha256: &str, mode: Mode) -> String {
        let checksums = format!(
            "{}  livekit_{version}_linux_arm64.tar.gz\n{listed_sha256}  livekit_{version}_linux_amd64.tar.gz\n",
            "0".repeat(64)
        );
        self.put(
            &format!("/releases/v{version}/checksums.txt"),
            Bytes::from(checksums),
            Mode::Full,
        );
        self.put(&Self::asset_path(version), tarball, mode);
        self.url(&Self::asset_path(version))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn hits(&self, path: &str) -> usize {
        self.shared.hits.lock().expect("lock").get(path).copied().unwrap_or(0)
    }

    fn total(&self) -> usize {
        self.shared.total.load(Ordering::SeqCst)
    }
}

async fn serve(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
    *shared
        .hits
        .lock()
        .expect("lock")
        .entry(uri.path().to_string())
        .or_default() += 1;
    shared.total.fetch_add(1, Ordering::SeqCst);
    let found = shared.files.lock().expect("lock").get(uri.path()).cloned();
    let response = match found {
        None => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Body::from("Not Found")),
        Some((bytes, Mode::Full)) => Response::builder().body(Body::from(bytes)),
        Some((bytes, Mode::DropHalfway)) => {
            let len = bytes.len();
            let half = bytes.slice(..len / 2);
            // Yielding before the error lets hyper flush the headers and the
            // first half: the client sees a connection dying mid-body.
            let stream = futures_util::stream::iter([Ok(half)]).chain(futures_util::stream::once(async {
                tokio::task::yield_now().await;
                Err(std::io::Error::other("connection dropped on purpose"))
            }));
            Response::builder()
                .header(header::CONTENT_LENGTH, len)
                .body(Body::from_stream(stream))
        }
        Some((bytes, Mode::Slow { chunk, gap })) => {
            let len = bytes.len();
            let stream = futures_util::stream::unfold(0usize, move |at| {
                let bytes = bytes.clone();
                async move {
                    if at >= bytes.len() {
                        return None;
                    }
                    if at > 0 {
                        tokio::time::sleep(gap).await;
                    }
                    let end = (at + chunk).min(bytes.len());
                    Some((Ok::<_, std::io::Error>(bytes.slice(at..end)), end))
                }
            });
            Response::builder()
                .header(header::CONTENT_LENGTH, len)
                .body(Body::from_stream(stream))
        }
    };
    response.unwrap_or_else(|e| {
        let mut r = Response::new(Body::from(e.to_string()));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

// ---------------------------------------------------------------- fixtures

fn sha(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The livekit-server test double's bytes: what every good release holds.
/// Stripped of its debug info (binutils' `strip`, part of any toolchain that
/// links Rust), like a real release binary: the debug-built daemon then
/// hashes and unpacks about 7 MB per install instead of 55 MB, which keeps
/// these tests quick on a loaded 2-core machine.
fn double_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("livekit-server");
        let status = Command::new("strip")
            .arg("-o")
            .arg(&out)
            .arg(bin("livekit-server-double"))
            .status()
            .expect("run strip (binutils)");
        assert!(status.success(), "strip failed: {status}");
        std::fs::read(&out).expect("read the stripped double")
    })
}

/// A release tarball (`tar` + `flate2`) holding `binary` as `livekit-server`
/// next to the files a real release carries.
fn tarball_of(binary: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for (name, data, mode) in [
        ("LICENSE", b"Apache License 2.0\n".as_slice(), 0o644),
        ("README.md", b"# LiveKit\n".as_slice(), 0o644),
        ("livekit-server", binary, 0o755),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_cksum();
        builder.append_data(&mut header, name, data).expect("append entry");
    }
    builder.into_inner().expect("finish tar").finish().expect("finish gzip")
}

/// The release tarball of the double, built once per test binary (it is
/// large: compressing it for every test would dominate the run).
fn double_tarball() -> Bytes {
    static TARBALL: OnceLock<Bytes> = OnceLock::new();
    TARBALL.get_or_init(|| Bytes::from(tarball_of(double_bytes()))).clone()
}

/// Another executable, to tell an old binary from a new one.
fn other_binary(tag: &str) -> Vec<u8> {
    format!("#!/bin/sh\necho not-livekit {tag}\n").into_bytes()
}

/// A daemon with no `--livekit-bin`: it uses `<root>/bin/livekit-server`.
fn daemon(root: &Root) -> Daemon {
    Daemon::start(root, DaemonOpts::default())
}

fn installed_path(root: &Root) -> PathBuf {
    root.path().join("bin/livekit-server")
}

fn error_of(r: &Value) -> &Value {
    r.get("error").unwrap_or_else(|| panic!("expected an error, got {r}"))
}

/// Every file in `<root>/bin`: a failed install leaves no temporary behind.
fn bin_dir_listing(root: &Root) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.path().join("bin"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Installs the double as release [`VERSION`] from `server`.
fn install_double(d: &Daemon, server: &ReleaseServer) -> Value {
    let tarball = double_tarball();
    let url = server.publish(VERSION, tarball.clone(), &sha(&tarball), Mode::Full);
    d.ok("livekitservice.install", json!({"source": url, "version": VERSION}))
}

/// Collects the daemon's events from a WebSocket subscription on a thread
/// of its own; subscribed when `new` returns.
struct EventLog {
    events: Arc<Mutex<Vec<EventMessage>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EventLog {
    fn new(d: &Daemon) -> EventLog {
        let events = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let socket = d.socket.clone();
        let sink = events.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let client = hero_livekit_client::Client::new(&socket);
                let mut stream = client.subscribe_events().await.expect("subscribe to events");
                ready_tx.send(()).expect("signal subscribed");
                loop {
                    tokio::select! {
                        ev = stream.next() => match ev {
                            Some(ev) => sink.lock().expect("lock").push(ev),
                            None => return,
                        },
                        _ = &mut stop_rx => return,
                    }
                }
            });
        });
        ready_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("event subscription within 20 s");
        EventLog {
            events,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    fn snapshot(&self) -> Vec<EventMessage> {
        self.events.lock().expect("lock").clone()
    }

    /// Waits until an event satisfies `pred`; returns everything seen so far.
    fn wait_until(&self, what: &str, pred: impl Fn(&Event) -> bool) -> Vec<EventMessage> {
        wait_for(DEADLINE, what, || {
            let evs = self.snapshot();
            evs.iter().any(|m| pred(&m.event)).then_some(evs)
        })
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------- tests

#[test]
fn install_from_a_release_url_lands_the_binary_and_start_runs_it_without_livekit_bin() {
    let root = Root::new();
    let server = ReleaseServer::start();
    let d = daemon(&root);
    assert_eq!(d.health()["binary"]["installed"], false);

    let r = install_double(&d, &server);
    let path = installed_path(&root);
    let want_sha = sha(double_bytes());
    assert_eq!(r["version"], VERSION, "{r}");
    assert_eq!(r["path"], path.display().to_string());
    assert_eq!(r["sha256"], want_sha.as_str());
    assert_eq!(r["changed"], true);
    assert_eq!(r["warnings"], json!([]), "a checksummed URL needs no warning: {r}");

    let meta = std::fs::metadata(&path).expect("installed binary");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
    assert_eq!(sha256_file(&path), want_sha);
    // The system's own tool agrees.
    let out = Command::new("sha256sum").arg(&path).output().expect("run sha256sum");
    assert!(out.status.success());
    let sum = String::from_utf8_lossy(&out.stdout);
    assert_eq!(sum.split_whitespace().next(), Some(want_sha.as_str()), "{sum}");
    assert_eq!(bin_dir_listing(&root), ["livekit-server"], "no temporaries left");

    let h = d.health();
    assert_eq!(h["binary"]["installed"], true, "{h}");
    assert_eq!(h["binary"]["path"], path.display().to_string());
    assert_eq!(h["binary"]["version"], VERSION);
    assert_eq!(h["binary"]["sha256"], want_sha.as_str());

    // start without --livekit-bin runs the installed file to ready.
    configure_free_ports(&d);
    let s = d.ok("livekitservice.start", json!({"timeout_ms": 30000}));
    assert_eq!(s["ready_for_tokens"], true, "{s}");
    assert!(s.get("install").is_none(), "nothing to install: {s}");
    let pid = d.health()["processes"]["livekit-server"]["pid"]
        .as_u64()
        .expect("livekit-server pid");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("exe link");
    assert_eq!(exe, path, "livekit-server runs the installed file");
    let (backend_url, livekit_url) = (
        d.health()["backend_url"].as_str().expect("url").to_string(),
        d.health()["livekit_url"].as_str().expect("url").to_string(),
    );
    let token = mint(&backend_url, "installed", "eve");
    assert_eq!(
        rtc_validate(&livekit_url, token["token"].as_str().expect("token")),
        (200, "success".to_string())
    );
}

#[test]
fn a_checksum_mismatch_is_refused_and_the_previous_binary_is_kept_byte_for_byte() {
    let root = Root::new();
    let server = ReleaseServer::start();
    let d = daemon(&root);
    install_double(&d, &server);
    let path = installed_path(&root);
    let record = std::fs::read(root.file("install.json")).expect("install record");

    let bad = Bytes::from(tarball_of(&other_binary("tampered")));
    // The release's checksums.txt lists another digest...
    let url = server.publish("1.9.1", bad.clone(), &"ab".repeat(32), Mode::Full);
    // ... or the operator pinned another one.
    let cases = [
        json!({"source": url, "version": "1.9.1"}),
        json!({"source": url, "version": "1.9.1", "sha256": "cd".repeat(32)}),
    ];
    for params in cases {
        let r = d.call("livekitservice.install", params.clone());
        let e = error_of(&r);
        assert_eq!(e["code"], -32003, "{params}: {r}");
        assert_eq!(e["data"]["kind"], "checksum_mismatch");
        let message = e["message"].as_str().expect("message");
        assert!(message.contains(&sha(&bad)), "names the actual digest: {message}");
        assert!(
            e["data"]["hint"]
                .as_str()
                .is_some_and(|h| h.contains("previous binary was kept")),
            "{e}"
        );
        assert!(
            std::fs::read(&path).expect("binary") == double_bytes(),
            "previous binary intact"
        );
        assert_eq!(std::fs::read(root.file("install.json")).expect("record"), record);
        assert_eq!(bin_dir_listing(&root), ["livekit-server"], "no temporaries left");
        let h = d.health();
        assert_eq!(h["binary"]["version"], VERSION, "{h}");
        assert_eq!(h["binary"]["sha256"], sha(double_bytes()).as_str());
    }
}

#[test]
fn a_download_cut_mid_stream_installs_nothing() {
    let root = Root::new();
    let server = ReleaseServer::start();
    let d = daemon(&root);

    // Onto an empty root: nothing appears.
    let big = double_tarball();
    let url = server.publish("1.9.2", big.clone(), &sha(&big), Mode::DropHalfway);
    let r = d.call("livekitservice.install", json!({"source": url, "version": "1.9.2"}));
    let e = error_of(&r);
    assert_eq!(e["code"], -32002, "{r}");
    assert_eq!(e["data"]["retryable"], true, "a network failure may pass on retry: {e}");
    assert!(!installed_path(&root).exists(), "no binary from a partial download");
    assert!(bin_dir_listing(&root).is_empty(), "{:?}", bin_dir_listing(&root));
    assert_eq!(d.health()["binary"]["installed"], false);

    // Over a previous install: it survives, byte for byte.
    install_double(&d, &server);
    let record = std::fs::read(root.file("install.json")).expect("install record");
    let other = Bytes::from(tarball_of(&other_binary("partial")));
    let url = server.publish("1.9.3", other.clone(), &sha(&other), Mode::DropHalfway);
    let r = d.call("livekitservice.install", json!({"source": url, "version": "1.9.3"}));
    assert_eq!(error_of(&r)["code"], -32002, "{r}");
    assert!(std::fs::read(installed_path(&root)).expect("binary") == double_bytes());
    assert_eq!(std::fs::read(root.file("install.json")).expect("record"), record);
    assert_eq!(bin_dir_listing(&root), ["livekit-server"]);
}

#[test]
fn a_404_names_the_status_and_the_url() {
    let root = Root::new();
    let server = ReleaseServer::start();
    let d = daemon(&root);
    let url = server.url(&ReleaseServer::asset_path("9.9.9"));
    let r = d.call(
        "livekitservice.install",
        json!({"source": url, "version": "9.9.9", "sha256": "ef".repeat(32)}),
    );
    let e = error_of(&r);
    assert_eq!(e["code"], -32002, "{r}");
    let message = e["message"].as_str().expect("message");
    assert!(message.contains("404"), "{message}");
    assert!(message.contains(&url), "{message}");
    assert!(e["data"]["hint"].as_str().is_some_and(|h| !h.is_empty()), "{e}");
    assert_eq!(server.hits(&ReleaseServer::asset_path("9.9.9")), 1);
    assert!(!installed_path(&root).exists());
}

#[test]
fn a_local_path_installs_bare_binaries_and_tarballs() {
    let root = Root::new();
    let d = daemon(&root);
    let src = tempfile::tempdir().expect("source dir");

    // A bare binary, unpinned: installed, with a warning that says so.
    let bare = src.path().join("livekit-server");
    std::fs::write(&bare, double_bytes()).expect("write source binary");
    let r = d.ok("livekitservice.install", json!({"source": bare.display().to_string()}));
    assert_eq!(r["sha256"], sha(double_bytes()).as_str());
    assert_eq!(r["source"], bare.display().to_string());
    assert_eq!(r["changed"], true);
    let warnings = r["warnings"].as_array().expect("warnings");
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().is_some_and(|w| w.contains("without checksum verification"))),
        "{r}"
    );
    assert!(std::fs::read(installed_path(&root)).expect("binary") == double_bytes());

    // A tarball, pinned by its sha256: verified, so no warning.
    let other = other_binary("local tarball");
    let tgz = tarball_of(&other);
    let tgz_path = src.path().join(format!("livekit_{VERSION}_linux_amd64.tar.gz"));
    std::fs::write(&tgz_path, &tgz).expect("write source tarball");
    let r = d.ok(
        "livekitservice.install",
        json!({"source": tgz_path.display().to_string(), "sha256": sha(&tgz), "version": VERSION}),
    );
    assert_eq!(r["warnings"], json!([]), "{r}");
    assert_eq!(r["version"], VERSION);
    assert_eq!(
        r["sha256"],
        sha(&other).as_str(),
        "the binary's digest, not the tarball's"
    );
    assert_eq!(std::fs::read(installed_path(&root)).expect("binary"), other);
    assert_eq!(d.health()["binary"]["sha256"], sha(&other).as_str());
}

#[test]
fn a_second_install_of_the_same_version_downloads_nothing() {
    let root = Root::new();
    let server = ReleaseServer::start();
    let d = daemon(&root);
    let first = install_double(&d, &server);
    let asset = ReleaseServer::asset_path(VERSION);
    assert_eq!(server.hits(&asset), 1);
    let requests = server.total();
    let mtime = std::fs::metadata(installed_path(&root))
        .expect("binary")
        .modified()
        .expect("mtime");

    let url = server.url(&asset);
    let again = d.ok("livekitservice.install", json!({"source": url, "version": VERSION}));
    assert_eq!(again["changed"], false, "{again}");
    assert_eq!(again["sha256"], first["sha256"]);
    assert_eq!(
        server.total(),
        requests,
        "not a single request for an installed version"
    );
    assert_eq!(
        std::fs::metadata(installed_path(&root))
            .expect("binary")
            .modified()
            .expect("mtime"),
        mtime,
        "the file is not rewritten"
    );

    // force does download again.
    let forced = d.ok(
        "livekitservice.install",
        json!({"source": url, "version": VERSION, "force": true}),
    );
    assert_eq!(forced["sha256"], first["sha256"]);
    assert_eq!(server.hits(&asset), 2);
}

#[test]
fn install_and_start_issued_together_are_serialized() {
    let root = Root::new();
    let server = ReleaseServer::start();
    let d = daemon(&root);
    configure_free_ports(&d);
    let log = EventLog::new(&d);

    // A slow download keeps install busy while start arrives.
    let tarball = double_tarball();
    let url = server.publish(
        VERSION,
        tarball.clone(),
        &sha(&tarball),
        Mode::Slow {
            chunk: 128 << 10,
            gap: Duration::from_millis(40),
        },
    );
    let asset = ReleaseServer::asset_path(VERSION);
    let socket = d.socket.clone();
    let install = std::thread::spawn(move || {
        let r = rpc(
            &socket,
            "livekitservice.install",
            json!({"source": url, "version": VERSION}),
        );
        (r, Instant::now())
    });
    // install holds the service while it downloads; start is issued then.
    wait_for(DEADLINE, "the download to begin", || {
        (server.hits(&asset) > 0).then_some(())
    });
    let socket = d.socket.clone();
    let start = std::thread::spawn(move || {
        let sent = Instant::now();
        let r = rpc(&socket, "livekitservice.start", json!({"timeout_ms": 30000}));
        (r, sent, Instant::now())
    });
    // Reads are not serialized: health answers while both are in flight.
    assert!(d.health()["in_memory_hash"].is_string());
    let (install_r, install_done) = install.join().expect("install thread");
    let (start_r, start_sent, start_done) = start.join().expect("start thread");
    assert!(
        start_sent < install_done,
        "precondition: start was issued while install was still downloading"
    );

    assert!(install_r.get("result").is_some(), "install: {install_r}");
    // Had start run beside install, it would have found no binary (-32001).
    let s = start_r
        .get("result")
        .unwrap_or_else(|| panic!("start must wait for install, not fail: {start_r}"));
    assert!(install_done <= start_done);
    assert_eq!(s["ready_for_tokens"], true, "{s}");
    assert!(s.get("install").is_none(), "start saw the installed binary: {s}");
    let pid = d.health()["processes"]["livekit-server"]["pid"].as_u64().expect("pid");
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/exe")).expect("exe"),
        installed_path(&root)
    );

    // The event log shows the whole install before any child starts.
    let evs = log.wait_until("lk-backend running", |e| {
        matches!(
            e,
            Event::State {
                process: hero_livekit_proto::ProcessName::LkBackend,
                state: hero_livekit_proto::ProcessState::Running,
                ..
            }
        )
    });
    let installed_at = evs
        .iter()
        .position(|m| matches!(m.event, Event::Installed { .. }))
        .expect("an installed event");
    let last_progress = evs
        .iter()
        .rposition(|m| matches!(m.event, Event::InstallProgress { .. }))
        .expect("progress events");
    let first_state = evs
        .iter()
        .position(|m| matches!(m.event, Event::State { .. }))
        .expect("state events");
    assert!(
        last_progress < first_state && installed_at < first_state,
        "install and start interleaved: {evs:?}"
    );
}

#[test]
fn start_with_no_binary_and_no_known_source_fails_with_the_install_hint() {
    let root = Root::new();
    let d = daemon(&root);
    configure_free_ports(&d);
    let r = d.call("livekitservice.start", json!({}));
    let e = error_of(&r);
    assert_eq!(e["code"], -32001, "{r}");
    assert_eq!(e["data"]["kind"], "not_installed");
    assert!(
        e["data"]["hint"]
            .as_str()
            .is_some_and(|h| h.contains("hero_livekit install")),
        "{e}"
    );
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains(&installed_path(&root).display().to_string())),
        "names where it looked: {e}"
    );
    let h = d.health();
    for p in ["livekit-server", "lk-backend"] {
        assert_eq!(h["processes"][p]["state"], "stopped", "{p}: {h}");
    }
}

#[test]
fn start_with_update_runs_install_again() {
    let root = Root::new();
    let server = ReleaseServer::start();
    let d = daemon(&root);
    install_double(&d, &server);
    configure_free_ports(&d);
    let s = d.ok("livekitservice.start", json!({"timeout_ms": 30000}));
    assert_eq!(s["ready_for_tokens"], true, "{s}");
    let asset = ReleaseServer::asset_path(VERSION);
    assert_eq!(server.hits(&asset), 1);
    let lk_pid = |d: &Daemon| d.health()["processes"]["livekit-server"]["pid"].as_u64().expect("pid");
    let first_pid = lk_pid(&d);

    // The source still serves the same bytes: fetched and compared, then
    // nothing changes: same file, same label, same running server.
    let binary = installed_path(&root);
    let before = std::fs::metadata(&binary).expect("installed binary");
    let s = d.ok("livekitservice.start", json!({"update": true, "timeout_ms": 30000}));
    assert_eq!(server.hits(&asset), 2, "update fetched the release again");
    let install = s
        .get("install")
        .unwrap_or_else(|| panic!("start reports its install: {s}"));
    assert_eq!(install["sha256"], sha(double_bytes()).as_str(), "{install}");
    assert_eq!(install["changed"], false, "{install}");
    assert_eq!(install["version"], VERSION, "the operator's label is kept: {install}");
    assert_eq!(s["processes"]["livekit-server"], "already_running", "{s}");
    assert_eq!(lk_pid(&d), first_pid, "livekit-server was not restarted");
    let after = std::fs::metadata(&binary).expect("installed binary");
    assert_eq!(
        (before.ino(), before.mtime(), before.mtime_nsec()),
        (after.ino(), after.mtime(), after.mtime_nsec()),
        "the binary was not rewritten"
    );
    assert_eq!(d.health()["binary"]["version"], VERSION);

    // A new build behind the same URL: installed, relabelled by its hash
    // (the old label named other bytes), and the server restarted onto it.
    let new_binary = [double_bytes(), b"\0a later build".as_slice()].concat();
    let tarball = Bytes::from(tarball_of(&new_binary));
    server.publish(VERSION, tarball.clone(), &sha(&tarball), Mode::Full);
    let s = d.ok("livekitservice.start", json!({"update": true, "timeout_ms": 30000}));
    assert_eq!(server.hits(&asset), 3);
    let install = &s["install"];
    assert_eq!(install["changed"], true, "{install}");
    assert_eq!(install["sha256"], sha(&new_binary).as_str(), "{install}");
    let label = format!("custom-{}", &sha(&new_binary)[..12]);
    assert_eq!(install["version"], label.as_str(), "{install}");
    assert_eq!(s["processes"]["livekit-server"], "restarted", "{s}");
    assert_eq!(s["ready_for_tokens"], true, "{s}");
    let pid = lk_pid(&d);
    assert_ne!(pid, first_pid);
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/exe")).expect("exe"),
        binary,
        "livekit-server runs the file now installed (not a deleted inode)"
    );
}

#[test]
fn install_progress_arrives_on_a_websocket_subscription() {
    let root = Root::new();
    let server = ReleaseServer::start();
    let d = daemon(&root);
    let log = EventLog::new(&d);
    let tarball = double_tarball();
    let url = server.publish(
        VERSION,
        tarball.clone(),
        &sha(&tarball),
        Mode::Slow {
            chunk: 256 << 10,
            gap: Duration::from_millis(20),
        },
    );
    d.ok("livekitservice.install", json!({"source": url, "version": VERSION}));
    let evs = log.wait_until("installed event", |e| matches!(e, Event::Installed { .. }));
    let download: Vec<(u64, Option<u64>)> = evs
        .iter()
        .filter_map(|m| match &m.event {
            Event::InstallProgress {
                phase,
                bytes_done,
                bytes_total,
            } if phase == "download" => Some((*bytes_done, *bytes_total)),
            _ => None,
        })
        .collect();
    assert!(download.len() >= 2, "several download reports: {download:?}");
    let total = tarball.len() as u64;
    assert!(
        download.windows(2).all(|w| w[0].0 <= w[1].0),
        "bytes_done never goes back: {download:?}"
    );
    assert!(download.iter().all(|(_, t)| *t == Some(total)), "{download:?}");
    assert_eq!(download.last().map(|p| p.0), Some(total), "ends at the total");
    assert!(download[0].0 < total, "reported while downloading, not only at the end");
    let installed = evs.iter().find_map(|m| match &m.event {
        Event::Installed { version, sha256 } => Some((version.clone(), sha256.clone())),
        _ => None,
    });
    assert_eq!(installed, Some((VERSION.to_string(), sha(double_bytes()))));
    // Sequence numbers order the stream.
    assert!(evs.windows(2).all(|w| w[0].seq < w[1].seq));
}

#[test]
fn a_trickling_mirror_holds_up_nothing_and_ends_at_the_install_deadline_with_the_old_binary_intact() {
    let root = Root::new();
    let server = ReleaseServer::start();
    let mut opts = DaemonOpts::default().drift_check_ms(200);
    opts.env
        .push(("HERO_LIVEKIT_INSTALL_DEADLINE_MS".into(), "5000".into()));
    let d = Daemon::start(&root, opts);
    install_double(&d, &server);
    configure_free_ports(&d);
    let before = sha256_file(&installed_path(&root));

    // A newer release that arrives at one byte per second.
    let other = Bytes::from(tarball_of(&other_binary("trickle")));
    let url = server.publish(
        "1.9.9",
        other.clone(),
        &sha(&other),
        Mode::Slow {
            chunk: 1,
            gap: Duration::from_secs(1),
        },
    );
    let socket = d.socket.clone();
    let installing = std::thread::spawn(move || {
        rpc(
            &socket,
            "livekitservice.install",
            json!({"source": url, "version": "1.9.9"}),
        )
    });
    wait_for(DEADLINE, "the download under way", || {
        (server.hits(&ReleaseServer::asset_path("1.9.9")) > 0).then_some(())
    });

    // Meanwhile the daemon serves, configures and heals: each completes
    // while the install is still under way.
    let r = d.ok("livekitservice.configure", json!({"domain": "media.example.org"}));
    assert_eq!(r["changed_fields"], json!(["domain"]), "{r}");
    assert!(!installing.is_finished(), "configure did not wait for the download");
    std::fs::remove_file(root.file("backend.env")).expect("drift");
    wait_for(DEADLINE, "the drift healed during the download", || {
        (d.health()["consistent"] == true).then_some(())
    });
    assert!(!installing.is_finished(), "the heal did not wait for the download");

    let r = installing.join().expect("install thread");
    let e = error_of(&r);
    assert_eq!(e["code"], -32002, "install_failed: {r}");
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("did not complete within 5000 ms")),
        "{r}"
    );
    assert_eq!(sha256_file(&installed_path(&root)), before, "the old binary is intact");
    assert_eq!(d.health()["binary"]["version"], VERSION);
}

/// docs/operations.md: once an install has succeeded, `start` installs the
/// recorded source again by itself when the binary disappears, for every
/// way a binary can be installed, verified against the recorded checksum.
#[test]
fn start_reinstalls_a_vanished_binary_from_the_recorded_source_of_every_kind() {
    let server = ReleaseServer::start();
    let files = tempfile::tempdir().expect("tempdir");
    let bare = files.path().join("livekit-server");
    std::fs::write(&bare, double_bytes()).expect("write binary");
    std::fs::set_permissions(&bare, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let tarball = double_tarball();
    let tar_path = files.path().join("livekit.tar.gz");
    std::fs::write(&tar_path, &tarball).expect("write tarball");
    let url = server.publish(VERSION, tarball.clone(), &sha(&tarball), Mode::Full);
    let cases = [
        ("a local binary", json!({"source": bare.display().to_string()})),
        (
            "a local tarball with its sha256",
            json!({"source": tar_path.display().to_string(), "sha256": sha(&tarball)}),
        ),
        ("a URL with a version", json!({"source": url, "version": VERSION})),
        ("a URL without one", json!({"source": url})),
    ];
    for (what, params) in cases {
        let root = Root::new();
        let d = daemon(&root);
        let first = d.ok("livekitservice.install", params.clone());
        configure_free_ports(&d);
        std::fs::remove_file(installed_path(&root)).expect("remove the installed binary");
        let s = d.ok("livekitservice.start", json!({"timeout_ms": 30000}));
        assert_eq!(s["ready_for_tokens"], true, "{what}: {s}");
        assert_eq!(
            sha(&std::fs::read(installed_path(&root)).expect("reinstalled")),
            sha(double_bytes()),
            "{what}"
        );
        assert_eq!(
            d.health()["binary"]["version"],
            first["version"],
            "{what}: the label is kept"
        );
    }
}

/// The recorded checksum pins what is installed again: a local source whose
/// bytes changed since is refused, and nothing is installed.
#[test]
fn a_reinstall_from_a_source_whose_bytes_changed_is_refused() {
    let root = Root::new();
    let d = daemon(&root);
    let files = tempfile::tempdir().expect("tempdir");
    let bare = files.path().join("livekit-server");
    std::fs::write(&bare, double_bytes()).expect("write binary");
    std::fs::set_permissions(&bare, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d.ok("livekitservice.install", json!({"source": bare.display().to_string()}));
    configure_free_ports(&d);
    std::fs::remove_file(installed_path(&root)).expect("remove the installed binary");
    std::fs::write(&bare, other_binary("swapped")).expect("swap the source");
    let r = d.call("livekitservice.start", json!({"timeout_ms": 30000}));
    let e = error_of(&r);
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("sha256") || m.contains("checksum")),
        "{r}"
    );
    assert!(!installed_path(&root).exists(), "nothing installed");
}

/// `restart` never trades a working child for one that cannot start
/// (issue 20, item 2): with the installed binary gone, restarting
/// livekit-server is refused before anything is stopped, naming the cause,
/// and the running process keeps serving.
#[test]
fn restart_with_the_binary_missing_is_refused_and_the_running_server_keeps_serving() {
    let root = Root::new();
    let d = daemon(&root);
    let src = tempfile::tempdir().expect("source dir");
    let bare = src.path().join("livekit-server");
    std::fs::write(&bare, double_bytes()).expect("write source binary");
    d.ok("livekitservice.install", json!({"source": bare.display().to_string()}));
    configure_free_ports(&d);
    let s = d.ok("livekitservice.start", json!({"timeout_ms": 30000}));
    assert_eq!(s["ready_for_tokens"], true, "{s}");
    let pid = d.health()["processes"]["livekit-server"]["pid"].as_u64().expect("pid");
    std::fs::remove_file(installed_path(&root)).expect("remove the installed binary");

    let r = d.call("livekitservice.restart", json!({"process": "livekit-server"}));
    let e = error_of(&r);
    assert_eq!(e["data"]["kind"], "not_installed", "{r}");
    let m = e["message"].as_str().unwrap_or("");
    assert!(m.contains("missing") && m.contains("keeps serving"), "{r}");
    assert!(e["data"]["hint"].as_str().unwrap_or("").contains("install"), "{r}");
    let h = d.health();
    assert_eq!(
        h["processes"]["livekit-server"]["pid"].as_u64(),
        Some(pid),
        "not stopped: {h}"
    );
    assert_eq!(h["processes"]["livekit-server"]["state"], "running", "{h}");
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the same process still runs"
    );
    // A restart of lk-backend alone is not held back by it.
    d.ok("livekitservice.restart", json!({"process": "lk-backend"}));
    assert_eq!(d.health()["processes"]["livekit-server"]["pid"].as_u64(), Some(pid));
}
