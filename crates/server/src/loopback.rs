//! HTTP/1.1 to a child on loopback: one fresh connection per request, so a
//! request never depends on the state a previous one left behind, bounded
//! in time and in answer size, so a child that hangs or floods cannot stall
//! its caller (the readiness probe, the token-chain probe).
//!
//! The body of an answer that is not a success has every JWT in it
//! redacted before any caller sees it: livekit-server 1.13.5 echoes the
//! token it refused in its 401 text, and callers quote that text in
//! health, events and logs. A success body is the caller's data (lk-backend's
//! `POST /token` answers with the token the probe needs) and is kept whole.

use std::borrow::Cow;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Largest answer body read from a child.
const MAX_BODY: usize = 64 * 1024;

/// One HTTP/1.1 request to `127.0.0.1:port`, answered before `deadline`;
/// the body of an answer outside 2xx comes back with its JWTs redacted.
pub(crate) async fn request(
    port: u16,
    method: http::Method,
    path: &str,
    body: Option<Bytes>,
    deadline: Instant,
) -> Result<(u16, Bytes), String> {
    request_as(port, method, path, body, None, deadline).await
}

/// [`request`] presenting `bearer` as `Authorization: Bearer <it>` (lk-backend's
/// mint secret); the secret never appears in what comes back.
pub(crate) async fn request_as(
    port: u16,
    method: http::Method,
    path: &str,
    body: Option<Bytes>,
    bearer: Option<&str>,
    deadline: Instant,
) -> Result<(u16, Bytes), String> {
    match tokio::time::timeout_at(deadline, request_inner(port, method, path, body, bearer)).await {
        Ok(Ok((status, body))) => Ok((status, redact_unless_success(status, body))),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer in time".into()),
    }
}

fn redact_unless_success(status: u16, body: Bytes) -> Bytes {
    if (200..300).contains(&status) {
        return body;
    }
    match crate::redact::redact_bytes(&body) {
        Cow::Borrowed(_) => body,
        Cow::Owned(clean) => Bytes::from(clean),
    }
}

async fn request_inner(
    port: u16,
    method: http::Method,
    path: &str,
    body: Option<Bytes>,
    bearer: Option<&str>,
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
    if let Some(secret) = bearer {
        let mut value = http::HeaderValue::try_from(format!("Bearer {secret}"))
            .map_err(|_| "the mint secret is not a valid header value")?;
        value.set_sensitive(true);
        req = req.header(http::header::AUTHORIZATION, value);
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJBUElrZXkifQ.c2lnbmF0dXJl";

    /// One connection answered with `status` and `body`.
    async fn answer_once(status: &str, body: String) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        let answer = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        tokio::spawn(async move {
            if let Ok((mut sock, _)) = l.accept().await {
                let mut buf = vec![0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let _ = sock.write_all(answer.as_bytes()).await;
            }
        });
        port
    }

    async fn get(port: u16) -> (u16, Bytes) {
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        request(port, http::Method::GET, "/", None, deadline)
            .await
            .expect("answered")
    }

    #[tokio::test]
    async fn a_refusal_that_echoes_the_token_comes_back_without_it() {
        let port = answer_once(
            "401 Unauthorized",
            format!("invalid token: {JWT}, error: token signature is invalid: signature is invalid"),
        )
        .await;
        let (status, body) = get(port).await;
        assert_eq!(status, 401);
        assert_eq!(
            &body[..],
            b"invalid token: [redacted JWT], error: token signature is invalid: signature is invalid"
        );
    }

    #[tokio::test]
    async fn a_success_keeps_the_token_it_carries() {
        let port = answer_once("200 OK", format!("{{\"token\":\"{JWT}\"}}")).await;
        let (status, body) = get(port).await;
        assert_eq!(status, 200);
        assert_eq!(body, Bytes::from(format!("{{\"token\":\"{JWT}\"}}")));
    }
}
