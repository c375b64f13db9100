//! Unix socket paths of any length. A socket address holds 107 bytes of path, and a caller's
//! state root plus 64-character ids passes that (`/var/run/docker/runtime-runc/moby/<id>/...`
//! is ~150 bytes). A longer path is bound and reached as `/proc/self/fd/<dir>/<name>` while
//! its directory is held open: the kernel resolves that to the same directory, so the socket
//! file is where the path says and other processes reach it by either name. Shared by
//! hako-vmm (its vsock and control sockets), the runtime (the monitor's socket) and the agent
//! (exec console sockets).
#![forbid(unsafe_code)]

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// The longest path a Unix socket address holds (sun_path is 108 bytes with its NUL).
pub const SUN_PATH_MAX: usize = 107;

/// A directory in which sockets are bound or reached by name, whatever the length of the
/// directory's path: held open (`O_PATH`) when that path is long.
#[derive(Debug)]
pub struct SocketDir {
    path: PathBuf,
    /// Open while the directory's path is too long to be used in socket addresses.
    fd: Option<File>,
}

impl SocketDir {
    /// Opens `dir` if a socket path under it, with a name of up to `longest_name` bytes,
    /// could pass [`SUN_PATH_MAX`].
    pub fn open(dir: &Path, longest_name: usize) -> io::Result<Self> {
        let fd = if dir.as_os_str().len() + 1 + longest_name > SUN_PATH_MAX {
            use std::os::unix::fs::OpenOptionsExt;
            Some(
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
                    .open(dir)?,
            )
        } else {
            None
        };
        Ok(Self {
            path: dir.to_owned(),
            fd,
        })
    }

    /// The path to use in a socket address for `name` in this directory: the plain path when
    /// it fits, else the one through the held descriptor.
    pub fn address(&self, name: &OsStr) -> PathBuf {
        let plain = self.path.join(name);
        match &self.fd {
            Some(fd) if plain.as_os_str().len() > SUN_PATH_MAX => {
                Path::new(&format!("/proc/self/fd/{}", fd.as_raw_fd())).join(name)
            }
            _ => plain,
        }
    }
}

/// A socket path split into its directory (opened as needed) and name.
fn split(path: &Path) -> io::Result<(SocketDir, OsString)> {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            Ok((SocketDir::open(dir, name.len())?, name.to_owned()))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file in a directory", path.display()),
        )),
    }
}

/// Binds a listening socket at `path`, however long.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    let (dir, name) = split(path)?;
    UnixListener::bind(dir.address(&name))
}

/// Connects to the socket at `path`, however long.
pub fn connect(path: &Path) -> io::Result<UnixStream> {
    let (dir, name) = split(path)?;
    UnixStream::connect(dir.address(&name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn long_dir(base: &Path) -> PathBuf {
        let dir = base.join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_socket_path_past_sun_path_is_bound_and_reached() {
        let base = tempfile::tempdir().unwrap();
        let path = long_dir(base.path()).join("monitor.sock");
        assert!(path.as_os_str().len() > SUN_PATH_MAX);
        assert!(UnixListener::bind(&path).is_err(), "the plain path fits");
        let listener = bind(&path).unwrap();
        assert!(path.exists(), "the socket is where its path says");
        let mut client = connect(&path).unwrap();
        // Reached by its plain name too, from a process in the directory.
        client.write_all(b"hi").unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let mut got = [0; 2];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
    }

    #[test]
    fn a_long_name_in_a_short_directory_is_bound_and_reached() {
        // The guest's bundle of a container with a 64-character id (77 bytes) and a socket
        // named after a 64-character exec id.
        let base = tempfile::tempdir().unwrap();
        let dir = base
            .path()
            .join("d".repeat(77 - base.path().as_os_str().len() - 1));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("console-{}.sock", "e".repeat(64)));
        assert!(path.as_os_str().len() > SUN_PATH_MAX);
        let listener = bind(&path).unwrap();
        let _client = connect(&path).unwrap();
        listener.accept().unwrap();
    }

    #[test]
    fn a_short_path_is_used_as_it_is() {
        let dir = SocketDir::open(Path::new("/run"), 16).unwrap();
        assert!(dir.fd.is_none());
        assert_eq!(dir.address(OsStr::new("x.sock")), Path::new("/run/x.sock"));
        let base = tempfile::tempdir().unwrap();
        let long = SocketDir::open(&long_dir(base.path()), 16).unwrap();
        assert!(
            long.address(OsStr::new("vsock_1024"))
                .starts_with("/proc/self/fd/")
        );
        assert!(SocketDir::open(&base.path().join("missing").join("x".repeat(120)), 16).is_err());
    }
}
