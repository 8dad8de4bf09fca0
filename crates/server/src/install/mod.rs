//! Installing livekit-server: a wrong or partial binary never lands.
//!
//! # Sources
//! - Default: LiveKit's official release of [`DEFAULT_VERSION`] (or the
//!   `version` asked for), the tarball `livekit_<version>_linux_<arch>.tar.gz`
//!   and the release's `checksums.txt`, below [`RELEASE_BASE`]. The names come
//!   from livekit/livekit's `.goreleaser.yaml` (goreleaser's default archive
//!   template, GOARM=7 for 32-bit ARM).
//! - `source`: an http(s) URL, a `file://` URL or an absolute path of a
//!   tarball or a bare binary. Which one is decided by the gzip magic bytes,
//!   never by the name.
//!
//! # Verification
//! The artifact (tarball or bare binary, as fetched) is hashed while it
//! streams and must equal the expected sha256, taken from:
//! 1. `sha256` when given (it pins the artifact; no checksums file is fetched);
//! 2. for the default source, the release's `checksums.txt`;
//! 3. for a custom URL, `<url>.sha256`, then a `checksums.txt` in the same
//!    directory; when neither publishes one the install is refused with
//!    invalid `sha256` (a mirror without checksums must be pinned). Over plain
//!    http such a checksum only guards against corruption, not tampering;
//! 4. for a local path, nothing: it is installed unverified and the outcome
//!    carries a warning, since the operator put the file there.
//!
//! Only the `livekit-server` regular-file entry of a tarball is read out, into
//! a temporary file; an archive with an entry that escapes (`..`, absolute
//! path) or a link is refused. Sizes are bounded ([`InstallSettings`]).
//!
//! # Atomicity
//! Everything is written to temporary files beside the target, fsynced,
//! made 0755 and renamed; then the directory is fsynced, then the record
//! ([`InstallRecord`], JSON) is written the same way. On any error nothing is
//! renamed and the temporary files are removed (also when the future is
//! dropped), so the previous binary is intact. A running livekit-server keeps
//! executing its old inode.
//!
//! # Versions and idempotence
//! A custom source is labelled with `version` when given, else
//! `custom-<first 12 hex digits of the binary's sha256>`. Unless `force`,
//! nothing is fetched when the record names the same version and source (and
//! pinned sha256, if any) and the binary on disk still hashes to the record's
//! sha256. An unlabelled custom source must be fetched to be compared; when
//! its binary equals the installed one the file is left untouched and keeps
//! the label it was installed under (`start --update` of a custom source
//! fetches it this way). In both cases the outcome says `changed: false`.

mod archive;
mod disk;
mod error;
mod fetch;
mod plan;

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hero_livekit_proto::InstallParams;
use reqwest::{Client, Url};
use serde::{Deserialize, Serialize};
use tempfile::NamedTempFile;

pub use error::InstallError;
pub use plan::{BINARY_NAME, CHECKSUMS_FILE, RELEASE_BASE};

use disk::{parent_dir, CopyError};

/// The archive reader for the fuzz targets in `fuzz/`, which link this crate
/// from outside; not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    /// Whether `head` starts with gzip's magic bytes.
    pub fn is_gzip(head: &[u8]) -> bool {
        super::archive::is_gzip(head)
    }

    /// Whether `head` starts like something Linux can execute.
    pub fn looks_executable(head: &[u8]) -> bool {
        super::archive::looks_executable(head)
    }

    /// Extracts the `livekit-server` entry of the gzipped tarball `gz` into
    /// `out`: its sha256 (hex) and length, or why it was refused.
    ///
    /// # Errors
    /// The refusal, as text.
    pub fn extract_binary(
        gz: &[u8],
        out: &mut Vec<u8>,
        max_binary: u64,
        max_expanded: u64,
    ) -> Result<(String, u64), String> {
        super::archive::extract_binary(gz, out, max_binary, max_expanded, &mut |_, _| {}).map_err(|e| format!("{e:?}"))
    }
}

use plan::{Origin, Plan, Throttle, PROGRESS_INTERVAL};

/// The livekit-server release installed when no `version` is asked for.
pub const DEFAULT_VERSION: &str = "1.13.5";

/// Progress phase: fetching the artifact over HTTP.
pub const PHASE_DOWNLOAD: &str = "download";
/// Progress phase: hashing the artifact (reading a local source).
pub const PHASE_VERIFY: &str = "verify";
/// Progress phase: writing the binary into place.
pub const PHASE_INSTALL: &str = "install";

/// Checksums files list a handful of assets; 1 MiB is far beyond any.
const CHECKSUMS_MAX_BYTES: u64 = 1024 * 1024;
const MIB: u64 = 1024 * 1024;

/// Whether `label` names a release (`1.13.5`) rather than a custom
/// source's `custom-<sha>` label: only a release version may be passed back
/// as `version` when the recorded source is installed again.
pub fn is_release_version(label: &str) -> bool {
    plan::normalize_version(label).is_ok()
}

/// URL of LiveKit's release tarball of `version` for the machine
/// architecture `arch` (`x86_64`, `aarch64`, `arm`/`armv7`, or the release
/// names `amd64`, `arm64`).
///
/// # Errors
/// Invalid `version`, or [`InstallError::UnsupportedArch`].
pub fn release_url(version: &str, arch: &str) -> Result<String, InstallError> {
    plan::release_url_at(RELEASE_BASE, version, arch)
}

/// URL of the `checksums.txt` of LiveKit's release `version`.
///
/// # Errors
/// Invalid `version`.
pub fn checksums_url(version: &str) -> Result<String, InstallError> {
    plan::checksums_url_at(RELEASE_BASE, version)
}

/// What to install. Empty strings count as absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstallRequest {
    /// Release version (`1.13.5`, `v1.13.5`), or the label of a custom source.
    pub version: Option<String>,
    /// http(s) URL or absolute path of a tarball or a bare binary.
    pub source: Option<String>,
    /// Expected sha256 (hex) of the tarball or binary as fetched.
    pub sha256: Option<String>,
    /// Fetch and install even when the same version is installed and verifies.
    pub force: bool,
}

impl From<&InstallParams> for InstallRequest {
    fn from(p: &InstallParams) -> Self {
        InstallRequest {
            version: p.version.clone(),
            source: p.source.clone(),
            sha256: p.sha256.clone(),
            force: p.force.unwrap_or(false),
        }
    }
}

impl From<InstallParams> for InstallRequest {
    fn from(p: InstallParams) -> Self {
        InstallRequest {
            version: p.version,
            source: p.source,
            sha256: p.sha256,
            force: p.force.unwrap_or(false),
        }
    }
}

/// One progress report. At most one per phase every 50 ms while bytes move,
/// and always a final one with `bytes_done` equal to the total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstallProgress {
    /// [`PHASE_DOWNLOAD`], [`PHASE_VERIFY`] or [`PHASE_INSTALL`].
    pub phase: &'static str,
    /// Bytes of this phase done so far.
    pub bytes_done: u64,
    /// `None` while unknown (a download without Content-Length).
    pub bytes_total: Option<u64>,
}

/// What an install did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallOutcome {
    /// The release version, or the custom source's label.
    pub version: String,
    /// Where the binary is.
    pub path: PathBuf,
    /// sha256 (hex) of the installed binary (not of the tarball).
    pub sha256: String,
    /// The URL (without credentials or query) or path it came from.
    pub source: String,
    /// Whether the binary file was (re)written.
    pub changed: bool,
    /// Things the operator should know, e.g. an unverified local source.
    pub warnings: Vec<String>,
}

/// What [`installed`] reports for health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledInfo {
    /// `None` when the record is missing or does not describe the file
    /// (different size: replaced by hand).
    pub version: Option<String>,
    /// sha256 of the binary as recorded at install time.
    pub sha256: Option<String>,
}

/// The install record (`Paths::install_record()`), written after the binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallRecord {
    /// The release version, or the custom source's label.
    pub version: String,
    /// sha256 (hex) of the installed binary.
    pub sha256: String,
    /// The URL (without credentials or query) or path it came from.
    pub source: String,
    /// When the binary was written, in milliseconds since the Unix epoch.
    pub installed_unix_ms: u64,
    /// Size of the binary, so that [`installed`] notices a replaced file
    /// without hashing it.
    pub size: u64,
    /// sha256 of the artifact as fetched (tarball or binary), to tell a
    /// different pinned `sha256` from a repeated request.
    #[serde(default)]
    pub artifact_sha256: Option<String>,
}

impl InstallRecord {
    fn same_install(&self, other: &InstallRecord) -> bool {
        InstallRecord {
            installed_unix_ms: 0,
            ..self.clone()
        } == InstallRecord {
            installed_unix_ms: 0,
            ..other.clone()
        }
    }
}

/// Where releases come from and how big things may be. [`Default`] is the
/// production setting; tests point `release_base` at a local server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallSettings {
    /// Releases are at `<release_base>/v<version>/<asset>`.
    pub release_base: String,
    /// Machine architecture, normally `std::env::consts::ARCH`.
    pub arch: String,
    /// Largest artifact (tarball or bare binary) fetched.
    pub max_download_bytes: u64,
    /// Largest binary installed.
    pub max_binary_bytes: u64,
    /// Largest total a tarball may expand to while it is scanned.
    pub max_expanded_bytes: u64,
}

impl Default for InstallSettings {
    fn default() -> Self {
        InstallSettings {
            release_base: RELEASE_BASE.to_string(),
            arch: std::env::consts::ARCH.to_string(),
            max_download_bytes: 512 * MIB,
            max_binary_bytes: 512 * MIB,
            max_expanded_bytes: 1024 * MIB,
        }
    }
}

/// Installs livekit-server at `target` and records it in `record`, with the
/// production [`InstallSettings`]. See the module documentation.
///
/// # Errors
/// See [`InstallError`]; on any error the previous binary and record are intact.
pub async fn install(
    req: &InstallRequest,
    target: &Path,
    record: &Path,
    progress: impl FnMut(InstallProgress) + Send,
) -> Result<InstallOutcome, InstallError> {
    install_with(req, &InstallSettings::default(), target, record, progress).await
}

/// [`stage_with`] with the production [`InstallSettings`].
///
/// # Errors
/// See [`InstallError`]; nothing in place is changed.
pub async fn stage(
    req: &InstallRequest,
    target: &Path,
    record: &Path,
    progress: &mut (dyn FnMut(InstallProgress) + Send),
) -> Result<Staged, InstallError> {
    stage_with(req, &InstallSettings::default(), target, record, progress).await
}

/// [`install`] with explicit settings: [`stage_with`], then [`commit`].
///
/// # Errors
/// See [`InstallError`]; on any error the previous binary and record are intact.
pub async fn install_with(
    req: &InstallRequest,
    settings: &InstallSettings,
    target: &Path,
    record: &Path,
    mut progress: impl FnMut(InstallProgress) + Send,
) -> Result<InstallOutcome, InstallError> {
    match stage_with(req, settings, target, record, &mut progress).await? {
        Staged::Done(outcome) => Ok(outcome),
        Staged::Ready(ready) => commit(*ready, target, record, &mut progress).await,
    }
}

/// What [`stage_with`] leaves: nothing to do, or a verified binary in a
/// temporary file beside the target, waiting for [`commit`].
#[derive(Debug)]
pub enum Staged {
    /// The same version is installed and verifies: nothing was fetched.
    Done(InstallOutcome),
    /// Fetched, verified, extracted and found executable.
    Ready(Box<ReadyBinary>),
}

/// A verified binary not yet in place. Dropping it removes its file.
#[derive(Debug)]
pub struct ReadyBinary {
    file: NamedTempFile,
    sha256: String,
    size: u64,
    artifact_sha256: String,
    plan: Plan,
    force: bool,
    warnings: Vec<String>,
}

/// The slow half of an install, which touches nothing in place: resolves
/// the source, fetches or copies it into a temporary file beside `target`,
/// verifies its checksum, extracts the binary and checks it is executable.
/// The caller may run it without any lock and bound it by a deadline;
/// dropping its future leaves only a temporary file, swept by the next
/// install.
///
/// # Errors
/// See [`InstallError`]; nothing in place is changed.
pub async fn stage_with(
    req: &InstallRequest,
    settings: &InstallSettings,
    target: &Path,
    record: &Path,
    progress: &mut (dyn FnMut(InstallProgress) + Send),
) -> Result<Staged, InstallError> {
    let plan = plan::resolve(req, &settings.release_base, &settings.arch)?;
    if !req.force {
        if let Some(outcome) = already_installed(&plan, target, record, progress).await? {
            return Ok(Staged::Done(outcome));
        }
    }
    let dir = parent_dir(target);
    let prepare = {
        let (dir, target) = (dir.clone(), target.to_path_buf());
        move |_: &mut dyn FnMut(InstallProgress)| {
            disk::ensure_dir(&dir)?;
            disk::remove_stale_temps(&target, SystemTime::now());
            Ok(())
        }
    };
    blocking(progress, prepare)
        .await?
        .map_err(|cause| write_error(&dir, cause))?;

    let mut warnings = Vec::new();
    let (artifact, expected) = match &plan.origin {
        Origin::Release {
            url,
            checksums_url,
            asset,
        } => {
            let client = fetch::client()?;
            let expected = match &plan.pinned_sha256 {
                Some(pinned) => pinned.clone(),
                None => release_checksum(&client, checksums_url, asset).await?,
            };
            (
                download_to_temp(&client, url, target, settings, progress).await?,
                Some(expected),
            )
        }
        Origin::Url(url) => {
            let client = fetch::client()?;
            let expected = match &plan.pinned_sha256 {
                Some(pinned) => pinned.clone(),
                None => published_checksum(&client, url).await?,
            };
            (
                download_to_temp(&client, url, target, settings, progress).await?,
                Some(expected),
            )
        }
        Origin::Local(path) => {
            if plan.pinned_sha256.is_none() {
                warnings.push(format!(
                    "{} was installed without checksum verification (no sha256 given)",
                    path.display()
                ));
            }
            (
                copy_local(path, target, settings, progress).await?,
                plan.pinned_sha256.clone(),
            )
        }
    };
    if let Some(expected) = expected {
        if expected != artifact.sha256 {
            return Err(InstallError::ChecksumMismatch {
                what: plan.source_label.clone(),
                expected,
                actual: artifact.sha256,
            });
        }
    }

    let artifact_sha256 = artifact.sha256.clone();
    let (file, sha256, size) = {
        let (what, limits) = (plan.source_label.clone(), settings.clone());
        let target = target.to_path_buf();
        blocking(progress, move |send| {
            prepare_binary(artifact, &target, &what, &limits, send)
        })
        .await??
    };
    Ok(Staged::Ready(Box::new(ReadyBinary {
        file,
        sha256,
        size,
        artifact_sha256,
        plan,
        force: req.force,
        warnings,
    })))
}

/// The quick half: renames the staged binary into place (unless, without
/// `force`, the same bytes are already there) and writes the record.
///
/// # Errors
/// See [`InstallError`]; on any error the previous binary and record are intact.
pub async fn commit(
    ready: ReadyBinary,
    target: &Path,
    record: &Path,
    progress: &mut (dyn FnMut(InstallProgress) + Send),
) -> Result<InstallOutcome, InstallError> {
    let ReadyBinary {
        file,
        sha256,
        size,
        artifact_sha256,
        plan,
        force,
        warnings,
    } = ready;
    let binary = {
        let target = target.to_path_buf();
        blocking(progress, move |_| place_binary(file, sha256, size, &target, force)).await??
    };

    let record_now = InstallRecord {
        version: plan
            .version
            .clone()
            .unwrap_or_else(|| plan::custom_version(&binary.sha256)),
        sha256: binary.sha256.clone(),
        source: plan.source_label.clone(),
        installed_unix_ms: unix_ms(SystemTime::now()),
        size: binary.size,
        artifact_sha256: Some(artifact_sha256),
    };
    let write = {
        let (path, mut rec, rewrite) = (record.to_path_buf(), record_now, binary.changed);
        let labelled = plan.version.is_some();
        move |_: &mut dyn FnMut(InstallProgress)| {
            let old = disk::read_record(&path);
            // An unlabelled source fetched again (`start --update`) to the
            // very bytes installed from it keeps the label the operator gave
            // them: nothing about the install changed, and health should
            // not start calling it `custom-<sha>`.
            if let Some(old) = old
                .as_ref()
                .filter(|old| !labelled && !rewrite && old.sha256 == rec.sha256 && old.source == rec.source)
            {
                rec.version = old.version.clone();
            }
            let unchanged = old.is_some_and(|old| old.same_install(&rec));
            if rewrite || !unchanged {
                disk::write_record(&path, &rec)?;
            }
            Ok(rec)
        }
    };
    let new_record = blocking(progress, write)
        .await?
        .map_err(|cause| write_error(record, cause))?;
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    tracing::info!(version = %new_record.version, sha256 = %new_record.sha256, source = %new_record.source, changed = binary.changed, "livekit-server installed");
    Ok(InstallOutcome {
        version: new_record.version,
        path: target.to_path_buf(),
        sha256: new_record.sha256,
        source: new_record.source,
        changed: binary.changed,
        warnings,
    })
}

/// What health reports about the binary at `target`: `None` when there is no
/// executable file; its version and sha256 from the record. Cheap: one stat
/// and one small read, never a hash of the binary.
pub fn installed(target: &Path, record: &Path) -> Option<InstalledInfo> {
    let size = disk::executable_size(target)?;
    let record = disk::read_record(record).filter(|r| r.size == size);
    Some(InstalledInfo {
        version: record.as_ref().map(|r| r.version.clone()),
        sha256: record.map(|r| r.sha256),
    })
}

/// The install record, when one exists and parses: `start` reinstalls from
/// its source when the binary has gone missing, and `update` re-runs it.
pub fn read_record(record: &Path) -> Option<InstallRecord> {
    disk::read_record(record)
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn write_error(path: &Path, cause: std::io::Error) -> InstallError {
    InstallError::Write {
        path: path.display().to_string(),
        cause,
    }
}

/// Throttles the reports of one phase into a sink.
struct Reporter<S> {
    phase: &'static str,
    throttle: Throttle,
    sink: S,
}

impl<S: FnMut(InstallProgress)> Reporter<S> {
    fn new(phase: &'static str, sink: S) -> Self {
        Reporter {
            phase,
            throttle: Throttle::new(PROGRESS_INTERVAL),
            sink,
        }
    }

    fn update(&mut self, bytes_done: u64, bytes_total: Option<u64>) {
        if self.throttle.tick(Instant::now(), bytes_done) {
            (self.sink)(InstallProgress {
                phase: self.phase,
                bytes_done,
                bytes_total,
            });
        }
    }

    fn finish(&mut self, bytes: u64) {
        (self.sink)(InstallProgress {
            phase: self.phase,
            bytes_done: bytes,
            bytes_total: Some(bytes),
        });
    }
}

/// Runs blocking file work on the blocking pool, forwarding the progress it
/// reports to the caller's callback (which need not be `'static`).
async fn blocking<T: Send + 'static>(
    progress: &mut (dyn FnMut(InstallProgress) + Send),
    task: impl FnOnce(&mut dyn FnMut(InstallProgress)) -> T + Send + 'static,
) -> Result<T, InstallError> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let handle = tokio::task::spawn_blocking(move || {
        // A closed receiver means the install was abandoned; the work still
        // finishes or fails on its own, and its temporaries clean up.
        let mut send = |p: InstallProgress| {
            let _ = tx.send(p);
        };
        task(&mut send)
    });
    while let Some(p) = rx.recv().await {
        progress(p);
    }
    handle.await.map_err(|e| InstallError::Internal(e.to_string()))
}

/// The fetched artifact in a temporary file beside the target.
struct Artifact {
    file: NamedTempFile,
    sha256: String,
    size: u64,
}

/// The binary put in place.
struct Binary {
    sha256: String,
    size: u64,
    changed: bool,
}

async fn already_installed(
    plan: &Plan,
    target: &Path,
    record: &Path,
    progress: &mut (dyn FnMut(InstallProgress) + Send),
) -> Result<Option<InstallOutcome>, InstallError> {
    let check = {
        let (plan, target, record) = (plan.clone(), target.to_path_buf(), record.to_path_buf());
        move |_: &mut dyn FnMut(InstallProgress)| {
            let record = disk::read_record(&record).filter(|r| plan::record_satisfies(r, &plan))?;
            disk::executable_size(&target)?;
            let on_disk = disk::hash_file(&target).ok().flatten()?;
            (on_disk == record.sha256).then_some(record)
        }
    };
    Ok(blocking(progress, check).await?.map(|record| InstallOutcome {
        version: record.version,
        path: target.to_path_buf(),
        sha256: record.sha256,
        source: record.source,
        changed: false,
        warnings: Vec::new(),
    }))
}

async fn release_checksum(client: &Client, checksums_url: &Url, asset: &str) -> Result<String, InstallError> {
    let text = fetch::get_small(client, checksums_url, CHECKSUMS_MAX_BYTES).await?;
    plan::find_checksum(&text, asset, false).ok_or_else(|| InstallError::ChecksumNotListed {
        url: plan::display_url(checksums_url),
        asset: asset.to_string(),
    })
}

/// The checksum published beside a custom URL (see the module docs). A client
/// error (404, or 403 from object stores) means "not published here"; server
/// and network errors stop the install, since retrying may find it.
async fn published_checksum(client: &Client, url: &Url) -> Result<String, InstallError> {
    let candidates = plan::sidecar_checksums(url);
    for (candidate, name, allow_single) in &candidates {
        match fetch::get_small(client, candidate, CHECKSUMS_MAX_BYTES).await {
            Ok(text) => {
                if let Some(sha) = plan::find_checksum(&text, name, *allow_single) {
                    return Ok(sha);
                }
            }
            Err(InstallError::Http { status, .. }) if status.is_client_error() => {}
            Err(e) => return Err(e),
        }
    }
    let tried: Vec<String> = candidates.iter().map(|(u, _, _)| plan::display_url(u)).collect();
    Err(InstallError::InvalidParams {
        field: "sha256",
        reason: format!(
            "none given and no checksum is published for {} (tried {}); pass the expected sha256",
            plan::display_url(url),
            tried.join(" and ")
        ),
    })
}

async fn download_to_temp(
    client: &Client,
    url: &Url,
    target: &Path,
    settings: &InstallSettings,
    progress: &mut (dyn FnMut(InstallProgress) + Send),
) -> Result<Artifact, InstallError> {
    let dir = parent_dir(target);
    let create = {
        let target = target.to_path_buf();
        move |_: &mut dyn FnMut(InstallProgress)| {
            let tmp = disk::temp_beside(&target)?;
            let handle = tmp.as_file().try_clone()?;
            Ok::<_, std::io::Error>((tmp, handle))
        }
    };
    let (file, handle) = blocking(progress, create)
        .await?
        .map_err(|cause| write_error(&dir, cause))?;
    let label = file.path().display().to_string();
    let (sha256, size) = {
        let mut reporter = Reporter::new(PHASE_DOWNLOAD, &mut *progress);
        let mut on_progress = |done, total| reporter.update(done, total);
        let handle = tokio::fs::File::from_std(handle);
        let fetched = fetch::download(
            client,
            url,
            handle,
            &label,
            settings.max_download_bytes,
            &mut on_progress,
        )
        .await?;
        reporter.finish(fetched.1);
        fetched
    };
    // The digest was computed while streaming: verifying is a comparison.
    progress(InstallProgress {
        phase: PHASE_VERIFY,
        bytes_done: size,
        bytes_total: Some(size),
    });
    Ok(Artifact { file, sha256, size })
}

async fn copy_local(
    path: &Path,
    target: &Path,
    settings: &InstallSettings,
    progress: &mut (dyn FnMut(InstallProgress) + Send),
) -> Result<Artifact, InstallError> {
    let (path, target, limit) = (path.to_path_buf(), target.to_path_buf(), settings.max_download_bytes);
    blocking(progress, move |send| {
        let read_error = |cause| InstallError::ReadSource {
            path: path.display().to_string(),
            cause,
        };
        let source = File::open(&path).map_err(read_error)?;
        let meta = source.metadata().map_err(read_error)?;
        if !meta.is_file() {
            return Err(read_error(std::io::Error::other("not a regular file")));
        }
        let too_large = || InstallError::TooLarge {
            what: path.display().to_string(),
            limit,
        };
        if meta.len() > limit {
            return Err(too_large());
        }
        // Copying (rather than reading the source twice) means the bytes
        // verified are exactly the bytes installed, even if the source
        // changes meanwhile.
        let mut file = disk::temp_beside(&target).map_err(|cause| write_error(&parent_dir(&target), cause))?;
        let mut reporter = Reporter::new(PHASE_VERIFY, send);
        let total = meta.len();
        let (sha256, size) =
            disk::copy_hashing(source, &mut file, limit, &mut |done| reporter.update(done, Some(total))).map_err(
                |e| match e {
                    CopyError::Read(cause) => read_error(cause),
                    CopyError::Write(cause) => write_error(file.path(), cause),
                    CopyError::TooLarge => too_large(),
                },
            )?;
        reporter.finish(size);
        Ok(Artifact { file, sha256, size })
    })
    .await?
}

/// Turns a verified artifact into a binary ready to install: extracts it
/// when it is a tarball and checks that it is executable. Returns the file
/// (beside `target`), its sha256 and size.
fn prepare_binary(
    artifact: Artifact,
    target: &Path,
    what: &str,
    limits: &InstallSettings,
    send: &mut dyn FnMut(InstallProgress),
) -> Result<(NamedTempFile, String, u64), InstallError> {
    let temp_error = |path: &Path| {
        let path = path.to_path_buf();
        move |cause| write_error(&path, cause)
    };
    let reopen = |tmp: &NamedTempFile| tmp.reopen().map_err(temp_error(tmp.path()));
    let mut reporter = Reporter::new(PHASE_INSTALL, send);
    let head = disk::head(&reopen(&artifact.file)?, 4).map_err(temp_error(artifact.file.path()))?;
    let (file, sha256, size) = if archive::is_gzip(&head) {
        let mut out = disk::temp_beside(target).map_err(temp_error(&parent_dir(target)))?;
        let reader = BufReader::new(reopen(&artifact.file)?);
        let (sha256, size) = archive::extract_binary(
            reader,
            &mut out,
            limits.max_binary_bytes,
            limits.max_expanded_bytes,
            &mut |done, total| reporter.update(done, Some(total)),
        )
        .map_err(|e| match e {
            archive::ExtractError::Rejected(cause) => InstallError::Archive {
                what: what.to_string(),
                cause,
            },
            archive::ExtractError::Missing => InstallError::MissingBinary { what: what.to_string() },
            archive::ExtractError::TooLarge => InstallError::TooLarge {
                what: format!("the {BINARY_NAME} in {what}"),
                limit: limits.max_binary_bytes,
            },
            archive::ExtractError::Write(cause) => write_error(out.path(), cause),
        })?;
        (out, sha256, size)
    } else {
        if artifact.size > limits.max_binary_bytes {
            return Err(InstallError::TooLarge {
                what: what.to_string(),
                limit: limits.max_binary_bytes,
            });
        }
        (artifact.file, artifact.sha256, artifact.size)
    };
    let binary_head = disk::head(&reopen(&file)?, 4).map_err(temp_error(file.path()))?;
    if !archive::looks_executable(&binary_head) {
        return Err(InstallError::NotExecutable { what: what.to_string() });
    }
    reporter.finish(size);
    Ok((file, sha256, size))
}

/// Renames a prepared binary into place, unless (without `force`) the same
/// bytes are already there.
fn place_binary(
    file: NamedTempFile,
    sha256: String,
    size: u64,
    target: &Path,
    force: bool,
) -> Result<Binary, InstallError> {
    let same_bytes = !force && disk::hash_file(target).ok().flatten().as_deref() == Some(sha256.as_str());
    let changed = !same_bytes || disk::executable_size(target).is_none();
    if changed {
        disk::install_executable(file, target).map_err(|cause| write_error(target, cause))?;
    }
    Ok(Binary { sha256, size, changed })
}
