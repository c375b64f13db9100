//! Helpers on virtio-queue shared by the device models: popping chains and completing them.
//!
//! A broken ring is the guest's doing, and a guest can kick a queue as often as it likes, so
//! the `*_limited` helpers log through the caller's [`LogLimit`] (one per device worker). The
//! plain ones log every failure: they remain for callers that have no budget at hand yet.

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;

use super::Interrupt;
use crate::devices::log_limit::LogLimit;

/// Pops the next available chain, or None when the ring is empty or unreadable (a bad
/// available index is logged and treated as empty: the device waits for the next kick).
pub fn pop<'m>(
    queue: &mut Queue,
    mem: &'m GuestMemoryMmap,
) -> Option<DescriptorChain<&'m GuestMemoryMmap>> {
    pop_limited(queue, mem, &mut LogLimit::new())
}

/// [`pop`], warning within `warnings`.
pub fn pop_limited<'m>(
    queue: &mut Queue,
    mem: &'m GuestMemoryMmap,
    warnings: &mut LogLimit,
) -> Option<DescriptorChain<&'m GuestMemoryMmap>> {
    match queue.iter(mem) {
        Ok(mut it) => it.next(),
        Err(e) => {
            if let Some(suppressed) = warnings.allow() {
                tracing::warn!(error = ?e, suppressed, "the driver's available ring is broken");
            }
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
    complete_limited(queue, mem, head, len, &mut LogLimit::new());
}

/// [`complete`], warning within `warnings`.
pub fn complete_limited(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    head: u16,
    len: u32,
    warnings: &mut LogLimit,
) {
    if let Err(e) = queue.add_used(mem, head, len)
        && let Some(suppressed) = warnings.allow()
    {
        tracing::warn!(error = ?e, head, suppressed, "adding to the used ring");
    }
}

/// Raises the interrupt if the driver wants one for what was just used.
pub fn notify(queue: &mut Queue, mem: &GuestMemoryMmap, interrupt: &Interrupt) {
    notify_limited(queue, mem, interrupt, &mut LogLimit::new());
}

/// [`notify`], warning within `warnings`.
pub fn notify_limited(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    interrupt: &Interrupt,
    warnings: &mut LogLimit,
) {
    match queue.needs_notification(mem) {
        Ok(true) => interrupt.signal_used_queue(),
        Ok(false) => {}
        Err(e) => {
            if let Some(suppressed) = warnings.allow() {
                tracing::warn!(error = ?e, suppressed, "reading the used event index");
            }
            interrupt.signal_used_queue();
        }
    }
}
