//! The host's own copy of a FUSE request: the device-readable part of a guest's chain, copied
//! once into memory the guest cannot reach. The guard checks that copy and the server parses
//! it, so a second vCPU rewriting the request in guest memory after the check changes neither
//! (no time-of-check to time-of-use race). Replies still go straight to the guest's buffers.

use fuse_backend_rs::api::server::MAX_BUFFER_SIZE;
use fuse_backend_rs::transport::Reader;
use virtio_queue::desc::{RawDescriptor, split::Descriptor as SplitDescriptor};
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap};

/// Largest request copied: the server's largest buffer and a page for header and arguments
/// (the server refuses longer requests, so nothing it would read is cut off).
pub const MAX_REQUEST: usize = MAX_BUFFER_SIZE as usize + 4096;
/// A one-entry split ring at the start of the copy's memory presents the copy to the server
/// as a descriptor chain (fuse-backend-rs reads requests only from chains): the descriptor,
/// then the available ring, then the used ring.
const DESC: u64 = 0;
const AVAIL: u64 = 16;
const USED: u64 = 24;
/// Where the request's bytes go.
const DATA: u64 = 0x1000;

/// Errors copying a request.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("allocating the {MAX_REQUEST}-byte request buffer")]
    Memory(#[source] vm_memory::mmap::FromRangesError),
    #[error("a buffer of the request lies outside guest memory")]
    Outside(#[source] vm_memory::GuestMemoryError),
    #[error("presenting the request copy to the server")]
    Ring,
}

/// One request's bytes in host memory; reused for the next request.
pub struct RequestCopy {
    mem: GuestMemoryMmap,
    len: usize,
}

impl RequestCopy {
    pub fn new() -> Result<Self, RequestError> {
        let size = DATA as usize + MAX_REQUEST;
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)])
            .map_err(RequestError::Memory)?;
        // One chain available, at descriptor 0.
        mem.write_obj(1u16.to_le(), GuestAddress(AVAIL + 2))
            .map_err(|_| RequestError::Ring)?;
        Ok(Self { mem, len: 0 })
    }

    /// Copies the readable descriptors of `chain` (up to [`MAX_REQUEST`] bytes) from guest
    /// memory; returns the length copied.
    pub fn fill(
        &mut self,
        guest: &GuestMemoryMmap,
        chain: &DescriptorChain<&GuestMemoryMmap>,
    ) -> Result<usize, RequestError> {
        self.len = 0;
        for d in chain.clone().readable() {
            let n = (d.len() as usize).min(MAX_REQUEST - self.len);
            if n == 0 {
                continue;
            }
            let src = guest
                .get_slice(d.addr(), n)
                .map_err(RequestError::Outside)?;
            let dst = self
                .mem
                .get_slice(GuestAddress(DATA + self.len as u64), n)
                .map_err(|_| RequestError::Ring)?;
            src.copy_to_volatile_slice(dst);
            self.len += n;
        }
        Ok(self.len)
    }

    /// The copy's first bytes, as many as fit in `buf`.
    pub fn peek<'b>(&self, buf: &'b mut [u8]) -> &'b [u8] {
        let n = buf.len().min(self.len);
        match self.mem.read_slice(&mut buf[..n], GuestAddress(DATA)) {
            Ok(()) => &buf[..n],
            Err(_) => &[],
        }
    }

    /// A reader over the copy, for the server.
    pub fn reader(&self) -> Result<Reader<'_>, RequestError> {
        let desc = SplitDescriptor::new(DATA, self.len as u32, 0, 0);
        self.mem
            .write_obj(RawDescriptor::from(desc), GuestAddress(DESC))
            .map_err(|_| RequestError::Ring)?;
        let mut queue = Queue::new(1).map_err(|_| RequestError::Ring)?;
        queue.set_desc_table_address(Some(DESC as u32), Some(0));
        queue.set_avail_ring_address(Some(AVAIL as u32), Some(0));
        queue.set_used_ring_address(Some(USED as u32), Some(0));
        queue.set_ready(true);
        let chain = queue
            .iter(&self.mem)
            .ok()
            .and_then(|mut it| it.next())
            .ok_or(RequestError::Ring)?;
        Reader::from_descriptor_chain(&self.mem, chain).map_err(|_| RequestError::Ring)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::test_utils::{chain, desc, mem};
    use std::io::Read;
    use virtio_bindings::bindings::virtio_ring::VRING_DESC_F_WRITE;

    #[test]
    fn the_server_reads_the_copy_not_guest_memory() {
        let m = mem();
        m.write_slice(b"hello ", GuestAddress(0x1_0000)).unwrap();
        m.write_slice(b"world", GuestAddress(0x2_0000)).unwrap();
        let c = chain(
            &m,
            &[
                desc(0x1_0000, 6, 0),
                desc(0x2_0000, 5, 0),
                desc(0x3_0000, 64, VRING_DESC_F_WRITE),
            ],
        );
        let mut copy = RequestCopy::new().unwrap();
        assert_eq!(copy.fill(&m, &c).unwrap(), 11);
        m.write_slice(b"HELLO WORLD", GuestAddress(0x1_0000))
            .unwrap();
        let mut peek = [0u8; 8];
        assert_eq!(copy.peek(&mut peek), b"hello wo");
        let mut all = Vec::new();
        copy.reader().unwrap().read_to_end(&mut all).unwrap();
        assert_eq!(all, b"hello world");
        // Reused for the next request, shorter: nothing of the first shows through.
        m.write_slice(b"bye", GuestAddress(0x1_0000)).unwrap();
        let c = chain(&m, &[desc(0x1_0000, 3, 0)]);
        assert_eq!(copy.fill(&m, &c).unwrap(), 3);
        let mut all = Vec::new();
        copy.reader().unwrap().read_to_end(&mut all).unwrap();
        assert_eq!(all, b"bye");
    }

    #[test]
    fn buffers_outside_guest_memory_are_refused_and_long_ones_cut_at_the_cap() {
        let m = mem();
        let mut copy = RequestCopy::new().unwrap();
        let outside = chain(&m, &[desc(0x7000_0000, 16, 0)]);
        assert!(matches!(
            copy.fill(&m, &outside),
            Err(RequestError::Outside(_))
        ));
        let big = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        let long = chain(&big, &[desc(0x10_0000, 3 << 20, 0)]);
        assert_eq!(copy.fill(&big, &long).unwrap(), MAX_REQUEST);
    }
}
