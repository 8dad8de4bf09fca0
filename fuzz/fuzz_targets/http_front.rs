//! The HTTP front: arbitrary bytes are one client's side of a connection to
//! the daemon's real front (`daemon::Connections::serve`, the code the
//! accept loop runs for every accepted connection: the first-head read,
//! hyper's HTTP/1 with the daemon's limits, the `Router`, jsonrpsee), over
//! an in-memory duplex pipe instead of the Unix socket.
//!
//! Input: the request bytes of a peer with full access; a first byte of
//! `\x01` makes the rest those of a read-only (`--socket-group`) peer, `\x02`
//! those of a peer that may do nothing (which the accept loop refuses before
//! any router; served here, it exercises the router's and the methods' own
//! checks, the second line).
//!
//! One exchange: the bytes are written, whatever comes back is read until
//! the server closes or the connection goes quiet, then the client shuts its
//! write side and reads until EOF. The write side stays open until then on
//! purpose: hyper drops a connection whose client half-closes while a
//! request is in flight (the product's setting), so shutting it at once
//! would test little beyond that. tokio's clock is paused: "quiet" is the
//! runtime having nothing to do, and the daemon's own timers (header and
//! body timeouts, 10 s each) fire in virtual time, at no cost.
//!
//! Properties:
//! - nothing panics (a panic in any task aborts the process: libFuzzer's
//!   panic hook);
//! - the answer, if any, starts with `HTTP/1.1 ` (`HTTP/1.0 ` when the input
//!   holds an HTTP/1.0 request: hyper answers in the client's version) and a
//!   three-digit status followed by a space;
//! - the daemon keeps answering: every `HEALTH_EVERY` inputs, `GET /health`
//!   on a fresh connection gets 200 or 503 (not ready: no children).
#![no_main]

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hero_livekit_server::daemon::Connections;
use hero_livekit_server::limits::Limits;
use hero_livekit_server::paths::Paths;
use hero_livekit_server::peer::{Peer, PeerAccess};
use hero_livekit_server::service::{LivekitService, ServiceOptions};
use jsonrpsee::server::{stop_channel, ServerHandle};
use jsonrpsee::Methods;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long (virtual) a connection may stay quiet before the client stops
/// waiting: beyond the header and body timeouts, so that they fire first.
const QUIET: Duration = Duration::from_secs(30);
/// How often the daemon is asked for its health on a fresh connection.
const HEALTH_EVERY: u64 = 64;
/// The most a client keeps of an answer (the property reads its start).
const MAX_ANSWER: usize = 1 << 20;
const DIR_PREFIX: &str = "hero-livekit-fuzz-http-";

struct Fixture {
    runtime: tokio::runtime::Runtime,
    connections: Connections,
    /// Dropping it would tell every connection to shut down.
    _server: ServerHandle,
    _service: Arc<LivekitService>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        // The background tasks (drift tick, token probe, Redis check) would
        // run every 5 s of virtual time, that is several times per input,
        // and test nothing of the front: pushed out of reach. An install
        // that a request manages to start gets a 1 ms deadline (see
        // `refused_input`). Set before the runtime exists: no other thread
        // reads the environment yet.
        for var in [
            "HERO_LIVEKIT_DRIFT_CHECK_MS",
            "HERO_LIVEKIT_TOKEN_PROBE_MS",
            "HERO_LIVEKIT_REDIS_CHECK_MS",
        ] {
            std::env::set_var(var, "3153600000000");
        }
        std::env::set_var("HERO_LIVEKIT_INSTALL_DEADLINE_MS", "1");

        // tmpfs when there is one: configure writes and fsyncs the triple.
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        // libFuzzer ends the process with exit(), so nothing is dropped: the
        // root is named after the pid, and those of processes that are gone
        // are removed here instead.
        if let Ok(rd) = std::fs::read_dir(&base) {
            for e in rd.filter_map(Result::ok) {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix(DIR_PREFIX) {
                    if !Path::new("/proc").join(pid).exists() {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        let root = base.join(format!("{DIR_PREFIX}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        if let Err(e) = std::fs::create_dir(&root) {
            panic!("cannot create {}: {e}", root.display());
        }

        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
        {
            Ok(r) => r,
            Err(e) => panic!("no tokio runtime: {e}"),
        };
        let (connections, server, service) = runtime.block_on(async {
            let paths = Paths::with(root.clone(), root.join("rpc.sock"));
            // No binaries: nothing is ever spawned, `start` fails fast
            // with not_installed.
            let service = match LivekitService::boot(ServiceOptions {
                paths,
                livekit_bin: None,
                backend_bin: None,
                stop_timeout: None,
            })
            .await
            {
                Ok(s) => s,
                Err(e) => panic!("boot on an empty root: {e}"),
            };
            let methods: Methods = match hero_livekit_server::rpc::module(service.clone()) {
                Ok(m) => m.into(),
                Err(e) => panic!("rpc module: {e}"),
            };
            let (stop, server) = stop_channel();
            let connections = Connections::new(service.clone(), methods, Arc::new(Limits::default()), stop);
            (connections, server, service)
        });
        Fixture {
            runtime,
            connections,
            _server: server,
            _service: service,
        }
    })
}

fn peer(access: PeerAccess) -> Peer {
    match access {
        PeerAccess::Full => Peer {
            uid: own_uid(),
            gid: 0,
            pid: Some(std::process::id() as i32),
            access,
        },
        PeerAccess::ReadOnly => Peer {
            uid: 65534,
            gid: 65534,
            pid: None,
            access,
        },
        PeerAccess::None => Peer {
            uid: 65533,
            gid: 65533,
            pid: None,
            access,
        },
    }
}

/// The uid the daemon would see for its own user (only reported, never
/// checked: access is the class given).
fn own_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(0)
}

/// Inputs not run. `install` would really work: with a local `source` (any
/// readable file) it installs that file as livekit-server in the shared
/// root, and every later `start` would then spawn it, so one input would
/// change what all the following ones do, and slowly. The method name is
/// looked for as jsonrpsee could read it: literally, or with a `\u` escape
/// anywhere (serde decodes it). A chunked body can still split the name
/// across chunks; the 1 ms install deadline set in `fixture` bounds that
/// case.
fn refused_input(req: &[u8]) -> bool {
    contains(req, b"install") || contains(req, b"\\u")
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

/// One connection: `request` written, the answer read (see the module
/// comment for when reading stops).
async fn exchange(connections: &Connections, peer: Peer, request: &[u8]) -> Vec<u8> {
    let (client, server) = tokio::io::duplex(64 * 1024);
    tokio::spawn(connections.serve(server, peer));
    let (mut rd, mut wr) = tokio::io::split(client);
    // Read while writing: the server may answer (and fill the pipe) before
    // the whole input is written.
    let mut reader = tokio::spawn(async move {
        let mut answer = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if answer.len() < MAX_ANSWER {
                        answer.extend_from_slice(&buf[..n]);
                    }
                }
            }
        }
        answer
    });
    // A server that stopped reading (it closes after a 413, say) makes the
    // write fail: the answer still counts.
    let _ = tokio::time::timeout(QUIET, wr.write_all(request)).await;
    let done = match tokio::time::timeout(QUIET, &mut reader).await {
        Ok(done) => done,
        Err(_) => {
            let _ = wr.shutdown().await;
            match tokio::time::timeout(QUIET, &mut reader).await {
                Ok(done) => done,
                Err(_) => {
                    reader.abort();
                    return Vec::new();
                }
            }
        }
    };
    // Aborted only above; a reader cannot panic but for the fuzzer's hook.
    // Either way nothing read is kept: the health check tells whether the
    // daemon still answers.
    done.unwrap_or_default()
}

fn status_line_ok(answer: &[u8], http10_allowed: bool) -> bool {
    let rest = match answer.strip_prefix(b"HTTP/1.1 ") {
        Some(r) => r,
        None if http10_allowed => match answer.strip_prefix(b"HTTP/1.0 ") {
            Some(r) => r,
            None => return false,
        },
        None => return false,
    };
    rest.len() >= 4 && rest[..3].iter().all(u8::is_ascii_digit) && rest[0] != b'0' && rest[3] == b' '
}

static RUNS: AtomicU64 = AtomicU64::new(0);

fuzz_target!(|data: &[u8]| {
    let (access, request) = match data.split_first() {
        Some((1, rest)) => (PeerAccess::ReadOnly, rest),
        Some((2, rest)) => (PeerAccess::None, rest),
        _ => (PeerAccess::Full, data),
    };
    if refused_input(request) {
        return;
    }
    let fx = fixture();
    let answer = fx.runtime.block_on(exchange(&fx.connections, peer(access), request));
    if std::env::var_os("HTTP_FRONT_SHOW").is_some() {
        // To see what a seed or a crash gets back (`HTTP_FRONT_SHOW=1 cargo
        // fuzz run http_front <file>`): the first line of each answer.
        let end = answer.iter().position(|&b| b == b'\r').unwrap_or(answer.len()).min(200);
        eprintln!(
            "http_front: {:?} ({} bytes)",
            String::from_utf8_lossy(&answer[..end]),
            answer.len()
        );
    }
    if !answer.is_empty() {
        let http10 = contains(request, b"HTTP/1.0");
        assert!(
            status_line_ok(&answer, http10),
            "not an HTTP status line: {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(200)])
        );
    }
    if RUNS.fetch_add(1, Ordering::Relaxed) % HEALTH_EVERY == 0 {
        let health = fx.runtime.block_on(exchange(
            &fx.connections,
            peer(PeerAccess::Full),
            b"GET /health HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n",
        ));
        assert!(
            health.starts_with(b"HTTP/1.1 200 ") || health.starts_with(b"HTTP/1.1 503 "),
            "the daemon stopped answering health: {:?}",
            String::from_utf8_lossy(&health[..health.len().min(200)])
        );
    }
});
