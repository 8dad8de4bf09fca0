//! `hero_livekit`: the operator CLI of the hero_livekit daemon.
//!
//! One subcommand per RPC method, plus `up` (the one-command bootstrap) and
//! `token`. Human output by default, `--json` for scripts; the exit status
//! is 0 only on success, and every failure prints the daemon's actionable
//! hint. A current-thread runtime keeps a one-shot invocation cheap.

/// `println!` for everything the CLI prints on stdout, through
/// [`output::write_stdout`]: a reader that closed the pipe ends the process
/// quietly instead of the panic `println!` raises, and no control character
/// but the CLI's own colours reaches the terminal ([`terminal::guard`]).
macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprintln!` through [`output::write_stderr`]: the same guard as
/// [`outln!`], and no panic when stderr is gone.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::output::write_stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod args;
mod cli;
mod deployments;
mod output;
mod settings_args;
mod table;
mod terminal;
mod up;

use std::process::ExitCode;

use clap::Parser;

/// Prints what clap says (help and version on stdout, a refusal on stderr)
/// and, for a refusal, the `hint:` line every refusal of this CLI ends with.
fn parser_stopped(e: &clap::Error) -> ExitCode {
    // Printing fails only when the reader went away: nothing left to tell.
    let _ = e.print();
    if e.use_stderr() {
        eprintln!("hint: `hero_livekit --help` lists the commands and `hero_livekit <command> --help` its flags");
    }
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
}

fn main() -> ExitCode {
    let args = match args::Cli::try_parse() {
        Ok(a) => a,
        Err(e) => return parser_stopped(&e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hero_livekit: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(cli::run(args))
}
