//! `hako`: parses arguments and runs the command.
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = hako_runtime::cli::Cli::parse();
    hako_runtime::cli::init_logging(&cli.global);
    let global = cli.global.clone();
    match hako_runtime::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            hako_runtime::cli::report_error(&global, &e);
            ExitCode::FAILURE
        }
    }
}
