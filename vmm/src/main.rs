//! `hako-vmm`: boot a VM from a JSON config (`hako-vmm --config FILE`), resume one from a
//! snapshot (`--restore DIR`, the config giving its new sockets and shares), or `probe` this host's
//! KVM for `hako check`. Exit status: the guest's ending (`ExitReason::exit_code`), 1 for a VMM
//! error, 2 for a bad command line or config.
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Instant;

use clap::{Parser, Subcommand};
use hako_vmm::capped_log::{self, CappedLog};
use hako_vmm_api::control::{EXIT_BAD_CONFIG, EXIT_VMM_ERROR};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

#[derive(Parser)]
#[command(name = "hako-vmm", version, about = "Hako's virtual machine monitor")]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    /// Boot the VM this JSON config describes (same as `run --config`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Resume the snapshot in this directory instead of booting the config's kernel.
    #[arg(long, requires = "config")]
    restore: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Probe KVM (capabilities, module, a tiny guest's kernel/user mode behaviour); print JSON.
    Probe {
        /// The KVM device to probe.
        #[arg(long, default_value = "/dev/kvm")]
        device: PathBuf,
        /// Also check that a jail could run as an unprivileged uid with this path bound in
        /// (a user namespace and an id-mapped bind).
        #[arg(long)]
        idmap_path: Option<PathBuf>,
    },
    /// Boot the VM a JSON config describes.
    Run {
        #[arg(long)]
        config: PathBuf,
        /// Resume the snapshot in this directory instead of booting the config's kernel.
        #[arg(long)]
        restore: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let started = Instant::now();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("HAKO_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(log_writer())
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match (cli.command, cli.config) {
        (Some(Command::Probe { device, idmap_path }), _) => probe(&device, idmap_path.as_deref()),
        (Some(Command::Run { config, restore }), _) => run(&config, restore.as_deref(), started),
        (None, Some(config)) => run(&config, cli.restore.as_deref(), started),
        (None, None) => {
            eprintln!("hako-vmm: give --config FILE (or a subcommand; see --help)");
            ExitCode::from(EXIT_BAD_CONFIG)
        }
    }
}

/// Where tracing writes: stderr, capped to keep its tail when it is a file (the runtime's
/// vmm.log on the host's /run).
fn log_writer() -> BoxMakeWriter {
    match CappedLog::stderr(capped_log::VMM_LOG_CAP, capped_log::KEPT) {
        Ok(Some(log)) => BoxMakeWriter::new(Mutex::new(log)),
        Ok(None) => BoxMakeWriter::new(std::io::stderr),
        Err(e) => {
            eprintln!("hako-vmm: stderr cannot be capped, so it is not: {e}");
            BoxMakeWriter::new(std::io::stderr)
        }
    }
}

fn probe(device: &std::path::Path, idmap_path: Option<&std::path::Path>) -> ExitCode {
    let report = hako_vmm::probe::probe(device, idmap_path);
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

fn run(path: &std::path::Path, restore: Option<&std::path::Path>, started: Instant) -> ExitCode {
    let config = match hako_vmm::load_config(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hako-vmm: {}", anyhow::Error::from(e));
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    match hako_vmm::run_from(&config, restore, started) {
        Ok(reason) => {
            tracing::info!(?reason, code = reason.exit_code(), "VM ended");
            ExitCode::from(reason.exit_code())
        }
        Err(e) => {
            // A snapshot that is missing, of another version or of another machine is bad
            // input, like a bad config.
            let code = match &e {
                hako_vmm::VmmError::Build(hako_vmm::builder::BuildError::Snapshot(_)) => {
                    EXIT_BAD_CONFIG
                }
                _ => EXIT_VMM_ERROR,
            };
            eprintln!("hako-vmm: {:#}", anyhow::Error::from(e));
            ExitCode::from(code)
        }
    }
}
