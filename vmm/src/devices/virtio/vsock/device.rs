//! The virtio-vsock device: three queues (RX, TX, event), the guest CID in the configuration
//! space, and the worker thread that moves packets between the queues and the muxer.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use virtio_queue::{Queue, QueueOwnedT};
use vm_memory::{Bytes, GuestMemoryMmap};
use vmm_sys_util::epoll::{ControlOperation, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::muxer::{self, Muxer};
use super::packet::{self, MAX_PAYLOAD};
use crate::devices::log_limit::LogLimit;
use crate::devices::virtio::worker::{self, Worker as WorkerThread};
use crate::devices::virtio::{
    ActivateError, Activation, Interrupt, TYPE_VSOCK, VIRTIO_F_VERSION_1, VirtioDevice, queue,
    read_config_bytes,
};
use crate::metrics::Counters;
use crate::seccomp::Profile;

const QUEUE_SIZES: &[u16] = &[256, 256, 256];
const RX: usize = 0;
const TX: usize = 1;
const EVENT: usize = 2;
const TOKEN_KILL: u64 = 3;
/// VIRTIO_VSOCK_EVENT_TRANSPORT_RESET: the guest drops every connection and re-reads its
/// CID from the configuration space.
const EVENT_TRANSPORT_RESET: u32 = 0;

/// Counters (indices shared with the muxer for the first two and the last two).
pub const COUNTERS: &[&str] = &[
    "connections",
    "resets",
    "tx_packets",
    "rx_packets",
    "tx_bytes",
    "rx_bytes",
    "malformed",
    "dropped_control",
];
const TX_PACKETS: usize = 2;
const RX_PACKETS: usize = 3;
const TX_BYTES: usize = 4;
const RX_BYTES: usize = 5;

/// Errors creating the device.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("listening on the hybrid vsock socket {path}")]
    Listen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Removes the listening socket's file when the device goes away.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            tracing::warn!(path = %self.0.display(), error = %e, "removing the vsock socket");
        }
    }
}

pub struct Vsock {
    _socket: SocketFile,
    guest_cid: u64,
    config: [u8; 8],
    muxer: Option<Muxer>,
    worker: Option<WorkerThread<Muxer>>,
    counters: Arc<Counters>,
    /// Restored from a snapshot: tell the guest (transport reset) when activated.
    announce_reset: bool,
}

impl Vsock {
    /// Binds `uds_path` now, so host clients can connect before the guest is up (they wait
    /// for the guest's answer).
    pub fn new(
        guest_cid: u32,
        uds_path: &Path,
        counters: Arc<Counters>,
    ) -> Result<Self, VsockError> {
        let err = |source| VsockError::Listen {
            path: uds_path.to_owned(),
            source,
        };
        let listener = hako_socket_path::bind(uds_path).map_err(err)?;
        let socket = SocketFile(uds_path.to_owned());
        let muxer =
            Muxer::new(u64::from(guest_cid), uds_path, listener, counters.clone()).map_err(err)?;
        Ok(Self {
            _socket: socket,
            guest_cid: u64::from(guest_cid),
            config: u64::from(guest_cid).to_le_bytes(),
            muxer: Some(muxer),
            worker: None,
            counters,
            announce_reset: false,
        })
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        TYPE_VSOCK
    }

    fn name(&self) -> &str {
        "vsock"
    }

    fn queue_max_sizes(&self) -> &[u16] {
        QUEUE_SIZES
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
        let got = a.queues.len();
        if got != QUEUE_SIZES.len() || a.queue_events.len() != QUEUE_SIZES.len() {
            return Err(ActivateError::QueueCount {
                got,
                want: QUEUE_SIZES.len(),
            });
        }
        let mut queues = a.queues.into_iter();
        let mut events = a.queue_events.into_iter();
        let (Some(rx), Some(tx), Some(ev), Some(rx_evt), Some(tx_evt), Some(ev_evt)) = (
            queues.next(),
            queues.next(),
            queues.next(),
            events.next(),
            events.next(),
            events.next(),
        ) else {
            return Err(ActivateError::QueueCount { got, want: 3 });
        };
        let muxer = self
            .muxer
            .take()
            .ok_or(ActivateError::QueueCount { got, want: 3 })?;
        let mut worker = Worker::new(
            muxer,
            a.memory,
            [rx, tx, ev],
            a.interrupt,
            self.counters.clone(),
        );
        worker.announce_reset = std::mem::take(&mut self.announce_reset);
        let events = [rx_evt, tx_evt, ev_evt];
        self.worker = Some(WorkerThread::spawn("vsock", Profile::Vsock, move |kill| {
            worker.run(&events, kill)
        })?);
        tracing::debug!(cid = self.guest_cid, "vsock active");
        Ok(())
    }

    fn on_restore(&mut self) {
        self.announce_reset = true;
    }

    fn reset(&mut self) -> bool {
        let stopped = worker::stop_into(&mut self.worker, &mut self.muxer);
        if let Some(muxer) = &mut self.muxer {
            muxer.reset();
        }
        stopped
    }
}

/// The device's queue processing: guest TX packets to the muxer, the muxer's packets into
/// guest RX buffers.
pub(crate) struct Worker {
    muxer: Muxer,
    memory: GuestMemoryMmap,
    rx: Queue,
    tx: Queue,
    ev: Queue,
    announce_reset: bool,
    /// TX chains were left in the queue because the muxer paused TX (back-pressure); taken
    /// once it has room again, without waiting for another kick.
    tx_pending: bool,
    interrupt: Arc<Interrupt>,
    counters: Arc<Counters>,
    warnings: LogLimit,
}

impl Worker {
    /// `queues` are RX, TX and event, as the driver set them up.
    pub(crate) fn new(
        muxer: Muxer,
        memory: GuestMemoryMmap,
        queues: [Queue; 3],
        interrupt: Arc<Interrupt>,
        counters: Arc<Counters>,
    ) -> Self {
        let [rx, tx, ev] = queues;
        Self {
            muxer,
            memory,
            rx,
            tx,
            ev,
            announce_reset: false,
            tx_pending: false,
            interrupt,
            counters,
            warnings: LogLimit::new(),
        }
    }

    fn run(mut self, queue_events: &[EventFd; 3], kill: EventFd) -> Muxer {
        let epoll_ok = queue_events
            .iter()
            .enumerate()
            .map(|(i, e)| (i as u64, e.as_raw_fd()))
            .chain([(TOKEN_KILL, kill.as_raw_fd())])
            .all(|(token, fd)| {
                self.muxer
                    .epoll()
                    .ctl(
                        ControlOperation::Add,
                        fd,
                        EpollEvent::new(EventSet::IN, token),
                    )
                    .is_ok()
            });
        if !epoll_ok {
            tracing::error!("vsock: cannot wait for queue events; the device stops");
            return self.muxer;
        }
        let mut events = vec![EpollEvent::default(); 32];
        let mut buf = vec![0u8; MAX_PAYLOAD];
        let mut tx_kicked = false;
        if self.announce_reset {
            self.announce_reset = !self.send_transport_reset();
        }
        loop {
            let n = match self
                .muxer
                .epoll()
                .wait(self.muxer.timeout_ms(), &mut events)
            {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!(error = %e, "vsock: epoll failed; the device stops");
                    return self.muxer;
                }
            };
            for e in &events[..n] {
                match e.data() {
                    TOKEN_KILL => return self.muxer,
                    t if t == RX as u64 => {
                        let _ = queue_events[RX].read();
                    }
                    t if t == EVENT as u64 => {
                        let _ = queue_events[EVENT].read();
                        if self.announce_reset {
                            self.announce_reset = !self.send_transport_reset();
                        }
                    }
                    t if t == TX as u64 => {
                        let _ = queue_events[TX].read();
                        tx_kicked = true;
                    }
                    t => self.muxer.handle_event(t, e.event_set()),
                }
            }
            self.muxer.expire();
            self.process_queues(std::mem::take(&mut tx_kicked), &mut buf);
        }
    }

    /// After a wakeup: takes the guest's TX chains if it kicked (or some were left for want of
    /// room), then fills RX buffers; TX left waiting resumes as RX frees room. `buf` holds
    /// [`MAX_PAYLOAD`] bytes.
    pub(crate) fn process_queues(&mut self, tx_kicked: bool, buf: &mut [u8]) {
        if tx_kicked || self.tx_pending {
            self.process_tx();
        }
        self.process_rx(buf);
        // Each round takes at least one TX chain, and the muxer has room again only if the
        // guest took RX packets, so this ends when the guest stops supplying either.
        while self.tx_pending && !self.muxer.tx_paused() {
            self.process_tx();
            self.process_rx(buf);
        }
    }

    /// The muxer (tests and fuzz targets look at what it holds).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn muxer(&self) -> &Muxer {
        &self.muxer
    }

    /// Puts a transport-reset event in the guest's event queue (after a restore: the guest's
    /// connections belonged to another VMM and its CID may have changed). False when the
    /// guest has no event buffer posted yet; the next event-queue kick retries.
    fn send_transport_reset(&mut self) -> bool {
        let Some(chain) = queue::pop_limited(&mut self.ev, &self.memory, &mut self.warnings) else {
            return false;
        };
        let head = chain.head_index();
        let written = chain
            .into_iter()
            .find(|d| d.is_write_only() && d.len() >= 4)
            .and_then(|d| {
                self.memory
                    .write_obj(EVENT_TRANSPORT_RESET.to_le(), d.addr())
                    .ok()
            })
            .map_or(0, |()| 4);
        if written == 0 {
            if let Some(suppressed) = self.warnings.allow() {
                tracing::warn!(
                    suppressed,
                    "the guest's vsock event buffer is unusable; no transport reset sent"
                );
            }
            self.counters.add(muxer::MALFORMED, 1);
        } else {
            tracing::debug!("vsock transport reset sent to the guest");
        }
        queue::complete_limited(
            &mut self.ev,
            &self.memory,
            head,
            written,
            &mut self.warnings,
        );
        queue::notify_limited(
            &mut self.ev,
            &self.memory,
            &self.interrupt,
            &mut self.warnings,
        );
        true
    }

    /// Hands the guest's TX packets to the muxer until the queue is empty or the muxer pauses
    /// TX; the chains left then wait in the guest's queue, which holds no more than its size.
    fn process_tx(&mut self) {
        let mut used = false;
        loop {
            if self.muxer.tx_paused() {
                self.tx_pending = queue::has_available(&self.tx, &self.memory);
                break;
            }
            let Some(chain) = queue::pop_limited(&mut self.tx, &self.memory, &mut self.warnings)
            else {
                self.tx_pending = false;
                break;
            };
            let head = chain.head_index();
            match packet::read_tx(chain, &self.memory) {
                Ok(p) => {
                    self.counters.add(TX_PACKETS, 1);
                    self.counters.add(TX_BYTES, p.payload.len() as u64);
                    self.muxer.on_guest_packet(p);
                }
                Err(e) => {
                    if let Some(suppressed) = self.warnings.allow() {
                        tracing::warn!(
                            error = %e,
                            suppressed,
                            "dropping a malformed vsock packet from the guest"
                        );
                    }
                    self.counters.add(muxer::MALFORMED, 1);
                }
            }
            queue::complete_limited(&mut self.tx, &self.memory, head, 0, &mut self.warnings);
            used = true;
        }
        if used {
            queue::notify_limited(
                &mut self.tx,
                &self.memory,
                &self.interrupt,
                &mut self.warnings,
            );
        }
    }

    fn process_rx(&mut self, buf: &mut [u8]) {
        let mut used = false;
        while self.muxer.has_rx_work() {
            let Some(chain) = queue::pop_limited(&mut self.rx, &self.memory, &mut self.warnings)
            else {
                break;
            };
            let head = chain.head_index();
            let room = match packet::rx_room(&chain, &self.memory) {
                Ok(room) => room,
                Err(e) => {
                    if let Some(suppressed) = self.warnings.allow() {
                        tracing::warn!(
                            error = %e,
                            suppressed,
                            "the guest gave an unusable vsock RX buffer"
                        );
                    }
                    self.counters.add(muxer::MALFORMED, 1);
                    queue::complete_limited(
                        &mut self.rx,
                        &self.memory,
                        head,
                        0,
                        &mut self.warnings,
                    );
                    used = true;
                    continue;
                }
            };
            let Some((header, len)) = self.muxer.next_rx(room, buf) else {
                self.rx.go_to_previous_position();
                break;
            };
            let written = packet::write_rx(chain, &self.memory, header, &buf[..len])
                .unwrap_or_else(|e| {
                    if let Some(suppressed) = self.warnings.allow() {
                        tracing::warn!(
                            error = %e,
                            suppressed,
                            "writing a vsock packet to the guest"
                        );
                    }
                    0
                });
            self.counters.add(RX_PACKETS, 1);
            self.counters.add(RX_BYTES, len as u64);
            queue::complete_limited(
                &mut self.rx,
                &self.memory,
                head,
                written,
                &mut self.warnings,
            );
            used = true;
        }
        if used {
            queue::notify_limited(
                &mut self.rx,
                &self.memory,
                &self.interrupt,
                &mut self.warnings,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::test_utils::{Ring, desc, mem};
    use crate::devices::virtio::vsock::HOST_CID;
    use crate::devices::virtio::vsock::muxer::TX_PAUSE_AT;
    use crate::devices::virtio::vsock::packet::{Header, OP_RW, TYPE_STREAM};
    use virtio_bindings::bindings::virtio_ring::VRING_DESC_F_WRITE;
    use vm_memory::GuestAddress;

    const CID: u64 = 3;
    const SIZE: u16 = 256;
    const PACKET: u64 = 0x1_0000;
    const RX_BUFFERS: u64 = 0x2_0000;

    #[test]
    fn tx_waits_in_the_guests_queue_while_resets_wait_for_rx_buffers() {
        let m = mem();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let counters = Counters::new(COUNTERS);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let muxer = Muxer::new(CID, &path, listener, counters.clone()).unwrap();
        let rx = Ring::new(GuestAddress(0x4000), SIZE);
        let tx = Ring::new(GuestAddress(0x8000), SIZE);
        let ev = Ring::new(GuestAddress(0xc000), 16);
        // Every TX descriptor holds the same packet: data for a connection that does not
        // exist, which the muxer answers with an RST. Every RX descriptor has room for one.
        let header = Header {
            src_cid: CID,
            dst_cid: HOST_CID,
            src_port: 5000,
            dst_port: 9,
            len: 0,
            kind: TYPE_STREAM,
            op: OP_RW,
            flags: 0,
            buf_alloc: 65536,
            fwd_cnt: 0,
        };
        m.write_obj(header, GuestAddress(PACKET)).unwrap();
        for i in 0..SIZE {
            tx.set_desc(&m, i, desc(PACKET, packet::HEADER_SIZE as u32, 0));
            let buf = RX_BUFFERS + u64::from(i) * 64;
            rx.set_desc(&m, i, desc(buf, 64, VRING_DESC_F_WRITE));
        }
        let irq = Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let queues = [rx.queue(), tx.queue(), ev.queue()];
        let mut worker = Worker::new(muxer, m.clone(), queues, irq, counters.clone());
        let mut buf = vec![0u8; MAX_PAYLOAD];
        // The guest fills its TX queue three times over and gives no RX buffer.
        for _ in 0..3 {
            for head in 0..SIZE {
                tx.offer(&m, head);
            }
            worker.process_queues(true, &mut buf);
        }
        assert_eq!(worker.muxer().pending_control(), TX_PAUSE_AT);
        assert_eq!(
            tx.used_idx(&m) as usize,
            TX_PAUSE_AT,
            "TX stops at the pause mark; the rest waits in the guest's queue"
        );
        // 16 RX buffers take 16 resets; as many TX chains go through, with no kick.
        for head in 0..16 {
            rx.offer(&m, head);
        }
        worker.process_queues(false, &mut buf);
        assert_eq!(rx.used_idx(&m), 16);
        assert_eq!(tx.used_idx(&m) as usize, TX_PAUSE_AT + 16);
        assert_eq!(worker.muxer().pending_control(), TX_PAUSE_AT);
        let seen = counters.snapshot();
        assert_eq!((seen["malformed"], seen["dropped_control"]), (0, 0));
    }
}
