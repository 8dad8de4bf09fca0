//! The cluster member: joining (`configure {cluster}`), credential changes
//! written to Redis before they are applied here (a compare-and-set on the
//! record's generation), and the background sync that subscribes, polls,
//! heartbeats and re-publishes into an empty Redis.
//!
//! The membership is changed only by the holder of the ops lock (the
//! methods below take `&mut Desired` as the proof). An adopted credential
//! goes through [`LivekitService::reconcile`] with the new config as target,
//! the path of `configure --api-key/--api-secret`: files first, then both
//! children restarted together, then the token-chain probe proves it. Every
//! Redis call is bounded by [`CALL_TIMEOUT`], so the ops lock is never held
//! across a round trip that can hang.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use hero_livekit_proto::{ClusterHealth, ClusterJoin, ClusterNode, ClusterState, ConfigureParams, ErrorCode, Event};
use redis::aio::ConnectionLike;
use tokio::sync::{watch, Notify};

use super::health::ClusterView;
use super::plan::Intent;
use super::reconcile::{Desired, Step, Target as Wanted};
use super::{internal, period_from_env, unix_ms, LivekitService, DEFAULT_READY_TIMEOUT};
use crate::cluster::beat::{self, Beat};
use crate::cluster::decide::{self, Join, Remote, Sync};
use crate::cluster::local::{self, Membership};
use crate::cluster::record::{self, StoredRecord};
use crate::cluster::remote::{self, Cas, Keys, RemoteError, Target};
use crate::cluster::{validate_name, validate_token};
use crate::config::{self, Config, Credential, Secret};
use crate::error::ServiceError;

/// Bound on connecting to Redis and on each call.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// Default period of the poll that backs pub/sub up
/// (`HERO_LIVEKIT_CLUSTER_POLL_MS` overrides); also the heartbeat's.
const DEFAULT_POLL: Duration = Duration::from_secs(5);
/// A heartbeat lives this many poll periods: one lost beat is not a node gone.
const HEARTBEAT_PERIODS: u32 = 3;
/// Nor is a node whose beat is late on a busy machine with a short poll.
const MIN_HEARTBEAT_TTL: Duration = Duration::from_secs(5);
/// The first pause before a round that follows one that lost Redis; it
/// doubles up to the poll period.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);

/// The cluster side of the service.
pub(super) struct ClusterSide {
    /// The membership; sent only by the holder of `desired`.
    member: watch::Sender<Option<Membership>>,
    /// Wakes the background sync (after a join or a change).
    wake: Arc<Notify>,
    poll: Duration,
}

impl ClusterSide {
    /// Loads this node's membership from the state directory.
    pub(super) async fn load(state_dir: std::path::PathBuf) -> ClusterSide {
        let loaded = tokio::task::spawn_blocking(move || local::load(&state_dir))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        let member = match loaded {
            Ok(m) => m,
            Err(e) => {
                // Not fatal: the node serves alone, and a new join rewrites it.
                tracing::warn!(error = %e, "cluster membership unreadable; the node runs outside its cluster until it joins again");
                None
            }
        };
        ClusterSide {
            member: watch::channel(member).0,
            wake: Arc::new(Notify::new()),
            poll: period_from_env("HERO_LIVEKIT_CLUSTER_POLL_MS", DEFAULT_POLL),
        }
    }
}

/// A join decided and written to Redis, to be finished once the local
/// config holds the credential.
pub(super) struct PendingJoin {
    member: Membership,
    report: ClusterJoin,
    previous_api_key: String,
}

/// A credential change written to Redis, to be announced once applied here.
pub(super) struct PendingChange {
    generation: u64,
}

/// The connection the background sync keeps between rounds.
struct Link {
    target: Target,
    cluster: String,
    conn: crate::redis::Conn,
    pubsub: Option<crate::redis::Messages>,
    /// The node id this link last wrote a heartbeat for.
    beat: Option<String>,
}

fn unavailable(e: &RemoteError) -> ServiceError {
    ServiceError::new(
        ErrorCode::RedisUnavailable,
        format!("{e}; nothing was changed, the node keeps serving with its credential"),
    )
}

fn target_of(c: &Config) -> Option<Target> {
    crate::redis::RedisTarget::from_config(c).map(|t| Target::new(t, CALL_TIMEOUT))
}

/// What Redis holds, as `m`'s secret sees it.
fn remote_of(cluster: &str, token: &Secret, raw: remote::Stored) -> Remote {
    let raw = match raw {
        remote::Stored::Absent => return Remote::Absent,
        remote::Stored::TooLarge(size) => {
            return Remote::Closed(record::RecordError::TooLarge {
                cluster: cluster.to_string(),
                size,
                limit: remote::MAX_RECORD_BYTES,
            })
        }
        remote::Stored::Value(v) => v,
    };
    match StoredRecord::from_json(cluster, &raw).and_then(|r| r.open(cluster, token).map(|c| (r.generation, c))) {
        Ok((generation, credential)) => Remote::Open { generation, credential },
        Err(e) => Remote::Closed(e),
    }
}

fn seal(m: &Membership, generation: u64, credential: &Credential) -> Result<String, ServiceError> {
    record::seal(&m.name, &m.token, generation, credential, &m.node_id, unix_ms())
        .map(|r| r.to_json())
        .map_err(internal)
}

fn new_node_id() -> String {
    beat::new_id()
}

/// The members whose heartbeat opens with this node's join secret and
/// passes the checks, sorted by id; and, when entries were left out (not
/// sealed with the secret, over the size limit, malformed, from the
/// future) or the set was over [`remote::MAX_MEMBERS`], a note saying so
/// (counts only: nothing of what Redis held).
fn open_listing(m: &Membership, listing: remote::Listing) -> (Vec<Beat>, Option<String>) {
    let now = unix_ms();
    let mut beats = Vec::new();
    let mut ignored = 0usize;
    for (id, entry) in listing.entries {
        let opened = match entry {
            remote::Entry::Value(raw) => beat::open(&m.name, &m.token, &id, &raw, now),
            remote::Entry::TooLarge(n) => Err(beat::BeatError::TooLarge(n)),
        };
        match opened {
            Ok(b) => beats.push(b),
            Err(e) => {
                ignored += 1;
                tracing::debug!(cluster = %m.name, error = %e, "a member entry was not listed");
            }
        }
    }
    beats.sort_by(|a, b| a.id.cmp(&b.id));
    let mut notes = Vec::new();
    if listing.total > remote::MAX_MEMBERS {
        notes.push(format!(
            "the member set holds {} entries, over the limit of {}: a sample was read",
            listing.total,
            remote::MAX_MEMBERS
        ));
    }
    if ignored > 0 {
        notes.push(format!(
            "{ignored} member entries were not listed: not sealed with this cluster's join secret, over {} bytes, or malformed",
            beat::MAX_BYTES
        ));
    }
    (beats, (!notes.is_empty()).then(|| notes.join("; ")))
}

/// A record a joining node must not take: absent or older than what a
/// live member runs.
fn is_stale(remote: &Remote, floor: u64) -> bool {
    match remote {
        Remote::Absent => floor > 0,
        Remote::Open { generation, .. } => *generation < floor,
        Remote::Closed(_) => false,
    }
}

/// How long a join waits for the members to restore a record that is
/// older than what they run.
const RESTORE_WAIT: Duration = Duration::from_secs(3);
/// How often it looks meanwhile.
const RESTORE_LOOK: Duration = Duration::from_millis(100);

/// Asks the members to sync (any message does; one that runs `floor`
/// restores the record) and waits until the record is at least `floor`,
/// within [`RESTORE_WAIT`].
///
/// # Errors
/// `generation_conflict` (retryable) when it is still older at the
/// deadline; `redis_unavailable` when Redis fails meanwhile. Nothing
/// changed either way.
async fn wait_for_restore<C: ConnectionLike + Send>(
    conn: &mut C,
    t: &Target,
    keys: &Keys,
    member: &Membership,
    floor: u64,
) -> Result<Remote, ServiceError> {
    remote::announce(conn, t, keys, floor)
        .await
        .map_err(|e| unavailable(&e))?;
    let deadline = tokio::time::Instant::now() + RESTORE_WAIT;
    let mut seen = None;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(RESTORE_LOOK).await;
        let raw = remote::read(conn, t, keys).await.map_err(|e| unavailable(&e))?;
        let remote = remote_of(&member.name, &member.token, raw);
        if !is_stale(&remote, floor) {
            return Ok(remote);
        }
        seen = match remote {
            Remote::Open { generation, .. } => Some(generation),
            _ => None,
        };
    }
    let held = seen.map_or_else(|| "no record".to_string(), |g| format!("generation {g}"));
    Err(ServiceError::new(
        ErrorCode::GenerationConflict,
        format!(
            "cluster {}: redis holds {held}, older than generation {floor} that a live member runs (a replayed or rolled-back record); not joined, nothing was changed",
            member.name
        ),
    )
    .with_hint("the members restore the current record at their next sync; retry the join in a few seconds"))
}

/// The newest generation another live member runs, by its sealed
/// heartbeat: a record older than this is a replay or a rollback.
fn live_floor(beats: &[Beat], own_id: &str) -> u64 {
    beats
        .iter()
        .filter(|b| b.id != own_id)
        .map(|b| b.generation)
        .max()
        .unwrap_or(0)
}

impl LivekitService {
    /// The membership as the holder of `desired` last set it.
    pub(super) fn membership(&self) -> Option<Membership> {
        self.cluster.member.borrow().clone()
    }

    /// Stores and publishes a new membership. Must hold `desired`.
    async fn set_membership(&self, _d: &mut Desired, m: Membership) -> Result<(), ServiceError> {
        let dir = self.store.dir().to_path_buf();
        let m2 = m.clone();
        tokio::task::spawn_blocking(move || local::store(&dir, &m2))
            .await
            .map_err(internal)?
            .map_err(|e| ServiceError::new(ErrorCode::WriteFailed, format!("writing {}: {e}", local::FILE)))?;
        self.cluster.member.send_replace(Some(m));
        Ok(())
    }

    /// The checks of `configure {cluster, cluster_token}` that need no
    /// network: -32602 naming the field, before anything is written.
    pub(super) fn check_cluster_params(p: &ConfigureParams, next: &Config) -> Result<(), ServiceError> {
        let invalid = |e: config::ValidationError| ServiceError::invalid(e.field, e.rule);
        if let Some(token) = &p.cluster_token {
            validate_token(token).map_err(invalid)?;
            if p.cluster.is_none() {
                return Err(ServiceError::invalid(
                    "cluster_token",
                    "needs cluster: name the cluster this join secret opens",
                ));
            }
        }
        let Some(name) = &p.cluster else { return Ok(()) };
        validate_name(name).map_err(invalid)?;
        if p.api_key.is_some() || p.api_secret.is_some() {
            return Err(ServiceError::invalid(
                "cluster",
                "cannot be combined with api_key or api_secret: join first, then change the credential (a compare-and-set across the cluster)",
            ));
        }
        if crate::redis::RedisTarget::from_config(next).is_none() {
            return Err(ServiceError::invalid(
                "cluster",
                "needs a Redis (redis_address, redis_sentinel_* or redis_cluster_addresses): the cluster's credential lives in Redis",
            ));
        }
        Ok(())
    }

    /// Joins the cluster `p.cluster` names: publishes this node's
    /// credential when the cluster is new (first writer wins), else opens
    /// the cluster's record with the join secret and sets its credential
    /// into `next`. Reads Redis and writes only a new cluster's record; a
    /// refusal changes nothing anywhere. Must hold `desired`.
    ///
    /// # Errors
    /// `redis_unavailable` (retryable), `cluster_token_rejected`.
    pub(super) async fn cluster_join(
        &self,
        d: &mut Desired,
        p: &ConfigureParams,
        next: &mut Config,
    ) -> Result<Option<PendingJoin>, ServiceError> {
        let Some(name) = p.cluster.clone() else { return Ok(None) };
        let current = self.membership().filter(|m| m.name == name);
        let token_given = p.cluster_token.is_some();
        let token = match (&p.cluster_token, &current) {
            (Some(t), _) => Secret::new(t.clone()),
            (None, Some(m)) => m.token.clone(),
            (None, None) => config::mint_credential().map_err(internal)?.api_secret,
        };
        let member = Membership {
            name: name.clone(),
            token,
            node_id: current.as_ref().map_or_else(new_node_id, |m| m.node_id.clone()),
            generation: None,
        };
        let Some(target) = target_of(next) else {
            return Err(ServiceError::invalid(
                "cluster",
                "needs a Redis (redis_address, redis_sentinel_* or redis_cluster_addresses)",
            ));
        };
        let keys = Keys::new(&name);
        let mut conn = remote::connect(&target).await.map_err(|e| unavailable(&e))?;
        let local_cred = d.rendered.config().credential();
        // The newest generation a live member runs, by the heartbeats that
        // open with this join secret: a record older than it (or none at
        // all) is a replay or a rollback, and joining waits for the members
        // to restore the current one.
        let listing = remote::members(&mut conn, &target, &keys)
            .await
            .map_err(|e| unavailable(&e))?;
        let floor = live_floor(&open_listing(&member, listing).0, &member.node_id);
        // Twice at most: a first write lost to another first node is read
        // back and adopted.
        for _ in 0..2 {
            let raw = remote::read(&mut conn, &target, &keys)
                .await
                .map_err(|e| unavailable(&e))?;
            let mut remote = remote_of(&name, &member.token, raw);
            if is_stale(&remote, floor) {
                remote = wait_for_restore(&mut conn, &target, &keys, &member, floor).await?;
            }
            match decide::join(&local_cred, &remote, token_given || current.is_some()) {
                Join::Publish => {
                    let json = seal(&member, 1, &next.credential())?;
                    if remote::create(&mut conn, &target, &keys, &json, 1)
                        .await
                        .map_err(|e| unavailable(&e))?
                    {
                        return Ok(Some(PendingJoin {
                            report: ClusterJoin {
                                name,
                                node_id: member.node_id.clone(),
                                generation: 1,
                                published: true,
                                credential_replaced: false,
                            },
                            member: Membership {
                                generation: Some(1),
                                ..member
                            },
                            previous_api_key: local_cred.api_key,
                        }));
                    }
                }
                Join::Adopt {
                    generation,
                    credential,
                    replaced,
                } => {
                    next.set_credential(credential);
                    return Ok(Some(PendingJoin {
                        report: ClusterJoin {
                            name,
                            node_id: member.node_id.clone(),
                            generation,
                            published: false,
                            credential_replaced: replaced,
                        },
                        member: Membership {
                            generation: Some(generation),
                            ..member
                        },
                        previous_api_key: local_cred.api_key,
                    }));
                }
                Join::Refuse { why, token_given } => {
                    let e = if token_given {
                        ServiceError::new(
                            ErrorCode::ClusterTokenRejected,
                            format!("cluster_token rejected: {why}; nothing was changed"),
                        )
                    } else {
                        ServiceError::new(
                            ErrorCode::ClusterTokenRejected,
                            format!("cluster {name} already exists on this Redis and needs its join secret; nothing was changed"),
                        )
                        .with_hint("run `hero_livekit cluster token` on a node of that cluster and pass it as --cluster-token")
                    };
                    return Err(e);
                }
            }
        }
        Err(ServiceError::new(
            ErrorCode::RedisUnavailable,
            format!("cluster {name}: the record changed while joining; nothing was changed, retry"),
        ))
    }

    /// Finishes a join once the config holds the cluster's credential:
    /// stores the membership, says what happened, wakes the sync.
    /// Must hold `desired`.
    pub(super) async fn cluster_joined(&self, d: &mut Desired, j: PendingJoin) -> Result<ClusterJoin, ServiceError> {
        self.set_membership(d, j.member).await?;
        let r = j.report;
        tracing::info!(cluster = %r.name, generation = r.generation, published = r.published, replaced = r.credential_replaced, "joined the cluster");
        self.events.publish(Event::ClusterJoined {
            cluster: r.name.clone(),
            node_id: r.node_id.clone(),
            generation: r.generation,
            published: r.published,
        });
        // `cluster status` agrees with the join's result at once, before
        // the sync's first round lists the nodes.
        self.set_cluster_health(ClusterHealth {
            name: Some(r.name.clone()),
            state: ClusterState::Joined,
            generation: r.generation,
            node_id: Some(r.node_id.clone()),
            nodes: Vec::new(),
            error: None,
        });
        if r.credential_replaced {
            self.events.publish(Event::CredentialReplaced {
                cluster: r.name.clone(),
                generation: r.generation,
                previous_api_key: j.previous_api_key,
                api_key: d.rendered.config().api_key.clone(),
            });
        }
        self.cluster.wake.notify_one();
        Ok(r)
    }

    /// Writes a credential change to the cluster before it is applied here:
    /// a compare-and-set from the generation this node runs to the next.
    /// Nothing to do outside a cluster. Must hold `desired`.
    ///
    /// # Errors
    /// `redis_unavailable` (retryable), `generation_conflict` naming the
    /// winner's generation, `cluster_token_rejected`; nothing changed.
    pub(super) async fn cluster_write_credential(
        &self,
        d: &mut Desired,
        next: &Credential,
    ) -> Result<Option<PendingChange>, ServiceError> {
        let Some(m) = self.membership() else { return Ok(None) };
        let Some(target) = target_of(d.rendered.config()) else {
            return Err(ServiceError::new(
                ErrorCode::RedisUnavailable,
                format!("cluster {}: no Redis is configured; nothing was changed", m.name),
            ));
        };
        let keys = Keys::new(&m.name);
        let mut conn = remote::connect(&target).await.map_err(|e| unavailable(&e))?;
        let raw = remote::read(&mut conn, &target, &keys)
            .await
            .map_err(|e| unavailable(&e))?;
        if let Remote::Closed(e) = remote_of(&m.name, &m.token, raw) {
            return Err(ServiceError::new(
                ErrorCode::ClusterTokenRejected,
                format!("{e}; nothing was changed"),
            ));
        }
        let expected = m.generation.unwrap_or(0);
        let generation = expected + 1;
        let json = seal(&m, generation, next)?;
        match remote::compare_and_set(&mut conn, &target, &keys, expected, &json, generation)
            .await
            .map_err(|e| unavailable(&e))?
        {
            Cas::Written => {}
            Cas::Conflict(found) => {
                let winner = found.map_or_else(|| "an unreadable record".to_string(), |g| format!("generation {g}"));
                return Err(ServiceError::new(
                    ErrorCode::GenerationConflict,
                    format!(
                        "cluster {}: the credential changed meanwhile on another node (Redis holds {winner}, this node ran generation {expected}); nothing was changed here, and this node applies the winner",
                        m.name
                    ),
                ));
            }
        }
        self.set_membership(
            d,
            Membership {
                generation: Some(generation),
                ..m
            },
        )
        .await?;
        Ok(Some(PendingChange { generation }))
    }

    /// Announces a change written by [`Self::cluster_write_credential`] once
    /// it is applied here.
    pub(super) fn cluster_changed(&self, d: &Desired, c: Option<PendingChange>) {
        let (Some(c), Some(m)) = (c, self.membership()) else {
            return;
        };
        tracing::info!(cluster = %m.name, generation = c.generation, "cluster credential changed here");
        self.events.publish(Event::ClusterCredentialChanged {
            cluster: m.name,
            generation: c.generation,
            api_key: d.rendered.config().api_key.clone(),
        });
        self.cluster.wake.notify_one();
    }

    /// The target of `start {reset}`: outside a cluster the reconcile mints;
    /// in one, the new credential is minted here and written to the
    /// cluster first.
    pub(super) async fn reset_target(&self, d: &mut Desired) -> Result<(Wanted, Option<PendingChange>), ServiceError> {
        if self.membership().is_none() {
            return Ok((Wanted::Reset, None));
        }
        let fresh = config::mint_credential().map_err(internal)?;
        let change = self.cluster_write_credential(d, &fresh).await?;
        let mut next = d.rendered.config().clone();
        next.set_credential(fresh);
        Ok((Wanted::Config(Box::new(next)), change))
    }

    /// A member must keep a Redis: without one it could neither follow
    /// the cluster's credential nor change it, and would stay
    /// `unreachable` for good. Leaving comes first. -32602 naming the field
    /// that removed the last Redis, nothing changed.
    pub(super) fn check_member_keeps_redis(&self, p: &ConfigureParams, next: &Config) -> Result<(), ServiceError> {
        let Some(m) = self.membership() else { return Ok(()) };
        if p.cluster.is_some() || crate::redis::RedisTarget::from_config(next).is_some() {
            return Ok(());
        }
        let field = p
            .unset
            .iter()
            .flatten()
            .find(|f| ["redis_address", "redis_sentinel_addresses", "redis_cluster_addresses"].contains(&f.as_str()))
            .map_or("redis_address", String::as_str)
            .to_string();
        Err(ServiceError::invalid(
            field,
            format!(
                "this node is a member of cluster {}, whose credential lives in Redis: it cannot be left without a Redis; nothing was changed",
                m.name
            ),
        )
        .with_hint("run `hero_livekit cluster leave` first; the node then keeps its credential and serves alone"))
    }

    /// `livekitservice.cluster_leave`: the node's heartbeat is removed from
    /// Redis (best effort: one that cannot be reached lets it expire), its
    /// membership file deleted, and it keeps serving with the credential it
    /// runs, as a single node. Redis's record is left to the other members.
    ///
    /// # Errors
    /// `not_in_cluster`; `write_failed` when the membership file cannot be
    /// removed (then nothing changed: the node is still a member).
    pub async fn cluster_leave(
        self: &Arc<Self>,
        _p: hero_livekit_proto::NoParams,
    ) -> Result<hero_livekit_proto::ClusterLeave, ServiceError> {
        self.run_to_completion(|s| async move { s.cluster_leave_now().await })
            .await
    }

    async fn cluster_leave_now(&self) -> Result<hero_livekit_proto::ClusterLeave, ServiceError> {
        let d = self.desired.lock().await;
        let m = self
            .membership()
            .ok_or_else(|| ServiceError::new(ErrorCode::NotInCluster, "this node has not joined a cluster"))?;
        // The file first: a node that cannot forget its membership would
        // rejoin at its next boot, so it has not left.
        let dir = self.store.dir().to_path_buf();
        tokio::task::spawn_blocking(move || local::remove(&dir))
            .await
            .map_err(internal)?
            .map_err(|e| {
                ServiceError::new(
                    ErrorCode::WriteFailed,
                    format!("removing {}: {e}; this node is still a member", local::FILE),
                )
            })?;
        self.cluster.member.send_replace(None);
        let heartbeat_removed = match target_of(d.rendered.config()) {
            Some(t) => {
                let keys = Keys::new(&m.name);
                let removed = async {
                    let mut c = remote::connect(&t).await?;
                    remote::remove_beat(&mut c, &t, &keys, &m.node_id).await?;
                    // Members sync on any message: they drop this node now.
                    remote::announce(&mut c, &t, &keys, m.generation.unwrap_or(0)).await
                }
                .await;
                match removed {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(cluster = %m.name, error = %e, "left the cluster; its heartbeat expires on its own");
                        false
                    }
                }
            }
            None => false,
        };
        self.set_cluster_health(ClusterHealth::default());
        tracing::info!(cluster = %m.name, node_id = %m.node_id, heartbeat_removed, "left the cluster");
        self.events.publish(Event::ClusterLeft {
            cluster: m.name.clone(),
            node_id: m.node_id.clone(),
        });
        // The sync removes a heartbeat a round in flight wrote meanwhile.
        self.cluster.wake.notify_one();
        let api_key = d.rendered.config().api_key.clone();
        drop(d);
        Ok(hero_livekit_proto::ClusterLeave {
            cluster: m.name,
            node_id: m.node_id,
            heartbeat_removed,
            api_key,
        })
    }

    /// `livekitservice.cluster_token`.
    ///
    /// # Errors
    /// `not_in_cluster`.
    pub fn cluster_token(&self) -> Result<hero_livekit_proto::ClusterTokenResult, ServiceError> {
        let m = self
            .membership()
            .ok_or_else(|| ServiceError::new(ErrorCode::NotInCluster, "this node has not joined a cluster"))?;
        Ok(hero_livekit_proto::ClusterTokenResult {
            cluster: m.name,
            cluster_token: m.token.expose().to_string(),
        })
    }

    /// `livekitservice.cluster_status`: the last sync's view, never waiting
    /// on the network.
    pub fn cluster_status(&self) -> ClusterHealth {
        self.view.borrow().cluster.to_health(unix_ms())
    }

    fn set_cluster_health(&self, h: ClusterHealth) {
        self.set_cluster(h, None);
    }

    /// Publishes the sync's verdict; `seen` (each node's heartbeat time)
    /// replaces the nodes when Redis answered, else they are kept as last seen.
    fn set_cluster(&self, mut h: ClusterHealth, seen: Option<Vec<u64>>) {
        self.update_view(|v| {
            let seen_at_ms = match seen {
                Some(s) => s,
                None => {
                    h.nodes = v.cluster.health.nodes.clone();
                    v.cluster.seen_at_ms.clone()
                }
            };
            let next = ClusterView { health: h, seen_at_ms };
            if v.cluster == next {
                return false;
            }
            let h = &next.health;
            if v.cluster.health.state != h.state {
                match &h.error {
                    Some(error) => tracing::warn!(state = %h.state, %error, "cluster"),
                    None => tracing::info!(state = %h.state, generation = h.generation, "cluster"),
                }
            }
            v.cluster = next;
            true
        });
    }

    /// The background sync: one round at once, then after every
    /// announcement, every poll period and every wake.
    pub(super) fn start_cluster_sync(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let wake = Arc::clone(&self.cluster.wake);
        let period = self.cluster.poll;
        self.spawn_task(async move {
            let mut link: Option<Link> = None;
            // After a round that lost Redis, the next comes sooner than the
            // poll: without a link there is no subscription, and a member
            // that waited a whole period would miss every announcement in
            // it (a join listed only at the poll after next).
            let mut retry = RECONNECT_FIRST;
            loop {
                let reached = {
                    let Some(svc) = weak.upgrade() else { return };
                    svc.sync_round(&mut link).await
                };
                let pause = if reached {
                    retry = RECONNECT_FIRST;
                    period
                } else {
                    let p = retry.min(period);
                    retry = (retry * 2).min(period);
                    p
                };
                let sleep = tokio::time::sleep(pause);
                let mut lost = false;
                match link.as_mut().and_then(|l| l.pubsub.as_mut()) {
                    Some(messages) => {
                        tokio::select! {
                            () = sleep => {}
                            () = wake.notified() => {}
                            m = messages.next() => {
                                lost = m.is_none();
                                // Coalesce: the messages already here (a
                                // burst of joins, or ones that came during
                                // the last round) make one round together,
                                // so at most one round runs and one waits.
                                while !lost {
                                    match messages.next().now_or_never() {
                                        Some(Some(_)) => {}
                                        Some(None) => lost = true,
                                        None => break,
                                    }
                                }
                            }
                        }
                    }
                    None => {
                        tokio::select! {
                            () = sleep => {}
                            () = wake.notified() => {}
                        }
                    }
                }
                if lost {
                    // The subscription's connection closed: reconnect next round.
                    link = None;
                }
            }
        });
    }

    /// One round; `false` when a configured Redis could not be reached or
    /// failed a call (the caller retries sooner than the poll).
    async fn sync_round(&self, link: &mut Option<Link>) -> bool {
        let Some(m) = self.membership() else {
            // Left the cluster: the last heartbeat this link wrote goes now,
            // not at its expiry (a round that raced the leave may have
            // written it after the leave removed it).
            if let Some(l) = link.as_mut() {
                if let Some(id) = l.beat.take() {
                    let keys = Keys::new(&l.cluster);
                    if let Err(e) = remote::remove_beat(&mut l.conn, &l.target, &keys, &id).await {
                        tracing::debug!(error = %e, "removing this node's heartbeat after leaving");
                    }
                }
            }
            *link = None;
            // Outside a cluster the view is left alone unless it still
            // shows one: a single node's health never changes for this.
            if self.view.borrow().cluster.health.name.is_some() {
                self.set_cluster_health(ClusterHealth::default());
            }
            return true;
        };
        let health = |state, error: Option<String>, m: &Membership| ClusterHealth {
            name: Some(m.name.clone()),
            state,
            generation: m.generation.unwrap_or(0),
            node_id: Some(m.node_id.clone()),
            nodes: Vec::new(),
            error,
        };
        let Some(target) = target_of(self.view.borrow().rendered.config()) else {
            *link = None;
            self.set_cluster_health(health(
                ClusterState::Unreachable,
                Some("no Redis is configured".into()),
                &m,
            ));
            // Nothing to reach: a configure that adds a Redis wakes the sync.
            return true;
        };
        let keys = Keys::new(&m.name);
        if link.as_ref().is_none_or(|l| l.target != target || l.cluster != m.name) {
            match remote::connect(&target).await {
                Ok(conn) => {
                    *link = Some(Link {
                        target: target.clone(),
                        cluster: m.name.clone(),
                        conn,
                        pubsub: None,
                        beat: None,
                    })
                }
                Err(e) => {
                    *link = None;
                    self.set_cluster_health(health(ClusterState::Unreachable, Some(e.to_string()), &m));
                    return false;
                }
            }
        }
        let Some(l) = link.as_mut() else { return false };
        if l.pubsub.is_none() {
            match remote::subscriber(&target, &keys).await {
                Ok(p) => l.pubsub = Some(p),
                // The poll still brings changes meanwhile; the round
                // after a short pause subscribes again.
                Err(e) => tracing::debug!(error = %e, "cluster subscription failed; retrying"),
            }
        }
        match self.sync_with(&mut l.conn, &target, &keys).await {
            Ok((state, error, beats)) => {
                let m = self.membership().unwrap_or(m);
                l.beat = Some(m.node_id.clone());
                let seen = beats.iter().map(|b| b.at_ms).collect();
                let mut h = health(state, error, &m);
                h.nodes = beats
                    .into_iter()
                    .map(|b| ClusterNode {
                        id: b.id,
                        generation: b.generation,
                        livekit_url: b.livekit_url,
                        last_seen_ms: 0,
                    })
                    .collect();
                self.set_cluster(h, Some(seen));
                l.pubsub.is_some()
            }
            Err(e) => {
                *link = None;
                let m = self.membership().unwrap_or(m);
                self.set_cluster_health(health(ClusterState::Unreachable, Some(e.to_string()), &m));
                false
            }
        }
    }

    /// Heartbeats and lists the members (sealed beats only, within the
    /// limits), then reads the record and decides, acting under the ops
    /// lock when something is to be done. The listing comes first so that
    /// members are listed whatever the decision waits on, and so that the
    /// decision knows the generations live members run (a record older
    /// than one of them is a replay, never adopted).
    async fn sync_with<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        t: &Target,
        keys: &Keys,
    ) -> Result<(ClusterState, Option<String>, Vec<Beat>), RemoteError> {
        let Some(m) = self.membership() else {
            return Ok((ClusterState::NotConfigured, None, Vec::new()));
        };
        let own = Beat {
            id: m.node_id.clone(),
            generation: m.generation.unwrap_or(0),
            livekit_url: self.view.borrow().rendered.config().livekit_url(),
            at_ms: unix_ms(),
        };
        let sealed = beat::seal(&m.name, &m.token, &own).map_err(|e| RemoteError {
            address: t.address.clone(),
            why: format!("sealing the heartbeat: {e}"),
        })?;
        let ttl = (self.cluster.poll * HEARTBEAT_PERIODS).max(MIN_HEARTBEAT_TTL);
        let listing = remote::heartbeat(conn, t, keys, &m.node_id, &sealed, ttl).await?;
        if listing.first {
            // A node new to the list: tell the members so that each lists it
            // now (their sync on any message), not at its next poll. The
            // message is the generation, as for a new credential: no secret,
            // and a member that already runs it only re-reads the list.
            remote::announce(conn, t, keys, own.generation).await?;
        }
        let (mut beats, note) = open_listing(&m, listing);
        if !beats.iter().any(|b| b.id == own.id) {
            // Sampled out of an oversized set: this node still lists itself.
            beats.push(own);
            beats.sort_by(|a, b| a.id.cmp(&b.id));
        }
        let floor = live_floor(&beats, &m.node_id);
        let local_cred = self.view.borrow().rendered.config().credential();
        let raw = remote::read(conn, t, keys).await?;
        let decision = decide::sync(&local_cred, m.generation, &remote_of(&m.name, &m.token, raw), floor);
        let (state, error) = match decision {
            Sync::Keep { generation } if m.generation == Some(generation) => (ClusterState::Joined, None),
            Sync::Conflict(why) => (ClusterState::Conflict, Some(why)),
            _ => self.sync_locked(conn, t, keys, floor).await?,
        };
        Ok((state, error.or(note), beats))
    }

    /// The decision taken again under the ops lock (a mutation may have run
    /// since the first look), and applied.
    async fn sync_locked<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        t: &Target,
        keys: &Keys,
        floor: u64,
    ) -> Result<(ClusterState, Option<String>), RemoteError> {
        let mut d = self.desired.lock().await;
        let Some(m) = self.membership() else {
            return Ok((ClusterState::NotConfigured, None));
        };
        let local_cred = d.rendered.config().credential();
        let raw = remote::read(conn, t, keys).await?;
        let decision = decide::sync(&local_cred, m.generation, &remote_of(&m.name, &m.token, raw), floor);
        let note = |e: ServiceError| (ClusterState::Conflict, Some(e.to_string()));
        let set_generation = |generation| Membership {
            generation: Some(generation),
            ..m.clone()
        };
        Ok(match decision {
            Sync::Keep { generation } => match self.set_membership(&mut d, set_generation(generation)).await {
                Ok(()) => (ClusterState::Joined, None),
                Err(e) => note(e),
            },
            Sync::Conflict(why) => (ClusterState::Conflict, Some(why)),
            Sync::Adopt { generation, credential } => {
                let mut next = d.rendered.config().clone();
                next.set_credential(credential);
                let step = Step {
                    trigger: "cluster",
                    target: Wanted::Config(Box::new(next.clone())),
                    intent: Intent::default(),
                    timeout: DEFAULT_READY_TIMEOUT,
                };
                match self.reconcile(&mut d, step).await {
                    Ok(mut r) if *d.rendered.config() == next => {
                        if let Some(e) = r.failure(false) {
                            tracing::warn!(error = %e, "a child did not come up on the cluster's credential; the reconcile retries");
                        }
                        self.events.publish(Event::ClusterCredentialChanged {
                            cluster: m.name.clone(),
                            generation,
                            api_key: next.api_key.clone(),
                        });
                        tracing::info!(cluster = %m.name, generation, "adopted the cluster's credential");
                        match self.set_membership(&mut d, set_generation(generation)).await {
                            Ok(()) => (ClusterState::Joined, None),
                            Err(e) => note(e),
                        }
                    }
                    Ok(_) => (
                        ClusterState::Conflict,
                        Some("the cluster's credential could not be written here yet; retried".into()),
                    ),
                    Err(e) => note(e),
                }
            }
            Sync::Republish { generation } => {
                let json = match seal(&m, generation, &local_cred) {
                    Ok(j) => j,
                    Err(e) => return Ok(note(e)),
                };
                if remote::create(conn, t, keys, &json, generation).await? {
                    tracing::info!(cluster = %m.name, generation, "redis held no record: republished this node's credential");
                    self.events.publish(Event::ClusterRepublished {
                        cluster: m.name.clone(),
                        generation,
                    });
                }
                // Won or lost, the next round reads what is there now.
                self.cluster.wake.notify_one();
                match self.set_membership(&mut d, set_generation(generation)).await {
                    Ok(()) => (ClusterState::Joined, None),
                    Err(e) => note(e),
                }
            }
            Sync::Restore { over, generation } => {
                let json = match seal(&m, generation, &local_cred) {
                    Ok(j) => j,
                    Err(e) => return Ok(note(e)),
                };
                if remote::compare_and_set(conn, t, keys, over, &json, generation).await? == Cas::Written {
                    tracing::warn!(cluster = %m.name, over, generation, "redis held an older generation: restored the current one");
                }
                self.cluster.wake.notify_one();
                (ClusterState::Joined, None)
            }
        })
    }
}
