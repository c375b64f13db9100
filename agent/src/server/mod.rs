//! The ttrpc server: Health and AgentService on one listener (vsock in a VM, a Unix socket in
//! host tests), until DestroySandbox or a termination signal ends it.

mod agent_service;
pub mod framing;
mod health;
pub mod policy;

use std::collections::BTreeSet;
use std::sync::Arc;

use hako_agent_api::{agent_ttrpc, health_ttrpc};

use crate::container::Containers;
use crate::sandbox::{Sandbox, Shutdown};

/// The listener for `addr`: vsock ones take the host's connections only. Each connection is
/// [`framing::framed`] (one send per reply, buffered reads).
fn listener(addr: &str) -> std::io::Result<ttrpc::r#async::transport::Listener> {
    if let Some(rest) = addr.strip_prefix("vsock://") {
        let port = rest
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u32>().ok())
            .ok_or_else(|| std::io::Error::other(format!("{addr:?}: no vsock port")))?;
        return policy::host_only_vsock(port);
    }
    if let Some(path) = addr.strip_prefix("unix://") {
        let listener = std::os::unix::net::UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::UnixListener::from_std(listener)?;
        return Ok(ttrpc::r#async::transport::Listener::new(
            futures_util::stream::unfold(listener, |l| async move {
                let conn = l.accept().await.map(|(conn, _)| framing::framed(conn));
                Some((conn, l))
            }),
        ));
    }
    ttrpc::r#async::transport::Listener::bind(addr)
}

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
/// The RPCs in `deny` answer PERMISSION_DENIED; on vsock only the host may connect.
pub async fn serve(
    addr: &str,
    deny: &BTreeSet<String>,
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
    let unknown = policy::deny(&mut services, deny);
    if !unknown.is_empty() {
        tracing::warn!(
            ?unknown,
            "the deny list names RPCs this agent does not have"
        );
    }
    if !deny.is_empty() {
        tracing::info!(?deny, "agent policy: RPCs denied");
    }
    let listener = listener(addr).map_err(|source| ServerError::Bind {
        addr: addr.to_owned(),
        source: ttrpc::Error::Others(source.to_string()),
    })?;
    let mut server = ttrpc::r#async::Server::new()
        .add_listener(listener)
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
