//! What to run: the complete description of one child process.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use hero_livekit_proto::ProcessName;

/// How the supervisor decides that a child is ready to serve.
#[derive(Clone, PartialEq, Eq)]
pub enum ReadyProbe {
    /// Ready when `GET http://127.0.0.1:<port><path>` answers 200.
    Http {
        /// Loopback port the child listens on.
        port: u16,
        /// Request path, starting with `/`.
        path: String,
    },
}

impl ReadyProbe {
    /// The port the probe talks to (kept in the child record).
    pub fn port(&self) -> u16 {
        match self {
            ReadyProbe::Http { port, .. } => *port,
        }
    }

    /// The URL the probe requests, for messages.
    pub fn url(&self) -> String {
        match self {
            ReadyProbe::Http { port, path } => format!("http://127.0.0.1:{port}{path}"),
        }
    }
}

impl fmt::Debug for ReadyProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url())
    }
}

/// Everything needed to start one child. The daemon builds it from the
/// in-memory config; the supervisor never looks anywhere else.
#[derive(Clone, PartialEq, Eq)]
pub struct ChildSpec {
    /// Which child this is; must equal the name of the [`crate::supervise::Child`] it is given to.
    pub name: ProcessName,
    /// Absolute path of the executable (no `PATH` search: the child's
    /// environment is scrubbed, and the record compares executables by inode).
    pub program: PathBuf,
    /// Arguments after the program name.
    pub args: Vec<OsString>,
    /// The COMPLETE environment of the child; nothing is inherited. Values may
    /// be secrets: they are never logged and `Debug` shows only the names.
    pub env: Vec<(String, String)>,
    /// Working directory; must exist.
    pub cwd: PathBuf,
    /// stdout and stderr are appended here (created 0600, parent created 0700).
    pub log_path: PathBuf,
    /// How readiness is probed.
    pub ready: ReadyProbe,
    /// TCP ports checked for a foreign listener before spawning.
    pub ports: Vec<u16>,
    /// sha256 (hex) of the config file the child should read (the
    /// rendering); a running child recorded with another hash is restarted
    /// by `start`.
    pub config_sha256: String,
    /// The config file the child reads. When set, it is hashed right before
    /// each spawn and that hash is recorded, so the record says what the
    /// child really read: a restart onto a file that drifted since the last
    /// heal shows as outdated instead of passing for current.
    pub config_file: Option<PathBuf>,
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Environment values can hold the API secret: show names only.
        let env_names: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("program", &self.program)
            .field("args", &self.args)
            .field("env", &env_names)
            .field("cwd", &self.cwd)
            .field("log_path", &self.log_path)
            .field("ready", &self.ready)
            .field("ports", &self.ports)
            .field("config_sha256", &self.config_sha256)
            .field("config_file", &self.config_file)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_env_values() {
        let spec = ChildSpec {
            name: ProcessName::LkBackend,
            program: "/bin/true".into(),
            args: vec![],
            env: vec![("LIVEKIT_API_SECRET".into(), "s3cr3t-value-that-must-not-leak".into())],
            cwd: "/".into(),
            log_path: "/tmp/x.log".into(),
            ready: ReadyProbe::Http {
                port: 7890,
                path: "/health".into(),
            },
            ports: vec![7890],
            config_sha256: "ab".into(),
            config_file: None,
        };
        let shown = format!("{spec:?}");
        assert!(shown.contains("LIVEKIT_API_SECRET"), "names stay visible: {shown}");
        assert!(!shown.contains("s3cr3t"), "value leaked: {shown}");
    }
}
