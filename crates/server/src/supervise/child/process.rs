//! The process plumbing of the supervising task: spawn, readiness, stop,
//! reap, records and adoption, ports; and the helpers they share.

use super::actor::{proc_of, Actor, Life, Proc, Wait};
use super::*;

/// How long after its spawn livekit-server is left before a SIGTERM: it
/// ignores one that comes in its first moments (see `terminate`).
const LIVEKIT_SIGTERM_SETTLE: Duration = Duration::from_secs(1);

impl Actor {
    // ------------------------------------------------------------ lifecycle

    /// Checks ports, spawns, records and waits for readiness. On success the
    /// child is `running`; on failure no process of ours is left behind.
    pub(super) async fn launch(&mut self, spec: &ChildSpec, deadline: Instant) -> Result<(), SuperviseError> {
        self.spawn_child(spec).await?;
        self.await_ready(spec, deadline).await
    }

    /// Checks ports, spawns and records: the child is `starting`.
    pub(super) async fn spawn_child(&mut self, spec: &ChildSpec) -> Result<(), SuperviseError> {
        self.check_ports(spec).await?;
        let (spawn_spec, dir) = (spec.clone(), self.opts.children_dir.clone());
        let spawned = tokio::task::spawn_blocking(move || spawn_recorded(&spawn_spec, &dir))
            .await
            .map_err(|e| SuperviseError::Io {
                process: self.name,
                action: "spawn (the blocking task failed)".into(),
                source: io::Error::other(e),
            })??;
        let (fd, record) = match spawned {
            Spawned::Running { pidfd, record } => (pidfd, record),
            Spawned::ExitedAtOnce { exit } => {
                return Err(self.exited_during_startup(spec, exit).await);
            }
        };
        let pidfd = match PidFd::register(record.pid, fd) {
            Ok(pidfd) => pidfd,
            Err((fd, source)) => {
                return Err(self.abandon(record.pid, fd, source).await);
            }
        };
        self.life = Life::Starting(Proc {
            pidfd,
            record,
            adopted: false,
            since: Instant::now(),
        });
        self.publish(None);
        Ok(())
    }

    /// Waits for the current process to become ready and cleans up when it
    /// does not: reaped when it exited, stopped when it is late.
    pub(super) async fn await_ready(&mut self, spec: &ChildSpec, deadline: Instant) -> Result<(), SuperviseError> {
        let started = Instant::now();
        match self.wait_ready(&spec.ready, deadline).await {
            Wait::Ready => {
                self.refresh_record().await;
                self.mark_ready();
                Ok(())
            }
            Wait::Exited => {
                let exit = self.reap().await;
                Err(self.exited_during_startup(spec, exit).await)
            }
            Wait::TimedOut => {
                let waited = Instant::now().saturating_duration_since(started);
                let grace = self.opts.stop_grace;
                self.terminate(grace, "not ready").await?;
                Err(SuperviseError::NotReady {
                    process: self.name,
                    url: spec.ready.url(),
                    timeout_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
                    log_path: spec.log_path.clone(),
                })
            }
        }
    }

    /// Races readiness against the process's exit.
    pub(super) async fn wait_ready(&mut self, probe: &ReadyProbe, deadline: Instant) -> Wait {
        let Some(proc) = proc_of(&self.life) else {
            return Wait::Exited;
        };
        tokio::select! {
            biased;
            () = proc.pidfd.exited() => Wait::Exited,
            ready = ready::wait_until_ready(probe, deadline) => {
                if ready { Wait::Ready } else { Wait::TimedOut }
            }
        }
    }

    /// Re-reads which executable our ready child runs and rewrites its
    /// record when that changed since spawn (a wrapper script exec'd the
    /// server): the next daemon verifies the record against the final image.
    /// A no-op without a write in the usual case.
    pub(super) async fn refresh_record(&mut self) {
        let Some(proc) = proc_of(&self.life).filter(|p| !p.adopted) else {
            return;
        };
        let (record, dir) = (proc.record.clone(), self.opts.children_dir.clone());
        let refreshed = tokio::task::spawn_blocking(move || -> io::Result<Option<ChildRecord>> {
            let fresh = record.with_current_exe()?;
            if fresh == record {
                return Ok(None);
            }
            fresh.write(&dir)?;
            Ok(Some(fresh))
        })
        .await
        .map_err(io::Error::other)
        .and_then(|r| r);
        match refreshed {
            Ok(Some(fresh)) => {
                if let Life::Starting(proc) | Life::Running(proc) = &mut self.life {
                    proc.record = fresh;
                }
            }
            Ok(None) => {}
            // The exit watcher handles a process that is gone; an unwritable
            // record only costs the next daemon an adoption.
            Err(e) => tracing::warn!(process = %self.name, error = %e, "could not refresh the child record"),
        }
    }

    pub(super) fn mark_ready(&mut self) {
        self.life = match std::mem::replace(&mut self.life, Life::Stopped) {
            Life::Starting(proc) => Life::Running(proc),
            other => other,
        };
        self.port_conflict = None;
        self.reason = None;
        self.degraded = false;
        self.ready_deadline = None;
        self.publish(None);
    }

    /// Stops the current process, if any: SIGTERM to the group, SIGKILL after
    /// `grace`. Returns whether SIGKILL was needed.
    pub(super) async fn terminate(&mut self, grace: Duration, why: &str) -> Result<bool, SuperviseError> {
        let Some(proc) = proc_of(&self.life) else {
            return Ok(false);
        };
        if self.name == ProcessName::LivekitServer && !proc.adopted {
            // livekit-server 1.13.5 does not act on a SIGTERM that comes in
            // its first moments: sent 30 ms after it first answered, it was
            // still running 15 s later (every time); sent 300 ms after, it
            // exited in 57 ms. A stop right after a start (a join adopting
            // the cluster's credential, a configure just after `start`)
            // would otherwise cost the whole drain deadline and a SIGKILL.
            let settled = proc.since + LIVEKIT_SIGTERM_SETTLE;
            if tokio::time::timeout_at(settled, proc.pidfd.exited()).await.is_ok() {
                let exit = self.reap().await;
                self.last_exit = Some(format!("{exit} ({why})"));
                self.publish(self.last_exit.clone());
                return Ok(false);
            }
        }
        let Some(proc) = proc_of(&self.life) else {
            return Ok(false);
        };
        signal_group(proc, libc::SIGTERM);
        let killed = if tokio::time::timeout(grace, proc.pidfd.exited()).await.is_ok() {
            false
        } else {
            signal_group(proc, libc::SIGKILL);
            if tokio::time::timeout(KILL_WAIT, proc.pidfd.exited()).await.is_err() {
                return Err(SuperviseError::StopFailed {
                    process: self.name,
                    pid: proc.record.pid,
                });
            }
            true
        };
        let exit = self.reap().await;
        let how = if killed {
            format!("killed with SIGKILL at the drain deadline ({} ms)", grace.as_millis())
        } else {
            "exited on SIGTERM".to_owned()
        };
        self.last_exit = Some(format!("{exit}: {how} ({why})"));
        // The state event carries how it ended, for whoever follows events.
        self.publish(self.last_exit.clone());
        Ok(killed)
    }

    /// Takes the exited process out of supervision: sweeps what is left of
    /// its group (own children only), reaps it and removes its record.
    pub(super) async fn reap(&mut self) -> ChildExit {
        let proc = match std::mem::replace(&mut self.life, Life::Stopped) {
            Life::Starting(proc) | Life::Running(proc) => proc,
            other => {
                self.life = other;
                return ChildExit::Unknown;
            }
        };
        if !proc.adopted {
            // Members left in the group of a leader that is gone would keep
            // its ports; while our leader is unreaped its group id is ours.
            signal_group(&proc, libc::SIGKILL);
        }
        let exit = proc.pidfd.try_reap().unwrap_or(ChildExit::Unknown);
        self.remove_record().await;
        exit
    }

    /// A process we spawned cannot be supervised (no reactor slot): kill it
    /// rather than leave an unwatched child holding ports.
    pub(super) async fn abandon(&mut self, pid: u32, fd: OwnedFd, source: io::Error) -> SuperviseError {
        let _ = pidfd::send_signal(&fd, libc::SIGKILL);
        let _ = tokio::task::spawn_blocking(move || pidfd::reap_blocking(&fd)).await;
        self.remove_record().await;
        SuperviseError::Io {
            process: self.name,
            action: format!("watch pid {pid}"),
            source,
        }
    }

    // ------------------------------------------------------------ helpers

    /// Reads this child's record and, when it verifies, supervises its
    /// process as adopted (not ready yet). Unverifiable records are deleted.
    pub(super) async fn attach_record(&mut self) -> Result<AdoptOutcome, SuperviseError> {
        let (dir, name) = (self.opts.children_dir.clone(), self.name);
        let found = tokio::task::spawn_blocking(move || find_adoptable(&dir, name))
            .await
            .map_err(io::Error::other)
            .and_then(|r| r)
            .map_err(|source| SuperviseError::Io {
                process: name,
                action: format!(
                    "read its record {}",
                    ChildRecord::path(&self.opts.children_dir, name).display()
                ),
                source,
            })?;
        let (record, fd) = match found {
            Found::Verified(record, fd) => (record, fd),
            Found::NoRecord => return Ok(AdoptOutcome::NoRecord),
            Found::Discarded(reason) => {
                tracing::info!(process = %name, %reason, "discarded child record");
                return Ok(AdoptOutcome::Discarded(reason));
            }
        };
        let pidfd = PidFd::register(record.pid, fd).map_err(|(_, source)| SuperviseError::Io {
            process: name,
            action: format!("watch adopted pid {}", record.pid),
            source,
        })?;
        let age = Duration::from_millis(unix_ms_now().saturating_sub(record.started_unix_ms));
        let since = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
        self.life = Life::Starting(Proc {
            pidfd,
            record,
            adopted: true,
            since,
        });
        self.publish(Some("adopted from a previous daemon".to_owned()));
        Ok(AdoptOutcome::Adopted)
    }

    pub(super) async fn check_ports(&mut self, spec: &ChildSpec) -> Result<(), SuperviseError> {
        let ports = spec.ports.clone();
        let holder = tokio::task::spawn_blocking(move || {
            for port in ports {
                if let Some(holder) = procfs::port_holder(port)? {
                    return Ok(Some(holder));
                }
            }
            Ok(None)
        })
        .await
        .map_err(io::Error::other)
        .and_then(|r: io::Result<_>| r)
        .map_err(|source| SuperviseError::Io {
            process: self.name,
            action: "read /proc/net/tcp to check its ports".into(),
            source,
        })?;
        let Some(holder) = holder else {
            self.port_conflict = None;
            return Ok(());
        };
        let error = SuperviseError::PortConflict {
            process: self.name,
            port: holder.port,
            pid: holder.pid,
        };
        self.port_conflict = Some(match holder.pid {
            Some(pid) => format!("port {} is held by pid {pid}", holder.port),
            None => format!("port {} is held by another process", holder.port),
        });
        Err(error)
    }

    pub(super) async fn exited_during_startup(&mut self, spec: &ChildSpec, exit: ChildExit) -> SuperviseError {
        let log_tail = read_tail(spec.log_path.clone()).await.unwrap_or_default();
        SuperviseError::ExitedDuringStartup {
            process: self.name,
            status: exit.to_string(),
            log_path: spec.log_path.clone(),
            log_tail,
        }
    }

    pub(super) async fn remove_record(&self) {
        let (dir, name) = (self.opts.children_dir.clone(), self.name);
        let removed = tokio::task::spawn_blocking(move || ChildRecord::remove(&dir, name)).await;
        if let Ok(Err(e)) = removed {
            // A stale record is harmless: the next daemon will not verify it.
            tracing::warn!(process = %name, error = %e, "could not remove child record");
        }
    }
}

/// The last lines of a log, `None` when it cannot be read (e.g. never written).
pub(super) async fn read_tail(path: PathBuf) -> Option<Vec<String>> {
    let lines = tokio::task::spawn_blocking(move || logs::tail(&path, TAIL_LINES))
        .await
        .ok()?
        .ok()?;
    // The tail reaches health and events; livekit-server 1.13.5 logs every
    // token it refused, whole.
    Some(
        lines
            .into_iter()
            .map(|l| crate::redact::jwts(&l).into_owned())
            .collect(),
    )
}

/// The program file a record's process was spawned from; a record of an
/// older daemon knows only the executable.
pub(super) fn program_of(record: &ChildRecord) -> (u64, u64) {
    match (record.program_dev, record.program_ino) {
        (Some(dev), Some(ino)) => (dev, ino),
        _ => (record.exe_dev, record.exe_ino),
    }
}

/// One line for `last_exit` and event details (no log tail).
pub(super) fn summarize(e: &SuperviseError) -> String {
    match e {
        SuperviseError::ExitedDuringStartup { status, .. } => {
            format!("exited during startup ({status})")
        }
        SuperviseError::NotReady { url, timeout_ms, .. } => {
            format!("not ready: no 200 from {url} within {timeout_ms} ms")
        }
        other => other.to_string(),
    }
}

/// Signals the process group the child leads, or only the child when it
/// left its group. The group is signalled only while the leader provably
/// still holds its pid (same start time as recorded, read just before).
pub(super) fn signal_group(proc: &Proc, sig: libc::c_int) {
    let pid = proc.record.pid;
    let leads_group = procfs::read_stat(pid)
        .is_ok_and(|st| st.start_time == proc.record.start_time && u32::try_from(st.pgrp).is_ok_and(|g| g == pid));
    match libc::pid_t::try_from(pid) {
        Ok(pgid) if leads_group => {
            // SAFETY: killpg with a verified group id; ESRCH is harmless.
            unsafe { libc::killpg(pgid, sig) };
        }
        _ => {
            let _ = proc.pidfd.signal(sig);
        }
    }
}

/// The result of looking for an adoptable record.
pub(super) enum Found {
    Verified(ChildRecord, OwnedFd),
    NoRecord,
    Discarded(String),
}

/// Loads and verifies the record of `name`. Blocking.
pub(super) fn find_adoptable(dir: &std::path::Path, name: ProcessName) -> io::Result<Found> {
    let record = match ChildRecord::load(dir, name) {
        Ok(Some(record)) => record,
        Ok(None) => return Ok(Found::NoRecord),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            ChildRecord::remove(dir, name)?;
            return Ok(Found::Discarded(format!("unreadable record: {e}")));
        }
        Err(e) => return Err(e),
    };
    let discard = |reason: String| -> io::Result<Found> {
        ChildRecord::remove(dir, name)?;
        Ok(Found::Discarded(reason))
    };
    if record.name != name {
        return discard(format!("the record names {}", record.name));
    }
    if let Verification::Mismatch(reason) = verify(&record) {
        return discard(reason);
    }
    let Ok(fd) = pidfd::open_raw(record.pid) else {
        return discard(format!("pid {} exited while being adopted", record.pid));
    };
    // Verified again through the pidfd's lifetime: if the pid had been
    // reused between the first check and the open, this one fails.
    match verify(&record) {
        Verification::Verified => Ok(Found::Verified(record, fd)),
        Verification::Mismatch(reason) => discard(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// livekit-server logs the tokens it refuses; the tail that health and
    /// events quote must not carry them.
    #[tokio::test]
    async fn the_log_tail_quoted_in_health_has_no_token() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("livekit-server.log");
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJwcm9iZSJ9.c2lnbmF0dXJlX2J5dGVz";
        std::fs::write(
            &log,
            format!("starting\ninvalid token: {jwt}, error: token signature is invalid\n"),
        )
        .expect("write log");
        let tail = read_tail(log).await.expect("tail");
        assert_eq!(tail.len(), 2);
        assert!(!tail.iter().any(|l| l.contains("eyJ")), "{tail:?}");
        assert!(tail[1].contains(crate::redact::REDACTED), "{tail:?}");
    }
}
