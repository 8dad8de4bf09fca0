//! hero_livekit_server: the supervisor daemon.
//!
//! See ARCHITECTURE.md at the repository root for the code map and the
//! invariants every module keeps.

pub mod config;
pub mod install;
pub mod paths;
pub mod supervise;
