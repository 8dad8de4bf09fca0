//! The command line's shape: every subcommand and flag as clap types.
//! Flags are the methods' parameter names in kebab case; `configure`'s and
//! `up`'s are checked against the table of configure fields. `cli`
//! (dispatch) and `up` both read these types and not each other.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use hero_livekit_client::wire::{self as proto, ProcessName};

#[derive(Debug, Parser)]
#[command(
    name = "hero_livekit",
    version,
    about = "Operate a LiveKit deployment through the hero_livekit daemon"
)]
pub struct Cli {
    /// Root directory (default: $PATH_ROOT, else ~/hero).
    #[arg(long, global = true)]
    pub root: Option<PathBuf>,
    /// Daemon socket (default: $HERO_SOCKET_DIR or <root>/var/sockets, then hero_livekit_server/rpc.sock).
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Obtain, verify and install livekit-server, then heal the config.
    Install(InstallArgs),
    /// Set the credential and settings; writes all three files consistently.
    Configure(ConfigureArgs),
    /// Heal the config, install if needed, start both children and wait until ready.
    Start(StartArgs),
    /// Stop both children.
    Stop(StopArgs),
    /// Restart one or both children.
    Restart(RestartArgs),
    /// Show health; exit 0 only when ready for tokens.
    Health(HealthArgs),
    /// Show the tail of a child's log.
    Logs(LogsArgs),
    /// The effective configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print events (state changes, heals, restarts, install progress) as they happen.
    Events,
    /// Mint a LiveKit access token through lk-backend (full access: it uses
    /// the mint secret).
    Token(TokenArgs),
    /// Print lk-backend's mint secret, the bearer `POST /token` requires,
    /// for a service allowed to mint (full access only).
    BackendToken,
    /// Bootstrap: start the daemon if needed, install, configure, start, verify.
    Up(UpArgs),
    /// Print the OpenRPC document.
    Discover,
    /// The cluster this node belongs to: `status`, `token`, `leave`.
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// The cluster, the generation of its credential and its nodes.
    Status,
    /// Print the join secret for `configure --cluster NAME --cluster-token T` on the next node.
    Token,
    /// Leave the cluster: this node's heartbeat and membership go, and it
    /// keeps serving alone with the credential it runs.
    Leave,
}

#[derive(Debug, Clone, Args, Default)]
pub struct InstallArgs {
    /// livekit-server version (default: the pinned one).
    #[arg(long)]
    pub version: Option<String>,
    /// URL or local path of a release tarball or binary.
    #[arg(long)]
    pub source: Option<String>,
    /// Expected sha256 of the source.
    #[arg(long)]
    pub sha256: Option<String>,
    /// Reinstall even when the same version is installed.
    #[arg(long)]
    pub force: bool,
}

impl InstallArgs {
    pub fn params(&self) -> proto::InstallParams {
        proto::InstallParams {
            version: self.version.clone(),
            source: self.source.clone(),
            sha256: self.sha256.clone(),
            force: self.force.then_some(true),
        }
    }
}

#[derive(Debug, Clone, Args, Default)]
pub struct ConfigureArgs {
    /// API key: 3-64 of [A-Za-z0-9_-] (minted when none is held).
    #[arg(long)]
    pub api_key: Option<String>,
    /// API secret: 32-256 of [A-Za-z0-9_.~+/=-] (minted when none is held).
    #[arg(long)]
    pub api_secret: Option<String>,
    /// Public hostname or IP of this LiveKit node.
    #[arg(long)]
    pub domain: Option<String>,
    /// host:port of Redis, for multi-node deployments.
    #[arg(long)]
    pub redis_address: Option<String>,
    #[command(flatten)]
    pub redis: RedisArgs,
    /// livekit-server HTTP/WebSocket port (default 7880).
    #[arg(long)]
    pub port: Option<u32>,
    /// ICE/TCP port (default 7881).
    #[arg(long)]
    pub rtc_tcp_port: Option<u32>,
    /// First UDP media port (default 50000).
    #[arg(long)]
    pub rtc_port_range_start: Option<u32>,
    /// Last UDP media port (default 60000).
    #[arg(long)]
    pub rtc_port_range_end: Option<u32>,
    /// IP address livekit-server advertises to clients.
    #[arg(long)]
    pub node_ip: Option<String>,
    /// lk-backend HTTP port (default 7890).
    #[arg(long)]
    pub backend_port: Option<u32>,
    /// The URL clients are handed, e.g. wss://media.example.org behind a TLS
    /// proxy (default: ws://DOMAIN:PORT).
    #[arg(long)]
    pub public_url: Option<String>,
    /// Remove an optional setting (an empty value keeps it): node-ip,
    /// redis-address or any other redis-* setting, or a production setting
    /// (it returns to LiveKit's default). Repeatable.
    #[arg(long, value_name = "FIELD", value_parser = crate::settings_args::parse_unset)]
    pub unset: Vec<String>,
    #[command(flatten)]
    pub settings: crate::settings_args::SettingsArgs,
    /// Join the named cluster on the configured Redis (1-64 of [A-Za-z0-9_-]).
    #[arg(long)]
    pub cluster: Option<String>,
    /// The cluster's join secret, from `hero_livekit cluster token` on a member
    /// (a first node given none mints one).
    #[arg(long, env = "HERO_LIVEKIT_CLUSTER_TOKEN", hide_env_values = true)]
    pub cluster_token: Option<String>,
}

impl ConfigureArgs {
    pub fn params(&self) -> proto::ConfigureParams {
        proto::ConfigureParams {
            api_key: self.api_key.clone(),
            api_secret: self.api_secret.clone(),
            domain: self.domain.clone(),
            redis_address: self.redis_address.clone(),
            port: self.port,
            rtc_tcp_port: self.rtc_tcp_port,
            rtc_port_range_start: self.rtc_port_range_start,
            rtc_port_range_end: self.rtc_port_range_end,
            node_ip: self.node_ip.clone(),
            backend_port: self.backend_port,
            public_url: self.public_url.clone(),
            // Flags are kebab case, the method's names snake case.
            unset: (!self.unset.is_empty()).then(|| self.unset.iter().map(|f| f.replace('-', "_")).collect()),
            cluster: self.cluster.clone(),
            cluster_token: self.cluster_token.clone(),
            ..self.redis.apply(self.settings.params())
        }
    }
}

#[derive(Debug, Clone, Args, Default)]
pub struct StartArgs {
    /// Rotate the credential on purpose (mints a new key and secret).
    #[arg(long)]
    pub reset: bool,
    /// Re-run install first.
    #[arg(long)]
    pub update: bool,
    /// How long to wait for readiness.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
}

impl StartArgs {
    pub fn params(&self) -> proto::StartParams {
        proto::StartParams {
            reset: self.reset.then_some(true),
            update: self.update.then_some(true),
            timeout_ms: self.timeout_ms,
        }
    }
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Drain deadline: how long each child gets to exit after SIGTERM before SIGKILL (default: the daemon's --stop-timeout-ms).
    #[arg(long, visible_alias = "drain-timeout-ms")]
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Args)]
pub struct RestartArgs {
    /// `livekit-server` or `lk-backend` (default: both).
    #[arg(long)]
    pub process: Option<ProcessName>,
    /// How long to wait for readiness once the old process is gone.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Drain deadline: how long each child gets to exit after SIGTERM before SIGKILL (default: the daemon's --stop-timeout-ms).
    #[arg(long)]
    pub drain_timeout_ms: Option<u64>,
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Print nothing; only the exit status says whether it is ready for tokens.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// `livekit-server` or `lk-backend`.
    pub process: ProcessName,
    /// How many trailing lines.
    #[arg(long, short = 'n')]
    pub lines: Option<u32>,
    /// Keep printing new lines as they are written.
    #[arg(long, short)]
    pub follow: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// The effective settings (secrets only as set/unset), marked where
    /// they differ from LiveKit's defaults.
    Show,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[arg(long)]
    pub room: String,
    #[arg(long)]
    pub identity: String,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub ttl_seconds: Option<u64>,
    #[arg(long)]
    pub metadata: Option<String>,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub install: InstallArgs,
    #[command(flatten)]
    pub configure: ConfigureArgs,
    /// Rotate the credential on purpose.
    #[arg(long)]
    pub reset: bool,
    /// Re-run install even when installed.
    #[arg(long)]
    pub update: bool,
    /// How long to wait for readiness.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
}

/// Default wait for readiness when the caller gave none.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The Redis connection settings of `configure` beyond the address.
#[derive(Debug, Clone, Args, Default)]
pub struct RedisArgs {
    /// Redis ACL user (needs --redis-password).
    #[arg(long)]
    pub redis_username: Option<String>,
    /// Redis password (requirepass or the ACL user's); a secret.
    #[arg(long)]
    pub redis_password: Option<String>,
    /// Redis database number, 0-15 (0 with a cluster).
    #[arg(long)]
    pub redis_db: Option<u32>,
    /// Connect to Redis over TLS (true or false).
    #[arg(long, value_name = "BOOL")]
    pub redis_tls: Option<bool>,
    /// PEM CA file that signed Redis's certificate (absolute path).
    #[arg(long)]
    pub redis_tls_ca_file: Option<String>,
    /// Name Redis's certificate is verified against, when not the host.
    #[arg(long)]
    pub redis_tls_server_name: Option<String>,
    /// PEM client certificate for mutual TLS (needs --redis-tls-key-file).
    #[arg(long)]
    pub redis_tls_cert_file: Option<String>,
    /// PEM key of the client certificate.
    #[arg(long)]
    pub redis_tls_key_file: Option<String>,
    /// Sentinel master name (needs --redis-sentinel-addresses).
    #[arg(long)]
    pub redis_sentinel_master: Option<String>,
    /// host:port of a sentinel; repeatable, replaces the list.
    #[arg(
        long = "redis-sentinel-addresses",
        alias = "redis-sentinel-address",
        value_name = "HOST:PORT"
    )]
    pub redis_sentinel_addresses: Vec<String>,
    /// User the sentinels are asked as (needs --redis-sentinel-password).
    #[arg(long)]
    pub redis_sentinel_username: Option<String>,
    /// Password of the sentinels; a secret.
    #[arg(long)]
    pub redis_sentinel_password: Option<String>,
    /// host:port of a Redis Cluster node; repeatable, replaces the list.
    #[arg(
        long = "redis-cluster-addresses",
        alias = "redis-cluster-address",
        value_name = "HOST:PORT"
    )]
    pub redis_cluster_addresses: Vec<String>,
}

impl RedisArgs {
    /// `p` with these settings as its Redis parameters.
    pub fn apply(&self, p: proto::ConfigureParams) -> proto::ConfigureParams {
        let list = |l: &Vec<String>| (!l.is_empty()).then(|| l.clone());
        proto::ConfigureParams {
            redis_username: self.redis_username.clone(),
            redis_password: self.redis_password.clone(),
            redis_db: self.redis_db,
            redis_tls: self.redis_tls,
            redis_tls_ca_file: self.redis_tls_ca_file.clone(),
            redis_tls_server_name: self.redis_tls_server_name.clone(),
            redis_tls_cert_file: self.redis_tls_cert_file.clone(),
            redis_tls_key_file: self.redis_tls_key_file.clone(),
            redis_sentinel_master: self.redis_sentinel_master.clone(),
            redis_sentinel_addresses: list(&self.redis_sentinel_addresses),
            redis_sentinel_username: self.redis_sentinel_username.clone(),
            redis_sentinel_password: self.redis_sentinel_password.clone(),
            redis_cluster_addresses: list(&self.redis_cluster_addresses),
            ..p
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every `configure` parameter of the table has its flag, the name in
    /// kebab case, on `configure` and on `up` (which takes the same flags).
    #[test]
    fn every_configure_field_has_its_flag() {
        let cli = Cli::command();
        for sub in ["configure", "up"] {
            let cmd = cli.find_subcommand(sub).expect(sub);
            let longs: Vec<&str> = cmd.get_arguments().filter_map(|a| a.get_long()).collect();
            for f in proto::fields::CONFIGURE_FIELDS {
                let flag = f.flag();
                assert!(longs.contains(&&flag[2..]), "{sub} has {flag}");
            }
        }
    }

    #[test]
    fn unset_takes_exactly_the_removable_fields_in_either_spelling() {
        for f in proto::fields::CONFIGURE_FIELDS {
            let kebab = f.flag()[2..].to_string();
            assert_eq!(crate::settings_args::parse_unset(&kebab).is_ok(), f.unset, "{kebab}");
            assert_eq!(crate::settings_args::parse_unset(f.name).is_ok(), f.unset, "{}", f.name);
        }
    }
}
