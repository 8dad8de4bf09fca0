//! The OpenRPC document and the daemon's real method table are one list:
//! a method added to one and not the other fails here.

use std::collections::BTreeSet;

use hero_livekit_proto::{method, openrpc, METHODS};
use hero_livekit_server::paths::Paths;
use hero_livekit_server::service::{LivekitService, ServiceOptions};

#[tokio::test]
async fn openrpc_document_equals_the_registered_method_table() {
    let root = tempfile::tempdir().expect("tempdir");
    let paths = Paths::with(root.path().to_path_buf(), root.path().join("rpc.sock"));
    let service = LivekitService::boot(ServiceOptions {
        paths,
        livekit_bin: None,
        backend_bin: None,
        stop_timeout: None,
    })
    .await
    .expect("boot on an empty root");
    let module = hero_livekit_server::rpc::module(service.clone()).expect("module");

    let registered: BTreeSet<String> = module.method_names().map(str::to_string).collect();
    let doc = openrpc::document();
    let mut documented: BTreeSet<String> = doc["methods"]
        .as_array()
        .expect("methods")
        .iter()
        .map(|m| m["name"].as_str().expect("name").to_string())
        .collect();
    // The unsubscribe method is part of the subscription's description.
    documented.insert(method::UNSUBSCRIBE_EVENTS.to_string());
    assert_eq!(registered, documented);
    assert_eq!(METHODS.len() + 1, registered.len());
    service.shutdown(false).await;
}
