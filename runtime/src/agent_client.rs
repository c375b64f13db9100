//! ttrpc clients of the agent: over hako-vmm's hybrid vsock socket (`CONNECT <port>\n`, then
//! `OK <port>\n`) or over a plain Unix socket (an agent run as a host process). hako-vmm's
//! socket is in the directory it may rewrite: it is reached through
//! [`VmmDir`](crate::host::vmm_dir::VmmDir), never through a symlink planted there.

use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, Instant};

use hako_agent_api::agent_ttrpc::AgentServiceClient;
use hako_agent_api::health_ttrpc::HealthClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::host::vmm_dir::{VmmDir, printable};

/// How long one hybrid-vsock handshake may take (the VMM answers once the guest's agent
/// accepted or refused the connection): the first try this long, each next one twice the last,
/// up to [`HANDSHAKE_MAX`]. A guest just resumed from a template can lose a connection request
/// made before it handled the VMM's transport reset (measured here: the first handshake went
/// unanswered for its whole 30 s, the next, made at once, was answered), so a lost one costs
/// a second, while a guest that answers slowly still gets its time.
const HANDSHAKE: Duration = Duration::from_secs(1);
const HANDSHAKE_MAX: Duration = Duration::from_secs(30);

/// Both services on one connection.
pub struct AgentClient {
    pub health: HealthClient,
    pub agent: AgentServiceClient,
}

impl AgentClient {
    fn new(stream: UnixStream) -> Self {
        let client = ttrpc::r#async::Client::new(stream.into());
        Self {
            health: HealthClient::new(client.clone()),
            agent: AgentServiceClient::new(client),
        }
    }
}

/// A ttrpc context with a deadline.
pub fn ctx(timeout: Duration) -> ttrpc::context::Context {
    ttrpc::context::with_timeout(timeout.as_nanos() as i64)
}

/// A ttrpc context without a deadline, for long polls (output, waits) that may
/// rightly last as long as the container runs.
pub fn no_deadline() -> ttrpc::context::Context {
    ttrpc::context::Context::default()
}

/// One hybrid-vsock handshake on the VMM's socket `uds` (not reached through a symlink).
pub async fn hybrid_connect(uds: &Path, port: u32) -> std::io::Result<UnixStream> {
    let (dir, name) = VmmDir::open_parent(uds)?;
    hybrid_connect_in(&dir, &name, port, HANDSHAKE_MAX).await
}

/// One hybrid-vsock handshake on the socket `name` in the VMM directory `dir`, answered within
/// `limit`.
async fn hybrid_connect_in(
    dir: &VmmDir,
    name: &OsStr,
    port: u32,
    limit: Duration,
) -> std::io::Result<UnixStream> {
    let mut s = dir.connect_async(name).await?;
    tokio::time::timeout(limit, handshake(&mut s, port))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no hybrid-vsock handshake answer within {limit:?}"),
            )
        })??;
    Ok(s)
}

async fn handshake(s: &mut UnixStream, port: u32) -> std::io::Result<()> {
    s.write_all(format!("CONNECT {port}\n").as_bytes()).await?;
    // Byte by byte up to the newline, so no ttrpc bytes are read with the handshake.
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.last() != Some(&b'\n') {
        if line.len() >= 64 || s.read(&mut b).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "the VMM closed the connection (nothing listens on that guest port yet)",
            ));
        }
        line.push(b[0]);
    }
    if line.starts_with(b"OK ") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "unexpected handshake answer {:?}",
            printable(&String::from_utf8_lossy(&line), 64)
        )))
    }
}

/// Connects to the agent on guest `port`, retrying until `deadline` (guests boot slowly
/// where kernel mode is emulated); `alive` says whether to keep trying (the VMM still runs).
pub async fn connect_hybrid(
    uds: &Path,
    port: u32,
    deadline: Duration,
    mut alive: impl FnMut() -> bool,
) -> Result<AgentClient, String> {
    let start = Instant::now();
    // The VMM directory, opened once (it exists before hako-vmm starts).
    let mut dir: Option<(VmmDir, std::ffi::OsString)> = None;
    let mut limit = HANDSHAKE;
    loop {
        let tried = match &dir {
            Some((dir, name)) => hybrid_connect_in(dir, name, port, limit).await,
            None => match VmmDir::open_parent(uds) {
                Ok(opened) => {
                    let tried = hybrid_connect_in(&opened.0, &opened.1, port, limit).await;
                    dir = Some(opened);
                    tried
                }
                Err(e) => Err(e.into()),
            },
        };
        if matches!(&tried, Err(e) if e.kind() == std::io::ErrorKind::TimedOut) {
            limit = (limit * 2).min(HANDSHAKE_MAX);
        }
        match tried {
            Ok(s) => return Ok(AgentClient::new(s)),
            Err(e) if start.elapsed() > deadline => {
                return Err(format!(
                    "no agent on vsock port {port} after {deadline:?}: {e}"
                ));
            }
            Err(e) if !alive() => {
                return Err(format!("the VM stopped before its agent answered: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Connects to an agent on a Unix socket, retrying until `deadline`.
pub async fn connect_unix(path: &Path, deadline: Duration) -> Result<AgentClient, String> {
    let start = Instant::now();
    loop {
        match UnixStream::connect(path).await {
            Ok(s) => return Ok(AgentClient::new(s)),
            Err(e) if start.elapsed() > deadline => {
                return Err(format!("connecting to {}: {e}", path.display()));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Copies a process's stdout (or stderr) to `to` until the stream ends. Each read is a long
/// poll: a quiet process may print nothing for a long time.
pub async fn copy_stream(
    agent: &AgentServiceClient,
    container_id: &str,
    exec_id: &str,
    stderr: bool,
    mut to: impl std::io::Write,
) -> anyhow::Result<()> {
    use anyhow::Context;
    loop {
        let mut r = hako_agent_api::agent::ReadStreamRequest::new();
        r.container_id = container_id.into();
        r.exec_id = exec_id.into();
        r.len = 64 * 1024;
        let long = no_deadline();
        let chunk = if stderr {
            agent.read_stderr(long, &r).await
        } else {
            agent.read_stdout(long, &r).await
        }
        .with_context(|| format!("reading the output of {container_id}/{exec_id}"))?;
        if chunk.data.is_empty() {
            return Ok(());
        }
        to.write_all(&chunk.data)?;
        to.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hako-vmm's hybrid vsock socket at `path` that accepts one connection and answers
    /// its handshake; returns whether it was connected.
    async fn fake_vmm(listener: tokio::net::UnixListener) -> bool {
        let Ok(Ok((mut s, _))) =
            tokio::time::timeout(Duration::from_millis(500), listener.accept()).await
        else {
            return false;
        };
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"CONNECT 1024\n");
        s.write_all(b"OK 1024\n").await.unwrap();
        true
    }

    #[tokio::test]
    async fn the_hybrid_vsock_handshake_is_made_on_the_vmms_socket() {
        let root = tempfile::tempdir().unwrap();
        let vsock = root.path().join("vsock");
        let vmm = tokio::spawn(fake_vmm(tokio::net::UnixListener::bind(&vsock).unwrap()));
        hybrid_connect(&vsock, 1024).await.unwrap();
        assert!(vmm.await.unwrap());
    }

    #[tokio::test]
    async fn a_symlinked_vsock_socket_is_not_connected() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("vmm")).unwrap();
        // A compromised VMM points its socket at another listener (containerd's, say).
        let target = root.path().join("containerd.sock");
        let other = tokio::spawn(fake_vmm(tokio::net::UnixListener::bind(&target).unwrap()));
        let vsock = root.path().join("vmm/vsock");
        std::os::unix::fs::symlink(&target, &vsock).unwrap();
        let e = hybrid_connect(&vsock, 1024).await.unwrap_err();
        assert!(e.to_string().contains("vsock"), "{e}");
        let e = connect_hybrid(&vsock, 1024, Duration::ZERO, || true)
            .await
            .err()
            .unwrap();
        assert!(e.contains("no agent on vsock port 1024"), "{e}");
        assert!(
            !other.await.unwrap(),
            "the socket a symlink points to was connected"
        );
    }
}
