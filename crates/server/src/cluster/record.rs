//! The cluster's credential record as Redis holds it: versioned, sealed
//! (encrypted and authenticated) with a key derived from the join secret.
//!
//! Redis, its RDB and AOF files and anyone who can read them see only the
//! generation, the writer's node id and ciphertext. The key is HKDF-SHA256
//! of the join secret, salted with the cluster's name; the AEAD is
//! ChaCha20-Poly1305 with a fresh random nonce for every write, and the
//! associated data binds the format, the cluster's name and the generation,
//! so a record cannot be replayed under another name or generation, and a
//! record sealed with another secret (someone else's) is never adopted.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::config::validate::validate_credential;
use crate::config::{Credential, Secret};

/// The format tag of records this version writes and reads.
pub const FORMAT: &str = "hero_livekit.cluster.v1";
const NONCE_LEN: usize = 12;

/// The record as stored: everything but `sealed` is public.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRecord {
    pub format: String,
    /// Bumped by one by every credential change (compare-and-set).
    pub generation: u64,
    /// The node id that wrote this generation (for `cluster status`).
    pub writer: String,
    pub written_at_ms: u64,
    /// Hex of the 12-byte nonce.
    pub nonce: String,
    /// Hex of the ciphertext and its tag.
    pub sealed: String,
}

/// The state of one key in the record. This version keeps exactly one
/// active key (SPEC section 6: one entry in `keys:`); `retiring` is the
/// shape a rotation needs, so that tokens signed with the old key are
/// accepted until they expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum KeyState {
    Active,
    Retiring { until_ms: u64 },
}

#[derive(Serialize, Deserialize)]
struct KeyEntry {
    api_key: String,
    api_secret: String,
    #[serde(flatten)]
    state: KeyState,
}

/// What the ciphertext holds.
#[derive(Serialize, Deserialize)]
struct Plain {
    keys: Vec<KeyEntry>,
}

/// Why a record could not be used. Never carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Not JSON of a known format: someone else's key, or a newer version.
    #[error("the record of cluster {cluster} is not a {FORMAT} record: {why}")]
    Unreadable { cluster: String, why: String },
    /// The join secret does not open it (wrong secret, or tampered with).
    #[error("the join secret does not open the record of cluster {cluster} (generation {generation}): it was sealed with another secret or altered")]
    Rejected { cluster: String, generation: u64 },
    /// Opened, but holds no usable credential.
    #[error("the record of cluster {cluster} (generation {generation}) holds no valid active credential: {why}")]
    Invalid {
        cluster: String,
        generation: u64,
        why: String,
    },
    /// Larger than any record of ours: not read (its size only).
    #[error("the record of cluster {cluster} is {size} bytes, over the limit of {limit}: not one of ours, not read")]
    TooLarge { cluster: String, size: u64, limit: u64 },
    /// The OS refused random bytes for a nonce, or sealing failed.
    #[error("cannot seal the record: {0}")]
    Seal(String),
}

/// A key of `cluster` from its join secret: HKDF-SHA256 salted with the
/// cluster's name, `label` telling apart the keys made for each use (the
/// record's, the heartbeats'), so that one never opens the other's.
///
/// # Errors
/// HKDF refused the output length (it cannot for 32 bytes).
pub(crate) fn cluster_key(cluster: &str, join_secret: &Secret, label: &[u8]) -> Result<Key, String> {
    let salt = format!("hero_livekit:{{{cluster}}}");
    let hk = Hkdf::<Sha256>::new(Some(salt.as_bytes()), join_secret.expose().as_bytes());
    let mut okm = [0u8; 32];
    hk.expand(label, &mut okm).map_err(|e| e.to_string())?;
    Ok(Key::from(okm))
}

/// The key that seals `cluster`'s record, from its join secret.
fn derive_key(cluster: &str, join_secret: &Secret) -> Result<Key, RecordError> {
    cluster_key(cluster, join_secret, b"hero_livekit.cluster.v1 credential key").map_err(RecordError::Seal)
}

fn associated_data(cluster: &str, generation: u64) -> Vec<u8> {
    format!("{FORMAT}\0{cluster}\0{generation}").into_bytes()
}

/// Seals `credential` as generation `generation` of `cluster`'s record.
///
/// # Errors
/// The OS refused random bytes for the nonce.
pub fn seal(
    cluster: &str,
    join_secret: &Secret,
    generation: u64,
    credential: &Credential,
    writer: &str,
    written_at_ms: u64,
) -> Result<StoredRecord, RecordError> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut nonce)
        .map_err(|e| RecordError::Seal(format!("no random bytes for a nonce: {e}")))?;
    seal_with_nonce(
        cluster,
        join_secret,
        generation,
        credential,
        writer,
        written_at_ms,
        nonce,
    )
}

fn seal_with_nonce(
    cluster: &str,
    join_secret: &Secret,
    generation: u64,
    credential: &Credential,
    writer: &str,
    written_at_ms: u64,
    nonce: [u8; NONCE_LEN],
) -> Result<StoredRecord, RecordError> {
    let plain = Plain {
        keys: vec![KeyEntry {
            api_key: credential.api_key.clone(),
            api_secret: credential.api_secret.expose().to_string(),
            state: KeyState::Active,
        }],
    };
    let msg = serde_json::to_vec(&plain).map_err(|e| RecordError::Seal(e.to_string()))?;
    let cipher = ChaCha20Poly1305::new(&derive_key(cluster, join_secret)?);
    let aad = associated_data(cluster, generation);
    let sealed = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: &msg, aad: &aad })
        .map_err(|e| RecordError::Seal(e.to_string()))?;
    Ok(StoredRecord {
        format: FORMAT.to_string(),
        generation,
        writer: writer.to_string(),
        written_at_ms,
        nonce: hex::encode(nonce),
        sealed: hex::encode(sealed),
    })
}

impl StoredRecord {
    /// The JSON stored in Redis.
    pub fn to_json(&self) -> String {
        // Strings and integers only: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses what Redis holds.
    ///
    /// # Errors
    /// [`RecordError::Unreadable`] for anything but a record of [`FORMAT`].
    pub fn from_json(cluster: &str, raw: &str) -> Result<StoredRecord, RecordError> {
        let unreadable = |why: String| RecordError::Unreadable {
            cluster: cluster.to_string(),
            why,
        };
        let r: StoredRecord = serde_json::from_str(raw).map_err(|e| unreadable(e.to_string()))?;
        if r.format != FORMAT {
            return Err(unreadable(format!(
                "format {:?}",
                r.format.chars().take(40).collect::<String>()
            )));
        }
        Ok(r)
    }

    /// Opens the record with `join_secret`: the active credential.
    ///
    /// # Errors
    /// [`RecordError::Rejected`] when the secret (or the name, or the
    /// generation) is not the one it was sealed with;
    /// [`RecordError::Invalid`] when it holds no valid active key.
    pub fn open(&self, cluster: &str, join_secret: &Secret) -> Result<Credential, RecordError> {
        let rejected = || RecordError::Rejected {
            cluster: cluster.to_string(),
            generation: self.generation,
        };
        let nonce = hex::decode(&self.nonce).map_err(|_| rejected())?;
        let sealed = hex::decode(&self.sealed).map_err(|_| rejected())?;
        if nonce.len() != NONCE_LEN {
            return Err(rejected());
        }
        let cipher = ChaCha20Poly1305::new(&derive_key(cluster, join_secret)?);
        let aad = associated_data(cluster, self.generation);
        let msg = cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| rejected())?;
        let invalid = |why: String| RecordError::Invalid {
            cluster: cluster.to_string(),
            generation: self.generation,
            why,
        };
        // Authenticated, so written by a holder of the secret; still checked,
        // since it is rendered into livekit.yaml and backend.env.
        let plain: Plain = serde_json::from_slice(&msg).map_err(|_| invalid("not a key list".into()))?;
        let mut active = plain.keys.into_iter().filter(|k| k.state == KeyState::Active);
        let first = active.next().ok_or_else(|| invalid("no active key".into()))?;
        if active.next().is_some() {
            return Err(invalid("more than one active key".into()));
        }
        let credential = Credential {
            api_key: first.api_key,
            api_secret: Secret::new(first.api_secret),
        };
        validate_credential(&credential).map_err(|e| invalid(e.to_string()))?;
        Ok(credential)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred() -> Credential {
        Credential {
            api_key: "APIabcdefghijkm".into(),
            api_secret: Secret::new("s3cr3tValueThatMustNeverBePrinted0123456789"),
        }
    }

    fn token() -> Secret {
        Secret::new("join-secret-of-the-cluster-0123456789abcdef")
    }

    #[test]
    fn a_sealed_record_opens_with_its_secret_name_and_generation_only() {
        let r = seal("prod", &token(), 7, &cred(), "node-a", 1).expect("seal");
        let back = StoredRecord::from_json("prod", &r.to_json()).expect("parse");
        assert_eq!(back.open("prod", &token()), Ok(cred()));

        let wrong = Secret::new("another-join-secret-0123456789abcdefghijk");
        assert_eq!(
            back.open("prod", &wrong),
            Err(RecordError::Rejected {
                cluster: "prod".into(),
                generation: 7
            })
        );
        // Replayed under another cluster or generation: refused.
        assert!(matches!(
            back.open("staging", &token()),
            Err(RecordError::Rejected { .. })
        ));
        let replayed = StoredRecord {
            generation: 8,
            ..back.clone()
        };
        assert!(matches!(
            replayed.open("prod", &token()),
            Err(RecordError::Rejected { .. })
        ));
        // One flipped bit of ciphertext: refused.
        let mut bytes = hex::decode(&back.sealed).expect("hex");
        bytes[0] ^= 1;
        let tampered = StoredRecord {
            sealed: hex::encode(bytes),
            ..back
        };
        assert!(matches!(
            tampered.open("prod", &token()),
            Err(RecordError::Rejected { .. })
        ));
    }

    #[test]
    fn the_stored_form_never_holds_the_secret_and_every_write_has_its_own_nonce() {
        let a = seal("prod", &token(), 1, &cred(), "node-a", 1).expect("seal");
        let b = seal("prod", &token(), 1, &cred(), "node-a", 1).expect("seal");
        for r in [&a, &b] {
            let json = r.to_json();
            assert!(!json.contains(cred().api_secret.expose()), "{json}");
            assert!(!json.contains(token().expose()), "{json}");
        }
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.sealed, b.sealed);
    }

    #[test]
    fn foreign_values_and_other_formats_are_unreadable_not_adopted() {
        for raw in [
            "",
            "hello",
            "{}",
            r#"{"format":"other.v9","generation":1,"writer":"x","written_at_ms":0,"nonce":"","sealed":""}"#,
        ] {
            assert!(
                matches!(
                    StoredRecord::from_json("prod", raw),
                    Err(RecordError::Unreadable { .. })
                ),
                "{raw}"
            );
        }
    }

    #[test]
    fn an_opened_record_must_hold_one_valid_active_key() {
        let seal_plain = |plain: &Plain| {
            let cipher = ChaCha20Poly1305::new(&derive_key("prod", &token()).expect("key"));
            let nonce = [3u8; NONCE_LEN];
            let msg = serde_json::to_vec(plain).expect("json");
            let sealed = cipher
                .encrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: &msg,
                        aad: &associated_data("prod", 2),
                    },
                )
                .expect("encrypt");
            StoredRecord {
                format: FORMAT.into(),
                generation: 2,
                writer: "w".into(),
                written_at_ms: 0,
                nonce: hex::encode(nonce),
                sealed: hex::encode(sealed),
            }
        };
        let entry = |key: &str, state| KeyEntry {
            api_key: key.into(),
            api_secret: cred().api_secret.expose().into(),
            state,
        };
        let retiring = KeyState::Retiring { until_ms: 5 };
        // A retiring key beside the active one is the rotation's shape: the
        // active one is what this version runs.
        let r = seal_plain(&Plain {
            keys: vec![
                entry("APIold000000000", retiring),
                entry("APIabcdefghijkm", KeyState::Active),
            ],
        });
        assert_eq!(r.open("prod", &token()), Ok(cred()));
        for keys in [
            vec![entry("APIold000000000", retiring)],
            vec![entry("APIa", KeyState::Active), entry("APIb", KeyState::Active)],
            vec![entry("bad key", KeyState::Active)],
        ] {
            let r = seal_plain(&Plain { keys });
            assert!(matches!(r.open("prod", &token()), Err(RecordError::Invalid { .. })));
        }
    }

    #[test]
    fn a_nonce_chosen_by_the_test_gives_the_same_record() {
        let a = seal_with_nonce("prod", &token(), 1, &cred(), "n", 0, [1; NONCE_LEN]).expect("seal");
        let b = seal_with_nonce("prod", &token(), 1, &cred(), "n", 0, [1; NONCE_LEN]).expect("seal");
        assert_eq!(a, b);
    }
}
