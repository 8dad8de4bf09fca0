//! A write of the triple that the OS refuses (full disk, read-only file
//! system, immutable directory) returns an error naming the file, leaves
//! the previous files intact and leaves no temp file behind.
//!
//! The tests run as root, so permission bits cannot make a directory
//! unwritable (CAP_DAC_OVERRIDE ignores them). They use what does stop
//! root: a tiny tmpfs for a full disk, a tmpfs remounted read-only, and the
//! immutable attribute (`chattr +i`). Each skips, saying why, only when the
//! kernel refuses the mount or the attribute (an unprivileged container);
//! with `CI` set a refused setup fails the test instead, so that a CI
//! runner that cannot run them never reports them green.

use std::ffi::{CString, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use hero_livekit_server::config::{
    check, mint_credential, plan, render, ConfigSource, FileObs, HealPlan, Observed, StateDir, TripleFile,
};

/// Gives up on a test whose privileged setup was refused: a note outside
/// CI, a failure when `CI` is set (a test that cannot run there proves
/// nothing, and must not say it passed).
fn skip(why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set and this test's privileged setup was refused: {why}"
    );
    println!("skipping: {why}");
}

/// A tmpfs mounted on a fresh temp directory, unmounted on drop.
struct Tmpfs {
    target: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size`; `None` (after printing why) when mounting
    /// is not permitted here.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("mnt");
        fs::create_dir(&target).expect("mkdir mount point");
        let c_target = CString::new(target.as_os_str().as_bytes()).expect("path without NUL");
        let opts = CString::new(format!("size={size},mode=0700")).expect("no NUL");
        // SAFETY: every pointer is a valid NUL-terminated string that
        // outlives the call.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                c_target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            assert!(
                matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)),
                "mount failed for another reason than permission: {e}"
            );
            skip(&format!("mounting a tmpfs is not permitted here ({e})"));
            return None;
        }
        Some(Tmpfs { target, _dir: dir })
    }

    /// Remounts read-only (`true`) or read-write.
    fn set_read_only(&self, ro: bool) {
        let c_target = CString::new(self.target.as_os_str().as_bytes()).expect("path without NUL");
        let flags = libc::MS_REMOUNT | if ro { libc::MS_RDONLY } else { 0 };
        // SAFETY: valid NUL-terminated target; null source, type and data
        // are allowed for a remount.
        let rc = unsafe {
            libc::mount(
                std::ptr::null(),
                c_target.as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "remount: {}", io::Error::last_os_error());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Ok(c_target) = CString::new(self.target.as_os_str().as_bytes()) {
            // SAFETY: valid NUL-terminated path. Lazy detach so a failed
            // assertion holding a file open cannot leave the mount behind.
            unsafe { libc::umount2(c_target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// A state directory holding a freshly minted, consistent triple.
fn state_in(dir: &Path) -> (StateDir, HealPlan) {
    let sd = StateDir::new(dir.join("state"));
    sd.ensure().expect("ensure");
    let first = plan(None, &sd.observe(), false).expect("first boot");
    sd.apply(&first).expect("first write");
    (sd, first)
}

/// A plan that replaces the credential of the triple on disk.
fn rotation(sd: &StateDir, current: &HealPlan) -> HealPlan {
    let mut next = current.config.clone();
    next.set_credential(mint_credential().expect("rng"));
    let p = plan(Some(&next), &sd.observe(), false).expect("plan");
    assert_eq!(p.writes, TripleFile::ALL);
    p
}

fn entries(dir: &Path) -> Vec<OsString> {
    let mut names: Vec<OsString> = fs::read_dir(dir)
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    names.sort();
    names
}

const TRIPLE_AND_DIRS: [&str; 6] = [
    "backend.env",
    "children",
    "data",
    "livekit.yaml",
    "logs",
    "runtime.json",
];

/// Fills the file system holding `dir` with a filler file; returns it.
fn fill(dir: &Path) -> (PathBuf, File) {
    let path = dir.join("filler");
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .expect("filler");
    let page = [0u8; 4096];
    loop {
        match f.write_all(&page) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling: {e}"),
        }
    }
    (path, f)
}

#[test]
fn a_full_disk_fails_the_write_naming_the_file_and_keeps_the_old_triple() {
    let Some(fs_) = Tmpfs::mount("16k") else {
        return;
    };
    let (sd, old) = state_in(&fs_.target);
    let before = sd.observe();
    let (filler, f) = fill(&fs_.target);
    let p = rotation(&sd, &old);

    let e = sd.apply(&p).expect_err("no space left");
    assert_eq!(e.file, TripleFile::RuntimeJson);
    assert_eq!(e.source.raw_os_error(), Some(libc::ENOSPC));
    assert_eq!(
        e.to_string(),
        format!("writing runtime.json: {}", io::Error::from_raw_os_error(libc::ENOSPC))
    );
    assert!(e.to_string().contains("No space left on device"));
    assert!(e.written.is_empty());
    assert_eq!(sd.observe(), before, "the previous files are intact");
    assert_eq!(entries(sd.dir()), TRIPLE_AND_DIRS, "no temp file left");
    assert!(check(&old.config, &sd.observe()).consistent);

    // With space again, the same plan goes through.
    drop(f);
    fs::remove_file(filler).expect("free space");
    assert_eq!(sd.apply(&p).expect("write"), TripleFile::ALL);
    assert!(check(&p.config, &sd.observe()).consistent);
}

#[test]
fn a_disk_full_between_two_files_leaves_runtime_json_new_and_boot_heals_to_it() {
    let Some(fs_) = Tmpfs::mount("16k") else {
        return;
    };
    let (sd, old) = state_in(&fs_.target);
    fs::remove_file(sd.path(TripleFile::RuntimeJson)).expect("rm runtime.json");
    let before = sd.observe();
    let p = rotation(&sd, &old);
    // Leave room for exactly one page: runtime.json fits, livekit.yaml not.
    let (filler, f) = fill(&fs_.target);
    let len = f.metadata().expect("stat filler").len();
    f.set_len(len - 4096).expect("free one page");

    let e = sd.apply(&p).expect_err("second file does not fit");
    assert_eq!(e.file, TripleFile::LivekitYaml);
    assert_eq!(e.written, [TripleFile::RuntimeJson]);
    assert_eq!(e.source.raw_os_error(), Some(libc::ENOSPC));
    let now = sd.observe();
    assert_eq!(
        now.runtime_json,
        FileObs::Present(render(&p.config, TripleFile::RuntimeJson))
    );
    assert_eq!(now.livekit_yaml, before.livekit_yaml, "livekit.yaml intact");
    assert_eq!(now.backend_env, before.backend_env, "backend.env untouched");
    assert_eq!(entries(sd.dir()), TRIPLE_AND_DIRS, "no temp file left");

    // Next boot, with space: runtime.json is trusted and the rest follows it.
    drop(f);
    fs::remove_file(filler).expect("free space");
    let boot = plan(None, &sd.observe(), false).expect("boot");
    assert_eq!((boot.source, &boot.config), (ConfigSource::RuntimeJson, &p.config));
    assert_eq!(boot.writes, [TripleFile::LivekitYaml, TripleFile::BackendEnv]);
    sd.apply(&boot).expect("heal");
    assert!(check(&p.config, &sd.observe()).consistent);
}

#[test]
fn a_read_only_file_system_fails_the_write_and_keeps_the_old_triple() {
    let Some(fs_) = Tmpfs::mount("256k") else {
        return;
    };
    let (sd, old) = state_in(&fs_.target);
    let before: Observed = sd.observe();
    let p = rotation(&sd, &old);
    fs_.set_read_only(true);

    // A consistent triple needs no write, so a no-op heal still succeeds.
    let noop = plan(Some(&old.config), &sd.observe(), false).expect("plan");
    assert!(noop.is_noop());
    assert_eq!(sd.apply(&noop).expect("no-op heal writes nothing"), []);

    let e = sd.apply(&p).expect_err("read-only");
    assert_eq!(e.file, TripleFile::RuntimeJson);
    assert_eq!(e.source.raw_os_error(), Some(libc::EROFS));
    assert!(
        e.to_string().starts_with("writing runtime.json: Read-only file system"),
        "{e}"
    );
    assert_eq!(sd.observe(), before, "the previous files are intact");
    assert_eq!(entries(sd.dir()), TRIPLE_AND_DIRS);

    fs_.set_read_only(false);
    assert_eq!(sd.apply(&p).expect("write"), TripleFile::ALL);
    assert!(check(&p.config, &sd.observe()).consistent);
}

/// Clears the immutable attribute on drop, so the temp dir can be removed.
struct Immutable(PathBuf);

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[test]
fn an_immutable_state_directory_fails_the_write_and_keeps_the_old_triple() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (sd, old) = state_in(tmp.path());
    let before = sd.observe();
    let p = rotation(&sd, &old);
    let set = Command::new("chattr").arg("+i").arg(sd.dir()).output();
    let _guard = Immutable(sd.dir().to_path_buf());
    match set {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            skip(&format!(
                "chattr +i refused here: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            return;
        }
        Err(e) => {
            skip(&format!("chattr unavailable: {e}"));
            return;
        }
    }
    let e = sd.apply(&p).expect_err("immutable directory");
    assert_eq!(e.file, TripleFile::RuntimeJson);
    assert_eq!(e.source.raw_os_error(), Some(libc::EPERM));
    assert!(
        e.to_string()
            .starts_with("writing runtime.json: Operation not permitted"),
        "{e}"
    );
    assert_eq!(sd.observe(), before);
    assert_eq!(entries(sd.dir()), TRIPLE_AND_DIRS);
}
