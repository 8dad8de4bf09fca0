//! The daemon's domain error and its mapping to JSON-RPC error objects.
//!
//! Every error that leaves the daemon carries a stable code, a message that
//! says what happened, and `data: {kind, hint, retryable}` where the hint is
//! the operator's next step. Messages are built by the modules that know the
//! cause; none of them ever contains a secret.

use hero_livekit_proto::errors::INVALID_PARAMS;
use hero_livekit_proto::{ErrorCode, ErrorData};
use jsonrpsee::types::ErrorObjectOwned;

/// A failure of a method, as the caller will see it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ServiceError {
    pub kind: ErrorKind,
    pub message: String,
    /// Overrides the code's default hint when the call site knows better.
    pub hint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// -32602, naming the offending field.
    InvalidParams {
        field: String,
    },
    Domain(ErrorCode),
}

impl ServiceError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ServiceError {
            kind: ErrorKind::Domain(code),
            message: message.into(),
            hint: None,
        }
    }

    /// An invalid parameter; `rule` says what the field must be.
    pub fn invalid(field: impl Into<String>, rule: impl std::fmt::Display) -> Self {
        let field = field.into();
        ServiceError {
            message: format!("invalid params: {field}: {rule}"),
            kind: ErrorKind::InvalidParams { field },
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The domain code, when this is not a parameter error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self.kind {
            ErrorKind::Domain(c) => Some(c),
            ErrorKind::InvalidParams { .. } => None,
        }
    }

    /// The JSON-RPC error object sent on the wire.
    pub fn to_rpc(&self) -> ErrorObjectOwned {
        let (code, data) = match &self.kind {
            ErrorKind::InvalidParams { field } => (
                INVALID_PARAMS,
                ErrorData {
                    kind: "invalid_params".into(),
                    hint: self
                        .hint
                        .clone()
                        .unwrap_or_else(|| format!("fix `{field}` as the message says and call again")),
                    retryable: false,
                    field: Some(field.clone()),
                },
            ),
            ErrorKind::Domain(c) => (
                c.code(),
                ErrorData {
                    kind: c.kind().into(),
                    hint: self.hint.clone().unwrap_or_else(|| c.default_hint().into()),
                    retryable: c.retryable(),
                    field: None,
                },
            ),
        };
        ErrorObjectOwned::owned(code, self.message.clone(), Some(data))
    }
}

impl From<ServiceError> for ErrorObjectOwned {
    fn from(e: ServiceError) -> Self {
        e.to_rpc()
    }
}
