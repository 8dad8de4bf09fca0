//! The config triple through the real daemon: configure, health hashes and
//! drift, heal at boot and on demand, and a consistent triple never touched.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hero_livekit_tests::*;
use serde_json::{json, Value};

const FILES: [&str; 3] = ["runtime.json", "livekit.yaml", "backend.env"];

/// The (key, secret) each file holds, read with real parsers.
fn pairs(root: &Root) -> [(String, String); 3] {
    let rt: Value = serde_json::from_slice(&std::fs::read(root.file("runtime.json")).expect("runtime.json"))
        .expect("runtime.json is JSON");
    let yaml: serde_yaml::Value =
        serde_yaml::from_slice(&std::fs::read(root.file("livekit.yaml")).expect("livekit.yaml")).expect("yaml");
    let keys = yaml["keys"].as_mapping().expect("keys map");
    assert_eq!(keys.len(), 1, "exactly one keys entry");
    let (k, s) = keys.iter().next().expect("one entry");
    let env = std::fs::read_to_string(root.file("backend.env")).expect("backend.env");
    let vars = hero_livekit_proto::envfile::parse(&env).expect("backend.env parses");
    let get = |name| hero_livekit_proto::envfile::get(&vars, name).expect(name).to_string();
    [
        (
            rt["api_key"].as_str().expect("api_key").to_string(),
            rt["api_secret"].as_str().expect("api_secret").to_string(),
        ),
        (
            k.as_str().expect("key").to_string(),
            s.as_str().expect("secret").to_string(),
        ),
        (get("LIVEKIT_API_KEY"), get("LIVEKIT_API_SECRET")),
    ]
}

/// Bytes, mtime and inode of each file.
fn stamps(root: &Root) -> Vec<(Vec<u8>, i64, i64, u64)> {
    FILES
        .iter()
        .map(|f| {
            let p = root.file(f);
            let m = std::fs::metadata(&p).expect("metadata");
            (std::fs::read(&p).expect("read"), m.mtime(), m.mtime_nsec(), m.ino())
        })
        .collect()
}

fn assert_consistent(d: &Daemon) -> Value {
    let h = d.health();
    assert_eq!(h["consistent"], true, "{h}");
    assert_eq!(h["drift"], json!([]));
    h
}

/// A daemon on which only a mutation heals: the periodic reconcile is off
/// (`HERO_LIVEKIT_DRIFT_CHECK_MS=0`), and without children, Redis or a
/// cluster no other trigger asks the reconciler for a pass.
fn only_mutations_heal() -> DaemonOpts {
    DaemonOpts::default().env_var("HERO_LIVEKIT_DRIFT_CHECK_MS", 0)
}

#[test]
fn clean_root_configure_with_empty_params_gives_a_consistent_minted_triple() {
    let root = Root::new();
    let d = Daemon::start(&root, DaemonOpts::default());
    let r = d.ok("livekitservice.configure", json!({}));
    let [rt, yaml, env] = pairs(&root);
    assert_eq!(rt, yaml, "livekit.yaml's keys entry equals runtime.json's pair");
    assert_eq!(rt, env, "backend.env's pair equals runtime.json's pair");
    let (key, secret) = rt;
    assert!(key.starts_with("API") && key.len() == 15, "{key}");
    assert!(key[3..]
        .chars()
        .all(|c| "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz".contains(c)));
    assert!(
        secret.len() >= 43 && secret.chars().all(|c| c.is_ascii_alphanumeric()),
        "secret in base62"
    );
    assert_eq!(r["api_key"], key.as_str());
    let h = assert_consistent(&d);
    assert_eq!(h["api_key"], key.as_str());
    assert!(!h.to_string().contains(&secret), "health never shows the secret");
}

#[test]
fn hashes_in_health_equal_sha256sum_of_the_files() {
    let root = Root::new();
    let d = Daemon::start(&root, DaemonOpts::default());
    let h = d.health();
    for f in FILES {
        let out = Command::new("sha256sum").arg(root.file(f)).output().expect("sha256sum");
        let sum = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .expect("sum")
            .to_string();
        assert_eq!(h["files"][f]["sha256"], sum.as_str(), "{f}");
        assert_eq!(
            h["files"][f]["expected_sha256"],
            sum.as_str(),
            "{f} matches its rendering"
        );
        assert_eq!(h["files"][f]["present"], true);
        assert_eq!(h["files"][f]["matches"], true);
    }
    assert_eq!(h["in_memory_hash"], h["files"]["runtime.json"]["expected_sha256"]);
}

#[test]
fn a_field_changed_by_hand_is_named_in_health_and_healed() {
    let root = Root::new();
    let d = Daemon::start(&root, only_mutations_heal());
    let key = d.health()["api_key"].clone();
    let path = root.file("runtime.json");
    let mut rt: Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    rt["api_key"] = json!("APIhandEdited1");
    std::fs::write(&path, serde_json::to_vec_pretty(&rt).expect("encode")).expect("write");

    let h = d.health();
    assert_eq!(h["consistent"], false);
    assert_eq!(h["files"]["runtime.json"]["matches"], false);
    assert_eq!(h["files"]["livekit.yaml"]["matches"], true);
    let drift = h["drift"].to_string();
    assert!(
        drift.contains("runtime.json") && drift.contains("api_key"),
        "names file and field: {drift}"
    );
    assert!(
        !drift.contains("APIhandEdited1"),
        "drift text holds no key values: {drift}"
    );

    let r = d.ok("livekitservice.configure", json!({}));
    assert_eq!(
        r["heal"]["written"],
        json!(["runtime.json"]),
        "only the drifted file is rewritten"
    );
    let h = assert_consistent(&d);
    assert_eq!(h["api_key"], key, "the in-memory credential wins; nothing rotated");
}

#[test]
fn the_periodic_check_heals_drift_without_any_call() {
    let root = Root::new();
    let d = Daemon::start(&root, DaemonOpts::default().drift_check_ms(100));
    let before = std::fs::read(root.file("backend.env")).expect("read");
    std::fs::write(root.file("backend.env"), b"LIVEKIT_API_KEY=\"APIwrongwrong\"\n").expect("write");
    wait_for(Duration::from_secs(20), "drift healed", || {
        (std::fs::read(root.file("backend.env")).ok()? == before).then_some(())
    });
    assert_consistent(&d);
}

#[test]
fn every_single_file_and_every_pair_deleted_is_healed_without_rotation() {
    let root = Root::new();
    // The trigger under test is `configure`. The others are off: the
    // periodic reconcile (tick 0), the boot pass (nothing is wanted, so boot
    // asks for none), the probe (no child runs, so it never asks for one),
    // Redis and the cluster (not configured).
    let mut d = Daemon::start(&root, only_mutations_heal());
    let original = pairs(&root)[0].clone();
    let sets: Vec<Vec<&str>> = vec![
        vec!["runtime.json"],
        vec!["livekit.yaml"],
        vec!["backend.env"],
        vec!["runtime.json", "livekit.yaml"],
        vec!["runtime.json", "backend.env"],
        vec!["livekit.yaml", "backend.env"],
    ];
    // Healed while running (configure {} heals), ...
    for set in &sets {
        for f in set {
            std::fs::remove_file(root.file(f)).expect("remove");
        }
        let h = d.health();
        for f in set {
            assert_eq!(h["files"][*f]["present"], false, "{f} reported missing");
        }
        let r = d.ok("livekitservice.configure", json!({}));
        assert_eq!(r["minted"], false, "{set:?}: nothing minted");
        assert_consistent(&d);
        assert_eq!(pairs(&root)[0], original, "{set:?}: credential kept");
    }
    // ... and at boot, where the credential must be salvaged from what is left.
    for set in &sets {
        d.kill9();
        for f in set {
            std::fs::remove_file(root.file(f)).expect("remove");
        }
        d = Daemon::start(&root, DaemonOpts::default());
        assert_consistent(&d);
        assert_eq!(
            pairs(&root)[0],
            original,
            "{set:?} deleted before boot: credential kept"
        );
    }
}

#[test]
fn runtime_json_missing_and_a_valid_livekit_yaml_adopts_its_credential() {
    let root = Root::new();
    let mut d = Daemon::start(&root, DaemonOpts::default());
    d.kill9();
    let key = "APIyamlOwnKey42";
    let secret = "yamlSecretThatIsLongEnoughToBeValid0123456789";
    std::fs::write(
        root.file("livekit.yaml"),
        format!("port: 7880\nkeys:\n  {key}: {secret}\n"),
    )
    .expect("yaml");
    std::fs::remove_file(root.file("runtime.json")).expect("rm");
    std::fs::remove_file(root.file("backend.env")).expect("rm");
    let d = Daemon::start(&root, DaemonOpts::default());
    let h = assert_consistent(&d);
    assert_eq!(h["api_key"], key);
    for pair in pairs(&root) {
        assert_eq!(pair, (key.to_string(), secret.to_string()));
    }
}

#[test]
fn garbage_in_each_file_is_reported_and_healed_while_the_daemon_keeps_running() {
    let root = Root::new();
    // The trigger under test is `configure`; every other one is off, as in
    // `every_single_file_and_every_pair_deleted_is_healed_without_rotation`.
    let d = Daemon::start(&root, only_mutations_heal());
    let original = pairs(&root)[0].clone();
    let good: Vec<Vec<u8>> = FILES
        .iter()
        .map(|f| std::fs::read(root.file(f)).expect("read"))
        .collect();
    for (i, f) in FILES.iter().enumerate() {
        let g = &good[i];
        let crlf = String::from_utf8_lossy(g).replace('\n', "\r\n").into_bytes();
        let mut garbage: Vec<(&str, Vec<u8>)> = vec![
            ("truncated", g[..g.len() / 2].to_vec()),
            ("binary", vec![0, 159, 146, 150, 255, 0, 1]),
            ("empty", Vec::new()),
            ("crlf", crlf),
        ];
        match *f {
            "runtime.json" => garbage.push((
                "wrong types",
                br#"{"api_key": 42, "api_secret": ["x"], "port": "http"}"#.to_vec(),
            )),
            "livekit.yaml" => {
                let mut unknown = g.clone();
                unknown.extend_from_slice(b"not_a_livekit_key: true\n");
                garbage.push(("unknown yaml key", unknown));
                let mut dup = g.clone();
                dup.extend_from_slice(b"port: 9999\n");
                garbage.push(("duplicate yaml key", dup));
                garbage.push(("wrong types", b"port: [1, 2]\nkeys: 7\n".to_vec()));
            }
            _ => garbage.push(("wrong types", b"PORT=\"not a port\"\nLIVEKIT_API_KEY=\n".to_vec())),
        }
        for (what, bytes) in garbage {
            std::fs::write(root.file(f), &bytes).expect("write garbage");
            let h = d.health();
            assert_eq!(h["consistent"], false, "{f} {what}");
            assert!(
                h["drift"].to_string().contains(f),
                "{f} {what}: drift names the file: {}",
                h["drift"]
            );
            d.ok("livekitservice.configure", json!({}));
            assert_eq!(
                std::fs::read(root.file(f)).expect("read"),
                *g,
                "{f} {what} healed to the rendering"
            );
            assert_consistent(&d);
            assert_eq!(pairs(&root)[0], original, "{f} {what}: not rotated");
        }
    }
}

#[test]
fn a_consistent_triple_is_never_touched_by_configure_start_or_a_daemon_restart() {
    let root = Root::new();
    let mut d = Daemon::start(&root, DaemonOpts::double());
    configure_free_ports(&d);
    let before = stamps(&root);
    let r = d.ok("livekitservice.configure", json!({}));
    assert_eq!(r["heal"]["written"], json!([]));
    assert_eq!(r["changed_fields"], json!([]));
    let r = d.ok("livekitservice.start", json!({}));
    assert_eq!(r["heal"]["written"], json!([]));
    assert_eq!(r["rotated"], false);
    assert_eq!(stamps(&root), before, "configure {{}} and start wrote nothing");
    d.signal(nix::sys::signal::Signal::SIGTERM);
    d.wait_exit(Duration::from_secs(30));
    let d2 = Daemon::start(&root, DaemonOpts::double());
    assert_consistent(&d2);
    assert_eq!(
        stamps(&root),
        before,
        "a daemon restart wrote nothing: same bytes, mtime and inode"
    );
}

#[test]
fn invalid_input_gets_32602_naming_the_field_and_changes_nothing() {
    let root = Root::new();
    let d = Daemon::start(&root, DaemonOpts::default());
    let before = stamps(&root);
    let long_ok = "s".repeat(40);
    let cases: Vec<(Value, &str)> = vec![
        (json!({"api_key": "API\nnewline"}), "api_key"),
        (json!({"api_key": "API\"quote"}), "api_key"),
        (json!({"api_key": "API:colon"}), "api_key"),
        (json!({"api_key": "API#hash"}), "api_key"),
        (json!({"api_key": "API space"}), "api_key"),
        (json!({"api_secret": format!("{long_ok}\n")}), "api_secret"),
        (json!({"api_secret": format!("{long_ok}\"")}), "api_secret"),
        (json!({"api_secret": format!("{long_ok}:x")}), "api_secret"),
        (json!({"api_secret": format!("{long_ok}#x")}), "api_secret"),
        (json!({"api_secret": format!("{long_ok} x")}), "api_secret"),
        (json!({"api_secret": "tooShortSecret123"}), "api_secret"),
        (json!({"domain": "bad domain!"}), "domain"),
        (json!({"domain": "-leading.example"}), "domain"),
        (json!({"redis_address": "no-port"}), "redis_address"),
        (json!({"redis_address": "host:99999"}), "redis_address"),
        (json!({"port": 70000}), "port"),
        (json!({"port": 0}), "port"),
        (json!({"port": 9000, "backend_port": 9000}), "backend_port"),
        (
            json!({"rtc_port_range_start": 60000, "rtc_port_range_end": 50000}),
            "rtc_port_range_start",
        ),
        (json!({"port": "seven"}), "port"),
        (json!({"unknown_field": 1}), "unknown_field"),
        (json!({"unset": ["api_secret"]}), "unset"),
        (json!({"unset": "redis_address"}), "unset"),
        (
            json!({"redis_address": "10.0.0.5:6379", "unset": ["redis_address"]}),
            "redis_address",
        ),
    ];
    for (params, field) in cases {
        let r = d.call("livekitservice.configure", params.clone());
        let err = &r["error"];
        assert_eq!(err["code"], -32602, "{params}: {r}");
        let named = err["data"]["field"].as_str().unwrap_or_default();
        assert!(
            named == field || (field.starts_with("rtc_port_range") && named.starts_with("rtc_port_range")),
            "{params}: expected field {field}, got {r}"
        );
        assert!(
            err["message"].as_str().is_some_and(|m| m.contains(named)),
            "message names the field: {r}"
        );
        let text = r.to_string();
        assert!(!text.contains(&long_ok), "the error never echoes a secret: {text}");
    }
    assert_eq!(stamps(&root), before, "no invalid call wrote anything");
}

#[test]
fn configure_unset_removes_redis_and_node_ip_from_all_three_files() {
    let root = Root::new();
    let d = Daemon::start(&root, DaemonOpts::default());
    configure_free_ports(&d);
    d.ok(
        "livekitservice.configure",
        json!({"redis_address": "10.0.0.5:6379", "node_ip": "10.0.0.7"}),
    );
    let yaml = std::fs::read_to_string(root.file("livekit.yaml")).expect("yaml");
    assert!(yaml.contains("redis:") && yaml.contains("node_ip: "), "{yaml}");
    let key = d.health()["api_key"].clone();

    // An empty value keeps the setting; `--unset` removes it.
    let cli = |args: &[&str]| {
        Command::new(bin("hero_livekit"))
            .arg("--socket")
            .arg(&d.socket)
            .args(args)
            .output()
            .expect("run hero_livekit")
    };
    let out = cli(&["configure", "--redis-address", ""]);
    assert!(out.status.success(), "{out:?}");
    assert!(std::fs::read_to_string(root.file("livekit.yaml"))
        .expect("yaml")
        .contains("redis:"));
    let out = cli(&["configure", "--unset", "redis-address", "--unset", "node-ip"]);
    assert!(out.status.success(), "{out:?}");

    let yaml = std::fs::read_to_string(root.file("livekit.yaml")).expect("yaml");
    assert!(!yaml.contains("redis") && !yaml.contains("node_ip"), "{yaml}");
    let runtime: Value =
        serde_json::from_slice(&std::fs::read(root.file("runtime.json")).expect("runtime.json")).expect("json");
    assert_eq!(
        (&runtime["redis_address"], &runtime["node_ip"]),
        (&json!(""), &json!(""))
    );
    let h = assert_consistent(&d);
    assert_eq!(h["api_key"], key, "the credential is kept");
    assert!(h.get("redis").is_none(), "{h}");

    // A bad entry is refused by the CLI before any call.
    let out = cli(&["configure", "--unset", "api-secret"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("redis-address"),
        "{out:?}"
    );
}

#[test]
fn concurrent_clients_configuring_different_credentials_leave_one_whole_credential_that_works() {
    use hero_livekit_tests::observe::{backend_token, ports, validate};
    const CLIENTS: usize = 6;
    let root = Root::new();
    let d = Daemon::start(&root, DaemonOpts::double());
    configure_free_ports(&d);
    d.ok("livekitservice.start", json!({"timeout_ms": 30000}));
    let creds: Vec<(String, String)> = (0..CLIENTS)
        .map(|i| {
            (
                format!("APIclient{i}"),
                format!("SecretOfClient{i}xxxxxxxxxxxxxxxxxxxxxxxx"),
            )
        })
        .collect();

    // Each client configures its own credential over its own connection,
    // while another reads health throughout; all at once.
    let done = std::sync::atomic::AtomicBool::new(false);
    let answers: Vec<Value> = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut reads = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let h = d.health();
                assert!(h["api_key"].is_string(), "health answers during the writes: {h}");
                assert!(!h.to_string().contains("SecretOfClient"), "no secret in health");
                reads += 1;
            }
            reads
        });
        let writers: Vec<_> = creds
            .iter()
            .map(|(k, sec)| {
                let d = &d;
                s.spawn(move || d.call("livekitservice.configure", json!({"api_key": k, "api_secret": sec})))
            })
            .collect();
        let answers = writers.into_iter().map(|w| w.join().expect("client thread")).collect();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(reader.join().expect("reader thread") > 0);
        answers
    });
    // Serialized, not interleaved: every call succeeded and saw its own
    // credential in memory when it returned.
    for (r, (k, _)) in answers.iter().zip(&creds) {
        assert_eq!(r["result"]["api_key"], k.as_str(), "{r}");
    }

    // One whole credential of one client in all three files, never a mix.
    let [rt, yaml, env] = pairs(&root);
    assert_eq!(rt, yaml);
    assert_eq!(rt, env);
    assert!(creds.contains(&rt), "the triple holds a submitted credential: {rt:?}");
    let h = assert_consistent(&d);
    assert_eq!(h["api_key"], rt.0.as_str());
    // And the children run it: a token from lk-backend is accepted.
    let h = wait_for(Duration::from_secs(30), "ready_for_tokens", || {
        let h = d.health();
        (h["ready_for_tokens"] == true).then_some(h)
    });
    let p = ports(&d);
    assert_eq!(
        validate(p.livekit, &backend_token(p.backend)),
        (200, "success".into()),
        "{h}"
    );
}

#[test]
fn files_are_0600_in_a_0700_directory_even_after_a_chmod_by_hand() {
    use std::os::unix::fs::PermissionsExt;
    let root = Root::new();
    let d = Daemon::start(&root, DaemonOpts::default());
    std::fs::set_permissions(root.file("livekit.yaml"), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    // Not a content change: the drift is the loosened mode of a secret file.
    d.ok("livekitservice.configure", json!({}));
    for f in FILES {
        let mode = std::fs::metadata(root.file(f)).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let dir_mode = std::fs::metadata(root.state()).expect("meta").permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
    assert!(!Path::new(&root.state().join("runtime.json.tmp")).exists());
}
