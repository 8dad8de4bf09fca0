//! A writer killed at any moment while replacing the credential leaves a
//! state that the next boot heals to one whole credential: the old one or
//! the new one, never a mix, never lost.
//!
//! The writer is `crash-writer` (`tests/src/bin/crash_writer.rs`), a
//! process that loads the state directory, plans and applies a config with
//! a new credential through the daemon's own config module. The child
//! is stopped at every fault point (`HERO_LIVEKIT_FAULT`, which aborts) and
//! with SIGKILL at random moments; after each, the parent runs what the
//! daemon runs at boot (sweep temp files, `plan(None, observe())`, `apply`)
//! and checks the result.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use hero_livekit_server::config::{
    check, fault, mint_credential, plan, render, Config, Credential, FileObs, StateDir, TripleFile,
};
use rand::Rng;

/// Set in the child: the state directory to write.
const CHILD_DIR: &str = "HERO_LIVEKIT_CRASH_CHILD_DIR";
const CHILD_KEY: &str = "HERO_LIVEKIT_CRASH_CHILD_KEY";
const CHILD_SECRET: &str = "HERO_LIVEKIT_CRASH_CHILD_SECRET";

/// The last point at which the old credential must survive: until the
/// rename of `runtime.json`, boot still reads the old one there.
const LAST_OLD_POINT: &str = "runtime.json:after-fsync";

/// Fault runs per point, and the bounds of the SIGKILL phase.
const RUNS_PER_POINT: usize = 3;
const MAX_KILL_RUNS: usize = 300;
const MIN_KILL_RUNS: usize = 60;
const TOTAL_BUDGET: Duration = Duration::from_secs(20);

fn run_child(dir: &Path, new: &Credential, fault_point: Option<&str>) -> Command {
    let mut cmd = Command::new(hero_livekit_tests::bin("crash-writer"));
    cmd.env(CHILD_DIR, dir)
        .env(CHILD_KEY, &new.api_key)
        .env(CHILD_SECRET, new.api_secret.expose())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match fault_point {
        Some(p) => cmd.env(fault::ENV, p),
        None => cmd.env_remove(fault::ENV),
    };
    cmd
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Old,
    New,
}

/// What the daemon does at boot, with the checks that matter: returns
/// which credential survived and how many temp files the crash left.
fn boot_and_verify(sd: &StateDir, old: &Config, new: &Config, context: &str) -> (Outcome, usize) {
    // Nothing half-written under a final name: each file is wholly the old
    // or wholly the new rendering, and none went missing (rename is atomic).
    for f in TripleFile::ALL {
        match sd.observe().get(f) {
            FileObs::Present(b) => assert!(
                *b == render(old, f) || *b == render(new, f),
                "{context}: {f} is neither the old nor the new rendering"
            ),
            other => panic!("{context}: {f} is {other:?}"),
        }
    }
    let temps = sd.sweep_temp_files().expect("sweep temp files");
    let observed = sd.observe();
    let heal = plan(None, &observed, false).expect("boot plan");
    assert!(!heal.minted, "{context}: a valid credential was thrown away");
    sd.apply(&heal).expect("boot heal");
    let after = sd.observe();
    let consistency = check(&heal.config, &after);
    assert!(
        consistency.consistent,
        "{context}: not consistent after boot heal: {:?}",
        consistency.drift
    );
    let outcome = if heal.config == *old {
        Outcome::Old
    } else if heal.config == *new {
        Outcome::New
    } else {
        panic!("{context}: boot loaded a config that is neither the old nor the new one")
    };
    let mut names: Vec<OsString> = std::fs::read_dir(sd.dir())
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "backend.env",
            "children",
            "data",
            "livekit.yaml",
            "logs",
            "runtime.json"
        ],
        "{context}: stray files"
    );
    (outcome, temps)
}

fn with_credential(base: &Config, c: &Credential) -> Config {
    let mut next = base.clone();
    next.set_credential(c.clone());
    next
}

fn describe(status: ExitStatus, stderr: &[u8]) -> String {
    format!("{status:?}, stderr: {}", String::from_utf8_lossy(stderr))
}

#[test]
fn an_interrupted_credential_change_heals_to_one_whole_credential() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let sd = StateDir::new(tmp.path().join("state"));
    sd.ensure().expect("ensure");
    let first = plan(None, &sd.observe(), false).expect("first boot");
    sd.apply(&first).expect("first write");
    let mut current = first.config;

    // Every fault point, several times: the outcome is fixed by the point.
    let last_old = fault::POINTS
        .iter()
        .position(|p| *p == LAST_OLD_POINT)
        .expect("point exists");
    for (i, point) in fault::POINTS.iter().enumerate() {
        for run in 0..RUNS_PER_POINT {
            let new = with_credential(&current, &mint_credential().expect("rng"));
            let out = run_child(sd.dir(), &new.credential(), Some(point))
                .output()
                .expect("spawn child");
            assert_eq!(
                out.status.signal(),
                Some(libc::SIGABRT),
                "{point}: the point was not reached: {}",
                describe(out.status, &out.stderr)
            );
            let context = format!("abort at {point} (run {run})");
            let (outcome, temps) = boot_and_verify(&sd, &current, &new, &context);
            let expected = if i <= last_old { Outcome::Old } else { Outcome::New };
            assert_eq!(outcome, expected, "{context}");
            let temp_expected = usize::from(
                point.ends_with("after-create")
                    || point.ends_with("mid-write")
                    || point.ends_with("after-write")
                    || point.ends_with("after-fsync"),
            );
            assert_eq!(temps, temp_expected, "{context}: temp files left");
            current = if outcome == Outcome::New { new } else { current };
        }
    }
    let fault_time = started.elapsed();

    // Calibrate the SIGKILL window on uninterrupted runs.
    let mut durations = Vec::new();
    for _ in 0..3 {
        let new = with_credential(&current, &mint_credential().expect("rng"));
        let t = Instant::now();
        let out = run_child(sd.dir(), &new.credential(), None)
            .output()
            .expect("spawn child");
        durations.push(t.elapsed());
        assert!(
            out.status.success(),
            "uninterrupted child failed: {}",
            describe(out.status, &out.stderr)
        );
        assert_eq!(
            boot_and_verify(&sd, &current, &new, "uninterrupted run").0,
            Outcome::New
        );
        current = new;
    }
    durations.sort();
    let window = durations[1].mul_f64(1.2);

    let mut rng = rand::rng();
    let (mut old_count, mut new_count, mut mid_write, mut runs) = (0, 0, 0, 0);
    while runs < MAX_KILL_RUNS && (runs < MIN_KILL_RUNS || started.elapsed() < TOTAL_BUDGET) {
        let new = with_credential(&current, &mint_credential().expect("rng"));
        let delay = window.mul_f64(rng.random_range(0.0..1.0));
        let mut child = run_child(sd.dir(), &new.credential(), None)
            .spawn()
            .expect("spawn child");
        // The random kill moment is the point of this phase, not a wait
        // for an event.
        std::thread::sleep(delay);
        child.kill().expect("SIGKILL the child");
        let out = child.wait_with_output().expect("reap child");
        assert!(
            out.status.success() || out.status.signal() == Some(libc::SIGKILL),
            "child failed on its own: {}",
            describe(out.status, &out.stderr)
        );
        let context = format!("SIGKILL after {delay:?} (run {runs})");
        let (outcome, temps) = boot_and_verify(&sd, &current, &new, &context);
        if out.status.success() {
            assert_eq!(outcome, Outcome::New, "{context}: a finished change must stick");
        }
        mid_write += usize::from(temps > 0);
        match outcome {
            Outcome::Old => old_count += 1,
            Outcome::New => {
                new_count += 1;
                current = new;
            }
        }
        runs += 1;
    }
    println!(
        "{} fault runs in {fault_time:?}; {runs} SIGKILL runs over a {window:?} window: {old_count} kept the old credential, \
         {new_count} the new, {mid_write} killed mid-write; total {:?}",
        fault::POINTS.len() * RUNS_PER_POINT,
        started.elapsed()
    );
    // Kills must land on both sides of the runtime.json rename, or the
    // random phase tested nothing.
    assert!(
        old_count > 0 && new_count > 0,
        "kills did not span the write: {old_count} old, {new_count} new"
    );
}
