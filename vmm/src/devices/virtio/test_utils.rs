//! Guest memory and descriptor chains for device unit tests (virtio-queue's mock queues).

use virtio_queue::desc::{RawDescriptor, split::Descriptor as SplitDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT};
use vm_memory::{GuestAddress, GuestMemoryMmap};

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
