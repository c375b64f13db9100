//! `hako`: parses arguments and runs the command.
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match hako_runtime::cli::run(hako_runtime::cli::Cli::parse()) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("hako: {e:#}");
            ExitCode::FAILURE
        }
    }
}
