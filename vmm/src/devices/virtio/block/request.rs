//! One virtio-blk request taken from a descriptor chain: the 16-byte header from the readable
//! part, the data (readable for writes, writable for reads) and the status byte, the last
//! writable byte. Every length and bound is checked here; `device.rs` only does the I/O.

use std::io::{Read, Write};
use std::os::unix::fs::FileExt;

use virtio_queue::{DescriptorChain, Reader, Writer};
use vm_memory::{ByteValued, GuestMemoryMmap};

use super::SECTOR_SIZE;

/// Request types.
pub const VIRTIO_BLK_T_IN: u32 = 0;
pub const VIRTIO_BLK_T_OUT: u32 = 1;
pub const VIRTIO_BLK_T_FLUSH: u32 = 4;
pub const VIRTIO_BLK_T_GET_ID: u32 = 8;
/// Status values.
pub const VIRTIO_BLK_S_OK: u8 = 0;
pub const VIRTIO_BLK_S_IOERR: u8 = 1;
pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;
/// Length of the GET_ID answer.
pub const ID_BYTES: usize = 20;

#[derive(Clone, Copy, Default, Debug)]
#[repr(C)]
struct Header {
    kind: u32,
    _reserved: u32,
    sector: u64,
}

#[allow(unsafe_code)]
// SAFETY: Header is repr(C), made only of integers, with no padding (4 + 4 + 8 bytes), so
// every byte pattern is a valid value.
unsafe impl ByteValued for Header {}

/// Why a request could not be served; each maps to a status byte, or to no answer at all when
/// the chain has nowhere to put one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("the descriptor chain points outside guest memory or is malformed")]
    BadChain,
    #[error("the chain has no writable byte for the status")]
    NoStatus,
    #[error("the request header is shorter than 16 bytes")]
    ShortHeader,
    #[error("request type {0} is not supported")]
    Unsupported(u32),
    #[error("sectors {sector}+{bytes} bytes lie beyond the disk's {capacity} bytes")]
    OutOfRange {
        sector: u64,
        bytes: u64,
        capacity: u64,
    },
    #[error("write to a read-only disk")]
    ReadOnly,
    #[error("I/O on the backing file: {0}")]
    Io(String),
}

impl RequestError {
    fn status(&self) -> u8 {
        match self {
            RequestError::Unsupported(_) => VIRTIO_BLK_S_UNSUPP,
            _ => VIRTIO_BLK_S_IOERR,
        }
    }
}

/// The disk a request runs against.
pub struct Disk<'a> {
    pub file: &'a std::fs::File,
    pub capacity: u64,
    pub read_only: bool,
    pub id: &'a [u8],
}

/// Serves one chain; returns the number of bytes written into the chain (the used length),
/// or an error when not even a status byte could be written (used length 0).
pub fn serve(
    chain: DescriptorChain<&GuestMemoryMmap>,
    mem: &GuestMemoryMmap,
    disk: &Disk<'_>,
) -> Result<u32, RequestError> {
    let mut reader = Reader::new(mem, chain.clone()).map_err(|_| RequestError::BadChain)?;
    let mut writer = Writer::new(mem, chain).map_err(|_| RequestError::BadChain)?;
    let writable = writer.available_bytes();
    if writable == 0 {
        return Err(RequestError::NoStatus);
    }
    let mut status_writer = writer
        .split_at(writable - 1)
        .map_err(|_| RequestError::BadChain)?;
    let status = match run(&mut reader, &mut writer, disk) {
        Ok(()) => VIRTIO_BLK_S_OK,
        Err(e) => {
            tracing::debug!(error = %e, "virtio-blk request failed");
            e.status()
        }
    };
    status_writer
        .write_all(&[status])
        .map_err(|_| RequestError::BadChain)?;
    Ok((writer.bytes_written() + 1) as u32)
}

fn check_range(sector: u64, bytes: u64, capacity: u64) -> Result<u64, RequestError> {
    let offset = sector.checked_mul(SECTOR_SIZE);
    match offset.and_then(|o| o.checked_add(bytes).map(|end| (o, end))) {
        Some((o, end)) if end <= capacity => Ok(o),
        _ => Err(RequestError::OutOfRange {
            sector,
            bytes,
            capacity,
        }),
    }
}

fn io(e: std::io::Error) -> RequestError {
    RequestError::Io(e.to_string())
}

fn run(
    reader: &mut Reader<'_>,
    data_out: &mut Writer<'_>,
    disk: &Disk<'_>,
) -> Result<(), RequestError> {
    let header: Header = reader.read_obj().map_err(|_| RequestError::ShortHeader)?;
    match header.kind {
        VIRTIO_BLK_T_IN => {
            let len = data_out.available_bytes() as u64;
            let mut offset = check_range(header.sector, len, disk.capacity)?;
            let mut buf = vec![0u8; len.min(1 << 20) as usize];
            let mut left = len;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                disk.file.read_exact_at(&mut buf[..n], offset).map_err(io)?;
                data_out.write_all(&buf[..n]).map_err(io)?;
                offset += n as u64;
                left -= n as u64;
            }
            Ok(())
        }
        VIRTIO_BLK_T_OUT => {
            if disk.read_only {
                return Err(RequestError::ReadOnly);
            }
            let len = reader.available_bytes() as u64;
            let mut offset = check_range(header.sector, len, disk.capacity)?;
            let mut buf = vec![0u8; len.min(1 << 20) as usize];
            let mut left = len;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                reader.read_exact(&mut buf[..n]).map_err(io)?;
                disk.file.write_all_at(&buf[..n], offset).map_err(io)?;
                offset += n as u64;
                left -= n as u64;
            }
            Ok(())
        }
        VIRTIO_BLK_T_FLUSH => {
            if disk.read_only {
                return Ok(());
            }
            disk.file.sync_data().map_err(io)
        }
        VIRTIO_BLK_T_GET_ID => {
            let mut id = [0u8; ID_BYTES];
            let n = disk.id.len().min(ID_BYTES);
            id[..n].copy_from_slice(&disk.id[..n]);
            let room = data_out.available_bytes().min(ID_BYTES);
            data_out.write_all(&id[..room]).map_err(io)
        }
        other => Err(RequestError::Unsupported(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{RawDescriptor, split::Descriptor as SplitDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::{Queue, QueueOwnedT};
    use vm_memory::{Bytes, GuestAddress};

    const HDR: u64 = 0x10000;
    const DATA: u64 = 0x11000;
    const STATUS: u64 = 0x12000;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
    }

    fn desc(addr: u64, len: u32, flags: u32, next: u16) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags as u16, next))
    }

    /// Builds a chain header → data → status.
    fn chain(
        m: &GuestMemoryMmap,
        kind: u32,
        sector: u64,
        data_len: u32,
        data_writable: bool,
    ) -> DescriptorChain<&GuestMemoryMmap> {
        m.write_obj(
            Header {
                kind,
                _reserved: 0,
                sector,
            },
            GuestAddress(HDR),
        )
        .unwrap();
        let vq = MockSplitQueue::new(m, 16);
        let w = if data_writable { VRING_DESC_F_WRITE } else { 0 };
        let descs = [
            desc(HDR, 16, VRING_DESC_F_NEXT, 1),
            desc(DATA, data_len, w | VRING_DESC_F_NEXT, 2),
            desc(STATUS, 1, VRING_DESC_F_WRITE, 0),
        ];
        pop(m, &vq, &descs)
    }

    /// Writes `descs` as one chain into `vq`'s memory and pops it through a real `Queue`.
    fn pop<'m>(
        m: &'m GuestMemoryMmap,
        vq: &MockSplitQueue<'m, GuestMemoryMmap>,
        descs: &[RawDescriptor],
    ) -> DescriptorChain<&'m GuestMemoryMmap> {
        vq.build_desc_chain(descs).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        q.iter(m).unwrap().next().unwrap()
    }

    fn disk_file(bytes: &[u8]) -> std::fs::File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    fn status(m: &GuestMemoryMmap) -> u8 {
        m.read_obj(GuestAddress(STATUS)).unwrap()
    }

    #[test]
    fn read_copies_sectors_into_the_chain() {
        let m = mem();
        let mut content = vec![0u8; 2048];
        content[512..1024].fill(0xab);
        let f = disk_file(&content);
        let disk = Disk {
            file: &f,
            capacity: 2048,
            read_only: false,
            id: b"d",
        };
        let used = serve(chain(&m, VIRTIO_BLK_T_IN, 1, 512, true), &m, &disk).unwrap();
        assert_eq!(used, 513);
        assert_eq!(status(&m), VIRTIO_BLK_S_OK);
        let mut got = [0u8; 512];
        m.read_slice(&mut got, GuestAddress(DATA)).unwrap();
        assert!(got.iter().all(|b| *b == 0xab));
    }

    #[test]
    fn write_lands_in_the_file_and_read_only_refuses() {
        let m = mem();
        m.write_slice(&[0x5a; 512], GuestAddress(DATA)).unwrap();
        let f = disk_file(&[0u8; 2048]);
        let disk = Disk {
            file: &f,
            capacity: 2048,
            read_only: false,
            id: b"d",
        };
        let used = serve(chain(&m, VIRTIO_BLK_T_OUT, 3, 512, false), &m, &disk).unwrap();
        assert_eq!((used, status(&m)), (1, VIRTIO_BLK_S_OK));
        let mut back = [0u8; 512];
        f.read_exact_at(&mut back, 1536).unwrap();
        assert_eq!(back, [0x5a; 512]);
        let ro = Disk {
            read_only: true,
            ..disk
        };
        serve(chain(&m, VIRTIO_BLK_T_OUT, 0, 512, false), &m, &ro).unwrap();
        assert_eq!(status(&m), VIRTIO_BLK_S_IOERR);
        let mut first = [0u8; 512];
        f.read_exact_at(&mut first, 0).unwrap();
        assert_eq!(first, [0; 512], "read-only disk unchanged");
    }

    #[test]
    fn out_of_range_and_overflowing_sectors_are_io_errors() {
        let m = mem();
        let f = disk_file(&[0u8; 1024]);
        let disk = Disk {
            file: &f,
            capacity: 1024,
            read_only: false,
            id: b"d",
        };
        serve(chain(&m, VIRTIO_BLK_T_IN, 2, 512, true), &m, &disk).unwrap();
        assert_eq!(status(&m), VIRTIO_BLK_S_IOERR);
        serve(
            chain(&m, VIRTIO_BLK_T_IN, u64::MAX / 256, 512, true),
            &m,
            &disk,
        )
        .unwrap();
        assert_eq!(status(&m), VIRTIO_BLK_S_IOERR);
    }

    #[test]
    fn unknown_types_are_unsupported_and_get_id_answers() {
        let m = mem();
        let f = disk_file(&[0u8; 512]);
        let disk = Disk {
            file: &f,
            capacity: 512,
            read_only: false,
            id: b"rootdisk",
        };
        serve(chain(&m, 99, 0, 16, true), &m, &disk).unwrap();
        assert_eq!(status(&m), VIRTIO_BLK_S_UNSUPP);
        let used = serve(chain(&m, VIRTIO_BLK_T_GET_ID, 0, 20, true), &m, &disk).unwrap();
        assert_eq!((used, status(&m)), (21, VIRTIO_BLK_S_OK));
        let mut id = [0u8; 8];
        m.read_slice(&mut id, GuestAddress(DATA)).unwrap();
        assert_eq!(&id, b"rootdisk");
    }

    #[test]
    fn malformed_chains_are_rejected_without_panicking() {
        let m = mem();
        let f = disk_file(&[0u8; 512]);
        let disk = Disk {
            file: &f,
            capacity: 512,
            read_only: false,
            id: b"d",
        };
        // Status descriptor outside guest memory.
        let vq = MockSplitQueue::new(&m, 16);
        let c = vq
            .build_desc_chain(&[
                desc(HDR, 16, VRING_DESC_F_NEXT, 1),
                desc(0x7000_0000, 1, VRING_DESC_F_WRITE, 0),
            ])
            .unwrap();
        assert_eq!(serve(c, &m, &disk), Err(RequestError::BadChain));
        // No writable descriptor at all.
        let vq = MockSplitQueue::new(&m, 16);
        let c = pop(&m, &vq, &[desc(HDR, 16, 0, 0)]);
        assert_eq!(serve(c, &m, &disk), Err(RequestError::NoStatus));
        // A header shorter than 16 bytes gets an I/O error status.
        let vq = MockSplitQueue::new(&m, 16);
        let c = vq
            .build_desc_chain(&[
                desc(HDR, 8, VRING_DESC_F_NEXT, 1),
                desc(STATUS, 1, VRING_DESC_F_WRITE, 0),
            ])
            .unwrap();
        assert_eq!(serve(c, &m, &disk), Ok(1));
        assert_eq!(status(&m), VIRTIO_BLK_S_IOERR);
    }
}
