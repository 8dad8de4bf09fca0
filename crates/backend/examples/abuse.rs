//! Measurement: lk-backend under connection abuse (issue 21, finding 6).
//!
//! Starts the lk-backend built beside this example (or `LK_BACKEND_BIN`)
//! with its default limits, or those of any `LK_BACKEND_*` variable in this
//! process's environment, then opens 100 connections that send half a
//! request head and 300 that send nothing, and prints: how long until every
//! one of them was closed (and how, answered or not), `POST /token` latency
//! (a fresh connection per request) before and during the abuse and their
//! ratio, the requests refused during it, and lk-backend's RSS before,
//! during and after.
//!
//! Run: `cargo build -p lk-backend --bins --examples && target/debug/examples/abuse`
//! (with `LK_BACKEND_MAX_CONNECTIONS=1024` to hold every abusive connection
//! instead of refusing those over the default cap of 256).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HALF: usize = 100;
const IDLE: usize = 300;
const SAMPLES: usize = 200;
const SECRET: &str = "benchbenchbenchbenchbenchbenchbench01";
/// The bearer secret its token requests present.
const MINT: &str = "mintbenchmintbenchmintbenchmintbench02";
const BODY: &str = r#"{"room":"r","identity":"bench"}"#;

struct Backend(Child);

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bin = match std::env::var_os("LK_BACKEND_BIN") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()?
            .parent()
            .and_then(|examples| examples.parent())
            .ok_or("no directory above this example")?
            .join("lk-backend"),
    };
    let dir = tempfile::tempdir()?;
    let env_file = dir.path().join("backend.env");
    std::fs::write(
        &env_file,
        format!("LIVEKIT_API_KEY=APIbench\nLIVEKIT_API_SECRET={SECRET}\nLIVEKIT_URL=ws://127.0.0.1:7880\nPORT=0\nMINT_SECRET={MINT}\n"),
    )?;
    let limits: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("LK_BACKEND_") && k != "LK_BACKEND_BIN")
        .collect();
    let mut child = Command::new(&bin)
        .arg("--env-file")
        .arg(&env_file)
        .env_clear()
        .envs(limits.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    let stdout = child.stdout.take().ok_or("stdout not piped")?;
    let backend = Backend(child);
    let pid = backend.0.id();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .ok_or_else(|| format!("unexpected first line {line:?}"))?
        .parse()?;
    println!(
        "lk-backend {} (pid {pid}) on {addr}; limits from env: {limits:?}",
        bin.display()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // Warm up, then the baseline.
        let _ = latencies(addr, 20).await;
        let rss_before = rss_kib(pid);
        let (before, refused_before) = latencies(addr, SAMPLES).await;

        let start = Instant::now();
        let connected = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut abusers = Vec::new();
        for n in 0..HALF + IDLE {
            let connected = std::sync::Arc::clone(&connected);
            abusers.push(tokio::spawn(async move {
                let s = TcpStream::connect(addr).await;
                connected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut s = s.ok()?;
                if n < HALF {
                    s.write_all(b"POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-")
                        .await
                        .ok()?;
                }
                let mut got = Vec::new();
                let mut chunk = [0u8; 1024];
                // Generous: the longest limit involved is the idle timeout.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
                loop {
                    match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
                        Err(_) => return None,
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        Ok(Ok(k)) => got.extend_from_slice(&chunk[..k]),
                    }
                }
                let status = String::from_utf8_lossy(&got)
                    .split(' ')
                    .nth(1)
                    .map(str::to_string)
                    .unwrap_or_else(|| "closed unanswered".into());
                Some((start.elapsed(), status))
            }));
        }
        // Every abusive connection is in before the measure starts (the
        // accept loop takes connections in order, so they are accepted or
        // refused before any of the measure's).
        while connected.load(std::sync::atomic::Ordering::Relaxed) < HALF + IDLE {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let connected_after = start.elapsed();
        let (during, refused_during) = latencies(addr, SAMPLES).await;
        let rss_during = rss_kib(pid);

        let mut closes = Vec::new();
        let mut still_open = 0;
        for a in abusers {
            match a.await {
                Ok(Some(c)) => closes.push(c),
                _ => still_open += 1,
            }
        }
        let rss_after = rss_kib(pid);
        let all_closed = closes.iter().map(|(t, _)| *t).max().unwrap_or_default();
        let mut by_status: std::collections::BTreeMap<String, (usize, Duration)> = Default::default();
        for (t, status) in &closes {
            let e = by_status.entry(status.clone()).or_insert((0, Duration::ZERO));
            e.0 += 1;
            e.1 = e.1.max(*t);
        }
        println!(
            "abuse: {HALF} half-request + {IDLE} idle connections, all connected after {:.0} ms",
            connected_after.as_secs_f64() * 1e3
        );
        println!(
            "  all closed after        {:.2} s ({still_open} still open after 120 s)",
            all_closed.as_secs_f64()
        );
        for (status, (n, last)) in by_status {
            println!(
                "    {n:>4} closed with {status:<18} the last after {:.2} s",
                last.as_secs_f64()
            );
        }
        let (p50b, p99b) = percentiles(&before);
        let (p50d, p99d) = percentiles(&during);
        println!("POST /token, a fresh connection each ({SAMPLES} requests):");
        println!(
            "  before abuse  p50 {:>8.0} µs  p99 {:>8.0} µs  refused {refused_before}",
            p50b, p99b
        );
        println!(
            "  during abuse  p50 {:>8.0} µs  p99 {:>8.0} µs  refused {refused_during}",
            p50d, p99d
        );
        if p50b > 0.0 {
            println!("  ratio p50 during/before  {:.2}", p50d / p50b);
        }
        println!("RSS KiB: before {rss_before}, during {rss_during}, after {rss_after}");
    });
    drop(backend);
    Ok(())
}

/// `n` requests, each on a new connection; the latencies (µs) of those
/// answered 200, and how many were not.
async fn latencies(addr: SocketAddr, n: usize) -> (Vec<f64>, usize) {
    let request = format!(
        "POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {MINT}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let mut ok = Vec::with_capacity(n);
    let mut refused = 0;
    for _ in 0..n {
        let t = Instant::now();
        let answer = async {
            let mut s = TcpStream::connect(addr).await.ok()?;
            s.write_all(request.as_bytes()).await.ok()?;
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.ok()?;
            Some(got)
        };
        match tokio::time::timeout(Duration::from_secs(30), answer).await {
            Ok(Some(got)) if got.starts_with(b"HTTP/1.1 200") => ok.push(t.elapsed().as_secs_f64() * 1e6),
            _ => refused += 1,
        }
    }
    (ok, refused)
}

fn percentiles(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}
