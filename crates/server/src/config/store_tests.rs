//! Unit tests of [`super`] (store.rs).

use std::os::unix::fs::PermissionsExt;

use std::sync::{Mutex, MutexGuard};

use super::super::check::check;
use super::super::heal::plan_with;
use super::super::model::Config;
use super::super::testutil::{config_a, config_b, observed_of};
use super::*;

fn mode(p: &Path) -> u32 {
    fs::metadata(p).expect("stat").permissions().mode() & 0o7777
}

/// Serializes the tests that create files: one of them changes the
/// process-wide umask.
fn fs_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn state() -> (MutexGuard<'static, ()>, tempfile::TempDir, StateDir) {
    let guard = fs_lock();
    let tmp = tempfile::tempdir().expect("tempdir");
    let sd = StateDir::new(tmp.path().join("var").join("hero_livekit"));
    sd.ensure().expect("ensure");
    (guard, tmp, sd)
}

fn write_config(sd: &StateDir, c: &Config) -> Vec<TripleFile> {
    let p = plan_with(Some(c), &sd.observe(), false, || {
        Err(super::super::MintError::new("no mint"))
    })
    .expect("plan");
    sd.apply(&p).expect("apply")
}

fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = fs::read_dir(dir)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

#[test]
fn ensure_creates_private_dirs_and_narrows_an_existing_wide_one() {
    let _lock = fs_lock();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("state");
    fs::create_dir(&dir).expect("mkdir");
    fs::set_permissions(&dir, Permissions::from_mode(0o755)).expect("chmod");
    let sd = StateDir::new(dir.clone());
    sd.ensure().expect("ensure");
    assert_eq!(mode(&dir), 0o700);
    for sub in SUBDIRS {
        assert_eq!(mode(&dir.join(sub)), 0o700, "{sub}");
    }
    sd.ensure().expect("ensure is idempotent");
}

#[test]
fn apply_writes_the_triple_with_mode_0600_and_observe_reads_it_back() {
    let (_lock, _tmp, sd) = state();
    let a = config_a();
    assert_eq!(write_config(&sd, &a), TripleFile::ALL);
    for f in TripleFile::ALL {
        assert_eq!(mode(sd.path(f)), FILE_MODE, "{f}");
    }
    assert_eq!(sd.observe(), observed_of(&a));
    assert!(check(&a, &sd.observe()).consistent);
    assert_eq!(
        sd.sweep_temp_files().expect("sweep"),
        0,
        "no temp file left by a successful write"
    );
}

#[test]
fn a_consistent_triple_is_not_touched() {
    let (_lock, _tmp, sd) = state();
    let a = config_a();
    write_config(&sd, &a);
    let before = TripleFile::ALL.map(|f| stamp(sd.path(f)));
    assert!(write_config(&sd, &a).is_empty());
    assert_eq!(
        TripleFile::ALL.map(|f| stamp(sd.path(f))),
        before,
        "no write, no new inode, no new mtime"
    );
}

#[test]
fn only_the_differing_file_is_rewritten() {
    let (_lock, _tmp, sd) = state();
    let a = config_a();
    write_config(&sd, &a);
    let before = TripleFile::ALL.map(|f| stamp(sd.path(f)));
    fs::write(
        sd.path(TripleFile::BackendEnv),
        render(&config_b(), TripleFile::BackendEnv),
    )
    .expect("tamper");
    assert_eq!(write_config(&sd, &a), [TripleFile::BackendEnv]);
    assert_eq!(stamp(sd.path(TripleFile::RuntimeJson)), before[0]);
    assert_eq!(stamp(sd.path(TripleFile::LivekitYaml)), before[1]);
    assert!(check(&a, &sd.observe()).consistent);
}

#[test]
fn apply_restores_mode_0600_without_rewriting() {
    let (_lock, _tmp, sd) = state();
    let a = config_a();
    write_config(&sd, &a);
    let yaml = sd.path(TripleFile::LivekitYaml);
    fs::set_permissions(yaml, Permissions::from_mode(0o644)).expect("chmod");
    let ino = fs::metadata(yaml).expect("stat").ino();
    assert!(write_config(&sd, &a).is_empty());
    assert_eq!(mode(yaml), FILE_MODE);
    assert_eq!(fs::metadata(yaml).expect("stat").ino(), ino);
}

#[test]
fn files_are_created_0600_whatever_the_umask() {
    let (_lock, _tmp, sd) = state();
    // The umask is process-wide; this test only narrows it, which
    // cannot make another test's files wider.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o277));
    let r = sd.write_file(TripleFile::RuntimeJson, b"{}\n");
    nix::sys::stat::umask(old);
    r.expect("write");
    assert_eq!(mode(sd.path(TripleFile::RuntimeJson)), FILE_MODE);
}

#[test]
fn observe_refuses_what_is_not_a_small_regular_file() {
    let (_lock, _tmp, sd) = state();
    assert_eq!(sd.observe(), Observed::missing());
    fs::create_dir(sd.path(TripleFile::RuntimeJson)).expect("mkdir");
    nix::unistd::mkfifo(
        sd.path(TripleFile::LivekitYaml),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .expect("mkfifo");
    fs::write(
        sd.path(TripleFile::BackendEnv),
        vec![b'#'; (MAX_FILE_SIZE + 1) as usize],
    )
    .expect("big file");
    let o = sd.observe();
    assert_eq!(o.runtime_json, FileObs::Unreadable("not a regular file".into()));
    assert_eq!(
        o.livekit_yaml,
        FileObs::Unreadable("not a regular file".into()),
        "a FIFO must not hang observe"
    );
    assert_eq!(o.backend_env, FileObs::Unreadable("larger than 1 MiB".into()));
}

#[test]
fn a_failed_rename_names_the_file_and_leaves_no_temp_file() {
    let (_lock, _tmp, sd) = state();
    let a = config_a();
    write_config(&sd, &a);
    // A non-empty directory under the final name makes the rename fail.
    let yaml = sd.path(TripleFile::LivekitYaml).to_path_buf();
    fs::remove_file(&yaml).expect("rm");
    fs::create_dir(&yaml).expect("mkdir");
    fs::write(yaml.join("keep"), b"x").expect("fill");
    let mut b = a.clone();
    b.set_credential(config_b().credential());
    let p = plan_with(Some(&b), &sd.observe(), false, || {
        Err(super::super::MintError::new("no"))
    })
    .expect("plan");
    let e = sd.apply(&p).expect_err("rename over a directory fails");
    assert_eq!(e.file, TripleFile::LivekitYaml);
    assert_eq!(e.written, [TripleFile::RuntimeJson]);
    assert!(e.to_string().starts_with("writing livekit.yaml: "), "{e}");
    assert!(!e.to_string().contains(b.api_secret.expose()));
    assert_eq!(
        names(sd.dir()),
        [
            "backend.env",
            "children",
            "data",
            "livekit.yaml",
            "logs",
            "runtime.json"
        ],
        "no temp file left"
    );
}

#[test]
fn a_symlink_in_place_of_a_file_is_replaced_and_its_target_untouched() {
    let (_lock, tmp, sd) = state();
    let victim = tmp.path().join("victim");
    fs::write(&victim, b"precious").expect("victim");
    fs::set_permissions(&victim, Permissions::from_mode(0o644)).expect("chmod");
    for f in TripleFile::ALL {
        std::os::unix::fs::symlink(&victim, sd.path(f)).expect("symlink");
    }
    let o = sd.observe();
    assert_eq!(o.runtime_json, FileObs::Unreadable("a symlink, not followed".into()));
    let a = config_a();
    assert_eq!(write_config(&sd, &a), TripleFile::ALL);
    for f in TripleFile::ALL {
        let meta = fs::symlink_metadata(sd.path(f)).expect("stat");
        assert!(meta.is_file(), "{f} is a regular file again");
    }
    assert!(check(&a, &sd.observe()).consistent);
    assert_eq!(fs::read(&victim).expect("victim"), b"precious");
    assert_eq!(mode(&victim), 0o644, "the target's mode is not fixed through the link");
}

#[test]
fn a_file_owned_by_another_uid_is_not_read() {
    if !nix::unistd::Uid::effective().is_root() {
        // Only root can give a file away; the rule is the same for all.
        return;
    }
    let (_lock, _tmp, sd) = state();
    let a = config_a();
    write_config(&sd, &a);
    let path = sd.path(TripleFile::RuntimeJson);
    nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(65534)), None).expect("chown");
    assert_eq!(
        sd.observe().runtime_json,
        FileObs::Unreadable("owned by uid 65534, not the daemon's".into())
    );
}

#[test]
fn sweep_removes_only_our_temp_files() {
    let (_lock, _tmp, sd) = state();
    for n in [
        ".livekit.yaml.123.00ab00ab00ab00ab.tmp",
        ".runtime.json.9.77.tmp",
        ".backend.env.1.2.tmp",
        "notes.tmp",
        ".other.1.tmp",
        "runtime.json",
    ] {
        fs::write(sd.dir().join(n), b"x").expect("write");
    }
    assert_eq!(sd.sweep_temp_files().expect("sweep"), 3);
    assert_eq!(
        names(sd.dir()),
        [".other.1.tmp", "children", "data", "logs", "notes.tmp", "runtime.json"]
    );
}

#[test]
fn file_cache_reuses_its_answer_until_a_file_changes() {
    let (_lock, _tmp, sd) = state();
    let a = config_a();
    write_config(&sd, &a);
    let rendered = Rendered::new(a.clone());
    let mut cache = FileCache::new(sd.dir());
    let first = cache.check(&rendered);
    assert!(first.consistent);
    assert!(
        Arc::ptr_eq(&first, &cache.check(&rendered)),
        "nothing changed: the same answer"
    );

    // Replaced by rename (new inode), as every writer of ours does.
    sd.write_file(TripleFile::LivekitYaml, &render(&config_b(), TripleFile::LivekitYaml))
        .expect("write");
    let c = cache.check(&rendered);
    assert!(!c.consistent);
    assert_eq!(c.drift.first().map(String::as_str), Some("livekit.yaml: port differs"));

    // Rewritten in place with another size.
    fs::write(sd.path(TripleFile::LivekitYaml), render(&a, TripleFile::LivekitYaml)).expect("write");
    fs::write(sd.path(TripleFile::BackendEnv), b"PORT=\"1\"\n").expect("write");
    let c = cache.check(&rendered);
    assert!(c.files[1].matches, "livekit.yaml is back to its rendering");
    assert!(!c.files[2].matches);

    fs::remove_file(sd.path(TripleFile::BackendEnv)).expect("rm");
    let c = cache.check(&rendered);
    assert!(!c.files[2].present);
    assert_eq!(c.drift, ["backend.env: missing"]);
}

#[test]
fn file_cache_rechecks_when_the_config_changes_or_is_invalidated() {
    let (_lock, _tmp, sd) = state();
    let a = config_a();
    write_config(&sd, &a);
    let mut cache = FileCache::new(sd.dir());
    let first = cache.check(&Rendered::new(a.clone()));
    let mut b = a.clone();
    b.port = 9999;
    let other = cache.check(&Rendered::new(b));
    assert!(!other.consistent, "a new config is checked, not answered from cache");
    let again = cache.check(&Rendered::new(a.clone()));
    assert_eq!(*again, *first);
    cache.invalidate();
    let fresh = cache.check(&Rendered::new(a));
    assert!(!Arc::ptr_eq(&fresh, &again));
    assert_eq!(*fresh, *first);
}

#[test]
fn file_cache_sees_a_same_size_in_place_edit_at_once() {
    let (_lock, _tmp, sd) = state();
    let a = config_a();
    write_config(&sd, &a);
    let rendered = Rendered::new(a.clone());
    let mut cache = FileCache::new(sd.dir());
    assert!(cache.check(&rendered).consistent);
    // Same inode, same size, very likely the same timestamp tick: only
    // the inotify watch can tell.
    let path = sd.path(TripleFile::RuntimeJson);
    let mut bytes = fs::read(path).expect("read");
    let last = bytes.len() - 2;
    bytes[last] = if bytes[last] == b'}' { b' ' } else { b'}' };
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes))
        .expect("in-place write");
    let c = cache.check(&rendered);
    assert!(!c.files[0].matches, "the in-place edit is seen on the next check");
}
