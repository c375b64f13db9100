//! hako-vmm: the virtual machine monitor of one Hako sandbox (one process per VM), and the
//! KVM probe that `hako check` runs.
#![deny(unsafe_code)]

pub mod api;
pub mod arch;
pub mod builder;
pub mod capped_log;
pub mod config;
pub mod devices;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod host_devices;
pub mod jail;
pub mod memory;
pub mod metrics;
pub mod probe;
pub mod process;
pub mod seccomp;
pub mod signals;
pub mod snapshot;
pub mod threads;
pub mod vcpu;
pub mod vm;
pub mod vmm;

use std::path::Path;
use std::sync::mpsc;
use std::time::Instant;

use hako_vmm_api::{ExitReason, VmConfig};

/// Errors that stop the VMM before or while it runs a guest.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Build(#[from] builder::BuildError),
    #[error(transparent)]
    Api(#[from] api::ApiError),
    #[error(transparent)]
    HostDevices(#[from] host_devices::HostDevicesError),
    #[error(transparent)]
    Jail(#[from] jail::JailError),
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    #[error(transparent)]
    Process(#[from] process::ProcessError),
    #[error("starting the device worker spawner")]
    Threads(#[source] std::io::Error),
    #[error("handling termination signals")]
    Signals(#[source] std::io::Error),
}

/// `e` and its sources, joined with ": " (for a log line or a control reply, where `{:#}`
/// of an anyhow error is not at hand).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// Loads and checks the config file at `path`.
pub fn load_config(path: &Path) -> Result<VmConfig, VmmError> {
    Ok(config::load(path)?)
}

/// Boots `config` and runs it until the guest ends or the VMM is told to stop. `started` is
/// when the process began (for start-up timing in the logs).
pub fn run(config: &VmConfig, started: Instant) -> Result<ExitReason, VmmError> {
    run_from(config, None, started)
}

/// Like [`run`], but the VM resumes from the snapshot in `snapshot_dir` when given.
pub fn run_from(
    config: &VmConfig,
    snapshot_dir: Option<&Path>,
    started: Instant,
) -> Result<ExitReason, VmmError> {
    // Before any thread exists: no thread arena, whose first heap shrink would open a file.
    process::one_malloc_arena();
    // Before anything holds descriptors a guest drives.
    let open_files = process::limit_open_files()?;
    tracing::debug!(open_files, "open-file limit set");
    // First, while still root in the host's namespaces: the devices the jail leaves out.
    let host = host_devices::HostDevices::open(config)?;
    // Then the jail, which needs a process with one thread.
    if let Some(jail) = &config.security.jail {
        match jail::enter(config, snapshot_dir, jail)? {
            jail::JailedAs::User { uid, gid } => {
                tracing::info!(root = %jail.root.display(), uid, gid, "entered the jail as an unprivileged user")
            }
            jail::JailedAs::Root => {
                tracing::info!(root = %jail.root.display(), "entered the jail as root")
            }
        }
    }
    // After the jail's user namespace is mapped (its helper, a fork, would inherit it) and
    // before the guest runs.
    process::forbid_dumping()?;
    // Before any thread starts, so every thread inherits the mask (only the signal thread
    // takes stop signals).
    signals::block_stop_signals().map_err(VmmError::Signals)?;
    if config.security.seccomp {
        // Next, still with one thread: every thread inherits the base layer and confines
        // itself to its own list as it starts (the spawner first).
        seccomp::install()?;
        threads::start_spawner().map_err(VmmError::Threads)?;
    }
    let (tx, rx) = mpsc::channel();
    // The control server goes first so that its socket is removed however the build ends.
    let _control = match &config.control_socket {
        Some(path) => Some(api::ControlServer::start(path, tx.clone())?),
        None => None,
    };
    signals::watch(tx.clone()).map_err(VmmError::Signals)?;
    let vmm = match snapshot_dir {
        Some(dir) => builder::restore(config, host, dir, (tx, rx), started)?,
        None => builder::build(config, host, (tx, rx), started)?,
    };
    seccomp::confine(seccomp::Profile::Vmm);
    Ok(vmm.run())
}
