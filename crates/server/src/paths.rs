//! Where everything lives (SPEC section 3).
//!
//! Resolution order: `--root DIR`, else `$PATH_ROOT`, else `~/hero`. The
//! socket directory is `$HERO_SOCKET_DIR` when set, else `<root>/var/sockets`;
//! `--socket PATH` overrides both.

use std::path::PathBuf;

/// Every path the daemon uses, resolved once at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub root: PathBuf,
    /// `<root>/var/hero_livekit`, mode 0700.
    pub state_dir: PathBuf,
    /// `<root>/bin`, where `install` puts livekit-server.
    pub bin_dir: PathBuf,
    /// The daemon's Unix socket.
    pub socket: PathBuf,
}

impl Paths {
    /// Resolves paths from the command line and the environment.
    pub fn resolve(root: Option<PathBuf>, socket: Option<PathBuf>) -> Paths {
        let root = hero_livekit_proto::paths::resolve_root(root.as_deref());
        let socket = hero_livekit_proto::paths::resolve_socket(Some(&root), socket.as_deref());
        Paths::with(root, socket)
    }

    /// Paths under an explicit root and socket.
    pub fn with(root: PathBuf, socket: PathBuf) -> Paths {
        Paths {
            state_dir: root.join("var").join("hero_livekit"),
            bin_dir: root.join("bin"),
            root,
            socket,
        }
    }

    pub fn runtime_json(&self) -> PathBuf {
        self.state_dir.join("runtime.json")
    }
    pub fn livekit_yaml(&self) -> PathBuf {
        self.state_dir.join("livekit.yaml")
    }
    pub fn backend_env(&self) -> PathBuf {
        self.state_dir.join("backend.env")
    }
    /// livekit-server's working directory.
    pub fn data_dir(&self) -> PathBuf {
        self.state_dir.join("data")
    }
    /// `logs/<name>.log` for each child, and the daemon's own log under `up`.
    pub fn logs_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }
    /// One `<name>.json` [`crate::supervise::ChildRecord`] per running child.
    pub fn children_dir(&self) -> PathBuf {
        self.state_dir.join("children")
    }
    /// Exclusive lock held by the live daemon instance: in the state
    /// directory, so that one root has one daemon whatever socket each was
    /// given. Holds the holder's pid and socket.
    pub fn lock_file(&self) -> PathBuf {
        self.state_dir.join("daemon.lock")
    }
    /// Default location of the installed livekit-server.
    pub fn livekit_bin(&self) -> PathBuf {
        self.bin_dir.join("livekit-server")
    }
    /// Record of the installed version and checksum, written by `install`.
    pub fn install_record(&self) -> PathBuf {
        self.state_dir.join("install.json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_root_and_socket_win() {
        let p = Paths::resolve(Some("/r".into()), Some("/s/x.sock".into()));
        assert_eq!(p.state_dir, PathBuf::from("/r/var/hero_livekit"));
        assert_eq!(p.socket, PathBuf::from("/s/x.sock"));
        assert_eq!(p.lock_file(), PathBuf::from("/r/var/hero_livekit/daemon.lock"));
    }

    #[test]
    fn socket_defaults_under_root() {
        let p = Paths::with("/r".into(), "/r/var/sockets/hero_livekit_server/rpc.sock".into());
        assert_eq!(p.runtime_json(), PathBuf::from("/r/var/hero_livekit/runtime.json"));
        assert_eq!(p.livekit_bin(), PathBuf::from("/r/bin/livekit-server"));
    }
}
