//! Typed client of the hero_livekit daemon.
//!
//! Calls go over HTTP/1.1 on the Unix socket with one kept-alive connection
//! (the cheapest transport measured); event subscriptions use a WebSocket
//! on the same socket. Both speak the types of [`hero_livekit_proto`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use hero_livekit_proto::{self as proto, method, ErrorCode, ErrorData, EventMessage};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use jsonrpsee::core::client::{Subscription, SubscriptionClientT};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::net::UnixStream;
use tokio::sync::Mutex;

pub use hero_livekit_proto as wire;

/// How to upgrade a daemon that is older than this client. The children
/// survive the daemon's restart, so upgrading it costs no outage.
pub const UPGRADE_ADVICE: &str = "Upgrade the daemon: install the new hero_livekit_server binary and restart it \
(`systemctl restart hero_livekit`, `zinit restart hero_livekit`, or SIGTERM it and run `hero_livekit up`); \
livekit-server and lk-backend keep running and are re-adopted";

/// What can go wrong talking to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers on the socket.
    #[error("no hero_livekit daemon answers on {socket}: {source}. Start one with `hero_livekit up` or `hero_livekit_server --socket {socket}`")]
    NotRunning { socket: PathBuf, source: std::io::Error },
    /// The socket exists but this user may not connect to it.
    #[error("permission denied on {socket}: {source}. The socket belongs to the daemon's user: run the command as that user or as root, or start the daemon with `--socket-group G` and join G for the read-only commands (health, logs, events)")]
    PermissionDenied { socket: PathBuf, source: std::io::Error },
    /// The daemon answered with a JSON-RPC error.
    #[error("{message}")]
    Rpc {
        code: i32,
        message: String,
        data: Option<ErrorData>,
    },
    /// The daemon does not know the method: it is older than this client.
    #[error("the daemon on {socket} does not know `{method}`: it is older than this client (protocol {client_protocol}). {advice}", advice = UPGRADE_ADVICE)]
    DaemonTooOld {
        socket: PathBuf,
        method: String,
        client_protocol: u32,
    },
    /// The daemon speaks an older protocol and its answer does not decode
    /// into this client's types.
    #[error("the daemon on {socket} is older than this client: it speaks protocol {daemon_protocol} (version {daemon_version}), this client protocol {client_protocol}, and its answer does not read as this client expects ({detail}). {advice}", advice = UPGRADE_ADVICE)]
    DaemonOutdated {
        socket: PathBuf,
        daemon_protocol: u32,
        daemon_version: String,
        client_protocol: u32,
        detail: String,
    },
    /// The exchange broke at the HTTP or JSON level.
    #[error("talking to the daemon on {socket}: {detail}")]
    Transport { socket: PathBuf, detail: String },
    /// Refused by the CLI itself, or by a service other than the daemon
    /// (lk-backend for `token`): what was wrong, the next step, and a
    /// stable kind for scripts.
    #[error("{message}")]
    Refused {
        kind: &'static str,
        message: String,
        hint: String,
    },
}

impl ClientError {
    /// The next step for the operator: the daemon's own hint when it sent
    /// one, else one for what failed here. Every failure has one, so that
    /// every refusal the CLI prints ends with a `hint:` line.
    pub fn hint(&self) -> &str {
        match self {
            ClientError::Rpc { data: Some(d), .. } if !d.hint.is_empty() => d.hint.as_str(),
            ClientError::Rpc { .. } => "run `hero_livekit health` and read the daemon's log for the cause",
            ClientError::NotRunning { .. } => {
                "start the daemon with `hero_livekit up`, or point this CLI at the running one with `--root DIR` (or `PATH_ROOT=DIR`) or `--socket PATH`"
            }
            ClientError::PermissionDenied { .. } => {
                "run the command as the daemon's user or as root, or have the daemon started with `--socket-group G` and join G"
            }
            ClientError::DaemonTooOld { .. } | ClientError::DaemonOutdated { .. } => UPGRADE_ADVICE,
            ClientError::Transport { .. } => {
                "run `hero_livekit health`; if it fails the same way, read the daemon's log (`journalctl -u hero_livekit`, or <root>/var/hero_livekit/logs/hero_livekit_server.log when `up` started it)"
            }
            ClientError::Refused { hint, .. } => hint.as_str(),
        }
    }

    /// The domain code, when the daemon returned one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Rpc { code, .. } => ErrorCode::from_code(*code),
            _ => None,
        }
    }

    /// A stable machine-readable kind for every failure, so scripts can
    /// branch also on the ones that never reached the daemon: the daemon's
    /// `data.kind`, or `not_running`, `permission_denied`, `daemon_too_old`,
    /// `transport`.
    pub fn kind(&self) -> &str {
        match self {
            ClientError::Rpc { data: Some(d), .. } => &d.kind,
            ClientError::Rpc { code, .. } => ErrorCode::from_code(*code).map_or("rpc_error", ErrorCode::kind),
            ClientError::NotRunning { .. } => "not_running",
            ClientError::PermissionDenied { .. } => "permission_denied",
            ClientError::DaemonTooOld { .. } | ClientError::DaemonOutdated { .. } => "daemon_too_old",
            ClientError::Transport { .. } => "transport",
            ClientError::Refused { kind, .. } => kind,
        }
    }
}

/// A client bound to one socket. Cheap to create; connects lazily and keeps
/// the connection for later calls.
pub struct Client {
    socket: PathBuf,
    conn: Mutex<Option<SendRequest<Full<Bytes>>>>,
    next_id: AtomicU64,
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Client {
            socket: socket.into(),
            conn: Mutex::new(None),
            next_id: AtomicU64::new(1),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn transport(&self, detail: impl std::fmt::Display) -> ClientError {
        ClientError::Transport {
            socket: self.socket.clone(),
            detail: detail.to_string(),
        }
    }

    /// A failed connect: nobody listens, or somebody does and refuses us.
    fn connect_error(&self, source: std::io::Error) -> ClientError {
        let socket = self.socket.clone();
        if source.kind() == std::io::ErrorKind::PermissionDenied {
            ClientError::PermissionDenied { socket, source }
        } else {
            ClientError::NotRunning { socket, source }
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| self.connect_error(e))?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.transport(with_causes(&e)))?;
        tokio::spawn(async move {
            // Ends when the daemon closes the connection; nothing to report.
            let _ = conn.await;
        });
        Ok(send)
    }

    /// One HTTP request on the kept-alive connection, reconnecting once if
    /// the daemon closed it (it closes idle connections after a while).
    async fn http(&self, req: http::Request<Full<Bytes>>) -> Result<(http::StatusCode, Bytes), ClientError> {
        let mut guard = self.conn.lock().await;
        for attempt in 0..2 {
            let mut send = match guard.take() {
                Some(s) if !s.is_closed() => s,
                _ => self.connect().await?,
            };
            if send.ready().await.is_err() {
                continue;
            }
            match send.send_request(req.clone()).await {
                Ok(resp) => {
                    let status = resp.status();
                    let body = resp
                        .into_body()
                        .collect()
                        .await
                        .map_err(|e| self.transport(with_causes(&e)))?
                        .to_bytes();
                    *guard = Some(send);
                    return Ok((status, body));
                }
                Err(e) if attempt == 0 && (e.is_canceled() || e.is_closed() || e.is_incomplete_message()) => continue,
                Err(e) => return Err(self.transport(with_causes(&e))),
            }
        }
        Err(self.transport("the daemon closed the connection twice"))
    }

    /// `GET path` on the socket (e.g. `/health`), returning status and body.
    ///
    /// # Errors
    /// [`ClientError::NotRunning`] when nothing answers.
    pub async fn get(&self, path: &str) -> Result<(http::StatusCode, Bytes), ClientError> {
        let req = http::Request::get(path)
            .header(http::header::HOST, "localhost")
            .body(Full::new(Bytes::new()))
            .map_err(|e| self.transport(e))?;
        self.http(req).await
    }

    /// Calls `method` with by-name `params` and decodes the result.
    ///
    /// # Errors
    /// The daemon's error (code, message, hint), or a transport failure.
    pub async fn call<P: Serialize, R: DeserializeOwned>(&self, method: &str, params: &P) -> Result<R, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body =
            serde_json::to_vec(&serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
                .map_err(|e| self.transport(e))?;
        let req = http::Request::post("/rpc")
            .header(http::header::HOST, "localhost")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| self.transport(e))?;
        let (status, body) = self.http(req).await?;
        let resp: Value = serde_json::from_slice(&body)
            .map_err(|e| self.transport(format!("HTTP {status}: undecodable response ({e})")))?;
        if let Some(err) = resp.get("error") {
            let code = err.get("code").and_then(Value::as_i64).unwrap_or(0) as i32;
            if code == -32601 {
                return Err(ClientError::DaemonTooOld {
                    socket: self.socket.clone(),
                    method: method.to_string(),
                    client_protocol: proto::PROTOCOL,
                });
            }
            return Err(ClientError::Rpc {
                code,
                message: err
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error")
                    .to_string(),
                data: err.get("data").and_then(|d| serde_json::from_value(d.clone()).ok()),
            });
        }
        let result = resp.get("result").cloned().unwrap_or(Value::Null);
        serde_json::from_value(result).map_err(|e| self.transport(format!("unexpected result shape: {e}")))
    }

    pub async fn install(&self, p: &proto::InstallParams) -> Result<proto::InstallResult, ClientError> {
        self.call(method::INSTALL, p).await
    }
    pub async fn configure(&self, p: &proto::ConfigureParams) -> Result<proto::ConfigureResult, ClientError> {
        self.call(method::CONFIGURE, p).await
    }
    pub async fn start(&self, p: &proto::StartParams) -> Result<proto::StartResult, ClientError> {
        self.call(method::START, p).await
    }
    pub async fn stop(&self, p: &proto::StopParams) -> Result<proto::StopResult, ClientError> {
        self.call(method::STOP, p).await
    }
    pub async fn restart(&self, p: &proto::RestartParams) -> Result<proto::RestartResult, ClientError> {
        self.call(method::RESTART, p).await
    }
    /// The health document.
    ///
    /// # Errors
    /// As [`Client::call`]; [`ClientError::DaemonOutdated`] when an older
    /// daemon's document lacks what this client reads, so the operator is
    /// told to upgrade rather than shown a decoding error.
    pub async fn health(&self) -> Result<proto::Health, ClientError> {
        let doc: Value = self.call(method::HEALTH, &proto::NoParams {}).await?;
        <proto::Health as serde::Deserialize>::deserialize(&doc).map_err(|e| {
            // A daemon from before the `protocol` field is protocol 0.
            let daemon_protocol = doc
                .get("protocol")
                .and_then(Value::as_u64)
                .map_or(0, |p| u32::try_from(p).unwrap_or(u32::MAX));
            if daemon_protocol < proto::PROTOCOL {
                ClientError::DaemonOutdated {
                    socket: self.socket.clone(),
                    daemon_protocol,
                    daemon_version: doc
                        .get("version")
                        .and_then(Value::as_str)
                        .unwrap_or("unknown")
                        .to_string(),
                    client_protocol: proto::PROTOCOL,
                    detail: e.to_string(),
                }
            } else {
                self.transport(format!("unexpected health document: {e}"))
            }
        })
    }
    pub async fn logs(&self, p: &proto::LogsParams) -> Result<proto::LogsResult, ClientError> {
        self.call(method::LOGS, p).await
    }
    pub async fn config_show(&self) -> Result<proto::ConfigShowResult, ClientError> {
        self.call(method::CONFIG_SHOW, &proto::NoParams {}).await
    }
    pub async fn discover(&self) -> Result<Value, ClientError> {
        self.call(method::DISCOVER, &proto::NoParams {}).await
    }

    /// Opens a WebSocket on the socket and subscribes to the event stream.
    ///
    /// # Errors
    /// Connection, handshake or subscription refusal.
    pub async fn subscribe_events(&self) -> Result<EventStream, ClientError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| self.connect_error(e))?;
        let url = url::Url::parse("ws://localhost/").map_err(|e| self.transport(e))?;
        let (tx, rx) = jsonrpsee::client_transport::ws::WsTransportClientBuilder::default()
            .build_with_stream(url, stream)
            .await
            .map_err(|e| self.transport(e))?;
        let client = jsonrpsee::core::client::ClientBuilder::default().build_with_tokio(tx, rx);
        let sub: Subscription<EventMessage> = client
            .subscribe(
                method::SUBSCRIBE_EVENTS,
                jsonrpsee::rpc_params![],
                method::UNSUBSCRIBE_EVENTS,
            )
            .await
            .map_err(|e| match e {
                jsonrpsee::core::client::Error::Call(obj) => ClientError::Rpc {
                    code: obj.code(),
                    message: obj.message().to_string(),
                    data: obj.data().and_then(|d| serde_json::from_str(d.get()).ok()),
                },
                other => self.transport(other),
            })?;
        Ok(EventStream { _client: client, sub })
    }
}

/// A live event subscription. Dropping it unsubscribes.
pub struct EventStream {
    _client: jsonrpsee::core::client::Client,
    sub: Subscription<EventMessage>,
}

impl EventStream {
    /// The next event; `None` when the daemon closed the stream.
    pub async fn next(&mut self) -> Option<EventMessage> {
        loop {
            match self.sub.next().await? {
                Ok(m) => return Some(m),
                // An event of a newer daemon this client cannot decode: skip it.
                Err(_) => continue,
            }
        }
    }
}

pub use hero_livekit_proto::paths::{resolve_root, resolve_socket};

/// An error with its causes: hyper's own message ("connection error") says
/// nothing without the I/O error underneath.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
