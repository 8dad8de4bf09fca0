//! The service's background tasks, each spawned on the service's task
//! tracker and ended by its cancellation token ([`LivekitService::shutdown`]):
//!
//! - the one reconciler: a single task that runs the background reconcile
//!   whenever it is woken ([`Wake`], a coalescing signal: triggers that
//!   arrive while a pass runs are folded into the next one) by boot, the
//!   periodic tick (`HERO_LIVEKIT_DRIFT_CHECK_MS`, 0 turns it off), a
//!   token-chain verdict, a child's status change, a backoff that is due
//!   and a Redis check (these three make an exits-only pass: what follows
//!   an exit is decided at once, without reading the files);
//! - the token-chain probe, which backs off ([`super::retry::Retry`]) while
//!   a failure that the reconcile does not cure lasts;
//! - the Redis check.

use std::future::Future;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use hero_livekit_proto::{Event, ProcessName, ProcessState, RedisHealth, TokenChainHealth};
use tokio::sync::Notify;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::health::{BackendReport, Chain, ChildrenNow, Fingerprint, View};
use super::plan::Intent;
use super::probe;
use super::reconcile::{Desired, Step, Target};
use super::retry::{Retry, RetryKey};
use super::{
    period_from_env, target, unix_ms, LivekitService, DEFAULT_PROBE, DEFAULT_READY_TIMEOUT, DEFAULT_REDIS_CHECK,
    DEFAULT_TICK, PROBE_TIMEOUT, REDIS_PING_TIMEOUT,
};
use crate::config;
use crate::install;
use crate::metrics::ProbeResult;
use crate::supervise::Child;

/// What woke the reconciler since it last looked. Requests that arrive
/// while a pass runs coalesce: the next pass serves them all at once.
#[derive(Debug, Default)]
pub(super) struct Wake {
    pending: StdMutex<Pending>,
    /// When a backoff is due (kept apart from `pending`: a pass does not
    /// consume it, its instant passing does).
    due: StdMutex<Option<Instant>>,
    notify: Notify,
}

#[derive(Debug, Default)]
struct Pending {
    /// The first trigger asked for since the last pass (names the heal).
    trigger: Option<&'static str>,
    /// The tick asked: the files are re-read in full.
    drift: bool,
    /// A probe found the token refused while every observation agreed.
    chain_refused: bool,
    /// A trigger asked for a full pass (files and children); without one
    /// the pass only decides what follows an exit.
    full: bool,
}

impl Wake {
    /// Asks for a pass of the reconciler.
    pub(super) fn request(&self, trigger: &'static str, chain_refused: bool) {
        self.update(|p| {
            p.trigger.get_or_insert(trigger);
            p.chain_refused |= chain_refused;
            p.full = true;
        });
    }

    /// Asks for an exits-only pass: a child's status changed, a backoff is
    /// due, Redis was checked.
    fn exits(&self, trigger: &'static str) {
        self.update(|p| {
            p.trigger.get_or_insert(trigger);
        });
    }

    fn drift(&self) {
        self.update(|p| {
            p.drift = true;
            p.full = true;
        });
    }

    /// Makes the reconciler wake itself at `at` (the earliest of those
    /// asked wins; asking again after it passed sets a new one).
    pub(super) fn due_at(&self, at: Instant) {
        let mut due = match self.due.lock() {
            Ok(d) => d,
            Err(poisoned) => poisoned.into_inner(),
        };
        if due.is_none_or(|d| at < d) {
            *due = Some(at);
            drop(due);
            self.notify.notify_one();
        }
    }

    /// The instant the reconciler must wake at, if any.
    fn due(&self) -> Option<Instant> {
        match self.due.lock() {
            Ok(d) => *d,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    /// The due instant passed: forgets it and asks for an exits-only pass.
    fn due_passed(&self) {
        match self.due.lock() {
            Ok(mut d) => *d = None,
            Err(poisoned) => *poisoned.into_inner() = None,
        }
        self.exits("backoff");
    }

    fn update(&self, f: impl FnOnce(&mut Pending)) {
        match self.pending.lock() {
            Ok(mut p) => f(&mut p),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
        // One stored permit: any number of requests wake one pass.
        self.notify.notify_one();
    }

    fn take(&self) -> Pending {
        match self.pending.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }
}

/// The tick's period: `HERO_LIVEKIT_DRIFT_CHECK_MS`, where 0 turns the tick
/// off (a test that must know which trigger acts), else 5 s.
fn tick_period() -> Option<Duration> {
    match std::env::var("HERO_LIVEKIT_DRIFT_CHECK_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        Some(0) => None,
        Some(ms) => Some(Duration::from_millis(ms)),
        None => Some(DEFAULT_TICK),
    }
}

/// The next tick, or never when the tick is off.
async fn next_tick(tick: Option<&mut Interval>) {
    match tick {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// State and pid of each child: what a probe's verdict is about, besides
/// the config. A change of either is worth a new probe even while a
/// failure backs off.
type Subject = [(ProcessState, Option<u32>); 2];

fn subject(lk: &Child, be: &Child) -> Subject {
    let one = |c: &Child| {
        let h = c.health();
        (h.state, h.pid)
    };
    [one(lk), one(be)]
}

/// A failed probe's retry: when the next one is due, and what it was about.
struct Backoff {
    due: Instant,
    subject: Subject,
}

impl LivekitService {
    /// Spawns `task` on the service's tracker; it ends when the service's
    /// cancellation token is cancelled, at whichever await it waits.
    pub(super) fn spawn_task(&self, task: impl Future<Output = ()> + Send + 'static) {
        let cancel = self.cancel.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = task => {}
            }
        });
    }

    /// Asks the reconciler for a background pass.
    pub(super) fn request_reconcile(&self, trigger: &'static str, chain_refused: bool) {
        self.wake.request(trigger, chain_refused);
    }

    /// The one reconciler task: a pass per wake (coalesced), per tick, per
    /// status change of a child, per Redis check and when a backoff is due.
    /// Each pass takes the ops lock, so it queues behind a mutation in
    /// progress and never interleaves with one.
    pub(super) fn start_reconciler(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let wake = Arc::clone(&self.wake);
        let (mut lk, mut be) = (self.livekit.clone(), self.backend.clone());
        let mut redis = self.redis_state.subscribe();
        self.spawn_task(async move {
            let mut tick = tick_period().map(|p| {
                let mut t = tokio::time::interval_at(Instant::now() + p, p);
                t.set_missed_tick_behavior(MissedTickBehavior::Delay);
                t
            });
            loop {
                let due = wake.due();
                tokio::select! {
                    () = wake.notify.notified() => {}
                    () = next_tick(tick.as_mut()) => wake.drift(),
                    () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => wake.due_passed(),
                    alive = lk.changed() => if alive { wake.exits("child") } else { return },
                    alive = be.changed() => if alive { wake.exits("child") } else { return },
                    changed = redis.changed() => if changed.is_ok() { wake.exits("redis") } else { return },
                }
                let pending = wake.take();
                let trigger = match (pending.trigger, pending.drift) {
                    (Some(t), _) => t,
                    (None, true) => "drift",
                    (None, false) => continue,
                };
                let Some(svc) = weak.upgrade() else { return };
                let mut d = svc.desired.lock().await;
                if pending.drift {
                    // A same-size in-place edit within one timestamp tick
                    // escapes the health cache's stat check.
                    match svc.cache.lock() {
                        Ok(mut c) => c.invalidate(),
                        Err(poisoned) => poisoned.into_inner().invalidate(),
                    }
                }
                if pending.full {
                    svc.reconcile_background(&mut d, trigger, pending.chain_refused).await;
                } else {
                    svc.reconcile_exits(&mut d, trigger).await;
                }
            }
        });
    }

    /// A reconcile nobody waits for: its failures are logged (and shown by
    /// `health`), and the next wake or tick tries again.
    pub(super) async fn reconcile_background(&self, d: &mut Desired, trigger: &'static str, chain_failed: bool) {
        // A refusal is acted on only while it is about the state as it is
        // now: one found in the middle of a mutation (one child restarted,
        // the other not yet) is stale once the mutation is done.
        let still_refused = chain_failed && {
            let v = self.view.borrow();
            v.chain.refused && !v.chain.last.ok && v.chain.probed.as_ref() == Some(&self.children_now(&v).fingerprint)
        };
        let intent = Intent {
            unexplained_chain_failure: still_refused && d.may_restart_blindly(),
            ..Intent::default()
        };
        let target = self.retarget_if_replaced(d).await;
        let step = Step {
            trigger,
            target,
            intent,
            timeout: DEFAULT_READY_TIMEOUT,
        };
        match self.reconcile(d, step).await {
            Ok(r) => {
                if r.blind_restart {
                    d.note_blind_restart();
                }
                for (name, e) in r.errors {
                    tracing::warn!(process = %name, error = %e, trigger, "reconcile could not bring the child up");
                }
            }
            Err(e) => tracing::warn!(error = %e, trigger, "reconcile failed; the next tick retries"),
        }
    }

    /// A pass that only decides what follows an exit: no file is read, and
    /// no running child is touched (the full passes check those).
    pub(super) async fn reconcile_exits(&self, d: &mut Desired, trigger: &'static str) {
        let step = Step {
            trigger,
            target: Target::Current,
            intent: Intent {
                exits_only: true,
                ..Intent::default()
            },
            timeout: DEFAULT_READY_TIMEOUT,
        };
        if let Err(e) = self.reconcile(d, step).await {
            tracing::warn!(error = %e, trigger, "reconcile after an exit failed; the next tick retries");
        }
    }

    /// The reconcile's target when the livekit-server binary is another one
    /// than the renderings' version was detected for (an install, or a
    /// binary replaced by hand): the config rendered for the version the new
    /// one is. One `stat` when nothing changed. Must hold `desired`.
    pub(super) async fn retarget_if_replaced(&self, d: &mut Desired) -> Target {
        let bin = &self.spec_paths.livekit_bin;
        let stamp = target::stamp(bin).await;
        if stamp == d.binary_stamp {
            return Target::Current;
        }
        d.binary_stamp = stamp;
        let (bin2, record) = (bin.clone(), self.paths.install_record());
        d.installed = tokio::task::spawn_blocking(move || install::installed(&bin2, &record))
            .await
            .unwrap_or(None);
        self.publish_desired(d);
        let version = target::detect(bin, d.installed.as_ref()).await;
        if version == d.rendered.config().livekit_version {
            return Target::Current;
        }
        tracing::info!(
            from = ?d.rendered.config().livekit_version.map(|v| v.to_string()),
            to = ?version.map(|v| v.to_string()),
            "livekit-server binary changed; livekit.yaml is rendered for its version"
        );
        let mut c = d.rendered.config().clone();
        c.livekit_version = version;
        Target::Config(Box::new(c))
    }

    /// The token-chain probe: after every change (the children's state, the
    /// config, a wake from a mutation) and every few seconds; while a
    /// failure lasts, only on a change of config or child, or when its
    /// backoff is due (1 s doubling to 60 s): a fault the reconcile cannot
    /// cure costs next to nothing.
    pub(super) fn start_probe(self: &Arc<Self>) {
        let period = period_from_env("HERO_LIVEKIT_TOKEN_PROBE_MS", DEFAULT_PROBE);
        let weak = Arc::downgrade(self);
        let wake = Arc::clone(&self.probe_wake);
        let (mut lk, mut be, mut view) = (self.livekit.clone(), self.backend.clone(), self.view.subscribe());
        self.spawn_task(async move {
            let mut retry = Retry::default();
            loop {
                let backoff = {
                    // Upgraded only for one probe, so that the task never
                    // keeps the service alive while it waits.
                    let Some(svc) = weak.upgrade() else { return };
                    svc.probe_once(&mut retry)
                        .await
                        .map(|due| Backoff {
                            due,
                            subject: subject(&svc.livekit, &svc.backend),
                        })
                };
                let until = backoff.as_ref().map_or_else(|| Instant::now() + period, |b| b.due);
                let sleep = tokio::time::sleep_until(until);
                tokio::pin!(sleep);
                // A wake or a status change of a child ends the wait, unless
                // a failure backs off and nothing it was about changed.
                let moved = |lk: &Child, be: &Child| backoff.as_ref().is_none_or(|b| b.subject != subject(lk, be));
                loop {
                    tokio::select! {
                        () = &mut sleep => break,
                        () = wake.notified() => if backoff.is_none() { break },
                        alive = lk.changed() => if !alive { return } else if moved(&lk, &be) { break },
                        alive = be.changed() => if !alive { return } else if moved(&lk, &be) { break },
                        changed = view.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            // Only a new config needs a new proof; the
                            // probe's own results change the view too.
                            let v = view.borrow_and_update();
                            if v.chain.probed.as_ref().is_some_and(|p| p.in_memory_hash != v.rendered.in_memory_hash()) {
                                break;
                            }
                        }
                    }
                }
            }
        });
    }

    /// The children and the fingerprint of what a probe would prove, from
    /// one look at each child's status.
    pub(super) fn children_now(&self, view: &View) -> ChildrenNow {
        let (livekit, lk_gen) = self.livekit.health_and_generation();
        let (backend, be_gen) = self.backend.health_and_generation();
        ChildrenNow {
            livekit,
            backend,
            fingerprint: Fingerprint {
                in_memory_hash: view.rendered.in_memory_hash().to_string(),
                livekit: lk_gen,
                backend: be_gen,
            },
        }
    }

    /// One probe. A failure (or a child that runs another file than the
    /// rendering) asks the reconciler for a pass, and returns when the next
    /// probe is due: the same failure about the same config and
    /// livekit-server is retried 1 s, 2 s, ... up to 60 s apart.
    async fn probe_once(self: &Arc<Self>, retry: &mut Retry) -> Option<Instant> {
        let (now, ports, expected_backend, expected_livekit) = {
            let v = self.view.borrow();
            let c = v.rendered.config();
            (
                self.children_now(&v),
                (c.backend_port, c.port, c.mint_secret()),
                v.rendered.sha256(config::TripleFile::BackendEnv).to_string(),
                v.rendered.sha256(config::TripleFile::LivekitYaml).to_string(),
            )
        };
        // livekit-server spawned onto a file that a heal replaced a moment
        // later (a crash restart racing the repair of a drift) runs, as far
        // as anyone can prove, an outdated rendering: nothing else would ask
        // the reconcile to restart it before the next tick.
        let livekit_outdated = now.livekit.ready
            && now
                .livekit
                .config_sha256
                .as_deref()
                .is_some_and(|sha| sha != expected_livekit);
        let not_ready = [
            (&now.livekit, ProcessName::LivekitServer),
            (&now.backend, ProcessName::LkBackend),
        ]
        .into_iter()
        .find(|(h, _)| !h.ready)
        .map(|(h, name)| format!("{name} is not ready ({})", h.state));
        let ran = not_ready.is_none();
        let checked_at_ms = unix_ms();
        let (outcome, backend) = match not_ready {
            Some(why) => (
                probe::ProbeOutcome {
                    accepted: false,
                    refused: false,
                    error: Some(why),
                    backend_sha256: None,
                    latency: Duration::ZERO,
                },
                None,
            ),
            None => {
                let o = probe::probe(ports.0, ports.1, &ports.2, PROBE_TIMEOUT).await;
                let report = now.backend.pid.map(|pid| BackendReport {
                    pid,
                    sha256: o.backend_sha256.clone(),
                });
                (o, report)
            }
        };
        // A verdict about a state that changed while it ran proves nothing:
        // probe again at once.
        let after = self.children_now(&self.view.borrow()).fingerprint;
        if after != now.fingerprint {
            self.probe_wake.notify_one();
            return None;
        }
        let result = match (ran, outcome.accepted, outcome.refused) {
            (false, ..) => ProbeResult::NotReady,
            (true, true, _) => ProbeResult::Accepted,
            (true, false, true) => ProbeResult::Refused,
            (true, false, false) => ProbeResult::Failed,
        };
        self.metrics.count_probe(result, outcome.latency);
        let backend_outdated = backend
            .as_ref()
            .is_some_and(|r| r.sha256.as_deref() != Some(expected_backend.as_str()));
        let children_up = backend.is_some();
        let failed = children_up && (!outcome.accepted || backend_outdated || livekit_outdated);
        // What the reconcile is asked to cure, and when it is asked again if
        // this does not: the key leaves lk-backend's pid out, since
        // restarting lk-backend is what the reconcile may try.
        let attempt = failed.then(|| {
            let what = match (outcome.accepted, outcome.refused) {
                (false, true) => "refused",
                (false, false) => "failed",
                (true, _) => "outdated",
            };
            retry.failed(
                RetryKey {
                    in_memory_hash: now.fingerprint.in_memory_hash.clone(),
                    livekit_pid: now.livekit.pid,
                    what,
                },
                Instant::now(),
            )
        });
        if !failed && outcome.accepted {
            retry.clear();
        }
        let error = outcome.error.clone().map(|e| match &attempt {
            Some(a) => format!(
                "{e} (attempt {} to cure it by a reconcile, which restarts lk-backend at most every 30 s; next try in {} s)",
                a.attempt,
                a.delay.as_secs()
            ),
            None => e,
        });
        let was_ok = self.view.borrow().chain.last.ok;
        let last = TokenChainHealth {
            ok: outcome.accepted,
            checked_at_ms,
            latency_ms: u64::try_from(outcome.latency.as_millis()).unwrap_or(u64::MAX),
            error: error.clone(),
        };
        self.update_view(|v| {
            v.chain = Chain {
                last,
                probed: Some(now.fingerprint.clone()),
                backend: backend.clone(),
                refused: outcome.refused,
            };
            true
        });
        let attempt = attempt?;
        if !outcome.accepted {
            // Once per attempt: the attempts back off, so do the events.
            let error = error.unwrap_or_default();
            tracing::warn!(%error, "token chain failed");
            self.events.publish(Event::TokenChainFailed { error });
            // Only a refusal says the credentials differ; a leg that did not
            // answer is a crash its supervisor is already handling.
            self.request_reconcile("token_chain", outcome.refused);
        } else {
            self.request_reconcile("token_chain", false);
        }
        if outcome.accepted && !was_ok {
            tracing::info!(latency_ms = outcome.latency.as_millis() as u64, "token chain proven");
        }
        Some(attempt.due)
    }

    /// Checks every few seconds (and at once after `configure`) whether the
    /// configured Redis answers, so that `health` can say so without ever
    /// waiting on the network itself.
    pub(super) fn start_redis_check(self: &Arc<Self>) {
        let period = period_from_env("HERO_LIVEKIT_REDIS_CHECK_MS", DEFAULT_REDIS_CHECK);
        let weak = Arc::downgrade(self);
        let wake = Arc::clone(&self.redis_wake);
        self.spawn_task(async move {
            loop {
                {
                    let Some(svc) = weak.upgrade() else { return };
                    let target = crate::redis::RedisTarget::from_config(svc.view.borrow().rendered.config());
                    let checked = match &target {
                        None => None,
                        Some(target) => {
                            let result = crate::redis::ping(target, REDIS_PING_TIMEOUT).await;
                            Some(RedisHealth {
                                address: target.describe(),
                                reachable: result.is_ok(),
                                error: result.err().map(|e| e.message),
                            })
                        }
                    };
                    svc.redis_state.send_modify(|s| {
                        s.checks += 1;
                        s.configured = checked.is_some();
                        s.down = checked.as_ref().and_then(|c| c.error.clone());
                    });
                    svc.set_redis(checked);
                }
                tokio::select! {
                    () = tokio::time::sleep(period) => {}
                    () = wake.notified() => {}
                }
            }
        });
    }

    pub(super) fn set_redis(&self, checked: Option<RedisHealth>) {
        self.update_view(|v| {
            if v.redis == checked {
                return false;
            }
            match &checked {
                Some(RedisHealth {
                    address,
                    reachable: true,
                    ..
                }) => tracing::info!(%address, "redis answers"),
                Some(RedisHealth { error: Some(error), .. }) => tracing::warn!(%error, "redis check failed"),
                _ => {}
            }
            v.redis = checked;
            true
        });
    }

    /// Waits (bounded) until the probe has proven the chain for the state as
    /// it is now, so that a `start` that returns ready is a proven one.
    pub(super) async fn await_proof(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.view.subscribe();
        self.probe_wake.notify_one();
        loop {
            // A probe ran against the state as it is now and got an answer:
            // accepted, or refused (a 401 the next probe would only repeat).
            // A leg that did not answer in time (a loaded machine, a server
            // still warming up) is retried by the probe within the second,
            // so the wait goes on for it until the deadline.
            let settled = {
                let v = rx.borrow_and_update();
                let fp = self.children_now(&v).fingerprint;
                v.chain.probed.as_ref() == Some(&fp) && (v.chain.last.ok || v.chain.refused)
            };
            if settled {
                return;
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
#[path = "background_tests.rs"]
mod tests;
