//! Directories the daemon trusts only after checking them (SPEC section 3).
//!
//! The state directory holds the credential and the records that decide
//! which pid gets signalled; the socket directory decides who can reach or
//! replace the socket. Each is used only when the daemon's own uid owns it
//! and nobody else can write into it (or into an ancestor, for the state
//! directory); a symlink in its place is never followed. A refusal names
//! the directory and the command that fixes it. Modes are changed only on
//! directories the daemon owns, and the socket directory only when this
//! instance created it.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{chown, Gid, Uid};

/// Mode bits that let the group or others create, rename or remove entries.
const GROUP_OTHER_WRITE: u32 = 0o022;
const STICKY: u32 = 0o1000;

/// Why a directory is not used.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error(
        "{dir} is a symlink; the daemon never follows a symlink in place of its {role} directory. \
         Fix: replace it with a real directory (`rm {dir} && mkdir -m 0700 {dir}`) or pass another --root/--socket"
    )]
    Symlink { dir: PathBuf, role: &'static str },
    #[error("{dir} exists and is not a directory; move it away or pass another --root/--socket")]
    NotADirectory { dir: PathBuf },
    #[error(
        "{role} directory {dir} is owned by uid {owner}, not by the daemon's uid {euid}: that user controls what is in it. \
         Fix: check its content, then `chown {euid} {dir}`, or pass another --root/--socket"
    )]
    ForeignOwner {
        dir: PathBuf,
        role: &'static str,
        owner: u32,
        euid: u32,
    },
    #[error(
        "{role} directory {dir} has mode {mode:04o}: writable by group or others, so another user could plant or replace files in it. \
         Fix: {fix}"
    )]
    Writable {
        dir: PathBuf,
        role: &'static str,
        mode: u32,
        fix: String,
    },
    #[error(
        "{dir}, an ancestor of the state directory {of}, is writable by another uid (owner uid {owner}, mode {mode:04o}, no sticky bit): \
         that user could replace the state directory. Fix: `chmod go-w {dir}` (and chown it to root or uid {euid}), or use a --root under a directory only you control"
    )]
    UnsafeAncestor {
        dir: PathBuf,
        of: PathBuf,
        owner: u32,
        mode: u32,
        euid: u32,
    },
    #[error("{what} {dir}: {source}")]
    Io {
        what: &'static str,
        dir: PathBuf,
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, dir: &'a Path) -> impl FnOnce(io::Error) -> DirError + 'a {
    move |source| DirError::Io {
        what,
        dir: dir.to_path_buf(),
        source,
    }
}

fn euid() -> u32 {
    Uid::effective().as_raw()
}

/// Opens `dir` itself (never a symlink in its place) for `fstat`/`fchmod`.
fn open_dir_nofollow(dir: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)
}

/// A directory opened once (`O_DIRECTORY|O_NOFOLLOW`), and the files in it
/// reached relative to that descriptor, never through a symlink: whatever
/// is renamed in place of the directory's path afterwards, the operations
/// stay inside the directory that was opened.
#[derive(Debug)]
pub struct At(File);

impl At {
    /// Opens `dir`, refusing a symlink in its place.
    ///
    /// # Errors
    /// The directory cannot be opened (`NotFound` when missing, `ELOOP`
    /// when a symlink stands there).
    pub fn open(dir: &Path) -> io::Result<At> {
        open_dir_nofollow(dir).map(At)
    }

    /// `name` in this directory, opened with `flags` (plus `O_NOFOLLOW` and
    /// `O_CLOEXEC`) and, when created, `mode` exactly.
    ///
    /// # Errors
    /// The OS error; `ELOOP` for a symlink in `name`'s place.
    pub fn file(&self, name: &std::ffi::OsStr, flags: nix::fcntl::OFlag, mode: u32) -> io::Result<File> {
        use nix::fcntl::OFlag;
        let fd = nix::fcntl::openat(
            &self.0,
            name,
            flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::from_bits_truncate(mode),
        )?;
        let file = File::from(fd);
        if flags.contains(OFlag::O_CREAT) {
            // The umask may have narrowed the mode of a new file.
            let current = file.metadata()?.mode() & 0o7777;
            if current != mode && file.metadata()?.uid() == euid() {
                file.set_permissions(Permissions::from_mode(mode))?;
            }
        }
        Ok(file)
    }

    /// A new file under an unpredictable name (`O_EXCL`: a planted file or
    /// symlink makes the attempt fail and another name is tried), mode
    /// `mode`, opened for writing; `prefix` names what it is for.
    ///
    /// # Errors
    /// The OS error, or no free name after a few attempts.
    pub fn temp(&self, prefix: &str, mode: u32) -> io::Result<(std::ffi::OsString, File)> {
        use nix::fcntl::OFlag;
        let mut last = None;
        for _ in 0..16 {
            let name = std::ffi::OsString::from(format!("{prefix}.{:016x}.tmp", rand::random::<u64>()));
            match self.file(&name, OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL, mode) {
                Ok(f) => return Ok((name, f)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no free temporary file name")))
    }

    /// Renames `from` over `to`, both in this directory (a symlink at `to`
    /// is replaced, not followed).
    ///
    /// # Errors
    /// The OS error.
    pub fn rename(&self, from: &std::ffi::OsStr, to: &std::ffi::OsStr) -> io::Result<()> {
        nix::fcntl::renameat(&self.0, from, &self.0, to).map_err(io::Error::from)
    }

    /// Removes the file `name` (a symlink itself, never its target).
    ///
    /// # Errors
    /// The OS error (`NotFound` when there is none).
    pub fn remove(&self, name: &std::ffi::OsStr) -> io::Result<()> {
        nix::unistd::unlinkat(&self.0, name, nix::unistd::UnlinkatFlags::NoRemoveDir).map_err(io::Error::from)
    }

    /// What `name` is, without following a symlink.
    ///
    /// # Errors
    /// The OS error (`NotFound` when there is none).
    pub fn stat(&self, name: &std::ffi::OsStr) -> io::Result<nix::sys::stat::FileStat> {
        nix::sys::stat::fstatat(&self.0, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).map_err(io::Error::from)
    }

    /// Makes renames and removals in this directory durable.
    ///
    /// # Errors
    /// The OS error.
    pub fn sync(&self) -> io::Result<()> {
        self.0.sync_all()
    }
}

/// The directory holding `path`, opened, and `path`'s name in it.
///
/// # Errors
/// The directory cannot be opened, or `path` has no file name.
pub fn at_parent(path: &Path) -> io::Result<(At, std::ffi::OsString)> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{} names no file", path.display())))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok((At::open(dir)?, name.to_os_string()))
}

/// Checks that no ancestor of `dir` lets another uid replace what lies
/// beneath it: each must be owned by root or the daemon's uid, and be
/// writable by group or others only with the sticky bit (as `/tmp` is).
/// Symlinks among the ancestors are resolved first; their targets are
/// what is checked.
///
/// # Errors
/// [`DirError::UnsafeAncestor`] naming the first offending ancestor.
pub fn check_ancestors(dir: &Path) -> Result<(), DirError> {
    let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(());
    };
    let real = fs::canonicalize(parent).map_err(io_err("resolving", parent))?;
    let me = euid();
    for a in real.ancestors() {
        let meta = fs::metadata(a).map_err(io_err("inspecting", a))?;
        let mode = meta.mode() & 0o7777;
        let foreign_owner = meta.uid() != 0 && meta.uid() != me;
        let shared_write = mode & GROUP_OTHER_WRITE != 0 && mode & STICKY == 0;
        if foreign_owner || shared_write {
            return Err(DirError::UnsafeAncestor {
                dir: a.to_path_buf(),
                of: dir.to_path_buf(),
                owner: meta.uid(),
                mode,
                euid: me,
            });
        }
    }
    Ok(())
}

/// Creates (mode `mode` exactly, whatever the umask) or verifies one
/// private directory owned by the daemon's uid: not a symlink, not owned
/// by another uid, not writable by group or others. An existing one with
/// other extra bits (e.g. 0755) is narrowed to `mode`: it is ours.
/// Returns the opened directory.
///
/// # Errors
/// [`DirError`] saying which check failed and how to fix it.
pub fn private_dir(dir: &Path, role: &'static str, mode: u32) -> Result<File, DirError> {
    match DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err("creating", dir)(e)),
    }
    let lmeta = fs::symlink_metadata(dir).map_err(io_err("inspecting", dir))?;
    if lmeta.file_type().is_symlink() {
        return Err(DirError::Symlink {
            dir: dir.to_path_buf(),
            role,
        });
    }
    if !lmeta.is_dir() {
        return Err(DirError::NotADirectory { dir: dir.to_path_buf() });
    }
    let file = open_dir_nofollow(dir).map_err(io_err("opening", dir))?;
    let meta = file.metadata().map_err(io_err("inspecting", dir))?;
    let me = euid();
    if meta.uid() != me {
        return Err(DirError::ForeignOwner {
            dir: dir.to_path_buf(),
            role,
            owner: meta.uid(),
            euid: me,
        });
    }
    let found = meta.mode() & 0o7777;
    if found & GROUP_OTHER_WRITE != 0 {
        return Err(DirError::Writable {
            dir: dir.to_path_buf(),
            role,
            mode: found,
            fix: format!(
                "check its content for files you did not put there, then `chmod {mode:04o} {}`",
                dir.display()
            ),
        });
    }
    if found != mode {
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(io_err("chmod", dir))?;
    }
    Ok(file)
}

/// The state directory (`<root>/var/hero_livekit`), opened after checking
/// its ancestors and itself (see [`private_dir`]); missing ancestors are
/// created first.
///
/// # Errors
/// [`DirError`] naming the directory and the fix.
pub fn state_dir(dir: &Path) -> Result<File, DirError> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
    }
    check_ancestors(dir)?;
    private_dir(dir, "state", 0o700)
}

/// Prepares the socket's directory: created 0700 (0750 and group `group`
/// with `--socket-group`) when missing; an existing one is used as it is
/// when owned by the daemon's uid or root and not writable by group or
/// others, and is never chmod-ed or chown-ed. Returns whether this call
/// created it.
///
/// # Errors
/// [`DirError`] naming the directory and the fix.
pub fn socket_dir(dir: &Path, group: Option<Gid>) -> Result<bool, DirError> {
    let mode = if group.is_some() { 0o750 } else { 0o700 };
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
    }
    let created = match DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(io_err("creating", dir)(e)),
    };
    let lmeta = fs::symlink_metadata(dir).map_err(io_err("inspecting", dir))?;
    if lmeta.file_type().is_symlink() {
        return Err(DirError::Symlink {
            dir: dir.to_path_buf(),
            role: "socket",
        });
    }
    if !lmeta.is_dir() {
        return Err(DirError::NotADirectory { dir: dir.to_path_buf() });
    }
    let file = open_dir_nofollow(dir).map_err(io_err("opening", dir))?;
    if created {
        // The umask may have narrowed the new directory: set it exactly.
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(io_err("chmod", dir))?;
        if let Some(g) = group {
            chown(dir, None, Some(g)).map_err(|e| io_err("chown", dir)(e.into()))?;
        }
        return Ok(true);
    }
    let meta = file.metadata().map_err(io_err("inspecting", dir))?;
    let me = euid();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(DirError::ForeignOwner {
            dir: dir.to_path_buf(),
            role: "socket",
            owner: meta.uid(),
            euid: me,
        });
    }
    let found = meta.mode() & 0o7777;
    if found & GROUP_OTHER_WRITE != 0 {
        return Err(DirError::Writable {
            dir: dir.to_path_buf(),
            role: "socket",
            mode: found,
            fix: format!(
                "give the socket a directory of its own, e.g. `--socket {}`; the daemon creates it 0700 and never changes the mode of a directory it did not create",
                dir.join("hero_livekit_server").join("rpc.sock").display()
            ),
        });
    }
    if let Some(g) = group {
        if meta.gid() != g.as_raw() || found & 0o050 != 0o050 {
            tracing::warn!(
                dir = %dir.display(),
                "--socket-group {} members cannot reach the socket through this existing directory (group {}, mode {found:04o}); \
                 the daemon does not change a directory it did not create: `chgrp {} {} && chmod 0750 {}`",
                g, meta.gid(), g, dir.display(), dir.display()
            );
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).expect("stat").mode() & 0o7777
    }

    #[test]
    fn a_new_private_dir_is_0700_and_a_wide_own_one_is_narrowed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = tmp.path().join("state");
        private_dir(&d, "state", 0o700).expect("create");
        assert_eq!(mode(&d), 0o700);
        fs::set_permissions(&d, Permissions::from_mode(0o755)).expect("chmod");
        private_dir(&d, "state", 0o700).expect("narrow");
        assert_eq!(mode(&d), 0o700);
    }

    #[test]
    fn a_writable_or_symlinked_private_dir_is_refused_and_left_alone() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = tmp.path().join("state");
        fs::create_dir(&d).expect("mkdir");
        fs::set_permissions(&d, Permissions::from_mode(0o777)).expect("chmod");
        let e = private_dir(&d, "state", 0o700).expect_err("world-writable");
        assert!(matches!(e, DirError::Writable { mode: 0o777, .. }), "{e}");
        assert!(e.to_string().contains(&d.display().to_string()), "{e}");
        assert_eq!(mode(&d), 0o777, "not touched");

        let victim = tmp.path().join("victim");
        fs::create_dir(&victim).expect("mkdir");
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).expect("symlink");
        let e = private_dir(&link, "state", 0o700).expect_err("symlink");
        assert!(matches!(e, DirError::Symlink { .. }), "{e}");
    }

    #[test]
    fn an_ancestor_writable_by_others_without_sticky_bit_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let open = tmp.path().join("open");
        fs::create_dir(&open).expect("mkdir");
        fs::set_permissions(&open, Permissions::from_mode(0o777)).expect("chmod");
        let e = state_dir(&open.join("var").join("hero_livekit")).expect_err("unsafe ancestor");
        assert!(matches!(e, DirError::UnsafeAncestor { .. }), "{e}");
        fs::set_permissions(&open, Permissions::from_mode(0o1777)).expect("chmod");
        state_dir(&open.join("var").join("hero_livekit")).expect("sticky is fine");
    }

    #[test]
    fn an_existing_shared_socket_dir_is_refused_and_its_mode_kept() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let shared = tmp.path().join("shared");
        fs::create_dir(&shared).expect("mkdir");
        fs::set_permissions(&shared, Permissions::from_mode(0o1777)).expect("chmod");
        let e = socket_dir(&shared, None).expect_err("world-writable");
        assert!(e.to_string().contains("directory of its own"), "{e}");
        assert_eq!(mode(&shared), 0o1777);
        let own = shared.join("mine");
        assert!(socket_dir(&own, None).expect("created"));
        assert_eq!(mode(&own), 0o700);
        fs::set_permissions(&own, Permissions::from_mode(0o711)).expect("chmod");
        assert!(!socket_dir(&own, None).expect("existing, used as is"));
        assert_eq!(mode(&own), 0o711, "an existing directory keeps its mode");
    }
}
