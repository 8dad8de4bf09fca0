//! The on-disk record of a running child, and its verification.
//!
//! A record lets the next daemon instance find and adopt a child that outlived
//! the previous one. A pid alone proves nothing (pids are reused), so a record
//! also holds the process start time and the identity (device, inode) of the
//! executable it runs; only a process matching all three is ever signalled.

use std::fs::{self, DirBuilder};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use hero_livekit_proto::ProcessName;
use serde::{Deserialize, Serialize};

use super::procfs;
use crate::dirs::At;

/// What the supervisor knows about a child it started, kept as
/// `<children_dir>/<name>.json` while the child runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildRecord {
    /// Which child.
    pub name: ProcessName,
    /// Its pid, which is also its process group and session id.
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat` (clock ticks after boot).
    pub start_time: u64,
    /// The executable it runs, as `/proc/<pid>/exe` named it at spawn.
    pub exe: PathBuf,
    /// Device of that executable. Together with the inode it survives the
    /// file being replaced (install renames a new file over it): the running
    /// process keeps the old inode, and so does the record.
    pub exe_dev: u64,
    /// Inode of that executable.
    pub exe_ino: u64,
    /// Device of the file the spec named as the program when it was
    /// spawned. It differs from `exe_dev`/`exe_ino` when the program is a
    /// wrapper script (the kernel runs its interpreter, then the script
    /// execs the server); `start` compares it with the file at that path now
    /// to tell that the program was replaced. Absent in records of older
    /// daemons, which compared the executable instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_dev: Option<u64>,
    /// Inode of that file (see `program_dev`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_ino: Option<u64>,
    /// sha256 of the config file it was started with.
    pub config_sha256: String,
    /// Wall-clock start, for uptime after adoption.
    pub started_unix_ms: u64,
    /// The port its readiness probe uses.
    pub ready_port: u16,
}

/// The result of checking a record against the live system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// The pid is the very process the record describes.
    Verified,
    /// It is not (or no longer); the reason says what differed.
    Mismatch(String),
}

impl ChildRecord {
    /// Describes the live process `pid` as it is now.
    ///
    /// # Errors
    /// The process is gone or /proc cannot be read.
    pub fn capture(name: ProcessName, pid: u32, config_sha256: &str, ready_port: u16) -> io::Result<ChildRecord> {
        let stat = procfs::read_stat(pid)?;
        let exe_link = format!("/proc/{pid}/exe");
        let exe = fs::read_link(&exe_link)?;
        let meta = fs::metadata(&exe_link)?;
        Ok(ChildRecord {
            name,
            pid,
            start_time: stat.start_time,
            exe,
            exe_dev: meta.dev(),
            exe_ino: meta.ino(),
            program_dev: None,
            program_ino: None,
            config_sha256: config_sha256.to_owned(),
            started_unix_ms: unix_ms_now(),
            ready_port,
        })
    }

    /// This record with the executable `pid` runs now. A wrapper script
    /// execs the real server after the record was captured at spawn; the
    /// next daemon verifies against the final image, so the record must name
    /// it. Blocking (a few small /proc reads).
    ///
    /// # Errors
    /// The process is gone, or its pid now names another process (start
    /// time differs: `InvalidData`).
    pub fn with_current_exe(&self) -> io::Result<ChildRecord> {
        let pid = self.pid;
        let stat = procfs::read_stat(pid)?;
        if stat.start_time != self.start_time {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("pid {pid} is no longer the recorded process"),
            ));
        }
        let exe_link = format!("/proc/{pid}/exe");
        let exe = fs::read_link(&exe_link)?;
        let meta = fs::metadata(&exe_link)?;
        Ok(ChildRecord {
            exe,
            exe_dev: meta.dev(),
            exe_ino: meta.ino(),
            ..self.clone()
        })
    }

    /// `<children_dir>/<name>.json`.
    pub fn path(children_dir: &Path, name: ProcessName) -> PathBuf {
        children_dir.join(format!("{}.json", name.as_str()))
    }

    /// Writes the record atomically (temp file 0600 under a random name,
    /// created with `O_EXCL|O_NOFOLLOW`, fsync, rename, fsync of the
    /// directory), creating `children_dir` (0700) when needed. A symlink in
    /// the record's place is replaced by the rename, never written through.
    /// Blocking.
    ///
    /// # Errors
    /// The directory cannot be created or written (permissions, disk full);
    /// the previous record, if any, is then left intact.
    pub fn write(&self, children_dir: &Path) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        DirBuilder::new().recursive(true).mode(0o700).create(children_dir)?;
        // Every step relative to the directory opened once: a symlink put
        // in place of the record (or of the directory) is never followed.
        let at = At::open(children_dir)?;
        let name = record_name(self.name);
        let (tmp, mut file) = at.temp(&format!(".{}", name.to_string_lossy()), 0o600)?;
        let result = (|| {
            file.write_all(&bytes)?;
            file.sync_all()?;
            at.rename(&tmp, &name)?;
            at.sync()
        })();
        if result.is_err() {
            // Nothing half-written may survive under any name.
            let _ = at.remove(&tmp);
        }
        result
    }

    /// Reads the record of `name`; `Ok(None)` when there is none. Blocking.
    /// A symlink in the record's place is not followed (`InvalidData`: the
    /// record is discarded, its pid never signalled).
    ///
    /// # Errors
    /// The file exists but cannot be read, or is not a valid record
    /// (`InvalidData`).
    pub fn load(children_dir: &Path, name: ProcessName) -> io::Result<Option<ChildRecord>> {
        let at = match At::open(children_dir) {
            Ok(at) => at,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let opened = at.file(
            &record_name(name),
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_NONBLOCK,
            0,
        );
        let file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the record is a symlink; not followed",
                ))
            }
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        if !meta.is_file() || meta.uid() != nix::unistd::Uid::effective().as_raw() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not a regular file owned by the daemon's uid (uid {})", meta.uid()),
            ));
        }
        let mut bytes = Vec::new();
        // A record is a few hundred bytes; a huge file is not one.
        file.take(MAX_RECORD_BYTES + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MAX_RECORD_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "larger than a record can be",
            ));
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Removes the record of `name`; a missing record is not an error. Blocking.
    ///
    /// # Errors
    /// The file exists and cannot be removed.
    pub fn remove(children_dir: &Path, name: ProcessName) -> io::Result<()> {
        let removed = At::open(children_dir).and_then(|at| at.remove(&record_name(name)));
        match removed {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Whether `record.pid` is still the process the record describes: alive
/// (not a zombie), same start time, same executable (device and inode).
/// Blocking (a few small /proc reads).
pub fn verify(record: &ChildRecord) -> Verification {
    let pid = record.pid;
    let stat = match procfs::read_stat(pid) {
        Ok(stat) => stat,
        Err(_) => return Verification::Mismatch(format!("pid {pid} is not running")),
    };
    if matches!(stat.state, 'Z' | 'X') {
        return Verification::Mismatch(format!("pid {pid} has exited (zombie)"));
    }
    if stat.start_time != record.start_time {
        return Verification::Mismatch(format!(
            "pid {pid} was reused: it started at tick {}, the record says {}",
            stat.start_time, record.start_time
        ));
    }
    match fs::metadata(format!("/proc/{pid}/exe")) {
        Ok(meta) if meta.dev() == record.exe_dev && meta.ino() == record.exe_ino => Verification::Verified,
        Ok(meta) => Verification::Mismatch(format!(
            "pid {pid} runs another executable (dev {} ino {}, the record says dev {} ino {} of {})",
            meta.dev(),
            meta.ino(),
            record.exe_dev,
            record.exe_ino,
            record.exe.display()
        )),
        Err(e) => Verification::Mismatch(format!("pid {pid}: cannot inspect its executable: {e}")),
    }
}

/// Upper bound on a record file's size.
const MAX_RECORD_BYTES: u64 = 64 * 1024;

/// `<name>.json`, the record's file name.
fn record_name(name: ProcessName) -> std::ffi::OsString {
    std::ffi::OsString::from(format!("{}.json", name.as_str()))
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn record_round_trips_atomically_with_private_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let children = dir.path().join("children");
        let rec = ChildRecord::capture(ProcessName::LkBackend, std::process::id(), "abc", 7890).expect("capture self");
        rec.write(&children).expect("write");
        let path = ChildRecord::path(&children, ProcessName::LkBackend);
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(&children).expect("stat dir").permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        assert_eq!(
            ChildRecord::load(&children, ProcessName::LkBackend).expect("load"),
            Some(rec)
        );
        let leftovers: Vec<_> = fs::read_dir(&children).expect("ls").flatten().collect();
        assert_eq!(leftovers.len(), 1, "no temp file left behind");
        ChildRecord::remove(&children, ProcessName::LkBackend).expect("remove");
        ChildRecord::remove(&children, ProcessName::LkBackend).expect("second remove is fine");
        assert_eq!(
            ChildRecord::load(&children, ProcessName::LkBackend).expect("load"),
            None
        );
    }

    #[test]
    fn a_symlink_in_place_of_a_record_is_not_followed_and_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").expect("victim");
        let children = dir.path().join("children");
        fs::create_dir(&children).expect("mkdir");
        let path = ChildRecord::path(&children, ProcessName::LkBackend);
        std::os::unix::fs::symlink(&victim, &path).expect("symlink");
        let err = ChildRecord::load(&children, ProcessName::LkBackend).expect_err("symlink");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // A planted file under the old fixed temp name is not written through either.
        std::os::unix::fs::symlink(&victim, children.join(".lk-backend.json.tmp")).expect("symlink");
        let rec = ChildRecord::capture(ProcessName::LkBackend, std::process::id(), "abc", 1).expect("capture self");
        rec.write(&children).expect("write");
        assert!(fs::symlink_metadata(&path).expect("stat").is_file());
        assert_eq!(fs::read(&victim).expect("victim"), b"precious");
        assert_eq!(
            ChildRecord::load(&children, ProcessName::LkBackend).expect("load"),
            Some(rec)
        );
    }

    #[test]
    fn a_corrupt_record_is_invalid_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(ChildRecord::path(dir.path(), ProcessName::LivekitServer), b"{not json").expect("write");
        let err = ChildRecord::load(dir.path(), ProcessName::LivekitServer).expect_err("corrupt");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn verification_checks_start_time_and_executable() {
        let me = ChildRecord::capture(ProcessName::LkBackend, std::process::id(), "x", 1).expect("capture self");
        assert_eq!(verify(&me), Verification::Verified);
        let reused = ChildRecord {
            start_time: me.start_time + 1,
            ..me.clone()
        };
        assert!(matches!(verify(&reused), Verification::Mismatch(r) if r.contains("reused")));
        let other_exe = ChildRecord {
            exe_ino: me.exe_ino + 1,
            ..me.clone()
        };
        assert!(matches!(verify(&other_exe), Verification::Mismatch(r) if r.contains("another executable")));
        let gone = ChildRecord {
            pid: u32::MAX - 1,
            ..me
        };
        assert!(matches!(verify(&gone), Verification::Mismatch(r) if r.contains("not running")));
    }
}
