//! The cluster's Redis protocol: the keys (one hash slot per cluster), the
//! first writer's `SET NX`, the generation compare-and-set (a Lua script,
//! atomic on the server), the announcement on pub/sub (a generation, never
//! a secret) and the heartbeats with a TTL; a node's first heartbeat (its
//! entry absent: new, or back after it expired) is announced too, so that
//! members list it at once rather than at their next poll.
//!
//! Written against [`ConnectionLike`], so that whichever way the daemon
//! connects to Redis (plain, TLS, sentinel, cluster) serves. Connections
//! are opened in [`connect`] and [`subscriber`] only, each bounded in time.

use std::time::Duration;

use redis::aio::ConnectionLike;

use crate::redis::{Conn, Messages, RedisFailure, RedisTarget};
use serde::{Deserialize, Serialize};

/// Our keys: `hero_livekit:{NAME}:...`. The braces are Redis Cluster's hash
/// tag, so every key of one cluster lives in one slot (a script may touch
/// them together); LiveKit's own keys have no prefix and never collide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(cluster: &str) -> Keys {
        Keys {
            prefix: format!("hero_livekit:{{{cluster}}}:"),
        }
    }
    /// The sealed credential record.
    pub fn record(&self) -> String {
        format!("{}credential", self.prefix)
    }
    /// The set of node ids that have heartbeated.
    pub fn members(&self) -> String {
        format!("{}nodes", self.prefix)
    }
    /// One node's heartbeat (expires with its TTL).
    pub fn node(&self, id: &str) -> String {
        format!("{}node:{id}", self.prefix)
    }
    /// Where a new generation is announced.
    pub fn channel(&self) -> String {
        format!("{}changed", self.prefix)
    }
}

/// A Redis call that failed or did not answer in time; the message names
/// the address and never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("redis at {address}: {why}")]
pub struct RemoteError {
    pub address: String,
    pub why: String,
}

/// Runs one Redis call within `timeout`.
async fn bounded<T>(
    address: &str,
    timeout: Duration,
    what: &str,
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, RemoteError> {
    match tokio::time::timeout(timeout, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(RemoteError {
            address: address.to_string(),
            why: format!("{what}: {e}"),
        }),
        Err(_) => Err(RemoteError {
            address: address.to_string(),
            why: format!("{what} did not answer within {timeout:?}"),
        }),
    }
}

/// The configured Redis, as the daemon reaches it (plain, AUTH, TLS,
/// Sentinel or Cluster: whatever `crate::redis` makes of the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub redis: RedisTarget,
    /// How messages name it (`host:port`, `sentinel M@...`, `cluster ...`).
    pub address: String,
    /// Bound on connecting and on every call.
    pub timeout: Duration,
}

impl Target {
    pub fn new(redis: RedisTarget, timeout: Duration) -> Target {
        Target {
            address: redis.describe(),
            redis,
            timeout,
        }
    }

    fn failed(&self, f: &RedisFailure) -> RemoteError {
        // The shared client's sentences already name the server.
        let why = f.message.strip_prefix("redis at ").unwrap_or(&f.message);
        let why = why.strip_prefix(self.address.as_str()).unwrap_or(why);
        RemoteError {
            address: self.address.clone(),
            why: why.trim_start_matches([':', ' ']).to_string(),
        }
    }
}

/// A connection for commands, every call on it bounded by the target's
/// timeout.
///
/// # Errors
/// Redis does not answer within the timeout, or refuses.
pub async fn connect(target: &Target) -> Result<Conn, RemoteError> {
    crate::redis::connect(&target.redis, target.timeout)
        .await
        .map_err(|f| target.failed(&f))
}

/// A connection subscribed to the cluster's announcements.
///
/// # Errors
/// Redis does not answer within the timeout, or refuses.
pub async fn subscriber(target: &Target, keys: &Keys) -> Result<Messages, RemoteError> {
    crate::redis::subscribe(&target.redis, &keys.channel(), target.timeout)
        .await
        .map_err(|f| target.failed(&f))
}

/// The record as stored (JSON), if any.
///
/// # Errors
/// Redis does not answer within the timeout, or fails the call.
pub async fn read<C: ConnectionLike + Send>(c: &mut C, t: &Target, keys: &Keys) -> Result<Option<String>, RemoteError> {
    let cmd = redis::cmd("GET").arg(keys.record()).clone();
    bounded(&t.address, t.timeout, "GET", cmd.query_async::<Option<String>>(c)).await
}

/// Writes the record only if there is none (the first writer wins) and
/// announces it. `true` when this call wrote it.
///
/// # Errors
/// Redis does not answer within the timeout, or fails the call.
pub async fn create<C: ConnectionLike + Send>(
    c: &mut C,
    t: &Target,
    keys: &Keys,
    json: &str,
    generation: u64,
) -> Result<bool, RemoteError> {
    let cmd = redis::cmd("SET").arg(keys.record()).arg(json).arg("NX").clone();
    let written: Option<String> = bounded(&t.address, t.timeout, "SET NX", cmd.query_async(c)).await?;
    if written.is_some() {
        announce(c, t, keys, generation).await?;
    }
    Ok(written.is_some())
}

/// What a compare-and-set found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cas {
    Written,
    /// The record is at another generation (none: unreadable), unchanged.
    Conflict(Option<u64>),
}

/// Replaces the record with `json` only while it is at generation
/// `expected` (or absent: a Redis restarted empty), and announces
/// `generation`, all in one script so no other writer comes between.
const CAS_SCRIPT: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, rec = pcall(cjson.decode, cur)
  local g = -1
  if ok and type(rec) == 'table' and type(rec.generation) == 'number' then g = rec.generation end
  if g ~= tonumber(ARGV[1]) then return g end
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return -2
";

/// The generation compare-and-set.
///
/// # Errors
/// Redis does not answer within the timeout, or fails the call.
pub async fn compare_and_set<C: ConnectionLike + Send>(
    c: &mut C,
    t: &Target,
    keys: &Keys,
    expected: u64,
    json: &str,
    generation: u64,
) -> Result<Cas, RemoteError> {
    let script = redis::Script::new(CAS_SCRIPT);
    let mut inv = script.key(keys.record());
    inv.arg(expected).arg(json).arg(keys.channel()).arg(generation);
    let found: i64 = bounded(&t.address, t.timeout, "the compare-and-set", inv.invoke_async(c)).await?;
    Ok(match found {
        -2 => Cas::Written,
        g => Cas::Conflict(u64::try_from(g).ok()),
    })
}

/// Tells every member that `generation` is out.
///
/// # Errors
/// Redis does not answer within the timeout, or fails the call.
pub async fn announce<C: ConnectionLike + Send>(
    c: &mut C,
    t: &Target,
    keys: &Keys,
    generation: u64,
) -> Result<(), RemoteError> {
    let cmd = redis::cmd("PUBLISH").arg(keys.channel()).arg(generation).clone();
    bounded(&t.address, t.timeout, "PUBLISH", cmd.query_async::<i64>(c)).await?;
    Ok(())
}

/// Removes node `id`'s heartbeat and its entry in the member set (a node
/// leaving the cluster). Idempotent.
///
/// # Errors
/// Redis does not answer within the timeout, or fails the call.
pub async fn remove_beat<C: ConnectionLike + Send>(
    c: &mut C,
    t: &Target,
    keys: &Keys,
    id: &str,
) -> Result<(), RemoteError> {
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("DEL")
        .arg(keys.node(id))
        .ignore()
        .cmd("SREM")
        .arg(keys.members())
        .arg(id)
        .ignore();
    bounded(
        &t.address,
        t.timeout,
        "removing the heartbeat",
        pipe.query_async::<()>(c),
    )
    .await?;
    Ok(())
}

/// One node's heartbeat: who it is, the generation it runs, where it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beat {
    pub id: String,
    pub generation: u64,
    pub livekit_url: String,
    pub at_ms: u64,
}

/// What a heartbeat found: the nodes alive, and whether this node's entry
/// was absent before the beat (a join, or a return after it expired), which
/// the caller announces so members list it without waiting for their poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beats {
    pub alive: Vec<Beat>,
    pub first: bool,
}

/// Writes this node's heartbeat with a TTL and lists the nodes whose
/// heartbeat is alive (ids whose entry expired are dropped from the set).
///
/// # Errors
/// Redis does not answer within the timeout, or fails a call.
pub async fn heartbeat<C: ConnectionLike + Send>(
    c: &mut C,
    t: &Target,
    keys: &Keys,
    beat: &Beat,
    ttl: Duration,
) -> Result<Beats, RemoteError> {
    // Strings and integers only: serializing cannot fail.
    let json = serde_json::to_string(beat).unwrap_or_default();
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
    let mut pipe = redis::pipe();
    // EXISTS in the same transaction as the SET: exactly one beat of a
    // node's run of beats finds its entry absent.
    pipe.atomic()
        .cmd("EXISTS")
        .arg(keys.node(&beat.id))
        .cmd("SET")
        .arg(keys.node(&beat.id))
        .arg(&json)
        .arg("PX")
        .arg(ttl_ms)
        .ignore()
        .cmd("SADD")
        .arg(keys.members())
        .arg(&beat.id)
        .ignore()
        .cmd("SMEMBERS")
        .arg(keys.members());
    let (existed, ids): (i64, Vec<String>) =
        bounded(&t.address, t.timeout, "the heartbeat", pipe.query_async(c)).await?;
    let first = existed == 0;
    if ids.is_empty() {
        return Ok(Beats {
            alive: Vec::new(),
            first,
        });
    }
    let node_keys: Vec<String> = ids.iter().map(|id| keys.node(id)).collect();
    let cmd = redis::cmd("MGET").arg(&node_keys).clone();
    let beats: Vec<Option<String>> = bounded(&t.address, t.timeout, "MGET", cmd.query_async(c)).await?;
    let mut alive = Vec::new();
    let mut gone = Vec::new();
    for (id, b) in ids.iter().zip(beats) {
        match b.and_then(|b| serde_json::from_str::<Beat>(&b).ok()) {
            Some(b) => alive.push(b),
            None => gone.push(id.clone()),
        }
    }
    if !gone.is_empty() {
        let cmd = redis::cmd("SREM").arg(keys.members()).arg(&gone).clone();
        bounded(&t.address, t.timeout, "SREM", cmd.query_async::<i64>(c)).await?;
    }
    alive.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Beats { alive, first })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_a_cluster_shares_its_hash_tag_and_our_prefix() {
        let k = Keys::new("prod-1");
        for key in [k.record(), k.members(), k.node("abc"), k.channel()] {
            assert!(key.starts_with("hero_livekit:{prod-1}:"), "{key}");
        }
        assert_ne!(Keys::new("a").record(), Keys::new("b").record());
    }
}
