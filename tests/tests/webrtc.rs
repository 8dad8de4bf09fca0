//! Real WebRTC through hero_livekit: the real livekit-server v1.13.5 under
//! the daemon, and real participants (LiveKit's realtime SDK) that take
//! their tokens from lk-backend's `POST /token`, join, publish a tone and
//! hear each other. Each scenario ends with audio heard.
//!
//! Everything (daemon, children, participants) runs in a network namespace
//! of the test's own (see `netns`): no candidate, STUN or media packet can
//! go anywhere but 127.0.0.0/8. The test itself stays in the host namespace
//! and talks to the daemon over its Unix socket.
//!
//! Without the real livekit-server built (and outside CI) each test says so
//! and returns.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hero_livekit_tests::netns::Netns;
use hero_livekit_tests::observe::{pid_in, poll, ports, wait_ready_for_tokens};
use hero_livekit_tests::participant::{Joiner, Participant, HEARD_FRAMES};
use hero_livekit_tests::real::real_livekit_bin;
use hero_livekit_tests::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::Rng;
use serde_json::{json, Value};

/// Generous: a daemon, the real server and Python participants share two
/// loaded cores.
const WAIT: Duration = Duration::from_secs(60);
const LK: &str = "livekit-server";
const BE: &str = "lk-backend";

/// Ports inside the test's own namespace: nothing else is there.
const PORT: u16 = 7880;
const RTC_TCP_PORT: u16 = 7881;
const BACKEND_PORT: u16 = 7890;

/// One test's namespace and daemon. Fields drop in order: the daemon (and
/// its recorded children) first, the namespace last.
struct World {
    d: Daemon,
    root: Root,
    real: PathBuf,
    ns: Netns,
}

impl World {
    /// A daemon in a new namespace supervising the real livekit-server, set
    /// up for WebRTC on loopback and ready for tokens; `None` (after a line
    /// on stderr) when the real server is not built.
    fn new() -> Option<World> {
        let real = real_livekit_bin()?;
        let ns = Netns::new();
        let root = Root::new();
        let d = Daemon::start(&root, daemon_opts(&ns, &real));
        d.ok(
            "livekitservice.configure",
            json!({
                "port": PORT,
                "rtc_tcp_port": RTC_TCP_PORT,
                "backend_port": BACKEND_PORT,
                "rtc_enable_loopback_candidate": true,
            }),
        );
        let r = d.ok("livekitservice.start", json!({"timeout_ms": 30000}));
        assert_eq!(r["ready_for_tokens"], true, "{r}\n{}", d.stderr());
        Some(World { d, root, real, ns })
    }

    fn backend(&self) -> u16 {
        ports(&self.d).backend
    }

    /// Replaces a SIGKILLed daemon with a new one on the same root.
    fn restart_daemon(&mut self) {
        let new = Daemon::start(&self.root, daemon_opts(&self.ns, &self.real));
        let old = std::mem::replace(&mut self.d, new);
        // Dropping a harness daemon kills the recorded children, which the
        // new daemon has just adopted.
        std::mem::forget(old);
    }
}

fn daemon_opts(ns: &Netns, real: &Path) -> DaemonOpts {
    DaemonOpts::default()
        .in_netns(ns)
        .arg("--livekit-bin")
        .arg(real.display().to_string())
}

/// Two participants in `room`, each publishing a tone, each having heard
/// the other.
fn conversation(ns: &Netns, backend: u16, room: &str, a: &str, b: &str) -> (Participant, Participant) {
    let mut pa = Participant::join(ns, backend, room, a, true);
    let mut pb = Participant::join(ns, backend, room, b, true);
    pa.wait_connected(WAIT);
    pb.wait_connected(WAIT);
    pa.wait_heard(b, 0, HEARD_FRAMES, false, WAIT);
    pb.wait_heard(a, 0, HEARD_FRAMES, false, WAIT);
    (pa, pb)
}

/// A secret in LiveKit's format (43 characters of base62), new every call.
fn fresh_secret() -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(43)
        .map(char::from)
        .collect()
}

#[test]
fn two_participants_hear_each_other_through_the_supervised_real_server() {
    let Some(w) = World::new() else { return };
    let (a, _b) = conversation(&w.ns, w.backend(), "r1", "alice", "bob");
    // The daemon saw what the participants proved.
    assert_eq!(w.d.health()["ready_for_tokens"], true);
    drop(a);
    // Media and ICE went nowhere but loopback: no address outside 127/8
    // in the namespace, and not one packet on its veth pair.
    w.ns.assert_sealed();
}

/// Kills the daemon `up` started (found by the socket's peer credentials)
/// and every child recorded under the root.
struct UpGuard<'a>(&'a Root);

impl Drop for UpGuard<'_> {
    fn drop(&mut self) {
        if let Ok(s) = UnixStream::connect(self.0.socket()) {
            if let Ok(c) = nix::sys::socket::getsockopt(&s, nix::sys::socket::sockopt::PeerCredentials) {
                let _ = kill(Pid::from_raw(c.pid()), Signal::SIGKILL);
            }
        }
        kill_recorded_children(self.0.path());
    }
}

#[test]
fn up_installs_the_real_server_and_participants_hear_each_other() {
    let Some(real) = real_livekit_bin() else { return };
    let ns = Netns::new();
    let root = Root::new();
    let _guard = UpGuard(&root);
    let out = ns
        .command(bin("hero_livekit"))
        .arg("--root")
        .arg(root.path())
        .arg("up")
        .arg("--source")
        .arg(&real)
        .args(["--port", &PORT.to_string()])
        .args(["--rtc-tcp-port", &RTC_TCP_PORT.to_string()])
        .args(["--backend-port", &BACKEND_PORT.to_string()])
        .args(["--rtc-enable-loopback-candidate", "true"])
        .args(["--timeout-ms", "60000"])
        .env_remove("PATH_ROOT")
        .env_remove("HERO_SOCKET_DIR")
        .env_remove("NOTIFY_SOCKET")
        .output()
        .expect("run hero_livekit up");
    let log = || std::fs::read_to_string(root.file("logs/hero_livekit_server.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "up failed ({}):\n{}\n{}\n--- daemon log\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        log()
    );
    let h = rpc(&root.socket(), "livekitservice.health", json!({}))["result"].clone();
    assert_eq!(h["ready_for_tokens"], true, "{h}");
    // A local source is recorded as `custom-<sha256 prefix>`; its bytes
    // and the version livekit.yaml is rendered for say it is the real one.
    assert_eq!(
        h["binary"]["sha256"],
        sha256_file(&real),
        "up installed the real server: {h}"
    );
    assert_eq!(h["binary"]["target_version"], real::REAL_VERSION, "{h}");
    conversation(&ns, BACKEND_PORT, "r1", "alice", "bob");
}

#[test]
fn after_a_new_secret_participants_with_new_tokens_hear_each_other() {
    let Some(w) = World::new() else { return };
    let before = conversation(&w.ns, w.backend(), "r1", "alice", "bob");
    let lk_before = pid_in(&w.d.health(), LK);
    w.d.ok("livekitservice.configure", json!({"api_secret": fresh_secret()}));
    // New keys need a new livekit-server (LiveKit reads keys once).
    let mut last = Value::Null;
    poll(WAIT, || {
        last = w.d.health();
        (last["ready_for_tokens"] == true && pid_in(&last, LK) != lk_before).then_some(())
    })
    .unwrap_or_else(|| panic!("not ready with a new livekit-server within {WAIT:?}: {last}"));
    // The old participants' tokens carry the old secret: they go.
    drop(before);
    conversation(&w.ns, w.backend(), "r2", "carol", "dave");
}

#[test]
fn after_kill_9_of_livekit_server_the_participants_hear_each_other_again() {
    let Some(w) = World::new() else { return };
    let (mut a, mut b) = conversation(&w.ns, w.backend(), "r1", "alice", "bob");
    let lk = pid_in(&w.d.health(), LK).expect("livekit-server pid in health");
    let (ma, mb) = (a.mark(), b.mark());
    kill(Pid::from_raw(lk), Signal::SIGKILL).expect("kill -9 livekit-server");
    // The new server knows nothing of the room: each SDK rejoins with its
    // token and publishes again, and only audio of a new subscription
    // counts.
    a.wait_heard("bob", ma, HEARD_FRAMES, true, WAIT);
    b.wait_heard("alice", mb, HEARD_FRAMES, true, WAIT);
    let h = wait_ready_for_tokens(&w.d, WAIT);
    assert_ne!(pid_in(&h, LK), Some(lk), "livekit-server was restarted: {h}");
}

#[test]
fn a_sigkilled_daemon_restarted_adopts_the_children_and_the_room_goes_on() {
    let Some(mut w) = World::new() else { return };
    let (mut a, mut b) = conversation(&w.ns, w.backend(), "r1", "alice", "bob");
    let before = w.d.health();
    w.d.kill9();
    // No daemon: the media path does not need one.
    let mb = b.mark();
    b.wait_heard("alice", mb, HEARD_FRAMES, false, WAIT);
    w.restart_daemon();
    let h = wait_ready_for_tokens(&w.d, WAIT);
    for child in [LK, BE] {
        assert_eq!(
            pid_in(&h, child),
            pid_in(&before, child),
            "{child} adopted, not restarted: {h}"
        );
    }
    let (ma, mb) = (a.mark(), b.mark());
    let mut carol = Participant::join(&w.ns, w.backend(), "r1", "carol", false);
    carol.wait_connected(WAIT);
    carol.wait_heard("alice", 0, HEARD_FRAMES, false, WAIT);
    carol.wait_heard("bob", 0, HEARD_FRAMES, false, WAIT);
    a.wait_heard("bob", ma, HEARD_FRAMES, false, WAIT);
    b.wait_heard("alice", mb, HEARD_FRAMES, false, WAIT);
}

/// What the sampler below relies on: a join the server refuses is reported
/// as failed, at once, and the JWT LiveKit echoes in its 401 never reaches
/// the output. A second lk-backend signs with the right key and a wrong
/// secret.
#[test]
fn a_join_the_server_refuses_is_reported_as_failed_without_its_token() {
    let Some(w) = World::new() else { return };
    let key = w.d.health()["api_key"].as_str().expect("api_key").to_string();
    let env = w.root.path().join("wrong-backend.env");
    let wrong_port = BACKEND_PORT + 100;
    // Its own mint secret, which the participant reads from this file as
    // it reads the supervised one's from backend.env.
    std::fs::write(
        &env,
        format!(
            "LIVEKIT_API_KEY={key}\nLIVEKIT_API_SECRET={}\nLIVEKIT_URL=ws://127.0.0.1:{PORT}\nPORT={wrong_port}\nMINT_SECRET={}\n",
            fresh_secret(),
            fresh_secret()
        ),
    )
    .expect("write wrong-backend.env");
    let mut wrong =
        w.ns.command(bin("lk-backend"))
            .arg("--env-file")
            .arg(&env)
            .args(["--port", &wrong_port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run lk-backend");
    let mut joiner = Joiner::start(&w.ns, wrong_port);
    // lk-backend may not listen yet: a refused connection is retried by
    // the caller, a 401 from livekit-server is the answer awaited.
    let j = wait_for(WAIT, "a join answered by livekit-server", || {
        let j = joiner.join("r1", "mallory", WAIT);
        (!j.message.contains("POST /token")).then_some(j)
    });
    let _ = wrong.kill();
    let _ = wrong.wait();
    assert!(!j.ok, "a token signed with another secret was accepted");
    assert!(j.message.contains("401"), "{}", j.message);
    assert!(
        j.message.contains("<jwt>") && !j.message.contains("eyJ"),
        "{}",
        j.message
    );
    // The real backend's tokens still join.
    let mut good = Joiner::start(&w.ns, w.backend());
    let j = good.join("r1", "alice", WAIT);
    assert!(j.ok, "{}", j.message);
}

/// The ready_for_tokens invariant with real joins: a chaos run (new
/// secrets, kill -9 of each child, SIGKILL of the daemon and its restart)
/// while a sampler asks health and, whenever it says ready and no blow is
/// in flight, makes a real WebRTC join with a fresh token from lk-backend.
/// Zero samples in which health said ready and the join failed.
#[test]
fn chaos_never_yields_a_ready_health_whose_real_join_fails() {
    let seconds: u64 = std::env::var("CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(25);
    let Some(mut w) = World::new() else { return };
    let socket = w.d.socket.clone();
    let mut joiner = Joiner::start(&w.ns, w.backend());
    // A blow is "in flight" from just before it until health has had a
    // probe period plus a margin to see it.
    let settle = Duration::from_millis(600);
    let quiet_since = Arc::new(Mutex::new(Instant::now()));
    let in_flight = Arc::new(AtomicU64::new(0));
    // Blows begun so far: a join counts only when none began between the
    // health sample and the join's end (its token may be older than the
    // blow, and the SDK may retry a refused connect past the window).
    let blows = Arc::new(AtomicU64::new(0));
    // Joins judged so far: the main thread waits for one per quiet window.
    let judged = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (quiet_since, in_flight, stop) = (quiet_since.clone(), in_flight.clone(), stop.clone());
        let (blows, judged) = (blows.clone(), judged.clone());
        std::thread::spawn(move || {
            let quiet = || {
                in_flight.load(Ordering::SeqCst) == 0
                    && quiet_since.lock().map(|t| t.elapsed() >= settle).unwrap_or(false)
            };
            let (mut samples, mut joins, mut failed) = (0u64, 0u64, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                if !quiet() {
                    std::thread::park_timeout(Duration::from_millis(5));
                    continue;
                }
                let epoch = blows.load(Ordering::SeqCst);
                let Some(h) = try_health(&socket) else { continue };
                samples += 1;
                if h["ready_for_tokens"] != true {
                    std::thread::park_timeout(Duration::from_millis(5));
                    continue;
                }
                let j = joiner.join("chaos", &format!("sampler-{samples}"), WAIT);
                // Only a sample taken wholly inside a quiet window counts.
                if !quiet() || blows.load(Ordering::SeqCst) != epoch {
                    continue;
                }
                joins += 1;
                judged.fetch_add(1, Ordering::SeqCst);
                if !j.ok {
                    failed.push(j.message);
                }
            }
            (samples, joins, failed)
        })
    };
    let mark = |on: bool| {
        if on {
            blows.fetch_add(1, Ordering::SeqCst);
            in_flight.fetch_add(1, Ordering::SeqCst);
        } else {
            if let Ok(mut t) = quiet_since.lock() {
                *t = Instant::now();
            }
            in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    };
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut actions = 0u32;
    let mut rng = rand::rng();
    while Instant::now() < deadline {
        mark(true);
        let h = w.d.health();
        match rng.random_range(0..4) {
            0 => {
                w.d.ok("livekitservice.configure", json!({"api_secret": fresh_secret()}));
            }
            1 => {
                if let Some(pid) = pid_in(&h, LK) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            2 => {
                if let Some(pid) = pid_in(&h, BE) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            _ => {
                w.d.kill9();
                w.restart_daemon();
            }
        }
        actions += 1;
        // Let the system converge before the next blow, so the sampler gets
        // quiet windows to judge.
        let _ = poll(WAIT, || (w.d.health()["ready_for_tokens"] == true).then_some(()));
        let before = judged.load(Ordering::SeqCst);
        mark(false);
        // A quiet window lasts until the sampler has judged three joins in
        // it (bounded: health may not come back ready after this blow).
        let _ = poll(WAIT, || (judged.load(Ordering::SeqCst) >= before + 3).then_some(()));
    }
    stop.store(true, Ordering::SeqCst);
    let (samples, joins, failed) = sampler.join().expect("sampler");
    println!(
        "chaos with real joins: {seconds} s, {actions} blows, {samples} health samples, {joins} real joins while ready, {} failed",
        failed.len()
    );
    assert!(joins > 0, "the sampler made no real join while ready");
    assert!(
        failed.is_empty(),
        "health said ready while a real join failed: {failed:?}"
    );
}

/// The daemon's events, read on a thread of their own from the moment of
/// the tap.
struct EventTap {
    lines: std::sync::mpsc::Receiver<Value>,
}

impl EventTap {
    fn new(d: &Daemon) -> EventTap {
        let socket = d.socket.clone();
        let (tx, lines) = std::sync::mpsc::channel();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                let client = hero_livekit_client::Client::new(&socket);
                let Ok(mut events) = client.subscribe_events().await else {
                    return;
                };
                let _ = ready_tx.send(());
                while let Some(m) = events.next().await {
                    let Ok(v) = serde_json::to_value(&m) else { continue };
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            });
        });
        ready.recv_timeout(WAIT).expect("subscribed to events");
        EventTap { lines }
    }

    /// The next event `want` accepts, skipping others.
    fn wait(&self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) if want(&v) => return v,
                Ok(_) => {}
                Err(e) => panic!("no event {what} within {WAIT:?}: {e}"),
            }
        }
    }
}

/// The state event of `process` that says how its process ended.
fn ended_event(tap: &EventTap, process: &str) -> String {
    let v = tap.wait(&format!("saying how {process} ended"), |v| {
        v["type"] == "state"
            && v["process"] == process
            && v["detail"]
                .as_str()
                .is_some_and(|d| d.contains("on SIGTERM") || d.contains("at the drain deadline"))
    });
    v["detail"].as_str().unwrap_or_default().to_string()
}

/// livekit-server waits for its participants after SIGTERM with no deadline
/// of its own: `restart` and `stop` end at the caller's drain deadline,
/// kill it, and say so in their result and in an event; the participants
/// rejoin the new server and hear each other again.
#[test]
fn restart_and_stop_with_participants_end_at_the_drain_deadline_and_say_how() {
    const DRAIN_MS: u64 = 2000;
    let drain = Duration::from_millis(DRAIN_MS);
    // The restart also waits for the new server to be ready and proven;
    // the daemon's default drain (10 s) would overshoot this.
    let margin = Duration::from_secs(7);
    let Some(w) = World::new() else { return };
    let (mut a, mut b) = conversation(&w.ns, w.backend(), "r1", "alice", "bob");
    let tap = EventTap::new(&w.d);
    let lk = pid_in(&w.d.health(), LK).expect("livekit-server pid in health");
    let (ma, mb) = (a.mark(), b.mark());

    let t = Instant::now();
    let r = w.d.ok(
        "livekitservice.restart",
        json!({"process": LK, "drain_timeout_ms": DRAIN_MS, "timeout_ms": 30000}),
    );
    let took = t.elapsed();
    println!("restart of livekit-server with participants, drain {DRAIN_MS} ms: {took:?}, {r}");
    assert_eq!(r["killed"], json!([LK]), "killed at the deadline: {r}");
    assert!(took >= drain, "the drain deadline was given ({took:?})");
    assert!(
        took < drain + margin,
        "the call's drain deadline, not the default ({took:?})"
    );
    let detail = ended_event(&tap, LK);
    assert!(
        detail.contains(&format!("killed with SIGKILL at the drain deadline ({DRAIN_MS} ms)")),
        "{detail}"
    );
    assert_ne!(pid_in(&w.d.health(), LK), Some(lk), "a new livekit-server");
    a.wait_heard("bob", ma, HEARD_FRAMES, true, WAIT);
    b.wait_heard("alice", mb, HEARD_FRAMES, true, WAIT);

    let t = Instant::now();
    let r = w.d.ok("livekitservice.stop", json!({"drain_timeout_ms": DRAIN_MS}));
    let took = t.elapsed();
    println!("stop with participants, drain {DRAIN_MS} ms: {took:?}, {r}");
    assert_eq!(r["killed"], json!([LK]), "{r}");
    assert!(
        r["stopped"].as_array().is_some_and(|s| s.len() == 2),
        "both were running: {r}"
    );
    assert!(took >= drain && took < drain + margin, "{took:?}");
    // Both children's state events, in whichever order they come (lk-backend,
    // without participants, exits on SIGTERM at once).
    let mut ended: std::collections::BTreeMap<String, String> = Default::default();
    while ended.len() < 2 {
        let v = tap.wait("saying how a child ended on stop", |v| {
            v["type"] == "state" && v["detail"].as_str().is_some_and(|d| d.ends_with("(stop)"))
        });
        let process = v["process"].as_str().unwrap_or_default().to_string();
        ended.insert(process, v["detail"].as_str().unwrap_or_default().to_string());
    }
    assert!(
        ended[LK].contains("killed with SIGKILL at the drain deadline (2000 ms)"),
        "{ended:?}"
    );
    assert!(ended[BE].contains("exited on SIGTERM"), "{ended:?}");
}
