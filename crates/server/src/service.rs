//! [`LivekitService`]: the single owner of the in-memory config and of both
//! children.
//!
//! Every mutation (install, configure, start, stop, restart, the periodic
//! drift heal) runs under one async mutex, so two clients never interleave
//! writes or process changes. Reads (`health`) never take that mutex: they
//! read an immutable [`Rendered`] snapshot of the config, the children's watch
//! channels, and a stat-validated cache of the files, so `health` stays
//! cheap while a long `start` is in progress.

use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use hero_livekit_proto::{
    self as proto, BinaryHealth, ConfigureParams, ConfigureResult, ErrorCode, Event, HealReport, Health, InstallParams,
    InstallResult, LogsParams, LogsResult, OverallStatus, ProcessName, ProcessState, RedisHealth, RestartParams,
    RestartResult, StartParams, StartResult, StopParams, StopResult,
};
use serde_json::Value;

use crate::config::{self, Config, Rendered, StateDir, TripleFile};
use crate::error::ServiceError;
use crate::events::EventBus;
use crate::install;
use crate::paths::Paths;
use crate::supervise::{self, Child, ChildSpec, ReadyProbe, SupervisorOptions};

/// What the daemon was started with that the service needs.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    pub paths: Paths,
    pub livekit_bin: Option<PathBuf>,
    pub backend_bin: Option<PathBuf>,
}

/// Default wait for children to become ready.
const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default grace between SIGTERM and SIGKILL.
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Default period of the drift check; `HERO_LIVEKIT_DRIFT_CHECK_MS` overrides.
const DEFAULT_DRIFT_CHECK: Duration = Duration::from_secs(5);
/// How often the configured Redis is pinged (`HERO_LIVEKIT_REDIS_CHECK_MS`).
const DEFAULT_REDIS_CHECK: Duration = Duration::from_secs(5);
/// A Redis that does not answer `PING` within this is reported unreachable.
const REDIS_PING_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_LOG_LINES: u32 = 100;
const MAX_LOG_LINES: u32 = 10_000;

/// The last health document, serialized, with what it was built from
/// (see [`LivekitService::health_json`]).
struct HealthMemo {
    key: HealthKey,
    json: Box<serde_json::value::RawValue>,
    ready_for_tokens: bool,
}

/// What a health document was built from. The snapshot and the files'
/// consistency are held (not just their addresses) so a new one can never
/// be mistaken for a freed one.
struct HealthKey {
    snapshot: Arc<Rendered>,
    consistency: Arc<config::Consistency>,
    livekit: u64,
    backend: u64,
    installed: u64,
    redis: u64,
    unix_ms: u128,
}

impl PartialEq for HealthKey {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.snapshot, &other.snapshot)
            && Arc::ptr_eq(&self.consistency, &other.consistency)
            && self.livekit == other.livekit
            && self.backend == other.backend
            && self.installed == other.installed
            && self.redis == other.redis
            && self.unix_ms == other.unix_ms
    }
}

/// The supervisor: config owner and parent of both children.
pub struct LivekitService {
    paths: Paths,
    livekit_bin: PathBuf,
    backend_bin: PathBuf,
    store: StateDir,
    events: EventBus,
    /// Serializes every mutation.
    ops: tokio::sync::Mutex<()>,
    /// The in-memory config with its renderings and hashes. Replaced, never
    /// mutated, and only while `ops` is held.
    snapshot: RwLock<Arc<Rendered>>,
    /// The files as last seen by `health`, revalidated by `stat`.
    cache: StdMutex<config::FileCache>,
    livekit: Child,
    backend: Child,
    installed: RwLock<Option<install::InstalledInfo>>,
    /// Bumped whenever `installed` changes (part of the health memo key).
    installed_generation: std::sync::atomic::AtomicU64,
    health_memo: StdMutex<Option<HealthMemo>>,
    /// The last Redis check, for the address it checked (SPEC section 11).
    redis: StdMutex<Option<RedisHealth>>,
    /// Bumped whenever `redis` changes (part of the health memo key).
    redis_generation: std::sync::atomic::AtomicU64,
    /// Wakes the Redis check early, after `configure`.
    redis_wake: Arc<tokio::sync::Notify>,
    openrpc: Arc<Value>,
    openrpc_bytes: Bytes,
    info_bytes: Bytes,
    /// The periodic drift and Redis checks, aborted at shutdown.
    tasks: StdMutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// A period in milliseconds from the environment (a knob for tests and
/// operators, ARCHITECTURE.md), else `default`.
fn period_from_env(var: &str, default: Duration) -> Duration {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(default)
}

fn write_error(e: config::WriteError) -> ServiceError {
    ServiceError::new(ErrorCode::WriteFailed, e.to_string())
}

fn internal(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::new(ErrorCode::Io, e.to_string())
}

impl LivekitService {
    /// Boots the service: prepares the state directory, loads the config
    /// (runtime.json, else a valid credential found in livekit.yaml, else in
    /// backend.env, else a minted one), heals the triple, re-adopts children
    /// recorded by a previous instance, and starts the periodic drift check.
    ///
    /// # Errors
    /// The state directory cannot be created or the triple cannot be written.
    pub async fn boot(opts: ServiceOptions) -> Result<Arc<Self>, ServiceError> {
        let paths = opts.paths;
        let store = StateDir::new(paths.state_dir.clone());
        let (plan, store) = {
            let store2 = store.clone();
            tokio::task::spawn_blocking(move || -> Result<_, ServiceError> {
                store2
                    .ensure()
                    .map_err(|e| internal(format!("preparing {}: {e}", store2.dir().display())))?;
                // We hold the instance lock: any temp file is a dead writer's.
                if let Err(e) = store2.sweep_temp_files() {
                    tracing::warn!(error = %e, "could not sweep temporary files");
                }
                let observed = store2.observe();
                let plan = config::plan(None, &observed, false).map_err(internal)?;
                Ok((plan, store2))
            })
            .await
            .map_err(internal)??
        };
        let events = EventBus::new(1024);
        let livekit_bin = opts.livekit_bin.unwrap_or_else(|| paths.livekit_bin());
        let backend_bin = opts.backend_bin.unwrap_or_else(|| default_backend_bin(&paths));
        let sup = |name| {
            let bus = events.clone();
            Child::new(
                name,
                SupervisorOptions::new(
                    paths.children_dir(),
                    supervise::EventSink::new(move |ev| bus.publish(ev)),
                ),
            )
        };
        let installed = install::installed(&livekit_bin, &paths.install_record());
        let openrpc = Arc::new(proto::openrpc::document());
        let openrpc_bytes = Bytes::from(serde_json::to_vec(&*openrpc).map_err(internal)?);
        let info = proto::ServiceInfo {
            name: proto::SERVICE_NAME.into(),
            version: proto::VERSION.into(),
            protocol: "openrpc".into(),
            socket: paths.socket.display().to_string(),
        };
        let info_bytes = Bytes::from(serde_json::to_vec(&info).map_err(internal)?);
        let svc = Arc::new(LivekitService {
            livekit: sup(ProcessName::LivekitServer),
            backend: sup(ProcessName::LkBackend),
            cache: StdMutex::new(config::FileCache::new(&paths.state_dir)),
            snapshot: RwLock::new(Arc::new(Rendered::new(plan.config.clone()))),
            installed: RwLock::new(installed),
            installed_generation: std::sync::atomic::AtomicU64::new(0),
            health_memo: StdMutex::new(None),
            redis: StdMutex::new(None),
            redis_generation: std::sync::atomic::AtomicU64::new(0),
            redis_wake: Arc::new(tokio::sync::Notify::new()),
            ops: tokio::sync::Mutex::new(()),
            tasks: StdMutex::new(Vec::new()),
            paths,
            livekit_bin,
            backend_bin,
            store,
            events,
            openrpc,
            openrpc_bytes,
            info_bytes,
        });
        let gone = {
            let _g = svc.ops.lock().await;
            let rewritten = plan.writes.clone();
            svc.apply_plan(plan, "boot").await?;
            svc.adopt_children(&rewritten).await
        };
        svc.restart_gone_children(gone);
        svc.start_drift_check();
        svc.start_redis_check();
        Ok(svc)
    }

    pub fn events(&self) -> &EventBus {
        &self.events
    }
    pub fn openrpc(&self) -> Arc<Value> {
        self.openrpc.clone()
    }
    pub fn openrpc_bytes(&self) -> Bytes {
        self.openrpc_bytes.clone()
    }
    pub fn service_info_bytes(&self) -> Bytes {
        self.info_bytes.clone()
    }

    fn snapshot(&self) -> Arc<Rendered> {
        match self.snapshot.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set_snapshot(&self, s: Arc<Rendered>) {
        match self.snapshot.write() {
            Ok(mut g) => *g = s,
            Err(poisoned) => *poisoned.into_inner() = s,
        }
    }

    // ------------------------------------------------------------ heal

    /// Writes what `plan` says, publishes the heal, and makes `plan.config`
    /// the in-memory config. Must hold `ops`.
    async fn apply_plan(&self, plan: config::HealPlan, trigger: &str) -> Result<HealReport, ServiceError> {
        let store = self.store.clone();
        // Applied even when nothing is to be written: `apply` then writes and
        // fsyncs nothing but restores mode 0600 on a file someone loosened.
        let plan2 = plan.clone();
        let written = tokio::task::spawn_blocking(move || store.apply(&plan2))
            .await
            .map_err(internal)?
            .map_err(write_error)?;
        if plan.config != *self.snapshot().config() {
            self.set_snapshot(Arc::new(Rendered::new(plan.config.clone())));
        }
        let report = HealReport {
            trigger: trigger.to_string(),
            drift: plan.drift.clone(),
            written: written.iter().map(|f| f.name().to_string()).collect(),
            minted: plan.minted,
            restarted: Vec::new(),
        };
        if !report.written.is_empty() {
            tracing::info!(trigger, written = ?report.written, drift = ?report.drift, minted = plan.minted, "healed config triple");
            self.events.publish(Event::Healed {
                trigger: trigger.to_string(),
                written: report.written.clone(),
                drift: report.drift.clone(),
                minted: plan.minted,
            });
        }
        Ok(report)
    }

    /// Observes the files and heals them against `in_memory` (or loads at
    /// boot when `None`). Must hold `ops`.
    async fn heal(
        &self,
        in_memory: Option<Config>,
        reset: bool,
        trigger: &str,
    ) -> Result<(HealReport, Vec<TripleFile>), ServiceError> {
        let store = self.store.clone();
        let snap = self.snapshot();
        let plan = tokio::task::spawn_blocking(move || {
            let observed = store.observe();
            match in_memory {
                // The common case (start, install, the drift check): heal
                // against the snapshot's renderings, rendering nothing.
                Some(c) if !reset && &c == snap.config() => Ok(config::plan_rendered(&snap, &observed)),
                other => config::plan(other.as_ref(), &observed, reset),
            }
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
        let writes = plan.writes.clone();
        let report = self.apply_plan(plan, trigger).await?;
        Ok((report, writes))
    }

    /// Restarts the running readers of the files just written, because
    /// livekit-server reads its keys only at startup. Must hold `ops`.
    async fn restart_readers(
        &self,
        written: &[TripleFile],
        reason: &str,
        timeout: Duration,
    ) -> Result<Vec<ProcessName>, ServiceError> {
        let mut restarted = Vec::new();
        for f in written {
            let Some(name) = f.reader() else { continue };
            let child = self.child(name);
            if child.health().state == ProcessState::Stopped || restarted.contains(&name) {
                continue;
            }
            let spec = self.spec(name)?;
            child.restart(spec, timeout).await.map_err(supervise_error)?;
            self.events.publish(Event::Restarted {
                process: name,
                reason: reason.to_string(),
            });
            restarted.push(name);
        }
        Ok(restarted)
    }

    fn start_drift_check(self: &Arc<Self>) {
        let period = period_from_env("HERO_LIVEKIT_DRIFT_CHECK_MS", DEFAULT_DRIFT_CHECK);
        let weak = Arc::downgrade(self);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(svc) = weak.upgrade() else { return };
                svc.drift_check().await;
            }
        });
        if let Ok(mut g) = self.tasks.lock() {
            g.push(task);
        }
    }

    /// Checks every few seconds (and at once after `configure`) whether the
    /// configured Redis answers, so that `health` can say so without ever
    /// waiting on the network itself.
    fn start_redis_check(self: &Arc<Self>) {
        let period = period_from_env("HERO_LIVEKIT_REDIS_CHECK_MS", DEFAULT_REDIS_CHECK);
        let weak = Arc::downgrade(self);
        let wake = Arc::clone(&self.redis_wake);
        let task = tokio::spawn(async move {
            loop {
                // Upgraded only for one check, so that the task never keeps
                // the service alive while it waits.
                {
                    let Some(svc) = weak.upgrade() else { return };
                    let address = svc.snapshot().config().redis_address.clone();
                    let checked = match address {
                        None => None,
                        Some(address) => {
                            let result = crate::redis::ping(&address, REDIS_PING_TIMEOUT).await;
                            Some(RedisHealth {
                                address,
                                reachable: result.is_ok(),
                                error: result.err(),
                            })
                        }
                    };
                    svc.set_redis(checked);
                }
                tokio::select! {
                    () = tokio::time::sleep(period) => {}
                    () = wake.notified() => {}
                }
            }
        });
        if let Ok(mut g) = self.tasks.lock() {
            g.push(task);
        }
    }

    fn set_redis(&self, checked: Option<RedisHealth>) {
        let mut last = match self.redis.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if *last == checked {
            return;
        }
        match &checked {
            Some(RedisHealth {
                address,
                reachable: true,
                ..
            }) => tracing::info!(%address, "redis answers"),
            Some(RedisHealth { error: Some(error), .. }) => tracing::warn!(%error, "redis check failed"),
            _ => {}
        }
        *last = checked;
        self.redis_generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// What `health` says of Redis: nothing without `redis_address`; the
    /// last check when it was of the address configured now.
    fn redis_health(&self, redis_address: Option<&String>) -> Option<RedisHealth> {
        let address = redis_address?;
        let last = match self.redis.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        Some(match last {
            Some(h) if &h.address == address => h,
            _ => RedisHealth {
                address: address.clone(),
                reachable: false,
                error: Some("not checked yet".into()),
            },
        })
    }

    /// One periodic drift check: a consistent triple is left untouched; a
    /// drifted one is healed and its running readers restarted.
    async fn drift_check(&self) {
        let _g = self.ops.lock().await;
        // A same-size edit within one timestamp tick escapes the health
        // cache's stat check; the periodic full check re-reads everything.
        match self.cache.lock() {
            Ok(mut c) => c.invalidate(),
            Err(poisoned) => poisoned.into_inner().invalidate(),
        }
        let current = self.snapshot().config().clone();
        match self.heal(Some(current), false, "drift").await {
            Ok((_, written)) if !written.is_empty() => {
                if let Err(e) = self
                    .restart_readers(
                        &written,
                        "its config file was healed after drift",
                        DEFAULT_READY_TIMEOUT,
                    )
                    .await
                {
                    tracing::warn!(error = %e, "restart after drift heal failed");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "drift heal failed; will retry"),
        }
    }

    // ------------------------------------------------------------ children

    fn child(&self, name: ProcessName) -> &Child {
        match name {
            ProcessName::LivekitServer => &self.livekit,
            ProcessName::LkBackend => &self.backend,
        }
    }

    /// The child's command line, scrubbed environment, files and probe,
    /// derived from the current snapshot.
    fn spec(&self, name: ProcessName) -> Result<ChildSpec, ServiceError> {
        let snap = self.snapshot();
        let c = snap.config();
        // Only what a process needs to run; no LIVEKIT_* from the daemon's
        // environment can reach the children (they would override the files).
        let env = vec![
            (
                "PATH".to_string(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            ),
            ("HOME".to_string(), self.paths.data_dir().display().to_string()),
        ];
        let logs = self.paths.logs_dir();
        Ok(match name {
            ProcessName::LivekitServer => ChildSpec {
                name,
                program: self.livekit_bin.clone(),
                args: vec!["--config".into(), self.paths.livekit_yaml().into_os_string()],
                env,
                cwd: self.paths.data_dir(),
                log_path: logs.join("livekit-server.log"),
                ready: ReadyProbe::Http {
                    port: c.port,
                    path: "/".into(),
                },
                ports: vec![c.port, c.rtc_tcp_port],
                config_sha256: snap.sha256(TripleFile::LivekitYaml).to_string(),
                config_file: Some(self.paths.livekit_yaml()),
            },
            ProcessName::LkBackend => ChildSpec {
                name,
                program: self.backend_bin.clone(),
                // The file, not the environment: the secret stays out of
                // /proc/<pid>/environ and SIGHUP can re-read it.
                args: vec!["--env-file".into(), self.paths.backend_env().into_os_string()],
                env,
                cwd: self.paths.data_dir(),
                log_path: logs.join("lk-backend.log"),
                ready: ReadyProbe::Http {
                    port: c.backend_port,
                    path: "/health".into(),
                },
                ports: vec![c.backend_port],
                config_sha256: snap.sha256(TripleFile::BackendEnv).to_string(),
                config_file: Some(self.paths.backend_env()),
            },
        })
    }

    /// Re-adopts children recorded by a previous instance; a recorded child
    /// whose config file changed since it started, or was `rewritten` by the
    /// boot heal, is restarted. Returns the children that were recorded (so
    /// meant to run) but are gone. Must hold `ops`.
    async fn adopt_children(&self, rewritten: &[TripleFile]) -> Vec<ProcessName> {
        let mut gone = Vec::new();
        for name in ProcessName::ALL {
            let spec = match self.spec(name) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(process = %name, error = %e, "cannot build spec for adoption");
                    continue;
                }
            };
            let expected = spec.config_sha256.clone();
            match self.child(name).adopt(spec.clone()).await {
                Ok(supervise::AdoptOutcome::Discarded(reason)) => {
                    tracing::info!(process = %name, %reason, "recorded child is gone; it will be started again");
                    gone.push(name);
                }
                Ok(outcome) => {
                    tracing::info!(process = %name, ?outcome, "adoption");
                    let h = self.child(name).health();
                    let outdated = h.config_sha256.as_deref() != Some(expected.as_str());
                    // The record says what the child was started with, not
                    // what it read since: lk-backend re-reads its file on
                    // SIGHUP, and an old daemon may have restarted a child
                    // onto a drifted file. A file found drifted may have been
                    // read, so its reader is restarted, as on any heal.
                    let healed = rewritten.iter().any(|f| f.reader() == Some(name));
                    if h.state != ProcessState::Stopped && (outdated || healed) {
                        let reason = if outdated {
                            "adopted with an outdated config file"
                        } else {
                            "its config file was healed at boot"
                        };
                        tracing::info!(process = %name, reason, "restarting adopted child");
                        if let Err(e) = self.child(name).restart(spec, DEFAULT_READY_TIMEOUT).await {
                            tracing::warn!(process = %name, error = %e, "restart of adopted child failed");
                        } else {
                            self.events.publish(Event::Restarted {
                                process: name,
                                reason: reason.into(),
                            });
                        }
                    }
                }
                Err(e) => tracing::warn!(process = %name, error = %e, "adoption failed"),
            }
        }
        gone
    }

    /// Starts, in the background, children that a previous instance ran and
    /// that died while no daemon watched them: the operator's intent was
    /// "running", and a supervisor restarts what died.
    fn restart_gone_children(self: &Arc<Self>, gone: Vec<ProcessName>) {
        if gone.is_empty() {
            return;
        }
        let svc = Arc::clone(self);
        tokio::spawn(async move {
            let _g = svc.ops.lock().await;
            for name in gone {
                let spec = match svc.spec(name) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(process = %name, error = %e, "cannot restart a gone child");
                        continue;
                    }
                };
                match svc.child(name).start(spec, DEFAULT_READY_TIMEOUT).await {
                    Ok(_) => svc.events.publish(Event::Restarted {
                        process: name,
                        reason: "died while no daemon supervised it".into(),
                    }),
                    Err(e) => tracing::warn!(process = %name, error = %e, "restarting a gone child failed"),
                }
            }
        });
    }

    // ------------------------------------------------------------ methods

    /// `livekitservice.configure`.
    ///
    /// # Errors
    /// -32602 for invalid input (nothing changes), `write_failed` when the
    /// triple cannot be written (previous files intact).
    pub async fn configure(&self, p: ConfigureParams) -> Result<ConfigureResult, ServiceError> {
        let _g = self.ops.lock().await;
        let current = self.snapshot().config().clone();
        let update = config::apply_configure(Some(&current), &p).map_err(|e| match e {
            config::ConfigureError::Invalid(v) => ServiceError::invalid(v.field, v.rule),
            config::ConfigureError::Mint(m) => internal(m),
        })?;
        let (mut heal, written) = self.heal(Some(update.config.clone()), false, "configure").await?;
        self.verify_on_disk().await?;
        heal.restarted = self
            .restart_readers(&written, "configure changed its config file", DEFAULT_READY_TIMEOUT)
            .await?;
        if !update.changed_fields.is_empty() {
            // A new redis_address is checked now, not at the next period.
            self.redis_wake.notify_one();
            self.events.publish(Event::Configured {
                in_memory_hash: self.snapshot().in_memory_hash().to_string(),
                changed_fields: update.changed_fields.clone(),
            });
        }
        let snap = self.snapshot();
        Ok(ConfigureResult {
            changed_fields: update.changed_fields,
            minted: update.minted || heal.minted,
            heal,
            api_key: snap.config().api_key.clone(),
            in_memory_hash: snap.in_memory_hash().to_string(),
        })
    }

    /// Re-reads the triple and fails unless it is consistent: a write that
    /// "succeeded" but does not read back is not trusted.
    async fn verify_on_disk(&self) -> Result<(), ServiceError> {
        let store = self.store.clone();
        let cfg = self.snapshot().config().clone();
        let check = tokio::task::spawn_blocking(move || config::check(&cfg, &store.observe()))
            .await
            .map_err(internal)?;
        if check.consistent {
            Ok(())
        } else {
            Err(ServiceError::new(
                ErrorCode::WriteFailed,
                format!(
                    "the config triple does not read back as written: {}",
                    check.drift.join("; ")
                ),
            ))
        }
    }

    /// `livekitservice.install`.
    ///
    /// # Errors
    /// Invalid source/sha256, download or verification failure (previous
    /// binary intact), write failure.
    pub async fn install(&self, p: InstallParams) -> Result<InstallResult, ServiceError> {
        let _g = self.ops.lock().await;
        self.install_locked(&p).await
    }

    async fn install_locked(&self, p: &InstallParams) -> Result<InstallResult, ServiceError> {
        let req = install::InstallRequest::from(p);
        let events = self.events.clone();
        let outcome = install::install(
            &req,
            &self.livekit_bin,
            &self.paths.install_record(),
            move |pr: install::InstallProgress| {
                events.publish(Event::InstallProgress {
                    phase: pr.phase.to_string(),
                    bytes_done: pr.bytes_done,
                    bytes_total: pr.bytes_total,
                })
            },
        )
        .await
        .map_err(install_error)?;
        if outcome.changed {
            self.events.publish(Event::Installed {
                version: outcome.version.clone(),
                sha256: outcome.sha256.clone(),
            });
        }
        if let Ok(mut g) = self.installed.write() {
            *g = install::installed(&self.livekit_bin, &self.paths.install_record());
        }
        self.installed_generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let current = self.snapshot().config().clone();
        let (mut heal, written) = self.heal(Some(current), false, "install").await?;
        heal.restarted = self
            .restart_readers(&written, "install healed its config file", DEFAULT_READY_TIMEOUT)
            .await?;
        Ok(InstallResult {
            version: outcome.version,
            path: outcome.path.display().to_string(),
            sha256: outcome.sha256,
            source: outcome.source,
            changed: outcome.changed,
            warnings: outcome.warnings,
            heal,
        })
    }

    /// `livekitservice.start`.
    ///
    /// # Errors
    /// Not installed (with the install hint), a port held by a foreign
    /// process, a child that exits during startup or is not ready in time.
    pub async fn start(&self, p: StartParams) -> Result<StartResult, ServiceError> {
        let _g = self.ops.lock().await;
        let timeout = p.timeout_ms.map(Duration::from_millis).unwrap_or(DEFAULT_READY_TIMEOUT);
        let mut install_result = None;
        if p.update == Some(true) {
            install_result = Some(self.install_locked(&self.last_install_params()).await?);
        }
        let reset = p.reset == Some(true);
        let current = self.snapshot().config().clone();
        let (mut heal, written) = self
            .heal(Some(current), reset, if reset { "reset" } else { "start" })
            .await?;
        if !self.livekit_bin.is_file() {
            match self.known_source() {
                Some(params) => install_result = Some(self.install_locked(&params).await?),
                None => {
                    return Err(ServiceError::new(
                        ErrorCode::NotInstalled,
                        format!("livekit-server is not installed at {}", self.livekit_bin.display()),
                    ))
                }
            }
        }
        if !self.backend_bin.is_file() {
            return Err(ServiceError::new(
                ErrorCode::StartFailed,
                format!("lk-backend not found at {}", self.backend_bin.display()),
            )
            .with_hint(
                "install lk-backend next to hero_livekit_server or in <root>/bin, or pass --backend-bin to the daemon",
            ));
        }
        // A running child may have read the drifted file (an old supervisor
        // restarted it onto one, or lk-backend re-read it on SIGHUP) while
        // its record still names the current rendering: `start` alone would
        // find it "already running" and leave it signing with a secret the
        // server does not know.
        heal.restarted = self
            .restart_readers(&written, "start healed its config file", timeout)
            .await?;
        let (lk, be) = (
            self.spec(ProcessName::LivekitServer)?,
            self.spec(ProcessName::LkBackend)?,
        );
        let (r_lk, r_be) = tokio::join!(self.livekit.start(lk, timeout), self.backend.start(be, timeout));
        let mut processes = std::collections::BTreeMap::new();
        processes.insert(ProcessName::LivekitServer, r_lk.map_err(supervise_error)?);
        processes.insert(ProcessName::LkBackend, r_be.map_err(supervise_error)?);
        for name in &heal.restarted {
            if let Some(outcome @ proto::StartOutcome::AlreadyRunning) = processes.get_mut(name) {
                *outcome = proto::StartOutcome::Restarted;
            }
        }
        let h = self.health();
        Ok(StartResult {
            heal,
            rotated: reset,
            install: install_result,
            processes,
            ready_for_tokens: h.ready_for_tokens,
            livekit_url: h.livekit_url,
            backend_url: h.backend_url,
        })
    }

    /// What `update` installs: the pinned release when the last install came
    /// from the official releases (or there was none), else the same custom
    /// source fetched again, checked by its own checksum files.
    fn last_install_params(&self) -> InstallParams {
        match self.known_source() {
            Some(p)
                if !p
                    .source
                    .as_deref()
                    .is_some_and(|s| s.starts_with(install::RELEASE_BASE)) =>
            {
                // Fetched again and checked by its own checksum files; not
                // forced, so the very same bytes are left in place (no
                // rewrite, no restart of livekit-server) and keep their label.
                InstallParams {
                    version: None,
                    sha256: None,
                    force: None,
                    ..p
                }
            }
            _ => InstallParams::default(),
        }
    }

    /// The source recorded by the last install, if any, pinned to the
    /// artifact checksum it had then.
    fn known_source(&self) -> Option<InstallParams> {
        let r = install::read_record(&self.paths.install_record())?;
        Some(InstallParams {
            version: Some(r.version),
            source: Some(r.source),
            sha256: r.artifact_sha256,
            force: Some(true),
        })
    }

    /// `livekitservice.stop`.
    ///
    /// # Errors
    /// Signalling failed.
    pub async fn stop(&self, p: StopParams) -> Result<StopResult, ServiceError> {
        let _g = self.ops.lock().await;
        let timeout = p.timeout_ms.map(Duration::from_millis).unwrap_or(DEFAULT_STOP_TIMEOUT);
        let (a, b) = tokio::join!(self.livekit.stop(timeout), self.backend.stop(timeout));
        let mut result = StopResult {
            stopped: Vec::new(),
            killed: Vec::new(),
        };
        for (name, r) in [(ProcessName::LivekitServer, a), (ProcessName::LkBackend, b)] {
            let o = r.map_err(supervise_error)?;
            if o.was_running {
                result.stopped.push(name);
            }
            if o.killed {
                result.killed.push(name);
            }
        }
        Ok(result)
    }

    /// `livekitservice.restart`.
    ///
    /// # Errors
    /// As for `start`.
    pub async fn restart(&self, p: RestartParams) -> Result<RestartResult, ServiceError> {
        let _g = self.ops.lock().await;
        let timeout = p.timeout_ms.map(Duration::from_millis).unwrap_or(DEFAULT_READY_TIMEOUT);
        let names: Vec<ProcessName> = match p.process {
            Some(n) => vec![n],
            None => ProcessName::ALL.to_vec(),
        };
        // A restart starts the child on what its file says now: were the
        // file drifted (edited by hand, left by an old supervisor), the
        // child would come back with a credential the others do not hold.
        // Heal first; a reader of a healed file that was not asked for
        // follows it, as after any heal.
        let current = self.snapshot().config().clone();
        let (mut heal, written) = self.heal(Some(current), false, "restart").await?;
        let others: Vec<TripleFile> = written
            .into_iter()
            .filter(|f| f.reader().is_some_and(|n| !names.contains(&n)))
            .collect();
        heal.restarted = self
            .restart_readers(&others, "restart healed its config file", timeout)
            .await?;
        let mut restarted = Vec::new();
        for name in names {
            let spec = self.spec(name)?;
            self.child(name).restart(spec, timeout).await.map_err(supervise_error)?;
            self.events.publish(Event::Restarted {
                process: name,
                reason: "requested".into(),
            });
            restarted.push(name);
        }
        Ok(RestartResult { heal, restarted })
    }

    /// `livekitservice.logs`.
    ///
    /// # Errors
    /// The log cannot be read.
    pub async fn logs(&self, p: LogsParams) -> Result<LogsResult, ServiceError> {
        let lines = p.lines.unwrap_or(DEFAULT_LOG_LINES);
        if lines == 0 || lines > MAX_LOG_LINES {
            return Err(ServiceError::invalid("lines", format!("must be 1-{MAX_LOG_LINES}")));
        }
        let path = self.paths.logs_dir().join(format!("{}.log", p.process));
        let path2 = path.clone();
        let tail = tokio::task::spawn_blocking(move || supervise::logs::tail(&path2, lines as usize))
            .await
            .map_err(internal)?;
        let lines = match tail {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(ServiceError::new(
                    ErrorCode::Io,
                    format!("reading {}: {e}", path.display()),
                ))
            }
        };
        Ok(LogsResult {
            process: p.process,
            path: path.display().to_string(),
            lines,
        })
    }

    /// `livekitservice.health`: read-only, never writes, never blocks on a
    /// mutation in progress.
    pub fn health(&self) -> Health {
        let snap = self.snapshot();
        let consistency = self.check_files(&snap);
        self.build_health(&snap, &consistency, self.livekit_bin.is_file())
    }

    /// The files' consistency with `snap`, from the stat-validated cache.
    fn check_files(&self, snap: &Rendered) -> Arc<config::Consistency> {
        match self.cache.lock() {
            Ok(mut c) => c.check(snap),
            Err(poisoned) => poisoned.into_inner().check(snap),
        }
    }

    /// The health document serialized, and whether it is ready for tokens;
    /// what the RPC and `GET /health` send.
    ///
    /// `health` is called before every token. The three files are checked
    /// on every call (a `stat` each, re-read only when changed), so a file
    /// edited by hand shows at once; but when neither they, the config nor
    /// the children's state changed within the same millisecond (the
    /// resolution of `uptime_ms`), the document built for that millisecond
    /// is served again instead of being rebuilt and re-serialized. Whether
    /// the binary is present is looked at once per millisecond.
    ///
    /// # Errors
    /// Serializing the document failed (it holds only strings, numbers and
    /// maps, so this is not expected).
    pub fn health_json(&self) -> Result<(Box<serde_json::value::RawValue>, bool), ServiceError> {
        let snap = self.snapshot();
        let consistency = self.check_files(&snap);
        let key = HealthKey {
            snapshot: Arc::clone(&snap),
            consistency: Arc::clone(&consistency),
            livekit: self.livekit.generation(),
            backend: self.backend.generation(),
            installed: self.installed_generation.load(std::sync::atomic::Ordering::Relaxed),
            redis: self.redis_generation.load(std::sync::atomic::Ordering::Relaxed),
            unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0),
        };
        let mut memo = match self.health_memo.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(m) = memo.as_ref().filter(|m| m.key == key) {
            return Ok((m.json.clone(), m.ready_for_tokens));
        }
        let h = self.build_health(&snap, &consistency, self.livekit_bin.is_file());
        let json = serde_json::value::to_raw_value(&h).map_err(internal)?;
        *memo = Some(HealthMemo {
            key,
            json: json.clone(),
            ready_for_tokens: h.ready_for_tokens,
        });
        Ok((json, h.ready_for_tokens))
    }

    fn build_health(&self, snap: &Rendered, consistency: &config::Consistency, binary_present: bool) -> Health {
        let lk = self.livekit.health();
        let be = self.backend.health();
        // livekit-server reads its keys only at startup: it must run the
        // livekit.yaml that is on disk now, not merely be up.
        let lk_current = lk.config_sha256.as_deref() == Some(snap.sha256(TripleFile::LivekitYaml));
        let ready_for_tokens = consistency.consistent && lk.ready && be.ready && lk_current;
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
        let installed = self.installed.read().ok().and_then(|g| g.clone());
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
                path: self.livekit_bin.display().to_string(),
                installed: binary_present,
                version: installed.as_ref().and_then(|i| i.version.clone()),
                sha256: installed.and_then(|i| i.sha256),
            },
            redis: self.redis_health(c.redis_address.as_ref()),
            version: proto::VERSION.into(),
            protocol: proto::PROTOCOL,
        }
    }

    /// Daemon exit: stop the periodic checks, then stop the children or leave
    /// them running (recorded) for the next instance to adopt.
    pub async fn shutdown(&self, stop_children: bool) {
        if let Ok(mut g) = self.tasks.lock() {
            for t in g.drain(..) {
                t.abort();
            }
        }
        let _g = self.ops.lock().await;
        if stop_children {
            let (a, b) = tokio::join!(
                self.livekit.stop(DEFAULT_STOP_TIMEOUT),
                self.backend.stop(DEFAULT_STOP_TIMEOUT)
            );
            for r in [a, b] {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "stopping a child at exit failed");
                }
            }
        } else {
            self.livekit.detach().await;
            self.backend.detach().await;
        }
    }
}

fn default_backend_bin(paths: &Paths) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("lk-backend")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| paths.bin_dir.join("lk-backend"))
}

fn supervise_error(e: supervise::SuperviseError) -> ServiceError {
    let code = e.code();
    ServiceError::new(code, e.to_string())
}

fn install_error(e: install::InstallError) -> ServiceError {
    match e.code() {
        Some(code) => ServiceError::new(code, e.to_string()).with_hint(e.hint()),
        None => ServiceError::invalid(e.field().unwrap_or("source"), e.to_string()),
    }
}
