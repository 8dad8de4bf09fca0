//! Log rotation by copy-truncate while the child keeps writing through its
//! own O_APPEND descriptor.

mod supervise_common;

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use hero_livekit_proto::ProcessName;
use hero_livekit_server::supervise::{logs, Child};
use supervise_common::*;

/// The highest `spam line N` number in a file, if any.
fn last_line_number(path: &std::path::Path) -> Option<u64> {
    logs::tail(path, 3)
        .ok()?
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("spam line ")?.get(..9)?.parse().ok())
}

#[tokio::test]
async fn rotation_keeps_five_copies_and_the_child_keeps_writing_into_the_live_log() {
    let s = Scratch::new();
    let events = Events::default();
    let mut opts = s.options(&events);
    opts.log_max_bytes = 8 * 1024;
    opts.log_keep = 5;
    opts.log_check_interval = Duration::from_millis(20);
    let child = Child::new(ProcessName::LkBackend, opts);
    let spec = s.spec(ProcessName::LkBackend, free_port(), &["--spam-log"], "c");
    let log = spec.log_path.clone();
    child.start(spec, Duration::from_secs(20)).await.expect("start");
    let live_ino = std::fs::metadata(&log).expect("stat").ino();

    eventually(Duration::from_secs(60), "five rotated copies", || {
        logs::rotated_path(&log, 5).exists().then_some(())
    })
    .await;
    // One more rotation round, so the oldest copy had to fall off.
    let newest = last_line_number(&logs::rotated_path(&log, 1)).expect("numbered lines in .1");
    eventually(Duration::from_secs(60), "another rotation", || {
        (last_line_number(&logs::rotated_path(&log, 1))? > newest).then_some(())
    })
    .await;
    assert!(!logs::rotated_path(&log, 6).exists(), "only five kept");
    assert_eq!(std::fs::metadata(&log).expect("stat").ino(), live_ino, "same live file");

    // The child still writes into the live file, past what was rotated.
    let rotated = last_line_number(&logs::rotated_path(&log, 1)).expect("numbered lines");
    eventually(Duration::from_secs(30), "new lines in the live log", || {
        (last_line_number(&log)? > rotated).then_some(())
    })
    .await;
    // Copies are ordered newest first.
    let numbers: Vec<u64> = (1..=5)
        .map(|n| last_line_number(&logs::rotated_path(&log, n)).expect("numbered lines"))
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] > w[1]), "{numbers:?}");
    assert!(
        std::fs::metadata(&log).expect("stat").len() < 1024 * 1024,
        "live log bounded"
    );
    child.stop(Duration::from_secs(5)).await.expect("stop");
}
