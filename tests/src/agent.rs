//! Talking to a hako-agent from tests: ttrpc clients over a Unix socket (agent as a host
//! process) or through hako-vmm's hybrid vsock (`CONNECT <port>` / `OK <port>`).

use std::path::Path;
use std::time::{Duration, Instant};

use hako_agent_api::{agent_ttrpc::AgentServiceClient, health_ttrpc::HealthClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Both clients on one connection.
pub struct Clients {
    pub health: HealthClient,
    pub agent: AgentServiceClient,
}

impl Clients {
    fn new(client: ttrpc::r#async::Client) -> Self {
        Self {
            health: HealthClient::new(client.clone()),
            agent: AgentServiceClient::new(client),
        }
    }
}

/// Connects to an agent listening on a Unix socket, retrying until `deadline`.
pub async fn connect_unix(path: &Path, deadline: Duration) -> Result<Clients, String> {
    let start = Instant::now();
    loop {
        match UnixStream::connect(path).await {
            Ok(s) => return Ok(Clients::new(ttrpc::r#async::Client::new(s.into()))),
            Err(e) if start.elapsed() > deadline => {
                return Err(format!("connecting to {}: {e}", path.display()));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// One hybrid-vsock handshake: the stream to guest `port`, or why not.
async fn hybrid_once(uds: &Path, port: u32) -> Result<UnixStream, String> {
    let mut s = UnixStream::connect(uds)
        .await
        .map_err(|e| format!("connecting to {}: {e}", uds.display()))?;
    s.write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .map_err(|e| format!("CONNECT: {e}"))?;
    // Byte by byte up to the newline, so no ttrpc bytes are read with the handshake.
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.last() != Some(&b'\n') && line.len() < 64 {
        match s.read(&mut b).await {
            Ok(0) => return Err("the VMM closed the connection (nobody listens yet)".into()),
            Ok(_) => line.push(b[0]),
            Err(e) => return Err(format!("reading OK: {e}")),
        }
    }
    if line.starts_with(b"OK ") {
        Ok(s)
    } else {
        Err(format!(
            "handshake answered {:?}",
            String::from_utf8_lossy(&line)
        ))
    }
}

/// Connects to guest `port` through the VMM's hybrid vsock socket, retrying (the agent may
/// not listen yet: guests boot slowly where kernel mode is emulated) until `deadline`.
pub async fn connect_hybrid(uds: &Path, port: u32, deadline: Duration) -> Result<Clients, String> {
    let start = Instant::now();
    loop {
        match hybrid_once(uds, port).await {
            Ok(s) => return Ok(Clients::new(ttrpc::r#async::Client::new(s.into()))),
            Err(e) if start.elapsed() > deadline => {
                return Err(format!(
                    "no agent on vsock port {port} after {deadline:?}: {e}"
                ));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// A ttrpc context with a timeout.
pub fn ctx(timeout: Duration) -> ttrpc::context::Context {
    ttrpc::context::with_timeout(timeout.as_nanos() as i64)
}
