//! `hero_livekit`: the operator CLI of the hero_livekit daemon.
//!
//! One subcommand per RPC method, plus `up` (the one-command bootstrap) and
//! `token`. Human output by default, `--json` for scripts; the exit status
//! is 0 only on success, and every failure prints the daemon's actionable
//! hint. A current-thread runtime keeps a one-shot invocation cheap.

/// `println!` for everything the CLI prints on stdout, through
/// [`output::write_stdout`]: a reader that closed the pipe ends the process
/// quietly instead of the panic `println!` raises.
macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod args;
mod cli;
mod deployments;
mod output;
mod settings_args;
mod table;
mod up;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = args::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hero_livekit: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(cli::run(args))
}
