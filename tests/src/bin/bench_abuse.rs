//! Benchmark: the daemon under abuse of its socket, each abuse beside the
//! same daemon idle in the same run: its RSS (target: at most 2 MiB of
//! growth) and the median of `health` over a fresh connection while the
//! abuse lasts (it must answer as usual).
//!
//! Abuses: 200 idle WebSocket upgrades (the budget takes 64), 600 half-open
//! connections that never finish their headers, and a refused 50 MiB body.
//!
//! Run: `cargo build --release --workspace --bins && target/release/bench-abuse`.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use hero_livekit_tests::*;
use serde_json::json;

const HEALTH_CALLS: usize = 300;

fn main() -> ExitCode {
    let root = Root::new();
    let d = Daemon::start(&root, DaemonOpts::default().env_var("RUST_LOG", "warn"));
    let pid = d.pid();
    // Warm up: the first calls allocate what every later call reuses.
    let base_health = health_median(&d.socket);
    let idle = rss_kib(pid);
    println!("{:<52} {:>10} {:>12}", "state", "RSS KiB", "health p50");
    println!("{:<52} {:>10} {:>9.0} µs", "idle", idle, micros(base_health));

    // The allocator keeps what it freed, so each abuse is measured against
    // the RSS just before it (and the total against idle).
    let mut held: Vec<UnixStream> = Vec::new();
    let before = rss_kib(pid);
    let mut upgraded = 0;
    for _ in 0..200 {
        let (s, status, _) = websocket(&d.socket);
        if status == 101 {
            upgraded += 1;
        }
        held.push(s);
    }
    let mut met = report(&d, before, &format!("200 WebSocket upgrades ({upgraded} accepted)"));
    held.clear();
    settle(&d);
    let before = rss_kib(pid);

    let half: Vec<UnixStream> = (0..600)
        .map(|_| {
            let mut s = UnixStream::connect(&d.socket).expect("connect");
            s.write_all(b"GET /health HTTP/1.1\r\nHost: loc").expect("write");
            s
        })
        .collect();
    met &= report(&d, before, "600 half-open connections");
    drop(half);
    settle(&d);
    let before = rss_kib(pid);

    let mut s = UnixStream::connect(&d.socket).expect("connect");
    let head = format!(
        "POST /rpc HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        50 * 1024 * 1024
    );
    s.write_all(head.as_bytes()).expect("write head");
    // Whatever the daemon takes of the body before it refuses it.
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..64 {
        if s.write_all(&chunk).is_err() {
            break;
        }
    }
    met &= report(&d, before, "a 50 MiB body (refused)");
    drop(s);
    println!(
        "all three, one after the other: +{} KiB over idle",
        rss_kib(pid).saturating_sub(idle)
    );
    println!(
        "target: at most {GROWTH_TARGET_KIB} KiB of growth under each; health answers throughout: {}",
        if met { "PASS" } else { "FAIL" }
    );
    if met {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Growth of the daemon's RSS allowed under one abuse.
const GROWTH_TARGET_KIB: u64 = 2048;

/// Prints one abuse's line; whether its growth is within the target.
fn report(d: &Daemon, before: u64, what: &str) -> bool {
    let h = health_median(&d.socket);
    let rss = rss_kib(d.pid());
    let growth = rss.saturating_sub(before);
    let met = growth <= GROWTH_TARGET_KIB;
    println!(
        "{:<52} {:>10} {:>9.0} µs   (+{} KiB) {}",
        what,
        rss,
        micros(h),
        growth,
        if met { "PASS" } else { "FAIL" }
    );
    met
}

/// Waits (bounded) until the daemon has closed what an abuse held: its
/// descriptor count is back near idle.
fn settle(d: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline && open_fds(d.pid()) > 64 {
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

/// The median of `health` over a fresh connection each.
fn health_median(socket: &Path) -> Duration {
    let mut times: Vec<Duration> = (0..HEALTH_CALLS)
        .map(|_| {
            let t = Instant::now();
            let r = rpc(socket, "livekitservice.health", json!({}));
            assert!(r.get("result").is_some(), "health answers: {r}");
            t.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
