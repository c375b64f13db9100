//! Talking to a hako-agent from tests: the runtime's own agent client (hybrid vsock or a Unix
//! socket), re-exported so suites and the runtime share one implementation.

use std::path::Path;
use std::time::Duration;

pub use hako_runtime::agent_client::{AgentClient as Clients, connect_unix, ctx};

/// Connects through hako-vmm's hybrid vsock socket, retrying until `deadline`.
pub async fn connect_hybrid(uds: &Path, port: u32, deadline: Duration) -> Result<Clients, String> {
    hako_runtime::agent_client::connect_hybrid(uds, port, deadline, || true).await
}

/// A process's whole stdout (or stderr) as text.
pub async fn read_to_end(
    agent: &hako_agent_api::agent_ttrpc::AgentServiceClient,
    container_id: &str,
    exec_id: &str,
    stderr: bool,
) -> Result<String, String> {
    let mut out = Vec::new();
    hako_runtime::agent_client::copy_stream(agent, container_id, exec_id, stderr, &mut out)
        .await
        .map_err(|e| format!("{e:#}"))?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}
