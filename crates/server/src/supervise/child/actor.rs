//! The supervising task of one child: its state ([`Life`]), its loop, the
//! requests it serves and the exits it reports; the pure part of its life
//! is [`super::step`], the process plumbing `super::process`.

use super::process::{program_of, read_tail, summarize};
use super::*;

/// A live process under supervision.
pub(super) struct Proc {
    pub(super) pidfd: PidFd,
    pub(super) record: ChildRecord,
    /// Adopted from a previous daemon: not our child, status unknowable.
    pub(super) adopted: bool,
    pub(super) since: Instant,
}

/// Where a child is in its life: the one state of the supervisor, from
/// which the published [`ProcessState`] is read off.
pub(super) enum Life {
    /// No process, and none due.
    Stopped,
    /// A process runs and has not answered its readiness probe yet.
    Starting(Proc),
    /// A process runs and answered its readiness probe.
    Running(Proc),
    /// No process; it exited and the reconcile has not decided yet. Shown
    /// as `starting` without a pid (and without a state event: the
    /// verdict's state, or the new process, follows at once), or as
    /// `backoff` with the reason when its dependency explains the exit.
    Exited { reason: String, held_after: Option<u64> },
    /// No process; the reconcile starts one at this instant.
    Backoff(Instant),
    /// No process; a crash loop or a failed start gave up. `start` clears it.
    Failed,
    /// No process; it stopped because its dependency is down, and the
    /// reconcile starts it again once a check newer than this count says
    /// it is back. Shown as `backoff` with the reason.
    Held(u64),
}

/// The process of `life`, if one runs (a free function so that a caller
/// borrows only the field, not the whole actor).
pub(super) fn proc_of(life: &Life) -> Option<&Proc> {
    match life {
        Life::Starting(p) | Life::Running(p) => Some(p),
        Life::Stopped | Life::Exited { .. } | Life::Backoff(_) | Life::Failed | Life::Held(_) => None,
    }
}

/// How a wait for readiness ended.
pub(super) enum Wait {
    Ready,
    Exited,
    TimedOut,
}

pub(super) struct Actor {
    pub(super) name: ProcessName,
    pub(super) opts: SupervisorOptions,
    pub(super) rx: mpsc::Receiver<Command>,
    pub(super) status: watch::Sender<Status>,
    /// The spec of the process that runs or ran last (its log, its
    /// readiness probe); what should run is the reconcile's business.
    pub(super) spec: Option<ChildSpec>,
    /// A recovered process must be ready by then, else it is stopped and
    /// reported exited (the deadline the reconcile gave with `recover`).
    pub(super) ready_deadline: Option<Instant>,
    /// The dependency's check results, watched while held (for the reason).
    pub(super) dependency: Option<watch::Receiver<crate::supervise::DependencyState>>,
    pub(super) life: Life,
    pub(super) failures: VecDeque<Failure>,
    pub(super) restarts: u32,
    pub(super) last_exit: Option<String>,
    pub(super) port_conflict: Option<String>,
    pub(super) log_tail: Option<Vec<String>>,
    /// Why the child waits (held) or runs without being ready (406 while
    /// its dependency is down); `None` otherwise.
    pub(super) reason: Option<String>,
    /// A running child answers its probe with 406 while its dependency is
    /// down: running, not ready, not restarted.
    pub(super) degraded: bool,
    pub(super) closed: bool,
    pub(super) published: (ProcessState, Option<u32>),
}

/// Resolves when the dependency's state changes (`true`), or `false` once
/// its checker is gone; never without a dependency.
pub(super) async fn dependency_changed(rx: Option<&mut watch::Receiver<crate::supervise::DependencyState>>) -> bool {
    match rx {
        Some(rx) => {
            let alive = rx.changed().await.is_ok();
            rx.borrow_and_update();
            alive
        }
        None => std::future::pending().await,
    }
}

/// Resolves when the supervised process exits; never without one.
pub(super) async fn proc_exit(proc: Option<&Proc>) {
    match proc {
        Some(p) => p.pidfd.exited().await,
        None => std::future::pending().await,
    }
}

impl Actor {
    pub(super) async fn run(mut self) {
        let mut tick = tokio::time::interval(self.opts.log_check_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        while !self.closed {
            let ready_wait = match (&self.life, self.ready_deadline, &self.spec) {
                (Life::Starting(_), Some(deadline), Some(spec)) => Some((spec.ready.clone(), deadline)),
                _ => None,
            };
            let held = matches!(
                self.life,
                Life::Held(_)
                    | Life::Exited {
                        held_after: Some(_),
                        ..
                    }
            );
            // Exits first: a request must never see a dead process as running.
            tokio::select! {
                biased;
                () = proc_exit(proc_of(&self.life)) => self.on_exit().await,
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => self.handle(cmd).await,
                    // Every handle dropped: leave the child running, as detach.
                    None => self.closed = true,
                },
                ready = async {
                    match &ready_wait {
                        Some((probe, deadline)) => ready::wait_until_ready(probe, *deadline).await,
                        None => std::future::pending().await,
                    }
                }, if ready_wait.is_some() => self.recovery_ready(ready).await,
                alive = dependency_changed(self.dependency.as_mut()), if held => {
                    if alive { self.refresh_held_reason() } else { self.dependency = None }
                }
                _ = tick.tick() => self.housekeeping().await,
            }
        }
    }

    pub(super) async fn handle(&mut self, cmd: Command) {
        if proc_of(&self.life).is_some_and(|p| p.pidfd.has_exited()) {
            self.on_exit().await;
        }
        match cmd {
            Command::Start {
                spec,
                timeout,
                force,
                grace,
                reply,
            } => {
                let result = self.start(*spec, timeout, force, grace).await;
                let _ = reply.send(result);
            }
            Command::Stop { timeout, reply } => {
                let result = self.stop(timeout).await;
                let _ = reply.send(result);
            }
            Command::Adopt { spec, reply } => {
                let result = self.adopt(*spec).await;
                let _ = reply.send(result);
            }
            Command::Detach { reply } => {
                self.closed = true;
                let _ = reply.send(Ok(()));
            }
            Command::Recover { spec, timeout, reply } => {
                let result = self.recover(*spec, timeout).await;
                let _ = reply.send(result);
            }
            Command::Settle { to, reply } => {
                self.settle(to).await;
                let _ = reply.send(Ok(()));
            }
        }
    }

    pub(super) fn check_name(&self, spec: &ChildSpec) -> Result<(), SuperviseError> {
        if spec.name == self.name {
            return Ok(());
        }
        Err(SuperviseError::BadSpec {
            process: self.name,
            reason: format!("the spec is for {}, not {}", spec.name, self.name),
        })
    }

    // ------------------------------------------------------------ requests

    pub(super) async fn start(
        &mut self,
        spec: ChildSpec,
        timeout: Duration,
        force: bool,
        grace: Option<Duration>,
    ) -> Result<Started, SuperviseError> {
        let started = |outcome| Started { outcome, killed: false };
        self.check_name(&spec)?;
        let deadline = Instant::now() + timeout;
        if proc_of(&self.life).is_none() {
            self.attach_record().await?;
        }
        let ready = matches!(self.life, Life::Running(_));
        if proc_of(&self.life).is_some() {
            if !force {
                if ready {
                    return Ok(started(StartOutcome::AlreadyRunning));
                }
                // The spec of the process that runs stays the one it was
                // started from.
                let running = self.spec.clone().unwrap_or_else(|| spec.clone());
                return match self.await_ready(&running, deadline).await {
                    Ok(()) => Ok(started(StartOutcome::AlreadyRunning)),
                    Err(e) => Err(self.start_failed(e, &running).await),
                };
            }
            self.spec = Some(spec.clone());
            let grace = grace.unwrap_or(self.opts.stop_grace);
            let killed = self.terminate(grace, "restart").await?;
            // An asked-for restart is reported by whoever asked.
            self.restarts += 1;
            self.clear_failures();
            // The readiness wait starts once the old process is gone.
            let deadline = Instant::now() + timeout;
            return match self.launch(&spec, deadline).await {
                Ok(()) => Ok(Started {
                    outcome: StartOutcome::Restarted,
                    killed,
                }),
                Err(e) => Err(self.start_failed(e, &spec).await),
            };
        }
        self.spec = Some(spec.clone());
        self.clear_failures();
        match self.launch(&spec, deadline).await {
            Ok(()) => Ok(started(StartOutcome::Started)),
            Err(e) => Err(self.start_failed(e, &spec).await),
        }
    }

    pub(super) async fn stop(&mut self, timeout: Duration) -> Result<StopOutcome, SuperviseError> {
        if proc_of(&self.life).is_none() {
            self.attach_record().await?;
        }
        let was_running = proc_of(&self.life).is_some();
        let killed = self.terminate(timeout, "stop").await?;
        self.clear_failures();
        self.port_conflict = None;
        self.publish(Some("stopped on request".to_owned()));
        Ok(StopOutcome { was_running, killed })
    }

    pub(super) async fn adopt(&mut self, spec: ChildSpec) -> Result<AdoptOutcome, SuperviseError> {
        self.check_name(&spec)?;
        if proc_of(&self.life).is_some() {
            return Ok(AdoptOutcome::AlreadySupervised);
        }
        self.spec = Some(spec.clone());
        let outcome = self.attach_record().await?;
        if outcome != AdoptOutcome::Adopted {
            return Ok(outcome);
        }
        let deadline = Instant::now() + self.opts.adopt_ready_timeout;
        match self.wait_ready(&spec.ready, deadline).await {
            Wait::Ready => self.mark_ready(),
            Wait::Exited => self.on_exit().await,
            // Left `starting`: housekeeping re-probes, `start` waits for it.
            Wait::TimedOut => {}
        }
        Ok(AdoptOutcome::Adopted)
    }

    /// Reports an exit: the process is reaped and the child waits in
    /// `Exited` for the reconcile's verdict ([`step`]).
    pub(super) async fn on_exit(&mut self) {
        let from = self.phase();
        let was_ready = from == Phase::Running;
        let Some(proc) = proc_of(&self.life) else {
            return;
        };
        let ran_for = proc.since.elapsed();
        let exit = self.reap().await;
        self.degraded = false;
        self.ready_deadline = None;
        let held_after = if was_ready {
            None
        } else {
            self.explained_by_dependency(None).await
        };
        let input = Input::ProcessExited {
            was_ready,
            status: exit.to_string(),
            ran_for,
            held_after,
        };
        self.apply(&from, input).await;
    }

    /// Carries out one [`step`] from `from` (the phase before the process,
    /// if any, was reaped).
    pub(super) async fn apply(&mut self, from: &Phase, input: Input) {
        let (next, effects) = step(from, input);
        if effects.is_empty() {
            return;
        }
        self.idle(match next {
            Phase::Exited { reason, held_after } => Life::Exited { reason, held_after },
            Phase::Backoff(until) => Life::Backoff(until),
            Phase::Held(after) => Life::Held(after),
            Phase::Failed => Life::Failed,
            Phase::Stopped | Phase::Starting | Phase::Running => Life::Stopped,
        });
        for effect in effects {
            match effect {
                Effect::LastExit(e) => self.last_exit = Some(e),
                Effect::CountFailure(ran_for) => self.push_failure(ran_for),
                Effect::DependencyReason(shown) => {
                    self.reason = self.opts.dependency.as_ref().filter(|_| shown).map(Dependency::reason);
                }
                Effect::ReadTail => {
                    self.log_tail = match &self.spec {
                        Some(spec) => read_tail(spec.log_path.clone()).await,
                        None => None,
                    };
                }
                Effect::Publish(detail) => self.publish(detail.or_else(|| self.reason.clone())),
            }
        }
    }

    /// Whether the dependency explains an exit (its log tail, read now
    /// unless given, names it, while it is configured): the check count a
    /// release must exceed.
    pub(super) async fn explained_by_dependency(&mut self, tail: Option<&[String]>) -> Option<u64> {
        let dep = self.opts.dependency.clone()?;
        let read;
        let tail = match tail {
            Some(t) => t,
            None => {
                read = match &self.spec {
                    Some(spec) => read_tail(spec.log_path.clone()).await.unwrap_or_default(),
                    None => Vec::new(),
                };
                &read
            }
        };
        dep.explains_exit(tail)
    }

    /// The reason shown while held follows the dependency's last check.
    pub(super) fn refresh_held_reason(&mut self) {
        let reason = self.opts.dependency.as_ref().map(Dependency::reason);
        if reason != self.reason {
            self.reason = reason;
            self.publish(self.reason.clone());
        }
    }

    /// `recover`: the reconcile starts the child again after an exit.
    pub(super) async fn recover(&mut self, spec: ChildSpec, timeout: Duration) -> Result<(), SuperviseError> {
        self.check_name(&spec)?;
        if proc_of(&self.life).is_some() {
            return Ok(());
        }
        self.restarts += 1;
        self.reason = None;
        self.idle(Life::Stopped);
        self.spec = Some(spec.clone());
        match self.spawn_child(&spec).await {
            Ok(()) => {
                self.ready_deadline = Some(Instant::now() + timeout);
                Ok(())
            }
            Err(e) => {
                self.recovery_failed(&e).await;
                Err(e)
            }
        }
    }

    /// A recovery that did not get ready: a failure (unless the dependency
    /// explains it), reported as an exit for the reconcile to decide on.
    pub(super) async fn recovery_failed(&mut self, e: &SuperviseError) {
        let (status, held_after) = match e {
            SuperviseError::ExitedDuringStartup { log_tail, status, .. } => {
                (Some(status.clone()), self.explained_by_dependency(Some(log_tail)).await)
            }
            _ => (None, None),
        };
        let input = Input::RecoveryFailed {
            summary: summarize(e),
            status,
            held_after,
        };
        self.apply(&self.phase(), input).await;
    }

    /// A recovered process answered its probe, or its deadline passed (it
    /// is stopped, and that is a failed recovery).
    pub(super) async fn recovery_ready(&mut self, ready: bool) {
        if ready {
            self.refresh_record().await;
            self.mark_ready();
            return;
        }
        self.ready_deadline = None;
        let grace = self.opts.stop_grace;
        let Some(spec) = self.spec.clone() else { return };
        let waited = proc_of(&self.life).map_or(Duration::ZERO, |p| p.since.elapsed());
        if let Err(e) = self.terminate(grace, "not ready").await {
            tracing::warn!(process = %self.name, error = %e, "a recovery not ready in time could not be stopped");
            return;
        }
        let e = SuperviseError::NotReady {
            process: self.name,
            url: spec.ready.url(),
            timeout_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
            log_path: spec.log_path.clone(),
        };
        self.recovery_failed(&e).await;
    }

    /// Applies the reconcile's verdict on an exit, unless the child left
    /// its idle state since.
    pub(super) async fn settle(&mut self, to: Settle) {
        self.apply(&self.phase(), Input::Settle(to)).await;
    }

    /// Log rotation, and readiness of a child still `starting` (adopted
    /// before it answered).
    pub(super) async fn housekeeping(&mut self) {
        let Some(spec) = self.spec.as_ref() else {
            return;
        };
        let (path, max, keep) = (spec.log_path.clone(), self.opts.log_max_bytes, self.opts.log_keep);
        let probe = spec.ready.clone();
        let rotated = tokio::task::spawn_blocking(move || logs::rotate_if_needed(&path, max, keep)).await;
        if let Ok(Err(e)) = rotated {
            tracing::warn!(process = %self.name, error = %e, "log rotation failed");
        }
        if matches!(self.life, Life::Starting(_)) && ready::probe_once(&probe, Instant::now() + REPROBE_TIMEOUT).await {
            self.refresh_record().await;
            self.mark_ready();
        }
        self.watch_degraded(&probe).await;
    }

    /// A running child whose dependency is down is probed every tick: a 406
    /// makes it not ready with the reason (never restarted: a restart cannot
    /// bring the dependency back); a 200 makes it ready again. Nothing is
    /// probed while the dependency answers and the child is not degraded.
    pub(super) async fn watch_degraded(&mut self, probe: &ReadyProbe) {
        let Some(dep) = self.opts.dependency.clone() else {
            return;
        };
        if !matches!(self.life, Life::Running(_)) || !(self.degraded || dep.is_down()) {
            return;
        }
        match ready::status_once(probe, Instant::now() + REPROBE_TIMEOUT).await {
            Some(406) => {
                let reason = dep
                    .explains_not_ready()
                    .unwrap_or_else(|| "answers GET / with 406 Not Ready".to_owned());
                if !self.degraded || self.reason.as_deref() != Some(reason.as_str()) {
                    self.degraded = true;
                    self.reason = Some(reason);
                    self.publish(self.reason.clone());
                }
            }
            Some(200) if self.degraded => {
                self.degraded = false;
                self.reason = None;
                self.publish(Some("ready again".to_owned()));
            }
            _ => {}
        }
    }

    /// Records a failed `start`/`restart` in the state: `failed` with the
    /// reason and log tail, or `stopped` with the port conflict.
    pub(super) async fn start_failed(&mut self, e: SuperviseError, spec: &ChildSpec) -> SuperviseError {
        let held_after = match &e {
            SuperviseError::ExitedDuringStartup { log_tail, status, .. } => {
                self.last_exit = Some(status.clone());
                self.explained_by_dependency(Some(log_tail)).await
            }
            _ => None,
        };
        if held_after.is_some() {
            // Reported as a failed start that the dependency explains: the
            // reconcile holds it.
            let input = Input::RecoveryFailed {
                summary: summarize(&e),
                status: self.last_exit.clone(),
                held_after,
            };
            self.apply(&self.phase(), input).await;
            return e;
        }
        if matches!(e, SuperviseError::PortConflict { .. }) {
            self.idle(Life::Stopped);
        } else {
            self.idle(Life::Failed);
            self.last_exit = Some(summarize(&e));
            self.log_tail = match &e {
                SuperviseError::ExitedDuringStartup { log_tail, .. } => Some(log_tail.clone()),
                _ => read_tail(spec.log_path.clone()).await,
            };
        }
        self.publish(Some(summarize(&e)));
        e
    }

    pub(super) fn clear_failures(&mut self) {
        self.failures.clear();
        self.idle(Life::Stopped);
        if proc_of(&self.life).is_none() {
            self.reason = None;
        }
        self.log_tail = None;
    }

    pub(super) fn push_failure(&mut self, ran_for: Duration) {
        if ran_for >= self.opts.backoff.healthy_reset {
            self.failures.clear();
        }
        if self.failures.len() >= HISTORY_CAP {
            self.failures.pop_front();
        }
        self.failures.push_back(Failure {
            at: Instant::now(),
            ran_for,
        });
    }

    /// Where the child stands, without the process handles.
    pub(super) fn phase(&self) -> Phase {
        match &self.life {
            Life::Stopped => Phase::Stopped,
            Life::Starting(_) => Phase::Starting,
            Life::Running(_) => Phase::Running,
            Life::Exited { reason, held_after } => Phase::Exited {
                reason: reason.clone(),
                held_after: *held_after,
            },
            Life::Backoff(until) => Phase::Backoff(*until),
            Life::Failed => Phase::Failed,
            Life::Held(after) => Phase::Held(*after),
        }
    }

    /// Enters a state without a process. Only ever called once the process
    /// is reaped; a running one is never forgotten (it would be unwatched).
    pub(super) fn idle(&mut self, to: Life) {
        match proc_of(&self.life) {
            None => self.life = to,
            Some(p) => {
                tracing::warn!(process = %self.name, pid = p.record.pid, "a state change without a process was asked while one runs; kept")
            }
        }
    }

    /// Publishes the health snapshot and, when state or pid changed, a
    /// `State` event.
    pub(super) fn publish(&mut self, detail: Option<String>) {
        let phase = self.phase();
        let state = step::shown(&phase);
        let proc = proc_of(&self.life);
        let pid = proc.map(|p| p.record.pid);
        let generation = self.status.borrow().generation + 1;
        self.status.send_replace(Status {
            generation,
            state,
            pid,
            restarts: self.restarts,
            since: proc.map(|p| p.since),
            config_sha256: proc.map(|p| p.record.config_sha256.clone()),
            last_exit: self.last_exit.clone(),
            adopted: proc.is_some_and(|p| p.adopted),
            port_conflict: self.port_conflict.clone(),
            log_tail: if state == ProcessState::Failed {
                self.log_tail.clone()
            } else {
                None
            },
            reason: self.reason.clone(),
            degraded: self.degraded,
            program: proc.map(|p| program_of(&p.record)),
            idle: step::idle_of(&phase),
            failures: self.failures.iter().copied().collect(),
        });
        // An exit awaiting the reconcile's verdict makes no state event:
        // the verdict's state, or the new process, follows at once.
        if step::makes_event(&phase) && self.published != (state, pid) {
            self.published = (state, pid);
            tracing::info!(process = %self.name, %state, ?pid, detail = detail.as_deref(), "child state");
            self.opts.events.emit(Event::State {
                process: self.name,
                state,
                pid,
                detail,
            });
        }
    }
}
