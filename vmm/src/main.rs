//! `hako-vmm`: `probe` prints what this host's KVM can do as JSON (read by `hako check`).
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "hako-vmm", version, about = "Hako's virtual machine monitor")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Probe KVM (capabilities, module, a tiny guest's kernel/user mode behaviour); print JSON.
    Probe {
        /// The KVM device to probe.
        #[arg(long, default_value = "/dev/kvm")]
        device: PathBuf,
    },
    /// Boot a VM from a JSON config (arrives with the VMM issue).
    Run {
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Probe { device } => {
            let report = hako_vmm::probe::probe(&device);
            match serde_json::to_string_pretty(&report) {
                Ok(json) => {
                    println!("{json}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("hako-vmm: encoding the probe report: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run { config } => {
            eprintln!(
                "hako-vmm: cannot boot {}: booting guests is not implemented yet",
                config.display()
            );
            ExitCode::from(2)
        }
    }
}
