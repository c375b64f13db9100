//! Entry points for the fuzz targets (`fuzz/`, feature `fuzzing`): each takes what a guest or a
//! host client controls (a descriptor chain over guest memory, a protocol line) and runs the
//! device code that parses it, without KVM. None may panic, hang or touch memory outside the
//! guest's; what they return is only for the targets' own checks.

use std::path::Path;

use virtio_queue::DescriptorChain;
use vm_memory::GuestMemoryMmap;

use crate::devices::virtio::block::request::{self, Disk};
use crate::devices::virtio::net::frame;
use crate::devices::virtio::vsock::hybrid;
use crate::devices::virtio::vsock::muxer::Muxer;
use crate::devices::virtio::vsock::packet;
use crate::metrics::Counters;

/// The hybrid-vsock handshake line a host client sent so far.
pub fn vsock_host_line(line: &[u8]) -> bool {
    matches!(hybrid::parse(line), hybrid::Handshake::Connect(_))
}

/// The host side of a vsock device with no host listeners behind its socket path (the guest's
/// connections are refused; its packets still go through the header checks and the
/// connection state machine).
pub struct VsockHost {
    muxer: Muxer,
}

impl VsockHost {
    pub fn new(uds_path: &Path) -> std::io::Result<Self> {
        let listener = std::os::unix::net::UnixListener::bind(uds_path)?;
        Ok(Self {
            muxer: Muxer::new(3, uds_path, listener, Counters::new(&[]))?,
        })
    }

    /// A guest TX chain read as a vsock packet and, if well-formed, handed to the muxer; then
    /// the replies it queued are drained.
    pub fn tx(&mut self, chain: DescriptorChain<&GuestMemoryMmap>, mem: &GuestMemoryMmap) {
        if let Ok(p) = packet::read_tx(chain, mem) {
            self.muxer.on_guest_packet(p);
        }
        let mut buf = vec![0u8; 4096];
        while self.muxer.next_rx(buf.len(), &mut buf).is_some() {}
    }
}

/// A block request chain against `file` (`capacity` bytes).
pub fn block(
    chain: DescriptorChain<&GuestMemoryMmap>,
    mem: &GuestMemoryMmap,
    file: &std::fs::File,
    capacity: u64,
    read_only: bool,
) -> Option<u32> {
    let disk = Disk {
        file,
        capacity,
        read_only,
        id: b"fuzz",
    };
    request::serve(chain, mem, &disk).ok()
}

/// A guest TX chain gathered as a network frame.
pub fn net_tx(chain: DescriptorChain<&GuestMemoryMmap>, mem: &GuestMemoryMmap) -> Option<usize> {
    let mut buf = vec![0u8; frame::MAX_FRAME];
    frame::read_tx(chain, mem, &mut buf).ok()
}

/// A frame scattered over a guest RX chain.
pub fn net_rx(
    chain: DescriptorChain<&GuestMemoryMmap>,
    mem: &GuestMemoryMmap,
    frame: &mut [u8],
) -> Option<u32> {
    frame::write_rx(chain, mem, frame).ok()
}
