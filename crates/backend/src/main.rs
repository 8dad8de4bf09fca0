//! `lk-backend`: signs LiveKit access tokens over HTTP. See the library docs.

use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lk_backend::config::{self, Overrides, Source};

/// LiveKit token signer. Reads LIVEKIT_API_KEY, LIVEKIT_API_SECRET,
/// LIVEKIT_URL, PORT (default 7890) and BIND (default 127.0.0.1) from the
/// environment, or from --env-file alone. SIGHUP re-reads the env file.
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
    match runtime.block_on(lk_backend::serve::run(settings, source, overrides)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lk-backend: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
