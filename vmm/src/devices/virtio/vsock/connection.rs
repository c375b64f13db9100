//! One stream connection between a guest port and a host Unix socket: its state, the credit
//! both ways, the bytes from the guest not yet written to the host socket, and which control
//! packet it owes the guest next.
//!
//! Credit (virtio 1.2, 5.10.6.3): the device advertises `TX_BUF_SIZE` bytes of buffer and
//! `fwd_cnt`, the bytes it has passed on to the host socket; the guest never has more than
//! `buf_alloc - (sent - fwd_cnt)` bytes in flight, so the buffer never overflows. The device
//! sends the guest at most `peer_buf_alloc - (rx_cnt - peer_fwd_cnt)` bytes.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::num::Wrapping;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use super::HOST_CID;
use super::packet::{
    Header, OP_CREDIT_REQUEST, OP_CREDIT_UPDATE, OP_REQUEST, OP_RESPONSE, OP_RST, OP_RW,
    OP_SHUTDOWN, Packet, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM,
};

/// Buffer the device offers the guest per connection (its `buf_alloc`).
pub const TX_BUF_SIZE: u32 = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Host-initiated: REQUEST owed or sent, waiting for the guest's RESPONSE.
    Connecting,
    Established,
    /// SHUTDOWN sent to the guest; waiting for its RST.
    Closing,
}

/// What the muxer does with a connection after a packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Remove it; `send_rst` tells whether the guest is owed an RST.
    Close {
        send_rst: bool,
    },
    /// The guest sent more than its credit allows: remove it and owe the guest an RST. The
    /// muxer reports it (within its log budget: the guest can do it on every connection).
    OverCredit,
}

/// Control packets owed to the guest, in the order they go out.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Owed {
    request: bool,
    response: bool,
    /// SHUTDOWN flags owed (0: none).
    shutdown: u32,
    credit_update: bool,
}

pub struct Connection {
    pub stream: UnixStream,
    pub local_port: u32,
    pub peer_port: u32,
    guest_cid: u64,
    state: State,
    since: Instant,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    rx_cnt: Wrapping<u32>,
    fwd_cnt: Wrapping<u32>,
    last_fwd_cnt_sent: Wrapping<u32>,
    tx_buf: VecDeque<u8>,
    owed: Owed,
    host_eof: bool,
    peer_shut_send: bool,
    peer_shut_rcv: bool,
    /// The host wants "OK <port>\n" once the guest accepts.
    announce_ok: bool,
}

impl Connection {
    fn new(
        stream: UnixStream,
        local_port: u32,
        peer_port: u32,
        guest_cid: u64,
        state: State,
    ) -> Self {
        Self {
            stream,
            local_port,
            peer_port,
            guest_cid,
            state,
            since: Instant::now(),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            rx_cnt: Wrapping(0),
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_sent: Wrapping(0),
            tx_buf: VecDeque::new(),
            owed: Owed::default(),
            host_eof: false,
            peer_shut_send: false,
            peer_shut_rcv: false,
            announce_ok: false,
        }
    }

    /// A host client asked for guest port `peer_port`: owe the guest a REQUEST.
    pub fn host_initiated(
        stream: UnixStream,
        local_port: u32,
        peer_port: u32,
        guest_cid: u64,
    ) -> Self {
        let mut c = Self::new(stream, local_port, peer_port, guest_cid, State::Connecting);
        c.owed.request = true;
        c.announce_ok = true;
        c
    }

    /// The guest connected to host port `local_port` and the host socket accepted: owe the
    /// guest a RESPONSE.
    pub fn guest_initiated(stream: UnixStream, request: &Header, guest_cid: u64) -> Self {
        let mut c = Self::new(
            stream,
            request.dst_port,
            request.src_port,
            guest_cid,
            State::Established,
        );
        c.update_peer_credit(request);
        c.owed.response = true;
        c
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// When the connection entered its current state.
    pub fn since(&self) -> Instant {
        self.since
    }

    fn set_state(&mut self, state: State) {
        self.state = state;
        self.since = Instant::now();
    }

    fn update_peer_credit(&mut self, h: &Header) {
        self.peer_buf_alloc = h.buf_alloc;
        self.peer_fwd_cnt = Wrapping(h.fwd_cnt);
    }

    /// Bytes the guest can still take.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Whether the host socket should be read for the guest.
    pub fn wants_read(&self) -> bool {
        self.state == State::Established
            && !self.host_eof
            && !self.peer_shut_rcv
            && self.peer_credit() > 0
    }

    /// Whether bytes from the guest wait for the host socket.
    pub fn wants_write(&self) -> bool {
        !self.tx_buf.is_empty()
    }

    /// Whether a control packet is owed to the guest.
    pub fn owes_control(&self) -> bool {
        self.owed != Owed::default()
    }

    /// A header from this connection to the guest.
    pub fn header(&mut self, op: u16, flags: u32) -> Header {
        self.last_fwd_cnt_sent = self.fwd_cnt;
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len: 0,
            kind: TYPE_STREAM,
            op,
            flags,
            buf_alloc: TX_BUF_SIZE,
            fwd_cnt: self.fwd_cnt.0,
        }
    }

    /// Handles a packet the guest sent on this connection.
    pub fn on_packet(&mut self, p: &Packet) -> Verdict {
        let h = &p.header;
        self.update_peer_credit(h);
        match h.op {
            OP_RESPONSE if self.state == State::Connecting => {
                self.set_state(State::Established);
                if self.announce_ok {
                    let line = format!("OK {}\n", self.local_port);
                    // A few bytes on a fresh socket: written whole or the client is gone.
                    if self.stream.write_all(line.as_bytes()).is_err() {
                        return Verdict::Close { send_rst: true };
                    }
                }
                Verdict::Keep
            }
            OP_RW if self.state == State::Established => self.write_from_guest(&p.payload),
            OP_CREDIT_UPDATE => Verdict::Keep,
            OP_CREDIT_REQUEST => {
                self.owed.credit_update = true;
                Verdict::Keep
            }
            OP_SHUTDOWN => {
                self.peer_shut_rcv |= h.flags & SHUTDOWN_RCV != 0;
                self.peer_shut_send |= h.flags & SHUTDOWN_SEND != 0;
                // Whatever the guest sent before still goes to the host; `flush` half-closes
                // the host socket once the buffer is empty.
                if self.flush().is_err() {
                    return Verdict::Close { send_rst: true };
                }
                if self.done() {
                    return Verdict::Close { send_rst: true };
                }
                Verdict::Keep
            }
            OP_RST => Verdict::Close { send_rst: false },
            _ => Verdict::Close { send_rst: true },
        }
    }

    fn write_from_guest(&mut self, payload: &[u8]) -> Verdict {
        if self.tx_buf.len() + payload.len() > TX_BUF_SIZE as usize {
            return Verdict::OverCredit;
        }
        let mut rest = payload;
        if self.tx_buf.is_empty() {
            match self.stream.write(rest) {
                Ok(n) => {
                    self.fwd_cnt += n as u32;
                    rest = &rest[n..];
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => return Verdict::Close { send_rst: true },
            }
        }
        self.tx_buf.extend(rest);
        self.maybe_owe_credit();
        Verdict::Keep
    }

    fn maybe_owe_credit(&mut self) {
        if (self.fwd_cnt - self.last_fwd_cnt_sent).0 >= TX_BUF_SIZE / 4 {
            self.owed.credit_update = true;
        }
    }

    /// The guest shut both directions and everything it sent reached the host: the
    /// connection can go (with an RST, which the guest waits for).
    pub fn done(&self) -> bool {
        self.peer_shut_rcv && self.peer_shut_send && self.tx_buf.is_empty()
    }

    /// Writes buffered guest bytes to the host socket; an error means the host side is gone.
    pub fn flush(&mut self) -> std::io::Result<()> {
        while !self.tx_buf.is_empty() {
            let (front, _) = self.tx_buf.as_slices();
            match self.stream.write(front) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.tx_buf.drain(..n);
                    self.fwd_cnt += n as u32;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        self.maybe_owe_credit();
        if self.tx_buf.is_empty() && self.peer_shut_send {
            let _ = self.stream.shutdown(std::net::Shutdown::Write);
        }
        Ok(())
    }

    /// The next packet for the guest, with its payload in `buf`: an owed control packet, else
    /// data read from the host socket (at most `room` bytes and the guest's credit). None when
    /// there is nothing to send now.
    pub fn next_for_guest(&mut self, room: usize, buf: &mut [u8]) -> Option<(Header, usize)> {
        if self.owed.request {
            self.owed.request = false;
            return Some((self.header(OP_REQUEST, 0), 0));
        }
        if self.owed.response {
            self.owed.response = false;
            return Some((self.header(OP_RESPONSE, 0), 0));
        }
        if self.owed.shutdown != 0 {
            let flags = std::mem::take(&mut self.owed.shutdown);
            if flags == SHUTDOWN_RCV | SHUTDOWN_SEND {
                self.set_state(State::Closing);
            }
            return Some((self.header(OP_SHUTDOWN, flags), 0));
        }
        if self.owed.credit_update {
            self.owed.credit_update = false;
            return Some((self.header(OP_CREDIT_UPDATE, 0), 0));
        }
        if !self.wants_read() {
            return None;
        }
        let want = room.min(self.peer_credit() as usize).min(buf.len());
        if want == 0 {
            // No room for a byte (an RX buffer of just a header): a read of nothing would
            // look like the host's end of stream.
            return None;
        }
        match self.stream.read(&mut buf[..want]) {
            Ok(0) => {
                // The host will send no more (it may still read): a half close.
                self.host_eof = true;
                self.owed.shutdown = SHUTDOWN_SEND;
                self.next_for_guest(room, buf)
            }
            Ok(n) => {
                self.rx_cnt += n as u32;
                Some((self.header(OP_RW, 0), n))
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => None,
            Err(_) => {
                // The host socket is broken: both directions are over.
                self.host_eof = true;
                self.owed.shutdown = SHUTDOWN_RCV | SHUTDOWN_SEND;
                self.next_for_guest(room, buf)
            }
        }
    }
}

/// An RST to the guest for a packet that has no connection.
pub fn rst_for(h: &Header) -> Header {
    Header {
        src_cid: h.dst_cid,
        dst_cid: h.src_cid,
        src_port: h.dst_port,
        dst_port: h.src_port,
        len: 0,
        kind: TYPE_STREAM,
        op: OP_RST,
        flags: 0,
        buf_alloc: 0,
        fwd_cnt: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn pair() -> (UnixStream, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        (a, b)
    }

    fn guest(op: u16, buf_alloc: u32, fwd_cnt: u32, payload: &[u8]) -> Packet {
        Packet {
            header: Header {
                src_cid: 3,
                dst_cid: HOST_CID,
                src_port: 5000,
                dst_port: 1024,
                len: payload.len() as u32,
                kind: TYPE_STREAM,
                op,
                flags: 0,
                buf_alloc,
                fwd_cnt,
            },
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn host_initiated_sends_request_then_ok_on_response() {
        let (ours, mut theirs) = pair();
        let mut c = Connection::host_initiated(ours, 1 << 30, 1024, 3);
        let mut buf = [0u8; 64];
        let (h, n) = c.next_for_guest(4096, &mut buf).unwrap();
        assert_eq!(
            (h.op, n, { h.dst_port }, { h.src_cid }),
            (OP_REQUEST, 0, 1024, HOST_CID)
        );
        assert_eq!(c.state(), State::Connecting);
        assert_eq!(
            c.on_packet(&guest(OP_RESPONSE, 4096, 0, b"")),
            Verdict::Keep
        );
        assert_eq!(c.state(), State::Established);
        let mut line = [0u8; 14];
        theirs.read_exact(&mut line).unwrap();
        assert_eq!(&line, b"OK 1073741824\n");
    }

    #[test]
    fn an_rx_buffer_with_no_room_for_data_is_not_the_hosts_end() {
        let (ours, mut theirs) = pair();
        let req = guest(OP_REQUEST, 4096, 0, b"").header;
        let mut c = Connection::guest_initiated(ours, &req, 3);
        let mut buf = [0u8; 64];
        let op = { c.next_for_guest(4096, &mut buf).unwrap().0.op };
        assert_eq!(op, OP_RESPONSE);
        theirs.write_all(b"data").unwrap();
        // A buffer of just a header: nothing to send, and no shutdown owed.
        assert!(c.next_for_guest(0, &mut buf).is_none());
        let (h, n) = c.next_for_guest(4096, &mut buf).unwrap();
        let op = { h.op };
        assert_eq!((op, &buf[..n]), (OP_RW, &b"data"[..]));
    }

    #[test]
    fn data_flows_both_ways_within_credit() {
        let (ours, mut theirs) = pair();
        let req = guest(OP_REQUEST, 8, 0, b"").header;
        let mut c = Connection::guest_initiated(ours, &req, 3);
        let mut buf = [0u8; 64];
        assert_eq!(
            { c.next_for_guest(4096, &mut buf).unwrap().0.op },
            OP_RESPONSE
        );
        // Guest → host.
        assert_eq!(c.on_packet(&guest(OP_RW, 8, 0, b"ping")), Verdict::Keep);
        let mut got = [0u8; 4];
        theirs.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        // Host → guest, limited to the guest's 8 bytes of credit.
        theirs.write_all(b"0123456789").unwrap();
        let (h, n) = c.next_for_guest(4096, &mut buf).unwrap();
        assert_eq!((h.op, n), (OP_RW, 8));
        assert_eq!(&buf[..8], b"01234567");
        assert_eq!(c.peer_credit(), 0);
        assert!(!c.wants_read());
        // The guest consumed them and says so.
        c.on_packet(&guest(OP_CREDIT_UPDATE, 8, 8, b""));
        let (_, n) = c.next_for_guest(4096, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"89");
    }

    #[test]
    fn a_guest_that_ignores_credit_is_reset() {
        let (ours, _theirs) = pair();
        let req = guest(OP_REQUEST, 8, 0, b"").header;
        let mut c = Connection::guest_initiated(ours, &req, 3);
        // Nobody reads `_theirs`: fill the socket buffer, then the device buffer.
        let big = vec![7u8; 60 * 1024];
        let mut verdict = Verdict::Keep;
        for _ in 0..200 {
            verdict = c.on_packet(&guest(OP_RW, 8, 0, &big));
            if verdict != Verdict::Keep {
                break;
            }
        }
        assert_eq!(verdict, Verdict::OverCredit);
    }

    #[test]
    fn host_eof_owes_shutdown_and_guest_shutdown_closes() {
        let (ours, theirs) = pair();
        let req = guest(OP_REQUEST, 4096, 0, b"").header;
        let mut c = Connection::guest_initiated(ours, &req, 3);
        let mut buf = [0u8; 64];
        c.next_for_guest(4096, &mut buf);
        drop(theirs);
        let (h, _) = c.next_for_guest(4096, &mut buf).unwrap();
        assert_eq!(
            (h.op, { h.flags }),
            (OP_SHUTDOWN, SHUTDOWN_SEND),
            "a half close"
        );
        assert_eq!(c.state(), State::Established, "the guest may still send");
        assert_eq!(
            c.on_packet(&guest(OP_RST, 0, 0, b"")),
            Verdict::Close { send_rst: false }
        );

        let (ours, _theirs) = pair();
        let mut c = Connection::guest_initiated(ours, &req, 3);
        let mut shut = guest(OP_SHUTDOWN, 4096, 0, b"");
        shut.header.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
        assert_eq!(c.on_packet(&shut), Verdict::Close { send_rst: true });
    }

    #[test]
    fn host_half_close_lets_the_guest_answer_before_closing() {
        let (ours, mut theirs) = pair();
        let req = guest(OP_REQUEST, 4096, 0, b"").header;
        let mut c = Connection::guest_initiated(ours, &req, 3);
        let mut buf = [0u8; 64];
        c.next_for_guest(4096, &mut buf);
        theirs.write_all(b"abc").unwrap();
        theirs.shutdown(std::net::Shutdown::Write).unwrap();
        let (h, n) = c.next_for_guest(4096, &mut buf).unwrap();
        assert_eq!((h.op, &buf[..n]), (OP_RW, &b"abc"[..]));
        let (h, _) = c.next_for_guest(4096, &mut buf).unwrap();
        assert_eq!((h.op, { h.flags }), (OP_SHUTDOWN, SHUTDOWN_SEND));
        assert_eq!(c.on_packet(&guest(OP_RW, 4096, 3, b"abc")), Verdict::Keep);
        let mut shut = guest(OP_SHUTDOWN, 4096, 3, b"");
        shut.header.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
        assert_eq!(c.on_packet(&shut), Verdict::Close { send_rst: true });
        let mut back = Vec::new();
        drop(c);
        theirs.read_to_end(&mut back).unwrap();
        assert_eq!(back, b"abc");
    }

    #[test]
    fn credit_request_is_answered_and_rst_reverses_the_ports() {
        let (ours, _theirs) = pair();
        let req = guest(OP_REQUEST, 4096, 0, b"").header;
        let mut c = Connection::guest_initiated(ours, &req, 3);
        let mut buf = [0u8; 8];
        c.next_for_guest(4096, &mut buf);
        c.on_packet(&guest(OP_CREDIT_REQUEST, 4096, 0, b""));
        let (h, _) = c.next_for_guest(4096, &mut buf).unwrap();
        assert_eq!((h.op, { h.buf_alloc }), (OP_CREDIT_UPDATE, TX_BUF_SIZE));
        let r = rst_for(&req);
        assert_eq!(
            ({ r.src_port }, { r.dst_port }, { r.dst_cid }, r.op),
            (1024, 5000, 3, OP_RST)
        );
    }
}
