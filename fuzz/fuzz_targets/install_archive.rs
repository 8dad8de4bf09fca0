//! The install archive reader: a local artifact (gzip tarball, anything else
//! taken as a bare binary) installed through the public `install_with`, the
//! same path as `install {source: "/path"}`, into a private temp directory.
//!
//! Input: when it starts with `\0T`, the rest drives `arbitrary` to build a
//! real gzipped tarball of hostile entries (raw names with `..`, absolute
//! paths, links, duplicates, special files), so that the checks behind gzip
//! and tar parsing are reached; otherwise the bytes are the artifact itself.
//!
//! Properties:
//! - nothing panics;
//! - nothing is written outside the install directory, and the directory
//!   holds only the binary and its record afterwards (no temp file is left,
//!   on success or on refusal); the source file is untouched;
//! - an installed binary looks executable and is mode 0755; a bare artifact
//!   is installed byte for byte; from a tarball, it is the `livekit-server`
//!   entry the in-memory reader extracts;
//! - a tarball with an entry that escapes (`..`, absolute) or a link is
//!   never installed.
#![no_main]

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use hero_livekit_server::install::{fuzzing, install_with, InstallRequest, InstallSettings};
use libfuzzer_sys::fuzz_target;

const MAX_BINARY: u64 = 64 * 1024;
const MAX_EXPANDED: u64 = 256 * 1024;

/// Entry names that matter, raw (the tar header is written byte by byte,
/// bypassing the builder's own path checks, as a hostile producer would).
const NAMES: &[&[u8]] = &[
    b"livekit-server",
    b"./livekit-server",
    b"livekit_1.13.5_linux_amd64/livekit-server",
    b"a/b/livekit-server",
    b"../livekit-server",
    b"/livekit-server",
    b"dir/../livekit-server",
    b"/etc/passwd",
    b"LICENSE",
    b"README.md",
    b"dir/",
    b"livekit-server/",
];

/// Entry types: regular (both spellings), hard link, symlink, char and
/// block device, directory, fifo, and GNU/pax metadata entries.
const KINDS: &[u8] = b"0\x0012345 6LKxg7";

#[derive(Debug)]
struct Entry {
    name: Vec<u8>,
    kind: u8,
    data: Vec<u8>,
}

fn entries(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<Entry>> {
    let n = u.int_in_range(0..=6)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let name = if u.ratio(7, 8)? {
            u.choose(NAMES)?.to_vec()
        } else {
            Vec::<u8>::arbitrary(u)?
        };
        let kind = *u.choose(KINDS)?;
        let data = match u.int_in_range(0..=3)? {
            0 => b"#!/bin/sh\necho livekit\n".to_vec(),
            1 => b"\x7fELF\x02\x01\x01\0fake".to_vec(),
            2 => vec![0; usize::from(u.arbitrary::<u16>()?) * 8],
            _ => Vec::<u8>::arbitrary(u)?,
        };
        out.push(Entry { name, kind, data });
    }
    Ok(out)
}

fn tarball(entries: &[Entry]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    for e in entries {
        let mut header = tar::Header::new_gnu();
        let name = &mut header.as_old_mut().name;
        let len = e.name.len().min(name.len());
        name[..len].copy_from_slice(&e.name[..len]);
        header.set_mode(0o755);
        header.set_size(e.data.len() as u64);
        header.set_entry_type(tar::EntryType::new(e.kind));
        header.set_cksum();
        // Appending to a Vec cannot fail.
        if builder.append(&header, e.data.as_slice()).is_err() {
            return Vec::new();
        }
    }
    match builder.into_inner().and_then(|gz| gz.finish()) {
        Ok(bytes) => bytes,
        Err(_) => Vec::new(),
    }
}

/// Whether the model's tarball must be refused whatever else it holds: an
/// entry that escapes or a link. Only sound when no metadata entry (GNU long
/// name, pax) renames the entries after it.
fn must_refuse(entries: &[Entry]) -> Option<bool> {
    if entries.iter().any(|e| b"LKxg".contains(&e.kind)) {
        return None;
    }
    Some(entries.iter().any(|e| {
        let name = e.name.split(|&b| b == 0).next().unwrap_or(&[]);
        name.first() == Some(&b'/') || name.split(|&b| b == b'/').any(|c| c == b"..") || matches!(e.kind, b'1' | b'2')
    }))
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    root: PathBuf,
}

const DIR_PREFIX: &str = "hero-livekit-fuzz-install-";

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        // tmpfs when there is one: the installer fsyncs, which costs nothing
        // there and milliseconds per run on a disk.
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        // libFuzzer ends the process with exit(), so nothing is dropped: the
        // directory is named after the pid, and those of processes that are
        // gone are removed here instead.
        if let Ok(rd) = fs::read_dir(&base) {
            for e in rd.filter_map(Result::ok) {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix(DIR_PREFIX) {
                    if !Path::new("/proc").join(pid).exists() {
                        let _ = fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        let root = base.join(format!("{DIR_PREFIX}{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        if let Err(e) = fs::create_dir(&root).and_then(|()| fs::write(root.join("canary"), b"untouched")) {
            panic!("cannot set up {}: {e}", root.display());
        }
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(r) => r,
            Err(e) => panic!("no tokio runtime: {e}"),
        };
        Fixture { runtime, root }
    })
}

fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

fuzz_target!(|data: &[u8]| {
    let (artifact, model) = match data.strip_prefix(b"\0T") {
        Some(rest) => match entries(&mut Unstructured::new(rest)) {
            Ok(e) => (tarball(&e), Some(e)),
            Err(_) => return,
        },
        None => (data.to_vec(), None),
    };

    let fx = fixture();
    let work = fx.root.join("work");
    let source = fx.root.join("source");
    // Each run starts from an empty install directory.
    let _ = fs::remove_dir_all(&work);
    let written = fs::File::create(&source).and_then(|mut f| f.write_all(&artifact));
    if let Err(e) = written {
        panic!("cannot write the artifact: {e}");
    }
    let target = work.join("livekit-server");
    let record = work.join("install.json");
    let req = InstallRequest {
        version: Some("1.0.0".into()),
        source: Some(source.display().to_string()),
        sha256: None,
        force: true,
    };
    let settings = InstallSettings {
        max_download_bytes: 1024 * 1024,
        max_binary_bytes: MAX_BINARY,
        max_expanded_bytes: MAX_EXPANDED,
        ..InstallSettings::default()
    };
    let outcome = fx
        .runtime
        .block_on(install_with(&req, &settings, &target, &record, |_| {}));

    // Nothing outside `work`, nothing but the binary and record inside it.
    let outside = names(&fx.root);
    assert!(
        outside
            .iter()
            .all(|n| ["canary", "source", "work"].contains(&n.as_str())),
        "files appeared outside the install directory: {outside:?}"
    );
    assert_eq!(
        fs::read(fx.root.join("canary")).ok().as_deref(),
        Some(&b"untouched"[..]),
        "canary changed"
    );
    assert_eq!(
        fs::read(&source).ok().as_deref(),
        Some(artifact.as_slice()),
        "the source changed"
    );
    let left = names(&work);

    let gzip = fuzzing::is_gzip(&artifact);
    let mut extracted = Vec::new();
    let in_memory = gzip.then(|| fuzzing::extract_binary(&artifact, &mut extracted, MAX_BINARY, MAX_EXPANDED));
    match outcome {
        Ok(o) => {
            assert_eq!(left, ["install.json", "livekit-server"], "install left other files");
            let installed = match fs::read(&target) {
                Ok(b) => b,
                Err(e) => panic!("installed binary unreadable: {e}"),
            };
            assert!(
                fuzzing::looks_executable(&installed),
                "installed something not executable"
            );
            let mode = fs::metadata(&target).map(|m| m.permissions().mode() & 0o777).ok();
            assert_eq!(mode, Some(0o755));
            assert!(o.changed);
            if gzip {
                assert!(
                    matches!(in_memory, Some(Ok(_))),
                    "installed what the reader refuses: {in_memory:?}"
                );
                assert_eq!(installed, extracted, "installed bytes are not the extracted entry");
                if let Some(m) = &model {
                    assert_ne!(must_refuse(m), Some(true), "installed from a hostile tarball: {m:?}");
                }
            } else {
                assert_eq!(installed, artifact, "a bare binary was not installed byte for byte");
            }
        }
        Err(e) => {
            assert!(left.is_empty(), "a refused install left {left:?} ({e})");
        }
    }
});
