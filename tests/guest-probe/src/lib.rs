//! What the guest test program and the host-side VM tests agree on: kernel command-line keys
//! that switch device checks on, and the markers each side writes.
#![forbid(unsafe_code)]

/// Prefix of every line the program prints.
pub const LINE_PREFIX: &str = "HAKO-GUEST-PROBE:";
/// `hako.probe.blk=<device>`: check a virtio-blk disk.
pub const BLK_ARG: &str = "hako.probe.blk";
/// What the host writes at the start of a test disk.
pub const BLK_HOST_MARKER: &str = "HAKO-BLK host wrote this";
/// What the guest writes at byte 512 of the test disk.
pub const BLK_GUEST_MARKER: &str = "HAKO-BLK guest wrote this";

/// `hako.probe.vsock=<guest-port>,<host-port>`: connect to the host's `<host-port>`, then
/// echo one connection on `<guest-port>`.
pub const VSOCK_ARG: &str = "hako.probe.vsock";
/// The guest's line to the host listener, and the host's answer.
pub const VSOCK_GUEST_HELLO: &str = "HAKO-VSOCK hello from the guest\n";
pub const VSOCK_HOST_HELLO: &str = "HAKO-VSOCK hello from the host\n";
/// Printed when the guest's echo listener is up.
pub const VSOCK_LISTENING: &str = "vsock: listening on";

/// Parses `<guest-port>,<host-port>`.
pub fn vsock_ports(value: &str) -> Option<(u32, u32)> {
    let (g, h) = value.split_once(',')?;
    Some((g.parse().ok()?, h.parse().ok()?))
}

/// `hako.probe.fs=<dir>`: read the host's file in `<dir>`, write the guest's, stat, list.
pub const FS_ARG: &str = "hako.probe.fs";
pub const FS_HOST_FILE: &str = "host.txt";
pub const FS_HOST_CONTENT: &str = "HAKO-FS written by the host\n";
pub const FS_GUEST_FILE: &str = "guest.txt";
pub const FS_GUEST_CONTENT: &str = "HAKO-FS written by the guest\n";

/// `hako.probe.net=<address>/<prefix>,<host-ip>:<port>`: give eth0 the address, bring it up,
/// report its MTU, then connect to the host's TCP port, send the guest's hello and expect the
/// host's.
pub const NET_ARG: &str = "hako.probe.net";
pub const NET_GUEST_HELLO: &str = "HAKO-NET hello from the guest\n";
pub const NET_HOST_HELLO: &str = "HAKO-NET hello from the host\n";

/// Parses `<address>/<prefix>,<host-ip>:<port>` into the address and the host's socket address.
pub fn net_args(value: &str) -> Option<(String, std::net::SocketAddr)> {
    let (cidr, host) = value.split_once(',')?;
    let (ip, prefix) = cidr.split_once('/')?;
    ip.parse::<std::net::Ipv4Addr>().ok()?;
    prefix.parse::<u8>().ok().filter(|p| *p <= 32)?;
    Some((cidr.to_owned(), host.parse().ok()?))
}

/// The value of `key=` on a kernel command line.
pub fn cmdline_value(cmdline: &str, key: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find_map(|arg| arg.strip_prefix(key)?.strip_prefix('=').map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_exact_keys_only() {
        let c = "quiet hako.probe.blkx=no hako.probe.blk=/dev/vda end";
        assert_eq!(cmdline_value(c, BLK_ARG).as_deref(), Some("/dev/vda"));
        assert_eq!(cmdline_value(c, "hako.probe.fs"), None);
        assert_eq!(vsock_ports("1234,52"), Some((1234, 52)));
        assert_eq!(vsock_ports("1234"), None);
        let (cidr, host) = net_args("10.77.0.2/24,10.77.0.1:7777").unwrap();
        assert_eq!(cidr, "10.77.0.2/24");
        assert_eq!(host.port(), 7777);
        assert!(net_args("10.77.0.2,10.77.0.1:7777").is_none());
        assert!(net_args("10.77.0.2/33,10.77.0.1:7777").is_none());
    }
}
