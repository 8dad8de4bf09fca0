//! The double's Redis client, as livekit-server builds its own (livekit/
//! protocol `redis.GetRedisClient`): Sentinel when sentinel addresses are
//! set, else Cluster when cluster addresses are, else the address; AUTH
//! with username/password, the database, and TLS from the `tls:` section
//! (or the deprecated `use_tls`). Written apart from the supervisor's own
//! Redis code on purpose: a double that shared it could not catch its bugs.

use std::net::SocketAddr;
use std::time::Duration;

use redis::io::AsyncDNSResolver;
use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, ClientTlsConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo,
    RedisFuture, TlsCertificates, TlsMode,
};
use serde::Deserialize;

/// livekit-server's `redis.RedisConfig`, parsed as strictly as yaml.v3 does
/// in strict mode.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "the field list is the schema the strict parser checks; the double acts on few fields"
)]
pub struct RedisConfig {
    pub address: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: Option<i64>,
    pub use_tls: Option<bool>,
    pub tls: Option<TlsConfig>,
    pub sentinel_master_name: Option<String>,
    pub sentinel_username: Option<String>,
    pub sentinel_password: Option<String>,
    pub sentinel_addresses: Option<Vec<String>>,
    pub cluster_addresses: Option<Vec<String>>,
    /// Milliseconds (sentinel only in LiveKit).
    pub dial_timeout: Option<i64>,
    pub read_timeout: Option<i64>,
    pub write_timeout: Option<i64>,
    pub max_redirects: Option<i64>,
    /// A Go duration (`5s`) or nanoseconds.
    pub pool_timeout: Option<GoDuration>,
    pub pool_size: Option<i64>,
}

/// livekit's `TLSConfig` under `redis.tls`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub enabled: Option<bool>,
    pub insecure: Option<bool>,
    pub server_name: Option<String>,
    pub ca_cert_file: Option<String>,
    pub client_cert_file: Option<String>,
    pub client_key_file: Option<String>,
}

/// A `time.Duration` as yaml.v3 reads one: an integer of nanoseconds or a
/// string `time.ParseDuration` accepts (only checked for shape here).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
#[expect(dead_code, reason = "parsed for its type only, as the strict parser checks it")]
pub enum GoDuration {
    Nanos(i64),
    Text(String),
}

impl RedisConfig {
    /// LiveKit's `IsConfigured`.
    pub fn is_configured(&self) -> bool {
        self.address.as_deref().is_some_and(|a| !a.is_empty())
            || self.sentinel_addresses.as_ref().is_some_and(|s| !s.is_empty())
            || self.cluster_addresses.as_ref().is_some_and(|s| !s.is_empty())
    }

    fn tls_enabled(&self) -> bool {
        self.tls.as_ref().and_then(|t| t.enabled).unwrap_or(false) || self.use_tls.unwrap_or(false)
    }
}

fn split(address: &str) -> Result<(String, u16), String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("address {address}: missing port in address"))?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let port = port.parse().map_err(|_| format!("address {address}: invalid port"))?;
    Ok((host.to_string(), port))
}

fn addr(c: &RedisConfig, host: String, port: u16) -> ConnectionAddr {
    if c.tls_enabled() {
        ConnectionAddr::TcpTls {
            host,
            port,
            insecure: c.tls.as_ref().and_then(|t| t.insecure).unwrap_or(false),
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host, port)
    }
}

fn certificates(c: &RedisConfig) -> Result<TlsCertificates, String> {
    let tls = c.tls.clone().unwrap_or_default();
    let read = |p: &Option<String>| -> Result<Option<Vec<u8>>, String> {
        match p.as_deref().filter(|p| !p.is_empty()) {
            Some(p) => std::fs::read(p).map(Some).map_err(|e| format!("open {p}: {e}")),
            None => Ok(None),
        }
    };
    let root_cert = read(&tls.ca_cert_file)?;
    let client_tls = match (read(&tls.client_cert_file)?, read(&tls.client_key_file)?) {
        (Some(client_cert), Some(client_key)) => Some(ClientTlsConfig {
            client_cert,
            client_key,
        }),
        _ => None,
    };
    Ok(TlsCertificates { client_tls, root_cert })
}

/// Go's `tls.Config.ServerName`: connect to the address, verify the name.
struct ServerName {
    name: String,
    host: String,
    port: u16,
}

impl AsyncDNSResolver for ServerName {
    fn resolve<'a, 'b: 'a>(
        &'a self,
        host: &'b str,
        port: u16,
    ) -> RedisFuture<'a, Box<dyn Iterator<Item = SocketAddr> + Send + 'a>> {
        Box::pin(async move {
            let (h, p) = if host == self.name {
                (self.host.as_str(), self.port)
            } else {
                (host, port)
            };
            let found: Vec<SocketAddr> = tokio::net::lookup_host((h, p)).await?.collect();
            Ok(Box::new(found.into_iter()) as Box<dyn Iterator<Item = SocketAddr> + Send>)
        })
    }
}

/// PINGs the configured Redis once, within `timeout`. The error reads like
/// go-redis's (`dial tcp ...: connect: connection refused`, `NOAUTH ...`).
pub async fn ping(c: &RedisConfig, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, ping_inner(c, timeout)).await {
        Ok(r) => r,
        Err(_) => Err("i/o timeout".into()),
    }
}

async fn ping_inner(c: &RedisConfig, timeout: Duration) -> Result<(), String> {
    let info = {
        let mut i = RedisConnectionInfo::default().set_db(c.db.unwrap_or(0));
        if let Some(u) = c.username.as_deref().filter(|u| !u.is_empty()) {
            i = i.set_username(u);
        }
        if let Some(p) = c.password.as_deref().filter(|p| !p.is_empty()) {
            i = i.set_password(p);
        }
        i
    };
    let e = |e: redis::RedisError| e.to_string();
    let sentinels = c.sentinel_addresses.clone().unwrap_or_default();
    let cluster = c.cluster_addresses.clone().unwrap_or_default();
    let cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    if !sentinels.is_empty() {
        let addrs = sentinels
            .iter()
            .map(|s| split(s).map(|(h, p)| addr(c, h, p)))
            .collect::<Result<Vec<_>, _>>()?;
        let master = c.sentinel_master_name.clone().unwrap_or_default();
        let mut b = SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)
            .map_err(e)?
            .set_client_to_redis_db(c.db.unwrap_or(0));
        if let Some(u) = c.sentinel_username.as_deref().filter(|u| !u.is_empty()) {
            b = b.set_client_to_sentinel_username(u);
        }
        if let Some(p) = c.sentinel_password.as_deref().filter(|p| !p.is_empty()) {
            b = b.set_client_to_sentinel_password(p);
        }
        if let Some(u) = info.username() {
            b = b.set_client_to_redis_username(u);
        }
        if let Some(p) = info.password() {
            b = b.set_client_to_redis_password(p);
        }
        if c.tls_enabled() {
            b = b
                .set_client_to_sentinel_tls_mode(TlsMode::Secure)
                .set_client_to_redis_tls_mode(TlsMode::Secure)
                .set_client_to_redis_certificates(certificates(c)?);
        }
        let mut client = b.build().map_err(e)?;
        let master = client.async_get_client().await.map_err(e)?;
        let mut conn = master
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map_err(e)?;
        return redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(e);
    }
    if !cluster.is_empty() {
        let addrs = cluster
            .iter()
            .map(|s| split(s).map(|(h, p)| addr(c, h, p)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut b = redis::cluster::ClusterClientBuilder::new(addrs)
            .connection_timeout(timeout)
            .response_timeout(timeout);
        if let Some(u) = info.username() {
            b = b.username(u);
        }
        if let Some(p) = info.password() {
            b = b.password(p);
        }
        if c.tls_enabled() {
            b = b.tls(TlsMode::Secure).certs(certificates(c)?);
        }
        let mut conn = b.build().map_err(e)?.get_async_connection().await.map_err(e)?;
        return redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(e);
    }
    let address = c.address.clone().unwrap_or_default();
    let (host, port) = split(&address)?;
    let server_name = c
        .tls
        .as_ref()
        .and_then(|t| t.server_name.clone())
        .filter(|n| !n.is_empty() && c.tls_enabled());
    let target = addr(c, server_name.clone().unwrap_or_else(|| host.clone()), port);
    let info = target.into_connection_info().map_err(e)?.set_redis_settings(info);
    let client = if c.tls_enabled() {
        Client::build_with_tls(info, certificates(c)?).map_err(e)?
    } else {
        Client::open(info).map_err(e)?
    };
    let cfg = match server_name {
        Some(name) => cfg.set_dns_resolver(ServerName { name, host, port }),
        None => cfg,
    };
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
        .map_err(e)?;
    redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .map(drop)
        .map_err(e)
}
