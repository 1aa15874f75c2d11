//! `sodp`: the command-line face of `sodp-client`.
//!
//! # Layout
//! - [`args`]: the command-line syntax (clap derive).
//! - [`commands`]: one function per subcommand.
//! - [`json_arg`]: JSON arguments with readable errors.
//! - [`output`]: the JSON lines printed.
//! - [`error`]: failures and their exit codes.

#![forbid(unsafe_code)]

pub mod args;
pub mod commands;
pub mod error;
pub mod json_arg;
pub mod output;

use std::process::ExitCode;

/// Parses the command line, runs it, reports any error on stderr, and
/// returns the process exit code.
pub fn main() -> ExitCode {
    use clap::Parser;
    let cli = args::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sodp: error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sodp: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
