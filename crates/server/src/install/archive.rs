//! Taking `livekit-server` out of a release tarball without unpacking it.
//!
//! Only the one regular-file entry is copied, into a temporary file chosen by
//! the caller; nothing else of the archive ever reaches the disk. Every entry
//! is still checked, so an archive holding a path that escapes (`..`, an
//! absolute path) or a link is refused as a whole: it is not a LiveKit
//! release, and installing from it would trust its producer anyway.

use std::io::{self, Read, Write};

use flate2::read::GzDecoder;
use tar::EntryType;

use super::disk::{copy_hashing, CopyError};
use super::plan::{classify_entry, EntryPath, BINARY_NAME};

/// gzip's magic bytes: how a tarball is told from a bare binary, whatever the
/// file is called.
pub(crate) fn is_gzip(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b])
}

/// Whether the bytes start like something Linux can execute.
pub(crate) fn looks_executable(head: &[u8]) -> bool {
    head.starts_with(b"\x7fELF") || head.starts_with(b"#!")
}

/// Why extraction failed.
#[derive(Debug)]
pub(crate) enum ExtractError {
    /// The archive is unreadable or hostile; the text says why.
    Rejected(String),
    /// No `livekit-server` entry.
    Missing,
    /// The binary exceeds the binary size limit.
    TooLarge,
    /// Writing the extracted binary failed.
    Write(io::Error),
}

/// Limits decompressed bytes, so that a small gzip bomb cannot keep the
/// installer busy for hours skipping entries it does not want.
struct Capped<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::other("the archive expands beyond the size limit"));
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Copies the `livekit-server` entry of the gzipped tarball `gz` into `out`.
/// `on_progress` gets the bytes written so far and the entry's size.
/// Returns the binary's sha256 (hex) and length.
pub(crate) fn extract_binary(
    gz: impl Read,
    out: &mut impl Write,
    max_binary: u64,
    max_expanded: u64,
    on_progress: &mut dyn FnMut(u64, u64),
) -> Result<(String, u64), ExtractError> {
    let corrupt = |e: io::Error| ExtractError::Rejected(e.to_string());
    let mut archive = tar::Archive::new(Capped {
        inner: GzDecoder::new(gz),
        left: max_expanded,
    });
    let mut found = None;
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let path = entry.path().map_err(corrupt)?.into_owned();
        let shown = path.display().to_string();
        let kind = entry.header().entry_type();
        if classify_entry(&path) == EntryPath::Escapes {
            return Err(ExtractError::Rejected(format!(
                "entry `{shown}` points outside the archive"
            )));
        }
        if matches!(kind, EntryType::Symlink | EntryType::Link) {
            return Err(ExtractError::Rejected(format!("entry `{shown}` is a link")));
        }
        if classify_entry(&path) != EntryPath::Binary {
            continue;
        }
        if kind != EntryType::Regular {
            return Err(ExtractError::Rejected(format!("entry `{shown}` is not a regular file")));
        }
        if found.is_some() {
            return Err(ExtractError::Rejected(format!("more than one `{BINARY_NAME}` entry")));
        }
        let size = entry.size();
        if size > max_binary {
            return Err(ExtractError::TooLarge);
        }
        let copied = copy_hashing(&mut entry, out, max_binary, &mut |done| on_progress(done, size));
        found = Some(copied.map_err(|e| match e {
            CopyError::Read(e) => corrupt(e),
            CopyError::Write(e) => ExtractError::Write(e),
            CopyError::TooLarge => ExtractError::TooLarge,
        })?);
    }
    found.ok_or(ExtractError::Missing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;

    fn tarball(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), flate2::Compression::default()));
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o755);
            header.set_cksum();
            builder.append_data(&mut header, path, *data).expect("append");
        }
        builder.into_inner().expect("tar").finish().expect("gzip")
    }

    #[test]
    fn extracts_only_the_binary_with_its_hash() {
        let bin = b"#!/bin/sh\necho livekit-server-test\n";
        let tgz = tarball(&[("LICENSE", b"Apache"), ("livekit-server", bin)]);
        let mut out = Vec::new();
        let mut last = (0, 0);
        let (sha, len) = extract_binary(&tgz[..], &mut out, 1 << 20, 1 << 20, &mut |d, t| last = (d, t)).expect("ok");
        assert_eq!(out, bin);
        assert_eq!(len, bin.len() as u64);
        assert_eq!(last, (len, len));
        assert_eq!(sha, hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bin)));
    }

    #[test]
    fn refuses_missing_duplicate_and_oversized_binaries() {
        let none = tarball(&[("LICENSE", b"x")]);
        assert!(matches!(
            extract_binary(&none[..], &mut Vec::new(), 100, 1 << 20, &mut |_, _| {}),
            Err(ExtractError::Missing)
        ));
        let two = tarball(&[("livekit-server", b"#!a"), ("dir/livekit-server", b"#!b")]);
        let err = extract_binary(&two[..], &mut Vec::new(), 100, 1 << 20, &mut |_, _| {});
        assert!(
            matches!(&err, Err(ExtractError::Rejected(m)) if m.contains("more than one")),
            "{err:?}"
        );
        let big = tarball(&[("livekit-server", &[b'#'; 101])]);
        assert!(matches!(
            extract_binary(&big[..], &mut Vec::new(), 100, 1 << 20, &mut |_, _| {}),
            Err(ExtractError::TooLarge)
        ));
    }

    #[test]
    fn expansion_beyond_the_cap_is_refused() {
        let zeros = vec![0u8; 200_000];
        let bomb = tarball(&[("padding", &zeros), ("livekit-server", b"#!x")]);
        assert!(bomb.len() < 10_000, "compresses well");
        let err = extract_binary(&bomb[..], &mut Vec::new(), 1 << 20, 100_000, &mut |_, _| {});
        assert!(
            matches!(&err, Err(ExtractError::Rejected(m)) if m.contains("expands beyond")),
            "{err:?}"
        );
    }

    #[test]
    fn garbage_is_rejected_not_panicking() {
        let err = extract_binary(
            &b"\x1f\x8bnot really gzip"[..],
            &mut Vec::new(),
            100,
            100,
            &mut |_, _| {},
        );
        assert!(matches!(err, Err(ExtractError::Rejected(_))), "{err:?}");
    }

    #[test]
    fn format_sniffing_uses_magic_bytes() {
        assert!(is_gzip(&[0x1f, 0x8b, 8]));
        assert!(!is_gzip(b"\x7fELF"));
        assert!(looks_executable(b"\x7fELF\x02"));
        assert!(looks_executable(b"#!/bin/sh"));
        assert!(!looks_executable(b"<html>"));
        assert!(!looks_executable(b""));
    }
}
