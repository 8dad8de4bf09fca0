//! The pure core of a child's life after its process is gone: from where
//! the child stands ([`Phase`]) and what happened ([`Input`]: an exit it
//! observed, a recovery that did not get ready, the reconcile's verdict),
//! where it stands next and what the task must do ([`Effect`]: count a
//! failure, record the exit, show a reason, read the log tail, publish).
//!
//! Nothing here decides whether the child runs again: that is the
//! reconcile's (`service::plan`). This is what the task reports and how it
//! carries a verdict out, written once and tested without processes; the
//! task (`actor`) performs the effects.

use std::time::Duration;

use hero_livekit_proto::ProcessState;
use tokio::time::Instant;

use super::{Idle, Settle};

/// Where a child stands, without the process handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Phase {
    Stopped,
    Starting,
    Running,
    /// Exited; the reconcile has not decided yet.
    Exited {
        reason: String,
        held_after: Option<u64>,
    },
    Backoff(Instant),
    Held(u64),
    Failed,
}

/// What happened to a child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Input {
    /// Its process exited (observed through its pidfd). `held_after`: its
    /// log tail names its dependency, which is configured.
    ProcessExited {
        was_ready: bool,
        status: String,
        ran_for: Duration,
        held_after: Option<u64>,
    },
    /// A recovery did not get ready (spawn failed, exited during startup,
    /// not ready by its deadline). `status` is the exit status, when it
    /// exited.
    RecoveryFailed {
        summary: String,
        status: Option<String>,
        held_after: Option<u64>,
    },
    /// The reconcile's verdict on an exit.
    Settle(Settle),
}

/// What the task does for a step, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Effect {
    /// Record this as `last_exit`.
    LastExit(String),
    /// Count a failure of a run this long in the history.
    CountFailure(Duration),
    /// Show the dependency's reason (`true`) or no reason (`false`).
    DependencyReason(bool),
    /// Read the log tail, for a `failed` child.
    ReadTail,
    /// Publish the snapshot, with this detail for the state event (`None`:
    /// the reason shown).
    Publish(Option<String>),
}

/// The next phase and the effects of `input` in `phase`. An input that does
/// not apply (an exit without a process, a verdict on a child that runs
/// again or was stopped since) changes nothing.
pub(super) fn step(phase: &Phase, input: Input) -> (Phase, Vec<Effect>) {
    match input {
        Input::ProcessExited {
            was_ready,
            status,
            ran_for,
            held_after,
        } => {
            if !matches!(phase, Phase::Starting | Phase::Running) {
                return (phase.clone(), Vec::new());
            }
            // Only an exit before readiness can be the dependency's doing.
            let held_after = held_after.filter(|_| !was_ready);
            let mut effects = vec![Effect::LastExit(status.clone())];
            if held_after.is_none() {
                effects.push(Effect::CountFailure(ran_for));
            }
            let what = if was_ready {
                "crashed"
            } else {
                "exited before it was ready"
            };
            exited(format!("{what}: {status}"), held_after, effects)
        }
        Input::RecoveryFailed {
            summary,
            status,
            held_after,
        } => {
            if !matches!(phase, Phase::Stopped | Phase::Starting) {
                return (phase.clone(), Vec::new());
            }
            let effects = match held_after {
                Some(_) => status.map(Effect::LastExit).into_iter().collect(),
                None => vec![Effect::LastExit(summary.clone()), Effect::CountFailure(Duration::ZERO)],
            };
            exited(format!("restart failed: {summary}"), held_after, effects)
        }
        Input::Settle(verdict) => {
            if !matches!(phase, Phase::Exited { .. } | Phase::Backoff(_) | Phase::Held(_)) {
                return (phase.clone(), Vec::new());
            }
            match verdict {
                Settle::Backoff { until, detail } => (
                    Phase::Backoff(until),
                    vec![Effect::DependencyReason(false), Effect::Publish(Some(detail))],
                ),
                Settle::Failed { detail } => (
                    Phase::Failed,
                    vec![
                        Effect::DependencyReason(false),
                        Effect::ReadTail,
                        Effect::Publish(Some(detail)),
                    ],
                ),
                Settle::Held { after } => (
                    Phase::Held(after),
                    vec![Effect::DependencyReason(true), Effect::Publish(None)],
                ),
            }
        }
    }
}

fn exited(reason: String, held_after: Option<u64>, mut effects: Vec<Effect>) -> (Phase, Vec<Effect>) {
    effects.push(Effect::DependencyReason(held_after.is_some()));
    effects.push(Effect::Publish(None));
    (Phase::Exited { reason, held_after }, effects)
}

/// The state `health` shows for a phase. An exit awaiting its verdict is
/// `starting` (the first restart follows at once), or `backoff` when its
/// dependency explains it.
pub(super) fn shown(phase: &Phase) -> ProcessState {
    match phase {
        Phase::Stopped => ProcessState::Stopped,
        Phase::Starting | Phase::Exited { held_after: None, .. } => ProcessState::Starting,
        Phase::Running => ProcessState::Running,
        Phase::Exited {
            held_after: Some(_), ..
        }
        | Phase::Backoff(_)
        | Phase::Held(_) => ProcessState::Backoff,
        Phase::Failed => ProcessState::Failed,
    }
}

/// Whether entering the phase makes a state event: not an exit awaiting
/// its verdict (the verdict's state, or the new process, follows at once).
pub(super) fn makes_event(phase: &Phase) -> bool {
    !matches!(phase, Phase::Exited { held_after: None, .. })
}

/// What the reconcile reads of a phase without a process after an exit.
pub(super) fn idle_of(phase: &Phase) -> Option<Idle> {
    match phase {
        Phase::Exited { reason, held_after } => Some(Idle::Exited {
            reason: reason.clone(),
            held_after: *held_after,
        }),
        Phase::Backoff(until) => Some(Idle::Backoff { until: *until }),
        Phase::Held(after) => Some(Idle::Held { after: *after }),
        Phase::Stopped | Phase::Starting | Phase::Running | Phase::Failed => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(was_ready: bool, held_after: Option<u64>) -> Input {
        Input::ProcessExited {
            was_ready,
            status: "killed by signal 9 (SIGKILL)".into(),
            ran_for: Duration::from_secs(3),
            held_after,
        }
    }

    #[test]
    fn a_crash_is_counted_reported_and_awaits_the_verdict_without_an_event() {
        let (next, effects) = step(&Phase::Running, exit(true, None));
        assert_eq!(
            next,
            Phase::Exited {
                reason: "crashed: killed by signal 9 (SIGKILL)".into(),
                held_after: None
            }
        );
        assert_eq!(
            effects,
            [
                Effect::LastExit("killed by signal 9 (SIGKILL)".into()),
                Effect::CountFailure(Duration::from_secs(3)),
                Effect::DependencyReason(false),
                Effect::Publish(None),
            ]
        );
        assert_eq!(shown(&next), ProcessState::Starting);
        assert!(!makes_event(&next));
        assert!(matches!(idle_of(&next), Some(Idle::Exited { held_after: None, .. })));
    }

    #[test]
    fn an_exit_before_ready_that_the_dependency_explains_is_not_counted() {
        let (next, effects) = step(&Phase::Starting, exit(false, Some(4)));
        assert_eq!(
            next,
            Phase::Exited {
                reason: "exited before it was ready: killed by signal 9 (SIGKILL)".into(),
                held_after: Some(4)
            }
        );
        assert!(
            !effects.iter().any(|e| matches!(e, Effect::CountFailure(_))),
            "{effects:?}"
        );
        assert!(effects.contains(&Effect::DependencyReason(true)));
        assert_eq!(shown(&next), ProcessState::Backoff);
        assert!(makes_event(&next));
        // A crash after readiness is the child's own, whatever its log says.
        let (next, effects) = step(&Phase::Running, exit(true, Some(4)));
        assert!(matches!(next, Phase::Exited { held_after: None, .. }));
        assert!(effects.contains(&Effect::CountFailure(Duration::from_secs(3))));
    }

    #[test]
    fn an_exit_without_a_process_and_a_stale_verdict_change_nothing() {
        for phase in [Phase::Stopped, Phase::Failed, Phase::Held(1)] {
            assert_eq!(step(&phase, exit(true, None)), (phase.clone(), Vec::new()));
        }
        let verdict = Input::Settle(Settle::Failed { detail: "x".into() });
        for phase in [Phase::Running, Phase::Starting, Phase::Stopped, Phase::Failed] {
            assert_eq!(step(&phase, verdict.clone()), (phase.clone(), Vec::new()));
        }
    }

    #[test]
    fn a_failed_recovery_is_a_failure_unless_the_dependency_explains_it() {
        let failed = |held_after| Input::RecoveryFailed {
            summary: "exited during startup (exited with code 0)".into(),
            status: Some("exited with code 0".into()),
            held_after,
        };
        let (next, effects) = step(&Phase::Stopped, failed(None));
        assert_eq!(
            next,
            Phase::Exited {
                reason: "restart failed: exited during startup (exited with code 0)".into(),
                held_after: None
            }
        );
        assert_eq!(
            effects[..2],
            [
                Effect::LastExit("exited during startup (exited with code 0)".into()),
                Effect::CountFailure(Duration::ZERO)
            ]
        );
        let (next, effects) = step(&Phase::Stopped, failed(Some(2)));
        assert!(matches!(
            next,
            Phase::Exited {
                held_after: Some(2),
                ..
            }
        ));
        assert_eq!(effects[0], Effect::LastExit("exited with code 0".into()));
        assert!(!effects.iter().any(|e| matches!(e, Effect::CountFailure(_))));
    }

    #[test]
    fn verdicts_enter_backoff_failed_or_held() {
        let exited = Phase::Exited {
            reason: "crashed: exited with code 3".into(),
            held_after: None,
        };
        let until = Instant::now();
        let (next, effects) = step(
            &exited,
            Input::Settle(Settle::Backoff {
                until,
                detail: "restarting in 500 ms".into(),
            }),
        );
        assert_eq!(next, Phase::Backoff(until));
        assert_eq!(
            effects.last(),
            Some(&Effect::Publish(Some("restarting in 500 ms".into())))
        );
        assert_eq!(idle_of(&next), Some(Idle::Backoff { until }));

        let (next, effects) = step(
            &exited,
            Input::Settle(Settle::Failed {
                detail: "crash loop".into(),
            }),
        );
        assert_eq!(next, Phase::Failed);
        assert!(effects.contains(&Effect::ReadTail), "{effects:?}");
        assert_eq!((shown(&next), idle_of(&next)), (ProcessState::Failed, None));

        let (next, effects) = step(&exited, Input::Settle(Settle::Held { after: 9 }));
        assert_eq!(next, Phase::Held(9));
        assert!(effects.contains(&Effect::DependencyReason(true)));
        assert_eq!(shown(&next), ProcessState::Backoff);
    }
}
