//! The agent's side of each API connection, shaped for ttrpc's framing: reads come from a
//! buffer (a request's header and body in one receive, not two plus a would-block probe), and a
//! reply leaves in one send. ttrpc writes a message as five writes (two `u32`s and two `u8`s of
//! header, a flush, then the payload); each would be its own system call, and in this machine's
//! guests every one is an emulated kernel entry. [`Coalesce`] keeps the ten header bytes and
//! sends them with the payload's first bytes; it never holds payload bytes, so memory stays
//! bounded whatever length the header names.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, BufReader, ReadBuf};

/// ttrpc's message header: length (u32 BE), stream id (u32 BE), type, flags.
const HEADER: usize = 10;
/// At most this many payload bytes are copied next to the header for the combined send.
const FIRST_SEND: usize = 64 * 1024;
/// The read buffer: a request's header and (usually) whole body in one receive.
const READ_BUFFER: usize = 16 * 1024;

/// A connection as the ttrpc server gets it: buffered reads, one send per message.
pub type Framed<S> = BufReader<Coalesce<S>>;

pub fn framed<S: AsyncRead + AsyncWrite + Unpin>(stream: S) -> Framed<S> {
    BufReader::with_capacity(READ_BUFFER, Coalesce::new(stream))
}

/// Sends a ttrpc message's header together with its payload.
#[derive(Debug)]
pub struct Coalesce<S> {
    inner: S,
    head: [u8; HEADER],
    /// Header bytes of the current message accepted from the writer.
    seen: usize,
    /// Of those, already sent.
    sent: usize,
    /// Payload bytes of the current message not yet accepted (known once `seen == HEADER`).
    body_left: usize,
}

impl<S> Coalesce<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            head: [0; HEADER],
            seen: 0,
            sent: 0,
            body_left: 0,
        }
    }

    /// The message is wholly sent: the next byte starts a new header.
    fn next_message(&mut self) {
        if self.seen == HEADER && self.sent == HEADER && self.body_left == 0 {
            self.seen = 0;
            self.sent = 0;
        }
    }
}

impl<S: AsyncWrite + Unpin> Coalesce<S> {
    /// Sends the header bytes accepted but not yet sent.
    fn poll_send_head(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.seen {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.head[self.sent..self.seen]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.next_message();
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesce<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            this.next_message();
            if this.seen < HEADER {
                // Collecting the header: kept, not sent.
                let take = (HEADER - this.seen).min(buf.len());
                this.head[this.seen..this.seen + take].copy_from_slice(&buf[..take]);
                this.seen += take;
                if this.seen == HEADER {
                    let len = u32::from_be_bytes([
                        this.head[0],
                        this.head[1],
                        this.head[2],
                        this.head[3],
                    ]);
                    this.body_left = len as usize;
                }
                return Poll::Ready(Ok(take));
            }
            if this.sent < HEADER {
                // The rest of the header and the payload's first bytes, in one send.
                let take = buf.len().min(this.body_left).min(FIRST_SEND);
                let mut out = Vec::with_capacity(HEADER - this.sent + take);
                out.extend_from_slice(&this.head[this.sent..]);
                out.extend_from_slice(&buf[..take]);
                let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &out))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                let head_part = HEADER - this.sent;
                if n < head_part {
                    this.sent += n;
                    continue;
                }
                this.sent = HEADER;
                let accepted = n - head_part;
                this.body_left -= accepted;
                if accepted > 0 || buf.is_empty() {
                    return Poll::Ready(Ok(accepted));
                }
                continue;
            }
            // Header sent: the payload passes through.
            let take = buf.len().min(this.body_left);
            let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &buf[..take]))?;
            this.body_left -= n;
            return Poll::Ready(Ok(n));
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // A complete header whose payload is still to come is kept: ttrpc flushes after the
        // header and writes the payload next, which takes the header with it.
        let payload_follows = this.seen == HEADER && this.body_left > 0;
        if !payload_follows {
            ready!(this.poll_send_head(cx))?;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_head(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesce<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Records each write the connection makes; accepts at most `chunk` bytes a call.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        chunk: Option<usize>,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = self.chunk.unwrap_or(buf.len()).min(buf.len());
            self.get_mut().writes.push(buf[..n].to_vec());
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn message(stream: u32, payload: &[u8]) -> ttrpc::proto::GenMessage {
        ttrpc::proto::GenMessage {
            header: ttrpc::MessageHeader {
                length: payload.len() as u32,
                stream_id: stream,
                type_: ttrpc::proto::MESSAGE_TYPE_RESPONSE,
                flags: 0,
            },
            payload: payload.to_vec(),
        }
    }

    fn encoded(m: &ttrpc::proto::GenMessage) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&m.header.length.to_be_bytes());
        v.extend_from_slice(&m.header.stream_id.to_be_bytes());
        v.extend_from_slice(&[m.header.type_, m.header.flags]);
        v.extend_from_slice(&m.payload);
        v
    }

    #[tokio::test]
    async fn each_ttrpc_message_leaves_in_one_write() {
        let messages = [
            message(1, b"reply one"),
            message(3, b""),
            message(5, &[7; 300]),
        ];
        let mut c = Coalesce::new(Recorder::default());
        for m in &messages {
            // Exactly as ttrpc's server writes a reply.
            m.write_to(&mut c).await.unwrap();
        }
        let want: Vec<Vec<u8>> = messages.iter().map(encoded).collect();
        assert_eq!(
            c.inner.writes, want,
            "one write per message, bytes unchanged"
        );
    }

    #[tokio::test]
    async fn short_writes_keep_the_byte_stream_whole() {
        let messages = [
            message(1, b"abcdefghijklmnop"),
            message(3, b""),
            message(5, b"x"),
        ];
        for chunk in [1, 3, 10, 11, 17] {
            let mut c = Coalesce::new(Recorder {
                chunk: Some(chunk),
                ..Default::default()
            });
            for m in &messages {
                m.write_to(&mut c).await.unwrap();
            }
            c.flush().await.unwrap();
            let got: Vec<u8> = c.inner.writes.concat();
            let want: Vec<u8> = messages.iter().flat_map(encoded).collect();
            assert_eq!(got, want, "chunk {chunk}");
        }
    }

    #[tokio::test]
    async fn a_flushed_partial_header_is_sent_and_the_message_stays_framed() {
        let mut c = Coalesce::new(Recorder::default());
        c.write_all(&[0, 0, 0, 2, 0]).await.unwrap();
        c.flush().await.unwrap();
        c.write_all(&[0, 0, 9, 2, 0]).await.unwrap();
        c.write_all(b"hi").await.unwrap();
        assert_eq!(
            c.inner.writes,
            [vec![0, 0, 0, 2, 0], vec![0, 0, 9, 2, 0, b'h', b'i']]
        );
    }

    #[tokio::test]
    async fn a_request_is_read_from_one_buffer_fill() {
        let (client, server) = tokio::io::duplex(4096);
        let mut client = client;
        let m = message(1, b"a request body");
        client.write_all(&encoded(&m)).await.unwrap();
        let mut f = framed(server);
        let got = ttrpc::proto::GenMessage::read_from(&mut f).await.unwrap();
        assert_eq!(got, m);
        drop(client);
        let mut rest = Vec::new();
        f.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }
}
