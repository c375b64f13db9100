//! What the fuzz targets share: a guest's descriptor chain made from fuzz bytes, and a guest's
//! whole split ring ([`Ring`]) for the targets that offer many chains.
//!
//! [`with_chain`]'s input layout (`seeds.py` writes valid examples): bytes 0..256 are the raw
//! split-ring descriptor table (16 descriptors of addr u64, len u32, flags u16, next u16:
//! indirect tables, loops and wild addresses included), byte 256 picks the head, and the rest
//! is copied into guest memory at [`DATA`] for the descriptors to point at. The chain is
//! popped the way the devices pop theirs (`hako_vmm::devices::virtio::queue::pop`).

use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{DescriptorChain, Queue};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

/// Guest memory size.
pub const MEMORY: usize = 0x4_0000;
/// Where the input's payload lands in guest memory.
pub const DATA: u64 = 0x1000;
const TABLE: usize = 16 * 16;
const QUEUE_SIZE: u16 = 16;

/// Runs `f` on the chain `data` describes; does nothing when there is none.
pub fn with_chain(
    data: &[u8],
    f: impl FnOnce(&GuestMemoryMmap, DescriptorChain<&GuestMemoryMmap>),
) {
    let Ok(mem) = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEMORY)]) else {
        return;
    };
    let vq = MockSplitQueue::new(&mem, QUEUE_SIZE);
    let table = data.get(..TABLE).unwrap_or(data);
    let head = data.get(TABLE).copied().unwrap_or(0) as u16 % QUEUE_SIZE;
    let payload = data.get(TABLE + 1..).unwrap_or_default();
    let payload = &payload[..payload.len().min(MEMORY - DATA as usize)];
    if mem.write_slice(table, vq.desc_table_addr()).is_err()
        || mem.write_slice(payload, GuestAddress(DATA)).is_err()
        // One chain available, starting at `head`.
        || mem.write_obj(head.to_le(), vq.avail_addr().unchecked_add(4)).is_err()
        || mem.write_obj(1u16.to_le(), vq.avail_addr().unchecked_add(2)).is_err()
    {
        return;
    }
    let Ok(mut q) = vq.create_queue::<Queue>() else {
        return;
    };
    if let Some(chain) = hako_vmm::devices::virtio::queue::pop(&mut q, &mem) {
        f(&mem, chain);
    }
}

/// A guest driver's split ring of `size` entries laid out at `base` (descriptor table,
/// available ring, used ring), with the chains it has offered so far.
pub struct Ring {
    desc: GuestAddress,
    avail: GuestAddress,
    used: GuestAddress,
    size: u16,
}

impl Ring {
    /// The bytes of `table` become the descriptor table (the rest of it zeros).
    pub fn new(mem: &GuestMemoryMmap, base: GuestAddress, size: u16, table: &[u8]) -> Self {
        let n = u64::from(size);
        let avail = base.unchecked_add(16 * n);
        let used = avail.unchecked_add(6 + 2 * n).unchecked_align_up(4);
        let table = &table[..table.len().min(16 * size as usize)];
        let _ = mem.write_slice(table, base);
        Self {
            desc: base,
            avail,
            used,
            size,
        }
    }

    fn index(mem: &GuestMemoryMmap, at: GuestAddress) -> u16 {
        mem.read_obj::<u16>(at.unchecked_add(2))
            .map(u16::from_le)
            .unwrap_or(0)
    }

    /// Offers the chain at `head` if the ring has room (the device returned enough chains);
    /// false when it has none, as a driver then waits.
    pub fn offer(&self, mem: &GuestMemoryMmap, head: u16) -> bool {
        let idx = Self::index(mem, self.avail);
        if idx.wrapping_sub(self.used_idx(mem)) >= self.size {
            return false;
        }
        let slot = self.avail.unchecked_add(4 + 2 * u64::from(idx % self.size));
        mem.write_obj(head.to_le(), slot).is_ok()
            && mem
                .write_obj(idx.wrapping_add(1).to_le(), self.avail.unchecked_add(2))
                .is_ok()
    }

    pub fn used_idx(&self, mem: &GuestMemoryMmap) -> u16 {
        Self::index(mem, self.used)
    }

    /// The queue as the device gets it once the driver set it ready.
    pub fn queue(&self) -> Option<Queue> {
        use virtio_queue::QueueT;
        let mut q = Queue::new(self.size).ok()?;
        q.set_size(self.size);
        let split = |a: GuestAddress| (Some(a.0 as u32), Some((a.0 >> 32) as u32));
        let (lo, hi) = split(self.desc);
        q.set_desc_table_address(lo, hi);
        let (lo, hi) = split(self.avail);
        q.set_avail_ring_address(lo, hi);
        let (lo, hi) = split(self.used);
        q.set_used_ring_address(lo, hi);
        q.set_ready(true);
        Some(q)
    }
}
