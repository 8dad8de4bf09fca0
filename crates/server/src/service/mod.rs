//! [`LivekitService`]: the single owner of the desired state (the config,
//! which children should run, the installed binary) and of both children.
//!
//! - The method surface (this file): each mutating method runs its body in a
//!   task of its own and the RPC only awaits the result, so a client that
//!   disconnects never cuts a write sequence or a pair of restarts in half.
//! - [`reconcile`]: one level-triggered reconcile, called by every mutation
//!   with the ops lock held and by the one reconciler task
//!   ([`background`]: boot, the periodic tick, a token-chain verdict, a
//!   child's status change, a due backoff and a Redis check wake it through
//!   a coalescing signal). It compares the desired state with
//!   what is observed (the three files, each child's state, the config it
//!   really runs and the binary it was spawned from) through pure planners
//!   ([`crate::config::plan`] for the files, [`plan::plan_children`] for
//!   the children: the one place that decides a child's start, stop and
//!   restart, after an exit too) and applies the plans.
//! - [`health`]: the published [`health::View`] that `health` reads (one
//!   `watch` value), the document and its memo.
//! - [`specs`]: pure config-to-child-spec.
//! - [`probe`]: the token-chain probe that proves `ready_for_tokens`.
//! - [`cluster`]: the cluster member (join, credential changes written to
//!   Redis first, the background sync).
//!
//! The ops lock *is* the desired state: `desired: Mutex<Desired>`, and only
//! a holder of it writes files or starts, stops and restarts children.
//! `health` never takes it.
//!
//! About 1,000 lines: the boot, the method bodies of configure, start, stop,
//! restart, logs and health still live here (install's are in
//! [`installing`], the background tasks in [`background`]); one file per
//! method group is the next split.

mod background;
mod cluster;
mod health;
mod installing;
pub use health::HealthJson;
mod plan;
mod probe;
mod reconcile;
mod retry;
mod specs;
mod target;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use bytes::Bytes;
use hero_livekit_proto::{
    self as proto, ConfigureParams, ConfigureResult, ErrorCode, Event, Health, InstallParams, LogsParams, LogsResult,
    ProcessName, RestartParams, RestartResult, StartOutcome, StartParams, StartResult, StopParams, StopResult,
};
use serde_json::Value;
use tokio::sync::{watch, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{self, Rendered, StateDir};
use crate::error::ServiceError;
use crate::events::EventBus;
use crate::install;
use crate::metrics::{self, Metrics};
use crate::paths::Paths;
use crate::supervise::{self, Child, SupervisorOptions};

use self::background::Wake;
use self::health::{Chain, Memo, MemoKey, View};
use self::plan::Intent;
use self::reconcile::{Desired, Step, Target};
use self::specs::SpecPaths;

/// What the daemon was started with that the service needs.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    pub paths: Paths,
    pub livekit_bin: Option<PathBuf>,
    pub backend_bin: Option<PathBuf>,
    /// `--stop-timeout-ms`: the default drain deadline (else
    /// `HERO_LIVEKIT_STOP_TIMEOUT_MS`, else 10 s).
    pub stop_timeout: Option<Duration>,
}

/// Default wait for children to become ready.
const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default drain deadline between SIGTERM and SIGKILL, for `stop`, for a
/// restart and at daemon exit (`HERO_LIVEKIT_STOP_TIMEOUT_MS` overrides):
/// livekit-server waits for its participants with no deadline of its own.
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bounds of every `timeout_ms` parameter: a zero wait would kill the child
/// just spawned, an unbounded one would hold the ops lock forever.
const MAX_TIMEOUT_MS: u64 = 600_000;
/// Default period of the reconcile tick; `HERO_LIVEKIT_DRIFT_CHECK_MS` overrides.
const DEFAULT_TICK: Duration = Duration::from_secs(5);
/// Default period of the token-chain probe; `HERO_LIVEKIT_TOKEN_PROBE_MS` overrides.
const DEFAULT_PROBE: Duration = Duration::from_secs(5);
/// Bound on one probe (three loopback requests).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Overall bound on fetching and verifying a binary
/// (`HERO_LIVEKIT_INSTALL_DEADLINE_MS` overrides): a mirror that trickles
/// cannot keep an install going for hours.
const DEFAULT_INSTALL_DEADLINE: Duration = Duration::from_secs(600);
/// How long `start` waits, beyond its children's readiness, for the probe
/// to prove the chain before it answers.
const PROOF_WAIT: Duration = Duration::from_secs(5);
/// How often the configured Redis is pinged (`HERO_LIVEKIT_REDIS_CHECK_MS`).
const DEFAULT_REDIS_CHECK: Duration = Duration::from_secs(5);
/// A Redis that does not answer `PING` within this is reported unreachable.
const REDIS_PING_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_LOG_LINES: u32 = 100;
const MAX_LOG_LINES: u32 = 10_000;
/// Largest `logs` answer: the daemon keeps its RSS near 10 MiB.
const MAX_LOG_ANSWER_BYTES: usize = 1 << 20;
/// `logs` calls served at once; more wait their turn.
const LOG_READERS: usize = 2;
/// Event subscriptions served at once, over every connection: each holds a
/// task and a place in the event bus (`HERO_LIVEKIT_MAX_SUBSCRIPTIONS_TOTAL`
/// overrides).
pub const MAX_SUBSCRIPTIONS_TOTAL: usize = 256;

/// The supervisor: owner of the desired state and parent of both children.
pub struct LivekitService {
    paths: Paths,
    spec_paths: SpecPaths,
    store: StateDir,
    events: EventBus,
    /// What the event bus and the health, probe and install paths count.
    metrics: Arc<Metrics>,
    /// The ops lock, holding the state it guards. Every mutation and every
    /// reconcile runs with it held.
    desired: tokio::sync::Mutex<Desired>,
    /// Held by an install from before its download until its binary is in
    /// place, and by `start`, which needs that binary: so `start` waits for
    /// an install under way while nothing else does. Always taken before
    /// `desired`, never while holding it.
    installing: tokio::sync::Mutex<()>,
    /// What `health` reads besides the children and the files; written by
    /// the holder of `desired`, the probe and the Redis check.
    view: watch::Sender<View>,
    /// The files as last seen by `health`, revalidated by `stat`.
    cache: StdMutex<config::FileCache>,
    livekit: Child,
    backend: Child,
    health_memo: StdMutex<Option<Memo>>,
    /// Wakes the token-chain probe after a change.
    probe_wake: Arc<Notify>,
    /// Wakes the Redis check early, after `configure`.
    redis_wake: Arc<Notify>,
    /// The Redis check's verdicts, for livekit-server's supervisor (it
    /// waits for Redis instead of crash-looping).
    redis_state: watch::Sender<supervise::DependencyState>,
    log_readers: Semaphore,
    subscriptions: Arc<Semaphore>,
    max_subscriptions: usize,
    openrpc: Arc<Value>,
    openrpc_bytes: Bytes,
    info_bytes: Bytes,
    /// The drain deadline when a call gives none.
    stop_timeout: Duration,
    /// Wakes the one reconciler task (coalescing).
    wake: Arc<Wake>,
    /// Every background task runs on this tracker and ends when `cancel`
    /// is cancelled; `shutdown` waits for them.
    tasks: TaskTracker,
    cancel: CancellationToken,
    /// The cluster membership and its background sync.
    cluster: cluster::ClusterSide,
}

/// A period in milliseconds from the environment (a knob for tests and
/// operators, ARCHITECTURE.md), else `default`.
fn period_from_env(var: &str, default: Duration) -> Duration {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
        .unwrap_or(default)
}

fn internal(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::new(ErrorCode::Io, e.to_string())
}

/// A `timeout_ms` parameter, bounded.
///
/// # Errors
/// -32602 naming `timeout_ms` outside 1..=600000.
fn timeout_param(ms: Option<u64>, default: Duration) -> Result<Duration, ServiceError> {
    match ms {
        None => Ok(default),
        Some(ms) if (1..=MAX_TIMEOUT_MS).contains(&ms) => Ok(Duration::from_millis(ms)),
        Some(_) => Err(ServiceError::invalid(
            "timeout_ms",
            format!("must be 1-{MAX_TIMEOUT_MS} (milliseconds)"),
        )),
    }
}

/// A drain deadline parameter (`drain_timeout_ms`, or `stop`'s
/// `timeout_ms`), bounded like every timeout.
///
/// # Errors
/// -32602 naming `drain_timeout_ms` outside 1..=600000.
fn drain_param(ms: Option<u64>, default: Duration) -> Result<Duration, ServiceError> {
    timeout_param(ms, default)
        .map_err(|_| ServiceError::invalid("drain_timeout_ms", format!("must be 1-{MAX_TIMEOUT_MS} (milliseconds)")))
}

/// The boot plan for the binary in place: the config loaded from disk
/// carries the version its `runtime.json` was rendered for, and when the
/// installed binary is another one the plan is made again for it (the
/// credential and every setting kept; only the renderings change).
async fn retarget_boot_plan(
    plan: config::HealPlan,
    version: Option<config::LivekitVersion>,
    store: &StateDir,
) -> Result<config::HealPlan, ServiceError> {
    if plan.config.livekit_version == version {
        return Ok(plan);
    }
    let mut c = plan.config.clone();
    c.livekit_version = version;
    let store = store.clone();
    let mut again = tokio::task::spawn_blocking(move || config::plan(Some(&c), &store.observe(), false))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    again.source = plan.source;
    again.minted = plan.minted;
    Ok(again)
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl LivekitService {
    /// Boots the service: prepares the state directory, loads the config
    /// (runtime.json, else a valid credential found in livekit.yaml, else in
    /// backend.env, else a minted one), writes what is missing or differs,
    /// re-adopts children recorded by a previous instance, then reconciles in
    /// the background (children recorded but gone are started, outdated ones
    /// restarted) and starts the periodic tick, the probe and the Redis check.
    ///
    /// # Errors
    /// The state directory cannot be prepared.
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
        let metrics = Arc::new(Metrics::new());
        let events = EventBus::new(1024, Arc::clone(&metrics));
        let livekit_bin = opts.livekit_bin.unwrap_or_else(|| paths.livekit_bin());
        let backend_bin = opts.backend_bin.unwrap_or_else(|| default_backend_bin(&paths));
        let redis_wake = Arc::new(Notify::new());
        let (redis_state, redis_state_rx) = watch::channel(supervise::DependencyState {
            configured: crate::redis::RedisTarget::from_config(&plan.config).is_some(),
            ..Default::default()
        });
        // The daemon's flag, else its environment, else 10 s.
        let stop_timeout = opts
            .stop_timeout
            .unwrap_or_else(|| period_from_env("HERO_LIVEKIT_STOP_TIMEOUT_MS", DEFAULT_STOP_TIMEOUT));
        let sup = |name| {
            let bus = events.clone();
            let mut opts = SupervisorOptions::new(
                paths.children_dir(),
                supervise::EventSink::new(move |ev| bus.publish(ev)),
            );
            opts.stop_grace = stop_timeout;
            if name == ProcessName::LivekitServer {
                opts.dependency = Some(supervise::Dependency {
                    what: "Redis",
                    exit_marker: "unable to connect to redis",
                    state: redis_state_rx.clone(),
                    recheck: Arc::clone(&redis_wake),
                });
            }
            Child::new(name, opts)
        };
        let binary_stamp = target::stamp(&livekit_bin).await;
        let installed = {
            let (bin, record) = (livekit_bin.clone(), paths.install_record());
            tokio::task::spawn_blocking(move || install::installed(&bin, &record))
                .await
                .map_err(internal)?
        };
        let plan = retarget_boot_plan(plan, target::detect(&livekit_bin, installed.as_ref()).await, &store).await?;
        let openrpc = Arc::new(proto::openrpc::document());
        let openrpc_bytes = Bytes::from(serde_json::to_vec(&*openrpc).map_err(internal)?);
        let info = proto::ServiceInfo {
            name: proto::SERVICE_NAME.into(),
            version: proto::VERSION.into(),
            protocol: "openrpc".into(),
            socket: paths.socket.display().to_string(),
        };
        let info_bytes = Bytes::from(serde_json::to_vec(&info).map_err(internal)?);
        let max_subscriptions = std::env::var("HERO_LIVEKIT_MAX_SUBSCRIPTIONS_TOTAL")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(MAX_SUBSCRIPTIONS_TOTAL);
        let rendered = Arc::new(Rendered::new(plan.config.clone()));
        let (view, _) = watch::channel(View {
            version: 0,
            rendered: Arc::clone(&rendered),
            installed: installed.clone(),
            redis: None,
            chain: Chain::default(),
            cluster: health::ClusterView::default(),
        });
        let cluster = cluster::ClusterSide::load(paths.state_dir.clone()).await;
        let svc = Arc::new(LivekitService {
            livekit: sup(ProcessName::LivekitServer),
            backend: sup(ProcessName::LkBackend),
            cache: StdMutex::new(config::FileCache::new(&paths.state_dir)),
            desired: tokio::sync::Mutex::new(Desired::new(rendered, installed, binary_stamp)),
            installing: tokio::sync::Mutex::new(()),
            view,
            health_memo: StdMutex::new(None),
            probe_wake: Arc::new(Notify::new()),
            redis_wake,
            redis_state,
            log_readers: Semaphore::new(LOG_READERS),
            subscriptions: Arc::new(Semaphore::new(max_subscriptions)),
            max_subscriptions,
            stop_timeout,
            wake: Arc::new(Wake::default()),
            tasks: TaskTracker::new(),
            cancel: CancellationToken::new(),
            cluster,
            spec_paths: SpecPaths {
                livekit_bin,
                backend_bin,
                paths: paths.clone(),
            },
            paths,
            store,
            events,
            metrics,
            openrpc,
            openrpc_bytes,
            info_bytes,
        });
        {
            let mut d = svc.desired.lock().await;
            // The boot plan was made without an in-memory config (it loaded
            // one); its writes are applied like any other heal. A write that
            // fails here is retried by every tick: the daemon serves and
            // says so in health rather than refuse to start.
            let pending = match svc.apply_files(&mut d, plan, "boot").await {
                Ok((heal, _)) => !heal.pending.is_empty(),
                Err(e) => {
                    tracing::warn!(error = %e, "boot could not write the config triple; the reconcile retries");
                    true
                }
            };
            svc.adopt_children(&mut d).await;
            // The files were just healed: a pass is needed only for children
            // a previous instance ran (started when gone, restarted when
            // outdated) or for a write still pending.
            if pending || d.want.values().any(|w| *w) {
                svc.request_reconcile("boot", false);
            }
        }
        svc.start_reconciler();
        svc.start_probe();
        svc.start_redis_check();
        svc.start_cluster_sync();
        Ok(svc)
    }

    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// A place among the [`MAX_SUBSCRIPTIONS_TOTAL`] event subscriptions,
    /// held for the subscription's life.
    ///
    /// # Errors
    /// `limit_reached` naming the limit when every place is taken.
    pub fn subscription_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ServiceError> {
        Arc::clone(&self.subscriptions).try_acquire_owned().map_err(|_| {
            ServiceError::new(
                ErrorCode::LimitReached,
                format!(
                    "the daemon serves at most {} event subscriptions at once (limits.max_subscriptions_total)",
                    self.max_subscriptions
                ),
            )
        })
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

    /// Where the health routes count the documents they serve.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Every metric, the gauges set from the health document as it is now
    /// (built without counting as a health call).
    ///
    /// # Errors
    /// Encoding failed (it cannot into a `String`; mapped for completeness).
    pub fn scrape_metrics(&self, format: metrics::Format) -> Result<String, ServiceError> {
        let now = metrics::Snapshot::from(&self.health());
        self.metrics.scrape(&now, format).map_err(internal)
    }

    fn child(&self, name: ProcessName) -> &Child {
        match name {
            ProcessName::LivekitServer => &self.livekit,
            ProcessName::LkBackend => &self.backend,
        }
    }

    /// Replaces the published view's parts that `f` changes; readers see a
    /// new version only when something did change.
    fn update_view(&self, f: impl FnOnce(&mut View) -> bool) {
        self.view.send_if_modified(|v| {
            let changed = f(v);
            if changed {
                v.version += 1;
            }
            changed
        });
    }

    /// Publishes the desired config and the install record for `health`.
    fn publish_desired(&self, d: &Desired) {
        self.update_view(|v| {
            let same = Arc::ptr_eq(&v.rendered, &d.rendered) && v.installed == d.installed;
            if !same {
                v.rendered = Arc::clone(&d.rendered);
                v.installed = d.installed.clone();
            }
            !same
        });
    }

    /// Reads a record of each child left by a previous instance: a verified
    /// one is supervised again, and any record (verified or gone) means the
    /// child was meant to run. Must hold `desired`.
    async fn adopt_children(&self, d: &mut Desired) {
        for name in ProcessName::ALL {
            let spec = specs::child_spec(name, &d.rendered, &self.spec_paths);
            match self.child(name).adopt(spec).await {
                Ok(outcome) => {
                    tracing::info!(process = %name, ?outcome, "adoption");
                    let meant_to_run = !matches!(outcome, supervise::AdoptOutcome::NoRecord);
                    d.want.insert(name, meant_to_run);
                }
                Err(e) => tracing::warn!(process = %name, error = %e, "adoption failed"),
            }
        }
    }

    // ------------------------------------------------------------ methods

    /// Runs `f` in a task of its own and awaits it: the caller's future may
    /// be dropped (the client went away) without cutting the mutation short.
    async fn run_to_completion<T, F>(self: &Arc<Self>, f: impl FnOnce(Arc<Self>) -> F) -> Result<T, ServiceError>
    where
        F: std::future::Future<Output = Result<T, ServiceError>> + Send + 'static,
        T: Send + 'static,
    {
        tokio::spawn(f(Arc::clone(self))).await.map_err(internal)?
    }

    /// `livekitservice.configure`.
    ///
    /// # Errors
    /// -32602 for invalid input (nothing changes); `write_failed` when even
    /// `runtime.json` cannot be written (nothing changes). Once `runtime.json`
    /// is in place the new config is the truth: files that could not be
    /// written follow at the next tick and the result names them as pending.
    pub async fn configure(self: &Arc<Self>, p: ConfigureParams) -> Result<ConfigureResult, ServiceError> {
        self.run_to_completion(|s| async move { s.configure_now(p).await })
            .await
    }

    async fn configure_now(&self, p: ConfigureParams) -> Result<ConfigureResult, ServiceError> {
        let mut d = self.desired.lock().await;
        let mut update = config::apply_configure(Some(d.rendered.config()), &p).map_err(|e| match e {
            config::ConfigureError::Invalid(v) => ServiceError::invalid(v.field, v.rule),
            config::ConfigureError::Mint(m) => internal(m),
        })?;
        Self::check_cluster_params(&p, &update.config)?;
        self.check_member_keeps_redis(&p, &update.config)?;
        // In a cluster a credential is Redis's first: joined (adopted or
        // published), or changed by a compare-and-set, before it is applied.
        let before = d.rendered.config().credential();
        let join = self.cluster_join(&mut d, &p, &mut update.config).await?;
        let change = if join.is_none() && update.config.credential() != before {
            self.cluster_write_credential(&mut d, &update.config.credential())
                .await?
        } else {
            None
        };
        let after = update.config.credential();
        for (field, changed) in [
            ("api_key", after.api_key != before.api_key),
            ("api_secret", after.api_secret != before.api_secret),
        ] {
            if changed && !update.changed_fields.iter().any(|f| f == field) {
                update.changed_fields.push(field.to_string());
            }
        }
        // Known before the children restart onto the new file, so that an
        // exit blamed on a just-configured Redis already waits for it.
        let configured = crate::redis::RedisTarget::from_config(&update.config).is_some();
        self.redis_state
            .send_if_modified(|s| std::mem::replace(&mut s.configured, configured) != configured);
        // A livekit-server waiting in backoff (for Redis, say) would restart
        // from the file it last failed with: a new livekit.yaml, perhaps the
        // fix for what it waits for, starts it now from the new rendering.
        let livekit_waits = self.livekit.health().state == proto::ProcessState::Backoff
            && Rendered::new(update.config.clone()).sha256(config::TripleFile::LivekitYaml)
                != d.rendered.sha256(config::TripleFile::LivekitYaml);
        let step = Step {
            trigger: "configure",
            target: Target::Config(Box::new(update.config.clone())),
            intent: Intent {
                restart: if livekit_waits {
                    vec![ProcessName::LivekitServer]
                } else {
                    Vec::new()
                },
                ..Intent::default()
            },
            timeout: DEFAULT_READY_TIMEOUT,
        };
        let mut r = self.reconcile(&mut d, step).await?;
        if r.heal.pending.is_empty() {
            self.verify_on_disk(&d.rendered).await?;
        }
        let cluster = match join {
            Some(j) if *d.rendered.config() == update.config => Some(self.cluster_joined(&mut d, j).await?),
            _ => None,
        };
        self.cluster_changed(&d, change);
        if let Some(e) = r.failure(false) {
            return Err(e);
        }
        if !update.changed_fields.is_empty() {
            // A new redis_address is checked now, not at the next period.
            self.redis_wake.notify_one();
            self.events.publish(Event::Configured {
                in_memory_hash: d.rendered.in_memory_hash().to_string(),
                changed_fields: update.changed_fields.clone(),
            });
        }
        Ok(ConfigureResult {
            changed_fields: update.changed_fields,
            minted: update.minted || r.heal.minted,
            heal: r.heal,
            api_key: d.rendered.config().api_key.clone(),
            in_memory_hash: d.rendered.in_memory_hash().to_string(),
            cluster,
        })
    }

    /// Re-reads the triple and fails unless it is consistent: a write that
    /// "succeeded" but does not read back is not trusted.
    async fn verify_on_disk(&self, rendered: &Arc<Rendered>) -> Result<(), ServiceError> {
        let store = self.store.clone();
        let r = Arc::clone(rendered);
        let check = tokio::task::spawn_blocking(move || config::check_rendered(&r, &store.observe()))
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

    /// `livekitservice.config_show`: the effective settings, read from the
    /// published view (never the lock, never a secret).
    pub fn config_show(&self) -> proto::ConfigShowResult {
        config::settings::show(self.view.borrow().rendered.config())
    }

    /// `livekitservice.backend_token`: lk-backend's mint secret and where
    /// to post, from the published view (full access is checked by the
    /// method table).
    pub fn backend_token(&self) -> proto::BackendTokenResult {
        let v = self.view.borrow();
        let c = v.rendered.config();
        proto::BackendTokenResult {
            mint_secret: c.mint_secret().expose().to_string(),
            token_url: format!("{}/token", c.backend_url()),
        }
    }

    /// `livekitservice.start`.
    ///
    /// # Errors
    /// A bad `timeout_ms`, not installed (with the install hint), a port held
    /// by a foreign process, a child that exits during startup or is not
    /// ready in time, a file that cannot be written.
    pub async fn start(self: &Arc<Self>, p: StartParams) -> Result<StartResult, ServiceError> {
        let timeout = timeout_param(p.timeout_ms, DEFAULT_READY_TIMEOUT)?;
        self.run_to_completion(|s| async move { s.start_now(p, timeout).await })
            .await
    }

    async fn start_now(&self, p: StartParams, timeout: Duration) -> Result<StartResult, ServiceError> {
        // An install under way is waited for: start needs its binary.
        let _installing = self.installing.lock().await;
        let mut d = self.desired.lock().await;
        let mut install_result = None;
        if p.update == Some(true) {
            let params = self.last_install_params().await;
            install_result = Some(self.install_locked(&mut d, &params).await?);
        }
        let reset = p.reset == Some(true);
        let (have_livekit, have_backend) = self.programs_in_place().await?;
        if !have_livekit {
            match self.known_source().await {
                Some(params) => install_result = Some(self.install_locked(&mut d, &params).await?),
                None => {
                    return Err(ServiceError::new(
                        ErrorCode::NotInstalled,
                        format!(
                            "livekit-server is not installed at {}",
                            self.spec_paths.livekit_bin.display()
                        ),
                    ))
                }
            }
        }
        if !have_backend {
            return Err(ServiceError::new(
                ErrorCode::StartFailed,
                format!("lk-backend not found at {}", self.spec_paths.backend_bin.display()),
            )
            .with_hint(
                "install lk-backend next to hero_livekit_server or in <root>/bin, or pass --backend-bin to the daemon",
            ));
        }
        // In a cluster the new credential is written to Redis first.
        let (target, change) = if reset {
            self.reset_target(&mut d).await?
        } else {
            (Target::Current, None)
        };
        for name in ProcessName::ALL {
            d.want.insert(name, true);
        }
        let step = Step {
            trigger: if reset { "reset" } else { "start" },
            target,
            intent: Intent {
                ensure_running: true,
                ..Intent::default()
            },
            timeout,
        };
        let mut r = self.reconcile(&mut d, step).await?;
        self.cluster_changed(&d, change);
        // A child must not be started onto a file that is not the
        // rendering: the start cannot complete until the write does.
        if let Some(e) = r.failure(true) {
            return Err(e);
        }
        let mut processes = BTreeMap::new();
        for name in ProcessName::ALL {
            // An install by this call already replaced a child onto the new
            // binary: restarted by this call, whatever its reconcile found.
            let by_install = install_result
                .as_ref()
                .is_some_and(|i| i.heal.restarted.contains(&name));
            let outcome = match r.outcomes.get(&name).copied() {
                _ if by_install => StartOutcome::Restarted,
                Some(o) => o,
                None => StartOutcome::AlreadyRunning,
            };
            processes.insert(name, outcome);
        }
        drop(d);
        self.await_proof(PROOF_WAIT.min(timeout)).await;
        let h = self.health();
        Ok(StartResult {
            heal: r.heal,
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
    async fn last_install_params(&self) -> InstallParams {
        match self.known_source().await {
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
    async fn known_source(&self) -> Option<InstallParams> {
        let record = self.paths.install_record();
        let r = tokio::task::spawn_blocking(move || install::read_record(&record))
            .await
            .ok()??;
        Some(InstallParams {
            // A custom source's `custom-<sha>` label is no version to ask
            // for; the recorded checksum pins the bytes instead.
            version: Some(r.version).filter(|v| install::is_release_version(v)),
            source: Some(r.source),
            sha256: r.artifact_sha256,
            force: Some(true),
        })
    }

    /// `livekitservice.stop`.
    ///
    /// # Errors
    /// A bad `timeout_ms`; signalling failed.
    pub async fn stop(self: &Arc<Self>, p: StopParams) -> Result<StopResult, ServiceError> {
        // An error names the field the caller gave.
        let timeout = match (p.timeout_ms, p.drain_timeout_ms) {
            (Some(a), Some(b)) if a != b => {
                return Err(ServiceError::invalid(
                    "drain_timeout_ms",
                    "is the same deadline as timeout_ms: give one, or both equal",
                ))
            }
            (_, Some(b)) => drain_param(Some(b), self.stop_timeout)?,
            (a, None) => timeout_param(a, self.stop_timeout)?,
        };
        self.run_to_completion(|s| async move {
            let mut d = s.desired.lock().await;
            for name in ProcessName::ALL {
                d.want.insert(name, false);
            }
            // The target is down; the one reconcile stops what runs (and
            // every later pass retries a stop that failed). No file is read
            // or written for it.
            let step = Step {
                trigger: "stop",
                target: Target::Current,
                intent: Intent {
                    exits_only: true,
                    drain: Some(timeout),
                    ..Intent::default()
                },
                timeout,
            };
            let mut r = s.reconcile(&mut d, step).await?;
            if let Some(e) = r.failure(false) {
                return Err(e);
            }
            Ok(StopResult {
                stopped: r.stopped,
                killed: r.killed,
            })
        })
        .await
    }

    /// `livekitservice.restart`: the reconcile with the named children (or
    /// both) restarted whatever they run. Drifted files are healed first, so
    /// no child comes back on a credential the others do not hold.
    ///
    /// # Errors
    /// A bad `timeout_ms`; as for `start`.
    pub async fn restart(self: &Arc<Self>, p: RestartParams) -> Result<RestartResult, ServiceError> {
        let timeout = timeout_param(p.timeout_ms, DEFAULT_READY_TIMEOUT)?;
        let drain = drain_param(p.drain_timeout_ms, self.stop_timeout)?;
        self.run_to_completion(|s| async move {
            let mut d = s.desired.lock().await;
            let names: Vec<ProcessName> = match p.process {
                Some(n) => vec![n],
                None => ProcessName::ALL.to_vec(),
            };
            s.check_restartable(&names).await?;
            for name in &names {
                d.want.insert(*name, true);
            }
            let step = Step {
                trigger: "restart",
                target: Target::Current,
                intent: Intent {
                    restart: names.clone(),
                    drain: Some(drain),
                    ..Intent::default()
                },
                timeout,
            };
            let mut r = s.reconcile(&mut d, step).await?;
            if let Some(e) = r.failure(true) {
                return Err(e);
            }
            drop(d);
            s.await_proof(PROOF_WAIT.min(timeout)).await;
            Ok(RestartResult {
                heal: r.heal,
                restarted: names,
                killed: r.killed,
            })
        })
        .await
    }

    /// Whether livekit-server's and lk-backend's programs are in place:
    /// two stats, off the runtime thread that serves every caller.
    async fn programs_in_place(&self) -> Result<(bool, bool), ServiceError> {
        let (livekit_bin, backend_bin) = (self.spec_paths.livekit_bin.clone(), self.spec_paths.backend_bin.clone());
        tokio::task::spawn_blocking(move || (livekit_bin.is_file(), backend_bin.is_file()))
            .await
            .map_err(internal)
    }

    /// `restart` never trades a working child for one that cannot start:
    /// a child that runs is restarted only when its program is in place,
    /// and livekit-server only while the configured Redis answers (it
    /// exits at startup without it). Checked before anything is stopped;
    /// a refusal names the cause and leaves the running child serving.
    ///
    /// # Errors
    /// `not_installed` or `start_failed` for a missing program,
    /// `redis_unavailable` (retryable) while Redis does not answer.
    async fn check_restartable(&self, names: &[ProcessName]) -> Result<(), ServiceError> {
        let runs = |c: &Child| {
            matches!(
                c.health().state,
                proto::ProcessState::Running | proto::ProcessState::Starting
            )
        };
        let (have_livekit, have_backend) = self.programs_in_place().await?;
        let keeps = "nothing was stopped: the running one keeps serving";
        if names.contains(&ProcessName::LivekitServer) && runs(&self.livekit) {
            if !have_livekit {
                return Err(ServiceError::new(
                    ErrorCode::NotInstalled,
                    format!(
                        "livekit-server cannot be restarted: its binary {} is missing; {keeps}",
                        self.spec_paths.livekit_bin.display()
                    ),
                )
                .with_hint("run `hero_livekit install` (or `install --source PATH`), then restart"));
            }
            let redis = self.redis_state.borrow().clone();
            if let (true, Some(why)) = (redis.configured, redis.down) {
                return Err(ServiceError::new(
                    ErrorCode::RedisUnavailable,
                    format!("livekit-server cannot be restarted while its Redis does not answer ({why}): it would exit at startup; {keeps}"),
                )
                .with_hint("bring Redis back (`hero_livekit health` shows its check), then restart"));
            }
        }
        if names.contains(&ProcessName::LkBackend) && runs(&self.backend) && !have_backend {
            return Err(ServiceError::new(
                ErrorCode::StartFailed,
                format!(
                    "lk-backend cannot be restarted: {} is missing; {keeps}",
                    self.spec_paths.backend_bin.display()
                ),
            )
            .with_hint(
                "install lk-backend next to hero_livekit_server or in <root>/bin, or pass --backend-bin to the daemon",
            ));
        }
        Ok(())
    }

    /// `livekitservice.logs`: at most [`LOG_READERS`] at a time, each answer
    /// at most [`MAX_LOG_ANSWER_BYTES`] (the newest lines are kept).
    ///
    /// # Errors
    /// The log cannot be read.
    pub async fn logs(&self, p: LogsParams) -> Result<LogsResult, ServiceError> {
        let lines = p.lines.unwrap_or(DEFAULT_LOG_LINES);
        if lines == 0 || lines > MAX_LOG_LINES {
            return Err(ServiceError::invalid("lines", format!("must be 1-{MAX_LOG_LINES}")));
        }
        let _permit = self.log_readers.acquire().await.map_err(internal)?;
        let path = self.paths.logs_dir().join(format!("{}.log", p.process));
        let path2 = path.clone();
        let tail = tokio::task::spawn_blocking(move || {
            supervise::logs::tail_bounded(&path2, lines as usize, MAX_LOG_ANSWER_BYTES as u64)
        })
        .await
        .map_err(internal)?;
        let mut lines = match tail {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(ServiceError::new(
                    ErrorCode::Io,
                    format!("reading {}: {e}", path.display()),
                ))
            }
        };
        let mut budget = MAX_LOG_ANSWER_BYTES;
        let keep = lines
            .iter()
            .rev()
            .take_while(|l| match budget.checked_sub(l.len() + 1) {
                Some(left) => {
                    budget = left;
                    true
                }
                None => false,
            })
            .count();
        lines.drain(..lines.len() - keep);
        Ok(LogsResult {
            process: p.process,
            path: path.display().to_string(),
            lines,
        })
    }

    /// `livekitservice.health`: read-only, never writes, never blocks on a
    /// mutation in progress, never waits on the network.
    pub fn health(&self) -> Health {
        let view = self.view.borrow();
        let consistency = self.check_files(&view.rendered);
        let now = self.children_now(&view);
        health::build(
            &view,
            now,
            &consistency,
            &self.spec_paths.livekit_bin.display().to_string(),
            self.spec_paths.livekit_bin.is_file(),
        )
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
    /// on every call (inotify-gated `stat`s, re-read only when changed), so
    /// a file edited by hand shows at once; but when neither they, the view
    /// nor the children's state changed within the same millisecond (the
    /// resolution of `uptime_ms`), the document built for that millisecond
    /// is served again instead of being rebuilt and re-serialized. Whether
    /// the binary is present is looked at once per millisecond.
    ///
    /// # Errors
    /// Serializing the document failed (it holds only strings, numbers and
    /// maps, so this is not expected).
    pub fn health_json(&self) -> Result<(health::HealthJson, bool), ServiceError> {
        let view = self.view.borrow();
        let consistency = self.check_files(&view.rendered);
        let key = MemoKey {
            view: view.version,
            consistency: Arc::clone(&consistency),
            livekit: self.livekit.generation(),
            backend: self.backend.generation(),
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
        let now = self.children_now(&view);
        let h = health::build(
            &view,
            now,
            &consistency,
            &self.spec_paths.livekit_bin.display().to_string(),
            self.spec_paths.livekit_bin.is_file(),
        );
        let json = health::HealthJson::new(serde_json::value::to_raw_value(&h).map_err(internal)?);
        *memo = Some(Memo {
            key,
            json: json.clone(),
            ready_for_tokens: h.ready_for_tokens,
        });
        Ok((json, h.ready_for_tokens))
    }

    /// Daemon exit: stop the background tasks, wait for a mutation in
    /// progress to finish, then stop the children or leave them running
    /// (recorded) for the next instance to adopt.
    pub async fn shutdown(&self, stop_children: bool) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        let mut d = self.desired.lock().await;
        if stop_children {
            // Target down, stopped by the one reconcile, as `stop` does.
            for name in ProcessName::ALL {
                d.want.insert(name, false);
            }
            let step = Step {
                trigger: "exit",
                target: Target::Current,
                intent: Intent {
                    exits_only: true,
                    ..Intent::default()
                },
                timeout: self.stop_timeout,
            };
            match self.reconcile(&mut d, step).await {
                Ok(r) => {
                    for (name, e) in r.errors {
                        tracing::warn!(process = %name, error = %e, "stopping a child at exit failed");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "stopping the children at exit failed"),
            }
        } else {
            self.livekit.detach().await;
            self.backend.detach().await;
        }
    }
}

impl Drop for LivekitService {
    /// A service dropped without `shutdown` (a library user, a test) still
    /// ends its background tasks.
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn default_backend_bin(paths: &Paths) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("lk-backend")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| paths.bin_dir.join("lk-backend"))
}

fn install_error(e: install::InstallError) -> ServiceError {
    match e.code() {
        Some(code) => ServiceError::new(code, e.to_string()).with_hint(e.hint()),
        None => ServiceError::invalid(e.field().unwrap_or("source"), e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_bounded_and_name_the_field() {
        assert_eq!(
            timeout_param(None, Duration::from_secs(3)).ok(),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            timeout_param(Some(1), Duration::ZERO).ok(),
            Some(Duration::from_millis(1))
        );
        assert_eq!(
            timeout_param(Some(600_000), Duration::ZERO).ok(),
            Some(Duration::from_secs(600))
        );
        for bad in [0, 600_001, u64::MAX] {
            let e = timeout_param(Some(bad), Duration::ZERO).expect_err("out of bounds");
            assert_eq!(
                e.kind,
                crate::error::ErrorKind::InvalidParams {
                    field: "timeout_ms".into()
                },
                "{bad}"
            );
        }
    }
}
