//! Benchmark: real WebRTC through hero_livekit (issue 19, "Measure"), with
//! the real livekit-server v1.13.5 and real participants (LiveKit's
//! realtime SDK, tests/python/participant.py), all in a network namespace
//! of the bench's own whose traffic stays on 127.0.0.0/8. It prints:
//!
//! - `hero_livekit up` (install of the built binary, configure, start,
//!   verify) until a participant first hears another's tone; the
//!   participants' SDK is loaded before the clock starts and they retry
//!   `POST /token` until lk-backend answers;
//! - a real join through the product's chain, `POST /token` to connected
//!   (signalling, ICE, DTLS), median and p99;
//! - kill -9 of livekit-server until both participants hear each other
//!   again (the daemon restarts it, the SDKs rejoin and publish again),
//!   beside LiveKit's own start time (spawn to `GET /` 200) measured in the
//!   same run;
//! - the daemon's RSS and CPU beside livekit-server's while 10 participants
//!   (5 rooms of 2, each publishing) are in rooms.
//!
//! Figures only, no targets: it exits non-zero only when it cannot measure.
//!
//! Run: `cargo build --release --workspace --bins && target/release/bench-webrtc`
//! (root, iproute2, python3 with tests/python/requirements.txt, and the
//! real server built by scripts/test or named by `HERO_LIVEKIT_REAL_BIN`).

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use hero_livekit_tests::netns::Netns;
use hero_livekit_tests::observe::{pid_in, poll, status};
use hero_livekit_tests::participant::{Joiner, Participant, HEARD_FRAMES};
use hero_livekit_tests::real::real_livekit_bin;
use hero_livekit_tests::{bin, kill_recorded_children, rpc, rss_kib, Root};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(90);
const PORT: u16 = 7880;
const RTC_TCP_PORT: u16 = 7881;
const BACKEND_PORT: u16 = 7890;
const JOINS: usize = 40;
const KILL_ROUNDS: usize = 3;
const START_ROUNDS: usize = 5;
const LOAD_WINDOW: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let Some(real) = real_livekit_bin() else {
        eprintln!("bench-webrtc: the real livekit-server is needed");
        return ExitCode::FAILURE;
    };
    let ns = Netns::new();
    // This process joins the namespace too, to time LiveKit's own start
    // over HTTP on its loopback. Done first, before any thread exists:
    // setns moves only the calling thread.
    if let Err(e) = enter(&ns) {
        eprintln!("bench-webrtc: entering the namespace: {e}");
        return ExitCode::FAILURE;
    }
    let root = Root::new();
    let _guard = UpGuard(&root);
    bench(&ns, &root, &real);
    ExitCode::SUCCESS
}

fn enter(ns: &Netns) -> std::io::Result<()> {
    let f = std::fs::File::open(format!("/run/netns/{}", ns.name()))?;
    // SAFETY: setns on a descriptor this process holds open; it changes
    // only this (so far the only) thread's network namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Kills the daemon `up` started and its recorded children.
struct UpGuard<'a>(&'a Root);

impl Drop for UpGuard<'_> {
    fn drop(&mut self) {
        if let Some(pid) = daemon_pid(self.0) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
        kill_recorded_children(self.0.path());
    }
}

/// The daemon serving on the root's socket, by its peer credentials.
fn daemon_pid(root: &Root) -> Option<i32> {
    let s = UnixStream::connect(root.socket()).ok()?;
    nix::sys::socket::getsockopt(&s, nix::sys::socket::sockopt::PeerCredentials)
        .ok()
        .map(|c| c.pid())
}

fn health(root: &Root) -> Value {
    rpc(&root.socket(), "livekitservice.health", json!({}))["result"].clone()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or(f64::NAN)
}

fn bench(ns: &Netns, root: &Root, real: &Path) {
    // --- up to first audio heard
    let wait_backend = ["--wait-for-backend", "120"];
    let mut alice = Participant::join_with(ns, BACKEND_PORT, "r1", "alice", true, &wait_backend);
    let mut bob = Participant::join_with(
        ns,
        BACKEND_PORT,
        "r1",
        "bob",
        true,
        &["--wait-for-backend", "120", "--report-every", "1"],
    );
    for p in [&mut alice, &mut bob] {
        p.wait_line(0, WAIT, "the SDK loaded", |v| v["event"] == "started");
    }
    let t0 = Instant::now();
    let t0_mono = monotonic_s();
    let out = ns
        .command(bin("hero_livekit"))
        .arg("--root")
        .arg(root.path())
        .arg("up")
        .arg("--source")
        .arg(real)
        .args(["--port", &PORT.to_string()])
        .args(["--rtc-tcp-port", &RTC_TCP_PORT.to_string()])
        .args(["--backend-port", &BACKEND_PORT.to_string()])
        .args(["--rtc-enable-loopback-candidate", "true"])
        .args(["--timeout-ms", "60000"])
        .env_remove("PATH_ROOT")
        .env_remove("HERO_SOCKET_DIR")
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .output()
        .expect("run hero_livekit up");
    let up_done = t0.elapsed();
    assert!(
        out.status.success(),
        "up failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Timed by the line's own clock reading: audio may be heard before
    // `up` has returned.
    let (_, first) = bob.wait_line(0, WAIT, "the first frame of alice's tone", |v| {
        v["event"] == "audio" && v["from"] == "alice" && v["loud"].as_u64().is_some_and(|n| n > 0)
    });
    let first_audio = Duration::from_secs_f64((first["t"].as_f64().unwrap_or(f64::NAN) - t0_mono).max(0.0));
    alice.wait_heard("bob", 0, HEARD_FRAMES, false, WAIT);
    println!("bench-webrtc: real livekit-server v1.13.5, real participants, one loopback-only namespace");
    println!("{:<64} {:>10}", "measurement", "ms");
    println!(
        "{:<64} {:>10.0}",
        "`hero_livekit up` (install, configure, start, verify)",
        ms(up_done)
    );
    println!(
        "{:<64} {:>10.0}",
        "`up` started -> first audio heard by a participant",
        ms(first_audio)
    );

    // --- real joins through the product's chain
    let mut joiner = Joiner::start(ns, BACKEND_PORT);
    let (mut total, mut token, mut connect) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0..JOINS {
        let j = joiner.join("joins", &format!("j{n}"), WAIT);
        assert!(j.ok, "join {n} failed: {}", j.message);
        total.push(j.token_ms + j.connect_ms);
        token.push(j.token_ms);
        connect.push(j.connect_ms);
    }
    drop(joiner);
    println!(
        "{:<64} {:>10.1}",
        format!("real join, POST /token -> connected, median of {JOINS}"),
        percentile(&mut total, 0.5)
    );
    println!(
        "{:<64} {:>10.1}",
        "real join, POST /token -> connected, p99",
        percentile(&mut total, 0.99)
    );
    println!(
        "{:<64} {:>10.1}",
        "  of which POST /token (median)",
        percentile(&mut token, 0.5)
    );
    println!(
        "{:<64} {:>10.1}",
        "  of which token in hand -> connected (median)",
        percentile(&mut connect, 0.5)
    );

    // --- kill -9 of livekit-server until heard again, beside LiveKit's start
    let (mut heard_again, mut ready_again) = (Vec::new(), Vec::new());
    for _ in 0..KILL_ROUNDS {
        let pid = pid_in(&health(root), "livekit-server").expect("livekit-server pid");
        let (ma, mb) = (alice.mark(), bob.mark());
        let t = Instant::now();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).expect("kill -9");
        let ready = poll(WAIT, || {
            let h = health(root);
            (h["ready_for_tokens"] == true && pid_in(&h, "livekit-server") != Some(pid)).then(|| t.elapsed())
        })
        .expect("ready for tokens again after kill -9");
        alice.wait_heard("bob", ma, 1, true, WAIT);
        bob.wait_heard("alice", mb, 1, true, WAIT);
        heard_again.push(ms(t.elapsed()));
        ready_again.push(ms(ready));
        // Both fully back (half a second of tone each way) before the next blow.
        alice.wait_heard("bob", ma, HEARD_FRAMES, true, WAIT);
        bob.wait_heard("alice", mb, HEARD_FRAMES, true, WAIT);
    }
    let mut own_start: Vec<f64> = (0..START_ROUNDS).map(|_| livekit_own_start(real)).collect();
    println!(
        "{:<64} {:>10.0}",
        format!("kill -9 livekit-server -> ready_for_tokens again (median of {KILL_ROUNDS})"),
        percentile(&mut ready_again, 0.5)
    );
    println!(
        "{:<64} {:>10.0}",
        format!("kill -9 livekit-server -> both hear each other again (median of {KILL_ROUNDS})"),
        percentile(&mut heard_again, 0.5)
    );
    println!(
        "{:<64} {:>10.0}",
        format!("  beside: LiveKit's own start, spawn -> GET / 200 (median of {START_ROUNDS})"),
        percentile(&mut own_start, 0.5)
    );
    drop((alice, bob));

    // --- resources with 10 participants in rooms
    let mut crowd = Vec::new();
    for room in 0..5 {
        for who in ["a", "b"] {
            crowd.push(Participant::join_with(
                ns,
                BACKEND_PORT,
                &format!("room{room}"),
                &format!("{who}{room}"),
                true,
                &["--report-every", "100"],
            ));
        }
    }
    for (i, p) in crowd.iter_mut().enumerate() {
        let other = format!("{}{}", if i % 2 == 0 { "b" } else { "a" }, i / 2);
        p.wait_connected(WAIT);
        p.wait_heard(&other, 0, HEARD_FRAMES, false, WAIT);
    }
    let h = health(root);
    let daemon = daemon_pid(root).expect("daemon pid");
    let lk = pid_in(&h, "livekit-server").expect("livekit-server pid");
    let be = pid_in(&h, "lk-backend").expect("lk-backend pid");
    let before: Vec<u64> = [daemon, lk, be].iter().map(|p| cpu_ns(*p)).collect();
    let t = Instant::now();
    // A measuring window, not a wait for an event.
    std::thread::sleep(LOAD_WINDOW);
    let window = t.elapsed().as_secs_f64();
    println!("with 10 participants in 5 rooms, each publishing and hearing its peer, over {window:.1} s:");
    println!("{:<64} {:>10} {:>10}", "process", "RSS MiB", "CPU %");
    for ((name, pid), b) in [
        ("hero_livekit_server (daemon)", daemon),
        ("livekit-server", lk),
        ("lk-backend", be),
    ]
    .into_iter()
    .zip(before)
    {
        let cpu = (cpu_ns(pid).saturating_sub(b)) as f64 / 1e9 / window * 100.0;
        println!("{name:<64} {:>10.1} {cpu:>10.3}", rss_kib(pid) as f64 / 1024.0);
    }
    drop(crowd);
}

/// CLOCK_MONOTONIC in seconds: the clock the participants stamp lines with.
fn monotonic_s() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// CPU time of every live thread of `pid` so far, in ns
/// (`/proc/<pid>/task/*/schedstat`): finer than the clock ticks of
/// `/proc/<pid>/stat`, which a mostly idle daemon does not reach in a
/// window.
fn cpu_ns(pid: i32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
                .filter_map(|s| s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
                .sum()
        })
        .unwrap_or(0)
}

/// LiveKit's own start: the real server spawned directly on other ports,
/// from spawn to `GET /` 200, in ms.
fn livekit_own_start(real: &Path) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("livekit.yaml");
    let yaml = "port: 7980\nrtc:\n  tcp_port: 7981\n  port_range_start: 59000\n  port_range_end: 59099\n  use_external_ip: false\n  enable_loopback_candidate: true\nkeys:\n  APIbenchownstart: bench-own-start-secret-of-forty-four-chars\nlogging:\n  level: warn\n";
    std::fs::write(&config, yaml).expect("write livekit.yaml");
    let t = Instant::now();
    let mut child = Command::new(real)
        .arg("--config")
        .arg(&config)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn livekit-server");
    let up = poll(WAIT, || (status(7980, "/") == Some(200)).then(|| t.elapsed()));
    let _ = child.kill();
    let _ = child.wait();
    ms(up.expect("LiveKit's own start: GET / 200"))
}
