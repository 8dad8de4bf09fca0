//! `bench-token`: `POST /token` throughput of lk-backend against a minimal
//! handler in the same server stack (SPEC section 12: at least 0.5x).
//!
//! Both servers are separate processes on 127.0.0.1 built the same way
//! (axum 0.8 on a default multi-thread tokio runtime): lk-backend itself, and
//! this binary re-executed with `--serve-minimal`, whose `POST /token` reads
//! the body and answers a fixed JSON object. The same load generator drives
//! both: `--clients` keep-alive HTTP/1.1 connections (hyper client), a fixed
//! total of `--requests` per round, after a warm-up. Rounds alternate
//! minimal/token so that drift on a shared machine hits both alike; the
//! reported ratio is the median over rounds.
//!
//! Usage: `bench-token [--backend PATH] [--requests N] [--clients C] [--rounds R]`
//! (lk-backend defaults to the file next to this executable).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

#[derive(Debug, Parser)]
#[command(name = "bench-token")]
struct Cli {
    /// lk-backend executable (default: next to this one).
    #[arg(long)]
    backend: Option<PathBuf>,
    /// Measured requests per round and target.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Alternating rounds (minimal, token) to take the median of.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Internal: run the minimal server instead of the benchmark.
    #[arg(long, hide = true)]
    serve_minimal: bool,
}

const BODY: &str = r#"{"room":"bench-room","identity":"bench-user","name":"Bench"}"#;
const SECRET: &str = "BenchBenchBenchBenchBenchBenchBenchBench42";
/// The bearer every request presents (to both servers, so that the
/// comparison stays like for like; lk-backend checks it, the floor ignores it).
const MINT: &str = "MintBenchMintBenchMintBenchMintBenchMint42";

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.serve_minimal {
        return serve_minimal();
    }
    match bench(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-token: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The baseline: the same stack as lk-backend, doing no work per request.
fn serve_minimal() -> ExitCode {
    use axum::routing::post;
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let app = axum::Router::new().route(
            "/token",
            post(|_body: Bytes| async {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    r#"{"ok":true}"#,
                )
            }),
        );
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("bind: {e}");
                return ExitCode::FAILURE;
            }
        };
        match listener.local_addr() {
            Ok(a) => println!("listening on {a}"),
            Err(e) => {
                eprintln!("local_addr: {e}");
                return ExitCode::FAILURE;
            }
        }
        match axum::serve(listener, app).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("serve: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// A server process, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(mut cmd: Command) -> Result<Server, String> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn {cmd:?}: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| format!("read listening line: {e}"))?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| format!("unexpected first line {line:?}"))?
            .parse()
            .map_err(|e| format!("address in {line:?}: {e}"))?;
        Ok(Server { child, addr })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone, Copy)]
struct Round {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

fn bench(cli: &Cli) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let backend_path = match &cli.backend {
        Some(p) => p.clone(),
        None => exe.with_file_name("lk-backend"),
    };
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let env_file = dir.path().join("backend.env");
    std::fs::write(
        &env_file,
        format!("LIVEKIT_API_KEY=APIbench\nLIVEKIT_API_SECRET={SECRET}\nLIVEKIT_URL=ws://127.0.0.1:7880\nPORT=0\nMINT_SECRET={MINT}\n"),
    )
    .map_err(|e| format!("write env file: {e}"))?;

    let mut backend_cmd = Command::new(&backend_path);
    backend_cmd.arg("--env-file").arg(&env_file).env_clear();
    let backend = Server::start(backend_cmd)?;
    let mut minimal_cmd = Command::new(&exe);
    minimal_cmd.arg("--serve-minimal");
    let minimal = Server::start(minimal_cmd)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    println!(
        "bench-token: {} requests x {} keep-alive clients per round, {} rounds; lk-backend = {}",
        cli.requests,
        cli.clients,
        cli.rounds,
        backend_path.display()
    );
    println!(
        "{:<8} {:>5} {:>10} {:>9} {:>9}",
        "target", "round", "req/s", "p50 µs", "p99 µs"
    );
    let mut ratios = Vec::new();
    let (mut best_min, mut best_tok): (Option<Round>, Option<Round>) = (None, None);
    for round in 1..=cli.rounds.max(1) {
        let m = rt.block_on(drive(minimal.addr, cli.clients, cli.requests))?;
        print_round("minimal", round, m);
        let t = rt.block_on(drive(backend.addr, cli.clients, cli.requests))?;
        print_round("token", round, t);
        ratios.push(t.per_sec / m.per_sec);
        best_min = Some(best_min.map_or(m, |b| if m.per_sec > b.per_sec { m } else { b }));
        best_tok = Some(best_tok.map_or(t, |b| if t.per_sec > b.per_sec { t } else { b }));
    }
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    if let (Some(m), Some(t)) = (best_min, best_tok) {
        println!("best: minimal {:.0} req/s, token {:.0} req/s", m.per_sec, t.per_sec);
    }
    let met = median >= 0.50;
    println!(
        "ratio token/minimal throughput (median of rounds): {median:.2} (target >= 0.50) {}",
        if met { "PASS" } else { "FAIL" }
    );
    if met {
        Ok(())
    } else {
        Err("a target failed".into())
    }
}

fn print_round(name: &str, round: usize, r: Round) {
    println!(
        "{:<8} {:>5} {:>10.0} {:>9.0} {:>9.0}",
        name,
        round,
        r.per_sec,
        r.p50.as_secs_f64() * 1e6,
        r.p99.as_secs_f64() * 1e6
    );
}

/// Sends `total` requests over `clients` connections and measures them,
/// after a warm-up of one request per connection and 1000 in total.
async fn drive(addr: SocketAddr, clients: usize, total: usize) -> Result<Round, String> {
    let warmup = 1000.max(clients);
    run_load(addr, clients, warmup).await?;
    let started = Instant::now();
    let mut latencies = run_load(addr, clients, total).await?;
    let elapsed = started.elapsed();
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Ok(Round {
        per_sec: total as f64 / elapsed.as_secs_f64(),
        p50: pick(0.50),
        p99: pick(0.99),
    })
}

async fn run_load(addr: SocketAddr, clients: usize, total: usize) -> Result<Vec<Duration>, String> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect {addr}: {e}"))?;
            let _ = stream.set_nodelay(true);
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(conn);
            let mut latencies = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let req = Request::post("/token")
                    .header("host", "127.0.0.1")
                    .header("content-type", "application/json")
                    .header("authorization", format!("Bearer {MINT}"))
                    .body(Full::new(Bytes::from_static(BODY.as_bytes())))
                    .map_err(|e| format!("request: {e}"))?;
                let t0 = Instant::now();
                send.ready().await.map_err(|e| format!("connection: {e}"))?;
                let resp = send.send_request(req).await.map_err(|e| format!("send: {e}"))?;
                let status = resp.status();
                resp.into_body().collect().await.map_err(|e| format!("body: {e}"))?;
                latencies.push(t0.elapsed());
                if !status.is_success() {
                    return Err(format!("{addr} answered {status}"));
                }
            }
            Ok::<_, String>(latencies)
        }));
    }
    let mut all = Vec::with_capacity(total);
    for t in tasks {
        all.extend(t.await.map_err(|e| format!("client task: {e}"))??);
    }
    Ok(all)
}
