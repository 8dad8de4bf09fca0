//! Benchmark: the daemon's own CPU time per call, beside a floor measured
//! in the same run.
//!
//! The CPU time of the serving process is read from
//! `/proc/<pid>/task/*/schedstat` (nanoseconds on CPU, every thread), before
//! and after a run of calls over one keep-alive connection: a figure the
//! client's own speed cannot skew. The floor is a minimal hyper HTTP/1.1
//! server on a Unix socket, built from the same crates, in a process of its
//! own (this binary started again with `--floor SOCKET`): a current-thread
//! runtime answering a GET with fixed bytes, and a JSON-RPC POST by parsing
//! the request and serializing a small result. The same client drives both.
//!
//! It ends with the targets, each PASS or FAIL: `GET /health` at most 1.2x
//! the floor's GET, JSON-RPC `health` at most 1.5x the floor's JSON-RPC,
//! and the daemon's resident set (supervising both children, after the
//! run) at most 10 MiB.
//!
//! Run: `cargo build --release --workspace --bins && target/release/bench-cpu`.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hero_livekit_tests::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::json;

const CALLS: usize = 5_000;
const WARMUP: usize = 500;
const ROUNDS: usize = 5;

type Sender = SocketSender;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, socket] = args.as_slice() {
        if flag == "--floor" {
            floor(Path::new(socket));
            return ExitCode::SUCCESS;
        }
    }
    if bench() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The floor server: as little as a JSON-RPC server on a Unix socket can be.
fn floor(socket: &Path) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let _ = std::fs::remove_file(socket);
        let listener = tokio::net::UnixListener::bind(socket).expect("bind the floor socket");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let body = if req.method() == http::Method::POST {
                        let bytes = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let call: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                        let answer = json!({"jsonrpc": "2.0", "id": call.get("id"), "result": {"ok": true}});
                        Bytes::from(serde_json::to_vec(&answer).unwrap_or_default())
                    } else {
                        Bytes::from_static(br#"{"name":"floor","version":"0","protocol":"openrpc"}"#)
                    };
                    let mut resp = http::Response::new(Full::new(body));
                    resp.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

fn bench() -> bool {
    let root = Root::new();
    let d = supervising_daemon(&root);

    let floor_socket = root.path().join("floor.sock");
    let mut floor = Command::new(std::env::current_exe().expect("own path"))
        .arg("--floor")
        .arg(&floor_socket)
        .stdin(Stdio::null())
        .spawn()
        .expect("start the floor server");
    wait_for(Duration::from_secs(10), "the floor socket", || {
        std::os::unix::net::UnixStream::connect(&floor_socket).ok().map(|_| ())
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let rpc = |method: &str| -> Req {
        Req::Post(Bytes::from(
            json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": {}}).to_string(),
        ))
    };
    let floor_pid = floor.id() as i32;
    let rows: [(&str, Req, bool); 6] = [
        (
            "GET /.well-known/heroservice.json",
            Req::Get("/.well-known/heroservice.json"),
            false,
        ),
        ("GET /health (memoized document)", Req::Get("/health"), false),
        ("GET /metrics (whole scrape)", Req::Get("/metrics"), false),
        ("JSON-RPC to an unknown method", rpc("bench.empty"), true),
        ("JSON-RPC livekitservice.health", rpc("livekitservice.health"), true),
        ("JSON-RPC rpc.discover", rpc("rpc.discover"), true),
    ];
    // Rounds of every row, each beside a fresh floor figure: the median of
    // the per-round ratios holds on a shared machine where one run does not.
    let (mut floor_get, mut floor_post) = (Vec::new(), Vec::new());
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
    let mut wall: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
    let mut ratio: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
    for _ in 0..ROUNDS {
        let fg = rt.block_on(measure(&floor_socket, floor_pid, &Req::Get("/")));
        let fp = rt.block_on(measure(&floor_socket, floor_pid, &rpc("bench.floor")));
        floor_get.push(fg.0);
        floor_post.push(fp.0);
        for (i, (_, req, is_rpc)) in rows.iter().enumerate() {
            let (c, w) = rt.block_on(measure(&d.socket, d.pid(), req));
            cpu[i].push(c);
            wall[i].push(w);
            ratio[i].push(c / if *is_rpc { fp.0 } else { fg.0 });
        }
    }
    println!(
        "daemon CPU per call (its own, all threads) over one keep-alive connection, {CALLS} calls a row, median of {ROUNDS} rounds"
    );
    println!(
        "{:<40} {:>12} {:>12} {:>14}",
        "call", "CPU µs/call", "wall µs/call", "CPU vs floor"
    );
    println!(
        "{:<40} {:>12.1} {:>12} {:>14}",
        "floor: GET, fixed bytes",
        median(&mut floor_get),
        "",
        "1.00x"
    );
    println!(
        "{:<40} {:>12.1} {:>12} {:>14}",
        "floor: JSON-RPC, parse + small result",
        median(&mut floor_post),
        "",
        "1.00x"
    );
    let mut ratios = Vec::with_capacity(rows.len());
    for (i, (name, _, _)) in rows.iter().enumerate() {
        let r = median(&mut ratio[i]);
        ratios.push(r);
        println!(
            "{:<40} {:>12.1} {:>12.1} {:>13.2}x",
            name,
            median(&mut cpu[i]),
            median(&mut wall[i]),
            r
        );
    }
    let rss = rss_kib(d.pid());
    let threads = std::fs::read_dir(format!("/proc/{}/task", d.pid()))
        .map(|t| t.count())
        .unwrap_or(0);
    println!("targets:");
    let mut met = verdict(
        "GET /health vs the floor's GET",
        ratios[1],
        "x",
        |v| v <= 1.2,
        "<= 1.2x",
    );
    met &= verdict(
        "JSON-RPC health vs the floor's JSON-RPC",
        ratios[3],
        "x",
        |v| v <= 1.5,
        "<= 1.5x",
    );
    met &= verdict(
        &format!("daemon RSS after the run ({threads} threads)"),
        rss as f64 / 1024.0,
        " MiB",
        |v| v <= 10.0,
        "<= 10 MiB",
    );
    let _ = floor.kill();
    let _ = floor.wait();
    met
}

/// One target's line: the figure, the target and whether it is met.
fn verdict(what: &str, value: f64, unit: &str, met: impl Fn(f64) -> bool, target: &str) -> bool {
    let met = met(value);
    let verdict = if met { "PASS" } else { "FAIL" };
    println!("  {what:<46} {value:>7.2}{unit:<4} target {target:<10} {verdict}");
    met
}

enum Req {
    Get(&'static str),
    Post(Bytes),
}

/// CPU µs and wall µs per call of `pid` serving `req` on `socket`.
async fn measure(socket: &Path, pid: i32, req: &Req) -> (f64, f64) {
    let mut send = connect_keep_alive(socket).await;
    for _ in 0..WARMUP {
        call(&mut send, req).await;
    }
    let cpu0 = cpu_ns(pid);
    let t = Instant::now();
    for _ in 0..CALLS {
        call(&mut send, req).await;
    }
    let wall = t.elapsed();
    let cpu = cpu_ns(pid).saturating_sub(cpu0);
    (cpu as f64 / 1e3 / CALLS as f64, wall.as_secs_f64() * 1e6 / CALLS as f64)
}

async fn call(send: &mut Sender, req: &Req) {
    let request = match req {
        Req::Get(path) => http::Request::get(*path)
            .header("host", "localhost")
            .body(Full::new(Bytes::new())),
        Req::Post(body) => http::Request::post("/rpc")
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(body.clone())),
    }
    .expect("request");
    send.ready().await.expect("ready");
    let resp = send.send_request(request).await.expect("response");
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    assert!(!bytes.is_empty(), "a real answer");
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Nanoseconds `pid` has spent on a CPU, summed over its threads.
fn cpu_ns(pid: i32) -> u64 {
    let tasks: PathBuf = format!("/proc/{pid}/task").into();
    std::fs::read_dir(&tasks)
        .expect("list threads")
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        .sum()
}
