//! Boot loading and heal planning: a pure function from what is on disk
//! (and the in-memory config, when there is one) to what to write and
//! which config is the truth. Which child restarts is not decided here: the
//! children's planner (`service::plan`) compares what each runs with the
//! files once they are written.

use std::fmt;

use super::check::check_rendered;
pub use super::check::{FileObs, Observed};
use super::credential::{mint_credential, MintError};
use super::model::{Config, Credential};
use super::parse::{read, Partial};
use super::redis::{self, RedisSettings};
use super::render::{Rendered, TripleFile};
use super::settings::{self, Settings};
use super::validate::{
    validate_config, validate_credential, validate_domain, validate_node_ip, validate_public_url,
    validate_redis_address,
};

/// Where the config of a [`HealPlan`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// The daemon's in-memory config (the truth once loaded).
    InMemory,
    /// Loaded at boot from `runtime.json`.
    RuntimeJson,
    /// The credential was found in `livekit.yaml` (runtime.json had none).
    LivekitYaml,
    /// The credential was found in `backend.env` (no other file had one).
    BackendEnv,
    /// No file held a valid credential: a new one was minted.
    Minted,
    /// `start {reset: true}` rotated the credential on purpose.
    Reset,
}

impl ConfigSource {
    /// A short stable name for logs and events.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConfigSource::InMemory => "in-memory",
            ConfigSource::RuntimeJson => "runtime.json",
            ConfigSource::LivekitYaml => "livekit.yaml",
            ConfigSource::BackendEnv => "backend.env",
            ConfigSource::Minted => "minted",
            ConfigSource::Reset => "reset",
        }
    }

    fn of(file: TripleFile) -> ConfigSource {
        match file {
            TripleFile::RuntimeJson => ConfigSource::RuntimeJson,
            TripleFile::LivekitYaml => ConfigSource::LivekitYaml,
            TripleFile::BackendEnv => ConfigSource::BackendEnv,
        }
    }
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a heal must do. Empty `writes` means the triple is consistent and
/// must not be touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealPlan {
    /// The config that is the truth after this heal.
    pub config: Config,
    /// Where `config` came from.
    pub source: ConfigSource,
    /// A credential was minted (no valid one anywhere, or `reset`).
    pub minted: bool,
    /// Files not byte-equal to their rendering, in write order.
    pub writes: Vec<TripleFile>,
    /// The drift found, one sentence per difference.
    pub drift: Vec<String>,
}

impl HealPlan {
    /// Nothing to write: the triple already is the rendering of the config.
    pub fn is_noop(&self) -> bool {
        self.writes.is_empty()
    }
}

/// Plans a heal. With an in-memory config, that config is the truth. At
/// boot (`None`) the truth is loaded from disk: the first file, in the order
/// `runtime.json`, `livekit.yaml`, `backend.env`, that holds a valid
/// credential supplies it, and the other fields come from the files holding
/// that same credential (earlier files first), else defaults. Only when no
/// file holds a valid credential is one minted. `reset` mints a new
/// credential and keeps every other field.
///
/// # Errors
/// [`MintError`] when a credential must be minted and the OS RNG fails.
pub fn plan(in_memory: Option<&Config>, observed: &Observed, reset: bool) -> Result<HealPlan, MintError> {
    plan_with(in_memory, observed, reset, mint_credential)
}

/// [`plan`] with the minting source injected, for deterministic tests.
///
/// # Errors
/// Whatever `mint` returns, when it is called.
pub fn plan_with(
    in_memory: Option<&Config>,
    observed: &Observed,
    reset: bool,
    mint: impl FnOnce() -> Result<Credential, MintError>,
) -> Result<HealPlan, MintError> {
    // Files are parsed only at boot; with an in-memory truth they are merely
    // compared with its renderings.
    let readings = match in_memory {
        Some(_) => [None, None, None],
        None => readings(observed),
    };
    let loaded = match in_memory {
        Some(c) => Some((c.clone(), ConfigSource::InMemory)),
        None => load(&readings),
    };
    // `mint` is called at most once: a config minted for lack of a valid
    // credential is already fresh when `reset` is also asked.
    let (config, source) = match (loaded, reset) {
        (Some((mut config, _)), true) => {
            config.set_credential(mint()?);
            (config, ConfigSource::Reset)
        }
        (Some(loaded), false) => loaded,
        (None, reset) => {
            let config = salvage(mint()?, &readings, None);
            (
                config,
                if reset {
                    ConfigSource::Reset
                } else {
                    ConfigSource::Minted
                },
            )
        }
    };
    let minted = matches!(source, ConfigSource::Minted | ConfigSource::Reset);
    let rendered = Rendered::new(config);
    Ok(plan_for(&rendered, source, minted, observed))
}

/// [`plan`] for a running daemon healing against its in-memory config,
/// whose renderings it already holds: nothing is rendered or parsed, and a
/// consistent triple costs three byte comparisons.
pub fn plan_rendered(rendered: &Rendered, observed: &Observed) -> HealPlan {
    plan_for(rendered, ConfigSource::InMemory, false, observed)
}

fn plan_for(rendered: &Rendered, source: ConfigSource, minted: bool, observed: &Observed) -> HealPlan {
    let config = rendered.config().clone();
    let consistency = check_rendered(rendered, observed);
    let writes = consistency.mismatched();
    HealPlan {
        config,
        source,
        minted,
        writes,
        drift: consistency.drift,
    }
}

/// What each readable file carries, in [`TripleFile::ALL`] order.
fn readings(observed: &Observed) -> [Option<Partial>; 3] {
    TripleFile::ALL.map(|f| match observed.get(f) {
        FileObs::Present(bytes) => read(f, bytes).ok().map(|r| r.partial),
        FileObs::Missing | FileObs::Unreadable(_) => None,
    })
}

/// The boot-time truth, when some file holds a valid credential.
fn load(readings: &[Option<Partial>; 3]) -> Option<(Config, ConfigSource)> {
    let (file, credential) = TripleFile::ALL.into_iter().find_map(|f| {
        let p = readings[f.index()].as_ref()?;
        let credential = Credential {
            api_key: p.api_key.clone()?,
            api_secret: p.api_secret.clone()?,
        };
        validate_credential(&credential).is_ok().then_some((f, credential))
    })?;
    let config = salvage(credential.clone(), readings, Some(&credential));
    Some((config, ConfigSource::of(file)))
}

/// Builds a valid config around `credential`, taking each other field from
/// the first reading that carries a valid value for it. With `same`, only
/// readings holding that credential count: they were written together, so
/// their fields belong to the same config. Ports that clash after salvage
/// fall back to the defaults together.
fn salvage(credential: Credential, readings: &[Option<Partial>; 3], same: Option<&Credential>) -> Config {
    let sources: Vec<&Partial> = readings
        .iter()
        .flatten()
        .filter(|p| {
            same.is_none_or(|c| p.api_key.as_ref() == Some(&c.api_key) && p.api_secret.as_ref() == Some(&c.api_secret))
        })
        .collect();
    let defaults = Config::with_credential(credential);
    let first_port =
        |get: fn(&Partial) -> Option<u16>, default: u16| sources.iter().find_map(|p| get(p)).unwrap_or(default);
    let first_opt = |get: fn(&Partial) -> Option<&Option<String>>, valid: fn(&str) -> bool| {
        sources
            .iter()
            .find_map(|p| get(p).filter(|v| v.as_deref().is_none_or(valid)))
            .cloned()
            .unwrap_or(None)
    };
    let mut config = Config {
        domain: sources
            .iter()
            .find_map(|p| p.domain.clone().filter(|d| validate_domain(d).is_ok()))
            .unwrap_or_else(|| defaults.domain.clone()),
        redis_address: first_opt(|p| p.redis_address.as_ref(), |r| validate_redis_address(r).is_ok()),
        // The settings from the same file as the address, since they only
        // make sense together; none when that file's are invalid.
        redis: sources
            .iter()
            .find(|p| {
                p.redis_address
                    .as_ref()
                    .is_some_and(|a| a.as_deref().is_none_or(|a| validate_redis_address(a).is_ok()))
            })
            .and_then(|p| p.redis.clone())
            .unwrap_or_default(),
        port: first_port(|p| p.port, defaults.port),
        rtc_tcp_port: first_port(|p| p.rtc_tcp_port, defaults.rtc_tcp_port),
        rtc_port_range_start: first_port(|p| p.rtc_port_range_start, defaults.rtc_port_range_start),
        rtc_port_range_end: first_port(|p| p.rtc_port_range_end, defaults.rtc_port_range_end),
        node_ip: first_opt(|p| p.node_ip.as_ref(), |ip| validate_node_ip(ip).is_ok()),
        backend_port: first_port(|p| p.backend_port, defaults.backend_port),
        public_url: first_opt(|p| p.public_url.as_ref(), |u| validate_public_url(u).is_ok()),
        ..defaults.clone()
    };
    if redis::validate(config.redis_address.as_deref(), &config.redis, &[]).is_err() {
        config.redis = RedisSettings::default();
    }
    if validate_config(&config).is_err() {
        config.port = defaults.port;
        config.rtc_tcp_port = defaults.rtc_tcp_port;
        config.rtc_port_range_start = defaults.rtc_port_range_start;
        config.rtc_port_range_end = defaults.rtc_port_range_end;
        config.backend_port = defaults.backend_port;
    }
    if validate_config(&config).is_err() {
        // Unreachable with a validated credential and individually
        // validated fields; the defaults are the safe answer regardless.
        return defaults;
    }
    // The production settings come from runtime.json alone (the only file
    // holding all of them); an old one without them gives the defaults, and
    // so do settings that clash with the ports kept above (the lesser loss).
    config.settings = sources
        .iter()
        .find(|p| !p.settings_json.0.is_empty())
        .map(|p| settings::from_json(&p.settings_json.0))
        .unwrap_or_default();
    if validate_config(&config).is_err() {
        config.settings = Settings::default();
    }
    config
}

#[cfg(test)]
#[path = "heal_tests.rs"]
mod tests;
