//! The imperative shell: bind, serve, reload on SIGHUP, stop on SIGTERM/SIGINT.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::app::{router, SharedCredential};
use crate::config::{self, Overrides, Settings, Source};

/// How long requests in flight get to finish after SIGTERM before the process
/// exits anyway; the supervisor's own stop timeout is longer.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the server stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address cannot be bound (in use, not local, privileged).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address from the settings.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A signal handler cannot be installed.
    #[error("cannot install the {0} handler: {1}")]
    Signal(&'static str, std::io::Error),
    /// The accept loop failed.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves until SIGTERM or SIGINT.
///
/// Prints `listening on <addr>` on stdout once the socket is bound (with
/// `PORT=0` that is how a caller learns the port), then serves. SIGHUP
/// re-reads `source` and swaps the credential; a changed listen address is
/// logged and left for the next start.
///
/// # Errors
/// The address cannot be bound, a signal handler cannot be installed, or
/// the accept loop fails.
pub async fn run(settings: Settings, source: Source, overrides: Overrides) -> Result<(), ServeError> {
    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: settings.listen,
            source,
        })?;
    let local = listener.local_addr()?;
    let shared = Arc::new(SharedCredential::new(
        settings.credential.clone(),
        settings.source_sha256.clone(),
    ));

    let mut term = signal(SignalKind::terminate()).map_err(|e| ServeError::Signal("SIGTERM", e))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| ServeError::Signal("SIGINT", e))?;
    let hup = signal(SignalKind::hangup()).map_err(|e| ServeError::Signal("SIGHUP", e))?;
    let reloader = tokio::spawn(reload_on_hup(hup, settings, source, overrides, Arc::clone(&shared)));

    announce(local);
    tracing::info!(%local, "lk-backend serving");

    let (stop_tx, mut stop_rx) = watch::channel(false);
    let app = router(shared);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = which, "shutting down");
        // Only a send to a dropped receiver fails, and then nobody is
        // waiting for the grace deadline anyway.
        let _ = stop_tx.send(true);
    });
    let grace_deadline = async move {
        while !*stop_rx.borrow_and_update() {
            if stop_rx.changed().await.is_err() {
                // The server finished without a signal; let it win the race.
                std::future::pending::<()>().await;
            }
        }
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let result = tokio::select! {
        r = server => r.map_err(ServeError::from),
        _ = grace_deadline => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "requests still open after the grace period; exiting");
            Ok(())
        }
    };
    reloader.abort();
    result
}

/// The one line on stdout, flushed at once because stdout is a file or a pipe
/// (block-buffered) when a supervisor or a test reads it.
fn announce(local: SocketAddr) {
    let mut out = std::io::stdout().lock();
    // Nobody reading stdout is not a reason to stop serving.
    let _ = writeln!(out, "listening on {local}");
    let _ = out.flush();
}

async fn reload_on_hup(
    mut hup: tokio::signal::unix::Signal,
    mut running: Settings,
    source: Source,
    overrides: Overrides,
    shared: Arc<SharedCredential>,
) {
    while hup.recv().await.is_some() {
        if source == Source::Environment {
            tracing::info!("SIGHUP: configured from the environment, nothing to re-read");
            continue;
        }
        let src = source.clone();
        // The env file is small; reading it on the blocking pool keeps the
        // runtime's workers free for requests.
        let reread = match tokio::task::spawn_blocking(move || config::load(&src, overrides)).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: reload task failed; keeping the current credential");
                continue;
            }
        };
        let new = match reread {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: env file rejected; keeping the current credential");
                continue;
            }
        };
        let plan = config::plan_reload(&running, &new);
        if plan.listen_changed {
            tracing::warn!(
                running = %running.listen,
                configured = %new.listen,
                "SIGHUP: listen address changed; it takes effect only after a restart"
            );
        }
        if plan.swap_credential && config::secret_is_short(&new.credential) {
            tracing::warn!("secret is too short, should be at least 32 characters for security");
        }
        // The file's hash is reported only while all of the file is in
        // force: a listen address that cannot move until a restart makes it
        // unknown, so the supervisor restarts rather than trust it.
        let sha = if plan.listen_changed {
            None
        } else {
            new.source_sha256.clone()
        };
        shared.replace(new.credential.clone(), sha);
        if plan.swap_credential {
            tracing::info!(api_key = %new.credential.api_key, url = %new.credential.url, "SIGHUP: credential reloaded");
        } else {
            tracing::info!("SIGHUP: credential unchanged");
        }
        running.credential = new.credential;
    }
}
