//! The virtio-fs device: configuration space (tag, one request queue), and the worker that
//! hands each request to the guard and then to the fuse-backend-rs server.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::passthrough::{CachePolicy, Config, PassthroughFs};
use fuse_backend_rs::transport::{Reader, VirtioFsWriter, Writer};
use virtio_queue::{DescriptorChain, Queue};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::guard::{self, Decision, IN_HEADER_SIZE};
use crate::devices::virtio::worker::Worker as WorkerThread;
use crate::devices::virtio::{
    ActivateError, Activation, Interrupt, TYPE_FS, VIRTIO_F_VERSION_1, VirtioDevice, queue,
    read_config_bytes,
};
use crate::metrics::Counters;
use crate::seccomp::Profile;

/// The high-priority queue and one request queue.
const QUEUE_SIZES: &[u16] = &[128, 1024];
const TAG_LEN: usize = 36;
const TOKEN_KILL: u64 = 100;
/// Bytes of a request the guard looks at: the header and a name.
const GUARD_PEEK: usize = IN_HEADER_SIZE + 256;

/// Counters: requests served, refused by the guard, and malformed.
pub const COUNTERS: &[&str] = &["requests", "refused", "malformed"];
const REQUESTS: usize = 0;
const REFUSED: usize = 1;
const MALFORMED: usize = 2;

type FsServer = Server<Arc<PassthroughFs<()>>>;

/// Errors creating the device.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("the virtio-fs tag {0:?} is longer than {TAG_LEN} bytes")]
    Tag(String),
    #[error("sharing {path} over virtio-fs")]
    Passthrough {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub struct Fs {
    name: String,
    config: [u8; TAG_LEN + 4],
    read_only: bool,
    server: Arc<FsServer>,
    worker: Option<WorkerThread<()>>,
    counters: Arc<Counters>,
}

impl Fs {
    pub fn new(
        tag: &str,
        shared_dir: &Path,
        read_only: bool,
        counters: Arc<Counters>,
    ) -> Result<Self, FsError> {
        if tag.len() > TAG_LEN {
            return Err(FsError::Tag(tag.to_owned()));
        }
        let err = |source| FsError::Passthrough {
            path: shared_dir.to_owned(),
            source,
        };
        let cfg = Config {
            root_dir: shared_dir.to_string_lossy().into_owned(),
            do_import: true,
            xattr: false,
            cache_policy: CachePolicy::Auto,
            ..Default::default()
        };
        let fs = PassthroughFs::<()>::new(cfg).map_err(err)?;
        fs.import().map_err(err)?;
        let mut config = [0u8; TAG_LEN + 4];
        config[..tag.len()].copy_from_slice(tag.as_bytes());
        config[TAG_LEN..].copy_from_slice(&1u32.to_le_bytes());
        Ok(Self {
            name: format!("fs:{tag}"),
            config,
            read_only,
            server: Arc::new(Server::new(Arc::new(fs))),
            worker: None,
            counters,
        })
    }
}

impl Fs {
    /// Serves one request chain now, on this thread (what the worker does for each chain it
    /// pops); returns the used length. For tests that play a hostile guest.
    pub fn handle(&self, mem: &GuestMemoryMmap, chain: DescriptorChain<&GuestMemoryMmap>) -> u32 {
        serve(&self.server, chain, mem, self.read_only, &self.counters)
    }
}

impl VirtioDevice for Fs {
    fn device_type(&self) -> u32 {
        TYPE_FS
    }

    fn name(&self) -> &str {
        &self.name
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
        if got != QUEUE_SIZES.len() || a.queue_events.len() != got {
            return Err(ActivateError::QueueCount {
                got,
                want: QUEUE_SIZES.len(),
            });
        }
        let worker = Worker {
            queues: a.queues,
            events: a.queue_events,
            memory: a.memory,
            interrupt: a.interrupt,
            server: self.server.clone(),
            read_only: self.read_only,
            counters: self.counters.clone(),
        };
        self.worker = Some(WorkerThread::spawn(&self.name, Profile::Fs, move |kill| {
            worker.run(kill)
        })?);
        Ok(())
    }

    fn reset(&mut self) -> bool {
        self.worker
            .take()
            .is_none_or(|w| WorkerThread::stop(w).is_some())
    }
}

struct Worker {
    queues: Vec<Queue>,
    events: Vec<EventFd>,
    memory: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    server: Arc<FsServer>,
    read_only: bool,
    counters: Arc<Counters>,
}

impl Worker {
    fn run(mut self, kill: EventFd) {
        let epoll = match self.epoll(&kill) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "virtio-fs: cannot wait for queues; the device stops");
                return;
            }
        };
        let mut events = vec![EpollEvent::default(); 4];
        loop {
            let n = match epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!(error = %e, "virtio-fs: epoll failed; the device stops");
                    return;
                }
            };
            for e in &events[..n] {
                let token = e.data();
                if token == TOKEN_KILL {
                    return;
                }
                let index = token as usize;
                if let Some(evt) = self.events.get(index) {
                    let _ = evt.read();
                    self.process_queue(index);
                }
            }
        }
    }

    fn epoll(&self, kill: &EventFd) -> std::io::Result<Epoll> {
        let epoll = Epoll::new()?;
        for (i, evt) in self.events.iter().enumerate() {
            epoll.ctl(
                ControlOperation::Add,
                evt.as_raw_fd(),
                EpollEvent::new(EventSet::IN, i as u64),
            )?;
        }
        epoll.ctl(
            ControlOperation::Add,
            kill.as_raw_fd(),
            EpollEvent::new(EventSet::IN, TOKEN_KILL),
        )?;
        Ok(epoll)
    }

    fn process_queue(&mut self, index: usize) {
        let Some(q) = self.queues.get_mut(index) else {
            return;
        };
        let mut used = false;
        while let Some(chain) = queue::pop(q, &self.memory) {
            let head = chain.head_index();
            let len = serve(
                &self.server,
                chain,
                &self.memory,
                self.read_only,
                &self.counters,
            );
            queue::complete(q, &self.memory, head, len);
            used = true;
        }
        if used {
            queue::notify(q, &self.memory, &self.interrupt);
        }
    }
}

/// Serves one request chain; returns the used length (0 for a chain with no answer).
fn serve(
    server: &FsServer,
    chain: DescriptorChain<&GuestMemoryMmap>,
    mem: &GuestMemoryMmap,
    read_only: bool,
    counters: &Counters,
) -> u32 {
    counters.add(REQUESTS, 1);
    let (reader, writer) = match (
        Reader::from_descriptor_chain(mem, chain.clone()),
        VirtioFsWriter::new(mem, chain),
    ) {
        (Ok(r), Ok(w)) => (r, w),
        _ => {
            counters.add(MALFORMED, 1);
            tracing::warn!("rejecting a virtio-fs request whose buffers lie outside guest memory");
            return 0;
        }
    };
    let mut peek = vec![0u8; GUARD_PEEK.min(reader.available_bytes())];
    if reader.clone().read_exact(&mut peek).is_err() {
        counters.add(MALFORMED, 1);
        return 0;
    }
    let mut writer: Writer<'_, ()> = writer.into();
    if let Decision::Refuse(errno) = guard::decide(&peek, read_only) {
        counters.add(REFUSED, 1);
        let unique = peek.get(8..16).map_or(0, |b| {
            u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
        });
        return match writer.write_all(&guard::error_reply(unique, errno)) {
            Ok(()) => 16,
            Err(_) => 0,
        };
    }
    match server.handle_message(reader, writer, None, None) {
        Ok(len) => len as u32,
        Err(e) => {
            counters.add(MALFORMED, 1);
            tracing::warn!(error = ?e, "virtio-fs request failed");
            0
        }
    }
}
