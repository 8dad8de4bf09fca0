//! Socket hygiene: one live instance per socket, no stale socket left in the
//! way, and no moment where the socket is reachable with umask permissions.
//!
//! Order matters: the lock (in the state directory, one per root) is taken
//! before the socket path is looked at, so two daemons started at once
//! cannot both decide the socket is stale, and two daemons given different
//! sockets for the same root cannot both run.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{chown, Gid};

use crate::dirs::{self, DirError};

/// Why the daemon cannot take its socket.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "another hero_livekit_server (pid {}, socket {}) holds the instance lock {lock} of this root; \
         stop it first, or talk to it on its socket (`hero_livekit --socket {} health`)",
        holder_pid(pid),
        holder_socket(socket),
        holder_socket(socket)
    )]
    Locked {
        lock: PathBuf,
        pid: Option<i32>,
        socket: Option<PathBuf>,
    },
    #[error("{path} exists and is not a socket; refusing to remove it. Move it away or pass --socket")]
    NotASocket { path: PathBuf },
    #[error("a live daemon answers on {path}; stop it first")]
    Live { path: PathBuf },
    #[error(transparent)]
    Dir(#[from] DirError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn holder_pid(pid: &Option<i32>) -> String {
    pid.map_or_else(|| "unknown".to_string(), |p| p.to_string())
}

fn holder_socket(socket: &Option<PathBuf>) -> String {
    socket
        .as_ref()
        .map_or_else(|| "unknown".to_string(), |s| s.display().to_string())
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

/// What the lock's holder wrote into it: its pid and its socket.
fn read_holder(lock: &Path) -> (Option<i32>, Option<PathBuf>) {
    let Ok(mut f) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(lock)
    else {
        return (None, None);
    };
    let mut text = String::new();
    // A lock file is two short lines; anything longer is not ours.
    if (&mut f).take(8192).read_to_string(&mut text).is_err() {
        return (None, None);
    }
    let mut pid = None;
    let mut socket = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("pid=") {
            pid = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("socket=") {
            socket = Some(PathBuf::from(v));
        }
    }
    (pid, socket)
}

/// Whether `pid`'s thread-group leader exists and has not exited (a zombie
/// or dead leader belongs to a process that is going away).
fn leader_runs(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name, which may hold spaces.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state != "Z" && state != "X")
}

/// Takes the exclusive lock. A holder that answers on its socket (read
/// from the lock file, so a holder serving another socket is found too) is
/// a live instance: refused at once. A holder that does not answer is
/// dying (or still booting): waited for, up to [`DYING_HOLDER_GRACE`].
fn take_lock(file: &File, lock: &Path) -> Result<(), BindError> {
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
                let (pid, socket) = read_holder(lock);
                // A killed holder's leader turns zombie while another of its
                // threads may still be finishing a system call (an fsync on
                // the blocking pool): its listening socket then still takes
                // connections, though nobody will ever accept them. Only a
                // holder whose leader still runs is live.
                let live = pid.is_none_or(leader_runs)
                    && socket
                        .as_deref()
                        .is_some_and(|s| std::os::unix::net::UnixStream::connect(s).is_ok());
                if live || std::time::Instant::now() >= deadline {
                    return Err(BindError::Locked {
                        lock: lock.into(),
                        pid,
                        socket,
                    });
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
    /// Verifies the state directory (`state_dir`, see [`dirs::state_dir`])
    /// and takes the lock `lock` inside it, so a second daemon on the same
    /// root is refused whatever socket it was given; then writes this
    /// instance's pid and `socket` into the lock file for the refusal
    /// message of the next one. Then prepares the socket directory (see
    /// [`dirs::socket_dir`]), refuses a live instance or a foreign file at
    /// the socket path, and clears a stale socket.
    ///
    /// # Errors
    /// [`BindError`] says which of the refusals applies, or which I/O step failed.
    pub fn acquire(
        state_dir: &Path,
        lock: &Path,
        socket: &Path,
        group: Option<Gid>,
    ) -> Result<InstanceLock, BindError> {
        dirs::state_dir(state_dir)?;
        let mut lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(lock)
            .map_err(io_err("opening lock", lock))?;
        take_lock(&lock_file, lock)?;
        let holder = format!("pid={}\nsocket={}\n", std::process::id(), socket.display());
        lock_file
            .set_len(0)
            .and_then(|()| lock_file.seek(SeekFrom::Start(0)))
            .and_then(|_| lock_file.write_all(holder.as_bytes()))
            .map_err(io_err("writing lock", lock))?;

        let dir = socket.parent().unwrap_or(Path::new("."));
        dirs::socket_dir(dir, group)?;

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
