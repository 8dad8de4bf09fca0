//! How often the same cure is tried for the same failure: a pure backoff,
//! so that a fault no reconcile cures (tokens refused while every file
//! agrees) costs a probe and a reconcile pass 1 s, 2 s, 4 s ... then 60 s
//! apart instead of a busy loop.

use std::time::Duration;

use tokio::time::Instant;

/// The first pause after a failure.
pub(crate) const FIRST: Duration = Duration::from_secs(1);
/// The longest pause.
pub(crate) const MAX: Duration = Duration::from_secs(60);

/// What a failure is about: a change of any part is a new failure, tried
/// again at once (the config, the livekit-server process, the kind of
/// failure). lk-backend's pid is left out on purpose: restarting lk-backend
/// is what the cure may do, and a cure must not reset its own backoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RetryKey {
    pub in_memory_hash: String,
    pub livekit_pid: Option<u32>,
    /// `refused`, `failed` or `outdated`.
    pub what: &'static str,
}

/// One recorded attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attempt {
    /// 1 for the first attempt at this failure.
    pub attempt: u32,
    /// The pause before the next one.
    pub delay: Duration,
    /// When the next one is due.
    pub due: Instant,
}

/// The backoff of one kind of cure.
#[derive(Debug, Default)]
pub(crate) struct Retry {
    last: Option<(RetryKey, Attempt)>,
}

impl Retry {
    /// Records an attempt at `key`'s failure made at `now`: the pause
    /// doubles from [`FIRST`] up to [`MAX`] while the key stays the same,
    /// and starts again from [`FIRST`] for another key.
    pub fn failed(&mut self, key: RetryKey, now: Instant) -> Attempt {
        let (attempt, delay) = match &self.last {
            Some((k, a)) if *k == key => (a.attempt.saturating_add(1), (a.delay * 2).min(MAX)),
            _ => (1, FIRST),
        };
        let a = Attempt {
            attempt,
            delay,
            due: now + delay,
        };
        self.last = Some((key, a));
        a
    }

    /// The failure is gone.
    pub fn clear(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(hash: &str, pid: Option<u32>, what: &'static str) -> RetryKey {
        RetryKey {
            in_memory_hash: hash.into(),
            livekit_pid: pid,
            what,
        }
    }

    #[test]
    fn the_same_failure_backs_off_doubling_to_a_minute() {
        let now = Instant::now();
        let mut r = Retry::default();
        let delays: Vec<u64> = (0..9)
            .map(|_| r.failed(key("h", Some(1), "refused"), now).delay.as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        let a = r.failed(key("h", Some(1), "refused"), now);
        assert_eq!(a.attempt, 10);
        assert_eq!(a.due, now + MAX);
    }

    #[test]
    fn any_change_of_config_child_or_kind_starts_again() {
        let now = Instant::now();
        let table = [
            key("other config", Some(1), "refused"),
            key("h", Some(2), "refused"),
            key("h", None, "refused"),
            key("h", Some(1), "failed"),
            key("h", Some(1), "outdated"),
        ];
        for changed in table {
            let mut r = Retry::default();
            for _ in 0..4 {
                r.failed(key("h", Some(1), "refused"), now);
            }
            let a = r.failed(changed.clone(), now);
            assert_eq!((a.attempt, a.delay), (1, FIRST), "{changed:?}");
        }
    }

    #[test]
    fn a_success_clears_the_backoff() {
        let now = Instant::now();
        let mut r = Retry::default();
        for _ in 0..5 {
            r.failed(key("h", Some(1), "refused"), now);
        }
        r.clear();
        assert_eq!(r.failed(key("h", Some(1), "refused"), now).delay, FIRST);
    }
}
