//! Crash points for the crash-consistency test.
//!
//! [`point`] aborts the process when `HERO_LIVEKIT_FAULT` names it, so a test
//! can stop a writer at every step of an atomic write and prove that the
//! next boot heals to one whole credential. The variable is read once; an
//! unset variable costs one atomic load and a comparison per point, and
//! points sit only on the write path, never on `health`.

use std::sync::OnceLock;

/// The environment variable naming the point to abort at.
pub const ENV: &str = "HERO_LIVEKIT_FAULT";

/// Every fault point, in the order a full write of the triple passes them:
/// for each file, before creating the temp file, after creating it, half
/// way through writing it, after writing it, after its fsync, after the
/// rename over the final name, and after the directory fsync.
pub const POINTS: [&str; 21] = [
    "runtime.json:before-create",
    "runtime.json:after-create",
    "runtime.json:mid-write",
    "runtime.json:after-write",
    "runtime.json:after-fsync",
    "runtime.json:after-rename",
    "runtime.json:after-dirsync",
    "livekit.yaml:before-create",
    "livekit.yaml:after-create",
    "livekit.yaml:mid-write",
    "livekit.yaml:after-write",
    "livekit.yaml:after-fsync",
    "livekit.yaml:after-rename",
    "livekit.yaml:after-dirsync",
    "backend.env:before-create",
    "backend.env:after-create",
    "backend.env:mid-write",
    "backend.env:after-write",
    "backend.env:after-fsync",
    "backend.env:after-rename",
    "backend.env:after-dirsync",
];

/// Steps of one file write, the suffixes of [`POINTS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    BeforeCreate,
    AfterCreate,
    MidWrite,
    AfterWrite,
    AfterFsync,
    AfterRename,
    AfterDirsync,
}

/// The point name of `step` while writing the file at `file_index`
/// (index into [`super::TripleFile::ALL`]).
pub(crate) fn name(file_index: usize, step: Step) -> &'static str {
    POINTS[file_index * 7 + step as usize]
}

/// Aborts the process (no unwinding, no destructors, like a crash) when
/// `HERO_LIVEKIT_FAULT` equals `name`.
pub fn point(name: &str) {
    static FAULT: OnceLock<Option<String>> = OnceLock::new();
    if FAULT.get_or_init(|| std::env::var(ENV).ok()).as_deref() == Some(name) {
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::super::render::TripleFile;
    use super::*;

    #[test]
    fn point_names_follow_file_and_step() {
        let steps = [
            (Step::BeforeCreate, "before-create"),
            (Step::AfterCreate, "after-create"),
            (Step::MidWrite, "mid-write"),
            (Step::AfterWrite, "after-write"),
            (Step::AfterFsync, "after-fsync"),
            (Step::AfterRename, "after-rename"),
            (Step::AfterDirsync, "after-dirsync"),
        ];
        for f in TripleFile::ALL {
            for (step, suffix) in steps {
                assert_eq!(name(f.index(), step), format!("{}:{suffix}", f.name()));
            }
        }
    }
}
