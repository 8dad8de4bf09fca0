//! The operator's CLI at its edges, end to end: the built `hero_livekit`
//! binary against real daemons. Every command line the README and
//! docs/operations.md show is accepted by the parser; output cut short by
//! its reader ends quietly; `events` fails when the daemon goes away; every
//! refusal prints `error:` and `hint:`; the tables line up; paths and roots
//! are what the operator meant; the daemon's own messages (the lock
//! refusal, Ctrl-C) are said once and say what happens to the children.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use hero_livekit_tests::*;
use nix::sys::signal::Signal;
use serde_json::json;

/// Generous: a loaded 2-core machine runs several daemons at once.
const PATIENCE: Duration = Duration::from_secs(60);

/// `hero_livekit <args>` with an environment that cannot point it elsewhere.
fn cli(args: &[&str]) -> Command {
    let mut c = Command::new(bin("hero_livekit"));
    c.args(args)
        .env_remove("PATH_ROOT")
        .env_remove("HERO_SOCKET_DIR")
        .env_remove("HERO_LIVEKIT_CLUSTER_TOKEN")
        .env("NO_COLOR", "1");
    c
}

/// `hero_livekit --root <root> <args>`, run to completion.
fn run(root: &Path, args: &[&str]) -> Output {
    let mut all = vec!["--root", root.to_str().expect("utf-8 root")];
    all.extend_from_slice(args);
    cli(&all).output().expect("run hero_livekit")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(o: &Output) -> String {
    format!(
        "exit: {}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    )
}

/// A refusal as the issue asks for it: non-zero, an `error:` line and a
/// `hint:` line on stderr, and no panic.
fn assert_refusal(o: &Output) {
    let err = text(&o.stderr);
    assert!(!o.status.success(), "refused:\n{}", show(o));
    assert!(
        err.lines().any(|l| l.starts_with("error: ")),
        "an error: line:\n{}",
        show(o)
    );
    assert!(
        err.lines().any(|l| l.starts_with("hint: ") && l.len() > "hint: ".len()),
        "a hint: line:\n{}",
        show(o)
    );
    assert!(!err.contains("panicked"), "{}", show(o));
}

/// A daemon on the test double with both children started on free ports.
fn started_daemon(root: &Root) -> Daemon {
    let d = Daemon::start(root, DaemonOpts::double());
    configure_free_ports(&d);
    d.ok("livekitservice.start", json!({}));
    d
}

// ---------------------------------------------------------------------
// The documents' command lines
// ---------------------------------------------------------------------

/// Every `hero_livekit ...` command line in a Markdown document: inside
/// fenced blocks (only the `$ ` lines of a block that shows a session, its
/// other lines being output) and inline code spans, wherever the command is
/// in command position (line start, after `$(`, a pipe or `&&`).
fn documented_commands(markdown: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut in_block = false;
    let mut block: Vec<&str> = Vec::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            if in_block {
                let session = block.iter().any(|l| l.starts_with("$ "));
                let mut joined = String::new();
                for l in &block {
                    let l = if session {
                        match l.strip_prefix("$ ") {
                            Some(cmd) => cmd,
                            None => continue,
                        }
                    } else {
                        l
                    };
                    // Continuation lines belong to the command above.
                    match l.strip_suffix('\\') {
                        Some(head) => joined.push_str(head),
                        None => {
                            joined.push_str(l);
                            commands_in(&joined, &mut found);
                            joined.clear();
                        }
                    }
                }
                block.clear();
            }
            in_block = !in_block;
            continue;
        }
        if in_block {
            block.push(line);
            continue;
        }
        // Inline spans: the text between pairs of backticks.
        for (i, span) in line.split('`').enumerate() {
            if i % 2 == 1 {
                commands_in(span, &mut found);
            }
        }
    }
    found
}

/// The `hero_livekit` commands of one shell line, each cut at the end of
/// its command (a comment, a pipe, `)`, `&&`, `;`).
fn commands_in(line: &str, found: &mut Vec<String>) {
    const CMD: &str = "hero_livekit ";
    let line = strip_comment(line);
    let mut from = 0;
    while let Some(i) = line[from..].find(CMD).map(|i| i + from) {
        from = i + CMD.len();
        let before = line[..i].trim_end();
        let in_position = before.is_empty()
            || ["$(", "|", "&&", ";", "sudo", "then", "="]
                .iter()
                .any(|p| before.ends_with(p))
            || before.ends_with("$(sudo");
        if !in_position {
            continue;
        }
        let rest = &line[i..];
        let end = rest
            .find(['|', ')', ';'])
            .filter(|_| !rest.contains('['))
            .unwrap_or(rest.len());
        let end = rest[..end].find("&&").unwrap_or(end);
        found.push(rest[..end].trim().to_string());
    }
}

fn strip_comment(line: &str) -> &str {
    match line.find(" #") {
        Some(i) => &line[..i],
        None => line,
    }
}

/// The words of a documented command as its shell would split them, the
/// documents' notation undone: `[...]` marks optional parts (kept),
/// `...` more of the same (dropped), quotes and `<...>` group.
fn words(cmd: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote = None;
    for c in cmd.chars() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            // `<its socket>`: one placeholder word.
            (None, '<') => quote = Some('>'),
            (Some(q), c) if c == q => quote = None,
            (None, ' ') => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            (None, '[' | ']') => {}
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out.retain(|w| w != "..." && w != "hero_livekit");
    out
}

/// Whether clap refused a placeholder the document wrote for a value
/// (`--port P`, `-n N`): the notation, not a flag the CLI lacks.
fn placeholder_value(stderr: &str) -> bool {
    stderr.contains("invalid value '")
        && stderr
            .split("invalid value '")
            .nth(1)
            .and_then(|r| r.split('\'').next())
            .is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
}

#[test]
fn every_command_line_the_readme_and_operations_show_is_accepted_by_the_parser() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut checked = 0;
    let mut refused = Vec::new();
    for doc in ["README.md", "docs/operations.md"] {
        let md = std::fs::read_to_string(repo.join(doc)).expect("read the document");
        let cmds = documented_commands(&md);
        assert!(cmds.len() >= 10, "{doc}: found only {cmds:?}");
        for cmd in cmds {
            let mut args = words(&cmd);
            args.push("--help".into());
            let o = cli(&args.iter().map(String::as_str).collect::<Vec<_>>())
                .output()
                .expect("run hero_livekit");
            checked += 1;
            let err = text(&o.stderr);
            if !o.status.success() && !placeholder_value(&err) {
                refused.push(format!("{doc}: `{cmd}`\n{err}"));
            }
        }
    }
    assert!(refused.is_empty(), "refused by the parser:\n{}", refused.join("\n"));
    assert!(checked >= 40, "only {checked} command lines checked");
}

#[test]
fn the_document_check_catches_a_flag_the_cli_lacks() {
    let cmds = documented_commands("```sh\nhero_livekit stop --process lk-backend   # no such flag\n```\n");
    assert_eq!(cmds, ["hero_livekit stop --process lk-backend"]);
    let mut args = words(&cmds[0]);
    args.push("--help".into());
    let o = cli(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .output()
        .expect("run hero_livekit");
    assert!(!o.status.success(), "{}", show(&o));
    assert!(!placeholder_value(&text(&o.stderr)));
}

// ---------------------------------------------------------------------
// Output cut short, events, refusals
// ---------------------------------------------------------------------

/// Runs a command whose stdout is a pipe already closed by its reader, as
/// `hero_livekit discover | head -0` would leave it.
fn run_into_closed_pipe(root: &Path, args: &[&str]) -> Output {
    let (reader, writer) = nix::unistd::pipe().expect("pipe");
    drop(reader);
    let mut all = vec!["--root", root.to_str().expect("utf-8 root")];
    all.extend_from_slice(args);
    let child = cli(&all)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hero_livekit");
    child.wait_with_output().expect("wait for hero_livekit")
}

#[test]
fn a_closed_pipe_ends_every_printing_command_quietly() {
    let root = Root::new();
    let d = started_daemon(&root);
    let mut cases: Vec<Vec<&str>> = vec![
        vec!["discover"],
        vec!["health"],
        vec!["--json", "health"],
        vec!["config", "show"],
        vec!["logs", "livekit-server"],
        vec!["configure"],
        vec!["start"],
        vec!["token", "--room", "r1", "--identity", "alice"],
        vec!["up", "--timeout-ms", "30000"],
    ];
    cases.push(vec!["restart", "--process", "lk-backend"]);
    for args in cases {
        let o = run_into_closed_pipe(root.path(), &args);
        let code = o.status.code();
        assert!(
            matches!(code, Some(0) | Some(141)),
            "{args:?} into a closed pipe: {}",
            show(&o)
        );
        assert!(!text(&o.stderr).contains("panicked"), "{args:?}: {}", show(&o));
    }
    drop(d);
}

#[test]
fn events_says_when_the_daemon_went_away_and_exits_non_zero() {
    let root = Root::new();
    let mut d = Daemon::start(&root, DaemonOpts::double());
    let out_path = root.path().join("events.out");
    let err_path = root.path().join("events.err");
    let mut events = cli(&["--root", root.path().to_str().expect("utf-8"), "events"])
        .stdout(std::fs::File::create(&out_path).expect("events stdout"))
        .stderr(std::fs::File::create(&err_path).expect("events stderr"))
        .spawn()
        .expect("run hero_livekit events");
    // Subscribed once a change made after it starts shows up in its output.
    wait_for(PATIENCE, "events to print a configure", || {
        configure_free_ports(&d);
        std::fs::read_to_string(&out_path)
            .ok()
            .filter(|t| t.contains("configured"))
    });
    d.signal(Signal::SIGTERM);
    d.wait_exit(PATIENCE);
    let status = wait_for(PATIENCE, "events to exit", || events.try_wait().ok().flatten());
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(!status.success(), "events exited {status}: {err}");
    assert!(
        err.contains("error: ") && err.contains("closed the event stream"),
        "{err}"
    );
    assert!(err.contains("hint: "), "{err}");
}

#[test]
fn a_token_refused_by_lk_backend_prints_error_and_hint() {
    let root = Root::new();
    let _d = started_daemon(&root);
    let o = run(
        root.path(),
        &["token", "--room", "r1", "--identity", "alice", "--ttl-seconds", "1"],
    );
    assert_refusal(&o);
    assert!(text(&o.stderr).contains("ttl_seconds"), "names the field: {}", show(&o));
    let ok = run(root.path(), &["token", "--room", "r1", "--identity", "alice"]);
    assert!(ok.status.success(), "{}", show(&ok));
}

#[test]
fn refusals_of_the_daemon_and_of_the_cli_each_print_error_and_hint() {
    let root = Root::new();
    let _d = Daemon::start(&root, DaemonOpts::double());
    // The daemon's refusal (a bad value), one without a daemon, one of the CLI.
    assert_refusal(&run(root.path(), &["configure", "--port", "70000"]));
    assert_refusal(&run(&root.path().join("nothing-here"), &["health"]));
    assert_refusal(&cli(&["--root", "relative/root", "health"]).output().expect("run"));
    assert_refusal(&run(root.path(), &["cluster", "token"]));
    // And the parser's own: a flag the command does not take.
    assert_refusal(&run(root.path(), &["stop", "--process", "lk-backend"]));
}

// ---------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------

/// Whether every row starts each column where its header does (see the
/// CLI's own `table::columns_line_up`, which this mirrors from outside).
fn columns_line_up(lines: &[&str]) -> Result<(), String> {
    let header: Vec<char> = lines[0].chars().collect();
    let starts: Vec<usize> = (1..header.len())
        .filter(|&i| header[i] != ' ' && i >= 2 && header[i - 1] == ' ' && header[i - 2] == ' ')
        .collect();
    assert!(!starts.is_empty(), "a header with columns: {:?}", lines[0]);
    for line in lines.iter().skip(1).filter(|l| !l.starts_with(' ') && !l.is_empty()) {
        let chars: Vec<char> = line.chars().collect();
        for &s in &starts {
            if chars.get(s - 1) != Some(&' ') || chars.get(s).is_none_or(|c| *c == ' ') {
                return Err(format!("column at {s} out of line:\n{}\n{line}", lines[0]));
            }
        }
    }
    Ok(())
}

#[test]
fn the_tables_of_health_line_up_with_their_headers() {
    let root = Root::new();
    let d = started_daemon(&root);
    // Running children, then stopped ones: each state a cell of its own width.
    for round in 0..2 {
        let o = run(root.path(), &["health"]);
        let out = text(&o.stdout);
        let mut tables = 0;
        for block in out.split("\n\n") {
            let lines: Vec<&str> = block.lines().collect();
            if lines
                .first()
                .is_some_and(|h| h.starts_with("FILE") || h.starts_with("PROCESS"))
            {
                tables += 1;
                assert!(lines.len() >= 3, "rows under {:?}:\n{out}", lines[0]);
                columns_line_up(&lines).unwrap_or_else(|e| panic!("round {round}: {e}\n{out}"));
            }
        }
        assert_eq!(tables, 2, "two tables in:\n{out}");
        if round == 0 {
            d.ok("livekitservice.stop", json!({}));
        }
    }
}

// ---------------------------------------------------------------------
// Roots and paths
// ---------------------------------------------------------------------

#[test]
fn a_relative_root_is_refused_naming_the_absolute_path_and_nothing_is_created() {
    let cwd = tempfile::tempdir().expect("tempdir");
    let o = cli(&["--root", "rel", "up", "--source", "/nonexistent"])
        .current_dir(cwd.path())
        .output()
        .expect("run");
    assert_refusal(&o);
    let err = text(&o.stderr);
    let meant = cwd.path().join("rel");
    assert!(
        err.contains("--root") && err.contains(&meant.display().to_string()),
        "names the flag and the absolute path: {err}"
    );
    assert!(!meant.exists(), "nothing created under {}", meant.display());
}

#[test]
fn the_cli_names_the_root_of_the_daemon_that_runs_when_its_own_has_none() {
    let root = Root::new();
    let _d = Daemon::start(&root, DaemonOpts::double());
    let elsewhere = Root::new();
    let o = run(elsewhere.path(), &["health"]);
    assert_refusal(&o);
    let err = text(&o.stderr);
    assert!(
        err.contains(&elsewhere.path().display().to_string()),
        "says which root it used: {err}"
    );
    assert!(
        err.contains(&root.path().display().to_string()),
        "names the running daemon's root: {err}"
    );
}

// ---------------------------------------------------------------------
// The daemon's own messages
// ---------------------------------------------------------------------

#[test]
fn the_instance_lock_refusal_is_printed_once() {
    let root = Root::new();
    let _d = Daemon::start(&root, DaemonOpts::double());
    let err = match Daemon::try_start(&root, DaemonOpts::double()) {
        Ok(_) => panic!("a second daemon on the same root started"),
        Err(e) => e,
    };
    assert_eq!(err.matches("holds the instance lock").count(), 1, "said once: {err}");
}

#[test]
fn ctrl_c_of_a_foreground_daemon_says_the_children_keep_running_and_how_to_stop_them() {
    let root = Root::new();
    let mut d = started_daemon(&root);
    let lk = d.health()["processes"]["livekit-server"]["pid"]
        .as_i64()
        .expect("livekit-server pid");
    d.signal(Signal::SIGINT);
    assert!(d.wait_exit(PATIENCE).success());
    let log = d.stderr();
    assert!(log.contains("keep running"), "{log}");
    assert!(log.contains("hero_livekit stop"), "{log}");
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(lk as i32), None).is_ok(),
        "livekit-server still runs"
    );
}

// ---------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------

#[test]
fn cluster_status_right_after_a_join_through_the_cli_agrees_with_it() {
    use hero_livekit_tests::cluster::{Node, Redis};
    let redis = Redis::start();
    // A long poll: only the join itself can make the sync report.
    let node = Node::start(600_000);
    let root = node.root.path();
    let joined = run(
        root,
        &["configure", "--redis-address", &redis.address(), "--cluster", "media"],
    );
    assert!(joined.status.success(), "{}", show(&joined));
    assert!(
        text(&joined.stdout).contains("cluster media joined"),
        "{}",
        show(&joined)
    );

    let status = run(root, &["cluster", "status"]);
    assert!(status.status.success(), "{}", show(&status));
    let out = text(&status.stdout);
    assert!(!out.contains("not in a cluster"), "{}", show(&status));
    assert!(out.contains("media"), "{}", show(&status));

    // Once the node's heartbeat is listed, its table lines up too.
    let table = wait_for(PATIENCE, "the node listed in cluster status", || {
        let out = text(&run(root, &["cluster", "status"]).stdout);
        let table: Vec<String> = out
            .split("\n\n")
            .find(|b| b.starts_with("NODE"))?
            .lines()
            .map(str::to_string)
            .collect();
        (table.len() >= 2).then_some(table)
    });
    let lines: Vec<&str> = table.iter().map(String::as_str).collect();
    columns_line_up(&lines).unwrap_or_else(|e| panic!("{e}"));
    assert!(table[1].contains("(this node)"), "{table:?}");

    let json = run(root, &["--json", "cluster", "status"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON status");
    assert_eq!(v["name"], "media", "{}", show(&json));
}
