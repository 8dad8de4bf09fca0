//! Benchmark: `health` over the socket against an empty call on the same
//! daemon, and the `hero_livekit health` CLI as a whole process against
//! spawning `/bin/true`, all in one run so the ratios hold on a noisy
//! shared machine.
//!
//! The empty call is a JSON-RPC call to a method the daemon does not have:
//! it crosses the same HTTP, JSON-RPC parsing and dispatch layers and
//! returns a tiny error, so it is the floor of any call.
//!
//! Run: `cargo build --release --workspace --bins && target/release/bench-health`.

use std::path::Path;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hero_livekit_tests::*;
use http_body_util::{BodyExt, Full};

const SINGLE_CALLS: usize = 20_000;
const CONCURRENT_CALLERS: usize = 32;
/// Calls of each caller in one slice of a throughput run.
const CONCURRENT_CALLS_EACH: usize = 100;
/// Slices of a throughput run, empty and health alternating: a slower
/// moment of the shared machine falls on both kinds of call alike.
const SLICES: usize = 10;
const CLI_RUNS: usize = 100;
/// Throughput rounds, alternating empty and health, each pair side by
/// side: the target holds on every one of them, not on their median.
const THROUGHPUT_ROUNDS: usize = 5;
/// 32-caller throughput of `health` against the empty call's, at least.
const THROUGHPUT_TARGET: f64 = 0.8;

type Sender = SocketSender;

async fn call(send: &mut Sender, body: &Bytes) -> Duration {
    let req = http::Request::post("/rpc")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(body.clone()))
        .expect("request");
    let t = Instant::now();
    send.ready().await.expect("ready");
    let resp = send.send_request(req).await.expect("response");
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let d = t.elapsed();
    assert!(bytes.len() > 10, "a real answer");
    d
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn latency(socket: &Path, body: &Bytes) -> (Duration, Duration) {
    let mut send = connect_keep_alive(socket).await;
    for _ in 0..1000 {
        call(&mut send, body).await;
    }
    let mut v: Vec<Duration> = Vec::with_capacity(SINGLE_CALLS);
    for _ in 0..SINGLE_CALLS {
        v.push(call(&mut send, body).await);
    }
    v.sort();
    (percentile(&v, 0.5), percentile(&v, 0.99))
}

/// How long [`CONCURRENT_CALLERS`] callers take for
/// [`CONCURRENT_CALLS_EACH`] calls each.
async fn throughput(socket: &Path, body: &Bytes) -> Duration {
    let socket = Arc::new(socket.to_path_buf());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENT_CALLERS {
        let socket = socket.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut send = connect_keep_alive(&socket).await;
            for _ in 0..CONCURRENT_CALLS_EACH {
                call(&mut send, &body).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("caller");
    }
    start.elapsed()
}

fn median_process_time(mut cmd: impl FnMut() -> Command) -> Duration {
    let mut v = Vec::with_capacity(CLI_RUNS);
    for _ in 0..CLI_RUNS {
        let t = Instant::now();
        let status = cmd().status().expect("spawn");
        v.push(t.elapsed());
        assert!(status.code().is_some(), "process ran");
    }
    v.sort();
    percentile(&v, 0.5)
}

/// Sorts `v` and returns its middle element.
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn pass(met: bool) -> &'static str {
    if met {
        "PASS"
    } else {
        "FAIL"
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() -> ExitCode {
    let root = Root::new();
    let d = supervising_daemon(&root);

    let empty = Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"method":"bench.empty","params":{}}"#);
    let health = Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"method":"livekitservice.health","params":{}}"#);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (e50, e99) = rt.block_on(latency(&d.socket, &empty));
    let (h50, h99) = rt.block_on(latency(&d.socket, &health));
    let (mut e_tps, mut h_tps, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..THROUGHPUT_ROUNDS {
        let (mut e_time, mut h_time) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..SLICES {
            e_time += rt.block_on(throughput(&d.socket, &empty));
            h_time += rt.block_on(throughput(&d.socket, &health));
        }
        let calls = (SLICES * CONCURRENT_CALLERS * CONCURRENT_CALLS_EACH) as f64;
        let (e, h) = (calls / e_time.as_secs_f64(), calls / h_time.as_secs_f64());
        e_tps.push(e);
        h_tps.push(h);
        ratios.push(h / e);
    }
    let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    let (e_tp, h_tp, tp_ratio) = (median(&mut e_tps), median(&mut h_tps), median(&mut ratios));

    let cli = bin("hero_livekit");
    let socket = d.socket.clone();
    let cli_t = median_process_time(|| {
        let mut c = Command::new(&cli);
        c.arg("--socket").arg(&socket).arg("health").arg("--quiet");
        c
    });
    let true_t = median_process_time(|| Command::new("/bin/true"));

    println!("health over the socket vs an empty call on the same daemon (both children supervised)");
    println!(
        "{:<34} {:>10} {:>10} {:>14}",
        "",
        "p50 µs",
        "p99 µs",
        format!("calls/s (32 callers, median of {THROUGHPUT_ROUNDS})")
    );
    println!(
        "{:<34} {:>10.1} {:>10.1} {:>14.0}",
        "empty call (unknown method)",
        us(e50),
        us(e99),
        e_tp
    );
    println!(
        "{:<34} {:>10.1} {:>10.1} {:>14.0}",
        "livekitservice.health",
        us(h50),
        us(h99),
        h_tp
    );
    let latency_ratio = us(h50) / us(e50);
    let (latency_met, throughput_met) = (latency_ratio <= 1.5, ratios[0] >= THROUGHPUT_TARGET);
    println!(
        "ratio health/empty: median latency {latency_ratio:.2}x (target <= 1.5x: {}), throughput median {tp_ratio:.2}x, \
         each of the {THROUGHPUT_ROUNDS} side-by-side pairs [{}] (target >= {THROUGHPUT_TARGET}x on every one: {})",
        pass(latency_met),
        each.join(" "),
        pass(throughput_met),
    );
    println!();
    println!("`hero_livekit health --quiet`, whole process, median of {CLI_RUNS}");
    let cli_own = cli_t.saturating_sub(true_t);
    let cli_met = cli_own <= Duration::from_millis(10);
    println!(
        "cli {:.2} ms, /bin/true {:.2} ms, cli minus process spawn {:.2} ms (target <= 10 ms: {})",
        cli_t.as_secs_f64() * 1e3,
        true_t.as_secs_f64() * 1e3,
        cli_own.as_secs_f64() * 1e3,
        pass(cli_met)
    );
    if latency_met && throughput_met && cli_met {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
