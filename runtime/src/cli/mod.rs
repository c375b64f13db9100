//! The `hako` command line: clap structures and one module per command.

pub mod check;
pub mod run;

use clap::{Parser, Subcommand};

/// `hako`: Hako's OCI runtime and admin commands.
#[derive(Debug, Parser)]
#[command(name = "hako", version, about = "Hako: containers in KVM micro-VMs")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Tell whether this host can run Hako sandboxes, and why not.
    Check(check::CheckArgs),
    /// Run a container from an OCI bundle in its own sandbox VM, attached; exit with its status.
    Run(run::RunArgs),
}

/// Runs the parsed command; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Check(args) => check::run(&args),
        Command::Run(args) => run::run(&args),
    }
}
