//! Path resolution shared by the daemon and its clients (SPEC section 3), so
//! both always agree on where the socket is.

use std::path::{Path, PathBuf};

/// The root directory: `--root`, else `$PATH_ROOT`, else `~/hero`.
pub fn resolve_root(root: Option<&Path>) -> PathBuf {
    root.map(Path::to_path_buf)
        .or_else(|| {
            std::env::var_os("PATH_ROOT")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/root"))
                .join("hero")
        })
}

/// The socket: `--socket`, else `$HERO_SOCKET_DIR/hero_livekit_server/rpc.sock`,
/// else `<root>/var/sockets/hero_livekit_server/rpc.sock`.
pub fn resolve_socket(root: Option<&Path>, socket: Option<&Path>) -> PathBuf {
    if let Some(s) = socket {
        return s.to_path_buf();
    }
    let dir = std::env::var_os("HERO_SOCKET_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| resolve_root(root).join("var").join("sockets"));
    dir.join("hero_livekit_server").join("rpc.sock")
}
