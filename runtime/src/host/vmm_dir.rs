//! The VMM-writable directory of a sandbox (`<sandbox>/vmm/`: the guest console log, hako-vmm's
//! control socket, the hybrid vsock sockets) and every runtime operation on it, none of which
//! follows a symlink a compromised hako-vmm planted there; plus bounded, printable tails of
//! the logs a guest or a VMM writes.
//!
//! hako-vmm can rename, replace or symlink anything in that directory (`vsock` →
//! containerd's socket, `console.log` → `/etc/shadow`), so the runtime never resolves a path
//! in it with the kernel's default rules. The directory is opened once, `O_PATH | O_DIRECTORY
//! | O_NOFOLLOW`; every entry is then named relative to that descriptor by one plain name
//! (no `/`, `.` or `..`): files are opened `O_NOFOLLOW | O_NONBLOCK` and must be regular
//! files, sockets are opened `O_PATH | O_NOFOLLOW`, checked to be sockets and connected
//! through the descriptor's `/proc/self/fd/<n>` magic link (which reaches that very inode,
//! whatever the name points to by then), and stale sockets are removed with `unlinkat` on the
//! directory descriptor. A name resolved relative to the directory descriptor through
//! `/proc/self/fd/<dir>/<name>` with `O_NOFOLLOW` on its one component resolves exactly as
//! `openat2(dir, name, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` would, in safe code.

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// How many bytes at the end of a log are read at most.
pub const TAIL_BYTES: u64 = 64 * 1024;
/// How many characters of one log line are kept at most.
pub const LINE_CHARS: usize = 240;

#[derive(Debug, thiserror::Error)]
pub enum VmmDirError {
    #[error("opening the VMM directory {}", path.display())]
    OpenDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} names no entry of a directory", path.display())]
    NoEntry { path: PathBuf },
    #[error("{name:?} is not one plain name in the VMM directory {}", dir.display())]
    BadName { dir: PathBuf, name: OsString },
    #[error("opening {name:?} in {}", dir.display())]
    Open {
        dir: PathBuf,
        name: OsString,
        #[source]
        source: io::Error,
    },
    #[error("{name:?} in {} is {found}, not {wanted}", dir.display())]
    WrongType {
        dir: PathBuf,
        name: OsString,
        found: &'static str,
        wanted: &'static str,
    },
    #[error("connecting to the socket {name:?} in {}", dir.display())]
    Connect {
        dir: PathBuf,
        name: OsString,
        #[source]
        source: io::Error,
    },
    #[error("removing {name:?} from {}", dir.display())]
    Remove {
        dir: PathBuf,
        name: OsString,
        #[source]
        source: io::Error,
    },
    #[error("reading the end of {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl VmmDirError {
    /// The kind of the underlying I/O error (NotFound while a VMM has not made its socket
    /// yet), or `InvalidData` for what was found and refused.
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            Self::OpenDir { source, .. }
            | Self::Open { source, .. }
            | Self::Connect { source, .. }
            | Self::Remove { source, .. }
            | Self::Read { source, .. } => source.kind(),
            Self::NoEntry { .. } | Self::BadName { .. } | Self::WrongType { .. } => {
                io::ErrorKind::InvalidData
            }
        }
    }
}

impl From<VmmDirError> for io::Error {
    /// For callers that speak `io::Error` (socket connections): the kind, and the message
    /// with its cause.
    fn from(e: VmmDirError) -> Self {
        let kind = e.kind();
        match std::error::Error::source(&e) {
            Some(cause) => io::Error::new(kind, format!("{e}: {cause}")),
            None => io::Error::new(kind, e),
        }
    }
}

/// The size of the file system [`make`] mounts for hako-vmm's directory: its console log is
/// capped at 1 MiB (plus its kept tail), its sockets take no room, so 8 MiB is plenty, and
/// no more of the host's memory goes there whatever a compromised VMM writes.
pub const TMPFS_SIZE: &str = "8m";

/// Makes `<sandbox>/<name>`, hako-vmm's writable directory, as a tmpfs of its own (nodev,
/// nosuid, noexec, [`TMPFS_SIZE`], 1024 inodes): whatever a compromised VMM writes there is
/// bounded, never lands on the file system holding the state root, and goes at teardown
/// with one unmount (no tree to walk). The sandbox directory is the runtime's own.
pub fn make(sandbox: &Path, name: &str) -> io::Result<PathBuf> {
    let dir = sandbox.join(name);
    std::fs::create_dir(&dir)?;
    let data = format!("size={TMPFS_SIZE},nr_inodes=1024,mode=0755");
    nix::mount::mount(
        Some("hako-vmm"),
        &dir,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NOEXEC,
        Some(data.as_str()),
    )
    .map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("mounting a tmpfs on {}: {e}", dir.display()),
        )
    })?;
    Ok(dir)
}

/// An open VMM-writable directory.
#[derive(Debug)]
pub struct VmmDir {
    /// `O_PATH | O_DIRECTORY`, opened without following a symlink.
    fd: File,
    path: PathBuf,
}

impl VmmDir {
    /// Opens the directory at `path` (its last component must not be a symlink; the
    /// components above it are the runtime's own).
    pub fn open(path: &Path) -> Result<Self, VmmDirError> {
        let fd = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(path)
            .map_err(|source| VmmDirError::OpenDir {
                path: path.into(),
                source,
            })?;
        Ok(Self {
            fd,
            path: path.into(),
        })
    }

    /// Opens the directory holding `path` and returns it with `path`'s name in it.
    pub fn open_parent(path: &Path) -> Result<(Self, OsString), VmmDirError> {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(VmmDirError::NoEntry { path: path.into() });
        };
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        Ok((Self::open(parent)?, name.to_owned()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `name` as seen through the directory descriptor, after checking it is one plain name.
    fn through_fd(&self, name: &OsStr) -> Result<PathBuf, VmmDirError> {
        let mut parts = Path::new(name).components();
        match (parts.next(), parts.next()) {
            (Some(Component::Normal(n)), None) if n == name => {
                Ok(Path::new(&format!("/proc/self/fd/{}", self.fd.as_raw_fd())).join(name))
            }
            _ => Err(VmmDirError::BadName {
                dir: self.path.clone(),
                name: name.into(),
            }),
        }
    }

    fn open_error(&self, name: &OsStr) -> impl FnOnce(io::Error) -> VmmDirError {
        let (dir, name) = (self.path.clone(), name.to_owned());
        move |source| VmmDirError::Open { dir, name, source }
    }

    fn wrong_type(&self, name: &OsStr, file: &File, wanted: &'static str) -> VmmDirError {
        VmmDirError::WrongType {
            dir: self.path.clone(),
            name: name.into(),
            found: file
                .metadata()
                .map(|m| kind_of(&m.file_type()))
                .unwrap_or("unreadable"),
            wanted,
        }
    }

    /// Opens the regular file `name` for reading: a symlink is refused, a FIFO or device is
    /// refused without waiting on it.
    pub fn open_file(&self, name: &OsStr) -> Result<File, VmmDirError> {
        let file = open_nofollow_nonblocking(&self.through_fd(name)?, false)
            .map_err(self.open_error(name))?;
        match file.metadata() {
            Ok(m) if m.file_type().is_file() => Ok(file),
            _ => Err(self.wrong_type(name, &file, "a regular file")),
        }
    }

    /// The last `lines` lines of the log `name` (see [`read_tail`]).
    pub fn tail(&self, name: &OsStr, lines: usize) -> Result<String, VmmDirError> {
        let file = self.open_file(name)?;
        read_tail(file, lines).map_err(|source| VmmDirError::Read {
            path: self.path.join(name),
            source,
        })
    }

    /// The socket `name`, as an `O_PATH` descriptor of its inode (a symlink is refused).
    fn socket(&self, name: &OsStr) -> Result<File, VmmDirError> {
        let file = open_nofollow_nonblocking(&self.through_fd(name)?, true)
            .map_err(self.open_error(name))?;
        match file.metadata() {
            Ok(m) if m.file_type().is_socket() => Ok(file),
            _ => Err(self.wrong_type(name, &file, "a socket")),
        }
    }

    fn connect_error(&self, name: &OsStr) -> impl FnOnce(io::Error) -> VmmDirError {
        let (dir, name) = (self.path.clone(), name.to_owned());
        move |source| VmmDirError::Connect { dir, name, source }
    }

    /// Connects to the Unix socket `name` (blocking).
    pub fn connect(&self, name: &OsStr) -> Result<std::os::unix::net::UnixStream, VmmDirError> {
        let socket = self.socket(name)?;
        std::os::unix::net::UnixStream::connect(fd_link(&socket)).map_err(self.connect_error(name))
    }

    /// Connects to the Unix socket `name` (tokio).
    pub async fn connect_async(&self, name: &OsStr) -> Result<tokio::net::UnixStream, VmmDirError> {
        let socket = self.socket(name)?;
        // The O_PATH descriptor stays open until the connection is made: the magic link
        // names it.
        let connected = tokio::net::UnixStream::connect(fd_link(&socket)).await;
        drop(socket);
        connected.map_err(self.connect_error(name))
    }

    /// Removes the entry `name` (a socket a dead VMM left, or whatever it put there instead;
    /// never what a symlink points to). Gone already is fine.
    pub fn remove(&self, name: &OsStr) -> Result<(), VmmDirError> {
        self.through_fd(name)?;
        match nix::unistd::unlinkat(
            Some(self.fd.as_raw_fd()),
            name,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        ) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(()),
            Err(e) => Err(VmmDirError::Remove {
                dir: self.path.clone(),
                name: name.into(),
                source: e.into(),
            }),
        }
    }
}

/// Opens `path` for reading without following a symlink in its last component and without
/// waiting on a FIFO (`O_PATH` when `path_only`).
fn open_nofollow_nonblocking(path: &Path, path_only: bool) -> io::Result<File> {
    let extra = if path_only { libc::O_PATH } else { 0 };
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | extra)
        .open(path)
}

/// The magic link of an open descriptor.
fn fd_link(file: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

fn kind_of(t: &std::fs::FileType) -> &'static str {
    if t.is_symlink() {
        "a symlink"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_file() {
        "a regular file"
    } else {
        "of an unknown type"
    }
}

/// The last `lines` lines of the regular file at `path` (a runtime-owned log such as
/// `vmm.log`): its last component is not followed if a symlink, a non-regular file is
/// refused without waiting on it, and at most [`TAIL_BYTES`] are read.
pub fn tail_of_path(path: &Path, lines: usize) -> io::Result<String> {
    let file = open_nofollow_nonblocking(path, false)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a regular file", path.display()),
        ));
    }
    read_tail(file, lines)
}

/// The last `lines` lines of `log`, reading at most its last [`TAIL_BYTES`] bytes: a line cut
/// by that bound is left out if others follow it, bytes that are not UTF-8 are replaced, control characters are
/// shown as `�`, and each line keeps at most [`LINE_CHARS`] characters.
pub fn read_tail(mut log: impl Read + Seek, lines: usize) -> io::Result<String> {
    let len = log.seek(SeekFrom::End(0))?;
    let start = len.saturating_sub(TAIL_BYTES);
    log.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::with_capacity(usize::try_from(len - start).unwrap_or(0));
    log.take(TAIL_BYTES).read_to_end(&mut bytes)?;
    let text = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    // The first line was cut by the bound unless the tail starts the file; it is left out
    // when whole lines follow it (else it is all there is: the end of one huge line).
    let text = match text.iter().position(|&b| b == b'\n') {
        Some(first_end) if start > 0 => &text[first_end + 1..],
        _ => text,
    };
    if text.is_empty() {
        return Ok(String::new());
    }
    let mut kept: Vec<String> = text
        .rsplit(|&b| b == b'\n')
        .take(lines)
        .map(|line| printable(&String::from_utf8_lossy(line), LINE_CHARS))
        .collect();
    kept.reverse();
    Ok(kept.join("\n"))
}

/// `text` (guest-made: a console line, an agent's error) fit for one log line: control
/// characters, Unicode's bidirectional controls (which reorder what a reader sees around
/// them: "Trojan Source") and line and paragraph separators shown as `�`, a trailing `\r`
/// dropped, at most `max_chars` characters (then `…`).
pub fn printable(text: &str, max_chars: usize) -> String {
    let text = text.strip_suffix('\r').unwrap_or(text);
    let mut out: String = text
        .chars()
        .take(max_chars)
        .map(|c| if shown_as_is(c) { c } else { '\u{fffd}' })
        .collect();
    if text.chars().nth(max_chars).is_some() {
        out.push('…');
    }
    out
}

/// Whether a guest-made character may reach a log as it is.
fn shown_as_is(c: char) -> bool {
    let bidi = matches!(
        c,
        '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
    );
    let separator = matches!(c, '\u{2028}' | '\u{2029}');
    c == '\t' || !(c.is_control() || bidi || separator)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_text_cannot_reorder_or_break_a_log_line() {
        let text = "ok\u{202e}evil\u{2066}x\u{2069}\u{200f}\u{2028}\u{1b}[2J\tend\r";
        assert_eq!(
            printable(text, 100),
            "ok\u{fffd}evil\u{fffd}x\u{fffd}\u{fffd}\u{fffd}\u{fffd}[2J\tend"
        );
        assert_eq!(printable("héllo wörld", 5), "héllo…");
    }
    use std::io::Write;
    use std::os::unix::net::UnixListener;

    fn dir_with(name: &str) -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let vmm = root.path().join("vmm");
        std::fs::create_dir(&vmm).unwrap();
        let entry = vmm.join(name);
        (root, entry)
    }

    #[test]
    fn a_symlinked_log_is_refused() {
        let (root, console) = dir_with("console.log");
        let secret = root.path().join("shadow");
        std::fs::write(&secret, "root:secret-hash:1::\n").unwrap();
        std::os::unix::fs::symlink(&secret, &console).unwrap();
        let dir = VmmDir::open(console.parent().unwrap()).unwrap();
        let e = dir.tail(OsStr::new("console.log"), 5).unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
        assert!(
            matches!(&e, VmmDirError::Open { source, .. } if source.raw_os_error() == Some(libc::ELOOP)),
            "{e:?}"
        );
        let e = tail_of_path(&console, 5).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}");
    }

    #[test]
    fn a_fifo_log_is_refused_without_waiting() {
        let (_root, console) = dir_with("console.log");
        nix::unistd::mkfifo(&console, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let dir = VmmDir::open(console.parent().unwrap()).unwrap();
        std::thread::spawn(move || {
            let _ = tx.send(dir.tail(OsStr::new("console.log"), 5).map_err(|e| e.kind()));
        });
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("reading a FIFO log hung");
        assert_eq!(got, Err(io::ErrorKind::InvalidData));
    }

    #[test]
    fn a_symlinked_directory_is_refused() {
        let (root, _) = dir_with("x");
        let link = root.path().join("link");
        std::os::unix::fs::symlink(root.path().join("vmm"), &link).unwrap();
        assert!(VmmDir::open(&link).is_err());
    }

    #[test]
    fn names_must_be_one_plain_component() {
        let (root, _) = dir_with("x");
        std::fs::write(root.path().join("outside"), "no").unwrap();
        let dir = VmmDir::open(&root.path().join("vmm")).unwrap();
        for bad in ["../outside", "..", ".", "", "a/b", "/etc/passwd"] {
            let e = dir.open_file(OsStr::new(bad)).unwrap_err();
            assert!(matches!(e, VmmDirError::BadName { .. }), "{bad:?}: {e:?}");
        }
    }

    #[test]
    fn a_symlinked_socket_is_not_connected() {
        let (root, vsock) = dir_with("vsock");
        // What a compromised VMM points its socket at (containerd's, say).
        let target = root.path().join("containerd.sock");
        let listener = UnixListener::bind(&target).unwrap();
        listener.set_nonblocking(true).unwrap();
        std::os::unix::fs::symlink(&target, &vsock).unwrap();
        let dir = VmmDir::open(vsock.parent().unwrap()).unwrap();
        // O_PATH | O_NOFOLLOW opens the link itself, which is no socket.
        let e = dir.connect(OsStr::new("vsock")).unwrap_err();
        assert!(
            matches!(
                e,
                VmmDirError::WrongType {
                    found: "a symlink",
                    ..
                }
            ),
            "{e:?}"
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert!(rt.block_on(dir.connect_async(OsStr::new("vsock"))).is_err());
        assert_eq!(
            listener.accept().unwrap_err().kind(),
            io::ErrorKind::WouldBlock,
            "the socket a symlink points to was connected"
        );
    }

    #[test]
    fn a_real_socket_is_connected_and_a_file_is_not() {
        let (_root, vsock) = dir_with("vsock");
        let listener = UnixListener::bind(&vsock).unwrap();
        let dir = VmmDir::open(vsock.parent().unwrap()).unwrap();
        let mut s = dir.connect(OsStr::new("vsock")).unwrap();
        s.write_all(b"hi").unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        let mut got = [0u8; 2];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
        std::fs::write(vsock.with_file_name("plain"), "x").unwrap();
        let e = dir.connect(OsStr::new("plain")).unwrap_err();
        assert!(matches!(e, VmmDirError::WrongType { .. }), "{e:?}");
    }

    #[test]
    fn remove_takes_the_link_not_its_target() {
        let (root, vsock) = dir_with("vsock");
        let target = root.path().join("precious");
        std::fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, &vsock).unwrap();
        let dir = VmmDir::open(vsock.parent().unwrap()).unwrap();
        dir.remove(OsStr::new("vsock")).unwrap();
        dir.remove(OsStr::new("vsock")).unwrap();
        assert!(std::fs::symlink_metadata(&vsock).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    }

    /// Counts the bytes read through it.
    struct Counting<R> {
        inner: R,
        read: u64,
    }

    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read += n as u64;
            Ok(n)
        }
    }

    impl<R: Seek> Seek for Counting<R> {
        fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
            self.inner.seek(pos)
        }
    }

    #[test]
    fn a_huge_log_is_read_by_a_bounded_tail() {
        // 20 MB of newlines, then the lines that matter.
        let mut log = vec![b'\n'; 20 << 20];
        log.extend_from_slice(b"panic: something\nend Kernel panic\n");
        let mut counting = Counting {
            inner: io::Cursor::new(log),
            read: 0,
        };
        let tail = read_tail(&mut counting, 2).unwrap();
        assert_eq!(tail, "panic: something\nend Kernel panic");
        assert!(counting.read <= TAIL_BYTES, "read {} bytes", counting.read);
    }

    #[test]
    fn a_huge_line_is_cut() {
        let (_root, console) = dir_with("console.log");
        let mut f = File::create(&console).unwrap();
        f.write_all(b"first\n").unwrap();
        f.write_all(&vec![b'x'; 10 << 20]).unwrap();
        f.write_all(b"\xff\x1b[2J\n").unwrap();
        let dir = VmmDir::open(console.parent().unwrap()).unwrap();
        let tail = dir.tail(OsStr::new("console.log"), 5).unwrap();
        assert!(tail.chars().count() <= LINE_CHARS + 1, "{}", tail.len());
        assert!(tail.starts_with("xxx") && tail.ends_with('…'), "{tail:.40}");
        let short = read_tail(io::Cursor::new(b"a\xff\x1b[2J\r\nb\n".to_vec()), 5).unwrap();
        assert_eq!(short, "a\u{fffd}\u{fffd}[2J\nb");
    }

    #[test]
    fn a_short_log_keeps_its_last_lines() {
        let tail = read_tail(io::Cursor::new(b"1\n2\n3\n".to_vec()), 2).unwrap();
        assert_eq!(tail, "2\n3");
        assert_eq!(read_tail(io::Cursor::new(Vec::new()), 2).unwrap(), "");
        assert_eq!(
            read_tail(io::Cursor::new(b"no newline".to_vec()), 2).unwrap(),
            "no newline"
        );
    }
}
