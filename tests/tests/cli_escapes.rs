//! The CLI never prints a raw control character from outside: a heartbeat
//! forged in a real `redis-server`, a child's log, a path quoted in the
//! daemon's error, each holding terminal escapes (`\x1b[2J`, `\x1b]0;...\x07`),
//! C1 and DEL, bidi and zero-width characters. The built `hero_livekit`
//! runs with its stdout and stderr on pipes (so without colour, and with
//! `NO_COLOR` besides), and the raw bytes of both are checked: nothing
//! below 0x20 but `\n` (and `\t` in `logs`), no DEL, no C1, no format
//! character; what was there shows as a visible `\u{..}`, and printable
//! Unicode (`é`, `中`) passes unchanged, in human output and in `--json`.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hero_livekit_tests::cluster::{Node, Redis, WAIT};
use hero_livekit_tests::observe::{poll, set_behaviour};
use hero_livekit_tests::*;
use serde_json::{json, Value};

/// The forged node's id and URL: a screen clear, a red forged row, a CSI in
/// its C1 form, a right-to-left override, a zero-width space, DEL, a tab;
/// a window-title sequence, a line separator and a BOM, around `é中`.
const EVIL_ID: &str = "evil\x1b[2J\x1b[31mFORGED\u{9b}\u{202e}\u{200b}\x7f\tx";
const EVIL_URL: &str = "ws://\x1b]0;pwned\x07é中\u{2028}\u{feff}:7880";
/// How they show: each character as a visible escape, the tab as a space.
const SHOWN_ID: &str = "evil\\u{1b}[2J\\u{1b}[31mFORGED\\u{9b}\\u{202e}\\u{200b}\\u{7f} x";
const SHOWN_URL: &str = "ws://\\u{1b}]0;pwned\\u{7}é中\\u{2028}\\u{feff}:7880";

/// `hero_livekit --root <root> <args>` with colour off and an environment
/// that cannot point it elsewhere.
fn cli(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin("hero_livekit"));
    c.arg("--root")
        .arg(root)
        .args(args)
        .env_remove("PATH_ROOT")
        .env_remove("HERO_SOCKET_DIR")
        .env_remove("HERO_LIVEKIT_CLUSTER_TOKEN")
        .env("NO_COLOR", "1");
    c
}

fn run(root: &Path, args: &[&str]) -> Output {
    cli(root, args).output().expect("run hero_livekit")
}

fn show(o: &Output) -> String {
    format!(
        "exit: {}\n--- stdout\n{:?}\n--- stderr\n{:?}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Format characters (Unicode Cf) and separators (Zl, Zp) that reorder or
/// hide text: the bidi controls and isolates, zero-width characters, word
/// joiners and invisible operators, BOM, soft hyphen, Arabic letter mark,
/// tags.
fn is_format(c: char) -> bool {
    matches!(c,
        '\u{ad}' | '\u{61c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}'
        | '\u{e0001}' | '\u{e0020}'..='\u{e007f}')
}

/// `bytes` is UTF-8 holding nothing a terminal acts on: no byte below 0x20
/// but `\n` (and `\t` when `tabs`), no DEL, no C1, no format character.
fn assert_inert(bytes: &[u8], tabs: bool, what: &str) {
    let text = std::str::from_utf8(bytes).unwrap_or_else(|e| panic!("{what}: not UTF-8 ({e}): {bytes:?}"));
    for (i, c) in text.char_indices() {
        let allowed = c == '\n' || (tabs && c == '\t');
        let control = c < ' ' || c == '\x7f' || ('\u{80}'..='\u{9f}').contains(&c);
        assert!(
            allowed || !(control || is_format(c)),
            "{what}: raw U+{:04X} at byte {i} in\n{text:?}",
            u32::from(c)
        );
    }
}

fn assert_both_inert(o: &Output, tabs: bool, what: &str) {
    assert_inert(&o.stdout, tabs, &format!("{what} stdout"));
    assert_inert(&o.stderr, false, &format!("{what} stderr"));
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A heartbeat written straight into Redis, as anyone with write access to
/// it could: `cluster status`, `health` and their `--json` print it (or,
/// once heartbeats are authenticated, leave it out) without a raw control
/// character.
#[test]
fn a_forged_heartbeat_is_printed_cleaned() {
    let redis = Redis::start();
    let node = Node::start(200);
    node.join(&redis.address(), "esc", None);
    let own_id = node.health()["cluster"]["node_id"]
        .as_str()
        .expect("a node id once joined")
        .to_string();

    // Under the key names of `cluster::remote` (`Keys`), a heartbeat as
    // JSON, unsealed, from an hour ahead so that it never looks stale: a
    // daemon that lists only sealed, checked heartbeats leaves it out, one
    // that does not lists it; either way nothing raw may reach the
    // terminal.
    let beat = json!({"id": EVIL_ID, "generation": 999, "livekit_url": EVIL_URL, "at_ms": now_ms() + 3_600_000});
    redis.cli(&[
        "SET",
        &format!("hero_livekit:{{esc}}:node:{EVIL_ID}"),
        &beat.to_string(),
        "PX",
        "600000",
    ]);
    redis.cli(&["SADD", "hero_livekit:{esc}:nodes", EVIL_ID]);

    // The node reads the members at each of its beats: after two of its
    // own beats it has seen the forged one, listed it or refused it. Each
    // beat writes another value (a new time; sealed, a new nonce).
    let own_key = format!("hero_livekit:{{esc}}:node:{own_id}");
    let beat_at = || redis.cli(&["GET", &own_key]);
    let mut seen = vec![beat_at()];
    let listed = wait_for(WAIT, "the node to list the forged beat or beat twice past it", || {
        let listed = node.health()["cluster"]["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["id"] == EVIL_ID));
        let at = beat_at();
        if seen.last() != Some(&at) {
            seen.push(at);
        }
        (listed || seen.len() >= 3).then_some(listed)
    });
    eprintln!("the forged heartbeat is listed: {listed}");

    let root = node.root.path();
    let status = run(root, &["cluster", "status"]);
    assert!(status.status.success(), "{}", show(&status));
    assert_both_inert(&status, false, "cluster status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.starts_with("cluster "), "the human layout:\n{}", show(&status));
    assert!(text.contains(&own_id), "{}", show(&status));
    if listed {
        let row = text
            .lines()
            .find(|l| l.starts_with(SHOWN_ID))
            .unwrap_or_else(|| panic!("the forged row, cleaned:\n{}", show(&status)));
        assert!(row.contains(SHOWN_URL), "{row:?}");
        assert_eq!(
            text.lines().count(),
            text.lines().filter(|l| !l.is_empty()).count() + 1,
            "one blank line only (before the table): no row forged by a line break\n{text}"
        );
    }

    let health = run(root, &["health"]);
    assert_both_inert(&health, false, "health");
    assert!(
        String::from_utf8_lossy(&health.stdout).starts_with("status "),
        "the human layout:\n{}",
        show(&health)
    );

    for args in [&["cluster", "status", "--json"][..], &["health", "--json"][..]] {
        let o = run(root, args);
        assert_both_inert(&o, false, &args.join(" "));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&o)));
        let nodes = if args[0] == "health" {
            &v["cluster"]["nodes"]
        } else {
            &v["nodes"]
        };
        let forged = nodes.as_array().and_then(|n| n.iter().find(|n| n["id"] == EVIL_ID));
        assert_eq!(forged.is_some(), listed, "{args:?}: {v}");
        if let Some(f) = forged {
            // JSON carries the text as it is, escaped; `é中` as UTF-8.
            assert_eq!(f["livekit_url"], EVIL_URL);
            assert!(String::from_utf8_lossy(&o.stdout).contains("é中"), "{}", show(&o));
        }
    }
}

/// A line in livekit-server's log with escapes: `logs` prints it with its
/// tab and every other control as a visible escape, `--json` as JSON, and
/// `logs --follow` cleans what it copies from the file.
#[test]
fn a_childs_log_is_printed_cleaned() {
    let root = Root::new();
    let d = Daemon::start(&root, DaemonOpts::double());
    configure_free_ports(&d);
    d.ok("livekitservice.start", json!({}));
    let path = d.ok("livekitservice.logs", json!({"process": "livekit-server"}))["path"]
        .as_str()
        .expect("the log's path")
        .to_string();
    let raw = "forged\x1b[2J\x1b]0;title\x07\ttabbed\u{9b}\u{202e}é中\u{7f}\u{2029}";
    let shown = "forged\\u{1b}[2J\\u{1b}]0;title\\u{7}\ttabbed\\u{9b}\\u{202e}é中\\u{7f}\\u{2029}";
    let append = |line: &str| {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open the child's log");
        f.write_all(format!("{line}\n").as_bytes()).expect("append to the log");
    };
    append(raw);

    let logs = run(root.path(), &["logs", "livekit-server", "-n", "200"]);
    assert!(logs.status.success(), "{}", show(&logs));
    assert_both_inert(&logs, true, "logs");
    let text = String::from_utf8_lossy(&logs.stdout);
    assert!(text.lines().any(|l| l == shown), "{shown:?} in\n{}", show(&logs));

    let json = run(root.path(), &["logs", "livekit-server", "-n", "200", "--json"]);
    assert_both_inert(&json, false, "logs --json");
    let v: Value = serde_json::from_slice(&json.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&json)));
    assert!(
        v["lines"].as_array().is_some_and(|l| l.iter().any(|l| l == raw)),
        "the line as it is: {v}"
    );

    // `--follow` copies the file's new bytes: appended until it prints one
    // (a line written before it took the file's size is in neither part).
    let mut follow = cli(root.path(), &["logs", "livekit-server", "-n", "1", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hero_livekit logs --follow");
    let mut stdout = follow.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    // A CRLF line too: the daemon's tail drops the `\r`, the copy shows it.
    let marker = format!("follow-marker {raw}\r");
    let marker_shown = format!("follow-marker {shown}\\u{{d}}\n");
    let mut out = Vec::new();
    let deadline = Instant::now() + WAIT;
    let mut next_append = Instant::now();
    while !String::from_utf8_lossy(&out).contains(&marker_shown) {
        assert!(
            Instant::now() < deadline,
            "logs --follow printed {:?}",
            String::from_utf8_lossy(&out)
        );
        if Instant::now() >= next_append {
            append(&marker);
            next_append = Instant::now() + Duration::from_millis(500);
        }
        if let Ok(chunk) = rx.recv_timeout(Duration::from_millis(100)) {
            out.extend(chunk);
        }
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(follow.id()).expect("a pid")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("stop logs --follow");
    let _ = follow.wait();
    reader.join().expect("the reader thread");
    out.extend(rx.try_iter().flatten());
    let mut err = Vec::new();
    if let Some(mut e) = follow.stderr.take() {
        let _ = e.read_to_end(&mut err);
    }
    assert_inert(&out, true, "logs --follow stdout");
    assert_inert(&err, false, "logs --follow stderr");
}

/// The daemon quotes the source it could not install: with escapes in the
/// file's name, the `error:` and `hint:` lines show them escaped, and
/// `--json` carries the message as it is.
#[test]
fn an_error_quoting_outside_text_is_printed_cleaned() {
    let root = Root::new();
    let _d = Daemon::start(&root, DaemonOpts::double());
    let dir = tempfile::tempdir().expect("a directory");
    let name = "evil\x1b[2J\x1b]0;t\x07\u{202e}\u{9b}é中\nhint: forged.tar.gz";
    let source = dir.path().join(name);
    std::fs::write(&source, b"not a tarball, not an executable").expect("write the source");
    let source = source.to_str().expect("a UTF-8 path");

    let o = run(root.path(), &["install", "--source", source]);
    assert!(!o.status.success(), "{}", show(&o));
    assert_both_inert(&o, false, "install");
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("error: ") && l.contains("evil\\u{1b}[2J\\u{1b}]0;t\\u{7}\\u{202e}\\u{9b}é中")),
        "the error, cleaned:\n{}",
        show(&o)
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("hint: ")).count(),
        1,
        "one hint line, none forged by the name's line break:\n{}",
        show(&o)
    );

    let o = run(root.path(), &["--json", "install", "--source", source]);
    assert!(!o.status.success(), "{}", show(&o));
    assert_both_inert(&o, false, "install --json");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&o)));
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(name), "the message as it is: {v}");
}

/// A child that fails at start, its log holding escapes: `restart`'s error,
/// `health`'s log tail under the failed row and `events` print them
/// cleaned.
#[test]
fn a_failed_childs_log_tail_and_events_are_printed_cleaned() {
    let root = Root::new();
    let d = Daemon::start(&root, DaemonOpts::double());
    configure_free_ports(&d);
    d.ok("livekitservice.start", json!({}));
    let path = d.ok("livekitservice.logs", json!({"process": "livekit-server"}))["path"]
        .as_str()
        .expect("the log's path")
        .to_string();

    let mut events = cli(root.path(), &["events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hero_livekit events");
    let mut events_out = events.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = events_out.read_to_end(&mut all);
        all
    });

    let raw = "last words\x1b[2J\x1b]0;title\x07\u{202e}\u{9b}é中";
    let shown = "last words\\u{1b}[2J\\u{1b}]0;title\\u{7}\\u{202e}\\u{9b}é中";
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open the child's log");
    f.write_all(format!("{raw}\n").as_bytes()).expect("append to the log");
    set_behaviour(&root, &json!({"exit_at_start": true, "exit_code": 0}));

    // The restart's child exits at once: the daemon refuses with its log
    // tail in the message.
    let restart = run(root.path(), &["restart", "--process", "livekit-server"]);
    assert!(!restart.status.success(), "{}", show(&restart));
    assert_both_inert(&restart, false, "restart");
    assert!(
        String::from_utf8_lossy(&restart.stderr).contains(shown),
        "the log tail in the error, cleaned:\n{}",
        show(&restart)
    );

    let mut last = Value::Null;
    let failed = poll(WAIT, || {
        last = d.health();
        (last["processes"]["livekit-server"]["state"] == "failed").then_some(())
    });
    assert!(failed.is_some(), "livekit-server failed: {last}");
    let health = run(root.path(), &["health"]);
    assert_both_inert(&health, false, "health");
    let text = String::from_utf8_lossy(&health.stdout);
    assert!(text.starts_with("status "), "the human layout:\n{}", show(&health));
    assert!(
        text.lines().any(|l| l == format!("  | {shown}")),
        "the log tail, cleaned:\n{}",
        show(&health)
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(events.id()).expect("a pid")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("stop events");
    let _ = events.wait();
    let out = reader.join().expect("the reader thread");
    let mut err = Vec::new();
    if let Some(mut e) = events.stderr.take() {
        let _ = e.read_to_end(&mut err);
    }
    assert_inert(&out, false, "events stdout");
    assert_inert(&err, false, "events stderr");
    assert!(
        String::from_utf8_lossy(&out).lines().any(|l| l.starts_with('#')),
        "events were printed: {:?}",
        String::from_utf8_lossy(&out)
    );
}
