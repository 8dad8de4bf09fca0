//! Socket hygiene: one live instance per socket, no stale socket left in the
//! way, and no moment where the socket is reachable with umask permissions.
//!
//! Order matters: the lock is taken before the socket path is looked at, so
//! two daemons started at once cannot both decide the socket is stale.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{chown, Gid};

/// Why the daemon cannot take its socket.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("another hero_livekit_server holds {lock}; stop it first (`hero_livekit health` talks to it)")]
    Locked { lock: PathBuf },
    #[error("{path} exists and is not a socket; refusing to remove it. Move it away or pass --socket")]
    NotASocket { path: PathBuf },
    #[error("a live daemon answers on {path}; stop it first")]
    Live { path: PathBuf },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BindError + 'a {
    move |source| BindError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Holds the instance lock and removes the socket when the daemon stops.
#[derive(Debug)]
pub struct SocketGuard {
    _lock: File,
    path: PathBuf,
}

impl SocketGuard {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        // Only our own socket: we still hold the lock, so nobody else bound it.
        let _ = fs::remove_file(&self.path);
    }
}

/// How long to wait for a predecessor that holds the lock but no longer
/// answers: a daemon killed a moment ago keeps its descriptors (and the
/// lock) until its last thread is gone, and a service manager restarting it
/// at once must not fail on that.
const DYING_HOLDER_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Takes the exclusive lock. A holder that answers on the socket is a live
/// instance: refused at once. A holder that does not answer is dying (or
/// still booting): waited for, up to [`DYING_HOLDER_GRACE`].
fn take_lock(file: &File, lock: &Path, socket: &Path) -> Result<(), BindError> {
    let deadline = std::time::Instant::now() + DYING_HOLDER_GRACE;
    let mut delay = std::time::Duration::from_millis(1);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(TryLockError::Error(e)) => {
                return Err(BindError::Io {
                    what: "locking",
                    path: lock.into(),
                    source: e,
                })
            }
            Err(TryLockError::WouldBlock) => {
                let live = std::os::unix::net::UnixStream::connect(socket).is_ok();
                if live || std::time::Instant::now() >= deadline {
                    return Err(BindError::Locked { lock: lock.into() });
                }
                std::thread::park_timeout(delay);
                delay = (delay * 2).min(std::time::Duration::from_millis(50));
            }
        }
    }
}

/// The instance lock, taken before anything under the root is touched:
/// only its holder may heal the state directory or bind the socket.
#[derive(Debug)]
pub struct InstanceLock {
    lock: File,
    socket: PathBuf,
    group: Option<Gid>,
}

impl InstanceLock {
    /// Takes the lock beside `socket`, refuses a live instance or a foreign
    /// file at the socket path, and clears a stale socket. The socket
    /// directory gets mode 0700 (0750 and group `group` when given).
    ///
    /// # Errors
    /// [`BindError`] says which of the refusals applies, or which I/O step failed.
    pub fn acquire(socket: &Path, lock: &Path, group: Option<Gid>) -> Result<InstanceLock, BindError> {
        let dir = socket.parent().unwrap_or(Path::new("."));
        let dir_mode = if group.is_some() { 0o750 } else { 0o700 };
        fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(dir_mode)).map_err(io_err("chmod", dir))?;
        if let Some(g) = group {
            chown(dir, None, Some(g)).map_err(|e| BindError::Io {
                what: "chown",
                path: dir.into(),
                source: e.into(),
            })?;
        }

        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(lock)
            .map_err(io_err("opening lock", lock))?;
        take_lock(&lock_file, lock, socket)?;

        match fs::symlink_metadata(socket) {
            Ok(meta) if !meta.file_type().is_socket() => return Err(BindError::NotASocket { path: socket.into() }),
            Ok(_) => match std::os::unix::net::UnixStream::connect(socket) {
                Ok(_) => return Err(BindError::Live { path: socket.into() }),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::info!(socket = %socket.display(), "removing stale socket left by a dead instance");
                    fs::remove_file(socket).map_err(io_err("removing stale socket", socket))?;
                }
                Err(e) => {
                    return Err(BindError::Io {
                        what: "probing",
                        path: socket.into(),
                        source: e,
                    })
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(BindError::Io {
                    what: "inspecting",
                    path: socket.into(),
                    source: e,
                })
            }
        }
        Ok(InstanceLock {
            lock: lock_file,
            socket: socket.into(),
            group,
        })
    }

    /// Binds the socket with mode 0600 (0660 with a group). Called once the
    /// daemon can serve, so a successful `connect` means "ready".
    ///
    /// # Errors
    /// Binding, chmod, chown or rename failed.
    pub fn bind(self) -> Result<(std::os::unix::net::UnixListener, SocketGuard), BindError> {
        let socket = self.socket.as_path();
        let dir = socket.parent().unwrap_or(Path::new("."));
        // Bind under a temporary name, set the final mode, then rename into
        // place: the final path never exists with umask permissions.
        let tmp = dir.join(format!(".rpc.sock.{}.tmp", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let listener = std::os::unix::net::UnixListener::bind(&tmp).map_err(io_err("binding", &tmp))?;
        let mode = if self.group.is_some() { 0o660 } else { 0o600 };
        let finish = || -> Result<(), BindError> {
            fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(io_err("chmod", &tmp))?;
            if let Some(g) = self.group {
                chown(&tmp, None, Some(g)).map_err(|e| BindError::Io {
                    what: "chown",
                    path: tmp.clone(),
                    source: e.into(),
                })?;
            }
            fs::rename(&tmp, socket).map_err(io_err("renaming socket into", socket))
        };
        if let Err(e) = finish() {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        listener.set_nonblocking(true).map_err(io_err("configuring", socket))?;
        Ok((
            listener,
            SocketGuard {
                _lock: self.lock,
                path: self.socket,
            },
        ))
    }
}
