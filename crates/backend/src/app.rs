//! The HTTP surface: `POST /token`, `GET /health`, and JSON errors for
//! everything else. Handlers are thin: decode, call the pure core, encode.

use std::sync::{Arc, RwLock};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::config::Credential;
use crate::limits::Limits;
use crate::mint::mint;
use crate::request::{parse_token_request, ErrorKind, InputError};

/// The credential in force, and the hash of the env file it came from.
/// A reload replaces the `Arc` under a short write lock; each request
/// clones the `Arc` once at its start and signs with that snapshot, so a
/// request in flight during a reload finishes with the credential it
/// started with and no request ever waits on file I/O.
#[derive(Debug)]
pub struct SharedCredential(RwLock<Arc<InForce>>);

/// What a request signs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InForce {
    /// Key, secret and URL.
    pub credential: Credential,
    /// sha256 of the env file whose every setting is in force, as `GET
    /// /health` reports it; `None` when the settings came from the
    /// environment or a reload could not apply all of the file (a new
    /// listen address needs a restart).
    pub config_sha256: Option<String>,
}

impl SharedCredential {
    /// Starts with `credential`, read from a file hashing to `config_sha256`.
    pub fn new(credential: Credential, config_sha256: Option<String>) -> SharedCredential {
        SharedCredential(RwLock::new(Arc::new(InForce {
            credential,
            config_sha256,
        })))
    }

    /// What is in force now.
    pub fn current(&self) -> Arc<InForce> {
        // A poisoned lock only means a writer panicked between two complete
        // `Arc`s; the value inside is still a whole credential.
        match self.0.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Puts a new credential in force for the requests that start from now on.
    pub fn replace(&self, credential: Credential, config_sha256: Option<String>) {
        let new = Arc::new(InForce {
            credential,
            config_sha256,
        });
        match self.0.write() {
            Ok(mut guard) => *guard = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }
}

/// What every handler sees.
#[derive(Debug, Clone)]
struct AppState {
    credential: Arc<SharedCredential>,
    limits: Arc<Limits>,
}

/// The service's router, enforcing the body limits of `limits` (the
/// connection-level ones are the accept loop's, in [`crate::serve`]).
pub fn router(credential: Arc<SharedCredential>, limits: Arc<Limits>) -> Router {
    Router::new()
        .route("/token", post(issue_token))
        .route("/health", get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(AppState { credential, limits })
}

/// A 4xx/5xx answer in the one shape every client can parse.
fn error_response(status: StatusCode, err: &InputError) -> Response {
    (
        status,
        Json(json!({"error": err.kind.as_str(), "message": err.message})),
    )
        .into_response()
}

fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorKind::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::InvalidJson
        | ErrorKind::InvalidType
        | ErrorKind::UnknownField
        | ErrorKind::MissingField
        | ErrorKind::InvalidValue => StatusCode::BAD_REQUEST,
    }
}

impl IntoResponse for InputError {
    fn into_response(self) -> Response {
        let mut response = error_response(status_of(self.kind), &self);
        if self.kind == ErrorKind::Unauthorized {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        if self.kind == ErrorKind::BodyTimeout {
            // The rest of the body may still come: the connection cannot
            // carry another request, so hyper is told to close it.
            response
                .headers_mut()
                .insert(header::CONNECTION, header::HeaderValue::from_static("close"));
        }
        response
    }
}

async fn issue_token(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, InputError> {
    // Who may mint comes first: a caller without the secret learns nothing
    // else (not whether its body would have been valid), and its body is
    // not even read.
    let in_force = state.credential.current();
    authorize(&headers, &in_force.credential)?;
    check_json_content_type(&headers)?;
    let bytes = read_limited(&state.limits, &headers, body).await?;
    let req = parse_token_request(&bytes)?;
    match mint(&in_force.credential, &req) {
        Ok(issued) => {
            tracing::debug!(room = %req.room, identity = %req.identity, "token issued");
            Ok(Json(issued).into_response())
        }
        Err(e) => {
            tracing::error!(error = %e, "token signing failed");
            Err(InputError::field(
                ErrorKind::Internal,
                "token",
                "could not be signed; see the lk-backend log",
            ))
        }
    }
}

/// Whether the request carries `Authorization: Bearer <MINT_SECRET>`.
/// The comparison is of the two values' SHA-256 digests, byte by byte
/// without an early exit, so that neither the time taken nor a length
/// says anything about the secret.
fn authorize(headers: &HeaderMap, credential: &Credential) -> Result<(), InputError> {
    let presented = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()).and_then(|v| {
        let (scheme, rest) = v.split_at_checked(7)?;
        scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
    });
    let ok = presented.is_some_and(|p| same_secret(p, credential.mint_secret.expose().as_bytes()));
    if ok {
        return Ok(());
    }
    // Never the header's value: it may be a secret meant for something else.
    tracing::debug!(
        presented = presented.is_some(),
        "POST /token refused: no bearer secret, or not the mint secret"
    );
    Err(InputError::field(
        ErrorKind::Unauthorized,
        "authorization",
        "POST /token needs `Authorization: Bearer <MINT_SECRET of backend.env>` (`hero_livekit backend-token` prints it)",
    ))
}

/// Equality of two secrets in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `application/json`, with or without parameters such as `charset`.
fn check_json_content_type(headers: &HeaderMap) -> Result<(), InputError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if is_json {
        Ok(())
    } else {
        Err(InputError::field(
            ErrorKind::UnsupportedMediaType,
            "content-type",
            "must be application/json",
        ))
    }
}

async fn read_limited(limits: &Limits, headers: &HeaderMap, body: Body) -> Result<bytes::Bytes, InputError> {
    let max = limits.max_body_bytes;
    let too_large = || {
        InputError::field(
            ErrorKind::PayloadTooLarge,
            "body",
            format_args!("must be at most {max} bytes (limits.max_body_bytes)"),
        )
    };
    // A declared length over the limit is refused before reading a byte.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(limits.body_timeout, Limited::new(body, max).collect()).await {
        Err(_) => Err(InputError::field(
            ErrorKind::BodyTimeout,
            "body",
            format_args!(
                "did not arrive within {} ms of the request head (limits.body_timeout)",
                limits.body_timeout.as_millis()
            ),
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(InputError::field(
            ErrorKind::InvalidJson,
            "body",
            format_args!("could not be read: {e}"),
        )),
    }
}

async fn health(State(state): State<AppState>) -> Response {
    let in_force = state.credential.current();
    Json(json!({
        "status": "ok",
        "api_key": in_force.credential.api_key,
        "config_sha256": in_force.config_sha256,
    }))
    .into_response()
}

async fn not_found(method: Method, uri: Uri) -> InputError {
    InputError::field(
        ErrorKind::NotFound,
        "path",
        format_args!("no route for {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> InputError {
    InputError::field(
        ErrorKind::MethodNotAllowed,
        "method",
        format_args!("{method} is not allowed on {}", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential() -> Credential {
        Credential {
            api_key: "APIabc".into(),
            api_secret: crate::config::ApiSecret::new("s3cretS3cretS3cretS3cretS3cretS3cret".into()),
            url: "ws://127.0.0.1:7880".into(),
            mint_secret: crate::config::ApiSecret::new("m1ntm1ntm1ntm1ntm1ntm1ntm1ntm1nt".into()),
        }
    }

    fn with_auth(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().expect("header value"));
        h
    }

    #[test]
    fn only_the_mint_secret_as_a_bearer_may_mint() {
        let c = credential();
        assert!(authorize(&with_auth("Bearer m1ntm1ntm1ntm1ntm1ntm1ntm1ntm1nt"), &c).is_ok());
        assert!(authorize(&with_auth("bearer m1ntm1ntm1ntm1ntm1ntm1ntm1ntm1nt"), &c).is_ok());
        for refused in [
            "Bearer m1ntm1ntm1ntm1ntm1ntm1ntm1ntm1nx",
            "Bearer m1ntm1ntm1ntm1ntm1ntm1ntm1ntm1nt ",
            "Bearer m1ntm1ntm1ntm1ntm1ntm1ntm1ntm1n",
            "Bearer ",
            "Bearer",
            "Basic m1ntm1ntm1ntm1ntm1ntm1ntm1ntm1nt",
            "m1ntm1ntm1ntm1ntm1ntm1ntm1ntm1nt",
            "Bearer s3cretS3cretS3cretS3cretS3cretS3cret",
        ] {
            let e = authorize(&with_auth(refused), &c).expect_err(refused);
            assert_eq!(e.kind, ErrorKind::Unauthorized, "{refused}");
            assert!(!e.message.contains("m1nt"), "{}", e.message);
        }
        assert!(authorize(&HeaderMap::new(), &c).is_err());
    }
}
