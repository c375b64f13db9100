//! Terminals: receiving a container process's pty master over its console socket (libcontainer
//! sends it with SCM_RIGHTS), and setting the window size.
#![allow(unsafe_code)]

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::Duration;

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};

/// Listens on `path`; `receive` then takes the master the process sends.
pub struct ConsoleSocket {
    listener: UnixListener,
}

impl ConsoleSocket {
    /// Binds the socket at `path`. A path longer than a socket address holds (an exec's socket
    /// in the bundle of a container with a 64-character id is ~150 bytes) is bound through
    /// its directory's descriptor (`/proc/self/fd/<fd>/<name>`); the file is the same, and
    /// libcontainer connects to it through a relative symlink.
    pub fn bind(path: &Path) -> std::io::Result<Self> {
        let _ = std::fs::remove_file(path);
        Ok(Self {
            listener: hako_socket_path::bind(path)?,
        })
    }

    /// Accepts the process's connection and receives the pty master, waiting up to `timeout`
    /// (a process that fails before sending it never connects).
    pub fn receive(self, timeout: Duration) -> std::io::Result<OwnedFd> {
        self.listener.set_nonblocking(true)?;
        let start = std::time::Instant::now();
        let (stream, _) = loop {
            match self.listener.accept() {
                Ok(conn) => break conn,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if start.elapsed() > timeout {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "the container process never sent its terminal",
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(e),
            }
        };
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(timeout))?;
        let mut name = [0u8; 64];
        let mut iov = [IoSliceMut::new(&mut name)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )
        .map_err(std::io::Error::from)?;
        for cmsg in msg.cmsgs().map_err(std::io::Error::from)? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg
                && let Some(&fd) = fds.first()
            {
                // SAFETY: SCM_RIGHTS just installed this descriptor in our table; nothing
                // else owns it.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
        Err(std::io::Error::other(
            "the console socket message carried no descriptor",
        ))
    }
}

/// Sets a terminal's window size (TIOCSWINSZ on its master).
pub fn resize(master: BorrowedFd<'_>, rows: u16, columns: u16) -> std::io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: columns,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize we own through a valid descriptor.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_path_longer_than_an_address_holds_is_bound_through_its_directory() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("b".repeat(65)).join("c".repeat(30));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("console-{}.sock", "e".repeat(64)));
        assert!(path.as_os_str().len() > hako_socket_path::SUN_PATH_MAX);
        let console = ConsoleSocket::bind(&path).unwrap();
        // As libcontainer connects: through a short symlink to the long path.
        let link = top.path().join("console-socket");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let _client = std::os::unix::net::UnixStream::connect(&link).unwrap();
        console.listener.set_nonblocking(false).unwrap();
        console.listener.accept().unwrap();
        // Binding again replaces the old socket file.
        drop(console);
        ConsoleSocket::bind(&path).unwrap();
    }
}
