//! Child supervision (SPEC section 8), as a library the daemon drives.
//!
//! One [`Child`] handle per supervised process. Each handle talks to a tokio
//! task that alone owns the child's state (process, restart history, records),
//! so two callers never interleave process changes for the same child.
//!
//! The invariants this module keeps:
//! - A child runs in its own session and process group with exactly the
//!   environment of its [`ChildSpec`]; nothing is inherited from the daemon
//!   (a stray `LIVEKIT_*` variable would silently override livekit.yaml).
//! - The daemon's exit does not take children down: [`Child::detach`] (or
//!   dropping every handle) leaves the process running and its
//!   [`ChildRecord`] on disk, and the next daemon adopts it.
//! - A pid is signalled only while it is proven to be the process we started:
//!   records are verified by pid, start time and executable before adoption,
//!   and a live process is tracked through a pidfd, which cannot be reused.
//! - The task decides nothing about a child's life: after an exit it
//!   reports (the exit, the failure history) and waits for the reconcile
//!   (`service::plan`), which applies the pure [`BackoffPolicy::decide`]
//!   and tells it to recover, back off, give up or hold.
//!
//! Module map: `spec` what to run, `spawn` how it is started (scrubbed
//! environment, setsid, log redirection), `pidfd` exit watching, `record`
//! the on-disk record and its verification, `ready` the HTTP readiness
//! probe, `procfs` /proc parsing (stat, port holders), [`logs`] rotation and
//! tail, `backoff` the restart policy, `events` where state changes go,
//! `hold` waiting for an outside dependency (Redis) instead of crash-looping,
//! `child` the supervising task and its handle.

mod backoff;
mod child;
mod error;
mod events;
mod hold;
pub mod logs;
mod pidfd;
mod procfs;
mod ready;
mod record;
mod spawn;
mod spec;

pub use backoff::{BackoffPolicy, Decision, Failure};
pub use child::{AdoptOutcome, Child, Idle, Settle, Started, StopOutcome, SupervisorOptions};
pub use error::SuperviseError;
pub use events::EventSink;
pub use hero_livekit_proto::StartOutcome;
pub use hold::{releases as dependency_releases, Dependency, DependencyState};
pub use record::{verify, ChildRecord, Verification};
pub use spec::{ChildSpec, ReadyProbe};
