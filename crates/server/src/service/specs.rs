//! Child specs: what each child runs, derived purely from the in-memory
//! config's renderings and the daemon's paths.

use std::path::PathBuf;

use hero_livekit_proto::ProcessName;

use crate::config::{Rendered, TripleFile};
use crate::paths::Paths;
use crate::supervise::{ChildSpec, ReadyProbe};

/// The binaries and directories a spec needs, fixed at boot.
#[derive(Debug, Clone)]
pub(crate) struct SpecPaths {
    pub livekit_bin: PathBuf,
    pub backend_bin: PathBuf,
    pub paths: Paths,
}

/// The file of the triple that `name` reads.
pub(crate) fn config_file_of(name: ProcessName) -> TripleFile {
    match name {
        ProcessName::LivekitServer => TripleFile::LivekitYaml,
        ProcessName::LkBackend => TripleFile::BackendEnv,
    }
}

/// The command line, scrubbed environment, files and readiness probe of
/// `name` for the config `rendered` holds.
pub(crate) fn child_spec(name: ProcessName, rendered: &Rendered, at: &SpecPaths) -> ChildSpec {
    let c = rendered.config();
    let paths = &at.paths;
    // Only what a process needs to run: no LIVEKIT_* from the daemon's
    // environment can reach the children (they would override the files).
    let env = vec![
        (
            "PATH".to_string(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ),
        ("HOME".to_string(), paths.data_dir().display().to_string()),
    ];
    let logs = paths.logs_dir();
    let file = config_file_of(name);
    match name {
        ProcessName::LivekitServer => ChildSpec {
            name,
            program: at.livekit_bin.clone(),
            args: vec!["--config".into(), paths.livekit_yaml().into_os_string()],
            env,
            cwd: paths.data_dir(),
            log_path: logs.join("livekit-server.log"),
            ready: ReadyProbe::Http {
                port: c.port,
                path: "/".into(),
            },
            ports: vec![c.port, c.rtc_tcp_port],
            config_sha256: rendered.sha256(file).to_string(),
            config_file: Some(paths.livekit_yaml()),
        },
        ProcessName::LkBackend => ChildSpec {
            name,
            program: at.backend_bin.clone(),
            // The file, not the environment: the secret stays out of
            // /proc/<pid>/environ and SIGHUP can re-read it.
            args: vec!["--env-file".into(), paths.backend_env().into_os_string()],
            env,
            cwd: paths.data_dir(),
            log_path: logs.join("lk-backend.log"),
            ready: ReadyProbe::Http {
                port: c.backend_port,
                path: "/health".into(),
            },
            ports: vec![c.backend_port],
            config_sha256: rendered.sha256(file).to_string(),
            config_file: Some(paths.backend_env()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Credential, Secret};

    fn rendered() -> Rendered {
        let mut c = Config::with_credential(Credential {
            api_key: "APIabcdefghijkm".into(),
            api_secret: Secret::new("s3cr3tValueThatMustNeverBePrinted0123456789"),
        });
        c.port = 17880;
        c.rtc_tcp_port = 17881;
        c.backend_port = 17890;
        Rendered::new(c)
    }

    fn at() -> SpecPaths {
        SpecPaths {
            livekit_bin: "/r/bin/livekit-server".into(),
            backend_bin: "/r/bin/lk-backend".into(),
            paths: Paths::with("/r".into(), "/r/var/sockets/hero_livekit_server/rpc.sock".into()),
        }
    }

    #[test]
    fn livekit_server_reads_its_yaml_and_probes_its_port() {
        let r = rendered();
        let s = child_spec(ProcessName::LivekitServer, &r, &at());
        assert_eq!(s.program, PathBuf::from("/r/bin/livekit-server"));
        assert_eq!(s.args, ["--config", "/r/var/hero_livekit/livekit.yaml"]);
        assert_eq!(s.ports, [17880, 17881]);
        assert_eq!(s.ready.url(), "http://127.0.0.1:17880/");
        assert_eq!(s.config_sha256, r.sha256(TripleFile::LivekitYaml));
    }

    #[test]
    fn lk_backend_reads_its_env_file_never_the_secret_in_its_environment() {
        let r = rendered();
        let s = child_spec(ProcessName::LkBackend, &r, &at());
        assert_eq!(s.args, ["--env-file", "/r/var/hero_livekit/backend.env"]);
        assert_eq!(s.ready.url(), "http://127.0.0.1:17890/health");
        assert_eq!(s.config_sha256, r.sha256(TripleFile::BackendEnv));
        let names: Vec<&str> = s.env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["PATH", "HOME"], "a scrubbed environment");
        assert!(s.env.iter().all(|(_, v)| !v.contains("s3cr3t")));
    }
}
