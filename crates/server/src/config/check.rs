//! The consistency check: are the files on disk the renderings of the
//! in-memory config, and if not, which field of which file differs?

use std::collections::BTreeMap;
use std::fmt;

use hero_livekit_proto::FileHealth;

use super::model::{sha256_hex, Config};
use super::parse::{read, Reading};
use super::redis::RedisSettings;
use super::render::{render, Rendered, TripleFile};
use super::settings;

/// What one file of the triple looked like when observed.
#[derive(Clone, PartialEq, Eq)]
pub enum FileObs {
    /// No such file.
    Missing,
    /// The file's bytes.
    Present(Vec<u8>),
    /// The file exists but could not be read; the OS error text.
    Unreadable(String),
}

impl fmt::Debug for FileObs {
    // The bytes hold the secret: show only their length.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileObs::Missing => f.write_str("Missing"),
            FileObs::Present(b) => write!(f, "Present({} bytes)", b.len()),
            FileObs::Unreadable(e) => f.debug_tuple("Unreadable").field(e).finish(),
        }
    }
}

/// The three files as observed at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// `runtime.json`.
    pub runtime_json: FileObs,
    /// `livekit.yaml`.
    pub livekit_yaml: FileObs,
    /// `backend.env`.
    pub backend_env: FileObs,
}

impl Observed {
    /// All three files missing: a fresh state directory.
    pub fn missing() -> Observed {
        Observed {
            runtime_json: FileObs::Missing,
            livekit_yaml: FileObs::Missing,
            backend_env: FileObs::Missing,
        }
    }

    /// The observation of `file`.
    pub fn get(&self, file: TripleFile) -> &FileObs {
        match file {
            TripleFile::RuntimeJson => &self.runtime_json,
            TripleFile::LivekitYaml => &self.livekit_yaml,
            TripleFile::BackendEnv => &self.backend_env,
        }
    }

    /// The observation of `file`, to replace it.
    pub fn get_mut(&mut self, file: TripleFile) -> &mut FileObs {
        match file {
            TripleFile::RuntimeJson => &mut self.runtime_json,
            TripleFile::LivekitYaml => &mut self.livekit_yaml,
            TripleFile::BackendEnv => &mut self.backend_env,
        }
    }
}

/// The state of one file against its rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCheck {
    /// Which file.
    pub file: TripleFile,
    /// The file exists (even when it could not be read).
    pub present: bool,
    /// sha256 (hex) of the bytes on disk; `None` when absent or unreadable.
    pub sha256: Option<String>,
    /// sha256 (hex) of the rendering.
    pub expected_sha256: String,
    /// The bytes on disk equal the rendering.
    pub matches: bool,
}

/// The whole triple against the in-memory config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consistency {
    /// In [`TripleFile::ALL`] order.
    pub files: [FileCheck; 3],
    /// One sentence per difference, each starting with the file name; never
    /// holds a key or secret value.
    pub drift: Vec<String>,
    /// All three files present and byte-equal to their renderings.
    pub consistent: bool,
}

impl Consistency {
    /// The `files` member of the health document.
    pub fn files_health(&self) -> BTreeMap<String, FileHealth> {
        self.files
            .iter()
            .map(|f| {
                let health = FileHealth {
                    present: f.present,
                    sha256: f.sha256.clone(),
                    expected_sha256: f.expected_sha256.clone(),
                    matches: f.matches,
                };
                (f.file.name().to_string(), health)
            })
            .collect()
    }

    /// The files whose bytes differ from their renderings, in write order.
    pub fn mismatched(&self) -> Vec<TripleFile> {
        self.files.iter().filter(|f| !f.matches).map(|f| f.file).collect()
    }
}

/// Checks `observed` against the renderings of `config`.
pub fn check(config: &Config, observed: &Observed) -> Consistency {
    check_rendered(&Rendered::new(config.clone()), observed)
}

/// [`check`] with the renderings already computed.
pub fn check_rendered(rendered: &Rendered, observed: &Observed) -> Consistency {
    // Bytes equal to the rendering hash to the rendering's hash: only a
    // differing file is hashed, so checking a consistent triple costs three
    // comparisons.
    let shas = TripleFile::ALL.map(|f| match observed.get(f) {
        FileObs::Present(bytes) if bytes.as_slice() == rendered.bytes(f) => Some(rendered.sha256(f).to_string()),
        FileObs::Present(bytes) => Some(sha256_hex(bytes)),
        _ => None,
    });
    check_hashed(rendered, observed, shas)
}

/// [`check_rendered`] with the sha256 of each present file already known
/// (the [`super::FileCache`] keeps them across calls).
pub(crate) fn check_hashed(rendered: &Rendered, observed: &Observed, mut shas: [Option<String>; 3]) -> Consistency {
    let mut drift = Vec::new();
    let files = TripleFile::ALL.map(|file| {
        let sha256 = shas[file.index()].take();
        let expected_sha256 = rendered.sha256(file).to_string();
        let obs = observed.get(file);
        // The hash decides; the byte comparison guards against a stale
        // cached hash being paired with other bytes.
        let matches = sha256.as_deref() == Some(expected_sha256.as_str())
            && matches!(obs, FileObs::Present(b) if b.as_slice() == rendered.bytes(file));
        if !matches {
            describe(file, obs, rendered.config(), &mut drift);
        }
        FileCheck {
            file,
            present: !matches!(obs, FileObs::Missing),
            sha256,
            expected_sha256,
            matches,
        }
    });
    let consistent = files.iter().all(|f| f.matches);
    Consistency {
        files,
        drift,
        consistent,
    }
}

/// Appends the drift sentences of one mismatched file.
fn describe(file: TripleFile, obs: &FileObs, config: &Config, drift: &mut Vec<String>) {
    let name = file.name();
    let bytes = match obs {
        FileObs::Missing => return drift.push(format!("{name}: missing")),
        FileObs::Unreadable(reason) => return drift.push(format!("{name}: unreadable ({reason})")),
        FileObs::Present(bytes) => bytes,
    };
    let reading = match read(file, bytes) {
        Ok(r) => r,
        Err(super::parse::Unparseable::Empty) => return drift.push(format!("{name}: empty")),
        Err(e) => return drift.push(format!("{name}: unparseable ({e})")),
    };
    let before = drift.len();
    drift.extend(reading.problems.iter().map(|p| format!("{name}: {}", p.text)));
    let mut diffs = Vec::new();
    match file {
        TripleFile::RuntimeJson => diff_runtime_json(&reading, config, &mut diffs),
        TripleFile::LivekitYaml => {
            diff_livekit_yaml(&reading, config, &mut diffs);
            diffs.extend(settings::yaml_drift(bytes, &render(config, file)));
        }
        TripleFile::BackendEnv => diff_backend_env(&reading, config, &mut diffs),
    }
    drift.extend(diffs.into_iter().map(|d| format!("{name}: {d}")));
    if drift.len() == before {
        drift.push(format!("{name}: formatting differs (same values)"));
    }
}

/// Compares one carried value with the expected one, by label only.
fn diff<T: PartialEq + ?Sized>(r: &Reading, label: &str, observed: Option<&T>, expected: &T, out: &mut Vec<String>) {
    match observed {
        None if !r.has_problem(label) => out.push(format!("{label} missing")),
        Some(v) if v != expected => out.push(format!("{label} differs")),
        _ => {}
    }
}

/// Like [`diff`] for a field that may be unset, saying which way it differs.
fn diff_opt(
    r: &Reading,
    label: &str,
    observed: Option<&Option<String>>,
    expected: &Option<String>,
    out: &mut Vec<String>,
) {
    match (observed, expected) {
        (None, _) if !r.has_problem(label) => out.push(format!("{label} missing")),
        (Some(None), Some(_)) => out.push(format!("{label} missing")),
        (Some(Some(_)), None) => out.push(format!("{label} present but not configured")),
        (Some(Some(a)), Some(b)) if a != b => out.push(format!("{label} differs")),
        _ => {}
    }
}

/// The Redis settings that differ, each under the label `label` picks
/// (the `runtime.json` name or the `livekit.yaml` path); never a value.
fn diff_redis(
    observed_address: Option<&Option<String>>,
    expected_address: Option<&String>,
    observed: Option<&RedisSettings>,
    expected: &RedisSettings,
    label: fn((&'static str, &'static str)) -> &'static str,
    out: &mut Vec<String>,
) {
    let Some(observed) = observed else { return };
    // A file without any Redis setting where some are expected lacks the
    // whole section: the address's own "missing", or one line for the
    // sentinels or cluster nodes, says it better than a line per setting.
    if observed.is_empty() && !expected.is_empty() && !observed_address.is_some_and(|a| a.is_some()) {
        if expected_address.is_none() {
            let missing = if expected.sentinel_addresses.is_empty() {
                (crate::config::redis::FIELDS[12], "redis.cluster_addresses")
            } else {
                (crate::config::redis::FIELDS[9], "redis.sentinel_addresses")
            };
            out.push(format!("{} missing", label(missing)));
        }
        return;
    }
    out.extend(
        observed
            .differing(expected)
            .into_iter()
            .map(|names| format!("{} differs", label(names))),
    );
}

fn diff_runtime_json(r: &Reading, c: &Config, out: &mut Vec<String>) {
    let p = &r.partial;
    diff(r, "api_key", p.api_key.as_ref(), &c.api_key, out);
    diff(r, "api_secret", p.api_secret.as_ref(), &c.api_secret, out);
    diff(r, "domain", p.domain.as_ref(), &c.domain, out);
    diff_opt(r, "redis_address", p.redis_address.as_ref(), &c.redis_address, out);
    diff_redis(
        p.redis_address.as_ref(),
        c.redis_address.as_ref(),
        p.redis.as_ref(),
        &c.redis,
        |(json, _)| json,
        out,
    );
    diff(r, "port", p.port.as_ref(), &c.port, out);
    diff(r, "rtc_tcp_port", p.rtc_tcp_port.as_ref(), &c.rtc_tcp_port, out);
    diff(
        r,
        "rtc_port_range_start",
        p.rtc_port_range_start.as_ref(),
        &c.rtc_port_range_start,
        out,
    );
    diff(
        r,
        "rtc_port_range_end",
        p.rtc_port_range_end.as_ref(),
        &c.rtc_port_range_end,
        out,
    );
    diff_opt(r, "node_ip", p.node_ip.as_ref(), &c.node_ip, out);
    diff(r, "backend_port", p.backend_port.as_ref(), &c.backend_port, out);
    diff_opt(r, "public_url", p.public_url.as_ref(), &c.public_url, out);
    diff(r, "livekit_url", p.livekit_url.as_ref(), &c.livekit_url(), out);
    out.extend(settings::json_drift(&p.settings_json.0, c));
}

fn diff_livekit_yaml(r: &Reading, c: &Config, out: &mut Vec<String>) {
    let p = &r.partial;
    diff(r, "port", p.port.as_ref(), &c.port, out);
    diff(r, "rtc.tcp_port", p.rtc_tcp_port.as_ref(), &c.rtc_tcp_port, out);
    diff(
        r,
        "rtc.port_range_start",
        p.rtc_port_range_start.as_ref(),
        &c.rtc_port_range_start,
        out,
    );
    diff(
        r,
        "rtc.port_range_end",
        p.rtc_port_range_end.as_ref(),
        &c.rtc_port_range_end,
        out,
    );
    diff(
        r,
        "rtc.use_external_ip",
        p.use_external_ip.as_ref(),
        &c.settings.use_external_ip,
        out,
    );
    diff_opt(r, "rtc.node_ip", p.node_ip.as_ref(), &c.node_ip, out);
    diff_opt(r, "redis.address", p.redis_address.as_ref(), &c.redis_address, out);
    diff_redis(
        p.redis_address.as_ref(),
        c.redis_address.as_ref(),
        p.redis.as_ref(),
        &c.redis,
        |(_, yaml)| yaml,
        out,
    );
    match (&p.api_key, &p.api_secret) {
        (Some(k), Some(s)) if *k != c.api_key || *s != c.api_secret => {
            out.push("keys entry differs from api_key/api_secret".to_string());
        }
        (None, _) | (_, None) if !r.has_problem("keys") => out.push("keys missing".to_string()),
        _ => {}
    }
    let level = c.settings.log_level.as_deref().unwrap_or(settings::DEFAULT_LOG_LEVEL);
    diff(r, "logging.level", p.logging_level.as_deref(), level, out);
}

fn diff_backend_env(r: &Reading, c: &Config, out: &mut Vec<String>) {
    let p = &r.partial;
    diff(r, "LIVEKIT_API_KEY", p.api_key.as_ref(), &c.api_key, out);
    diff(r, "LIVEKIT_API_SECRET", p.api_secret.as_ref(), &c.api_secret, out);
    diff(r, "LIVEKIT_URL", p.livekit_url.as_ref(), &c.client_url(), out);
    diff(r, "PORT", p.backend_port.as_ref(), &c.backend_port, out);
    // A bearer secret other than the one derived from the credential is
    // drift like a wrong key: the heal rewrites it. Under another API
    // secret it differs as a matter of course, and that line says it all.
    if p.api_secret.as_ref().is_none_or(|s| *s == c.api_secret) {
        diff(r, "MINT_SECRET", p.mint_secret.as_ref(), &c.mint_secret(), out);
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::Secret;
    use super::super::render::render;
    use super::super::testutil::{config_a, config_b, observed_of};
    use super::*;

    fn text(c: &Config, f: TripleFile) -> String {
        String::from_utf8(render(c, f)).expect("utf8")
    }

    fn drift_with(file: TripleFile, bytes: Vec<u8>) -> Vec<String> {
        let a = config_a();
        let mut obs = observed_of(&a);
        *obs.get_mut(file) = FileObs::Present(bytes);
        let c = check(&a, &obs);
        assert!(!c.consistent);
        assert!(!c.files[file.index()].matches);
        for other in TripleFile::ALL.into_iter().filter(|&f| f != file) {
            assert!(c.files[other.index()].matches, "{other} untouched");
        }
        c.drift
    }

    #[test]
    fn a_consistent_triple_has_no_drift_and_reports_hashes() {
        let a = config_a();
        let c = check(&a, &observed_of(&a));
        assert!(c.consistent);
        assert!(c.drift.is_empty());
        for f in TripleFile::ALL {
            let fc = &c.files[f.index()];
            assert!(fc.present && fc.matches);
            assert_eq!(fc.sha256.as_deref(), Some(fc.expected_sha256.as_str()));
        }
        let health = c.files_health();
        assert_eq!(
            health.keys().map(String::as_str).collect::<Vec<_>>(),
            ["backend.env", "livekit.yaml", "runtime.json"]
        );
        assert_eq!(health["runtime.json"].expected_sha256, a.hash());
    }

    #[test]
    fn missing_and_unreadable_files_are_named() {
        let a = config_a();
        let mut obs = observed_of(&a);
        obs.livekit_yaml = FileObs::Missing;
        obs.backend_env = FileObs::Unreadable("Permission denied (os error 13)".into());
        let c = check(&a, &obs);
        assert_eq!(
            c.drift,
            [
                "livekit.yaml: missing",
                "backend.env: unreadable (Permission denied (os error 13))"
            ]
        );
        assert!(!c.files[1].present && c.files[2].present);
        assert_eq!((c.files[1].sha256.as_ref(), c.files[2].sha256.as_ref()), (None, None));
        assert_eq!(c.mismatched(), [TripleFile::LivekitYaml, TripleFile::BackendEnv]);
    }

    #[test]
    fn a_different_credential_is_named_per_file_without_values() {
        let a = config_a();
        let mut b = config_a();
        b.set_credential(config_b().credential());
        for f in TripleFile::ALL {
            let d = drift_with(f, render(&b, f));
            let expected: &[&str] = match f {
                TripleFile::RuntimeJson => &["runtime.json: api_key differs", "runtime.json: api_secret differs"],
                TripleFile::LivekitYaml => &["livekit.yaml: keys entry differs from api_key/api_secret"],
                TripleFile::BackendEnv => &[
                    "backend.env: LIVEKIT_API_KEY differs",
                    "backend.env: LIVEKIT_API_SECRET differs",
                ],
            };
            assert_eq!(d, expected);
            for line in &d {
                for value in [
                    a.api_key.as_str(),
                    a.api_secret.expose(),
                    b.api_key.as_str(),
                    b.api_secret.expose(),
                ] {
                    assert!(!line.contains(value), "{line} leaks a credential value");
                }
            }
        }
    }

    #[test]
    fn only_the_secret_differing_is_named() {
        let mut b = config_a();
        b.api_secret = Secret::new("differentSecretdifferentSecretdifferent1234");
        assert_eq!(
            drift_with(TripleFile::BackendEnv, render(&b, TripleFile::BackendEnv)),
            ["backend.env: LIVEKIT_API_SECRET differs"]
        );
        assert_eq!(
            drift_with(TripleFile::LivekitYaml, render(&b, TripleFile::LivekitYaml)),
            ["livekit.yaml: keys entry differs from api_key/api_secret"]
        );
    }

    #[test]
    fn other_fields_are_named_by_their_label_in_each_format() {
        let mut b = config_a();
        b.port = 8000;
        b.node_ip = None;
        b.backend_port = 8001;
        assert_eq!(
            drift_with(TripleFile::RuntimeJson, render(&b, TripleFile::RuntimeJson)),
            [
                "runtime.json: port differs",
                "runtime.json: node_ip missing",
                "runtime.json: backend_port differs",
                "runtime.json: livekit_url differs"
            ]
        );
        assert_eq!(
            drift_with(TripleFile::LivekitYaml, render(&b, TripleFile::LivekitYaml)),
            ["livekit.yaml: port differs", "livekit.yaml: rtc.node_ip missing"]
        );
        assert_eq!(
            drift_with(TripleFile::BackendEnv, render(&b, TripleFile::BackendEnv)),
            ["backend.env: LIVEKIT_URL differs", "backend.env: PORT differs"]
        );
        let mut r = config_a();
        r.redis_address = None;
        let mut with_extra = config_a();
        with_extra.redis_address = Some("other:1".into());
        assert_eq!(
            drift_with(TripleFile::LivekitYaml, render(&r, TripleFile::LivekitYaml)),
            ["livekit.yaml: redis.address missing"]
        );
        assert_eq!(
            drift_with(TripleFile::LivekitYaml, render(&with_extra, TripleFile::LivekitYaml)),
            ["livekit.yaml: redis.address differs"]
        );
    }

    #[test]
    fn garbage_is_reported_as_drift() {
        let a = config_a();
        let yaml = text(&a, TripleFile::LivekitYaml);
        let json = text(&a, TripleFile::RuntimeJson);
        let env = text(&a, TripleFile::BackendEnv);
        let cases: Vec<(TripleFile, Vec<u8>, Vec<&str>)> = vec![
            (
                TripleFile::RuntimeJson,
                b"\x00\xff\xfe".to_vec(),
                vec!["runtime.json: unparseable (not UTF-8 text)"],
            ),
            (TripleFile::RuntimeJson, Vec::new(), vec!["runtime.json: empty"]),
            (
                TripleFile::RuntimeJson,
                json.as_bytes()[..100].to_vec(),
                vec!["runtime.json: unparseable (line 4: unexpected end of file)"],
            ),
            (
                TripleFile::RuntimeJson,
                json.replace("\"port\": 7980", "\"port\": \"7980\"").into_bytes(),
                vec!["runtime.json: port has the wrong type (expected a port number)"],
            ),
            (
                TripleFile::RuntimeJson,
                json.replace('\n', "\r\n").into_bytes(),
                vec!["runtime.json: formatting differs (same values)"],
            ),
            (
                TripleFile::LivekitYaml,
                format!("{yaml}development: true\n").into_bytes(),
                vec!["livekit.yaml: unexpected key `development`"],
            ),
            (
                TripleFile::LivekitYaml,
                format!("{yaml}port: 7980\n").into_bytes(),
                vec!["livekit.yaml: unparseable (duplicate key in the mapping starting at line 3)"],
            ),
            (
                TripleFile::LivekitYaml,
                yaml.replace("use_external_ip: false", "use_external_ip: true")
                    .into_bytes(),
                vec!["livekit.yaml: rtc.use_external_ip differs"],
            ),
            (
                TripleFile::LivekitYaml,
                yaml.replace("port: 7980", "port: seven").into_bytes(),
                vec!["livekit.yaml: port has the wrong type (expected a port number)"],
            ),
            (
                TripleFile::LivekitYaml,
                yaml.replace('\n', "\r\n").into_bytes(),
                vec!["livekit.yaml: formatting differs (same values)"],
            ),
            (
                TripleFile::LivekitYaml,
                "port: 7980\n".as_bytes().to_vec(),
                vec![
                    "livekit.yaml: rtc missing",
                    "livekit.yaml: redis.address missing",
                    "livekit.yaml: keys missing",
                    "livekit.yaml: logging.level missing",
                ],
            ),
            (
                TripleFile::BackendEnv,
                format!("{env}oops\n").into_bytes(),
                vec!["backend.env: unparseable (line 8: expected KEY=value)"],
            ),
            (
                TripleFile::BackendEnv,
                env.replace(a.mint_secret().expose(), &"0".repeat(64)).into_bytes(),
                vec!["backend.env: MINT_SECRET differs"],
            ),
            (
                TripleFile::BackendEnv,
                env.lines()
                    .filter(|l| !l.starts_with("MINT_SECRET="))
                    .map(|l| format!("{l}\n"))
                    .collect::<String>()
                    .into_bytes(),
                vec!["backend.env: MINT_SECRET missing"],
            ),
            (
                TripleFile::BackendEnv,
                env.replace('\n', "\r\n").into_bytes(),
                vec!["backend.env: formatting differs (same values)"],
            ),
            (
                TripleFile::BackendEnv,
                env.replace("PORT=\"7990\"", "PORT=\"x\"\nDEBUG=1").into_bytes(),
                vec![
                    "backend.env: PORT is not a port number 1-65535",
                    "backend.env: unexpected variable `DEBUG`",
                ],
            ),
        ];
        for (file, bytes, expected) in cases {
            assert_eq!(drift_with(file, bytes), expected, "{file}");
        }
    }
}
