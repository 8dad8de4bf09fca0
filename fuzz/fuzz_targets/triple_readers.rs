//! The boot loader (the three lenient readers plus salvage) and the
//! consistency check, on arbitrary file contents.
//!
//! Input: the three files separated by the line `\n\x1e\n` (ASCII record
//! separator), in the order runtime.json, livekit.yaml, backend.env. A part
//! that is exactly `\x18` (CAN) stands for a missing file and exactly `\x15`
//! (NAK) for an unreadable one; a missing part is a missing file. The seeds
//! in `fuzz/seeds/triple_readers` are real renderings and hand edits.
//!
//! Properties:
//! - boot planning never panics, and the config it settles on is valid;
//! - carrying the plan out and planning again is a no-op, both at boot and
//!   against the in-memory config (the heal converges in one step);
//! - a plan without writes means the observed triple really is consistent;
//! - a valid credential is never thrown away: checked against oracles
//!   independent of the readers (serde_json for runtime.json, the envfile
//!   grammar for backend.env), one in runtime.json is the one loaded, and
//!   no credential is minted while either file holds a valid one;
//! - drift text never holds the secret it is compared against.
#![no_main]

use hero_livekit_proto::envfile;
use hero_livekit_server::config::validate::validate_credential;
use hero_livekit_server::config::{
    check, plan_with, render, validate_config, Config, ConfigSource, Credential, FileObs, MintError, Observed,
    RedisSettings, Secret, Settings, TripleFile,
};
use libfuzzer_sys::fuzz_target;

const SEPARATOR: &[u8] = b"\n\x1e\n";

/// A fixed config for `check`, every field away from its default. Its
/// secret holds `/`, `+` and `=`, which no other field of any file may
/// carry validly, so finding it in drift text can only be a leak.
fn fixed() -> Config {
    Config {
        api_key: "APIfuzzfuzzfuzz".into(),
        api_secret: Secret::new("fuzz/Secret+fuzz/Secret+fuzz/Secret+fuzz=="),
        domain: "media.example.org".into(),
        redis_address: Some("redis.internal:6380".into()),
        redis: RedisSettings::default(),
        port: 7980,
        rtc_tcp_port: 7981,
        rtc_port_range_start: 51000,
        rtc_port_range_end: 52000,
        node_ip: Some("192.0.2.10".into()),
        backend_port: 7990,
        public_url: Some("wss://media.example.org".into()),
        // A webhook section, so that a reader of livekit.yaml meets one.
        settings: Settings {
            webhook_urls: vec!["https://hooks.example.org/lk".into()],
            log_json: true,
            ..Settings::default()
        },
        livekit_version: None,
    }
}

/// A deterministic "minted" credential: libFuzzer needs the same input to
/// take the same path, and the OS RNG is not what is under test.
fn mint() -> Result<Credential, MintError> {
    Ok(Credential {
        api_key: "APImintmintmint".into(),
        api_secret: Secret::new("mint/Secret+mint/Secret+mint/Secret+mint=="),
    })
}

fn obs(part: Option<&[u8]>) -> FileObs {
    match part {
        None | Some(b"\x18") => FileObs::Missing,
        Some(b"\x15") => FileObs::Unreadable("Permission denied (os error 13)".into()),
        Some(bytes) => FileObs::Present(bytes.to_vec()),
    }
}

fn split(data: &[u8]) -> [Option<&[u8]>; 3] {
    let mut parts = [None, None, None];
    let mut rest = Some(data);
    for (i, slot) in parts.iter_mut().enumerate() {
        let Some(r) = rest else { break };
        // The last file takes everything left, separators included.
        let at = (i < 2)
            .then(|| r.windows(SEPARATOR.len()).position(|w| w == SEPARATOR))
            .flatten();
        match at {
            Some(at) => {
                *slot = Some(&r[..at]);
                rest = Some(&r[at + SEPARATOR.len()..]);
            }
            None => {
                *slot = Some(r);
                rest = None;
            }
        }
    }
    parts
}

/// The credential of `runtime.json` as serde_json alone reads it.
fn json_credential(obs: &FileObs) -> Option<Credential> {
    let FileObs::Present(bytes) = obs else { return None };
    let v: serde_json::Value = serde_json::from_str(std::str::from_utf8(bytes).ok()?).ok()?;
    valid(v.get("api_key")?.as_str()?, v.get("api_secret")?.as_str()?)
}

/// The credential of `backend.env` as the envfile grammar alone reads it.
fn env_credential(obs: &FileObs) -> Option<Credential> {
    let FileObs::Present(bytes) = obs else { return None };
    let vars = envfile::parse(std::str::from_utf8(bytes).ok()?).ok()?;
    valid(
        envfile::get(&vars, "LIVEKIT_API_KEY")?,
        envfile::get(&vars, "LIVEKIT_API_SECRET")?,
    )
}

fn valid(key: &str, secret: &str) -> Option<Credential> {
    let c = Credential {
        api_key: key.to_string(),
        api_secret: Secret::new(secret),
    };
    validate_credential(&c).is_ok().then_some(c)
}

fn assert_no_secret(drift: &[String], secret: &str, what: &str) {
    for line in drift {
        assert!(!line.contains(secret), "{what}: drift holds the secret: {line:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let [runtime_json, livekit_yaml, backend_env] = split(data);
    let observed = Observed {
        runtime_json: obs(runtime_json),
        livekit_yaml: obs(livekit_yaml),
        backend_env: obs(backend_env),
    };

    let boot = match plan_with(None, &observed, false, mint) {
        Ok(p) => p,
        Err(e) => panic!("the deterministic mint cannot fail, yet plan did: {e}"),
    };
    if let Err(e) = validate_config(&boot.config) {
        panic!("boot settled on an invalid config: {e}");
    }
    assert_no_secret(&boot.drift, boot.config.api_secret.expose(), "boot plan");

    // A valid credential on disk is never replaced at boot.
    let in_json = json_credential(&observed.runtime_json);
    if let Some(c) = &in_json {
        assert_eq!(
            boot.source,
            ConfigSource::RuntimeJson,
            "runtime.json holds a valid credential"
        );
        assert_eq!(&boot.config.credential(), c, "not the credential of runtime.json");
    }
    if in_json.is_some() || env_credential(&observed.backend_env).is_some() {
        assert!(!boot.minted, "minted although a file holds a valid credential");
    }

    // A plan that writes nothing must mean the triple is the rendering.
    let consistency = check(&boot.config, &observed);
    assert_eq!(boot.is_noop(), consistency.consistent, "plan and check disagree");
    assert_eq!(
        boot.writes,
        consistency.mismatched(),
        "plan writes what check calls mismatched"
    );

    // Carry the plan out as the shell does, then plan again.
    let mut healed = observed.clone();
    for &f in &boot.writes {
        *healed.get_mut(f) = FileObs::Present(render(&boot.config, f));
    }
    let again = match plan_with(None, &healed, false, mint) {
        Ok(p) => p,
        Err(e) => panic!("re-plan failed: {e}"),
    };
    assert!(again.is_noop(), "boot heal does not converge: {:?}", again.drift);
    assert_eq!(
        again.config, boot.config,
        "re-boot from healed files loads another config"
    );
    let running = match plan_with(Some(&boot.config), &healed, false, mint) {
        Ok(p) => p,
        Err(e) => panic!("in-memory plan failed: {e}"),
    };
    assert!(
        running.is_noop(),
        "in-memory heal does not converge: {:?}",
        running.drift
    );

    // The daemon's periodic check against a config of its own.
    let config = fixed();
    let c = check(&config, &observed);
    assert_no_secret(&c.drift, config.api_secret.expose(), "check");
    for f in TripleFile::ALL {
        let fc = &c.files[f.index()];
        assert_eq!(
            fc.matches,
            matches!(observed.get(f), FileObs::Present(b) if *b == render(&config, f)),
            "{f}: matches is not byte equality"
        );
        if !fc.matches {
            assert!(
                c.drift.iter().any(|d| d.starts_with(f.name())),
                "{f} mismatches without drift"
            );
        }
    }
});
