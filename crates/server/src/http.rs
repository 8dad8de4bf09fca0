//! The HTTP face of the socket: plain GET routes in front of jsonrpsee.
//!
//! jsonrpsee answers JSON-RPC over POST and upgrades WebSocket; this router
//! adds `GET /health`, `GET /openrpc.json` and
//! `GET /.well-known/heroservice.json`, refuses everything else with a
//! JSON 404/405, and stamps the connection's [`Peer`] into every request so
//! the methods can authorize the caller.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hero_livekit_proto::{method, ErrorCode};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use jsonrpsee::server::{HttpBody, HttpResponse};
use tower::util::BoxCloneService;
use tower::{Service, ServiceExt};

use crate::error::ServiceError;
use crate::peer::{Peer, PeerAccess};
use crate::service::LivekitService;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The per-connection jsonrpsee service, type-erased.
pub type RpcService = BoxCloneService<Request<HttpBody>, HttpResponse, BoxError>;

/// Routes one connection's requests.
#[derive(Clone)]
pub struct Router {
    pub rpc: RpcService,
    pub service: Arc<LivekitService>,
    pub peer: Peer,
}

impl Service<Request<Incoming>> for Router {
    type Response = HttpResponse;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        if req.method() == Method::POST && matches!(req.uri().path(), "/" | "/rpc") {
            req.extensions_mut().insert(this.peer);
            // hyper drops a request's future when its client hangs up (a read
            // EOF closes the connection), even before polling it once. Spawned
            // here, at once, a call whose request arrived runs to its end.
            let task = tokio::spawn(this.post(req));
            return Box::pin(async move { task.await? });
        }
        Box::pin(async move {
            let path = req.uri().path().to_string();
            let is_upgrade = req
                .headers()
                .get(header::UPGRADE)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
            match (req.method().clone(), path.as_str()) {
                (Method::GET, "/health") => Ok(this.get_health()),
                (Method::GET, "/openrpc.json") => Ok(this.readable(|s| json(StatusCode::OK, s.openrpc_bytes()))),
                (Method::GET, "/.well-known/heroservice.json") => {
                    Ok(this.readable(|s| json(StatusCode::OK, s.service_info_bytes())))
                }
                (Method::GET, "/" | "/rpc") if is_upgrade => {
                    req.extensions_mut().insert(this.peer);
                    let req = req.map(HttpBody::new);
                    this.rpc.oneshot(req).await
                }
                (_, "/" | "/rpc" | "/health" | "/openrpc.json" | "/.well-known/heroservice.json") => Ok(json(
                    StatusCode::METHOD_NOT_ALLOWED,
                    Bytes::from_static(br#"{"error":"method_not_allowed","message":"use POST for JSON-RPC, GET for /health, /openrpc.json and /.well-known/heroservice.json"}"#),
                )),
                _ => Ok(json(
                    StatusCode::NOT_FOUND,
                    Bytes::from_static(br#"{"error":"not_found","message":"routes: POST / or /rpc (JSON-RPC), GET /health, /openrpc.json, /.well-known/heroservice.json"}"#),
                )),
            }
        })
    }
}

impl Router {
    fn readable(&self, f: impl FnOnce(&LivekitService) -> HttpResponse) -> HttpResponse {
        if self.peer.access == PeerAccess::None {
            return json(
                StatusCode::FORBIDDEN,
                Bytes::from(format!(
                    r#"{{"error":"unauthorized","message":"uid {} may not read this daemon"}}"#,
                    self.peer.uid
                )),
            );
        }
        f(&self.service)
    }

    fn get_health(&self) -> HttpResponse {
        self.readable(|s| match s.health_json() {
            Ok((body, ready)) => {
                let status = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                json(status, Bytes::from(Box::<str>::from(body).into_boxed_bytes()))
            }
            Err(e) => json(
                StatusCode::INTERNAL_SERVER_ERROR,
                Bytes::from(serde_json::json!({"error": "internal", "message": e.to_string()}).to_string()),
            ),
        })
    }

    /// JSON-RPC over POST. A subscription cannot work over plain HTTP;
    /// jsonrpsee would answer a bare internal error, so a single call to the
    /// subscribe method gets a clear one instead.
    async fn post(self, req: Request<Incoming>) -> Result<HttpResponse, BoxError> {
        let (parts, body) = req.into_parts();
        let body = body.collect().await?.to_bytes();
        if memmem(&body, method::SUBSCRIBE_EVENTS.as_bytes()) {
            if let Ok(call) = serde_json::from_slice::<serde_json::Value>(&body) {
                if call.get("method").and_then(|m| m.as_str()) == Some(method::SUBSCRIBE_EVENTS) {
                    let err = ServiceError::new(
                        ErrorCode::WebSocketRequired,
                        "subscribe_events needs a WebSocket connection on the same socket",
                    )
                    .to_rpc();
                    let resp = serde_json::json!({"jsonrpc": "2.0", "id": call.get("id"), "error": err});
                    return Ok(json(StatusCode::OK, Bytes::from(serde_json::to_vec(&resp)?)));
                }
            }
        }
        let req = Request::from_parts(parts, HttpBody::new(http_body_util::Full::new(body)));
        self.rpc.oneshot(req).await
    }
}

fn memmem(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn json(status: StatusCode, body: Bytes) -> HttpResponse {
    let mut resp = Response::new(HttpBody::new(http_body_util::Full::new(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}
