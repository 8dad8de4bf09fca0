//! Dispatch: each subcommand of [`crate::args`] to its method, and the
//! output.

use std::process::ExitCode;

use hero_livekit_client::wire as proto;
use hero_livekit_client::{resolve_root, resolve_socket, Client, ClientError};

use crate::args::{Cli, ClusterCommand, Command, ConfigCommand};
use crate::output::{self, Out};

/// Runs one invocation and turns its outcome into an exit status.
pub async fn run(cli: Cli) -> ExitCode {
    let socket = resolve_socket(cli.root.as_deref(), cli.socket.as_deref());
    let out = Out::new(cli.json);
    let client = Client::new(&socket);
    match dispatch(&cli, &client, &out).await {
        Ok(code) => code,
        Err(e) => {
            out.error(&e);
            ExitCode::FAILURE
        }
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
            let resp = output::post_token(&t.token_url, &t.mint_secret, &body)
                .await
                .map_err(|detail| ClientError::Transport {
                    socket: client.socket().to_path_buf(),
                    detail,
                })?;
            out.token(&resp);
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
    }
    Ok(ExitCode::SUCCESS)
}
