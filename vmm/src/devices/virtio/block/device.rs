//! The virtio-blk device: configuration space (capacity), features, and the worker thread
//! that serves the request queue.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::request::{self, Disk};
use super::{SECTOR_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO};
use crate::devices::log_limit::LogLimit;
use crate::devices::virtio::worker::{self, Worker as WorkerThread};
use crate::devices::virtio::{
    ActivateError, Activation, Interrupt, TYPE_BLOCK, VIRTIO_F_VERSION_1, VirtioDevice, queue,
    read_config_bytes,
};
use crate::metrics::Counters;
use crate::seccomp::Profile;

const QUEUE_SIZES: &[u16] = &[256];

/// Counters: requests served, and malformed ones (no status could be written).
pub const COUNTERS: &[&str] = &["requests", "malformed"];
const REQUESTS: usize = 0;
const MALFORMED: usize = 1;

/// Errors opening the backing file.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("opening block device image {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("block device image {path} is {size} bytes, not a whole number of 512-byte sectors")]
    Size { path: PathBuf, size: u64 },
}

/// A raw image served as a virtio disk.
pub struct Block {
    name: String,
    file: Option<File>,
    capacity: u64,
    read_only: bool,
    config: [u8; 8],
    counters: Arc<Counters>,
    /// For the warnings the guest causes; it goes to each activation's worker and comes back,
    /// so resetting the device does not renew the budget.
    warnings: LogLimit,
    worker: Option<WorkerThread<(File, LogLimit)>>,
}

impl Block {
    pub fn open(
        id: &str,
        path: &Path,
        read_only: bool,
        counters: Arc<Counters>,
    ) -> Result<Self, BlockError> {
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|source| BlockError::Open {
                path: path.to_owned(),
                source,
            })?;
        let capacity = file
            .metadata()
            .map_err(|source| BlockError::Open {
                path: path.to_owned(),
                source,
            })?
            .len();
        if capacity % SECTOR_SIZE != 0 {
            return Err(BlockError::Size {
                path: path.to_owned(),
                size: capacity,
            });
        }
        Ok(Self {
            name: format!("block:{id}"),
            file: Some(file),
            capacity,
            read_only,
            config: (capacity / SECTOR_SIZE).to_le_bytes(),
            counters,
            warnings: LogLimit::new(),
            worker: None,
        })
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn queue_max_sizes(&self) -> &[u16] {
        QUEUE_SIZES
    }

    fn features(&self) -> u64 {
        let ro = if self.read_only { VIRTIO_BLK_F_RO } else { 0 };
        VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_FLUSH | ro
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
        let (Some(queue), Some(event)) = (
            a.queues.into_iter().next(),
            a.queue_events.into_iter().next(),
        ) else {
            return Err(ActivateError::QueueCount { got: 0, want: 1 });
        };
        let file = self
            .file
            .take()
            .ok_or(ActivateError::QueueCount { got: 1, want: 1 })?;
        let worker = Worker {
            id: self.name.as_bytes().to_vec(),
            file,
            capacity: self.capacity,
            read_only: self.read_only,
            memory: a.memory,
            queue,
            event,
            interrupt: a.interrupt,
            counters: self.counters.clone(),
            warnings: std::mem::take(&mut self.warnings),
        };
        self.worker = Some(WorkerThread::spawn(
            &self.name,
            Profile::Block,
            move |kill| worker.run(kill),
        )?);
        Ok(())
    }

    fn reset(&mut self) -> bool {
        let mut back = None;
        let stopped = worker::stop_into(&mut self.worker, &mut back);
        if let Some((file, warnings)) = back {
            self.file = Some(file);
            self.warnings = warnings;
        }
        stopped
    }
}

struct Worker {
    id: Vec<u8>,
    file: File,
    capacity: u64,
    read_only: bool,
    memory: GuestMemoryMmap,
    queue: Queue,
    event: EventFd,
    interrupt: Arc<Interrupt>,
    counters: Arc<Counters>,
    /// For the warnings the guest's requests and ring cause.
    warnings: LogLimit,
}

impl Worker {
    /// Serves the queue until killed; hands the file and the warning budget back for a later
    /// activation.
    fn run(mut self, kill: EventFd) -> (File, LogLimit) {
        self.serve(&kill);
        (self.file, self.warnings)
    }

    fn serve(&mut self, kill: &EventFd) {
        let name = String::from_utf8_lossy(&self.id).into_owned();
        let waiter = match Waiter::new(&self.event, kill) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(device = %name, error = %e, "cannot wait for the queue; the device stops");
                return;
            }
        };
        loop {
            match waiter.wait() {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(device = %name, error = %e, "waiting for the queue; the device stops");
                    return;
                }
            }
            let _ = self.event.read();
            self.process_queue();
        }
    }

    fn process_queue(&mut self) {
        let disk = Disk {
            file: &self.file,
            capacity: self.capacity,
            read_only: self.read_only,
            id: &self.id,
        };
        let mut used_any = false;
        while let Some(chain) =
            queue::pop_limited(&mut self.queue, &self.memory, &mut self.warnings)
        {
            let head = chain.head_index();
            let len = match request::serve(chain, &self.memory, &disk) {
                Ok(len) => len,
                Err(e) => {
                    if let Some(suppressed) = self.warnings.allow() {
                        tracing::warn!(
                            error = %e,
                            suppressed,
                            "rejecting a malformed virtio-blk request"
                        );
                    }
                    self.counters.add(MALFORMED, 1);
                    0
                }
            };
            self.counters.add(REQUESTS, 1);
            queue::complete_limited(&mut self.queue, &self.memory, head, len, &mut self.warnings);
            used_any = true;
        }
        if used_any {
            queue::notify_limited(
                &mut self.queue,
                &self.memory,
                &self.interrupt,
                &mut self.warnings,
            );
        }
    }
}

/// Waits for the queue's eventfd or the kill eventfd.
struct Waiter(Epoll);

impl Waiter {
    fn new(queue: &EventFd, kill: &EventFd) -> std::io::Result<Self> {
        let epoll = Epoll::new()?;
        for (token, fd) in [(0, queue.as_raw_fd()), (1, kill.as_raw_fd())] {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )?;
        }
        Ok(Self(epoll))
    }

    /// True when killed.
    fn wait(&self) -> std::io::Result<bool> {
        let mut events = [EpollEvent::default(); 2];
        loop {
            match self.0.wait(-1, &mut events) {
                Ok(n) => return Ok(events[..n].iter().any(|e| e.data() == 1)),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::test_utils::{Ring, desc, mem};
    use crate::devices::virtio::warnings_logged;
    use vm_memory::{Address, Bytes, GuestAddress};

    const SIZE: u16 = 256;

    fn worker(m: &GuestMemoryMmap, ring: &Ring) -> Worker {
        Worker {
            id: b"d".to_vec(),
            file: tempfile::tempfile().unwrap(),
            capacity: 0,
            read_only: false,
            memory: m.clone(),
            queue: ring.queue(),
            event: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            interrupt: Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()),
            counters: Counters::new(COUNTERS),
            warnings: LogLimit::new(),
        }
    }

    #[test]
    fn a_flood_of_malformed_requests_logs_a_bounded_number_of_lines() {
        let m = mem();
        let ring = Ring::new(GuestAddress(0x8000), SIZE);
        // Every descriptor is a chain on its own with no writable status byte: malformed.
        for i in 0..SIZE {
            ring.set_desc(&m, i, desc(0x1000, 16, 0));
        }
        let mut w = worker(&m, &ring);
        let rounds = 40u16;
        let logged = warnings_logged(|| {
            for _ in 0..rounds {
                for head in 0..SIZE {
                    ring.offer(&m, head);
                }
                w.process_queue();
            }
        });
        let flood = u64::from(rounds) * u64::from(SIZE);
        assert_eq!(w.counters.snapshot()["malformed"], flood);
        assert_eq!(
            ring.used_idx(&m),
            (flood % 65536) as u16,
            "every chain was returned"
        );
        assert!(
            (1..=10).contains(&logged),
            "{logged} lines for {flood} malformed requests"
        );
    }

    #[test]
    fn kicks_on_a_broken_ring_log_a_bounded_number_of_lines() {
        let m = mem();
        let ring = Ring::new(GuestAddress(0x8000), SIZE);
        let mut w = worker(&m, &ring);
        // An available index more than a ring ahead of the device.
        m.write_obj(SIZE + 1, ring.avail.unchecked_add(2)).unwrap();
        let logged = warnings_logged(|| {
            for _ in 0..10_000 {
                w.process_queue();
            }
        });
        assert_eq!(ring.used_idx(&m), 0);
        assert!((1..=10).contains(&logged), "{logged} lines for 10000 kicks");
    }
}
