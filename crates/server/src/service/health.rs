//! What `health` reads: one published [`View`] of the desired state and the
//! background observations, the children's own status channels, and the
//! stat-validated file cache; and the memo that keeps the hot path cheap.

use std::sync::Arc;

use hero_livekit_proto::{
    self as proto, BinaryHealth, ClusterHealth, Health, OverallStatus, ProcessHealth, ProcessName, ProcessState,
    RedisHealth, TokenChainHealth,
};

use crate::config::{self, Rendered, TripleFile};
use crate::install::InstalledInfo;

/// Everything `health` shows that is not read from the children or the
/// files: replaced as a whole (a `watch` value), never locked for long.
#[derive(Debug, Clone)]
pub(crate) struct View {
    /// Bumped on every change, so the memo can tell "unchanged" cheaply.
    pub version: u64,
    /// The in-memory config (the truth) and its renderings.
    pub rendered: Arc<Rendered>,
    pub installed: Option<InstalledInfo>,
    /// The last Redis check, for the address it checked.
    pub redis: Option<RedisHealth>,
    pub chain: Chain,
    /// The cluster as the last background sync left it.
    pub cluster: ClusterView,
}

/// The token chain as the last probe left it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Chain {
    /// The last probe, as health reports it when nothing changed since.
    pub last: TokenChainHealth,
    /// The state the last probe ran against. When it passed, it proved that
    /// state; `ready_for_tokens` needs it to equal the current one ("passed
    /// after the last change").
    pub probed: Option<Fingerprint>,
    /// What lk-backend said it has loaded, and which process said it.
    pub backend: Option<BackendReport>,
    /// The last probe's token was refused by livekit-server (401).
    pub refused: bool,
}

/// lk-backend's own word on the `backend.env` it has loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BackendReport {
    pub pid: u32,
    pub sha256: Option<String>,
}

/// What a probe's verdict depends on: the config, and each child's
/// published state (a restart, an exit or an adoption changes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    pub in_memory_hash: String,
    pub livekit: u64,
    pub backend: u64,
}

/// The children as `health` sees them at one moment.
pub(crate) struct ChildrenNow {
    pub livekit: ProcessHealth,
    pub backend: ProcessHealth,
    pub fingerprint: Fingerprint,
}

/// The hash of the `backend.env` lk-backend runs: its own report when the
/// reporting process is the one running now, else its spawn record.
pub(crate) fn backend_running_sha256(be: &ProcessHealth, chain: &Chain) -> Option<String> {
    match (&chain.backend, be.pid) {
        (Some(r), Some(pid)) if r.pid == pid => r.sha256.clone(),
        _ => be.config_sha256.clone(),
    }
}

/// The health document (SPEC section 7).
pub(crate) fn build(
    view: &View,
    now: ChildrenNow,
    consistency: &config::Consistency,
    binary_path: &str,
    binary_present: bool,
) -> Health {
    let snap = &view.rendered;
    let ChildrenNow {
        livekit: lk,
        backend: mut be,
        fingerprint,
    } = now;
    be.config_sha256 = backend_running_sha256(&be, &view.chain);
    // livekit-server reads its keys only at startup, lk-backend whenever it
    // is told to: each must run the file that is on disk now.
    let lk_current = lk.config_sha256.as_deref() == Some(snap.sha256(TripleFile::LivekitYaml));
    let be_current = be.config_sha256.as_deref() == Some(snap.sha256(TripleFile::BackendEnv));
    let proved = view.chain.last.ok && view.chain.probed.as_ref() == Some(&fingerprint);
    let token_chain = if proved || !view.chain.last.ok {
        view.chain.last.clone()
    } else {
        TokenChainHealth {
            ok: false,
            error: Some("not proven since the last change; the probe runs now".into()),
            ..view.chain.last.clone()
        }
    };
    let ready_for_tokens = consistency.consistent && lk.ready && be.ready && lk_current && be_current && proved;
    let any_running = [&lk, &be]
        .iter()
        .any(|p| !matches!(p.state, ProcessState::Stopped | ProcessState::Failed));
    let status = if ready_for_tokens {
        OverallStatus::Ok
    } else if any_running {
        OverallStatus::Degraded
    } else {
        OverallStatus::Down
    };
    let c = snap.config();
    Health {
        status,
        ready_for_tokens,
        consistent: consistency.consistent,
        in_memory_hash: snap.in_memory_hash().to_string(),
        files: consistency.files_health(),
        drift: consistency.drift.clone(),
        api_key: c.api_key.clone(),
        livekit_url: c.livekit_url(),
        backend_url: c.backend_url(),
        processes: [
            (ProcessName::LivekitServer.to_string(), lk),
            (ProcessName::LkBackend.to_string(), be),
        ]
        .into_iter()
        .collect(),
        binary: BinaryHealth {
            path: binary_path.to_string(),
            installed: binary_present,
            version: view.installed.as_ref().and_then(|i| i.version.clone()),
            sha256: view.installed.as_ref().and_then(|i| i.sha256.clone()),
            target_version: c.livekit_version.map(|v| v.to_string()),
        },
        token_chain,
        redis: redis_health(view, crate::redis::RedisTarget::from_config(c).map(|t| t.describe())),
        cluster: view.cluster.to_health(super::unix_ms()),
        version: proto::VERSION.into(),
        protocol: proto::PROTOCOL,
    }
}

/// What `health` says of Redis: nothing when none is configured; the last
/// check when it was of the target configured now.
fn redis_health(view: &View, target: Option<String>) -> Option<RedisHealth> {
    let address = target?;
    Some(match &view.redis {
        Some(h) if h.address == address => h.clone(),
        _ => RedisHealth {
            address,
            reachable: false,
            error: Some("not checked yet".into()),
        },
    })
}

/// The last health document, serialized, with what it was built from.
pub(crate) struct Memo {
    pub key: MemoKey,
    pub json: HealthJson,
    pub ready_for_tokens: bool,
}

/// A serialized health document, shared: every call served from the memo
/// sends these bytes (as the JSON-RPC result, or as the body of `GET
/// /health`) without copying them.
#[derive(Debug, Clone)]
pub struct HealthJson(Arc<Box<serde_json::value::RawValue>>);

impl HealthJson {
    pub(crate) fn new(raw: Box<serde_json::value::RawValue>) -> HealthJson {
        HealthJson(Arc::new(raw))
    }

    pub fn as_str(&self) -> &str {
        self.0.get()
    }
}

impl AsRef<[u8]> for HealthJson {
    fn as_ref(&self) -> &[u8] {
        self.as_str().as_bytes()
    }
}

impl serde::Serialize for HealthJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// What a health document was built from. The files' consistency is held
/// (not just its address) so a new one can never be mistaken for a freed one.
pub(crate) struct MemoKey {
    pub view: u64,
    pub consistency: Arc<config::Consistency>,
    pub livekit: u64,
    pub backend: u64,
    pub unix_ms: u128,
}

impl PartialEq for MemoKey {
    fn eq(&self, other: &Self) -> bool {
        self.view == other.view
            && Arc::ptr_eq(&self.consistency, &other.consistency)
            && self.livekit == other.livekit
            && self.backend == other.backend
            && self.unix_ms == other.unix_ms
    }
}

/// The cluster as the last sync left it, for `health`: the nodes' ages are
/// worked out when read, so that they keep growing while Redis is away.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ClusterView {
    /// `nodes[i].last_seen_ms` is 0 here; `seen_at_ms[i]` says when.
    pub(super) health: ClusterHealth,
    pub(super) seen_at_ms: Vec<u64>,
}

impl ClusterView {
    pub(crate) fn to_health(&self, now_ms: u64) -> ClusterHealth {
        let mut h = self.health.clone();
        for (n, at) in h.nodes.iter_mut().zip(&self.seen_at_ms) {
            n.last_seen_ms = now_ms.saturating_sub(*at);
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Credential, Observed, Secret};

    fn view() -> View {
        View {
            version: 1,
            rendered: Arc::new(Rendered::new(Config::with_credential(Credential {
                api_key: "APIabcdefghijkm".into(),
                api_secret: Secret::new("s3cr3tValueThatMustNeverBePrinted0123456789"),
            }))),
            installed: None,
            redis: None,
            chain: Chain::default(),
            cluster: Default::default(),
        }
    }

    fn running(sha: &str, pid: u32) -> ProcessHealth {
        ProcessHealth {
            state: ProcessState::Running,
            pid: Some(pid),
            ready: true,
            config_sha256: Some(sha.to_string()),
            ..ProcessHealth::stopped()
        }
    }

    fn consistent(v: &View) -> config::Consistency {
        let r = &v.rendered;
        let observed = Observed {
            runtime_json: config::FileObs::Present(r.bytes(TripleFile::RuntimeJson).to_vec()),
            livekit_yaml: config::FileObs::Present(r.bytes(TripleFile::LivekitYaml).to_vec()),
            backend_env: config::FileObs::Present(r.bytes(TripleFile::BackendEnv).to_vec()),
        };
        config::check_rendered(r, &observed)
    }

    fn now(v: &View, be_sha: &str) -> ChildrenNow {
        ChildrenNow {
            livekit: running(v.rendered.sha256(TripleFile::LivekitYaml), 10),
            backend: running(be_sha, 11),
            fingerprint: Fingerprint {
                in_memory_hash: v.rendered.in_memory_hash().to_string(),
                livekit: 3,
                backend: 4,
            },
        }
    }

    fn passed(v: &mut View, fp: Fingerprint, backend_sha: Option<String>) {
        v.chain = Chain {
            last: TokenChainHealth {
                ok: true,
                checked_at_ms: 1,
                latency_ms: 1,
                error: None,
            },
            probed: Some(fp),
            backend: Some(BackendReport {
                pid: 11,
                sha256: backend_sha,
            }),
            refused: false,
        };
    }

    #[test]
    fn ready_needs_a_probe_that_proved_the_current_state() {
        let mut v = view();
        let c = consistent(&v);
        let be_sha = v.rendered.sha256(TripleFile::BackendEnv).to_string();
        let h = build(&v, now(&v, &be_sha), &c, "/bin/x", true);
        assert!(!h.ready_for_tokens, "no probe yet");
        let fp = now(&v, &be_sha).fingerprint;
        passed(&mut v, fp, Some(be_sha.clone()));
        let h = build(&v, now(&v, &be_sha), &c, "/bin/x", true);
        assert!(h.ready_for_tokens, "{h:?}");
        assert!(h.token_chain.ok);
        let mut later = now(&v, &be_sha);
        later.fingerprint.backend = 5;
        let h = build(&v, later, &c, "/bin/x", true);
        assert!(!h.ready_for_tokens, "a change since the probe");
        assert!(!h.token_chain.ok);
        assert!(h
            .token_chain
            .error
            .is_some_and(|e| e.contains("not proven since the last change")));
    }

    #[test]
    fn a_backend_that_reloaded_another_file_is_not_ready_whatever_its_record_says() {
        let mut v = view();
        let c = consistent(&v);
        let be_sha = v.rendered.sha256(TripleFile::BackendEnv).to_string();
        let fp = now(&v, &be_sha).fingerprint;
        passed(&mut v, fp, Some("f".repeat(64)));
        let h = build(&v, now(&v, &be_sha), &c, "/bin/x", true);
        assert!(!h.ready_for_tokens);
        assert_eq!(h.processes["lk-backend"].config_sha256, Some("f".repeat(64)));
    }
}
