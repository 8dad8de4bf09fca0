//! Which livekit-server version the renderings target: the install
//! record's, else what the binary itself says (`livekit-server --version`,
//! for a custom binary or one installed without a release number), else
//! unknown (every key is rendered).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::config::LivekitVersion;
use crate::install::InstalledInfo;

/// Bound on `livekit-server --version`: a custom binary that hangs must not
/// hold up boot or an install.
const VERSION_TIMEOUT: Duration = Duration::from_secs(3);
/// Most output read from it.
const MAX_OUTPUT: usize = 4096;

/// What identifies the binary a version was detected for: another one in
/// its place (replaced by hand behind the daemon's back) is asked again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BinaryStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

/// The stamp of the file at `bin`, `None` when there is none.
pub(crate) async fn stamp(bin: &Path) -> Option<BinaryStamp> {
    use std::os::unix::fs::MetadataExt;
    let m = tokio::fs::metadata(bin).await.ok()?;
    Some(BinaryStamp {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
    })
}

/// The version `livekit.yaml` is rendered for.
pub(crate) async fn detect(bin: &Path, installed: Option<&InstalledInfo>) -> Option<LivekitVersion> {
    let installed = installed?;
    if let Some(v) = installed.version.as_deref().and_then(LivekitVersion::parse) {
        return Some(v);
    }
    match ask(bin).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(binary = %bin.display(), error = %e, "livekit-server --version did not answer; rendering every key");
            None
        }
    }
}

/// Runs `bin --version` with a scrubbed environment, no input, and a
/// deadline; the child is killed when the deadline passes.
async fn ask(bin: &Path) -> Result<Option<LivekitVersion>, String> {
    let child = Command::new(bin)
        .arg("--version")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| e.to_string())?;
    let output = tokio::time::timeout(VERSION_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| format!("no answer within {} ms", VERSION_TIMEOUT.as_millis()))?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&output.stdout[..output.stdout.len().min(MAX_OUTPUT)]).into_owned();
    Ok(LivekitVersion::from_version_output(&text))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn script(dir: &Path, body: &str) -> std::path::PathBuf {
        let path = dir.join("livekit-server");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    fn info(version: Option<&str>) -> InstalledInfo {
        InstalledInfo {
            version: version.map(str::to_string),
            sha256: None,
        }
    }

    #[tokio::test]
    async fn the_record_wins_then_the_binary_is_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = script(dir.path(), "echo \"livekit-server version 1.8.4\"");
        assert_eq!(detect(&bin, None).await, None, "no binary: unknown");
        assert_eq!(
            detect(&bin, Some(&info(Some("v1.7.0")))).await,
            Some(LivekitVersion::new(1, 7, 0))
        );
        assert_eq!(
            detect(&bin, Some(&info(Some("custom-0123456789ab")))).await,
            Some(LivekitVersion::new(1, 8, 4))
        );
        assert_eq!(
            detect(&bin, Some(&info(None))).await,
            Some(LivekitVersion::new(1, 8, 4))
        );
    }

    #[tokio::test]
    async fn the_binary_is_asked_in_a_scrubbed_environment_and_a_hang_is_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The daemon's environment (HOME, any LIVEKIT_*) never reaches it.
        let bin = script(
            dir.path(),
            "if [ -n \"$HOME\" ]; then echo \"livekit-server version 9.9.9\"; else echo \"livekit-server version 1.2.3\"; fi",
        );
        assert_eq!(ask(&bin).await, Ok(Some(LivekitVersion::new(1, 2, 3))));
        let garbage = script(dir.path(), "echo garbage");
        assert_eq!(ask(&garbage).await, Ok(None));
        let hang = script(dir.path(), "exec sleep 30");
        let started = std::time::Instant::now();
        assert!(ask(&hang).await.is_err());
        assert!(started.elapsed() < VERSION_TIMEOUT + Duration::from_secs(2));
    }
}
