//! HTTP/1.1 to a child on loopback: one fresh connection per request, so a
//! request never depends on the state a previous one left behind, bounded
//! in time and in answer size, so a child that hangs or floods cannot stall
//! its caller (the readiness probe, the token-chain probe).

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Largest answer body read from a child.
const MAX_BODY: usize = 64 * 1024;

/// One HTTP/1.1 request to `127.0.0.1:port`, answered before `deadline`.
pub(crate) async fn request(
    port: u16,
    method: http::Method,
    path: &str,
    body: Option<Bytes>,
    deadline: Instant,
) -> Result<(u16, Bytes), String> {
    match tokio::time::timeout_at(deadline, request_inner(port, method, path, body)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("no answer in time".into()),
    }
}

async fn request_inner(
    port: u16,
    method: http::Method,
    path: &str,
    body: Option<Bytes>,
) -> Result<(u16, Bytes), Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, format!("127.0.0.1:{port}"))
        .header(http::header::USER_AGENT, "hero_livekit_server-token-probe");
    if body.is_some() {
        req = req.header(http::header::CONTENT_TYPE, "application/json");
    }
    let req = req.body(Full::new(body.unwrap_or_default()))?;
    // The connection is driven beside the exchange; it ends with it.
    let conn = tokio::spawn(conn);
    let exchange = async {
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e })?
            .to_bytes();
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, body))
    };
    let result = exchange.await;
    conn.abort();
    result
}
