//! The pure decisions of a cluster member: what to do with what Redis holds,
//! given what this node runs. The shell ([`crate::service`]) reads Redis,
//! calls these, and applies the answer.

use crate::config::Credential;

use super::record::RecordError;

/// What Redis holds for the cluster, as this node's join secret sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    /// No record: a new cluster, or a Redis restarted empty or flushed.
    Absent,
    /// A record this node's secret opens.
    Open { generation: u64, credential: Credential },
    /// A record it does not open (another secret, another format, altered).
    Closed(RecordError),
}

/// What the background sync does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sync {
    /// The node runs the cluster's credential; remember its generation.
    Keep { generation: u64 },
    /// Another node changed the credential: apply it here.
    Adopt { generation: u64, credential: Credential },
    /// Redis lost the record: write ours back as it is (first writer wins,
    /// so nobody rotates).
    Republish { generation: u64 },
    /// Redis came back with an older generation than the one the cluster
    /// already moved to (an old snapshot): put ours back over it.
    Restore { over: u64, generation: u64 },
    /// Nothing can be done safely: keep serving and say why.
    Conflict(String),
}

/// The background decision. `known` is the generation this node last ran
/// (none before the first sync after a join); `floor` the newest one a live
/// member runs by its sealed heartbeat (0 when none): a record older than
/// that is a replay or a rollback, and is never adopted (a member that runs
/// the newer one restores it).
pub fn sync(local: &Credential, known: Option<u64>, remote: &Remote, floor: u64) -> Sync {
    match remote {
        Remote::Absent => Sync::Republish {
            generation: known.unwrap_or(1).max(1),
        },
        Remote::Open { generation, credential } if credential == local => Sync::Keep {
            generation: *generation,
        },
        Remote::Open { generation, .. } if known.is_some_and(|k| k > *generation) => Sync::Restore {
            over: *generation,
            generation: known.unwrap_or(*generation),
        },
        Remote::Open { generation, .. } if *generation < floor => Sync::Conflict(stale(*generation, floor)),
        Remote::Open { generation, credential } => Sync::Adopt {
            generation: *generation,
            credential: credential.clone(),
        },
        Remote::Closed(e) => Sync::Conflict(e.to_string()),
    }
}

/// Why a record older than a live member's generation is not taken.
pub fn stale(generation: u64, floor: u64) -> String {
    format!(
        "redis holds generation {generation} of the credential, older than generation {floor} that a live member runs (a replayed or rolled-back record): not adopted; the member restores the current one"
    )
}

/// What `configure {cluster}` does on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Join {
    /// The first node: publish the credential it holds, as generation 1.
    Publish,
    /// The cluster exists: run its credential (`replaced` when this node
    /// held another one).
    Adopt {
        generation: u64,
        credential: Credential,
        replaced: bool,
    },
    /// Refused, nothing changes: the record does not open with the secret
    /// given (or, with none given, the cluster already exists).
    Refuse { why: String, token_given: bool },
}

/// The join decision.
pub fn join(local: &Credential, remote: &Remote, token_given: bool) -> Join {
    match remote {
        Remote::Absent => Join::Publish,
        Remote::Open { generation, credential } => Join::Adopt {
            generation: *generation,
            credential: credential.clone(),
            replaced: credential != local,
        },
        Remote::Closed(e) => Join::Refuse {
            why: e.to_string(),
            token_given,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn cred(n: u8) -> Credential {
        Credential {
            api_key: format!("APIkey{n:09}"),
            api_secret: Secret::new(format!("secret-{n}-").repeat(6)),
        }
    }

    fn open(generation: u64, n: u8) -> Remote {
        Remote::Open {
            generation,
            credential: cred(n),
        }
    }

    fn closed() -> Remote {
        Remote::Closed(RecordError::Rejected {
            cluster: "c".into(),
            generation: 3,
        })
    }

    #[test]
    fn the_background_sync_keeps_adopts_republishes_or_restores() {
        let cases = [
            (None, open(4, 1), Sync::Keep { generation: 4 }),
            (Some(4), open(4, 1), Sync::Keep { generation: 4 }),
            (Some(3), open(4, 1), Sync::Keep { generation: 4 }),
            (
                Some(4),
                open(5, 2),
                Sync::Adopt {
                    generation: 5,
                    credential: cred(2),
                },
            ),
            (
                None,
                open(2, 2),
                Sync::Adopt {
                    generation: 2,
                    credential: cred(2),
                },
            ),
            // The same generation with another credential: the record wins.
            (
                Some(5),
                open(5, 2),
                Sync::Adopt {
                    generation: 5,
                    credential: cred(2),
                },
            ),
            (Some(6), open(5, 2), Sync::Restore { over: 5, generation: 6 }),
            (Some(6), Remote::Absent, Sync::Republish { generation: 6 }),
            (None, Remote::Absent, Sync::Republish { generation: 1 }),
        ];
        for (known, remote, want) in cases {
            assert_eq!(sync(&cred(1), known, &remote, 0), want, "{known:?} {remote:?}");
        }
        assert!(matches!(sync(&cred(1), Some(3), &closed(), 0), Sync::Conflict(why) if why.contains("does not open")));
    }

    #[test]
    fn a_record_older_than_a_live_members_generation_is_never_adopted() {
        // A fresh node (or one behind) sees generation 1 while a live
        // member's sealed heartbeat says 2: a replay, not adopted.
        for known in [None, Some(1)] {
            match sync(&cred(1), known, &open(1, 2), 2) {
                Sync::Conflict(why) => assert!(why.contains("generation 1") && why.contains("generation 2"), "{why}"),
                other => panic!("{known:?}: {other:?}"),
            }
        }
        // As new as the floor: adopted as before.
        assert_eq!(
            sync(&cred(1), Some(1), &open(2, 2), 2),
            Sync::Adopt {
                generation: 2,
                credential: cred(2)
            }
        );
        // A node that runs the newer one restores it, whatever the floor.
        assert_eq!(
            sync(&cred(1), Some(2), &open(1, 2), 2),
            Sync::Restore { over: 1, generation: 2 }
        );
        // Running what the record holds is kept (nothing is adopted).
        assert_eq!(sync(&cred(2), Some(1), &open(1, 2), 2), Sync::Keep { generation: 1 });
    }

    #[test]
    fn a_join_publishes_adopts_or_refuses_and_says_when_it_replaced() {
        assert_eq!(join(&cred(1), &Remote::Absent, false), Join::Publish);
        assert_eq!(
            join(&cred(1), &open(3, 1), true),
            Join::Adopt {
                generation: 3,
                credential: cred(1),
                replaced: false
            }
        );
        assert_eq!(
            join(&cred(1), &open(3, 2), true),
            Join::Adopt {
                generation: 3,
                credential: cred(2),
                replaced: true
            }
        );
        assert!(matches!(
            join(&cred(1), &closed(), true),
            Join::Refuse { token_given: true, .. }
        ));
    }

    #[test]
    fn no_decision_text_holds_a_secret() {
        let shown = format!(
            "{:?} {:?}",
            sync(&cred(1), None, &open(2, 2), 0),
            join(&cred(1), &open(2, 2), true)
        );
        assert!(!shown.contains("secret-2-"), "{shown}");
    }
}
