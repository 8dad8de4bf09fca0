//! SPEC section 5's "given" through the real daemon: an empty value keeps a
//! setting, a template is refused in every field, a placeholder word is
//! refused for the credential and stored everywhere else. Each case was
//! once answered `ok` with nothing stored.

use hero_livekit_tests::*;
use serde_json::{json, Value};

const FILES: [&str; 3] = ["runtime.json", "livekit.yaml", "backend.env"];

fn files(root: &Root) -> Vec<Vec<u8>> {
    FILES
        .iter()
        .map(|f| std::fs::read(root.file(f)).expect("read"))
        .collect()
}

fn runtime_json(root: &Root) -> Value {
    serde_json::from_slice(&std::fs::read(root.file("runtime.json")).expect("runtime.json")).expect("json")
}

fn yaml(root: &Root) -> serde_yaml::Value {
    serde_yaml::from_slice(&std::fs::read(root.file("livekit.yaml")).expect("livekit.yaml")).expect("yaml")
}

/// A daemon with a config of its own and a (never contacted) Redis address,
/// so that the Redis password is rendered.
fn daemon(root: &Root) -> Daemon {
    let d = Daemon::start(root, DaemonOpts::default().no_drift_check());
    configure_free_ports(&d);
    d.ok(
        "livekitservice.configure",
        json!({"redis_address": format!("127.0.0.1:{}", free_port())}),
    );
    d
}

/// Asserts -32602 naming `field` with `why` in the message, the value not
/// echoed, and the files untouched.
fn refused(d: &Daemon, root: &Root, params: Value, field: &str, why: &str) {
    let before = files(root);
    let r = d.call("livekitservice.configure", params.clone());
    let e = &r["error"];
    assert_eq!(e["code"], -32602, "{params}: {r}");
    let message = e["message"].as_str().expect("message");
    assert!(message.contains(&format!("{field}: ")), "{params}: {message}");
    assert!(message.contains(why), "{params}: {message}");
    let value = params[field].as_str().expect("a string param");
    assert!(!message.contains(value), "the value is not echoed: {message}");
    assert_eq!(files(root), before, "{params} changed a file");
}

#[test]
fn a_redis_password_that_looks_like_a_placeholder_is_stored() {
    let root = Root::new();
    let d = daemon(&root);
    for password in ["secret", "xxxxxxxxxxxx"] {
        let r = d.ok("livekitservice.configure", json!({"redis_password": password}));
        assert_eq!(r["changed_fields"], json!(["redis_password"]), "{password}: {r}");
        assert_eq!(runtime_json(&root)["redis_password"], password);
        assert_eq!(yaml(&root)["redis"]["password"], password);
    }
    let r = d.ok(
        "livekitservice.configure",
        json!({"prometheus_port": free_port(), "prometheus_username": "scraper", "prometheus_password": "changeme"}),
    );
    assert!(
        r["changed_fields"]
            .as_array()
            .expect("changed")
            .contains(&json!("prometheus_password")),
        "{r}"
    );
    assert_eq!(yaml(&root)["prometheus"]["password"], "changeme");
}

#[test]
fn an_empty_value_keeps_every_setting() {
    let root = Root::new();
    let d = daemon(&root);
    d.ok(
        "livekitservice.configure",
        json!({"redis_password": "realRedisPassword1"}),
    );
    let before = files(&root);
    let r = d.ok(
        "livekitservice.configure",
        json!({"api_key": "", "api_secret": "", "domain": "", "redis_address": "", "redis_password": "", "node_ip": " ", "region": "", "rtc_udp_port": ""}),
    );
    assert_eq!(r["changed_fields"], json!([]), "{r}");
    assert_eq!(files(&root), before);
}

#[test]
fn a_placeholder_credential_is_refused_naming_the_field() {
    let root = Root::new();
    let d = daemon(&root);
    refused(
        &d,
        &root,
        json!({"api_secret": "changeme"}),
        "api_secret",
        "placeholder",
    );
    refused(&d, &root, json!({"api_key": "devkey"}), "api_key", "placeholder");
    refused(
        &d,
        &root,
        json!({"api_secret": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}),
        "api_secret",
        "placeholder",
    );
}

#[test]
fn a_template_is_refused_in_every_field_naming_it() {
    let root = Root::new();
    let d = daemon(&root);
    refused(&d, &root, json!({"domain": "${DOMAIN}"}), "domain", "template");
    refused(
        &d,
        &root,
        json!({"redis_address": "${REDIS}:6379"}),
        "redis_address",
        "template",
    );
    refused(
        &d,
        &root,
        json!({"redis_password": "${REDIS_PASSWORD}"}),
        "redis_password",
        "template",
    );
    refused(
        &d,
        &root,
        json!({"prometheus_password": "<password>"}),
        "prometheus_password",
        "template",
    );
    refused(
        &d,
        &root,
        json!({"api_secret": "<your-api-secret>"}),
        "api_secret",
        "template",
    );
    refused(&d, &root, json!({"region": "${REGION}"}), "region", "template");
}
