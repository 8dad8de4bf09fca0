//! Starting a child: scrubbed environment, own session and process group,
//! stdin from /dev/null, stdout and stderr appended to its log, and a record
//! on disk before anyone waits for it. Blocking (fork/exec, file writes with
//! fsync): the supervisor runs it in `spawn_blocking`.

use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use super::error::SuperviseError;
use super::logs;
use super::pidfd::{self, ChildExit};
use super::record::{unix_ms_now, ChildRecord};
use super::spec::ChildSpec;

/// A freshly started child.
#[derive(Debug)]
pub(crate) enum Spawned {
    /// It runs; its record is on disk.
    Running { pidfd: OwnedFd, record: ChildRecord },
    /// It exited before it could even be described (e.g. a config error
    /// reported at once); it has been reaped.
    ExitedAtOnce { exit: ChildExit },
}

/// Starts `spec` and writes its record into `children_dir`.
///
/// # Errors
/// The spec is unusable, the program cannot be executed, or the log or the
/// record cannot be written (the child is then killed: a child without a
/// record could not be adopted by the next daemon and would hold its ports).
pub(crate) fn spawn_recorded(spec: &ChildSpec, children_dir: &Path) -> Result<Spawned, SuperviseError> {
    let process = spec.name;
    if !spec.program.is_absolute() {
        return Err(SuperviseError::BadSpec {
            process,
            reason: format!(
                "program {} must be an absolute path (the child gets no PATH to search)",
                spec.program.display()
            ),
        });
    }
    if !spec.cwd.is_dir() {
        return Err(SuperviseError::BadSpec {
            process,
            reason: format!(
                "working directory {} does not exist; create it first",
                spec.cwd.display()
            ),
        });
    }
    let io_err = |action: String| {
        move |source| SuperviseError::Io {
            process,
            action,
            source,
        }
    };
    let log_action = || format!("open its log {}", spec.log_path.display());
    let mut log = logs::open_append(&spec.log_path).map_err(io_err(log_action()))?;
    // Marks where each run starts, so a log tail shows one run's story.
    writeln!(
        log,
        "--- hero_livekit_server: starting {process} at unix ms {} ---",
        unix_ms_now()
    )
    .map_err(io_err(log_action()))?;
    let stdout = log.try_clone().map_err(io_err(log_action()))?;

    // What the child is about to read, not what it should read: a file that
    // drifted since the last heal must not pass for current.
    let config_sha256 = match &spec.config_file {
        Some(path) => match std::fs::read(path) {
            Ok(bytes) => {
                use sha2::Digest;
                hex::encode(sha2::Sha256::digest(&bytes))
            }
            Err(e) => format!("unreadable: {}", e.kind()),
        },
        None => spec.config_sha256.clone(),
    };

    // Identity of the program file as spawned, taken before the exec: a
    // file replaced in between then reads as replaced, and `start` restarts
    // onto it rather than keep an outdated process.
    let program = std::fs::metadata(&spec.program).map_err(|source| SuperviseError::Spawn {
        process,
        program: spec.program.clone(),
        source,
    })?;
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(log);
    // SAFETY: the closure runs between fork and exec and only calls setsid,
    // which is async-signal-safe. A new session makes the child leader of its
    // own process group, so signals aimed at the daemon's group (a terminal's
    // ^C, a service manager stopping the daemon) never reach it, and `stop`
    // can signal the child's whole group.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // The child is reaped through its pidfd (waitid P_PIDFD), not through
    // this handle, which is dropped: the child must outlive it and us.
    #[allow(clippy::zombie_processes)]
    let mut child = cmd.spawn().map_err(|source| SuperviseError::Spawn {
        process,
        program: spec.program.clone(),
        source,
    })?;
    let pid = child.id();
    // Until reaped, the pid cannot be reused, so this pidfd is the child.
    let fd = match pidfd::open_raw(pid) {
        Ok(fd) => fd,
        Err(source) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SuperviseError::Io {
                process,
                action: "open a pidfd (Linux 5.4+ needed)".into(),
                source,
            });
        }
    };
    let record = match ChildRecord::capture(process, pid, &config_sha256, spec.ready.port()) {
        Ok(record) => ChildRecord {
            program_dev: Some(program.dev()),
            program_ino: Some(program.ino()),
            ..record
        },
        // /proc/<pid> could not be read: the child is gone or going. An
        // exiting process drops its memory, and with it /proc/<pid>/exe,
        // before its pidfd reports the exit, so wait (bounded) for that
        // report rather than call an exit at startup an I/O error.
        Err(_) if pidfd::exits_within(&fd, EXITING_GRACE) => {
            return Ok(Spawned::ExitedAtOnce {
                exit: pidfd::reap_blocking(&fd),
            });
        }
        Err(source) => {
            kill_and_reap(pid, &fd);
            return Err(SuperviseError::Io {
                process,
                action: format!("inspect /proc/{pid}"),
                source,
            });
        }
    };
    if let Err(source) = record.write(children_dir) {
        kill_and_reap(pid, &fd);
        return Err(SuperviseError::Io {
            process,
            action: format!("write its record into {}", children_dir.display()),
            source,
        });
    }
    Ok(Spawned::Running { pidfd: fd, record })
}

/// How long a child whose /proc entry is already unreadable may take to
/// report its exit through the pidfd (the kernel's exit path, microseconds
/// normally; generous for a loaded machine).
const EXITING_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Kills the whole group of our unreaped child, then reaps the leader. The
/// unreaped leader keeps its pid, hence its group id, from being reused.
fn kill_and_reap(pid: u32, fd: &OwnedFd) {
    if let Ok(pgid) = libc::pid_t::try_from(pid) {
        // SAFETY: killpg on the group our own unreaped child leads.
        unsafe { libc::killpg(pgid, libc::SIGKILL) };
    }
    let _ = pidfd::reap_blocking(fd);
}
