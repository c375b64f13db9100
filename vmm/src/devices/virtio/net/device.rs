//! The virtio-net device: configuration space (MAC, link status, MTU), the features it
//! offers, and the worker thread that moves frames between the queues and the tap.

use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Instant;

use hako_vmm_api::NetRateLimit;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::frame::{self, MAX_FRAME};
use super::rate::TokenBucket;
use super::tap::{FrameIo, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6};
use super::{
    LINK_UP, VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MAC,
    VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS,
};
use crate::devices::log_limit::LogLimit;
use crate::devices::virtio::worker::{self, Worker as WorkerThread};
use crate::devices::virtio::{
    ActivateError, Activation, Interrupt, TYPE_NET, VIRTIO_F_VERSION_1, VirtioDevice, queue,
    read_config_bytes,
};
use crate::metrics::Counters;
use crate::seccomp::Profile;

const QUEUE_SIZES: &[u16] = &[256, 256];
const RX: u64 = 0;
const TX: u64 = 1;
const TOKEN_TAP: u64 = 2;
const TOKEN_KILL: u64 = 3;

pub const COUNTERS: &[&str] = &[
    "rx_packets",
    "rx_bytes",
    "tx_packets",
    "tx_bytes",
    "rx_dropped",
    "tx_dropped",
    "malformed",
];
const RX_PACKETS: usize = 0;
const RX_BYTES: usize = 1;
const TX_PACKETS: usize = 2;
const TX_BYTES: usize = 3;
const RX_DROPPED: usize = 4;
const TX_DROPPED: usize = 5;
const MALFORMED: usize = 6;

/// A virtio network card whose wire is a tap.
pub struct Net {
    name: String,
    io: Option<Box<dyn FrameIo>>,
    features: u64,
    config: [u8; 12],
    counters: Arc<Counters>,
    rate_limit: NetRateLimit,
    /// For the warnings the guest causes; it goes to each activation's worker and comes back,
    /// so resetting the device does not renew the budget.
    warnings: LogLimit,
    worker: Option<WorkerThread<(Box<dyn FrameIo>, LogLimit)>>,
}

impl Net {
    /// A device over any frame transport (a tap, or a socket pair in tests).
    pub fn with_io(
        id: &str,
        io: Box<dyn FrameIo>,
        mac: [u8; 6],
        mtu: Option<u16>,
        counters: Arc<Counters>,
    ) -> Self {
        let mut config = [0u8; 12];
        config[..6].copy_from_slice(&mac);
        config[6..8].copy_from_slice(&LINK_UP.to_le_bytes());
        config[8..10].copy_from_slice(&1u16.to_le_bytes());
        let mut features = VIRTIO_F_VERSION_1
            | VIRTIO_NET_F_MAC
            | VIRTIO_NET_F_STATUS
            | VIRTIO_NET_F_CSUM
            | VIRTIO_NET_F_GUEST_CSUM
            | VIRTIO_NET_F_GUEST_TSO4
            | VIRTIO_NET_F_GUEST_TSO6
            | VIRTIO_NET_F_HOST_TSO4
            | VIRTIO_NET_F_HOST_TSO6;
        if let Some(mtu) = mtu {
            config[10..12].copy_from_slice(&mtu.to_le_bytes());
            features |= VIRTIO_NET_F_MTU;
        }
        Self {
            name: format!("net:{id}"),
            io: Some(io),
            features,
            config,
            counters,
            rate_limit: NetRateLimit::default(),
            warnings: LogLimit::new(),
            worker: None,
        }
    }

    /// Limits the bandwidth each way (token buckets; frames wait, never drop).
    pub fn with_rate_limit(mut self, limit: Option<NetRateLimit>) -> Self {
        self.rate_limit = limit.unwrap_or_default();
        self
    }
}

/// The tap offloads that match what the driver accepted for received frames.
fn tap_offloads(accepted: u64) -> u32 {
    let mut flags = 0;
    if accepted & VIRTIO_NET_F_GUEST_CSUM != 0 {
        flags |= TUN_F_CSUM;
        if accepted & VIRTIO_NET_F_GUEST_TSO4 != 0 {
            flags |= TUN_F_TSO4;
        }
        if accepted & VIRTIO_NET_F_GUEST_TSO6 != 0 {
            flags |= TUN_F_TSO6;
        }
    }
    flags
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn queue_max_sizes(&self) -> &[u16] {
        QUEUE_SIZES
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
        let got = a.queues.len();
        let mut queues = a.queues.into_iter();
        let mut events = a.queue_events.into_iter();
        let (Some(rx), Some(tx), Some(rx_evt), Some(tx_evt)) =
            (queues.next(), queues.next(), events.next(), events.next())
        else {
            return Err(ActivateError::QueueCount { got, want: 2 });
        };
        let io = self
            .io
            .take()
            .ok_or(ActivateError::QueueCount { got, want: 2 })?;
        if let Err(e) = io.set_offload(tap_offloads(a.features))
            && let Some(suppressed) = self.warnings.allow()
        {
            tracing::warn!(
                device = %self.name,
                error = %e,
                suppressed,
                "the guest gets no receive offloads"
            );
        }
        let worker = Worker {
            io,
            memory: a.memory,
            rx,
            tx,
            rx_evt,
            tx_evt,
            interrupt: a.interrupt,
            counters: self.counters.clone(),
            pending: None,
            rx_buf: vec![0u8; MAX_FRAME],
            tx_buf: vec![0u8; MAX_FRAME],
            limits: Limits::new(self.rate_limit),
            warnings: std::mem::take(&mut self.warnings),
        };
        self.worker = Some(WorkerThread::spawn(
            &self.name,
            Profile::Net,
            move |kill| worker.run(kill),
        )?);
        Ok(())
    }

    fn reset(&mut self) -> bool {
        let mut back = None;
        let stopped = worker::stop_into(&mut self.worker, &mut back);
        if let Some((io, warnings)) = back {
            self.io = Some(io);
            self.warnings = warnings;
        }
        stopped
    }
}

struct Worker {
    io: Box<dyn FrameIo>,
    memory: GuestMemoryMmap,
    rx: Queue,
    tx: Queue,
    rx_evt: EventFd,
    tx_evt: EventFd,
    interrupt: Arc<Interrupt>,
    counters: Arc<Counters>,
    /// Length of a frame read from the tap (in `rx_buf`) that no guest buffer took yet.
    pending: Option<usize>,
    rx_buf: Vec<u8>,
    tx_buf: Vec<u8>,
    limits: Limits,
    /// For the warnings the guest's frames and rings cause.
    warnings: LogLimit,
}

/// The bandwidth limits' state in a worker.
#[derive(Debug, Default)]
struct Limits {
    rx: Option<TokenBucket>,
    tx: Option<TokenBucket>,
    /// A guest frame (its chain's head and length, in `tx_buf`) held back by the TX limit.
    tx_held: Option<(u16, usize)>,
    /// When a held-back direction may go on.
    rx_at: Option<Instant>,
    tx_at: Option<Instant>,
}

impl Limits {
    fn new(limit: NetRateLimit) -> Self {
        let now = Instant::now();
        Self {
            rx: limit.rx.map(|b| TokenBucket::new(b, now)),
            tx: limit.tx.map(|b| TokenBucket::new(b, now)),
            ..Self::default()
        }
    }

    /// The epoll timeout (ms, rounded up; -1: none) until a held-back direction may go on.
    fn timeout_ms(&self) -> i32 {
        let now = Instant::now();
        self.rx_at
            .into_iter()
            .chain(self.tx_at)
            .min()
            .map_or(-1, |t| {
                let us = t.saturating_duration_since(now).as_micros();
                i32::try_from(us.div_ceil(1000)).unwrap_or(i32::MAX)
            })
    }

    /// Whether a frame of `len` bytes may go now through `bucket`; if not, when.
    fn admit(bucket: &mut Option<TokenBucket>, len: usize) -> Result<(), Instant> {
        let Some(b) = bucket else {
            return Ok(());
        };
        let now = Instant::now();
        let wait = b.wait_for(len, now);
        if wait.is_zero() {
            b.take(len);
            Ok(())
        } else {
            Err(now + wait)
        }
    }
}

impl Worker {
    /// Moves frames until killed; hands the tap and the warning budget back for a later
    /// activation.
    fn run(mut self, kill: EventFd) -> (Box<dyn FrameIo>, LogLimit) {
        self.serve(&kill);
        (self.io, self.warnings)
    }

    fn serve(&mut self, kill: &EventFd) {
        let epoll = match self.epoll(kill) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "net: cannot wait for the tap and queues; the device stops");
                return;
            }
        };
        let mut events = [EpollEvent::default(); 8];
        // Frames may have arrived before the guest was ready.
        self.process_rx();
        loop {
            let n = match epoll.wait(self.limits.timeout_ms(), &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!(error = %e, "net: epoll failed; the device stops");
                    return;
                }
            };
            let (mut rx, mut tx) = (false, false);
            for e in &events[..n] {
                match e.data() {
                    TOKEN_KILL => return,
                    RX => {
                        let _ = self.rx_evt.read();
                        rx = true;
                    }
                    TX => {
                        let _ = self.tx_evt.read();
                        tx = true;
                    }
                    _ => rx = true,
                }
            }
            let now = Instant::now();
            tx |= self.limits.tx_at.is_some_and(|t| t <= now);
            rx |= self.limits.rx_at.is_some_and(|t| t <= now);
            if tx {
                self.process_tx();
            }
            if rx {
                self.process_rx();
            }
        }
    }

    fn epoll(&self, kill: &EventFd) -> std::io::Result<Epoll> {
        use std::os::fd::AsRawFd;
        let epoll = Epoll::new()?;
        for (token, fd, set) in [
            (RX, self.rx_evt.as_raw_fd(), EventSet::IN),
            (TX, self.tx_evt.as_raw_fd(), EventSet::IN),
            // Edge-triggered: a frame left waiting for guest buffers must not spin the loop;
            // the guest's RX kick (buffers added) resumes reading.
            (
                TOKEN_TAP,
                self.io.fd(),
                EventSet::IN | EventSet::EDGE_TRIGGERED,
            ),
            (TOKEN_KILL, kill.as_raw_fd(), EventSet::IN),
        ] {
            epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(set, token))?;
        }
        Ok(epoll)
    }

    /// Tap → guest, until the tap is empty or the guest has no buffer left.
    fn process_rx(&mut self) {
        self.limits.rx_at = None;
        let mut used = false;
        loop {
            let len = match self.pending {
                Some(len) => len,
                None => match self.io.recv(&mut self.rx_buf) {
                    Ok(len) => len,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        if let Some(suppressed) = self.warnings.allow() {
                            tracing::warn!(error = %e, suppressed, "net: reading the tap");
                        }
                        break;
                    }
                },
            };
            // No guest buffer: wait for one without spending the rate limit's tokens.
            if !queue::has_available(&self.rx, &self.memory) {
                self.pending = Some(len);
                break;
            }
            if let Err(at) = Limits::admit(&mut self.limits.rx, len) {
                self.pending = Some(len);
                self.limits.rx_at = Some(at);
                break;
            }
            let Some(chain) = queue::pop_limited(&mut self.rx, &self.memory, &mut self.warnings)
            else {
                self.pending = Some(len);
                break;
            };
            self.pending = None;
            let head = chain.head_index();
            let written = match frame::write_rx(chain, &self.memory, &mut self.rx_buf[..len]) {
                Ok(n) => {
                    self.counters.add(RX_PACKETS, 1);
                    self.counters.add(RX_BYTES, len as u64);
                    n
                }
                Err(e) => {
                    tracing::debug!(error = %e, "net: dropping a received frame");
                    self.counters.add(RX_DROPPED, 1);
                    0
                }
            };
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

    /// Guest → tap: every frame the guest queued.
    fn process_tx(&mut self) {
        self.limits.tx_at = None;
        let mut used = false;
        loop {
            let (head, len) = match self.limits.tx_held.take() {
                Some(held) => held,
                None => {
                    let Some(chain) =
                        queue::pop_limited(&mut self.tx, &self.memory, &mut self.warnings)
                    else {
                        break;
                    };
                    let head = chain.head_index();
                    match frame::read_tx(chain, &self.memory, &mut self.tx_buf) {
                        Ok(len) => (head, len),
                        Err(e) => {
                            if let Some(suppressed) = self.warnings.allow() {
                                tracing::warn!(
                                    error = %e,
                                    suppressed,
                                    "net: dropping a malformed frame from the guest"
                                );
                            }
                            self.counters.add(MALFORMED, 1);
                            queue::complete_limited(
                                &mut self.tx,
                                &self.memory,
                                head,
                                0,
                                &mut self.warnings,
                            );
                            used = true;
                            continue;
                        }
                    }
                }
            };
            if let Err(at) = Limits::admit(&mut self.limits.tx, len) {
                self.limits.tx_held = Some((head, len));
                self.limits.tx_at = Some(at);
                break;
            }
            match self.io.send(&self.tx_buf[..len]) {
                Ok(_) => {
                    self.counters.add(TX_PACKETS, 1);
                    self.counters.add(TX_BYTES, len as u64);
                }
                Err(e) => {
                    // A full tap queue drops, as a wire would.
                    tracing::debug!(error = %e, "net: writing a frame to the tap");
                    self.counters.add(TX_DROPPED, 1);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offloads_follow_what_the_driver_accepted() {
        assert_eq!(tap_offloads(0), 0);
        assert_eq!(
            tap_offloads(VIRTIO_NET_F_GUEST_TSO4),
            0,
            "TSO needs checksum offload"
        );
        assert_eq!(
            tap_offloads(
                VIRTIO_NET_F_GUEST_CSUM | VIRTIO_NET_F_GUEST_TSO4 | VIRTIO_NET_F_GUEST_TSO6
            ),
            TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
        );
    }

    #[test]
    fn config_space_holds_mac_status_and_mtu() {
        struct Null;
        impl FrameIo for Null {
            fn recv(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(ErrorKind::WouldBlock.into())
            }
            fn send(&mut self, f: &[u8]) -> std::io::Result<usize> {
                Ok(f.len())
            }
            fn fd(&self) -> std::os::fd::RawFd {
                -1
            }
        }
        let mac = [0x02, 0, 0, 0, 0, 1];
        let n = Net::with_io(
            "eth0",
            Box::new(Null),
            mac,
            Some(1400),
            Counters::new(COUNTERS),
        );
        let mut b = [0u8; 12];
        n.read_config(0, &mut b);
        assert_eq!(&b[..6], &mac);
        assert_eq!(u16::from_le_bytes([b[6], b[7]]), LINK_UP);
        assert_eq!(u16::from_le_bytes([b[10], b[11]]), 1400);
        assert_ne!(n.features() & VIRTIO_NET_F_MTU, 0);
        let n = Net::with_io("eth0", Box::new(Null), mac, None, Counters::new(COUNTERS));
        assert_eq!(n.features() & VIRTIO_NET_F_MTU, 0);
        assert_eq!(n.name(), "net:eth0");
    }

    /// A worker over one end of a datagram socket pair.
    fn worker(
        m: &GuestMemoryMmap,
        io: std::os::unix::net::UnixDatagram,
        rx: Queue,
        tx: Queue,
        limits: Limits,
    ) -> Worker {
        Worker {
            io: Box::new(Datagrams(io)),
            memory: m.clone(),
            rx,
            tx,
            rx_evt: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            tx_evt: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            interrupt: Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()),
            counters: Counters::new(COUNTERS),
            pending: None,
            rx_buf: vec![0u8; MAX_FRAME],
            tx_buf: vec![0u8; MAX_FRAME],
            limits,
            warnings: LogLimit::new(),
        }
    }

    struct Datagrams(std::os::unix::net::UnixDatagram);
    impl FrameIo for Datagrams {
        fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.0.recv(buf)
        }
        fn send(&mut self, f: &[u8]) -> std::io::Result<usize> {
            self.0.send(f)
        }
        fn fd(&self) -> std::os::fd::RawFd {
            std::os::fd::AsRawFd::as_raw_fd(&self.0)
        }
    }

    #[test]
    fn frames_cross_both_ways_and_wait_for_guest_buffers() {
        use crate::devices::virtio::test_utils::{desc, mem};
        use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
        use virtio_queue::mock::MockSplitQueue;
        use vm_memory::{Bytes, GuestAddress};

        let m = mem();
        let (ours, peer) = std::os::unix::net::UnixDatagram::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        // The guest sends one frame (header + "ping") ...
        let txq = MockSplitQueue::create(&m, GuestAddress(0x1000), 16);
        m.write_slice(&[0u8; 12], GuestAddress(0x40000)).unwrap();
        m.write_slice(b"ping", GuestAddress(0x41000)).unwrap();
        txq.build_desc_chain(&[desc(0x40000, 12, VRING_DESC_F_NEXT), desc(0x41000, 4, 0)])
            .unwrap();
        // ... and posts one receive buffer.
        let rxq = MockSplitQueue::create(&m, GuestAddress(0x8000), 16);
        rxq.build_desc_chain(&[desc(0x50000, 2048, VRING_DESC_F_WRITE)])
            .unwrap();
        let mut w = worker(
            &m,
            ours,
            rxq.create_queue().unwrap(),
            txq.create_queue().unwrap(),
            Limits::default(),
        );
        w.process_tx();
        let mut got = [0u8; 64];
        let n = peer.recv(&mut got).unwrap();
        assert_eq!(&got[12..n], b"ping");

        // Two frames arrive; one buffer takes the first, the second waits.
        let mut f1 = vec![0u8; 12];
        f1.extend_from_slice(b"pong-1");
        let mut f2 = vec![0u8; 12];
        f2.extend_from_slice(b"pong-2");
        peer.send(&f1).unwrap();
        peer.send(&f2).unwrap();
        w.process_rx();
        let mut b = [0u8; 6];
        m.read_slice(&mut b, GuestAddress(0x50000 + 12)).unwrap();
        assert_eq!(&b, b"pong-1");
        assert_eq!(w.pending, Some(18), "the second frame waits for a buffer");
        let used: u16 = m.read_obj(GuestAddress(rxq.used_addr().0 + 2)).unwrap();
        assert_eq!(used, 1);
        let snap = w.counters.snapshot();
        assert_eq!(snap["tx_packets"], 1);
        assert_eq!(snap["rx_packets"], 1);
    }

    #[test]
    fn a_tx_limit_holds_frames_back_in_order_and_drops_none() {
        use crate::devices::virtio::test_utils::{desc, mem};
        use virtio_bindings::bindings::virtio_ring::VRING_DESC_F_NEXT;
        use virtio_queue::desc::{RawDescriptor, split::Descriptor as SplitDescriptor};
        use virtio_queue::mock::MockSplitQueue;
        use vm_memory::{Bytes, GuestAddress};

        let m = mem();
        let (ours, peer) = std::os::unix::net::UnixDatagram::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        peer.set_nonblocking(true).unwrap();
        let txq = MockSplitQueue::create(&m, GuestAddress(0x1000), 16);
        let mut chains = Vec::new();
        for i in 0..3u64 {
            let hdr = 0x40000 + i * 0x1000;
            let body = 0x60000 + i * 0x1000;
            m.write_slice(&[0u8; 12], GuestAddress(hdr)).unwrap();
            m.write_slice(&[b'a' + i as u8; 1000], GuestAddress(body))
                .unwrap();
            let next = (2 * i + 1) as u16;
            chains.extend([
                RawDescriptor::from(SplitDescriptor::new(
                    hdr,
                    12,
                    VRING_DESC_F_NEXT as u16,
                    next,
                )),
                desc(body, 1000, 0),
            ]);
        }
        txq.build_multiple_desc_chains(&chains).unwrap();
        // 1 MB/s with room for one frame: the next waits about a millisecond.
        let limits = Limits::new(NetRateLimit {
            rx: None,
            tx: Some(hako_vmm_api::Bandwidth {
                bytes_per_sec: 1_000_000,
                burst_bytes: Some(1012),
            }),
        });
        let rxq = MockSplitQueue::create(&m, GuestAddress(0x8000), 16);
        let mut w = worker(
            &m,
            ours,
            rxq.create_queue().unwrap(),
            txq.create_queue().unwrap(),
            limits,
        );
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        for _ in 0..100 {
            w.process_tx();
            while let Ok(n) = peer.recv(&mut buf) {
                assert_eq!(n, 1012);
                got.push(buf[12]);
            }
            if got.len() == 3 {
                break;
            }
            assert!(w.limits.tx_held.is_some(), "a frame is held back");
            assert!(
                w.limits.timeout_ms() >= 0,
                "and the worker will wake for it"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(got, b"abc", "every frame, in order");
        assert_eq!(w.counters.snapshot()["tx_packets"], 3);
        assert_eq!(w.counters.snapshot()["tx_dropped"], 0);
    }

    #[test]
    fn a_flood_of_malformed_frames_logs_a_bounded_number_of_lines() {
        use crate::devices::virtio::test_utils::{Ring, desc, mem};
        use crate::devices::virtio::warnings_logged;
        use vm_memory::GuestAddress;

        const SIZE: u16 = 256;
        let m = mem();
        let (ours, _peer) = std::os::unix::net::UnixDatagram::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let tx = Ring::new(GuestAddress(0x8000), SIZE);
        // Frames shorter than the virtio-net header: malformed.
        for i in 0..SIZE {
            tx.set_desc(&m, i, desc(0x40000, 4, 0));
        }
        let rx = Ring::new(GuestAddress(0x20000), SIZE);
        let mut w = worker(&m, ours, rx.queue(), tx.queue(), Limits::default());
        let rounds = 40u64;
        let logged = warnings_logged(|| {
            for _ in 0..rounds {
                for head in 0..SIZE {
                    tx.offer(&m, head);
                }
                w.process_tx();
            }
        });
        let flood = rounds * u64::from(SIZE);
        assert_eq!(w.counters.snapshot()["malformed"], flood);
        assert!(
            (1..=10).contains(&logged),
            "{logged} lines for {flood} malformed frames"
        );
    }
}
