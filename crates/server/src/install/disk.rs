//! Blocking file operations of the installer. Everything here runs inside
//! `spawn_blocking`; the async orchestration never calls it directly.
//!
//! The install is atomic because every new file is written to a temporary
//! file in the destination's own directory, fsynced, and renamed over the
//! final name, then the directory is fsynced. A temporary file is a
//! [`NamedTempFile`], so any error, panic or cancelled future removes it.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

use super::InstallRecord;

/// Records are a few hundred bytes; anything much larger is not ours.
const RECORD_MAX_BYTES: u64 = 64 * 1024;

/// Temporary files older than this in the binary's directory are leftovers of
/// an install that was killed; an install in progress writes to its file
/// continuously and installs are serialized by the daemon.
const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);

/// The directory a file lives in (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn temp_prefix(target: &Path) -> String {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(".{name}.")
}

const TEMP_SUFFIX: &str = ".part";

/// A new temporary file beside `target`, so that the final rename stays on
/// one filesystem. Hidden, and named after the target so that stale ones can
/// be recognised.
pub(crate) fn temp_beside(target: &Path) -> io::Result<NamedTempFile> {
    tempfile::Builder::new()
        .prefix(&temp_prefix(target))
        .suffix(TEMP_SUFFIX)
        .tempfile_in(parent_dir(target))
}

/// Creates the binary's directory when missing.
pub(crate) fn ensure_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)
}

/// Creates the record's directory when missing: the state directory is 0700
/// (SPEC section 3), its parents keep the default mode so that shared
/// directories such as `var/sockets` stay reachable.
fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(parent_dir(dir))?;
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

/// Removes temporary files a killed install left beside `target`.
/// Best effort: a file that cannot be removed is only reported.
pub(crate) fn remove_stale_temps(target: &Path, now: SystemTime) {
    let dir = parent_dir(target);
    let prefix = temp_prefix(target);
    let Ok(entries) = fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(&prefix) && name.ends_with(TEMP_SUFFIX)) {
            continue;
        }
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| now.duration_since(modified).ok())
            .is_some_and(|age| age >= STALE_TEMP_AGE);
        if stale {
            if let Err(e) = fs::remove_file(entry.path()) {
                tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove a stale install temporary file");
            }
        }
    }
}

/// Why a bounded copy stopped.
#[derive(Debug)]
pub(crate) enum CopyError {
    Read(io::Error),
    Write(io::Error),
    /// More than the limit was offered.
    TooLarge,
}

/// Copies at most `limit` bytes from `from` to `to`, hashing them, and calls
/// `on_progress` with the running count. Returns the sha256 (hex) and length.
pub(crate) fn copy_hashing(
    mut from: impl Read,
    to: &mut impl Write,
    limit: u64,
    on_progress: &mut dyn FnMut(u64),
) -> Result<(String, u64), CopyError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut done: u64 = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        done += n as u64;
        if done > limit {
            return Err(CopyError::TooLarge);
        }
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n]).map_err(CopyError::Write)?;
        on_progress(done);
    }
    Ok((hex::encode(hasher.finalize()), done))
}

/// sha256 (hex) of a file, or `None` when it does not exist.
pub(crate) fn hash_file(path: &Path) -> io::Result<Option<String>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let (sha, _) = copy_hashing(file, &mut io::sink(), u64::MAX, &mut |_| {}).map_err(|e| match e {
        CopyError::Read(e) | CopyError::Write(e) => e,
        CopyError::TooLarge => io::Error::other("file too large"),
    })?;
    Ok(Some(sha))
}

/// The first bytes of a file, to tell a gzip stream from a bare binary.
pub(crate) fn head(file: &File, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(len);
    file.take(len as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Makes `tmp` the executable at `target`: mode 0755, fsync, rename, fsync of
/// the directory. A process running the old binary keeps its inode.
pub(crate) fn install_executable(tmp: NamedTempFile, target: &Path) -> io::Result<()> {
    tmp.as_file().set_permissions(fs::Permissions::from_mode(0o755))?;
    tmp.as_file().sync_all()?;
    tmp.persist(target).map_err(|e| e.error)?;
    sync_dir(&parent_dir(target))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads the install record; `None` when absent, unreadable or not ours.
pub(crate) fn read_record(path: &Path) -> Option<InstallRecord> {
    let file = File::open(path).ok()?;
    let mut bytes = Vec::new();
    file.take(RECORD_MAX_BYTES).read_to_end(&mut bytes).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Writes the install record atomically with mode 0600, like every file of
/// the state directory.
pub(crate) fn write_record(path: &Path, record: &InstallRecord) -> io::Result<()> {
    let dir = parent_dir(path);
    ensure_private_dir(&dir)?;
    let mut bytes = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
    bytes.push(b'\n');
    let mut tmp = temp_beside(path)?;
    tmp.as_file().set_permissions(fs::Permissions::from_mode(0o600))?;
    tmp.write_all(&bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(&dir)
}

/// Size and executable bit of the installed binary, without reading it.
pub(crate) fn executable_size(path: &Path) -> Option<u64> {
    let meta = fs::metadata(path).ok()?;
    (meta.is_file() && meta.mode() & 0o111 != 0).then_some(meta.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(version: &str) -> InstallRecord {
        InstallRecord {
            version: version.into(),
            sha256: "a".repeat(64),
            source: "/src".into(),
            installed_unix_ms: 7,
            size: 3,
            artifact_sha256: None,
        }
    }

    #[test]
    fn install_record_round_trips_with_private_dir_and_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("var/hero_livekit/install.json");
        write_record(&path, &record("1.0.0")).expect("first write");
        write_record(&path, &record("1.0.1")).expect("replace");
        assert_eq!(read_record(&path), Some(record("1.0.1")));
        let mode = |p: &Path| fs::metadata(p).expect("stat").mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("var/hero_livekit")), 0o700);
        assert_eq!(mode(&dir.path().join("var")) & 0o700, 0o700);
        let names: Vec<_> = fs::read_dir(path.parent().expect("dir"))
            .expect("ls")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("install.json")],
            "no temporary file left"
        );
    }

    #[test]
    fn unreadable_or_foreign_records_read_as_absent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("install.json");
        assert_eq!(read_record(&path), None);
        fs::write(&path, b"{\"version\": 1}").expect("write");
        assert_eq!(read_record(&path), None);
    }

    #[test]
    fn copy_stops_beyond_the_limit() {
        let data = vec![7u8; 1000];
        let mut out = Vec::new();
        let mut seen = Vec::new();
        let got = copy_hashing(&data[..], &mut out, 999, &mut |n| seen.push(n));
        assert!(matches!(got, Err(CopyError::TooLarge)));
        let (sha, len) = copy_hashing(&data[..], &mut out, 1000, &mut |_| {}).expect("fits");
        assert_eq!(len, 1000);
        assert_eq!(sha, hex::encode(Sha256::digest(&data)));
    }

    #[test]
    fn only_stale_temporaries_of_this_target_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("livekit-server");
        let fresh = temp_beside(&target)
            .expect("temp")
            .into_temp_path()
            .keep()
            .expect("keep");
        let stale = temp_beside(&target)
            .expect("temp")
            .into_temp_path()
            .keep()
            .expect("keep");
        let foreign = dir.path().join(".other.x.part");
        fs::write(&foreign, b"x").expect("write");
        let old = SystemTime::now() - STALE_TEMP_AGE - Duration::from_secs(5);
        File::options()
            .write(true)
            .open(&stale)
            .expect("open")
            .set_modified(old)
            .expect("age it");
        File::options()
            .write(true)
            .open(&foreign)
            .expect("open")
            .set_modified(old)
            .expect("age it");
        remove_stale_temps(&target, SystemTime::now());
        assert!(fresh.exists(), "a recent temporary may belong to a running install");
        assert!(!stale.exists(), "an old temporary is a leftover");
        assert!(foreign.exists(), "files of other targets are not ours");
    }
}
