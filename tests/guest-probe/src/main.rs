//! Runs inside the probe guest (built static, placed in the probe image by
//! hako-rootfs-builder). Each check prints one `HAKO-GUEST-PROBE:` line; the last is `ok` or
//! `FAIL`. Checks are few because each syscall is costly where guest kernel mode is emulated.
//! Device checks run when the kernel command line asks for them:
//! `hako.probe.blk=<device>` reads the host's marker from sector 0 and writes the guest's at
//! sector 1; `hako.probe.vsock=<guest-port>,<host-port>` greets a host listener, then echoes
//! one host connection back until its EOF; `hako.probe.fs=<dir>` reads, writes, stats and
//! lists files in a virtio-fs directory and reports the root file system's type.
#![forbid(unsafe_code)]

use std::os::unix::fs::FileExt;
use std::process::ExitCode;

use std::io::{BufRead, BufReader, Read, Write};

use hako_guest_probe::{
    BLK_ARG, BLK_GUEST_MARKER, BLK_HOST_MARKER, FS_ARG, FS_GUEST_CONTENT, FS_GUEST_FILE,
    FS_HOST_CONTENT, FS_HOST_FILE, NET_ARG, NET_GUEST_HELLO, NET_HOST_HELLO, VSOCK_ARG,
    VSOCK_GUEST_HELLO, VSOCK_HOST_HELLO, VSOCK_LISTENING, cmdline_value, net_args, vsock_ports,
};
use vsock::{VMADDR_CID_ANY, VMADDR_CID_HOST, VsockListener, VsockStream};

fn check(name: &str, result: Result<String, String>, failed: &mut bool) {
    match result {
        Ok(detail) => println!("HAKO-GUEST-PROBE: {name}: {detail}"),
        Err(e) => {
            println!("HAKO-GUEST-PROBE: FAIL {name}: {e}");
            *failed = true;
        }
    }
}

fn kernel_release() -> Result<String, String> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .map_err(|e| e.to_string())
}

fn file_round_trip() -> Result<String, String> {
    let path = "/tmp/hako-guest-probe";
    let data = b"written in the guest\n";
    std::fs::write(path, data).map_err(|e| format!("write {path}: {e}"))?;
    let back = std::fs::read(path).map_err(|e| format!("read {path}: {e}"))?;
    std::fs::remove_file(path).map_err(|e| format!("remove {path}: {e}"))?;
    if back == data {
        Ok(format!("{} bytes", back.len()))
    } else {
        Err("read back different bytes".into())
    }
}

fn spawn_child() -> Result<String, String> {
    let out = std::process::Command::new("/bin/busybox")
        .args(["echo", "child"])
        .output()
        .map_err(|e| format!("spawning busybox: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && text == "child" {
        Ok(text)
    } else {
        Err(format!("{:?} printed {text:?}", out.status))
    }
}

/// CPU features the host hides where kernel mode is emulated (informational), and whether the
/// kernel chose `rep` string copies (REP_GOOD, from the Intel family-6 signature).
fn visible_cpu_features() -> Result<String, String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").map_err(|e| e.to_string())?;
    let flags: Vec<&str> = info
        .lines()
        .find(|l| l.starts_with("flags"))
        .map(|l| l.split_whitespace().skip(2).collect())
        .unwrap_or_default();
    let shown: Vec<&str> = ["popcnt", "xsave", "smap", "cx16", "avx"]
        .into_iter()
        .filter(|f| flags.contains(f))
        .collect();
    Ok(format!(
        "{} flags; of popcnt/xsave/smap/cx16/avx visible: [{}]; rep_good: {}",
        flags.len(),
        shown.join(" "),
        flags.contains(&"rep_good")
    ))
}

/// The clock source the kernel chose and the ones it has (kvm-clock when the VMM exposes the
/// KVM paravirtual clock; Linux prefers an invariant TSC over it).
fn clocksource() -> Result<String, String> {
    let dir = "/sys/devices/system/clocksource/clocksource0";
    let read = |f: &str| {
        std::fs::read_to_string(format!("{dir}/{f}"))
            .map(|s| s.trim().to_owned())
            .map_err(|e| format!("{dir}/{f}: {e}"))
    };
    Ok(format!(
        "{} (available: {})",
        read("current_clocksource")?,
        read("available_clocksource")?
    ))
}

/// The CPUs the kernel brought online (e.g. "0-1").
fn online_cpus() -> Result<String, String> {
    let path = "/sys/devices/system/cpu/online";
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| format!("{path}: {e}"))
}

/// The virtio devices the kernel probed, as their device IDs (2 block, 19 vsock, 26 fs).
fn virtio_devices() -> Result<String, String> {
    let dir = "/sys/bus/virtio/devices";
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{dir}: {e}"))? {
        let path = entry.map_err(|e| e.to_string())?.path().join("device");
        let id = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let id = u32::from_str_radix(id.trim().trim_start_matches("0x"), 16)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        ids.push(id);
    }
    ids.sort_unstable();
    Ok(format!("{ids:?}"))
}

fn block_device(dev: &str) -> Result<String, String> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .map_err(|e| format!("open {dev}: {e}"))?;
    let mut first = vec![0u8; 512];
    f.read_exact_at(&mut first, 0)
        .map_err(|e| format!("read {dev}: {e}"))?;
    if !first.starts_with(BLK_HOST_MARKER.as_bytes()) {
        return Err(format!("sector 0 of {dev} lacks the host's marker"));
    }
    let mut sector = BLK_GUEST_MARKER.as_bytes().to_vec();
    sector.resize(512, 0);
    f.write_all_at(&sector, 512)
        .map_err(|e| format!("write {dev}: {e}"))?;
    f.sync_all().map_err(|e| format!("flush {dev}: {e}"))?;
    Ok(format!(
        "{dev} read the host's marker, wrote and flushed the guest's"
    ))
}

/// The type of the file system mounted on `/`.
fn root_fs_type() -> Result<String, String> {
    let mounts = std::fs::read_to_string("/proc/mounts").map_err(|e| e.to_string())?;
    mounts
        .lines()
        .rev()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let (_, point, kind) = (f.next()?, f.next()?, f.next()?);
            (point == "/").then(|| kind.to_owned())
        })
        .ok_or_else(|| "no mount on /".into())
}

fn shared_dir(dir: &str) -> Result<String, String> {
    let dir = std::path::Path::new(dir);
    let host = dir.join(FS_HOST_FILE);
    let text =
        std::fs::read_to_string(&host).map_err(|e| format!("read {}: {e}", host.display()))?;
    if text != FS_HOST_CONTENT {
        return Err(format!("{} holds {text:?}", host.display()));
    }
    let size = std::fs::metadata(&host)
        .map_err(|e| format!("stat {}: {e}", host.display()))?
        .len();
    let guest = dir.join(FS_GUEST_FILE);
    std::fs::write(&guest, FS_GUEST_CONTENT)
        .map_err(|e| format!("write {}: {e}", guest.display()))?;
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("list {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    Ok(format!(
        "root is {}; read {size} bytes, wrote, listed {names:?}",
        root_fs_type()?
    ))
}

fn vsock_to_host(port: u32) -> Result<String, String> {
    let mut s = VsockStream::connect_with_cid_port(VMADDR_CID_HOST, port)
        .map_err(|e| format!("connect to host port {port}: {e}"))?;
    s.write_all(VSOCK_GUEST_HELLO.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .map_err(|e| format!("read: {e}"))?;
    if line == VSOCK_HOST_HELLO {
        Ok(format!("host port {port} answered"))
    } else {
        Err(format!("host port {port} answered {line:?}"))
    }
}

fn vsock_echo(port: u32) -> Result<String, String> {
    let listener = VsockListener::bind_with_cid_port(VMADDR_CID_ANY, port)
        .map_err(|e| format!("listen on {port}: {e}"))?;
    println!("HAKO-GUEST-PROBE: {VSOCK_LISTENING} {port}");
    let (mut s, peer) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    let mut data = Vec::new();
    s.read_to_end(&mut data).map_err(|e| format!("read: {e}"))?;
    s.write_all(&data).map_err(|e| format!("echo: {e}"))?;
    s.shutdown(std::net::Shutdown::Both)
        .map_err(|e| format!("shutdown: {e}"))?;
    Ok(format!("echoed {} bytes to cid {}", data.len(), peer.cid()))
}

/// Runs a busybox applet (the probe image's /bin/busybox).
fn busybox(args: &[&str]) -> Result<(), String> {
    let status = std::process::Command::new("/bin/busybox")
        .args(args)
        .status()
        .map_err(|e| format!("busybox {args:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("busybox {args:?}: {status}"))
    }
}

fn network(cidr: &str, host: std::net::SocketAddr) -> Result<String, String> {
    busybox(&["ip", "link", "set", "lo", "up"])?;
    busybox(&["ip", "addr", "add", cidr, "dev", "eth0"])?;
    busybox(&["ip", "link", "set", "eth0", "up"])?;
    let mtu = std::fs::read_to_string("/sys/class/net/eth0/mtu")
        .map_err(|e| format!("reading eth0's MTU: {e}"))?;
    println!("HAKO-GUEST-PROBE: net: eth0 mtu {}", mtu.trim());
    // The host's listener may come up after us, and ARP takes a moment: retry for a while.
    let start = std::time::Instant::now();
    let mut s = loop {
        match std::net::TcpStream::connect_timeout(&host, std::time::Duration::from_secs(10)) {
            Ok(s) => break s,
            Err(e) if start.elapsed() > std::time::Duration::from_secs(120) => {
                return Err(format!("connect to {host}: {e}"));
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_secs(1)),
        }
    };
    s.write_all(NET_GUEST_HELLO.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .map_err(|e| format!("read: {e}"))?;
    if line == NET_HOST_HELLO {
        Ok(format!("{host} answered over eth0 (mtu {})", mtu.trim()))
    } else {
        Err(format!("{host} answered {line:?}"))
    }
}

fn main() -> ExitCode {
    println!("HAKO-GUEST-PROBE: start pid={}", std::process::id());
    let mut failed = false;
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    check("kernel", kernel_release(), &mut failed);
    check("file", file_round_trip(), &mut failed);
    check("spawn", spawn_child(), &mut failed);
    check("cpu", visible_cpu_features(), &mut failed);
    check("clocksource", clocksource(), &mut failed);
    check("online cpus", online_cpus(), &mut failed);
    check("virtio", virtio_devices(), &mut failed);
    if let Some(dev) = cmdline_value(&cmdline, BLK_ARG) {
        check("blk", block_device(&dev), &mut failed);
    }
    if let Some(dir) = cmdline_value(&cmdline, FS_ARG) {
        check("fs", shared_dir(&dir), &mut failed);
    }
    match cmdline_value(&cmdline, VSOCK_ARG).map(|v| vsock_ports(&v)) {
        Some(Some((guest_port, host_port))) => {
            check("vsock-connect", vsock_to_host(host_port), &mut failed);
            check("vsock-echo", vsock_echo(guest_port), &mut failed);
        }
        Some(None) => check("vsock", Err(format!("bad {VSOCK_ARG}")), &mut failed),
        None => {}
    }
    match cmdline_value(&cmdline, NET_ARG).map(|v| net_args(&v)) {
        Some(Some((cidr, host))) => check("net", network(&cidr, host), &mut failed),
        Some(None) => check("net", Err(format!("bad {NET_ARG}")), &mut failed),
        None => {}
    }
    if failed {
        println!("HAKO-GUEST-PROBE: FAIL");
        ExitCode::FAILURE
    } else {
        println!("HAKO-GUEST-PROBE: ok");
        ExitCode::SUCCESS
    }
}
