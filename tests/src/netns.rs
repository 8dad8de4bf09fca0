//! A network namespace of the test's own, so that WebRTC (ICE candidates,
//! STUN, media) can only ever reach 127.0.0.0/8.
//!
//! The namespace has `lo` and one more interface, `lkm0`, carrying only
//! `127.0.0.2/32`. The second interface is there because LiveKit's realtime
//! SDK (libwebrtc, PyPI `livekit` 1.2.1) drops loopback adapters from ICE
//! gathering (the default `network_ignore_mask` is the loopback adapter
//! type, and the SDK has no option to change it): with `lo` alone, the
//! client gathers no candidate at all ("Machine has no networks; no ports
//! will be allocated") and every join times out. `lkm0` is one end of a
//! veth pair whose other end, `lkm1`, has no address; neither has IPv6, and
//! a /32 adds no route, so packets from 127.0.0.2 to 127.0.0.1 are
//! delivered locally through `lo` like any other loopback traffic: nothing
//! ever leaves the namespace, and no address outside 127/8 exists in it.
//!
//! livekit-server must also offer loopback candidates
//! (`rtc.enable_loopback_candidate: true`), with `rtc.use_external_ip:
//! false` and no STUN servers.
//!
//! Commands run inside with `ip netns exec NAME`, which enters the
//! namespace and then execs the program: the spawned child's pid is the
//! program's own. Unix sockets are files, so the daemon's socket is
//! reachable from the test (in the host namespace); TCP on 127.0.0.1 inside
//! is not, so whatever talks HTTP to the children runs inside too.

use std::ffi::OsStr;
use std::process::{Command, Stdio};

/// The address of the non-loopback interface ICE gathers on.
pub const MEDIA_ADDRESS: &str = "127.0.0.2";

/// A network namespace made for one test, deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Makes a namespace with a unique name and brings its interfaces up.
    ///
    /// # Panics
    /// When it cannot be made (not root, no `ip` from iproute2): a test that
    /// asked for one cannot run without it.
    pub fn new() -> Netns {
        let name = format!("hlk-{}-{}", std::process::id(), unique());
        run(Command::new("ip").args(["netns", "add", &name]), "ip netns add");
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns.ip(&["link", "add", "lkm0", "type", "veth", "peer", "name", "lkm1"]);
        for dev in ["lkm0", "lkm1"] {
            // No IPv6 link-local address: its candidates would travel the
            // veth instead of lo.
            ns.ip(&["link", "set", dev, "addrgenmode", "none"]);
        }
        ns.ip(&["addr", "add", &format!("{MEDIA_ADDRESS}/32"), "dev", "lkm0"]);
        ns.ip(&["link", "set", "lkm1", "up"]);
        ns.ip(&["link", "set", "lkm0", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Checks that the namespace is still sealed as made: every address in
    /// it is a loopback one (127.0.0.0/8 or ::1), and no packet was ever
    /// sent or received on the veth pair (all traffic, 127.0.0.2 to
    /// 127.0.0.1 included, went through `lo`). Panics naming what is not.
    pub fn assert_sealed(&self) {
        let out = self
            .command("ip")
            .args(["-o", "addr", "show"])
            .stdin(Stdio::null())
            .output()
            .expect("ip -o addr show inside the namespace");
        let text = String::from_utf8_lossy(&out.stdout);
        for line in text.lines() {
            let Some(addr) = line
                .split_whitespace()
                .skip_while(|w| *w != "inet" && *w != "inet6")
                .nth(1)
            else {
                continue;
            };
            assert!(
                addr.starts_with("127.") || addr == "::1/128",
                "a non-loopback address in the test's namespace: {line}"
            );
        }
        for (dev, counter) in [
            ("lkm0", "tx_packets"),
            ("lkm0", "rx_packets"),
            ("lkm1", "tx_packets"),
            ("lkm1", "rx_packets"),
        ] {
            let out = self
                .command("cat")
                .arg(format!("/sys/class/net/{dev}/statistics/{counter}"))
                .stdin(Stdio::null())
                .output()
                .expect("read an interface counter inside the namespace");
            let n = String::from_utf8_lossy(&out.stdout).trim().to_string();
            assert_eq!(n, "0", "{dev} {counter}: packets travelled the veth, not lo");
        }
    }

    /// `ip ARGS` inside the namespace; panics with its stderr on failure.
    fn ip(&self, args: &[&str]) {
        let mut c = self.command("ip");
        c.args(args);
        run(&mut c, &format!("ip {}", args.join(" ")));
    }
}

impl Default for Netns {
    fn default() -> Self {
        Netns::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes still inside keep the namespace alive until they exit;
        // the name goes now so that it is never left behind.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn run(c: &mut Command, what: &str) {
    let out = c
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run `ip` (iproute2): {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {} (network namespaces need root and iproute2)",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
