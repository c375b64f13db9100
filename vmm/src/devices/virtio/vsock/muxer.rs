//! The host side of every connection: the listening Unix socket, host clients still in the
//! handshake, and the connections keyed by (host port, guest port). It routes guest packets
//! to connections, picks the next packet for the guest, and keeps epoll interest in each
//! host socket in line with what the connection can do (read only with guest credit, write
//! only with buffered bytes).
//!
//! The control packets (RSTs) waiting for guest RX buffers are bounded: at most
//! [`MAX_PENDING_CONTROL`], and the device stops taking the guest's TX chains once
//! [`TX_PAUSE_AT`] wait ([`Muxer::tx_paused`]), as Firecracker does: a guest that floods
//! unknown ports without reading its RX queue only stalls its own TX queue. (Connections
//! need a host socket each; a connection's buffer is bounded by the credit it advertises.)
//!
//! When accepting a host client fails for want of descriptors or memory (a guest can pin
//! descriptors through virtio-fs up to the VMM's `RLIMIT_NOFILE`), the client stays in the
//! backlog and the level-triggered listener stays readable: the muxer takes the listener out
//! of its epoll set for [`ACCEPT_BACKOFF`], or until one of its sockets closes, instead of
//! spinning. (Only `epoll_ctl`, which the vsock worker's seccomp profile allows.)

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ffi::OsString;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hako_socket_path::SocketDir;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::HOST_CID;
use super::connection::{Connection, State, Verdict, rst_for};
use super::hybrid::{self, Handshake};
use super::packet::{Header, OP_REQUEST, OP_RST, Packet, TYPE_STREAM};
use crate::devices::log_limit::LogLimit;
use crate::metrics::Counters;

/// epoll tokens below this are the worker's own (queues, kill); host sockets are fd + this.
pub const FIRST_FD_TOKEN: u64 = 16;
pub const TOKEN_LISTENER: u64 = 8;

/// How long a host client may take to send its CONNECT line, and the guest to accept or to
/// answer a SHUTDOWN. Generous: guest kernels can be slow where kernel mode is emulated.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the listener is left out of epoll after accepting failed.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// First host port handed to host-initiated connections (as Firecracker does).
const FIRST_LOCAL_PORT: u32 = 1 << 30;
/// Control packets waiting for guest RX buffers; past it more are dropped (and counted).
pub const MAX_PENDING_CONTROL: usize = 1024;
/// The device takes no TX chain while this many control packets wait. A guest packet queues
/// at most one reply, so replies to the guest's own packets leave the other half of the room
/// to the resets of connections that the host side ends.
pub const TX_PAUSE_AT: usize = MAX_PENDING_CONTROL / 2;

/// Counter indices (see `device::COUNTERS`).
pub const CONNECTIONS: usize = 0;
pub const RESETS: usize = 1;
pub const MALFORMED: usize = 6;
pub const DROPPED_CONTROL: usize = 7;

type Key = (u32, u32);

struct Unclaimed {
    stream: UnixStream,
    line: Vec<u8>,
    since: Instant,
}

pub struct Muxer {
    guest_cid: u64,
    /// The directory of the vsock socket, where the guest's connections to host port N go
    /// to `<uds name>_N` (reached through a held descriptor when its path is long).
    uds_dir: SocketDir,
    uds_name: OsString,
    listener: UnixListener,
    epoll: Epoll,
    conns: HashMap<Key, Connection>,
    by_fd: HashMap<RawFd, Key>,
    unclaimed: HashMap<RawFd, Unclaimed>,
    /// Interest registered per connection; absent = not in epoll.
    interest: HashMap<Key, EventSet>,
    /// Connections whose host socket epoll reported readable (or hung up) and that have not
    /// been drained since.
    readable: BTreeSet<Key>,
    control: VecDeque<Header>,
    next_port: u32,
    counters: Arc<Counters>,
    /// Set while the listener is out of the epoll set after accepting failed: when it goes
    /// back in (sooner if one of our sockets closes).
    accept_paused_until: Option<Instant>,
    /// For the warnings the guest can cause (credit violations, epoll failures on the
    /// sockets it makes us open, accepting without descriptors).
    warnings: LogLimit,
}

fn token(fd: RawFd) -> u64 {
    FIRST_FD_TOKEN + fd as u64
}

impl Muxer {
    pub fn new(
        guest_cid: u64,
        uds_path: &Path,
        listener: UnixListener,
        counters: Arc<Counters>,
    ) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        let (Some(dir), Some(name)) = (uds_path.parent(), uds_path.file_name()) else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} names no socket in a directory", uds_path.display()),
            ));
        };
        // Ports are u32: `<name>_4294967295` is the longest name connected to.
        let uds_dir = SocketDir::open(dir, name.len() + "_4294967295".len())?;
        let epoll = Epoll::new()?;
        epoll.ctl(
            ControlOperation::Add,
            listener.as_raw_fd(),
            EpollEvent::new(EventSet::IN, TOKEN_LISTENER),
        )?;
        Ok(Self {
            guest_cid,
            uds_dir,
            uds_name: name.to_owned(),
            listener,
            epoll,
            conns: HashMap::new(),
            by_fd: HashMap::new(),
            unclaimed: HashMap::new(),
            interest: HashMap::new(),
            readable: BTreeSet::new(),
            control: VecDeque::new(),
            next_port: FIRST_LOCAL_PORT,
            counters,
            accept_paused_until: None,
            warnings: LogLimit::new(),
        })
    }

    pub fn epoll(&self) -> &Epoll {
        &self.epoll
    }

    /// Milliseconds epoll may sleep: forever unless a timeout is running or the listener
    /// waits to go back into the epoll set.
    pub fn timeout_ms(&self) -> i32 {
        let waiting = !self.unclaimed.is_empty()
            || self.conns.values().any(|c| c.state() != State::Established);
        let timeout = if waiting { 500 } else { -1 };
        match self.accept_paused_until {
            None => timeout,
            Some(at) => {
                let us = at.saturating_duration_since(Instant::now()).as_micros();
                let ms = i32::try_from(us.div_ceil(1000)).unwrap_or(i32::MAX);
                if timeout < 0 { ms } else { ms.min(timeout) }
            }
        }
    }

    /// Drops every connection (device reset): host sockets see EOF.
    pub fn reset(&mut self) {
        let keys: Vec<Key> = self.conns.keys().copied().collect();
        for k in keys {
            self.remove(k, false);
        }
        for (fd, _) in self.unclaimed.drain() {
            let _ = self
                .epoll
                .ctl(ControlOperation::Delete, fd, EpollEvent::default());
        }
        self.control.clear();
    }

    /// An epoll event on the listener or a host socket.
    pub fn handle_event(&mut self, token: u64, events: EventSet) {
        if token == TOKEN_LISTENER {
            self.accept_all();
            return;
        }
        let Some(fd) = token
            .checked_sub(FIRST_FD_TOKEN)
            .and_then(|f| RawFd::try_from(f).ok())
        else {
            return;
        };
        if self.unclaimed.contains_key(&fd) {
            self.read_handshake(fd);
            return;
        }
        let Some(&key) = self.by_fd.get(&fd) else {
            return;
        };
        if events
            .intersects(EventSet::IN | EventSet::HANG_UP | EventSet::READ_HANG_UP | EventSet::ERROR)
        {
            self.readable.insert(key);
        }
        if events.contains(EventSet::OUT) {
            let finished = self
                .conns
                .get_mut(&key)
                .is_some_and(|c| c.flush().is_err() || c.done());
            if finished {
                self.remove(key, true);
                return;
            }
        }
        self.sync_interest(key);
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let fd = stream.as_raw_fd();
                    let ev = EpollEvent::new(EventSet::IN, token(fd));
                    if self.epoll.ctl(ControlOperation::Add, fd, ev).is_ok() {
                        self.unclaimed.insert(
                            fd,
                            Unclaimed {
                                stream,
                                line: Vec::new(),
                                since: Instant::now(),
                            },
                        );
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                // The client left before we took it, or a signal: try the next one.
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                    ) => {}
                // Out of descriptors (EMFILE, ENFILE) or memory (ENOMEM, ENOBUFS), or
                // anything else that will not pass by itself: the client stays in the
                // backlog and the listener readable, so stop polling it for a while.
                Err(e) => {
                    if let Some(suppressed) = self.warnings.allow() {
                        tracing::warn!(
                            error = %e,
                            suppressed,
                            backoff_ms = ACCEPT_BACKOFF.as_millis() as u64,
                            "accepting a host vsock client; the listener pauses"
                        );
                    }
                    self.pause_accept(Instant::now());
                    return;
                }
            }
        }
    }

    /// Takes the listener out of the epoll set until `now + ACCEPT_BACKOFF`.
    fn pause_accept(&mut self, now: Instant) {
        if self.accept_paused_until.is_none() {
            let _ = self.epoll.ctl(
                ControlOperation::Delete,
                self.listener.as_raw_fd(),
                EpollEvent::default(),
            );
        }
        self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
    }

    /// Puts a paused listener back into the epoll set.
    fn resume_accept(&mut self) {
        if self.accept_paused_until.is_none() {
            return;
        }
        let added = self.epoll.ctl(
            ControlOperation::Add,
            self.listener.as_raw_fd(),
            EpollEvent::new(EventSet::IN, TOKEN_LISTENER),
        );
        match added {
            Ok(()) => self.accept_paused_until = None,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => self.accept_paused_until = None,
            Err(e) => {
                if let Some(suppressed) = self.warnings.allow() {
                    tracing::warn!(error = %e, suppressed, "epoll on the host vsock listener");
                }
                self.accept_paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
            }
        }
    }

    /// Whether the listener is out of the epoll set (accepting failed).
    #[cfg(test)]
    fn accept_paused(&self) -> bool {
        self.accept_paused_until.is_some()
    }

    fn read_handshake(&mut self, fd: RawFd) {
        let Some(u) = self.unclaimed.get_mut(&fd) else {
            return;
        };
        let mut buf = [0u8; hybrid::MAX_LINE];
        let room = hybrid::MAX_LINE - u.line.len();
        // Read byte-wise up to the newline so no payload is swallowed with the handshake.
        let mut closed = false;
        for _ in 0..room {
            match u.stream.read(&mut buf[..1]) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(_) => {
                    u.line.push(buf[0]);
                    if buf[0] == b'\n' {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        let verdict = if closed {
            Handshake::Invalid("the client hung up".into())
        } else {
            hybrid::parse(&u.line)
        };
        match verdict {
            Handshake::Incomplete => {}
            Handshake::Invalid(why) => {
                tracing::debug!(%why, "dropping a host vsock client");
                self.drop_unclaimed(fd);
            }
            Handshake::Connect(port) => {
                let Some(u) = self.drop_unclaimed(fd) else {
                    return;
                };
                let local = self.allocate_port();
                let conn = Connection::host_initiated(u.stream, local, port, self.guest_cid);
                self.insert(conn);
            }
        }
    }

    /// Stops a host client's handshake; its socket closes unless the caller keeps it.
    fn drop_unclaimed(&mut self, fd: RawFd) -> Option<Unclaimed> {
        let _ = self
            .epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default());
        let u = self.unclaimed.remove(&fd);
        // A descriptor may come free: the next client may be accepted.
        self.resume_accept();
        u
    }

    fn allocate_port(&mut self) -> u32 {
        loop {
            let port = self.next_port;
            self.next_port = self.next_port.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
            if !self.conns.keys().any(|(local, _)| *local == port) {
                return port;
            }
        }
    }

    fn insert(&mut self, conn: Connection) {
        let key = (conn.local_port, conn.peer_port);
        self.by_fd.insert(conn.stream.as_raw_fd(), key);
        self.conns.insert(key, conn);
        self.counters.add(CONNECTIONS, 1);
        self.sync_interest(key);
    }

    /// Removes a connection; its host socket closes.
    fn remove(&mut self, key: Key, send_rst: bool) {
        let Some(mut conn) = self.conns.remove(&key) else {
            return;
        };
        let fd = conn.stream.as_raw_fd();
        if self.interest.remove(&key).is_some() {
            let _ = self
                .epoll
                .ctl(ControlOperation::Delete, fd, EpollEvent::default());
        }
        self.by_fd.remove(&fd);
        self.readable.remove(&key);
        if send_rst {
            self.queue_control(conn.header(OP_RST, 0));
            self.counters.add(RESETS, 1);
        }
        drop(conn);
        // Its descriptor is free: a paused listener may accept again.
        self.resume_accept();
    }

    /// Queues a control packet for the guest, unless [`MAX_PENDING_CONTROL`] already wait
    /// (only when the guest gives no RX buffers while the host ends many connections, or
    /// when a caller ignores [`Self::tx_paused`]).
    fn queue_control(&mut self, h: Header) {
        if self.control.len() >= MAX_PENDING_CONTROL {
            self.counters.add(DROPPED_CONTROL, 1);
            return;
        }
        self.control.push_back(h);
    }

    /// Control packets waiting for guest RX buffers.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn pending_control(&self) -> usize {
        self.control.len()
    }

    /// Whether the device should stop taking the guest's TX chains until the guest takes
    /// the control packets that wait (back-pressure).
    pub fn tx_paused(&self) -> bool {
        self.control.len() >= TX_PAUSE_AT
    }

    /// Registers exactly the events the connection can act on.
    fn sync_interest(&mut self, key: Key) {
        let Some(conn) = self.conns.get(&key) else {
            return;
        };
        let mut want = EventSet::empty();
        if conn.wants_read() && !self.readable.contains(&key) {
            want |= EventSet::IN | EventSet::READ_HANG_UP;
        }
        if conn.wants_write() {
            want |= EventSet::OUT;
        }
        let fd = conn.stream.as_raw_fd();
        let current = self.interest.get(&key).copied();
        let result = match (current, want.is_empty()) {
            (None, true) => Ok(()),
            (Some(_), true) => {
                self.interest.remove(&key);
                self.epoll
                    .ctl(ControlOperation::Delete, fd, EpollEvent::default())
            }
            (None, false) => {
                self.interest.insert(key, want);
                self.epoll
                    .ctl(ControlOperation::Add, fd, EpollEvent::new(want, token(fd)))
            }
            (Some(cur), false) if cur == want => Ok(()),
            (Some(_), false) => {
                self.interest.insert(key, want);
                self.epoll.ctl(
                    ControlOperation::Modify,
                    fd,
                    EpollEvent::new(want, token(fd)),
                )
            }
        };
        if let Err(e) = result
            && let Some(suppressed) = self.warnings.allow()
        {
            tracing::warn!(error = %e, suppressed, "epoll on a host vsock socket");
        }
    }

    /// Handles a packet the guest sent.
    pub fn on_guest_packet(&mut self, p: Packet) {
        let h = p.header;
        if h.kind != TYPE_STREAM || h.src_cid != self.guest_cid || h.dst_cid != HOST_CID {
            self.counters.add(MALFORMED, 1);
            if h.op != OP_RST {
                self.queue_control(rst_for(&h));
            }
            return;
        }
        let key = (h.dst_port, h.src_port);
        if let Some(conn) = self.conns.get_mut(&key) {
            match conn.on_packet(&p) {
                Verdict::Keep => self.sync_interest(key),
                Verdict::Close { send_rst } => self.remove(key, send_rst),
                Verdict::OverCredit => {
                    if let Some(suppressed) = self.warnings.allow() {
                        tracing::warn!(
                            port = key.0,
                            suppressed,
                            "the guest sent more than its credit allows"
                        );
                    }
                    self.remove(key, true);
                }
            }
            return;
        }
        match h.op {
            OP_REQUEST => self.guest_connect(&h),
            OP_RST => {}
            _ => self.queue_control(rst_for(&h)),
        }
    }

    fn guest_connect(&mut self, h: &Header) {
        let port = h.dst_port;
        let mut name = self.uds_name.clone();
        name.push(format!("_{port}"));
        let path = self.uds_dir.address(&name);
        match UnixStream::connect(&path).and_then(|s| s.set_nonblocking(true).map(|()| s)) {
            Ok(stream) => {
                let conn = Connection::guest_initiated(stream, h, self.guest_cid);
                self.insert(conn);
            }
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "guest connection refused");
                self.queue_control(rst_for(h));
            }
        }
    }

    /// Whether a packet for the guest is ready.
    pub fn has_rx_work(&self) -> bool {
        !self.control.is_empty()
            || self.conns.values().any(Connection::owes_control)
            || self
                .readable
                .iter()
                .any(|k| self.conns.get(k).is_some_and(Connection::wants_read))
    }

    /// The next packet for the guest with its payload in `buf[..len]`.
    pub fn next_rx(&mut self, room: usize, buf: &mut [u8]) -> Option<(Header, usize)> {
        if let Some(h) = self.control.pop_front() {
            return Some((h, 0));
        }
        let owing: Option<Key> = self
            .conns
            .iter()
            .find(|(_, c)| c.owes_control())
            .map(|(k, _)| *k);
        if let Some(key) = owing {
            let out = self
                .conns
                .get_mut(&key)
                .and_then(|c| c.next_for_guest(room, buf));
            self.sync_interest(key);
            return out;
        }
        let keys: Vec<Key> = self.readable.iter().copied().collect();
        for key in keys {
            let Some(conn) = self.conns.get_mut(&key) else {
                self.readable.remove(&key);
                continue;
            };
            if !conn.wants_read() {
                continue;
            }
            match conn.next_for_guest(room, buf) {
                Some(out) => {
                    self.sync_interest(key);
                    return Some(out);
                }
                None => {
                    self.readable.remove(&key);
                    self.sync_interest(key);
                }
            }
        }
        None
    }

    /// Ends handshakes and closes that took too long; puts a paused listener back once its
    /// back-off is over.
    pub fn expire(&mut self) {
        self.expire_at(Instant::now());
    }

    fn expire_at(&mut self, now: Instant) {
        if self.accept_paused_until.is_some_and(|at| at <= now) {
            self.resume_accept();
        }
        let stale: Vec<RawFd> = self
            .unclaimed
            .iter()
            .filter(|(_, u)| now.duration_since(u.since) > HANDSHAKE_TIMEOUT)
            .map(|(fd, _)| *fd)
            .collect();
        for fd in stale {
            self.drop_unclaimed(fd);
        }
        let expired: Vec<(Key, bool)> = self
            .conns
            .iter()
            .filter_map(|(k, c)| match c.state() {
                State::Connecting if now.duration_since(c.since()) > CONNECT_TIMEOUT => {
                    Some((*k, true))
                }
                State::Closing if now.duration_since(c.since()) > CLOSE_TIMEOUT => Some((*k, true)),
                _ => None,
            })
            .collect();
        for (k, rst) in expired {
            tracing::debug!(local = k.0, peer = k.1, "vsock connection timed out");
            self.remove(k, rst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::vsock::connection::TX_BUF_SIZE;
    use crate::devices::virtio::vsock::device::COUNTERS;
    use crate::devices::virtio::vsock::packet::{OP_RESPONSE, OP_RW};
    use crate::devices::virtio::warnings_logged;
    use std::io::{BufRead, BufReader, Write};

    const CID: u64 = 3;

    fn muxer(dir: &Path) -> Muxer {
        let path = dir.join("v.sock");
        let listener = hako_socket_path::bind(&path).unwrap();
        Muxer::new(CID, &path, listener, Counters::new(COUNTERS)).unwrap()
    }

    fn pump(m: &mut Muxer) {
        let mut events = vec![EpollEvent::default(); 16];
        let n = m.epoll().wait(100, &mut events).unwrap();
        for e in &events[..n] {
            m.handle_event(e.data(), e.event_set());
        }
    }

    fn guest_packet(op: u16, src_port: u32, dst_port: u32, payload: &[u8]) -> Packet {
        Packet {
            header: Header {
                src_cid: CID,
                dst_cid: HOST_CID,
                src_port,
                dst_port,
                len: payload.len() as u32,
                kind: TYPE_STREAM,
                op,
                flags: 0,
                buf_alloc: 65536,
                fwd_cnt: 0,
            },
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn host_connect_handshake_reaches_the_guest_and_data_flows() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = muxer(dir.path());
        let mut client = UnixStream::connect(dir.path().join("v.sock")).unwrap();
        client.write_all(b"CONNECT 1024\n").unwrap();
        for _ in 0..3 {
            pump(&mut m);
        }
        assert!(m.has_rx_work());
        let mut buf = vec![0u8; 4096];
        let (req, _) = m.next_rx(4096, &mut buf).unwrap();
        assert_eq!(
            (req.op, { req.dst_port }, { req.dst_cid }),
            (OP_REQUEST, 1024, CID)
        );
        let local = req.src_port;
        m.on_guest_packet(guest_packet(OP_RESPONSE, 1024, local, b""));
        let mut reader = BufReader::new(client.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, format!("OK {local}\n"));
        m.on_guest_packet(guest_packet(OP_RW, 1024, local, b"from guest"));
        let mut got = [0u8; 10];
        reader.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"from guest");
        client.write_all(b"from host").unwrap();
        pump(&mut m);
        let (h, n) = m.next_rx(4096, &mut buf).unwrap();
        assert_eq!((h.op, &buf[..n]), (OP_RW, &b"from host"[..]));
    }

    #[test]
    fn guest_connect_goes_to_the_port_socket_or_is_reset() {
        let dir = tempfile::tempdir().unwrap();
        guest_connect_in(dir.path());
        // A directory whose socket paths pass a socket address's 107 bytes (a caller's long
        // state root with 64-character ids).
        let long = dir.path().join("r".repeat(64)).join("s".repeat(64));
        std::fs::create_dir_all(&long).unwrap();
        guest_connect_in(&long);
    }

    fn guest_connect_in(dir: &Path) {
        let mut m = muxer(dir);
        let mut buf = vec![0u8; 64];
        m.on_guest_packet(guest_packet(OP_REQUEST, 5000, 52, b""));
        let (h, _) = m.next_rx(4096, &mut buf).unwrap();
        assert_eq!(
            (h.op, { h.dst_port }),
            (OP_RST, 5000),
            "nobody listens on _52"
        );
        let port_sock = hako_socket_path::bind(&dir.join("v.sock_52")).unwrap();
        m.on_guest_packet(guest_packet(OP_REQUEST, 5001, 52, b""));
        let (h, _) = m.next_rx(4096, &mut buf).unwrap();
        assert_eq!({ h.op }, OP_RESPONSE);
        let (mut accepted, _) = port_sock.accept().unwrap();
        m.on_guest_packet(guest_packet(OP_RW, 5001, 52, b"hi"));
        let mut got = [0u8; 2];
        accepted.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
    }

    #[test]
    fn bad_handshakes_and_foreign_packets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = muxer(dir.path());
        let mut client = UnixStream::connect(dir.path().join("v.sock")).unwrap();
        client.write_all(b"HELLO\n").unwrap();
        for _ in 0..3 {
            pump(&mut m);
        }
        let mut b = [0u8; 1];
        assert_eq!(client.read(&mut b).unwrap(), 0, "client closed");
        let mut p = guest_packet(OP_RW, 1, 2, b"x");
        p.header.src_cid = 99;
        m.on_guest_packet(p);
        let mut buf = vec![0u8; 64];
        assert_eq!({ m.next_rx(4096, &mut buf).unwrap().0.op }, OP_RST);
        m.on_guest_packet(guest_packet(OP_RW, 7, 8, b"x"));
        assert_eq!(
            { m.next_rx(4096, &mut buf).unwrap().0.op },
            OP_RST,
            "no such connection"
        );
        m.on_guest_packet(guest_packet(OP_RST, 7, 8, b""));
        assert!(!m.has_rx_work(), "no RST in answer to an RST");
    }

    #[test]
    fn a_flood_of_packets_to_unknown_ports_leaves_at_most_the_cap_pending() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = muxer(dir.path());
        for i in 0..100_000u32 {
            m.on_guest_packet(guest_packet(OP_RW, 5000 + i % 50_000, 9, b"x"));
            assert!(m.pending_control() <= MAX_PENDING_CONTROL);
        }
        assert_eq!(m.pending_control(), MAX_PENDING_CONTROL);
        assert!(m.tx_paused());
        let dropped = m.counters.snapshot()["dropped_control"];
        assert_eq!(dropped, 100_000 - MAX_PENDING_CONTROL as u64);
        let mut buf = vec![0u8; 64];
        for _ in 0..MAX_PENDING_CONTROL {
            assert_eq!({ m.next_rx(4096, &mut buf).unwrap().0.op }, OP_RST);
        }
        assert!(!m.has_rx_work());
        assert!(!m.tx_paused(), "the guest took the resets: TX resumes");
    }

    /// A listener whose accept always fails (EINVAL: it is a connected socket) and that epoll
    /// always finds readable (a byte waits on it), as a listener is while EMFILE lasts.
    fn failing_listener() -> (UnixListener, UnixStream) {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        peer.write_all(b"x").unwrap();
        (UnixListener::from(std::os::fd::OwnedFd::from(ours)), peer)
    }

    fn listener_events(m: &Muxer, timeout_ms: i32) -> usize {
        let mut events = vec![EpollEvent::default(); 16];
        let n = m.epoll().wait(timeout_ms, &mut events).unwrap();
        events[..n]
            .iter()
            .filter(|e| e.data() == TOKEN_LISTENER)
            .count()
    }

    #[test]
    fn a_listener_whose_accept_fails_is_not_polled_until_its_backoff_ends() {
        let dir = tempfile::tempdir().unwrap();
        let (listener, _peer) = failing_listener();
        let path = dir.path().join("v.sock");
        let mut m = Muxer::new(CID, &path, listener, Counters::new(COUNTERS)).unwrap();
        assert_eq!(listener_events(&m, 0), 1);
        m.handle_event(TOKEN_LISTENER, EventSet::IN);
        assert!(m.accept_paused());
        assert_eq!(listener_events(&m, 0), 0, "not polled again at once");
        let timeout = m.timeout_ms();
        assert!(
            (1..=ACCEPT_BACKOFF.as_millis() as i32).contains(&timeout),
            "the worker wakes to resume it: {timeout}"
        );
        m.expire();
        assert_eq!(listener_events(&m, 0), 0, "still backing off");
        m.expire_at(Instant::now() + ACCEPT_BACKOFF);
        assert!(!m.accept_paused());
        assert_eq!(m.timeout_ms(), -1);
        assert_eq!(listener_events(&m, 0), 1, "polled again after the back-off");
    }

    #[test]
    fn a_failing_listener_does_not_spin_the_worker_or_flood_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (listener, _peer) = failing_listener();
        let path = dir.path().join("v.sock");
        let mut m = Muxer::new(CID, &path, listener, Counters::new(COUNTERS)).unwrap();
        let run_for = ACCEPT_BACKOFF * 3;
        let mut wakeups = 0;
        let logged = warnings_logged(|| {
            // The worker's loop: wait, handle, expire.
            let start = Instant::now();
            while start.elapsed() < run_for {
                let cap = run_for.as_millis() as i32;
                let timeout = match m.timeout_ms() {
                    t if t < 0 => cap,
                    t => t.min(cap),
                };
                if listener_events(&m, timeout) > 0 {
                    wakeups += 1;
                    m.handle_event(TOKEN_LISTENER, EventSet::IN);
                }
                m.expire();
            }
        });
        assert!(
            (1..=5).contains(&wakeups),
            "{wakeups} accept attempts in {run_for:?}"
        );
        assert!((1..=5).contains(&logged), "{logged} lines");
    }

    #[test]
    fn a_closing_connection_resumes_a_paused_listener() {
        let dir = tempfile::tempdir().unwrap();
        let (listener, _peer) = failing_listener();
        let path = dir.path().join("v.sock");
        let _port_sock = UnixListener::bind(dir.path().join("v.sock_52")).unwrap();
        let mut m = Muxer::new(CID, &path, listener, Counters::new(COUNTERS)).unwrap();
        m.on_guest_packet(guest_packet(OP_REQUEST, 5001, 52, b""));
        m.handle_event(TOKEN_LISTENER, EventSet::IN);
        assert!(m.accept_paused());
        m.on_guest_packet(guest_packet(OP_RST, 5001, 52, b""));
        assert!(!m.accept_paused(), "a descriptor came free");
        assert_eq!(listener_events(&m, 0), 1);
    }

    #[test]
    fn credit_violations_on_many_connections_log_a_bounded_number_of_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = muxer(dir.path());
        let port_sock = UnixListener::bind(dir.path().join("v.sock_52")).unwrap();
        let big = vec![0u8; TX_BUF_SIZE as usize + 1];
        let mut buf = vec![0u8; 64];
        let logged = warnings_logged(|| {
            for i in 0..50u32 {
                m.on_guest_packet(guest_packet(OP_REQUEST, 6000 + i, 52, b""));
                let _accepted = port_sock.accept().unwrap();
                assert_eq!({ m.next_rx(4096, &mut buf).unwrap().0.op }, OP_RESPONSE);
                m.on_guest_packet(guest_packet(OP_RW, 6000 + i, 52, &big));
                assert_eq!({ m.next_rx(4096, &mut buf).unwrap().0.op }, OP_RST);
            }
        });
        assert!(m.conns.is_empty(), "every violator was reset");
        assert!(
            (1..=10).contains(&logged),
            "{logged} lines for 50 violations"
        );
    }
}
