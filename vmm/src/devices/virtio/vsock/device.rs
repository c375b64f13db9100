//! The virtio-vsock device: three queues (RX, TX, event), the guest CID in the configuration
//! space, and the worker thread that moves packets between the queues and the muxer.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use virtio_queue::{Queue, QueueOwnedT};
use vm_memory::{Bytes, GuestMemoryMmap};
use vmm_sys_util::epoll::{ControlOperation, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::muxer::{self, Muxer};
use super::packet::{self, MAX_PAYLOAD};
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

/// Counters (indices shared with the muxer for the first two and the last).
pub const COUNTERS: &[&str] = &[
    "connections",
    "resets",
    "tx_packets",
    "rx_packets",
    "tx_bytes",
    "rx_bytes",
    "malformed",
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
        let listener = UnixListener::bind(uds_path).map_err(err)?;
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
        let worker = Worker {
            muxer,
            memory: a.memory,
            rx,
            tx,
            ev,
            announce_reset: std::mem::take(&mut self.announce_reset),
            events: [rx_evt, tx_evt, ev_evt],
            interrupt: a.interrupt,
            counters: self.counters.clone(),
        };
        self.worker = Some(WorkerThread::spawn("vsock", Profile::Vsock, move |kill| {
            worker.run(kill)
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

struct Worker {
    muxer: Muxer,
    memory: GuestMemoryMmap,
    rx: Queue,
    tx: Queue,
    ev: Queue,
    announce_reset: bool,
    events: [EventFd; 3],
    interrupt: Arc<Interrupt>,
    counters: Arc<Counters>,
}

impl Worker {
    fn run(mut self, kill: EventFd) -> Muxer {
        let epoll_ok = self
            .events
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
                        let _ = self.events[RX].read();
                    }
                    t if t == EVENT as u64 => {
                        let _ = self.events[EVENT].read();
                        if self.announce_reset {
                            self.announce_reset = !self.send_transport_reset();
                        }
                    }
                    t if t == TX as u64 => {
                        let _ = self.events[TX].read();
                        self.process_tx();
                    }
                    t => self.muxer.handle_event(t, e.event_set()),
                }
            }
            self.muxer.expire();
            self.process_rx(&mut buf);
        }
    }

    /// Puts a transport-reset event in the guest's event queue (after a restore: the guest's
    /// connections belonged to another VMM and its CID may have changed). False when the
    /// guest has no event buffer posted yet; the next event-queue kick retries.
    fn send_transport_reset(&mut self) -> bool {
        let Some(chain) = queue::pop(&mut self.ev, &self.memory) else {
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
            tracing::warn!("the guest's vsock event buffer is unusable; no transport reset sent");
            self.counters.add(muxer::MALFORMED, 1);
        } else {
            tracing::debug!("vsock transport reset sent to the guest");
        }
        queue::complete(&mut self.ev, &self.memory, head, written);
        queue::notify(&mut self.ev, &self.memory, &self.interrupt);
        true
    }

    fn process_tx(&mut self) {
        let mut used = false;
        while let Some(chain) = queue::pop(&mut self.tx, &self.memory) {
            let head = chain.head_index();
            match packet::read_tx(chain, &self.memory) {
                Ok(p) => {
                    self.counters.add(TX_PACKETS, 1);
                    self.counters.add(TX_BYTES, p.payload.len() as u64);
                    self.muxer.on_guest_packet(p);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "dropping a malformed vsock packet from the guest");
                    self.counters.add(muxer::MALFORMED, 1);
                }
            }
            queue::complete(&mut self.tx, &self.memory, head, 0);
            used = true;
        }
        if used {
            queue::notify(&mut self.tx, &self.memory, &self.interrupt);
        }
    }

    fn process_rx(&mut self, buf: &mut [u8]) {
        let mut used = false;
        while self.muxer.has_rx_work() {
            let Some(chain) = queue::pop(&mut self.rx, &self.memory) else {
                break;
            };
            let head = chain.head_index();
            let room = match packet::rx_room(&chain, &self.memory) {
                Ok(room) => room,
                Err(e) => {
                    tracing::warn!(error = %e, "the guest gave an unusable vsock RX buffer");
                    self.counters.add(muxer::MALFORMED, 1);
                    queue::complete(&mut self.rx, &self.memory, head, 0);
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
                    tracing::warn!(error = %e, "writing a vsock packet to the guest");
                    0
                });
            self.counters.add(RX_PACKETS, 1);
            self.counters.add(RX_BYTES, len as u64);
            queue::complete(&mut self.rx, &self.memory, head, written);
            used = true;
        }
        if used {
            queue::notify(&mut self.rx, &self.memory, &self.interrupt);
        }
    }
}
