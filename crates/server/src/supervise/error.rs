//! Supervision errors. Every message names the child and says what to do
//! next; none contains an environment value (the API secret travels there).

use std::io;
use std::path::PathBuf;

use hero_livekit_proto::{ErrorCode, ProcessName};

/// Why a supervision request failed.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// A port the child needs is held by a process that is not ours.
    #[error(
        "{process} cannot start: port {port} is held by {holder}; stop that process or configure another port",
        holder = describe_holder(*pid)
    )]
    PortConflict {
        /// The child that could not start.
        process: ProcessName,
        /// The port in use.
        port: u16,
        /// The process listening on it, when /proc shows it.
        pid: Option<u32>,
    },

    /// The child exited before it answered its readiness probe. Any exit
    /// counts, code 0 included (livekit-server exits 0 on config errors).
    #[error(
        "{process} exited during startup ({status}); fix the cause shown in its log {log}, then start again. Last log lines:\n{tail}",
        log = log_path.display(),
        tail = log_tail.join("\n")
    )]
    ExitedDuringStartup {
        /// The child.
        process: ProcessName,
        /// How it ended, e.g. `exited with code 0`.
        status: String,
        /// Its log file.
        log_path: PathBuf,
        /// The last lines of its log.
        log_tail: Vec<String>,
    },

    /// The child kept running but did not answer 200 in time; it was stopped.
    #[error(
        "{process} did not answer 200 on {url} within {timeout_ms} ms and was stopped; read its log {log} or retry with a larger timeout",
        log = log_path.display()
    )]
    NotReady {
        /// The child.
        process: ProcessName,
        /// The probed URL.
        url: String,
        /// The wait that expired.
        timeout_ms: u64,
        /// Its log file.
        log_path: PathBuf,
    },

    /// The program could not be executed.
    #[error(
        "cannot execute {program} for {process}: {source}; check that the file exists and is executable (for livekit-server run `hero_livekit install`)",
        program = program.display()
    )]
    Spawn {
        /// The child.
        process: ProcessName,
        /// The program that failed.
        program: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// The spec cannot be run as given (a bug in the caller or a missing directory).
    #[error("invalid spec for {process}: {reason}")]
    BadSpec {
        /// The child.
        process: ProcessName,
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// The process survived SIGKILL (stuck in the kernel).
    #[error(
        "{process} (pid {pid}) did not exit after SIGKILL; it is stuck in the kernel: inspect /proc/{pid}/stack and the storage it uses"
    )]
    StopFailed {
        /// The child.
        process: ProcessName,
        /// Its pid.
        pid: u32,
    },

    /// Supervisor bookkeeping (record, log, /proc) failed.
    #[error("{process}: cannot {action}: {source}; check the state directory's permissions and free space")]
    Io {
        /// The child.
        process: ProcessName,
        /// What was being done, e.g. `write the child record ...`.
        action: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// The supervising task has ended (detached or shut down).
    #[error("the supervisor of {process} has ended (detached or shutting down); retry once the daemon is back")]
    Closed {
        /// The child.
        process: ProcessName,
    },
}

fn describe_holder(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("pid {pid}"),
        None => "another process (pid not visible)".to_owned(),
    }
}

impl SuperviseError {
    /// The stable JSON-RPC error code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            SuperviseError::PortConflict { .. } => ErrorCode::PortConflict,
            SuperviseError::ExitedDuringStartup { .. }
            | SuperviseError::Spawn { .. }
            | SuperviseError::BadSpec { .. } => ErrorCode::StartFailed,
            SuperviseError::NotReady { .. } | SuperviseError::StopFailed { .. } => ErrorCode::Timeout,
            SuperviseError::Io { .. } => ErrorCode::Io,
            SuperviseError::Closed { .. } => ErrorCode::ShuttingDown,
        }
    }

    /// The child the error is about.
    pub fn process(&self) -> ProcessName {
        match self {
            SuperviseError::PortConflict { process, .. }
            | SuperviseError::ExitedDuringStartup { process, .. }
            | SuperviseError::NotReady { process, .. }
            | SuperviseError::Spawn { process, .. }
            | SuperviseError::BadSpec { process, .. }
            | SuperviseError::StopFailed { process, .. }
            | SuperviseError::Io { process, .. }
            | SuperviseError::Closed { process } => *process,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_conflict_names_port_and_pid_and_a_next_step() {
        let e = SuperviseError::PortConflict {
            process: ProcessName::LivekitServer,
            port: 7880,
            pid: Some(4242),
        };
        let msg = e.to_string();
        assert!(msg.contains("7880") && msg.contains("pid 4242") && msg.contains("configure"));
        assert_eq!(e.code(), ErrorCode::PortConflict);
        let unknown = SuperviseError::PortConflict {
            process: ProcessName::LivekitServer,
            port: 7880,
            pid: None,
        };
        assert!(unknown.to_string().contains("pid not visible"));
    }
}
