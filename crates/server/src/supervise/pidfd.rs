//! Exit watching through pidfds.
//!
//! A pidfd names one process, not a pid number: it stays valid and keeps
//! naming the same process after the pid is reused, and it becomes readable
//! when the process exits. That works for processes that are not our
//! children (adopted from a previous daemon), where `waitpid` cannot.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChildExit {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
    /// Not our child (adopted): its parent reaped it, we only saw it go.
    Unknown,
}

impl fmt::Display for ChildExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChildExit::Code(code) => write!(f, "exited with code {code}"),
            ChildExit::Signal(sig) => match nix::sys::signal::Signal::try_from(*sig) {
                Ok(name) => write!(f, "killed by signal {sig} ({name})"),
                Err(_) => write!(f, "killed by signal {sig}"),
            },
            ChildExit::Unknown => f.write_str("exited (status unknown: adopted process)"),
        }
    }
}

/// Opens a pidfd without registering it with tokio (usable in a blocking
/// section, e.g. right after `fork`).
pub(crate) fn open_raw(pid: u32) -> io::Result<OwnedFd> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    let raw = RawFd::try_from(raw).map_err(|_| io::Error::other("pidfd out of range"))?;
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// A pidfd registered with the tokio reactor.
pub(crate) struct PidFd {
    pid: u32,
    fd: AsyncFd<OwnedFd>,
}

impl fmt::Debug for PidFd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PidFd({})", self.pid)
    }
}

impl PidFd {
    /// Opens a pidfd for `pid`. Must run inside a tokio runtime.
    #[cfg(test)]
    pub(crate) fn open(pid: u32) -> io::Result<PidFd> {
        PidFd::register(pid, open_raw(pid)?).map_err(|(_, e)| e)
    }

    /// Registers a pidfd obtained by [`open_raw`] with the reactor; on
    /// failure the fd is handed back so the caller can still act on it.
    pub(crate) fn register(pid: u32, fd: OwnedFd) -> Result<PidFd, (OwnedFd, io::Error)> {
        // SAFETY: the OwnedFd is moved into the AsyncFd, which owns it and
        // its raw fd until dropped; nothing else can close or replace it.
        match unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) } {
            Ok(fd) => Ok(PidFd { pid, fd }),
            Err(e) => Err(e.into_parts()),
        }
    }

    /// Resolves when the process has exited (including as a zombie).
    /// Readiness is never cleared, so later calls resolve at once.
    pub(crate) async fn exited(&self) {
        // An error here means the reactor is gone; the runtime is shutting
        // down and nothing waits any more, so treat it as "exited".
        let _ = self.fd.readable().await;
    }

    /// Whether the process has exited, without waiting.
    pub(crate) fn has_exited(&self) -> bool {
        has_exited(self.fd.get_ref())
    }

    /// Reaps the process once [`PidFd::exited`] resolved. Our own child gives
    /// its status (and leaves no zombie); a process that is not our child
    /// gives `Unknown`. `None` means our child has not exited yet.
    pub(crate) fn try_reap(&self) -> Option<ChildExit> {
        waitid(self.fd.get_ref(), libc::WNOHANG)
    }

    /// Sends `sig` to exactly this process (never to a reused pid).
    pub(crate) fn signal(&self, sig: libc::c_int) -> io::Result<()> {
        send_signal(self.fd.get_ref(), sig)
    }
}

/// Whether the process behind `fd` has exited, without waiting.
pub(crate) fn has_exited(fd: &OwnedFd) -> bool {
    exits_within(fd, std::time::Duration::ZERO)
}

/// Whether the process behind `fd` has exited or exits within `timeout`,
/// blocking up to that long (call it from a blocking section).
pub(crate) fn exits_within(fd: &OwnedFd, timeout: std::time::Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    loop {
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        // A signal cut the wait short: wait again (the rest of a short
        // bound, at worst the whole of it once more).
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return n > 0 && pfd.revents & libc::POLLIN != 0;
    }
}

/// Reaps our own exited child, blocking until it exits. Only for a child
/// that was just sent SIGKILL, in a blocking section.
pub(crate) fn reap_blocking(fd: &OwnedFd) -> ChildExit {
    waitid(fd, 0).unwrap_or(ChildExit::Unknown)
}

fn waitid(fd: &OwnedFd, extra_flags: libc::c_int) -> Option<ChildExit> {
    // SAFETY: zeroed siginfo_t is a valid out-parameter for waitid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let id = libc::id_t::try_from(fd.as_raw_fd()).ok()?;
    // SAFETY: P_PIDFD with a valid pidfd and a valid siginfo pointer.
    let rc = unsafe { libc::waitid(libc::P_PIDFD, id, &mut info, libc::WEXITED | extra_flags) };
    if rc == -1 {
        // ECHILD: somebody else's child (adopted), so the status is theirs.
        return Some(ChildExit::Unknown);
    }
    // SAFETY: waitid filled a SIGCHLD siginfo (or left it zeroed).
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if pid == 0 {
        return None;
    }
    Some(match info.si_code {
        libc::CLD_EXITED => ChildExit::Code(status),
        _ => ChildExit::Signal(status),
    })
}

/// Sends `sig` to exactly the process behind `fd`.
pub(crate) fn send_signal(fd: &OwnedFd, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: pidfd_send_signal(fd, sig, NULL info, 0 flags).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use std::time::Duration;

    #[tokio::test]
    async fn own_child_exit_is_seen_and_reaped_with_its_status() {
        // Reaped through the pidfd, which is what this test checks.
        #[allow(clippy::zombie_processes)]
        let child = Command::new("sh").args(["-c", "exit 7"]).spawn().expect("spawn sh");
        let fd = PidFd::open(child.id()).expect("pidfd");
        tokio::time::timeout(Duration::from_secs(10), fd.exited())
            .await
            .expect("exit seen");
        assert_eq!(fd.try_reap(), Some(ChildExit::Code(7)));
        // Reaped: no zombie is left behind under that pid.
        assert!(std::fs::metadata(format!("/proc/{}", child.id())).is_err());
    }

    #[tokio::test]
    async fn a_process_that_is_not_our_child_is_watched_with_unknown_status() {
        // sh starts sleep in the background and exits: sleep is reparented
        // away from us, like a child adopted from a previous daemon.
        let out = Command::new("sh")
            .args(["-c", "sleep 30 >/dev/null 2>&1 & echo $!"])
            .stdout(Stdio::piped())
            .output()
            .expect("run sh");
        let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().expect("pid");
        let fd = PidFd::open(pid).expect("pidfd");
        assert!(!fd.has_exited());
        assert_eq!(fd.try_reap(), Some(ChildExit::Unknown), "not our child");
        fd.signal(libc::SIGKILL).expect("kill via pidfd");
        tokio::time::timeout(Duration::from_secs(10), fd.exited())
            .await
            .expect("exit seen");
        assert!(fd.has_exited());
        assert_eq!(
            ChildExit::Unknown.to_string(),
            "exited (status unknown: adopted process)"
        );
    }

    /// The state `spawn` must not mistake for an I/O error: the leader
    /// thread has exited (its memory, hence /proc/<pid>/exe, is gone, so a
    /// record cannot be captured) while another thread still runs, and the
    /// pidfd reports the exit only when the last thread is gone. Produced
    /// here on purpose: the leader exits alone (raw `exit`), a second thread
    /// ends the process 300 ms later.
    #[test]
    fn a_pidfd_reports_the_exit_only_after_the_last_thread_and_exits_within_waits_for_it() {
        use crate::supervise::record::ChildRecord;
        use hero_livekit_proto::ProcessName;
        const SCRIPT: &str = "import ctypes, os, threading, time\n\
SYS_EXIT = {'x86_64': 60, 'aarch64': 93}[os.uname().machine]\n\
def finish():\n    time.sleep(0.3)\n    os._exit(0)\n\
threading.Thread(target=finish).start()\n\
ctypes.CDLL(None).syscall(SYS_EXIT, 0)\n";
        // Reaped through the pidfd below.
        #[allow(clippy::zombie_processes)]
        let child = Command::new("python3")
            .args(["-c", SCRIPT])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn python3");
        let pid = child.id();
        let fd = open_raw(pid).expect("pidfd");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::read_link(format!("/proc/{pid}/exe")).is_ok() {
            assert!(std::time::Instant::now() < deadline, "the leader thread never exited");
            std::thread::yield_now();
        }
        assert!(
            ChildRecord::capture(ProcessName::LivekitServer, pid, "c", 0).is_err(),
            "no record can be captured"
        );
        assert!(!has_exited(&fd), "yet the pidfd does not report the exit yet");
        assert!(
            exits_within(&fd, Duration::from_secs(10)),
            "it does once the process is gone"
        );
        assert_eq!(reap_blocking(&fd), ChildExit::Code(0));
        // A live process does not pass for an exiting one.
        #[allow(clippy::zombie_processes)]
        let mut sleeper = Command::new("sleep").arg("30").spawn().expect("spawn sleep");
        let fd = open_raw(sleeper.id()).expect("pidfd");
        assert!(!exits_within(&fd, Duration::from_millis(50)));
        let _ = sleeper.kill();
        let _ = sleeper.wait();
    }

    #[test]
    fn exit_descriptions_name_code_and_signal() {
        assert_eq!(ChildExit::Code(0).to_string(), "exited with code 0");
        assert_eq!(ChildExit::Signal(9).to_string(), "killed by signal 9 (SIGKILL)");
    }
}
