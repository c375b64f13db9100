//! hako-vmm's seccomp filters in real processes (tier 1: no KVM, no root). This binary runs
//! itself as a child per case with `HAKO_SECCOMP_CASE` set; the child installs the VMM's
//! filters exactly as hako-vmm does before its guest runs, then tries the case:
//! - what the VMM does keeps working: threads (clone3 falls back to clone), Unix sockets;
//! - a forbidden call (an AF_INET socket, fork, execve) stops the process with
//!   `EXIT_SECCOMP_VIOLATION`, and stderr names the call; posix_spawn (which blocks signals
//!   around its clone) is stopped by SIGSYS itself;
//! - per-thread allow lists: a vCPU thread opening a file, making an ioctl that is not
//!   KVM's (named with its request) or signalling another process (its own it may), a virtio-fs worker making a Unix
//!   socket, a vsock worker opening a file or making an ioctl but FIONBIO (which it may) are
//!   stopped with the thread's kind named, while a virtio-fs worker started (through the
//!   spawner) at a vCPU thread's request does its file work: the worker gets its own list,
//!   not the narrower one of the vCPU that asked for it;
//! - a vCPU thread cannot make a descriptor's I/O signal (SIGKILL) go to another process
//!   (F_SETOWN, F_SETSIG, O_ASYNC; also F_NOTIFY, F_SETLEASE: EPERM) and a victim process
//!   outlives the attempt, while the fcntl calls the VMM makes still work; nor can a thread
//!   that may call prctl make the process dumpable again;
//! - the new mount API (fsopen, open_tree, move_mount, mount_setattr) is refused on every
//!   thread;
//! - the virtio-fs worker's list is what the real passthrough needs: file work served through
//!   the device (create, write, mkdir, rename, link, symlink, chmod, truncate, a FIFO, unlink)
//!   runs confined, while an xattr call stops it and a device node answers EPERM at the
//!   system call (whatever FUSE request asked for it);
//! - a vCPU may truncate a file to empty (the console log's cap) and nothing else, every
//!   thread its stderr to empty (hako-vmm's log's cap).

use std::process::Command;

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use hako_vmm::devices::virtio::fs::{COUNTERS, Fs};
use hako_vmm::metrics::Counters;
use hako_vmm::seccomp::{Profile, confine};
use hako_vmm::threads;
use hako_vmm_api::control::EXIT_SECCOMP_VIOLATION;

const CASE: &str = "HAKO_SECCOMP_CASE";
const VICTIM: &str = "HAKO_SECCOMP_VICTIM";

mod guest {
    //! A guest kernel's FUSE requests to the real virtio-fs device (`Fs::handle`, the
    //! worker's own path), as uid/gid 0.
    use hako_vmm::devices::virtio::fs::Fs;
    use virtio_queue::desc::{RawDescriptor, split::Descriptor as SplitDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::{Queue, QueueOwnedT};
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    pub const ROOT: u64 = 1;
    const REQUEST_AT: u64 = 0x1_0000;
    const REPLY_AT: u64 = 0x2_0000;
    const REPLY_LEN: u32 = 0x1_0000;

    pub struct Guest {
        fs: Fs,
        mem: GuestMemoryMmap,
        unique: u64,
    }

    /// The payload, or the errno.
    pub type Reply = Result<Vec<u8>, i32>;

    fn cstr(name: &str) -> Vec<u8> {
        let mut v = name.as_bytes().to_vec();
        v.push(0);
        v
    }

    fn words(ws: &[u32]) -> Vec<u8> {
        ws.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// The node ID of a fuse_entry_out.
    pub fn node(out: &[u8]) -> u64 {
        out.get(..8)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    impl Guest {
        pub fn new(fs: Fs) -> Self {
            let mem =
                GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).expect("guest memory");
            Self { fs, mem, unique: 0 }
        }

        pub fn call(&mut self, opcode: u32, nodeid: u64, args: &[u8]) -> Reply {
            self.unique += 1;
            let len = 40 + args.len();
            let mut req = Vec::with_capacity(len);
            req.extend_from_slice(&(len as u32).to_le_bytes());
            req.extend_from_slice(&opcode.to_le_bytes());
            req.extend_from_slice(&self.unique.to_le_bytes());
            req.extend_from_slice(&nodeid.to_le_bytes());
            req.extend_from_slice(&[0; 16]);
            req.extend_from_slice(args);
            self.mem
                .write_slice(&req, GuestAddress(REQUEST_AT))
                .expect("the request fits");
            self.mem
                .write_slice(&[0u8; 16], GuestAddress(REPLY_AT))
                .expect("the reply header fits");
            let descs = [
                RawDescriptor::from(SplitDescriptor::new(REQUEST_AT, len as u32, 1, 0)),
                RawDescriptor::from(SplitDescriptor::new(REPLY_AT, REPLY_LEN, 2, 0)),
            ];
            let vq = MockSplitQueue::new(&self.mem, 16);
            vq.build_desc_chain(&descs).expect("a chain");
            let mut q: Queue = vq.create_queue().expect("a mock queue");
            let chain = q
                .iter(&self.mem)
                .expect("the queue iterates")
                .next()
                .expect("one chain");
            let used = self.fs.handle(&self.mem, chain);
            let mut out = vec![0u8; used.clamp(16, REPLY_LEN) as usize];
            self.mem
                .read_slice(&mut out, GuestAddress(REPLY_AT))
                .expect("the reply lies in guest memory");
            let error = i32::from_le_bytes([out[4], out[5], out[6], out[7]]);
            if used < 16 {
                return Err(libc::EIO);
            }
            if error != 0 {
                return Err(-error);
            }
            Ok(out[16..].to_vec())
        }

        pub fn init(&mut self) -> Reply {
            self.call(26, 0, &words(&[7, 31, 0, 0]))
        }

        /// CREATE, opened write-only: (node, file handle).
        pub fn create(&mut self, parent: u64, name: &str) -> Result<(u64, u64), i32> {
            let flags = (libc::O_WRONLY | libc::O_CREAT) as u32;
            let mut args = words(&[flags, 0o644, 0, 0]);
            args.extend_from_slice(&cstr(name));
            let out = self.call(35, parent, &args)?;
            let fh = out
                .get(128..136)
                .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
            Ok((node(&out), fh))
        }

        pub fn write(&mut self, node: u64, fh: u64, data: &[u8]) -> Reply {
            let mut args = fh.to_le_bytes().to_vec();
            args.extend_from_slice(&0u64.to_le_bytes());
            args.extend_from_slice(&words(&[data.len() as u32, 0]));
            args.extend_from_slice(&0u64.to_le_bytes());
            args.extend_from_slice(&words(&[0, 0]));
            args.extend_from_slice(data);
            self.call(16, node, &args)
        }

        pub fn mkdir(&mut self, parent: u64, name: &str) -> Reply {
            let mut args = words(&[0o755, 0]);
            args.extend_from_slice(&cstr(name));
            self.call(9, parent, &args)
        }

        pub fn rename(&mut self, parent: u64, old: &str, new_parent: u64, new: &str) -> Reply {
            let mut args = new_parent.to_le_bytes().to_vec();
            args.extend_from_slice(&cstr(old));
            args.extend_from_slice(&cstr(new));
            self.call(12, parent, &args)
        }

        pub fn link(&mut self, old: u64, new_parent: u64, name: &str) -> Reply {
            let mut args = old.to_le_bytes().to_vec();
            args.extend_from_slice(&cstr(name));
            self.call(13, new_parent, &args)
        }

        pub fn symlink(&mut self, parent: u64, name: &str, target: &str) -> Reply {
            let mut args = cstr(name);
            args.extend_from_slice(&cstr(target));
            self.call(6, parent, &args)
        }

        /// SETATTR of the mode and size.
        pub fn chmod_truncate(&mut self, node: u64, mode: u32, size: u64) -> Reply {
            const FATTR_MODE: u32 = 1;
            const FATTR_SIZE: u32 = 8;
            let mut args = words(&[FATTR_MODE | FATTR_SIZE, 0]);
            args.extend_from_slice(&0u64.to_le_bytes()); // fh
            args.extend_from_slice(&size.to_le_bytes());
            args.extend_from_slice(&[0u8; 8 * 4 + 4 * 3]); // lock owner, times
            args.extend_from_slice(&words(&[mode, 0, 0, 0, 0]));
            self.call(4, node, &args)
        }

        pub fn mknod(&mut self, parent: u64, name: &str, mode: u32) -> Reply {
            let mut args = words(&[mode, 0, 0, 0]);
            args.extend_from_slice(&cstr(name));
            self.call(8, parent, &args)
        }

        pub fn getxattr(&mut self, node: u64, name: &str) -> Reply {
            let mut args = words(&[64, 0]);
            args.extend_from_slice(&cstr(name));
            self.call(22, node, &args)
        }

        pub fn unlink(&mut self, parent: u64, name: &str) -> Reply {
            self.call(10, parent, &cstr(name))
        }
    }
}

/// mknodat(AT_FDCWD, path, mode, 0): 0 or the errno.
fn mknod(path: &Path, mode: libc::mode_t) -> i32 {
    let c = CString::new(path.as_os_str().as_bytes()).expect("no NUL");
    // SAFETY: a NUL-terminated path that outlives the call; integer arguments.
    let rc = unsafe { libc::mknodat(libc::AT_FDCWD, c.as_ptr(), mode, 0) };
    if rc == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
    }
}

/// A raw system call with up to three integer arguments: its return, or -errno.
fn raw(nr: libc::c_long, a: libc::c_long, b: libc::c_long, c: libc::c_long) -> libc::c_long {
    // SAFETY: the calls made here take integers or NULL pointers the kernel checks.
    let rc = unsafe { libc::syscall(nr, a, b, c, 0, 0) };
    if rc < 0 {
        -libc::c_long::from(std::io::Error::last_os_error().raw_os_error().unwrap_or(1))
    } else {
        rc
    }
}

fn child(case: &str) -> ! {
    if let Err(e) = hako_vmm::seccomp::install() {
        eprintln!("install: {e}");
        std::process::exit(90);
    }
    match case {
        "allowed" => {
            let t = std::thread::spawn(|| 7).join();
            let dir = tempfile::tempdir().expect("temp dir");
            let unix = std::os::unix::net::UnixListener::bind(dir.path().join("s"));
            let pair = std::os::unix::net::UnixDatagram::pair();
            println!("thread {t:?} unix {} pair {}", unix.is_ok(), pair.is_ok());
        }
        "inet" => {
            let r = std::net::TcpListener::bind("127.0.0.1:0");
            println!("bound an AF_INET socket: {r:?}");
        }
        "fork" => {
            // SAFETY: fork in a process whose other threads hold no locks we use after it;
            // the child, if any, exits at once.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                std::process::exit(0);
            }
            println!("forked: {pid}");
        }
        "exec" => {
            let path = c"/bin/true";
            let argv = [path.as_ptr(), std::ptr::null()];
            // SAFETY: a NUL-terminated path and a NULL-terminated argv that outlive the call.
            let rc = unsafe { libc::execv(path.as_ptr(), argv.as_ptr()) };
            println!("execv returned {rc}");
        }
        "spawn" => {
            let r = Command::new("/bin/true").status();
            println!("started a program: {r:?}");
        }
        "vcpu-open" => {
            let r = std::thread::spawn(|| {
                confine(Profile::Vcpu);
                std::fs::File::open("/etc/hostname").is_ok()
            })
            .join();
            println!("a vCPU thread opened a file: {r:?}");
        }
        "fs-socket" => {
            let r = std::thread::spawn(|| {
                confine(Profile::Fs);
                std::os::unix::net::UnixDatagram::unbound().is_ok()
            })
            .join();
            println!("a virtio-fs worker made a socket: {r:?}");
        }
        "vsock-open" => {
            let r = std::thread::spawn(|| {
                confine(Profile::Vsock);
                std::fs::File::open("/etc/hostname").is_ok()
            })
            .join();
            println!("a vsock worker opened a file: {r:?}");
        }
        "vsock-ioctl" => {
            let r = std::thread::spawn(|| {
                confine(Profile::Vsock);
                let a = std::os::unix::net::UnixDatagram::unbound().expect("socket");
                // FIONBIO is the one ioctl the vsock worker may make.
                eprintln!("nonblocking: {}", a.set_nonblocking(true).is_ok());
                let mut n: libc::c_int = 0;
                // SAFETY: FIONREAD writes one c_int through the pointer.
                unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&a), libc::FIONREAD, &mut n) }
            })
            .join();
            println!("a vsock worker made a FIONREAD ioctl: {r:?}");
        }
        "vcpu-ioctl" => {
            let a = std::os::unix::net::UnixDatagram::unbound().expect("socket");
            let r = std::thread::spawn(move || {
                confine(Profile::Vcpu);
                let mut n: libc::c_int = 0;
                let fd = std::os::fd::AsRawFd::as_raw_fd(&a);
                // SAFETY: FIONREAD writes one c_int through the pointer.
                unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) }
            })
            .join();
            println!("a vCPU thread made a FIONREAD ioctl: {r:?}");
        }
        "vcpu-kill-other" => {
            // SAFETY: getppid has no arguments.
            let parent = unsafe { libc::getppid() };
            let r = std::thread::spawn(move || {
                confine(Profile::Vcpu);
                // Signal 0: nothing is sent even where it is allowed.
                // SAFETY: integer arguments.
                unsafe { libc::syscall(libc::SYS_tgkill, parent, parent, 0) }
            })
            .join();
            println!("a vCPU thread signalled another process: {r:?}");
        }
        "vcpu-sigio" => {
            // The attack: a descriptor's I/O signal (made SIGKILL) sent to a process of the
            // thread's choosing when data arrives; the kernel checks only the euid (0 here,
            // as in the root fallback). The victim's pid comes from the test.
            let victim: libc::c_int = std::env::var(VICTIM)
                .ok()
                .and_then(|v| v.parse().ok())
                .expect("HAKO_SECCOMP_VICTIM");
            let (a, b) = std::os::unix::net::UnixStream::pair().expect("socket pair");
            let dir = tempfile::tempdir().expect("temp dir");
            let d = std::fs::File::open(dir.path()).expect("the directory");
            let r = std::thread::spawn(move || {
                confine(Profile::Vcpu);
                let fd = a.as_raw_fd();
                let f = |cmd: libc::c_int, arg: libc::c_long| {
                    raw(libc::SYS_fcntl, fd.into(), cmd.into(), arg)
                };
                let flags = f(libc::F_GETFL, 0);
                // What the VMM itself uses still works.
                let kept = [
                    f(libc::F_SETFL, libc::c_long::from(libc::O_NONBLOCK) | flags),
                    f(libc::F_GETFD, 0),
                    f(libc::F_SETFD, libc::FD_CLOEXEC.into()),
                ];
                // Then the attack (after: F_SETFL above would clear O_ASYNC).
                let calls = [
                    f(libc::F_SETOWN, victim.into()),
                    f(10, libc::SIGKILL.into()), // F_SETSIG
                    f(
                        libc::F_SETFL,
                        libc::c_long::from(libc::O_ASYNC | libc::O_NONBLOCK) | flags,
                    ),
                    raw(
                        libc::SYS_fcntl,
                        d.as_raw_fd().into(),
                        libc::F_NOTIFY.into(),
                        4, // DN_CREATE,
                    ),
                    f(libc::F_SETLEASE, libc::F_RDLCK.into()),
                ];
                let dup = f(libc::F_DUPFD_CLOEXEC, 0);
                (calls, kept, dup > 0)
            })
            .join();
            // Data arrives on the descriptor whose signal was set up (the main thread writes:
            // a vCPU thread may not send).
            use std::io::Write;
            (&b).write_all(b"wake").expect("write");
            std::thread::sleep(std::time::Duration::from_millis(200));
            println!("sigio: {r:?}");
        }
        "control-dumpable" => {
            // The control thread may call prctl (it starts threads); undoing non-dumpable
            // (which would expose the VMM's memory) is refused all the same.
            let r = std::thread::spawn(|| {
                confine(Profile::Control);
                let name = raw(libc::SYS_prctl, libc::PR_GET_DUMPABLE.into(), 0, 0);
                let set = raw(libc::SYS_prctl, libc::PR_SET_DUMPABLE.into(), 1, 0);
                (name >= 0, set)
            })
            .join();
            println!("dumpable: {r:?}");
        }
        "vcpu-kill-own" => {
            // SAFETY: getpid and gettid have no arguments.
            let (pid, tid) = unsafe { (libc::getpid(), libc::gettid()) };
            let r = std::thread::spawn(move || {
                confine(Profile::Vcpu);
                // SAFETY: integer arguments; signal 0 sends nothing.
                unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, 0) }
            })
            .join();
            println!("own tgkill: {r:?}");
        }
        "worker-from-vcpu" => {
            threads::start_spawner().expect("spawner");
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("f");
            let r = std::thread::spawn(move || {
                confine(Profile::Vcpu);
                let worker = threads::spawn("fs-worker", Profile::Fs, move || {
                    std::fs::write(&path, b"hello")?;
                    let back = std::fs::read(&path)?;
                    Ok::<_, std::io::Error>(back)
                })
                .expect("spawning a worker from a vCPU");
                worker.join().expect("worker").expect("file work")
            })
            .join()
            .expect("vcpu thread");
            println!("worker file work: {}", String::from_utf8_lossy(&r));
        }
        "fsopen" => {
            let fstype = c"tmpfs";
            let r = raw(libc::SYS_fsopen, fstype.as_ptr() as libc::c_long, 0, 0);
            println!("fsopen: {r}");
        }
        "open_tree" => {
            let path = c"/";
            let r = raw(
                libc::SYS_open_tree,
                libc::c_long::from(libc::AT_FDCWD),
                path.as_ptr() as libc::c_long,
                libc::c_long::from(libc::OPEN_TREE_CLONE),
            );
            println!("open_tree: {r}");
        }
        "move_mount" => {
            let r = raw(libc::SYS_move_mount, -1, 0, -1);
            println!("move_mount: {r}");
        }
        "mount_setattr" => {
            let r = raw(libc::SYS_mount_setattr, -1, 0, 0);
            println!("mount_setattr: {r}");
        }
        "fs-mknod" => {
            let dir = tempfile::tempdir().expect("temp dir");
            let d = dir.path().to_owned();
            let r = std::thread::spawn(move || {
                confine(Profile::Fs);
                (
                    mknod(&d.join("fifo"), libc::S_IFIFO | 0o600),
                    mknod(&d.join("socket"), libc::S_IFSOCK | 0o600),
                    mknod(&d.join("file"), libc::S_IFREG | 0o600),
                    // A whiteout (char 0:0), which the kernel lets anyone make.
                    mknod(&d.join("whiteout"), libc::S_IFCHR),
                    mknod(&d.join("block"), libc::S_IFBLK | 0o600),
                )
            })
            .join()
            .expect("the worker");
            let made = ["fifo", "socket", "file", "whiteout", "block"]
                .map(|n| dir.path().join(n).symlink_metadata().is_ok());
            println!("mknod: {r:?} made {made:?}");
        }
        "fs-xattr" => {
            let r = std::thread::spawn(move || {
                confine(Profile::Fs);
                let (path, name) = (c".", c"user.x");
                raw(
                    libc::SYS_getxattr,
                    path.as_ptr() as libc::c_long,
                    name.as_ptr() as libc::c_long,
                    0,
                )
            })
            .join();
            println!("a virtio-fs worker called getxattr: {r:?}");
        }
        "fs-passthrough" => {
            let dir = tempfile::tempdir().expect("temp dir");
            // Made on this thread, as hako-vmm makes it on its main thread.
            let fs = Fs::new("share", dir.path(), false, Counters::new(COUNTERS)).expect("fs");
            let r = std::thread::spawn(move || {
                confine(Profile::Fs);
                let mut g = guest::Guest::new(fs);
                let mut out = Vec::new();
                out.push(format!("init {:?}", g.init().map(|_| ())));
                // Its xattr support is off: ENOSYS, without a call.
                out.push(format!(
                    "getxattr {:?}",
                    g.getxattr(guest::ROOT, "user.x").map(|_| ())
                ));
                let (file, fh) = g.create(guest::ROOT, "f").expect("create");
                out.push(format!("create {}", file != 0));
                out.push(format!(
                    "write {:?}",
                    g.write(file, fh, b"hello").map(|_| ())
                ));
                let sub = g.mkdir(guest::ROOT, "d").map(|o| guest::node(&o));
                out.push(format!("mkdir {:?}", sub.as_ref().map(|_| ())));
                let sub = sub.unwrap_or(0);
                out.push(format!(
                    "rename {:?}",
                    g.rename(guest::ROOT, "f", sub, "g").map(|_| ())
                ));
                out.push(format!(
                    "link {:?}",
                    g.link(file, guest::ROOT, "h").map(|_| ())
                ));
                out.push(format!(
                    "symlink {:?}",
                    g.symlink(guest::ROOT, "s", "d/g").map(|_| ())
                ));
                out.push(format!(
                    "setattr {:?}",
                    g.chmod_truncate(file, 0o600, 2).map(|_| ())
                ));
                out.push(format!(
                    "mkfifo {:?}",
                    g.mknod(guest::ROOT, "p", libc::S_IFIFO | 0o600).map(|_| ())
                ));
                out.push(format!(
                    "unlink {:?}",
                    g.unlink(guest::ROOT, "h").map(|_| ())
                ));
                out
            })
            .join()
            .expect("the worker");
            println!("{}", r.join("\n"));
            let d = dir.path();
            let meta = |n: &str| d.join(n).symlink_metadata();
            println!(
                "host: g={:?} mode={:o} s={:?} p_fifo={} h_gone={}",
                std::fs::read(d.join("d/g")).map(|b| String::from_utf8_lossy(&b).into_owned()),
                meta("d/g").map_or(0, |m| std::os::unix::fs::PermissionsExt::mode(
                    &m.permissions()
                ) & 0o777),
                std::fs::read_link(d.join("s")),
                meta("p").is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type())),
                meta("h").is_err(),
            );
        }
        "vcpu-truncate" => {
            let dir = tempfile::tempdir().expect("temp dir");
            let file = std::fs::File::create(dir.path().join("console.log")).expect("file");
            std::io::Write::write_all(&mut &file, b"console").expect("write");
            let fd = libc::c_long::from(file.as_raw_fd());
            let r = std::thread::spawn(move || {
                confine(Profile::Vcpu);
                let empty = raw(libc::SYS_ftruncate, fd, 0, 0);
                eprintln!("to empty: {empty}");
                raw(libc::SYS_ftruncate, fd, 100, 0)
            })
            .join();
            println!("a vCPU thread truncated a file to 100 bytes: {r:?}");
        }
        "vsock-truncate" => {
            let dir = tempfile::tempdir().expect("temp dir");
            let file = std::fs::File::create(dir.path().join("f")).expect("file");
            let fd = libc::c_long::from(file.as_raw_fd());
            let r = std::thread::spawn(move || {
                confine(Profile::Vsock);
                // Its stderr (here the parent's pipe, which takes no truncation: EINVAL) it
                // may truncate; another file not.
                let stderr = raw(libc::SYS_ftruncate, 2, 0, 0);
                eprintln!("stderr: {stderr}");
                raw(libc::SYS_ftruncate, fd, 0, 0)
            })
            .join();
            println!("a vsock worker truncated a file: {r:?}");
        }
        other => println!("unknown case {other}"),
    }
    std::process::exit(0)
}

/// Where the children make their temporary files (their `TMPDIR`): a directory this process
/// removes at its end, since a child the filter kills never removes its own.
static SCRATCH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

fn child_command(case: &str) -> Command {
    let me = std::env::current_exe().expect("current exe");
    let mut c = Command::new(me);
    c.env(CASE, case);
    if let Some(dir) = SCRATCH.get() {
        c.env("TMPDIR", dir);
    }
    c
}

fn run(case: &str) -> std::process::Output {
    child_command(case).output().expect("running the child")
}

/// Runs `case`, which must exit 0 with `expected` in its output; a failure is added to
/// `failed`.
fn expect_ok(case: &str, expected: &str, failed: &mut Vec<String>) {
    let o = run(case);
    let out = String::from_utf8_lossy(&o.stdout);
    println!("{case}: {:?} {out:?}", o.status);
    if o.status.code() != Some(0) || !out.contains(expected) {
        failed.push(format!(
            "{case}: {:?} {out:?} (expected {expected:?}); {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ));
    }
}

fn main() {
    if let Ok(case) = std::env::var(CASE) {
        child(&case);
    }
    let scratch = tempfile::tempdir().expect("a scratch directory");
    SCRATCH.get_or_init(|| scratch.path().to_owned());
    let mut failed = Vec::new();
    expect_ok("allowed", "thread Ok(7) unix true pair true", &mut failed);
    expect_ok("vcpu-kill-own", "own tgkill: Ok(0)", &mut failed);
    // A victim process: it must outlive a confined thread's I/O signal set up against it.
    let mut victim = Command::new("sleep").arg("30").spawn().expect("sleep");
    let o = child_command("vcpu-sigio")
        .env(VICTIM, victim.id().to_string())
        .output()
        .expect("running the child");
    let out = String::from_utf8_lossy(&o.stdout);
    let victim_status = victim.try_wait().expect("the victim's status");
    let _ = victim.kill();
    let _ = victim.wait();
    println!(
        "vcpu-sigio: {:?} {out:?}, victim {victim_status:?}",
        o.status
    );
    let eperm = -libc::c_long::from(libc::EPERM);
    let expected =
        format!("sigio: Ok(([{eperm}, {eperm}, {eperm}, {eperm}, {eperm}], [0, 1, 0], true))");
    if victim_status.is_some() || o.status.code() != Some(0) || !out.contains(&expected) {
        failed.push(format!(
            "vcpu-sigio: victim {victim_status:?}, child {:?} {out:?} (expected {expected:?}); {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    let dumpable = format!("dumpable: Ok((true, {eperm}))");
    expect_ok("control-dumpable", &dumpable, &mut failed);
    expect_ok("worker-from-vcpu", "worker file work: hello", &mut failed);
    let errno = libc::EPERM;
    let mknod = format!("mknod: (0, 0, 0, {errno}, {errno}) made [true, true, true, false, false]");
    expect_ok("fs-mknod", &mknod, &mut failed);
    let o = run("fs-passthrough");
    let out = String::from_utf8_lossy(&o.stdout);
    println!("fs-passthrough: {:?}\n{out}", o.status);
    let served = [
        "init Ok(())",
        "getxattr Err(38)",
        "create true",
        "write Ok(())",
        "mkdir Ok(())",
        "rename Ok(())",
        "link Ok(())",
        "symlink Ok(())",
        "setattr Ok(())",
        "mkfifo Ok(())",
        "unlink Ok(())",
        "host: g=Ok(\"he\") mode=600 s=Ok(\"d/g\") p_fifo=true h_gone=true",
    ];
    if o.status.code() != Some(0) || served.iter().any(|l| !out.lines().any(|x| x == *l)) {
        failed.push(format!(
            "fs-passthrough: {:?} {out:?}; {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    for (case, name) in [
        ("fsopen", "main thread made a forbidden system call: fsopen"),
        (
            "open_tree",
            "main thread made a forbidden system call: open_tree",
        ),
        (
            "move_mount",
            "main thread made a forbidden system call: move_mount",
        ),
        (
            "mount_setattr",
            "main thread made a forbidden system call: mount_setattr",
        ),
        (
            "fs-xattr",
            "the virtio-fs worker thread made a forbidden system call: getxattr",
        ),
        (
            "vcpu-truncate",
            "to empty: 0\nhako-vmm: seccomp: the vcpu thread made a forbidden system call: ftruncate",
        ),
        (
            "vsock-truncate",
            "stderr: -22\nhako-vmm: seccomp: the virtio-vsock worker thread made a forbidden system call: ftruncate",
        ),
        ("inet", "main thread made a forbidden system call: socket"),
        ("fork", "main thread made a forbidden system call: clone"),
        ("exec", "forbidden system call: execve"),
        (
            "vcpu-open",
            "the vcpu thread made a forbidden system call: openat",
        ),
        (
            "vcpu-ioctl",
            "the vcpu thread made a forbidden system call: ioctl (16) request 0x0000541b",
        ),
        (
            "vcpu-kill-other",
            "the vcpu thread made a forbidden system call: tgkill (234)",
        ),
        (
            "fs-socket",
            "the virtio-fs worker thread made a forbidden system call: socket",
        ),
        (
            "vsock-open",
            "the virtio-vsock worker thread made a forbidden system call: openat",
        ),
        (
            "vsock-ioctl",
            "nonblocking: true\nhako-vmm: seccomp: the virtio-vsock worker thread made a forbidden system call: ioctl",
        ),
    ] {
        let o = run(case);
        let err = String::from_utf8_lossy(&o.stderr);
        println!("{case}: {:?} {err:?}", o.status);
        let named = err.contains(name);
        if o.status.code() != Some(i32::from(EXIT_SECCOMP_VIOLATION))
            || !named
            || !o.stdout.is_empty()
        {
            failed.push(format!(
                "{case}: {:?}, stdout {:?}, stderr {err:?}",
                o.status,
                String::from_utf8_lossy(&o.stdout)
            ));
        }
    }
    // posix_spawn blocks every signal around its clone, so the kernel's SIGSYS cannot reach
    // the handler and kills the process by the signal instead: stopped, without the message.
    let o = run("spawn");
    println!("spawn: {:?}", o.status);
    let by_sigsys = std::os::unix::process::ExitStatusExt::signal(&o.status) == Some(libc::SIGSYS);
    if !(by_sigsys || o.status.code() == Some(i32::from(EXIT_SECCOMP_VIOLATION)))
        || !o.stdout.is_empty()
    {
        failed.push(format!(
            "spawn: {:?}, stdout {:?}",
            o.status,
            String::from_utf8_lossy(&o.stdout)
        ));
    }
    drop(scratch);
    if !failed.is_empty() {
        eprintln!("FAILED:\n{}", failed.join("\n"));
        std::process::exit(1);
    }
    println!("seccomp: 24 cases ok");
}
