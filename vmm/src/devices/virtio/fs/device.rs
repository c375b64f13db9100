//! The virtio-fs device: configuration space (tag, one request queue), and the worker that
//! copies each request out of guest memory, hands the copy to the guard and then to the
//! fuse-backend-rs server.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::passthrough::{CachePolicy, Config, PassthroughFs};
use fuse_backend_rs::transport::{VirtioFsWriter, Writer};
use virtio_queue::{DescriptorChain, Queue};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::guard::{self, Decision, IN_HEADER_SIZE};
use super::request::RequestCopy;
use crate::devices::log_limit::LogLimit;
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
        match Service::new(self.server.clone(), self.read_only, self.counters.clone()) {
            Ok(mut service) => service.serve(chain, mem),
            Err(e) => {
                tracing::error!(error = %e, "virtio-fs: no buffer for a request");
                0
            }
        }
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
        let service = Service::new(self.server.clone(), self.read_only, self.counters.clone())
            .map_err(|e| ActivateError::Worker(std::io::Error::other(e)))?;
        let worker = Worker {
            queues: a.queues,
            events: a.queue_events,
            memory: a.memory,
            interrupt: a.interrupt,
            service,
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
    service: Service,
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
        while let Some(chain) = queue::pop_limited(q, &self.memory, &mut self.service.warnings) {
            let head = chain.head_index();
            let len = self.service.serve(chain, &self.memory);
            queue::complete_limited(q, &self.memory, head, len, &mut self.service.warnings);
            used = true;
        }
        if used {
            queue::notify_limited(q, &self.memory, &self.interrupt, &mut self.service.warnings);
        }
    }
}

/// What serving requests takes: the server, the share's mode, the counters, the host copy of
/// the request at hand, and the budget of warnings the guest's requests may cause.
struct Service {
    server: Arc<FsServer>,
    read_only: bool,
    counters: Arc<Counters>,
    copy: RequestCopy,
    warnings: LogLimit,
}

impl Service {
    fn new(
        server: Arc<FsServer>,
        read_only: bool,
        counters: Arc<Counters>,
    ) -> Result<Self, super::request::RequestError> {
        Ok(Self {
            server,
            read_only,
            counters,
            copy: RequestCopy::new()?,
            warnings: LogLimit::new(),
        })
    }

    /// Serves one request chain; returns the used length (0 for a chain with no answer).
    fn serve(&mut self, chain: DescriptorChain<&GuestMemoryMmap>, mem: &GuestMemoryMmap) -> u32 {
        self.serve_checked(chain, mem, || {})
    }

    /// [`Self::serve`], running `checked` once the guard let the request through and before
    /// the server reads it: when a second vCPU would rewrite it (tests do so there).
    fn serve_checked(
        &mut self,
        chain: DescriptorChain<&GuestMemoryMmap>,
        mem: &GuestMemoryMmap,
        checked: impl FnOnce(),
    ) -> u32 {
        self.counters.add(REQUESTS, 1);
        let writer = match (self.copy.fill(mem, &chain), VirtioFsWriter::new(mem, chain)) {
            (Ok(_), Ok(w)) => w,
            _ => {
                self.counters.add(MALFORMED, 1);
                if let Some(suppressed) = self.warnings.allow() {
                    tracing::warn!(
                        suppressed,
                        "rejecting a virtio-fs request whose buffers lie outside guest memory"
                    );
                }
                return 0;
            }
        };
        let mut writer: Writer<'_, ()> = writer.into();
        let mut peek = [0u8; GUARD_PEEK];
        let peek = self.copy.peek(&mut peek);
        if let Decision::Refuse(errno) = guard::decide(peek, self.read_only) {
            self.counters.add(REFUSED, 1);
            let unique = peek.get(8..16).map_or(0, |b| {
                u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
            });
            return match writer.write_all(&guard::error_reply(unique, errno)) {
                Ok(()) => 16,
                Err(_) => 0,
            };
        }
        checked();
        let reader = match self.copy.reader() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "virtio-fs: reading a request copy");
                return 0;
            }
        };
        match self.server.handle_message(reader, writer, None, None) {
            Ok(len) => len as u32,
            Err(e) => {
                self.counters.add(MALFORMED, 1);
                if let Some(suppressed) = self.warnings.allow() {
                    tracing::warn!(error = ?e, suppressed, "virtio-fs request failed");
                }
                0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::test_utils::{chain, desc, mem};
    use std::os::unix::fs::MetadataExt;
    use virtio_bindings::bindings::virtio_ring::VRING_DESC_F_WRITE;
    use vm_memory::{Bytes, GuestAddress};

    const REQUEST: u64 = 0x1_0000;
    const REPLY: u64 = 0x2_0000;
    const FUSE_INIT: u32 = 26;
    const ROOT: u64 = 1;

    fn request(opcode: u32, unique: u64, nodeid: u64, args: &[u8]) -> Vec<u8> {
        let mut r = vec![0u8; IN_HEADER_SIZE];
        r[..4].copy_from_slice(&((IN_HEADER_SIZE + args.len()) as u32).to_le_bytes());
        r[4..8].copy_from_slice(&opcode.to_le_bytes());
        r[8..16].copy_from_slice(&unique.to_le_bytes());
        r[16..24].copy_from_slice(&nodeid.to_le_bytes());
        r.extend_from_slice(args);
        r
    }

    /// Serves `req` from guest memory, running `checked` between guard and server; returns
    /// the reply's errno and payload.
    fn call(
        s: &mut Service,
        m: &GuestMemoryMmap,
        req: &[u8],
        checked: impl FnOnce(),
    ) -> (i32, Vec<u8>) {
        m.write_slice(req, GuestAddress(REQUEST)).unwrap();
        let c = chain(
            m,
            &[
                desc(REQUEST, req.len() as u32, 0),
                desc(REPLY, 4096, VRING_DESC_F_WRITE),
            ],
        );
        let n = s.serve_checked(c, m, checked) as usize;
        let mut reply = vec![0u8; n];
        m.read_slice(&mut reply, GuestAddress(REPLY)).unwrap();
        let errno = i32::from_le_bytes(reply[4..8].try_into().unwrap());
        (errno, reply[16..].to_vec())
    }

    #[test]
    fn a_request_rewritten_after_the_guard_passed_it_is_served_as_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ab"), b"").unwrap();
        let fs = Fs::new("t", dir.path(), false, Counters::new(COUNTERS)).unwrap();
        let mut service = Service::new(fs.server.clone(), false, fs.counters.clone()).unwrap();
        let m = mem();
        let init = words(&[7, 31, 0, 0]);
        let (errno, _) = call(&mut service, &m, &request(FUSE_INIT, 1, 0, &init), || {});
        assert_eq!(errno, 0, "FUSE_INIT");
        // The guard passes a lookup of "ab"; a second vCPU then makes it one of "..".
        let lookup = request(guard::FUSE_LOOKUP, 2, ROOT, b"ab\0");
        let name_at = GuestAddress(REQUEST + IN_HEADER_SIZE as u64);
        let (errno, entry) = call(&mut service, &m, &lookup, || {
            m.write_slice(b"..\0", name_at).unwrap();
        });
        assert_eq!(errno, 0);
        // fuse_entry_out: nodeid, generation, two valid times and their nanoseconds (40
        // bytes), then fuse_attr, which starts with the inode number.
        let ino = u64::from_le_bytes(entry[40..48].try_into().unwrap());
        let ab = std::fs::metadata(dir.path().join("ab")).unwrap().ino();
        assert_eq!(ino, ab, "the server looked up the name the guard checked");
    }

    /// The little-endian bytes of `ws` (a FUSE request's fixed arguments).
    fn words(ws: &[u32]) -> Vec<u8> {
        ws.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// A FIFO the guest made (MKNOD passes the guard: pipes are fine) is never opened by the
    /// server: OPEN of it, and CREATE without O_EXCL of its name (which opens an existing
    /// file), answer an error at once instead of blocking the worker until a writer comes.
    #[test]
    fn a_fifo_the_guest_made_never_blocks_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let (done, wait) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let fs = Fs::new("t", &path, false, Counters::new(COUNTERS)).unwrap();
            let mut service = Service::new(fs.server.clone(), false, fs.counters.clone()).unwrap();
            let m = mem();
            let mut serve = |opcode: u32, unique: u64, node: u64, args: &[u8]| {
                call(
                    &mut service,
                    &m,
                    &request(opcode, unique, node, args),
                    || {},
                )
            };
            let (errno, _) = serve(FUSE_INIT, 1, 0, &words(&[7, 31, 0, 0]));
            assert_eq!(errno, 0, "FUSE_INIT");
            // fuse_mknod_in: mode, rdev, umask, padding; then the name.
            let mut mknod = words(&[libc::S_IFIFO | 0o666, 0, 0, 0]);
            mknod.extend_from_slice(b"p\0");
            let (errno, entry) = serve(guard::FUSE_MKNOD, 2, ROOT, &mknod);
            assert_eq!(errno, 0, "MKNOD of a FIFO");
            let node = u64::from_le_bytes(entry[..8].try_into().unwrap());
            // fuse_open_in: flags, open_flags.
            let (open_errno, _) = serve(guard::FUSE_OPEN, 3, node, &words(&[0, 0]));
            // fuse_create_in: flags, mode, umask, open_flags; then the name.
            let mut create = words(&[(libc::O_WRONLY | libc::O_CREAT) as u32, 0o644, 0, 0]);
            create.extend_from_slice(b"p\0");
            let (create_errno, _) = serve(guard::FUSE_CREATE, 4, ROOT, &create);
            let _ = done.send((open_errno, create_errno));
        });
        let (open_errno, create_errno) = wait
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the server answered within 10 s (it blocked opening the FIFO)");
        assert!(open_errno < 0, "OPEN of a FIFO: {open_errno}");
        assert!(create_errno < 0, "CREATE over a FIFO: {create_errno}");
    }
}
