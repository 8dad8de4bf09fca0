//! Every conversation with Redis, through the `redis` crate (SPEC section 11).
//!
//! livekit-server connects to Redis at startup and exits when it cannot, so
//! an operator who configured Redis needs to see in `health` whether it
//! answers, before blaming the supervisor. [`ping`] is that check, run by a
//! background task: `health` only reads its last result and never waits on
//! the network.
//!
//! The same target serves the rest of the daemon (the cluster credential):
//! - [`RedisTarget::from_config`]: where and how to connect, `None` when no
//!   Redis is configured; LiveKit's precedence (Sentinel, then Cluster,
//!   then the address), its credentials, database and TLS files.
//! - [`connect`]: a [`Conn`], a `ConnectionLike + Clone + Send` handle for
//!   commands (multiplexed: clones share one connection), to the address,
//!   to the master the sentinels name, or to the cluster.
//! - [`subscribe`]: a stream of pub/sub messages on one channel. Redis
//!   Cluster broadcasts `PUBLISH` to every node, so a plain connection to
//!   one node serves `SUBSCRIBE` there too.
//!
//! Every failure is a [`RedisFailure`]: a class (unreachable, credentials
//! refused, TLS, ...) and a sentence naming the target, never a password.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::io::AsyncDNSResolver;
use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, ClientTlsConfig, Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo,
    Pipeline, RedisConnectionInfo, RedisError, RedisFuture, TlsCertificates, TlsMode, Value,
};

use crate::config::{Config, Secret};

/// Where one Redis endpoint is: host and port as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// Parses a validated `host:port` (IPv6 as `[addr]:port`).
    fn parse(address: &str) -> Option<Endpoint> {
        let (host, port) = address.rsplit_once(':')?;
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        Some(Endpoint {
            host: host.to_string(),
            port: port.parse().ok()?,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Which topology the target is, in LiveKit's order of precedence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Topology {
    /// One server at an address.
    Single(Endpoint),
    /// Ask these sentinels for the master named `master`.
    Sentinel {
        master: String,
        sentinels: Vec<Endpoint>,
        username: Option<String>,
        password: Option<Secret>,
    },
    /// A Redis Cluster reached through these seed nodes.
    Cluster(Vec<Endpoint>),
}

/// The TLS settings of a target: file paths, read at each connection so a
/// renewed certificate is picked up as livekit-server would on restart.
/// `server_name` applies to a target at an address; with sentinels or a
/// cluster each node's certificate is verified against the host it is
/// reached at (the `redis` crate names nodes by what the sentinels or the
/// cluster announce).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct TlsFiles {
    pub ca_file: Option<String>,
    pub server_name: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

/// How to reach the configured Redis, as livekit-server would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RedisTarget {
    pub topology: Topology,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub db: u32,
    pub tls: Option<TlsFiles>,
}

impl RedisTarget {
    /// The target `config` names; `None` when no Redis is configured.
    /// Sentinels win over cluster nodes, cluster nodes over the address,
    /// as in LiveKit (validation keeps them exclusive anyway).
    pub(crate) fn from_config(config: &Config) -> Option<RedisTarget> {
        let s = &config.redis;
        let endpoints = |list: &[String]| list.iter().filter_map(|a| Endpoint::parse(a)).collect::<Vec<_>>();
        let topology = if let (Some(master), false) = (&s.sentinel_master, s.sentinel_addresses.is_empty()) {
            Topology::Sentinel {
                master: master.clone(),
                sentinels: endpoints(&s.sentinel_addresses),
                username: s.sentinel_username.clone(),
                password: s.sentinel_password.clone(),
            }
        } else if !s.cluster_addresses.is_empty() {
            Topology::Cluster(endpoints(&s.cluster_addresses))
        } else {
            Topology::Single(Endpoint::parse(config.redis_address.as_deref()?)?)
        };
        Some(RedisTarget {
            topology,
            username: s.username.clone(),
            password: s.password.clone(),
            db: s.db,
            tls: s.tls.then(|| TlsFiles {
                ca_file: s.tls_ca_file.clone(),
                server_name: s.tls_server_name.clone(),
                cert_file: s.tls_cert_file.clone(),
                key_file: s.tls_key_file.clone(),
            }),
        })
    }

    /// The target in words, for `health` and messages: the address, the
    /// sentinels and master, or the cluster nodes. Never a password.
    pub(crate) fn describe(&self) -> String {
        let list = |l: &[Endpoint]| l.iter().map(Endpoint::to_string).collect::<Vec<_>>().join(",");
        match &self.topology {
            Topology::Single(e) => e.to_string(),
            Topology::Sentinel { master, sentinels, .. } => format!("sentinel {master}@{}", list(sentinels)),
            Topology::Cluster(nodes) => format!("cluster {}", list(nodes)),
        }
    }
}

/// The class of a failure, for callers that act on it (the supervisor holds
/// livekit-server while Redis is `Unreachable`, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// Nothing answered in time, or the connection was refused or dropped.
    Unreachable,
    /// Redis wants credentials that are not configured, or refused them.
    AuthRefused,
    /// The TLS handshake or the TLS files failed.
    Tls,
    /// It answered, but not as a usable Redis (an error reply, not Redis,
    /// no such master, a bad database).
    Refused,
}

/// Why Redis could not be used: the class and a sentence that names the
/// target. Built only from error classes and server replies, never from
/// the configured passwords.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RedisFailure {
    pub kind: FailureKind,
    pub message: String,
}

impl fmt::Display for RedisFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RedisFailure {}

/// Only printable ASCII of a foreign reply goes into a message, and not much.
pub(crate) fn shown(text: &str) -> String {
    text.chars()
        .take(160)
        .map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' })
        .collect()
}

fn failure(target: &RedisTarget, e: &RedisError) -> RedisFailure {
    let at = target.describe();
    let code = e.code().unwrap_or_default();
    let text = shown(&e.to_string());
    let (kind, message) = if code == "NOAUTH" || (code.is_empty() && text.contains("NOAUTH")) {
        (
            FailureKind::AuthRefused,
            format!("redis at {at} requires a password, which is not configured (set redis_password)"),
        )
    } else if code == "WRONGPASS" || e.kind() == ErrorKind::AuthenticationFailed || text.contains("WRONGPASS") {
        (
            FailureKind::AuthRefused,
            format!("redis at {at} refused the configured username/password (auth refused)"),
        )
    } else if code == "NOPERM" {
        (
            FailureKind::AuthRefused,
            format!("redis at {at}: the configured user lacks a permission: {text}"),
        )
    } else if is_tls(e) {
        (FailureKind::Tls, format!("redis at {at}: TLS failed: {text}"))
    } else if e.is_timeout() {
        (FailureKind::Unreachable, format!("redis at {at}: timed out: {text}"))
    } else if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
        (FailureKind::Unreachable, format!("redis at {at}: unreachable: {text}"))
    } else if e.kind() == ErrorKind::MasterNameNotFoundBySentinel {
        (
            FailureKind::Refused,
            format!("redis at {at}: no sentinel knows that master: {text}"),
        )
    } else {
        (
            FailureKind::Refused,
            format!("redis at {at} answered with an error: {text}"),
        )
    };
    RedisFailure { kind, message }
}

/// Whether an error came out of the TLS layer (rustls reports through
/// `io::Error`s, so the words are all there is to go by).
fn is_tls(e: &RedisError) -> bool {
    let t = e.to_string().to_ascii_lowercase();
    [
        "tls",
        "certificate",
        "handshake",
        "invalidcertificate",
        "unknownissuer",
        "peer sent no certificates",
    ]
    .iter()
    .any(|w| t.contains(w))
}

fn config_failure(target: &RedisTarget, what: String) -> RedisFailure {
    RedisFailure {
        kind: FailureKind::Tls,
        message: format!("redis at {}: {what}", target.describe()),
    }
}

/// Reads the TLS files of `tls` (CA bundle, client certificate and key).
async fn certificates(target: &RedisTarget, tls: &TlsFiles) -> Result<TlsCertificates, RedisFailure> {
    async fn read(target: &RedisTarget, what: &str, path: &Option<String>) -> Result<Option<Vec<u8>>, RedisFailure> {
        let Some(path) = path else { return Ok(None) };
        tokio::fs::read(path)
            .await
            .map(Some)
            .map_err(|e| config_failure(target, format!("TLS failed: cannot read the {what} {path}: {e}")))
    }
    let root_cert = read(target, "CA file", &tls.ca_file).await?;
    let cert = read(target, "client certificate", &tls.cert_file).await?;
    let key = read(target, "client key", &tls.key_file).await?;
    let client_tls = match (cert, key) {
        (Some(client_cert), Some(client_key)) => Some(ClientTlsConfig {
            client_cert,
            client_key,
        }),
        _ => None,
    };
    Ok(TlsCertificates { client_tls, root_cert })
}

/// The handshake settings: credentials and database.
fn handshake(target: &RedisTarget) -> RedisConnectionInfo {
    let mut info = RedisConnectionInfo::default().set_db(i64::from(target.db));
    if let Some(u) = &target.username {
        info = info.set_username(u);
    }
    if let Some(p) = &target.password {
        info = info.set_password(p.expose());
    }
    info
}

/// Resolves the certificate's server name to the configured host, so that a
/// TLS connection verifies `server_name` while it goes to the address (what
/// Go's `tls.Config.ServerName` does for livekit-server).
struct ServerNameResolver {
    name: String,
    real: Endpoint,
}

impl AsyncDNSResolver for ServerNameResolver {
    fn resolve<'a, 'b: 'a>(
        &'a self,
        host: &'b str,
        port: u16,
    ) -> RedisFuture<'a, Box<dyn Iterator<Item = SocketAddr> + Send + 'a>> {
        Box::pin(async move {
            let (host, port) = if host == self.name {
                (self.real.host.as_str(), self.real.port)
            } else {
                (host, port)
            };
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
            Ok(Box::new(found.into_iter()) as Box<dyn Iterator<Item = SocketAddr> + Send>)
        })
    }
}

/// A client for one server (the address, a cluster node, or the master a
/// sentinel named), with the target's credentials and TLS.
async fn single_client(
    target: &RedisTarget,
    at: &Endpoint,
) -> Result<(Client, Option<ServerNameResolver>), RedisFailure> {
    let Some(tls) = &target.tls else {
        let info = ConnectionAddr::Tcp(at.host.clone(), at.port)
            .into_connection_info()
            .map_err(|e| failure(target, &e))?
            .set_redis_settings(handshake(target));
        return Client::open(info).map(|c| (c, None)).map_err(|e| failure(target, &e));
    };
    let host = tls.server_name.clone().unwrap_or_else(|| at.host.clone());
    let resolver = tls.server_name.as_ref().map(|name| ServerNameResolver {
        name: name.clone(),
        real: at.clone(),
    });
    let info: ConnectionInfo = ConnectionAddr::TcpTls {
        host,
        port: at.port,
        insecure: false,
        tls_params: None,
    }
    .into_connection_info()
    .map_err(|e| failure(target, &e))?
    .set_redis_settings(handshake(target));
    let certs = certificates(target, tls).await?;
    Client::build_with_tls(info, certs)
        .map(|c| (c, resolver))
        .map_err(|e| failure(target, &e))
}

/// The sentinels' current master for the target, as a client.
async fn sentinel_master(target: &RedisTarget) -> Result<Client, RedisFailure> {
    let Topology::Sentinel {
        master,
        sentinels,
        username,
        password,
    } = &target.topology
    else {
        return Err(config_failure(target, "not a sentinel target".into()));
    };
    let tls_mode = target.tls.as_ref().map(|_| TlsMode::Secure);
    let addrs = sentinels.iter().map(|s| match tls_mode {
        Some(_) => ConnectionAddr::TcpTls {
            host: s.host.clone(),
            port: s.port,
            insecure: false,
            tls_params: None,
        },
        None => ConnectionAddr::Tcp(s.host.clone(), s.port),
    });
    let mut b = SentinelClientBuilder::new(addrs, master.clone(), SentinelServerType::Master)
        .map_err(|e| failure(target, &e))?
        .set_client_to_redis_db(i64::from(target.db));
    if let Some(u) = username {
        b = b.set_client_to_sentinel_username(u);
    }
    if let Some(p) = password {
        b = b.set_client_to_sentinel_password(p.expose());
    }
    if let Some(u) = &target.username {
        b = b.set_client_to_redis_username(u);
    }
    if let Some(p) = &target.password {
        b = b.set_client_to_redis_password(p.expose());
    }
    if let (Some(mode), Some(tls)) = (tls_mode, &target.tls) {
        let certs = certificates(target, tls).await?;
        b = b
            .set_client_to_sentinel_tls_mode(mode)
            .set_client_to_redis_tls_mode(mode)
            .set_client_to_redis_certificates(certs);
    }
    let mut client = b.build().map_err(|e| failure(target, &e))?;
    client.async_get_client().await.map_err(|e| failure(target, &e))
}

fn async_config(timeout: Duration, resolver: Option<ServerNameResolver>) -> AsyncConnectionConfig {
    let cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    match resolver {
        Some(r) => cfg.set_dns_resolver(r),
        None => cfg,
    }
}

/// A connection to the configured Redis: one multiplexed connection to a
/// server (the address, or the master the sentinels named), or a cluster
/// connection that routes each command to its slot's node. Clones share
/// the connection.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Connects to the target, each step bounded by `timeout`.
///
/// # Errors
/// A [`RedisFailure`] naming the target and the class of the failure.
pub(crate) async fn connect(target: &RedisTarget, timeout: Duration) -> Result<Conn, RedisFailure> {
    let bounded = async {
        match &target.topology {
            Topology::Single(at) => {
                let (client, resolver) = single_client(target, at).await?;
                client
                    .get_multiplexed_async_connection_with_config(&async_config(timeout, resolver))
                    .await
                    .map(Conn::Single)
                    .map_err(|e| failure(target, &e))
            }
            Topology::Sentinel { .. } => {
                let client = sentinel_master(target).await?;
                client
                    .get_multiplexed_async_connection_with_config(&async_config(timeout, None))
                    .await
                    .map(Conn::Single)
                    .map_err(|e| failure(target, &e))
            }
            Topology::Cluster(nodes) => cluster(target, nodes, timeout).await.map(Conn::Cluster),
        }
    };
    tokio::time::timeout(timeout, bounded)
        .await
        .unwrap_or_else(|_| Err(timed_out(target, timeout)))
}

fn timed_out(target: &RedisTarget, timeout: Duration) -> RedisFailure {
    RedisFailure {
        kind: FailureKind::Unreachable,
        message: format!("redis at {} did not answer PING within {timeout:?}", target.describe()),
    }
}

async fn cluster(
    target: &RedisTarget,
    nodes: &[Endpoint],
    timeout: Duration,
) -> Result<ClusterConnection, RedisFailure> {
    let addrs: Vec<ConnectionAddr> = nodes
        .iter()
        .map(|n| match target.tls {
            Some(_) => ConnectionAddr::TcpTls {
                host: n.host.clone(),
                port: n.port,
                insecure: false,
                tls_params: None,
            },
            None => ConnectionAddr::Tcp(n.host.clone(), n.port),
        })
        .collect();
    let mut b = redis::cluster::ClusterClientBuilder::new(addrs)
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .retries(1);
    if let Some(u) = &target.username {
        b = b.username(u);
    }
    if let Some(p) = &target.password {
        b = b.password(p.expose());
    }
    if let Some(tls) = &target.tls {
        b = b.tls(TlsMode::Secure).certs(certificates(target, tls).await?);
    }
    let client = b.build().map_err(|e| failure(target, &e))?;
    client.get_async_connection().await.map_err(|e| failure(target, &e))
}

/// Whether the target answers `PING` with `PONG`, over a fresh connection
/// (so that a password or TLS change is tried at once), all within
/// `timeout`.
///
/// # Errors
/// Why not, in words an operator can act on.
pub(crate) async fn ping(target: &RedisTarget, timeout: Duration) -> Result<(), RedisFailure> {
    let bounded = async {
        let mut conn = connect(target, timeout).await?;
        let reply: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|e| failure(target, &e))?;
        if reply == "PONG" {
            Ok(())
        } else {
            Err(RedisFailure {
                kind: FailureKind::Refused,
                message: format!(
                    "redis at {} does not answer PING like Redis: {:?}",
                    target.describe(),
                    shown(&reply)
                ),
            })
        }
    };
    tokio::time::timeout(timeout, bounded)
        .await
        .unwrap_or_else(|_| Err(timed_out(target, timeout)))
}

/// The messages published on `channel`, over a connection of their own.
pub(crate) type Messages = redis::aio::PubSubStream;

/// Subscribes to `channel`. With Sentinel the subscription is on the
/// current master; with Cluster on the first seed node that answers, which
/// receives every `PUBLISH` of the cluster. The stream ends when the
/// connection does: subscribe again to resume.
///
/// # Errors
/// A [`RedisFailure`] when no server could be subscribed to.
pub(crate) async fn subscribe(
    target: &RedisTarget,
    channel: &str,
    timeout: Duration,
) -> Result<Messages, RedisFailure> {
    let bounded = async {
        let clients: Vec<(Client, Option<ServerNameResolver>)> = match &target.topology {
            Topology::Single(at) => vec![single_client(target, at).await?],
            Topology::Sentinel { .. } => vec![(sentinel_master(target).await?, None)],
            Topology::Cluster(nodes) => {
                // Pub/sub on a cluster node ignores the database, and a
                // cluster has only database 0.
                let mut out = Vec::with_capacity(nodes.len());
                for n in nodes {
                    out.push(single_client(target, n).await?);
                }
                out
            }
        };
        let mut last = None;
        for (client, _resolver) in clients {
            match client.get_async_pubsub().await {
                Ok(mut pubsub) => match pubsub.subscribe(channel).await {
                    Ok(()) => return Ok(pubsub.into_on_message()),
                    Err(e) => last = Some(failure(target, &e)),
                },
                Err(e) => last = Some(failure(target, &e)),
            }
        }
        Err(last.unwrap_or_else(|| config_failure(target, "no node to subscribe on".into())))
    };
    tokio::time::timeout(timeout, bounded)
        .await
        .unwrap_or_else(|_| Err(timed_out(target, timeout)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Credential, RedisSettings};

    fn config() -> Config {
        Config::with_credential(Credential {
            api_key: "APIabcdefghijkm".into(),
            api_secret: Secret::new("0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"),
        })
    }

    fn single(address: &str) -> RedisTarget {
        let mut c = config();
        c.redis_address = Some(address.into());
        RedisTarget::from_config(&c).expect("configured")
    }

    #[test]
    fn targets_follow_livekits_precedence_and_never_show_a_password() {
        let mut c = config();
        assert_eq!(RedisTarget::from_config(&c), None);
        c.redis_address = Some("[2001:db8::1]:6379".into());
        c.redis = RedisSettings {
            password: Some(Secret::new("hunter2-never-shown")),
            db: 4,
            ..Default::default()
        };
        let t = RedisTarget::from_config(&c).expect("single");
        assert_eq!(
            t.topology,
            Topology::Single(Endpoint {
                host: "2001:db8::1".into(),
                port: 6379
            })
        );
        assert_eq!((t.describe().as_str(), t.db), ("[2001:db8::1]:6379", 4));
        assert!(!format!("{t:?}").contains("hunter2"));
        c.redis.cluster_addresses = vec!["10.0.0.1:7000".into(), "10.0.0.2:7000".into()];
        assert_eq!(
            RedisTarget::from_config(&c).expect("cluster").describe(),
            "cluster 10.0.0.1:7000,10.0.0.2:7000"
        );
        c.redis.sentinel_master = Some("mymaster".into());
        c.redis.sentinel_addresses = vec!["10.0.0.9:26379".into()];
        assert_eq!(
            RedisTarget::from_config(&c).expect("sentinel").describe(),
            "sentinel mymaster@10.0.0.9:26379"
        );
    }

    #[tokio::test]
    async fn a_closed_port_and_a_silent_peer_are_reported_with_the_address() {
        // A port bound but not listening: nobody else can take it while the
        // test runs, and a connection to it is refused. (A listener closed
        // again could live on for a moment in a parallel test's fork.)
        let bound = tokio::net::TcpSocket::new_v4().expect("socket");
        bound.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = bound.local_addr().expect("addr").to_string();
        let e = ping(&single(&addr), Duration::from_secs(5)).await.expect_err("refused");
        assert_eq!(e.kind, FailureKind::Unreachable, "{e}");
        assert!(
            e.message.starts_with(&format!("redis at {addr}: ")) && e.message.contains("refused"),
            "{e}"
        );

        // A peer that accepts and never answers: the timeout bounds the check.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = silent.local_addr().expect("addr").to_string();
        let hold = tokio::spawn(async move { silent.accept().await.map(|(s, _)| s) });
        let e = ping(&single(&addr), Duration::from_millis(200))
            .await
            .expect_err("silent");
        assert_eq!(e.kind, FailureKind::Unreachable, "{e}");
        assert!(e.message.starts_with(&format!("redis at {addr}")), "{e}");
        hold.abort();
    }

    #[tokio::test]
    async fn a_missing_tls_file_is_a_tls_failure_naming_the_file() {
        let mut c = config();
        c.redis_address = Some("127.0.0.1:1".into());
        c.redis.tls = true;
        c.redis.tls_ca_file = Some("/nonexistent/ca.pem".into());
        let t = RedisTarget::from_config(&c).expect("configured");
        let e = ping(&t, Duration::from_secs(2)).await.expect_err("no CA");
        assert_eq!(e.kind, FailureKind::Tls, "{e}");
        assert!(e.message.contains("/nonexistent/ca.pem"), "{e}");
    }

    /// A real redis-server on loopback, killed on drop.
    struct Server {
        child: std::process::Child,
        port: u16,
        _dir: tempfile::TempDir,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn free_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    }

    async fn server(extra: &[&str]) -> Server {
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let child = std::process::Command::new("redis-server")
            .current_dir(dir.path())
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run redis-server (Debian package redis-server)");
        let s = Server { child, port, _dir: dir };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "redis-server did not listen");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        s
    }

    async fn next_message(messages: &mut Messages) -> String {
        use futures_util::StreamExt;
        let msg = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("a message within 10 s")
            .expect("the stream is open");
        msg.get_payload().expect("a string payload")
    }

    #[tokio::test]
    async fn a_plain_connection_with_auth_and_db_runs_commands_and_pubsub() {
        let s = server(&["--requirepass", "pw-of-the-test"]).await;
        let mut c = config();
        c.redis_address = Some(format!("127.0.0.1:{}", s.port));
        c.redis.password = Some(Secret::new("pw-of-the-test"));
        c.redis.db = 2;
        let t = RedisTarget::from_config(&c).expect("target");
        ping(&t, Duration::from_secs(5)).await.expect("PONG");
        let mut conn = connect(&t, Duration::from_secs(5)).await.expect("connect");
        assert_eq!(conn.get_db(), 2);
        let _: () = redis::cmd("SET")
            .arg("hero_livekit:{t}:k")
            .arg("v")
            .query_async(&mut conn)
            .await
            .expect("SET");
        // Clones share the connection and see the same database.
        let mut other = conn.clone();
        let v: String = redis::cmd("GET")
            .arg("hero_livekit:{t}:k")
            .query_async(&mut other)
            .await
            .expect("GET");
        assert_eq!(v, "v");

        let mut messages = subscribe(&t, "hero_livekit:{t}:changes", Duration::from_secs(5))
            .await
            .expect("subscribe");
        let _: i64 = redis::cmd("PUBLISH")
            .arg("hero_livekit:{t}:changes")
            .arg("generation 2")
            .query_async(&mut conn)
            .await
            .expect("PUBLISH");
        assert_eq!(next_message(&mut messages).await, "generation 2");

        c.redis.password = Some(Secret::new("wrong-pw-of-the-test"));
        let e = ping(&RedisTarget::from_config(&c).expect("target"), Duration::from_secs(5))
            .await
            .expect_err("wrong password");
        assert_eq!(e.kind, FailureKind::AuthRefused, "{e}");
        assert!(!e.message.contains("wrong-pw"), "{e}");
    }

    #[tokio::test]
    async fn a_cluster_routes_commands_and_one_node_hears_every_publish() {
        // The bus port is named: Redis's default, the port + 10000, can be
        // taken or beyond 65535 for a port the kernel handed out.
        let buses = [free_port(), free_port(), free_port()].map(|p| p.to_string());
        let nodes = [
            server(&["--cluster-enabled", "yes", "--cluster-port", &buses[0]]).await,
            server(&["--cluster-enabled", "yes", "--cluster-port", &buses[1]]).await,
            server(&["--cluster-enabled", "yes", "--cluster-port", &buses[2]]).await,
        ];
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = std::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("run redis-cli (Debian package redis-tools)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        let mut c = config();
        c.redis.cluster_addresses = addrs.clone();
        let t = RedisTarget::from_config(&c).expect("target");
        // The cluster needs a moment to agree that every slot is served.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut conn = loop {
            if let Ok(mut conn) = connect(&t, Duration::from_secs(5)).await {
                let info: Result<String, _> = redis::cmd("CLUSTER").arg("INFO").query_async(&mut conn).await;
                if info.is_ok_and(|i| i.contains("cluster_state:ok")) {
                    break conn;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "the cluster did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        ping(&t, Duration::from_secs(5)).await.expect("PONG");
        // Keys in different slots, served by different nodes.
        for k in ["a", "b", "c", "hero_livekit:{x}:record"] {
            let _: () = redis::cmd("SET")
                .arg(k)
                .arg(k)
                .query_async(&mut conn)
                .await
                .expect("SET");
            let v: String = redis::cmd("GET").arg(k).query_async(&mut conn).await.expect("GET");
            assert_eq!(v, k);
        }
        let mut messages = subscribe(&t, "hero_livekit:{x}:changes", Duration::from_secs(5))
            .await
            .expect("subscribe");
        // Published through the last node; heard on the first.
        let mut last = single_target_conn(&addrs[2]).await;
        let _: i64 = redis::cmd("PUBLISH")
            .arg("hero_livekit:{x}:changes")
            .arg("from another node")
            .query_async(&mut last)
            .await
            .expect("PUBLISH");
        assert_eq!(next_message(&mut messages).await, "from another node");
    }

    async fn single_target_conn(address: &str) -> Conn {
        connect(&single(address), Duration::from_secs(5))
            .await
            .expect("connect")
    }
}
