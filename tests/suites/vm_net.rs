//! Tier 3 (KVM): virtio-net. In a network namespace the test creates, a tap (10.77.0.1/24,
//! MTU 1400) is the VM's wire; hako-vmm runs in that namespace with a net device on the tap
//! (MTU 1400 offered). The probe guest gives eth0 10.77.0.2/24, reports the MTU it took, and
//! talks TCP to a listener the test runs on the tap's address: hellos both ways. The guest
//! powers off (status 0); deleting the namespace removes the tap.

use hako_guest_probe::{NET_ARG, NET_GUEST_HELLO, NET_HOST_HELLO};
use hako_rootfs_builder::images::{PROBE_DONE_MARKER, PROBE_POWEROFF_ARG};
use hako_tests::boot::{self, Boot};
use hako_tests::netns::Netns;
use hako_tests::require::{self, Skip};
use hako_tests::{fixtures, hako_vmm};
use hako_vmm_api::{ExitReason, NetConfig};
use libtest_mimic::Failed;

const TAP: &str = "hktap0";
const HOST_IP: &str = "10.77.0.1";
const GUEST_CIDR: &str = "10.77.0.2/24";
const PORT: u16 = 7777;
const MTU: u16 = 1400;

fn expect(boot: &Boot, needle: &str) -> Result<(), Failed> {
    if boot.time_of(needle).is_none() {
        return Err(format!("the console never showed {needle:?}").into());
    }
    Ok(())
}

fn guest_talks_tcp_through_a_tap() -> Result<(), Failed> {
    let vmm = fixtures::workspace_binary("hako-vmm")?;
    let kernel = fixtures::kernel().map_err(|s| Failed::from(s.to_string()))?;
    let image = fixtures::probe_image()?;
    let ns = Netns::create("hako-net")?;
    ns.ip(&["tuntap", "add", "dev", TAP, "mode", "tap"])?;
    ns.ip(&["addr", "add", &format!("{HOST_IP}/24"), "dev", TAP])?;
    ns.ip(&["link", "set", TAP, "mtu", &MTU.to_string(), "up"])?;
    let server = ns.answer_once(&format!("{HOST_IP}:{PORT}"), NET_HOST_HELLO.as_bytes())?;

    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let cmdline = format!("{PROBE_POWEROFF_ARG} {NET_ARG}={GUEST_CIDR},{HOST_IP}:{PORT}");
    let mut config = hako_vmm::probe_vm(dir.path(), &kernel, &image, &cmdline);
    config.devices.net.push(NetConfig {
        id: "eth0".into(),
        tap: TAP.into(),
        mac: "02:00:00:00:77:02".into(),
        mtu: Some(MTU),
        rate_limit: None,
    });
    let cmd =
        hako_vmm::command_in_netns(&vmm, dir.path(), &config, &ns.0).map_err(|e| e.to_string())?;
    let boot =
        boot::boot(cmd, boot::vm_deadline()).map_err(|e| format!("starting hako-vmm: {e}"))?;
    eprintln!(
        "--- console and VMM log ---\n{}--- end ({:.1}s) ---",
        boot.console(),
        boot.elapsed.as_secs_f64()
    );
    expect(&boot, &format!("net: eth0 mtu {MTU}"))?;
    expect(&boot, "HAKO-GUEST-PROBE: ok")?;
    expect(&boot, &format!("{PROBE_DONE_MARKER}0"))?;
    let heard = server.join().map_err(|_| "the server thread panicked")??;
    eprintln!("host side: {heard}");
    if !heard.contains(NET_GUEST_HELLO.trim_end()) || !heard.contains("10.77.0.2") {
        return Err(format!("the host heard {heard}").into());
    }
    let want = i32::from(ExitReason::GuestPoweroff.exit_code());
    match boot.exit.and_then(|s| s.code()) {
        Some(code) if code == want => {}
        other => return Err(format!("hako-vmm ended with {other:?}, expected {want}").into()),
    }
    let name = ns.0.clone();
    drop(ns);
    if std::path::Path::new(&format!("/run/netns/{name}")).exists() {
        return Err(format!("the namespace {name} is still there").into());
    }
    Ok(())
}

fn prerequisites() -> Result<(), Skip> {
    require::root()?;
    require::kvm()?;
    require::program("ip")?;
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Err(Skip("no /dev/net/tun".into()));
    }
    fixtures::kernel().map(drop)
}

fn main() {
    require::run_one(
        "vm_net_guest_talks_tcp_through_a_tap",
        prerequisites,
        guest_talks_tcp_through_a_tap,
    );
}
