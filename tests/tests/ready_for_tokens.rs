//! `ready_for_tokens` is proven, never inferred (issue: the field failure
//! behind a health document that said all was well).
//!
//! Real daemons, the real lk-backend and the livekit-server test double:
//! clients that hang up in the middle of mutations, a backend that re-reads a
//! tampered file behind consistent files, a disk that fills up between two
//! files of the triple, and a chaos run sampled by an invariant checker.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use hero_livekit_proto::Event;
use hero_livekit_tests::lk::{env_credential, json_credential, yaml_credential};
use hero_livekit_tests::observe::{backend_token, pid_in, ports, validate, wait_ready_for_tokens, Ports};
use hero_livekit_tests::*;
use livekit_api::access_token::TokenVerifier;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::Rng;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);
const LK: &str = "livekit-server";
const BE: &str = "lk-backend";

/// A secret in LiveKit's format (43 characters of base62), new every call.
fn fresh_secret() -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(43)
        .map(char::from)
        .collect()
}

/// Sends a JSON-RPC call over a new connection and hangs up after `cut`
/// without reading the answer, as `curl --max-time` does.
fn call_and_hang_up(socket: &Path, method: &str, params: Value, cut: Duration) {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    let request = format!(
        "POST /rpc HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut s = UnixStream::connect(socket).expect("connect");
    s.write_all(request.as_bytes()).expect("write the request");
    // The random cut point is the variable under test, not a wait for an
    // event: the client goes away at an arbitrary moment of the mutation.
    std::thread::sleep(cut);
    drop(s);
}

fn random_cut() -> Duration {
    Duration::from_micros(rand::rng().random_range(0..6_000))
}

/// A token from lk-backend is accepted by livekit-server, now.
fn assert_tokens_work(p: Ports, why: &str) {
    let token = backend_token(p.backend);
    assert_eq!(validate(p.livekit, &token), (200, "success".to_string()), "{why}");
}

/// A running daemon with both children ready on free ports.
fn running(root: &Root, opts: DaemonOpts) -> Daemon {
    let d = Daemon::start(root, opts);
    configure_free_ports(&d);
    let r = d.ok("livekitservice.start", json!({"timeout_ms": 30000}));
    assert_eq!(r["ready_for_tokens"], true, "{r}");
    d
}

/// Waits until health is ready with `secret` in all three files.
fn wait_converged_on(d: &Daemon, root: &Root, secret: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    let files_hold_it = || {
        [
            json_credential(&root.file("runtime.json")).1,
            yaml_credential(&root.file("livekit.yaml")).1,
            env_credential(&root.file("backend.env")).1,
        ]
        .iter()
        .all(|s| s == secret)
    };
    loop {
        // Files first, then health: a health read before the cut-off call
        // even began (ready on the old secret) must not pass for one read
        // after it wrote the files.
        if files_hold_it() {
            let h = d.health();
            if h["ready_for_tokens"] == true && files_hold_it() {
                return h;
            }
        }
        let h = d.health();
        assert!(
            Instant::now() < deadline,
            "not converged on the configured secret within {WAIT:?}: {h}\n{}",
            d.stderr()
        );
        std::thread::park_timeout(Duration::from_millis(10));
    }
}

#[test]
fn a_client_that_hangs_up_mid_configure_never_leaves_a_ready_health_whose_tokens_fail() {
    let root = Root::new();
    let d = running(&root, DaemonOpts::double());
    let p = ports(&d);
    for round in 0..10 {
        let secret = fresh_secret();
        call_and_hang_up(
            &d.socket,
            "livekitservice.configure",
            json!({"api_secret": secret}),
            random_cut(),
        );
        let h = wait_converged_on(&d, &root, &secret);
        let key = h["api_key"].as_str().expect("api_key").to_string();
        // As if the call had completed: lk-backend signs with the new
        // secret and livekit-server accepts it, every time health says so.
        for sample in 0..5 {
            let h = d.health();
            assert_eq!(
                h["ready_for_tokens"],
                true,
                "round {round}, sample {sample}: {h}\n{}",
                d.stderr()
            );
            let token = backend_token(p.backend);
            assert!(
                TokenVerifier::with_api_key(&key, &secret).verify(&token).is_ok(),
                "round {round}: lk-backend signs with the configured secret"
            );
            assert_eq!(
                validate(p.livekit, &token),
                (200, "success".to_string()),
                "round {round}, sample {sample}: ready but refused: {h}"
            );
        }
    }
}

#[test]
fn install_start_restart_and_configure_cut_off_by_their_client_run_to_completion() {
    let root = Root::new();
    // No --livekit-bin: livekit-server comes from `install`.
    let d = Daemon::start(&root, DaemonOpts::default());
    configure_free_ports(&d);
    let source = bin("livekit-server-double");

    call_and_hang_up(
        &d.socket,
        "livekitservice.install",
        json!({"source": source.display().to_string()}),
        random_cut(),
    );
    wait_for(WAIT, "livekit-server installed", || {
        (d.health()["binary"]["installed"] == true).then_some(())
    });
    assert_eq!(
        sha256_file(&root.path().join("bin/livekit-server")),
        sha256_file(&source),
        "the whole binary, installed"
    );

    call_and_hang_up(&d.socket, "livekitservice.start", json!({}), random_cut());
    let h = wait_ready_for_tokens(&d, WAIT);
    let p = ports(&d);
    assert_tokens_work(p, "after a cut-off start");

    let before = (pid_in(&h, LK), pid_in(&h, BE));
    call_and_hang_up(&d.socket, "livekitservice.restart", json!({}), random_cut());
    let h = wait_for(WAIT, "both children replaced and ready", || {
        let h = d.health();
        let (lk, be) = (pid_in(&h, LK), pid_in(&h, BE));
        (h["ready_for_tokens"] == true && lk.is_some() && lk != before.0 && be.is_some() && be != before.1).then_some(h)
    });
    assert_eq!(h["consistent"], true, "{h}");
    assert_tokens_work(p, "after a cut-off restart");

    let port = free_port();
    call_and_hang_up(
        &d.socket,
        "livekitservice.configure",
        json!({"port": port}),
        random_cut(),
    );
    wait_for(WAIT, "livekit-server on the new port and ready", || {
        let h = d.health();
        (h["ready_for_tokens"] == true && ports(&d).livekit == port).then_some(())
    });
    assert_tokens_work(ports(&d), "after a cut-off configure of the port");
}

#[test]
fn a_backend_signing_with_a_wrong_secret_behind_consistent_files_is_caught_by_the_probe_and_repaired() {
    let root = Root::new();
    // No periodic drift check: only the token-chain probe can see this.
    let mut opts = DaemonOpts::double().no_drift_check();
    opts.env.push(("HERO_LIVEKIT_TOKEN_PROBE_MS".into(), "300".into()));
    let d = running(&root, opts);
    let p = ports(&d);
    let be0 = pid_in(&d.health(), BE).expect("lk-backend pid");
    let env_path = root.file("backend.env");
    let good = std::fs::read(&env_path).expect("read backend.env");
    let (key, secret) = env_credential(&env_path);
    let wrong = fresh_secret();
    let tampered = String::from_utf8(good.clone()).expect("utf-8").replace(&secret, &wrong);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = hero_livekit_client::Client::new(&d.socket);
        let mut events = client.subscribe_events().await.expect("subscribe");

        // The old tooling's way: edit the file, SIGHUP lk-backend, and the
        // file is put back. Every hash now agrees; lk-backend does not.
        std::fs::write(&env_path, &tampered).expect("tamper backend.env");
        kill(Pid::from_raw(be0), Signal::SIGHUP).expect("SIGHUP lk-backend");
        let log = root.file("logs/lk-backend.log");
        wait_for(WAIT, "lk-backend to reload the tampered file", || {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|l| l.contains("SIGHUP: credential reloaded"))
                .map(|_| ())
        });
        std::fs::write(&env_path, &good).expect("restore backend.env");

        let mut failed = None;
        let mut restarted = false;
        while failed.is_none() || !restarted {
            let ev = tokio::time::timeout(WAIT, events.next())
                .await
                .unwrap_or_else(|_| panic!("token_chain_failed and a restart within {WAIT:?}"))
                .expect("stream open");
            match ev.event {
                Event::TokenChainFailed { error } => failed = failed.or(Some(error)),
                Event::Restarted {
                    process: hero_livekit_proto::ProcessName::LkBackend,
                    ..
                } if failed.is_some() => restarted = true,
                _ => {}
            }
        }
        let error = failed.unwrap_or_default();
        // LiveKit's own 401 text, without the token it echoes.
        assert!(
            error.contains("401 invalid token: [redacted JWT], error: token signature is invalid"),
            "LiveKit's own 401 text: {error}"
        );
        assert!(!error.contains("eyJ"), "never a token: {error}");
        assert!(
            !error.contains(&wrong) && !error.contains(&secret),
            "never a secret: {error}"
        );
    });

    let h = wait_ready_for_tokens(&d, WAIT);
    let be1 = pid_in(&h, BE).expect("lk-backend pid");
    assert_ne!(be1, be0, "the wrong lk-backend was replaced");
    assert_eq!(h["token_chain"]["ok"], true, "{h}");
    assert_eq!(h["token_chain"]["error"], Value::Null, "{h}");
    assert_eq!(
        std::fs::read(&env_path).expect("read"),
        good,
        "the file was right all along"
    );
    let token = backend_token(p.backend);
    assert!(TokenVerifier::with_api_key(&key, &secret).verify(&token).is_ok());
    assert_tokens_work(p, "after the repair");
}

#[test]
fn health_is_not_ready_until_the_probe_has_proven_the_chain() {
    let root = Root::new();
    let d = Daemon::start(&root, DaemonOpts::double());
    configure_free_ports(&d);
    let h = d.health();
    assert_eq!(h["ready_for_tokens"], false, "{h}");
    assert_eq!(h["token_chain"]["ok"], false, "{h}");
    assert!(
        h["token_chain"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("not ready")),
        "{h}"
    );
    let r = d.ok("livekitservice.start", json!({}));
    assert_eq!(r["ready_for_tokens"], true, "start answers once proven: {r}");
    let h = d.health();
    assert_eq!(h["token_chain"]["ok"], true, "{h}");
    assert!(h["token_chain"]["checked_at_ms"].as_u64().is_some_and(|t| t > 0), "{h}");
    assert!(h["token_chain"]["latency_ms"].is_u64(), "{h}");
}

/// A tmpfs on `dir`, unmounted on drop; `None` where mounting is refused
/// (an unprivileged container), which fails the test under CI.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).expect("mkdir mount point");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        if status.success() {
            return Some(Tmpfs(dir.to_path_buf()));
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "mounting a tmpfs was refused ({status}); under CI this test must run"
        );
        println!("skipping: mounting a tmpfs is not permitted here ({status})");
        None
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system of `dir` and then frees exactly one page: room for
/// one small file, not for two.
fn fill_leaving_one_page(dir: &Path) -> std::fs::File {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("create filler");
    let page = [0u8; 4096];
    while f.write_all(&page).is_ok() {}
    let len = f.metadata().expect("stat filler").len();
    f.set_len(len.saturating_sub(4096)).expect("free one page");
    f
}

#[test]
fn a_disk_that_fills_after_runtime_json_heals_forward_and_the_next_boot_agrees() {
    let root = Root::new();
    let Some(_fs) = Tmpfs::mount(&root.state(), "256k") else {
        return;
    };
    let mut d = Daemon::start(&root, DaemonOpts::double().drift_check_ms(200));
    configure_free_ports(&d);
    let before = d.health();
    assert_eq!(before["consistent"], true, "{before}");
    // Held open, the old files keep their pages after each rename: the disk
    // has room for runtime.json's new bytes and then for nothing else.
    let held: Vec<std::fs::File> = ["runtime.json", "livekit.yaml", "backend.env"]
        .iter()
        .map(|f| std::fs::File::open(root.file(f)).expect("hold a file open"))
        .collect();
    let filler = fill_leaving_one_page(&root.state());

    let secret = fresh_secret();
    let r = d.ok("livekitservice.configure", json!({"api_secret": secret}));
    assert_eq!(r["heal"]["written"], json!(["runtime.json"]), "{r}");
    assert_eq!(r["heal"]["pending"], json!(["livekit.yaml", "backend.env"]), "{r}");
    assert!(
        r["heal"]["write_error"]
            .as_str()
            .is_some_and(|e| e.contains("livekit.yaml") && e.contains("No space left")),
        "{r}"
    );
    assert!(!r.to_string().contains(&secret), "never the secret: {r}");
    let reported = r["in_memory_hash"].as_str().expect("in_memory_hash").to_string();
    assert_eq!(json_credential(&root.file("runtime.json")).1, secret);
    let h = d.health();
    assert_eq!(h["in_memory_hash"], reported, "the new config is the truth: {h}");
    assert_eq!(h["consistent"], false, "{h}");
    assert_eq!(h["ready_for_tokens"], false, "{h}");

    // A crash now: the next boot loads runtime.json, which is what the
    // caller was told is in force.
    d.kill9();
    let d = Daemon::start(&root, DaemonOpts::double().drift_check_ms(200));
    let h = d.health();
    assert_eq!(h["in_memory_hash"], reported, "the next boot agrees: {h}");
    assert_eq!(h["consistent"], false, "still pending: {h}");

    // Space returns; the reconcile completes on its own.
    drop(filler);
    drop(held);
    std::fs::remove_file(root.state().join("filler")).expect("free the disk");
    wait_for(WAIT, "the pending files written", || {
        (d.health()["consistent"] == true).then_some(())
    });
    assert_eq!(yaml_credential(&root.file("livekit.yaml")).1, secret);
    assert_eq!(env_credential(&root.file("backend.env")).1, secret);
    let r = d.ok("livekitservice.start", json!({}));
    assert_eq!(r["ready_for_tokens"], true, "{r}");
    assert_tokens_work(ports(&d), "after the disk came back");
}

#[test]
fn a_configure_whose_runtime_json_cannot_be_written_changes_nothing() {
    let root = Root::new();
    let Some(_fs) = Tmpfs::mount(&root.state(), "256k") else {
        return;
    };
    let d = Daemon::start(&root, DaemonOpts::double().no_drift_check());
    configure_free_ports(&d);
    let before = d.health();
    let held: Vec<std::fs::File> = ["runtime.json", "livekit.yaml", "backend.env"]
        .iter()
        .map(|f| std::fs::File::open(root.file(f)).expect("hold a file open"))
        .collect();
    let filler = fill_leaving_one_page(&root.state());
    // Take the last page too.
    let mut last = std::fs::File::create(root.state().join("last")).expect("create");
    while last.write_all(&[0u8; 512]).is_ok() {}
    let r = d.call("livekitservice.configure", json!({"api_secret": fresh_secret()}));
    assert_eq!(r["error"]["code"], -32004, "write_failed: {r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("runtime.json")),
        "{r}"
    );
    let h = d.health();
    assert_eq!(h["in_memory_hash"], before["in_memory_hash"], "nothing changed: {h}");
    assert_eq!(h["consistent"], true, "{h}");
    drop((filler, held, last));
}

/// The chaos run: configure (some calls cut off), SIGKILL of each child and
/// of the daemon, garbage in each file, and SIGHUP of lk-backend onto a
/// tampered then restored `backend.env`, while a sampler asks health and,
/// whenever it says ready and no action is in flight, validates a fresh
/// token. Zero ready-but-401 samples.
#[test]
fn chaos_never_yields_a_ready_health_whose_token_is_refused() {
    let seconds: u64 = std::env::var("CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(45);
    let root = Root::new();
    let opts = || {
        let mut o = DaemonOpts::double().drift_check_ms(500);
        o.env.push(("HERO_LIVEKIT_TOKEN_PROBE_MS".into(), "200".into()));
        o
    };
    let mut d = running(&root, opts());
    let p = ports(&d);
    // An action is "in flight" from just before it until health has had a
    // probe period plus a margin to see it (a backend that re-read a wrong
    // file is caught within one probe period: that window is the contract).
    let settle = Duration::from_millis(600);
    let quiet_since = std::sync::Arc::new(std::sync::Mutex::new(Instant::now()));
    let in_flight = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let socket = d.socket.clone();
    let sampler = {
        let (quiet_since, in_flight, stop) = (quiet_since.clone(), in_flight.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut samples, mut ready, mut refused_while_ready) = (0u64, 0u64, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let quiet = |q: &std::sync::Mutex<Instant>| {
                    in_flight.load(std::sync::atomic::Ordering::SeqCst) == 0
                        && q.lock().map(|t| t.elapsed() >= settle).unwrap_or(false)
                };
                if !quiet(&quiet_since) {
                    std::thread::park_timeout(Duration::from_millis(5));
                    continue;
                }
                let Some(h) = try_health(&socket) else { continue };
                samples += 1;
                if h["ready_for_tokens"] != true {
                    continue;
                }
                let Ok(r) =
                    hero_livekit_tests::observe::post_token(p.backend, &json!({"room": "r1", "identity": "sampler"}))
                else {
                    continue;
                };
                let Some(token) = r.json()["token"].as_str().map(str::to_string) else {
                    continue;
                };
                let Ok(v) = hero_livekit_tests::observe::http(
                    p.livekit,
                    "GET",
                    &format!("/rtc/validate?access_token={token}"),
                    None,
                ) else {
                    continue;
                };
                // Only a sample taken wholly inside a quiet window counts.
                if !quiet(&quiet_since) {
                    continue;
                }
                ready += 1;
                if v.status == 401 {
                    refused_while_ready.push(String::from_utf8_lossy(&v.body).to_string());
                }
            }
            (samples, ready, refused_while_ready)
        })
    };

    let mark = |on: bool| {
        if on {
            in_flight.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        } else {
            if let Ok(mut t) = quiet_since.lock() {
                *t = Instant::now();
            }
            in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    };
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut actions = 0u32;
    let mut rng = rand::rng();
    while Instant::now() < deadline {
        mark(true);
        let h = d.health();
        match rng.random_range(0..7) {
            0 => call_and_hang_up(
                &d.socket,
                "livekitservice.configure",
                json!({"api_secret": fresh_secret()}),
                random_cut(),
            ),
            1 => {
                d.ok("livekitservice.configure", json!({"api_secret": fresh_secret()}));
            }
            2 => {
                if let Some(pid) = pid_in(&h, LK) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            3 => {
                if let Some(pid) = pid_in(&h, BE) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            4 => {
                d.kill9();
                let old = std::mem::replace(&mut d, Daemon::start(&root, opts()));
                // Dropping a harness daemon kills the recorded children,
                // which the new daemon has just adopted: not this blow.
                std::mem::forget(old);
            }
            5 => {
                let file = ["runtime.json", "livekit.yaml", "backend.env"][rng.random_range(0..3)];
                let garbage: Vec<u8> = (0..rng.random_range(0..200)).map(|_| rng.random()).collect();
                let _ = std::fs::write(root.file(file), garbage);
            }
            _ => {
                let env_path = root.file("backend.env");
                if let (Ok(good), Some(pid)) = (std::fs::read(&env_path), pid_in(&h, BE)) {
                    let text = String::from_utf8_lossy(&good).to_string();
                    if let Some(line) = text.lines().find(|l| l.starts_with("LIVEKIT_API_SECRET=")) {
                        let tampered = text.replace(line, &format!("LIVEKIT_API_SECRET=\"{}\"", fresh_secret()));
                        let log = root.file("logs/lk-backend.log");
                        let reloads = || std::fs::read_to_string(&log).map_or(0, |l| l.matches("SIGHUP:").count());
                        let seen = reloads();
                        let _ = std::fs::write(&env_path, tampered);
                        let _ = kill(Pid::from_raw(pid), Signal::SIGHUP);
                        let _ = hero_livekit_tests::observe::poll(Duration::from_secs(5), || {
                            (reloads() > seen).then_some(())
                        });
                        let _ = std::fs::write(&env_path, good);
                    }
                }
            }
        }
        actions += 1;
        // Let the system converge before the next blow, so the sampler gets
        // quiet windows to judge.
        let _ = hero_livekit_tests::observe::poll(WAIT, || (d.health()["ready_for_tokens"] == true).then_some(()));
        mark(false);
        // A quiet window for the sampler to judge, not a wait for an event.
        std::thread::sleep(settle * 2);
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (samples, ready, refused) = sampler.join().expect("sampler");
    println!(
        "chaos: {seconds} s, {actions} actions, {samples} health samples, {ready} ready samples validated, {} ready-but-401",
        refused.len()
    );
    assert!(ready > 0, "the sampler judged no ready state at all");
    assert!(
        refused.is_empty(),
        "health said ready while livekit-server refused lk-backend's token: {refused:?}"
    );
    wait_ready_for_tokens(&d, WAIT);
    assert_tokens_work(p, "after the chaos");
}

/// How many token-chain probes found the token refused, from `/metrics`.
fn refused_probes(d: &Daemon) -> u64 {
    let text = String::from_utf8_lossy(&get(&d.socket, "/metrics").body).into_owned();
    text.lines()
        .find(|l| l.starts_with("hero_livekit_token_chain_probes_total{") && l.contains("result=\"refused\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok())
        .map_or(0, |n| n as u64)
}

#[test]
fn tokens_refused_for_a_reason_no_restart_cures_back_off_instead_of_looping() {
    let root = Root::new();
    // livekit-server serves with another secret than the one its file (and
    // every other file) holds: every token gets 401 and no restart helps.
    let other_keys = root.path().join("other-keys.yaml");
    let wrapper = root.path().join("livekit-server-other-keys");
    let d = Daemon::start(
        &root,
        DaemonOpts::default()
            .arg("--livekit-bin")
            .arg(wrapper.display().to_string()),
    );
    configure_free_ports(&d);
    let (_, secret) = env_credential(&root.file("backend.env"));
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/bash\nargs=()\nwhile [ $# -gt 0 ]; do\n  if [ \"$1\" = --config ]; then\n    sed 's|{secret}|{other}|' \"$2\" > '{yaml}'\n    args+=(--config '{yaml}'); shift 2\n  else\n    args+=(\"$1\"); shift\n  fi\ndone\nexec '{double}' \"${{args[@]}}\"\n",
            other = fresh_secret(),
            yaml = other_keys.display(),
            double = bin("livekit-server-double").display(),
        ),
    )
    .expect("write the wrapper");
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let r = d.ok("livekitservice.start", json!({"timeout_ms": 30000}));
    assert_eq!(r["ready_for_tokens"], false, "{r}");
    wait_for(WAIT, "the first refusal", || (refused_probes(&d) > 0).then_some(()));

    // Cost is counted in work, not in wall-clock CPU: probes of the chain
    // (each one three loopback requests and, on failure, a reconcile pass)
    // over a window. Backing off from 1 s doubling, a 7 s window holds at
    // most the attempts at +1, +2, +4 s and the reprobe after the one
    // lk-backend restart; a busy loop holds hundreds.
    let (probes0, cpu0, t0) = (refused_probes(&d), cpu_ticks(d.pid()), Instant::now());
    std::thread::sleep(Duration::from_secs(7));
    let (probes, cpu, took) = (refused_probes(&d) - probes0, cpu_ticks(d.pid()) - cpu0, t0.elapsed());
    eprintln!("{probes} refused probes and {cpu} CPU ticks in {took:?}");
    assert!(
        probes <= 8,
        "{probes} refused probes in {took:?}: the failure does not back off"
    );
    let h = d.health();
    let be = &h["processes"][BE];
    assert!(
        be["restarts"].as_u64().is_some_and(|n| n <= 1),
        "lk-backend restarted at most once for it: {h}"
    );
    let error = h["token_chain"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("401") && error.contains("next try in") && error.contains("attempt"),
        "health says what was tried and when the next try is: {error}"
    );
    assert!(!error.contains(&secret), "never a secret: {error}");
}
