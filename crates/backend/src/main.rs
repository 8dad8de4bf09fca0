//! `lk-backend`: signs LiveKit access tokens over HTTP. See the library docs.

use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lk_backend::config::{self, Overrides, Source};
use lk_backend::limits::Limits;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// LiveKit token signer. Reads LIVEKIT_API_KEY, LIVEKIT_API_SECRET,
/// LIVEKIT_URL, MINT_SECRET (the bearer secret `POST /token` requires), PORT
/// (default 7890) and BIND (default 127.0.0.1) from the environment, or from
/// --env-file alone. SIGHUP re-reads the env file.
/// The listener's limits come from the environment in either case
/// (LK_BACKEND_HEADER_TIMEOUT_MS, LK_BACKEND_BODY_TIMEOUT_MS,
/// LK_BACKEND_IDLE_TIMEOUT_MS, LK_BACKEND_MAX_CONNECTIONS,
/// LK_BACKEND_MAX_CONNECTIONS_REFUSED, LK_BACKEND_MAX_BODY_BYTES,
/// LK_BACKEND_MAX_HEADER_BYTES).
#[derive(Debug, Parser)]
#[command(name = "lk-backend", version)]
struct Cli {
    /// Read the variables from this env file instead of the environment.
    #[arg(long, value_name = "FILE")]
    env_file: Option<PathBuf>,
    /// Port to listen on (0 picks a free one); overrides PORT.
    #[arg(long)]
    port: Option<u16>,
    /// Address to listen on; overrides BIND.
    #[arg(long)]
    bind: Option<IpAddr>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let source = match cli.env_file {
        Some(path) => Source::EnvFile(path),
        None => Source::Environment,
    };
    let overrides = Overrides {
        port: cli.port,
        bind: cli.bind,
    };
    let settings = match config::load(&source, overrides) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lk-backend: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let limits = match Limits::from_env() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("lk-backend: invalid limit: {e}");
            return ExitCode::from(2);
        }
    };
    if config::secret_is_short(&settings.credential) {
        tracing::warn!("secret is too short, should be at least 32 characters for security");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lk-backend: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(lk_backend::serve::run(settings, source, overrides, limits)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lk-backend: {e}");
            ExitCode::FAILURE
        }
    }
}

/// RUST_LOG chooses what is logged, except that targets other than
/// lk-backend's own are capped at INFO whatever it says: hyper, axum, tower
/// and the signing library see request bytes and the secret, and their
/// DEBUG and TRACE lines are for their own developers. lk-backend's own
/// lines never carry the secret, a token or a request body at any level.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let own_or_info = tracing_subscriber::filter::filter_fn(|meta| admitted(meta.target(), *meta.level()));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(own_or_info)
        .with_filter(filter);
    tracing_subscriber::registry().with(layer).init();
}

/// Whether a line of `target` at `level` may be logged: any of lk-backend's
/// own, others at INFO or less verbose. (hyper 1 and axum without their
/// `tracing` features log nothing today; this keeps it so if a dependency
/// turns them on.)
fn admitted(target: &str, level: tracing::Level) -> bool {
    target == "lk_backend" || target.starts_with("lk_backend::") || level <= tracing::Level::INFO
}

#[cfg(test)]
mod tests {
    use super::admitted;
    use tracing::Level;

    #[test]
    fn other_crates_are_capped_at_info_whatever_rust_log_says() {
        for target in [
            "hyper::proto::h1::io",
            "axum::routing",
            "tower_http::trace",
            "livekit_api",
            "h2",
        ] {
            assert!(!admitted(target, Level::TRACE), "{target}");
            assert!(!admitted(target, Level::DEBUG), "{target}");
            assert!(admitted(target, Level::INFO), "{target}");
            assert!(admitted(target, Level::WARN), "{target}");
        }
        assert!(admitted("lk_backend::app", Level::TRACE));
        assert!(admitted("lk_backend", Level::DEBUG));
        assert!(!admitted("lk_backend_evil", Level::DEBUG));
    }
}
