//! A child's outside dependency (Redis, for livekit-server): when the
//! child stops because of it, the supervisor waits for the dependency
//! instead of spending the crash budget.
//!
//! livekit-server PINGs Redis at startup and, when it cannot, prints
//! `unable to connect to redis: ...` and exits 0; restarting it before Redis
//! answers only fills the crash-loop window until the child is `failed`,
//! and a `failed` child waits for an operator. So an exit whose log names
//! the dependency, while the dependency is configured, holds the child
//! (`backoff`, with the reason) until a check that ran after the exit says
//! the dependency answers; then it is started again, its failure history
//! untouched.
//!
//! The same observation explains a running livekit-server that answers
//! `GET /` with 406 `Not Ready` (its node stats go stale without Redis):
//! it is reported not ready with the reason, and never restarted for it,
//! since a restart cannot bring Redis back.

use std::sync::Arc;

use tokio::sync::{watch, Notify};

/// The dependency as its last check left it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DependencyState {
    /// Checks completed so far; a hold waits for one newer than itself.
    pub checks: u64,
    /// Whether the dependency is configured at all; without it an exit is
    /// only an exit.
    pub configured: bool,
    /// Why the last check failed, when it did (never a secret).
    pub down: Option<String>,
}

/// What a supervisor needs to know about one dependency.
#[derive(Debug, Clone)]
pub struct Dependency {
    /// Its name in messages: `Redis`.
    pub what: &'static str,
    /// A line of the child's log that says the child stopped because of it
    /// (matched case-insensitively).
    pub exit_marker: &'static str,
    /// The checker's published state.
    pub state: watch::Receiver<DependencyState>,
    /// Asks the checker for a check now.
    pub recheck: Arc<Notify>,
}

impl Dependency {
    /// Whether an exit with this log tail is the dependency's doing, and
    /// the check count the release must exceed. Asks for a fresh check, so
    /// a dependency that went away since the last one is seen at once.
    pub(crate) fn explains_exit(&self, log_tail: &[String]) -> Option<u64> {
        let state = self.state.borrow().clone();
        if !state.configured {
            return None;
        }
        let marker = self.exit_marker.to_ascii_lowercase();
        if !log_tail.iter().any(|l| l.to_ascii_lowercase().contains(&marker)) {
            return None;
        }
        self.recheck.notify_one();
        Some(state.checks)
    }

    /// Why the child waits, in words for `health`.
    pub(crate) fn reason(&self) -> String {
        let state = self.state.borrow();
        match &state.down {
            Some(why) => format!("waiting for {}: {why}", self.what),
            None => format!("waiting for {} (checking it again)", self.what),
        }
    }

    /// Why a running child that answers 406 is not ready, or `None` when
    /// the dependency answers (the 406 is then the child's own business).
    pub(crate) fn explains_not_ready(&self) -> Option<String> {
        let state = self.state.borrow();
        if !state.configured {
            return None;
        }
        state.down.as_ref().map(|why| {
            format!(
                "answers GET / with 406 Not Ready while {} is unreachable: {why}",
                self.what
            )
        })
    }

    /// Whether the dependency is configured and down now.
    pub(crate) fn is_down(&self) -> bool {
        let state = self.state.borrow();
        state.configured && state.down.is_some()
    }
}

/// Whether a check newer than `after` says the dependency answers (or it
/// is no longer configured): what releases a child held for it. The
/// reconcile asks; the state comes from the checker.
pub fn releases(s: &DependencyState, after: u64) -> bool {
    s.checks > after && (s.down.is_none() || !s.configured)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep() -> (watch::Sender<DependencyState>, Dependency) {
        let (tx, rx) = watch::channel(DependencyState::default());
        let d = Dependency {
            what: "Redis",
            exit_marker: "unable to connect to redis",
            state: rx,
            recheck: Arc::new(Notify::new()),
        };
        (tx, d)
    }

    #[test]
    fn only_a_configured_dependency_named_in_the_log_explains_an_exit() {
        let (tx, d) = dep();
        let tail = vec![
            "starting".to_string(),
            "Unable to connect to Redis: refused".to_string(),
        ];
        assert_eq!(d.explains_exit(&tail), None, "not configured");
        tx.send_replace(DependencyState {
            checks: 3,
            configured: true,
            down: Some("redis at 127.0.0.1:1: unreachable".into()),
        });
        assert_eq!(d.explains_exit(&tail), Some(3));
        assert_eq!(d.explains_exit(&["could not parse config".to_string()]), None);
        assert_eq!(d.reason(), "waiting for Redis: redis at 127.0.0.1:1: unreachable");
        assert!(d.is_down());
        assert!(d.explains_not_ready().is_some_and(|r| r.contains("406")));
    }

    #[test]
    fn a_hold_ends_only_with_a_newer_check_that_passes() {
        let state = |checks, down: Option<&str>| DependencyState {
            checks,
            configured: true,
            down: down.map(str::to_owned),
        };
        // The check that passed before the exit does not release it; a
        // newer failing one keeps it held; a newer passing one releases.
        assert!(!releases(&state(5, None), 5));
        assert!(!releases(&state(6, Some("refused")), 5));
        assert!(releases(&state(7, None), 5));
        let unconfigured = DependencyState {
            checks: 6,
            configured: false,
            down: Some("stale".into()),
        };
        assert!(releases(&unconfigured, 5), "no longer configured: nothing to wait for");
    }
}
