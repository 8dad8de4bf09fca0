//! This node's membership, kept in `cluster.json` beside the triple: the
//! cluster's name, the join secret (needed again after a restart, so a
//! secret on disk: 0600 in the 0700 state directory), the node's id and the
//! generation it last ran.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Secret;

/// The file's name in the state directory.
pub const FILE: &str = "cluster.json";

/// This node's membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub name: String,
    pub token: Secret,
    pub node_id: String,
    /// The generation of the cluster's credential this node last ran.
    pub generation: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    cluster: String,
    cluster_token: String,
    node_id: String,
    #[serde(default)]
    generation: Option<u64>,
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// Reads the membership; `Ok(None)` when the node has joined none.
///
/// # Errors
/// The file exists but cannot be read or is not a membership (the message
/// names the file, never its content).
pub fn load(state_dir: &Path) -> io::Result<Option<Membership>> {
    let p = path(state_dir);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let d: OnDisk = serde_json::from_slice(&bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a cluster membership (line {})", p.display(), e.line()),
        )
    })?;
    Ok(Some(Membership {
        name: d.cluster,
        token: Secret::new(d.cluster_token),
        node_id: d.node_id,
        generation: d.generation,
    }))
}

/// Writes the membership atomically: a 0600 temp file, fsync, rename,
/// directory fsync; a failure leaves the previous file intact.
///
/// # Errors
/// Any step of the write.
pub fn store(state_dir: &Path, m: &Membership) -> io::Result<()> {
    let d = OnDisk {
        cluster: m.name.clone(),
        cluster_token: m.token.expose().to_string(),
        node_id: m.node_id.clone(),
        generation: m.generation,
    };
    let mut bytes = serde_json::to_vec_pretty(&d).map_err(io::Error::other)?;
    bytes.push(b'\n');
    let final_path = path(state_dir);
    let tmp = state_dir.join(format!(".{FILE}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &final_path)?;
        File::open(state_dir)?.sync_all()
    };
    let r = write();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Removes the membership (leaving the cluster), durably: the directory
/// is synced so that a crash right after cannot bring it back. A missing
/// file is no error.
///
/// # Errors
/// The file exists and cannot be removed, or the directory sync fails.
pub fn remove(state_dir: &Path) -> io::Result<()> {
    match std::fs::remove_file(path(state_dir)) {
        Ok(()) => File::open(state_dir)?.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_membership_round_trips_through_a_0600_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(dir.path()).expect("absent"), None);
        let m = Membership {
            name: "prod".into(),
            token: Secret::new("join-secret-0123456789abcdefghijklmnop"),
            node_id: "n1".into(),
            generation: Some(3),
        };
        store(dir.path(), &m).expect("store");
        assert_eq!(load(dir.path()).expect("load"), Some(m));
        let mode = std::fs::metadata(path(dir.path())).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(path(dir.path()), b"{not json").expect("write");
        let e = load(dir.path()).expect_err("garbage");
        assert!(e.to_string().contains("cluster.json"), "{e}");
    }
}
