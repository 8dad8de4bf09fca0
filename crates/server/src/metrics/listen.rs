//! `--metrics-listen ADDR`: the metrics on TCP, for a scraper that cannot
//! reach the Unix socket.
//!
//! It serves `GET /metrics` and nothing else (everything else is 404): the
//! scrape holds no secret (see [`super`]), so it needs no authentication,
//! and nothing else of the daemon is reachable through it. A bare port
//! binds the loopback address; any other interface must be named.
//!
//! Bounded like the socket: the head within `limits.header_timeout` and
//! `limits.max_header_bytes`, and at most
//! `limits.max_connections_read_only` connections at once, a budget of its
//! own (a scraper never takes capacity from the socket's callers); beyond
//! it a connection is closed unanswered.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::Format;
use crate::limits::{Limits, ACCEPT_BACKOFF_MIN};
use crate::service::LivekitService;

/// Where `--metrics-listen` binds: `HOST:PORT` as given (an IP address, so
/// that no name lookup decides which interface is exposed), or a bare
/// `PORT` on 127.0.0.1.
///
/// # Errors
/// Neither form, naming the flag and both forms.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    s.parse::<SocketAddr>().map_err(|_| {
        format!(
            "--metrics-listen: `{s}` is neither PORT (on 127.0.0.1) nor IP:PORT (e.g. 127.0.0.1:9464 or [::1]:9464)"
        )
    })
}

/// Binds `addr` for [`serve`].
///
/// # Errors
/// The address cannot be bound (taken, not local, no permission), naming
/// the flag and the address.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    let bound = std::net::TcpListener::bind(addr).and_then(|l| {
        l.set_nonblocking(true)?;
        TcpListener::from_std(l)
    });
    bound.map_err(|e| format!("--metrics-listen: cannot listen on {addr}: {e}"))
}

/// The metrics front; dropping it stops accepting.
pub struct MetricsListener {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MetricsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves the metrics on `listener` until the returned value is dropped.
pub fn serve(listener: TcpListener, service: Arc<LivekitService>, limits: Arc<Limits>) -> MetricsListener {
    let budget = Arc::new(Semaphore::new(limits.max_connections_read_only));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_header_bytes)
        // hyper refuses a buffer below 8 KiB.
        .max_buf_size(limits.max_header_bytes.max(8 * 1024));
    match listener.local_addr() {
        Ok(addr) => tracing::info!(%addr, "serving GET /metrics on TCP"),
        Err(e) => tracing::warn!(error = %e, "serving GET /metrics on TCP (address unknown)"),
    }
    let task = tokio::spawn(async move {
        let mut pause = ACCEPT_BACKOFF_MIN;
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => {
                    pause = ACCEPT_BACKOFF_MIN;
                    stream
                }
                Err(e) => {
                    // EMFILE and the like last a while and the listener stays
                    // readable: retrying at once would spin.
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(limits.accept_backoff_max);
                    continue;
                }
            };
            let Ok(slot) = budget.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let service = Arc::clone(&service);
            let conn = builder.serve_connection(
                TokioIo::new(stream),
                hyper::service::service_fn(move |req| {
                    let service = Arc::clone(&service);
                    async move { Ok::<_, Infallible>(answer(&service, &req)) }
                }),
            );
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "metrics connection ended with an error");
                }
                drop(slot);
            });
        }
    });
    MetricsListener { task }
}

fn answer(service: &LivekitService, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET || req.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "only GET /metrics is served here\n".into(),
        );
    }
    let format = Format::from_accept(req.headers().get(header::ACCEPT).map(|v| v.as_bytes()));
    match service.scrape_metrics(format) {
        Ok(text) => plain(StatusCode::OK, format.content_type(), text),
        Err(e) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            format!("{e}\n"),
        ),
    }
}

fn plain(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_port_is_loopback_and_an_address_is_taken_as_named() {
        assert_eq!(parse_addr("9464"), Ok("127.0.0.1:9464".parse().expect("addr")));
        assert_eq!(parse_addr("0.0.0.0:9464"), Ok("0.0.0.0:9464".parse().expect("addr")));
        assert_eq!(parse_addr("[::1]:9464"), Ok("[::1]:9464".parse().expect("addr")));
        for bad in ["localhost:9464", "", "99999", "1.2.3.4"] {
            let e = parse_addr(bad).expect_err(bad);
            assert!(e.contains("--metrics-listen"), "{e}");
        }
    }
}
