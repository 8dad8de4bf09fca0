//! Settings of lk-backend: where they come from and what makes them valid.
//!
//! The settings are a pure function of a set of variables (`LIVEKIT_API_KEY`,
//! `LIVEKIT_API_SECRET`, `LIVEKIT_URL`, `MINT_SECRET`, `PORT`, `BIND`). Those variables come
//! either from the process environment or, with `--env-file`, from the file
//! alone: the file is parsed by [`hero_livekit_proto::envfile::parse`], the
//! same grammar the supervisor renders `backend.env` with, so the two never
//! read the same bytes differently. The environment is not consulted when a
//! file is given, so a stray `LIVEKIT_*` variable cannot shadow the file.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use hero_livekit_proto::envfile::{self, EnvFileError};
use sha2::{Digest, Sha256};

/// Port used when `PORT` is absent, the supervisor's default `backend_port`.
pub const DEFAULT_PORT: u16 = 7890;

/// Loopback by default: browsers reach the backend through the operator's
/// web application or reverse proxy, never directly.
pub const DEFAULT_BIND: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// LiveKit warns below this length; the backend does the same.
pub const RECOMMENDED_SECRET_LEN: usize = 32;

/// The shortest `MINT_SECRET` taken: a bearer secret anyone on the host
/// may try against the port must not be guessable.
pub const MIN_MINT_SECRET_LEN: usize = 32;

/// The API secret. Its `Debug` never shows the value, so a secret cannot reach
/// a log line through `{:?}` of a struct that holds it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiSecret(String);

impl ApiSecret {
    /// Wraps a secret value.
    pub fn new(value: String) -> ApiSecret {
        ApiSecret(value)
    }

    /// The secret itself, for signing only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiSecret(<redacted>)")
    }
}

/// What a token is signed with and what the response tells the client: the
/// part of the settings that a SIGHUP reload may change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The API key, the tokens' `iss`.
    pub api_key: String,
    /// The HMAC key the tokens are signed with.
    pub api_secret: ApiSecret,
    /// The LiveKit URL clients connect to, returned with each token.
    pub url: String,
    /// The bearer secret a caller of `POST /token` must present
    /// (`Authorization: Bearer <it>`): who may mint.
    pub mint_secret: ApiSecret,
}

/// Everything lk-backend needs to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// What tokens are signed with.
    pub credential: Credential,
    /// Where the HTTP server listens.
    pub listen: SocketAddr,
    /// sha256 (hex) of the env file's bytes these settings were read from;
    /// `None` when they came from the environment. `GET /health` reports it
    /// so the supervisor can tell which file a running lk-backend really
    /// uses (it re-reads the file on SIGHUP).
    pub source_sha256: Option<String>,
}

/// Where the variables come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The process environment.
    Environment,
    /// An env file (`--env-file`), re-read on SIGHUP.
    EnvFile(PathBuf),
}

/// Command-line values that win over the variables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--port`, over `PORT`.
    pub port: Option<u16>,
    /// `--bind`, over `BIND`.
    pub bind: Option<IpAddr>,
}

/// Why the settings could not be built. Never carries a secret value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is absent or empty.
    #[error("{var} is missing or empty")]
    Missing {
        /// The variable's name.
        var: &'static str,
    },
    /// A variable's value breaks its rule.
    #[error("{var}: {rule}")]
    Invalid {
        /// The variable's name.
        var: &'static str,
        /// What the value must be.
        rule: &'static str,
    },
    /// The env file cannot be read.
    #[error("cannot read env file {}: {source}", path.display())]
    Read {
        /// The env file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The env file breaks the shared grammar.
    #[error("env file {}: {source}", path.display())]
    Syntax {
        /// The env file.
        path: PathBuf,
        /// The line and the reason, never the value.
        source: EnvFileError,
    },
}

/// Builds the settings from a variable lookup, then applies the overrides.
///
/// # Errors
/// A required variable missing or empty, or a value that breaks its rule.
pub fn settings_from(lookup: impl Fn(&str) -> Option<String>, overrides: Overrides) -> Result<Settings, ConfigError> {
    let required = |var: &'static str| {
        lookup(var)
            .filter(|v| !v.is_empty())
            .ok_or(ConfigError::Missing { var })
    };
    let api_key = required("LIVEKIT_API_KEY")?;
    if api_key.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ConfigError::Invalid {
            var: "LIVEKIT_API_KEY",
            rule: "must not contain blanks or control characters",
        });
    }
    let api_secret = required("LIVEKIT_API_SECRET")?;
    let url = required("LIVEKIT_URL")?;
    if !["ws://", "wss://", "http://", "https://"]
        .iter()
        .any(|s| url.starts_with(s))
    {
        return Err(ConfigError::Invalid {
            var: "LIVEKIT_URL",
            rule: "must start with ws://, wss://, http:// or https://",
        });
    }
    let mint_secret = required("MINT_SECRET")?;
    if mint_secret.len() < MIN_MINT_SECRET_LEN
        || mint_secret.len() > 256
        || !mint_secret.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ConfigError::Invalid {
            var: "MINT_SECRET",
            rule: "must be 32-256 printable ASCII characters without blanks",
        });
    }
    let port = match overrides.port {
        Some(p) => p,
        None => match lookup("PORT").filter(|v| !v.is_empty()) {
            None => DEFAULT_PORT,
            Some(v) => v.parse().map_err(|_| ConfigError::Invalid {
                var: "PORT",
                rule: "must be an integer 0-65535",
            })?,
        },
    };
    let bind = match overrides.bind {
        Some(b) => b,
        None => match lookup("BIND").filter(|v| !v.is_empty()) {
            None => DEFAULT_BIND,
            Some(v) => v.parse().map_err(|_| ConfigError::Invalid {
                var: "BIND",
                rule: "must be an IP address",
            })?,
        },
    };
    Ok(Settings {
        credential: Credential {
            api_key,
            api_secret: ApiSecret::new(api_secret),
            url,
            mint_secret: ApiSecret::new(mint_secret),
        },
        listen: SocketAddr::new(bind, port),
        source_sha256: None,
    })
}

/// Builds the settings from the text of an env file.
///
/// # Errors
/// A line that breaks the env-file grammar, or any [`settings_from`] error.
pub fn settings_from_env_text(path: &Path, text: &str, overrides: Overrides) -> Result<Settings, ConfigError> {
    let vars = envfile::parse(text).map_err(|source| ConfigError::Syntax {
        path: path.to_path_buf(),
        source,
    })?;
    settings_from(|k| envfile::get(&vars, k).map(str::to_string), overrides)
}

/// Reads the settings from their source. Blocking: the env file is read with
/// `std::fs`; the async shell calls this inside `spawn_blocking`.
///
/// # Errors
/// The file cannot be read, or any [`settings_from_env_text`] error.
pub fn load(source: &Source, overrides: Overrides) -> Result<Settings, ConfigError> {
    match source {
        Source::Environment => settings_from(|k| std::env::var(k).ok(), overrides),
        Source::EnvFile(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let mut settings = settings_from_env_text(path, &text, overrides)?;
            settings.source_sha256 = Some(hex::encode(Sha256::digest(text.as_bytes())));
            Ok(settings)
        }
    }
}

/// What a reload changes, decided from the running and the re-read settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadPlan {
    /// Key, secret, URL or mint secret differ: swap the credential.
    pub swap_credential: bool,
    /// The listen address differs: it cannot move without a restart.
    pub listen_changed: bool,
}

/// Compares the running settings with the re-read ones.
pub fn plan_reload(running: &Settings, reread: &Settings) -> ReloadPlan {
    ReloadPlan {
        swap_credential: running.credential != reread.credential,
        listen_changed: running.listen != reread.listen,
    }
}

/// Whether a secret is shorter than LiveKit recommends (it still works).
pub fn secret_is_short(credential: &Credential) -> bool {
    credential.api_secret.expose().chars().count() < RECOMMENDED_SECRET_LEN
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cretS3cretS3cretS3cretS3cretS3cret";
    const MINT: &str = "m1ntm1ntm1ntm1ntm1ntm1ntm1ntm1ntm1nt";

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("LIVEKIT_API_KEY", "APIabc"),
            ("LIVEKIT_API_SECRET", SECRET),
            ("LIVEKIT_URL", "ws://127.0.0.1:7880"),
            ("MINT_SECRET", MINT),
        ]
    }

    #[test]
    fn defaults_are_loopback_and_7890() {
        let s = settings_from(vars(&base()), Overrides::default()).expect("valid");
        assert_eq!(s.listen, "127.0.0.1:7890".parse().expect("addr"));
        assert_eq!(s.credential.api_key, "APIabc");
        assert_eq!(s.credential.api_secret.expose(), SECRET);
    }

    #[test]
    fn flags_override_variables() {
        let mut v = base();
        v.push(("PORT", "1234"));
        v.push(("BIND", "0.0.0.0"));
        let o = Overrides {
            port: Some(0),
            bind: Some("::1".parse().expect("ip")),
        };
        assert_eq!(
            settings_from(vars(&v), o).expect("valid").listen,
            "[::1]:0".parse().expect("addr")
        );
        assert_eq!(
            settings_from(vars(&v), Overrides::default()).expect("valid").listen,
            "0.0.0.0:1234".parse().expect("addr")
        );
    }

    #[test]
    fn each_required_variable_is_named_when_missing_or_empty() {
        for var in ["LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "LIVEKIT_URL", "MINT_SECRET"] {
            for replacement in [None, Some("")] {
                let mut v: Vec<_> = base().into_iter().filter(|(k, _)| *k != var).collect();
                if let Some(r) = replacement {
                    v.push((var, r));
                }
                let err = settings_from(vars(&v), Overrides::default()).expect_err("must fail");
                assert_eq!(err.to_string(), format!("{var} is missing or empty"));
            }
        }
    }

    #[test]
    fn bad_values_are_refused_with_their_variable() {
        let table = [
            ("PORT", "70000", "PORT"),
            ("PORT", "x", "PORT"),
            ("BIND", "localhost", "BIND"),
            ("LIVEKIT_URL", "127.0.0.1:7880", "LIVEKIT_URL"),
            ("LIVEKIT_API_KEY", "API abc", "LIVEKIT_API_KEY"),
            ("MINT_SECRET", "short", "MINT_SECRET"),
            ("MINT_SECRET", "m1nt m1ntm1ntm1ntm1ntm1ntm1ntm1ntm1nt", "MINT_SECRET"),
        ];
        for (var, value, named) in table {
            let mut v: Vec<_> = base().into_iter().filter(|(k, _)| *k != var).collect();
            v.push((var, value));
            let err = settings_from(vars(&v), Overrides::default()).expect_err(value);
            assert!(err.to_string().starts_with(named), "{err}");
        }
    }

    #[test]
    fn errors_and_debug_never_show_the_secret() {
        let s = settings_from(vars(&base()), Overrides::default()).expect("valid");
        assert!(!format!("{s:?}").contains(SECRET));
        assert!(!format!("{s:?}").contains(MINT));
        let mut v: Vec<_> = base().into_iter().filter(|(k, _)| *k != "MINT_SECRET").collect();
        v.push(("MINT_SECRET", "m1nt\nsecret-with-a-line-break-in-it-and-more"));
        let err = settings_from(vars(&v), Overrides::default()).expect_err("line break");
        assert!(!err.to_string().contains("m1nt"), "{err}");
        let bad = format!("LIVEKIT_API_SECRET=\"{SECRET}\\q\"\n");
        let err = settings_from_env_text(Path::new("b.env"), &bad, Overrides::default()).expect_err("bad escape");
        assert!(!err.to_string().contains(SECRET), "{err}");
    }

    #[test]
    fn env_file_with_crlf_quotes_and_export_is_read() {
        let text = format!(
            "# rendered by hero_livekit\r\nexport LIVEKIT_API_KEY=APIabc\r\nLIVEKIT_API_SECRET='{SECRET}'\r\nLIVEKIT_URL=\"ws://h:7880\" # url\r\nPORT=7999\r\nMINT_SECRET={MINT}\r\n"
        );
        let s = settings_from_env_text(Path::new("b.env"), &text, Overrides::default()).expect("valid");
        assert_eq!(s.credential.api_secret.expose(), SECRET);
        assert_eq!(s.credential.url, "ws://h:7880");
        assert_eq!(s.listen.port(), 7999);
    }

    #[test]
    fn reload_plan_separates_credential_from_listen_address() {
        let a = settings_from(vars(&base()), Overrides::default()).expect("valid");
        let mut b = a.clone();
        assert_eq!(
            plan_reload(&a, &b),
            ReloadPlan {
                swap_credential: false,
                listen_changed: false
            }
        );
        b.credential.api_secret = ApiSecret::new("other".into());
        assert_eq!(
            plan_reload(&a, &b),
            ReloadPlan {
                swap_credential: true,
                listen_changed: false
            }
        );
        b.listen.set_port(1);
        assert_eq!(
            plan_reload(&a, &b),
            ReloadPlan {
                swap_credential: true,
                listen_changed: true
            }
        );
        let mut c = a.clone();
        c.credential.url = "wss://x".into();
        assert!(plan_reload(&a, &c).swap_credential);
        let mut d = a.clone();
        d.credential.mint_secret = ApiSecret::new("another-mint-secret-of-enough-length".into());
        assert!(
            plan_reload(&a, &d).swap_credential,
            "a new mint secret is in force at once"
        );
    }

    #[test]
    fn short_secret_is_flagged() {
        let mut s = settings_from(vars(&base()), Overrides::default()).expect("valid");
        assert!(!secret_is_short(&s.credential));
        s.credential.api_secret = ApiSecret::new("short".into());
        assert!(secret_is_short(&s.credential));
    }
}
