//! `hero_livekit_server`: the supervisor daemon (see the crate docs).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use hero_livekit_server::daemon::{self, DaemonOptions};
use hero_livekit_server::paths::Paths;
use hero_livekit_server::runtime;

/// Supervisor of a LiveKit deployment: keeps livekit.yaml, backend.env and
/// runtime.json consistent and supervises livekit-server and lk-backend.
#[derive(Debug, Parser)]
#[command(name = "hero_livekit_server", version)]
struct Args {
    /// Root directory (default: $PATH_ROOT, else ~/hero).
    #[arg(long)]
    root: Option<PathBuf>,
    /// Socket path (default: $HERO_SOCKET_DIR or <root>/var/sockets, then hero_livekit_server/rpc.sock).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Group whose members may call read-only methods (socket becomes 0660).
    #[arg(long)]
    socket_group: Option<String>,
    /// livekit-server binary (default: <root>/bin/livekit-server).
    #[arg(long)]
    livekit_bin: Option<PathBuf>,
    /// lk-backend binary (default: next to this executable, else <root>/bin/lk-backend).
    #[arg(long)]
    backend_bin: Option<PathBuf>,
    /// Stop the children when the daemon exits (default: leave them running for the next instance to adopt).
    #[arg(long)]
    stop_children_on_exit: bool,
    /// Default drain deadline of stop, restart and exit: how long a child gets after SIGTERM before SIGKILL (default: $HERO_LIVEKIT_STOP_TIMEOUT_MS, else 10000).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=600_000))]
    stop_timeout_ms: Option<u64>,
    /// Also serve GET /metrics (no secret, no authentication) on TCP: PORT for 127.0.0.1:PORT, or IP:PORT to name another interface.
    #[arg(long, value_name = "ADDR", value_parser = hero_livekit_server::metrics::listen::parse_addr)]
    metrics_listen: Option<std::net::SocketAddr>,
}

/// RUST_LOG chooses what is logged, except that targets other than the
/// daemon's own are capped at INFO whatever it says: jsonrpsee logs whole
/// request bodies at TRACE (`HTTP body: {...}`), and a `configure` body
/// holds `api_secret` and the Redis passwords. The daemon's own lines never
/// carry a secret at any level.
fn init_tracing() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let own_or_info = tracing_subscriber::filter::filter_fn(|meta| admitted(meta.target(), *meta.level()));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(own_or_info)
        .with_filter(filter);
    tracing_subscriber::registry().with(layer).init();
}

/// Whether a line of `target` at `level` may be logged: any of the
/// daemon's own, others at INFO or less verbose.
fn admitted(target: &str, level: tracing::Level) -> bool {
    target == "hero_livekit_server" || target.starts_with("hero_livekit_server::") || level <= tracing::Level::INFO
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing();

    let socket_group = match args.socket_group.as_deref().map(resolve_group).transpose() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("hero_livekit_server: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = DaemonOptions {
        paths: Paths::resolve(args.root, args.socket),
        socket_group,
        livekit_bin: args.livekit_bin,
        backend_bin: args.backend_bin,
        stop_children_on_exit: args.stop_children_on_exit,
        stop_timeout: args.stop_timeout_ms.map(std::time::Duration::from_millis),
        metrics_listen: args.metrics_listen,
    };
    raise_fd_limit();
    let runtime = match runtime::build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hero_livekit_server: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(daemon::run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once: the log and stderr are the same stream here (the log
            // writes to stderr), so logging it too printed it twice.
            eprintln!("hero_livekit_server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn resolve_group(name: &str) -> Result<nix::unistd::Gid, String> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(nix::unistd::Gid::from_raw(n));
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid),
        Ok(None) => Err(format!("--socket-group: no group named `{name}`")),
        Err(e) => Err(format!("--socket-group: looking up `{name}`: {e}")),
    }
}

/// Raises the soft limit on open descriptors to the hard one: the
/// connection budgets (see `limits`) add up to more than the usual soft
/// default of 1024. Where the hard limit is lower, the accept loop backs
/// off on EMFILE instead; failing here is logged, not fatal.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_cur >= lim.rlim_max {
            return;
        }
        let old = lim.rlim_cur;
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            tracing::warn!(
                soft = old,
                error = %std::io::Error::last_os_error(),
                "could not raise the open-file limit"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::admitted;
    use tracing::Level;

    #[test]
    fn other_crates_are_capped_at_info_whatever_rust_log_says() {
        for target in [
            "jsonrpsee-http",
            "jsonrpsee-server",
            "hyper::proto::h1::io",
            "redis",
            "reqwest",
        ] {
            assert!(!admitted(target, Level::TRACE), "{target}");
            assert!(!admitted(target, Level::DEBUG), "{target}");
            assert!(admitted(target, Level::INFO), "{target}");
        }
        assert!(admitted("hero_livekit_server::service", Level::TRACE));
        assert!(!admitted("hero_livekit_server_evil", Level::DEBUG));
    }
}
