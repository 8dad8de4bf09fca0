//! The HTTP face of the socket: plain GET routes and the request limits in
//! front of jsonrpsee.
//!
//! jsonrpsee answers JSON-RPC over POST and upgrades WebSocket; this router
//! adds `GET /health`, `GET /openrpc.json` and
//! `GET /.well-known/heroservice.json`, refuses everything else with a
//! JSON 404/405, and stamps the connection's [`Peer`] into every request so
//! the methods can authorize the caller.
//!
//! Before jsonrpsee sees a POST body, the router applies [`Limits`]:
//! `Content-Length` against `max_body_bytes` (413 before a byte is read),
//! then the body read through a counting limit and a deadline, then one
//! scan of the bytes read for nesting depth and batch length. A WebSocket
//! upgrade takes a slot of its class's WebSocket budget, held until the
//! session ends, and never a slot of the calls' connection budget.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hero_livekit_proto::{method, ErrorCode};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use jsonrpsee::server::{HttpBody, HttpResponse, StopHandle, TowerServiceBuilder};
use jsonrpsee::Methods;
use tokio::sync::Semaphore;
use tower::layer::util::Identity;
use tower::util::BoxCloneService;
use tower::{Service, ServiceExt};

use crate::error::ServiceError;
use crate::limits::{scan, Limits, Shape};
use crate::peer::{Peer, PeerAccess};
use crate::service::LivekitService;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The per-connection jsonrpsee service, type-erased.
pub type RpcService = BoxCloneService<Request<HttpBody>, HttpResponse, BoxError>;

/// What every connection's router shares: the service, the method table,
/// the limits and the WebSocket budgets.
pub struct Front {
    pub service: Arc<LivekitService>,
    pub methods: Methods,
    pub limits: Arc<Limits>,
    /// Builds the per-connection jsonrpsee service for an upgrade.
    pub ws_builder: TowerServiceBuilder<Identity, Identity>,
    pub stop: StopHandle,
    /// WebSocket budget of owners (`limits.max_websockets_full`).
    pub websockets_full: Arc<Semaphore>,
    /// WebSocket budget of read-only peers (`limits.max_websockets_read_only`).
    pub websockets_read_only: Arc<Semaphore>,
    /// The results the front answers itself (see [`crate::fastcall`]).
    pub direct: crate::fastcall::Direct,
}

impl Front {
    /// A front with its WebSocket budgets taken from `limits`.
    pub fn new(
        service: Arc<LivekitService>,
        methods: Methods,
        limits: Arc<Limits>,
        ws_builder: TowerServiceBuilder<Identity, Identity>,
        stop: StopHandle,
    ) -> Front {
        Front {
            websockets_full: Arc::new(Semaphore::new(limits.max_websockets_full)),
            websockets_read_only: Arc::new(Semaphore::new(limits.max_websockets_read_only)),
            direct: crate::fastcall::Direct::new(service.clone()),
            service,
            methods,
            limits,
            ws_builder,
            stop,
        }
    }

    fn websockets(&self, access: PeerAccess) -> &Arc<Semaphore> {
        match access {
            PeerAccess::Full => &self.websockets_full,
            PeerAccess::ReadOnly | PeerAccess::None => &self.websockets_read_only,
        }
    }
}

/// Routes one connection's requests.
#[derive(Clone)]
pub struct Router {
    /// This connection's jsonrpsee service for calls (built once per
    /// connection, so its requests share a connection id).
    pub rpc: RpcService,
    pub front: Arc<Front>,
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
                (Method::GET, "/metrics") => Ok(this.get_metrics(&req)),
                (Method::GET, "/openrpc.json") => {
                    Ok(this.readable(|s| json(StatusCode::OK, s.openrpc_bytes())))
                }
                (Method::GET, "/.well-known/heroservice.json") => {
                    Ok(this.readable(|s| json(StatusCode::OK, s.service_info_bytes())))
                }
                (Method::GET, "/" | "/rpc") if is_upgrade => {
                    req.extensions_mut().insert(this.peer);
                    this.upgrade(req).await
                }
                (_, "/" | "/rpc" | "/health" | "/metrics" | "/openrpc.json" | "/.well-known/heroservice.json") => Ok(json(
                    StatusCode::METHOD_NOT_ALLOWED,
                    Bytes::from_static(br#"{"error":"method_not_allowed","message":"use POST for JSON-RPC, GET for /health, /metrics, /openrpc.json and /.well-known/heroservice.json"}"#),
                )),
                _ => Ok(json(
                    StatusCode::NOT_FOUND,
                    Bytes::from_static(br#"{"error":"not_found","message":"routes: POST / or /rpc (JSON-RPC), GET /health, /metrics, /openrpc.json, /.well-known/heroservice.json"}"#),
                )),
            }
        })
    }
}

impl Router {
    fn readable(&self, f: impl FnOnce(&LivekitService) -> HttpResponse) -> HttpResponse {
        if self.peer.access == PeerAccess::None {
            // The accept loop answers such peers before any request; this
            // is the second line.
            return json(
                StatusCode::FORBIDDEN,
                Bytes::from(format!(
                    r#"{{"error":"unauthorized","message":"uid {} may not read this daemon"}}"#,
                    self.peer.uid
                )),
            );
        }
        f(&self.front.service)
    }

    fn get_health(&self) -> HttpResponse {
        // Peers that may not read never reach a router (the accept loop
        // answers them), so this counts documents served.
        self.front
            .service
            .metrics()
            .count_health(crate::metrics::HealthVia::Http);
        self.readable(|s| match s.health_json() {
            Ok((body, ready)) => {
                let status = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                json(status, Bytes::from_owner(body))
            }
            Err(e) => json(
                StatusCode::INTERNAL_SERVER_ERROR,
                Bytes::from(serde_json::json!({"error": "internal", "message": e.to_string()}).to_string()),
            ),
        })
    }

    /// The supervisor's metrics, in the format the scraper's `Accept` asks
    /// for; readable by read-only peers like `health`.
    fn get_metrics<B>(&self, req: &Request<B>) -> HttpResponse {
        let accept = req.headers().get(header::ACCEPT).map(|v| v.as_bytes());
        let format = crate::metrics::Format::from_accept(accept);
        self.readable(|s| match s.scrape_metrics(format) {
            Ok(text) => {
                let mut resp = json(StatusCode::OK, Bytes::from(text));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static(format.content_type()),
                );
                resp
            }
            Err(e) => limit_response(StatusCode::INTERNAL_SERVER_ERROR, "internal", &e.to_string()),
        })
    }

    /// A WebSocket upgrade: takes a slot of the peer's class WebSocket
    /// budget and holds it until the session ends (jsonrpsee tells when);
    /// over budget, 429 naming the limit. The HTTP connection it came on
    /// ends with the upgrade, which frees its slot of the calls' budget.
    async fn upgrade(self, req: Request<Incoming>) -> Result<HttpResponse, BoxError> {
        let Ok(slot) = self.front.websockets(self.peer.access).clone().try_acquire_owned() else {
            let (n, name) = self.front.limits.websockets(self.peer.access);
            // The client came to upgrade: nothing else will follow on this
            // connection, so it is closed rather than kept idle.
            return Ok(closing(limit_response(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_websockets",
                &format!("{n} WebSocket connections of this access class are open, the limit (limits.{name}); close one or use plain HTTP for calls"),
            )));
        };
        let mut ws = self
            .front
            .ws_builder
            .clone()
            .build(self.front.methods.clone(), self.front.stop.clone());
        let closed = ws.on_session_closed();
        let resp = ws.oneshot(req).await?;
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            tokio::spawn(async move {
                closed.await;
                drop(slot);
            });
        }
        Ok(resp)
    }

    /// JSON-RPC over POST, within the limits. A subscription cannot work
    /// over plain HTTP; jsonrpsee would answer a bare internal error, so a
    /// single call to the subscribe method gets a clear one instead.
    async fn post(self, req: Request<Incoming>) -> Result<HttpResponse, BoxError> {
        let limits = &self.front.limits;
        let (parts, body) = req.into_parts();
        let max = limits.max_body_bytes;
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max as u64) {
            return Ok(body_too_large(max));
        }
        let body = match tokio::time::timeout(limits.body_timeout, Limited::new(body, max).collect()).await {
            // The rest of the body may still come: the connection cannot
            // carry another request, so it is closed.
            Err(_) => {
                return Ok(closing(limit_response(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    &format!(
                        "the request body did not arrive within {} ms (limits.body_timeout)",
                        limits.body_timeout.as_millis()
                    ),
                )))
            }
            Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => return Ok(body_too_large(max)),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(collected)) => collected.to_bytes(),
        };
        match scan(&body, limits.max_json_depth, limits.max_batch_len) {
            Shape::Fine => {}
            Shape::TooDeep => {
                return Ok(rpc_limit_error(
                    "max_json_depth",
                    &format!(
                        "the request nests arrays and objects deeper than the {}-level limit (limits.max_json_depth)",
                        limits.max_json_depth
                    ),
                ))
            }
            Shape::BatchTooLong => {
                return Ok(rpc_limit_error(
                    "max_batch_len",
                    &format!(
                        "the batch holds more than the {}-call limit (limits.max_batch_len); split it",
                        limits.max_batch_len
                    ),
                ))
            }
        }
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
        if let Some(resp) = crate::fastcall::answer(&self.front.methods, &self.front.direct, &parts, &body) {
            return Ok(resp);
        }
        let req = Request::from_parts(parts, HttpBody::new(http_body_util::Full::new(body)));
        self.rpc.oneshot(req).await
    }
}

/// The connection closes after this response (`Connection: close`).
fn closing(mut resp: HttpResponse) -> HttpResponse {
    resp.headers_mut()
        .insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    resp
}

/// Status 413. The body is left unread, so the connection cannot carry another
/// request: it is closed.
fn body_too_large(max: usize) -> HttpResponse {
    closing(limit_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        &format!("request body exceeds the {max}-byte limit (limits.max_body_bytes)"),
    ))
}

/// An HTTP answer `{"error": <kind>, "message": <message>}`.
pub fn limit_response(status: StatusCode, kind: &str, message: &str) -> HttpResponse {
    let body = serde_json::json!({"error": kind, "message": message}).to_string();
    json(status, Bytes::from(body))
}

/// A JSON-RPC error for a request refused by a limit before it is parsed
/// (so its id is unknown): `-32600 Invalid Request`, the limit named in the
/// message and in `data.limit`.
fn rpc_limit_error(limit: &str, message: &str) -> HttpResponse {
    let resp = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {
            "code": -32600,
            "message": message,
            "data": {"kind": "limit", "limit": limit, "hint": "see the limits table in docs/operations.md", "retryable": false},
        },
    });
    json(StatusCode::OK, Bytes::from(resp.to_string()))
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
