//! The token-chain probe: the proof behind `ready_for_tokens`.
//!
//! A token is obtained from the running lk-backend (`POST /token` with the
//! bearer mint secret, as a service allowed to mint would) and handed to the running livekit-server's
//! `/rtc/validate`, which runs LiveKit's own auth middleware and join
//! checks, as a browser's join is validated; nothing joins. lk-backend's
//! `GET /health` also says which `backend.env` it has loaded. Each leg is
//! a fresh loopback connection bounded in time and in answer size, so a
//! child that hangs or floods cannot stall the probe.

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::config::Secret;
use crate::loopback::{request, request_as};

/// Room and identity of the probe's token: recognisable in LiveKit's logs.
pub(crate) const PROBE_ROOM: &str = "hero_livekit-probe";
const PROBE_IDENTITY: &str = "hero_livekit-probe";
/// Longest LiveKit error text kept (it is one short line in practice).
const MAX_ERROR_TEXT: usize = 200;

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProbeOutcome {
    /// livekit-server accepted lk-backend's token.
    pub accepted: bool,
    /// livekit-server answered and refused the token (401): the two
    /// children hold different credentials. Other failures (a leg that does
    /// not answer) are the children's supervisors' to handle.
    pub refused: bool,
    /// Why not: LiveKit's own status and text, or the leg that failed.
    pub error: Option<String>,
    /// What lk-backend says it has loaded (`None`: it could not say).
    pub backend_sha256: Option<String>,
    pub latency: Duration,
}

/// livekit-server's answer on `/rtc/validate` for a good token whose room
/// does not exist (`room.auto_create: false`).
const ROOM_NOT_FOUND: &[u8] = b"requested room does not exist";

/// Runs the probe against lk-backend on `backend_port` (presenting
/// `mint_secret`, the config's) and livekit-server on `livekit_port`, both
/// on loopback, within `timeout`. An lk-backend that refuses the secret
/// (401: it runs another `backend.env`) fails the probe like any other
/// leg, never with the secret in the error.
pub(crate) async fn probe(
    backend_port: u16,
    livekit_port: u16,
    mint_secret: &Secret,
    timeout: Duration,
) -> ProbeOutcome {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut backend_sha256 = None;
    let mut refused = false;
    let result = async {
        backend_sha256 = backend_loaded(backend_port, deadline).await?;
        let ask = serde_json::json!({"room": PROBE_ROOM, "identity": PROBE_IDENTITY, "ttl_seconds": 60});
        let (status, body) = request_as(
            backend_port,
            http::Method::POST,
            "/token",
            Some(Bytes::from(ask.to_string())),
            Some(mint_secret.expose()),
            deadline,
        )
        .await
        .map_err(|e| format!("lk-backend POST /token: {e}"))?;
        if status != 200 {
            return Err(format!(
                "lk-backend POST /token answered {status}: {}",
                printable(&body)
            ));
        }
        let token = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("token")?.as_str().map(str::to_string))
            .ok_or_else(|| "lk-backend POST /token answered without a token".to_string())?;
        if !token.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            return Err("lk-backend POST /token answered a token that is not a JWT".into());
        }
        let path = format!("/rtc/validate?access_token={token}");
        let (status, body) = request(livekit_port, http::Method::GET, &path, None, deadline)
            .await
            .map_err(|e| format!("livekit-server GET /rtc/validate: {e}"))?;
        // 404 `requested room does not exist` is an acceptance too: LiveKit
        // looks the room up only after its auth middleware verified the
        // token's key, signature and lifetime, and with `room.auto_create`
        // off the probe's room never exists. Only LiveKit's own text counts,
        // so a stranger on the port answering 404 does not pass.
        if status == 200 || (status == 404 && body.starts_with(ROOM_NOT_FOUND)) {
            Ok(())
        } else {
            refused = status == 401;
            // LiveKit's own words, e.g. `401 invalid authorization token:
            // token signature is invalid`; they never hold the secret.
            Err(format!(
                "livekit-server refused lk-backend's token: {status} {}",
                printable(&body)
            ))
        }
    }
    .await;
    ProbeOutcome {
        accepted: result.is_ok(),
        refused,
        error: result.err(),
        backend_sha256,
        latency: started.elapsed(),
    }
}

/// Which `backend.env` lk-backend says it has loaded (`GET /health`'s
/// `config_sha256`; `None` when it cannot say).
///
/// # Errors
/// It did not answer 200 before `deadline`.
pub(crate) async fn backend_loaded(port: u16, deadline: Instant) -> Result<Option<String>, String> {
    let (status, body) = request(port, http::Method::GET, "/health", None, deadline)
        .await
        .map_err(|e| format!("lk-backend GET /health: {e}"))?;
    if status != 200 {
        return Err(format!("lk-backend GET /health answered {status}"));
    }
    Ok(serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("config_sha256")?.as_str().map(str::to_string)))
}

/// The body as one line of printable ASCII, shortened.
fn printable(body: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(body)
        .chars()
        .map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { ' ' })
        .collect();
    let text = text.trim();
    match text.char_indices().nth(MAX_ERROR_TEXT) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server answering each connection with the next canned response.
    async fn serve(listener: TcpListener, answers: Vec<&'static str>) {
        for answer in answers {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 4096];
            let _ = sock.read(&mut buf).await;
            let _ = sock.write_all(answer.as_bytes()).await;
        }
    }

    fn http(status: &str, body: &str) -> &'static str {
        Box::leak(
            format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_boxed_str(),
        )
    }

    fn mint() -> Secret {
        Secret::new("m1ntm1ntm1ntm1ntm1ntm1ntm1ntm1nt")
    }

    async fn listener() -> (TcpListener, u16) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        (l, port)
    }

    #[tokio::test]
    async fn a_refused_token_carries_livekits_own_text() {
        let (be, be_port) = listener().await;
        let (lk, lk_port) = listener().await;
        let be_task = tokio::spawn(serve(
            be,
            vec![
                http("200 OK", r#"{"status":"ok","api_key":"APIx","config_sha256":"abc"}"#),
                http("200 OK", r#"{"token":"aaa.bbb.ccc"}"#),
            ],
        ));
        let lk_task = tokio::spawn(serve(
            lk,
            vec![http(
                "401 Unauthorized",
                "invalid authorization token: token signature is invalid\n",
            )],
        ));
        let o = probe(be_port, lk_port, &mint(), Duration::from_secs(5)).await;
        assert!(!o.accepted);
        assert!(o.refused);
        assert_eq!(
            o.error.as_deref(),
            Some("livekit-server refused lk-backend's token: 401 invalid authorization token: token signature is invalid")
        );
        assert_eq!(o.backend_sha256.as_deref(), Some("abc"));
        be_task.await.expect("backend");
        lk_task.await.expect("livekit");
    }

    #[tokio::test]
    async fn an_accepted_token_passes() {
        let (be, be_port) = listener().await;
        let (lk, lk_port) = listener().await;
        let be_task = tokio::spawn(serve(
            be,
            vec![
                http("200 OK", r#"{"status":"ok","api_key":"APIx","config_sha256":null}"#),
                http("200 OK", r#"{"token":"aaa.bbb.ccc"}"#),
            ],
        ));
        let lk_task = tokio::spawn(serve(lk, vec![http("200 OK", "success")]));
        let o = probe(be_port, lk_port, &mint(), Duration::from_secs(5)).await;
        assert!(o.accepted, "{o:?}");
        assert_eq!(o.error, None);
        assert_eq!(o.backend_sha256, None, "a null hash is unknown");
        be_task.await.expect("backend");
        lk_task.await.expect("livekit");
    }

    #[tokio::test]
    async fn the_token_is_asked_for_with_the_mint_secret_and_a_refusal_fails_the_probe() {
        let (be, be_port) = listener().await;
        let be_task = tokio::spawn(async move {
            let mut seen = Vec::new();
            for answer in [
                http("200 OK", r#"{"status":"ok","api_key":"APIx","config_sha256":"abc"}"#),
                http(
                    "401 Unauthorized",
                    r#"{"error":"unauthorized","message":"authorization: needed"}"#,
                ),
            ] {
                let Ok((mut sock, _)) = be.accept().await else { break };
                let mut buf = vec![0u8; 4096];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                seen.push(String::from_utf8_lossy(&buf[..n]).to_string());
                let _ = sock.write_all(answer.as_bytes()).await;
            }
            seen
        });
        let o = probe(be_port, 1, &mint(), Duration::from_secs(5)).await;
        assert!(!o.accepted);
        assert!(
            !o.refused,
            "lk-backend's 401 is no verdict on the credentials livekit-server holds"
        );
        let error = o.error.expect("an error");
        assert!(error.starts_with("lk-backend POST /token answered 401"), "{error}");
        assert!(!error.contains(mint().expose()), "{error}");
        let seen = be_task.await.expect("backend");
        assert!(
            !seen[0].to_ascii_lowercase().contains("authorization"),
            "GET /health needs no secret"
        );
        assert!(
            seen[1].starts_with("POST /token")
                && seen[1].contains(&format!("authorization: Bearer {}", mint().expose())),
            "{}",
            seen[1]
        );
    }

    #[tokio::test]
    async fn a_silent_child_fails_the_probe_by_its_deadline() {
        let (be, be_port) = listener().await;
        // Accepts and never answers.
        let hold = tokio::spawn(async move {
            let _conn = be.accept().await;
            std::future::pending::<()>().await;
        });
        let started = Instant::now();
        let o = probe(be_port, 1, &mint(), Duration::from_millis(200)).await;
        assert!(!o.accepted);
        assert!(!o.refused, "silence is not a refusal");
        assert_eq!(o.error.as_deref(), Some("lk-backend GET /health: no answer in time"));
        assert!(started.elapsed() < Duration::from_secs(5));
        hold.abort();
    }

    #[test]
    fn error_text_is_printable_and_short() {
        assert_eq!(printable(b"bad\r\nthing\x07"), "bad  thing");
        let long = vec![b'x'; 500];
        assert_eq!(printable(&long).len(), MAX_ERROR_TEXT + 3);
    }
}
