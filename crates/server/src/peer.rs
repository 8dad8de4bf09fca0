//! Who is calling: peer credentials read at accept time (`SO_PEERCRED`) and
//! the access they grant.
//!
//! The daemon's own uid and root may call everything. With `--socket-group G`
//! members of G may call read-only methods. Anyone else is refused every
//! method (they can only reach the socket at all if an operator loosened its
//! permissions by hand).

use hero_livekit_proto::Access;
use nix::unistd::{Gid, Uid};

/// What a connected peer may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerAccess {
    Full,
    ReadOnly,
    None,
}

impl PeerAccess {
    pub fn allows(self, access: Access) -> bool {
        match self {
            PeerAccess::Full => true,
            PeerAccess::ReadOnly => access == Access::ReadOnly,
            PeerAccess::None => false,
        }
    }
}

/// The caller of one connection; inserted into every request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
    pub access: PeerAccess,
}

/// Decides a peer's access.
#[derive(Debug, Clone, Copy)]
pub struct AccessPolicy {
    pub daemon_uid: Uid,
    pub socket_group: Option<Gid>,
}

impl AccessPolicy {
    pub fn current(socket_group: Option<Gid>) -> Self {
        AccessPolicy {
            daemon_uid: Uid::effective(),
            socket_group,
        }
    }

    /// Classifies a peer. Group membership counts the primary gid and the
    /// supplementary groups of the peer process.
    pub fn classify(&self, uid: u32, gid: u32, pid: Option<i32>) -> PeerAccess {
        if uid == 0 || uid == self.daemon_uid.as_raw() {
            return PeerAccess::Full;
        }
        match self.socket_group {
            Some(g) if gid == g.as_raw() || pid.is_some_and(|p| supplementary_groups(p).contains(&g.as_raw())) => {
                PeerAccess::ReadOnly
            }
            _ => PeerAccess::None,
        }
    }
}

/// The `Groups:` line of `/proc/<pid>/status`; empty when unreadable (the
/// peer then gets no group-based access, which is the safe side).
fn supplementary_groups(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Groups:"))
                .map(|g| g.split_whitespace().filter_map(|n| n.parse().ok()).collect())
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_own_uid_get_full_access_others_none_without_group() {
        let p = AccessPolicy {
            daemon_uid: Uid::from_raw(1000),
            socket_group: None,
        };
        assert_eq!(p.classify(0, 0, None), PeerAccess::Full);
        assert_eq!(p.classify(1000, 1000, None), PeerAccess::Full);
        assert_eq!(p.classify(65534, 65534, None), PeerAccess::None);
    }

    #[test]
    fn socket_group_members_are_read_only() {
        let p = AccessPolicy {
            daemon_uid: Uid::from_raw(1000),
            socket_group: Some(Gid::from_raw(65534)),
        };
        assert_eq!(p.classify(65534, 65534, None), PeerAccess::ReadOnly);
        assert_eq!(p.classify(4242, 4242, None), PeerAccess::None);
        assert!(PeerAccess::ReadOnly.allows(Access::ReadOnly));
        assert!(!PeerAccess::ReadOnly.allows(Access::Mutating));
    }
}
