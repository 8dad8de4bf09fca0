//! The real livekit-server (v1.13.5), built from its Go module by the test
//! command (`scripts/test`: `go install
//! github.com/livekit/livekit-server/cmd/server@v1.13.5` into a cache
//! directory of its own).
//!
//! `HERO_LIVEKIT_REAL_BIN` names the binary; without it the test command's
//! cache path is used. Under CI (`CI` set) a missing binary fails the test
//! that asked for it; elsewhere that test says so and returns early, so a
//! developer without Go can still run the rest.

use std::path::PathBuf;

/// The livekit-server release the end-to-end tests run.
pub const REAL_VERSION: &str = "1.13.5";

/// Where the test command keeps the binary it builds:
/// `${XDG_CACHE_HOME:-$HOME/.cache}/hero_livekit/livekit-server-v1.13.5/server`.
pub fn default_real_bin_path() -> Option<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(
        cache
            .join("hero_livekit")
            .join(format!("livekit-server-v{REAL_VERSION}"))
            .join("server"),
    )
}

/// The real livekit-server binary, or `None` (with a line on stderr) when it
/// is not built and this is not CI.
///
/// # Panics
/// Under CI when the binary is missing: the test command must have built it.
pub fn real_livekit_bin() -> Option<PathBuf> {
    let path = std::env::var_os("HERO_LIVEKIT_REAL_BIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(default_real_bin_path);
    if let Some(p) = path.filter(|p| p.is_file()) {
        return Some(p);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "the real livekit-server v{REAL_VERSION} is not built: run scripts/test (it builds it with `go install`) or set HERO_LIVEKIT_REAL_BIN"
    );
    eprintln!("skipped: the real livekit-server v{REAL_VERSION} is not built (scripts/test builds it; HERO_LIVEKIT_REAL_BIN names another)");
    None
}
