//! Unit tests of [`super`] (heal.rs).

use proptest::prelude::*;

use super::super::check::check;
use super::super::model::Secret;
use super::super::render::render;
use super::super::testutil::{arb_config, config_a, config_b, minted, observed_of};
use super::*;

fn fixed_mint() -> Result<Credential, MintError> {
    Ok(minted())
}

fn no_mint() -> Result<Credential, MintError> {
    Err(MintError::new("this plan must not mint"))
}

/// The observation after the shell carried `p` out.
fn healed(observed: &Observed, p: &HealPlan) -> Observed {
    let mut out = observed.clone();
    for &f in &p.writes {
        *out.get_mut(f) = FileObs::Present(render(&p.config, f));
    }
    out
}

/// What a heal must leave: a consistent triple that the next boot
/// loads back to the same config without writing anything.
fn assert_heal_is_final(observed: &Observed, p: &HealPlan) {
    let after = healed(observed, p);
    assert!(check(&p.config, &after).consistent);
    let again = plan_with(Some(&p.config), &after, false, no_mint).expect("no mint");
    assert!(again.is_noop() && again.drift.is_empty(), "{again:?}");
    let boot = plan_with(None, &after, false, no_mint).expect("no mint");
    assert_eq!(boot.config, p.config);
    assert_eq!(boot.source, ConfigSource::RuntimeJson);
    assert!(boot.is_noop());
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Missing,
    Same,
    Different,
    Garbage,
}

const STATES: [State; 4] = [State::Missing, State::Same, State::Different, State::Garbage];

fn obs(state: State, file: TripleFile) -> FileObs {
    match state {
        State::Missing => FileObs::Missing,
        State::Same => FileObs::Present(render(&config_a(), file)),
        State::Different => FileObs::Present(render(&config_b(), file)),
        State::Garbage => FileObs::Present(b"\x7fELF\x02\x01\x01\x00\xff\xfe garbage".to_vec()),
    }
}

/// The spec's salvage rule, computed independently: the credential of
/// the first valid file; other fields from the files holding that
/// credential (runtime.json carries all, livekit.yaml the server fields,
/// backend.env the domain, port and backend port), else defaults.
fn expected(states: [State; 3]) -> (Config, ConfigSource) {
    let Some(first) = TripleFile::ALL
        .into_iter()
        .find(|f| matches!(states[f.index()], State::Same | State::Different))
    else {
        return (Config::with_credential(minted()), ConfigSource::Minted);
    };
    let chosen = states[first.index()];
    let full = if chosen == State::Same { config_a() } else { config_b() };
    let holds = |f: TripleFile| states[f.index()] == chosen;
    if holds(TripleFile::RuntimeJson) {
        return (full, ConfigSource::RuntimeJson);
    }
    let mut c = Config::with_credential(full.credential());
    if holds(TripleFile::LivekitYaml) {
        c.port = full.port;
        c.rtc_tcp_port = full.rtc_tcp_port;
        c.rtc_port_range_start = full.rtc_port_range_start;
        c.rtc_port_range_end = full.rtc_port_range_end;
        c.node_ip = full.node_ip.clone();
        c.redis_address = full.redis_address.clone();
        c.redis = full.redis.clone();
    }
    if holds(TripleFile::BackendEnv) {
        c.domain = full.domain.clone();
        c.port = full.port;
        c.backend_port = full.backend_port;
    }
    let source = if first == TripleFile::LivekitYaml {
        ConfigSource::LivekitYaml
    } else {
        ConfigSource::BackendEnv
    };
    (c, source)
}

#[test]
fn boot_plan_over_every_combination_of_file_states() {
    for s0 in STATES {
        for s1 in STATES {
            for s2 in STATES {
                let states = [s0, s1, s2];
                let observed = Observed {
                    runtime_json: obs(s0, TripleFile::RuntimeJson),
                    livekit_yaml: obs(s1, TripleFile::LivekitYaml),
                    backend_env: obs(s2, TripleFile::BackendEnv),
                };
                let p = plan_with(None, &observed, false, fixed_mint).expect("plans");
                let (config, source) = expected(states);
                assert_eq!(p.config, config, "{states:?}");
                assert_eq!(p.source, source, "{states:?}");
                let any_valid = states.iter().any(|s| matches!(s, State::Same | State::Different));
                assert_eq!(
                    p.minted, !any_valid,
                    "a valid credential is never thrown away: {states:?}"
                );
                let writes: Vec<TripleFile> = TripleFile::ALL
                    .into_iter()
                    .filter(|&f| *observed.get(f) != FileObs::Present(render(&config, f)))
                    .collect();
                assert_eq!(p.writes, writes, "{states:?}");
                for f in &writes {
                    assert!(
                        p.drift.iter().any(|d| d.starts_with(f.name())),
                        "{states:?}: {f} drift named"
                    );
                }
                assert_eq!(p.drift.is_empty(), writes.is_empty(), "{states:?}");
                assert_heal_is_final(&observed, &p);
            }
        }
    }
}

#[test]
fn a_consistent_triple_yields_an_empty_plan() {
    let a = config_a();
    let observed = observed_of(&a);
    let boot = plan_with(None, &observed, false, no_mint).expect("no mint");
    assert_eq!(
        (boot.config.clone(), boot.source),
        (a.clone(), ConfigSource::RuntimeJson)
    );
    let live = plan_with(Some(&a), &observed, false, no_mint).expect("no mint");
    for p in [boot, live] {
        assert!(p.is_noop() && p.drift.is_empty() && !p.minted, "{p:?}");
    }
}

#[test]
fn every_single_file_and_every_pair_missing_heals_without_rotating() {
    let a = config_a();
    for missing in [vec![0], vec![1], vec![2], vec![0, 1], vec![0, 2], vec![1, 2]] {
        let mut observed = observed_of(&a);
        for &i in &missing {
            *observed.get_mut(TripleFile::ALL[i]) = FileObs::Missing;
        }
        let p = plan_with(None, &observed, false, no_mint).expect("never mints");
        assert_eq!(p.config.credential(), a.credential(), "{missing:?}");
        assert!(!p.minted);
        let written: Vec<usize> = p.writes.iter().map(|f| f.index()).collect();
        if missing == [1, 2] {
            // runtime.json alone holds everything.
            assert_eq!(p.config, a);
        }
        if missing.len() == 1 {
            assert_eq!(p.config, a, "the two remaining files together hold every field");
            assert_eq!(written, missing, "only the missing file is written");
        }
        assert_heal_is_final(&observed, &p);
    }
}

#[test]
fn runtime_json_missing_adopts_the_credential_of_livekit_yaml() {
    let a = config_a();
    let b = config_b();
    let observed = Observed {
        runtime_json: FileObs::Missing,
        livekit_yaml: FileObs::Present(render(&b, TripleFile::LivekitYaml)),
        backend_env: FileObs::Present(render(&a, TripleFile::BackendEnv)),
    };
    let p = plan_with(None, &observed, false, no_mint).expect("never mints");
    assert_eq!(p.source, ConfigSource::LivekitYaml);
    assert_eq!(p.config.credential(), b.credential());
    assert_eq!(p.writes, [TripleFile::RuntimeJson, TripleFile::BackendEnv]);
    assert_eq!(
        p.drift,
        [
            "runtime.json: missing",
            "backend.env: LIVEKIT_API_KEY differs",
            "backend.env: LIVEKIT_API_SECRET differs",
            "backend.env: LIVEKIT_URL differs",
            "backend.env: PORT differs"
        ]
    );
}

#[test]
fn garbage_in_one_file_is_reported_and_healed_without_losing_anything() {
    let a = config_a();
    let text = |f| String::from_utf8(render(&a, f)).expect("utf8");
    let json = text(TripleFile::RuntimeJson);
    let yaml = text(TripleFile::LivekitYaml);
    let env = text(TripleFile::BackendEnv);
    let mut cases: Vec<(&str, TripleFile, Vec<u8>)> = Vec::new();
    for f in TripleFile::ALL {
        let whole = render(&a, f);
        cases.push(("truncated", f, whole[..whole.len() / 2].to_vec()));
        cases.push(("binary", f, vec![0xff, 0x00, 0xfe, 0x80, 0x01, 0x9c]));
        cases.push(("empty", f, Vec::new()));
        cases.push((
            "crlf",
            f,
            String::from_utf8(whole)
                .expect("utf8")
                .replace('\n', "\r\n")
                .into_bytes(),
        ));
    }
    cases.push((
        "wrong types",
        TripleFile::RuntimeJson,
        json.replace("\"port\": 7980", "\"port\": [7980]").into_bytes(),
    ));
    cases.push((
        "wrong types",
        TripleFile::LivekitYaml,
        yaml.replace("tcp_port: 7981", "tcp_port: {a: 1}").into_bytes(),
    ));
    cases.push((
        "wrong types",
        TripleFile::BackendEnv,
        env.replace("PORT=\"7990\"", "PORT=\"seventy\"").into_bytes(),
    ));
    cases.push((
        "unknown yaml key",
        TripleFile::LivekitYaml,
        format!("{yaml}room:\n  auto_create: false\n").into_bytes(),
    ));
    cases.push((
        "unknown nested yaml key",
        TripleFile::LivekitYaml,
        yaml.replace(
            "  use_external_ip: false\n",
            "  use_external_ip: false\n  udp_port: 7882\n",
        )
        .into_bytes(),
    ));
    cases.push((
        "duplicate yaml key",
        TripleFile::LivekitYaml,
        format!("{yaml}logging:\n  level: debug\n").into_bytes(),
    ));
    cases.push((
        "second keys entry",
        TripleFile::LivekitYaml,
        yaml.replace("keys:\n", "keys:\n  devkey: secret\n").into_bytes(),
    ));
    for (kind, file, bytes) in cases {
        let mut observed = observed_of(&a);
        *observed.get_mut(file) = FileObs::Present(bytes);
        let p = plan_with(None, &observed, false, no_mint).unwrap_or_else(|e| panic!("{kind} in {file}: minted: {e}"));
        assert_eq!(p.config, a, "{kind} in {file}: nothing lost");
        assert_eq!(p.writes, [file], "{kind} in {file}");
        assert!(
            !p.drift.is_empty() && p.drift.iter().all(|d| d.starts_with(&format!("{file}: "))),
            "{kind} in {file}: {:?}",
            p.drift
        );
        for d in &p.drift {
            assert!(
                !d.contains(a.api_secret.expose()) && !d.contains(&a.api_key),
                "{kind} in {file}: {d}"
            );
        }
        assert_heal_is_final(&observed, &p);
    }
}

#[test]
fn the_in_memory_config_is_the_truth_and_every_file_follows_it() {
    let a = config_a();
    let observed = observed_of(&config_b());
    let p = plan_with(Some(&a), &observed, false, no_mint).expect("no mint");
    assert_eq!(
        (p.config.clone(), p.source, p.minted),
        (a, ConfigSource::InMemory, false)
    );
    assert_eq!(p.writes, TripleFile::ALL);
}

#[test]
fn only_the_file_that_differs_is_written() {
    let a = config_a();
    let mut observed = observed_of(&a);
    observed.runtime_json = FileObs::Missing;
    let p = plan_with(Some(&a), &observed, false, no_mint).expect("no mint");
    assert_eq!(p.writes, [TripleFile::RuntimeJson]);
}

#[test]
fn reset_rotates_only_the_credential() {
    let a = config_a();
    for in_memory in [Some(&a), None] {
        let p = plan_with(in_memory, &observed_of(&a), true, fixed_mint).expect("mints");
        assert_eq!(p.config.credential(), minted());
        let mut expected = a.clone();
        expected.set_credential(minted());
        assert_eq!(p.config, expected);
        assert_eq!((p.source, p.minted), (ConfigSource::Reset, true));
        assert_eq!(p.writes, TripleFile::ALL);
    }
    let p = plan_with(None, &Observed::missing(), true, fixed_mint).expect("one mint is enough");
    assert_eq!((p.source, p.config.credential()), (ConfigSource::Reset, minted()));
}

#[test]
fn a_fresh_state_directory_mints_with_defaults() {
    let p = plan_with(None, &Observed::missing(), false, fixed_mint).expect("mints");
    assert_eq!(p.config, Config::with_credential(minted()));
    assert_eq!((p.source, p.minted), (ConfigSource::Minted, true));
    assert_eq!(
        p.drift,
        ["runtime.json: missing", "livekit.yaml: missing", "backend.env: missing"]
    );
    let e = plan_with(None, &Observed::missing(), false, no_mint).expect_err("the mint error propagates");
    assert!(e.to_string().contains("must not mint"));
}

#[test]
fn placeholder_credentials_are_not_adopted_but_other_fields_are_kept() {
    let mut devkey = config_a();
    devkey.api_key = "devkey".into();
    devkey.api_secret = Secret::new("x".repeat(40));
    let observed = Observed {
        runtime_json: FileObs::Present(render(&devkey, TripleFile::RuntimeJson)),
        livekit_yaml: FileObs::Present(b"keys:\n  devkey: secret\n".to_vec()),
        backend_env: FileObs::Unreadable("Permission denied (os error 13)".into()),
    };
    let p = plan_with(None, &observed, false, fixed_mint).expect("mints");
    let mut expected = config_a();
    expected.set_credential(minted());
    assert_eq!(p.config, expected);
    assert_eq!(p.writes, TripleFile::ALL);
}

#[test]
fn clashing_ports_on_disk_fall_back_to_defaults_keeping_the_credential() {
    let mut clash = config_a();
    clash.backend_port = clash.port;
    let observed = Observed {
        runtime_json: FileObs::Present(render(&clash, TripleFile::RuntimeJson)),
        livekit_yaml: FileObs::Missing,
        backend_env: FileObs::Missing,
    };
    let p = plan_with(None, &observed, false, no_mint).expect("never mints");
    assert_eq!(p.config.credential(), clash.credential());
    assert_eq!(
        (p.config.port, p.config.backend_port, p.config.rtc_tcp_port),
        (7880, 7890, 7881)
    );
    assert_eq!(p.config.domain, clash.domain);
    assert!(validate_config(&p.config).is_ok());
}

#[derive(Debug, Clone)]
enum Arb {
    Missing,
    Whole(usize),
    Truncated(usize, usize),
    Flipped(usize, usize, u8),
    Bytes(Vec<u8>),
    Unreadable,
}

fn arb_state() -> impl Strategy<Value = Arb> {
    prop_oneof![
        Just(Arb::Missing),
        (0usize..2).prop_map(Arb::Whole),
        (0usize..2, any::<usize>()).prop_map(|(c, i)| Arb::Truncated(c, i)),
        (0usize..2, any::<usize>(), any::<u8>()).prop_map(|(c, i, b)| Arb::Flipped(c, i, b)),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Arb::Bytes),
        Just(Arb::Unreadable),
    ]
}

fn materialise(state: &Arb, file: TripleFile, configs: &[Config; 2]) -> FileObs {
    match state {
        Arb::Missing => FileObs::Missing,
        Arb::Whole(c) => FileObs::Present(render(&configs[*c], file)),
        Arb::Truncated(c, i) => {
            let b = render(&configs[*c], file);
            FileObs::Present(b[..i % b.len()].to_vec())
        }
        Arb::Flipped(c, i, x) => {
            let mut b = render(&configs[*c], file);
            let n = b.len();
            b[i % n] = *x;
            FileObs::Present(b)
        }
        Arb::Bytes(b) => FileObs::Present(b.clone()),
        Arb::Unreadable => FileObs::Unreadable("Input/output error (os error 5)".into()),
    }
}

proptest! {
    #[test]
    fn any_disk_state_heals_to_a_final_consistent_triple(
        c0 in arb_config(), c1 in arb_config(), states in proptest::array::uniform3(arb_state()),
    ) {
        let configs = [c0, c1];
        let observed = Observed {
            runtime_json: materialise(&states[0], TripleFile::RuntimeJson, &configs),
            livekit_yaml: materialise(&states[1], TripleFile::LivekitYaml, &configs),
            backend_env: materialise(&states[2], TripleFile::BackendEnv, &configs),
        };
        let p = plan_with(None, &observed, false, fixed_mint).expect("plans");
        prop_assert!(validate_config(&p.config).is_ok());
        assert_heal_is_final(&observed, &p);
    }

    #[test]
    fn a_whole_valid_credential_on_disk_is_never_replaced(
        c0 in arb_config(), c1 in arb_config(),
        states in proptest::array::uniform3(prop_oneof![
            Just(Arb::Missing),
            (0usize..2).prop_map(Arb::Whole),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(Arb::Bytes),
        ]),
    ) {
        let configs = [c0, c1];
        let observed = Observed {
            runtime_json: materialise(&states[0], TripleFile::RuntimeJson, &configs),
            livekit_yaml: materialise(&states[1], TripleFile::LivekitYaml, &configs),
            backend_env: materialise(&states[2], TripleFile::BackendEnv, &configs),
        };
        let first = states.iter().find_map(|s| match s { Arb::Whole(c) => Some(*c), _ => None });
        let p = plan_with(None, &observed, false, fixed_mint).expect("plans");
        match first {
            Some(c) => {
                prop_assert_eq!(p.config.credential(), configs[c].credential());
                prop_assert!(!p.minted);
            }
            None => prop_assert_eq!(p.config.credential(), minted()),
        }
    }

    #[test]
    fn an_in_memory_plan_makes_any_disk_state_consistent(
        c in arb_config(), other in arb_config(), states in proptest::array::uniform3(arb_state()),
    ) {
        let configs = [c.clone(), other];
        let observed = Observed {
            runtime_json: materialise(&states[0], TripleFile::RuntimeJson, &configs),
            livekit_yaml: materialise(&states[1], TripleFile::LivekitYaml, &configs),
            backend_env: materialise(&states[2], TripleFile::BackendEnv, &configs),
        };
        let p = plan_with(Some(&c), &observed, false, no_mint).expect("no mint");
        prop_assert_eq!(&p.config, &c);
        let consistent_before = check(&c, &observed).consistent;
        prop_assert_eq!(p.is_noop(), consistent_before);
        prop_assert!(check(&c, &healed(&observed, &p)).consistent);
    }
}
