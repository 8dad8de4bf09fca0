//! A node's heartbeat as Redis holds it: sealed with a key derived from the
//! join secret, like the record, so that only a holder of the secret can
//! add a member, and checked before use like anything read from Redis.
//!
//! Redis is not trusted (anyone who can write it could otherwise add
//! members every node lists, with any text in them): a heartbeat is listed
//! only when it opens with this node's join secret, under the id the member
//! set names (the id is associated data, so a beat cannot be moved to
//! another id), carries a valid id and URL, and is not from the future.
//! What it says (the generation the member runs) is then trusted as far as
//! the secret is: it is what tells a joining node that a record older than
//! a live member's generation is a replay.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde::{Deserialize, Serialize};

use crate::config::Secret;

/// The format tag of heartbeats this version writes and reads.
pub const FORMAT: &str = "hero_livekit.beat.v1";
/// The most bytes a stored heartbeat may have; larger ones are not read.
pub const MAX_BYTES: u64 = 2048;
/// A heartbeat stamped further ahead of this node's clock is ignored.
pub const MAX_FUTURE_MS: u64 = 30_000;
/// The longest `livekit_url` a heartbeat may carry.
const MAX_URL: usize = 256;
const NONCE_LEN: usize = 12;

/// One node's heartbeat: who it is, the generation it runs, where it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beat {
    pub id: String,
    pub generation: u64,
    pub livekit_url: String,
    pub at_ms: u64,
}

/// What Redis holds under the node's key.
#[derive(Serialize, Deserialize)]
struct Stored {
    format: String,
    nonce: String,
    sealed: String,
}

/// What the ciphertext holds.
#[derive(Serialize, Deserialize)]
struct Plain {
    generation: u64,
    livekit_url: String,
    at_ms: u64,
}

/// Why a heartbeat is not listed. Never carries what Redis held.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BeatError {
    #[error("not a valid node id")]
    BadId,
    #[error("{0} bytes, over the limit of {MAX_BYTES}")]
    TooLarge(u64),
    #[error("not a {FORMAT} heartbeat")]
    Unreadable,
    #[error("not sealed with this cluster's join secret")]
    Rejected,
    #[error("its livekit_url is not a ws:// or wss:// URL of at most {MAX_URL} printable characters")]
    BadUrl,
    #[error("stamped {0} ms in the future")]
    Future(u64),
    #[error("cannot seal: {0}")]
    Seal(String),
}

/// Node ids are 16 lowercase hex digits (what [`new_id`] makes); anything
/// else in the member set is not one of ours.
pub fn valid_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A fresh node id.
pub fn new_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn valid_url(url: &str) -> bool {
    let rest = url.strip_prefix("ws://").or_else(|| url.strip_prefix("wss://"));
    url.len() <= MAX_URL && rest.is_some_and(|r| !r.is_empty()) && url.bytes().all(|b| b.is_ascii_graphic())
}

fn derive_key(cluster: &str, join_secret: &Secret) -> Result<Key, BeatError> {
    // Another label than the record's: the two keys are independent.
    super::record::cluster_key(cluster, join_secret, b"hero_livekit.cluster.v1 heartbeat key").map_err(BeatError::Seal)
}

fn associated_data(cluster: &str, id: &str) -> Vec<u8> {
    format!("{FORMAT}\0{cluster}\0{id}").into_bytes()
}

/// Seals `beat` for `cluster`: the JSON to store under the node's key.
///
/// # Errors
/// The OS refused random bytes for the nonce.
pub fn seal(cluster: &str, join_secret: &Secret, beat: &Beat) -> Result<String, BeatError> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut nonce)
        .map_err(|e| BeatError::Seal(format!("no random bytes for a nonce: {e}")))?;
    let plain = Plain {
        generation: beat.generation,
        livekit_url: beat.livekit_url.clone(),
        at_ms: beat.at_ms,
    };
    let msg = serde_json::to_vec(&plain).map_err(|e| BeatError::Seal(e.to_string()))?;
    let cipher = ChaCha20Poly1305::new(&derive_key(cluster, join_secret)?);
    let aad = associated_data(cluster, &beat.id);
    let sealed = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: &msg, aad: &aad })
        .map_err(|e| BeatError::Seal(e.to_string()))?;
    let stored = Stored {
        format: FORMAT.to_string(),
        nonce: hex::encode(nonce),
        sealed: hex::encode(sealed),
    };
    serde_json::to_string(&stored).map_err(|e| BeatError::Seal(e.to_string()))
}

/// Opens what Redis holds under member `id`'s key, checking everything.
///
/// # Errors
/// The reason it is not listed; never what Redis held.
pub fn open(cluster: &str, join_secret: &Secret, id: &str, raw: &str, now_ms: u64) -> Result<Beat, BeatError> {
    if !valid_id(id) {
        return Err(BeatError::BadId);
    }
    let len = raw.len() as u64;
    if len > MAX_BYTES {
        return Err(BeatError::TooLarge(len));
    }
    let stored: Stored = serde_json::from_str(raw).map_err(|_| BeatError::Unreadable)?;
    if stored.format != FORMAT {
        return Err(BeatError::Unreadable);
    }
    let nonce = hex::decode(&stored.nonce).map_err(|_| BeatError::Rejected)?;
    let sealed = hex::decode(&stored.sealed).map_err(|_| BeatError::Rejected)?;
    if nonce.len() != NONCE_LEN {
        return Err(BeatError::Rejected);
    }
    let cipher = ChaCha20Poly1305::new(&derive_key(cluster, join_secret)?);
    let aad = associated_data(cluster, id);
    let msg = cipher
        .decrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &sealed,
                aad: &aad,
            },
        )
        .map_err(|_| BeatError::Rejected)?;
    let plain: Plain = serde_json::from_slice(&msg).map_err(|_| BeatError::Unreadable)?;
    // Sealed by a holder of the secret, still checked: it reaches health,
    // the CLI and logs.
    if !valid_url(&plain.livekit_url) {
        return Err(BeatError::BadUrl);
    }
    if plain.at_ms > now_ms.saturating_add(MAX_FUTURE_MS) {
        return Err(BeatError::Future(plain.at_ms - now_ms));
    }
    Ok(Beat {
        id: id.to_string(),
        generation: plain.generation,
        livekit_url: plain.livekit_url,
        at_ms: plain.at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new("join-secret-of-the-test-cluster-0123456789")
    }

    fn beat() -> Beat {
        Beat {
            id: "0123456789abcdef".into(),
            generation: 3,
            livekit_url: "ws://10.0.0.1:7880".into(),
            at_ms: 1_000_000,
        }
    }

    #[test]
    fn a_sealed_beat_opens_under_its_id_with_the_secret_only() {
        let b = beat();
        let raw = seal("c1", &secret(), &b).expect("seal");
        assert!(!raw.contains("10.0.0.1"), "the URL is sealed: {raw}");
        assert_eq!(open("c1", &secret(), &b.id, &raw, b.at_ms), Ok(b.clone()));
        assert_eq!(
            open(
                "c1",
                &Secret::new("another-join-secret-0123456789abcdef"),
                &b.id,
                &raw,
                b.at_ms
            ),
            Err(BeatError::Rejected)
        );
        assert_eq!(open("c2", &secret(), &b.id, &raw, b.at_ms), Err(BeatError::Rejected));
        assert_eq!(
            open("c1", &secret(), "fedcba9876543210", &raw, b.at_ms),
            Err(BeatError::Rejected),
            "a beat moved to another id does not open"
        );
    }

    #[test]
    fn forged_oversized_future_or_malformed_beats_are_refused() {
        let b = beat();
        let raw = seal("c1", &secret(), &b).expect("seal");
        // The old plain JSON, as anyone could write it.
        let plain = r#"{"id":"0123456789abcdef","generation":999,"livekit_url":"ws://x","at_ms":1}"#;
        assert_eq!(open("c1", &secret(), &b.id, plain, b.at_ms), Err(BeatError::Unreadable));
        assert_eq!(open("c1", &secret(), "\x1b[2J", &raw, b.at_ms), Err(BeatError::BadId));
        assert_eq!(open("c1", &secret(), "0123", &raw, b.at_ms), Err(BeatError::BadId));
        let big = "x".repeat(MAX_BYTES as usize + 1);
        assert_eq!(
            open("c1", &secret(), &b.id, &big, b.at_ms),
            Err(BeatError::TooLarge(MAX_BYTES + 1))
        );
        let early = b.at_ms - MAX_FUTURE_MS - 1;
        assert_eq!(
            open("c1", &secret(), &b.id, &raw, early),
            Err(BeatError::Future(MAX_FUTURE_MS + 1))
        );
        for url in [
            "\x1b]0;x\x07ws://a",
            "http://a:1",
            "ws://",
            "ws://a b",
            &format!("ws://{}", "a".repeat(300)),
        ] {
            let bad = Beat {
                livekit_url: url.to_string(),
                ..b.clone()
            };
            let raw = seal("c1", &secret(), &bad).expect("seal");
            assert_eq!(
                open("c1", &secret(), &b.id, &raw, b.at_ms),
                Err(BeatError::BadUrl),
                "{url:?}"
            );
        }
    }

    #[test]
    fn new_ids_are_valid_ids() {
        for _ in 0..100 {
            assert!(valid_id(&new_id()));
        }
    }
}
