//! Child logs: opening, size rotation and tail. All functions are blocking;
//! the supervisor calls them from `spawn_blocking`.
//!
//! Rotation is copy-then-truncate, not rename: a child may outlive the daemon
//! and keeps writing through its own `O_APPEND` descriptor, which would keep
//! following a renamed file. Truncating the live file makes the child's next
//! append land at offset 0 of the same inode. Lines written between the copy
//! and the truncation are lost; that window is one file copy long.

use std::ffi::OsStr;
use std::fs::{DirBuilder, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

use crate::dirs::{at_parent, At};

/// Default size above which a log is rotated.
pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;
/// Default number of rotated copies kept (`.1` newest .. `.5` oldest).
pub const DEFAULT_KEEP: usize = 5;

/// Longest stretch read backwards by [`tail`], so one enormous line cannot
/// make a `logs` call read a whole file.
const TAIL_MAX_BYTES: u64 = 4 * 1024 * 1024;

/// Opens `path` for appending (created 0600; parent created 0700), with
/// `O_NOFOLLOW`: a symlink (or anything but a regular file) in the log's
/// place is first replaced by a fresh empty log through a rename, so a
/// child's output never lands in the link's target.
///
/// # Errors
/// The directory or file cannot be created or opened.
pub fn open_append(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let (at, name) = at_parent(path)?;
    let open = || {
        at.file(
            &name,
            OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CREAT | OFlag::O_NONBLOCK,
            0o600,
        )
    };
    let file = match open() {
        Ok(f) if f.metadata()?.is_file() => f,
        Ok(_) => {
            replace_with_empty(&at, &name, path)?;
            open()?
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            replace_with_empty(&at, &name, path)?;
            open()?
        }
        Err(e) => return Err(e),
    };
    // O_NONBLOCK kept a FIFO from hanging the open; a regular file's
    // writes never block anyway, and children expect blocking descriptors.
    clear_nonblock(&file)?;
    Ok(file)
}

fn clear_nonblock(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Puts an empty 0600 file in `path`'s place by renaming a new one over
/// whatever is there (a symlink is replaced, its target untouched).
fn replace_with_empty(at: &At, name: &OsStr, path: &Path) -> io::Result<()> {
    tracing::warn!(log = %path.display(), "replacing what is not a regular file in a log's place");
    let (tmp, _) = at.temp(&format!(".{}", name.to_string_lossy()), 0o600)?;
    at.rename(&tmp, name).inspect_err(|_| {
        let _ = at.remove(&tmp);
    })
}

/// Opens an existing log for reading or truncation without following a
/// symlink in its place.
fn open_nofollow(path: &Path, write: bool) -> io::Result<File> {
    let (at, name) = at_parent(path)?;
    let access = if write { OFlag::O_WRONLY } else { OFlag::O_RDONLY };
    at.file(&name, access | OFlag::O_NONBLOCK, 0)
}

/// `<path>.<n>`, e.g. `logs/lk-backend.log.1`.
pub fn rotated_path(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Rotates `path` when it is larger than `max_bytes`; returns whether it did.
/// A missing log is not an error (the child has not written yet).
///
/// # Errors
/// The log exists but cannot be copied or truncated.
pub fn rotate_if_needed(path: &Path, max_bytes: u64, keep: usize) -> io::Result<bool> {
    let (at, name) = match at_parent(path) {
        Ok(found) => found,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    match at.stat(&name) {
        Ok(st) if (st.st_mode & libc::S_IFMT) == libc::S_IFREG && st.st_size as u64 > max_bytes => {
            rotate(path, keep).map(|()| true)
        }
        Ok(_) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Shifts `.1`..`.keep-1` up by one (the oldest falls off), copies the live
/// log to `.1` and truncates the live log in place.
///
/// # Errors
/// A copy, rename or the truncation failed; the live log is only truncated
/// after its copy is complete under `.1`.
pub fn rotate(path: &Path, keep: usize) -> io::Result<()> {
    let (at, name) = at_parent(path)?;
    let rotated = |n: usize| {
        let mut r = name.clone();
        r.push(format!(".{n}"));
        r
    };
    if keep > 0 {
        for n in (1..keep).rev() {
            match at.rename(&rotated(n), &rotated(n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        // Copy under a temporary name so `.1` is never a partial copy.
        let mut from = at.file(&name, OFlag::O_RDONLY | OFlag::O_NONBLOCK, 0)?;
        let (tmp, mut to) = at.temp(&format!(".{}", rotated(1).to_string_lossy()), 0o600)?;
        let copied = io::copy(&mut from, &mut to).and_then(|_| at.rename(&tmp, &rotated(1)));
        if let Err(e) = copied {
            let _ = at.remove(&tmp);
            return Err(e);
        }
    }
    at.file(&name, OFlag::O_WRONLY | OFlag::O_NONBLOCK, 0)?.set_len(0)
}

/// The last `lines` lines of `path` (fewer if the file has fewer), read
/// backwards at most [`TAIL_MAX_BYTES`]; see [`tail_bounded`].
///
/// # Errors
/// The file cannot be opened or read.
pub fn tail(path: &Path, lines: usize) -> io::Result<Vec<String>> {
    tail_bounded(path, lines, TAIL_MAX_BYTES)
}

/// The last `lines` lines of `path`, reading at most `max_bytes` from its
/// end: a `logs` call costs one buffer of at most that size (suffixes of
/// growing length are read into the same buffer, so the bytes are never
/// copied between buffers) plus the lines it answers with. A first line cut
/// by the limit is left out.
///
/// # Errors
/// The file cannot be opened or read.
pub fn tail_bounded(path: &Path, lines: usize, max_bytes: u64) -> io::Result<Vec<String>> {
    if lines == 0 {
        return Ok(Vec::new());
    }
    let mut file = open_nofollow(path, false)?;
    let len = file.metadata()?.len();
    let mut want: u64 = 8 * 1024;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let take = want.min(len).min(max_bytes);
        let start = len - take;
        buf.clear();
        buf.resize(usize::try_from(take).map_err(io::Error::other)?, 0);
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf)?;
        // More than `lines` newlines guarantee `lines` complete lines even
        // when the first one read is cut and the file ends with a newline.
        let enough = bytecount(&buf, b'\n') > lines;
        if start == 0 || enough || take >= max_bytes {
            let from = if start > 0 {
                buf.iter().position(|b| *b == b'\n').map_or(buf.len(), |i| i + 1)
            } else {
                0
            };
            let text = String::from_utf8_lossy(&buf[from..]);
            let all: Vec<&str> = text.lines().collect();
            let skip = all.len().saturating_sub(lines);
            return Ok(all[skip..].iter().map(|s| (*s).to_owned()).collect());
        }
        want = want.saturating_mul(8);
    }
}

fn bytecount(hay: &[u8], needle: u8) -> usize {
    hay.iter().filter(|b| **b == needle).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn tail_bounded_reads_at_most_its_limit_and_drops_a_cut_first_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.log");
        let body: String = (0..5000).map(|i| format!("line number {i:05}\n")).collect();
        fs::write(&path, &body).expect("write");
        // 18 bytes a line: 100 bytes hold 5 whole lines and a cut one.
        let got = tail_bounded(&path, 1000, 100).expect("tail");
        assert_eq!(got.len(), 5, "{got:?}");
        assert_eq!(got.last().map(String::as_str), Some("line number 04999"));
        assert_eq!(got.first().map(String::as_str), Some("line number 04995"));
    }

    #[test]
    fn tail_returns_the_last_lines_across_chunk_boundaries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.log");
        let body: String = (0..5000).map(|i| format!("line number {i:05}\n")).collect();
        fs::write(&path, &body).expect("write");
        let cases = [(1, 4999), (3, 4997), (1500, 3500), (5000, 0), (9000, 0)];
        for (n, first) in cases {
            let got = tail(&path, n).expect("tail");
            assert_eq!(got.len(), n.min(5000), "n={n}");
            assert_eq!(got[0], format!("line number {first:05}"), "n={n}");
            assert_eq!(got.last().map(String::as_str), Some("line number 04999"));
        }
        assert!(tail(&path, 0).expect("tail 0").is_empty());
    }

    #[test]
    fn tail_handles_no_trailing_newline_and_empty_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.log");
        fs::write(&path, "a\nb\nc").expect("write");
        assert_eq!(tail(&path, 2).expect("tail"), vec!["b", "c"]);
        fs::write(&path, "").expect("write");
        assert!(tail(&path, 5).expect("tail").is_empty());
        assert!(tail(&dir.path().join("missing.log"), 5).is_err());
    }

    #[test]
    fn a_symlink_in_place_of_a_log_is_replaced_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").expect("victim");
        let logs = dir.path().join("logs");
        fs::create_dir(&logs).expect("mkdir");
        let path = logs.join("c.log");
        std::os::unix::fs::symlink(&victim, &path).expect("symlink");
        let mut f = open_append(&path).expect("open");
        writeln!(f, "child output").expect("write");
        assert!(fs::symlink_metadata(&path).expect("stat").is_file());
        assert_eq!(fs::read(&path).expect("log"), b"child output\n");
        assert_eq!(fs::read(&victim).expect("victim"), b"precious");
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::os::unix::fs::symlink(&victim, logs.join("d.log")).expect("symlink");
        assert!(tail(&logs.join("d.log"), 5).is_err(), "tail does not follow it either");
    }

    #[test]
    fn rotation_keeps_n_copies_and_truncates_the_live_inode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("logs").join("c.log");
        let mut live = open_append(&path).expect("open");
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        for round in 0..8 {
            writeln!(live, "round {round} {}", "x".repeat(100)).expect("write");
            assert!(rotate_if_needed(&path, 50, 3).expect("rotate"));
            // The descriptor opened before the rotation still writes into
            // the live file, at its new end.
            assert_eq!(fs::metadata(&path).expect("stat").len(), 0);
        }
        writeln!(live, "after").expect("write");
        assert_eq!(fs::read_to_string(&path).expect("read"), "after\n");
        for (n, round) in [(1, 7), (2, 6), (3, 5)] {
            let text = fs::read_to_string(rotated_path(&path, n)).expect("rotated copy");
            assert!(text.starts_with(&format!("round {round} ")), ".{n}: {text}");
        }
        assert!(!rotated_path(&path, 4).exists(), "only 3 kept");
        assert!(!rotate_if_needed(&path, 50, 3).expect("small log"), "under the limit");
    }
}
