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
//!
//! Parts: this file the handle, its commands and the published snapshot;
//! `step` the pure core of the life after an exit (`step(phase, input) ->
//! (phase, effects)`, unit-tested without processes); `actor` the task's
//! state, loop and requests; `process` the process plumbing (spawn,
//! readiness, stop, reap, records, adoption, ports).

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

mod actor;
mod process;
mod step;

use actor::{Actor, Life};
use step::{step, Effect, Input, Phase};

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
    /// The restart policy, which the reconcile applies (see [`Child::policy`]).
    pub backoff: BackoffPolicy,
    /// SIGTERM-to-SIGKILL grace used when the supervisor itself stops a
    /// child (a restart without a drain deadline, a recovery not ready in
    /// time); `stop` takes its own.
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

    /// The restart policy, which the reconcile applies (see [`Child::policy`]).the reconcile applies to this child's failures.
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
