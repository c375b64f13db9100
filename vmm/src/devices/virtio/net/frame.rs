//! Frames between descriptor chains and the tap: a TX chain's readable bytes are one frame
//! (virtio-net header, then the Ethernet frame); an RX frame is scattered over a chain's
//! writable descriptors. Every length is checked against the chain and the largest frame.

use virtio_queue::DescriptorChain;
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestMemoryMmap};

/// `struct virtio_net_hdr_v1` (VIRTIO_F_VERSION_1: `num_buffers` is always there).
pub const VNET_HDR_LEN: usize = 12;
/// The largest frame with its header: a 64 KiB GSO segment plus the Ethernet header.
pub const MAX_FRAME: usize = VNET_HDR_LEN + 65_550;
const NUM_BUFFERS_OFFSET: usize = 10;

/// A chain the device cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a descriptor points outside guest memory")]
    BadChain,
    #[error("the frame is {0} bytes, shorter than the virtio-net header")]
    Short(usize),
    #[error("the frame is larger than {MAX_FRAME} bytes")]
    TooLarge,
    #[error("a {frame}-byte frame does not fit the guest's {room}-byte buffer")]
    NoRoom { frame: usize, room: usize },
}

fn descriptors(
    chain: DescriptorChain<&GuestMemoryMmap>,
) -> impl Iterator<Item = Descriptor> + use<'_> {
    chain.into_iter()
}

/// Gathers a TX chain (its device-readable descriptors) into `buf`; returns the frame's
/// length, header included.
pub fn read_tx(
    chain: DescriptorChain<&GuestMemoryMmap>,
    mem: &GuestMemoryMmap,
    buf: &mut [u8],
) -> Result<usize, FrameError> {
    let mut len = 0usize;
    for d in descriptors(chain).filter(|d| !d.is_write_only()) {
        let n = d.len() as usize;
        let end = len.checked_add(n).ok_or(FrameError::TooLarge)?;
        let dst = buf.get_mut(len..end).ok_or(FrameError::TooLarge)?;
        mem.read_slice(dst, d.addr())
            .map_err(|_| FrameError::BadChain)?;
        len = end;
    }
    if len < VNET_HDR_LEN {
        return Err(FrameError::Short(len));
    }
    Ok(len)
}

/// Scatters `frame` (header included, as the tap gave it) over an RX chain's writable
/// descriptors and sets `num_buffers` to 1; returns the used length.
pub fn write_rx(
    chain: DescriptorChain<&GuestMemoryMmap>,
    mem: &GuestMemoryMmap,
    frame: &mut [u8],
) -> Result<u32, FrameError> {
    if frame.len() < VNET_HDR_LEN {
        return Err(FrameError::Short(frame.len()));
    }
    // The tap fills the 10-byte legacy header; the last field is the device's to set.
    frame[NUM_BUFFERS_OFFSET..VNET_HDR_LEN].copy_from_slice(&1u16.to_le_bytes());
    let writable: Vec<Descriptor> = descriptors(chain).filter(|d| d.is_write_only()).collect();
    let room: usize = writable.iter().map(|d| d.len() as usize).sum();
    if room < frame.len() {
        return Err(FrameError::NoRoom {
            frame: frame.len(),
            room,
        });
    }
    let mut done = 0usize;
    for d in writable {
        if done == frame.len() {
            break;
        }
        let n = (d.len() as usize).min(frame.len() - done);
        mem.write_slice(&frame[done..done + n], d.addr())
            .map_err(|_| FrameError::BadChain)?;
        done += n;
    }
    Ok(done as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::test_utils::{chain, desc, mem};
    use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use vm_memory::GuestAddress;

    const A: u64 = 0x10000;
    const B: u64 = 0x20000;

    #[test]
    fn tx_gathers_header_and_frame_from_two_descriptors() {
        let m = mem();
        m.write_slice(&[0u8; 12], GuestAddress(A)).unwrap();
        m.write_slice(b"ethernet frame", GuestAddress(B)).unwrap();
        let c = chain(&m, &[desc(A, 12, VRING_DESC_F_NEXT), desc(B, 14, 0)]);
        let mut buf = vec![0u8; MAX_FRAME];
        let n = read_tx(c, &m, &mut buf).unwrap();
        assert_eq!(n, 26);
        assert_eq!(&buf[12..26], b"ethernet frame");
    }

    #[test]
    fn tx_refuses_short_huge_and_stray_chains() {
        let m = mem();
        let mut buf = vec![0u8; MAX_FRAME];
        let c = chain(&m, &[desc(A, 8, 0)]);
        assert_eq!(read_tx(c, &m, &mut buf), Err(FrameError::Short(8)));
        let c = chain(
            &m,
            &[desc(A, 0x7_0000, VRING_DESC_F_NEXT), desc(B, 0x7_0000, 0)],
        );
        assert_eq!(read_tx(c, &m, &mut buf), Err(FrameError::TooLarge));
        let c = chain(&m, &[desc(0x7000_0000, 64, 0)]);
        assert_eq!(read_tx(c, &m, &mut buf), Err(FrameError::BadChain));
    }

    #[test]
    fn rx_scatters_and_sets_num_buffers() {
        let m = mem();
        let c = chain(
            &m,
            &[
                desc(A, 12, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT),
                desc(B, 4096, VRING_DESC_F_WRITE),
            ],
        );
        let mut frame = vec![0xffu8; 12];
        frame.extend_from_slice(b"payload");
        assert_eq!(write_rx(c, &m, &mut frame).unwrap(), 19);
        let mut hdr = [0u8; 12];
        m.read_slice(&mut hdr, GuestAddress(A)).unwrap();
        assert_eq!(&hdr[10..], &[1, 0], "num_buffers");
        let mut p = [0u8; 7];
        m.read_slice(&mut p, GuestAddress(B)).unwrap();
        assert_eq!(&p, b"payload");

        let small = chain(&m, &[desc(A, 16, VRING_DESC_F_WRITE)]);
        let mut big = vec![0u8; 100];
        assert_eq!(
            write_rx(small, &m, &mut big),
            Err(FrameError::NoRoom {
                frame: 100,
                room: 16
            })
        );
    }
}
