//! Parameter, result, health and event types.
//!
//! Parameters are passed by name (a JSON object). Every parameter is optional
//! unless stated otherwise, and unknown fields are refused so that a typo in a
//! script fails loudly instead of being ignored.
//!
//! Longer than 600 lines: one small type per method's params, result and
//! event, each a few lines with its wire docs; the configure fields are in
//! [`crate::fields`].

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The two children the daemon supervises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ProcessName {
    #[serde(rename = "livekit-server")]
    LivekitServer,
    #[serde(rename = "lk-backend")]
    LkBackend,
}

impl ProcessName {
    pub const ALL: [ProcessName; 2] = [ProcessName::LivekitServer, ProcessName::LkBackend];

    pub const fn as_str(self) -> &'static str {
        match self {
            ProcessName::LivekitServer => "livekit-server",
            ProcessName::LkBackend => "lk-backend",
        }
    }
}

impl fmt::Display for ProcessName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ProcessName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "livekit-server" => Ok(ProcessName::LivekitServer),
            "lk-backend" => Ok(ProcessName::LkBackend),
            other => Err(format!(
                "unknown process `{other}`: expected `livekit-server` or `lk-backend`"
            )),
        }
    }
}

/// The three files of the config triple, in write order.
pub const TRIPLE_FILES: [&str; 3] = ["runtime.json", "livekit.yaml", "backend.env"];

// ---------------------------------------------------------------- params

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallParams {
    /// livekit-server release version, e.g. `1.9.1`. Defaults to the pinned version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// http(s) URL or local path of a release tarball or a bare binary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Expected sha256 (hex) of the tarball or binary named by `source`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Reinstall even when the same version is installed and verifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
}

impl fmt::Debug for TurnServerParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let given = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("TurnServerParam")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("protocol", &self.protocol)
            .field("username", &self.username)
            .field("credential", &given(&self.credential))
            .field("secret", &given(&self.secret))
            .finish()
    }
}

/// `rtc_udp_port`: a port number, or a `start-end` range as a string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum UdpPortParam {
    Port(u32),
    Text(String),
}

/// One external TURN server handed to clients: `username` and
/// `credential` (long-term credentials), or `secret` (TURN REST API).
/// `Debug` shows whether the secrets are given, never their value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TurnServerParam {
    /// Hostname or IP address.
    pub host: String,
    /// 1-65535.
    pub port: u32,
    /// `udp`, `tcp` or `tls`.
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// A secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// A secret: the shared secret of the TURN REST API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartParams {
    /// Mint a new credential on purpose (the only path that rotates a valid one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset: Option<bool>,
    /// Re-run `install` first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<bool>,
    /// How long to wait for both children to become ready (default 30000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopParams {
    /// The drain deadline: how long each child gets to exit after SIGTERM
    /// before SIGKILL (default the daemon's `--stop-timeout-ms`, 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The same drain deadline under `restart`'s name; giving both with
    /// different values is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestartParams {
    /// One child to restart; both when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessName>,
    /// How long to wait for readiness (default 30000), counted once the
    /// old process is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The drain deadline: how long each child restarted gets to exit after
    /// SIGTERM before SIGKILL (default the daemon's `--stop-timeout-ms`,
    /// 10000). livekit-server waits for its participants with no deadline
    /// of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogsParams {
    /// Which child's log.
    pub process: ProcessName,
    /// How many trailing lines (default 100, at most 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

// ---------------------------------------------------------------- results

/// What a heal did. A heal of a consistent triple writes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HealReport {
    /// What caused the heal: `boot`, `configure`, `start`, `reset`, `restart`,
    /// `install`, `drift`.
    pub trigger: String,
    /// Drift found before the heal, one sentence per difference.
    pub drift: Vec<String>,
    /// Files rewritten, in write order.
    pub written: Vec<String>,
    /// Whether a new credential was minted.
    pub minted: bool,
    /// Children (re)started because they did not run the current
    /// renderings (or were meant to run and did not).
    pub restarted: Vec<ProcessName>,
    /// Files that could not be written yet, in write order. Once
    /// `runtime.json` is in place the new config is the truth: the daemon
    /// keeps retrying these (every reconcile tick) and `health` reports them
    /// as drift until they are written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<String>,
    /// Why the first pending file could not be written (never a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ConfigureResult {
    /// Config fields whose value changed.
    pub changed_fields: Vec<String>,
    /// Whether a key/secret was minted because none was given or held.
    pub minted: bool,
    /// Files written and children restarted.
    pub heal: HealReport,
    /// The API key now in force (never the secret).
    pub api_key: String,
    /// sha256 of the canonical in-memory config.
    pub in_memory_hash: String,
    /// What joining the cluster did, when the call named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterJoin>,
}

/// What `configure {cluster}` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterJoin {
    pub name: String,
    /// This node's id in the cluster's heartbeats.
    pub node_id: String,
    /// The generation of the cluster's credential this node now runs.
    pub generation: u64,
    /// This node published its own credential (it was the first).
    pub published: bool,
    /// The node held another credential and replaced it with the
    /// cluster's (tokens signed with the old one are no longer accepted).
    pub credential_replaced: bool,
}

/// `livekitservice.cluster_token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterTokenResult {
    pub cluster: String,
    /// The join secret: pass it as `cluster_token` to the next nodes.
    pub cluster_token: String,
}

/// `livekitservice.backend_token`: what a service allowed to mint needs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BackendTokenResult {
    /// The bearer secret: send `Authorization: Bearer <mint_secret>` with
    /// each `POST /token`. Derived from the API secret, so a credential
    /// rotation changes it (a 401 means: ask again).
    pub mint_secret: String,
    /// Where to post: `{token_url}` is lk-backend's `POST /token` on loopback.
    pub token_url: String,
}

impl std::fmt::Debug for BackendTokenResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTokenResult")
            .field("mint_secret", &"<redacted>")
            .field("token_url", &self.token_url)
            .finish()
    }
}

/// `livekitservice.cluster_leave`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterLeave {
    /// The cluster this node left.
    pub cluster: String,
    /// The id its heartbeats carried.
    pub node_id: String,
    /// Its heartbeat was removed from Redis now, so no member lists it.
    /// `false` when Redis could not be reached: the heartbeat then expires
    /// on its own within three poll periods.
    pub heartbeat_removed: bool,
    /// The key of the credential the node keeps serving with.
    pub api_key: String,
}

/// One effective setting, as `config_show` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SettingShow {
    /// The `configure` parameter name.
    pub name: String,
    /// The effective value; a secret is only `"set"` or `"unset"`.
    pub value: serde_json::Value,
    /// LiveKit's (or hero_livekit's) default for it, in the same form.
    pub default: serde_json::Value,
    /// Whether the value differs from the default.
    pub differs: bool,
    /// The `livekit.yaml` key it is rendered as, when livekit-server reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub livekit_key: Option<String>,
    /// Set, but left out of `livekit.yaml` because the installed
    /// livekit-server is too old for its key: the version it needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs_version: Option<String>,
}

/// `config_show`: the effective settings. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ConfigShowResult {
    /// The livekit-server version `livekit.yaml` is rendered for (the
    /// install record, else `livekit-server --version`); null when unknown,
    /// and then every key is rendered.
    pub target_version: Option<String>,
    /// Every `configure` parameter, in the method's order.
    pub settings: Vec<SettingShow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InstallResult {
    pub version: String,
    /// Where the binary is installed.
    pub path: String,
    /// sha256 of the installed binary.
    pub sha256: String,
    /// Where it came from (URL or path).
    pub source: String,
    /// False when the same version was already installed and verified.
    pub changed: bool,
    /// Things the operator should know, e.g. a local source installed unverified.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The heal of the triple that follows an install.
    pub heal: HealReport,
}

/// What `start`/`restart` did to one child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StartOutcome {
    /// Spawned by this call.
    Started,
    /// Restarted by this call (its file changed, or `restart` was asked).
    Restarted,
    /// Was already running and ready on the current files: untouched.
    AlreadyRunning,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StartResult {
    pub heal: HealReport,
    /// Whether `reset` rotated the credential.
    pub rotated: bool,
    /// Present when this call installed livekit-server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<InstallResult>,
    pub processes: BTreeMap<ProcessName, StartOutcome>,
    pub ready_for_tokens: bool,
    pub livekit_url: String,
    pub backend_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StopResult {
    /// Children that were running and are now stopped.
    pub stopped: Vec<ProcessName>,
    /// Children that did not exit on SIGTERM within the drain deadline and
    /// were killed with SIGKILL; the others in `stopped` exited on SIGTERM.
    pub killed: Vec<ProcessName>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RestartResult {
    /// The heal that ran first, so no child is restarted onto a drifted
    /// file. Its `restarted` names readers of a healed file that were not
    /// asked for but had to follow it.
    pub heal: HealReport,
    /// The children restarted as asked.
    pub restarted: Vec<ProcessName>,
    /// Children (asked for or following a healed file) that did not exit on
    /// SIGTERM within the drain deadline and were killed with SIGKILL; the
    /// others restarted exited on SIGTERM.
    #[serde(default)]
    pub killed: Vec<ProcessName>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LogsResult {
    pub process: ProcessName,
    pub path: String,
    pub lines: Vec<String>,
}

// ---------------------------------------------------------------- health

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OverallStatus {
    Ok,
    Degraded,
    Down,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProcessState {
    Stopped,
    Starting,
    Running,
    Backoff,
    Failed,
}

impl fmt::Display for ProcessState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProcessState::Stopped => "stopped",
            ProcessState::Starting => "starting",
            ProcessState::Running => "running",
            ProcessState::Backoff => "backoff",
            ProcessState::Failed => "failed",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FileHealth {
    pub present: bool,
    /// sha256 (hex) of the bytes on disk, null when absent.
    pub sha256: Option<String>,
    /// sha256 (hex) of the rendering from the in-memory config.
    pub expected_sha256: String,
    pub matches: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProcessHealth {
    pub state: ProcessState,
    pub pid: Option<u32>,
    pub ready: bool,
    pub restarts: u32,
    pub uptime_ms: u64,
    /// sha256 of the config file the child was started with.
    pub config_sha256: Option<String>,
    pub last_exit: Option<String>,
    /// Whether this instance of the daemon adopted the child from a previous one.
    pub adopted: bool,
    /// A port this child needs that a foreign process holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_conflict: Option<String>,
    /// The log tail, when the child is `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<Vec<String>>,
    /// Why the child waits (`backoff` until Redis answers) or runs without
    /// being ready (406 while Redis is unreachable); never a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ProcessHealth {
    pub fn stopped() -> Self {
        ProcessHealth {
            state: ProcessState::Stopped,
            pid: None,
            ready: false,
            restarts: 0,
            uptime_ms: 0,
            config_sha256: None,
            last_exit: None,
            adopted: false,
            port_conflict: None,
            log_tail: None,
            reason: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BinaryHealth {
    pub path: String,
    pub installed: bool,
    pub version: Option<String>,
    pub sha256: Option<String>,
    /// The livekit-server version `livekit.yaml` is rendered for: the
    /// install record's, else what the binary's `--version` says; null when
    /// unknown (every key is rendered).
    #[serde(default)]
    pub target_version: Option<String>,
}

/// The last token-chain probe: a token obtained from the running lk-backend
/// and accepted by the running livekit-server (`/rtc/validate`), the way a
/// browser's join is validated. Run in the background after every change
/// and every few seconds, never on the health path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TokenChainHealth {
    /// The last probe passed, and nothing it depends on changed since.
    pub ok: bool,
    /// Wall-clock time of the last probe (0: none yet).
    pub checked_at_ms: u64,
    /// How long the last probe took.
    pub latency_ms: u64,
    /// Why it failed: LiveKit's own text for a refused token (e.g.
    /// `401 invalid authorization token: ...`), or which leg did not answer.
    /// Never a secret.
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RedisHealth {
    /// The configured `redis_address` (`host:port`).
    pub address: String,
    /// Whether it answered `PING` with `PONG` at the last check (every few
    /// seconds, and right after `configure`).
    pub reachable: bool,
    /// Why not, when it did not: refused, timed out, wants a password, or
    /// not checked yet.
    pub error: Option<String>,
}

/// Where a node stands in its cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClusterState {
    /// No cluster named (a single node).
    #[default]
    NotConfigured,
    /// The node runs the cluster's current credential.
    Joined,
    /// Redis did not answer: the node serves with what it holds.
    Unreachable,
    /// The record in Redis cannot be opened with this node's join secret,
    /// or cannot be reconciled with what the node runs.
    Conflict,
}

impl fmt::Display for ClusterState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClusterState::NotConfigured => "not_configured",
            ClusterState::Joined => "joined",
            ClusterState::Unreachable => "unreachable",
            ClusterState::Conflict => "conflict",
        })
    }
}

/// One node of the cluster, as its last heartbeat describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterNode {
    pub id: String,
    /// The generation of the credential it runs.
    pub generation: u64,
    pub livekit_url: String,
    /// How long ago its last heartbeat was written.
    pub last_seen_ms: u64,
}

/// `health.cluster` and `livekitservice.cluster_status`. Never a secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterHealth {
    /// The cluster's name; null when none is configured.
    pub name: Option<String>,
    pub state: ClusterState,
    /// The generation of the credential this node runs (0: not known yet).
    pub generation: u64,
    /// This node's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// The nodes whose heartbeat is alive, this one included.
    pub nodes: Vec<ClusterNode>,
    /// Why the state is not `joined`.
    pub error: Option<String>,
}

/// The health document (SPEC section 7). Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Health {
    pub status: OverallStatus,
    /// Proven, not inferred: the files are consistent, both children are
    /// ready and run the current renderings, and the last token-chain probe
    /// passed after the last change.
    pub ready_for_tokens: bool,
    pub consistent: bool,
    pub in_memory_hash: String,
    /// Keyed by file name: `runtime.json`, `livekit.yaml`, `backend.env`.
    pub files: BTreeMap<String, FileHealth>,
    pub drift: Vec<String>,
    pub api_key: String,
    pub livekit_url: String,
    pub backend_url: String,
    /// Keyed by process name: `livekit-server`, `lk-backend`.
    pub processes: BTreeMap<String, ProcessHealth>,
    pub binary: BinaryHealth,
    /// The last token-chain probe (absent from daemons older than the probe).
    #[serde(default)]
    pub token_chain: TokenChainHealth,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisHealth>,
    /// The cluster (absent from daemons older than clusters).
    #[serde(default)]
    pub cluster: ClusterHealth,
    pub version: String,
    pub protocol: u32,
}

// ---------------------------------------------------------------- events

/// One event on the `subscribe_events` stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A child changed state.
    State {
        process: ProcessName,
        state: ProcessState,
        pid: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// The triple was healed (some file rewritten).
    Healed {
        trigger: String,
        written: Vec<String>,
        drift: Vec<String>,
        minted: bool,
    },
    /// A child was restarted by the supervisor.
    Restarted { process: ProcessName, reason: String },
    /// The in-memory config changed.
    Configured {
        in_memory_hash: String,
        changed_fields: Vec<String>,
    },
    /// Install progress: bytes done of total (total unknown when null).
    InstallProgress {
        phase: String,
        bytes_done: u64,
        bytes_total: Option<u64>,
    },
    /// livekit-server was installed.
    Installed { version: String, sha256: String },
    /// The token-chain probe failed: a token from lk-backend was not
    /// accepted by livekit-server (or a leg did not answer). The reconcile
    /// runs next and restarts the child that is wrong.
    TokenChainFailed { error: String },
    /// The node joined a cluster, publishing its credential or adopting
    /// the cluster's.
    ClusterJoined {
        cluster: String,
        node_id: String,
        generation: u64,
        published: bool,
    },
    /// The node's own credential was replaced by the cluster's.
    CredentialReplaced {
        cluster: String,
        generation: u64,
        previous_api_key: String,
        api_key: String,
    },
    /// A new generation of the cluster's credential, written by this node
    /// or picked up from another, is applied here.
    ClusterCredentialChanged {
        cluster: String,
        generation: u64,
        api_key: String,
    },
    /// Redis held no record (restarted empty, flushed): this node wrote
    /// its credential back, unchanged.
    ClusterRepublished { cluster: String, generation: u64 },
    /// The node left its cluster (`cluster_leave`) and serves alone with
    /// the credential it ran.
    ClusterLeft { cluster: String, node_id: String },
}

/// What subscribers receive: an event with a sequence number and a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EventMessage {
    pub seq: u64,
    pub unix_ms: u64,
    #[serde(flatten)]
    pub event: Event,
}

/// `/.well-known/heroservice.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ServiceInfo {
    pub name: String,
    pub version: String,
    pub protocol: String,
    pub socket: String,
}

#[cfg(test)]
mod tests {
    use crate::fields::ConfigureParams;

    use super::*;

    #[test]
    fn configure_params_debug_never_shows_a_secret() {
        let p = ConfigureParams {
            api_key: Some("APIvisibleKey01".into()),
            api_secret: Some("secret-api-0123456789abcdefghijklmnop".into()),
            redis_password: Some("secret-redis".into()),
            redis_sentinel_password: Some("secret-sentinel".into()),
            prometheus_password: Some("secret-prom".into()),
            cluster_token: Some("secret-join".into()),
            turn_servers: Some(vec![TurnServerParam {
                host: "turn.example.org".into(),
                port: 3478,
                protocol: "udp".into(),
                username: Some("u".into()),
                credential: Some("secret-turn-credential".into()),
                secret: Some("secret-turn-secret".into()),
            }]),
            ..ConfigureParams::default()
        };
        let shown = format!("{p:?}");
        assert!(!shown.contains("secret-"), "{shown}");
        assert!(shown.contains("APIvisibleKey01"), "{shown}");
        assert_eq!(shown.matches("<redacted>").count(), 7, "{shown}");
    }
}
