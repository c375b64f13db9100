//! Entry points for the fuzz targets (`fuzz/`, feature `fuzzing`): each takes what a guest or a
//! host client controls (a descriptor chain over guest memory, a protocol line) and runs the
//! device code that parses it, without KVM. None may panic, hang or touch memory outside the
//! guest's; what they return is only for the targets' own checks.

use std::path::Path;
use std::sync::{Arc, Mutex};

use virtio_queue::{DescriptorChain, Queue};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use crate::devices::BusDevice;
use crate::devices::virtio::block::request::{self, Disk};
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::net::frame;
use crate::devices::virtio::vsock::device::{COUNTERS as VSOCK_COUNTERS, Worker as VsockWorker};
use crate::devices::virtio::vsock::hybrid;
use crate::devices::virtio::vsock::muxer::Muxer;
use crate::devices::virtio::vsock::packet;
use crate::devices::virtio::{
    ActivateError, Activation, Interrupt, VIRTIO_F_VERSION_1, VirtioDevice, read_config_bytes,
};
use crate::metrics::Counters;

pub use crate::devices::virtio::vsock::muxer::{MAX_PENDING_CONTROL, TX_PAUSE_AT};

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

/// A vsock device's three queues (RX, TX, event) over guest memory, served as its worker
/// serves them on each wakeup but on this thread, by a fresh muxer with no host listeners.
pub struct VsockQueues {
    worker: VsockWorker,
    buf: Vec<u8>,
}

impl VsockQueues {
    /// Binds `uds_path` (removing what was there) for the muxer.
    pub fn new(
        uds_path: &Path,
        memory: GuestMemoryMmap,
        queues: [Queue; 3],
    ) -> std::io::Result<Self> {
        let _ = std::fs::remove_file(uds_path);
        let listener = std::os::unix::net::UnixListener::bind(uds_path)?;
        let counters = Counters::new(VSOCK_COUNTERS);
        let muxer = Muxer::new(3, uds_path, listener, counters.clone())?;
        let interrupt = Interrupt::new(EventFd::new(libc::EFD_NONBLOCK)?);
        Ok(Self {
            worker: VsockWorker::new(muxer, memory, queues, interrupt, counters),
            buf: vec![0u8; packet::MAX_PAYLOAD],
        })
    }

    /// What the worker does when woken, `tx_kicked` if by the guest's TX notification.
    pub fn wake(&mut self, tx_kicked: bool) {
        self.worker.process_queues(tx_kicked, &mut self.buf);
    }

    /// Control packets waiting for guest RX buffers.
    pub fn pending_control(&self) -> usize {
        self.worker.muxer().pending_control()
    }
}

/// The features [`MmioDevice`]'s device offers.
pub const MMIO_OFFERED: u64 = VIRTIO_F_VERSION_1 | 1 << 9;

/// A device with two queues that records the features it is activated with.
struct Recorder {
    activated: Arc<Mutex<Option<u64>>>,
    config: [u8; 8],
}

impl VirtioDevice for Recorder {
    fn device_type(&self) -> u32 {
        MmioDevice::DEVICE_TYPE
    }
    fn name(&self) -> &str {
        "fuzz"
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[16, 16]
    }
    fn features(&self) -> u64 {
        MMIO_OFFERED
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        if let Some(dst) = self.config.get_mut(start..) {
            let n = dst.len().min(data.len());
            dst[..n].copy_from_slice(&data[..n]);
        }
    }
    fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
        *self.activated.lock().unwrap_or_else(|e| e.into_inner()) = Some(a.features);
        Ok(())
    }
    fn reset(&mut self) -> bool {
        *self.activated.lock().unwrap_or_else(|e| e.into_inner()) = None;
        true
    }
}

/// The virtio-mmio registers of a device that records its activation, over guest memory:
/// what a driver's register accesses (any order, any width) reach.
pub struct MmioDevice {
    transport: MmioTransport,
    activated: Arc<Mutex<Option<u64>>>,
}

impl MmioDevice {
    pub fn new(memory: GuestMemoryMmap) -> std::io::Result<Self> {
        let activated = Arc::new(Mutex::new(None));
        let device = Recorder {
            activated: activated.clone(),
            config: [0; 8],
        };
        let interrupt = Interrupt::new(EventFd::new(libc::EFD_NONBLOCK)?);
        let transport = MmioTransport::new(Box::new(device), memory, interrupt)
            .map_err(std::io::Error::other)?;
        Ok(Self {
            transport,
            activated,
        })
    }

    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.transport.read(offset, data);
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) {
        self.transport.write(offset, data);
    }

    /// The features the device is active with, if it is.
    pub fn active_features(&self) -> Option<u64> {
        *self.activated.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the transport's snapshot state (it reads the used rings of active queues).
    pub fn save(&self) {
        let _ = self.transport.save();
    }

    /// Restores the transport from a snapshot's state, as a resumed VM's transports are;
    /// whether it was taken.
    pub fn restore(&mut self, state: &crate::devices::virtio::mmio::TransportState) -> bool {
        self.transport.restore(state).is_ok()
    }

    /// The device's type, which a state must name to be restored onto it.
    pub const DEVICE_TYPE: u32 = 2;
}
