//! Benchmark: the token-chain probe, beside baselines from the same run.
//!
//! 1. Repair: lk-backend re-reads a tampered `backend.env` (SIGHUP) and the
//!    file is put back, so every hash agrees while its tokens are refused.
//!    Measured: from the reload until `health` is ready again with a new
//!    lk-backend, against the target "one probe period plus lk-backend's
//!    restart", where the restart is measured in the same run (a `restart
//!    {process: lk-backend}` call on the same daemon).
//! 2. Cost: the daemon's own CPU time per probe (from `/proc/<pid>/stat`,
//!    which the client's speed cannot skew), from two idle windows of the
//!    same length: one with a probe every 20 ms, one with none.
//!
//! Run: `cargo build --release --workspace --bins && target/release/bench-probe`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use hero_livekit_tests::observe::{pid_in, wait_ready_for_tokens};
use hero_livekit_tests::*;
use serde_json::json;

const PROBE_MS: u64 = 1_000;
const ROUNDS: usize = 8;
const COST_WINDOW: Duration = Duration::from_secs(4);
const COST_PROBE_MS: u64 = 20;

fn main() -> ExitCode {
    let (repairs, restarts) = repair_times();
    let (busy, idle) = (cpu_over_window(COST_PROBE_MS), cpu_over_window(600_000));
    let probes = COST_WINDOW.as_millis() as f64 / COST_PROBE_MS as f64;
    let per_probe_us = (busy.0 - idle.0) * 1e6 / probes;
    let r = median(repairs.clone());
    let b = median(restarts.clone());
    println!();
    println!("{:<60} {:>10}", "measurement", "ms");
    println!("{:<60} {:>10}", "probe period (HERO_LIVEKIT_TOKEN_PROBE_MS)", PROBE_MS);
    println!(
        "{:<60} {:>10.1}",
        "lk-backend restart (restart RPC, median)",
        b.as_secs_f64() * 1e3
    );
    println!(
        "{:<60} {:>10.1}",
        "tampered backend -> ready again (median)",
        r.as_secs_f64() * 1e3
    );
    println!(
        "{:<60} {:>10.1}",
        "tampered backend -> ready again (worst)",
        repairs.iter().max().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    let target = PROBE_MS as f64 + b.as_secs_f64() * 1e3;
    let met = r.as_secs_f64() * 1e3 <= target;
    println!(
        "{:<60} {:>10.1} {}",
        "target: probe period + lk-backend restart",
        target,
        if met { "PASS" } else { "FAIL" }
    );
    println!(
        "{:<60} {:>10.1}",
        "probe latency as health reports it (last, ms)", busy.1
    );
    println!(
        "{:<60} {:>10.1}",
        "daemon CPU per probe (µs, busy minus idle window)", per_probe_us
    );
    println!(
        "{:<60} {:>10.3}",
        "daemon CPU share of one core at the default 5 s period (%)",
        per_probe_us / 5e6 * 100.0
    );
    if met {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn opts(probe_ms: u64) -> DaemonOpts {
    let mut o = DaemonOpts::double().no_drift_check();
    o.env.push(("HERO_LIVEKIT_TOKEN_PROBE_MS".into(), probe_ms.to_string()));
    o.env.push(("RUST_LOG".into(), "warn".into()));
    o
}

fn repair_times() -> (Vec<Duration>, Vec<Duration>) {
    let root = Root::new();
    let d = Daemon::start(&root, opts(PROBE_MS));
    configure_free_ports(&d);
    d.ok("livekitservice.start", json!({}));
    wait_ready_for_tokens(&d, Duration::from_secs(30));
    let mut restarts = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        d.ok("livekitservice.restart", json!({"process": "lk-backend"}));
        restarts.push(t.elapsed());
    }
    let env_path = root.file("backend.env");
    let log = root.file("logs/lk-backend.log");
    let mut repairs = Vec::new();
    for round in 0..ROUNDS {
        wait_ready_for_tokens(&d, Duration::from_secs(30));
        let good = std::fs::read_to_string(&env_path).expect("read backend.env");
        let line = good
            .lines()
            .find(|l| l.starts_with("LIVEKIT_API_SECRET="))
            .expect("secret line")
            .to_string();
        let tampered = good.replace(&line, &format!("LIVEKIT_API_SECRET=\"Tampered{round:0>35}\""));
        let be = pid_in(&d.health(), "lk-backend").expect("lk-backend pid");
        let reloads = || std::fs::read_to_string(&log).map_or(0, |l| l.matches("SIGHUP: credential").count());
        let seen = reloads();
        std::fs::write(&env_path, tampered).expect("tamper");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(be), nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
        wait_for(Duration::from_secs(10), "the reload", || {
            (reloads() > seen).then_some(())
        });
        let t = Instant::now();
        std::fs::write(&env_path, &good).expect("restore");
        // Polled every millisecond: `wait_for`'s growing interval (up to
        // 50 ms) would be most of what this measures beyond the period.
        let limit = Instant::now() + Duration::from_secs(60);
        loop {
            let h = d.health();
            if h["ready_for_tokens"] == true && pid_in(&h, "lk-backend").is_some_and(|p| p != be) {
                break;
            }
            assert!(Instant::now() < limit, "not repaired within 60 s: {h}");
            std::thread::park_timeout(Duration::from_millis(1));
        }
        repairs.push(t.elapsed());
        eprintln!("round {round}: repaired in {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
    }
    (repairs, restarts)
}

/// The daemon's CPU seconds over [`COST_WINDOW`] while idle with a probe
/// every `probe_ms`, and the probe latency health reports at the end.
fn cpu_over_window(probe_ms: u64) -> (f64, f64) {
    let root = Root::new();
    let d = Daemon::start(&root, opts(probe_ms));
    configure_free_ports(&d);
    d.ok("livekitservice.start", json!({}));
    wait_ready_for_tokens(&d, Duration::from_secs(30));
    let pid = d.pid();
    let before = cpu_seconds(pid);
    let end = Instant::now() + COST_WINDOW;
    // Idle on purpose: the window measures what the daemon does alone.
    while Instant::now() < end {
        std::thread::park_timeout(end.saturating_duration_since(Instant::now()));
    }
    let used = cpu_seconds(pid) - before;
    let latency = d.health()["token_chain"]["latency_ms"].as_f64().unwrap_or(f64::NAN);
    (used, latency)
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let after_comm = stat.rsplit_once(')').map(|(_, r)| r).expect("stat shape");
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}
