//! The writer half of the crash-consistency test
//! (`tests/tests/crash_consistency.rs`): replaces the credential in a state
//! directory exactly as the daemon does (boot plan, then a plan with the new
//! credential, then `apply`), so the test can stop it at every fault point
//! (`HERO_LIVEKIT_FAULT`) and with SIGKILL at random moments.

use std::path::PathBuf;

use hero_livekit_server::config::{plan, Credential, Secret, StateDir};

/// Set by the test: the state directory and the new credential.
const CHILD_DIR: &str = "HERO_LIVEKIT_CRASH_CHILD_DIR";
const CHILD_KEY: &str = "HERO_LIVEKIT_CRASH_CHILD_KEY";
const CHILD_SECRET: &str = "HERO_LIVEKIT_CRASH_CHILD_SECRET";

fn main() {
    // An aborting child must not leave a core file per run.
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads the struct we pass and touches no memory of ours.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
    let dir = std::env::var_os(CHILD_DIR).expect("run by tests/crash_consistency.rs, which sets the state dir");
    let key = std::env::var(CHILD_KEY).expect("parent sets the new key");
    let secret = std::env::var(CHILD_SECRET).expect("parent sets the new secret");
    let sd = StateDir::new(PathBuf::from(dir));
    let boot = plan(None, &sd.observe(), false).expect("boot plan");
    let mut next = boot.config;
    next.set_credential(Credential {
        api_key: key,
        api_secret: Secret::new(secret),
    });
    let change = plan(Some(&next), &sd.observe(), false).expect("plan");
    sd.apply(&change).expect("apply");
}
