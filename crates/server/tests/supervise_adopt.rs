//! The daemon's exit does not take children down: a new supervisor adopts
//! the recorded child, keeps supervising it, and never signals a pid whose
//! record does not verify.

mod supervise_common;

use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::Duration;

use hero_livekit_proto::{ProcessName, ProcessState, StartOutcome};
use hero_livekit_server::supervise::{AdoptOutcome, Child, ChildRecord, StopOutcome};
use supervise_common::*;

const READY: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_detached_child_is_adopted_and_recovered_after_it_dies() {
    let s = Scratch::new();
    let port = free_port();
    let spec = s.spec(ProcessName::LkBackend, port, &[], "c");

    let first = Child::new(ProcessName::LkBackend, s.options(&Events::default()));
    first.start(spec.clone(), READY).await.expect("start");
    let pid = first.health().pid.expect("pid");
    first.detach().await;
    first.detach().await; // idempotent
    assert!(alive(pid), "detach leaves the child running");
    assert!(
        first.start(spec.clone(), READY).await.is_err(),
        "a detached handle is closed"
    );
    assert!(
        ChildRecord::load(&s.children_dir(), ProcessName::LkBackend)
            .expect("load")
            .is_some(),
        "detach keeps the record"
    );

    // The next daemon instance.
    let events = Events::default();
    let second = Child::new(ProcessName::LkBackend, s.options(&events));
    let _decider = Decider::new(&second, spec.clone(), &events);
    assert_eq!(second.adopt(spec.clone()).await.expect("adopt"), AdoptOutcome::Adopted);
    let h = second.health();
    assert_eq!(h.state, ProcessState::Running);
    assert_eq!(h.pid, Some(pid));
    assert!(h.adopted && h.ready);
    assert_eq!(
        second.adopt(spec.clone()).await.expect("adopt"),
        AdoptOutcome::AlreadySupervised
    );
    assert_eq!(
        second.start(spec.clone(), READY).await.expect("start"),
        StartOutcome::AlreadyRunning
    );
    assert_eq!(second.health().pid, Some(pid));

    kill(pid, libc::SIGKILL);
    let new_pid = eventually(READY, "the adopted child to be restarted", || {
        let h = second.health();
        (h.ready && h.pid != Some(pid)).then_some(h.pid)
    })
    .await
    .expect("pid");
    let h = second.health();
    assert!(!h.adopted, "the restarted process is our own child");
    assert_eq!(h.restarts, 1);
    assert!(events.restart_reasons().iter().any(|r| r.contains("crashed")));
    let rec = ChildRecord::load(&s.children_dir(), ProcessName::LkBackend)
        .expect("load")
        .expect("record of the new process");
    assert_eq!(rec.pid, new_pid);
    second.stop(Duration::from_secs(5)).await.expect("stop");
}

#[tokio::test]
async fn adoption_survives_the_binary_being_replaced_and_restart_then_upgrades() {
    let s = Scratch::new();
    let bin_dir = s.path().join("bin");
    std::fs::create_dir_all(&bin_dir).expect("mkdir");
    let program = bin_dir.join("python3");
    std::fs::copy(python(), &program).expect("copy interpreter");
    let mut spec = s.spec(ProcessName::LivekitServer, free_port(), &[], "c");
    spec.program = program.clone();

    let first = Child::new(ProcessName::LivekitServer, s.options(&Events::default()));
    first.start(spec.clone(), READY).await.expect("start");
    let pid = first.health().pid.expect("pid");
    first.detach().await;

    // Replace the file the way an install does: new file, renamed over.
    let old_ino = std::fs::metadata(&program).expect("stat").ino();
    let staged = bin_dir.join(".python3.new");
    std::fs::copy(python(), &staged).expect("stage new binary");
    std::fs::rename(&staged, &program).expect("replace binary");
    assert_ne!(std::fs::metadata(&program).expect("stat").ino(), old_ino);

    let events = Events::default();
    let second = Child::new(ProcessName::LivekitServer, s.options(&events));
    assert_eq!(second.adopt(spec.clone()).await.expect("adopt"), AdoptOutcome::Adopted);
    assert_eq!(second.health().pid, Some(pid));
    assert!(second.health().ready);

    // The running process executes the old file: `start` leaves it (the
    // reconcile sees the binary replaced and asks `restart`), `restart`
    // brings up the new one.
    assert_eq!(
        second.start(spec.clone(), READY).await.expect("start"),
        StartOutcome::AlreadyRunning
    );
    assert_eq!(second.running_program().map(|(_, ino)| ino), Some(old_ino));
    let restarted = second.restart(spec, READY, None).await.expect("restart");
    assert_eq!(restarted.outcome, StartOutcome::Restarted);
    assert!(!alive(pid));
    let rec = ChildRecord::load(&s.children_dir(), ProcessName::LivekitServer)
        .expect("load")
        .expect("record");
    assert_eq!(rec.exe_ino, std::fs::metadata(&program).expect("stat").ino());
    second.stop(Duration::from_secs(5)).await.expect("stop");
}

#[tokio::test]
async fn a_record_naming_an_unrelated_process_is_discarded_and_the_process_left_alone() {
    let s = Scratch::new();
    let mut bystander = Command::new("sleep").arg("300").spawn().expect("spawn sleep");
    let pid = bystander.id();
    let python_meta = std::fs::metadata(python()).expect("stat python");
    let sleep_exe = std::fs::metadata(format!("/proc/{pid}/exe")).expect("stat sleep exe");
    let base = ChildRecord {
        name: ProcessName::LivekitServer,
        pid,
        start_time: start_time(pid),
        exe: python(),
        exe_dev: python_meta.dev(),
        exe_ino: python_meta.ino(),
        program_dev: None,
        program_ino: None,
        config_sha256: "c".into(),
        started_unix_ms: 0,
        ready_port: 1,
    };
    let cases = [
        (
            "pid reused",
            ChildRecord {
                start_time: base.start_time + 1,
                ..base.clone()
            },
            "reused",
        ),
        ("another executable", base.clone(), "another executable"),
    ];
    let events = Events::default();
    let child = Child::new(ProcessName::LivekitServer, s.options(&events));
    let spec = s.spec(ProcessName::LivekitServer, free_port(), &[], "c");
    for (what, record, reason) in cases {
        record.write(&s.children_dir()).expect("write record");
        match child.adopt(spec.clone()).await.expect("adopt") {
            AdoptOutcome::Discarded(r) => assert!(r.contains(reason), "{what}: {r}"),
            other => panic!("{what}: expected Discarded, got {other:?}"),
        }
        assert!(
            ChildRecord::load(&s.children_dir(), ProcessName::LivekitServer)
                .expect("load")
                .is_none(),
            "{what}: record deleted"
        );
        assert!(alive(pid), "{what}: the unrelated process is left alone");
    }
    assert_ne!(
        (sleep_exe.dev(), sleep_exe.ino()),
        (python_meta.dev(), python_meta.ino()),
        "the second case really records another executable"
    );

    // stop and start with such a record never touch the bystander either.
    base.write(&s.children_dir()).expect("write record");
    let stopped = child.stop(Duration::from_millis(200)).await.expect("stop");
    assert_eq!(
        stopped,
        StopOutcome {
            was_running: false,
            killed: false
        }
    );
    base.write(&s.children_dir()).expect("write record");
    assert_eq!(child.start(spec, READY).await.expect("start"), StartOutcome::Started);
    assert_ne!(child.health().pid, Some(pid));
    child.stop(Duration::from_secs(5)).await.expect("stop");
    assert!(alive(pid));
    assert_eq!(bystander.try_wait().expect("try_wait"), None, "still running");
    bystander.kill().expect("kill bystander");
    bystander.wait().expect("reap bystander");

    assert_eq!(
        Child::new(ProcessName::LivekitServer, s.options(&events))
            .adopt(s.spec(ProcessName::LivekitServer, 1, &[], "c"))
            .await
            .expect("adopt"),
        AdoptOutcome::NoRecord
    );
}
