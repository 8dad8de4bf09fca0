//! Shared helpers of the supervision tests: a python fixture child, specs,
//! event capture and deadline-bounded polling (never a fixed sleep).

#![allow(dead_code)] // each test file uses a different subset

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hero_livekit_proto::{Event, ProcessName, ProcessState};
use hero_livekit_server::supervise::{
    verify, BackoffPolicy, Child, ChildRecord, ChildSpec, Decision, EventSink, Idle, ReadyProbe, Settle,
    SupervisorOptions, Verification,
};

/// A real python interpreter (not a pyenv shim script: the child's
/// environment is scrubbed, and a shim needs its own).
pub fn python() -> PathBuf {
    let candidates = ["/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"];
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .and_then(|p| p.canonicalize().ok())
        .expect("python3 in /usr/bin, /usr/local/bin or /bin")
}

/// The fixture program.
pub fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/http_child.py")
}

/// A TCP port that was free a moment ago. The probe binds with
/// `SO_REUSEADDR` and never listens: a listening probe is copied into any
/// child a parallel test forks at that moment, and holds the port until that
/// child's exec, which can be when the child under test binds it.
pub fn free_port() -> u16 {
    let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket
        .bind((std::net::Ipv4Addr::LOCALHOST, 0).into())
        .expect("bind an ephemeral port");
    socket.local_addr().expect("local addr").port()
}

#[path = "../../../../tests/src/squatter.rs"]
mod squatter;
#[allow(unused_imports)] // each test file uses a different subset
pub use squatter::Squatter;

/// Events received, in order, shared with the sink.
#[derive(Clone, Default)]
pub struct Events(Arc<Mutex<Vec<Event>>>);

impl Events {
    pub fn sink(&self) -> EventSink {
        let seen = self.0.clone();
        EventSink::new(move |e| seen.lock().expect("events lock").push(e))
    }

    pub fn all(&self) -> Vec<Event> {
        self.0.lock().expect("events lock").clone()
    }

    /// The (state, pid) sequence of `State` events.
    pub fn states(&self) -> Vec<(ProcessState, Option<u32>)> {
        self.all()
            .into_iter()
            .filter_map(|e| match e {
                Event::State { state, pid, .. } => Some((state, pid)),
                _ => None,
            })
            .collect()
    }

    pub fn restart_reasons(&self) -> Vec<String> {
        self.all()
            .into_iter()
            .filter_map(|e| match e {
                Event::Restarted { reason, .. } => Some(reason),
                _ => None,
            })
            .collect()
    }
}

/// A scratch state directory with logs, records and a working directory.
/// Dropping it kills the process groups of children still recorded there
/// (verified first), so a failing test leaves no process behind.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for name in ProcessName::ALL {
            let Ok(Some(record)) = ChildRecord::load(&self.children_dir(), name) else {
                continue;
            };
            if verify(&record) == Verification::Verified {
                if let Ok(pgid) = i32::try_from(record.pid) {
                    // SAFETY: killpg of a verified child's own group.
                    unsafe { libc::killpg(pgid, libc::SIGKILL) };
                }
            }
        }
    }
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn children_dir(&self) -> PathBuf {
        self.path().join("children")
    }

    pub fn log(&self, name: ProcessName) -> PathBuf {
        self.path().join("logs").join(format!("{name}.log"))
    }

    pub fn options(&self, events: &Events) -> SupervisorOptions {
        let mut opts = SupervisorOptions::new(self.children_dir(), events.sink());
        opts.stop_grace = Duration::from_secs(5);
        opts
    }

    /// A spec running the fixture on `port` with `extra` switches.
    pub fn spec(&self, name: ProcessName, port: u16, extra: &[&str], config: &str) -> ChildSpec {
        let mut args: Vec<std::ffi::OsString> =
            vec!["-u".into(), fixture().into(), "--port".into(), port.to_string().into()];
        args.extend(extra.iter().map(Into::into));
        ChildSpec {
            name,
            program: python(),
            args,
            env: vec![
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("LC_ALL".into(), "C.UTF-8".into()),
                ("HERO_TEST_MARK".into(), "from-spec".into()),
            ],
            cwd: self.path().to_path_buf(),
            log_path: self.log(name),
            ready: ReadyProbe::Http { port, path: "/".into() },
            ports: vec![port],
            config_sha256: config.into(),
            config_file: None,
        }
    }
}

/// A backoff fast enough for tests with real processes.
pub fn fast_backoff() -> BackoffPolicy {
    BackoffPolicy {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(100),
        healthy_reset: Duration::from_secs(60),
        crash_window: Duration::from_secs(120),
        crash_limit: 5,
    }
}

/// Polls `cond` every few milliseconds until it holds or `limit` passes.
pub async fn eventually<T>(limit: Duration, what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Whether `pid` is a live process (not gone, not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            !matches!(state, Some('Z' | 'X') | None)
        }
        Err(_) => false,
    }
}

/// Field 22 of /proc/<pid>/stat.
pub fn start_time(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let rest = stat.rsplit_once(')').expect("comm").1;
    rest.split_whitespace()
        .nth(19)
        .expect("field 22")
        .parse()
        .expect("number")
}

/// When the fixture last started listening (from its log), as the Unix time.
pub fn listening_since(log: &Path) -> Option<SystemTime> {
    let lines = hero_livekit_server::supervise::logs::tail(log, 50).ok()?;
    let ns: u64 = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("listening at unix_ns ")?.trim().parse().ok())?;
    Some(UNIX_EPOCH + Duration::from_nanos(ns))
}

/// How long after the child started listening the supervisor reported it
/// ready: the supervisor's own share of a start.
pub fn overhead(log: &Path, reported: SystemTime) -> Duration {
    let listening = listening_since(log).expect("fixture logged when it listened");
    reported.duration_since(listening).unwrap_or(Duration::ZERO)
}

pub fn kill(pid: u32, sig: i32) {
    let pid = i32::try_from(pid).expect("pid fits");
    // SAFETY: plain kill(2) on a pid this test owns.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig})");
}

/// Plays the daemon's reconcile after an exit, with the same verdicts as
/// `service::plan` (the child's task only reports and executes): the
/// policy on the failure history says recover now (announced with a
/// `restarted` event), back off until an instant (then recover), or give
/// up. Aborted when dropped.
pub struct Decider(tokio::task::JoinHandle<()>);

impl Drop for Decider {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Decider {
    pub fn new(child: &Child, spec: ChildSpec, events: &Events) -> Decider {
        let mut child = child.clone();
        let seen = events.0.clone();
        let emit = move |e: Event| seen.lock().expect("events lock").push(e);
        Decider(tokio::spawn(async move {
            loop {
                match child.idle() {
                    Some(Idle::Exited { reason, .. }) => match child.policy().decide(&child.failures()) {
                        Decision::RestartNow => {
                            emit(Event::Restarted {
                                process: child.name(),
                                reason,
                            });
                            let _ = child.recover(spec.clone(), Duration::from_secs(20)).await;
                        }
                        Decision::RestartAfter(pause) => {
                            let until = tokio::time::Instant::now() + pause;
                            let detail = format!("{reason}; restarting in {} ms", pause.as_millis());
                            let _ = child.settle(Settle::Backoff { until, detail }).await;
                        }
                        Decision::Fail => {
                            let detail = format!("crash loop, giving up: {reason}");
                            let _ = child.settle(Settle::Failed { detail }).await;
                        }
                    },
                    Some(Idle::Backoff { until }) => {
                        tokio::time::sleep_until(until).await;
                        if matches!(child.idle(), Some(Idle::Backoff { .. })) {
                            emit(Event::Restarted {
                                process: child.name(),
                                reason: "backoff elapsed".into(),
                            });
                            let _ = child.recover(spec.clone(), Duration::from_secs(20)).await;
                        }
                        continue;
                    }
                    _ => {}
                }
                if !child.changed().await {
                    return;
                }
            }
        }))
    }
}
