//! The config triple (SPEC sections 5-7): one credential written in
//! `runtime.json`, `livekit.yaml` and `backend.env`, which must always agree.
//!
//! Functional core, imperative shell:
//! - [`rules`]: the leaf: [`ValidationError`] and the one meaning of
//!   "given" every `configure` field follows.
//! - [`model`]: the in-memory [`Config`], the one source of truth, and the
//!   redacting [`Secret`].
//! - [`credential`]: minting in LiveKit's format, placeholder detection.
//! - [`validate`]: every rule a value must pass before it is written, and
//!   the `configure` merge ([`apply_configure`]).
//! - [`redis`]: the Redis settings beyond the address (credentials, db,
//!   TLS, Sentinel, Cluster): their merge, rules, renderings and readers.
//! - [`render`]: the three renderings, pure and byte-deterministic.
//! - `parse` (private): lenient readers with real parsers, for naming drift
//!   and salvaging a credential at boot.
//! - [`check`]: consistency = every file present and byte-equal to its
//!   rendering; otherwise which field of which file differs.
//! - [`heal`]: [`plan`], the pure decision of what the truth is, what to
//!   write and what to restart.
//! - [`store`]: the shell: [`StateDir`] observes and writes atomically,
//!   [`FileCache`] keeps `health` cheap.
//! - [`settings`]: the production settings (TURN, webhooks, rooms, logging,
//!   Prometheus...), their validation, renderings and version gating.
//! - [`fault`]: abort points for the crash-consistency test.
//!
//! Invariants: renderers are pure; drift text, errors and `Debug` output
//! never hold a secret; a consistent triple yields an empty plan, so it is
//! never written, fsynced, rotated or restarted; a valid credential on disk
//! is never replaced except by `reset`.

pub mod check;
pub mod credential;
pub mod fault;
pub mod heal;
pub mod model;
mod parse;
pub mod redis;
pub mod render;
pub mod rules;
pub mod settings;
pub mod store;
pub mod validate;

#[cfg(test)]
mod testutil;

pub use check::{check, check_rendered, Consistency, FileCheck};
pub use credential::{is_placeholder, mint_credential, MintError};
pub use heal::{plan, plan_rendered, plan_with, ConfigSource, FileObs, HealPlan, Observed};
pub use model::{Config, Credential, Secret};
pub use redis::RedisSettings;
pub use render::{render, Rendered, TripleFile};
pub use settings::{LivekitVersion, Settings};
pub use store::{FileCache, StateDir, WriteError};
pub use validate::{apply_configure, validate_config, ConfigUpdate, ConfigureError, ValidationError};
