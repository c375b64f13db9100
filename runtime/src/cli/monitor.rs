//! The per-container monitor (`hako monitor`, started by `hako create`): the host process
//! that owns a container's sandbox VM. It serves the same Task API as the containerd shim on
//! `<root>/<id>/monitor.sock` (the other `hako` commands are its clients) and the container's
//! stand-in on `<root>/<id>/init.sock` (`stand_in.rs`: the process callers know as the
//! init). Its stdio is the container's until the init ended; then it tells the stand-in,
//! lets go of the stdio and tears the VM down.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::protos::api::{CreateTaskRequest, DeleteRequest};
use containerd_shim::protos::shim_async::{Task, create_task};
use containerd_shim::protos::ttrpc::r#async::Server;
use hako_agent_api::agent::TtyWinResizeRequest;

use super::stand_in;
use crate::agent_client::ctx;
use crate::config::Config;
use crate::shim::events::Publisher;
use crate::shim::task::TaskService;
use crate::state::{ContainerRecord, process_start};

pub const SOCKET: &str = "monitor.sock";
/// The container's sandbox directory under `<root>/<id>/`.
pub const SANDBOX_DIR: &str = "vm";

#[derive(Debug, clap::Args)]
pub struct MonitorArgs {
    #[arg(long)]
    pub bundle: PathBuf,
    /// The process has a terminal (the monitor's stdio is a pty slave).
    #[arg(long)]
    pub terminal: bool,
    pub id: String,
}

/// Runs the monitor; returns the container's exit status.
pub async fn run(mut config: Config, root: &Path, args: &MonitorArgs) -> anyhow::Result<i32> {
    // `<root>/<id>/` holds the container (record, monitor socket); its sandbox lives in
    // `<root>/<id>/vm/`, which the sandbox removes when it stops.
    let dir = root.join(&args.id);
    config.runtime.root = dir.clone();
    let exit = Arc::new(ExitSignal::default());
    let service = Arc::new(
        TaskService::new(config, Arc::new(Publisher::new(None, "")), exit.clone())
            .with_dir_name(SANDBOX_DIR)
            .without_hooks(),
    );
    let socket = dir.join(SOCKET);
    let dyn_service: Arc<dyn Task + Send + Sync> = service.clone();
    // The path may pass a socket address's length (a long --root, 64-character ids).
    let listener = hako_socket_path::bind(&socket)
        .and_then(ttrpc::asynchronous::transport::Listener::try_from)
        .with_context(|| format!("listening on {}", socket.display()))?;
    let mut server = Server::new()
        .add_listener(listener)
        .register_service(create_task(dyn_service));
    server.start().await.context("starting the task server")?;

    let me = std::process::id();
    ContainerRecord::update(&dir, |r| {
        r.monitor_pid = me;
        r.monitor_start = process_start(me).unwrap_or(0);
    })?;
    let init_socket = dir.join(stand_in::SOCKET);
    let init_listener = hako_socket_path::bind(&init_socket)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(tokio::net::UnixListener::from_std)
        .with_context(|| format!("listening on {}", init_socket.display()))?;
    let (exited, exit_status) = tokio::sync::watch::channel(None);
    tokio::spawn(stand_in::serve(
        init_listener,
        dir.clone(),
        args.id.clone(),
        service.clone(),
        exit_status,
    ));

    let mut req = CreateTaskRequest::new();
    req.id = args.id.clone();
    req.bundle = args.bundle.display().to_string();
    req.stdin = "/proc/self/fd/0".into();
    req.stdout = "/proc/self/fd/1".into();
    req.stderr = if args.terminal {
        String::new()
    } else {
        "/proc/self/fd/2".into()
    };
    req.terminal = args.terminal;
    if let Err(e) = service.create_task(req).await {
        let _ = server.shutdown().await;
        anyhow::bail!("creating container {}: {e}", args.id);
    }
    ContainerRecord::update(&dir, |r| r.created_in_guest = true)?;
    tracing::info!(container_id = %args.id, "created; monitoring");

    if args.terminal {
        follow_window_size(service.clone(), args.id.clone());
    }
    let init = service.process_of(&args.id, "").await?;
    let code = tokio::select! {
        (code, _) = init.wait() => {
            ContainerRecord::update(&dir, |r| r.exit_status = Some(code as i32))?;
            exited.send_replace(Some(code as i32));
            // The output is drained: the caller's pipes and terminal are not held open
            // while the VM goes down.
            release_stdio();
            let mut del = DeleteRequest::new();
            del.id = args.id.clone();
            if let Err(e) = service.delete_task(del).await {
                tracing::warn!(container_id = %args.id, "removing the sandbox: {e}");
            }
            service.wait_stopped().await;
            code as i32
        }
        _ = exit.wait() => 0,
    };
    let _ = server.shutdown().await;
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(&init_socket);
    Ok(code)
}

/// Where a monitor that failed leaves its error for `create` (its stderr is the container's
/// and its log may be a file the caller reads only later).
pub const ERROR_FILE: &str = "monitor-error";

/// Leaves `e` in the container's directory for `create` to report.
pub fn record_failure(root: &Path, id: &str, e: &anyhow::Error) {
    let _ = std::fs::write(root.join(id).join(ERROR_FILE), format!("{e:#}"));
}

/// Points stdin, stdout and stderr at /dev/null.
fn release_stdio() {
    use std::os::fd::AsRawFd;
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..=2 {
            let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
        }
    }
}

/// Passes the host pty's window size (set by whoever holds the master) to the guest.
fn follow_window_size(service: Arc<TaskService>, id: String) {
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let size = super::console::window_size(std::io::stdin().as_fd());
            if size.is_some()
                && size != last
                && let (Some((rows, cols)), Some(agent)) = (size, service.agent())
            {
                let mut r = TtyWinResizeRequest::new();
                r.container_id = id.clone();
                r.rows = u32::from(rows);
                r.columns = u32::from(cols);
                if agent
                    .tty_win_resize(ctx(Duration::from_secs(30)), &r)
                    .await
                    .is_ok()
                {
                    last = size;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}
