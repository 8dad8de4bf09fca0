//! The token chain end to end: the daemon supervises the livekit-server test
//! double and the real lk-backend. A token lk-backend signs must be accepted
//! by the server, must verify independently (LiveKit's Python SDK and the
//! Rust token library) with the key and secret `livekit.yaml` holds, and
//! must keep doing so through the field failure (stale, mismatched
//! `runtime.json` and `backend.env`) once the supervisor has healed it.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use hero_livekit_tests::lk::{
    env_credential, http_tcp, json_credential, loopback_addr, mint, post_token_as, post_token_raw, rtc_validate,
    verify_with_python, yaml_credential,
};
use hero_livekit_tests::observe::poll;
use hero_livekit_tests::*;
use livekit_api::access_token::TokenVerifier;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use sha2::Digest;

const DEADLINE: Duration = Duration::from_secs(30);

/// A daemon on `root` with both children running and ready on free ports.
fn running_service(root: &Root, env: &[(&str, &str)]) -> Daemon {
    let d = Daemon::start(
        root,
        DaemonOpts {
            with_double: true,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        },
    );
    configure_free_ports(&d);
    let r = d.ok("livekitservice.start", json!({"timeout_ms": 30000}));
    assert_eq!(r["ready_for_tokens"], true, "start: {r}");
    d
}

/// `(backend_url, livekit_url)` from health.
fn urls(d: &Daemon) -> (String, String) {
    let h = d.health();
    (
        h["backend_url"].as_str().expect("backend_url").to_string(),
        h["livekit_url"].as_str().expect("livekit_url").to_string(),
    )
}

fn token_of(v: &Value) -> &str {
    v["token"].as_str().expect("token in response")
}

/// A valid credential no other part of the system knows: a key in LiveKit's
/// `API...` shape and a 64-character secret, different on every call.
fn stale_credential(tag: &str) -> (String, String) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let seed = format!(
        "{tag}-{}-{}-{:?}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
    );
    let h = hex::encode(sha2::Sha256::digest(seed.as_bytes()));
    (format!("APIstale{}", &h[..7]), h)
}

/// What an old supervisor left behind: `runtime.json` and `backend.env`
/// agreeing on `cred` while `livekit.yaml` (read by the running server)
/// holds another. Every other field is kept as it was.
fn write_stale_runtime_and_env(root: &Root, cred: &(String, String)) {
    let rt = root.file("runtime.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&rt).expect("read runtime.json")).expect("JSON");
    v["api_key"] = json!(cred.0);
    v["api_secret"] = json!(cred.1);
    std::fs::write(&rt, serde_json::to_vec_pretty(&v).expect("serialize")).expect("write runtime.json");
    write_stale_env(root, cred);
}

fn write_stale_env(root: &Root, cred: &(String, String)) {
    use hero_livekit_proto::envfile;
    let path = root.file("backend.env");
    let text = std::fs::read_to_string(&path).expect("read backend.env");
    let vars = envfile::parse(&text).expect("backend.env parses");
    let mut out = String::from("# left behind by an older supervisor\n");
    for (k, v) in vars {
        let v = match k.as_str() {
            "LIVEKIT_API_KEY" => cred.0.clone(),
            "LIVEKIT_API_SECRET" => cred.1.clone(),
            _ => v,
        };
        out.push_str(&envfile::render_line(&k, &v));
    }
    std::fs::write(&path, out).expect("write backend.env");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

fn pid_of(d: &Daemon, process: &str) -> u64 {
    d.health()["processes"][process]["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("{process} has a pid"))
}

#[test]
fn a_backend_token_is_accepted_by_livekit_server_and_verifies_with_the_yaml_credential() {
    let root = Root::new();
    let d = running_service(&root, &[]);
    let (backend_url, livekit_url) = urls(&d);

    let issued = mint(&backend_url, "e2e-room", "alice");
    let token = token_of(&issued);
    assert_eq!(rtc_validate(&livekit_url, token), (200, "success".to_string()));

    // The credential livekit-server was given, read from its own file.
    let (key, secret) = yaml_credential(&root.file("livekit.yaml"));
    assert_eq!(issued["api_key"], key.as_str());
    assert_eq!(d.health()["api_key"], key.as_str());

    // (a) LiveKit's Python SDK, a second implementation of the check.
    let (code, claims) = verify_with_python(&key, &secret, token);
    assert_eq!(code, 0, "python TokenVerifier refused the token: {claims}");
    assert_eq!(claims["identity"], "alice");
    assert_eq!(claims["room"], "e2e-room");
    assert_eq!(claims["room_join"], true);
    // ... and it can refuse: the same token under another secret.
    let (other_key, other_secret) = stale_credential("py");
    let (code, answer) = verify_with_python(&key, &other_secret, token);
    assert_eq!(code, 1, "{answer}");
    assert_eq!(answer["error"], "InvalidSignatureError");

    // (b) LiveKit's Rust token library.
    let claims = TokenVerifier::with_api_key(&key, &secret)
        .verify(token)
        .unwrap_or_else(|e| panic!("rust TokenVerifier refused the token: {e:?}"));
    assert_eq!(claims.iss, key);
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.video.room, "e2e-room");
    assert!(claims.video.room_join);
    assert!(TokenVerifier::with_api_key(&key, &other_secret).verify(token).is_err());
    assert!(TokenVerifier::with_api_key(&other_key, &secret).verify(token).is_err());
}

#[test]
fn stale_mismatched_files_make_livekit_refuse_tokens_until_start_heals_them() {
    let root = Root::new();
    // The periodic drift check and the periodic token-chain probe would
    // heal the hand-written files on their own within seconds; pushed out
    // so that `start` is what heals here (the probe still runs after every
    // change the daemon sees, which a SIGHUP is not).
    let d = running_service(
        &root,
        &[
            ("HERO_LIVEKIT_DRIFT_CHECK_MS", "600000"),
            ("HERO_LIVEKIT_TOKEN_PROBE_MS", "600000"),
        ],
    );
    let (backend_url, livekit_url) = urls(&d);
    let original = yaml_credential(&root.file("livekit.yaml"));
    let server_pid = pid_of(&d, "livekit-server");

    // Both ways lk-backend's credential can disagree with the server's: a
    // key the server does not know, and the right key with another secret.
    let (other_key, other_secret) = stale_credential("field");
    let cases = [
        (
            (other_key.clone(), other_secret.clone()),
            format!("invalid API key: {other_key}"),
        ),
        (
            (original.0.clone(), other_secret),
            // livekit-server 1.13.5 echoes the refused token whole.
            "invalid token: <JWT>, error: token signature is invalid: signature is invalid".to_string(),
        ),
    ];
    for (stale, livekit_says) in cases {
        write_stale_runtime_and_env(&root, &stale);
        // The old tooling reloads lk-backend (it re-reads backend.env on
        // SIGHUP): it now signs with the stale secret. Not `restart`, which
        // heals the files before restarting a child.
        let backend_pid = pid_of(&d, "lk-backend");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(backend_pid as i32), Signal::SIGHUP)
            .expect("SIGHUP lk-backend");
        let verifier = TokenVerifier::with_api_key(&stale.0, &stale.1);
        wait_for(DEADLINE, "lk-backend to sign with the stale credential", || {
            verifier
                .verify(token_of(&mint(&backend_url, "room-1", "bob")))
                .is_ok()
                .then_some(())
        });
        let h = d.health();
        assert_eq!(h["consistent"], false, "health sees the drift: {h}");
        assert_eq!(h["ready_for_tokens"], false, "{h}");
        assert!(!h["drift"].as_array().expect("drift").is_empty(), "{h}");

        // The field failure: a token is issued, and LiveKit refuses it.
        let issued = mint(&backend_url, "room-1", "bob");
        assert_eq!(issued["api_key"], stale.0.as_str());
        let token = token_of(&issued);
        let (status, text) = rtc_validate(&livekit_url, token);
        assert_eq!((status, text), (401, livekit_says.replace("<JWT>", token)));

        // The heal: files rewritten from the in-memory config, the reader
        // of the changed file restarted, and tokens accepted again. `start`
        // heals, unless a reconcile queued behind an earlier call (by a
        // probe that ran during it) came first: either way the files are
        // healed and lk-backend is restarted onto them by the time `start`
        // answers.
        let r = d.ok("livekitservice.start", json!({"timeout_ms": 30000}));
        let written: Vec<&str> = r["heal"]["written"]
            .as_array()
            .expect("written")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        if written.is_empty() {
            assert_ne!(pid_of(&d, "lk-backend"), backend_pid, "lk-backend restarted: {r}");
        } else {
            assert_eq!(written, ["runtime.json", "backend.env"], "{r}");
            assert_eq!(r["processes"]["lk-backend"], "restarted", "{r}");
        }
        assert_eq!(r["processes"]["livekit-server"], "already_running", "{r}");
        assert_eq!(r["ready_for_tokens"], true, "{r}");

        let fresh = mint(&backend_url, "room-1", "bob");
        assert_eq!(
            rtc_validate(&livekit_url, token_of(&fresh)),
            (200, "success".to_string())
        );
        // The credential kept is the one livekit-server runs with, not the
        // hand-written one; and the server was never restarted for it.
        assert_eq!(fresh["api_key"], original.0.as_str());
        assert_eq!(yaml_credential(&root.file("livekit.yaml")), original);
        assert_eq!(json_credential(&root.file("runtime.json")), original);
        assert_eq!(env_credential(&root.file("backend.env")), original);
        assert_eq!(pid_of(&d, "livekit-server"), server_pid);
        let h = d.health();
        assert_eq!(
            (h["consistent"].clone(), h["api_key"].clone()),
            (json!(true), json!(original.0))
        );
    }
}

#[test]
fn a_new_daemon_heals_a_stale_backend_env_at_boot() {
    let root = Root::new();
    let mut d = running_service(&root, &[]);
    let original = yaml_credential(&root.file("livekit.yaml"));
    d.ok("livekitservice.stop", json!({}));
    d.kill9();

    // runtime.json and livekit.yaml agree; backend.env holds another credential.
    let stale = stale_credential("boot");
    write_stale_env(&root, &stale);

    let d = Daemon::start(&root, DaemonOpts::double());
    // Healed before the socket answered: to runtime.json's credential.
    let h = d.health();
    assert_eq!(h["consistent"], true, "{h}");
    assert_eq!(h["api_key"], original.0.as_str());
    assert_eq!(env_credential(&root.file("backend.env")), original);
    assert_eq!(json_credential(&root.file("runtime.json")), original);
    assert_eq!(yaml_credential(&root.file("livekit.yaml")), original);

    let r = d.ok("livekitservice.start", json!({"timeout_ms": 30000}));
    assert_eq!(r["ready_for_tokens"], true, "{r}");
    let (backend_url, livekit_url) = urls(&d);
    let issued = mint(&backend_url, "after-boot", "carol");
    assert_eq!(issued["api_key"], original.0.as_str());
    assert_eq!(
        rtc_validate(&livekit_url, token_of(&issued)),
        (200, "success".to_string())
    );
}

#[test]
fn a_new_daemon_does_not_leave_an_adopted_lk_backend_signing_with_a_stale_secret() {
    let root = Root::new();
    let mut d = running_service(&root, &[]);
    let (backend_url, livekit_url) = urls(&d);
    let original = yaml_credential(&root.file("livekit.yaml"));
    let backend_pid = pid_of(&d, "lk-backend");
    // The daemon dies; its children keep running (they are adopted later).
    d.kill9();

    // Meanwhile the old tooling rewrote backend.env and reloaded lk-backend
    // (it re-reads the file on SIGHUP): it now signs with a stale secret.
    let stale = stale_credential("adopt");
    write_stale_env(&root, &stale);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(backend_pid as i32), Signal::SIGHUP).expect("SIGHUP lk-backend");
    wait_for(DEADLINE, "lk-backend to sign with the stale key", || {
        (mint(&backend_url, "r", "dave")["api_key"] == stale.0.as_str()).then_some(())
    });
    let (status, _) = rtc_validate(&livekit_url, token_of(&mint(&backend_url, "r", "dave")));
    assert_eq!(status, 401, "reproduced: the server refuses the stale token");

    let d = Daemon::start(&root, DaemonOpts::double());
    // Whenever health says tokens can be issued, they must be accepted.
    wait_for(DEADLINE, "ready_for_tokens after boot", || {
        (d.health()["ready_for_tokens"] == true).then_some(())
    });
    let issued = mint(&backend_url, "r", "dave");
    assert_eq!(issued["api_key"], original.0.as_str());
    assert_eq!(
        rtc_validate(&livekit_url, token_of(&issued)),
        (200, "success".to_string())
    );
    assert_eq!(env_credential(&root.file("backend.env")), original);
}

#[test]
fn bad_token_requests_through_the_supervised_backend_get_json_errors_naming_the_field() {
    let root = Root::new();
    let d = running_service(&root, &[]);
    let (backend_url, livekit_url) = urls(&d);
    let backend_pid = pid_of(&d, "lk-backend");

    let big = json!({"room": "r", "identity": "i", "metadata": "m".repeat(70 * 1024)}).to_string();
    let cases: Vec<(&str, Vec<u8>, u16, &str, &str)> = vec![
        (
            "missing room",
            br#"{"identity":"i"}"#.to_vec(),
            400,
            "missing_field",
            "room",
        ),
        (
            "null room",
            br#"{"room":null,"identity":"i"}"#.to_vec(),
            400,
            "missing_field",
            "room",
        ),
        (
            "missing identity",
            br#"{"room":"r"}"#.to_vec(),
            400,
            "missing_field",
            "identity",
        ),
        (
            "empty identity",
            br#"{"room":"r","identity":""}"#.to_vec(),
            400,
            "invalid_value",
            "identity",
        ),
        (
            "empty room",
            br#"{"room":"","identity":"i"}"#.to_vec(),
            400,
            "invalid_value",
            "room",
        ),
        (
            "room as number",
            br#"{"room":7,"identity":"i"}"#.to_vec(),
            400,
            "invalid_type",
            "room",
        ),
        (
            "identity as object",
            br#"{"room":"r","identity":{}}"#.to_vec(),
            400,
            "invalid_type",
            "identity",
        ),
        (
            "can_publish as string",
            br#"{"room":"r","identity":"i","can_publish":"yes"}"#.to_vec(),
            400,
            "invalid_type",
            "can_publish",
        ),
        (
            "ttl as string",
            br#"{"room":"r","identity":"i","ttl_seconds":"60"}"#.to_vec(),
            400,
            "invalid_type",
            "ttl_seconds",
        ),
        (
            "negative ttl",
            br#"{"room":"r","identity":"i","ttl_seconds":-1}"#.to_vec(),
            400,
            "invalid_type",
            "ttl_seconds",
        ),
        (
            "ttl too short",
            br#"{"room":"r","identity":"i","ttl_seconds":59}"#.to_vec(),
            400,
            "invalid_value",
            "ttl_seconds",
        ),
        (
            "ttl too long",
            br#"{"room":"r","identity":"i","ttl_seconds":86401}"#.to_vec(),
            400,
            "invalid_value",
            "ttl_seconds",
        ),
        (
            "unknown field",
            br#"{"room":"r","identity":"i","ttl":60}"#.to_vec(),
            400,
            "unknown_field",
            "ttl",
        ),
        ("not JSON", b"{room: r}".to_vec(), 400, "invalid_json", "body"),
        ("an array", br#"["r","i"]"#.to_vec(), 400, "invalid_type", "body"),
        ("oversized body", big.into_bytes(), 413, "payload_too_large", "body"),
    ];
    for (what, body, status, kind, field) in cases {
        let r = post_token_raw(&backend_url, &body);
        assert_eq!(r.status, status, "{what}: {}", String::from_utf8_lossy(&r.body));
        assert!(
            r.headers
                .to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{what}: {}",
            r.headers
        );
        let v = r.json();
        assert_eq!(v["error"], kind, "{what}: {v}");
        let message = v["message"].as_str().expect("message");
        assert!(message.starts_with(&format!("{field}: ")), "{what}: {message}");
    }

    // An oversized body without a declared length (chunked) is cut off at
    // the limit too, not read to the end.
    let chunk = "x".repeat(70 * 1024);
    let (mint_secret, _) = backend_token(&d);
    let req = format!(
        "POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {mint_secret}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    let r = http_tcp(&loopback_addr(&backend_url), req.as_bytes());
    assert_eq!(r.status, 413, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"], "payload_too_large");

    // None of it hurt the backend: same process, and it still signs good tokens.
    assert_eq!(pid_of(&d, "lk-backend"), backend_pid);
    let issued = mint(&backend_url, "r", "i");
    assert_eq!(
        rtc_validate(&livekit_url, token_of(&issued)),
        (200, "success".to_string())
    );
}

#[test]
fn cli_token_prints_a_token_that_validates_and_the_whole_response_with_json() {
    let root = Root::new();
    let d = running_service(&root, &[]);
    let (_, livekit_url) = urls(&d);
    let (key, secret) = yaml_credential(&root.file("livekit.yaml"));

    let cli = |json: bool| {
        let mut cmd = Command::new(bin("hero_livekit"));
        cmd.arg("--root").arg(root.path());
        if json {
            cmd.arg("--json");
        }
        let out = cmd
            .args(["token", "--room", "cli-room", "--identity", "cli-user"])
            .output()
            .expect("run hero_livekit token");
        assert!(
            out.status.success(),
            "hero_livekit token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    };

    let plain = cli(false);
    let token = plain.trim();
    // The daemon's own mint secret, obtained by the CLI as any allowed
    // service obtains it, is what got it a token: without it, nothing.
    let backend_url = urls(&d).0;
    let refused = post_token_as(&backend_url, None, br#"{"room":"cli-room","identity":"cli-user"}"#);
    assert_eq!(refused.status, 401);
    assert_eq!(plain.lines().count(), 1, "only the token on stdout: {plain:?}");
    assert_eq!(rtc_validate(&livekit_url, token), (200, "success".to_string()));
    let claims = TokenVerifier::with_api_key(&key, &secret)
        .verify(token)
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        (claims.sub.as_str(), claims.video.room.as_str()),
        ("cli-user", "cli-room")
    );

    let v: Value = serde_json::from_str(&cli(true)).expect("--json prints JSON");
    let mut fields: Vec<&str> = v.as_object().expect("object").keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["api_key", "expires_at", "token", "url"], "{v}");
    assert_eq!(v["api_key"], key.as_str());
    assert_eq!(v["url"], livekit_url.as_str());
    assert_eq!(rtc_validate(&livekit_url, token_of(&v)), (200, "success".to_string()));
    // expires_at is the token's own `exp`: LiveKit's default lifetime of 6 h.
    let exp = TokenVerifier::with_api_key(&key, &secret)
        .verify(token_of(&v))
        .unwrap_or_else(|e| panic!("{e:?}"))
        .exp as u64;
    assert_eq!(v["expires_at"].as_u64(), Some(exp), "{v}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    assert!(
        (now + 6 * 3600 - 120..=now + 6 * 3600 + 120).contains(&exp),
        "exp {exp}, now {now}"
    );
}

/// `MINT_SECRET` of a `backend.env`, read with lk-backend's own parser.
fn env_mint_secret(backend_env: &std::path::Path) -> String {
    let text = std::fs::read_to_string(backend_env).expect("read backend.env");
    let vars = hero_livekit_proto::envfile::parse(&text).expect("backend.env parses");
    hero_livekit_proto::envfile::get(&vars, "MINT_SECRET")
        .expect("MINT_SECRET in backend.env")
        .to_string()
}

fn backend_token(d: &Daemon) -> (String, String) {
    let r = d.ok("livekitservice.backend_token", json!({}));
    (
        r["mint_secret"].as_str().expect("mint_secret").to_string(),
        r["token_url"].as_str().expect("token_url").to_string(),
    )
}

#[test]
fn only_a_caller_with_the_mint_secret_gets_a_token_and_everyone_else_401_and_nothing_else() {
    let root = Root::new();
    let d = running_service(&root, &[]);
    let (backend_url, livekit_url) = urls(&d);
    let (mint_secret, token_url) = backend_token(&d);
    assert_eq!(token_url, format!("{backend_url}/token"));
    assert_eq!(
        mint_secret,
        env_mint_secret(&root.file("backend.env")),
        "the secret lk-backend runs with"
    );
    assert_eq!(mint_secret.len(), 64, "hex of HMAC-SHA256");
    let (_, api_secret) = yaml_credential(&root.file("livekit.yaml"));
    assert_ne!(mint_secret, api_secret, "not the API secret itself");
    let env = root.file("backend.env");
    assert_eq!(
        std::fs::metadata(&env).expect("backend.env").permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(root.state()).expect("state dir").permissions().mode() & 0o777,
        0o700
    );

    let body = br#"{"room":"r1","identity":"mallory"}"#;
    let wrong = format!("{}0", &mint_secret[..63]);
    for bearer in [None, Some(wrong.as_str()), Some(api_secret.as_str()), Some("")] {
        let r = post_token_as(&backend_url, bearer, body);
        assert_eq!(r.status, 401, "{bearer:?}: {}", String::from_utf8_lossy(&r.body));
        let text = String::from_utf8_lossy(&r.body).to_string();
        let answer: Value = serde_json::from_str(&text).expect("a JSON error");
        assert_eq!(answer["error"], "unauthorized", "{answer}");
        assert!(
            answer.get("token").is_none() && !text.contains("eyJ"),
            "no token: {text}"
        );
        assert!(!text.contains(&mint_secret[..16]), "no hint of the secret: {text}");
    }
    let issued = post_token_as(&backend_url, Some(&mint_secret), body);
    assert_eq!(issued.status, 200, "{}", String::from_utf8_lossy(&issued.body));
    assert_eq!(
        rtc_validate(&livekit_url, token_of(&issued.json())),
        (200, "success".to_string())
    );

    // A rotation rotates it: the old one mints nothing, the new one is served.
    d.ok("livekitservice.start", json!({"reset": true, "timeout_ms": 30000}));
    let (rotated, _) = backend_token(&d);
    assert_ne!(rotated, mint_secret);
    let served = poll(DEADLINE, || {
        let r = post_token_as(&backend_url, Some(&rotated), body);
        (r.status == 200).then_some(r)
    });
    assert!(served.is_some(), "the new mint secret is in force");
    assert_eq!(post_token_as(&backend_url, Some(&mint_secret), body).status, 401);
    assert_eq!(
        wait_ready(&d)["ready_for_tokens"],
        true,
        "the probe presents the new one"
    );
}

fn wait_ready(d: &Daemon) -> Value {
    let mut last = Value::Null;
    poll(DEADLINE, || {
        last = d.health();
        (last["ready_for_tokens"] == true).then(|| last.clone())
    })
    .unwrap_or_else(|| panic!("not ready_for_tokens: {last}"))
}

#[test]
fn a_backend_env_with_another_mint_secret_is_drift_and_is_healed() {
    let root = Root::new();
    let d = running_service(&root, &[("HERO_LIVEKIT_DRIFT_CHECK_MS", "200")]);
    let (mint_secret, _) = backend_token(&d);
    let env = root.file("backend.env");
    let text = std::fs::read_to_string(&env).expect("read backend.env");
    let forged = "f".repeat(64);
    std::fs::write(&env, text.replace(&mint_secret, &forged)).expect("write backend.env");
    std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let seen = poll(DEADLINE, || {
        let h = d.health();
        h["drift"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "backend.env: MINT_SECRET differs"))
            .then_some(h)
    });
    // The tick may heal before a health call sees the drift; either way the
    // file ends up with the derived secret again and lk-backend runs it.
    let _ = seen;
    let healed = poll(DEADLINE, || {
        (env_mint_secret(&env) == mint_secret && d.health()["ready_for_tokens"] == true).then_some(())
    });
    assert!(healed.is_some(), "backend.env healed: {}", d.health());
    let (backend_url, _) = urls(&d);
    assert_eq!(
        post_token_as(&backend_url, Some(&forged), b"{\"room\":\"r\",\"identity\":\"i\"}").status,
        401
    );
    assert_eq!(
        post_token_as(&backend_url, Some(&mint_secret), b"{\"room\":\"r\",\"identity\":\"i\"}").status,
        200
    );
}

#[test]
fn the_mint_secret_is_for_full_access_peers_only() {
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    let root = Root::new();
    let public = tempfile::Builder::new()
        .prefix("hero_livekit_sock")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(public.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let socket = public.path().join("hero_livekit_server/rpc.sock");
    let d = Daemon::start(
        &root,
        DaemonOpts::double()
            .arg("--socket")
            .arg(socket.display().to_string())
            .arg("--socket-group")
            .arg("65534"),
    );
    d.ok("livekitservice.configure", json!({}));
    let (mint_secret, _) = backend_token(&d);
    // A `--socket-group` member (read-only access) asks.
    let as_nobody = |method: &str| -> Value {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": {}}).to_string();
        let request = format!(
            "POST /rpc HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let script = "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\ns.sendall(sys.stdin.buffer.read())\nd=b''\nwhile True:\n  c=s.recv(65536)\n  if not c: break\n  d+=c\nsys.stdout.buffer.write(d)\n";
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&socket)
            .uid(65534)
            .gid(65534)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn python3 as nobody");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(request.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("wait");
        parse_http(&out.stdout).json()
    };
    let r = as_nobody("livekitservice.backend_token");
    assert_eq!(r["error"]["data"]["kind"], "unauthorized", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("it returns a secret")),
        "{r}"
    );
    assert!(!r.to_string().contains(&mint_secret), "{r}");
    for m in ["livekitservice.health", "livekitservice.config_show"] {
        let r = as_nobody(m);
        assert!(r.get("result").is_some(), "{m} is readable: {r}");
        assert!(!r.to_string().contains(&mint_secret), "{m}: {r}");
    }
    let doc = rpc(&socket, "rpc.discover", json!({}));
    let entry = doc["result"]["methods"]
        .as_array()
        .expect("methods")
        .iter()
        .find(|m| m["name"] == "livekitservice.backend_token")
        .cloned()
        .expect("documented");
    assert_eq!(entry["x-access"], "mutating", "{entry}");
}

#[test]
fn the_mint_secret_never_shows_in_health_events_logs_metrics_or_errors() {
    let root = Root::new();
    let d = running_service(&root, &[]);
    let (mint_secret, _) = backend_token(&d);
    // Events across a change that restarts lk-backend, a probe and a refusal.
    let events_file = root.path().join("events.out");
    let mut events = Command::new(bin("hero_livekit"))
        .arg("--root")
        .arg(root.path())
        .args(["--json", "events"])
        .stdout(std::fs::File::create(&events_file).expect("events file"))
        .spawn()
        .expect("run hero_livekit events");
    d.ok(
        "livekitservice.configure",
        json!({"public_url": "wss://media.example.org"}),
    );
    wait_ready(&d);
    let restarted = poll(DEADLINE, || {
        let text = std::fs::read_to_string(&events_file).unwrap_or_default();
        text.contains("lk-backend").then_some(text)
    });
    assert!(restarted.is_some(), "the events saw lk-backend restart");
    let bad = d.call(
        "livekitservice.configure",
        json!({"public_url": format!("wss://{mint_secret}@x")}),
    );
    assert_eq!(bad["error"]["data"]["field"], "public_url", "{bad}");
    let mut seen = vec![
        ("health", d.health().to_string()),
        ("config_show", d.ok("livekitservice.config_show", json!({})).to_string()),
        ("refused configure", bad.to_string()),
        (
            "metrics",
            String::from_utf8_lossy(&get(&root.socket(), "/metrics").body).to_string(),
        ),
        ("daemon log", d.stderr()),
    ];
    for log in ["lk-backend.log", "livekit-server.log"] {
        let path = root.state().join("logs").join(log);
        seen.push((log, std::fs::read_to_string(&path).unwrap_or_default()));
    }
    let cli = Command::new(bin("hero_livekit"))
        .arg("--root")
        .arg(root.path())
        .args(["token", "--room", "r", "--identity", "i"])
        .output()
        .expect("run hero_livekit token");
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    seen.push(("token stdout", String::from_utf8_lossy(&cli.stdout).to_string()));
    seen.push(("token stderr", String::from_utf8_lossy(&cli.stderr).to_string()));
    let _ = events.kill();
    let _ = events.wait();
    seen.push(("events", std::fs::read_to_string(&events_file).expect("events")));
    for (what, text) in &seen {
        assert!(!text.contains(&mint_secret), "the mint secret shows in {what}");
    }
    assert!(seen[0].1.contains("ready_for_tokens"), "health was read");
}

#[test]
fn a_public_url_is_handed_to_clients_while_the_probe_keeps_reaching_the_local_server() {
    let root = Root::new();
    let d = running_service(&root, &[]);
    let (backend_url, livekit_url) = urls(&d);
    let before = ["runtime.json", "livekit.yaml", "backend.env"].map(|f| std::fs::read(root.file(f)).expect("read"));
    // Refused: -32602 naming the field and the rule; nothing changes.
    for bad in [
        "https://media.example.org",
        "wss://user:pw@media.example.org",
        "wss://media.example.org/rtc",
        "wss://media.example.org?x=1",
    ] {
        let r = d.call("livekitservice.configure", json!({"public_url": bad}));
        assert_eq!(r["error"]["code"], -32602, "{bad}: {r}");
        assert_eq!(r["error"]["data"]["field"], "public_url", "{bad}: {r}");
        let after = ["runtime.json", "livekit.yaml", "backend.env"].map(|f| std::fs::read(root.file(f)).expect("read"));
        assert!(after == before, "{bad} changed a file");
    }
    let lk_pid = pid_of(&d, "livekit-server");

    // Set through the CLI flag, as the proxy recipe does.
    let out = Command::new(bin("hero_livekit"))
        .arg("--root")
        .arg(root.path())
        .args(["configure", "--public-url", "wss://media.example.org"])
        .output()
        .expect("run hero_livekit configure");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(root.file("backend.env")).expect("read backend.env");
    assert!(text.contains("LIVEKIT_URL=\"wss://media.example.org\"\n"), "{text}");
    let runtime: Value =
        serde_json::from_slice(&std::fs::read(root.file("runtime.json")).expect("read")).expect("JSON");
    assert_eq!(runtime["public_url"], "wss://media.example.org");
    assert_eq!(
        std::fs::read(root.file("livekit.yaml")).expect("read"),
        before[1],
        "livekit.yaml untouched"
    );
    let h = wait_ready(&d);
    assert_eq!(
        pid_of(&d, "livekit-server"),
        lk_pid,
        "livekit-server is not restarted for it"
    );
    assert_eq!(
        h["livekit_url"],
        livekit_url.as_str(),
        "health's livekit_url stays the node's own address"
    );
    let shown = d.ok("livekitservice.config_show", json!({}));
    let row = shown["settings"]
        .as_array()
        .expect("settings")
        .iter()
        .find(|s| s["name"] == "public_url")
        .cloned()
        .expect("public_url shown");
    assert_eq!(
        (row["value"].clone(), row["differs"].clone()),
        (json!("wss://media.example.org"), json!(true))
    );

    // What clients get: the public URL, from lk-backend and from the CLI.
    let issued = poll(DEADLINE, || {
        let v = mint(&backend_url, "r", "i");
        (v["url"] == "wss://media.example.org").then_some(v)
    })
    .expect("lk-backend hands out the public URL");
    assert_eq!(
        rtc_validate(&livekit_url, token_of(&issued)),
        (200, "success".to_string())
    );
    let out = Command::new(bin("hero_livekit"))
        .arg("--root")
        .arg(root.path())
        .args(["token", "--room", "r", "--identity", "i"])
        .output()
        .expect("run hero_livekit token");
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("url: wss://media.example.org"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Unset: back to the derived URL.
    d.ok("livekitservice.configure", json!({"unset": ["public_url"]}));
    let text = std::fs::read_to_string(root.file("backend.env")).expect("read backend.env");
    assert!(text.contains(&format!("LIVEKIT_URL=\"{livekit_url}\"\n")), "{text}");
    let runtime = std::fs::read_to_string(root.file("runtime.json")).expect("read");
    assert!(!runtime.contains("public_url"), "{runtime}");
    wait_ready(&d);
    let v = poll(DEADLINE, || {
        let v = mint(&backend_url, "r", "i");
        (v["url"] == livekit_url.as_str()).then_some(v)
    });
    assert!(v.is_some(), "the derived URL again");
}

#[test]
fn a_public_url_survives_a_daemon_restart() {
    let root = Root::new();
    let mut d = running_service(&root, &[]);
    d.ok(
        "livekitservice.configure",
        json!({"public_url": "wss://media.example.org:8443"}),
    );
    let hash = d.health()["in_memory_hash"].clone();
    d.signal(Signal::SIGTERM);
    d.wait_exit(DEADLINE);
    let d = Daemon::start(&root, DaemonOpts::double());
    let h = d.health();
    assert_eq!(h["in_memory_hash"], hash, "the same config after boot");
    assert_eq!(h["consistent"], true, "{h}");
    let shown = d.ok("livekitservice.config_show", json!({}));
    assert!(shown.to_string().contains("wss://media.example.org:8443"), "{shown}");
}
