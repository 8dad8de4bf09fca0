//! The reconcile's pure planner for the children: from what should run and
//! what each child runs now, what to start, restart, stop, and what follows
//! an exit (recover at once, back off, give up, hold for Redis).
//!
//! The files have their own pure planner ([`crate::config::plan`]); this one
//! runs after their writes, knowing which files are current on disk. A
//! reader of the code finds "what makes a child start, stop or restart"
//! here and nowhere else: the child's own task only executes and reports.

use std::collections::BTreeMap;

use hero_livekit_proto::{ProcessName, ProcessState};
use tokio::time::Instant;

use super::specs::config_file_of;
use crate::config::{Rendered, TripleFile};
use crate::supervise::{BackoffPolicy, Decision, Failure};

/// One child as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChildObs {
    pub state: ProcessState,
    /// sha256 of the config file the running process really uses: for
    /// livekit-server the file as read at its spawn (it reads it only
    /// then), for lk-backend what it reports having loaded (it re-reads on
    /// SIGHUP), else its spawn record. `None` when nothing runs or lk-backend
    /// could not say.
    pub running_sha256: Option<String>,
    /// The running process was spawned from the program file in place now
    /// (true when nothing runs or either side cannot be known: a missing
    /// file never makes a restart, which could only fail).
    pub binary_current: bool,
    /// Without a process after an exit: what the planner decides on.
    pub idle: Option<IdleObs>,
}

/// A child without a process after an exit, as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IdleObs {
    /// It exited (or a recovery failed) and nothing is decided yet.
    Exited {
        reason: String,
        /// Its failures since the last healthy run (oldest first; the exit
        /// itself is the last unless the dependency explains it).
        failures: Vec<Failure>,
        policy: BackoffPolicy,
        /// The dependency explains the exit: held until a check newer than
        /// this count passes.
        held_after: Option<u64>,
    },
    /// Backing off until `until`; `due` once that instant has passed.
    Backoff {
        until: Instant,
        due: bool,
        last_exit: Option<String>,
    },
    /// Held for the dependency; `released` once a newer check passed.
    Held { released: bool, what: &'static str },
}

/// What the caller asks of this reconcile beyond convergence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Intent {
    /// `start`: every wanted child is made to run, `failed` and `backoff`
    /// cleared, and one already running is waited for until ready.
    pub ensure_running: bool,
    /// `restart`: these are restarted whatever they run.
    pub restart: Vec<ProcessName>,
    /// The token chain failed while every observation agreed: lk-backend
    /// (stateless, cheap to restart, unlike the media server) is restarted.
    pub unexplained_chain_failure: bool,
    /// The drain deadline a caller gave for the children this stops or
    /// restarts (else the daemon's default).
    pub drain: Option<std::time::Duration>,
    /// Only what follows an exit is decided (a child's status changed, a
    /// backoff is due, the dependency was checked): running children are
    /// kept, their config and binary left to the full passes.
    pub exits_only: bool,
}

/// What to do to one child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChildAction {
    /// Leave it as it is.
    Keep,
    /// Start it (or, with `ensure_running`, make sure it runs and is ready).
    Start,
    /// Stop it and start it again, for this reason.
    Restart(String),
    /// Stop it: its target is down (`stop` asked, and its own stop did not
    /// complete; every pass retries until it is seen stopped).
    Stop,
    /// Start it again after an exit, for this reason, its failure history
    /// kept (the first restart after a healthy run, a backoff that is due,
    /// the dependency back).
    Recover(String),
    /// Wait until `until` before recovering (repeated failures).
    Backoff { until: Instant, detail: String },
    /// Give up: `failed` until `start` (a crash loop).
    GiveUp(String),
    /// Wait for the dependency that explains the exit.
    Hold(u64),
}

/// Decides, for each child, from the desired state and the observations.
///
/// - a child that should not run is stopped unless it is (a `stop` that
///   failed is retried by every pass; a backoff or `failed` is cleared);
/// - a child whose file is not current on disk (a write is pending) is not
///   touched: starting it would run a stale file;
/// - a running child whose running config differs from the rendering is
///   restarted (the field failure: a child that read another secret), and
///   so is one spawned from another binary than the one in place now
///   (`install --force`, a file swapped by hand, seen by the tick);
/// - a wanted child that is stopped is started; one `failed` waits for
///   `start` (`ensure_running`);
/// - after an exit ([`IdleObs`]): the backoff policy on its failure history
///   says recover now, back off until an instant (recovered once due) or
///   give up; an exit its dependency explains is held until a newer check
///   passes, then recovered. `ensure_running` and `restart` start it at
///   once, its history cleared.
pub(crate) fn plan_children(
    rendered: &Rendered,
    wanted: &BTreeMap<ProcessName, bool>,
    observed: &BTreeMap<ProcessName, ChildObs>,
    current_files: &[TripleFile],
    intent: &Intent,
) -> BTreeMap<ProcessName, ChildAction> {
    ProcessName::ALL
        .into_iter()
        .map(|name| {
            let action = plan_one(name, rendered, wanted, observed, current_files, intent);
            (name, action)
        })
        .collect()
}

fn plan_one(
    name: ProcessName,
    rendered: &Rendered,
    wanted: &BTreeMap<ProcessName, bool>,
    observed: &BTreeMap<ProcessName, ChildObs>,
    current_files: &[TripleFile],
    intent: &Intent,
) -> ChildAction {
    if !wanted.get(&name).copied().unwrap_or(false) {
        // Anything but `stopped` is brought there: a process is stopped,
        // a backoff, a hold or `failed` cleared.
        let stopped = observed
            .get(&name)
            .is_none_or(|o| o.state == ProcessState::Stopped && o.idle.is_none());
        return if stopped { ChildAction::Keep } else { ChildAction::Stop };
    }
    let file = config_file_of(name);
    if !current_files.contains(&file) {
        return ChildAction::Keep;
    }
    let Some(obs) = observed.get(&name) else {
        return ChildAction::Keep;
    };
    if let Some(idle) = &obs.idle {
        if intent.ensure_running || intent.restart.contains(&name) {
            return ChildAction::Start;
        }
        return after_exit(idle);
    }
    if intent.exits_only {
        return ChildAction::Keep;
    }
    match obs.state {
        ProcessState::Running | ProcessState::Starting => {
            if intent.restart.contains(&name) {
                return ChildAction::Restart("restart requested".into());
            }
            let expected = rendered.sha256(file);
            match obs.running_sha256.as_deref() {
                Some(running) if running == expected => {}
                Some(_) => return ChildAction::Restart(format!("it runs an outdated {file}")),
                None => return ChildAction::Restart(format!("it cannot say which {file} it runs")),
            }
            if !obs.binary_current {
                return ChildAction::Restart("its binary was replaced by another one".into());
            }
            if intent.unexplained_chain_failure && name == ProcessName::LkBackend {
                return ChildAction::Restart("the token chain failed".into());
            }
            if intent.ensure_running {
                ChildAction::Start
            } else {
                ChildAction::Keep
            }
        }
        ProcessState::Stopped => ChildAction::Start,
        ProcessState::Backoff | ProcessState::Failed => {
            if intent.ensure_running || intent.restart.contains(&name) {
                ChildAction::Start
            } else {
                ChildAction::Keep
            }
        }
    }
}

/// What follows an exit.
fn after_exit(idle: &IdleObs) -> ChildAction {
    match idle {
        IdleObs::Exited {
            held_after: Some(after),
            ..
        } => ChildAction::Hold(*after),
        IdleObs::Exited {
            reason,
            failures,
            policy,
            held_after: None,
        } => match policy.decide(failures) {
            Decision::RestartNow => ChildAction::Recover(reason.clone()),
            Decision::RestartAfter(pause) => ChildAction::Backoff {
                // From the exit, not from whenever this pass runs.
                until: failures.last().map_or_else(Instant::now, |f| f.at) + pause,
                detail: format!("{reason}; restarting in {} ms", pause.as_millis()),
            },
            Decision::Fail => ChildAction::GiveUp(format!("crash loop, giving up: {reason}")),
        },
        IdleObs::Backoff { due: false, .. } | IdleObs::Held { released: false, .. } => ChildAction::Keep,
        IdleObs::Backoff {
            due: true, last_exit, ..
        } => ChildAction::Recover(format!(
            "backoff elapsed after: {}",
            last_exit.as_deref().unwrap_or("an unexpected exit")
        )),
        IdleObs::Held { released: true, what } => ChildAction::Recover(format!("{what} answers again")),
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
