//! Pod networking (the runtime side), in network namespaces the test makes:
//! - tier 2 (root, `ip`, `tc`): a pod namespace as CNI leaves it (a veth `eth0` with an
//!   address, MTU 1400, a default route, a static neighbour) is read and wired: a tap beside
//!   the veth, tc redirects both ways, the plan carries the veth's MAC, MTU, address, routes
//!   and neighbour; detaching removes the tap and the qdiscs (the refusal of the host's own
//!   namespace is a unit test of the runtime's);
//! - tier 4 (KVM, containerd, Debian's CNI plugins): containerd runs in a namespace of the
//!   test's (so the CNI bridge is made there, never on the host), with a bridge + host-local
//!   CNI config (MTU 1400). A CRI pod with its own network on the `hako` handler: the guest's
//!   eth0 has the CNI-assigned address and MTU 1400, a container reaches a server on the
//!   bridge's side, the bridge's side and another pod (runc, same bridge) reach a server in
//!   the pod, and stopping the pod leaves no taps, qdiscs or sandbox behind.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use hako_runtime::network::PodNetwork;
use hako_tests::cni::CniContainerd;
use hako_tests::containerd::{BUSYBOX, Release};
use hako_tests::cri::Cri;
use hako_tests::fixtures;
use hako_tests::netns::Netns;
use hako_tests::require::{self, Skip};
use libtest_mimic::{Arguments, Failed};

fn wires_taps_with_tc() -> Result<(), Failed> {
    let ns = Netns::create("hako-podnet")?;
    let peer = Netns::create("hako-podnet-peer")?;
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "peer0", "netns", &peer.0,
    ])?;
    ns.ip(&["link", "set", "eth0", "mtu", "1400", "up"])?;
    peer.ip(&["link", "set", "peer0", "up"])?;
    ns.ip(&["addr", "add", "10.99.1.2/24", "dev", "eth0"])?;
    ns.ip(&["route", "add", "default", "via", "10.99.1.1"])?;
    ns.ip(&[
        "neigh",
        "add",
        "10.99.1.1",
        "lladdr",
        "02:00:00:00:63:01",
        "dev",
        "eth0",
        "nud",
        "permanent",
    ])?;
    let link = ns.ip(&["link", "show", "eth0"])?;
    let mac = link
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .ok_or(format!("no MAC in {link}"))?
        .to_owned();

    let pod = PodNetwork::attach(&ns.path())
        .map_err(|e| format!("{e:#}"))?
        .ok_or("nothing carried")?;
    let e = pod.plan.endpoints.first().ok_or("no endpoint")?;
    if pod.plan.endpoints.len() != 1 || e.veth != "eth0" || e.tap != "tap0_hako" {
        return Err(format!("endpoints {:?}", pod.plan.endpoints).into());
    }
    let addrs: Vec<String> = e
        .guest
        .ip_addresses
        .iter()
        .map(|a| format!("{}/{}", a.address, a.prefix_len))
        .collect();
    if e.guest.hw_addr != mac || e.guest.mtu != 1400 || addrs != ["10.99.1.2/24"] {
        return Err(format!("guest interface {:?} (veth MAC {mac})", e.guest).into());
    }
    if !pod
        .plan
        .routes
        .iter()
        .any(|r| r.dest == "default" && r.gateway == "10.99.1.1")
        || pod.plan.neighbors.len() != 1
    {
        return Err(format!("routes {:?}", pod.plan.routes).into());
    }
    let dev = pod.vmm_devices();
    if dev.len() != 1 || dev[0].mac != mac || dev[0].mtu != Some(1400) {
        return Err(format!("VMM devices {dev:?}").into());
    }
    let tap = ns.ip(&["link", "show", "tap0_hako"])?;
    if !tap.contains("mtu 1400") || !tap.contains(",UP") {
        return Err(format!("tap: {tap}").into());
    }
    for (from, to) in [("eth0", "tap0_hako"), ("tap0_hako", "eth0")] {
        let f = ns.tc(&["filter", "show", "dev", from, "ingress"])?;
        if !f.contains("mirred") || !f.contains(&format!("Redirect to device {to}")) {
            return Err(format!("{from}'s ingress filters: {f}").into());
        }
    }

    pod.wiring().detach();
    if ns.ip(&["link", "show", "tap0_hako"]).is_ok() {
        return Err("the tap outlived detaching".into());
    }
    let q = ns.tc(&["qdisc", "show", "dev", "eth0"])?;
    if q.contains("ingress") {
        return Err(format!("eth0 kept its ingress qdisc: {q}").into());
    }
    Ok(())
}

/// The pods' network: `10.99.2.0/24` on a bridge in containerd's namespace, MTU 1400.
const SUBNET: &str = "10.99.2";
const MTU: u32 = 1400;

/// A Kubernetes "safe" network sysctl the Hako pod asks for (the guest's default is
/// `32768 60999`), applied in the VM's network namespace, which is the pod's.
const PORT_RANGE: (&str, &str) = ("net.ipv4.ip_local_port_range", "40000\t50000");

fn cri_pod_network(release: Release) -> Result<(), Failed> {
    let net = CniContainerd::start(release, "hako-ctdnet", SUBNET, MTU)?;
    let ctd = &net.containerd;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let result = rt.block_on(async {
        let mut cri = Cri::connect(&ctd.socket, ctd.dir.path()).await?;
        let mut hako_config = cri.pod_config_with_network("netpod");
        if let Some(linux) = hako_config.linux.as_mut() {
            linux
                .sysctls
                .insert(PORT_RANGE.0.into(), PORT_RANGE.1.into());
        }
        let hako = cri.run_pod(&hako_config, "hako").await?;
        let checked = hako_pod_checks(&mut cri, &net, &hako, &hako_config).await;
        let stopped = cri.stop_and_remove_pod(&hako).await;
        checked.and(stopped)
    });
    // After the pod: no taps or qdiscs anywhere the test can see, no sandbox left.
    let links = net.ns.ip(&["link"])?;
    let left_over = if links.contains("_hako") {
        Err(format!("a tap is left in containerd's namespace: {links}"))
    } else if !ctd.leftover_sandboxes().is_empty() {
        Err(format!("sandboxes left: {:?}", ctd.leftover_sandboxes()))
    } else {
        Ok(())
    };
    let log = ctd.log_tail(40);
    result
        .and(left_over)
        .map_err(|e| format!("{e}\ncontainerd log ends with:\n{log}").into())
}

async fn hako_pod_checks(
    cri: &mut Cri,
    net: &CniContainerd,
    pod: &str,
    pod_config: &k8s_cri::v1::PodSandboxConfig,
) -> Result<(), String> {
    // A server in the pod: answers every connection with one line.
    let id = cri
        .start_container(
            pod,
            pod_config,
            "server",
            BUSYBOX,
            &[
                "sh",
                "-c",
                "while true; do echo pod-says-hi | busybox nc -l -p 8080; done",
            ],
        )
        .await?;
    let ip = cri.pod_ip(pod).await?;
    let addr = cri
        .exec_sync(&id, &["busybox", "ip", "-4", "addr", "show", "eth0"])
        .await?;
    let text = String::from_utf8_lossy(&addr.stdout).into_owned();
    eprintln!("CNI gave the pod {ip}; the guest's eth0: {text}");
    if !ip.starts_with(&format!("{SUBNET}."))
        || !text.contains(&format!("inet {ip}/24"))
        || !text.contains(&format!("mtu {MTU}"))
    {
        return Err(format!(
            "the guest's eth0 is not what CNI made ({ip}/24, MTU {MTU}): {text}"
        ));
    }

    // The pod's network sysctls: the one it asked for and, on containerd 2.x, the two its
    // default config adds to every pod (unprivileged ports and ICMP echo).
    let mut want = vec![(PORT_RANGE.0, PORT_RANGE.1)];
    if net.containerd.release == Release::Sid {
        want.push(("net.ipv4.ip_unprivileged_port_start", "0"));
        want.push(("net.ipv4.ping_group_range", "0\t2147483647"));
    }
    for (key, value) in want {
        let file = format!("/proc/sys/{}", key.replace('.', "/"));
        let got = cri.exec_sync(&id, &["cat", &file]).await?;
        let got = String::from_utf8_lossy(&got.stdout).trim().to_owned();
        if got != value {
            return Err(format!("the pod's {key} is {got:?}, not {value:?}"));
        }
    }

    // The pod reaches a server on the bridge's side (the gateway).
    let server = net
        .ns
        .answer_once(&format!("{}:7070", net.gateway), b"host-says-hi\n")?;
    let call = format!("echo pod-calls | busybox nc {} 7070", net.gateway);
    let out = cri.exec_sync(&id, &["sh", "-c", &call]).await?;
    let heard = server.join().map_err(|_| "the server thread panicked")??;
    let reply = String::from_utf8_lossy(&out.stdout);
    eprintln!("bridge side: {heard}; the pod heard {reply:?}");
    if !heard.contains("pod-calls") || !heard.contains(&ip) || !reply.contains("host-says-hi") {
        return Err(format!("pod -> bridge: {heard}; reply {reply:?}"));
    }

    // The bridge's side reaches the server in the pod.
    let answer = read_line_from(&net.ns, &format!("{ip}:8080")).await?;
    if !answer.contains("pod-says-hi") {
        return Err(format!(
            "the pod's server said {answer:?} to the bridge's side"
        ));
    }

    // Another pod (runc, on the same bridge) reaches the server in the Hako pod.
    let runc_config = cri.pod_config_with_network("runcpod");
    let runc = cri.run_pod(&runc_config, "runc").await?;
    let asked = async {
        let client = cri
            .start_container(&runc, &runc_config, "client", BUSYBOX, &["sleep", "600"])
            .await?;
        // The client's stdin stays open a while (at its end nc half-closes, and the server's
        // nc, seeing that first, would leave without answering); retried while the guest's
        // server restarts its nc after the previous connection.
        let ask = format!(
            "for i in 1 2 3 4 5 6 7 8 9 10; do \
               out=$(busybox sleep 3 | busybox timeout 30 busybox nc {ip} 8080); \
               [ -n \"$out\" ] && {{ echo \"$out\"; exit 0; }}; busybox sleep 3; \
             done; exit 1"
        );
        let o = cri.exec_sync(&client, &["sh", "-c", &ask]).await?;
        Ok::<_, String>(format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ))
    }
    .await;
    let removed = cri.stop_and_remove_pod(&runc).await;
    let answer = asked?;
    removed?;
    eprintln!("the runc pod heard {answer:?}");
    if !answer.contains("pod-says-hi") {
        return Err(format!("the pod's server said {answer:?} to another pod"));
    }
    Ok(())
}

/// Connects from `ns` to `addr` (retrying for up to two minutes: the guest's server may
/// still be starting) and reads one line: the server's nc keeps the connection open until
/// the client closes it.
async fn read_line_from(ns: &Netns, addr: &str) -> Result<String, String> {
    let start = Instant::now();
    loop {
        let got = ns.connect(addr).and_then(|s| {
            s.set_read_timeout(Some(Duration::from_secs(60)))
                .map_err(|e| e.to_string())?;
            let mut line = String::new();
            BufReader::new(s)
                .read_line(&mut line)
                .map_err(|e| e.to_string())?;
            Ok(line)
        });
        match got {
            Ok(t) if !t.is_empty() => return Ok(t),
            other if start.elapsed() > Duration::from_secs(120) => {
                return Err(format!("connecting to {addr}: {other:?}"));
            }
            _ => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

fn host_prerequisites() -> Result<(), Skip> {
    require::root()?;
    require::program("ip")?;
    require::program("tc")?;
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Err(Skip("no /dev/net/tun".into()));
    }
    Ok(())
}

fn cri_prerequisites() -> Result<(), Skip> {
    host_prerequisites()?;
    require::kvm()?;
    require::program("containerd")?;
    require::program("nsenter")?;
    for plugin in ["bridge", "host-local", "loopback"] {
        require::program(&format!("/usr/lib/cni/{plugin}"))?;
    }
    fixtures::kernel().map(drop)
}

fn main() {
    let args = Arguments::from_args();
    let trials = vec![
        require::trial(
            "pod_network_wires_taps_with_tc",
            host_prerequisites,
            wires_taps_with_tc,
        ),
        require::trial("pod_network_cri_pod", cri_prerequisites, || {
            cri_pod_network(Release::Debian12)
        }),
        require::trial(
            "pod_network_cri_pod_on_containerd2",
            || cri_prerequisites().and_then(|()| Release::Sid.available()),
            || cri_pod_network(Release::Sid),
        ),
    ];
    libtest_mimic::run(&args, trials).exit()
}
