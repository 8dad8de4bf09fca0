//! The one level-triggered reconcile: desired state against observed state,
//! through pure planners, applied by the holder of the ops lock.
//!
//! Boot, every mutation, the periodic tick, a failed token-chain probe, a
//! child's status change, a backoff that is due and a Redis check call
//! [`LivekitService::reconcile`] alike; what differs is the [`Step`]:
//! which config is wanted ([`Target`]) and what the caller asks beyond
//! convergence ([`Intent`]; `exits_only` for the passes that only decide
//! what follows an exit, which skip reading the files, so that the first
//! restart after a crash costs no more than it did in the child's task).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::Duration;

use hero_livekit_proto::{ErrorCode, Event, HealReport, ProcessName, ProcessState, StartOutcome};
use tokio::time::Instant;

use super::health::{backend_running_sha256, BackendReport};
use super::plan::{plan_children, ChildAction, ChildObs, IdleObs, Intent};
use super::probe;
use super::specs::child_spec;
use super::target::BinaryStamp;
use super::{internal, LivekitService};
use crate::config::{self, Config, HealPlan, Rendered, TripleFile};
use crate::error::ServiceError;
use crate::install::InstalledInfo;
use crate::supervise::{self, Child, Idle, Settle, Started, SuperviseError};

/// The least time between two restarts of lk-backend for a token-chain
/// failure that no observation explains: a probe that keeps failing for a
/// reason a restart does not cure must not turn into a restart loop.
const BLIND_RESTART_GAP: Duration = Duration::from_secs(30);
/// Bound on asking lk-backend which file it has loaded.
const BACKEND_ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// The desired state, held by the ops lock.
#[derive(Debug)]
pub(crate) struct Desired {
    /// The in-memory config (the one source of truth) and its renderings.
    pub rendered: Arc<Rendered>,
    /// Which children should run: set by `start`, `restart` and `stop`, and
    /// at boot from the records a previous instance left.
    pub want: BTreeMap<ProcessName, bool>,
    /// The installed livekit-server, as its record describes it.
    pub installed: Option<InstalledInfo>,
    /// The binary the renderings' target version was detected for.
    pub binary_stamp: Option<BinaryStamp>,
    last_blind_restart: Option<Instant>,
    /// The files the last full pass could not write: an exits-only pass,
    /// which does not read the files, recovers no child onto them.
    pending_files: Vec<TripleFile>,
}

impl Desired {
    pub fn new(
        rendered: Arc<Rendered>,
        installed: Option<InstalledInfo>,
        binary_stamp: Option<BinaryStamp>,
    ) -> Desired {
        Desired {
            rendered,
            want: ProcessName::ALL.into_iter().map(|n| (n, false)).collect(),
            installed,
            binary_stamp,
            last_blind_restart: None,
            pending_files: Vec::new(),
        }
    }

    pub fn may_restart_blindly(&self) -> bool {
        self.last_blind_restart
            .is_none_or(|at| at.elapsed() >= BLIND_RESTART_GAP)
    }

    pub fn note_blind_restart(&mut self) {
        self.last_blind_restart = Some(Instant::now());
    }
}

/// Which config the files must render.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// The in-memory config.
    Current,
    /// A new config (`configure`); it becomes the truth once `runtime.json`
    /// holds it.
    Config(Box<Config>),
    /// The in-memory config with a freshly minted credential (`start {reset}`).
    Reset,
}

/// One call of the reconcile.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    /// Names the heal in reports and events (`boot`, `configure`, `drift`, ...).
    pub trigger: &'static str,
    pub target: Target,
    pub intent: Intent,
    /// Bound on each child's wait for readiness.
    pub timeout: Duration,
}

/// What a reconcile did.
#[derive(Debug)]
pub(crate) struct Reconciled {
    pub heal: HealReport,
    /// The write that failed, when a file is pending.
    pub write_failure: Option<ServiceError>,
    /// What each child action ended with.
    pub outcomes: BTreeMap<ProcessName, StartOutcome>,
    /// Children that could not be brought to the desired state.
    pub errors: Vec<(ProcessName, SuperviseError)>,
    /// Children stopped or restarted that did not exit on SIGTERM within
    /// the drain deadline and were killed.
    pub killed: Vec<ProcessName>,
    /// Children this stopped that had a process running.
    pub stopped: Vec<ProcessName>,
    /// lk-backend was restarted for an unexplained token-chain failure.
    pub blind_restart: bool,
    /// The earliest instant a child backs off until: the reconciler wakes
    /// itself then.
    pub due: Option<Instant>,
}

impl Reconciled {
    /// What a caller reports when this reconcile did not complete: a
    /// pending write when the caller cannot go on without it (`start`,
    /// `restart`: no child is started onto a stale file), else the first
    /// child that could not be brought to the desired state.
    pub fn failure(&mut self, writes_needed: bool) -> Option<ServiceError> {
        if writes_needed {
            if let Some(e) = self.write_failure.take() {
                return Some(e);
            }
        }
        if self.errors.is_empty() {
            return None;
        }
        let (_, e) = self.errors.remove(0);
        Some(ServiceError::new(e.code(), e.to_string()))
    }
}

impl LivekitService {
    /// Brings files and children to the desired state. Must hold `desired`.
    ///
    /// Files first: what differs from the rendering is rewritten
    /// (`runtime.json` first). A new config becomes the truth as soon as
    /// `runtime.json` holds it; if even that write fails nothing changed and
    /// the error is returned. Then the children: each one that should run is
    /// started when stopped, and restarted when the config it really runs
    /// differs from the rendering now on disk (see [`plan_children`]).
    ///
    /// # Errors
    /// The new config cannot be written at all, or the OS fails the
    /// observation; child failures are in [`Reconciled::errors`].
    pub(super) async fn reconcile(&self, d: &mut Desired, step: Step) -> Result<Reconciled, ServiceError> {
        let (mut heal, write_failure, current_files) = if step.intent.exits_only {
            let current: Vec<TripleFile> = TripleFile::ALL
                .into_iter()
                .filter(|f| !d.pending_files.contains(f))
                .collect();
            (HealReport::default(), None, current)
        } else {
            self.reconcile_files(d, &step).await?
        };

        let full = !step.intent.exits_only;
        let observed = self.observe_children(&d.rendered, full).await;
        let actions = plan_children(&d.rendered, &d.want, &observed, &current_files, &step.intent);
        let rendered = Arc::clone(&d.rendered);
        let act = |name: ProcessName| {
            let action = actions.get(&name).cloned().unwrap_or(ChildAction::Keep);
            let spec = child_spec(name, &rendered, &self.spec_paths);
            let child = self.child(name);
            let (timeout, drain) = (step.timeout, step.intent.drain.unwrap_or(self.stop_timeout));
            async move {
                let result = match &action {
                    ChildAction::Keep => return (name, action, None),
                    ChildAction::Recover(_)
                    | ChildAction::Backoff { .. }
                    | ChildAction::GiveUp(_)
                    | ChildAction::Hold(_) => {
                        self.after_exit(name, child, &action, spec, timeout).await;
                        return (name, action, None);
                    }
                    ChildAction::Start => child
                        .start(spec, timeout)
                        .await
                        .map(|outcome| Started { outcome, killed: false }),
                    ChildAction::Restart(_) => child.restart(spec, timeout, Some(drain)).await,
                    ChildAction::Stop => match child.stop(drain).await {
                        Ok(o) => {
                            tracing::info!(process = %name, killed = o.killed, trigger = step.trigger, "stopped: its target is down");
                            // Only `killed` and whether a process ran are
                            // read for a stop (below).
                            let r = Started {
                                outcome: if o.was_running {
                                    StartOutcome::Started
                                } else {
                                    StartOutcome::AlreadyRunning
                                },
                                killed: o.killed,
                            };
                            return (name, action, Some(Ok(r)));
                        }
                        Err(e) => Err(e),
                    },
                };
                (name, action, Some(result))
            }
        };
        // Both at once: the window in which one child runs the new
        // credential and the other the old is as short as either restart.
        let (a, b) = tokio::join!(act(ProcessName::LivekitServer), act(ProcessName::LkBackend));
        let mut r = Reconciled {
            heal: HealReport::default(),
            write_failure,
            outcomes: BTreeMap::new(),
            errors: Vec::new(),
            blind_restart: false,
            killed: Vec::new(),
            stopped: Vec::new(),
            due: None,
        };
        // The earliest backoff, decided now or earlier: the reconciler wakes
        // itself then.
        let decided = actions.values().filter_map(|a| match a {
            ChildAction::Backoff { until, .. } => Some(*until),
            _ => None,
        });
        let waiting = observed.values().filter_map(|o| match &o.idle {
            Some(IdleObs::Backoff { until, due: false, .. }) => Some(*until),
            _ => None,
        });
        r.due = decided.chain(waiting).min();
        if let Some(due) = r.due {
            self.wake.due_at(due);
        }
        let acted = actions.values().any(|a| *a != ChildAction::Keep);
        for (name, action, result) in [a, b] {
            let Some(result) = result else { continue };
            match result {
                Ok(Started { outcome, killed }) => {
                    if killed {
                        r.killed.push(name);
                    }
                    if action == ChildAction::Stop {
                        if outcome == StartOutcome::Started {
                            r.stopped.push(name);
                        }
                        continue;
                    }
                    if let ChildAction::Restart(reason) = action {
                        let requested = step.intent.restart.contains(&name);
                        if !requested {
                            heal.restarted.push(name);
                            tracing::info!(process = %name, %reason, trigger = step.trigger, "restarted");
                        }
                        if reason == "the token chain failed" {
                            r.blind_restart = true;
                        }
                        self.events.publish(Event::Restarted {
                            process: name,
                            reason: if requested { "requested".into() } else { reason },
                        });
                        r.outcomes.insert(name, StartOutcome::Restarted);
                    } else {
                        r.outcomes.insert(name, outcome);
                    }
                }
                Err(e) => r.errors.push((name, e)),
            }
        }
        r.heal = heal;
        // Whatever happened, the chain must be proven again (an exits-only
        // pass that did nothing changed nothing to prove).
        if full || acted {
            self.probe_wake.notify_one();
        }
        Ok(r)
    }

    /// Carries out what the planner decided after an exit. A recovery is
    /// announced (`restarted`, with the exit as its reason) before the new
    /// process starts; the child reports a failed one as another exit,
    /// which wakes the reconciler again.
    async fn after_exit(
        &self,
        name: ProcessName,
        child: &Child,
        action: &ChildAction,
        spec: supervise::ChildSpec,
        timeout: Duration,
    ) {
        let settled = match action {
            ChildAction::Recover(reason) => {
                tracing::info!(process = %name, %reason, "recovering after an exit");
                self.events.publish(Event::Restarted {
                    process: name,
                    reason: reason.clone(),
                });
                child.recover(spec, timeout).await
            }
            ChildAction::Backoff { until, detail } => {
                child
                    .settle(Settle::Backoff {
                        until: *until,
                        detail: detail.clone(),
                    })
                    .await
            }
            ChildAction::GiveUp(detail) => child.settle(Settle::Failed { detail: detail.clone() }).await,
            ChildAction::Hold(after) => child.settle(Settle::Held { after: *after }).await,
            ChildAction::Keep | ChildAction::Start | ChildAction::Restart(_) | ChildAction::Stop => Ok(()),
        };
        if let Err(e) = settled {
            tracing::warn!(process = %name, error = %e, "after an exit: the child did not take the reconcile's verdict");
        }
    }

    /// The files' half of a full pass: observe, plan, write. Returns the
    /// heal report, the write that failed and the files current on disk.
    async fn reconcile_files(
        &self,
        d: &mut Desired,
        step: &Step,
    ) -> Result<(HealReport, Option<ServiceError>, Vec<TripleFile>), ServiceError> {
        let store = self.store.clone();
        let rendered = Arc::clone(&d.rendered);
        let target = step.target.clone();
        let plan = tokio::task::spawn_blocking(move || {
            let observed = store.observe();
            match target {
                // The common case (start, install, the tick): compare with
                // the renderings already made, rendering nothing.
                Target::Current => Ok(config::plan_rendered(&rendered, &observed)),
                Target::Config(c) if *c == *rendered.config() => Ok(config::plan_rendered(&rendered, &observed)),
                Target::Config(c) => config::plan(Some(&c), &observed, false),
                Target::Reset => config::plan(Some(rendered.config()), &observed, true),
            }
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
        let (heal, write_failure) = self.apply_files(d, plan, step.trigger).await?;
        let current_files: Vec<TripleFile> = TripleFile::ALL
            .into_iter()
            .filter(|f| !heal.pending.iter().any(|p| p == f.name()))
            .collect();
        d.pending_files = TripleFile::ALL
            .into_iter()
            .filter(|f| !current_files.contains(f))
            .collect();
        Ok((heal, write_failure, current_files))
    }

    /// What each child runs now: livekit-server the file it read at spawn
    /// (it reads it only then); lk-backend what it says, asked now, it has
    /// loaded (it re-reads its file on SIGHUP, so neither its record nor an
    /// older answer can be trusted), else its record.
    async fn observe_children(&self, rendered: &Rendered, full: bool) -> BTreeMap<ProcessName, ChildObs> {
        let lk = self.livekit.health();
        let be = self.backend.health();
        let mut be_running = {
            let chain = self.view.borrow().chain.clone();
            backend_running_sha256(&be, &chain)
        };
        if let (true, ProcessState::Running, Some(pid)) = (full, be.state, be.pid) {
            let deadline = Instant::now() + BACKEND_ASK_TIMEOUT;
            match probe::backend_loaded(rendered.config().backend_port, deadline).await {
                Ok(sha256) => {
                    be_running = sha256.clone();
                    let report = BackendReport { pid, sha256 };
                    self.update_view(|v| {
                        let changed = v.chain.backend.as_ref() != Some(&report);
                        v.chain.backend = Some(report);
                        changed
                    });
                }
                Err(e) => tracing::debug!(error = %e, "lk-backend did not say what it has loaded"),
            }
        }
        let current = if full {
            self.binaries_current().await
        } else {
            [true, true]
        };
        [
            (
                ProcessName::LivekitServer,
                ChildObs {
                    state: lk.state,
                    running_sha256: lk.config_sha256,
                    binary_current: current[0],
                    idle: self.idle_obs(&self.livekit, lk.last_exit.clone()),
                },
            ),
            (
                ProcessName::LkBackend,
                ChildObs {
                    state: be.state,
                    running_sha256: be_running,
                    binary_current: current[1],
                    idle: self.idle_obs(&self.backend, be.last_exit.clone()),
                },
            ),
        ]
        .into_iter()
        .collect()
    }

    /// A child without a process after an exit, as the planner needs it:
    /// its failure history, whether its backoff is due, whether Redis (the
    /// dependency of livekit-server) has answered a newer check.
    fn idle_obs(&self, child: &Child, last_exit: Option<String>) -> Option<IdleObs> {
        Some(match child.idle()? {
            Idle::Exited { reason, held_after } => IdleObs::Exited {
                reason,
                failures: child.failures(),
                policy: child.policy(),
                held_after,
            },
            Idle::Backoff { until } => IdleObs::Backoff {
                until,
                due: until <= Instant::now(),
                last_exit,
            },
            Idle::Held { after } => IdleObs::Held {
                released: supervise::dependency_releases(&self.redis_state.borrow(), after),
                what: "Redis",
            },
        })
    }

    /// Whether livekit-server and lk-backend (in that order) run the
    /// program file in place now: two `stat`s, off the runtime thread. An
    /// unknown side (nothing runs, the file is missing) counts as current.
    async fn binaries_current(&self) -> [bool; 2] {
        let running = [self.livekit.running_program(), self.backend.running_program()];
        let files = [self.spec_paths.livekit_bin.clone(), self.spec_paths.backend_bin.clone()];
        let in_place =
            tokio::task::spawn_blocking(move || files.map(|f| std::fs::metadata(f).ok().map(|m| (m.dev(), m.ino()))))
                .await
                .unwrap_or([None, None]);
        [0, 1].map(|i| match (running[i], in_place[i]) {
            (Some(r), Some(f)) => r == f,
            _ => true,
        })
    }

    /// Writes what `plan` says and makes the truth follow `runtime.json`.
    /// Returns the heal report and, when a file could not be written, the
    /// error (the file is then pending and the next reconcile retries it).
    ///
    /// # Errors
    /// `write_failed` when the plan holds a new config and `runtime.json`
    /// could not be written: nothing changed.
    pub(super) async fn apply_files(
        &self,
        d: &mut Desired,
        plan: HealPlan,
        trigger: &str,
    ) -> Result<(HealReport, Option<ServiceError>), ServiceError> {
        let store = self.store.clone();
        // Applied even when nothing is to be written: `apply` then writes and
        // fsyncs nothing but restores mode 0600 on a file someone loosened.
        let plan2 = plan.clone();
        let applied = tokio::task::spawn_blocking(move || store.apply(&plan2))
            .await
            .map_err(internal)?;
        let (written, failure) = match applied {
            Ok(w) => (w, None),
            Err(e) => (e.written.clone(), Some(e)),
        };
        if plan.config == *d.rendered.config() {
            self.metrics().count_drift(&plan.drift, &written);
        }
        let runtime_in_place =
            !plan.writes.contains(&TripleFile::RuntimeJson) || written.contains(&TripleFile::RuntimeJson);
        if plan.config != *d.rendered.config() {
            if !runtime_in_place {
                // runtime.json is written first: nothing else was touched.
                let e = failure.map_or_else(
                    || internal("runtime.json was not written"),
                    |e| ServiceError::new(ErrorCode::WriteFailed, e.to_string()),
                );
                return Err(e);
            }
            // Once runtime.json holds the new config it is the truth, as the
            // next boot would find it: the rest of the triple follows.
            d.rendered = Arc::new(Rendered::new(plan.config.clone()));
            self.publish_desired(d);
        }
        let pending: Vec<String> = plan
            .writes
            .iter()
            .filter(|f| !written.contains(f))
            .map(|f| f.name().to_string())
            .collect();
        let write_error = failure.as_ref().map(ToString::to_string);
        let report = HealReport {
            trigger: trigger.to_string(),
            drift: plan.drift.clone(),
            written: written.iter().map(|f| f.name().to_string()).collect(),
            minted: plan.minted,
            restarted: Vec::new(),
            pending,
            write_error: write_error.clone(),
        };
        if !report.written.is_empty() {
            tracing::info!(trigger, written = ?report.written, drift = ?report.drift, minted = plan.minted, "healed config triple");
            self.events.publish(Event::Healed {
                trigger: trigger.to_string(),
                written: report.written.clone(),
                drift: report.drift.clone(),
                minted: plan.minted,
            });
        }
        if let Some(error) = &write_error {
            tracing::warn!(trigger, pending = ?report.pending, %error, "config files pending; the reconcile retries");
        }
        Ok((
            report,
            failure.map(|e| {
                ServiceError::new(ErrorCode::WriteFailed, e.to_string())
                    .with_hint("free disk space or fix the state directory; the daemon retries the pending files every few seconds")
            }),
        ))
    }
}
