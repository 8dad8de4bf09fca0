//! The wire contract of hero_livekit.
//!
//! Everything a client, a script or another service relies on lives here:
//! method names, parameter/result/event types, the application error codes
//! and the OpenRPC document built from them. The server registers exactly the
//! methods of [`METHODS`]; a test keeps the two equal.
//!
//! This crate has no I/O and no runtime: it depends only on serde and schemars
//! so that any consumer (CLI, other services) can use it cheaply.

pub mod envfile;
pub mod errors;
pub mod fields;
pub mod openrpc;
pub mod paths;
pub mod types;

pub use errors::{ErrorCode, ErrorData};
pub use fields::ConfigureParams;
pub use types::*;

/// Wire protocol version. Bumped when a method or a shape changes in a way an
/// older peer cannot read. `health.protocol` reports the daemon's.
pub const PROTOCOL: u32 = 1;

/// Crate version shared by every hero_livekit binary of one build.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Service name announced in `/.well-known/heroservice.json`.
pub const SERVICE_NAME: &str = "hero_livekit_server";

/// Fully qualified JSON-RPC method names.
pub mod method {
    pub const INSTALL: &str = "livekitservice.install";
    pub const CONFIGURE: &str = "livekitservice.configure";
    pub const START: &str = "livekitservice.start";
    pub const STOP: &str = "livekitservice.stop";
    pub const RESTART: &str = "livekitservice.restart";
    pub const HEALTH: &str = "livekitservice.health";
    pub const LOGS: &str = "livekitservice.logs";
    pub const CONFIG_SHOW: &str = "livekitservice.config_show";
    pub const SUBSCRIBE_EVENTS: &str = "livekitservice.subscribe_events";
    /// Notification method carrying each [`crate::Event`] to subscribers.
    pub const EVENT_NOTIFICATION: &str = "livekitservice.event";
    pub const UNSUBSCRIBE_EVENTS: &str = "livekitservice.unsubscribe_events";
    pub const DISCOVER: &str = "rpc.discover";
    pub const CLUSTER_TOKEN: &str = "livekitservice.cluster_token";
    pub const CLUSTER_STATUS: &str = "livekitservice.cluster_status";
    pub const BACKEND_TOKEN: &str = "livekitservice.backend_token";
    pub const CLUSTER_LEAVE: &str = "livekitservice.cluster_leave";
}

/// Whether a method may change state. Peers admitted only through
/// `--socket-group` may call read-only methods alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadOnly,
    Mutating,
}

/// One row of the method table: the single list from which the server
/// registers its methods and the OpenRPC document is generated.
#[derive(Debug, Clone, Copy)]
pub struct MethodSpec {
    pub name: &'static str,
    pub summary: &'static str,
    pub access: Access,
    /// Error codes this method can return besides the protocol ones.
    pub errors: &'static [ErrorCode],
    pub subscription: bool,
}

use ErrorCode as E;

/// Every method the daemon serves, in the order of SPEC section 5.
pub const METHODS: &[MethodSpec] = &[
    MethodSpec {
        name: method::INSTALL,
        summary: "Obtain the livekit-server binary, verify its checksum, install it atomically, then heal the config triple.",
        access: Access::Mutating,
        errors: &[E::InstallFailed, E::ChecksumMismatch, E::WriteFailed, E::Unauthorized],
        subscription: false,
    },
    MethodSpec {
        name: method::CONFIGURE,
        summary: "Validate, update the in-memory config, write the triple, verify it on disk; restart running children whose files changed.",
        access: Access::Mutating,
        errors: &[
            E::WriteFailed,
            E::StartFailed,
            E::Unauthorized,
            E::RedisUnavailable,
            E::GenerationConflict,
            E::ClusterTokenRejected,
        ],
        subscription: false,
    },
    MethodSpec {
        name: method::START,
        summary: "Heal the triple, install when needed, start or adopt both children and wait until both are ready.",
        access: Access::Mutating,
        errors: &[
            E::NotInstalled,
            E::InstallFailed,
            E::ChecksumMismatch,
            E::WriteFailed,
            E::PortConflict,
            E::StartFailed,
            E::Timeout,
            E::Unauthorized,
            E::RedisUnavailable,
            E::GenerationConflict,
        ],
        subscription: false,
    },
    MethodSpec {
        name: method::STOP,
        summary: "Stop both children: SIGTERM to the process group, SIGKILL after the timeout.",
        access: Access::Mutating,
        errors: &[E::Unauthorized],
        subscription: false,
    },
    MethodSpec {
        name: method::RESTART,
        summary: "Restart one or both children.",
        access: Access::Mutating,
        errors: &[
            E::NotInstalled,
            E::PortConflict,
            E::StartFailed,
            E::Timeout,
            E::Unauthorized,
            E::RedisUnavailable,
        ],
        subscription: false,
    },
    MethodSpec {
        name: method::HEALTH,
        summary: "The health document: config hashes in memory and on disk, drift, and the children's state. Read-only.",
        access: Access::ReadOnly,
        errors: &[],
        subscription: false,
    },
    MethodSpec {
        name: method::LOGS,
        summary: "The tail of a child's log.",
        access: Access::ReadOnly,
        errors: &[E::Io],
        subscription: false,
    },
    MethodSpec {
        name: method::CONFIG_SHOW,
        summary: "The effective settings (secrets only as set/unset), which differ from LiveKit's defaults, and the livekit-server version they are rendered for. Read-only.",
        access: Access::ReadOnly,
        errors: &[],
        subscription: false,
    },
    MethodSpec {
        name: method::SUBSCRIBE_EVENTS,
        summary: "WebSocket subscription to state changes, heals, restarts and install progress.",
        access: Access::ReadOnly,
        errors: &[E::WebSocketRequired, E::LimitReached],
        subscription: true,
    },
    MethodSpec {
        name: method::CLUSTER_TOKEN,
        // Mutating: the join secret is for the daemon's uid and root only,
        // never for `--socket-group` readers.
        summary: "The cluster's join secret, for `configure {cluster, cluster_token}` on the next node. Full access only.",
        access: Access::Mutating,
        errors: &[E::NotInCluster, E::Unauthorized],
        subscription: false,
    },
    MethodSpec {
        name: method::CLUSTER_STATUS,
        summary: "The cluster this node belongs to, the generation of its credential and the nodes seen by their heartbeats. Read-only.",
        access: Access::ReadOnly,
        errors: &[],
        subscription: false,
    },
    MethodSpec {
        name: method::BACKEND_TOKEN,
        // Mutating: who holds the secret may mint any token, so it is for
        // the daemon's uid and root only, never for `--socket-group` readers.
        summary: "lk-backend's mint secret: the bearer `POST /token` requires (`Authorization: Bearer <it>`), for the services allowed to mint, and the URL to post to. Full access only.",
        access: Access::Mutating,
        errors: &[E::Unauthorized],
        subscription: false,
    },
    MethodSpec {
        name: method::CLUSTER_LEAVE,
        summary: "Leave the cluster: this node's heartbeat and its membership file are removed; it keeps serving with the credential it runs, as a single node.",
        access: Access::Mutating,
        errors: &[E::NotInCluster, E::WriteFailed, E::Unauthorized],
        subscription: false,
    },
    MethodSpec {
        name: method::DISCOVER,
        summary: "The OpenRPC 1.3 document of this service.",
        access: Access::ReadOnly,
        errors: &[],
        subscription: false,
    },
];

/// Looks a method up in [`METHODS`].
pub fn method_spec(name: &str) -> Option<&'static MethodSpec> {
    METHODS.iter().find(|m| m.name == name)
}
