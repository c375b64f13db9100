//! Helpers on virtio-queue shared by the device models: popping chains and completing them.

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;

use super::Interrupt;

/// Pops the next available chain, or None when the ring is empty or unreadable (a bad
/// available index is logged and treated as empty: the device waits for the next kick).
pub fn pop<'m>(
    queue: &mut Queue,
    mem: &'m GuestMemoryMmap,
) -> Option<DescriptorChain<&'m GuestMemoryMmap>> {
    match queue.iter(mem) {
        Ok(mut it) => it.next(),
        Err(e) => {
            tracing::warn!(error = ?e, "the driver's available ring is broken");
            None
        }
    }
}

/// Whether the driver has made a chain available that [`pop`] has not taken yet.
pub fn has_available(queue: &Queue, mem: &GuestMemoryMmap) -> bool {
    use virtio_queue::QueueT;
    queue
        .avail_idx(mem, std::sync::atomic::Ordering::Acquire)
        .is_ok_and(|idx| idx.0 != queue.next_avail())
}

/// Returns chain `head` with `len` bytes written to the used ring.
pub fn complete(queue: &mut Queue, mem: &GuestMemoryMmap, head: u16, len: u32) {
    if let Err(e) = queue.add_used(mem, head, len) {
        tracing::warn!(error = ?e, head, "adding to the used ring");
    }
}

/// Raises the interrupt if the driver wants one for what was just used.
pub fn notify(queue: &mut Queue, mem: &GuestMemoryMmap, interrupt: &Interrupt) {
    match queue.needs_notification(mem) {
        Ok(true) => interrupt.signal_used_queue(),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = ?e, "reading the used event index");
            interrupt.signal_used_queue();
        }
    }
}
