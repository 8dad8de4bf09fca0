//! The child's environment is exactly its spec's: a `LIVEKIT_*` variable in
//! the daemon's environment would silently override livekit.yaml.
//!
//! Alone in its own test binary because it changes the process environment,
//! which must happen before any other thread exists.

mod supervise_common;

use std::collections::BTreeMap;
use std::time::Duration;

use hero_livekit_proto::ProcessName;
use hero_livekit_server::supervise::Child;
use supervise_common::*;

#[test]
fn livekit_variables_of_the_daemon_never_reach_the_child() {
    // SAFETY (edition 2021: safe fn): no other thread runs yet.
    std::env::set_var("LIVEKIT_KEYS", "APIparent: parent-secret-that-must-not-leak");
    std::env::set_var("LIVEKIT_PORT", "1");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let s = Scratch::new();
        let events = Events::default();
        let child = Child::new(ProcessName::LivekitServer, s.options(&events));
        let dump = s.path().join("env.json");
        let dump_arg = dump.to_str().expect("utf8").to_owned();
        let spec = s.spec(ProcessName::LivekitServer, free_port(), &["--dump-env", &dump_arg], "c");
        let wanted: BTreeMap<String, String> = spec.env.iter().cloned().collect();
        child.start(spec, Duration::from_secs(20)).await.expect("start");
        let text = std::fs::read_to_string(&dump).expect("child dumped its env before ready");
        let got: BTreeMap<String, String> = serde_json::from_str(&text).expect("json");
        assert!(!got.keys().any(|k| k.starts_with("LIVEKIT_")), "leaked: {got:?}");
        assert!(!text.contains("parent-secret"), "secret value leaked");
        assert_eq!(got, wanted, "exactly the spec's environment, nothing inherited");
        child.stop(Duration::from_secs(5)).await.expect("stop");
    });
}
