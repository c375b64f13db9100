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
    worker: Option<WorkerThread<File>>,
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
        };
        self.worker = Some(WorkerThread::spawn(
            &self.name,
            Profile::Block,
            move |kill| worker.run(kill),
        )?);
        Ok(())
    }

    fn reset(&mut self) -> bool {
        worker::stop_into(&mut self.worker, &mut self.file)
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
}

impl Worker {
    /// Serves the queue until killed; hands the file back for a later activation.
    fn run(mut self, kill: EventFd) -> File {
        let name = String::from_utf8_lossy(&self.id).into_owned();
        let waiter = match Waiter::new(&self.event, &kill) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(device = %name, error = %e, "cannot wait for the queue; the device stops");
                return self.file;
            }
        };
        loop {
            match waiter.wait() {
                Ok(true) => return self.file,
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(device = %name, error = %e, "waiting for the queue; the device stops");
                    return self.file;
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
        while let Some(chain) = queue::pop(&mut self.queue, &self.memory) {
            let head = chain.head_index();
            let len = match request::serve(chain, &self.memory, &disk) {
                Ok(len) => len,
                Err(e) => {
                    tracing::warn!(error = %e, "rejecting a malformed virtio-blk request");
                    self.counters.add(MALFORMED, 1);
                    0
                }
            };
            self.counters.add(REQUESTS, 1);
            queue::complete(&mut self.queue, &self.memory, head, len);
            used_any = true;
        }
        if used_any {
            queue::notify(&mut self.queue, &self.memory, &self.interrupt);
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
