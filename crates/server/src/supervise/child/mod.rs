//! The supervising task of one child and its cloneable handle.
//!
//! Each [`Child`] owns one tokio task; the task alone holds the child's
//! process, restart history and record, and handles one request at a time,
//! so requests for the same child never interleave. `health()` reads a
//! `watch` snapshot and never waits for the task.
//!
//! The task decides nothing about the child's life: it executes commands
//! (start, restart, stop, adopt, detach, and the reconcile's verdicts after
//! an exit: recover, back off, give up, hold) and reports what it observes
//! (spawned, ready, exited with its status and how long it ran, a log tail
//! that names its dependency), with the failure history. What follows an
//! exit is decided by the reconcile (`service::plan`), which the status
//! change wakes.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use hero_livekit_proto::{Event, ProcessHealth, ProcessName, ProcessState, StartOutcome};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};

use super::backoff::{BackoffPolicy, Failure};
use super::error::SuperviseError;
use super::events::EventSink;
use super::hold::Dependency;
use super::logs;
use super::pidfd::{self, ChildExit, PidFd};
use super::procfs;
use super::ready;
use super::record::{unix_ms_now, verify, ChildRecord, Verification};
use super::spawn::{spawn_recorded, Spawned};
use super::spec::{ChildSpec, ReadyProbe};

/// Lines of log kept with a startup failure or a crash loop.
const TAIL_LINES: usize = 20;
/// How long a process may take to die after SIGKILL before we call it stuck.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// Bound on the periodic readiness re-probe of a child that is not ready
/// yet, which holds up the task's other work while it runs.
const REPROBE_TIMEOUT: Duration = Duration::from_millis(200);
/// Failures remembered; the backoff reaches its cap long before this.
const HISTORY_CAP: usize = 64;

/// How the supervisor of one child behaves.
#[derive(Debug, Clone)]
pub struct SupervisorOptions {
    /// Where `<name>.json` records live (`Paths::children_dir`).
    pub children_dir: PathBuf,
    /// A log larger than this is rotated (default 10 MiB).
    pub log_max_bytes: u64,
    /// Rotated copies kept (default 5).
    pub log_keep: usize,
    /// How often the log size is checked, and a not-yet-ready child
    /// re-probed (default 1 s).
    pub log_check_interval: Duration,
    /// Where state changes and restarts are reported.
    pub events: EventSink,
    /// The restart policy.
    pub backoff: BackoffPolicy,
    /// SIGTERM-to-SIGKILL grace used when the supervisor itself stops a
    /// child (config-change restart, not ready in time); `stop` takes its own.
    pub stop_grace: Duration,
    /// How long `adopt` probes an adopted child before leaving it `starting`
    /// (default 5 s; the daemon adopts while booting, so keep it short).
    pub adopt_ready_timeout: Duration,
    /// What the child needs from outside (Redis, for livekit-server): an
    /// exit it explains holds the child until it is back (`hold`).
    pub dependency: Option<Dependency>,
}

impl SupervisorOptions {
    /// Options with SPEC defaults.
    pub fn new(children_dir: PathBuf, events: EventSink) -> SupervisorOptions {
        SupervisorOptions {
            children_dir,
            log_max_bytes: logs::DEFAULT_MAX_BYTES,
            log_keep: logs::DEFAULT_KEEP,
            log_check_interval: Duration::from_secs(1),
            events,
            backoff: BackoffPolicy::default(),
            stop_grace: Duration::from_secs(10),
            adopt_ready_timeout: Duration::from_secs(5),
            dependency: None,
        }
    }
}

/// What `stop` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopOutcome {
    /// A process was running (ours or verified from a record) and is gone now.
    pub was_running: bool,
    /// It ignored SIGTERM until the deadline and got SIGKILL.
    pub killed: bool,
}

/// What `adopt` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdoptOutcome {
    /// The recorded process verified and is supervised now.
    Adopted,
    /// This supervisor already supervises a process; nothing was read.
    AlreadySupervised,
    /// No record: nothing to adopt.
    NoRecord,
    /// The record did not verify (or was unreadable) and was deleted; the
    /// process under its pid, if any, was left alone.
    Discarded(String),
}

/// Handle to the supervisor of one child. Cheap to clone; all clones talk to
/// the same task.
///
/// When the last handle is dropped the task ends as with [`Child::detach`]:
/// the process keeps running and its record stays for the next daemon.
#[derive(Debug, Clone)]
pub struct Child {
    name: ProcessName,
    tx: mpsc::Sender<Command>,
    status: watch::Receiver<Status>,
    policy: BackoffPolicy,
}

type Reply<T> = oneshot::Sender<Result<T, SuperviseError>>;

/// What a start or restart did, and how the process it replaced ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    pub outcome: StartOutcome,
    /// The old process did not exit on SIGTERM within the drain deadline
    /// and was killed with SIGKILL.
    pub killed: bool,
}

enum Command {
    Start {
        spec: Box<ChildSpec>,
        timeout: Duration,
        force: bool,
        /// The drain deadline for a process this stops (else `stop_grace`).
        grace: Option<Duration>,
        reply: Reply<Started>,
    },
    Stop {
        timeout: Duration,
        reply: Reply<StopOutcome>,
    },
    Adopt {
        spec: Box<ChildSpec>,
        reply: Reply<AdoptOutcome>,
    },
    Detach {
        reply: Reply<()>,
    },
    Recover {
        spec: Box<ChildSpec>,
        timeout: Duration,
        reply: Reply<()>,
    },
    Settle {
        to: Settle,
        reply: Reply<()>,
    },
}

/// Where a child without a process stands after an exit: what the
/// reconcile reads to decide what follows (see [`Child::idle`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Idle {
    /// Its process exited unexpectedly (or a recovery of it failed) and
    /// nothing is decided yet. `held_after` is set when its log tail names
    /// its dependency while that is configured (the check count a release
    /// must exceed): such an exit is not counted as a failure.
    Exited { reason: String, held_after: Option<u64> },
    /// Waiting until this instant, as the reconcile decided.
    Backoff { until: Instant },
    /// Waiting for its dependency, until a check newer than `after` passes.
    Held { after: u64 },
}

/// The reconcile's verdict on a child in [`Idle::Exited`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// Wait in `backoff` until `until`; `detail` goes to the state event.
    Backoff { until: Instant, detail: String },
    /// Give up: `failed` with the log tail, until `start`.
    Failed { detail: String },
    /// Wait for the dependency (`backoff` with its reason).
    Held { after: u64 },
}

impl Child {
    /// Starts the supervising task for `name` (nothing is spawned yet: call
    /// [`Child::adopt`] and/or [`Child::start`]).
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn new(name: ProcessName, opts: SupervisorOptions) -> Child {
        let (tx, rx) = mpsc::channel(16);
        let (status_tx, status_rx) = watch::channel(Status::stopped());
        let policy = opts.backoff;
        let dependency = opts.dependency.as_ref().map(|d| d.state.clone());
        let actor = Actor {
            dependency,
            ready_deadline: None,
            name,
            opts,
            rx,
            status: status_tx,
            spec: None,
            life: Life::Stopped,
            failures: VecDeque::new(),
            restarts: 0,
            last_exit: None,
            port_conflict: None,
            log_tail: None,
            reason: None,
            degraded: false,
            closed: false,
            published: (ProcessState::Stopped, None),
        };
        tokio::spawn(actor.run());
        Child {
            name,
            tx,
            status: status_rx,
            policy,
        }
    }

    /// The restart policy the reconcile applies to this child's failures.
    pub fn policy(&self) -> BackoffPolicy {
        self.policy
    }

    /// Where the child stands when it has no process after an exit (`None`
    /// while one runs, and when it was stopped or has failed).
    pub fn idle(&self) -> Option<Idle> {
        self.status.borrow().idle.clone()
    }

    /// The failures counted since the last healthy run or `start` (oldest
    /// first): exits of a process that had not run healthily for long, and
    /// recoveries that did not get ready.
    pub fn failures(&self) -> Vec<Failure> {
        self.status.borrow().failures.clone()
    }

    /// Starts the child again after an exit, as the reconcile decided:
    /// counted as a restart, the failure history kept. Returns once the
    /// process is spawned; it has `timeout` to become ready, else it is
    /// stopped and reported exited again (a failure). A failed spawn is
    /// reported the same way (and returned). Nothing is done when a
    /// process runs.
    ///
    /// # Errors
    /// As [`Child::start`], for the spawn.
    pub async fn recover(&self, spec: ChildSpec, timeout: Duration) -> Result<(), SuperviseError> {
        self.request(|reply| Command::Recover {
            spec: Box::new(spec),
            timeout,
            reply,
        })
        .await
    }

    /// Applies the reconcile's verdict on an exit (see [`Settle`]); ignored
    /// unless the child is idle after an exit (a process runs again, or it
    /// was stopped, since the verdict was made).
    ///
    /// # Errors
    /// [`SuperviseError::Closed`].
    pub async fn settle(&self, to: Settle) -> Result<(), SuperviseError> {
        self.request(|reply| Command::Settle { to, reply }).await
    }

    /// Which child this supervises.
    pub fn name(&self) -> ProcessName {
        self.name
    }

    /// Makes the child run `spec` and waits until it is ready.
    ///
    /// - running and ready: `AlreadyRunning`, nothing touched (whether it
    ///   runs the right config and program is the reconcile's question,
    ///   which asks [`Child::restart`] when it does not);
    /// - running but not ready yet: waits for it, `AlreadyRunning`;
    /// - otherwise (also in `backoff` or `failed`, which `start` clears):
    ///   ports checked, spawned, `Started`.
    ///
    /// A verified record of a previous daemon's child is adopted first.
    /// `timeout` bounds the wait for readiness (counted after the old
    /// process stopped, for a restart).
    ///
    /// # Errors
    /// [`SuperviseError::PortConflict`] (nothing spawned),
    /// [`SuperviseError::ExitedDuringStartup`] (any exit code),
    /// [`SuperviseError::NotReady`] (the child was stopped),
    /// [`SuperviseError::Spawn`], [`SuperviseError::BadSpec`],
    /// [`SuperviseError::Io`], [`SuperviseError::StopFailed`],
    /// [`SuperviseError::Closed`]. After a failure the state is `failed`
    /// with the last exit and log tail (`stopped` for a port conflict).
    pub async fn start(&self, spec: ChildSpec, timeout: Duration) -> Result<StartOutcome, SuperviseError> {
        self.start_with(spec, timeout, None).await.map(|s| s.outcome)
    }

    /// [`Child::start`] with the drain deadline for a process it replaces
    /// (else the supervisor's `stop_grace`), saying how that one ended.
    ///
    /// # Errors
    /// As [`Child::start`].
    pub async fn start_with(
        &self,
        spec: ChildSpec,
        timeout: Duration,
        grace: Option<Duration>,
    ) -> Result<Started, SuperviseError> {
        self.request(|reply| Command::Start {
            spec: Box::new(spec),
            timeout,
            force: false,
            grace,
            reply,
        })
        .await
    }

    /// Stops the child if it runs (SIGTERM, SIGKILL after `grace`, else
    /// the supervisor's `stop_grace`), then starts `spec`: `Restarted`, or
    /// `Started` when nothing ran, and whether SIGKILL was needed. Clears
    /// `failed`. Emits no `Restarted` event: the caller asked, and reports
    /// its own reason; the state event says how the old process ended.
    ///
    /// # Errors
    /// As [`Child::start`].
    pub async fn restart(
        &self,
        spec: ChildSpec,
        timeout: Duration,
        grace: Option<Duration>,
    ) -> Result<Started, SuperviseError> {
        self.request(|reply| Command::Start {
            spec: Box::new(spec),
            timeout,
            force: true,
            grace,
            reply,
        })
        .await
    }

    /// Stops the child: SIGTERM to its process group, SIGKILL to the group
    /// when it has not exited after `timeout`. Removes its record and leaves
    /// the state `stopped` (also from `backoff` or `failed`). A verified
    /// record of a previous daemon's child is stopped too.
    ///
    /// # Errors
    /// [`SuperviseError::StopFailed`] when the process survives SIGKILL,
    /// [`SuperviseError::Io`], [`SuperviseError::Closed`].
    pub async fn stop(&self, timeout: Duration) -> Result<StopOutcome, SuperviseError> {
        self.request(|reply| Command::Stop { timeout, reply }).await
    }

    /// Takes over the child a previous daemon recorded: reads the record,
    /// verifies pid, start time and executable (an unverifiable record is
    /// deleted and its pid never signalled), then watches the process and
    /// probes readiness for up to `adopt_ready_timeout`. An adopted child is
    /// supervised like a spawned one: a later exit is reported alike.
    /// A child not ready in time stays `starting` and is re-probed
    /// periodically; `start` then waits for it. An adopted child running
    /// another config is left as it is: `start` restarts it.
    ///
    /// # Errors
    /// [`SuperviseError::BadSpec`] (spec of another child),
    /// [`SuperviseError::Io`] (record unreadable for another reason than its
    /// content), [`SuperviseError::Closed`].
    pub async fn adopt(&self, spec: ChildSpec) -> Result<AdoptOutcome, SuperviseError> {
        self.request(|reply| Command::Adopt {
            spec: Box::new(spec),
            reply,
        })
        .await
    }

    /// Ends supervision for daemon exit: the process keeps running and its
    /// record stays, for the next daemon to adopt. Further requests on any
    /// clone fail with [`SuperviseError::Closed`]. Idempotent.
    pub async fn detach(&self) {
        // Closed means already detached: the wanted end state.
        let _ = self.request(|reply| Command::Detach { reply }).await;
    }

    /// Changes whenever [`Child::health`] may say something new other than
    /// a longer uptime.
    pub fn generation(&self) -> u64 {
        self.status.borrow().generation
    }

    /// The child's health, from the last published snapshot (no waiting).
    pub fn health(&self) -> ProcessHealth {
        self.health_and_generation().0
    }

    /// [`Child::health`] with the [`Child::generation`] it was read at, from
    /// one look at the snapshot.
    pub fn health_and_generation(&self) -> (ProcessHealth, u64) {
        let s = self.status.borrow();
        let uptime = match (s.state, s.since) {
            (ProcessState::Running | ProcessState::Starting, Some(since)) => since.elapsed(),
            _ => Duration::ZERO,
        };
        let health = ProcessHealth {
            state: s.state,
            pid: s.pid,
            ready: s.state == ProcessState::Running && !s.degraded,
            restarts: s.restarts,
            uptime_ms: u64::try_from(uptime.as_millis()).unwrap_or(u64::MAX),
            config_sha256: s.config_sha256.clone(),
            last_exit: s.last_exit.clone(),
            adopted: s.adopted,
            port_conflict: s.port_conflict.clone(),
            log_tail: s.log_tail.clone(),
            reason: s.reason.clone(),
        };
        (health, s.generation)
    }

    /// Device and inode of the program file the running process was
    /// spawned from (a wrapper script's when it is one), `None` when nothing
    /// runs: the reconcile compares it with the file in place now to replace
    /// a child whose binary was swapped (an install, a hand edit).
    pub fn running_program(&self) -> Option<(u64, u64)> {
        self.status.borrow().program
    }

    /// Resolves when the child's status changes; `false` once the
    /// supervising task is gone.
    pub async fn changed(&mut self) -> bool {
        self.status.changed().await.is_ok()
    }

    async fn request<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, SuperviseError> {
        let closed = || SuperviseError::Closed { process: self.name };
        let (reply, answer) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

/// The published snapshot behind [`Child::health`].
#[derive(Debug, Clone)]
struct Status {
    /// Bumped on every publish, so readers (the health memo) can tell
    /// "unchanged" without comparing the fields.
    generation: u64,
    state: ProcessState,
    pid: Option<u32>,
    restarts: u32,
    since: Option<Instant>,
    config_sha256: Option<String>,
    last_exit: Option<String>,
    adopted: bool,
    port_conflict: Option<String>,
    log_tail: Option<Vec<String>>,
    reason: Option<String>,
    degraded: bool,
    /// Device and inode of the program file the running process was
    /// spawned from (see [`Child::running_program`]).
    program: Option<(u64, u64)>,
    idle: Option<Idle>,
    failures: Vec<Failure>,
}

impl Status {
    fn stopped() -> Status {
        Status {
            generation: 0,
            state: ProcessState::Stopped,
            pid: None,
            restarts: 0,
            since: None,
            config_sha256: None,
            last_exit: None,
            adopted: false,
            port_conflict: None,
            log_tail: None,
            reason: None,
            degraded: false,
            program: None,
            idle: None,
            failures: Vec::new(),
        }
    }
}

/// A live process under supervision.
struct Proc {
    pidfd: PidFd,
    record: ChildRecord,
    /// Adopted from a previous daemon: not our child, status unknowable.
    adopted: bool,
    since: Instant,
}

/// Where a child is in its life: the one state of the supervisor, from
/// which the published [`ProcessState`] is read off.
enum Life {
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
fn proc_of(life: &Life) -> Option<&Proc> {
    match life {
        Life::Starting(p) | Life::Running(p) => Some(p),
        Life::Stopped | Life::Exited { .. } | Life::Backoff(_) | Life::Failed | Life::Held(_) => None,
    }
}

/// How a wait for readiness ended.
enum Wait {
    Ready,
    Exited,
    TimedOut,
}

struct Actor {
    name: ProcessName,
    opts: SupervisorOptions,
    rx: mpsc::Receiver<Command>,
    status: watch::Sender<Status>,
    /// The spec of the process that runs or ran last (its log, its
    /// readiness probe); what should run is the reconcile's business.
    spec: Option<ChildSpec>,
    /// A recovered process must be ready by then, else it is stopped and
    /// reported exited (the deadline the reconcile gave with `recover`).
    ready_deadline: Option<Instant>,
    /// The dependency's check results, watched while held (for the reason).
    dependency: Option<watch::Receiver<super::hold::DependencyState>>,
    life: Life,
    failures: VecDeque<Failure>,
    restarts: u32,
    last_exit: Option<String>,
    port_conflict: Option<String>,
    log_tail: Option<Vec<String>>,
    /// Why the child waits (held) or runs without being ready (406 while
    /// its dependency is down); `None` otherwise.
    reason: Option<String>,
    /// A running child answers its probe with 406 while its dependency is
    /// down: running, not ready, not restarted.
    degraded: bool,
    closed: bool,
    published: (ProcessState, Option<u32>),
}

/// Resolves when the dependency's state changes (`true`), or `false` once
/// its checker is gone; never without a dependency.
async fn dependency_changed(rx: Option<&mut watch::Receiver<super::hold::DependencyState>>) -> bool {
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
async fn proc_exit(proc: Option<&Proc>) {
    match proc {
        Some(p) => p.pidfd.exited().await,
        None => std::future::pending().await,
    }
}

impl Actor {
    async fn run(mut self) {
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

    async fn handle(&mut self, cmd: Command) {
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

    fn check_name(&self, spec: &ChildSpec) -> Result<(), SuperviseError> {
        if spec.name == self.name {
            return Ok(());
        }
        Err(SuperviseError::BadSpec {
            process: self.name,
            reason: format!("the spec is for {}, not {}", spec.name, self.name),
        })
    }

    // ------------------------------------------------------------ requests

    async fn start(
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

    async fn stop(&mut self, timeout: Duration) -> Result<StopOutcome, SuperviseError> {
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

    async fn adopt(&mut self, spec: ChildSpec) -> Result<AdoptOutcome, SuperviseError> {
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

    // ------------------------------------------------------------ lifecycle

    /// Checks ports, spawns, records and waits for readiness. On success the
    /// child is `running`; on failure no process of ours is left behind.
    async fn launch(&mut self, spec: &ChildSpec, deadline: Instant) -> Result<(), SuperviseError> {
        self.spawn_child(spec).await?;
        self.await_ready(spec, deadline).await
    }

    /// Checks ports, spawns and records: the child is `starting`.
    async fn spawn_child(&mut self, spec: &ChildSpec) -> Result<(), SuperviseError> {
        self.check_ports(spec).await?;
        let (spawn_spec, dir) = (spec.clone(), self.opts.children_dir.clone());
        let spawned = tokio::task::spawn_blocking(move || spawn_recorded(&spawn_spec, &dir))
            .await
            .map_err(|e| SuperviseError::Io {
                process: self.name,
                action: "spawn (the blocking task failed)".into(),
                source: io::Error::other(e),
            })??;
        let (fd, record) = match spawned {
            Spawned::Running { pidfd, record } => (pidfd, record),
            Spawned::ExitedAtOnce { exit } => {
                return Err(self.exited_during_startup(spec, exit).await);
            }
        };
        let pidfd = match PidFd::register(record.pid, fd) {
            Ok(pidfd) => pidfd,
            Err((fd, source)) => {
                return Err(self.abandon(record.pid, fd, source).await);
            }
        };
        self.life = Life::Starting(Proc {
            pidfd,
            record,
            adopted: false,
            since: Instant::now(),
        });
        self.publish(None);
        Ok(())
    }

    /// Waits for the current process to become ready and cleans up when it
    /// does not: reaped when it exited, stopped when it is late.
    async fn await_ready(&mut self, spec: &ChildSpec, deadline: Instant) -> Result<(), SuperviseError> {
        let started = Instant::now();
        match self.wait_ready(&spec.ready, deadline).await {
            Wait::Ready => {
                self.refresh_record().await;
                self.mark_ready();
                Ok(())
            }
            Wait::Exited => {
                let exit = self.reap().await;
                Err(self.exited_during_startup(spec, exit).await)
            }
            Wait::TimedOut => {
                let waited = Instant::now().saturating_duration_since(started);
                let grace = self.opts.stop_grace;
                self.terminate(grace, "not ready").await?;
                Err(SuperviseError::NotReady {
                    process: self.name,
                    url: spec.ready.url(),
                    timeout_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
                    log_path: spec.log_path.clone(),
                })
            }
        }
    }

    /// Races readiness against the process's exit.
    async fn wait_ready(&mut self, probe: &ReadyProbe, deadline: Instant) -> Wait {
        let Some(proc) = proc_of(&self.life) else {
            return Wait::Exited;
        };
        tokio::select! {
            biased;
            () = proc.pidfd.exited() => Wait::Exited,
            ready = ready::wait_until_ready(probe, deadline) => {
                if ready { Wait::Ready } else { Wait::TimedOut }
            }
        }
    }

    /// Re-reads which executable our ready child runs and rewrites its
    /// record when that changed since spawn (a wrapper script exec'd the
    /// server): the next daemon verifies the record against the final image.
    /// A no-op without a write in the usual case.
    async fn refresh_record(&mut self) {
        let Some(proc) = proc_of(&self.life).filter(|p| !p.adopted) else {
            return;
        };
        let (record, dir) = (proc.record.clone(), self.opts.children_dir.clone());
        let refreshed = tokio::task::spawn_blocking(move || -> io::Result<Option<ChildRecord>> {
            let fresh = record.with_current_exe()?;
            if fresh == record {
                return Ok(None);
            }
            fresh.write(&dir)?;
            Ok(Some(fresh))
        })
        .await
        .map_err(io::Error::other)
        .and_then(|r| r);
        match refreshed {
            Ok(Some(fresh)) => {
                if let Life::Starting(proc) | Life::Running(proc) = &mut self.life {
                    proc.record = fresh;
                }
            }
            Ok(None) => {}
            // The exit watcher handles a process that is gone; an unwritable
            // record only costs the next daemon an adoption.
            Err(e) => tracing::warn!(process = %self.name, error = %e, "could not refresh the child record"),
        }
    }

    fn mark_ready(&mut self) {
        self.life = match std::mem::replace(&mut self.life, Life::Stopped) {
            Life::Starting(proc) => Life::Running(proc),
            other => other,
        };
        self.port_conflict = None;
        self.reason = None;
        self.degraded = false;
        self.ready_deadline = None;
        self.publish(None);
    }

    /// Stops the current process, if any: SIGTERM to the group, SIGKILL after
    /// `grace`. Returns whether SIGKILL was needed.
    async fn terminate(&mut self, grace: Duration, why: &str) -> Result<bool, SuperviseError> {
        let Some(proc) = proc_of(&self.life) else {
            return Ok(false);
        };
        signal_group(proc, libc::SIGTERM);
        let killed = if tokio::time::timeout(grace, proc.pidfd.exited()).await.is_ok() {
            false
        } else {
            signal_group(proc, libc::SIGKILL);
            if tokio::time::timeout(KILL_WAIT, proc.pidfd.exited()).await.is_err() {
                return Err(SuperviseError::StopFailed {
                    process: self.name,
                    pid: proc.record.pid,
                });
            }
            true
        };
        let exit = self.reap().await;
        let how = if killed {
            format!("killed with SIGKILL at the drain deadline ({} ms)", grace.as_millis())
        } else {
            "exited on SIGTERM".to_owned()
        };
        self.last_exit = Some(format!("{exit}: {how} ({why})"));
        // The state event carries how it ended, for whoever follows events.
        self.publish(self.last_exit.clone());
        Ok(killed)
    }

    /// Takes the exited process out of supervision: sweeps what is left of
    /// its group (own children only), reaps it and removes its record.
    async fn reap(&mut self) -> ChildExit {
        let proc = match std::mem::replace(&mut self.life, Life::Stopped) {
            Life::Starting(proc) | Life::Running(proc) => proc,
            other => {
                self.life = other;
                return ChildExit::Unknown;
            }
        };
        if !proc.adopted {
            // Members left in the group of a leader that is gone would keep
            // its ports; while our leader is unreaped its group id is ours.
            signal_group(&proc, libc::SIGKILL);
        }
        let exit = proc.pidfd.try_reap().unwrap_or(ChildExit::Unknown);
        self.remove_record().await;
        exit
    }

    /// A process we spawned cannot be supervised (no reactor slot): kill it
    /// rather than leave an unwatched child holding ports.
    async fn abandon(&mut self, pid: u32, fd: OwnedFd, source: io::Error) -> SuperviseError {
        let _ = pidfd::send_signal(&fd, libc::SIGKILL);
        let _ = tokio::task::spawn_blocking(move || pidfd::reap_blocking(&fd)).await;
        self.remove_record().await;
        SuperviseError::Io {
            process: self.name,
            action: format!("watch pid {pid}"),
            source,
        }
    }

    /// Reports an exit: the process is reaped, the failure counted (unless
    /// the dependency explains it), and the child waits in `Exited` for the
    /// reconcile's verdict.
    async fn on_exit(&mut self) {
        let was_ready = matches!(self.life, Life::Running(_));
        let Some(proc) = proc_of(&self.life) else {
            return;
        };
        let ran_for = proc.since.elapsed();
        let exit = self.reap().await;
        self.last_exit = Some(exit.to_string());
        self.degraded = false;
        self.ready_deadline = None;
        let held_after = if was_ready {
            None
        } else {
            self.explained_by_dependency(None).await
        };
        if held_after.is_none() {
            self.push_failure(ran_for);
        }
        let what = if was_ready {
            "crashed"
        } else {
            "exited before it was ready"
        };
        self.exited(format!("{what}: {exit}"), held_after);
    }

    /// Enters `Exited` and publishes it.
    fn exited(&mut self, reason: String, held_after: Option<u64>) {
        self.reason = match (held_after, &self.opts.dependency) {
            (Some(_), Some(dep)) => Some(dep.reason()),
            _ => None,
        };
        self.idle(Life::Exited { reason, held_after });
        self.publish(self.reason.clone());
    }

    /// Whether the dependency explains an exit (its log tail, read now
    /// unless given, names it, while it is configured): the check count a
    /// release must exceed.
    async fn explained_by_dependency(&mut self, tail: Option<&[String]>) -> Option<u64> {
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
    fn refresh_held_reason(&mut self) {
        let reason = self.opts.dependency.as_ref().map(Dependency::reason);
        if reason != self.reason {
            self.reason = reason;
            self.publish(self.reason.clone());
        }
    }

    /// `recover`: the reconcile starts the child again after an exit.
    async fn recover(&mut self, spec: ChildSpec, timeout: Duration) -> Result<(), SuperviseError> {
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
    async fn recovery_failed(&mut self, e: &SuperviseError) {
        let held_after = match e {
            SuperviseError::ExitedDuringStartup { log_tail, status, .. } => {
                self.last_exit = Some(status.clone());
                self.explained_by_dependency(Some(log_tail)).await
            }
            _ => None,
        };
        let summary = summarize(e);
        if held_after.is_none() {
            self.last_exit = Some(summary.clone());
            self.push_failure(Duration::ZERO);
        }
        self.exited(format!("restart failed: {summary}"), held_after);
    }

    /// A recovered process answered its probe, or its deadline passed (it
    /// is stopped, and that is a failed recovery).
    async fn recovery_ready(&mut self, ready: bool) {
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
    async fn settle(&mut self, to: Settle) {
        if !matches!(self.life, Life::Exited { .. } | Life::Backoff(_) | Life::Held(_)) {
            return;
        }
        match to {
            Settle::Backoff { until, detail } => {
                self.reason = None;
                self.life = Life::Backoff(until);
                self.publish(Some(detail));
            }
            Settle::Failed { detail } => {
                self.reason = None;
                self.life = Life::Failed;
                self.log_tail = match &self.spec {
                    Some(spec) => read_tail(spec.log_path.clone()).await,
                    None => None,
                };
                self.publish(Some(detail));
            }
            Settle::Held { after } => {
                self.life = Life::Held(after);
                self.reason = self.opts.dependency.as_ref().map(Dependency::reason);
                self.publish(self.reason.clone());
            }
        }
    }

    /// Log rotation, and readiness of a child still `starting` (adopted
    /// before it answered, or left so by an interrupted restart).
    async fn housekeeping(&mut self) {
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
    async fn watch_degraded(&mut self, probe: &ReadyProbe) {
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

    // ------------------------------------------------------------ helpers

    /// Reads this child's record and, when it verifies, supervises its
    /// process as adopted (not ready yet). Unverifiable records are deleted.
    async fn attach_record(&mut self) -> Result<AdoptOutcome, SuperviseError> {
        let (dir, name) = (self.opts.children_dir.clone(), self.name);
        let found = tokio::task::spawn_blocking(move || find_adoptable(&dir, name))
            .await
            .map_err(io::Error::other)
            .and_then(|r| r)
            .map_err(|source| SuperviseError::Io {
                process: name,
                action: format!(
                    "read its record {}",
                    ChildRecord::path(&self.opts.children_dir, name).display()
                ),
                source,
            })?;
        let (record, fd) = match found {
            Found::Verified(record, fd) => (record, fd),
            Found::NoRecord => return Ok(AdoptOutcome::NoRecord),
            Found::Discarded(reason) => {
                tracing::info!(process = %name, %reason, "discarded child record");
                return Ok(AdoptOutcome::Discarded(reason));
            }
        };
        let pidfd = PidFd::register(record.pid, fd).map_err(|(_, source)| SuperviseError::Io {
            process: name,
            action: format!("watch adopted pid {}", record.pid),
            source,
        })?;
        let age = Duration::from_millis(unix_ms_now().saturating_sub(record.started_unix_ms));
        let since = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
        self.life = Life::Starting(Proc {
            pidfd,
            record,
            adopted: true,
            since,
        });
        self.publish(Some("adopted from a previous daemon".to_owned()));
        Ok(AdoptOutcome::Adopted)
    }

    async fn check_ports(&mut self, spec: &ChildSpec) -> Result<(), SuperviseError> {
        let ports = spec.ports.clone();
        let holder = tokio::task::spawn_blocking(move || {
            for port in ports {
                if let Some(holder) = procfs::port_holder(port)? {
                    return Ok(Some(holder));
                }
            }
            Ok(None)
        })
        .await
        .map_err(io::Error::other)
        .and_then(|r: io::Result<_>| r)
        .map_err(|source| SuperviseError::Io {
            process: self.name,
            action: "read /proc/net/tcp to check its ports".into(),
            source,
        })?;
        let Some(holder) = holder else {
            self.port_conflict = None;
            return Ok(());
        };
        let error = SuperviseError::PortConflict {
            process: self.name,
            port: holder.port,
            pid: holder.pid,
        };
        self.port_conflict = Some(match holder.pid {
            Some(pid) => format!("port {} is held by pid {pid}", holder.port),
            None => format!("port {} is held by another process", holder.port),
        });
        Err(error)
    }

    async fn exited_during_startup(&mut self, spec: &ChildSpec, exit: ChildExit) -> SuperviseError {
        let log_tail = read_tail(spec.log_path.clone()).await.unwrap_or_default();
        SuperviseError::ExitedDuringStartup {
            process: self.name,
            status: exit.to_string(),
            log_path: spec.log_path.clone(),
            log_tail,
        }
    }

    /// Records a failed `start`/`restart` in the state: `failed` with the
    /// reason and log tail, or `stopped` with the port conflict.
    async fn start_failed(&mut self, e: SuperviseError, spec: &ChildSpec) -> SuperviseError {
        let held_after = match &e {
            SuperviseError::ExitedDuringStartup { log_tail, status, .. } => {
                self.last_exit = Some(status.clone());
                self.explained_by_dependency(Some(log_tail)).await
            }
            _ => None,
        };
        if held_after.is_some() {
            // The reconcile holds it for the dependency.
            self.exited(format!("exited during startup: {}", summarize(&e)), held_after);
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

    fn clear_failures(&mut self) {
        self.failures.clear();
        self.idle(Life::Stopped);
        if proc_of(&self.life).is_none() {
            self.reason = None;
        }
        self.log_tail = None;
    }

    fn push_failure(&mut self, ran_for: Duration) {
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

    async fn remove_record(&self) {
        let (dir, name) = (self.opts.children_dir.clone(), self.name);
        let removed = tokio::task::spawn_blocking(move || ChildRecord::remove(&dir, name)).await;
        if let Ok(Err(e)) = removed {
            // A stale record is harmless: the next daemon will not verify it.
            tracing::warn!(process = %name, error = %e, "could not remove child record");
        }
    }

    fn state(&self) -> ProcessState {
        match self.life {
            Life::Stopped => ProcessState::Stopped,
            Life::Starting(_) => ProcessState::Starting,
            Life::Running(_) => ProcessState::Running,
            Life::Exited { held_after: None, .. } => ProcessState::Starting,
            Life::Exited {
                held_after: Some(_), ..
            }
            | Life::Backoff(_)
            | Life::Held(_) => ProcessState::Backoff,
            Life::Failed => ProcessState::Failed,
        }
    }

    /// Enters a state without a process. Only ever called once the process
    /// is reaped; a running one is never forgotten (it would be unwatched).
    fn idle(&mut self, to: Life) {
        match proc_of(&self.life) {
            None => self.life = to,
            Some(p) => {
                tracing::warn!(process = %self.name, pid = p.record.pid, "a state change without a process was asked while one runs; kept")
            }
        }
    }

    /// Publishes the health snapshot and, when state or pid changed, a
    /// `State` event.
    fn publish(&mut self, detail: Option<String>) {
        let state = self.state();
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
            idle: match &self.life {
                Life::Exited { reason, held_after } => Some(Idle::Exited {
                    reason: reason.clone(),
                    held_after: *held_after,
                }),
                Life::Backoff(until) => Some(Idle::Backoff { until: *until }),
                Life::Held(after) => Some(Idle::Held { after: *after }),
                Life::Stopped | Life::Starting(_) | Life::Running(_) | Life::Failed => None,
            },
            failures: self.failures.iter().copied().collect(),
        });
        // An exit awaiting the reconcile's verdict makes no state event:
        // the verdict's state, or the new process, follows at once.
        let awaiting = matches!(self.life, Life::Exited { held_after: None, .. });
        if !awaiting && self.published != (state, pid) {
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

/// The last lines of a log, `None` when it cannot be read (e.g. never written).
async fn read_tail(path: PathBuf) -> Option<Vec<String>> {
    let lines = tokio::task::spawn_blocking(move || logs::tail(&path, TAIL_LINES))
        .await
        .ok()?
        .ok()?;
    // The tail reaches health and events; livekit-server 1.13.5 logs every
    // token it refused, whole.
    Some(
        lines
            .into_iter()
            .map(|l| crate::redact::jwts(&l).into_owned())
            .collect(),
    )
}

/// The program file a record's process was spawned from; a record of an
/// older daemon knows only the executable.
fn program_of(record: &ChildRecord) -> (u64, u64) {
    match (record.program_dev, record.program_ino) {
        (Some(dev), Some(ino)) => (dev, ino),
        _ => (record.exe_dev, record.exe_ino),
    }
}

/// One line for `last_exit` and event details (no log tail).
fn summarize(e: &SuperviseError) -> String {
    match e {
        SuperviseError::ExitedDuringStartup { status, .. } => {
            format!("exited during startup ({status})")
        }
        SuperviseError::NotReady { url, timeout_ms, .. } => {
            format!("not ready: no 200 from {url} within {timeout_ms} ms")
        }
        other => other.to_string(),
    }
}

/// Signals the process group the child leads, or only the child when it
/// left its group. The group is signalled only while the leader provably
/// still holds its pid (same start time as recorded, read just before).
fn signal_group(proc: &Proc, sig: libc::c_int) {
    let pid = proc.record.pid;
    let leads_group = procfs::read_stat(pid)
        .is_ok_and(|st| st.start_time == proc.record.start_time && u32::try_from(st.pgrp).is_ok_and(|g| g == pid));
    match libc::pid_t::try_from(pid) {
        Ok(pgid) if leads_group => {
            // SAFETY: killpg with a verified group id; ESRCH is harmless.
            unsafe { libc::killpg(pgid, sig) };
        }
        _ => {
            let _ = proc.pidfd.signal(sig);
        }
    }
}

/// The result of looking for an adoptable record.
enum Found {
    Verified(ChildRecord, OwnedFd),
    NoRecord,
    Discarded(String),
}

/// Loads and verifies the record of `name`. Blocking.
fn find_adoptable(dir: &std::path::Path, name: ProcessName) -> io::Result<Found> {
    let record = match ChildRecord::load(dir, name) {
        Ok(Some(record)) => record,
        Ok(None) => return Ok(Found::NoRecord),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            ChildRecord::remove(dir, name)?;
            return Ok(Found::Discarded(format!("unreadable record: {e}")));
        }
        Err(e) => return Err(e),
    };
    let discard = |reason: String| -> io::Result<Found> {
        ChildRecord::remove(dir, name)?;
        Ok(Found::Discarded(reason))
    };
    if record.name != name {
        return discard(format!("the record names {}", record.name));
    }
    if let Verification::Mismatch(reason) = verify(&record) {
        return discard(reason);
    }
    let Ok(fd) = pidfd::open_raw(record.pid) else {
        return discard(format!("pid {} exited while being adopted", record.pid));
    };
    // Verified again through the pidfd's lifetime: if the pid had been
    // reused between the first check and the open, this one fails.
    match verify(&record) {
        Verification::Verified => Ok(Found::Verified(record, fd)),
        Verification::Mismatch(reason) => discard(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// livekit-server logs the tokens it refuses; the tail that health and
    /// events quote must not carry them.
    #[tokio::test]
    async fn the_log_tail_quoted_in_health_has_no_token() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("livekit-server.log");
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJwcm9iZSJ9.c2lnbmF0dXJlX2J5dGVz";
        std::fs::write(
            &log,
            format!("starting\ninvalid token: {jwt}, error: token signature is invalid\n"),
        )
        .expect("write log");
        let tail = read_tail(log).await.expect("tail");
        assert_eq!(tail.len(), 2);
        assert!(!tail.iter().any(|l| l.contains("eyJ")), "{tail:?}");
        assert!(tail[1].contains(crate::redact::REDACTED), "{tail:?}");
    }
}
