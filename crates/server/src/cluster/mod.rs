//! One credential across nodes through Redis (SPEC section 11).
//!
//! - [`record`]: the record Redis holds, sealed with a key derived from the
//!   join secret (HKDF-SHA256, ChaCha20-Poly1305), versioned, shaped for
//!   several keys with a state each.
//! - [`decide`]: the pure decisions (join: publish, adopt or refuse; sync:
//!   keep, adopt, republish, restore, or conflict).
//! - [`remote`]: the Redis protocol (keys in one hash slot, `SET NX`, the
//!   generation compare-and-set script, pub/sub, heartbeats with a TTL),
//!   each call bounded in time.
//! - [`beat`]: a node's heartbeat, sealed like the record and checked
//!   before it is listed (id, size, URL, time).
//! - [`local`]: this node's membership file.
//!
//! The service ([`crate::service`]) holds the membership under the ops lock
//! and applies an adopted credential through the same reconcile as
//! `configure --api-key/--api-secret`.

pub mod beat;
pub mod decide;
pub mod local;
pub mod record;
// Crate-private: it speaks through the shared Redis client (`crate::redis`).
pub(crate) mod remote;

use crate::config::validate::ValidationError;

/// `cluster`: 1-64 characters of `[A-Za-z0-9_-]` (it goes into Redis key
/// names between braces, so no brace, colon or space).
///
/// # Errors
/// The rule broken, naming the field.
pub fn validate_name(name: &str) -> Result<(), ValidationError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ValidationError {
            field: "cluster",
            rule: "must be 1-64 characters of [A-Za-z0-9_-]".into(),
        })
    }
}

/// `cluster_token`: the rule of `api_secret` (32-256 characters of
/// `[A-Za-z0-9_.~+/=-]`), reported under its own name.
///
/// # Errors
/// The rule broken, naming the field.
pub fn validate_token(token: &str) -> Result<(), ValidationError> {
    crate::config::validate::validate_api_secret(token).map_err(|e| ValidationError {
        field: "cluster_token",
        rule: e.rule.replace("a real secret", "a real join secret"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tokens_are_validated_under_their_own_field() {
        assert!(validate_name("prod_eu-1").is_ok());
        for bad in ["", "a{b}", "a:b", "a b", &"x".repeat(65)] {
            assert_eq!(validate_name(bad).expect_err(bad).field, "cluster");
        }
        assert!(validate_token(&"a".repeat(43)).is_ok());
        let e = validate_token("short").expect_err("short");
        assert_eq!(e.field, "cluster_token");
        assert!(!e.rule.contains("short"), "{}", e.rule);
    }
}
