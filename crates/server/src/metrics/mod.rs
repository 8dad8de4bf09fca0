//! The supervisor's own metrics, served as `GET /metrics` on the socket
//! and, with `--metrics-listen`, on TCP ([`listen`]).
//!
//! Counters move where the fact happens, once: [`Metrics::count_event`] is
//! called synchronously by the event bus for every event it publishes
//! (heals, restarts, state changes, token-chain failures), so a subscriber
//! that lags or drops never makes a counter wrong; the few facts that are
//! no event (drift, a health call, a probe verdict, an install outcome) are
//! counted where they are decided. Gauges (child state, readiness, Redis)
//! are set from the health document at scrape time, so they can never
//! disagree with `health`.
//!
//! Every label value is one of a closed set of enum variants: no label can
//! carry a secret (or any free text from an event), and the number of
//! series is bounded (each family's series exist from the start at 0, plus
//! at most its `other` ones).

pub mod listen;

use std::fmt::Write as _;
use std::time::Duration;

use hero_livekit_proto::{Event, Health, ProcessName, ProcessState};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::config::TripleFile;

/// Every metric name starts with this (`hero_livekit_heals_total`...).
const PREFIX: &str = "hero_livekit";

/// The two exposition formats a scraper may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text 0.0.4, the default (what `curl` and most tools read).
    Prometheus,
    /// OpenMetrics 1.0 text, for a scraper whose `Accept` names it.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics only when named,
    /// as Prometheus itself negotiates it.
    pub fn from_accept(accept: Option<&[u8]>) -> Format {
        let names_openmetrics = accept.is_some_and(|a| {
            a.windows(b"application/openmetrics-text".len())
                .any(|w| w.eq_ignore_ascii_case(b"application/openmetrics-text"))
        });
        if names_openmetrics {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    /// The `Content-Type` of a scrape in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Where a health call came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthVia {
    /// `livekitservice.health` over JSON-RPC.
    Rpc,
    /// `GET /health`.
    Http,
}

/// How an install ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InstallOutcome {
    /// A new binary is in place.
    Installed,
    /// The binary in place already was the one asked for.
    Unchanged,
    /// Nothing changed: fetch, verification or the swap failed.
    Failed,
}

/// What the cluster sync did (SPEC section 11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClusterEvent {
    /// This node joined a cluster (published or adopted).
    Joined,
    /// A join replaced the node's own credential with the cluster's.
    CredentialReplaced,
    /// A new generation of the cluster's credential was applied here.
    CredentialChanged,
    /// Redis held no record and this node wrote its credential back.
    Republished,
    /// This node left its cluster.
    Left,
}

/// What one token-chain probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeResult {
    /// livekit-server accepted lk-backend's token.
    Accepted,
    /// livekit-server refused it (401): the credentials differ.
    Refused,
    /// A leg did not answer (or answered something else).
    Failed,
    /// Not run: a child was not ready.
    NotReady,
}

/// What made the supervisor rewrite the triple (the reconcile's trigger).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Trigger {
    Boot,
    Configure,
    Install,
    Start,
    Reset,
    Restart,
    Drift,
    TokenChain,
    Other,
}

impl Trigger {
    fn of(trigger: &str) -> Trigger {
        match trigger {
            "boot" => Trigger::Boot,
            "configure" => Trigger::Configure,
            "install" => Trigger::Install,
            "start" => Trigger::Start,
            "reset" => Trigger::Reset,
            "restart" => Trigger::Restart,
            "drift" => Trigger::Drift,
            "token_chain" => Trigger::TokenChain,
            _ => Trigger::Other,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Trigger::Boot => "boot",
            Trigger::Configure => "configure",
            Trigger::Install => "install",
            Trigger::Start => "start",
            Trigger::Reset => "reset",
            Trigger::Restart => "restart",
            Trigger::Drift => "drift",
            Trigger::TokenChain => "token_chain",
            Trigger::Other => "other",
        }
    }
}

/// Why a child was restarted, as a closed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RestartReason {
    /// It exited after it had been ready.
    Crashed,
    /// It exited before it became ready.
    ExitedBeforeReady,
    /// The backoff pause after a failure ended.
    BackoffElapsed,
    /// A restart attempt failed and the policy tried again.
    RestartFailed,
    /// It ran a file other than the one on disk.
    ConfigChanged,
    /// Its executable was replaced.
    BinaryReplaced,
    /// The token chain failed and nothing else explained it.
    TokenChainFailed,
    /// `restart` was called.
    Requested,
    Other,
}

impl RestartReason {
    /// The class of a `Restarted` event's reason. The event carries a
    /// sentence for people (`crashed: killed by signal 9`); the metric needs
    /// a bounded set, so the sentence's known openings (written by
    /// `supervise::child` and `service::plan`) are mapped here, and
    /// anything else is `other` rather than a new series.
    pub fn of(reason: &str) -> RestartReason {
        const PREFIXES: [(&str, RestartReason); 8] = [
            ("crashed", RestartReason::Crashed),
            ("exited before it was ready", RestartReason::ExitedBeforeReady),
            ("backoff elapsed", RestartReason::BackoffElapsed),
            ("restart failed", RestartReason::RestartFailed),
            ("config changed", RestartReason::ConfigChanged),
            ("it runs an outdated", RestartReason::ConfigChanged),
            ("it cannot say which", RestartReason::ConfigChanged),
            ("the token chain failed", RestartReason::TokenChainFailed),
        ];
        if reason == "requested" || reason == "restart requested" {
            return RestartReason::Requested;
        }
        if reason.ends_with("was replaced by another binary") {
            return RestartReason::BinaryReplaced;
        }
        PREFIXES
            .iter()
            .find(|(prefix, _)| reason.starts_with(prefix))
            .map_or(RestartReason::Other, |(_, r)| *r)
    }

    fn as_str(self) -> &'static str {
        match self {
            RestartReason::Crashed => "crashed",
            RestartReason::ExitedBeforeReady => "exited_before_ready",
            RestartReason::BackoffElapsed => "backoff_elapsed",
            RestartReason::RestartFailed => "restart_failed",
            RestartReason::ConfigChanged => "config_changed",
            RestartReason::BinaryReplaced => "binary_replaced",
            RestartReason::TokenChainFailed => "token_chain_failed",
            RestartReason::Requested => "requested",
            RestartReason::Other => "other",
        }
    }
}

/// Label values are written through one `as_str` per type: no `Display` of
/// anything that could hold free text.
macro_rules! label_value {
    ($($t:ty => $f:expr),* $(,)?) => {$(
        impl EncodeLabelValue for $t {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                #[allow(clippy::redundant_closure_call)]
                encoder.write_str(($f)(self))
            }
        }
    )*};
}

/// A child's name as a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Process(ProcessName);

/// A child's state as a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State(ProcessState);

// `ProcessState` (a wire type) is not `Hash`; its name is.
impl std::hash::Hash for State {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        state_str(self.0).hash(h);
    }
}

/// A file of the triple as a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct File(TripleFile);

impl File {
    fn named(name: &str) -> Option<File> {
        TripleFile::ALL.into_iter().find(|f| f.name() == name).map(File)
    }

    /// The file a drift line is about (each starts with `<file>: `).
    fn of_drift(line: &str) -> Option<File> {
        TripleFile::ALL
            .into_iter()
            .find(|f| line.strip_prefix(f.name()).is_some_and(|rest| rest.starts_with(':')))
            .map(File)
    }
}

label_value!(
    Process => |p: &Process| p.0.as_str(),
    State => |s: &State| state_str(s.0),
    File => |f: &File| f.0.name(),
    Trigger => |t: &Trigger| t.as_str(),
    RestartReason => |r: &RestartReason| r.as_str(),
    HealthVia => |v: &HealthVia| match v { HealthVia::Rpc => "rpc", HealthVia::Http => "http" },
    InstallOutcome => |o: &InstallOutcome| match o {
        InstallOutcome::Installed => "installed",
        InstallOutcome::Unchanged => "unchanged",
        InstallOutcome::Failed => "failed",
    },
    ClusterEvent => |e: &ClusterEvent| match e {
        ClusterEvent::Joined => "joined",
        ClusterEvent::CredentialReplaced => "credential_replaced",
        ClusterEvent::CredentialChanged => "credential_changed",
        ClusterEvent::Republished => "republished",
        ClusterEvent::Left => "left",
    },
    ProbeResult => |r: &ProbeResult| match r {
        ProbeResult::Accepted => "accepted",
        ProbeResult::Refused => "refused",
        ProbeResult::Failed => "failed",
        ProbeResult::NotReady => "not_ready",
    },
);

/// Every state a child can be in, for the one-hot state gauge.
const STATES: [ProcessState; 5] = [
    ProcessState::Stopped,
    ProcessState::Starting,
    ProcessState::Running,
    ProcessState::Backoff,
    ProcessState::Failed,
];

fn state_str(s: ProcessState) -> &'static str {
    match s {
        ProcessState::Stopped => "stopped",
        ProcessState::Starting => "starting",
        ProcessState::Running => "running",
        ProcessState::Backoff => "backoff",
        ProcessState::Failed => "failed",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HealLabels {
    trigger: Trigger,
    file: File,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FileLabels {
    file: File,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RestartLabels {
    process: Process,
    reason: RestartReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ProcessLabels {
    process: Process,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    process: Process,
    state: State,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ViaLabels {
    via: HealthVia,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ClusterLabels {
    event: ClusterEvent,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct InstallLabels {
    outcome: InstallOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ProbeLabels {
    result: ProbeResult,
}

/// The registry and every metric in it. One per service; cheap to update
/// from any task (atomics; a family's map is only locked to find a series).
pub struct Metrics {
    registry: Registry,
    heals: Family<HealLabels, Counter>,
    drift: Family<FileLabels, Counter>,
    restarts: Family<RestartLabels, Counter>,
    state_changes: Family<StateLabels, Counter>,
    token_chain_failures: Counter,
    probes: Family<ProbeLabels, Counter>,
    probe_latency: Histogram,
    installs: Family<InstallLabels, Counter>,
    cluster_events: Family<ClusterLabels, Counter>,
    /// Resolved once: the health path only increments an atomic.
    health_rpc: Counter,
    health_http: Counter,
    child_state: Family<StateLabels, Gauge>,
    child_ready: Family<ProcessLabels, Gauge>,
    ready_for_tokens: Gauge,
    consistent: Gauge,
    token_chain_ok: Gauge,
    redis_configured: Gauge,
    redis_reachable: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric registered, each labelled series that can exist created
    /// at zero: a scraper sees a counter at 0 before its first increment, so
    /// `increase()` over the first event is right.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix(PREFIX);
        let heals = Family::<HealLabels, Counter>::default();
        let drift = Family::<FileLabels, Counter>::default();
        let restarts = Family::<RestartLabels, Counter>::default();
        let state_changes = Family::<StateLabels, Counter>::default();
        let token_chain_failures = Counter::default();
        let probes = Family::<ProbeLabels, Counter>::default();
        // The probe is three loopback requests bounded at 2 s: 1 ms to 2 s.
        let probe_latency = Histogram::new(exponential_buckets(0.001, 2.0, 12));
        let installs = Family::<InstallLabels, Counter>::default();
        let cluster_events = Family::<ClusterLabels, Counter>::default();
        let health_calls = Family::<ViaLabels, Counter>::default();
        let child_state = Family::<StateLabels, Gauge>::default();
        let child_ready = Family::<ProcessLabels, Gauge>::default();
        let (ready_for_tokens, consistent, token_chain_ok) = (Gauge::default(), Gauge::default(), Gauge::default());
        let (redis_configured, redis_reachable) = (Gauge::default(), Gauge::default());

        for file in TripleFile::ALL.map(File) {
            for trigger in [
                Trigger::Boot,
                Trigger::Configure,
                Trigger::Install,
                Trigger::Start,
                Trigger::Reset,
                Trigger::Restart,
                Trigger::Drift,
                Trigger::TokenChain,
            ] {
                heals.get_or_create_owned(&HealLabels { trigger, file });
            }
            drift.get_or_create_owned(&FileLabels { file });
        }
        for process in ProcessName::ALL.map(Process) {
            for reason in [
                RestartReason::Crashed,
                RestartReason::ExitedBeforeReady,
                RestartReason::BackoffElapsed,
                RestartReason::RestartFailed,
                RestartReason::ConfigChanged,
                RestartReason::BinaryReplaced,
                RestartReason::TokenChainFailed,
                RestartReason::Requested,
            ] {
                restarts.get_or_create_owned(&RestartLabels { process, reason });
            }
            for state in STATES.map(State) {
                state_changes.get_or_create_owned(&StateLabels { process, state });
                child_state.get_or_create_owned(&StateLabels { process, state });
            }
            child_ready.get_or_create_owned(&ProcessLabels { process });
        }
        for result in [
            ProbeResult::Accepted,
            ProbeResult::Refused,
            ProbeResult::Failed,
            ProbeResult::NotReady,
        ] {
            probes.get_or_create_owned(&ProbeLabels { result });
        }
        for outcome in [
            InstallOutcome::Installed,
            InstallOutcome::Unchanged,
            InstallOutcome::Failed,
        ] {
            installs.get_or_create_owned(&InstallLabels { outcome });
        }
        for event in [
            ClusterEvent::Joined,
            ClusterEvent::CredentialReplaced,
            ClusterEvent::CredentialChanged,
            ClusterEvent::Republished,
            ClusterEvent::Left,
        ] {
            cluster_events.get_or_create_owned(&ClusterLabels { event });
        }
        let health_rpc = health_calls.get_or_create_owned(&ViaLabels { via: HealthVia::Rpc });
        let health_http = health_calls.get_or_create_owned(&ViaLabels { via: HealthVia::Http });

        registry.register(
            "heals",
            "Files of the config triple rewritten, by what triggered the heal and by file",
            heals.clone(),
        );
        registry.register(
            "drift_detections",
            "Files rewritten because they had left the rendering of the config in force (missing, unreadable, other bytes), by file",
            drift.clone(),
        );
        registry.register(
            "child_restarts",
            "Children restarted by the supervisor, by process and reason",
            restarts.clone(),
        );
        registry.register(
            "child_state_changes",
            "Child state changes (or a new pid in the same state), by process and the state entered",
            state_changes.clone(),
        );
        registry.register(
            "token_chain_failures",
            "Token-chain failures reported as events (once per failure, not per probe while it lasts)",
            token_chain_failures.clone(),
        );
        registry.register(
            "token_chain_probes",
            "Token-chain probe verdicts, by result",
            probes.clone(),
        );
        registry.register_with_unit(
            "token_chain_probe_latency",
            "Time a token-chain probe took (token from lk-backend, accepted or refused by livekit-server)",
            Unit::Seconds,
            probe_latency.clone(),
        );
        registry.register("installs", "Installs of livekit-server, by outcome", installs.clone());
        registry.register(
            "cluster_events",
            "What the cluster sync did: joins, credentials replaced by a join, new generations applied, records written back into an empty Redis",
            cluster_events.clone(),
        );
        registry.register(
            "health_calls",
            "Health documents served, by JSON-RPC or GET /health",
            health_calls,
        );
        registry.register(
            "child_state",
            "1 for the state each child is in now, 0 for the others",
            child_state.clone(),
        );
        registry.register(
            "child_ready",
            "1 when the child answers its readiness probe",
            child_ready.clone(),
        );
        registry.register(
            "ready_for_tokens",
            "1 when the token chain is proven for the current state (health's ready_for_tokens)",
            ready_for_tokens.clone(),
        );
        registry.register(
            "consistent",
            "1 when the three files equal their renderings of the in-memory config",
            consistent.clone(),
        );
        registry.register(
            "token_chain_ok",
            "1 when the last token-chain probe passed",
            token_chain_ok.clone(),
        );
        registry.register(
            "redis_configured",
            "1 when redis_address is set",
            redis_configured.clone(),
        );
        registry.register(
            "redis_reachable",
            "1 when the configured Redis answered the last PING (0 when none is configured)",
            redis_reachable.clone(),
        );
        Metrics {
            registry,
            heals,
            drift,
            restarts,
            state_changes,
            token_chain_failures,
            probes,
            probe_latency,
            installs,
            cluster_events,
            health_rpc,
            health_http,
            child_state,
            child_ready,
            ready_for_tokens,
            consistent,
            token_chain_ok,
            redis_configured,
            redis_reachable,
        }
    }

    /// Counts what an event says happened. Called by the event bus, once
    /// per event, before it is broadcast.
    pub fn count_event(&self, event: &Event) {
        match event {
            Event::Healed { trigger, written, .. } => {
                let trigger = Trigger::of(trigger);
                for file in written.iter().filter_map(|f| File::named(f)) {
                    self.heals.get_or_create(&HealLabels { trigger, file }).inc();
                }
            }
            Event::Restarted { process, reason } => {
                let labels = RestartLabels {
                    process: Process(*process),
                    reason: RestartReason::of(reason),
                };
                self.restarts.get_or_create(&labels).inc();
            }
            Event::State { process, state, .. } => {
                let labels = StateLabels {
                    process: Process(*process),
                    state: State(*state),
                };
                self.state_changes.get_or_create(&labels).inc();
            }
            Event::TokenChainFailed { .. } => {
                self.token_chain_failures.inc();
            }
            Event::ClusterJoined { .. } => self.count_cluster(ClusterEvent::Joined),
            Event::CredentialReplaced { .. } => self.count_cluster(ClusterEvent::CredentialReplaced),
            Event::ClusterCredentialChanged { .. } => self.count_cluster(ClusterEvent::CredentialChanged),
            Event::ClusterRepublished { .. } => self.count_cluster(ClusterEvent::Republished),
            Event::ClusterLeft { .. } => self.count_cluster(ClusterEvent::Left),
            Event::Configured { .. } | Event::InstallProgress { .. } | Event::Installed { .. } => {}
        }
    }

    /// Files rewritten because they had left the rendering of the config
    /// in force: `drift` as the heal plan names it, `written` what the heal
    /// wrote. A heal that applies a new config (`configure`, a reset) is no
    /// drift, though its plan lists every field it changes, so the caller
    /// counts only heals that keep the config.
    pub fn count_drift(&self, drift: &[String], written: &[TripleFile]) {
        for file in written.iter().copied().map(File) {
            // Once per file and heal, however many lines describe it.
            if drift.iter().any(|d| File::of_drift(d) == Some(file)) {
                self.drift.get_or_create(&FileLabels { file }).inc();
            }
        }
    }

    /// One health document served.
    pub fn count_health(&self, via: HealthVia) {
        match via {
            HealthVia::Rpc => self.health_rpc.inc(),
            HealthVia::Http => self.health_http.inc(),
        };
    }

    /// One token-chain probe verdict; `latency` of a probe that ran.
    pub fn count_probe(&self, result: ProbeResult, latency: Duration) {
        self.probes.get_or_create(&ProbeLabels { result }).inc();
        if result != ProbeResult::NotReady {
            self.probe_latency.observe(latency.as_secs_f64());
        }
    }

    fn count_cluster(&self, event: ClusterEvent) {
        self.cluster_events.get_or_create(&ClusterLabels { event }).inc();
    }

    pub fn count_install(&self, outcome: InstallOutcome) {
        self.installs.get_or_create(&InstallLabels { outcome }).inc();
    }

    /// Sets the gauges from what `health` says now and encodes every metric.
    ///
    /// # Errors
    /// Only a failing writer; a `String` never fails, so in practice none.
    pub fn scrape(&self, now: &Snapshot, format: Format) -> Result<String, std::fmt::Error> {
        self.observe(now);
        // A scrape is about 9 KB (the series are fixed): one allocation.
        let mut out = String::with_capacity(12 * 1024);
        match format {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?,
            Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &self.registry)?,
        }
        Ok(out)
    }

    fn observe(&self, now: &Snapshot) {
        for (name, child) in ProcessName::ALL.into_iter().zip(&now.children) {
            let process = Process(name);
            for state in STATES {
                let labels = StateLabels {
                    process,
                    state: State(state),
                };
                let is = child.is_some_and(|(s, _)| s == state);
                self.child_state.get_or_create(&labels).set(i64::from(is));
            }
            let ready = child.is_some_and(|(_, ready)| ready);
            self.child_ready
                .get_or_create(&ProcessLabels { process })
                .set(i64::from(ready));
        }
        self.ready_for_tokens.set(i64::from(now.ready_for_tokens));
        self.consistent.set(i64::from(now.consistent));
        self.token_chain_ok.set(i64::from(now.token_chain_ok));
        self.redis_configured.set(i64::from(now.redis_reachable.is_some()));
        self.redis_reachable.set(i64::from(now.redis_reachable == Some(true)));
    }
}

/// What the gauges show, taken from one health document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub ready_for_tokens: bool,
    pub consistent: bool,
    pub token_chain_ok: bool,
    /// `None` without `redis_address`, else whether it answered.
    pub redis_reachable: Option<bool>,
    /// State and readiness of each child, in [`ProcessName::ALL`] order.
    pub children: [Option<(ProcessState, bool)>; 2],
}

impl From<&Health> for Snapshot {
    fn from(h: &Health) -> Snapshot {
        Snapshot {
            ready_for_tokens: h.ready_for_tokens,
            consistent: h.consistent,
            token_chain_ok: h.token_chain.ok,
            redis_reachable: h.redis.as_ref().map(|r| r.reachable),
            children: ProcessName::ALL.map(|n| h.processes.get(n.as_str()).map(|p| (p.state, p.ready))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn restart_reasons_written_by_the_supervisor_map_to_their_class() {
        for (reason, class) in [
            ("crashed: killed by signal 9 (SIGKILL)", RestartReason::Crashed),
            (
                "exited before it was ready: exit status 1",
                RestartReason::ExitedBeforeReady,
            ),
            ("backoff elapsed after: exit status 1", RestartReason::BackoffElapsed),
            ("restart failed: port 7880 is held", RestartReason::RestartFailed),
            ("config changed (sha256 abc -> def)", RestartReason::ConfigChanged),
            ("it runs an outdated livekit.yaml", RestartReason::ConfigChanged),
            ("it cannot say which backend.env it runs", RestartReason::ConfigChanged),
            (
                "/x/bin/livekit-server was replaced by another binary",
                RestartReason::BinaryReplaced,
            ),
            ("the token chain failed", RestartReason::TokenChainFailed),
            ("requested", RestartReason::Requested),
            ("restart requested", RestartReason::Requested),
            ("something new", RestartReason::Other),
        ] {
            assert_eq!(RestartReason::of(reason), class, "{reason}");
        }
    }

    #[test]
    fn a_heal_counts_each_written_file_and_each_drifted_file_once() {
        let m = Metrics::new();
        let drift = vec![
            "livekit.yaml: keys entry differs from api_key/api_secret".to_string(),
            "livekit.yaml: port differs".to_string(),
            "backend.env: missing".to_string(),
        ];
        m.count_event(&Event::Healed {
            trigger: "drift".into(),
            written: vec!["livekit.yaml".into()],
            drift: drift.clone(),
            minted: false,
        });
        // backend.env drifted too, but its write is pending: not counted yet.
        m.count_drift(&drift, &[TripleFile::LivekitYaml]);
        let text = m.scrape(&Snapshot::default(), Format::Prometheus).expect("encode");
        assert_eq!(
            value(
                &text,
                r#"hero_livekit_heals_total{trigger="drift",file="livekit.yaml"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            value(&text, r#"hero_livekit_heals_total{trigger="drift",file="backend.env"}"#),
            Some(0.0)
        );
        assert_eq!(
            value(&text, r#"hero_livekit_drift_detections_total{file="livekit.yaml"}"#),
            Some(1.0)
        );
        for file in ["runtime.json", "backend.env"] {
            let series = format!(r#"hero_livekit_drift_detections_total{{file="{file}"}}"#);
            assert_eq!(value(&text, &series), Some(0.0), "{series}");
        }
    }

    #[test]
    fn an_unknown_trigger_is_other_and_free_text_never_becomes_a_label() {
        let m = Metrics::new();
        let secret = "s3cr3tValueThatMustNeverBePrinted0123456789";
        m.count_event(&Event::Healed {
            trigger: secret.into(),
            written: vec![secret.into(), "backend.env".into()],
            drift: vec![format!("backend.env: {secret}")],
            minted: false,
        });
        m.count_drift(
            &[format!("backend.env: {secret}"), secret.into()],
            &[TripleFile::BackendEnv],
        );
        m.count_event(&Event::Restarted {
            process: ProcessName::LkBackend,
            reason: secret.into(),
        });
        m.count_event(&Event::TokenChainFailed { error: secret.into() });
        for format in [Format::Prometheus, Format::OpenMetrics] {
            let text = m.scrape(&Snapshot::default(), format).expect("encode");
            assert!(!text.contains(secret), "{text}");
            assert!(text.contains(r#"trigger="other",file="backend.env"} 1"#), "{text}");
            assert!(text.contains(r#"process="lk-backend",reason="other"} 1"#), "{text}");
        }
    }

    #[test]
    fn gauges_follow_the_health_document() {
        let m = Metrics::new();
        let mut h = Snapshot {
            ready_for_tokens: true,
            children: [Some((ProcessState::Running, true)), None],
            ..Snapshot::default()
        };
        let text = m.scrape(&h, Format::Prometheus).expect("encode");
        assert_eq!(value(&text, "hero_livekit_ready_for_tokens"), Some(1.0));
        assert_eq!(
            value(
                &text,
                r#"hero_livekit_child_state{process="livekit-server",state="running"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                r#"hero_livekit_child_state{process="livekit-server",state="stopped"}"#
            ),
            Some(0.0)
        );
        assert_eq!(
            value(&text, r#"hero_livekit_child_ready{process="lk-backend"}"#),
            Some(0.0)
        );
        h.ready_for_tokens = false;
        let text = m.scrape(&h, Format::OpenMetrics).expect("encode");
        assert_eq!(value(&text, "hero_livekit_ready_for_tokens"), Some(0.0));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn openmetrics_is_served_only_when_asked_for() {
        assert_eq!(Format::from_accept(None), Format::Prometheus);
        assert_eq!(Format::from_accept(Some(b"*/*")), Format::Prometheus);
        assert_eq!(
            Format::from_accept(Some(
                b"application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
            )),
            Format::OpenMetrics
        );
    }
}
