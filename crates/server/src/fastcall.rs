//! A single JSON-RPC call to a synchronous method (`health`,
//! `rpc.discover`), or to a method that does not exist, answered without
//! jsonrpsee's per-request HTTP service.
//!
//! That service, built for each request, boxes the body, inserts the
//! connection guard into the request, reads the body already read by the
//! front into a second buffer and parses it: for the calls services make
//! before every token, that was as much CPU as the method itself. Here the
//! body the front has read (and scanned against the limits) is parsed
//! once and handed to the very callback jsonrpsee registered for the
//! method, whose answer is turned into HTTP by jsonrpsee's own helper. So
//! the id, the params, authorization (inside the method, from the
//! request's [`crate::peer::Peer`]), errors and the response bytes are
//! jsonrpsee's, as on the general path. Everything else goes the general
//! way: batches, notifications, anything that does not parse as one
//! request, a content type jsonrpsee would refuse, and every async method
//! and subscription (the mutations among them).

use std::sync::Arc;

use bytes::Bytes;
use hero_livekit_proto::{method, NoParams};
use http::header;
use http::request::Parts;
use http::Extensions;
use jsonrpsee::server::http::{is_json, response};
use jsonrpsee::server::{HttpBody, HttpResponse, MethodCallback, MethodResponse, Methods};
use jsonrpsee::types::{ErrorCode, ErrorObject, Id, Params, Request};

use crate::limits::MAX_RESPONSE_BODY_BYTES;
use crate::rpc::{authorize, parse_params};
use crate::service::{HealthJson, LivekitService};

/// jsonrpsee looks this far into a body for the `{` or `[` that starts it.
const LEADING_WHITESPACE_SCAN: usize = 128;

/// The results given as ready bytes: `health` (the memo) and
/// `rpc.discover` (the document serialized once).
pub struct Direct {
    service: Arc<LivekitService>,
    discover: Bytes,
}

impl Direct {
    pub fn new(service: Arc<LivekitService>) -> Direct {
        // The bytes `GET /openrpc.json` serves: the document serialized
        // once by the serializer jsonrpsee's callback uses (`to_raw_value`),
        // so the same bytes, held once.
        let discover = service.openrpc_bytes();
        Direct { service, discover }
    }

    /// The result of a successful call of `method`, checked as its
    /// registered callback checks it (authorization, then params); `None`
    /// for another method or on any error, which the callback then
    /// answers with jsonrpsee's error object.
    fn result(&self, method: &str, params: &Params<'_>, ext: &Extensions) -> Option<Ready> {
        match method {
            method::HEALTH => {
                authorize(ext, method::HEALTH).ok()?;
                // `{}` is what callers send: NoParams is the empty object,
                // so only other params need the parser.
                if params.as_str().map(str::trim) != Some("{}") {
                    parse_params::<NoParams>(params).ok()?;
                }
                let (json, _) = self.service.health_json().ok()?;
                // Counted as the registered callback counts it.
                self.service.metrics().count_health(crate::metrics::HealthVia::Rpc);
                Some(Ready::Health(json))
            }
            method::DISCOVER => {
                authorize(ext, method::DISCOVER).ok()?;
                Some(Ready::Discover(self.discover.clone()))
            }
            _ => None,
        }
    }
}

/// A result as ready bytes.
enum Ready {
    Health(HealthJson),
    Discover(Bytes),
}

impl AsRef<[u8]> for Ready {
    fn as_ref(&self) -> &[u8] {
        match self {
            Ready::Health(h) => h.as_ref(),
            Ready::Discover(b) => b,
        }
    }
}

/// The answer to `body` when it is one call that can be answered at once;
/// `None` when the general path must take it.
pub fn answer(methods: &Methods, direct: &Direct, parts: &Parts, body: &[u8]) -> Option<HttpResponse> {
    if !is_json(parts.headers.get(header::CONTENT_TYPE)) {
        return None;
    }
    let start = body
        .iter()
        .take(LEADING_WHITESPACE_SCAN)
        .position(|b| !b.is_ascii_whitespace())?;
    if body[start] != b'{' {
        return None;
    }
    let Request { id, method, params, .. } = serde_json::from_slice(&body[start..]).ok()?;
    let params = Params::new(params.as_ref().map(|p| p.get()));
    if let Some(result) = direct.result(&method, &params, &parts.extensions) {
        return Some(spliced(&id, result.as_ref()));
    }
    let rp = match methods.method_with_name(&method) {
        None => MethodResponse::error(id, ErrorObject::from(ErrorCode::MethodNotFound)),
        Some((_, MethodCallback::Sync(callback))) => {
            callback(id, params, MAX_RESPONSE_BODY_BYTES as usize, parts.extensions.clone())
        }
        Some(_) => return None,
    };
    Some(response::from_method_response(rp))
}

/// `{"jsonrpc":"2.0","id":<id>,"result":<result>}`, the bytes jsonrpsee's
/// `Response` serializes to, as jsonrpsee's HTTP answer: written straight
/// into one buffer, where jsonrpsee's path serializes the result, then
/// re-parses the whole answer to check it is JSON.
fn spliced(id: &Id<'_>, result: &[u8]) -> HttpResponse {
    let mut out = Vec::with_capacity(result.len() + 64);
    out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    // An id was parsed from JSON: writing it back cannot fail.
    if serde_json::to_writer(&mut out, id).is_err() {
        out.extend_from_slice(b"null");
    }
    out.extend_from_slice(br#","result":"#);
    out.extend_from_slice(result);
    out.push(b'}');
    response::ok_response(HttpBody::new(http_body_util::Full::new(Bytes::from(out))))
}
