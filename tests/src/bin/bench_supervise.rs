//! `bench-supervise`: what supervision costs beyond the children's own
//! startup (SPEC section 12: `start` at most 10 ms beyond the child's own
//! time to ready, crash to ready again at most 20 ms beyond it, daemon RSS at
//! most 10 MiB while supervising both children).
//!
//! One run, one root, one daemon (`hero_livekit_server` with the
//! livekit-server test double and the real lk-backend). Every round
//! measures, in this order, so that drift on a shared machine hits all
//! alike:
//! - (a) the double's own time to ready: spawned directly by this bench,
//!   from spawn to the first 200 on `GET /` (polled every 0.2 ms);
//! - (a2) the same for the double and lk-backend spawned together, since
//!   `start` brings up both;
//! - (b) a `start` RPC on the stopped service, until it returns (it returns
//!   once both children answer their readiness probe);
//! - (c) SIGKILL of livekit-server, then `health` polled every 1 ms until
//!   it is `running` again under a new pid. A `restart` follows, so each
//!   crash is the first after a healthy run (restarted at once: the exit
//!   wakes the daemon's reconciler, whose exits-only pass decides it).
//!
//! Medians are printed with the overheads (b) - (a), (b) - (a2), (c) - (a)
//! and the ratios against (a); then (d), the daemon's VmRSS.
//!
//! Usage: `bench-supervise [--rounds N] [--bin-dir DIR]` (binaries default
//! to the directory of this executable: build with
//! `cargo build --release --workspace --bins`).

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use hero_livekit_tests::observe::status;
use hero_livekit_tests::{free_port, kill_recorded_children, rpc};
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(name = "bench-supervise")]
struct Cli {
    /// Rounds; each takes one sample of every measurement.
    #[arg(long, default_value_t = 21)]
    rounds: usize,
    /// Where hero_livekit_server, lk-backend and livekit-server-double are
    /// (default: next to this executable).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

/// Bound on any single wait, so a broken build fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let cli = Cli::parse();
    match bench(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-supervise: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The daemon under test; dropping it ends the daemon and its children.
struct Daemon {
    child: Child,
    root: PathBuf,
    socket: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        kill_recorded_children(&self.root);
    }
}

impl Daemon {
    fn call(&self, method: &str, params: Value) -> Result<Value, String> {
        let r = rpc(&self.socket, method, params);
        match r.get("error") {
            Some(e) => Err(format!("{method}: {e}")),
            None => Ok(r["result"].clone()),
        }
    }
}

fn bench(cli: &Cli) -> Result<(), String> {
    let bin_dir = match &cli.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()
            .map_err(|e| format!("own path: {e}"))?
            .parent()
            .ok_or("own directory")?
            .to_path_buf(),
    };
    let bin = |name: &str| -> Result<PathBuf, String> {
        let p = bin_dir.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "{} not found: run `cargo build --release --workspace --bins`",
                p.display()
            ))
        }
    };
    let (server, backend, double) = (
        bin("hero_livekit_server")?,
        bin("lk-backend")?,
        bin("livekit-server-double")?,
    );
    let dir = tempfile::Builder::new()
        .prefix("bench_supervise")
        .tempdir()
        .map_err(|e| format!("tempdir: {e}"))?;
    let root = dir.path().to_path_buf();
    let state = root.join("var/hero_livekit");
    let d = start_daemon(&server, &backend, &double, &root)?;
    let (port, backend_port) = (free_port(), free_port());
    d.call(
        "livekitservice.configure",
        json!({"port": port, "rtc_tcp_port": free_port(), "backend_port": backend_port}),
    )?;
    let yaml = state.join("livekit.yaml");
    let env_file = state.join("backend.env");

    let (mut own, mut both, mut start, mut crash) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..cli.rounds {
        d.call("livekitservice.stop", json!({}))?;
        own.push(direct(&[(
            &double,
            &["--config".as_ref(), yaml.as_os_str()],
            port,
            "/",
        )])?);
        both.push(direct(&[
            (&double, &["--config".as_ref(), yaml.as_os_str()], port, "/"),
            (
                &backend,
                &["--env-file".as_ref(), env_file.as_os_str()],
                backend_port,
                "/health",
            ),
        ])?);

        let t0 = Instant::now();
        let r = d.call("livekitservice.start", json!({}))?;
        start.push(t0.elapsed());
        if r["ready_for_tokens"] != true {
            return Err(format!("start did not end ready: {r}"));
        }

        crash.push(crash_to_ready(&d)?);
        // Each crash is then the first after a healthy run.
        d.call("livekitservice.restart", json!({"process": "livekit-server"}))?;
        eprint!("\rround {}/{}", round + 1, cli.rounds);
    }
    eprintln!();
    let rss = vm_rss_kib(d.child.id())?;
    let h = d.call("livekitservice.health", json!({}))?;
    if h["ready_for_tokens"] != true {
        return Err(format!("not supervising both children at the RSS reading: {h}"));
    }
    d.call("livekitservice.stop", json!({}))?;

    let (a, a2, b, c) = (
        median(&mut own),
        median(&mut both),
        median(&mut start),
        median(&mut crash),
    );
    println!(
        "bench-supervise: {} rounds, medians (release build expected)",
        cli.rounds
    );
    println!("{:<52} {:>10}", "measurement", "ms");
    println!("{:<52} {:>10.2}", "(a)  double alone: spawn -> first 200 on /", ms(a));
    println!("{:<52} {:>10.2}", "(a2) double + lk-backend: spawn -> both 200", ms(a2));
    println!("{:<52} {:>10.2}", "(b)  start RPC -> both ready (returned)", ms(b));
    let mut failed = Vec::new();
    let mut verdict = |what: &str, met: bool| {
        if !met {
            failed.push(what.to_string());
        }
        if met {
            "PASS"
        } else {
            "FAIL"
        }
    };
    println!(
        "{:<52} {:>10.2}   target <= 10 {}",
        "     start overhead (b) - (a)",
        ms(b) - ms(a),
        verdict("start overhead", ms(b) - ms(a) <= 10.0)
    );
    println!("{:<52} {:>10.2}", "     start overhead (b) - (a2)", ms(b) - ms(a2));
    println!(
        "{:<52} {:>10.2}",
        "(c)  SIGKILL -> running again (health, 1 ms poll)",
        ms(c)
    );
    println!(
        "{:<52} {:>10.2}   target <= 20 {}",
        "     crash overhead (c) - (a)",
        ms(c) - ms(a),
        verdict("crash overhead", ms(c) - ms(a) <= 20.0)
    );
    println!(
        "{:<52} {:>10.2}x / {:.2}x",
        "     ratios (b)/(a) / (c)/(a)",
        ms(b) / ms(a),
        ms(c) / ms(a)
    );
    println!(
        "{:<52} {:>10.2}   target <= 10 (MiB) {}",
        "(d)  daemon VmRSS supervising both (MiB)",
        rss as f64 / 1024.0,
        verdict("daemon RSS", rss as f64 / 1024.0 <= 10.0)
    );
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("targets failed: {}", failed.join(", ")))
    }
}

fn start_daemon(server: &Path, backend: &Path, double: &Path, root: &Path) -> Result<Daemon, String> {
    let log = std::fs::File::create(root.join("daemon.log")).map_err(|e| format!("daemon log: {e}"))?;
    let child = Command::new(server)
        .arg("--root")
        .arg(root)
        .arg("--backend-bin")
        .arg(backend)
        .arg("--livekit-bin")
        .arg(double)
        .env("RUST_LOG", "warn")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", server.display()))?;
    let d = Daemon {
        child,
        root: root.to_path_buf(),
        socket: root.join("var/sockets/hero_livekit_server/rpc.sock"),
    };
    wait(LIMIT, "the daemon's socket", || UnixStream::connect(&d.socket).is_ok())?;
    Ok(d)
}

/// Spawns every `(program, args, port, path)` at once, as the daemon does
/// (scrubbed environment, output discarded), and returns the time until all
/// answer 200; then stops them.
fn direct(children: &[(&PathBuf, &[&std::ffi::OsStr], u16, &str)]) -> Result<Duration, String> {
    let t0 = Instant::now();
    let mut procs = Vec::new();
    for (program, args, _, _) in children {
        let child = Command::new(program)
            .args(*args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", program.display()))?;
        procs.push(child);
    }
    let mut pending: Vec<(u16, &str)> = children.iter().map(|(_, _, port, path)| (*port, *path)).collect();
    let result = wait(LIMIT, "directly spawned children to answer 200", || {
        pending.retain(|(port, path)| status(*port, path) != Some(200));
        pending.is_empty()
    })
    .map(|()| t0.elapsed());
    for mut p in procs {
        // SIGTERM, like a stop: the double and lk-backend exit at once.
        if let Ok(pid) = i32::try_from(p.id()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGTERM);
        }
        let _ = p.wait();
    }
    result
}

/// SIGKILL livekit-server; the time until `health` shows it running again
/// under a new pid.
fn crash_to_ready(d: &Daemon) -> Result<Duration, String> {
    let h = d.call("livekitservice.health", json!({}))?;
    let old = h["processes"]["livekit-server"]["pid"]
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| format!("no livekit-server pid: {h}"))?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old), nix::sys::signal::SIGKILL)
        .map_err(|e| format!("SIGKILL {old}: {e}"))?;
    let t0 = Instant::now();
    let mut last = Value::Null;
    let ready = wait(LIMIT, "livekit-server to run again", || {
        last = d.call("livekitservice.health", json!({})).unwrap_or(Value::Null);
        let p = &last["processes"]["livekit-server"];
        let pid = p["pid"].as_i64();
        if p["state"] == "running" && pid.is_some_and(|pid| pid != i64::from(old)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
        false
    });
    ready
        .map(|()| t0.elapsed())
        .map_err(|e| format!("{e}; last health: {last}"))
}

/// Polls `f` (as fast as it returns, with 0.2 ms pauses) until it holds.
fn wait(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn vm_rss_kib(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| format!("daemon status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmRSS in /proc/<pid>/status".to_string())
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
