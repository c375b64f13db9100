//! Pod networking on the host. A pod's network namespace (made by CNI or podman, named by
//! the OCI spec's network namespace path) is read over netlink; each Ethernet interface in it
//! (the CNI veth) gets a tap beside it, joined both ways with tc (an ingress qdisc on each and
//! a u32 match-all filter with a mirred egress redirect to the other: Kata's "tcfilter"
//! mode). hako-vmm runs in that namespace with a virtio-net device on each tap, carrying the
//! veth's MAC, so the guest's frames leave through the veth as the pod's own. After boot the
//! agent gives the guest each interface's name, MTU and addresses, the routes and the static
//! neighbours. Detaching deletes the taps and the veths' ingress qdiscs (their filters go with
//! them); the namespace and the veth belong to whoever made them.

pub mod plan;
mod tap;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use hako_agent_api::agent::{
    AddARPNeighborsRequest, Routes, UpdateInterfaceRequest, UpdateRoutesRequest,
};
use hako_agent_api::agent_ttrpc::AgentServiceClient;
use hako_agent_api::netlink::Network;
use hako_agent_api::netlink::rtnetlink::LinkUnspec;
use hako_agent_api::netlink::rtnetlink::packet_route::tc::TcHandle;
use hako_vmm_api::NetConfig;

use self::plan::{Endpoint, Plan};
use crate::agent_client::ctx;

/// ETH_P_ALL, in the network byte order tc's filter protocol is given in.
const ALL_PROTOCOLS: u16 = 0x0003u16.to_be();

/// A pod network wired to taps for one sandbox.
#[derive(Debug, Clone)]
pub struct PodNetwork {
    pub netns: PathBuf,
    pub plan: Plan,
}

/// The network namespace path in an OCI spec (`linux.namespaces[type=network].path`): the
/// pod's, made by CNI or podman. None for a new empty namespace (no path) or the host's
/// network (no entry): the guest then has no network interface but its loopback.
pub fn namespace_path(spec: &serde_json::Value) -> Option<PathBuf> {
    spec.pointer("/linux/namespaces")?
        .as_array()?
        .iter()
        .find(|n| n.get("type").and_then(serde_json::Value::as_str) == Some("network"))?
        .get("path")
        .and_then(serde_json::Value::as_str)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

impl PodNetwork {
    /// Reads the namespace at `netns` and wires a tap to each interface it carries. None when
    /// the namespace has no interface to carry. Refuses the host's own namespace: redirecting
    /// its interfaces would cut the host off. On failure nothing it made is left.
    pub fn attach(netns: &Path) -> anyhow::Result<Option<Self>> {
        let ours = std::fs::metadata("/proc/self/ns/net").context("reading /proc/self/ns/net")?;
        let theirs = std::fs::metadata(netns)
            .with_context(|| format!("network namespace {}", netns.display()))?;
        if (ours.dev(), ours.ino()) == (theirs.dev(), theirs.ino()) {
            bail!(
                "network namespace {} is the runtime's own (the host's): a sandbox needs a \
                 namespace of its own",
                netns.display()
            );
        }
        let plan = in_netns(netns, |net| async move {
            let plan = plan::plan(
                &net.list_interfaces().await?,
                &net.list_routes().await?,
                &net.list_neighbors().await?,
            );
            for (n, e) in plan.endpoints.iter().enumerate() {
                if let Err(e) = wire(&net, e).await {
                    unwire(&net, &plan::links(&plan.endpoints[..=n])).await;
                    return Err(e);
                }
            }
            Ok(plan)
        })?;
        if plan.endpoints.is_empty() {
            return Ok(None);
        }
        tracing::info!(
            netns = %netns.display(),
            interfaces = plan.endpoints.len(),
            routes = plan.routes.len(),
            "pod network wired to taps"
        );
        Ok(Some(Self {
            netns: netns.into(),
            plan,
        }))
    }

    /// hako-vmm's net devices: one per tap, with the veth's MAC and MTU.
    pub fn vmm_devices(&self) -> Vec<NetConfig> {
        self.plan
            .endpoints
            .iter()
            .map(|e| NetConfig {
                id: e.veth.clone(),
                tap: e.tap.clone(),
                mac: e.guest.hw_addr.clone(),
                mtu: u16::try_from(e.guest.mtu).ok().filter(|m| *m >= 68),
                rate_limit: None,
            })
            .collect()
    }

    /// Gives the guest the pod's interfaces, routes and static neighbours.
    pub async fn configure_guest(&self, agent: &AgentServiceClient) -> anyhow::Result<()> {
        for e in &self.plan.endpoints {
            let mut req = UpdateInterfaceRequest::new();
            req.interface = Some(e.guest.clone()).into();
            agent
                .update_interface(ctx(crate::sandbox::RPC), &req)
                .await
                .with_context(|| format!("configuring {} in the guest", e.veth))?;
        }
        if !self.plan.routes.is_empty() {
            let mut req = UpdateRoutesRequest::new();
            let mut routes = Routes::new();
            routes.routes = self.plan.routes.clone();
            req.routes = Some(routes).into();
            agent
                .update_routes(ctx(crate::sandbox::RPC), &req)
                .await
                .context("adding the pod's routes in the guest")?;
        }
        if !self.plan.neighbors.is_empty() {
            let mut req = AddARPNeighborsRequest::new();
            req.neighbors = self.plan.neighbors.clone();
            agent
                .add_arp_neighbors(ctx(crate::sandbox::RPC), &req)
                .await
                .context("adding the pod's static neighbours in the guest")?;
        }
        Ok(())
    }

    /// What detaching needs, for the sandbox's state file.
    pub fn wiring(&self) -> Wiring {
        Wiring {
            netns: self.netns.clone(),
            links: plan::links(&self.plan.endpoints),
        }
    }
}

/// The taps a sandbox wired into a pod namespace, recorded in its state so that whoever
/// cleans up after it (itself, or `delete` after a crash) can undo them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Wiring {
    pub netns: PathBuf,
    /// (veth, tap) pairs.
    pub links: Vec<(String, String)>,
}

impl Wiring {
    /// Deletes the taps and the veths' ingress qdiscs (best effort: a namespace already gone
    /// took them with it).
    pub fn detach(&self) {
        if !self.netns.exists() {
            return;
        }
        let done = in_netns(&self.netns, |net| async move {
            unwire(&net, &self.links).await;
            Ok(())
        });
        match done {
            Ok(()) => tracing::info!(netns = %self.netns.display(), "pod network detached"),
            Err(e) => tracing::warn!(netns = %self.netns.display(), "detaching: {e:#}"),
        }
    }
}

/// Makes the endpoint's tap (replacing one an earlier sandbox left), gives it the veth's MTU,
/// brings it up and redirects each one's ingress to the other.
async fn wire(net: &Network, e: &Endpoint) -> anyhow::Result<()> {
    if let Ok(old) = net.index_of_name(&e.tap).await {
        net.handle().link().del(old).execute().await.ok();
    }
    tap::create(&e.tap)?;
    let veth = net.index_of_name(&e.veth).await?;
    let tap = net.index_of_name(&e.tap).await?;
    let mut up = LinkUnspec::new_with_index(tap).up();
    if let Ok(mtu) = u32::try_from(e.guest.mtu)
        && mtu > 0
    {
        up = up.mtu(mtu);
    }
    net.handle()
        .link()
        .set(up.build())
        .execute()
        .await
        .with_context(|| format!("bringing tap {} up", e.tap))?;
    for (from, to, from_name, to_name) in
        [(veth, tap, &e.veth, &e.tap), (tap, veth, &e.tap, &e.veth)]
    {
        let from_index = i32::try_from(from).context("interface index")?;
        net.handle()
            .qdisc()
            .add(from_index)
            .ingress()
            .execute()
            .await
            .with_context(|| format!("adding an ingress qdisc to {from_name}"))?;
        net.handle()
            .traffic_filter(from_index)
            .add()
            .ingress()
            .protocol(ALL_PROTOCOLS)
            .redirect(to)
            .context("building a tc redirect filter")?
            .execute()
            .await
            .with_context(|| format!("redirecting {from_name}'s traffic to {to_name}"))?;
    }
    Ok(())
}

/// Undoes [`wire`] for each (veth, tap), as far as it got.
async fn unwire(net: &Network, links: &[(String, String)]) {
    for (veth, tap) in links {
        if let Ok(index) = net.index_of_name(tap).await
            && let Err(err) = net.handle().link().del(index).execute().await
        {
            tracing::warn!(%tap, "deleting: {err}");
        }
        if let Ok(veth) = net.index_of_name(veth).await
            && let Ok(index) = i32::try_from(veth)
        {
            // No qdisc (never added, or gone) is fine.
            let mut del = net.handle().qdisc().del(index);
            del.message_mut().header.parent = TcHandle::INGRESS;
            del.message_mut().header.handle = TcHandle::from(0xffff_0000);
            let _ = del.execute().await;
        }
    }
}

/// Runs `f` with a netlink connection made in the network namespace at `netns` (see
/// [`run_in_netns`]).
pub fn in_netns<T, F, Fut>(netns: &Path, f: F) -> anyhow::Result<T>
where
    T: Send,
    F: FnOnce(Network) -> Fut + Send,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    run_in_netns(netns, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .context("starting a netlink runtime")?;
        rt.block_on(async {
            let net = Network::connect().context("opening a netlink socket")?;
            f(net).await
        })
    })
}

/// Runs `f` on a thread of its own that entered the network namespace at `netns`: sockets it
/// opens and processes it starts live in that namespace; the calling thread's namespaces stay
/// as they are.
pub fn run_in_netns<T: Send>(
    netns: &Path,
    f: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    let file = std::fs::File::open(netns)
        .with_context(|| format!("opening network namespace {}", netns.display()))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("entering network namespace {}", netns.display()))?;
            f()
        })
        .join()
        .map_err(|_| anyhow!("a thread in network namespace {} panicked", netns.display()))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pod_namespace_is_the_network_entry_with_a_path() {
        let spec = |ns: serde_json::Value| serde_json::json!({"linux": {"namespaces": ns}});
        assert_eq!(
            namespace_path(&spec(serde_json::json!([
                {"type": "pid"},
                {"type": "network", "path": "/var/run/netns/cni-1"}
            ]))),
            Some(PathBuf::from("/var/run/netns/cni-1"))
        );
        // A new, empty namespace (podman --network none, runc's default) and the host's
        // network (no entry) carry nothing.
        for ns in [
            serde_json::json!([{"type": "network"}]),
            serde_json::json!([{"type": "network", "path": ""}]),
            serde_json::json!([{"type": "pid"}]),
        ] {
            assert_eq!(namespace_path(&spec(ns)), None);
        }
        assert_eq!(namespace_path(&serde_json::json!({})), None);
    }

    #[test]
    fn the_runtimes_own_namespace_is_refused() {
        let e = PodNetwork::attach(Path::new("/proc/self/ns/net")).unwrap_err();
        assert!(format!("{e:#}").contains("runtime's own"), "{e:#}");
        let e = PodNetwork::attach(Path::new("/nonexistent/netns")).unwrap_err();
        assert!(format!("{e:#}").contains("/nonexistent/netns"), "{e:#}");
    }
}
