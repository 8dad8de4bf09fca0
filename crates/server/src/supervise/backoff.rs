//! The restart policy: a pure function from the failure history to a
//! decision. The supervising task records failures and applies decisions;
//! everything worth testing about restarts lives here.

use std::time::Duration;

use tokio::time::Instant;

/// One unexpected exit (or failed restart attempt) of a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// When it happened (tokio's clock, so tests can pause and advance it).
    pub at: Instant,
    /// How long the process had run; zero for an attempt that never got ready.
    pub ran_for: Duration,
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Restart at once: the first failure after a healthy run (a media
    /// server that is down is an outage).
    RestartNow,
    /// Restart after this pause: repeated failures.
    RestartAfter(Duration),
    /// Stop trying: a crash loop. The child goes to `failed` until `start`.
    Fail,
}

/// Tunables of [`BackoffPolicy::decide`]; the defaults follow SPEC section 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Pause before the second restart in a row; doubles after each further one.
    pub initial: Duration,
    /// Longest pause.
    pub max: Duration,
    /// A run at least this long is healthy: it forgets earlier failures.
    pub healthy_reset: Duration,
    /// Window in which `crash_limit` failures make a crash loop.
    pub crash_window: Duration,
    /// Failures within `crash_window` that make a crash loop.
    pub crash_limit: usize,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            healthy_reset: Duration::from_secs(60),
            crash_window: Duration::from_secs(120),
            crash_limit: 5,
        }
    }
}

impl BackoffPolicy {
    /// Decides what follows the last entry of `history` (oldest first; the
    /// last entry is the failure that just happened).
    ///
    /// Failures count from the last healthy run on (a run of at least
    /// `healthy_reset`): the first is restarted at once, the n-th after
    /// `initial * 2^(n-2)` capped at `max`; `crash_limit` of them within
    /// `crash_window` of the last one is a crash loop.
    pub fn decide(&self, history: &[Failure]) -> Decision {
        let Some(last) = history.last() else {
            return Decision::RestartNow;
        };
        let streak_start = history
            .iter()
            .rposition(|f| f.ran_for >= self.healthy_reset)
            .unwrap_or(0);
        let streak = &history[streak_start..];
        let recent = streak
            .iter()
            .filter(|f| last.at.duration_since(f.at) <= self.crash_window)
            .count();
        if recent >= self.crash_limit.max(1) {
            return Decision::Fail;
        }
        match streak.len() {
            0 | 1 => Decision::RestartNow,
            n => {
                // Past 2^20 the cap has long been reached; stop the shift
                // before it overflows.
                let doublings = u32::try_from(n - 2).unwrap_or(u32::MAX).min(20);
                let pause = self.initial.saturating_mul(1 << doublings);
                Decision::RestartAfter(pause.min(self.max))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A history from (seconds after a base instant, seconds it ran).
    fn history(base: Instant, entries: &[(u64, u64)]) -> Vec<Failure> {
        entries
            .iter()
            .map(|(at, ran)| Failure {
                at: base + Duration::from_secs(*at),
                ran_for: Duration::from_secs(*ran),
            })
            .collect()
    }

    #[test]
    fn decisions_follow_the_policy_table() {
        let p = BackoffPolicy::default();
        let base = Instant::now();
        // (what, failures as (seconds after base, seconds it ran), decision)
        type Case = (&'static str, &'static [(u64, u64)], Decision);
        let cases: &[Case] = &[
            ("empty history", &[], Decision::RestartNow),
            ("first crash after a healthy run", &[(100, 100)], Decision::RestartNow),
            ("first crash after a short run", &[(3, 3)], Decision::RestartNow),
            ("second in a row", &[(3, 3), (4, 1)], Decision::RestartAfter(ms(500))),
            (
                "third in a row",
                &[(3, 3), (4, 1), (5, 0)],
                Decision::RestartAfter(ms(1000)),
            ),
            (
                "fourth in a row",
                &[(3, 3), (4, 1), (5, 0), (7, 1)],
                Decision::RestartAfter(ms(2000)),
            ),
            (
                "fifth within 120 s",
                &[(3, 3), (4, 1), (5, 0), (7, 1), (9, 1)],
                Decision::Fail,
            ),
            (
                "five spread beyond 120 s back off, no loop",
                &[(0, 50), (50, 50), (100, 50), (150, 50), (200, 50)],
                Decision::RestartAfter(ms(4000)),
            ),
            (
                "a minute of health resets the streak",
                &[(3, 3), (4, 1), (5, 0), (7, 1), (70, 63)],
                Decision::RestartNow,
            ),
            (
                "after a reset the streak counts again",
                &[(3, 3), (4, 1), (5, 0), (70, 65), (71, 1)],
                Decision::RestartAfter(ms(500)),
            ),
            (
                "long streak is capped at max",
                &[
                    (0, 59),
                    (60, 59),
                    (120, 59),
                    (180, 59),
                    (240, 59),
                    (300, 59),
                    (360, 59),
                    (420, 59),
                    (480, 59),
                    (540, 59),
                ],
                Decision::RestartAfter(Duration::from_secs(30)),
            ),
        ];
        for (what, entries, want) in cases {
            assert_eq!(p.decide(&history(base, entries)), *want, "{what}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn paused_clock_drives_reset_and_crash_loop() {
        let p = BackoffPolicy::default();
        let mut failures = Vec::new();
        let mut started = Instant::now();
        let crash_after = |failures: &mut Vec<Failure>, started: &mut Instant| {
            let now = Instant::now();
            failures.push(Failure {
                at: now,
                ran_for: now - *started,
            });
            *started = now;
            p.decide(failures)
        };
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(crash_after(&mut failures, &mut started), Decision::RestartNow);
        tokio::time::advance(ms(300)).await;
        assert_eq!(
            crash_after(&mut failures, &mut started),
            Decision::RestartAfter(ms(500))
        );
        tokio::time::advance(ms(800)).await;
        assert_eq!(
            crash_after(&mut failures, &mut started),
            Decision::RestartAfter(ms(1000))
        );
        // A minute of health forgets the streak.
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(crash_after(&mut failures, &mut started), Decision::RestartNow);
        for want in [
            Decision::RestartAfter(ms(500)),
            Decision::RestartAfter(ms(1000)),
            Decision::RestartAfter(ms(2000)),
            Decision::Fail,
        ] {
            tokio::time::advance(Duration::from_secs(2)).await;
            assert_eq!(crash_after(&mut failures, &mut started), want);
        }
    }

    proptest! {
        #[test]
        fn pauses_are_bounded_and_loops_need_the_limit(
            entries in proptest::collection::vec((0u64..600, 0u64..120), 1..40)
        ) {
            let p = BackoffPolicy::default();
            let base = Instant::now();
            let mut entries = entries;
            entries.sort_by_key(|(at, _)| *at);
            let h = history(base, &entries);
            match p.decide(&h) {
                Decision::RestartAfter(d) => {
                    prop_assert!(d >= p.initial && d <= p.max);
                }
                Decision::Fail => {
                    let last = h[h.len() - 1].at;
                    let recent = h.iter()
                        .filter(|f| last.duration_since(f.at) <= p.crash_window)
                        .count();
                    prop_assert!(recent >= p.crash_limit);
                }
                Decision::RestartNow => {
                    prop_assert!(h.len() == 1 || h[h.len() - 1].ran_for >= p.healthy_reset);
                }
            }
        }
    }
}
