//! The translation of a pod network namespace's state (as the netlink listings give it) into
//! what the sandbox needs: one endpoint (veth, tap, guest interface) per interface carried
//! into the VM, and the routes and static neighbours the agent sets in the guest. Pure, so
//! unit-tested without a namespace.

use hako_agent_api::agent::{ARPNeighbor, Interface, Route};

/// The suffix of the taps Hako makes (`tap0_hako`…): never carried themselves.
const TAP_SUFFIX: &str = "_hako";

/// One pod interface carried into the VM.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// The pod's interface (usually a CNI veth), whose traffic is redirected to the tap.
    pub veth: String,
    /// The tap Hako makes beside it for hako-vmm.
    pub tap: String,
    /// The interface as the guest gets it: the veth's name, MAC, MTU and addresses.
    pub guest: Interface,
}

/// What a pod network becomes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub endpoints: Vec<Endpoint>,
    pub routes: Vec<Route>,
    pub neighbors: Vec<ARPNeighbor>,
}

/// The (veth, tap) pairs of `endpoints`: what detaching them needs.
pub fn links(endpoints: &[Endpoint]) -> Vec<(String, String)> {
    endpoints
        .iter()
        .map(|e| (e.veth.clone(), e.tap.clone()))
        .collect()
}

/// The tap made for the `i`th carried interface.
pub fn tap_name(i: usize) -> String {
    format!("tap{i}{TAP_SUFFIX}")
}

/// Carries every Ethernet interface (six-byte MAC, not loopback, not one of Hako's taps) with
/// its addresses, except IPv6 link-local ones (the guest makes its own); routes and static
/// neighbours on those interfaces, except IPv6 link-local and multicast routes, which the
/// guest's kernel makes itself.
pub fn plan(interfaces: &[Interface], routes: &[Route], neighbors: &[ARPNeighbor]) -> Plan {
    let endpoints: Vec<Endpoint> = interfaces
        .iter()
        .filter(|i| is_carried(i))
        .enumerate()
        .map(|(n, i)| {
            let mut guest = i.clone();
            guest.ip_addresses.retain(|a| !is_link_local_v6(&a.address));
            Endpoint {
                veth: i.name.clone(),
                tap: tap_name(n),
                guest,
            }
        })
        .collect();
    let carried = |device: &str| endpoints.iter().any(|e| e.veth == device);
    Plan {
        routes: routes
            .iter()
            .filter(|r| carried(&r.device) && !is_kernel_v6_route(&r.dest))
            .cloned()
            .collect(),
        neighbors: neighbors
            .iter()
            .filter(|n| carried(&n.device))
            .cloned()
            .collect(),
        endpoints,
    }
}

fn is_carried(i: &Interface) -> bool {
    let mac_ok = i.hw_addr.len() == 17 && i.hw_addr != "00:00:00:00:00:00";
    i.name != "lo" && !i.name.ends_with(TAP_SUFFIX) && mac_ok
}

fn is_link_local_v6(address: &str) -> bool {
    address
        .parse::<std::net::Ipv6Addr>()
        .is_ok_and(|a| (a.segments()[0] & 0xffc0) == 0xfe80)
}

fn is_kernel_v6_route(dest: &str) -> bool {
    let ip = dest.split('/').next().unwrap_or_default();
    ip.parse::<std::net::Ipv6Addr>()
        .is_ok_and(|a| is_link_local_v6(ip) || a.is_multicast())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hako_agent_api::netlink::ip_address;

    fn iface(name: &str, mac: &str, addrs: &[(&str, u8)]) -> Interface {
        let mut i = Interface::new();
        i.name = name.into();
        i.hw_addr = mac.into();
        i.mtu = 1450;
        for (a, p) in addrs {
            i.ip_addresses.push(ip_address(a.parse().unwrap(), *p));
        }
        i
    }

    fn route(dest: &str, gw: &str, dev: &str) -> Route {
        let mut r = Route::new();
        r.dest = dest.into();
        r.gateway = gw.into();
        r.device = dev.into();
        r
    }

    /// What a CNI bridge + host-local pod namespace lists: lo, the veth eth0 (with an IPv6
    /// link-local address), a tap of ours from an earlier attempt, link and default routes.
    #[test]
    fn a_cni_pod_namespace_becomes_one_endpoint_its_routes_and_neighbours() {
        let interfaces = vec![
            iface("lo", "00:00:00:00:00:00", &[("127.0.0.1", 8)]),
            iface(
                "eth0",
                "0a:58:0a:58:00:05",
                &[("10.88.0.5", 16), ("fe80::858:aff:fe58:5", 64)],
            ),
            iface("tap0_hako", "6e:11:22:33:44:55", &[]),
            iface("eth1", "0a:58:0a:59:00:05", &[("fd00::5", 64)]),
        ];
        let routes = vec![
            route("default", "10.88.0.1", "eth0"),
            route("10.88.0.0/16", "", "eth0"),
            route("127.0.0.0/8", "", "lo"),
            route("fe80::/64", "", "eth0"),
            route("ff00::/8", "", "eth0"),
            route("fd00::/64", "", "eth1"),
        ];
        let mut n = ARPNeighbor::new();
        n.device = "eth0".into();
        n.ll_addr = "0a:58:0a:58:00:01".into();
        let mut lo_n = n.clone();
        lo_n.device = "lo".into();
        let p = plan(&interfaces, &routes, &[n.clone(), lo_n]);

        assert_eq!(p.endpoints.len(), 2, "{p:#?}");
        let e = &p.endpoints[0];
        assert_eq!((e.veth.as_str(), e.tap.as_str()), ("eth0", "tap0_hako"));
        assert_eq!(e.guest.hw_addr, "0a:58:0a:58:00:05");
        assert_eq!(e.guest.mtu, 1450);
        let addrs: Vec<&str> = e
            .guest
            .ip_addresses
            .iter()
            .map(|a| a.address.as_str())
            .collect();
        assert_eq!(addrs, ["10.88.0.5"]);
        assert_eq!(p.endpoints[1].tap, "tap1_hako");
        let dests: Vec<&str> = p.routes.iter().map(|r| r.dest.as_str()).collect();
        assert_eq!(dests, ["default", "10.88.0.0/16", "fd00::/64"]);
        assert_eq!(p.neighbors, vec![n]);
    }

    #[test]
    fn a_namespace_with_only_loopback_carries_nothing() {
        let p = plan(
            &[iface("lo", "00:00:00:00:00:00", &[("127.0.0.1", 8)])],
            &[route("127.0.0.0/8", "", "lo")],
            &[],
        );
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn tap_names_fit_in_an_interface_name() {
        assert!(tap_name(99).len() < 16);
    }
}
