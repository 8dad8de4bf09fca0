//! The installer's pure decisions: which artifact to fetch from where, which
//! checksum to expect, whether an install is already in place, and how often
//! to report progress. Nothing here touches the network or the disk, so every
//! rule is tested by tables.

use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::Url;

use super::error::InstallError;
use super::{InstallRecord, InstallRequest};

/// Where LiveKit publishes release assets; `v<version>/<asset>` below it.
pub const RELEASE_BASE: &str = "https://github.com/livekit/livekit/releases/download";

/// The checksum file goreleaser publishes with every LiveKit release
/// (`checksum.name_template` in livekit/livekit's `.goreleaser.yaml`).
pub const CHECKSUMS_FILE: &str = "checksums.txt";

/// The file name of the server binary, inside the release tarball and installed.
pub const BINARY_NAME: &str = "livekit-server";

/// Maps a machine architecture (Rust's `std::env::consts::ARCH` or `uname -m`)
/// to the suffix LiveKit's release assets use. goreleaser names archives
/// `<project>_<version>_<os>_<goarch>[v<goarm>]`, and LiveKit builds amd64,
/// arm64 and arm with GOARM=7 only; Rust reports every 32-bit ARM as `arm`, so
/// that maps to the only 32-bit build there is.
pub fn release_arch(arch: &str) -> Option<&'static str> {
    match arch {
        "x86_64" | "amd64" => Some("amd64"),
        "aarch64" | "arm64" => Some("arm64"),
        "arm" | "armv7" | "armv7l" | "armhf" => Some("armv7"),
        _ => None,
    }
}

/// Checks a version and strips a leading `v` (`v1.13.5` and `1.13.5` name the
/// same release). The rule is `MAJOR.MINOR.PATCH` with an optional
/// `-suffix`/`+suffix` of `[0-9A-Za-z.+-]`, because the version becomes part
/// of a URL path and of the install record.
///
/// # Errors
/// [`InstallError::InvalidParams`] naming `version`.
pub fn normalize_version(raw: &str) -> Result<String, InstallError> {
    let trimmed = raw.trim();
    let v = trimmed
        .strip_prefix('v')
        .filter(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        .unwrap_or(trimmed);
    let (core, suffix) = match v.find(['-', '+']) {
        Some(i) => (&v[..i], &v[i + 1..]),
        None => (v, ""),
    };
    let core_ok = core.split('.').count() == 3
        && core
            .split('.')
            .all(|part| !part.is_empty() && part.len() <= 9 && part.bytes().all(|b| b.is_ascii_digit()));
    let suffix_ok = suffix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-'));
    let has_suffix = v.len() != core.len();
    if core_ok && suffix_ok && (!has_suffix || !suffix.is_empty()) && v.len() <= 64 {
        Ok(v.to_string())
    } else {
        Err(InstallError::InvalidParams {
            field: "version",
            reason: format!("`{}` is not a release version like `1.13.5`", printable(raw)),
        })
    }
}

/// Checks a sha256 given by the operator: exactly 64 hex digits, returned in
/// lower case so that it compares equal to computed digests.
///
/// # Errors
/// [`InstallError::InvalidParams`] naming `sha256`.
pub fn normalize_sha256(raw: &str) -> Result<String, InstallError> {
    let v = raw.trim();
    if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(v.to_ascii_lowercase())
    } else {
        Err(InstallError::InvalidParams {
            field: "sha256",
            reason: format!(
                "expected 64 hexadecimal characters, got {} characters",
                v.chars().count()
            ),
        })
    }
}

/// The asset name of a release tarball, e.g. `livekit_1.13.5_linux_amd64.tar.gz`.
pub fn asset_name(version: &str, release_arch: &str) -> String {
    format!("livekit_{version}_linux_{release_arch}.tar.gz")
}

fn release_dir(base: &str, version: &str) -> String {
    format!("{}/v{version}", base.trim_end_matches('/'))
}

/// The release tarball URL below `base` (normally [`RELEASE_BASE`]).
///
/// # Errors
/// [`InstallError::InvalidParams`] for a bad version,
/// [`InstallError::UnsupportedArch`] for an architecture LiveKit does not build.
pub fn release_url_at(base: &str, version: &str, arch: &str) -> Result<String, InstallError> {
    let version = normalize_version(version)?;
    let goarch = release_arch(arch).ok_or_else(|| InstallError::UnsupportedArch { arch: arch.to_string() })?;
    Ok(format!(
        "{}/{}",
        release_dir(base, &version),
        asset_name(&version, goarch)
    ))
}

/// The release checksums URL below `base` (normally [`RELEASE_BASE`]).
///
/// # Errors
/// [`InstallError::InvalidParams`] for a bad version.
pub fn checksums_url_at(base: &str, version: &str) -> Result<String, InstallError> {
    let version = normalize_version(version)?;
    Ok(format!("{}/{CHECKSUMS_FILE}", release_dir(base, &version)))
}

/// Where the artifact comes from, once the request is understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// LiveKit's official release: the tarball and the release's checksums file.
    Release {
        url: Url,
        checksums_url: Url,
        asset: String,
    },
    /// An operator-given http(s) URL of a tarball or a bare binary.
    Url(Url),
    /// An operator-given absolute path of a tarball or a bare binary.
    Local(PathBuf),
}

/// A validated request: what to fetch, what to expect, how to label it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub origin: Origin,
    /// Known before fetching for the release and when `version` is given;
    /// `None` means "label it by its checksum once fetched".
    pub version: Option<String>,
    /// The operator's pinned sha256 of the artifact, lower case.
    pub pinned_sha256: Option<String>,
    /// How the source is recorded and reported: the URL without credentials
    /// or query, or the local path.
    pub source_label: String,
}

/// Turns a request into a plan. Empty strings count as absent, as for every
/// other method's parameters.
///
/// # Errors
/// [`InstallError::InvalidParams`] naming the field, or
/// [`InstallError::UnsupportedArch`] for the default source on a machine
/// LiveKit does not build for.
pub fn resolve(req: &InstallRequest, release_base: &str, arch: &str) -> Result<Plan, InstallError> {
    let present = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let pinned_sha256 = present(&req.sha256).map(|s| normalize_sha256(&s)).transpose()?;
    let version = present(&req.version).map(|v| normalize_version(&v)).transpose()?;
    match present(&req.source) {
        None => {
            let version = version.unwrap_or_else(|| super::DEFAULT_VERSION.to_string());
            let goarch = release_arch(arch).ok_or_else(|| InstallError::UnsupportedArch { arch: arch.to_string() })?;
            let asset = asset_name(&version, goarch);
            let dir = release_dir(release_base, &version);
            // The base comes from settings, not from the caller: a bad one is
            // the daemon's fault, not an invalid parameter.
            let url_of = |name: &str| {
                Url::parse(&format!("{dir}/{name}")).map_err(|e| {
                    InstallError::Internal(format!("release base `{release_base}` does not form a URL: {e}"))
                })
            };
            let url = url_of(&asset)?;
            let checksums_url = url_of(CHECKSUMS_FILE)?;
            Ok(Plan {
                source_label: display_url(&url),
                origin: Origin::Release {
                    url,
                    checksums_url,
                    asset,
                },
                version: Some(version),
                pinned_sha256,
            })
        }
        Some(source) => {
            let origin = classify_source(&source)?;
            let source_label = match &origin {
                Origin::Local(path) => path.display().to_string(),
                Origin::Url(url) | Origin::Release { url, .. } => display_url(url),
            };
            Ok(Plan {
                origin,
                version,
                pinned_sha256,
                source_label,
            })
        }
    }
}

/// An http(s) URL, a `file://` URL or an absolute path. Relative paths are
/// refused because the daemon's working directory is not the caller's.
fn classify_source(source: &str) -> Result<Origin, InstallError> {
    let invalid = |reason: String| InstallError::InvalidParams {
        field: "source",
        reason,
    };
    let scheme_end = source.find("://");
    match scheme_end.map(|i| source[..i].to_ascii_lowercase()) {
        Some(scheme) if scheme == "http" || scheme == "https" => {
            let url = Url::parse(source).map_err(|e| invalid(format!("not a valid URL ({e})")))?;
            if url.host_str().is_none_or(str::is_empty) {
                return Err(invalid("the URL has no host".into()));
            }
            Ok(Origin::Url(url))
        }
        Some(scheme) if scheme == "file" => {
            let path = Url::parse(source)
                .ok()
                .and_then(|u| u.to_file_path().ok())
                .ok_or_else(|| invalid("not a valid file:// URL of an absolute path".into()))?;
            Ok(Origin::Local(path))
        }
        Some(scheme) => Err(invalid(format!(
            "scheme `{}` is not supported: give an http(s) URL or an absolute path",
            printable(&scheme)
        ))),
        None if Path::new(source).is_absolute() => Ok(Origin::Local(PathBuf::from(source))),
        None => Err(invalid(format!(
            "`{}` is neither an http(s) URL nor an absolute path",
            printable(source)
        ))),
    }
}

/// A URL as it may appear in messages, records and events: credentials and
/// the query (which holds the signature of pre-signed URLs) are left out.
pub fn display_url(url: &Url) -> String {
    let query = if url.query().is_some() { "?<redacted>" } else { "" };
    format!("{}{}{}", url.origin().ascii_serialization(), url.path(), query)
}

/// Operator input quoted in an error: control characters would let it forge
/// log lines, and a long value would bury the message.
fn printable(s: &str) -> String {
    s.chars()
        .take(200)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Where a checksum for a custom URL may be published, in the order tried:
/// `<url>.sha256` (the `sha256sum` convention, one file per artifact), then a
/// goreleaser-style `checksums.txt` in the same directory. Each comes with the
/// file name to look for in it, and whether a single unnamed entry counts.
pub fn sidecar_checksums(url: &Url) -> Vec<(Url, String, bool)> {
    let name = url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .unwrap_or("")
        .to_string();
    let mut base = url.clone();
    base.set_query(None);
    base.set_fragment(None);
    let mut candidates = Vec::new();
    let mut own = base.clone();
    own.set_path(&format!("{}.sha256", base.path()));
    candidates.push((own, name.clone(), true));
    if let Ok(beside) = base.join(CHECKSUMS_FILE) {
        candidates.push((beside, name, false));
    }
    candidates
}

/// Finds the sha256 for `name` in a checksums file of `sha256sum` lines
/// (`<hex>  <name>`, `<hex> *<name>`). With `allow_single`, a file holding
/// exactly one digest (a bare hash, or one line for another name) is that
/// artifact's: `<url>.sha256` files are often written that way.
pub fn find_checksum(text: &str, name: &str, allow_single: bool) -> Option<String> {
    let mut entries = Vec::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let mut parts = line.split_whitespace();
        let Some(hash) = parts
            .next()
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        else {
            continue;
        };
        let file = parts.next().map(|f| f.trim_start_matches('*').trim_start_matches("./"));
        entries.push((hash.to_ascii_lowercase(), file));
    }
    if let Some((hash, _)) = entries.iter().find(|(_, file)| *file == Some(name)) {
        return Some(hash.clone());
    }
    match entries.as_slice() {
        [(hash, _)] if allow_single => Some(hash.clone()),
        _ => None,
    }
}

/// The version label of a custom source installed without `version`:
/// `custom-` and the first 12 hex digits of the binary's sha256, so that two
/// different custom builds never share a label.
pub fn custom_version(binary_sha256: &str) -> String {
    format!("custom-{}", &binary_sha256[..binary_sha256.len().min(12)])
}

/// Whether the record says that exactly this request is already installed.
/// The caller then still checks that the file on disk hashes to the record's
/// digest, so a replaced or damaged binary is reinstalled.
pub fn record_satisfies(record: &InstallRecord, plan: &Plan) -> bool {
    let Some(version) = &plan.version else {
        return false;
    };
    let artifact_ok = match &plan.pinned_sha256 {
        Some(pinned) => record.artifact_sha256.as_deref() == Some(pinned.as_str()),
        None => true,
    };
    record.version == *version && record.source == plan.source_label && artifact_ok
}

/// What an archive entry's path means for the installer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryPath {
    /// `..`, an absolute path or a drive prefix: the archive is hostile or broken.
    Escapes,
    /// `livekit-server` at the top or one directory down (goreleaser's
    /// `wrap_in_directory`).
    Binary,
    /// Anything else, skipped.
    Other,
}

/// Classifies an archive entry path.
pub fn classify_entry(path: &Path) -> EntryPath {
    let mut names = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => names.push(name),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return EntryPath::Escapes,
        }
    }
    match names.last() {
        Some(last) if *last == BINARY_NAME && names.len() <= 2 => EntryPath::Binary,
        _ => EntryPath::Other,
    }
}

/// Rate limit for progress reports: at most one per `interval`, and only when
/// bytes moved, so a fast local copy does not flood event subscribers while a
/// slow download still shows movement. The final report is sent separately.
#[derive(Debug, Clone)]
pub struct Throttle {
    interval: Duration,
    last: Option<(Instant, u64)>,
}

/// The default progress interval (20 reports per second at most).
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(50);

impl Throttle {
    pub fn new(interval: Duration) -> Self {
        Throttle { interval, last: None }
    }

    /// Whether a report of `done` bytes at `now` should be sent; records it if so.
    pub fn tick(&mut self, now: Instant, done: u64) -> bool {
        let due = match self.last {
            None => true,
            Some((at, bytes)) => done > bytes && now.saturating_duration_since(at) >= self.interval,
        };
        if due {
            self.last = Some((now, done));
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: Option<&str>, source: Option<&str>, sha256: Option<&str>) -> InstallRequest {
        InstallRequest {
            version: version.map(str::to_string),
            source: source.map(str::to_string),
            sha256: sha256.map(str::to_string),
            force: false,
        }
    }

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn release_url_per_arch_matches_goreleaser_names() {
        let cases = [
            ("x86_64", "1.13.5", "v1.13.5/livekit_1.13.5_linux_amd64.tar.gz"),
            ("amd64", "1.13.5", "v1.13.5/livekit_1.13.5_linux_amd64.tar.gz"),
            ("aarch64", "1.13.5", "v1.13.5/livekit_1.13.5_linux_arm64.tar.gz"),
            ("arm64", "1.9.1", "v1.9.1/livekit_1.9.1_linux_arm64.tar.gz"),
            ("arm", "1.9.1", "v1.9.1/livekit_1.9.1_linux_armv7.tar.gz"),
            ("armv7l", "v1.8.4", "v1.8.4/livekit_1.8.4_linux_armv7.tar.gz"),
            (
                "x86_64",
                "1.10.0-rc1",
                "v1.10.0-rc1/livekit_1.10.0-rc1_linux_amd64.tar.gz",
            ),
        ];
        for (arch, version, tail) in cases {
            let url = release_url_at(RELEASE_BASE, version, arch).expect("supported");
            assert_eq!(
                url,
                format!("https://github.com/livekit/livekit/releases/download/{tail}"),
                "{arch} {version}"
            );
        }
    }

    #[test]
    fn checksums_url_names_the_release_checksums_file() {
        assert_eq!(
            checksums_url_at(RELEASE_BASE, "1.13.5").expect("valid"),
            "https://github.com/livekit/livekit/releases/download/v1.13.5/checksums.txt"
        );
        assert_eq!(
            checksums_url_at("http://127.0.0.1:9/r/", "v1.9.1").expect("valid"),
            "http://127.0.0.1:9/r/v1.9.1/checksums.txt"
        );
    }

    #[test]
    fn unsupported_arch_is_named_in_the_error() {
        for arch in ["x86", "riscv64", "powerpc64", "s390x", ""] {
            let err = release_url_at(RELEASE_BASE, "1.13.5", arch).expect_err("no LiveKit build");
            assert!(
                matches!(&err, InstallError::UnsupportedArch { arch: a } if a == arch),
                "{err}"
            );
        }
    }

    #[test]
    fn version_rule_accepts_releases_and_refuses_the_rest() {
        let ok = [
            ("1.13.5", "1.13.5"),
            ("v1.13.5", "1.13.5"),
            (" 1.9.1 ", "1.9.1"),
            ("1.10.0-rc.1", "1.10.0-rc.1"),
        ];
        for (raw, want) in ok {
            assert_eq!(normalize_version(raw).expect(raw), want);
        }
        let bad = [
            "",
            "1.13",
            "1.13.5.1",
            "latest",
            "1.13.5-",
            "1..5",
            "1.13.5/../x",
            "1.13.5 x",
            "v",
            "1.a.3",
            "1.2.3-\n",
        ];
        for raw in bad {
            let err = normalize_version(raw).expect_err(raw);
            assert_eq!(err.field(), Some("version"), "{raw:?}");
        }
    }

    #[test]
    fn sha256_rule_needs_64_hex_digits_and_lowercases() {
        assert_eq!(normalize_sha256(&HASH.to_ascii_uppercase()).expect("hex"), HASH);
        for raw in [&HASH[..63], "zz", &format!("{HASH}0"), &format!("{}g", &HASH[..63])] {
            let err = normalize_sha256(raw).expect_err(raw);
            assert_eq!(err.field(), Some("sha256"));
            assert!(err.to_string().contains("64 hexadecimal"), "{err}");
        }
    }

    #[test]
    fn resolve_defaults_to_the_pinned_release() {
        let plan = resolve(&req(None, None, None), RELEASE_BASE, "x86_64").expect("default");
        assert_eq!(plan.version.as_deref(), Some(super::super::DEFAULT_VERSION));
        let Origin::Release {
            url,
            checksums_url,
            asset,
        } = &plan.origin
        else {
            panic!("default source is the release: {plan:?}");
        };
        assert!(url.as_str().ends_with(&format!("/{asset}")));
        assert!(checksums_url.as_str().ends_with("/checksums.txt"));
        assert_eq!(plan.source_label, url.as_str());
    }

    #[test]
    fn resolve_classifies_sources() {
        let cases: [(&str, Result<Origin, &str>); 8] = [
            (
                "/opt/lk/livekit-server",
                Ok(Origin::Local("/opt/lk/livekit-server".into())),
            ),
            ("file:///opt/lk.tgz", Ok(Origin::Local("/opt/lk.tgz".into()))),
            (
                "https://mirror.example/lk.tar.gz",
                Ok(Origin::Url(
                    Url::parse("https://mirror.example/lk.tar.gz").expect("url"),
                )),
            ),
            (
                "HTTP://mirror.example/lk",
                Ok(Origin::Url(Url::parse("http://mirror.example/lk").expect("url"))),
            ),
            ("lk.tar.gz", Err("source")),
            ("./lk.tar.gz", Err("source")),
            ("ftp://mirror.example/lk.tar.gz", Err("source")),
            ("https://", Err("source")),
        ];
        for (source, want) in cases {
            let got = resolve(&req(None, Some(source), None), RELEASE_BASE, "x86_64");
            match (got, want) {
                (Ok(plan), Ok(origin)) => assert_eq!(plan.origin, origin, "{source}"),
                (Err(err), Err(field)) => assert_eq!(err.field(), Some(field), "{source}: {err}"),
                (got, want) => panic!("{source}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn resolve_treats_empty_strings_as_absent_and_validates_the_rest() {
        let plan = resolve(&req(Some(""), Some(" "), Some("")), RELEASE_BASE, "aarch64").expect("all absent");
        assert!(matches!(plan.origin, Origin::Release { .. }));
        assert_eq!(plan.pinned_sha256, None);
        let err = resolve(&req(None, Some("/x"), Some("abc")), RELEASE_BASE, "x86_64").expect_err("bad sha");
        assert_eq!(err.field(), Some("sha256"));
        let err = resolve(&req(Some("latest"), None, None), RELEASE_BASE, "x86_64").expect_err("bad version");
        assert_eq!(err.field(), Some("version"));
        // A custom source does not need an architecture LiveKit builds for.
        let plan = resolve(&req(None, Some("/x"), None), RELEASE_BASE, "riscv64").expect("local");
        assert_eq!(plan.version, None);
    }

    #[test]
    fn urls_in_labels_drop_credentials_and_query() {
        let url =
            Url::parse("https://user:hunter2@mirror.example:8443/a/lk.tgz?X-Amz-Signature=s3cr3t#f").expect("url");
        let shown = display_url(&url);
        assert_eq!(shown, "https://mirror.example:8443/a/lk.tgz?<redacted>");
        let plan = resolve(&req(None, Some(url.as_str()), None), RELEASE_BASE, "x86_64").expect("url");
        assert!(!plan.source_label.contains("hunter2") && !plan.source_label.contains("s3cr3t"));
    }

    #[test]
    fn sidecars_are_the_sha256_file_then_checksums_txt_beside() {
        let url = Url::parse("https://m.example/rel/v1/lk.tar.gz?token=t").expect("url");
        let got: Vec<(String, String, bool)> = sidecar_checksums(&url)
            .into_iter()
            .map(|(u, n, single)| (u.to_string(), n, single))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "https://m.example/rel/v1/lk.tar.gz.sha256".into(),
                    "lk.tar.gz".into(),
                    true
                ),
                (
                    "https://m.example/rel/v1/checksums.txt".into(),
                    "lk.tar.gz".into(),
                    false
                ),
            ]
        );
    }

    #[test]
    fn checksum_lookup_follows_sha256sum_format() {
        let other = "a".repeat(64);
        let text = format!("{other}  livekit_1.13.5_linux_arm64.tar.gz\n{HASH} *./livekit_1.13.5_linux_amd64.tar.gz\n");
        assert_eq!(
            find_checksum(&text, "livekit_1.13.5_linux_amd64.tar.gz", false).as_deref(),
            Some(HASH)
        );
        assert_eq!(find_checksum(&text, "livekit_1.13.5_linux_armv7.tar.gz", false), None);
        assert_eq!(
            find_checksum(&text, "livekit_1.13.5_linux_armv7.tar.gz", true),
            None,
            "two entries: ambiguous"
        );
        assert_eq!(find_checksum(&format!("{HASH}\n"), "x", true).as_deref(), Some(HASH));
        assert_eq!(find_checksum(&format!("{HASH}  other\n"), "x", false), None);
        assert_eq!(find_checksum("<html>not found</html>", "x", true), None);
    }

    #[test]
    fn record_satisfies_only_the_same_version_source_and_pin() {
        let plan = resolve(&req(Some("1.9.1"), Some("/opt/lk"), Some(HASH)), RELEASE_BASE, "x86_64").expect("plan");
        let record = InstallRecord {
            version: "1.9.1".into(),
            sha256: "b".repeat(64),
            source: "/opt/lk".into(),
            installed_unix_ms: 1,
            size: 10,
            artifact_sha256: Some(HASH.into()),
        };
        assert!(record_satisfies(&record, &plan));
        let changed = [
            InstallRecord {
                version: "1.9.0".into(),
                ..record.clone()
            },
            InstallRecord {
                source: "/opt/other".into(),
                ..record.clone()
            },
            InstallRecord {
                artifact_sha256: None,
                ..record.clone()
            },
        ];
        for r in &changed {
            assert!(!record_satisfies(r, &plan), "{r:?}");
        }
        let unversioned = Plan { version: None, ..plan };
        assert!(
            !record_satisfies(&record, &unversioned),
            "an unlabelled custom source must be fetched to compare"
        );
    }

    #[test]
    fn entry_paths_that_escape_are_recognised() {
        let cases = [
            ("livekit-server", EntryPath::Binary),
            ("./livekit-server", EntryPath::Binary),
            ("livekit_1.13.5/livekit-server", EntryPath::Binary),
            ("a/b/livekit-server", EntryPath::Other),
            ("LICENSE", EntryPath::Other),
            ("livekit-server.sig", EntryPath::Other),
            ("../livekit-server", EntryPath::Escapes),
            ("x/../../etc/passwd", EntryPath::Escapes),
            ("/livekit-server", EntryPath::Escapes),
            ("/usr/bin/x", EntryPath::Escapes),
        ];
        for (path, want) in cases {
            assert_eq!(classify_entry(Path::new(path)), want, "{path}");
        }
    }

    #[test]
    fn throttle_reports_first_then_at_most_once_per_interval_when_moving() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut t = Throttle::new(Duration::from_millis(50));
        let steps = [
            (0, 10, true),
            (10, 20, false),
            (49, 30, false),
            (50, 30, true),
            (120, 30, false),
            (121, 31, true),
        ];
        for (at, done, want) in steps {
            assert_eq!(t.tick(ms(at), done), want, "at {at} ms, {done} bytes");
        }
    }

    #[test]
    fn custom_version_is_labelled_by_checksum_prefix() {
        assert_eq!(custom_version(HASH), "custom-9f86d081884c");
    }
}
