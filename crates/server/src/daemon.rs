//! The daemon's life: take the socket, boot the service, serve connections,
//! and shut down gracefully on SIGTERM/SIGINT.
//!
//! Connections are served with hyper's HTTP/1 server directly (not
//! jsonrpsee's `serve`), so that the header timeout and size limits apply,
//! every connection is counted in the budget of its peer's access class
//! before any byte is read, and an upgraded connection leaves that budget
//! for the WebSocket budget (see [`crate::limits`]).
//!
//! Shutdown is designed in: the accept loop stops, every connection is told
//! to finish its in-flight requests (hyper's graceful shutdown, driven by
//! jsonrpsee's stop handle, which also ends WebSocket sessions), the daemon
//! waits for them to drain (bounded), then the service detaches or stops
//! the children, and the socket is removed by its guard.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::{Buf, Bytes};
use std::time::Duration;

use http::StatusCode;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use jsonrpsee::server::{stop_channel, Server, StopHandle, TowerServiceBuilder};
use jsonrpsee::Methods;
use nix::unistd::Gid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Semaphore;
use tower::layer::util::Identity;

use crate::http::{Front, Router};
use crate::limits::{Limits, ACCEPT_BACKOFF_MIN};
use crate::paths::Paths;
use crate::peer::{AccessPolicy, Peer, PeerAccess};
use crate::service::{LivekitService, ServiceOptions};

/// Everything the daemon is started with.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub paths: Paths,
    pub socket_group: Option<Gid>,
    pub livekit_bin: Option<PathBuf>,
    pub backend_bin: Option<PathBuf>,
    pub stop_children_on_exit: bool,
    /// `--stop-timeout-ms`: the default drain deadline of `stop`, `restart`
    /// and the daemon's exit.
    pub stop_timeout: Option<Duration>,
    /// `--metrics-listen`: also serve `GET /metrics` on this TCP address.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// How long in-flight requests get to finish after a stop signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a refused connection may take to send its request head and
/// read its one-line answer before it is closed.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs the daemon until SIGTERM or SIGINT.
///
/// # Errors
/// The instance lock or the socket could not be taken (another instance,
/// a foreign file at the path, an untrusted directory), the limits in the
/// environment are invalid, or the state directory could not be prepared.
pub async fn run(opts: DaemonOptions) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // A bad limit in the environment is refused before anything is touched.
    let limits = Arc::new(Limits::from_env()?);
    // Then the lock: only one instance may heal the state directory.
    let lock = crate::socket::InstanceLock::acquire(
        &opts.paths.state_dir,
        &opts.paths.lock_file(),
        &opts.paths.socket,
        opts.socket_group,
    )?;
    let policy = AccessPolicy::current(opts.socket_group);
    // Bound before the boot, so that a taken port stops the daemon before it
    // touches the triple or the children.
    let metrics_listener = opts.metrics_listen.map(crate::metrics::listen::bind).transpose()?;

    let service = LivekitService::boot(ServiceOptions {
        paths: opts.paths.clone(),
        livekit_bin: opts.livekit_bin.clone(),
        backend_bin: opts.backend_bin.clone(),
        stop_timeout: opts.stop_timeout,
    })
    .await?;
    let methods: Methods = crate::rpc::module(service.clone())?.into();
    let _metrics_listener = metrics_listener.map(|l| crate::metrics::listen::serve(l, service.clone(), limits.clone()));
    let (stop_handle, server_handle) = stop_channel();
    let connections = Connections::new(service.clone(), methods, limits.clone(), stop_handle);
    let budgets = Budgets::new(&limits);

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

    let mut backoff = AcceptBackoff::new(limits.accept_backoff_max);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = sigint.recv() => { interrupted(opts.stop_children_on_exit); break; }
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                backoff.succeeded();
                stream
            }
            Err(e) => {
                // EMFILE and friends are transient, but the listener stays
                // readable while they last: retrying at once would spin.
                let pause = backoff.failed(&e);
                tokio::select! {
                    _ = tokio::time::sleep(pause) => continue,
                    _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
                    _ = sigint.recv() => { interrupted(opts.stop_children_on_exit); break; }
                }
            }
        };
        let peer = match stream.peer_cred() {
            Ok(c) => Peer {
                uid: c.uid(),
                gid: c.gid(),
                pid: c.pid(),
                access: policy.classify(c.uid(), c.gid(), c.pid()),
            },
            Err(e) => {
                tracing::warn!(error = %e, "could not read peer credentials; dropping connection");
                continue;
            }
        };
        if peer.access == PeerAccess::None {
            refuse(
                &budgets,
                stream,
                StatusCode::FORBIDDEN,
                "unauthorized",
                format!(
                "uid {} may not use this daemon: only its own uid, root and members of its --socket-group may connect",
                peer.uid
            ),
            );
            continue;
        }
        let Ok(permit) = budgets.class(peer.access).clone().try_acquire_owned() else {
            let (n, name) = limits.connections(peer.access);
            refuse(
                &budgets,
                stream,
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_connections",
                format!(
                "{n} connections of this access class are open, the limit (limits.{name}); close idle ones and retry"
            ),
            );
            continue;
        };
        let serve = connections.serve(stream, peer);
        tokio::spawn(async move {
            serve.await;
            drop(permit);
        });
    }

    // Stop accepting first so no new connection races the drain.
    drop(listener);
    // The stop handles it holds keep `stopped()` below from resolving.
    drop(connections);
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

/// Logs a Ctrl-C (SIGINT): an operator who ran the daemon in the foreground
/// may think it takes the children with it, which it does only with
/// `--stop-children-on-exit`.
fn interrupted(stop_children_on_exit: bool) {
    if stop_children_on_exit {
        tracing::info!("SIGINT: shutting down; stopping livekit-server and lk-backend (--stop-children-on-exit)");
    } else {
        tracing::info!(
            "SIGINT: shutting down; livekit-server and lk-backend keep running and the next hero_livekit_server \
             on this root adopts them. To stop them: `hero_livekit stop` before stopping the daemon, or run it \
             with --stop-children-on-exit"
        );
    }
}

/// The HTTP side of the daemon, socket aside: what the accept loop hands
/// each accepted connection of a served peer to. Public so the `http_front`
/// fuzz target drives connections through exactly this code.
pub struct Connections {
    front: Arc<Front>,
    methods: Methods,
    /// Builds each connection's jsonrpsee service for calls.
    calls_builder: TowerServiceBuilder<Identity, Identity>,
    http1: http1::Builder,
    stop: StopHandle,
    limits: Arc<Limits>,
}

impl Connections {
    /// `stop` is the stop handle of the channel whose server handle ends
    /// every connection and WebSocket session at shutdown.
    pub fn new(service: Arc<LivekitService>, methods: Methods, limits: Arc<Limits>, stop: StopHandle) -> Connections {
        // One builder for calls, one for WebSockets: jsonrpsee's connection
        // guard is set out of the way in both (see Limits::jsonrpsee_config);
        // the per-class budgets of the accept loop and the front are what
        // bounds them.
        let calls_builder = Server::builder()
            .set_config(limits.jsonrpsee_config())
            .to_service_builder();
        let ws_builder = Server::builder()
            .set_config(limits.jsonrpsee_config())
            .to_service_builder();
        let front = Arc::new(Front::new(
            service,
            methods.clone(),
            limits.clone(),
            ws_builder,
            stop.clone(),
        ));
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_header_size(limits.max_header_bytes)
            // hyper's floor is 8 KiB; reads of a body go through this buffer.
            .max_buf_size(limits.max_header_bytes.max(64 * 1024));
        Connections {
            front,
            methods,
            calls_builder,
            http1: builder,
            stop,
            limits,
        }
    }

    /// Serves one accepted connection of `peer` until it ends (closed,
    /// timed out, upgraded, or drained at shutdown). The peer's connection
    /// budget is the caller's: the accept loop holds its slot while this
    /// runs. The returned future owns everything it needs, so the caller
    /// may spawn it.
    pub fn serve<S>(&self, stream: S, peer: Peer) -> impl std::future::Future<Output = ()> + Send + 'static
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let router = Router {
            rpc: crate::http::RpcService::new(
                self.calls_builder
                    .clone()
                    .build(self.methods.clone(), self.stop.clone()),
            ),
            front: self.front.clone(),
            peer,
        };
        let builder = self.http1.clone();
        let stop = self.stop.clone();
        let (header_timeout, max_head) = (self.limits.header_timeout, self.limits.max_header_bytes);
        async move {
            let stopped = stop.shutdown();
            tokio::pin!(stopped);
            // The first request head is read here, into a buffer sized by
            // what arrives, before hyper allocates its own (two 8 KiB
            // buffers per connection): a connection that never completes
            // its head costs a few hundred bytes until the header timeout.
            let mut stream = stream;
            let head = tokio::select! {
                head = tokio::time::timeout(header_timeout, first_head(&mut stream, max_head)) => head,
                () = &mut stopped => return,
            };
            let prefix = match head {
                Ok(Ok(FirstHead::Complete(prefix))) => prefix,
                Ok(Ok(FirstHead::TooLarge)) => {
                    let message =
                        format!("the request head exceeds the {max_head}-byte limit (limits.max_header_bytes)");
                    answer_and_close(
                        &mut stream,
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "header_too_large",
                        &message,
                    )
                    .await;
                    return;
                }
                Err(_) => {
                    let message = format!(
                        "no whole request head arrived within {} ms (limits.header_timeout)",
                        header_timeout.as_millis()
                    );
                    answer_and_close(&mut stream, StatusCode::REQUEST_TIMEOUT, "header_timeout", &message).await;
                    return;
                }
                // Closed or failed before a whole request head.
                Ok(Ok(FirstHead::Closed) | Err(_)) => return,
            };
            let io = Prefixed {
                prefix: Bytes::from(prefix),
                inner: stream,
            };
            // with_upgrades: an upgraded connection ends here once hyper
            // hands the stream to the WebSocket task, which frees this
            // connection's slot; the WebSocket holds a slot of its own.
            let conn = builder
                .serve_connection(TokioIo::new(io), TowerToHyperService::new(router))
                .with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                r = &mut conn => r,
                () = &mut stopped => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
    }
}

/// How the first request head of a connection arrived.
enum FirstHead {
    /// Whole: these bytes, the head and whatever followed it.
    Complete(Vec<u8>),
    /// More than the limit without the end of the head.
    TooLarge,
    /// The peer closed first.
    Closed,
}

/// Reads from `stream` until the end of the first request head, or more
/// than `max` bytes.
async fn first_head<S: AsyncRead + Unpin>(stream: &mut S, max: usize) -> std::io::Result<FirstHead> {
    let mut buf = Vec::new();
    loop {
        let n = stream.read_buf(&mut buf).await?;
        if n == 0 {
            return Ok(FirstHead::Closed);
        }
        // Only the new bytes and the three before them can complete the
        // end-of-head marker.
        let from = buf.len().saturating_sub(n + 3);
        match buf[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            Some(at) if from + at + 4 > max => return Ok(FirstHead::TooLarge),
            Some(_) => return Ok(FirstHead::Complete(buf)),
            None if buf.len() > max => return Ok(FirstHead::TooLarge),
            None => {}
        }
    }
}

/// A whole HTTP/1.1 answer with a JSON `{error, message}` body, announcing
/// that the connection closes after it.
fn closing_answer(status: StatusCode, kind: &str, message: &str) -> String {
    let body = serde_json::json!({"error": kind, "message": message}).to_string();
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
}

/// Answers a connection whose first head broke a limit with a JSON body
/// naming it, then closes it. Bounded, so a peer that reads nothing cannot
/// hold the task.
async fn answer_and_close<S: AsyncWrite + Unpin>(stream: &mut S, status: StatusCode, kind: &str, message: &str) {
    let answer = closing_answer(status, kind, message);
    let write = async {
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    };
    let _ = tokio::time::timeout(Duration::from_millis(200), write).await;
}

/// A stream whose first bytes were already read: they are replayed to
/// hyper before the rest.
struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The HTTP connection budgets of the three access classes. Separate
/// semaphores: a class that fills its own cannot take another's.
struct Budgets {
    full: Arc<Semaphore>,
    read_only: Arc<Semaphore>,
    refused: Arc<Semaphore>,
}

impl Budgets {
    fn new(l: &Limits) -> Budgets {
        Budgets {
            full: Arc::new(Semaphore::new(l.max_connections_full)),
            read_only: Arc::new(Semaphore::new(l.max_connections_read_only)),
            refused: Arc::new(Semaphore::new(l.max_connections_refused)),
        }
    }

    fn class(&self, access: PeerAccess) -> &Arc<Semaphore> {
        match access {
            PeerAccess::Full => &self.full,
            PeerAccess::ReadOnly => &self.read_only,
            PeerAccess::None => &self.refused,
        }
    }
}

/// Answers a connection that will not be served with one JSON error and
/// closes it, from the small refused budget (beyond it the connection is
/// closed unanswered: a flood of refusals costs a bounded amount). The
/// request head is read first (bounded in size and time) so the client
/// is not writing into a closed socket when the answer arrives.
fn refuse(budgets: &Budgets, mut stream: UnixStream, status: StatusCode, kind: &'static str, message: String) {
    let Ok(permit) = budgets.refused.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let answer = closing_answer(status, kind, &message);
        let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
            let mut head = [0u8; 8192];
            let mut n = 0;
            while n < head.len() {
                match stream.read(&mut head[n..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k,
                }
                if head[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let _ = stream.write_all(answer.as_bytes()).await;
            let _ = stream.shutdown().await;
        })
        .await;
        drop(permit);
    });
}

/// The accept loop's pause after errors, as mini-redis does it: 5 ms
/// doubling up to a cap, back to 5 ms after a successful accept. A burst
/// (errors with less than [`BURST_QUIET`] between them, even when an accept
/// succeeds in between, as one does each time a descriptor frees up under
/// EMFILE) is logged twice: its first error, and its end with the count.
struct AcceptBackoff {
    max: Duration,
    next: Option<Duration>,
    burst: Option<Burst>,
}

struct Burst {
    errors: u64,
    last_error: std::time::Instant,
}

/// How long accepts must succeed without an error for a burst to end:
/// well above the longest pause, so one accept that succeeds after a full
/// pause (a descriptor freed for a moment) does not split a burst in two.
const BURST_QUIET: Duration = Duration::from_secs(5);

impl AcceptBackoff {
    fn new(max: Duration) -> AcceptBackoff {
        AcceptBackoff {
            max,
            next: None,
            burst: None,
        }
    }

    /// Counts an error; returns how long to pause before the next accept.
    fn failed(&mut self, e: &std::io::Error) -> Duration {
        let pause = self.next.unwrap_or(ACCEPT_BACKOFF_MIN).min(self.max);
        self.next = Some((pause * 2).min(self.max));
        let now = std::time::Instant::now();
        match &mut self.burst {
            Some(b) => {
                b.errors += 1;
                b.last_error = now;
            }
            None => {
                tracing::warn!(error = %e, "accept failed; pausing the accept loop (from 5 ms, doubling up to {:?}) while it fails", self.max);
                self.burst = Some(Burst {
                    errors: 1,
                    last_error: now,
                });
            }
        }
        pause
    }

    fn succeeded(&mut self) {
        self.next = None;
        if self
            .burst
            .as_ref()
            .is_some_and(|b| b.last_error.elapsed() >= BURST_QUIET)
        {
            if let Some(b) = self.burst.take() {
                tracing::info!(
                    errors = b.errors,
                    "accepting connections again after a burst of accept errors"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_to_its_cap_and_resets() {
        let mut b = AcceptBackoff::new(Duration::from_millis(40));
        let e = std::io::Error::from_raw_os_error(libc::EMFILE);
        let pauses: Vec<u128> = (0..6).map(|_| b.failed(&e).as_millis()).collect();
        assert_eq!(pauses, [5, 10, 20, 40, 40, 40]);
        b.succeeded();
        assert_eq!(b.failed(&e), ACCEPT_BACKOFF_MIN, "a success resets the pause");
        assert_eq!(b.burst.as_ref().map(|b| b.errors), Some(7), "but not the burst");
    }
}
