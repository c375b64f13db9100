//! The serving shim (the binary run without an action, by `start`): one ttrpc socket that
//! answers task API v2 (containerd 1.6–2.2) and v3 (containerd 2.3, told so by the bootstrap
//! reply) with one [`TaskService`]. The two APIs have the same methods and messages; only the
//! service's name differs, so one generated service is registered under both names.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use containerd_shim::Flags;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::protos::shim_async::{Task, create_task};
use containerd_shim::protos::ttrpc::r#async::{Server, Service};
use containerd_shim::publisher::RemotePublisher;

use super::events::Publisher;
use super::start::TTRPC_ADDRESS_ENV;
use super::task::TaskService;
use crate::config::Config;

const TASK_V2: &str = "containerd.task.v2.Task";
const TASK_V3: &str = "containerd.task.v3.Task";

/// The task service under the names of both task API versions.
pub fn task_services(service: Arc<dyn Task + Send + Sync>) -> HashMap<String, Service> {
    let mut services = create_task(service.clone());
    if let Some(v3) = create_task(service).remove(TASK_V2) {
        services.insert(TASK_V3.to_owned(), v3);
    }
    services
}

/// Serves the sandbox's task API until the service asks to exit.
pub async fn serve(flags: &Flags) -> anyhow::Result<()> {
    if flags.socket.is_empty() {
        bail!("-socket is empty: the shim has no address to serve");
    }
    let config = Config::load().unwrap_or_else(|e| {
        eprintln!("{e}; using the defaults");
        Config::default()
    });
    containerd_shim::logger::init(
        flags.debug,
        &config.runtime.log_level,
        &flags.namespace,
        &flags.id,
    )
    .context("opening containerd's log pipe")?;
    let path = PathBuf::from(
        flags
            .socket
            .strip_prefix("unix://")
            .unwrap_or(&flags.socket),
    );
    let Some(listener) = bind(&path).await? else {
        // The group's shim already serves there: `start` replies with its address.
        std::fs::write("address", &flags.socket).context("writing the address file")?;
        return release_start();
    };
    let ttrpc_address = std::env::var(TTRPC_ADDRESS_ENV)
        .with_context(|| format!("{TTRPC_ADDRESS_ENV} (containerd's event address) is unset"))?;
    let publisher = RemotePublisher::new(&ttrpc_address)
        .await
        .with_context(|| format!("connecting to containerd at {ttrpc_address}"))?;
    let exit = Arc::new(ExitSignal::default());
    let service: Arc<dyn Task + Send + Sync> = Arc::new(TaskService::new(
        config,
        Arc::new(Publisher::new(Some(publisher), &flags.namespace)),
        exit.clone(),
    ));
    let listener = ttrpc::asynchronous::transport::Listener::try_from(listener)
        .context("making the ttrpc listener")?;
    let mut server = Server::new()
        .add_listener(listener)
        .register_service(task_services(service));
    server.start().await.context("starting the task server")?;
    release_start()?;
    tracing::info!("serving on {}", path.display());
    // containerd may signal the shim; it stops when its task service says (Shutdown).
    tokio::spawn(ignore_termination());
    exit.wait().await;
    let _ = server.shutdown().await;
    Ok(())
}

/// Binds `path`; `None` when a live shim already serves there. A dead shim's socket is
/// replaced.
async fn bind(path: &Path) -> anyhow::Result<Option<std::os::unix::net::UnixListener>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match std::os::unix::net::UnixListener::bind(path) {
        Ok(l) => return Ok(Some(l)),
        Err(e) if e.kind() != std::io::ErrorKind::AddrInUse => {
            return Err(e).with_context(|| format!("binding {}", path.display()));
        }
        Err(_) => {}
    }
    for _ in 0..5 {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::fs::remove_file(path).with_context(|| format!("removing the dead {}", path.display()))?;
    std::os::unix::net::UnixListener::bind(path)
        .map(Some)
        .with_context(|| format!("binding {}", path.display()))
}

/// Tells `start` the shim serves: its stdout (a pipe `start` reads to the end) is closed by
/// pointing it at stderr, as containerd-shim does.
fn release_start() -> anyhow::Result<()> {
    nix::unistd::dup2(2, 1).context("closing the start pipe")?;
    Ok(())
}

/// SIGTERM and SIGINT do not end the shim: its sandbox would be left running. containerd ends
/// it through Shutdown, or through `delete` when it is gone.
async fn ignore_termination() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot catch SIGTERM/SIGINT");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => tracing::debug!("SIGTERM ignored"),
            _ = int.recv() => tracing::debug!("SIGINT ignored"),
        }
    }
}
