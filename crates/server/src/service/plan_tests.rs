//! Unit tests of the children's planner.

use super::*;
use crate::config::{Config, Credential, Secret};

const LK: ProcessName = ProcessName::LivekitServer;
const BE: ProcessName = ProcessName::LkBackend;

fn rendered() -> Rendered {
    Rendered::new(Config::with_credential(Credential {
        api_key: "APIabcdefghijkm".into(),
        api_secret: Secret::new("s3cr3tValueThatMustNeverBePrinted0123456789"),
    }))
}

fn both(v: bool) -> BTreeMap<ProcessName, bool> {
    [(LK, v), (BE, v)].into_iter().collect()
}

fn obs(r: &Rendered, lk: (ProcessState, bool), be: (ProcessState, bool)) -> BTreeMap<ProcessName, ChildObs> {
    let one = |name, (state, current): (ProcessState, bool)| {
        let running = match state {
            ProcessState::Running | ProcessState::Starting if current => {
                Some(r.sha256(config_file_of(name)).to_string())
            }
            ProcessState::Running | ProcessState::Starting => Some("0".repeat(64)),
            _ => None,
        };
        ChildObs {
            state,
            running_sha256: running,
            binary_current: true,
            idle: None,
        }
    };
    [(LK, one(LK, lk)), (BE, one(BE, be))].into_iter().collect()
}

const ALL_FILES: [TripleFile; 3] = TripleFile::ALL;
use ProcessState::*;

fn actions(m: &BTreeMap<ProcessName, ChildAction>) -> (ChildAction, ChildAction) {
    (m[&LK].clone(), m[&BE].clone())
}

#[test]
fn current_children_are_kept_and_outdated_ones_restarted() {
    let r = rendered();
    let i = Intent::default();
    let p = plan_children(
        &r,
        &both(true),
        &obs(&r, (Running, true), (Running, true)),
        &ALL_FILES,
        &i,
    );
    assert_eq!(actions(&p), (ChildAction::Keep, ChildAction::Keep));
    let p = plan_children(
        &r,
        &both(true),
        &obs(&r, (Running, true), (Running, false)),
        &ALL_FILES,
        &i,
    );
    assert_eq!(
        actions(&p),
        (
            ChildAction::Keep,
            ChildAction::Restart("it runs an outdated backend.env".into())
        )
    );
    let p = plan_children(
        &r,
        &both(true),
        &obs(&r, (Starting, false), (Running, true)),
        &ALL_FILES,
        &i,
    );
    assert_eq!(p[&LK], ChildAction::Restart("it runs an outdated livekit.yaml".into()));
}

#[test]
fn a_child_whose_file_is_pending_is_not_touched() {
    let r = rendered();
    let i = Intent {
        ensure_running: true,
        ..Intent::default()
    };
    let files = [TripleFile::RuntimeJson, TripleFile::BackendEnv];
    let p = plan_children(
        &r,
        &both(true),
        &obs(&r, (Running, false), (Stopped, false)),
        &files,
        &i,
    );
    assert_eq!(actions(&p), (ChildAction::Keep, ChildAction::Start));
}

#[test]
fn stopped_wanted_children_start_and_running_unwanted_ones_stop() {
    let r = rendered();
    let o = obs(&r, (Stopped, false), (Stopped, false));
    let p = plan_children(&r, &both(true), &o, &ALL_FILES, &Intent::default());
    assert_eq!(actions(&p), (ChildAction::Start, ChildAction::Start));
    let p = plan_children(&r, &both(false), &o, &ALL_FILES, &Intent::default());
    assert_eq!(actions(&p), (ChildAction::Keep, ChildAction::Keep));
    let running = obs(&r, (Running, false), (Starting, false));
    let p = plan_children(&r, &both(false), &running, &ALL_FILES, &Intent::default());
    assert_eq!(
        actions(&p),
        (ChildAction::Stop, ChildAction::Stop),
        "a target down is retried until seen stopped"
    );
    for state in [Backoff, Failed] {
        let o = obs(&r, (state, false), (Stopped, false));
        let p = plan_children(&r, &both(false), &o, &ALL_FILES, &Intent::default());
        assert_eq!(
            actions(&p),
            (ChildAction::Stop, ChildAction::Keep),
            "{state} is cleared to stopped"
        );
    }
}

#[test]
fn failed_and_backoff_wait_unless_start_is_asked() {
    let r = rendered();
    let o = obs(&r, (Failed, false), (Backoff, false));
    let p = plan_children(&r, &both(true), &o, &ALL_FILES, &Intent::default());
    assert_eq!(actions(&p), (ChildAction::Keep, ChildAction::Keep));
    let start = Intent {
        ensure_running: true,
        ..Intent::default()
    };
    let p = plan_children(&r, &both(true), &o, &ALL_FILES, &start);
    assert_eq!(actions(&p), (ChildAction::Start, ChildAction::Start));
}

#[test]
fn a_requested_restart_restarts_and_start_ensures_the_rest() {
    let r = rendered();
    let o = obs(&r, (Running, true), (Running, true));
    let i = Intent {
        restart: vec![BE],
        ..Intent::default()
    };
    let p = plan_children(&r, &both(true), &o, &ALL_FILES, &i);
    assert_eq!(
        actions(&p),
        (ChildAction::Keep, ChildAction::Restart("restart requested".into()))
    );
    let i = Intent {
        ensure_running: true,
        ..Intent::default()
    };
    let p = plan_children(&r, &both(true), &o, &ALL_FILES, &i);
    assert_eq!(actions(&p), (ChildAction::Start, ChildAction::Start));
}

#[test]
fn an_unexplained_chain_failure_restarts_only_lk_backend() {
    let r = rendered();
    let o = obs(&r, (Running, true), (Running, true));
    let i = Intent {
        unexplained_chain_failure: true,
        ..Intent::default()
    };
    let p = plan_children(&r, &both(true), &o, &ALL_FILES, &i);
    assert_eq!(
        actions(&p),
        (ChildAction::Keep, ChildAction::Restart("the token chain failed".into()))
    );
}

#[test]
fn a_child_running_another_binary_is_replaced_unless_its_file_is_pending() {
    let r = rendered();
    let mut o = obs(&r, (Running, true), (Running, true));
    if let Some(lk) = o.get_mut(&LK) {
        lk.binary_current = false;
    }
    let p = plan_children(&r, &both(true), &o, &ALL_FILES, &Intent::default());
    assert_eq!(
        actions(&p),
        (
            ChildAction::Restart("its binary was replaced by another one".into()),
            ChildAction::Keep
        )
    );
    let pending = [TripleFile::RuntimeJson, TripleFile::BackendEnv];
    let p = plan_children(&r, &both(true), &o, &pending, &Intent::default());
    assert_eq!(p[&LK], ChildAction::Keep, "never restarted onto a pending file");
    let p = plan_children(&r, &both(false), &o, &ALL_FILES, &Intent::default());
    assert_eq!(p[&LK], ChildAction::Stop, "not wanted: stopped, not replaced");
}

#[test]
fn a_backend_that_cannot_say_what_it_runs_is_restarted() {
    let r = rendered();
    let mut o = obs(&r, (Running, true), (Running, true));
    if let Some(b) = o.get_mut(&BE) {
        b.running_sha256 = None;
    }
    let p = plan_children(&r, &both(true), &o, &ALL_FILES, &Intent::default());
    assert_eq!(
        p[&BE],
        ChildAction::Restart("it cannot say which backend.env it runs".into())
    );
}

fn exited(failures: Vec<Failure>, held_after: Option<u64>) -> IdleObs {
    IdleObs::Exited {
        reason: "crashed: killed by signal 9".into(),
        failures,
        policy: BackoffPolicy::default(),
        held_after,
    }
}

fn with_idle(r: &Rendered, lk: IdleObs) -> BTreeMap<ProcessName, ChildObs> {
    let mut o = obs(r, (Starting, false), (Running, true));
    if let Some(c) = o.get_mut(&LK) {
        c.running_sha256 = None;
        c.idle = Some(lk);
    }
    o
}

fn failures(at: Instant, n: usize) -> Vec<Failure> {
    (0..n)
        .map(|i| Failure {
            at: at + std::time::Duration::from_millis(100 * i as u64),
            ran_for: std::time::Duration::from_millis(50),
        })
        .collect()
}

#[test]
fn the_first_exit_after_a_healthy_run_is_recovered_at_once_even_in_an_exits_only_pass() {
    let r = rendered();
    let o = with_idle(&r, exited(failures(Instant::now(), 1), None));
    let i = Intent {
        exits_only: true,
        ..Intent::default()
    };
    let p = plan_children(&r, &both(true), &o, &ALL_FILES, &i);
    assert_eq!(
        actions(&p),
        (
            ChildAction::Recover("crashed: killed by signal 9".into()),
            ChildAction::Keep
        )
    );
    // Not wanted: an exit is settled as stopped, never recovered.
    let p = plan_children(&r, &both(false), &o, &ALL_FILES, &i);
    assert_eq!(p[&LK], ChildAction::Stop);
    // Never recovered onto a pending file.
    let pending = [TripleFile::RuntimeJson, TripleFile::BackendEnv];
    let p = plan_children(&r, &both(true), &o, &pending, &i);
    assert_eq!(p[&LK], ChildAction::Keep);
}

#[test]
fn repeated_exits_back_off_from_the_exit_and_a_crash_loop_gives_up() {
    let r = rendered();
    let t0 = Instant::now();
    let two = failures(t0, 2);
    let last = two[1].at;
    let p = plan_children(
        &r,
        &both(true),
        &with_idle(&r, exited(two, None)),
        &ALL_FILES,
        &Intent::default(),
    );
    assert_eq!(
        p[&LK],
        ChildAction::Backoff {
            until: last + std::time::Duration::from_millis(500),
            detail: "crashed: killed by signal 9; restarting in 500 ms".into()
        }
    );
    let p = plan_children(
        &r,
        &both(true),
        &with_idle(&r, exited(failures(t0, 5), None)),
        &ALL_FILES,
        &Intent::default(),
    );
    assert_eq!(
        p[&LK],
        ChildAction::GiveUp("crash loop, giving up: crashed: killed by signal 9".into())
    );
    // `start` clears it all: started at once.
    let start = Intent {
        ensure_running: true,
        ..Intent::default()
    };
    let p = plan_children(
        &r,
        &both(true),
        &with_idle(&r, exited(failures(t0, 5), None)),
        &ALL_FILES,
        &start,
    );
    assert_eq!(p[&LK], ChildAction::Start);
}

#[test]
fn a_backoff_is_recovered_once_due_and_a_hold_once_released() {
    let r = rendered();
    let backoff = |due| IdleObs::Backoff {
        until: Instant::now(),
        due,
        last_exit: Some("exited with code 3".into()),
    };
    let p = plan_children(
        &r,
        &both(true),
        &with_idle(&r, backoff(false)),
        &ALL_FILES,
        &Intent::default(),
    );
    assert_eq!(p[&LK], ChildAction::Keep);
    let p = plan_children(
        &r,
        &both(true),
        &with_idle(&r, backoff(true)),
        &ALL_FILES,
        &Intent::default(),
    );
    assert_eq!(
        p[&LK],
        ChildAction::Recover("backoff elapsed after: exited with code 3".into())
    );
    let p = plan_children(
        &r,
        &both(true),
        &with_idle(&r, exited(Vec::new(), Some(7))),
        &ALL_FILES,
        &Intent::default(),
    );
    assert_eq!(
        p[&LK],
        ChildAction::Hold(7),
        "an exit Redis explains is held, not counted"
    );
    let held = |released| IdleObs::Held {
        released,
        what: "Redis",
    };
    let p = plan_children(
        &r,
        &both(true),
        &with_idle(&r, held(false)),
        &ALL_FILES,
        &Intent::default(),
    );
    assert_eq!(p[&LK], ChildAction::Keep);
    let p = plan_children(
        &r,
        &both(true),
        &with_idle(&r, held(true)),
        &ALL_FILES,
        &Intent::default(),
    );
    assert_eq!(p[&LK], ChildAction::Recover("Redis answers again".into()));
}

#[test]
fn an_exits_only_pass_leaves_running_children_to_the_full_passes() {
    let r = rendered();
    let o = obs(&r, (Running, false), (Stopped, false));
    let i = Intent {
        exits_only: true,
        ..Intent::default()
    };
    let p = plan_children(&r, &both(true), &o, &ALL_FILES, &i);
    assert_eq!(actions(&p), (ChildAction::Keep, ChildAction::Keep));
}
