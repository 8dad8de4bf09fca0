//! The install path end to end: a real HTTP server on 127.0.0.1, real
//! tarballs, real files, real processes. Each test names the promise it
//! protects: a wrong or partial binary never lands, and the previous one
//! survives every failure.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use flate2::write::GzEncoder;
use futures_util::StreamExt;
use hero_livekit_proto::ErrorCode;
use hero_livekit_server::install::{
    install_with, installed, InstallError, InstallOutcome, InstallProgress, InstallRecord, InstallRequest,
    InstallSettings, InstalledInfo, DEFAULT_VERSION, PHASE_DOWNLOAD, PHASE_INSTALL, PHASE_VERIFY,
};
use sha2::{Digest, Sha256};
use tar::EntryType;

// ---------------------------------------------------------------- test server

/// How the server answers for one path.
#[derive(Clone)]
enum Mode {
    Full,
    /// Announces the full length, sends half, then breaks the connection.
    DropHalfway,
    /// Sends `chunk`-byte pieces with `gap` between them, like a slow link.
    Slow {
        chunk: usize,
        gap: Duration,
    },
    /// Answers 302 with this `Location` (the bytes are unused), as GitHub
    /// answers a release download with its object store.
    Redirect(String),
}

#[derive(Default)]
struct Shared {
    files: Mutex<HashMap<String, (Vec<u8>, Mode)>>,
    requests: Mutex<Vec<String>>,
    hits: AtomicUsize,
}

struct TestServer {
    base: String,
    shared: Arc<Shared>,
}

impl TestServer {
    async fn start() -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared::default());
        let app = Router::new().fallback(serve).with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        TestServer {
            base: format!("http://{addr}"),
            shared,
        }
    }

    fn put(&self, path: &str, bytes: &[u8], mode: Mode) {
        self.shared
            .files
            .lock()
            .expect("lock")
            .insert(path.to_string(), (bytes.to_vec(), mode));
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    fn requests(&self) -> Vec<String> {
        self.shared.requests.lock().expect("lock").clone()
    }

    /// Serves a release the way GitHub lays it out: the tarball and a
    /// `checksums.txt` that also lists another architecture.
    fn put_release(&self, version: &str, tarball: &[u8], mode: Mode) {
        let asset = format!("livekit_{version}_linux_amd64.tar.gz");
        let checksums = format!(
            "{}  livekit_{version}_linux_arm64.tar.gz\n{}  {asset}\n",
            "0".repeat(64),
            sha(tarball)
        );
        self.put(
            &format!("/releases/v{version}/checksums.txt"),
            checksums.as_bytes(),
            Mode::Full,
        );
        self.put(&format!("/releases/v{version}/{asset}"), tarball, mode);
    }

    fn release_url(&self, version: &str) -> String {
        self.url(&format!("/releases/v{version}/livekit_{version}_linux_amd64.tar.gz"))
    }

    fn settings(&self) -> InstallSettings {
        InstallSettings {
            release_base: self.url("/releases"),
            arch: "x86_64".into(),
            ..InstallSettings::default()
        }
    }
}

async fn serve(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
    shared.hits.fetch_add(1, Ordering::SeqCst);
    shared.requests.lock().expect("lock").push(uri.path().to_string());
    let found = shared.files.lock().expect("lock").get(uri.path()).cloned();
    let response = match found {
        None => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Body::from("Not Found")),
        Some((bytes, Mode::Full)) => Response::builder().body(Body::from(bytes)),
        Some((_, Mode::Redirect(location))) => Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, location)
            .body(Body::empty()),
        Some((bytes, Mode::DropHalfway)) => {
            let len = bytes.len();
            let half = Bytes::copy_from_slice(&bytes[..len / 2]);
            // The body stream errors on its second poll; yielding first lets
            // hyper flush the headers and the first half, so the client sees a
            // connection that dies mid-body rather than before the response.
            let stream = futures_util::stream::iter([Ok(half)]).chain(futures_util::stream::once(async {
                tokio::task::yield_now().await;
                Err(io::Error::other("connection dropped on purpose"))
            }));
            Response::builder()
                .header(header::CONTENT_LENGTH, len)
                .body(Body::from_stream(stream))
        }
        Some((bytes, Mode::Slow { chunk, gap })) => {
            let len = bytes.len();
            let stream = futures_util::stream::unfold((bytes, 0usize), move |(bytes, at)| async move {
                if at >= bytes.len() {
                    return None;
                }
                if at > 0 {
                    tokio::time::sleep(gap).await;
                }
                let end = (at + chunk).min(bytes.len());
                let piece = Bytes::copy_from_slice(&bytes[at..end]);
                Some((Ok::<_, io::Error>(piece), (bytes, end)))
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

/// A stand-in livekit-server: a script, so that tests can run it.
fn script(build: &str) -> Vec<u8> {
    format!("#!/bin/sh\necho livekit-server-test\n# build {build}\n").into_bytes()
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// One raw tar entry. The name is written straight into the header, so that
/// hostile names (`..`, absolute) can be built, which `tar::Builder` refuses.
struct Entry<'a> {
    path: &'a str,
    data: &'a [u8],
    kind: EntryType,
    link: &'a str,
}

fn file<'a>(path: &'a str, data: &'a [u8]) -> Entry<'a> {
    Entry {
        path,
        data,
        kind: EntryType::Regular,
        link: "",
    }
}

fn tarball(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for e in entries {
        let mut header = tar::Header::new_gnu();
        let old = header.as_old_mut();
        old.name[..e.path.len()].copy_from_slice(e.path.as_bytes());
        old.linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        header.set_entry_type(e.kind);
        header.set_size(e.data.len() as u64);
        header.set_mode(0o755);
        header.set_cksum();
        builder.append(&header, e.data).expect("append entry");
    }
    builder.into_inner().expect("finish tar").finish().expect("finish gzip")
}

fn release_tarball(binary: &[u8]) -> Vec<u8> {
    tarball(&[file("LICENSE", b"Apache License 2.0\n"), file("livekit-server", binary)])
}

/// Bytes gzip cannot shrink, so that a tarball is as large as asked.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A fresh `<root>` with the daemon's layout.
struct Root {
    _dir: tempfile::TempDir,
    bin: PathBuf,
    target: PathBuf,
    record: PathBuf,
    src: PathBuf,
}

fn root() -> Root {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("bin");
    let src = dir.path().join("src");
    fs::create_dir_all(&src).expect("src dir");
    Root {
        target: bin.join("livekit-server"),
        record: dir.path().join("var/hero_livekit/install.json"),
        bin,
        src,
        _dir: dir,
    }
}

impl Root {
    /// Puts a previous binary and record in place by hand, as an earlier
    /// install would have.
    fn previous(&self, bytes: &[u8]) {
        fs::create_dir_all(&self.bin).expect("bin dir");
        fs::write(&self.target, bytes).expect("old binary");
        fs::set_permissions(&self.target, fs::Permissions::from_mode(0o755)).expect("chmod");
        fs::create_dir_all(self.record.parent().expect("state dir")).expect("state dir");
        let record = InstallRecord {
            version: "1.9.1".into(),
            sha256: sha(bytes),
            source: "/old".into(),
            installed_unix_ms: 1,
            size: bytes.len() as u64,
            artifact_sha256: None,
        };
        fs::write(&self.record, serde_json::to_vec(&record).expect("json")).expect("old record");
    }

    fn bin_entries(&self) -> Vec<String> {
        let mut names: Vec<String> = match fs::read_dir(&self.bin) {
            Ok(rd) => rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        };
        names.sort();
        names
    }

    fn record(&self) -> InstallRecord {
        serde_json::from_slice(&fs::read(&self.record).expect("record exists")).expect("record parses")
    }

    /// Asserts that a failed install left exactly the previous state.
    fn assert_untouched(&self, old_binary: &[u8], old_record: &[u8]) {
        assert_eq!(
            fs::read(&self.target).expect("old binary still there"),
            old_binary,
            "old binary intact"
        );
        assert_eq!(
            fs::read(&self.record).expect("old record still there"),
            old_record,
            "old record intact"
        );
        assert_eq!(self.bin_entries(), vec!["livekit-server"], "no temporary file left");
    }
}

fn request(version: Option<&str>, source: Option<&str>, sha256: Option<&str>, force: bool) -> InstallRequest {
    InstallRequest {
        version: version.map(str::to_string),
        source: source.map(str::to_string),
        sha256: sha256.map(str::to_string),
        force,
    }
}

async fn run_install(
    req: &InstallRequest,
    settings: &InstallSettings,
    root: &Root,
) -> Result<InstallOutcome, InstallError> {
    install_with(req, settings, &root.target, &root.record, |_| {}).await
}

fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("run sha256sum");
    assert!(out.status.success(), "sha256sum failed");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("digest")
        .to_string()
}

fn run_binary(path: &Path) -> String {
    let out = Command::new(path).output().expect("run the installed binary");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn default_release_installs_a_verified_0755_binary_and_its_record() {
    let server = TestServer::start().await;
    let binary = script("release");
    server.put_release(DEFAULT_VERSION, &release_tarball(&binary), Mode::Full);
    let root = root();

    let outcome = run_install(&InstallRequest::default(), &server.settings(), &root)
        .await
        .expect("install");

    assert!(outcome.changed);
    assert_eq!(outcome.version, DEFAULT_VERSION);
    assert_eq!(outcome.path, root.target);
    assert_eq!(outcome.source, server.release_url(DEFAULT_VERSION));
    assert!(outcome.warnings.is_empty(), "{:?}", outcome.warnings);
    assert_eq!(mode(&root.target), 0o755);
    assert_eq!(fs::read(&root.target).expect("installed"), binary);
    assert_eq!(sha256sum(&root.target), outcome.sha256);
    assert_eq!(run_binary(&root.target), "livekit-server-test\n");
    let record = root.record();
    assert_eq!(
        (record.version.as_str(), record.sha256.as_str()),
        (DEFAULT_VERSION, outcome.sha256.as_str())
    );
    assert_eq!(record.source, outcome.source);
    assert_eq!(record.size, binary.len() as u64);
    assert!(record.installed_unix_ms > 1_600_000_000_000);
    assert_eq!(
        installed(&root.target, &root.record),
        Some(InstalledInfo {
            version: Some(DEFAULT_VERSION.into()),
            sha256: Some(outcome.sha256.clone())
        })
    );
    assert_eq!(root.bin_entries(), vec!["livekit-server"], "no temporary file left");
    let asset = format!("livekit_{DEFAULT_VERSION}_linux_amd64.tar.gz");
    assert_eq!(
        server.requests(),
        vec![
            format!("/releases/v{DEFAULT_VERSION}/checksums.txt"),
            format!("/releases/v{DEFAULT_VERSION}/{asset}")
        ],
        "checksums first, so a missing entry fails before the big download"
    );
}

#[tokio::test]
async fn checksum_mismatch_installs_nothing_and_keeps_the_old_binary() {
    let server = TestServer::start().await;
    let root = root();
    let old = script("old");
    root.previous(&old);
    let old_record = fs::read(&root.record).expect("record");

    // The release's checksums file lists other bytes than those served.
    let listed = release_tarball(&script("genuine"));
    let served = release_tarball(&script("tampered"));
    server.put_release("1.13.4", &listed, Mode::Full);
    server.put(
        "/releases/v1.13.4/livekit_1.13.4_linux_amd64.tar.gz",
        &served,
        Mode::Full,
    );
    let err = run_install(&request(Some("1.13.4"), None, None, false), &server.settings(), &root)
        .await
        .expect_err("tampered tarball");
    assert_eq!(err.code(), Some(ErrorCode::ChecksumMismatch), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&sha(&listed)) && msg.contains(&sha(&served)) && msg.contains(&server.release_url("1.13.4")),
        "{msg}"
    );
    root.assert_untouched(&old, &old_record);

    // The same with a pinned sha256 for a URL source, and for a local file.
    server.put("/mirror/lk.tgz", &served, Mode::Full);
    let wrong = sha(b"something else");
    let err = run_install(
        &request(None, Some(&server.url("/mirror/lk.tgz")), Some(&wrong), false),
        &server.settings(),
        &root,
    )
    .await
    .expect_err("pinned mismatch");
    assert_eq!(err.code(), Some(ErrorCode::ChecksumMismatch), "{err}");
    let local = root.src.join("lk.tgz");
    fs::write(&local, &served).expect("local tarball");
    let err = run_install(
        &request(None, Some(local.to_str().expect("utf8")), Some(&wrong), false),
        &server.settings(),
        &root,
    )
    .await
    .expect_err("local mismatch");
    assert_eq!(err.code(), Some(ErrorCode::ChecksumMismatch), "{err}");
    root.assert_untouched(&old, &old_record);
}

#[tokio::test]
async fn connection_dropped_mid_stream_installs_nothing_and_leaves_no_temp_file() {
    let server = TestServer::start().await;
    let root = root();
    let old = script("old");
    root.previous(&old);
    let old_record = fs::read(&root.record).expect("record");
    let tgz = tarball(&[file("LICENSE", &noise(200_000)), file("livekit-server", &script("new"))]);
    server.put_release(DEFAULT_VERSION, &tgz, Mode::DropHalfway);

    let err = run_install(&InstallRequest::default(), &server.settings(), &root)
        .await
        .expect_err("truncated");

    assert_eq!(err.code(), Some(ErrorCode::InstallFailed), "{err}");
    assert!(err.to_string().contains(&server.release_url(DEFAULT_VERSION)), "{err}");
    root.assert_untouched(&old, &old_record);
}

#[tokio::test]
async fn redirects_are_followed_to_the_artifact_but_a_loop_fails_naming_the_url() {
    let server = TestServer::start().await;
    let root = root();
    let binary = script("redirected");
    let tarball = release_tarball(&binary);
    server.put_release("1.2.3", &tarball, Mode::Full);
    // The release asset, like GitHub's, is a redirect to an object store.
    let asset = "/releases/v1.2.3/livekit_1.2.3_linux_amd64.tar.gz";
    server.put("/objects/abc", &tarball, Mode::Full);
    server.put(asset, b"", Mode::Redirect(server.url("/objects/abc")));
    let outcome = run_install(&request(Some("1.2.3"), None, None, false), &server.settings(), &root)
        .await
        .expect("install through a redirect");
    assert_eq!(outcome.sha256, sha(&binary));
    assert_eq!(fs::read(&root.target).expect("installed"), binary);
    assert!(
        server.requests().iter().any(|r| r == "/objects/abc"),
        "{:?}",
        server.requests()
    );

    // A redirect loop ends with an error, and the installed binary stays.
    let old_binary = fs::read(&root.target).expect("installed");
    let old_record = fs::read(&root.record).expect("record");
    server.put("/loop", b"", Mode::Redirect(server.url("/loop")));
    let url = server.url("/loop");
    let err = run_install(
        &request(None, Some(&url), Some(&sha(b"x")), false),
        &server.settings(),
        &root,
    )
    .await
    .expect_err("a redirect loop");
    let msg = err.to_string();
    assert!(msg.contains(&url) && msg.contains("too many redirects"), "{msg}");
    assert_eq!(err.code(), Some(ErrorCode::InstallFailed));
    root.assert_untouched(&old_binary, &old_record);
}

#[tokio::test]
async fn http_404_names_the_status_and_the_url() {
    let server = TestServer::start().await;
    let root = root();
    let url = server.url("/missing/livekit.tar.gz");
    let err = run_install(
        &request(None, Some(&url), Some(&sha(b"x")), false),
        &server.settings(),
        &root,
    )
    .await
    .expect_err("404");
    assert_eq!(err.to_string(), format!("HTTP 404 Not Found from {url}"));
    assert_eq!(err.code(), Some(ErrorCode::InstallFailed));

    // An unpublished release version fails on its checksums file.
    let err = run_install(&request(Some("9.9.9"), None, None, false), &server.settings(), &root)
        .await
        .expect_err("no such release");
    assert_eq!(
        err.to_string(),
        format!(
            "HTTP 404 Not Found from {}",
            server.url("/releases/v9.9.9/checksums.txt")
        )
    );
    assert!(!root.target.exists());
    assert_eq!(root.bin_entries(), Vec::<String>::new());
}

#[tokio::test]
async fn local_tarball_and_local_bare_binary_install_whatever_their_names() {
    let server = TestServer::start().await;
    let root = root();
    // A tarball without a tarball's name, pinned and labelled.
    let from_tar = script("local-tar");
    let tgz = release_tarball(&from_tar);
    let tar_path = root.src.join("download.bin");
    fs::write(&tar_path, &tgz).expect("write tarball");
    let outcome = run_install(
        &request(
            Some("1.13.5-local"),
            Some(tar_path.to_str().expect("utf8")),
            Some(&sha(&tgz)),
            false,
        ),
        &server.settings(),
        &root,
    )
    .await
    .expect("local tarball");
    assert_eq!((outcome.version.as_str(), outcome.changed), ("1.13.5-local", true));
    assert_eq!(outcome.source, tar_path.display().to_string());
    assert!(outcome.warnings.is_empty());
    assert_eq!(sha256sum(&root.target), sha(&from_tar));
    assert_eq!(run_binary(&root.target), "livekit-server-test\n");

    // A bare binary with a tarball's name, unpinned: installed with a warning
    // and labelled by its checksum.
    let bare = script("local-bare");
    let bare_path = root.src.join("livekit.tar.gz");
    fs::write(&bare_path, &bare).expect("write binary");
    let outcome = run_install(
        &request(None, Some(bare_path.to_str().expect("utf8")), None, false),
        &server.settings(),
        &root,
    )
    .await
    .expect("local binary");
    assert_eq!(outcome.version, format!("custom-{}", &sha(&bare)[..12]));
    assert_eq!(outcome.sha256, sha(&bare));
    assert_eq!(outcome.warnings.len(), 1, "unverified local source is flagged");
    assert!(
        outcome.warnings[0].contains(&bare_path.display().to_string()),
        "{:?}",
        outcome.warnings
    );
    assert_eq!(fs::read(&root.target).expect("installed"), bare);
    assert_eq!(mode(&root.target), 0o755);
    assert_eq!(root.record().version, outcome.version);
    assert_eq!(server.hits(), 0, "local sources never touch the network");
    assert_eq!(root.bin_entries(), vec!["livekit-server"]);
}

#[tokio::test]
async fn second_install_of_the_same_version_sends_no_request() {
    let server = TestServer::start().await;
    server.put_release(DEFAULT_VERSION, &release_tarball(&script("v1")), Mode::Full);
    let root = root();
    let first = run_install(&InstallRequest::default(), &server.settings(), &root)
        .await
        .expect("first");
    let hits = server.hits();
    let inode = fs::metadata(&root.target).expect("stat").ino();
    let record_bytes = fs::read(&root.record).expect("record");

    let second = run_install(&InstallRequest::default(), &server.settings(), &root)
        .await
        .expect("second");

    assert!(!second.changed);
    assert_eq!((second.version, second.sha256), (first.version, first.sha256));
    assert_eq!(server.hits(), hits, "nothing downloaded");
    assert_eq!(
        fs::metadata(&root.target).expect("stat").ino(),
        inode,
        "binary not rewritten"
    );
    assert_eq!(
        fs::read(&root.record).expect("record"),
        record_bytes,
        "record not rewritten"
    );
}

#[tokio::test]
async fn a_damaged_binary_is_fetched_again_despite_the_record() {
    let server = TestServer::start().await;
    let binary = script("v1");
    server.put_release(DEFAULT_VERSION, &release_tarball(&binary), Mode::Full);
    let root = root();
    run_install(&InstallRequest::default(), &server.settings(), &root)
        .await
        .expect("first");
    let hits = server.hits();
    fs::write(&root.target, b"#!/bin/sh\necho damaged\n").expect("damage it");

    let repaired = run_install(&InstallRequest::default(), &server.settings(), &root)
        .await
        .expect("repair");

    assert!(repaired.changed);
    assert_eq!(server.hits(), hits + 2, "checksums and tarball fetched again");
    assert_eq!(fs::read(&root.target).expect("binary"), binary);
}

#[tokio::test]
async fn force_reinstalls_the_same_version() {
    let server = TestServer::start().await;
    server.put_release(DEFAULT_VERSION, &release_tarball(&script("v1")), Mode::Full);
    let root = root();
    let first = run_install(&InstallRequest::default(), &server.settings(), &root)
        .await
        .expect("first");
    let hits = server.hits();
    let inode = fs::metadata(&root.target).expect("stat").ino();
    let first_record = root.record();

    let forced = run_install(&request(None, None, None, true), &server.settings(), &root)
        .await
        .expect("forced");

    assert!(forced.changed);
    assert_eq!(forced.sha256, first.sha256);
    assert_eq!(server.hits(), hits + 2, "checksums and tarball fetched again");
    assert_ne!(
        fs::metadata(&root.target).expect("stat").ino(),
        inode,
        "a new file was renamed into place"
    );
    assert!(root.record().installed_unix_ms >= first_record.installed_unix_ms);
    assert_eq!(root.bin_entries(), vec!["livekit-server"]);
}

#[tokio::test]
async fn a_tarball_without_livekit_server_is_refused() {
    let server = TestServer::start().await;
    let root = root();
    let old = script("old");
    root.previous(&old);
    let old_record = fs::read(&root.record).expect("record");
    let tgz = tarball(&[file("LICENSE", b"x"), file("bin/livekit", &script("wrong name"))]);
    server.put_release(DEFAULT_VERSION, &tgz, Mode::Full);

    let err = run_install(&InstallRequest::default(), &server.settings(), &root)
        .await
        .expect_err("no binary");

    assert!(matches!(err, InstallError::MissingBinary { .. }), "{err}");
    assert_eq!(err.code(), Some(ErrorCode::InstallFailed));
    assert_eq!(
        err.to_string(),
        format!("{} holds no `livekit-server` file", server.release_url(DEFAULT_VERSION))
    );
    root.assert_untouched(&old, &old_record);
}

#[tokio::test]
async fn archives_with_escaping_or_linked_entries_are_refused() {
    let server = TestServer::start().await;
    let root = root();
    let old = script("old");
    root.previous(&old);
    let old_record = fs::read(&root.record).expect("record");
    let good = script("new");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("parent dir", tarball(&[file("../livekit-server", &good)])),
        ("absolute", tarball(&[file("/livekit-server", &good)])),
        (
            "escape beside a good binary",
            tarball(&[file("livekit-server", &good), file("../../etc/cron.d/x", b"x")]),
        ),
        (
            "symlink binary",
            tarball(&[Entry {
                path: "livekit-server",
                data: b"",
                kind: EntryType::Symlink,
                link: "/bin/sh",
            }]),
        ),
        (
            "hard link binary",
            tarball(&[
                file("LICENSE", &good),
                Entry {
                    path: "livekit-server",
                    data: b"",
                    kind: EntryType::Link,
                    link: "LICENSE",
                },
            ]),
        ),
        (
            "fifo binary",
            tarball(&[Entry {
                path: "livekit-server",
                data: b"",
                kind: EntryType::Fifo,
                link: "",
            }]),
        ),
    ];
    for (name, tgz) in cases {
        let path = root.src.join("hostile.tgz");
        fs::write(&path, &tgz).expect("write tarball");
        let err = run_install(
            &request(None, Some(path.to_str().expect("utf8")), Some(&sha(&tgz)), false),
            &server.settings(),
            &root,
        )
        .await
        .expect_err(name);
        assert!(matches!(err, InstallError::Archive { .. }), "{name}: {err}");
        assert_eq!(err.code(), Some(ErrorCode::InstallFailed), "{name}");
        root.assert_untouched(&old, &old_record);
    }
    assert!(
        !root.src.parent().expect("root").join("etc").exists(),
        "nothing unpacked outside"
    );
}

#[tokio::test]
async fn progress_reports_increasing_bytes_throttled_and_ending_at_the_total() {
    let server = TestServer::start().await;
    let binary = script("progress");
    let tgz = tarball(&[file("LICENSE", &noise(512 * 1024)), file("livekit-server", &binary)]);
    server.put_release(
        DEFAULT_VERSION,
        &tgz,
        Mode::Slow {
            chunk: 64 * 1024,
            gap: Duration::from_millis(60),
        },
    );
    let root = root();
    let mut events: Vec<(Instant, InstallProgress)> = Vec::new();

    install_with(
        &InstallRequest::default(),
        &server.settings(),
        &root.target,
        &root.record,
        |p| events.push((Instant::now(), p)),
    )
    .await
    .expect("install");

    let phases: Vec<&str> = events.iter().map(|(_, p)| p.phase).collect();
    let mut order = phases.clone();
    order.dedup();
    assert_eq!(
        order,
        vec![PHASE_DOWNLOAD, PHASE_VERIFY, PHASE_INSTALL],
        "each phase once, in order"
    );
    for phase in [PHASE_DOWNLOAD, PHASE_VERIFY, PHASE_INSTALL] {
        let of_phase: Vec<&(Instant, InstallProgress)> = events.iter().filter(|(_, p)| p.phase == phase).collect();
        assert!(
            of_phase.windows(2).all(|w| w[0].1.bytes_done <= w[1].1.bytes_done),
            "{phase} never goes back"
        );
        // Between reports before the final one, the throttle keeps 50 ms.
        let throttled = &of_phase[..of_phase.len() - 1];
        for w in throttled.windows(2) {
            assert!(
                w[1].0 - w[0].0 >= Duration::from_millis(50),
                "{phase} reports closer than 50 ms"
            );
        }
    }
    let downloads: Vec<InstallProgress> = events
        .iter()
        .map(|(_, p)| *p)
        .filter(|p| p.phase == PHASE_DOWNLOAD)
        .collect();
    assert!(downloads.len() >= 4, "a slow download shows movement: {downloads:?}");
    let total = tgz.len() as u64;
    assert!(downloads.iter().all(|p| p.bytes_total == Some(total)));
    assert_eq!(downloads.last().map(|p| p.bytes_done), Some(total));
    let last = events.last().expect("events").1;
    assert_eq!(
        last,
        InstallProgress {
            phase: PHASE_INSTALL,
            bytes_done: binary.len() as u64,
            bytes_total: Some(binary.len() as u64)
        }
    );
}

#[tokio::test]
async fn a_running_process_keeps_its_old_binary_across_an_install() {
    let server = TestServer::start().await;
    let root = root();
    let sleeper = fs::read("/bin/sleep").expect("read /bin/sleep");
    let old_src = root.src.join("old-server");
    fs::write(&old_src, &sleeper).expect("copy sleep");
    let old_src = old_src.to_str().expect("utf8").to_string();
    run_install(
        &request(Some("1.0.0-old"), Some(&old_src), Some(&sha(&sleeper)), false),
        &server.settings(),
        &root,
    )
    .await
    .expect("install old");
    let old_inode = fs::metadata(&root.target).expect("stat").ino();
    // coreutils may dispatch on argv[0]; keep it `sleep`. A fork by another
    // test of this process may still hold the just-written file open for
    // writing until its own exec: ETXTBSY is that moment, so try again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut child = loop {
        match Command::new(&root.target).arg0("sleep").arg("30").spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && std::time::Instant::now() < deadline => {
                tokio::task::yield_now().await;
                std::thread::park_timeout(std::time::Duration::from_millis(5));
            }
            other => break other.expect("exec old binary"),
        }
    };
    let exe = PathBuf::from(format!("/proc/{}/exe", child.id()));
    assert_eq!(
        fs::read_link(&exe).expect("exe link"),
        root.target,
        "running the installed file"
    );

    let new_src = root.src.join("new-server");
    fs::write(&new_src, script("new")).expect("new binary");
    let outcome = run_install(
        &request(Some("1.0.0-new"), Some(new_src.to_str().expect("utf8")), None, false),
        &server.settings(),
        &root,
    )
    .await
    .expect("install new");

    let still_running = child.try_wait().expect("poll child").is_none();
    let exe_link = fs::read_link(&exe).expect("exe link");
    let exe_inode = fs::metadata(&exe).expect("stat through exe").ino();
    let new_inode = fs::metadata(&root.target).expect("stat").ino();
    child.kill().expect("kill");
    child.wait().expect("reap");
    assert!(outcome.changed);
    assert!(still_running, "the old process survived the install");
    assert_eq!(exe_link, PathBuf::from(format!("{} (deleted)", root.target.display())));
    assert_eq!(exe_inode, old_inode, "the process still executes the old inode");
    assert_ne!(new_inode, old_inode, "the new binary is a new file");
    assert_eq!(run_binary(&root.target), "livekit-server-test\n");
}

#[tokio::test]
async fn oversized_artifacts_and_binaries_are_refused() {
    let server = TestServer::start().await;
    let root = root();
    let tgz = release_tarball(&script("big"));
    server.put_release(DEFAULT_VERSION, &tgz, Mode::Full);
    let small = InstallSettings {
        max_download_bytes: 100,
        ..server.settings()
    };
    let err = run_install(&InstallRequest::default(), &small, &root)
        .await
        .expect_err("too big a download");
    assert!(matches!(err, InstallError::TooLarge { limit: 100, .. }), "{err}");
    assert!(err.to_string().contains(&server.release_url(DEFAULT_VERSION)), "{err}");

    let tiny_binary = InstallSettings {
        max_binary_bytes: 10,
        ..server.settings()
    };
    let err = run_install(&InstallRequest::default(), &tiny_binary, &root)
        .await
        .expect_err("too big a binary");
    assert!(matches!(err, InstallError::TooLarge { limit: 10, .. }), "{err}");
    assert!(!root.target.exists());
    assert_eq!(root.bin_entries(), Vec::<String>::new(), "no temporary file left");
}

#[tokio::test]
async fn a_custom_url_is_verified_by_a_published_checksum_or_needs_sha256() {
    let server = TestServer::start().await;
    let tgz = release_tarball(&script("mirror"));
    // `<url>.sha256` in sha256sum format.
    server.put("/a/lk.tar.gz", &tgz, Mode::Full);
    server.put(
        "/a/lk.tar.gz.sha256",
        format!("{}  lk.tar.gz\n", sha(&tgz)).as_bytes(),
        Mode::Full,
    );
    // A goreleaser-style checksums.txt beside it.
    server.put("/b/lk.tar.gz", &tgz, Mode::Full);
    server.put(
        "/b/checksums.txt",
        format!("{}  lk.tar.gz\n", sha(&tgz)).as_bytes(),
        Mode::Full,
    );
    for dir in ["a", "b"] {
        let root = root();
        let url = server.url(&format!("/{dir}/lk.tar.gz"));
        let outcome = run_install(
            &request(Some("1.13.5"), Some(&url), None, false),
            &server.settings(),
            &root,
        )
        .await
        .expect(dir);
        assert_eq!(outcome.source, url);
        assert_eq!(sha256sum(&root.target), outcome.sha256);
    }

    // Published checksum that disagrees.
    server.put("/c/lk.tar.gz", &tgz, Mode::Full);
    server.put("/c/lk.tar.gz.sha256", sha(b"other").as_bytes(), Mode::Full);
    let root = root();
    let err = run_install(
        &request(None, Some(&server.url("/c/lk.tar.gz")), None, false),
        &server.settings(),
        &root,
    )
    .await
    .expect_err("mismatch");
    assert_eq!(err.code(), Some(ErrorCode::ChecksumMismatch), "{err}");

    // Nothing published: refused before the artifact is fetched.
    server.put("/d/lk.tar.gz", &tgz, Mode::Full);
    let err = run_install(
        &request(None, Some(&server.url("/d/lk.tar.gz")), None, false),
        &server.settings(),
        &root,
    )
    .await
    .expect_err("unverifiable");
    assert_eq!(err.field(), Some("sha256"), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&server.url("/d/lk.tar.gz.sha256")) && msg.contains(&server.url("/d/checksums.txt")),
        "{msg}"
    );
    assert!(
        !server.requests().contains(&"/d/lk.tar.gz".to_string()),
        "artifact not downloaded"
    );
    assert!(!root.target.exists());
}

#[tokio::test]
async fn invalid_params_name_the_field_before_any_request() {
    let server = TestServer::start().await;
    let root = root();
    let cases = [
        (request(None, None, Some("abc"), false), "sha256"),
        (request(Some("latest"), None, None, false), "version"),
        (request(None, Some("relative/livekit.tgz"), None, false), "source"),
        (request(None, Some("ftp://127.0.0.1/lk.tgz"), None, false), "source"),
    ];
    for (req, field) in cases {
        let err = run_install(&req, &server.settings(), &root).await.expect_err(field);
        assert_eq!((err.field(), err.code()), (Some(field), None), "{err}");
        assert!(err.to_string().contains(field), "{err}");
    }
    assert_eq!(server.hits(), 0);
    assert!(!root.bin.exists());
}

#[tokio::test]
async fn credentials_in_a_source_url_never_reach_messages_or_the_record() {
    let server = TestServer::start().await;
    let tgz = release_tarball(&script("signed"));
    server.put("/signed/lk.tgz", &tgz, Mode::Full);
    let root = root();
    let port = server.base.rsplit(':').next().expect("port");
    let secret_url = |path: &str| format!("http://user:hunter2@127.0.0.1:{port}{path}?X-Signature=s3cr3t");

    let outcome = run_install(
        &request(None, Some(&secret_url("/signed/lk.tgz")), Some(&sha(&tgz)), false),
        &server.settings(),
        &root,
    )
    .await
    .expect("signed URL");
    let record = String::from_utf8(fs::read(&root.record).expect("record")).expect("utf8");
    let err = run_install(
        &request(None, Some(&secret_url("/gone.tgz")), Some(&sha(&tgz)), false),
        &server.settings(),
        &root,
    )
    .await
    .expect_err("404");

    for text in [
        outcome.source.as_str(),
        record.as_str(),
        &err.to_string(),
        &format!("{err:?}"),
    ] {
        assert!(!text.contains("hunter2") && !text.contains("s3cr3t"), "leaked: {text}");
    }
    assert_eq!(outcome.source, server.url("/signed/lk.tgz?<redacted>"));
}
