//! Stable application error codes (-32000..-32099) and their `data` shape.
//!
//! Protocol faults use the standard JSON-RPC codes (-32602 for invalid
//! params, naming the field). Domain faults use the codes below; their
//! numbers and `kind` strings never change meaning once released, because
//! scripts branch on them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Standard JSON-RPC code for invalid parameters.
pub const INVALID_PARAMS: i32 = -32602;

/// Every domain error the daemon can return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The livekit-server binary is absent and no install source is known.
    NotInstalled,
    /// Download, extraction or installation of livekit-server failed.
    InstallFailed,
    /// The obtained binary does not match the expected sha256.
    ChecksumMismatch,
    /// Writing a file of the triple (or the binary) failed; old files intact.
    WriteFailed,
    /// A port the service needs is held by a process that is not ours.
    PortConflict,
    /// A child exited during startup or never became ready.
    StartFailed,
    /// A wait exceeded the caller's `timeout_ms`.
    Timeout,
    /// The peer's uid may not call this method.
    Unauthorized,
    /// A subscription was requested over plain HTTP.
    WebSocketRequired,
    /// Reading state (e.g. a log file) failed.
    Io,
    /// A child is in the `failed` state after a crash loop.
    CrashLoop,
    /// The daemon is shutting down and takes no new work.
    ShuttingDown,
    /// A limit of the daemon's (named in the message) refused the request.
    LimitReached,
    /// The cluster's Redis did not answer in time; nothing was changed.
    RedisUnavailable,
    /// Another node changed the cluster's credential first (the message
    /// names the winning generation); nothing was changed here.
    GenerationConflict,
    /// The join secret does not open the cluster's record (wrong
    /// `cluster_token`, or a record written by someone else).
    ClusterTokenRejected,
    /// The node has not joined a cluster.
    NotInCluster,
}

impl ErrorCode {
    /// All codes, for the OpenRPC error table.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::NotInstalled,
        ErrorCode::InstallFailed,
        ErrorCode::ChecksumMismatch,
        ErrorCode::WriteFailed,
        ErrorCode::PortConflict,
        ErrorCode::StartFailed,
        ErrorCode::Timeout,
        ErrorCode::Unauthorized,
        ErrorCode::WebSocketRequired,
        ErrorCode::Io,
        ErrorCode::CrashLoop,
        ErrorCode::ShuttingDown,
        ErrorCode::LimitReached,
        ErrorCode::RedisUnavailable,
        ErrorCode::GenerationConflict,
        ErrorCode::ClusterTokenRejected,
        ErrorCode::NotInCluster,
    ];

    /// The JSON-RPC error code.
    pub const fn code(self) -> i32 {
        match self {
            ErrorCode::NotInstalled => -32001,
            ErrorCode::InstallFailed => -32002,
            ErrorCode::ChecksumMismatch => -32003,
            ErrorCode::WriteFailed => -32004,
            ErrorCode::PortConflict => -32005,
            ErrorCode::StartFailed => -32006,
            ErrorCode::Timeout => -32007,
            ErrorCode::Unauthorized => -32008,
            ErrorCode::WebSocketRequired => -32009,
            ErrorCode::Io => -32010,
            ErrorCode::CrashLoop => -32011,
            ErrorCode::ShuttingDown => -32012,
            ErrorCode::LimitReached => -32013,
            ErrorCode::RedisUnavailable => -32014,
            ErrorCode::GenerationConflict => -32015,
            ErrorCode::ClusterTokenRejected => -32016,
            ErrorCode::NotInCluster => -32017,
        }
    }

    /// The stable machine-readable `data.kind`.
    pub const fn kind(self) -> &'static str {
        match self {
            ErrorCode::NotInstalled => "not_installed",
            ErrorCode::InstallFailed => "install_failed",
            ErrorCode::ChecksumMismatch => "checksum_mismatch",
            ErrorCode::WriteFailed => "write_failed",
            ErrorCode::PortConflict => "port_conflict",
            ErrorCode::StartFailed => "start_failed",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::WebSocketRequired => "websocket_required",
            ErrorCode::Io => "io",
            ErrorCode::CrashLoop => "crash_loop",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::LimitReached => "limit_reached",
            ErrorCode::RedisUnavailable => "redis_unavailable",
            ErrorCode::GenerationConflict => "generation_conflict",
            ErrorCode::ClusterTokenRejected => "cluster_token_rejected",
            ErrorCode::NotInCluster => "not_in_cluster",
        }
    }

    /// Whether the same call may succeed later without operator action.
    pub const fn retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::InstallFailed
                | ErrorCode::Timeout
                | ErrorCode::Io
                | ErrorCode::ShuttingDown
                | ErrorCode::StartFailed
                | ErrorCode::LimitReached
                | ErrorCode::RedisUnavailable
        )
    }

    /// Default actionable sentence for the operator. Call sites may give a
    /// more specific hint.
    pub const fn default_hint(self) -> &'static str {
        match self {
            ErrorCode::NotInstalled => "run `hero_livekit install` (or `hero_livekit install --source PATH` offline)",
            ErrorCode::InstallFailed => {
                "check the source URL or path and the network, then run `hero_livekit install` again"
            }
            ErrorCode::ChecksumMismatch => "check the --sha256 value and the source; the previous binary was kept",
            ErrorCode::WriteFailed => "free disk space or fix the permissions of the state directory, then retry",
            ErrorCode::PortConflict => {
                "stop the process holding the port or choose another with `hero_livekit configure --port P`"
            }
            ErrorCode::StartFailed => {
                "read `hero_livekit logs <process>` for the child's own error, fix it, then run `hero_livekit start`"
            }
            ErrorCode::Timeout => "retry with a larger --timeout-ms, or read `hero_livekit logs <process>`",
            ErrorCode::Unauthorized => "run the command as the daemon's user or as root",
            ErrorCode::WebSocketRequired => "connect over WebSocket on the same socket to subscribe",
            ErrorCode::Io => "check the state directory and its permissions",
            ErrorCode::CrashLoop => "read `hero_livekit logs <process>`, fix the cause, then run `hero_livekit start`",
            ErrorCode::ShuttingDown => "wait for the daemon to restart, then retry",
            ErrorCode::LimitReached => "close idle connections or subscriptions, then retry",
            ErrorCode::RedisUnavailable => {
                "the node keeps serving with its credential; retry once `hero_livekit cluster status` shows the cluster joined"
            }
            ErrorCode::GenerationConflict => {
                "another node changed the credential first; every node now runs it: check `hero_livekit cluster status`, then decide whether to change it again"
            }
            ErrorCode::ClusterTokenRejected => {
                "pass the join secret printed by `hero_livekit cluster token` on a node of that cluster"
            }
            ErrorCode::NotInCluster => "join one with `hero_livekit configure --cluster NAME` (Redis set with --redis-address)",
        }
    }

    /// Reverse lookup from the numeric code.
    pub fn from_code(code: i32) -> Option<ErrorCode> {
        Self::ALL.iter().copied().find(|c| c.code() == code)
    }

    /// A short human title for the OpenRPC error table.
    pub const fn title(self) -> &'static str {
        match self {
            ErrorCode::NotInstalled => "livekit-server is not installed",
            ErrorCode::InstallFailed => "installation failed",
            ErrorCode::ChecksumMismatch => "checksum mismatch",
            ErrorCode::WriteFailed => "writing state failed",
            ErrorCode::PortConflict => "port in use by another process",
            ErrorCode::StartFailed => "a child failed to start",
            ErrorCode::Timeout => "timed out",
            ErrorCode::Unauthorized => "not authorized",
            ErrorCode::WebSocketRequired => "subscription needs WebSocket",
            ErrorCode::Io => "I/O error",
            ErrorCode::CrashLoop => "a child is in a crash loop",
            ErrorCode::ShuttingDown => "daemon shutting down",
            ErrorCode::LimitReached => "a limit was reached",
            ErrorCode::RedisUnavailable => "the cluster's Redis is unreachable",
            ErrorCode::GenerationConflict => "the cluster's credential changed meanwhile",
            ErrorCode::ClusterTokenRejected => "the cluster join secret was rejected",
            ErrorCode::NotInCluster => "not in a cluster",
        }
    }
}

/// The `data` member of every application error (and of -32602).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorData {
    /// Stable machine-readable kind, e.g. `not_installed` or `invalid_params`.
    pub kind: String,
    /// One actionable sentence for the operator.
    pub hint: String,
    /// Whether retrying the same call later may succeed.
    pub retryable: bool,
    /// For invalid params: the offending field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}
