//! The imperative shell: bind, serve, reload on SIGHUP, stop on SIGTERM/SIGINT.
//!
//! The accept loop is the daemon's (`crates/server/src/daemon.rs`) rather
//! than `axum::serve`, which has no header, idle or connection limit: each
//! connection takes a slot of `limits.max_connections` before a byte is
//! read, its first request head is read here under `limits.header_timeout`
//! and `limits.max_header_bytes` (so the refusal can name them), and hyper
//! serves the rest with `limits.idle_timeout` between requests.
//!
//! At the cap a new connection is not simply refused: that would let
//! anyone who opens `max_connections` silent connections lock every client
//! out until the header timeout, and again after it. The oldest open
//! connection is told to make room instead (one still waiting for its first
//! head is answered 503 and closed; a served one closes once idle, after
//! the request it may be answering), and the new one takes its slot. A
//! client that sends its request at once is served; one that holds a
//! connection without using it is the one that loses it. Only when no slot
//! frees within [`REFUSAL_TIMEOUT`] is the new connection answered 503.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::Router;
use bytes::{Buf, Bytes};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};

use crate::app::{router, SharedCredential};
use crate::config::{self, Overrides, Settings, Source};
use crate::limits::{Limits, REFUSAL_TIMEOUT};

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
    /// The listening socket failed.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves until SIGTERM or SIGINT.
///
/// Prints `listening on <addr>` on stdout once the socket is bound (with
/// `PORT=0` that is how a caller learns the port), then serves within
/// `limits`. SIGHUP re-reads `source` and swaps the credential; a changed
/// listen address is logged and left for the next start.
///
/// # Errors
/// The address cannot be bound, or a signal handler cannot be installed.
pub async fn run(settings: Settings, source: Source, overrides: Overrides, limits: Limits) -> Result<(), ServeError> {
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
    tracing::info!(
        %local,
        max_connections = limits.max_connections,
        header_timeout_ms = limits.header_timeout.as_millis(),
        body_timeout_ms = limits.body_timeout.as_millis(),
        idle_timeout_ms = limits.idle_timeout.as_millis(),
        "lk-backend serving"
    );

    let limits = Arc::new(limits);
    let app = router(shared, Arc::clone(&limits));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(limits.max_connections_refused));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        // hyper arms this timer whenever the connection waits for a request
        // head, so after the first request (whose head is read here under
        // header_timeout) it bounds the idle time plus the next head.
        .header_read_timeout(limits.idle_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.hyper_buf_size());
    let mut backoff = AcceptBackoff::default();
    let mut over_cap = RefusalLog::default();
    let open = Arc::new(OpenConnections::default());

    let which = loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
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
                    _ = term.recv() => break "SIGTERM",
                    _ = int.recv() => break "SIGINT",
                }
            }
        };
        // Answers are one small write each; Nagle would only delay them.
        let _ = stream.set_nodelay(true);
        let served = Served {
            app: app.clone(),
            http1: http1.clone(),
            limits: Arc::clone(&limits),
            stop: stop_rx.clone(),
            open: Arc::clone(&open),
        };
        if let Ok(slot) = Arc::clone(&slots).try_acquire_owned() {
            // Registered here, not in the task: the next accept may have to
            // tell this connection to make room before its task has run.
            let registered = open.enter();
            tokio::spawn(serve_connection(stream, served, slot, registered));
            continue;
        }
        // At the cap: the oldest connection makes room, and this one waits
        // for its slot, from the small budget of connections being refused
        // or waiting (beyond it a flood is closed unanswered).
        let Ok(waiting) = Arc::clone(&refusals).try_acquire_owned() else {
            over_cap.refused(limits.max_connections);
            continue;
        };
        over_cap.evicted(open.evict_oldest());
        let slots = Arc::clone(&slots);
        tokio::spawn(async move {
            match tokio::time::timeout(REFUSAL_TIMEOUT, slots.acquire_owned()).await {
                Ok(Ok(slot)) => {
                    drop(waiting);
                    let registered = served.open.enter();
                    serve_connection(stream, served, slot, registered).await;
                }
                _ => {
                    let message = over_cap_message(served.limits.max_connections);
                    refuse(stream, &message).await;
                    drop(waiting);
                }
            }
        });
    };

    tracing::info!(signal = which, "shutting down");
    // Stop accepting first so no new connection races the drain.
    drop(listener);
    // Only a send to a dropped receiver fails, and then no connection is
    // left to tell.
    let _ = stop_tx.send(true);
    // Every slot back means every connection has ended: idle ones at once,
    // those with a request in flight once it is answered.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "requests still open after the grace period; exiting");
    }
    reloader.abort();
    Ok(())
}

fn over_cap_message(max: usize) -> String {
    format!("{max} connections are open, the limit (limits.max_connections); close idle ones and retry")
}

/// The open connections, oldest first, each with the bell that tells it
/// to make room for a new one.
#[derive(Default)]
struct OpenConnections {
    next_id: Mutex<u64>,
    bells: Mutex<BTreeMap<u64, Arc<Notify>>>,
}

impl OpenConnections {
    /// Registers a connection; it leaves the list when the guard drops.
    fn enter(self: &Arc<Self>) -> (OpenGuard, Arc<Notify>) {
        let id = {
            let mut next = self.next_id.lock().unwrap_or_else(|p| p.into_inner());
            *next += 1;
            *next
        };
        let bell = Arc::new(Notify::new());
        self.bells
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Arc::clone(&bell));
        (
            OpenGuard {
                id,
                open: Arc::clone(self),
            },
            bell,
        )
    }

    /// Tells the oldest connection to make room (a stored permit, so a bell
    /// rung before its owner listens is not lost); false when none is open.
    fn evict_oldest(&self) -> bool {
        let oldest = self.bells.lock().unwrap_or_else(|p| p.into_inner()).pop_first();
        match oldest {
            Some((_, bell)) => {
                bell.notify_one();
                true
            }
            None => false,
        }
    }
}

struct OpenGuard {
    id: u64,
    open: Arc<OpenConnections>,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.open
            .bells
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// What every served connection shares.
struct Served {
    app: Router,
    http1: http1::Builder,
    limits: Arc<Limits>,
    stop: watch::Receiver<bool>,
    open: Arc<OpenConnections>,
}

/// Serves one accepted connection until it ends (closed, timed out, told to
/// make room, or drained at shutdown), holding its slot until then.
async fn serve_connection(
    stream: TcpStream,
    served: Served,
    slot: OwnedSemaphorePermit,
    (_registered, bell): (OpenGuard, Arc<Notify>),
) {
    let Served {
        app,
        http1,
        limits,
        mut stop,
        ..
    } = served;
    let (header_timeout, max_head) = (limits.header_timeout, limits.max_header_bytes);
    let mut stream = stream;
    // The first request head is read here, into a buffer sized by what
    // arrives, before hyper allocates its own: a connection that never
    // completes its head costs a few hundred bytes until the header timeout.
    let head = tokio::select! {
        head = tokio::time::timeout(header_timeout, first_head(&mut stream, max_head)) => head,
        () = stopped(&mut stop) => return,
        () = bell.notified() => {
            let message = format!(
                "closed to make room for a new connection: {} connections are open, the limit (limits.max_connections), and this one had sent no whole request",
                limits.max_connections
            );
            tracing::debug!("{message}");
            answer_and_close(&mut stream, StatusCode::SERVICE_UNAVAILABLE, "too_many_connections", &message).await;
            return;
        }
    };
    let prefix = match head {
        Ok(Ok(FirstHead::Complete(prefix))) => prefix,
        Ok(Ok(FirstHead::TooLarge)) => {
            let message = format!("the request head exceeds the {max_head}-byte limit (limits.max_header_bytes)");
            tracing::debug!("{message}; closing the connection");
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
            tracing::debug!("{message}; closing the connection");
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
    let conn = http1.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    tokio::pin!(conn);
    let result = tokio::select! {
        r = &mut conn => r,
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        () = bell.notified() => {
            // Closes now if idle, else after the answer in flight.
            tracing::debug!(
                "closing a keep-alive connection to make room for a new one (limits.max_connections = {})",
                limits.max_connections
            );
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    match result {
        Ok(()) => {}
        Err(e) if e.is_timeout() => tracing::debug!(
            "closed a keep-alive connection: no whole request within {} ms (limits.idle_timeout)",
            limits.idle_timeout.as_millis()
        ),
        Err(e) => tracing::debug!(error = %e, "connection ended with an error"),
    }
    drop(slot);
}

/// Resolves once shutdown has begun.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            // The sender is gone only when `run` returns; nothing to wait for.
            std::future::pending::<()>().await;
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
/// naming it, then closes it. What the peer still sends is read and
/// dropped meanwhile: closing a socket with unread input sends a reset,
/// which can destroy the answer before the peer reads it. Bounded, so a
/// peer that reads nothing or never stops sending cannot hold the task.
async fn answer_and_close<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    status: StatusCode,
    kind: &str,
    message: &str,
) {
    let answer = closing_answer(status, kind, message);
    let write = async {
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 4096];
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(200), write).await;
}

/// Answers a connection over `limits.max_connections` with a 503 naming the
/// limit and closes it. The request head is read first (bounded in size and
/// time) so the client is not writing into a closed socket when the answer
/// arrives. The caller holds a place in the refusal budget meanwhile.
async fn refuse(mut stream: TcpStream, message: &str) {
    // Logged once per burst by the accept loop's RefusalLog.
    tracing::debug!("connection refused (503): {message}");
    let answer = closing_answer(StatusCode::SERVICE_UNAVAILABLE, "too_many_connections", message);
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
}

/// Logs what the connection cap does at most once per [`RefusalLog::EVERY`]
/// each, with how many there were: a flood must not turn into a flood of
/// log lines.
#[derive(Default)]
struct RefusalLog {
    closed: (Option<Instant>, u64),
    evicted: (Option<Instant>, u64),
}

impl RefusalLog {
    const EVERY: Duration = Duration::from_secs(10);

    fn due((last, count): &mut (Option<Instant>, u64)) -> Option<u64> {
        *count += 1;
        if last.is_none_or(|t| t.elapsed() >= Self::EVERY) {
            *last = Some(Instant::now());
            Some(std::mem::take(count))
        } else {
            None
        }
    }

    /// A connection closed unanswered: the cap is reached and so is the
    /// budget of connections waiting for a slot.
    fn refused(&mut self, max: usize) {
        if let Some(n) = Self::due(&mut self.closed) {
            tracing::warn!(
                closed = n,
                "connections closed unanswered: {}, and as many wait for a slot as may (limits.max_connections_refused)",
                over_cap_message(max)
            );
        }
    }

    /// The oldest connection was told to make room (`false`: none was open
    /// to tell, every slot being taken by connections still starting).
    fn evicted(&mut self, told: bool) {
        if !told {
            return;
        }
        if let Some(n) = Self::due(&mut self.evicted) {
            tracing::warn!(
                evicted = n,
                "at the connection limit (limits.max_connections): the oldest connections are closed to make room for new ones"
            );
        }
    }
}

/// The accept loop's pause after errors: 5 ms doubling up to 1 s, back to
/// 5 ms after a successful accept; the first error of a burst is logged.
#[derive(Default)]
struct AcceptBackoff {
    next: Option<Duration>,
    failing: bool,
}

impl AcceptBackoff {
    const MIN: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    fn failed(&mut self, e: &std::io::Error) -> Duration {
        let pause = self.next.unwrap_or(Self::MIN).min(Self::MAX);
        self.next = Some((pause * 2).min(Self::MAX));
        if !self.failing {
            tracing::warn!(error = %e, "accept failed; pausing the accept loop (from 5 ms, doubling up to 1 s) while it fails");
            self.failing = true;
        }
        pause
    }

    fn succeeded(&mut self) {
        self.next = None;
        if std::mem::take(&mut self.failing) {
            tracing::info!("accepting connections again");
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_head_stops_at_the_end_of_the_head_or_the_limit() {
        let mut whole: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest";
        assert!(matches!(first_head(&mut whole, 64).await, Ok(FirstHead::Complete(b)) if b.ends_with(b"rest")));
        let mut big: &[u8] = b"GET / HTTP/1.1\r\nX: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        assert!(matches!(first_head(&mut big, 32).await, Ok(FirstHead::TooLarge)));
        let mut cut: &[u8] = b"GET / HTTP/1.1\r\n";
        assert!(matches!(first_head(&mut cut, 64).await, Ok(FirstHead::Closed)));
    }

    #[test]
    fn the_closing_answer_is_whole_json_naming_the_limit() {
        let a = closing_answer(
            StatusCode::REQUEST_TIMEOUT,
            "header_timeout",
            "x (limits.header_timeout)",
        );
        let (head, body) = a.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(v["error"], "header_timeout");
    }

    #[test]
    fn accept_backoff_doubles_to_its_cap_and_resets() {
        let mut b = AcceptBackoff::default();
        let e = std::io::Error::from_raw_os_error(24);
        let pauses: Vec<u128> = (0..10).map(|_| b.failed(&e).as_millis()).collect();
        assert_eq!(pauses, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.succeeded();
        assert_eq!(b.failed(&e), AcceptBackoff::MIN);
    }
}
