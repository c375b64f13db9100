//! virtio-vsock packets: the 44-byte header and payload, read from a guest TX chain and
//! written into a guest RX chain, with every length checked against the chain.

use std::io::{Read, Write};

use virtio_queue::{DescriptorChain, Reader, Writer};
use vm_memory::{ByteValued, GuestMemoryMmap};

/// Largest payload the device accepts in one TX packet or puts in one RX packet.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Size of the header on the wire.
pub const HEADER_SIZE: usize = size_of::<Header>();

pub const TYPE_STREAM: u16 = 1;
pub const OP_REQUEST: u16 = 1;
pub const OP_RESPONSE: u16 = 2;
pub const OP_RST: u16 = 3;
pub const OP_SHUTDOWN: u16 = 4;
pub const OP_RW: u16 = 5;
pub const OP_CREDIT_UPDATE: u16 = 6;
pub const OP_CREDIT_REQUEST: u16 = 7;
/// SHUTDOWN flags: the sender will receive no more / send no more.
pub const SHUTDOWN_RCV: u32 = 1;
pub const SHUTDOWN_SEND: u32 = 2;

/// The packet header (virtio 1.2, 5.10.6), little-endian on the wire.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
#[repr(C, packed)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub kind: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

#[allow(unsafe_code)]
// SAFETY: Header is repr(C, packed) and made only of integers, so it has no padding and every
// byte pattern is a valid value.
unsafe impl ByteValued for Header {}

/// Why a TX chain was not a packet.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PacketError {
    #[error("the descriptor chain points outside guest memory or is malformed")]
    BadChain,
    #[error("the chain holds {0} bytes, less than a packet header")]
    ShortHeader(usize),
    #[error("the header says {said} payload bytes; the chain holds {held}")]
    LengthMismatch { said: u32, held: usize },
    #[error("payload of {0} bytes is larger than {MAX_PAYLOAD}")]
    TooLarge(u32),
    #[error("the RX chain has room for {0} bytes, less than a packet header")]
    NoRoom(usize),
}

/// A packet from the guest: header and payload.
#[derive(Debug, PartialEq, Eq)]
pub struct Packet {
    pub header: Header,
    pub payload: Vec<u8>,
}

/// Reads a packet from a TX chain (device-readable descriptors only).
pub fn read_tx(
    chain: DescriptorChain<&GuestMemoryMmap>,
    mem: &GuestMemoryMmap,
) -> Result<Packet, PacketError> {
    let mut reader = Reader::new(mem, chain).map_err(|_| PacketError::BadChain)?;
    let held = reader.available_bytes();
    if held < HEADER_SIZE {
        return Err(PacketError::ShortHeader(held));
    }
    let header: Header = reader.read_obj().map_err(|_| PacketError::BadChain)?;
    let len = header.len;
    if len as usize > MAX_PAYLOAD {
        return Err(PacketError::TooLarge(len));
    }
    let held = reader.available_bytes();
    if (len as usize) > held {
        return Err(PacketError::LengthMismatch { said: len, held });
    }
    let mut payload = vec![0u8; len as usize];
    reader
        .read_exact(&mut payload)
        .map_err(|_| PacketError::BadChain)?;
    Ok(Packet { header, payload })
}

/// Room for payload in an RX chain (its writable bytes after the header).
pub fn rx_room(
    chain: &DescriptorChain<&GuestMemoryMmap>,
    mem: &GuestMemoryMmap,
) -> Result<usize, PacketError> {
    let writer = Writer::new(mem, chain.clone()).map_err(|_| PacketError::BadChain)?;
    let room = writer.available_bytes();
    room.checked_sub(HEADER_SIZE)
        .map(|r| r.min(MAX_PAYLOAD))
        .ok_or(PacketError::NoRoom(room))
}

/// Writes header and payload into an RX chain; returns the bytes written (the used length).
/// The header's `len` is set from the payload.
pub fn write_rx(
    chain: DescriptorChain<&GuestMemoryMmap>,
    mem: &GuestMemoryMmap,
    mut header: Header,
    payload: &[u8],
) -> Result<u32, PacketError> {
    let mut writer = Writer::new(mem, chain).map_err(|_| PacketError::BadChain)?;
    let room = writer.available_bytes();
    if room < HEADER_SIZE + payload.len() {
        return Err(PacketError::NoRoom(room));
    }
    header.len = payload.len() as u32;
    writer
        .write_obj(header)
        .map_err(|_| PacketError::BadChain)?;
    writer
        .write_all(payload)
        .map_err(|_| PacketError::BadChain)?;
    Ok((HEADER_SIZE + payload.len()) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use vm_memory::{Bytes, GuestAddress};

    pub const HDR: u64 = 0x10000;
    pub const DATA: u64 = 0x11000;
    use crate::devices::virtio::test_utils::{chain, desc, mem};

    fn rw(len: u32) -> Header {
        Header {
            src_cid: 3,
            dst_cid: 2,
            src_port: 1234,
            dst_port: 1024,
            len,
            kind: TYPE_STREAM,
            op: OP_RW,
            ..Default::default()
        }
    }

    #[test]
    fn header_is_44_bytes() {
        assert_eq!(HEADER_SIZE, 44);
    }

    #[test]
    fn tx_packet_with_payload_in_a_second_descriptor() {
        let m = mem();
        m.write_obj(rw(5), GuestAddress(HDR)).unwrap();
        m.write_slice(b"hello", GuestAddress(DATA)).unwrap();
        let c = chain(&m, &[desc(HDR, 44, VRING_DESC_F_NEXT), desc(DATA, 5, 0)]);
        let p = read_tx(c, &m).unwrap();
        assert_eq!(p.payload, b"hello");
        assert_eq!({ p.header.src_port }, 1234);
    }

    #[test]
    fn malformed_tx_chains_are_errors() {
        let m = mem();
        m.write_obj(rw(100), GuestAddress(HDR)).unwrap();
        let c = chain(&m, &[desc(HDR, 44, VRING_DESC_F_NEXT), desc(DATA, 5, 0)]);
        assert_eq!(
            read_tx(c, &m),
            Err(PacketError::LengthMismatch { said: 100, held: 5 })
        );
        let c = chain(&m, &[desc(HDR, 20, 0)]);
        assert_eq!(read_tx(c, &m), Err(PacketError::ShortHeader(20)));
        let c = chain(&m, &[desc(0x7000_0000, 44, 0)]);
        assert_eq!(read_tx(c, &m), Err(PacketError::BadChain));
        m.write_obj(rw(u32::MAX), GuestAddress(HDR)).unwrap();
        let c = chain(&m, &[desc(HDR, 44, 0)]);
        assert_eq!(read_tx(c, &m), Err(PacketError::TooLarge(u32::MAX)));
    }

    #[test]
    fn rx_packet_fills_header_and_payload() {
        let m = mem();
        let c = chain(
            &m,
            &[
                desc(HDR, 44, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT),
                desc(DATA, 4096, VRING_DESC_F_WRITE),
            ],
        );
        assert_eq!(rx_room(&c, &m).unwrap(), 4096);
        let used = write_rx(c, &m, rw(0), b"abc").unwrap();
        assert_eq!(used, 47);
        let h: Header = m.read_obj(GuestAddress(HDR)).unwrap();
        assert_eq!({ h.len }, 3);
        let mut b = [0u8; 3];
        m.read_slice(&mut b, GuestAddress(DATA)).unwrap();
        assert_eq!(&b, b"abc");
        let small = chain(&m, &[desc(HDR, 30, VRING_DESC_F_WRITE)]);
        assert_eq!(rx_room(&small, &m), Err(PacketError::NoRoom(30)));
    }
}
