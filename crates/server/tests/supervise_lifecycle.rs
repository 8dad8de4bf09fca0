//! Supervision of real child processes: start, readiness, idempotence,
//! startup failures, stop, port conflicts, crash recovery and crash loops.

mod supervise_common;

use std::time::{Duration, Instant, SystemTime};

use hero_livekit_proto::{ProcessName, ProcessState, StartOutcome};
use hero_livekit_server::supervise::{Child, ChildRecord, ChildSpec, Idle, Started, StopOutcome, SuperviseError};
use supervise_common::*;

const READY: Duration = Duration::from_secs(20);

#[tokio::test]
async fn start_spawns_and_waits_until_ready_then_a_second_start_touches_nothing() {
    let s = Scratch::new();
    let events = Events::default();
    let child = Child::new(ProcessName::LkBackend, s.options(&events));
    let port = free_port();
    let spec = s.spec(ProcessName::LkBackend, port, &[], "cfg-1");

    let t0 = Instant::now();
    assert_eq!(
        child.start(spec.clone(), READY).await.expect("start"),
        StartOutcome::Started
    );
    let start_overhead = overhead(&spec.log_path, SystemTime::now());
    println!(
        "start to ready {:?}, of which after the child listened {start_overhead:?}",
        t0.elapsed()
    );
    // How fast is for bench-supervise to measure against a baseline, not
    // for a test to time; printed for the curious.
    let h = child.health();
    assert_eq!(h.state, ProcessState::Running);
    assert!(h.ready);
    let pid = h.pid.expect("pid");
    assert!(alive(pid));
    assert_eq!(h.config_sha256.as_deref(), Some("cfg-1"));
    assert!(!h.adopted);
    // Ready means the child answers right now.
    let answer = std::net::TcpStream::connect(("127.0.0.1", port));
    assert!(answer.is_ok(), "child listens once start returned");

    // Its record is on disk and names this very process.
    let rec = ChildRecord::load(&s.children_dir(), ProcessName::LkBackend)
        .expect("load record")
        .expect("record written on spawn");
    assert_eq!(rec.pid, pid);
    assert_eq!(rec.start_time, start_time(pid));
    assert_eq!(rec.config_sha256, "cfg-1");

    // Own session and process group: the daemon's signals do not reach it.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat.rsplit_once(')').expect("comm").1.split_whitespace().collect();
    assert_eq!(fields[2], pid.to_string(), "process group id is its pid");
    assert_eq!(fields[3], pid.to_string(), "session id is its pid");

    assert_eq!(
        child.start(spec.clone(), READY).await.expect("second start"),
        StartOutcome::AlreadyRunning
    );
    assert_eq!(child.health().pid, Some(pid), "same process");
    assert_eq!(child.health().restarts, 0);

    let stopped = child.stop(Duration::from_secs(5)).await.expect("stop");
    assert_eq!(
        stopped,
        StopOutcome {
            was_running: true,
            killed: false
        }
    );
    assert!(!alive(pid));
    assert_eq!(child.health().state, ProcessState::Stopped);
    assert!(
        ChildRecord::load(&s.children_dir(), ProcessName::LkBackend)
            .expect("load")
            .is_none(),
        "deliberate stop removes the record"
    );
    assert_eq!(
        events.states(),
        vec![
            (ProcessState::Starting, Some(pid)),
            (ProcessState::Running, Some(pid)),
            (ProcessState::Stopped, None)
        ]
    );
}

#[tokio::test]
async fn start_leaves_a_running_child_alone_whatever_spec_it_is_given() {
    let s = Scratch::new();
    let events = Events::default();
    let child = Child::new(ProcessName::LivekitServer, s.options(&events));
    let port = free_port();
    let first = s.spec(ProcessName::LivekitServer, port, &[], "aaaaaaaaaaaaaaaa-old");
    child.start(first, READY).await.expect("start");
    let old_pid = child.health().pid.expect("pid");

    // Whether it runs the right config is the reconcile's question, which
    // asks `restart` when it does not: the task decides nothing.
    let second = s.spec(ProcessName::LivekitServer, port, &[], "bbbbbbbbbbbbbbbb-new");
    assert_eq!(
        child.start(second, READY).await.expect("start"),
        StartOutcome::AlreadyRunning
    );
    let h = child.health();
    assert_eq!(h.pid, Some(old_pid));
    assert_eq!(h.config_sha256.as_deref(), Some("aaaaaaaaaaaaaaaa-old"));
    assert_eq!(h.restarts, 0);
    assert!(events.restart_reasons().is_empty());
    child.stop(Duration::from_secs(5)).await.expect("stop");
}

#[tokio::test]
async fn restart_replaces_the_process_and_leaves_the_event_to_the_caller() {
    let s = Scratch::new();
    let events = Events::default();
    let child = Child::new(ProcessName::LkBackend, s.options(&events));
    let spec = s.spec(ProcessName::LkBackend, free_port(), &[], "c");
    assert_eq!(
        child
            .restart(spec.clone(), READY, None)
            .await
            .expect("restart of nothing"),
        Started {
            outcome: StartOutcome::Started,
            killed: false
        }
    );
    let old = child.health().pid.expect("pid");
    assert_eq!(
        child.restart(spec.clone(), READY, None).await.expect("restart"),
        Started {
            outcome: StartOutcome::Restarted,
            killed: false
        },
        "the fixture exits on SIGTERM"
    );
    let h = child.health();
    assert!(h.ready && h.pid != Some(old) && !alive(old));
    assert_eq!(h.restarts, 1);
    assert!(
        events.restart_reasons().is_empty(),
        "the caller reports asked-for restarts"
    );

    let mut wrong = spec;
    wrong.name = ProcessName::LivekitServer;
    let err = child.start(wrong, READY).await.expect_err("spec of the other child");
    assert!(matches!(err, SuperviseError::BadSpec { .. }), "{err:?}");
    assert_eq!(child.health().pid, h.pid, "a bad spec changes nothing");
    child.stop(Duration::from_secs(5)).await.expect("stop");
}

/// A child whose leader thread exits during startup while another thread
/// runs on (the state an exiting multi-threaded program passes through:
/// livekit-server is a Go program, the test double a tokio one): its
/// /proc/<pid>/exe is gone at once, but the process is not, and when the
/// last thread ends it, the start fails as an exit during startup with the
/// process's real status. Made deterministic: the leader exits alone (raw
/// `exit`, not `exit_group`) and a second thread ends the process 300 ms
/// later.
#[tokio::test]
async fn a_child_whose_leader_thread_exits_first_is_an_exit_during_startup() {
    const SCRIPT: &str = "import ctypes, os, threading, time\n\
SYS_EXIT = {'x86_64': 60, 'aarch64': 93}[os.uname().machine]\n\
def finish():\n    time.sleep(0.3)\n    os._exit(0)\n\
threading.Thread(target=finish).start()\n\
ctypes.CDLL(None).syscall(SYS_EXIT, 0)\n";
    let s = Scratch::new();
    let events = Events::default();
    let child = Child::new(ProcessName::LivekitServer, s.options(&events));
    let spec = ChildSpec {
        program: python(),
        args: vec!["-c".into(), SCRIPT.into()],
        ..s.spec(ProcessName::LivekitServer, free_port(), &[], "c")
    };
    match child.start(spec, READY).await {
        Err(SuperviseError::ExitedDuringStartup { status, .. }) => assert_eq!(status, "exited with code 0"),
        other => panic!("expected ExitedDuringStartup, got {other:?}"),
    }
    assert_eq!(child.health().state, ProcessState::Failed);
}

#[tokio::test]
async fn an_exit_during_startup_is_a_failure_even_with_code_0() {
    let s = Scratch::new();
    let events = Events::default();
    let child = Child::new(ProcessName::LivekitServer, s.options(&events));
    let spec = s.spec(ProcessName::LivekitServer, free_port(), &["--exit-at-start", "0"], "c");

    let err = child.start(spec, READY).await.expect_err("exit 0 during startup fails");
    match &err {
        SuperviseError::ExitedDuringStartup { status, log_tail, .. } => {
            assert_eq!(status, "exited with code 0");
            assert!(
                log_tail.iter().any(|l| l.contains("could not parse config")),
                "log tail carries the child's own error: {log_tail:?}"
            );
        }
        other => panic!("expected ExitedDuringStartup, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("could not parse config") && msg.contains("start again"),
        "{msg}"
    );
    let h = child.health();
    assert_eq!(h.state, ProcessState::Failed);
    assert!(h.last_exit.as_deref().is_some_and(|e| e.contains("exited with code 0")));
    assert!(h
        .log_tail
        .is_some_and(|t| t.iter().any(|l| l.contains("could not parse config"))));
    assert!(ChildRecord::load(&s.children_dir(), ProcessName::LivekitServer)
        .expect("load")
        .is_none());
}

#[tokio::test]
async fn a_child_never_ready_is_stopped_and_reported_not_ready() {
    let s = Scratch::new();
    let events = Events::default();
    let child = Child::new(ProcessName::LkBackend, s.options(&events));
    let spec = s.spec(ProcessName::LkBackend, free_port(), &["--ready-delay-ms", "60000"], "c");
    let err = child
        .start(spec, Duration::from_millis(300))
        .await
        .expect_err("not ready");
    assert!(matches!(err, SuperviseError::NotReady { .. }), "{err:?}");
    let last_pid = events
        .states()
        .iter()
        .find_map(|(_, pid)| *pid)
        .expect("it was spawned");
    assert!(!alive(last_pid), "a child that is not ready in time is stopped");
    assert_eq!(child.health().state, ProcessState::Failed);
}

#[tokio::test]
async fn stop_escalates_to_sigkill_for_the_whole_group() {
    let s = Scratch::new();
    let events = Events::default();
    let child = Child::new(ProcessName::LivekitServer, s.options(&events));
    let gc_file = s.path().join("grandchild.pid");
    let gc_arg = gc_file.to_str().expect("utf8 path");
    let spec = s.spec(
        ProcessName::LivekitServer,
        free_port(),
        &["--ignore-term", "--grandchild-pid-file", gc_arg],
        "c",
    );
    child.start(spec, READY).await.expect("start");
    let pid = child.health().pid.expect("pid");
    let grandchild: u32 = std::fs::read_to_string(&gc_file)
        .expect("grandchild pid written before ready")
        .trim()
        .parse()
        .expect("pid");
    assert!(alive(grandchild));

    let grace = Duration::from_millis(300);
    let t0 = Instant::now();
    let outcome = child.stop(grace).await.expect("stop");
    let took = t0.elapsed();
    assert_eq!(
        outcome,
        StopOutcome {
            was_running: true,
            killed: true
        }
    );
    assert!(took >= grace, "SIGTERM grace honoured ({took:?})");
    assert!(!alive(pid), "leader killed");
    eventually(Duration::from_secs(5), "grandchild to die", || {
        (!alive(grandchild)).then_some(())
    })
    .await;
    assert!(child.health().last_exit.is_some_and(|e| e.contains("SIGKILL")));
}

#[tokio::test]
async fn a_foreign_port_holder_is_named_and_nothing_is_spawned() {
    let s = Scratch::new();
    let events = Events::default();
    let child = Child::new(ProcessName::LivekitServer, s.options(&events));
    let squatter = Squatter::listen(0);
    let port = squatter.port();
    let spec = s.spec(ProcessName::LivekitServer, port, &[], "c");

    let err = child.start(spec.clone(), READY).await.expect_err("port taken");
    match &err {
        SuperviseError::PortConflict { port: p, pid, .. } => {
            assert_eq!(*p, port);
            assert_eq!(*pid, Some(squatter.pid()));
        }
        other => panic!("expected PortConflict, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&port.to_string()) && msg.contains(&squatter.pid().to_string()));
    let h = child.health();
    assert_eq!(h.state, ProcessState::Stopped);
    assert!(h.port_conflict.is_some_and(|c| c.contains(&port.to_string())));
    assert!(!spec.log_path.exists(), "nothing was spawned");

    drop(squatter);
    assert_eq!(child.start(spec, READY).await.expect("start"), StartOutcome::Started);
    assert_eq!(child.health().port_conflict, None);
    child.stop(Duration::from_secs(5)).await.expect("stop");
}

#[tokio::test]
async fn a_crash_is_reported_and_not_restarted_by_the_task_itself() {
    let s = Scratch::new();
    let events = Events::default();
    let child = Child::new(ProcessName::LivekitServer, s.options(&events));
    let spec = s.spec(ProcessName::LivekitServer, free_port(), &[], "c");
    child.start(spec, READY).await.expect("start");
    let old = child.health().pid.expect("pid");
    kill(old, libc::SIGKILL);
    let idle = eventually(READY, "the exit reported", || child.idle()).await;
    match idle {
        Idle::Exited { reason, held_after } => {
            assert!(reason.contains("crashed") && reason.contains("SIGKILL"), "{reason}");
            assert_eq!(held_after, None, "no dependency to explain it");
        }
        other => panic!("expected Exited, got {other:?}"),
    }
    let failures = child.failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].ran_for > Duration::ZERO);
    let h = child.health();
    assert_eq!((h.pid, h.ready, h.restarts), (None, false, 0), "{h:?}");
    assert!(h.last_exit.is_some_and(|e| e.contains("SIGKILL")));
    assert!(
        events.restart_reasons().is_empty(),
        "the task restarts nothing on its own"
    );
    assert!(
        !events.states().iter().any(|(s, _)| *s == ProcessState::Backoff),
        "an exit awaiting a verdict makes no state event: {:?}",
        events.states()
    );
    child.stop(Duration::from_secs(5)).await.expect("stop");
    assert_eq!(child.idle(), None);
    assert_eq!(child.health().state, ProcessState::Stopped);
}

#[tokio::test]
async fn a_crash_after_a_healthy_run_is_recovered_at_once() {
    let s = Scratch::new();
    let events = Events::default();
    let child = Child::new(ProcessName::LivekitServer, s.options(&events));
    let spec = s.spec(ProcessName::LivekitServer, free_port(), &[], "c");
    let log = spec.log_path.clone();
    let _decider = Decider::new(&child, spec.clone(), &events);
    let t0 = Instant::now();
    child.start(spec, READY).await.expect("start");
    let own_time_to_ready = t0.elapsed();
    let old = child.health().pid.expect("pid");

    let crash = Instant::now();
    kill(old, libc::SIGKILL);
    let new = eventually(READY, "ready again under a new pid", || {
        let h = child.health();
        (h.ready && h.pid != Some(old)).then_some(h.pid)
    })
    .await
    .expect("pid");
    let crash_to_ready = crash.elapsed();
    let restart_overhead = overhead(&log, SystemTime::now());
    println!(
        "first start to ready {own_time_to_ready:?}; crash to ready again {crash_to_ready:?}, \
         of which after the new child listened {restart_overhead:?}"
    );
    assert!(alive(new));
    let h = child.health();
    assert_eq!(h.restarts, 1);
    assert!(h.last_exit.is_some_and(|e| e.contains("SIGKILL")));
    assert!(
        !events.states().iter().any(|(s, _)| *s == ProcessState::Backoff),
        "no backoff before the first restart: {:?}",
        events.states()
    );
    let reasons = events.restart_reasons();
    assert!(reasons.len() == 1 && reasons[0].contains("crashed"), "{reasons:?}");
    child.stop(Duration::from_secs(5)).await.expect("stop");
}

#[tokio::test]
async fn a_crash_loop_ends_in_failed_and_start_clears_it() {
    let s = Scratch::new();
    let events = Events::default();
    let mut opts = s.options(&events);
    opts.backoff = fast_backoff();
    let child = Child::new(ProcessName::LkBackend, opts);
    let port = free_port();
    let crashing = s.spec(ProcessName::LkBackend, port, &["--crash-after-ms", "300"], "c");
    let decider = Decider::new(&child, crashing.clone(), &events);
    child.start(crashing, READY).await.expect("first run gets ready");

    eventually(Duration::from_secs(60), "the crash loop to end in failed", || {
        (child.health().state == ProcessState::Failed).then_some(())
    })
    .await;
    let h = child.health();
    assert_eq!(h.pid, None);
    assert_eq!(h.last_exit.as_deref(), Some("exited with code 3"));
    let tail = h.log_tail.expect("log tail when failed");
    assert!(tail.iter().any(|l| l.contains("crashing on purpose")), "{tail:?}");
    assert_eq!(h.restarts, 4, "five failures: four restarts, then failed");
    let states = events.states();
    assert!(states.iter().any(|(s, _)| *s == ProcessState::Backoff), "{states:?}");
    drop(decider);

    let healthy = s.spec(ProcessName::LkBackend, port, &[], "c");
    assert_eq!(child.start(healthy, READY).await.expect("start"), StartOutcome::Started);
    let h = child.health();
    assert_eq!(h.state, ProcessState::Running);
    assert_eq!(h.log_tail, None);
    child.stop(Duration::from_secs(5)).await.expect("stop");
    assert_eq!(child.health().state, ProcessState::Stopped);
}

#[tokio::test]
async fn stop_of_a_child_in_backoff_leaves_it_stopped() {
    let s = Scratch::new();
    let events = Events::default();
    let mut opts = s.options(&events);
    // A long pause, so the child is surely in backoff when stop arrives.
    opts.backoff.initial = Duration::from_secs(600);
    opts.backoff.max = Duration::from_secs(600);
    let child = Child::new(ProcessName::LkBackend, opts);
    let spec = s.spec(ProcessName::LkBackend, free_port(), &["--crash-after-ms", "300"], "c");
    let _decider = Decider::new(&child, spec.clone(), &events);
    child.start(spec, READY).await.expect("start");
    eventually(Duration::from_secs(30), "backoff after the second crash", || {
        (child.health().state == ProcessState::Backoff).then_some(())
    })
    .await;
    let outcome = child.stop(Duration::from_secs(5)).await.expect("stop");
    assert_eq!(
        outcome,
        StopOutcome {
            was_running: false,
            killed: false
        }
    );
    assert_eq!(child.health().state, ProcessState::Stopped);
}

#[tokio::test]
async fn restart_kills_a_child_that_ignores_sigterm_at_the_callers_drain_deadline_and_says_so() {
    let s = Scratch::new();
    let events = Events::default();
    let child = Child::new(ProcessName::LivekitServer, s.options(&events));
    let spec = s.spec(ProcessName::LivekitServer, free_port(), &["--ignore-term"], "c");
    child.start(spec.clone(), READY).await.expect("start");
    let old = child.health().pid.expect("pid");
    // Below the supervisor's own stop_grace (5 s here): the exit record
    // names the deadline honoured.
    let drain = Duration::from_millis(300);
    let t0 = Instant::now();
    let r = child.restart(spec, READY, Some(drain)).await.expect("restart");
    let took = t0.elapsed();
    assert_eq!(
        r,
        Started {
            outcome: StartOutcome::Restarted,
            killed: true
        }
    );
    assert!(took >= drain, "SIGTERM given its drain deadline ({took:?})");
    assert!(!alive(old), "the old process is gone");
    assert!(child
        .health()
        .last_exit
        .is_some_and(|e| e.contains("SIGKILL at the drain deadline (300 ms)")));
    child.stop(Duration::from_millis(300)).await.expect("stop");
}
