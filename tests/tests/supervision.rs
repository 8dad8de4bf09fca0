//! Child supervision end to end (SPEC section 8): the real daemon, the
//! livekit-server test double and the real lk-backend, observed from outside
//! through their own ports and `/proc`, not only through `health`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hero_livekit_proto::{Event, ProcessName, ProcessState};
use hero_livekit_tests::observe::{
    alive, backend_token, clear_behaviour, environ, pid_in, poll, ports, set_behaviour, stamp, stat_fields, status,
    validate, wait_ready_for_tokens, Ports,
};
use hero_livekit_tests::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

/// Bound on every wait for something the daemon does on its own.
const WAIT: Duration = Duration::from_secs(60);
const LK: &str = "livekit-server";
const BE: &str = "lk-backend";

/// A daemon on `root` with the double, configured on free ports.
fn configured(root: &Root, opts: DaemonOpts) -> Daemon {
    let d = Daemon::start(root, opts);
    configure_free_ports(&d);
    d
}

fn start(d: &Daemon) -> Value {
    d.ok("livekitservice.start", json!({"timeout_ms": 30000}))
}

/// The error object of a call that must fail.
fn error_of(r: &Value) -> Value {
    assert!(r.get("result").is_none(), "expected an error, got {r}");
    r["error"].clone()
}

fn sigkill(pid: i32) {
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("SIGKILL a child");
}

fn pids(h: &Value) -> (i32, i32) {
    (
        pid_in(h, LK).unwrap_or_else(|| panic!("no livekit-server pid: {h}")),
        pid_in(h, BE).unwrap_or_else(|| panic!("no lk-backend pid: {h}")),
    )
}

/// Waits until `health` shows `process` running with a pid other than `old`.
fn wait_replaced(d: &Daemon, process: &str, old: i32) -> Value {
    let mut last = Value::Null;
    poll(WAIT, || {
        last = d.health();
        let p = &last["processes"][process];
        (p["state"] == "running" && pid_in(&last, process).is_some_and(|pid| pid != old)).then(|| last.clone())
    })
    .unwrap_or_else(|| panic!("{process} (was pid {old}) not running again within {WAIT:?}: {last}"))
}

fn wait_gone(pid: i32, what: &str) {
    wait_for(WAIT, &format!("{what} (pid {pid}) to be gone"), || {
        (!alive(pid)).then_some(())
    });
}

fn assert_serving(p: Ports, what: &str) {
    assert_eq!(status(p.livekit, "/"), Some(200), "livekit-server serves / {what}");
    assert_eq!(
        status(p.backend, "/health"),
        Some(200),
        "lk-backend serves /health {what}"
    );
}

/// Both children answer and a token from lk-backend is accepted by
/// livekit-server: the only proof that they share one credential.
fn assert_tokens_work(p: Ports) {
    let token = backend_token(p.backend);
    assert_eq!(
        validate(p.livekit, &token),
        (200, "success".to_string()),
        "livekit-server accepts lk-backend's token"
    );
}

#[test]
fn start_brings_both_children_to_ready_in_their_own_sessions() {
    let root = Root::new();
    let d = configured(&root, DaemonOpts::double());
    let p = ports(&d);
    assert_eq!(status(p.livekit, "/"), None, "nothing listens before start");

    let r = start(&d);
    assert_eq!(r["processes"][LK], "started", "{r}");
    assert_eq!(r["processes"][BE], "started", "{r}");
    assert_eq!(r["ready_for_tokens"], true, "{r}");

    let h = d.health();
    assert_eq!(h["ready_for_tokens"], true, "{h}");
    assert_eq!(h["status"], "ok", "{h}");
    for name in [LK, BE] {
        let ph = &h["processes"][name];
        assert_eq!(ph["state"], "running", "{name}: {h}");
        assert_eq!(ph["ready"], true, "{name}: {h}");
        let pid = pid_in(&h, name).expect("pid");
        let f = stat_fields(pid).expect("child alive");
        // Own process group and session: signals aimed at the daemon's
        // group never reach it, and `stop` can signal its whole group.
        assert_eq!(f[2], pid.to_string(), "{name} leads its process group");
        assert_eq!(f[3], pid.to_string(), "{name} leads its session");
        assert_eq!(f[1], d.pid().to_string(), "{name} is the daemon's child");
    }
    assert_eq!(
        h["processes"][LK]["config_sha256"],
        sha256_file(&root.file("livekit.yaml")),
        "livekit-server runs the livekit.yaml on disk"
    );
    assert_serving(p, "after start");
    assert_tokens_work(p);
    assert!(
        root.state().join("logs/livekit-server.log").is_file() && root.state().join("logs/lk-backend.log").is_file(),
        "each child's output goes to logs/<name>.log"
    );
}

#[test]
fn second_start_on_a_healthy_service_changes_nothing() {
    let root = Root::new();
    let d = configured(&root, DaemonOpts::double());
    start(&d);
    let before = d.health();
    let files: Vec<PathBuf> = hero_livekit_proto::TRIPLE_FILES
        .iter()
        .map(|f| root.file(f))
        .chain([LK, BE].map(|n| root.state().join(format!("children/{n}.json"))))
        .collect();
    let stamps: Vec<_> = files.iter().map(|f| stamp(f)).collect();

    let r = start(&d);
    assert_eq!(r["processes"][LK], "already_running", "{r}");
    assert_eq!(r["processes"][BE], "already_running", "{r}");
    assert_eq!(r["heal"]["written"], json!([]), "{r}");
    assert_eq!(r["heal"]["restarted"], json!([]), "{r}");
    assert_eq!(r["ready_for_tokens"], true, "{r}");

    let after = d.health();
    assert_eq!(pids(&after), pids(&before), "same processes");
    for name in [LK, BE] {
        assert_eq!(
            after["processes"][name]["restarts"], before["processes"][name]["restarts"],
            "{name}: no restart counted"
        );
    }
    for (f, s) in files.iter().zip(&stamps) {
        assert_eq!(&stamp(f), s, "{} untouched (mtime, inode)", f.display());
    }
}

#[test]
fn children_get_a_scrubbed_environment_even_when_the_daemon_has_livekit_variables() {
    let root = Root::new();
    let env_dump = root.path().join("livekit-child-env.txt");
    let wrapper = root.path().join("livekit-wrapper.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nenv > '{}'\nexec '{}' \"$@\"\n",
            env_dump.display(),
            bin("livekit-server-double").display()
        ),
    )
    .expect("write wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod wrapper");
    let evil_secret = "secretsecretsecretsecretsecretsecret";
    let d = configured(
        &root,
        DaemonOpts {
            extra_args: vec!["--livekit-bin".into(), wrapper.display().to_string()],
            env: vec![
                ("LIVEKIT_KEYS".into(), format!("evil: {evil_secret}")),
                ("LIVEKIT_API_KEY".into(), "evil".into()),
                ("LIVEKIT_API_SECRET".into(), evil_secret.into()),
                ("LIVEKIT_URL".into(), "ws://evil.example:1".into()),
                ("LIVEKIT_PORT".into(), "1".into()),
            ],
            with_double: false,
        },
    );
    // The test means something only if the daemon itself holds them.
    assert!(
        environ(d.pid()).iter().any(|e| e.starts_with("LIVEKIT_KEYS=evil")),
        "the daemon's environment has LIVEKIT_KEYS"
    );
    let p = ports(&d);
    start(&d);
    let h = d.health();

    let dumped = std::fs::read_to_string(&env_dump).expect("the wrapper ran and dumped its environment");
    assert!(dumped.lines().any(|l| l.starts_with("PATH=")), "a real dump: {dumped}");
    let leaked: Vec<&str> = dumped.lines().filter(|l| l.starts_with("LIVEKIT_")).collect();
    assert!(
        leaked.is_empty(),
        "LIVEKIT_ variables reached livekit-server: {leaked:?}"
    );
    let backend_env = environ(pid_in(&h, BE).expect("lk-backend pid"));
    let leaked: Vec<&String> = backend_env.iter().filter(|l| l.starts_with("LIVEKIT_")).collect();
    assert!(leaked.is_empty(), "LIVEKIT_ variables reached lk-backend: {leaked:?}");
    assert!(!dumped.contains(evil_secret));
    assert_tokens_work(p);
}

#[test]
fn stop_sends_sigterm_then_sigkill_after_timeout_ms() {
    let root = Root::new();
    let d = configured(&root, DaemonOpts::double());
    let p = ports(&d);
    set_behaviour(&root, &json!({"ignore_sigterm": true}));
    start(&d);
    let (lk, be) = pids(&d.health());

    let t0 = Instant::now();
    let r = d.ok("livekitservice.stop", json!({"timeout_ms": 300}));
    let took = t0.elapsed();
    assert_eq!(r["killed"], json!([LK]), "only livekit-server ignored SIGTERM: {r}");
    let stopped = r["stopped"].as_array().expect("stopped");
    assert!(stopped.contains(&json!(LK)) && stopped.contains(&json!(BE)), "{r}");
    assert!(
        took >= Duration::from_millis(300),
        "SIGKILL only after timeout_ms ({took:?})"
    );
    wait_gone(lk, LK);
    wait_gone(be, BE);
    let log = std::fs::read_to_string(root.state().join("logs/livekit-server.log")).expect("log");
    assert!(
        log.contains("ignoring signal as double-behaviour.json asks"),
        "SIGTERM came first: {log}"
    );
    let h = d.health();
    for name in [LK, BE] {
        assert_eq!(h["processes"][name]["state"], "stopped", "{h}");
        assert_eq!(h["processes"][name]["pid"], Value::Null, "{h}");
    }
    let ended = |name: &str| {
        h["processes"][name]["last_exit"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        ended(LK).contains("killed with SIGKILL at the drain deadline (300 ms)"),
        "health says how livekit-server ended: {h}"
    );
    assert!(ended(BE).contains("exited on SIGTERM"), "and lk-backend: {h}");
    assert_eq!(status(p.livekit, "/"), None, "nothing answers after stop");
    assert!(
        !root.state().join("children/livekit-server.json").exists(),
        "no record of a stopped child"
    );
}

#[test]
fn the_operators_drain_deadline_bounds_stop_and_restart_when_a_call_gives_none() {
    let root = Root::new();
    let d = configured(&root, DaemonOpts::double().env_var("HERO_LIVEKIT_STOP_TIMEOUT_MS", 400));
    set_behaviour(&root, &json!({"ignore_sigterm": true}));
    start(&d);
    let (lk, _) = pids(&d.health());

    d.ok("livekitservice.restart", json!({"process": LK}));
    wait_gone(lk, LK);
    let h = d.health();
    let ended = h["processes"][LK]["last_exit"].as_str().unwrap_or_default();
    assert!(
        ended.contains("killed with SIGKILL at the drain deadline (400 ms)") && ended.contains("restart"),
        "the restart drained until the deadline, then killed: {h}"
    );

    let t0 = Instant::now();
    let r = d.ok("livekitservice.stop", json!({}));
    let took = t0.elapsed();
    assert_eq!(r["killed"], json!([LK]), "{r}");
    assert!(
        took >= Duration::from_millis(400),
        "SIGKILL only at the deadline ({took:?})"
    );
    assert!(
        took < Duration::from_secs(10),
        "the operator's deadline, not the built-in 10 s ({took:?})"
    );
}

/// The drain deadline per call (`restart`'s `drain_timeout_ms`, `stop`'s
/// `timeout_ms` or `drain_timeout_ms`), else the daemon's
/// `--stop-timeout-ms`, which beats the environment.
#[test]
fn a_calls_drain_deadline_beats_the_daemons_flag_which_beats_its_env() {
    let root = Root::new();
    let opts = DaemonOpts::double()
        .env_var("HERO_LIVEKIT_STOP_TIMEOUT_MS", 5000)
        .arg("--stop-timeout-ms")
        .arg("400");
    let d = configured(&root, opts);
    set_behaviour(&root, &json!({"ignore_sigterm": true}));
    start(&d);
    let last_exit = |d: &Daemon| {
        d.health()["processes"][LK]["last_exit"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };

    let r = d.ok(
        "livekitservice.restart",
        json!({"process": LK, "drain_timeout_ms": 250}),
    );
    assert_eq!(r["killed"], json!([LK]), "restart says it killed at the deadline: {r}");
    let ended = last_exit(&d);
    assert!(ended.contains("at the drain deadline (250 ms) (restart)"), "{ended}");

    let r = d.ok("livekitservice.restart", json!({"process": BE}));
    assert_eq!(r["killed"], json!([]), "lk-backend exits on SIGTERM: {r}");
    let r = d.ok("livekitservice.restart", json!({"process": LK}));
    assert_eq!(r["killed"], json!([LK]), "{r}");
    let ended = last_exit(&d);
    assert!(ended.contains("(400 ms) (restart)"), "the flag, not the env: {ended}");

    let r = d.call(
        "livekitservice.stop",
        json!({"timeout_ms": 300, "drain_timeout_ms": 200}),
    );
    assert!(
        r["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("drain_timeout_ms")),
        "two different deadlines are refused: {r}"
    );
    assert_eq!(d.health()["processes"][LK]["state"], "running", "and nothing stopped");
    let r = d.ok("livekitservice.stop", json!({"drain_timeout_ms": 300}));
    assert_eq!(r["killed"], json!([LK]), "{r}");
    let ended = last_exit(&d);
    assert!(ended.contains("(300 ms) (stop)"), "{ended}");
}

#[test]
fn restart_replaces_one_child_or_both() {
    let root = Root::new();
    let d = configured(&root, DaemonOpts::double());
    let p = ports(&d);
    start(&d);
    let (lk0, be0) = pids(&d.health());

    let r = d.ok("livekitservice.restart", json!({"process": BE}));
    assert_eq!(r["restarted"], json!([BE]), "{r}");
    let h = d.health();
    let (lk1, be1) = pids(&h);
    assert_eq!(lk1, lk0, "livekit-server untouched");
    assert_ne!(be1, be0, "lk-backend is a new process");
    assert!(!alive(be0), "the old lk-backend is gone");
    assert_eq!(h["processes"][BE]["restarts"], 1, "{h}");
    assert_eq!(h["ready_for_tokens"], true, "ready again when restart returns: {h}");

    let r = d.ok("livekitservice.restart", json!({}));
    let restarted = r["restarted"].as_array().expect("restarted");
    assert!(restarted.contains(&json!(LK)) && restarted.contains(&json!(BE)), "{r}");
    let h = d.health();
    let (lk2, be2) = pids(&h);
    assert_ne!(lk2, lk1);
    assert_ne!(be2, be1);
    assert!(!alive(lk1) && !alive(be1), "old processes are gone");
    assert_eq!(h["ready_for_tokens"], true, "{h}");
    assert_serving(p, "after restart");
    assert_tokens_work(p);
}

#[test]
fn logs_return_the_childs_own_output_and_check_the_lines_bound() {
    let root = Root::new();
    let d = configured(&root, DaemonOpts::double());
    start(&d);

    let r = d.ok("livekitservice.logs", json!({"process": LK, "lines": 50}));
    let lines: Vec<&str> = r["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        lines.iter().any(|l| l.contains("starting LiveKit server")),
        "the double's startup line: {lines:?}"
    );
    assert!(lines.len() <= 50);
    assert!(
        r["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("logs/livekit-server.log")),
        "{r}"
    );
    let one = d.ok("livekitservice.logs", json!({"process": LK, "lines": 1}));
    assert_eq!(one["lines"].as_array().map(Vec::len), Some(1), "{one}");
    assert_eq!(
        one["lines"][0],
        json!(lines.last().expect("some line")),
        "the last line"
    );

    for bad in [0, 10_001] {
        let e = error_of(&d.call("livekitservice.logs", json!({"process": LK, "lines": bad})));
        assert_eq!(e["code"], -32602, "lines {bad}: {e}");
        assert_eq!(e["data"]["field"], "lines", "lines {bad}: {e}");
        assert!(e["message"].as_str().is_some_and(|m| m.contains("lines")), "{e}");
    }
    let ok = d.ok("livekitservice.logs", json!({"process": BE, "lines": 10_000}));
    assert!(ok["lines"].is_array(), "10000 is within the bound");
}

#[test]
fn events_show_start_states_and_a_restart_after_a_crash() {
    let root = Root::new();
    let d = configured(&root, DaemonOpts::double());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = hero_livekit_client::Client::new(&d.socket);
        let mut events = client.subscribe_events().await.expect("subscribe");
        client
            .start(&hero_livekit_proto::StartParams::default())
            .await
            .expect("start");
        // Each child: `starting` (with its pid), then `running`, in order.
        let mut seen: Vec<(ProcessName, ProcessState)> = Vec::new();
        let want = |seen: &[(ProcessName, ProcessState)], n: ProcessName| {
            let states: Vec<ProcessState> = seen.iter().filter(|(p, _)| *p == n).map(|(_, s)| *s).collect();
            states == [ProcessState::Starting, ProcessState::Running]
        };
        while !(want(&seen, ProcessName::LivekitServer) && want(&seen, ProcessName::LkBackend)) {
            let ev = tokio::time::timeout(WAIT, events.next())
                .await
                .unwrap_or_else(|_| panic!("state events within {WAIT:?}; seen {seen:?}"))
                .expect("stream open");
            if let Event::State {
                process, state, pid, ..
            } = ev.event
            {
                if state == ProcessState::Starting {
                    assert!(pid.is_some(), "a starting child has a pid");
                }
                seen.push((process, state));
                assert!(seen.len() <= 4, "only starting then running per child: {seen:?}");
            }
        }

        let old = client.health().await.expect("health").processes[LK].pid.expect("pid");
        sigkill(old as i32);
        let mut restarted = false;
        let mut running_again = None;
        while running_again.is_none() {
            let ev = tokio::time::timeout(WAIT, events.next())
                .await
                .unwrap_or_else(|_| panic!("restart events within {WAIT:?}"))
                .expect("stream open");
            match ev.event {
                Event::Restarted {
                    process: ProcessName::LivekitServer,
                    reason,
                } => {
                    assert!(reason.contains("crashed"), "{reason}");
                    restarted = true;
                }
                Event::State {
                    process: ProcessName::LivekitServer,
                    state: ProcessState::Running,
                    pid,
                    ..
                } => running_again = pid,
                _ => {}
            }
        }
        assert!(restarted, "a `restarted` event precedes the new process");
        assert_ne!(running_again, Some(old), "a new process");
    });
    // No RPC but `health`: the supervisor brought it back on its own.
    let h = wait_ready_for_tokens(&d, WAIT);
    assert_eq!(h["processes"][LK]["restarts"], 1, "{h}");
    assert_tokens_work(ports(&d));
}

/// Children of a daemon that ended keep serving; a new daemon adopts them
/// (same pids) and supervises them: a crash of the adopted livekit-server is
/// restarted.
fn adopted_after_daemon_end(end: impl FnOnce(&mut Daemon)) {
    let root = Root::new();
    let mut d = configured(&root, DaemonOpts::double());
    let p = ports(&d);
    start(&d);
    let (lk, be) = pids(&d.health());

    end(&mut d);
    assert!(alive(lk) && alive(be), "children outlive the daemon");
    assert_serving(p, "while no daemon runs");
    assert_tokens_work(p);

    let d2 = Daemon::start(&root, DaemonOpts::double());
    let h = wait_ready_for_tokens(&d2, WAIT);
    assert_eq!(pids(&h), (lk, be), "adopted, not restarted: {h}");
    for name in [LK, BE] {
        assert_eq!(h["processes"][name]["adopted"], true, "{name}: {h}");
    }
    sigkill(lk);
    let h = wait_replaced(&d2, LK, lk);
    assert_eq!(
        h["processes"][LK]["adopted"], false,
        "a process of this daemon now: {h}"
    );
    assert_eq!(pid_in(&h, BE), Some(be), "lk-backend untouched");
    wait_ready_for_tokens(&d2, WAIT);
    assert_tokens_work(p);
    drop(d);
}

#[test]
fn children_outlive_a_daemon_ended_by_sigterm_and_are_adopted() {
    adopted_after_daemon_end(|d| {
        d.signal(Signal::SIGTERM);
        let s = d.wait_exit(WAIT);
        assert!(s.success(), "clean exit: {s}");
    });
}

#[test]
fn children_outlive_a_daemon_killed_by_sigkill_and_are_adopted() {
    adopted_after_daemon_end(Daemon::kill9);
}

#[test]
fn a_child_whose_binary_file_was_replaced_is_still_adopted() {
    let root = Root::new();
    let bin_dir = root.path().join("bin");
    std::fs::create_dir_all(&bin_dir).expect("mkdir bin");
    let lk_bin = bin_dir.join("livekit-server");
    let copy_double = |to: &Path| {
        std::fs::copy(bin("livekit-server-double"), to).expect("copy the double");
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    };
    copy_double(&lk_bin);
    let opts = DaemonOpts {
        extra_args: vec!["--livekit-bin".into(), lk_bin.display().to_string()],
        ..Default::default()
    };
    let mut d = configured(&root, opts.clone());
    let p = ports(&d);
    start(&d);
    let (lk, _) = pids(&d.health());
    let old_ino = std::fs::metadata(&lk_bin).expect("stat").ino();

    // What `install` does: a new file renamed over the old name.
    let tmp = bin_dir.join(".livekit-server.new");
    copy_double(&tmp);
    std::fs::rename(&tmp, &lk_bin).expect("rename over the binary");
    let new_ino = std::fs::metadata(&lk_bin).expect("stat").ino();
    assert_ne!(new_ino, old_ino, "a new inode under the same name");

    d.kill9();
    let d2 = Daemon::start(&root, opts);
    // Adopted (verified by pid, start time and executable: the file now
    // under its name does not identify it), then replaced onto the binary
    // in place by the reconcile, without any call.
    let h = wait_for(WAIT, "livekit-server replaced onto the new binary and ready", || {
        let h = d2.health();
        (h["ready_for_tokens"] == true && pid_in(&h, LK).is_some_and(|p| p != lk)).then_some(h)
    });
    let stderr = d2.stderr();
    assert!(
        stderr.contains("process=livekit-server outcome=Adopted"),
        "the running child was adopted first: {stderr}"
    );
    wait_gone(lk, LK);
    assert_tokens_work(p);
    let r = start(&d2);
    assert_eq!(r["processes"][LK], "already_running", "{r}");
    let lk2 = pid_in(&h, LK).expect("pid");
    let exe = std::fs::metadata(format!("/proc/{lk2}/exe")).expect("exe").ino();
    assert_eq!(exe, new_ino, "runs the new binary");
    drop(d);
}

#[test]
fn a_binary_swapped_behind_the_daemons_back_is_run_after_the_next_tick() {
    let root = Root::new();
    let bin_dir = root.path().join("bin");
    std::fs::create_dir_all(&bin_dir).expect("mkdir bin");
    let lk_bin = bin_dir.join("livekit-server");
    let copy_double = |to: &Path| {
        std::fs::copy(bin("livekit-server-double"), to).expect("copy the double");
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    };
    copy_double(&lk_bin);
    // The trigger under test is the tick; no call is made after the swap.
    let opts = DaemonOpts {
        extra_args: vec!["--livekit-bin".into(), lk_bin.display().to_string()],
        ..Default::default()
    }
    .drift_check_ms(200);
    let d = configured(&root, opts);
    let p = ports(&d);
    start(&d);
    let (lk, be) = pids(&d.health());

    let tmp = bin_dir.join(".livekit-server.new");
    copy_double(&tmp);
    std::fs::rename(&tmp, &lk_bin).expect("rename over the binary");
    let new_ino = std::fs::metadata(&lk_bin).expect("stat").ino();

    let h = wait_for(WAIT, "livekit-server replaced onto the swapped binary", || {
        let h = d.health();
        (h["ready_for_tokens"] == true && pid_in(&h, LK).is_some_and(|p| p != lk)).then_some(h)
    });
    let lk2 = pid_in(&h, LK).expect("pid");
    let exe = std::fs::metadata(format!("/proc/{lk2}/exe")).expect("exe").ino();
    assert_eq!(exe, new_ino, "runs the binary now in place");
    assert_eq!(
        pid_in(&h, BE),
        Some(be),
        "lk-backend, whose binary did not change, kept"
    );
    assert_tokens_work(p);
}

#[test]
fn a_record_whose_pid_is_now_another_process_is_discarded_and_that_process_left_alone() {
    let root = Root::new();
    let mut d = configured(&root, DaemonOpts::double());
    let p = ports(&d);
    d.signal(Signal::SIGTERM);
    d.wait_exit(WAIT);

    let mut sleeper = Command::new("sleep").arg("60").spawn().expect("spawn sleep");
    let spid = sleeper.id() as i32;
    let fields = stat_fields(spid).expect("sleep runs");
    let start_time: u64 = fields[19].parse().expect("start time");
    let exe = std::fs::read_link(format!("/proc/{spid}/exe")).expect("exe");
    let meta = std::fs::metadata(format!("/proc/{spid}/exe")).expect("stat exe");
    // Right pid and executable, wrong start time: a reused pid.
    let record = json!({
        "name": LK,
        "pid": spid,
        "start_time": start_time + 1000,
        "exe": exe,
        "exe_dev": meta.dev(),
        "exe_ino": meta.ino(),
        "config_sha256": sha256_file(&root.file("livekit.yaml")),
        "started_unix_ms": 1_700_000_000_000u64,
        "ready_port": p.livekit,
    });
    let children = root.state().join("children");
    std::fs::create_dir_all(&children).expect("children dir");
    std::fs::write(children.join("livekit-server.json"), record.to_string()).expect("write record");

    let d2 = Daemon::start(&root, DaemonOpts::double());
    assert!(
        d2.stderr().contains("was reused"),
        "discarded for its start time: {}",
        d2.stderr()
    );
    // The daemon took the record's word that livekit-server was meant to
    // run, and starts a process of its own.
    let h = wait_replaced(&d2, LK, spid);
    assert_ne!(pid_in(&h, LK), Some(spid));
    assert!(alive(spid), "the unrelated process is alive");
    assert_ne!(stat_fields(spid).expect("alive")[0], "T", "and not stopped by a signal");
    assert!(sleeper.try_wait().expect("try_wait").is_none(), "sleep has not exited");
    let rec: Value = serde_json::from_slice(&std::fs::read(children.join("livekit-server.json")).expect("new record"))
        .expect("record JSON");
    assert_ne!(rec["pid"], json!(spid), "the stale record is gone: {rec}");
    sleeper.kill().expect("kill sleep");
    sleeper.wait().expect("reap sleep");
}

#[test]
fn stop_children_on_exit_makes_sigterm_stop_both_children() {
    let root = Root::new();
    let mut d = configured(
        &root,
        DaemonOpts {
            extra_args: vec!["--stop-children-on-exit".into()],
            with_double: true,
            ..Default::default()
        },
    );
    let p = ports(&d);
    start(&d);
    let (lk, be) = pids(&d.health());
    d.signal(Signal::SIGTERM);
    let s = d.wait_exit(WAIT);
    assert!(s.success(), "clean exit: {s}");
    assert!(!alive(lk), "livekit-server stopped with the daemon");
    assert!(!alive(be), "lk-backend stopped with the daemon");
    assert_eq!(status(p.livekit, "/"), None);
    assert_eq!(status(p.backend, "/health"), None);
    assert!(
        !root.state().join("children/livekit-server.json").exists()
            && !root.state().join("children/lk-backend.json").exists(),
        "no records left to adopt"
    );
}

#[test]
fn a_foreign_listener_on_the_livekit_port_is_a_port_conflict_naming_port_and_pid() {
    let root = Root::new();
    let d = configured(&root, DaemonOpts::double());
    let p = ports(&d);
    let squatter = Squatter::listen(p.livekit);

    let e = error_of(&d.call("livekitservice.start", json!({"timeout_ms": 20000})));
    assert_eq!(e["code"], -32005, "{e}");
    assert_eq!(e["data"]["kind"], "port_conflict", "{e}");
    let msg = e["message"].as_str().expect("message");
    let me = squatter.pid();
    assert!(msg.contains(&format!("port {}", p.livekit)), "names the port: {msg}");
    assert!(msg.contains(&format!("pid {me}")), "names the holder's pid: {msg}");

    let h = d.health();
    let conflict = h["processes"][LK]["port_conflict"].as_str().unwrap_or_default();
    assert!(
        conflict.contains(&p.livekit.to_string()) && conflict.contains(&me.to_string()),
        "health reports the conflict: {h}"
    );
    assert_eq!(h["processes"][LK]["pid"], Value::Null, "nothing spawned: {h}");
    assert_eq!(h["ready_for_tokens"], false);

    drop(squatter);
    let r = start(&d);
    assert_eq!(r["ready_for_tokens"], true, "{r}");
    let h = d.health();
    assert!(
        h["processes"][LK].get("port_conflict").is_none_or(Value::is_null),
        "{h}"
    );
}

#[test]
fn an_exit_during_startup_fails_start_even_with_exit_code_0() {
    let root = Root::new();
    let d = configured(&root, DaemonOpts::double());
    set_behaviour(&root, &json!({"exit_at_start": true, "exit_code": 0}));
    let e = error_of(&d.call("livekitservice.start", json!({"timeout_ms": 20000})));
    assert_eq!(e["code"], -32006, "{e}");
    let msg = e["message"].as_str().expect("message");
    assert!(msg.contains("livekit-server exited during startup"), "{msg}");
    assert!(
        msg.contains("exiting at start as double-behaviour.json asks"),
        "the log tail is in the message: {msg}"
    );
    let h = d.health();
    assert_eq!(h["processes"][LK]["state"], "failed", "{h}");
    assert!(h["processes"][LK]["last_exit"].is_string(), "{h}");
    assert_eq!(h["ready_for_tokens"], false);
}

/// The reconcile decides what follows an exit, and `stop` goes through it:
/// a child stopped while it backs off stays stopped past the instant its
/// backoff was due (the reconciler wakes then, and finds its target down).
#[test]
fn stop_during_a_backoff_leaves_the_child_stopped_past_its_due_instant() {
    let root = Root::new();
    let d = configured(&root, DaemonOpts::double());
    // Ready first, then a crash 0.3 s later, every run: the second crash
    // waits 0.5 s in backoff.
    set_behaviour(&root, &json!({"crash_after_ms": 300}));
    let r = start(&d);
    assert_eq!(r["processes"][LK], "started", "{r}");
    let mut last = Value::Null;
    poll(WAIT, || {
        last = d.health();
        (last["processes"][LK]["state"] == "backoff").then_some(())
    })
    .unwrap_or_else(|| panic!("no backoff within {WAIT:?}: {last}"));
    let r = d.ok("livekitservice.stop", json!({}));
    assert!(
        !r["stopped"].as_array().is_some_and(|s| s.iter().any(|p| p == LK)),
        "nothing of livekit-server ran: {r}"
    );
    let h = d.health();
    assert_eq!(h["processes"][LK]["state"], "stopped", "{h}");
    assert_eq!(h["processes"][LK]["pid"], Value::Null, "{h}");
    // Longer than any pause the policy had left (0.5 s, then 1 s).
    let woke = poll(Duration::from_secs(3), || {
        let h = d.health();
        (h["processes"][LK]["state"] != "stopped").then_some(h)
    });
    assert!(woke.is_none(), "a stopped child was started again: {woke:?}");
}

#[test]
fn a_crash_loop_backs_off_ends_in_failed_and_start_clears_it() {
    let root = Root::new();
    let d = configured(&root, DaemonOpts::double());
    // Ready first, then a crash a second later, every run.
    set_behaviour(&root, &json!({"crash_after_ms": 1000}));
    let r = start(&d);
    assert_eq!(r["processes"][LK], "started", "{r}");
    let t0 = Instant::now();

    let mut states = std::collections::BTreeSet::new();
    let mut last = Value::Null;
    let failed = poll(WAIT, || {
        last = d.health();
        let state = last["processes"][LK]["state"].as_str().unwrap_or("").to_string();
        states.insert(state.clone());
        (state == "failed").then(|| last.clone())
    })
    .unwrap_or_else(|| panic!("no crash loop detected within {WAIT:?}: {last}"));
    let took = t0.elapsed();
    assert!(
        states.contains("backoff"),
        "repeated crashes wait in backoff: {states:?}"
    );
    // Five failures: restarted at once, then after 0.5 s, 1 s and 2 s.
    assert!(took >= Duration::from_millis(3500), "backoff doubles ({took:?})");
    let lk = &failed["processes"][LK];
    assert!(lk["last_exit"].as_str().is_some_and(|s| !s.is_empty()), "{failed}");
    let tail = lk["log_tail"].as_array().expect("log_tail when failed");
    assert!(
        tail.iter().any(|l| l
            .as_str()
            .is_some_and(|l| l.contains("crashing as double-behaviour.json asks"))),
        "the child's own last words: {tail:?}"
    );
    assert!(lk["restarts"].as_u64().is_some_and(|n| n >= 4), "{failed}");
    assert_eq!(lk["pid"], Value::Null);
    assert_eq!(failed["ready_for_tokens"], false);
    assert_eq!(failed["processes"][BE]["state"], "running", "lk-backend unaffected");

    clear_behaviour(&root);
    let r = start(&d);
    assert_eq!(r["processes"][LK], "started", "{r}");
    let h = d.health();
    assert_eq!(h["processes"][LK]["state"], "running", "{h}");
    assert_eq!(h["ready_for_tokens"], true, "{h}");
    assert!(h["processes"][LK].get("log_tail").is_none_or(Value::is_null), "{h}");
}

#[test]
fn configure_restarts_exactly_the_children_whose_file_changed() {
    let root = Root::new();
    let d = configured(&root, DaemonOpts::double());
    start(&d);
    let (lk0, be0) = pids(&d.health());

    let backend_port = free_port();
    let r = d.ok("livekitservice.configure", json!({"backend_port": backend_port}));
    assert_eq!(r["heal"]["restarted"], json!([BE]), "{r}");
    let h = wait_ready_for_tokens(&d, WAIT);
    let (lk1, be1) = pids(&h);
    assert_eq!(lk1, lk0, "livekit-server untouched");
    assert_ne!(be1, be0, "lk-backend restarted");
    assert_eq!(ports(&d).backend, backend_port);
    assert_serving(ports(&d), "after a backend_port change");

    let port = free_port();
    let r = d.ok("livekitservice.configure", json!({"port": port}));
    let written = r["heal"]["written"].as_array().expect("written");
    assert!(
        written.contains(&json!("livekit.yaml")) && written.contains(&json!("backend.env")),
        "{r}"
    );
    let restarted = r["heal"]["restarted"].as_array().expect("restarted");
    assert_eq!(restarted.len(), 2, "{r}");
    assert!(restarted.contains(&json!(LK)) && restarted.contains(&json!(BE)), "{r}");
    let h = wait_ready_for_tokens(&d, WAIT);
    let (lk2, be2) = pids(&h);
    assert_ne!(lk2, lk1);
    assert_ne!(be2, be1);
    let p = ports(&d);
    assert_eq!(p.livekit, port);
    assert_serving(p, "after a port change");
    assert_tokens_work(p);

    let r = d.ok("livekitservice.configure", json!({}));
    assert_eq!(r["changed_fields"], json!([]), "{r}");
    assert_eq!(r["heal"]["written"], json!([]), "{r}");
    assert_eq!(r["heal"]["restarted"], json!([]), "{r}");
    assert_eq!(pids(&d.health()), (lk2, be2), "nothing restarted");
}

#[test]
fn restart_heals_a_drifted_file_first_and_its_reader_follows() {
    let root = Root::new();
    let d = configured(&root, DaemonOpts::double().no_drift_check());
    let p = ports(&d);
    start(&d);
    let (lk0, be0) = pids(&d.health());
    let env_path = root.file("backend.env");
    let good_env = std::fs::read(&env_path).expect("read backend.env");
    let yaml_path = root.file("livekit.yaml");
    let yaml_stamp = stamp(&yaml_path);

    // backend.env drifts by hand; then lk-backend alone is restarted. It
    // must come back on the rendering, not on the drifted secret.
    let drifted = String::from_utf8(good_env.clone())
        .expect("utf-8")
        .lines()
        .map(|l| {
            if l.starts_with("LIVEKIT_API_SECRET=") {
                "LIVEKIT_API_SECRET=DriftDriftDriftDriftDriftDriftDriftDriftDriftDrift".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    std::fs::write(&env_path, drifted).expect("write drifted backend.env");
    assert_eq!(d.health()["consistent"], false);

    let r = d.ok("livekitservice.restart", json!({"process": BE}));
    assert_eq!(r["heal"]["trigger"], "restart", "{r}");
    assert_eq!(r["heal"]["written"], json!(["backend.env"]), "{r}");
    assert_eq!(
        r["heal"]["restarted"],
        json!([]),
        "lk-backend is restarted once, as asked: {r}"
    );
    assert_eq!(r["restarted"], json!([BE]), "{r}");
    assert_eq!(
        std::fs::read(&env_path).expect("read"),
        good_env,
        "healed to the rendering"
    );
    assert_eq!(stamp(&yaml_path), yaml_stamp, "a consistent file is not touched");
    let h = d.health();
    let (lk1, be1) = pids(&h);
    assert_eq!(lk1, lk0, "livekit-server's file did not change: untouched");
    assert_ne!(be1, be0);
    assert_eq!(h["processes"][BE]["restarts"], 1, "one restart, not two: {h}");
    assert_eq!(h["ready_for_tokens"], true, "{h}");
    assert_tokens_work(p);

    // livekit.yaml drifts; a restart of lk-backend alone heals it.
    // livekit-server read its keys at startup, from the rendering, and
    // still runs them: it is not restarted for a drift it never read.
    let yaml = std::fs::read_to_string(&yaml_path).expect("read yaml");
    std::fs::write(
        &yaml_path,
        yaml.replace(
            "keys:\n",
            "keys:\n  APIdriftdrift1: DriftDriftDriftDriftDriftDriftDriftDriftDrift\n",
        ),
    )
    .expect("write drifted yaml");
    assert_eq!(d.health()["consistent"], false);
    let r = d.ok("livekitservice.restart", json!({"process": BE}));
    // Healed by this call, or by a reconcile queued before it (a probe
    // that ran during the first restart may have asked for one): either
    // way before the restart.
    assert!(
        [json!(["livekit.yaml"]), json!([])].contains(&r["heal"]["written"]),
        "{r}"
    );
    assert_eq!(std::fs::read(&yaml_path).expect("read"), yaml.as_bytes(), "healed");
    assert_eq!(r["heal"]["restarted"], json!([]), "{r}");
    assert_eq!(r["restarted"], json!([BE]), "{r}");
    let h = d.health();
    let (lk2, be2) = pids(&h);
    assert_eq!(lk2, lk1, "livekit-server runs the rendering already");
    assert_ne!(be2, be1);
    assert_eq!(h["consistent"], true, "{h}");
    assert_eq!(h["ready_for_tokens"], true, "{h}");
    assert_tokens_work(p);
}

#[test]
fn a_livekit_server_restarted_onto_a_drifted_yaml_is_caught_by_the_probe_and_repaired() {
    let root = Root::new();
    let d = configured(&root, DaemonOpts::double().no_drift_check());
    let p = ports(&d);
    start(&d);
    let yaml_path = root.file("livekit.yaml");
    let good_sha = sha256_file(&yaml_path);
    let lk0 = pid_in(&d.health(), LK).expect("pid");

    // Drift by hand: another secret for the same key.
    let yaml = std::fs::read_to_string(&yaml_path).expect("read yaml");
    let mut lines: Vec<String> = yaml.lines().map(str::to_string).collect();
    let keys_at = lines.iter().position(|l| l == "keys:").expect("a keys: section");
    let entry = &lines[keys_at + 1];
    let (key, _) = entry.split_once(": ").expect("key: secret");
    lines[keys_at + 1] = format!("{key}: \"DriftDriftDriftDriftDriftDriftDriftDriftDriftDrift\"");
    std::fs::write(&yaml_path, lines.join("\n") + "\n").expect("write drifted yaml");

    let h = d.health();
    assert_eq!(h["consistent"], false, "{h}");
    assert_eq!(h["ready_for_tokens"], false, "{h}");
    assert_eq!(h["files"]["livekit.yaml"]["matches"], false, "{h}");
    assert!(
        h["drift"]
            .as_array()
            .is_some_and(|d| d.iter().any(|s| s.as_str().is_some_and(|s| s.contains("livekit.yaml")))),
        "{h}"
    );
    assert_eq!(get(&d.socket, "/health").status, 503);

    // A crash now makes livekit-server read the drifted file on its
    // restart. The token-chain probe finds the refusal and the reconcile
    // repairs it without being asked: the file is healed and livekit-server
    // restarted onto it (the periodic drift check is off in this test).
    sigkill(lk0);
    let deadline = Instant::now() + WAIT;
    let h = loop {
        let h = d.health();
        // Until the daemon has seen the kill, health still shows the old
        // process, ready.
        if h["ready_for_tokens"] == true
            && h["processes"][LK]["config_sha256"] == good_sha
            && pid_in(&h, LK) != Some(lk0)
        {
            break h;
        }
        assert!(Instant::now() < deadline, "not repaired: {h}\n{}", d.stderr());
        std::thread::park_timeout(Duration::from_millis(20));
    };
    let lk2 = pid_in(&h, LK).expect("pid");
    assert_ne!(lk2, lk0);
    assert_eq!(sha256_file(&yaml_path), good_sha, "healed back to the rendering");
    let token = backend_token(p.backend);
    assert_eq!(validate(p.livekit, &token), (200, "success".to_string()));
    let r = start(&d);
    assert_eq!(r["processes"][LK], "already_running", "{r}");
    assert_eq!(r["ready_for_tokens"], true, "{r}");
}

#[test]
fn a_wrapper_script_as_livekit_bin_is_supervised_like_the_binary() {
    let root = Root::new();
    let wrapper = root.path().join("livekit-wrapper.sh");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec '{}' \"$@\"\n", bin("livekit-server-double").display()),
    )
    .expect("write wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod wrapper");
    let opts = DaemonOpts {
        extra_args: vec!["--livekit-bin".into(), wrapper.display().to_string()],
        ..Default::default()
    };
    let mut d = configured(&root, opts.clone());
    start(&d);
    let (lk, _) = pids(&d.health());

    let r = start(&d);
    assert_eq!(r["processes"][LK], "already_running", "{r}");
    assert_eq!(pid_in(&d.health(), LK), Some(lk));

    d.kill9();
    let d2 = Daemon::start(&root, opts);
    let h = wait_ready_for_tokens(&d2, WAIT);
    assert_eq!(pid_in(&h, LK), Some(lk), "adopted: {h}\n{}", d2.stderr());
    assert_eq!(h["processes"][LK]["adopted"], true, "{h}");
    drop(d);
}
