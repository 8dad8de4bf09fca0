//! The imperative shell: reading the state directory and writing the
//! triple atomically.
//!
//! Everything here is small-file I/O with `std::fs`. Callers on the async
//! runtime run [`StateDir::observe`] and [`StateDir::apply`] inside
//! `spawn_blocking` (they fsync); [`FileCache::check`] costs one
//! non-blocking inotify read (three `stat` calls without inotify) when
//! nothing changed and may run inline (see its docs).

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::check::{check_hashed, Consistency};
use super::fault::{self, Step};
use super::heal::{FileObs, HealPlan, Observed};
use super::model::sha256_hex;
use super::render::{render, Rendered, TripleFile};

/// Mode of the state directory and its subdirectories.
pub const DIR_MODE: u32 = 0o700;
/// Mode of each file of the triple (they hold the secret).
pub const FILE_MODE: u32 = 0o600;
/// A triple file larger than this is not read (it is garbage, and reading
/// it whole would let a stray file exhaust the daemon's memory).
pub const MAX_FILE_SIZE: u64 = 1 << 20;
/// Subdirectories [`StateDir::ensure`] creates.
pub const SUBDIRS: [&str; 3] = ["data", "logs", "children"];

const TEMP_SUFFIX: &str = ".tmp";

/// Writing one file of the triple failed. The file under its final name is
/// the previous one (or, when only the directory fsync failed, the new one
/// whole); no temp file is left behind.
#[derive(Debug, thiserror::Error)]
#[error("writing {file}: {source}")]
pub struct WriteError {
    /// The file whose write failed.
    pub file: TripleFile,
    /// The OS error.
    pub source: io::Error,
    /// Files of the same apply already replaced before the failure, in
    /// write order (their readers need a restart once the heal completes).
    pub written: Vec<TripleFile>,
}

/// The state directory (`Paths::state_dir`) holding the triple.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
    files: [PathBuf; 3],
}

impl StateDir {
    /// The triple under `state_dir`. Touches nothing.
    pub fn new(state_dir: PathBuf) -> StateDir {
        let files = TripleFile::ALL.map(|f| state_dir.join(f.name()));
        StateDir { dir: state_dir, files }
    }

    /// The directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where `file` lives.
    pub fn path(&self, file: TripleFile) -> &Path {
        &self.files[file.index()]
    }

    /// Creates the directory (mode 0700, also narrowing the mode of an
    /// existing one of ours) and its `data/`, `logs/` and `children/`
    /// subdirectories, after checking that the daemon can trust it (see
    /// [`crate::dirs::state_dir`]: owned by the daemon's uid, not writable
    /// by anyone else, no ancestor writable by another uid, not a symlink).
    /// A symlink in place of a subdirectory is replaced by a directory,
    /// never followed.
    ///
    /// # Errors
    /// A refusal (`PermissionDenied`, naming the directory and the fix), or
    /// the OS error of the first directory that cannot be created or chmod-ed.
    pub fn ensure(&self) -> io::Result<()> {
        let refused = |e: crate::dirs::DirError| io::Error::new(io::ErrorKind::PermissionDenied, e.to_string());
        crate::dirs::state_dir(&self.dir).map_err(refused)?;
        for sub in SUBDIRS {
            let path = self.dir.join(sub);
            if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
                tracing::warn!(dir = %path.display(), "replacing a symlink in place of a state subdirectory");
                fs::remove_file(&path)?;
            }
            crate::dirs::private_dir(&path, "state", DIR_MODE).map_err(refused)?;
        }
        Ok(())
    }

    /// Reads the three files as they are now.
    /// Reads the three files as they are now, relative to the directory
    /// opened once (see [`observe_file`] for what is refused).
    pub fn observe(&self) -> Observed {
        let dir = match open_dir(&self.dir) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Observed::missing(),
            Err(e) => {
                let why = || FileObs::Unreadable(format!("the state directory: {e}"));
                return Observed {
                    runtime_json: why(),
                    livekit_yaml: why(),
                    backend_env: why(),
                };
            }
        };
        let at = |f: TripleFile| read_obs(open_at(&dir, f.name()));
        Observed {
            runtime_json: at(TripleFile::RuntimeJson),
            livekit_yaml: at(TripleFile::LivekitYaml),
            backend_env: at(TripleFile::BackendEnv),
        }
    }

    /// Carries out `plan`: writes `plan.writes` (in write order, each
    /// atomically: see [`StateDir::write_file`]) from `plan.config`, and
    /// restores mode 0600 on any file of the triple that lost it. A plan
    /// without writes writes and fsyncs nothing.
    ///
    /// # Errors
    /// The first failed write; the files after it are not attempted.
    pub fn apply(&self, plan: &HealPlan) -> Result<Vec<TripleFile>, WriteError> {
        let mut written = Vec::with_capacity(plan.writes.len());
        for file in TripleFile::ALL.into_iter().filter(|f| plan.writes.contains(f)) {
            if let Err(mut e) = self.write_file(file, &render(&plan.config, file)) {
                e.written = written;
                return Err(e);
            }
            written.push(file);
        }
        self.fix_modes(&written);
        Ok(written)
    }

    /// Replaces `file` with `bytes` atomically: a temp file in the same
    /// directory (unique name, created 0600 with `O_EXCL`), written and
    /// fsynced, renamed over the final name, then the directory fsynced so
    /// the rename itself survives a power loss. Readers see the old bytes
    /// or the new bytes, never a mix.
    ///
    /// # Errors
    /// [`WriteError`] naming the file; the temp file is removed.
    pub(crate) fn write_file(&self, file: TripleFile, bytes: &[u8]) -> Result<(), WriteError> {
        let i = file.index();
        let fail = |source| WriteError {
            file,
            source,
            written: Vec::new(),
        };
        // Every step is relative to the directory opened once (never
        // through a symlink in its place): the temp file, the rename and
        // the fsync all land in the directory that was checked.
        let dir = open_dir(&self.dir).map_err(fail)?;
        fault::point(fault::name(i, Step::BeforeCreate));
        let (temp_name, mut temp) = create_temp(&dir, file).map_err(fail)?;
        let mut guard = TempGuard {
            dir: &dir,
            name: temp_name,
            armed: true,
        };
        fault::point(fault::name(i, Step::AfterCreate));
        let half = bytes.len() / 2;
        temp.write_all(&bytes[..half]).map_err(fail)?;
        fault::point(fault::name(i, Step::MidWrite));
        temp.write_all(&bytes[half..]).map_err(fail)?;
        fault::point(fault::name(i, Step::AfterWrite));
        temp.sync_all().map_err(fail)?;
        fault::point(fault::name(i, Step::AfterFsync));
        drop(temp);
        nix::fcntl::renameat(&dir, guard.name.as_str(), &dir, file.name()).map_err(|e| fail(e.into()))?;
        guard.armed = false;
        fault::point(fault::name(i, Step::AfterRename));
        dir.sync_all().map_err(fail)?;
        fault::point(fault::name(i, Step::AfterDirsync));
        Ok(())
    }

    /// Removes temp files a crashed writer left in the directory, returning
    /// how many. Call it at boot while holding the daemon's instance lock:
    /// another live writer's temp file would be removed too.
    ///
    /// # Errors
    /// The directory cannot be listed, or a temp file cannot be removed.
    pub fn sweep_temp_files(&self) -> io::Result<usize> {
        let dir = open_dir(&self.dir)?;
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_str().is_some_and(is_temp_name) {
                nix::unistd::unlinkat(&dir, name.as_os_str(), nix::unistd::UnlinkatFlags::NoRemoveDir)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Restores mode 0600 on files of the triple not just written (those
    /// are created 0600). A failure is logged, not returned: the content
    /// is right and the next heal retries.
    fn fix_modes(&self, written: &[TripleFile]) {
        let Ok(dir) = open_dir(&self.dir) else {
            return;
        };
        for file in TripleFile::ALL.into_iter().filter(|f| !written.contains(f)) {
            // Through a descriptor opened without following a symlink: a
            // link in the file's place must not make us chmod its target.
            let Ok(f) = open_at(&dir, file.name()) else {
                continue;
            };
            let Ok(meta) = f.metadata() else {
                continue;
            };
            let mode = meta.permissions().mode() & 0o7777;
            if meta.is_file() && mode != FILE_MODE {
                match f.set_permissions(Permissions::from_mode(FILE_MODE)) {
                    Ok(()) => tracing::warn!(file = file.name(), old_mode = format!("{mode:o}"), "restored mode 0600"),
                    Err(e) => {
                        tracing::warn!(file = file.name(), error = %e, "cannot restore mode 0600")
                    }
                }
            }
        }
    }
}

/// Opens `path` for reading without following a symlink in its place
/// (`ELOOP` then) and without blocking on a FIFO.
fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// `name` in `dir`, opened for reading as [`open_nofollow`] does.
fn open_at(dir: &File, name: &str) -> io::Result<File> {
    use nix::fcntl::OFlag;
    let fd = nix::fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    Ok(File::from(fd))
}

/// The directory itself, never a symlink in its place.
fn open_dir(dir: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)
}

/// Whether `name` is one of our temp files: `.<triple file>.<pid>.<n>.tmp`.
fn is_temp_name(name: &str) -> bool {
    name.strip_prefix('.')
        .and_then(|n| n.strip_suffix(TEMP_SUFFIX))
        .is_some_and(|n| {
            TripleFile::ALL
                .iter()
                .any(|f| n.strip_prefix(f.name()).is_some_and(|r| r.starts_with('.')))
        })
}

fn create_temp(dir: &File, file: TripleFile) -> io::Result<(String, File)> {
    use nix::fcntl::OFlag;
    let pid = std::process::id();
    let mut last_err = None;
    // A random name that nobody can predict, created with O_EXCL and
    // O_NOFOLLOW: a file or symlink planted under a guessed name makes the
    // attempt fail (and the next name is tried), it is never written through.
    for _ in 0..16 {
        let n: u64 = rand::random();
        let name = format!(".{}.{pid}.{n:016x}{TEMP_SUFFIX}", file.name());
        let opened = nix::fcntl::openat(
            dir,
            name.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::from_bits_truncate(FILE_MODE),
        );
        match opened {
            Ok(fd) => {
                let f = File::from(fd);
                // The umask may have narrowed the mode; the file must be
                // readable by its owner and nobody else, exactly.
                if let Err(e) = f.set_permissions(Permissions::from_mode(FILE_MODE)) {
                    let _ = nix::unistd::unlinkat(dir, name.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
                    return Err(e);
                }
                return Ok((name, f));
            }
            Err(nix::errno::Errno::EEXIST) => last_err = Some(io::Error::from(nix::errno::Errno::EEXIST)),
            Err(e) => return Err(e.into()),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("no free temp file name")))
}

/// Removes the temp file on drop unless the rename consumed it.
struct TempGuard<'a> {
    dir: &'a File,
    name: String,
    armed: bool,
}

impl Drop for TempGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = nix::unistd::unlinkat(self.dir, self.name.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
        }
    }
}

/// Reads one file of the triple. Opens non-blocking so that a FIFO put in
/// a file's place cannot hang the daemon, never follows a symlink in its
/// place, and refuses anything that is not a regular file owned by the
/// daemon's uid or is larger than [`MAX_FILE_SIZE`]. Each refusal is
/// `Unreadable`, so the planner rewrites the file (by rename, replacing a
/// symlink rather than writing through it) and never salvages a
/// credential that another uid could have planted.
fn observe_file(path: &Path) -> FileObs {
    read_obs(open_nofollow(path))
}

/// What an opened (or failed to open) file of the triple holds.
fn read_obs(opened: io::Result<File>) -> FileObs {
    let file = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return FileObs::Missing,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return FileObs::Unreadable("a symlink, not followed".into())
        }
        Err(e) => return FileObs::Unreadable(e.to_string()),
    };
    let size = match file.metadata() {
        Ok(m) if !m.is_file() => return FileObs::Unreadable("not a regular file".into()),
        Ok(m) if m.uid() != nix::unistd::Uid::effective().as_raw() => {
            return FileObs::Unreadable(format!("owned by uid {}, not the daemon's", m.uid()))
        }
        Ok(m) if m.len() > MAX_FILE_SIZE => return FileObs::Unreadable("larger than 1 MiB".into()),
        Ok(m) => m.len(),
        Err(e) => return FileObs::Unreadable(e.to_string()),
    };
    // Sized from the stat: one read for the bytes and one for EOF, instead
    // of the small probing reads of an empty buffer.
    let mut bytes = Vec::with_capacity(size as usize + 1);
    match file.take(MAX_FILE_SIZE + 1).read_to_end(&mut bytes) {
        Ok(_) if bytes.len() as u64 > MAX_FILE_SIZE => FileObs::Unreadable("larger than 1 MiB".into()),
        Ok(_) => FileObs::Present(bytes),
        Err(e) => FileObs::Unreadable(e.to_string()),
    }
}

/// What `stat` says about a file: if none of it changed, neither did the
/// content (see [`FileCache`] for the one exception).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stamp {
    Missing,
    File {
        dev: u64,
        ino: u64,
        size: u64,
        mtime: (i64, i64),
        ctime: (i64, i64),
    },
    StatFailed(io::ErrorKind),
}

fn stamp(path: &Path) -> Stamp {
    // The link itself, not its target: a symlink in a file's place is
    // what observe_file sees too.
    match fs::symlink_metadata(path) {
        Ok(m) => Stamp::File {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Stamp::Missing,
        Err(e) => Stamp::StatFailed(e.kind()),
    }
}

/// A cheap observer of the triple for the hot `health` path.
///
/// Each [`FileCache::check`] `stat`s the three files and re-reads and
/// re-hashes only a file whose (device, inode, size, mtime, ctime) changed
/// since the last call; when none changed and the config is the same, it
/// returns the previous [`Consistency`] (an `Arc` clone, no allocation).
/// Three `stat`s of a local directory cost a few microseconds, which is why
/// the fast path may run inline on the async runtime; a changed file is
/// read (at most 1 MiB), so callers that cannot afford that wrap the call
/// in `spawn_blocking`.
///
/// Tradeoff: a rewrite that keeps the inode and the size and lands within
/// the same timestamp tick as the previous write (file systems stamp with a
/// coarse clock, a few milliseconds) is invisible to `stat`. Every writer
/// of ours replaces files by rename (a new inode), so only a foreign
/// in-place edit can hit this; the daemon's periodic full check
/// ([`FileCache::invalidate`] then `check`) catches it.
///
/// Each file is `stat`ed before it is read, so a change racing the read
/// leaves the stamp older than the content and is seen on the next call.
///
/// In front of the `stat`s sits an inotify watch on the state directory:
/// the kernel queues its event before the writer's `write`, `rename` or
/// `chmod` returns, so an empty queue (one non-blocking `read`) proves no
/// file changed since the last check and the three `stat`s are skipped.
/// Without inotify (or after the directory itself moved) every call `stat`s.
#[derive(Debug)]
pub struct FileCache {
    paths: [PathBuf; 3],
    stamps: [Option<Stamp>; 3],
    observed: Observed,
    shas: [Option<String>; 3],
    last: Option<(String, Arc<Consistency>)>,
    watch: Option<DirWatch>,
}

/// A non-blocking inotify watch on one directory.
#[derive(Debug)]
struct DirWatch(nix::sys::inotify::Inotify);

impl DirWatch {
    fn new(dir: &Path) -> Option<DirWatch> {
        use nix::sys::inotify::{AddWatchFlags as F, InitFlags, Inotify};
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
        let mask = F::IN_MODIFY
            | F::IN_ATTRIB
            | F::IN_CLOSE_WRITE
            | F::IN_CREATE
            | F::IN_DELETE
            | F::IN_MOVED_FROM
            | F::IN_MOVED_TO
            | F::IN_DELETE_SELF
            | F::IN_MOVE_SELF;
        inotify.add_watch(dir, mask).ok()?;
        Some(DirWatch(inotify))
    }

    /// Drains the queue. `Some(true)`: something may have changed;
    /// `Some(false)`: nothing did; `None`: the watch is no longer valid
    /// (the directory moved or went away, or the queue overflowed past
    /// recovery) and must be dropped.
    fn changed(&self) -> Option<bool> {
        use nix::sys::inotify::AddWatchFlags as F;
        let mut changed = false;
        loop {
            match self.0.read_events() {
                Ok(events) if events.is_empty() => return Some(changed),
                Ok(events) => {
                    if events
                        .iter()
                        .any(|e| e.mask.intersects(F::IN_IGNORED | F::IN_DELETE_SELF | F::IN_MOVE_SELF))
                    {
                        return None;
                    }
                    // IN_Q_OVERFLOW also lands here: events were lost, so
                    // treat it as a change.
                    changed = true;
                }
                Err(nix::errno::Errno::EAGAIN) => return Some(changed),
                Err(_) => return None,
            }
        }
    }
}

impl FileCache {
    /// A cache of the triple under `state_dir`, empty: the first check reads all.
    pub fn new(state_dir: &Path) -> FileCache {
        FileCache {
            paths: TripleFile::ALL.map(|f| state_dir.join(f.name())),
            stamps: [None; 3],
            observed: Observed::missing(),
            shas: [None, None, None],
            last: None,
            watch: DirWatch::new(state_dir),
        }
    }

    /// Forgets everything, so that the next [`FileCache::check`] re-reads
    /// and re-hashes all three files (the periodic full check).
    pub fn invalidate(&mut self) {
        self.stamps = [None; 3];
        self.last = None;
    }

    /// The consistency of the files on disk with `rendered`.
    pub fn check(&mut self, rendered: &Rendered) -> Arc<Consistency> {
        let quiet = match self.watch.as_ref().map(DirWatch::changed) {
            Some(Some(false)) => true,
            // Re-read all three: an in-place edit within one timestamp tick
            // is invisible to `stat` but not to inotify.
            Some(Some(true)) => {
                self.stamps = [None; 3];
                false
            }
            Some(None) => {
                self.watch = None;
                false
            }
            None => false,
        };
        if quiet && self.stamps.iter().all(Option::is_some) {
            if let Some((hash, consistency)) = &self.last {
                if hash == rendered.in_memory_hash() {
                    return Arc::clone(consistency);
                }
            }
        }
        let mut changed = false;
        for file in TripleFile::ALL {
            let i = file.index();
            let now = stamp(&self.paths[i]);
            if self.stamps[i] != Some(now) {
                let obs = observe_file(&self.paths[i]);
                self.shas[i] = match &obs {
                    FileObs::Present(bytes) => Some(sha256_hex(bytes)),
                    FileObs::Missing | FileObs::Unreadable(_) => None,
                };
                *self.observed.get_mut(file) = obs;
                self.stamps[i] = Some(now);
                changed = true;
            }
        }
        if let Some((hash, consistency)) = &self.last {
            if !changed && hash == rendered.in_memory_hash() {
                return Arc::clone(consistency);
            }
        }
        let consistency = Arc::new(check_hashed(rendered, &self.observed, self.shas.clone()));
        self.last = Some((rendered.in_memory_hash().to_string(), Arc::clone(&consistency)));
        consistency
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
