//! Why an install failed, in terms an operator can act on.
//!
//! Every message names the URL or path involved and the cause. URLs appear
//! only through [`super::plan::display_url`], so credentials and pre-signed
//! query strings never reach a message, a log or an event.

use std::io;

use hero_livekit_proto::ErrorCode;
use reqwest::StatusCode;

/// A failed install. Nothing was installed and the previous binary, if any,
/// is intact, whatever the variant.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A parameter breaks its rule; maps to JSON-RPC -32602 naming `field`.
    #[error("invalid `{field}`: {reason}")]
    InvalidParams { field: &'static str, reason: String },
    /// LiveKit publishes no release for this machine.
    #[error("LiveKit publishes no livekit-server release for the `{arch}` architecture (only amd64, arm64 and armv7)")]
    UnsupportedArch { arch: String },
    /// The server answered with a non-success status.
    #[error("HTTP {status} from {url}")]
    Http { url: String, status: StatusCode },
    /// Connecting, sending or receiving failed (including a dropped connection).
    #[error("download from {url} failed: {cause}")]
    Network { url: String, cause: String },
    /// The artifact or the binary in it exceeds a size limit.
    #[error("{what} exceeds the limit of {limit} bytes")]
    TooLarge { what: String, limit: u64 },
    /// The release checksums file does not list the artifact.
    #[error("{url} lists no checksum for {asset}")]
    ChecksumNotListed { url: String, asset: String },
    /// The artifact's sha256 differs from the expected one.
    #[error("checksum mismatch for {what}: expected sha256 {expected}, got {actual}")]
    ChecksumMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    /// The artifact is not a readable tarball, or holds entries that try to
    /// escape (absolute paths, `..`, links).
    #[error("{what} is not an acceptable livekit-server archive: {cause}")]
    Archive { what: String, cause: String },
    /// The tarball holds no `livekit-server` file.
    #[error("{what} holds no `livekit-server` file")]
    MissingBinary { what: String },
    /// What was fetched is not an executable (neither ELF nor a `#!` script).
    #[error("{what} is not an executable: it starts with neither an ELF header nor `#!`")]
    NotExecutable { what: String },
    /// A local source could not be read.
    #[error("cannot read {path}: {cause}")]
    ReadSource { path: String, cause: io::Error },
    /// Writing the binary, a temporary file or the record failed.
    #[error("cannot write {path}: {cause}")]
    Write { path: String, cause: io::Error },
    /// A blocking task of the installer panicked or was cancelled.
    #[error("install task failed: {0}")]
    Internal(String),
}

impl InstallError {
    /// The application error code, or `None` for invalid parameters, which
    /// use the standard JSON-RPC -32602 with [`Self::field`].
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            InstallError::InvalidParams { .. } => None,
            InstallError::ChecksumMismatch { .. } => Some(ErrorCode::ChecksumMismatch),
            InstallError::Write { .. } => Some(ErrorCode::WriteFailed),
            InstallError::UnsupportedArch { .. }
            | InstallError::Http { .. }
            | InstallError::Network { .. }
            | InstallError::TooLarge { .. }
            | InstallError::ChecksumNotListed { .. }
            | InstallError::Archive { .. }
            | InstallError::MissingBinary { .. }
            | InstallError::NotExecutable { .. }
            | InstallError::ReadSource { .. }
            | InstallError::Internal(_) => Some(ErrorCode::InstallFailed),
        }
    }

    /// The offending parameter for invalid params.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            InstallError::InvalidParams { field, .. } => Some(field),
            _ => None,
        }
    }

    /// One actionable sentence for the operator.
    pub fn hint(&self) -> &'static str {
        match self {
            InstallError::InvalidParams { field: "version", .. } => {
                "give a LiveKit release version such as `1.13.5`, or leave it out for the pinned one"
            }
            InstallError::InvalidParams { field: "source", .. } => {
                "give an http(s) URL or an absolute path of a livekit-server release tarball or binary"
            }
            InstallError::InvalidParams { .. } => {
                "give the sha256 of the tarball or binary as 64 hex characters (the first word of `sha256sum FILE`)"
            }
            InstallError::UnsupportedArch { .. } => {
                "build livekit-server for this machine and run `hero_livekit install --source PATH --sha256 HASH`"
            }
            InstallError::Http { status, .. } if *status == StatusCode::NOT_FOUND => {
                "check the version and the source URL; the previous binary was kept"
            }
            InstallError::Http { .. } | InstallError::Network { .. } => {
                "check network access to the source and retry `hero_livekit install`, or install from a local copy with `--source PATH`; the previous binary was kept"
            }
            InstallError::TooLarge { .. }
            | InstallError::Archive { .. }
            | InstallError::MissingBinary { .. }
            | InstallError::NotExecutable { .. } => {
                "point `--source` at a livekit-server release tarball (livekit_<version>_linux_<arch>.tar.gz) or at the binary itself"
            }
            InstallError::ChecksumNotListed { .. } => {
                "pass the expected checksum of the tarball with `--sha256`, or choose another `--version`"
            }
            InstallError::ChecksumMismatch { .. } => ErrorCode::ChecksumMismatch.default_hint(),
            InstallError::ReadSource { .. } => "check that the path exists and is readable by the daemon's user",
            InstallError::Write { .. } => ErrorCode::WriteFailed.default_hint(),
            InstallError::Internal(_) => "retry `hero_livekit install`; if it fails again, report it with the daemon's log",
        }
    }
}

/// The causes of an error, outermost first, without repeats: reqwest and
/// hyper nest the same cause several levels deep.
pub(crate) fn cause_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_variant_maps_to_its_install_error_code() {
        let io = || io::Error::other("disk full");
        let cases = [
            (
                InstallError::InvalidParams {
                    field: "sha256",
                    reason: "x".into(),
                },
                None,
            ),
            (
                InstallError::Http {
                    url: "u".into(),
                    status: StatusCode::NOT_FOUND,
                },
                Some(ErrorCode::InstallFailed),
            ),
            (
                InstallError::Network {
                    url: "u".into(),
                    cause: "c".into(),
                },
                Some(ErrorCode::InstallFailed),
            ),
            (
                InstallError::MissingBinary { what: "w".into() },
                Some(ErrorCode::InstallFailed),
            ),
            (
                InstallError::ChecksumMismatch {
                    what: "w".into(),
                    expected: "a".into(),
                    actual: "b".into(),
                },
                Some(ErrorCode::ChecksumMismatch),
            ),
            (
                InstallError::Write {
                    path: "p".into(),
                    cause: io(),
                },
                Some(ErrorCode::WriteFailed),
            ),
            (
                InstallError::ReadSource {
                    path: "p".into(),
                    cause: io(),
                },
                Some(ErrorCode::InstallFailed),
            ),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code, "{err}");
            assert!(!err.hint().is_empty());
        }
    }

    #[test]
    fn http_status_message_names_status_and_url() {
        let err = InstallError::Http {
            url: "https://h/x.tgz".into(),
            status: StatusCode::NOT_FOUND,
        };
        assert_eq!(err.to_string(), "HTTP 404 Not Found from https://h/x.tgz");
        assert!(err.hint().contains("version"));
    }

    #[test]
    fn invalid_params_hint_follows_the_field() {
        let cases = [
            ("version", "1.13.5"),
            ("source", "absolute path"),
            ("sha256", "sha256sum"),
        ];
        for (field, keyword) in cases {
            let err = InstallError::InvalidParams {
                field,
                reason: "r".into(),
            };
            assert_eq!(err.field(), Some(field));
            assert_eq!(err.code(), None, "invalid params use -32602");
            assert!(err.hint().contains(keyword), "{field}: {}", err.hint());
        }
    }

    #[derive(Debug)]
    struct Wrapper(&'static str, io::Error);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.1)
        }
    }

    #[test]
    fn cause_chain_joins_causes_and_drops_repeats() {
        let nested = Wrapper("request failed", io::Error::other("connection reset"));
        assert_eq!(cause_chain(&nested), "request failed: connection reset");
        let repeated = Wrapper("request failed: connection reset", io::Error::other("connection reset"));
        assert_eq!(cause_chain(&repeated), "request failed: connection reset");
    }
}
