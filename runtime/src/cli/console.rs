//! Terminals for `--tty` containers and execs: a host pty whose master goes to the caller's
//! console socket (SCM_RIGHTS, as runc does it for conmon) and whose slave, in raw mode so the
//! guest's own pty does the line discipline, becomes the process's stdio on the host side.
//! The slave's window size is followed and passed to the guest.
#![allow(unsafe_code)]

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use anyhow::Context;
use nix::pty::{OpenptyResult, Winsize, openpty};
use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr, connect, sendmsg, socket,
};
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};

nix::ioctl_read_bad!(get_winsize, nix::libc::TIOCGWINSZ, Winsize);

/// Opens a pty, sends its master to `console_socket` and returns the slave (raw mode).
pub fn pty_to_console_socket(console_socket: &Path) -> anyhow::Result<OwnedFd> {
    let OpenptyResult { master, slave } = openpty(None, None).context("opening a pty")?;
    let mut attrs = tcgetattr(&slave).context("reading the pty's terminal attributes")?;
    cfmakeraw(&mut attrs);
    tcsetattr(&slave, SetArg::TCSANOW, &attrs).context("setting the pty raw")?;
    send_fd(console_socket, &master)?;
    Ok(slave)
}

fn send_fd(console_socket: &Path, fd: &OwnedFd) -> anyhow::Result<()> {
    let sock = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context("console socket")?;
    let addr = UnixAddr::new(console_socket)
        .with_context(|| format!("console socket {}", console_socket.display()))?;
    connect(sock.as_raw_fd(), &addr)
        .with_context(|| format!("connecting to console socket {}", console_socket.display()))?;
    let fds = [fd.as_raw_fd()];
    let name = b"/dev/ptmx";
    sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(name)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .with_context(|| format!("sending the pty master to {}", console_socket.display()))?;
    Ok(())
}

/// The window size of the terminal `fd`, if it is one.
pub fn window_size(fd: BorrowedFd<'_>) -> Option<(u16, u16)> {
    let mut ws = Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` into `ws`, which lives across the call;
    // `fd` is a valid open descriptor for the borrow's lifetime.
    let r = unsafe { get_winsize(fd.as_raw_fd(), &mut ws) };
    r.ok().map(|_| (ws.ws_row, ws.ws_col))
}
