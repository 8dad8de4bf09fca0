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
        // Redis's error text comes from whatever answers on its address:
        // printable ASCII only, shortened, before it reaches health, events,
        // the log or a terminal.
        Ok(Err(e)) => Err(RemoteError {
            address: address.to_string(),
            why: format!("{what}: {}", crate::redis::shown(&e.to_string())),
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

/// The most bytes a stored record may have. A record holds a few keys
/// (about 400 bytes each, sealed and hex-encoded); a larger value is not
/// one of ours and is never read whole.
pub const MAX_RECORD_BYTES: u64 = 8192;

/// What the record key holds, read within [`MAX_RECORD_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    Absent,
    /// Larger than the limit: its size, nothing of its content.
    TooLarge(u64),
    Value(String),
}

/// The record as stored (JSON), if any, never reading more than
/// [`MAX_RECORD_BYTES`] of it.
///
/// # Errors
/// Redis does not answer within the timeout, or fails the call (a key of
/// another type than a string included).
pub async fn read<C: ConnectionLike + Send>(c: &mut C, t: &Target, keys: &Keys) -> Result<Stored, RemoteError> {
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("EXISTS")
        .arg(keys.record())
        .cmd("STRLEN")
        .arg(keys.record())
        .cmd("GETRANGE")
        .arg(keys.record())
        .arg(0)
        .arg(MAX_RECORD_BYTES - 1);
    let (exists, len, head): (i64, u64, Vec<u8>) =
        bounded(&t.address, t.timeout, "reading the record", pipe.query_async(c)).await?;
    Ok(if exists == 0 {
        Stored::Absent
    } else if len > MAX_RECORD_BYTES {
        Stored::TooLarge(len)
    } else {
        // Not UTF-8 is not a record; the parser says so.
        Stored::Value(String::from_utf8_lossy(&head).into_owned())
    })
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

/// The most members a listing considers: a set grown larger (forged
/// entries) costs a sample of this size, never the whole set.
pub const MAX_MEMBERS: u64 = 256;

/// One member entry's heartbeat, read within the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Value(String),
    /// Larger than [`crate::cluster::beat::MAX_BYTES`]: its size only.
    TooLarge(u64),
}

/// The members as Redis lists them: the entries read (each still to be
/// opened and checked by the caller), how many the set holds, and whether
/// this node's own entry was absent before its beat (a join, or a return
/// after it expired), which the caller announces so members list it
/// without waiting for their poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub entries: Vec<(String, Entry)>,
    pub total: u64,
    pub first: bool,
}

/// Writes this node's sealed heartbeat with a TTL, then lists the members
/// ([`members`]).
///
/// # Errors
/// Redis does not answer within the timeout, or fails a call.
pub async fn heartbeat<C: ConnectionLike + Send>(
    c: &mut C,
    t: &Target,
    keys: &Keys,
    id: &str,
    sealed: &str,
    ttl: Duration,
) -> Result<Listing, RemoteError> {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
    let mut pipe = redis::pipe();
    // EXISTS in the same transaction as the SET: exactly one beat of a
    // node's run of beats finds its entry absent.
    pipe.atomic()
        .cmd("EXISTS")
        .arg(keys.node(id))
        .cmd("SET")
        .arg(keys.node(id))
        .arg(sealed)
        .arg("PX")
        .arg(ttl_ms)
        .ignore()
        .cmd("SADD")
        .arg(keys.members())
        .arg(id)
        .ignore();
    let (existed,): (i64,) = bounded(&t.address, t.timeout, "the heartbeat", pipe.query_async(c)).await?;
    let mut listing = members(c, t, keys).await?;
    listing.first = existed == 0;
    Ok(listing)
}

/// Lists the members within bounds: at most [`MAX_MEMBERS`] ids (a random
/// sample when the set holds more), only ids of our format, and of each
/// heartbeat only its size when it is over the limit. Ids whose heartbeat
/// expired are dropped from the set.
///
/// # Errors
/// Redis does not answer within the timeout, or fails a call.
pub async fn members<C: ConnectionLike + Send>(c: &mut C, t: &Target, keys: &Keys) -> Result<Listing, RemoteError> {
    let cmd = redis::cmd("SCARD").arg(keys.members()).clone();
    let total: u64 = bounded(&t.address, t.timeout, "SCARD", cmd.query_async(c)).await?;
    if total == 0 {
        return Ok(Listing {
            entries: Vec::new(),
            total,
            first: false,
        });
    }
    let cmd = if total <= MAX_MEMBERS {
        redis::cmd("SMEMBERS").arg(keys.members()).clone()
    } else {
        redis::cmd("SRANDMEMBER").arg(keys.members()).arg(MAX_MEMBERS).clone()
    };
    let ids: Vec<String> = bounded(&t.address, t.timeout, "listing the members", cmd.query_async(c)).await?;
    let mut ids: Vec<String> = ids
        .into_iter()
        .filter(|id| crate::cluster::beat::valid_id(id))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids.truncate(usize::try_from(MAX_MEMBERS).unwrap_or(usize::MAX));
    if ids.is_empty() {
        return Ok(Listing {
            entries: Vec::new(),
            total,
            first: false,
        });
    }
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.cmd("STRLEN").arg(keys.node(id));
    }
    let lens: Vec<u64> = bounded(&t.address, t.timeout, "sizing the heartbeats", pipe.query_async(c)).await?;
    let limit = crate::cluster::beat::MAX_BYTES;
    let readable: Vec<&String> = ids
        .iter()
        .zip(&lens)
        .filter(|(_, l)| (1..=limit).contains(*l))
        .map(|(id, _)| id)
        .collect();
    let mut values: Vec<Option<String>> = Vec::new();
    if !readable.is_empty() {
        let node_keys: Vec<String> = readable.iter().map(|id| keys.node(id)).collect();
        let cmd = redis::cmd("MGET").arg(&node_keys).clone();
        values = bounded(&t.address, t.timeout, "MGET", cmd.query_async(c)).await?;
    }
    let mut values = readable
        .into_iter()
        .zip(values)
        .collect::<std::collections::HashMap<_, _>>();
    let mut entries = Vec::new();
    let mut gone = Vec::new();
    for (id, len) in ids.iter().zip(&lens) {
        if *len > limit {
            entries.push((id.clone(), Entry::TooLarge(*len)));
            continue;
        }
        // Expired between the STRLEN and the MGET counts as gone too.
        match values.remove(id).flatten() {
            Some(v) => entries.push((id.clone(), Entry::Value(v))),
            None => gone.push(id.clone()),
        }
    }
    if !gone.is_empty() {
        let cmd = redis::cmd("SREM").arg(keys.members()).arg(&gone).clone();
        bounded(&t.address, t.timeout, "SREM", cmd.query_async::<i64>(c)).await?;
    }
    Ok(Listing {
        entries,
        total,
        first: false,
    })
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
