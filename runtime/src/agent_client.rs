//! ttrpc clients of the agent: over hako-vmm's hybrid vsock socket (`CONNECT <port>\n`, then
//! `OK <port>\n`) or over a plain Unix socket (an agent run as a host process).

use std::path::Path;
use std::time::{Duration, Instant};

use hako_agent_api::agent_ttrpc::AgentServiceClient;
use hako_agent_api::health_ttrpc::HealthClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

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

/// One hybrid-vsock handshake.
pub async fn hybrid_connect(uds: &Path, port: u32) -> std::io::Result<UnixStream> {
    let mut s = UnixStream::connect(uds).await?;
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
        Ok(s)
    } else {
        Err(std::io::Error::other(format!(
            "unexpected handshake answer {:?}",
            String::from_utf8_lossy(&line)
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
    loop {
        match hybrid_connect(uds, port).await {
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
