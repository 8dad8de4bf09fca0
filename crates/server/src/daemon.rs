//! The daemon's life: take the socket, boot the service, serve connections,
//! and shut down gracefully on SIGTERM/SIGINT.
//!
//! Shutdown is designed in: the accept loop stops, every connection is told
//! to finish its in-flight requests (jsonrpsee's stop handle), the daemon
//! waits for them to drain (bounded), then the service detaches or stops
//! the children, and the socket is removed by its guard.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jsonrpsee::server::{stop_channel, Server};
use nix::unistd::Gid;
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};

use crate::http::Router;
use crate::paths::Paths;
use crate::peer::{AccessPolicy, Peer};
use crate::service::{LivekitService, ServiceOptions};

/// Everything the daemon is started with.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub paths: Paths,
    pub socket_group: Option<Gid>,
    pub livekit_bin: Option<PathBuf>,
    pub backend_bin: Option<PathBuf>,
    pub stop_children_on_exit: bool,
}

/// How long in-flight requests get to finish after a stop signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Cap on concurrent connections; a misbehaving client cannot exhaust fds.
const MAX_CONNECTIONS: usize = 512;

/// Runs the daemon until SIGTERM or SIGINT.
///
/// # Errors
/// The socket could not be taken (another instance, a foreign file at the
/// path) or the state directory could not be prepared.
pub async fn run(opts: DaemonOptions) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // The lock first: only one instance may heal the state directory.
    let lock = crate::socket::InstanceLock::acquire(
        &opts.paths.state_dir,
        &opts.paths.lock_file(),
        &opts.paths.socket,
        opts.socket_group,
    )?;
    let policy = AccessPolicy::current(opts.socket_group);

    let service = LivekitService::boot(ServiceOptions {
        paths: opts.paths.clone(),
        livekit_bin: opts.livekit_bin.clone(),
        backend_bin: opts.backend_bin.clone(),
    })
    .await?;
    let methods = crate::rpc::module(service.clone())?;
    let (stop_handle, server_handle) = stop_channel();
    let builder = Server::builder().to_service_builder();
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    // The socket appears only now that the service has booted: a client
    // that can connect is served at once.
    let (std_listener, guard) = lock.bind()?;
    let listener = UnixListener::from_std(std_listener)?;

    if let Err(e) = crate::notify::notify("READY=1") {
        tracing::warn!(error = %e, "could not notify the service manager");
    }
    tracing::info!(socket = %guard.path().display(), version = hero_livekit_proto::VERSION, "hero_livekit_server ready");

    let conns = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        // EMFILE and friends are transient: keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                };
                let Ok(permit) = conns.clone().try_acquire_owned() else {
                    tracing::warn!("connection limit reached; dropping a connection");
                    continue;
                };
                let peer = match stream.peer_cred() {
                    Ok(c) => Peer { uid: c.uid(), gid: c.gid(), pid: c.pid(), access: policy.classify(c.uid(), c.gid(), c.pid()) },
                    Err(e) => {
                        tracing::warn!(error = %e, "could not read peer credentials; dropping connection");
                        continue;
                    }
                };
                let rpc = builder.clone().build(methods.clone(), stop_handle.clone());
                let router = Router {
                    rpc: crate::http::RpcService::new(rpc),
                    service: service.clone(),
                    peer,
                };
                let stop = stop_handle.clone();
                tokio::spawn(async move {
                    if let Err(e) = jsonrpsee::server::serve_with_graceful_shutdown(stream, router, stop.shutdown()).await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    drop(permit);
                });
            }
            _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); break; }
        }
    }

    // Stop accepting first so no new connection races the drain.
    drop(listener);
    drop(stop_handle);
    let _ = server_handle.stop();
    if tokio::time::timeout(DRAIN_TIMEOUT, server_handle.stopped())
        .await
        .is_err()
    {
        tracing::warn!("connections did not drain within {DRAIN_TIMEOUT:?}; closing them");
    }
    service.shutdown(opts.stop_children_on_exit).await;
    drop(guard);
    tracing::info!("hero_livekit_server stopped");
    Ok(())
}
