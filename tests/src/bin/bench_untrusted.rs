//! Benchmark: a cluster member under what anyone who can write its Redis
//! can put there (issue 21): 5,000 forged members with 1 KiB heartbeats, a
//! 20 MiB value in the credential key, and a flood of 20,000 messages on
//! the channel. Each is measured against the same daemon before the load,
//! in the same run: `health` p50 (one connection per call, as a script
//! calls it), the daemon's CPU over a window, its RSS, and the record reads
//! the flood costs (`INFO commandstats`).
//!
//! Targets: `health` p50 within 2x of the baseline, RSS within +4 MiB, at
//! most 200 record reads for the flood. Exits non-zero when one fails.
//!
//! Run: `cargo build --release --workspace --bins && target/release/bench-untrusted`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use hero_livekit_tests::cluster::{Node, Redis};
use hero_livekit_tests::observe::poll;
use hero_livekit_tests::{cpu_ticks, rpc, rss_kib};
use serde_json::{json, Value};

const CALLS: usize = 2000;
const CPU_WINDOW: Duration = Duration::from_secs(5);
/// The cluster's poll: short, so that the window sees rounds over the load.
const POLL_MS: u64 = 1000;
const FLOOD: u64 = 20_000;
const MAX_READS: u64 = 200;
const WAIT: Duration = Duration::from_secs(60);

struct Figures {
    p50: Duration,
    cpu_pct: f64,
    rss_kib: u64,
}

fn measure(n: &Node) -> Figures {
    let socket = n.root.socket();
    let mut v = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let t = Instant::now();
        let r = rpc(&socket, "livekitservice.health", json!({}));
        v.push(t.elapsed());
        assert!(r.get("result").is_some(), "health answered: {r}");
    }
    v.sort();
    let pid = n.d.pid();
    let ticks = cpu_ticks(pid);
    let t = Instant::now();
    std::thread::sleep(CPU_WINDOW);
    // Clock ticks are 1/100 s on Linux.
    let cpu_pct = (cpu_ticks(pid) - ticks) as f64 / t.elapsed().as_secs_f64();
    Figures {
        p50: v[v.len() / 2],
        cpu_pct,
        rss_kib: rss_kib(pid),
    }
}

fn cluster(n: &Node) -> Value {
    n.health()["cluster"].clone()
}

fn report(what: &str, f: &Figures, base: &Figures) -> bool {
    let ratio = f.p50.as_secs_f64() / base.p50.as_secs_f64();
    let grew = f.rss_kib.saturating_sub(base.rss_kib);
    println!(
        "{what:<28} health p50 {:>7.3} ms ({ratio:.2}x)  CPU {:>5.2}%  RSS {:>6} KiB (+{grew} KiB)",
        f.p50.as_secs_f64() * 1e3,
        f.cpu_pct,
        f.rss_kib
    );
    let ok = ratio <= 2.0 && grew <= 4 * 1024;
    if !ok {
        println!("  FAILED: p50 within 2x and RSS within +4 MiB");
    }
    ok
}

fn main() -> ExitCode {
    let redis = Redis::start();
    let n = Node::start(POLL_MS);
    n.join(&redis.address(), "bench", None);
    poll(WAIT, || (cluster(&n)["state"] == "joined").then_some(())).expect("joined");
    let base = measure(&n);
    let mut ok = report("baseline", &base, &base);

    redis.forge_members("bench", 5000);
    poll(WAIT, || {
        cluster(&n)["error"]
            .as_str()
            .is_some_and(|e| e.contains("sample"))
            .then_some(())
    })
    .expect("the forged members seen");
    ok &= report("5,000 forged members", &measure(&n), &base);

    redis.cli(&[
        "EVAL",
        "redis.call('SET', KEYS[1], string.rep('x', tonumber(ARGV[1]))) return 0",
        "1",
        "hero_livekit:{bench}:credential",
        "20971520",
    ]);
    poll(WAIT, || (cluster(&n)["state"] == "conflict").then_some(())).expect("the oversized record seen");
    ok &= report("+ a 20 MiB record", &measure(&n), &base);

    let before = redis.calls("getrange");
    let t = Instant::now();
    redis.cli(&[
        "EVAL",
        "for i = 1, tonumber(ARGV[1]) do redis.call('PUBLISH', KEYS[1], '9') end return 0",
        "1",
        "hero_livekit:{bench}:changed",
        &FLOOD.to_string(),
    ]);
    // The flood is over once a round ran after it: one more message, and
    // the reads stop growing.
    let mut last = 0;
    poll(WAIT, || {
        std::thread::sleep(Duration::from_millis(500));
        let now = redis.calls("getrange");
        let settled = now == last;
        last = now;
        settled.then_some(())
    })
    .expect("the flood absorbed");
    let reads = redis.calls("getrange") - before;
    let flood_ok = reads <= MAX_READS;
    println!(
        "{FLOOD} messages flood          {reads} record reads in {:.1} s (target at most {MAX_READS})",
        t.elapsed().as_secs_f64()
    );
    ok &= flood_ok;
    ok &= report("+ the flood", &measure(&n), &base);
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
