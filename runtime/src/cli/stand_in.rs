//! The container's stand-in (`hako stand-in`, started by `create`): the host process callers
//! know as the container's init: the pid of `state` and `--pid-file`, what conmon and
//! containerd's runc shim (Docker) wait for. The container's processes are in the sandbox VM;
//! the stand-in presents what one host process can of them:
//! - it ends when the container's init ends, with its status (dying of the same signal when
//!   the init was killed by one), while the monitor tears the VM down afterwards;
//! - the signals callers send an init (TERM, INT, HUP, QUIT, USR1, USR2) go on to the
//!   container's init; its own death (SIGKILL) kills the container, as with runc's init;
//! - its root is the container's root file system, alone in a mount namespace of its own, so
//!   tools that reach a container through `/proc/<pid>/root` find the container's files, never
//!   the host's. Nothing in that namespace can run (`host/private_root.rs`: the guest writes
//!   that tree, and root tools enter it: `podman cp` execs `/proc/self/exe` there), and /proc
//!   is an empty cover, so `podman cp` into a running container and `podman top` find nothing
//!   to use and fail or list nothing, instead of running guest code or listing host
//!   processes. Its network, IPC and UTS namespaces are its own, empty ones.
//!
//! The monitor serves the other end on `<root>/<id>/init.sock` ([`serve`]): it records the
//! stand-in's pid (from the socket's peer credentials), forwards its signals, and sends the
//! exit status.

use std::io::{BufRead, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use anyhow::{Context, bail};
use nix::sys::signal::{SigSet, Signal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::Global;
use crate::sandbox::watchers::SANDBOX_DIED;
use crate::shim::task::TaskService;
use crate::state::{ContainerRecord, process_start};

/// The monitor's socket for the stand-in, in `<root>/<id>/`.
pub const SOCKET: &str = "init.sock";
/// Monitor → stand-in: its pid is recorded (the container's state names it).
const REGISTERED: u8 = b'R';
/// Monitor → stand-in: the init exited; four bytes (i32, little endian) of status follow.
const EXITED: u8 = b'X';
/// Signals a stand-in passes on to the container's init.
const FORWARDED: [Signal; 6] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];
/// Signals whose default action ends a process without a core dump: a stand-in dies of
/// these when the init did (not SIGPIPE, which Rust programs ignore: that status is returned).
const DIES_OF: [Signal; 7] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGKILL,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
    Signal::SIGTERM,
];
/// How long a stand-in waits for its monitor to register it (and `create` for the stand-in).
const REGISTER_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub struct StandInArgs {
    /// The container's root file system on the host (the stand-in's root).
    #[arg(long)]
    pub rootfs: PathBuf,
    pub id: String,
}

/// Starts the stand-in of container `id` (whose monitor serves it) and waits until it is
/// registered and in the container's root; returns it (our child, the caller's to wait for).
pub fn start(g: &Global, id: &str, rootfs: &Path) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("finding the hako binary")?;
    let mut child = Command::new(exe)
        .arg("--root")
        .arg(&g.root)
        .arg("stand-in")
        .arg("--rootfs")
        .arg(rootfs)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Like the monitor: a terminal's ^C reaches the container through the guest.
        .process_group(0)
        .spawn()
        .context("starting the container's stand-in")?;
    // The stand-in reports within REGISTER_WITHIN (its own reads are bounded by it), or ends.
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = std::io::BufReader::new(out).read_line(&mut line);
    }
    if line.trim() != "ok" {
        let _ = child.kill();
        let _ = child.wait();
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        bail!("the container's stand-in failed: {}", err.trim());
    }
    Ok(child)
}

/// `hako stand-in` (internal): see the module's documentation.
pub fn run(g: &Global, a: &StandInArgs) -> anyhow::Result<u8> {
    // Blocked before any thread starts (every thread inherits the mask); a thread of ours
    // takes them with sigwait.
    let mut forwarded = SigSet::empty();
    for s in FORWARDED {
        forwarded.add(s);
    }
    forwarded
        .thread_block()
        .context("blocking the forwarded signals")?;
    let socket = g.root.join(&a.id).join(SOCKET);
    let mut conn = hako_socket_path::connect(&socket)
        .with_context(|| format!("connecting to the monitor of {}", a.id))?;
    let mut ack = [0u8; 1];
    conn.set_read_timeout(Some(REGISTER_WITHIN))?;
    conn.read_exact(&mut ack)
        .context("waiting for the monitor to register the stand-in")?;
    conn.set_read_timeout(None)?;
    if ack[0] != REGISTERED {
        bail!("the monitor of {} did not register the stand-in", a.id);
    }
    crate::host::private_root::enter(&a.rootfs)?;
    let mut out = std::io::stdout();
    out.write_all(b"ok\n").and_then(|()| out.flush())?;

    let mut to_monitor = conn.try_clone().context("cloning the monitor connection")?;
    std::thread::spawn(move || {
        while let Ok(sig) = forwarded.wait() {
            if to_monitor.write_all(&[sig as u8]).is_err() {
                return;
            }
        }
    });
    let mut msg = [0u8; 5];
    let code = match conn.read_exact(&mut msg) {
        Ok(()) if msg[0] == EXITED => i32::from_le_bytes([msg[1], msg[2], msg[3], msg[4]]),
        // The monitor is gone: the container went with it.
        _ => SANDBOX_DIED as i32,
    };
    Ok(end_as(code))
}

/// Ends as the init did: of its signal when that ends a process cleanly (callers that look
/// at how the init ended see what runc's init gives), else with its status.
fn end_as(code: i32) -> u8 {
    if let Some(sig) = code
        .checked_sub(128)
        .and_then(|n| Signal::try_from(n).ok())
        .filter(|s| DIES_OF.contains(s))
    {
        let mut set = SigSet::empty();
        set.add(sig);
        let _ = set.thread_unblock();
        let _ = nix::sys::signal::raise(sig);
    }
    u8::try_from(code).unwrap_or(255)
}

/// The monitor's end: takes one stand-in, records its pid, forwards its signals to the
/// container's init, kills the container if the stand-in dies first, and sends the init's
/// status once `exit` has it.
pub async fn serve(
    listener: tokio::net::UnixListener,
    dir: PathBuf,
    id: String,
    service: Arc<TaskService>,
    mut exit: watch::Receiver<Option<i32>>,
) {
    let Ok((stream, _)) = listener.accept().await else {
        return;
    };
    // One stand-in per container.
    drop(listener);
    // Only a process of our own user is the stand-in (the container's directory is readable
    // by all).
    let Some(pid) = stream
        .peer_cred()
        .ok()
        .filter(|c| c.uid() == nix::unistd::geteuid().as_raw())
        .and_then(|c| c.pid())
        .and_then(|p| u32::try_from(p).ok())
    else {
        tracing::warn!(container_id = %id, "init.sock: a peer of another user; no stand-in");
        return;
    };
    let start = process_start(pid).unwrap_or(0);
    if let Err(e) = ContainerRecord::update(&dir, |r| {
        r.pid = pid;
        r.pid_start = start;
    }) {
        tracing::warn!(container_id = %id, "recording the stand-in: {e:#}");
        return;
    }
    let (mut from, mut to) = stream.into_split();
    if to.write_all(&[REGISTERED]).await.is_err() {
        return;
    }
    let exited = exit.clone();
    let mut b = [0u8; 1];
    loop {
        tokio::select! {
            r = from.read(&mut b) => match r {
                Ok(1) if FORWARDED.iter().any(|s| *s as i32 == i32::from(b[0])) => {
                    if let Err(e) = service.signal(&id, "", u32::from(b[0]), false).await {
                        tracing::debug!(container_id = %id, "forwarding signal {}: {e}", b[0]);
                    }
                }
                Ok(1) => tracing::debug!(container_id = %id, "signal {} not forwarded", b[0]),
                _ => {
                    let running = exited.borrow().is_none();
                    if running {
                        tracing::info!(container_id = %id, "the stand-in ended first: killing the container");
                        let _ = service.signal(&id, "", Signal::SIGKILL as u32, true).await;
                    }
                    return;
                }
            },
            code = async { exit.wait_for(Option::is_some).await.ok().and_then(|c| *c) } => {
                let code = code.unwrap_or(SANDBOX_DIED as i32);
                let mut msg = [EXITED, 0, 0, 0, 0];
                msg[1..].copy_from_slice(&code.to_le_bytes());
                let _ = to.write_all(&msg).await;
                return;
            }
        }
    }
}
