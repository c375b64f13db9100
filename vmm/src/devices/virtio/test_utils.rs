//! Guest memory and descriptor chains for device unit tests (virtio-queue's mock queues).

use virtio_queue::desc::{RawDescriptor, split::Descriptor as SplitDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

/// 1 MiB of guest memory at 0.
pub fn mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
}

/// One split-ring descriptor (`next` is filled in by the mock queue).
pub fn desc(addr: u64, len: u32, flags: u32) -> RawDescriptor {
    RawDescriptor::from(SplitDescriptor::new(addr, len, flags as u16, 0))
}

/// A chain of `descs`, as a device pops it.
pub fn chain<'m>(
    m: &'m GuestMemoryMmap,
    descs: &[RawDescriptor],
) -> DescriptorChain<&'m GuestMemoryMmap> {
    let vq = MockSplitQueue::new(m, 16);
    vq.build_desc_chain(descs).unwrap();
    let mut q: Queue = vq.create_queue().unwrap();
    q.iter(m).unwrap().next().unwrap()
}

/// A split ring as a driver lays it out at `base`: descriptor table, available ring, used
/// ring, each aligned. (virtio-queue's mock puts the used ring over the upper half of the
/// available ring, which only chains offered one at a time survive.)
pub struct Ring {
    pub desc: GuestAddress,
    pub avail: GuestAddress,
    pub used: GuestAddress,
    pub size: u16,
}

impl Ring {
    pub fn new(base: GuestAddress, size: u16) -> Self {
        let n = u64::from(size);
        let avail = base.unchecked_add(16 * n);
        let used = avail.unchecked_add(6 + 2 * n).unchecked_align_up(4);
        Self {
            desc: base,
            avail,
            used,
            size,
        }
    }

    /// Writes descriptor `index` of the table.
    pub fn set_desc(&self, m: &GuestMemoryMmap, index: u16, d: RawDescriptor) {
        m.write_obj(d, self.desc.unchecked_add(16 * u64::from(index)))
            .unwrap();
    }

    /// Makes the chain at `head` available, as a driver does: ring entry, then index.
    pub fn offer(&self, m: &GuestMemoryMmap, head: u16) {
        let idx: u16 = m.read_obj(self.avail.unchecked_add(2)).unwrap();
        let slot = self.avail.unchecked_add(4 + 2 * u64::from(idx % self.size));
        m.write_obj(head, slot).unwrap();
        m.write_obj(idx.wrapping_add(1), self.avail.unchecked_add(2))
            .unwrap();
    }

    /// The used ring's index: how many chains the device has returned.
    pub fn used_idx(&self, m: &GuestMemoryMmap) -> u16 {
        m.read_obj(self.used.unchecked_add(2)).unwrap()
    }

    /// The queue as the device gets it once the driver set it ready.
    pub fn queue(&self) -> Queue {
        let mut q = Queue::new(self.size).unwrap();
        q.set_size(self.size);
        q.set_desc_table_address(Some(self.desc.0 as u32), Some((self.desc.0 >> 32) as u32));
        q.set_avail_ring_address(Some(self.avail.0 as u32), Some((self.avail.0 >> 32) as u32));
        q.set_used_ring_address(Some(self.used.0 as u32), Some((self.used.0 >> 32) as u32));
        q.set_ready(true);
        q
    }
}
