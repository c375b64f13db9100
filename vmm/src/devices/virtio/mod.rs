//! virtio devices on the virtio-mmio transport: the device trait every model implements, the
//! interrupt they raise, and the IDs and feature bits they share.

pub mod block;
pub mod fs;
pub mod mmio;
pub mod net;
pub mod queue;
#[cfg(test)]
pub mod test_utils;
pub mod vsock;
pub mod worker;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use crate::devices::log_limit::LogLimit;

/// Device IDs (virtio 1.2, section 5).
pub const TYPE_NET: u32 = 1;
pub const TYPE_BLOCK: u32 = 2;
pub const TYPE_VSOCK: u32 = 19;
pub const TYPE_FS: u32 = 26;

/// Feature bits every device offers.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// Interrupt status bits (the transport's InterruptStatus register).
pub const INT_USED_RING: u32 = 1;
pub const INT_CONFIG: u32 = 2;

/// Errors activating a device.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("the driver set up {got} queues; the device needs {want}")]
    QueueCount { got: usize, want: usize },
    #[error("starting the device worker")]
    Worker(#[source] std::io::Error),
}

/// The guest interrupt of one device: a status word the driver reads and acknowledges, and
/// the irqfd that raises the GSI.
#[derive(Debug)]
pub struct Interrupt {
    status: AtomicU32,
    evt: EventFd,
    /// For failures to raise it: the guest decides how often it is raised.
    warnings: Mutex<LogLimit>,
}

impl Interrupt {
    pub fn new(evt: EventFd) -> Arc<Self> {
        Arc::new(Self {
            status: AtomicU32::new(0),
            evt,
            warnings: Mutex::new(LogLimit::new()),
        })
    }

    /// Tells the driver that used rings changed.
    pub fn signal_used_queue(&self) {
        self.raise(INT_USED_RING);
    }

    /// Tells the driver that the configuration space changed.
    pub fn signal_config(&self) {
        self.raise(INT_CONFIG);
    }

    fn raise(&self, bit: u32) {
        self.status.fetch_or(bit, Ordering::AcqRel);
        if let Err(e) = self.evt.write(1) {
            let allowed = self
                .warnings
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .allow();
            if let Some(suppressed) = allowed {
                tracing::warn!(error = %e, suppressed, "raising a virtio interrupt");
            }
        }
    }

    pub fn status(&self) -> u32 {
        self.status.load(Ordering::Acquire)
    }

    /// Sets the status word as a snapshot had it, without raising the interrupt.
    pub fn set_status(&self, bits: u32) {
        self.status.store(bits, Ordering::Release);
    }

    pub fn acknowledge(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::AcqRel);
    }
}

/// What a device gets when the driver sets DRIVER_OK: guest memory, the queues as the driver
/// configured them, the eventfd KVM signals on each queue's notify write, and the interrupt.
pub struct Activation {
    pub memory: GuestMemoryMmap,
    pub queues: Vec<Queue>,
    pub queue_events: Vec<EventFd>,
    pub interrupt: Arc<Interrupt>,
    /// Features the driver accepted.
    pub features: u64,
}

/// A virtio device model. The transport owns the registers; the device offers features, a
/// configuration space and, once activated, serves its queues (normally on its own thread).
pub trait VirtioDevice: Send {
    /// Device ID (`TYPE_*`).
    fn device_type(&self) -> u32;
    /// Name for logs and metrics.
    fn name(&self) -> &str;
    /// Largest size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Features offered to the driver.
    fn features(&self) -> u64;
    /// Reads the device-specific configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the configuration space (most devices ignore this).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// Starts serving the queues.
    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError>;
    /// Called on a device restored from a snapshot, before it is activated: the place to
    /// note what the guest must be told (a new vsock CID, dropped connections).
    fn on_restore(&mut self) {}
    /// Stops serving the queues (the driver reset the device) so that it can be activated
    /// again; false when the device cannot.
    fn reset(&mut self) -> bool {
        false
    }
}

/// Copies `config[offset..]` into `data` where it overlaps; bytes past the end read as zero.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(src) = config.get(start..) {
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }
}

/// How many warnings (and errors) `f` logs on this thread: for tests that a guest's flood
/// is rate-limited.
#[cfg(test)]
pub(crate) fn warnings_logged(f: impl FnOnce()) -> usize {
    use std::sync::atomic::AtomicUsize;
    use tracing_subscriber::layer::{Context, SubscriberExt};

    struct Count(Arc<AtomicUsize>);
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Count {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            if *event.metadata().level() <= tracing::Level::WARN {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let n = Arc::new(AtomicUsize::new(0));
    let subscriber = tracing_subscriber::registry().with(Count(n.clone()));
    tracing::subscriber::with_default(subscriber, f);
    n.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_clip_at_the_end() {
        let cfg = [1u8, 2, 3, 4];
        let mut b = [0xffu8; 4];
        read_config_bytes(&cfg, 2, &mut b);
        assert_eq!(b, [3, 4, 0, 0]);
        read_config_bytes(&cfg, 100, &mut b);
        assert_eq!(b, [0; 4]);
    }

    #[test]
    fn interrupt_status_is_set_and_acknowledged() {
        let irq = Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        irq.signal_used_queue();
        irq.signal_config();
        assert_eq!(irq.status(), INT_USED_RING | INT_CONFIG);
        irq.acknowledge(INT_USED_RING);
        assert_eq!(irq.status(), INT_CONFIG);
        assert_eq!(irq.evt.read().unwrap(), 2);
    }
}
