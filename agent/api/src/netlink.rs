//! A network namespace's interfaces, routes and neighbours over rtnetlink (no `ip`), in the
//! agent API's terms: the agent sets the guest's network up with it (interfaces found by MAC
//! address, renamed, given their MTU and addresses and brought up; routes, link routes before
//! gateway routes; static ARP neighbours), and the runtime reads the pod's network namespace
//! with the same listings, so both sides speak one translation.

use std::net::IpAddr;

use crate::agent::{ARPNeighbor, IPAddress, Interface, Route, ipaddress::Family};
use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteScope};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

pub use rtnetlink;

/// The kernel's main routing table.
const RT_TABLE_MAIN: u8 = 254;

/// Errors changing or reading the guest's network.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("{0}")]
    Invalid(String),
    #[error("no interface has MAC address {0}")]
    NoSuchMac(String),
    #[error("no interface is named {0}")]
    NoSuchName(String),
    #[error("this agent runs in the host's network namespace; it leaves the host's network alone")]
    HostNetwork,
    #[error("opening a netlink socket")]
    Socket(#[source] std::io::Error),
    #[error("{what}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
}

fn netlink(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    let what = what.into();
    move |source| NetworkError::Netlink { what, source }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<Vec<u8>, NetworkError> {
    let bytes: Option<Vec<u8>> = s
        .split(':')
        .map(|p| {
            (p.len() == 2)
                .then(|| u8::from_str_radix(p, 16).ok())
                .flatten()
        })
        .collect();
    bytes
        .filter(|b| b.len() == 6)
        .ok_or_else(|| NetworkError::Invalid(format!("{s:?} is not a MAC address")))
}

pub fn format_mac(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// An address and its prefix length from the API's form.
pub fn parse_ip(a: &IPAddress) -> Result<(IpAddr, u8), NetworkError> {
    let ip: IpAddr = a
        .address
        .parse()
        .map_err(|_| NetworkError::Invalid(format!("{:?} is not an IP address", a.address)))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = u8::try_from(a.prefix_len)
        .ok()
        .filter(|p| *p <= max)
        .ok_or_else(|| NetworkError::Invalid(format!("prefix length {} for {ip}", a.prefix_len)))?;
    Ok((ip, prefix))
}

/// A route's destination: `default` (of the gateway's family) or `address/prefix`.
pub fn parse_dest(dest: &str, gateway: Option<IpAddr>) -> Result<(IpAddr, u8), NetworkError> {
    if dest == "default" || dest.is_empty() {
        return Ok(match gateway {
            Some(IpAddr::V6(_)) => (IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0),
            _ => (IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0),
        });
    }
    let (ip, prefix) = dest.split_once('/').unwrap_or((dest, ""));
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| NetworkError::Invalid(format!("route destination {dest:?}")))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = if prefix.is_empty() {
        max
    } else {
        prefix
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| NetworkError::Invalid(format!("route destination {dest:?}")))?
    };
    Ok((ip, prefix))
}

/// A netlink connection to the kernel's routing tables.
pub struct Network {
    handle: Handle,
}

impl Network {
    /// Opens the connection (its driver runs on the current tokio runtime).
    pub fn connect() -> Result<Self, NetworkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetworkError::Socket)?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    async fn links(&self) -> Result<Vec<LinkMessage>, NetworkError> {
        self.handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(netlink("listing interfaces"))
    }

    /// The rtnetlink handle, for requests this module does not wrap (the runtime's tc work).
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The index of the interface called `name`.
    pub async fn index_of_name(&self, name: &str) -> Result<u32, NetworkError> {
        self.links()
            .await?
            .iter()
            .find(|l| link_name(l) == name)
            .map(|l| l.header.index)
            .ok_or_else(|| NetworkError::NoSuchName(name.to_owned()))
    }

    /// Configures the interface with the request's MAC (else its name): name, MTU, exactly
    /// the request's addresses, up. Returns it as it now is.
    pub async fn update_interface(&self, want: &Interface) -> Result<Interface, NetworkError> {
        let addresses: Vec<(IpAddr, u8)> = want
            .ip_addresses
            .iter()
            .map(parse_ip)
            .collect::<Result<_, _>>()?;
        let links = self.links().await?;
        let link = if want.hw_addr.is_empty() {
            links.iter().find(|l| link_name(l) == want.name)
        } else {
            let mac = parse_mac(&want.hw_addr)?;
            links.iter().find(|l| link_mac(l) == mac)
        }
        .ok_or_else(|| {
            if want.hw_addr.is_empty() {
                NetworkError::NoSuchName(want.name.clone())
            } else {
                NetworkError::NoSuchMac(want.hw_addr.clone())
            }
        })?;
        let index = link.header.index;
        let label = format!("interface {} (index {index})", link_name(link));
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).down().build())
            .execute()
            .await
            .map_err(netlink(format!("taking {label} down")))?;
        let mut set = LinkUnspec::new_with_index(index);
        if !want.name.is_empty() && want.name != link_name(link) {
            set = set.name(want.name.clone());
        }
        if want.mtu > 0 {
            let mtu = u32::try_from(want.mtu)
                .map_err(|_| NetworkError::Invalid(format!("MTU {}", want.mtu)))?;
            set = set.mtu(mtu);
        }
        self.handle
            .link()
            .set(set.build())
            .execute()
            .await
            .map_err(netlink(format!("renaming or setting the MTU of {label}")))?;
        let existing: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(netlink(format!("listing the addresses of {label}")))?;
        for a in existing {
            self.handle
                .address()
                .del(a)
                .execute()
                .await
                .map_err(netlink(format!("removing an old address of {label}")))?;
        }
        for (ip, prefix) in &addresses {
            self.handle
                .address()
                .add(index, *ip, *prefix)
                .execute()
                .await
                .map_err(netlink(format!("adding {ip}/{prefix} to {label}")))?;
        }
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(netlink(format!("bringing {label} up")))?;
        tracing::info!(index, name = %want.name, addresses = addresses.len(), "interface configured");
        self.list_interfaces()
            .await?
            .into_iter()
            .find(|i| i.name == want.name || want.name.is_empty())
            .ok_or_else(|| NetworkError::NoSuchName(want.name.clone()))
    }

    /// Adds the routes: those without a gateway first (a gateway must be reachable before
    /// a route through it is accepted). Existing identical routes are kept.
    pub async fn update_routes(&self, routes: &[Route]) -> Result<Vec<Route>, NetworkError> {
        let mut ordered: Vec<&Route> = routes.iter().filter(|r| r.gateway.is_empty()).collect();
        ordered.extend(routes.iter().filter(|r| !r.gateway.is_empty()));
        for r in ordered {
            let gateway: Option<IpAddr> =
                if r.gateway.is_empty() {
                    None
                } else {
                    Some(r.gateway.parse().map_err(|_| {
                        NetworkError::Invalid(format!("route gateway {:?}", r.gateway))
                    })?)
                };
            let (dest, prefix) = parse_dest(&r.dest, gateway)?;
            let index = self.index_of_name(&r.device).await?;
            let mut b = RouteMessageBuilder::<IpAddr>::new()
                .destination_prefix(dest, prefix)
                .map_err(|e| NetworkError::Invalid(format!("route {}: {e}", r.dest)))?
                .output_interface(index);
            if let Some(gw) = gateway {
                b = b
                    .gateway(gw)
                    .map_err(|e| NetworkError::Invalid(format!("route {}: {e}", r.dest)))?;
            } else {
                b = b.scope(RouteScope::Link);
            }
            if !r.source.is_empty() {
                let src: IpAddr = r
                    .source
                    .parse()
                    .map_err(|_| NetworkError::Invalid(format!("route source {:?}", r.source)))?;
                b = b
                    .pref_source(src)
                    .map_err(|e| NetworkError::Invalid(format!("route {}: {e}", r.dest)))?;
            }
            match self.handle.route().add(b.build()).execute().await {
                Ok(()) => {}
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => {}
                Err(source) => {
                    return Err(NetworkError::Netlink {
                        what: format!(
                            "adding the route to {} via {:?} on {}",
                            r.dest, r.gateway, r.device
                        ),
                        source,
                    });
                }
            }
        }
        self.list_routes().await
    }

    /// Adds static neighbours (ARP for IPv4, NDP for IPv6).
    pub async fn add_neighbors(&self, neighbors: &[ARPNeighbor]) -> Result<(), NetworkError> {
        for n in neighbors {
            let ip = n
                .to_ip
                .as_ref()
                .ok_or_else(|| NetworkError::Invalid("a neighbour without an address".into()))?;
            let (ip, _) = parse_ip(ip)?;
            let mac = parse_mac(&n.ll_addr)?;
            let index = self.index_of_name(&n.device).await?;
            let state = match n.state {
                0 => NeighbourState::Permanent,
                s => NeighbourState::from(u16::try_from(s).unwrap_or(0x80)),
            };
            self.handle
                .neighbours()
                .add(index, ip)
                .link_layer_address(&mac)
                .state(state)
                .replace()
                .execute()
                .await
                .map_err(netlink(format!(
                    "adding the neighbour {ip} on {}",
                    n.device
                )))?;
        }
        Ok(())
    }

    /// The static (permanent) neighbours: what an administrator or a CNI plugin set, not
    /// what ARP learnt.
    pub async fn list_neighbors(&self) -> Result<Vec<ARPNeighbor>, NetworkError> {
        let names = self.link_names().await?;
        let found: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(netlink("listing neighbours"))?;
        let mut out = Vec::new();
        for m in found
            .iter()
            .filter(|m| m.header.state == NeighbourState::Permanent)
        {
            let mut ip = None;
            let mut mac = None;
            for a in &m.attributes {
                match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                        ip = Some(IpAddr::V4(*v4))
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                        ip = Some(IpAddr::V6(*v6))
                    }
                    NeighbourAttribute::LinkLayerAddress(l) => mac = Some(format_mac(l)),
                    _ => {}
                }
            }
            let (Some(ip), Some(mac)) = (ip, mac) else {
                continue;
            };
            let mut n = ARPNeighbor::new();
            n.to_ip = Some(ip_address(ip, if ip.is_ipv4() { 32 } else { 128 })).into();
            n.device = name_of(&names, m.header.ifindex);
            n.ll_addr = mac;
            out.push(n);
        }
        Ok(out)
    }

    async fn link_names(&self) -> Result<Vec<(u32, String)>, NetworkError> {
        Ok(self
            .links()
            .await?
            .iter()
            .map(|l| (l.header.index, link_name(l).to_owned()))
            .collect())
    }

    pub async fn list_interfaces(&self) -> Result<Vec<Interface>, NetworkError> {
        let addresses: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(netlink("listing addresses"))?;
        let mut out = Vec::new();
        for l in self.links().await? {
            let mut i = Interface::new();
            i.name = link_name(&l).to_owned();
            i.hw_addr = format_mac(&link_mac(&l));
            i.mtu = l
                .attributes
                .iter()
                .find_map(|a| match a {
                    LinkAttribute::Mtu(m) => Some(u64::from(*m)),
                    _ => None,
                })
                .unwrap_or(0);
            for a in addresses
                .iter()
                .filter(|a| a.header.index == l.header.index)
            {
                let Some(ip) = a.attributes.iter().find_map(|x| match x {
                    AddressAttribute::Address(ip) => Some(ip),
                    _ => None,
                }) else {
                    continue;
                };
                i.ip_addresses.push(ip_address(*ip, a.header.prefix_len));
            }
            out.push(i);
        }
        Ok(out)
    }

    pub async fn list_routes(&self) -> Result<Vec<Route>, NetworkError> {
        let names = self.link_names().await?;
        let mut out = Vec::new();
        for family in [
            RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
            RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
        ] {
            let routes: Vec<RouteMessage> = self
                .handle
                .route()
                .get(family)
                .execute()
                .try_collect()
                .await
                .map_err(netlink("listing routes"))?;
            // The main table only: what `ip route` shows.
            for r in routes.iter().filter(|r| r.header.table == RT_TABLE_MAIN) {
                out.push(api_route(r, &names));
            }
        }
        Ok(out)
    }
}

/// The API's form of an address.
pub fn ip_address(ip: IpAddr, prefix_len: u8) -> IPAddress {
    let mut addr = IPAddress::new();
    addr.family = if ip.is_ipv4() { Family::V4 } else { Family::V6 }.into();
    addr.address = ip.to_string();
    addr.prefix_len = u32::from(prefix_len);
    addr
}

fn name_of(names: &[(u32, String)], index: u32) -> String {
    names
        .iter()
        .find(|(i, _)| *i == index)
        .map(|(_, n)| n.clone())
        .unwrap_or_default()
}

fn link_name(l: &LinkMessage) -> &str {
    l.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.as_str()),
            _ => None,
        })
        .unwrap_or("")
}

fn link_mac(l: &LinkMessage) -> Vec<u8> {
    l.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(m) => Some(m.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

fn api_route(r: &RouteMessage, names: &[(u32, String)]) -> Route {
    let mut out = Route::new();
    let mut dest = None;
    for a in &r.attributes {
        match a {
            RouteAttribute::Destination(d) => dest = route_ip(d),
            RouteAttribute::Gateway(g) => {
                out.gateway = route_ip(g).map(|g| g.to_string()).unwrap_or_default()
            }
            RouteAttribute::PrefSource(s) => {
                out.source = route_ip(s).map(|s| s.to_string()).unwrap_or_default()
            }
            RouteAttribute::Oif(i) => out.device = name_of(names, *i),
            _ => {}
        }
    }
    out.dest = match dest {
        Some(d) => format!("{d}/{}", r.header.destination_prefix_length),
        None => "default".into(),
    };
    out.scope = u32::from(u8::from(r.header.scope));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_and_print() {
        assert_eq!(
            parse_mac("02:00:00:0a:ff:01").unwrap(),
            vec![2, 0, 0, 10, 255, 1]
        );
        assert_eq!(format_mac(&[2, 0, 0, 10, 255, 1]), "02:00:00:0a:ff:01");
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:0g",
            "2:00:00:00:00:01",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses_and_destinations_are_checked() {
        let mut a = IPAddress::new();
        a.address = "10.1.2.3".into();
        a.prefix_len = 24;
        assert_eq!(parse_ip(&a).unwrap(), ("10.1.2.3".parse().unwrap(), 24));
        a.prefix_len = 33;
        assert!(parse_ip(&a).is_err());
        a.address = "fd00::1".into();
        a.prefix_len = 64;
        assert!(parse_ip(&a).is_ok());
        assert_eq!(
            parse_dest("default", None).unwrap(),
            ("0.0.0.0".parse().unwrap(), 0)
        );
        assert_eq!(
            parse_dest("default", Some("fd00::1".parse().unwrap())).unwrap(),
            ("::".parse().unwrap(), 0)
        );
        assert_eq!(
            parse_dest("10.0.0.0/8", None).unwrap(),
            ("10.0.0.0".parse().unwrap(), 8)
        );
        assert_eq!(
            parse_dest("10.0.0.7", None).unwrap(),
            ("10.0.0.7".parse().unwrap(), 32)
        );
        assert!(parse_dest("10.0.0.0/40", None).is_err());
        assert!(parse_dest("nowhere", None).is_err());
    }
}
