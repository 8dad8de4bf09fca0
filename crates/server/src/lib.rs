//! hero_livekit_server: the supervisor daemon.
//!
//! See ARCHITECTURE.md at the repository root for the code map and the
//! invariants every module keeps.

pub mod cluster;
pub mod config;
pub mod daemon;
pub mod dirs;
pub mod error;
pub mod events;
pub mod fastcall;
pub mod http;
pub mod install;
pub mod limits;
mod loopback;
pub mod metrics;
pub mod notify;
pub mod paths;
pub mod peer;
pub mod redact;
mod redis;
pub mod rpc;
pub mod runtime;
pub mod service;
pub mod socket;
pub mod supervise;
