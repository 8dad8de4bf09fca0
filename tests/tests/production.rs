//! Production settings through the real daemon and the strict test double:
//! every setting configured, rendered and accepted by livekit-server's
//! parser; bad values refused with nothing written; `webhook.api_key`
//! always the active key; renderings gated by the installed version.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hero_livekit_tests::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);
const FILES: [&str; 3] = ["runtime.json", "livekit.yaml", "backend.env"];

fn yaml(root: &Root) -> serde_yaml::Value {
    serde_yaml::from_slice(&std::fs::read(root.file("livekit.yaml")).expect("livekit.yaml"))
        .expect("livekit.yaml parses")
}

fn only_key(doc: &serde_yaml::Value) -> String {
    let keys = doc["keys"].as_mapping().expect("keys");
    assert_eq!(keys.len(), 1);
    keys.keys().next().and_then(|k| k.as_str()).expect("key").to_string()
}

fn files(root: &Root) -> Vec<Vec<u8>> {
    FILES
        .iter()
        .map(|f| std::fs::read(root.file(f)).expect("read"))
        .collect()
}

fn wait_ready(d: &Daemon) -> Value {
    wait_for(WAIT, "ready_for_tokens", || {
        let h = d.health();
        (h["ready_for_tokens"] == true).then_some(h)
    })
}

/// A copy of the test double that claims to be `version`, at `path`.
fn double_claiming(path: &Path, version: &str) -> PathBuf {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::copy(bin("livekit-server-double"), path).expect("copy the double");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(format!("{}.version", path.display()), version).expect("version file");
    path.to_path_buf()
}

/// The error object of a refused call, asserting -32602 naming `field`.
fn refused(d: &Daemon, params: Value, field: &str) -> Value {
    let r = d.call("livekitservice.configure", params.clone());
    let e = r["error"].clone();
    assert_eq!(e["code"], -32602, "{params}: {r}");
    let message = e["message"].as_str().expect("message");
    assert!(message.contains(&format!("{field}: ")), "{params}: {message}");
    e
}

#[test]
fn every_setting_is_rendered_and_accepted_by_the_strict_parser() {
    let root = Root::new();
    let d = Daemon::start(&root, DaemonOpts::double());
    let (port, tcp, backend, prom, udp) = (free_port(), free_port(), free_port(), free_port(), free_port());
    let (turn_tls, turn_udp) = (free_port(), free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("turn.crt"), dir.path().join("turn.key"));
    std::fs::write(&cert, "certificate").expect("cert");
    std::fs::write(&key, "key").expect("key");
    let r = d.ok(
        "livekitservice.configure",
        json!({
            "port": port, "rtc_tcp_port": tcp, "backend_port": backend,
            "bind_addresses": ["127.0.0.1"],
            "use_external_ip": false,
            "rtc_udp_port": udp,
            "stun_servers": ["stun.example.org:3478"],
            "turn_servers": [
                {"host": "turn.example.org", "port": 443, "protocol": "tls", "username": "alice", "credential": "turnCredential1"},
                {"host": "192.0.2.7", "port": 3478, "protocol": "udp", "secret": "turnRestSecret1"}
            ],
            "turn_enabled": true, "turn_domain": "turn.media.example.org",
            "turn_tls_port": turn_tls, "turn_udp_port": turn_udp,
            "turn_cert_file": cert.display().to_string(), "turn_key_file": key.display().to_string(),
            "webhook_urls": ["https://hooks.example.org/livekit"],
            "room_auto_create": false, "room_empty_timeout": 600, "room_departure_timeout": 30,
            "room_max_participants": 25, "room_enabled_codecs": ["audio/opus", "video/vp8"],
            "log_level": "debug", "log_json": true,
            "prometheus_port": prom, "prometheus_username": "scraper", "prometheus_password": "promPassword1",
            "region": "eu-west-1"
        }),
    );
    assert!(r["changed_fields"].as_array().expect("changed").len() >= 24, "{r}");
    let doc = yaml(&root);
    assert_eq!(doc["bind_addresses"][0], "127.0.0.1");
    assert_eq!(doc["rtc"]["udp_port"].as_u64(), Some(u64::from(udp)));
    assert_eq!(doc["rtc"]["turn_servers"][1]["secret"], "turnRestSecret1");
    assert_eq!(doc["turn"]["cert_file"], cert.display().to_string().as_str());
    assert_eq!(doc["room"]["enabled_codecs"][1]["mime"], "video/vp8");
    assert_eq!(
        (doc["logging"]["level"].as_str(), doc["logging"]["json"].as_bool()),
        (Some("debug"), Some(true))
    );
    assert_eq!(doc["prometheus"]["username"], "scraper");
    assert_eq!(doc["region"], "eu-west-1");
    assert_eq!(doc["webhook"]["api_key"].as_str(), Some(only_key(&doc).as_str()));

    // The strict double starts on it: every key is one livekit-server knows.
    d.ok("livekitservice.start", json!({}));
    let h = wait_ready(&d);
    assert_eq!(h["binary"]["target_version"], "1.13.5", "the double's --version");
    let health_text = h.to_string();
    let shown = d.ok("livekitservice.config_show", json!({}));
    let shown_text = shown.to_string();
    for secret in ["turnCredential1", "turnRestSecret1", "promPassword1"] {
        assert!(
            !health_text.contains(secret) && !shown_text.contains(secret),
            "{secret} leaked"
        );
    }
    let row = |name: &str| {
        shown["settings"]
            .as_array()
            .expect("settings")
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .expect(name)
    };
    assert_eq!(row("prometheus_password")["value"], "set");
    assert_eq!(row("api_secret")["value"], "set");
    assert_eq!(row("room_auto_create")["differs"], true);
    assert_eq!(row("room_auto_create")["default"], true);
    assert_eq!(row("region")["livekit_key"], "region");
    assert_eq!(shown["target_version"], "1.13.5");
    // A file that disappears is a stale setting, not a refusal of every
    // later call: only the value given is checked.
    std::fs::remove_file(&key).expect("rm key");
    d.ok("livekitservice.configure", json!({"region": "eu-west-2"}));
}

#[test]
fn bad_values_are_refused_naming_the_field_and_nothing_is_written() {
    let root = Root::new();
    let d = Daemon::start(&root, DaemonOpts::default().no_drift_check());
    configure_free_ports(&d);
    let before = files(&root);
    let missing = root.path().join("absent.pem").display().to_string();
    let cases = [
        (json!({"bind_addresses": ["eth0"]}), "bind_addresses"),
        (json!({"rtc_udp_port": "9-1"}), "rtc_udp_port"),
        (json!({"stun_servers": ["stun.example.org"]}), "stun_servers"),
        (
            json!({"turn_servers": [{"host": "t.example.org", "port": 3478, "protocol": "quic", "secret": "s"}]}),
            "turn_servers",
        ),
        (json!({"turn_domain": "not a host"}), "turn_domain"),
        (json!({"turn_tls_port": 0}), "turn_tls_port"),
        (json!({"turn_cert_file": missing}), "turn_cert_file"),
        (
            json!({"turn_enabled": true, "turn_domain": "t.example.org"}),
            "turn_enabled",
        ),
        (json!({"webhook_urls": ["ftp://hooks.example.org"]}), "webhook_urls"),
        (json!({"room_enabled_codecs": ["video/theora"]}), "room_enabled_codecs"),
        (json!({"log_level": "trace"}), "log_level"),
        (
            json!({"prometheus_username": "u", "prometheus_password": "p"}),
            "prometheus_port",
        ),
        (json!({"region": "eu/west"}), "region"),
        (json!({"unset": ["not_a_setting"]}), "unset"),
    ];
    for (params, field) in cases {
        refused(&d, params, field);
    }
    // Ports collide across TURN and the others.
    let h = d.health();
    let port = h["livekit_url"]
        .as_str()
        .expect("url")
        .rsplit(':')
        .next()
        .expect("port")
        .to_string();
    refused(
        &d,
        json!({"prometheus_port": port.parse::<u16>().expect("port")}),
        "prometheus_port",
    );
    // Unknown parameters are refused too: there is no passthrough.
    let r = d.call("livekitservice.configure", json!({"debug_handler": 6060}));
    assert_eq!(r["error"]["code"], -32602, "{r}");
    assert_eq!(files(&root), before, "a refused configure writes nothing");
}

#[test]
fn webhook_api_key_is_the_active_key_through_rotation_and_hand_edits() {
    let root = Root::new();
    let d = Daemon::start(&root, DaemonOpts::double().no_drift_check());
    configure_free_ports(&d);
    d.ok(
        "livekitservice.configure",
        json!({
            "webhook_urls": ["https://hooks.example.org/lk"],
            // TLS for TURN ended by a proxy: the other TURN/TLS choice.
            "turn_enabled": true, "turn_domain": "turn.example.org", "turn_external_tls": true,
            "turn_tls_port": free_port(), "turn_udp_port": free_port()
        }),
    );
    let doc = yaml(&root);
    assert_eq!(doc["turn"]["external_tls"], true);
    let first = only_key(&doc);
    assert_eq!(doc["webhook"]["api_key"].as_str(), Some(first.as_str()));
    d.ok("livekitservice.start", json!({}));
    wait_ready(&d);

    // A credential rotation carries it along; the double (which refuses a
    // webhook key that is not in `keys`) comes back up on it.
    let r = d.ok("livekitservice.start", json!({"reset": true}));
    assert_eq!(r["rotated"], true);
    let doc = yaml(&root);
    let second = only_key(&doc);
    assert_ne!(first, second);
    assert_eq!(doc["webhook"]["api_key"].as_str(), Some(second.as_str()));
    wait_ready(&d);

    // A hand edit is drift like any other: named, then healed.
    let path = root.file("livekit.yaml");
    let text = std::fs::read_to_string(&path).expect("read");
    let edited = text.replace(&format!("api_key: \"{second}\""), "api_key: \"APIhandeditedkey\"");
    assert_ne!(edited, text);
    std::fs::write(&path, edited).expect("hand edit");
    let drift = wait_for(WAIT, "drift reported", || {
        let h = d.health();
        (h["consistent"] == false).then(|| h["drift"].clone())
    });
    assert_eq!(drift, json!(["livekit.yaml: webhook.api_key differs"]));
    let r = d.ok("livekitservice.start", json!({}));
    // `start` heals it, unless a background reconcile (a probe's) was
    // quicker; either way nothing but livekit.yaml is rewritten.
    if r["heal"]["written"] != json!([]) {
        assert_eq!(r["heal"]["drift"], json!(["livekit.yaml: webhook.api_key differs"]));
        assert_eq!(r["heal"]["written"], json!(["livekit.yaml"]));
    }
    assert_eq!(yaml(&root)["webhook"]["api_key"].as_str(), Some(second.as_str()));
    wait_ready(&d);
}

/// An install record of `version` for the binary at `bin`.
fn write_record(root: &Root, bin: &Path, version: &str) {
    let size = std::fs::metadata(bin).expect("binary").len();
    let record = json!({
        "version": version,
        "sha256": sha256_file(bin),
        "source": bin.display().to_string(),
        "installed_unix_ms": 0,
        "size": size,
    });
    std::fs::create_dir_all(root.state()).expect("state dir");
    std::fs::set_permissions(root.state(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    std::fs::write(root.file("install.json"), record.to_string()).expect("record");
}

#[test]
fn an_older_install_leaves_newer_keys_out_and_refuses_them_naming_the_version() {
    let root = Root::new();
    let installed = double_claiming(&root.path().join("bin/livekit-server"), "1.7.0");
    write_record(&root, &installed, "1.7.0");
    let d = Daemon::start(&root, DaemonOpts::default());
    configure_free_ports(&d);
    assert_eq!(d.health()["binary"]["target_version"], "1.7.0");

    let prom = free_port();
    d.ok("livekitservice.configure", json!({"prometheus_port": prom}));
    let doc = yaml(&root);
    assert_eq!(
        doc["prometheus_port"].as_u64(),
        Some(u64::from(prom)),
        "the form 1.7.0 reads"
    );
    assert!(doc.get("prometheus").is_none());
    let before = files(&root);
    let e = refused(
        &d,
        json!({"prometheus_username": "scraper", "prometheus_password": "pw"}),
        "prometheus_username",
    );
    let message = e["message"].as_str().expect("message");
    assert!(message.contains("1.7.1") && message.contains("1.7.0"), "{message}");
    assert_eq!(files(&root), before);
    // The 1.7.0 double, as strict as that release, starts on the rendering.
    d.ok("livekitservice.start", json!({}));
    wait_ready(&d);

    // A newer binary: livekit.yaml is rendered for it and livekit-server
    // restarted onto it by the install's reconcile.
    let newer = double_claiming(&root.path().join("stage/livekit-server"), "1.13.5");
    std::fs::write(format!("{}.version", installed.display()), "1.13.5").expect("sidecar follows the binary");
    let r = d.ok(
        "livekitservice.install",
        json!({"source": newer.display().to_string(), "version": "1.13.5", "force": true}),
    );
    assert!(
        r["heal"]["written"]
            .as_array()
            .expect("written")
            .contains(&json!("livekit.yaml")),
        "{r}"
    );
    let doc = yaml(&root);
    assert_eq!(doc["prometheus"]["port"].as_u64(), Some(u64::from(prom)));
    assert!(doc.get("prometheus_port").is_none());
    let h = wait_ready(&d);
    assert_eq!(h["binary"]["target_version"], "1.13.5");
    d.ok(
        "livekitservice.configure",
        json!({"prometheus_username": "scraper", "prometheus_password": "pw"}),
    );
}

#[test]
fn a_custom_binary_is_asked_its_version() {
    let root = Root::new();
    let custom = double_claiming(&root.path().join("custom/livekit-server"), "1.7.0");
    let d = Daemon::start(
        &root,
        DaemonOpts::default()
            .arg("--livekit-bin")
            .arg(custom.display().to_string()),
    );
    assert_eq!(d.health()["binary"]["target_version"], "1.7.0");
    refused(
        &d,
        json!({"prometheus_port": free_port(), "prometheus_username": "u", "prometheus_password": "p"}),
        "prometheus_username",
    );
}

#[test]
fn an_old_runtime_json_loads_with_the_defaults_and_keeps_its_credential() {
    let root = Root::new();
    let key = "APIlegacykey234";
    let secret = "legacySecretlegacySecretlegacySecret1234567";
    std::fs::create_dir_all(root.state()).expect("state dir");
    std::fs::set_permissions(root.state(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let legacy = json!({
        "api_key": key, "api_secret": secret, "domain": "media.example.org", "redis_address": "",
        "port": 7880, "rtc_tcp_port": 7881, "rtc_port_range_start": 50000, "rtc_port_range_end": 60000,
        "node_ip": "", "backend_port": 7890, "livekit_url": "ws://media.example.org:7880"
    });
    std::fs::write(
        root.file("runtime.json"),
        serde_json::to_vec_pretty(&legacy).expect("json"),
    )
    .expect("write");
    let d = Daemon::start(&root, DaemonOpts::default());
    let h = d.health();
    assert_eq!(h["consistent"], true, "{h}");
    assert_eq!(h["api_key"], key);
    let rt: Value = serde_json::from_slice(&std::fs::read(root.file("runtime.json")).expect("read")).expect("json");
    assert_eq!(rt["api_secret"], secret, "the credential survives the upgrade");
    assert_eq!(rt["domain"], "media.example.org");
    assert_eq!(rt["webhook_urls"], json!([]));
    assert_eq!(rt["log_level"], Value::Null);
}

fn cli(d: &Daemon, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(bin("hero_livekit"))
        .arg("--socket")
        .arg(&d.socket)
        .args(args)
        .output()
        .expect("run hero_livekit");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_cli_sets_lists_by_repeating_flags_and_config_show_hides_secrets() {
    let root = Root::new();
    let d = Daemon::start(&root, DaemonOpts::default());
    configure_free_ports(&d);
    let prom = free_port().to_string();
    let (ok, text) = cli(
        &d,
        &[
            "configure",
            "--webhook-urls",
            "https://a.example.org/wh",
            "--webhook-urls",
            "https://b.example.org/wh",
            "--rtc-udp-port",
            "7882-7892",
            "--log-json",
            "true",
            "--prometheus-port",
            &prom,
            "--prometheus-username",
            "scraper",
            "--prometheus-password",
            "cliPromPassword1",
        ],
    );
    assert!(ok, "{text}");
    let doc = yaml(&root);
    assert_eq!(doc["webhook"]["urls"].as_sequence().map(Vec::len), Some(2));
    assert_eq!(doc["rtc"]["udp_port"], "7882-7892");

    let (ok, table) = cli(&d, &["config", "show"]);
    assert!(ok, "{table}");
    assert!(!table.contains("cliPromPassword1"), "{table}");
    let line = |name: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().any(|w| w == name))
            .unwrap_or_else(|| panic!("{name} in {table}"))
            .to_string()
    };
    assert!(line("prometheus_password").starts_with("* ") && line("prometheus_password").ends_with("set"));
    assert!(line("log_level").starts_with("  ") && line("log_level").ends_with("info"));
    let (ok, json_text) = cli(&d, &["--json", "config", "show"]);
    assert!(ok, "{json_text}");
    let shown: Value = serde_json::from_str(&json_text).expect("config show --json");
    assert!(shown["settings"]
        .as_array()
        .expect("settings")
        .iter()
        .any(|s| s["name"] == "log_json" && s["differs"] == true));

    let (ok, text) = cli(&d, &["configure", "--unset", "webhook-urls", "--unset", "log-json"]);
    assert!(ok, "{text}");
    let doc = yaml(&root);
    assert!(doc.get("webhook").is_none() && doc["logging"].get("json").is_none());
    let (ok, text) = cli(&d, &["configure", "--unset", "api-secret"]);
    assert!(!ok && text.contains("must be one of"), "{text}");
}

#[test]
fn a_binary_replaced_by_hand_is_seen_by_the_periodic_check() {
    let root = Root::new();
    let custom = root.path().join("custom/livekit-server");
    double_claiming(&custom, "1.7.0");
    let d = Daemon::start(
        &root,
        DaemonOpts::default()
            .drift_check_ms(100)
            .arg("--livekit-bin")
            .arg(custom.display().to_string()),
    );
    configure_free_ports(&d);
    let prom = free_port();
    d.ok("livekitservice.configure", json!({"prometheus_port": prom}));
    assert_eq!(yaml(&root)["prometheus_port"].as_u64(), Some(u64::from(prom)));

    // Another build in its place (a new file, as a deploy tool writes it).
    let staged = double_claiming(&root.path().join("stage/livekit-server"), "1.13.5");
    std::fs::write(format!("{}.version", custom.display()), "1.13.5").expect("version file");
    std::fs::rename(&staged, &custom).expect("replace the binary");
    wait_for(WAIT, "livekit.yaml rendered for 1.13.5", || {
        let doc = yaml(&root);
        (doc["prometheus"]["port"].as_u64() == Some(u64::from(prom)) && doc.get("prometheus_port").is_none())
            .then_some(())
    });
    let h = wait_for(WAIT, "health names the new target", || {
        let h = d.health();
        (h["binary"]["target_version"] == "1.13.5" && h["consistent"] == true).then_some(h)
    });
    assert_eq!(h["drift"], json!([]));
}

fn runtime_json(root: &Root) -> Value {
    serde_json::from_slice(&std::fs::read(root.file("runtime.json")).expect("runtime.json")).expect("json")
}

#[test]
fn loopback_candidate_is_rendered_only_when_on_shown_and_its_drift_named() {
    let root = Root::new();
    let d = Daemon::start(&root, DaemonOpts::double().no_drift_check());
    configure_free_ports(&d);
    // Off, it is in neither file: the renderings of a config that does not
    // use it stay the bytes they were before the setting existed.
    assert!(yaml(&root)["rtc"].get("enable_loopback_candidate").is_none());
    assert!(runtime_json(&root).get("rtc_enable_loopback_candidate").is_none());

    let (ok, text) = cli(&d, &["configure", "--rtc-enable-loopback-candidate", "true"]);
    assert!(ok, "{text}");
    assert_eq!(yaml(&root)["rtc"]["enable_loopback_candidate"], true);
    assert_eq!(runtime_json(&root)["rtc_enable_loopback_candidate"], true);
    let shown = d.ok("livekitservice.config_show", json!({}));
    let row = shown["settings"]
        .as_array()
        .expect("settings")
        .iter()
        .find(|s| s["name"] == "rtc_enable_loopback_candidate")
        .cloned()
        .expect("row");
    assert_eq!(
        (&row["value"], &row["default"], &row["differs"], &row["livekit_key"]),
        (
            &json!(true),
            &json!(false),
            &json!(true),
            &json!("rtc.enable_loopback_candidate")
        )
    );
    // The strict double (livekit-server 1.13.5's schema) starts on it.
    d.ok("livekitservice.start", json!({}));
    wait_ready(&d);

    // A hand edit that drops it is drift, named by its key.
    let path = root.file("livekit.yaml");
    let text = std::fs::read_to_string(&path).expect("read");
    let edited = text.replace("  enable_loopback_candidate: true\n", "");
    assert_ne!(edited, text);
    std::fs::write(&path, edited).expect("hand edit");
    let drift = wait_for(WAIT, "drift reported", || {
        let h = d.health();
        (h["consistent"] == false).then(|| h["drift"].clone())
    });
    assert_eq!(drift, json!(["livekit.yaml: rtc.enable_loopback_candidate missing"]));
    d.ok("livekitservice.start", json!({}));
    assert_eq!(yaml(&root)["rtc"]["enable_loopback_candidate"], true);

    // Unset, it leaves both files again.
    let r = d.ok(
        "livekitservice.configure",
        json!({"unset": ["rtc_enable_loopback_candidate"]}),
    );
    assert_eq!(r["changed_fields"], json!(["rtc_enable_loopback_candidate"]), "{r}");
    assert!(yaml(&root)["rtc"].get("enable_loopback_candidate").is_none());
    assert!(runtime_json(&root).get("rtc_enable_loopback_candidate").is_none());
}

#[test]
fn loopback_candidate_is_refused_for_a_release_before_1_3_2() {
    let root = Root::new();
    let installed = double_claiming(&root.path().join("bin/livekit-server"), "1.3.1");
    write_record(&root, &installed, "1.3.1");
    let d = Daemon::start(&root, DaemonOpts::default());
    configure_free_ports(&d);
    let before = files(&root);
    let e = refused(
        &d,
        json!({"rtc_enable_loopback_candidate": true}),
        "rtc_enable_loopback_candidate",
    );
    let message = e["message"].as_str().expect("message");
    assert!(message.contains("1.3.2") && message.contains("1.3.1"), "{message}");
    assert_eq!(files(&root), before);
}
