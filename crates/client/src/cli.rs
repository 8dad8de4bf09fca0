//! Dispatch: each subcommand of [`crate::args`] to its method, and the
//! output.

use std::process::ExitCode;

use hero_livekit_client::wire as proto;
use hero_livekit_client::{resolve_root, resolve_socket, Client, ClientError};

use crate::args::{Cli, ClusterCommand, Command, ConfigCommand};
use crate::output::{self, Out};

/// Runs one invocation and turns its outcome into an exit status.
pub async fn run(mut cli: Cli) -> ExitCode {
    let out = Out::new(cli.json);
    if let Err(e) = absolute_paths(&mut cli) {
        out.error(&e);
        return ExitCode::FAILURE;
    }
    let socket = resolve_socket(cli.root.as_deref(), cli.socket.as_deref());
    let client = Client::new(&socket);
    match dispatch(&cli, &client, &out).await {
        Ok(code) => code,
        Err(e @ ClientError::NotRunning { .. }) if cli.socket.is_none() => {
            out.error(&not_running_here(e, cli.root.as_deref()));
            ExitCode::FAILURE
        }
        Err(e) => {
            out.error(&e);
            ExitCode::FAILURE
        }
    }
}

/// No daemon on this root's socket: says which root this CLI used and why,
/// and names the root of every daemon that does run here, so that a CLI and
/// a daemon started with different roots find each other.
fn not_running_here(e: ClientError, root_flag: Option<&std::path::Path>) -> ClientError {
    let root = resolve_root(root_flag);
    let from = if root_flag.is_some() {
        "--root"
    } else if std::env::var_os("PATH_ROOT").is_some_and(|v| !v.is_empty()) {
        "$PATH_ROOT"
    } else {
        "the default; --root or $PATH_ROOT change it"
    };
    let others: Vec<String> = crate::deployments::running_daemons()
        .into_iter()
        .filter(|d| !crate::deployments::same_root(&d.root, &root))
        .map(|d| format!("root {} (pid {})", d.root.display(), d.pid))
        .collect();
    let hint = match others.first() {
        None => e.hint().to_string(),
        Some(_) => format!(
            "a hero_livekit_server runs with {}: talk to it with `hero_livekit --root DIR ...` or `PATH_ROOT=DIR`, DIR being its root",
            others.join(", ")
        ),
    };
    ClientError::Refused {
        kind: "not_running",
        message: format!("{e} (this CLI's root: {}, {from})", root.display()),
        hint,
    }
}

async fn dispatch(cli: &Cli, client: &Client, out: &Out) -> Result<ExitCode, ClientError> {
    match &cli.command {
        Command::Install(a) => {
            let progress = output::progress_for_install(client, out).await;
            let r = client.install(&a.params()).await;
            drop(progress);
            out.install(&r?);
        }
        Command::Configure(a) => out.configure(&client.configure(&a.params()).await?),
        Command::Start(a) => {
            let progress = if a.update {
                output::progress_for_install(client, out).await
            } else {
                None
            };
            let spinner = out.spinner("starting livekit-server and lk-backend");
            let r = client.start(&a.params()).await;
            drop((spinner, progress));
            out.start(&r?);
        }
        Command::Stop(a) => out.stop(
            &client
                .stop(&proto::StopParams {
                    timeout_ms: a.timeout_ms,
                    drain_timeout_ms: None,
                })
                .await?,
        ),
        Command::Restart(a) => out.restart(
            &client
                .restart(&proto::RestartParams {
                    process: a.process,
                    timeout_ms: a.timeout_ms,
                    drain_timeout_ms: a.drain_timeout_ms,
                })
                .await?,
        ),
        Command::Health(a) => {
            let h = client.health().await?;
            if !a.quiet {
                out.health(&h);
                output::warn_if_daemon_older(&h, out);
            }
            return Ok(if h.ready_for_tokens {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        Command::Logs(a) => {
            let r = client
                .logs(&proto::LogsParams {
                    process: a.process,
                    lines: a.lines,
                })
                .await?;
            out.logs(&r);
            if a.follow {
                output::follow(&r.path).await.map_err(|e| ClientError::Transport {
                    socket: client.socket().to_path_buf(),
                    detail: format!("following {}: {e}", r.path),
                })?;
            }
        }
        Command::Config(ConfigCommand::Show) => out.config_show(&client.config_show().await?),
        Command::Events => {
            let mut events = client.subscribe_events().await?;
            while let Some(ev) = events.next().await {
                out.event(&ev);
            }
            // The stream only ends when the daemon closes it: it stopped
            // or restarted, and a watcher must not take that for success.
            return Err(ClientError::Refused {
                kind: "daemon_gone",
                message: format!(
                    "the daemon on {} closed the event stream: it stopped or restarted",
                    client.socket().display()
                ),
                hint: "`hero_livekit health` says whether a daemon answers again; run `hero_livekit events` anew to keep watching".into(),
            });
        }
        Command::Token(a) => {
            // The mint secret, as any service allowed to mint gets it.
            let t: proto::BackendTokenResult = client
                .call(proto::method::BACKEND_TOKEN, &serde_json::json!({}))
                .await?;
            let body = serde_json::json!({
                "room": a.room, "identity": a.identity, "name": a.name,
                "ttl_seconds": a.ttl_seconds, "metadata": a.metadata,
            });
            out.token(&output::post_token(&t.token_url, &t.mint_secret, &body).await?);
        }
        Command::BackendToken => {
            let t: proto::BackendTokenResult = client
                .call(proto::method::BACKEND_TOKEN, &serde_json::json!({}))
                .await?;
            out.backend_token(&t);
        }
        Command::Up(a) => {
            let root = resolve_root(cli.root.as_deref());
            return crate::up::up(a, client, out, &root, cli.root.as_deref(), cli.socket.as_deref()).await;
        }
        Command::Discover => out.json_value(&client.discover().await?),
        Command::Cluster(ClusterCommand::Status) => {
            // The daemon publishes a join's view before the join returns,
            // so this agrees with the join's result at once.
            let c: proto::ClusterHealth = client
                .call(proto::method::CLUSTER_STATUS, &serde_json::json!({}))
                .await?;
            out.cluster_status(&c);
        }
        Command::Cluster(ClusterCommand::Token) => {
            let t: proto::ClusterTokenResult = client
                .call(proto::method::CLUSTER_TOKEN, &serde_json::json!({}))
                .await?;
            out.cluster_token(&t);
        }
        Command::Cluster(ClusterCommand::Leave) => {
            let l: proto::ClusterLeave = client
                .call(proto::method::CLUSTER_LEAVE, &serde_json::json!({}))
                .await?;
            out.cluster_leave(&l);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses a relative `--root` (the daemon `up` starts has another working
/// directory, and the path would mean another place there), naming the
/// absolute path it would have meant; makes a relative `--source` of
/// `install` and `up` absolute against this working directory, the one the
/// operator typed it in, since the daemon resolves nothing against its own.
///
/// # Errors
/// [`ClientError::Refused`] for a relative `--root`, or a working directory
/// that cannot be read.
fn absolute_paths(cli: &mut Cli) -> Result<(), ClientError> {
    let cwd = || {
        std::env::current_dir().map_err(|e| ClientError::Refused {
            kind: "invalid_params",
            message: format!("cannot read the current directory to resolve a relative path: {e}"),
            hint: "give the path as an absolute one".into(),
        })
    };
    if let Some(root) = cli.root.as_deref().filter(|r| r.is_relative()) {
        let meant = cwd()?.join(root);
        return Err(ClientError::Refused {
            kind: "invalid_params",
            message: format!(
                "--root: must be an absolute path, got `{}` (here it would mean {})",
                root.display(),
                meant.display()
            ),
            hint: format!("pass it absolute: `--root {}`", meant.display()),
        });
    }
    let install = match &mut cli.command {
        Command::Install(a) => a,
        Command::Up(a) => &mut a.install,
        _ => return Ok(()),
    };
    if let Some(source) = install.source.as_mut() {
        // A URL names its scheme before `://`; anything else is a path.
        if !source.contains("://") && std::path::Path::new(source.as_str()).is_relative() {
            *source = cwd()?.join(source.as_str()).display().to_string();
        }
    }
    Ok(())
}
