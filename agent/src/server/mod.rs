//! The ttrpc server: Health and AgentService on one listener (vsock in a VM, a Unix socket in
//! host tests), until DestroySandbox or a termination signal ends it.

mod agent_service;
mod health;

use std::sync::Arc;

use hako_agent_api::{agent_ttrpc, health_ttrpc};

use crate::container::Containers;
use crate::sandbox::{Sandbox, Shutdown};

/// Errors serving the API.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("listening on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: ttrpc::Error,
    },
    #[error("serving the agent API")]
    Serve(#[source] ttrpc::Error),
}

/// Serves until the sandbox is destroyed or the process is told to stop; returns how it ended.
pub async fn serve(
    addr: &str,
    sandbox: Arc<Sandbox>,
    containers: Arc<Containers>,
) -> Result<Shutdown, ServerError> {
    if let Some(path) = addr.strip_prefix("unix://") {
        // A stale socket from an earlier run would make bind fail.
        let _ = std::fs::remove_file(path);
    }
    let mut services = health_ttrpc::create_health(Arc::new(health::HealthService));
    services.extend(agent_ttrpc::create_agent_service(Arc::new(
        agent_service::AgentServiceImpl {
            sandbox: sandbox.clone(),
            containers,
        },
    )));
    let mut server = ttrpc::r#async::Server::new()
        .bind(addr)
        .map_err(|source| ServerError::Bind {
            addr: addr.to_owned(),
            source,
        })?
        .register_service(services);
    server.start().await.map_err(ServerError::Serve)?;
    tracing::info!(%addr, "agent API serving");
    let ended = sandbox.wait_for_shutdown().await;
    // Let the DestroySandbox reply leave before the listener goes.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let _ = server.shutdown().await;
    if let Some(path) = addr.strip_prefix("unix://") {
        let _ = std::fs::remove_file(path);
    }
    Ok(ended)
}
