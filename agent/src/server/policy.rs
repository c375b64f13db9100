//! The agent API policy, enforced where requests arrive: a vsock connection from any peer but
//! the host is closed unanswered (a process in the guest must not drive the agent), and each
//! RPC the sandbox's deny list names answers `PERMISSION_DENIED` (e.g. no exec into a
//! production pod). The vocabulary (RPC names, which the runtime needs) is
//! [`hako_agent_api::policy`]'s, shared with the runtime that writes the list.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use futures_util::stream;
use hako_agent_api::policy::{AGENT_RPCS, VMADDR_CID_HOST};
use ttrpc::r#async::transport::Listener;
use ttrpc::r#async::{MethodHandler, Service, TtrpcContext};
use ttrpc::{Code, Request, Response};

/// Whether a vsock peer may use the agent API: the host only.
pub fn peer_allowed(cid: u32) -> bool {
    cid == VMADDR_CID_HOST
}

/// A listener on the vsock `port` that hands ttrpc only the host's connections; every other
/// peer's is logged and closed.
pub fn host_only_vsock(port: u32) -> std::io::Result<Listener> {
    let listener = tokio_vsock::VsockListener::bind(tokio_vsock::VsockAddr::new(
        tokio_vsock::VMADDR_CID_ANY,
        port,
    ))?;
    Ok(Listener::new(stream::unfold(listener, |l| async move {
        loop {
            match l.accept().await {
                Ok((conn, peer)) if peer_allowed(peer.cid()) => {
                    return Some((Ok(super::framing::framed(conn)), l));
                }
                Ok((_, peer)) => tracing::warn!(
                    cid = peer.cid(),
                    port = peer.port(),
                    "refused an agent API connection from a peer that is not the host"
                ),
                Err(e) => return Some((Err(e), l)),
            }
        }
    })))
}

/// Replaces each denied RPC's handler with one that refuses it. Names that are not RPCs of
/// these services are returned (the runtime checks them; an agent only warns).
pub fn deny(services: &mut HashMap<String, Service>, denied: &BTreeSet<String>) -> Vec<String> {
    let mut unknown = Vec::new();
    for rpc in denied {
        let mut found = false;
        for service in services.values_mut() {
            if let Some(handler) = service.methods.get_mut(rpc) {
                *handler = Box::new(Denied { rpc: rpc.clone() });
                found = true;
            }
        }
        if !found || !AGENT_RPCS.contains(&rpc.as_str()) {
            unknown.push(rpc.clone());
        }
    }
    unknown
}

/// The handler of a denied RPC.
struct Denied {
    rpc: String,
}

#[async_trait]
impl MethodHandler for Denied {
    async fn handler(&self, _ctx: TtrpcContext, _req: Request) -> ttrpc::Result<Response> {
        tracing::warn!(rpc = %self.rpc, "refused an RPC this sandbox's agent policy denies");
        // A status travels in an Ok response (an Err would reach the client as UNKNOWN).
        let mut response = Response::new();
        response.set_status(ttrpc::get_status(
            Code::PERMISSION_DENIED,
            format!("{} is denied by this sandbox's agent policy", self.rpc),
        ));
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hako_agent_api::agent_ttrpc;

    #[test]
    fn only_the_host_may_connect() {
        assert!(peer_allowed(2));
        // Any, hypervisor, local (loopback), and guests' CIDs.
        for cid in [u32::MAX, 0, 1, 3, 42] {
            assert!(!peer_allowed(cid), "{cid}");
        }
    }

    #[test]
    fn the_shared_rpc_list_is_the_services_own() {
        // The runtime validates names against AGENT_RPCS: it must not drift from the
        // generated service.
        let services = agent_ttrpc::create_agent_service(std::sync::Arc::new(Nothing));
        let mut generated: Vec<&str> = services
            .values()
            .flat_map(|s| s.methods.keys())
            .map(String::as_str)
            .collect();
        generated.sort_unstable();
        let mut known = AGENT_RPCS.to_vec();
        known.sort_unstable();
        assert_eq!(generated, known);
    }

    #[test]
    fn denying_names_reports_those_that_are_not_rpcs() {
        let mut services = agent_ttrpc::create_agent_service(std::sync::Arc::new(Nothing));
        let denied: BTreeSet<String> = ["ExecProcess".to_owned(), "Bogus".to_owned()].into();
        assert_eq!(deny(&mut services, &denied), ["Bogus"]);
    }

    /// A service whose every RPC is the trait's default (UNIMPLEMENTED).
    struct Nothing;
    impl agent_ttrpc::AgentService for Nothing {}
}
