//! What the fuzz targets share: a guest's descriptor chain made from fuzz bytes.
//!
//! Input layout (`seeds.py` writes valid examples): bytes 0..256 are the raw split-ring
//! descriptor table (16 descriptors of addr u64, len u32, flags u16, next u16: indirect
//! tables, loops and wild addresses included), byte 256 picks the head, and the rest is
//! copied into guest memory at [`DATA`] for the descriptors to point at. The chain is popped
//! the way the devices pop theirs (`hako_vmm::devices::virtio::queue::pop`).

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
