//! Benchmark: the cost of a heal that writes the triple (with its fsyncs),
//! of a no-op heal of a consistent triple (observe + plan + apply, which
//! must write and fsync nothing), and of the health path's stat-validated
//! check, each against reading the three files in the same run.
//!
//! Run: `cargo build --release --workspace --bins && target/release/bench-heal`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use hero_livekit_server::config::{self, FileCache, Rendered, StateDir, TripleFile};

const NOOP_RUNS: usize = 5_000;
const WRITE_RUNS: usize = 50;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    for _ in 0..runs / 10 {
        std::hint::black_box(f());
    }
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f());
                t.elapsed()
            })
            .collect(),
    )
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() -> ExitCode {
    let dir = tempfile::Builder::new()
        .prefix("hero_livekit_bench")
        .tempdir()
        .expect("tempdir");
    let state = dir.path().join("var/hero_livekit");
    let store = StateDir::new(state.clone());
    store.ensure().expect("state dir");
    let plan = config::plan(None, &store.observe(), false).expect("plan");
    store.apply(&plan).expect("first write");
    let cfg = plan.config.clone();

    let read3 = time(NOOP_RUNS, || {
        TripleFile::ALL.map(|f| std::fs::read(state.join(f.name())).expect("read"))
    });
    // As the daemon heals: against the in-memory config's renderings.
    let rendered = Rendered::new(cfg.clone());
    let noop = time(NOOP_RUNS, || {
        let p = config::plan_rendered(&rendered, &store.observe());
        assert!(p.writes.is_empty(), "consistent triple: nothing to write");
        store.apply(&p).expect("no-op apply")
    });
    let mut cache = FileCache::new(&state);
    let cached = time(NOOP_RUNS, || cache.check(&rendered).consistent);

    // A heal that rewrites all three files: garbage in each, then heal.
    let write = median(
        (0..WRITE_RUNS)
            .map(|_| {
                for f in TripleFile::ALL {
                    std::fs::write(state.join(f.name()), b"garbage").expect("garble");
                }
                let t = Instant::now();
                let p = config::plan_rendered(&rendered, &store.observe());
                let written = store.apply(&p).expect("heal");
                let d = t.elapsed();
                assert_eq!(written.len(), 3);
                d
            })
            .collect(),
    );

    println!("config triple heal costs (median; same run, same files)");
    println!("{:<48} {:>10}", "", "µs");
    println!("{:<48} {:>10.1}", "read the three files (baseline)", us(read3));
    println!(
        "{:<48} {:>10.1}",
        "no-op heal: observe + plan + apply, no write",
        us(noop)
    );
    println!(
        "{:<48} {:>10.1}",
        "health path: FileCache::check (inotify-gated)",
        us(cached)
    );
    println!(
        "{:<48} {:>10.1}",
        "heal writing all three files (fsync each + dir)",
        us(write)
    );
    let ratio = us(noop) / us(read3);
    let met = ratio <= 2.0;
    println!(
        "ratio no-op heal / read: {:.2}x (target <= 2x) {}; health check / read: {:.2}x",
        ratio,
        if met { "PASS" } else { "FAIL" },
        us(cached) / us(read3)
    );
    if met {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
