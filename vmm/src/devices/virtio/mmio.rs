//! The virtio-mmio (version 2) register transport over any [`VirtioDevice`]: feature
//! negotiation, queue setup, status, interrupt acknowledgement and the configuration space.
//! Queue notifications normally bypass it (KVM signals an ioeventfd per queue); a notify that
//! does reach it is forwarded to the same eventfd.
//!
//! The driver must follow virtio 1.x's status sequence (3.1.1): ACKNOWLEDGE, DRIVER,
//! FEATURES_OK (kept only if it accepted nothing the device did not offer, and VERSION_1),
//! DRIVER_OK. A write that skips a step or clears a bit is ignored, so the device is activated
//! only with features it validated.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueState, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::{Activation, Interrupt, VirtioDevice};
use crate::devices::BusDevice;
use crate::devices::log_limit::LogLimit;

const MAGIC: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x6f6b_6168; // "hako"

/// Register offsets.
const REG_MAGIC: u64 = 0x000;
const REG_VERSION: u64 = 0x004;
const REG_DEVICE_ID: u64 = 0x008;
const REG_VENDOR_ID: u64 = 0x00c;
const REG_DEVICE_FEATURES: u64 = 0x010;
const REG_DEVICE_FEATURES_SEL: u64 = 0x014;
const REG_DRIVER_FEATURES: u64 = 0x020;
const REG_DRIVER_FEATURES_SEL: u64 = 0x024;
const REG_QUEUE_SEL: u64 = 0x030;
const REG_QUEUE_NUM_MAX: u64 = 0x034;
const REG_QUEUE_NUM: u64 = 0x038;
const REG_QUEUE_READY: u64 = 0x044;
/// Where the driver writes a queue index to notify; KVM matches it to an ioeventfd.
pub const REG_QUEUE_NOTIFY: u64 = 0x050;
const REG_INTERRUPT_STATUS: u64 = 0x060;
const REG_INTERRUPT_ACK: u64 = 0x064;
const REG_STATUS: u64 = 0x070;
const REG_QUEUE_DESC_LOW: u64 = 0x080;
const REG_QUEUE_DESC_HIGH: u64 = 0x084;
const REG_QUEUE_AVAIL_LOW: u64 = 0x090;
const REG_QUEUE_AVAIL_HIGH: u64 = 0x094;
const REG_QUEUE_USED_LOW: u64 = 0x0a0;
const REG_QUEUE_USED_HIGH: u64 = 0x0a4;
const REG_CONFIG_GENERATION: u64 = 0x0fc;
const CONFIG_SPACE: u64 = 0x100;

/// Device status bits.
pub const STATUS_ACKNOWLEDGE: u32 = 1;
pub const STATUS_DRIVER: u32 = 2;
pub const STATUS_DRIVER_OK: u32 = 4;
pub const STATUS_FEATURES_OK: u32 = 8;
pub const STATUS_NEEDS_RESET: u32 = 0x40;
pub const STATUS_FAILED: u32 = 0x80;
/// The bits the driver sets one after another, in order.
const STATUS_SEQUENCE: [u32; 4] = [
    STATUS_ACKNOWLEDGE,
    STATUS_DRIVER,
    STATUS_FEATURES_OK,
    STATUS_DRIVER_OK,
];

/// A virtio device behind the MMIO registers.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    memory: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    queues: Vec<Queue>,
    queue_events: Vec<EventFd>,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    activated: bool,
    /// The queues as handed to the device at activation (addresses and sizes), kept for
    /// snapshots: the device worker owns the live ones.
    active_queues: Vec<QueueState>,
    /// For the warnings a driver's mistakes (or a hostile guest) cause.
    warnings: LogLimit,
}

/// One queue in a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSnapshot {
    pub max_size: u16,
    pub size: u16,
    pub ready: bool,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
    pub next_avail: u16,
    pub next_used: u16,
}

impl From<QueueState> for QueueSnapshot {
    fn from(q: QueueState) -> Self {
        Self {
            max_size: q.max_size,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
            next_avail: q.next_avail,
            next_used: q.next_used,
        }
    }
}

impl From<QueueSnapshot> for QueueState {
    fn from(q: QueueSnapshot) -> Self {
        Self {
            max_size: q.max_size,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: false,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
        }
    }
}

/// The transport's registers and queues in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportState {
    pub device_type: u32,
    pub status: u32,
    pub device_features_sel: u32,
    pub driver_features_sel: u32,
    pub driver_features: u64,
    pub queue_sel: u32,
    pub activated: bool,
    pub interrupt_status: u32,
    pub queues: Vec<QueueSnapshot>,
}

/// Errors restoring a transport from a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("device {name}: the snapshot holds a device of type {saved}, this one is type {have}")]
    DeviceType { name: String, saved: u32, have: u32 },
    #[error("device {name}: the snapshot has {saved} queues, the device {have}")]
    QueueCount {
        name: String,
        saved: usize,
        have: usize,
    },
    #[error("device {name}: queue {index} of the snapshot is invalid")]
    Queue { name: String, index: usize },
    #[error("device {name}: the snapshot's features {features:#x} are not all offered")]
    Features { name: String, features: u64 },
    #[error("device {name}: activating it from the snapshot failed")]
    Activate { name: String },
    #[error(
        "device {name}: the snapshot holds an active device whose status {status:#x} did not \
         go through the virtio status sequence (or accepted no VERSION_1)"
    )]
    Status { name: String, status: u32 },
}

/// Errors creating the transport.
#[derive(Debug, thiserror::Error)]
pub enum MmioError {
    #[error("device {name}: queue {index} has an invalid maximum size {size}")]
    QueueSize {
        name: String,
        index: usize,
        size: u16,
    },
    #[error("creating an eventfd for a queue of device {name}")]
    EventFd {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

impl MmioTransport {
    pub fn new(
        device: Box<dyn VirtioDevice>,
        memory: GuestMemoryMmap,
        interrupt: Arc<Interrupt>,
    ) -> Result<Self, MmioError> {
        let mut queues = Vec::new();
        let mut queue_events = Vec::new();
        for (index, &size) in device.queue_max_sizes().iter().enumerate() {
            queues.push(Queue::new(size).map_err(|_| MmioError::QueueSize {
                name: device.name().to_owned(),
                index,
                size,
            })?);
            queue_events.push(EventFd::new(libc::EFD_NONBLOCK).map_err(|source| {
                MmioError::EventFd {
                    name: device.name().to_owned(),
                    source,
                }
            })?);
        }
        Ok(Self {
            device,
            memory,
            interrupt,
            queues,
            queue_events,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            activated: false,
            active_queues: Vec::new(),
            warnings: LogLimit::new(),
        })
    }

    /// The transport's state for a snapshot, taken while the vCPUs are paused and the device
    /// idle. An active device's ring positions are read from guest memory: when no request
    /// is in flight, the device has completed every chain it popped, so both its next
    /// available and next used positions equal the used ring's index.
    pub fn save(&self) -> TransportState {
        let queues = if self.activated {
            self.active_queues
                .iter()
                .map(|q| {
                    let mut q = QueueSnapshot::from(*q);
                    if q.ready {
                        let idx = self
                            .memory
                            .read_obj::<u16>(GuestAddress(q.used_ring.wrapping_add(2)))
                            .unwrap_or(0);
                        q.next_avail = idx;
                        q.next_used = idx;
                    }
                    q
                })
                .collect()
        } else {
            self.queues
                .iter()
                .map(|q| QueueSnapshot::from(q.state()))
                .collect()
        };
        TransportState {
            device_type: self.device.device_type(),
            status: self.status,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            driver_features: self.driver_features,
            queue_sel: self.queue_sel,
            activated: self.activated,
            interrupt_status: self.interrupt.status(),
            queues,
        }
    }

    /// Puts a fresh transport (same device, new VM) in the saved state and, when the driver
    /// had set it up, activates the device on the saved queues. `device.on_restore` runs
    /// first, so a device can tell the guest what changed.
    pub fn restore(&mut self, state: &TransportState) -> Result<(), RestoreError> {
        let name = self.device.name().to_owned();
        let have = self.device.device_type();
        if state.device_type != have {
            return Err(RestoreError::DeviceType {
                name,
                saved: state.device_type,
                have,
            });
        }
        if state.queues.len() != self.queues.len() {
            return Err(RestoreError::QueueCount {
                name,
                saved: state.queues.len(),
                have: self.queues.len(),
            });
        }
        if state.driver_features & !self.device.features() != 0 {
            return Err(RestoreError::Features {
                name,
                features: state.driver_features,
            });
        }
        // A state file is input like a driver's writes: an active device must have come
        // through the whole status sequence with VERSION_1 accepted.
        let negotiated = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK;
        let features_accepted = state.activated || state.status & STATUS_FEATURES_OK != 0;
        if features_accepted && state.driver_features & super::VIRTIO_F_VERSION_1 == 0 {
            return Err(RestoreError::Status {
                name,
                status: state.status,
            });
        }
        if state.activated
            && (state.status & negotiated != negotiated
                || state.status & STATUS_FAILED != 0
                || state.driver_features & super::VIRTIO_F_VERSION_1 == 0)
        {
            return Err(RestoreError::Status {
                name,
                status: state.status,
            });
        }
        let mut queues = Vec::new();
        for (index, (q, max)) in state
            .queues
            .iter()
            .zip(self.device.queue_max_sizes())
            .enumerate()
        {
            let queue = Queue::try_from(QueueState::from(*q))
                .ok()
                .filter(|queue| q.max_size == *max && (!q.ready || queue.is_valid(&self.memory)))
                .ok_or_else(|| RestoreError::Queue {
                    name: name.clone(),
                    index,
                })?;
            queues.push(queue);
        }
        self.queues = queues;
        self.status = state.status;
        self.device_features_sel = state.device_features_sel;
        self.driver_features_sel = state.driver_features_sel;
        self.driver_features = state.driver_features;
        self.queue_sel = state.queue_sel;
        self.interrupt.set_status(state.interrupt_status);
        self.device.on_restore();
        if state.activated {
            self.activate();
            if !self.activated {
                return Err(RestoreError::Activate { name });
            }
        }
        Ok(())
    }

    /// The eventfd of each queue, for KVM ioeventfds on `REG_QUEUE_NOTIFY`.
    pub fn queue_events(&self) -> &[EventFd] {
        &self.queue_events
    }

    pub fn device_name(&self) -> &str {
        self.device.name()
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        if self.activated {
            return None;
        }
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn read_register(&self, offset: u64) -> u32 {
        let queue = self.queues.get(self.queue_sel as usize);
        match offset {
            REG_MAGIC => MAGIC,
            REG_VERSION => VERSION,
            REG_DEVICE_ID => self.device.device_type(),
            REG_VENDOR_ID => VENDOR_ID,
            REG_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            REG_QUEUE_NUM_MAX => self
                .device
                .queue_max_sizes()
                .get(self.queue_sel as usize)
                .map_or(0, |s| u32::from(*s)),
            // Once active the device owns the queues; every queue it was given is ready.
            REG_QUEUE_READY if self.activated => {
                u32::from((self.queue_sel as usize) < self.device.queue_max_sizes().len())
            }
            REG_QUEUE_READY => queue.map_or(0, |q| u32::from(q.ready())),
            REG_INTERRUPT_STATUS => self.interrupt.status(),
            REG_STATUS => self.status,
            REG_CONFIG_GENERATION => 0,
            _ => {
                tracing::debug!(
                    device = self.device.name(),
                    offset,
                    "read of an unknown register"
                );
                0
            }
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        match offset {
            REG_DEVICE_FEATURES_SEL => self.device_features_sel = value,
            REG_DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            REG_DRIVER_FEATURES if self.status & STATUS_FEATURES_OK == 0 => {
                match self.driver_features_sel {
                    0 => {
                        self.driver_features =
                            (self.driver_features & !0xffff_ffff) | u64::from(value)
                    }
                    1 => {
                        self.driver_features =
                            (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32)
                    }
                    _ => {}
                }
            }
            REG_QUEUE_SEL => self.queue_sel = value,
            REG_QUEUE_NUM => {
                if let Some(q) = self.selected_queue() {
                    q.set_size(value as u16);
                }
            }
            REG_QUEUE_READY => {
                if let Some(q) = self.selected_queue() {
                    q.set_ready(value == 1);
                }
            }
            REG_QUEUE_DESC_LOW | REG_QUEUE_DESC_HIGH | REG_QUEUE_AVAIL_LOW
            | REG_QUEUE_AVAIL_HIGH | REG_QUEUE_USED_LOW | REG_QUEUE_USED_HIGH => {
                let high = offset & 4 != 0;
                let (lo, hi) = if high {
                    (None, Some(value))
                } else {
                    (Some(value), None)
                };
                if let Some(q) = self.selected_queue() {
                    match offset & !4 {
                        REG_QUEUE_DESC_LOW => q.set_desc_table_address(lo, hi),
                        REG_QUEUE_AVAIL_LOW => q.set_avail_ring_address(lo, hi),
                        _ => q.set_used_ring_address(lo, hi),
                    }
                }
            }
            REG_QUEUE_NOTIFY => {
                if let Some(evt) = self.queue_events.get(value as usize) {
                    let _ = evt.write(1);
                }
            }
            REG_INTERRUPT_ACK => self.interrupt.acknowledge(value),
            REG_STATUS => self.write_status(value),
            _ => {
                tracing::debug!(
                    device = self.device.name(),
                    offset,
                    value,
                    "write to an unknown or read-only register"
                );
            }
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        if (value | self.status) & STATUS_FAILED != 0 {
            // The driver gave up: nothing more until it resets the device.
            self.status |= STATUS_FAILED;
            return;
        }
        let sequence = STATUS_SEQUENCE.iter().fold(0, |all, bit| all | bit);
        let current = self.status & sequence;
        let mut wanted = value & sequence;
        // A prefix of the sequence (ACKNOWLEDGE, then DRIVER...) keeping every bit already set.
        let mut prefixes = STATUS_SEQUENCE.iter().scan(0, |prefix, bit| {
            *prefix |= bit;
            Some(*prefix)
        });
        let in_order =
            (wanted == 0 || prefixes.any(|p| p == wanted)) && wanted & current == current;
        if !in_order {
            if let Some(suppressed) = self.warnings.allow() {
                tracing::warn!(
                    device = self.device.name(),
                    status = self.status,
                    value,
                    suppressed,
                    "ignoring a device status write out of the virtio sequence"
                );
            }
            return;
        }
        let newly = wanted & !current;
        if newly & STATUS_FEATURES_OK != 0 && !self.features_acceptable() {
            // FEATURES_OK stays clear (the driver reads it back and gives up), and DRIVER_OK
            // cannot follow.
            wanted &= !(STATUS_FEATURES_OK | STATUS_DRIVER_OK);
        }
        self.status = (self.status & !sequence) | wanted;
        if wanted & newly & STATUS_DRIVER_OK != 0 && !self.activated {
            self.activate();
        }
    }

    /// Whether the features the driver accepted were all offered, VERSION_1 among them.
    fn features_acceptable(&mut self) -> bool {
        let offered = self.device.features();
        let accepted = self.driver_features;
        if accepted & !offered == 0 && accepted & super::VIRTIO_F_VERSION_1 != 0 {
            return true;
        }
        if let Some(suppressed) = self.warnings.allow() {
            tracing::warn!(
                device = self.device.name(),
                accepted,
                offered,
                suppressed,
                "the driver accepted features the device did not offer, or not VERSION_1"
            );
        }
        false
    }

    fn activate(&mut self) {
        let name = self.device.name().to_owned();
        if let Some(i) = self
            .queues
            .iter()
            .position(|q| q.ready() && !q.is_valid(&self.memory))
        {
            if let Some(suppressed) = self.warnings.allow() {
                tracing::warn!(
                    device = %name,
                    queue = i,
                    suppressed,
                    "the driver set up an invalid queue"
                );
            }
            self.fail();
            return;
        }
        let events: Result<Vec<EventFd>, _> =
            self.queue_events.iter().map(EventFd::try_clone).collect();
        let events = match events {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(device = %name, error = %e, "cloning queue eventfds");
                self.fail();
                return;
            }
        };
        self.active_queues = self.queues.iter().map(Queue::state).collect();
        let activation = Activation {
            memory: self.memory.clone(),
            queues: std::mem::take(&mut self.queues),
            queue_events: events,
            interrupt: self.interrupt.clone(),
            features: self.driver_features,
        };
        match self.device.activate(activation) {
            Ok(()) => {
                self.activated = true;
                tracing::debug!(device = %name, "activated");
            }
            Err(e) => {
                tracing::error!(device = %name, error = %e, "activating");
                self.fail();
            }
        }
    }

    fn fail(&mut self) {
        self.status |= STATUS_NEEDS_RESET;
        self.interrupt.signal_config();
    }

    fn reset(&mut self) {
        if self.activated {
            if !self.device.reset() {
                if let Some(suppressed) = self.warnings.allow() {
                    tracing::warn!(
                        device = self.device.name(),
                        suppressed,
                        "the device cannot be reset while active"
                    );
                }
                self.status |= STATUS_NEEDS_RESET;
                return;
            }
            // The worker had the queues; start again from fresh ones.
            self.queues = self
                .device
                .queue_max_sizes()
                .iter()
                .filter_map(|&size| Queue::new(size).ok())
                .collect();
            self.activated = false;
        }
        self.status = 0;
        self.driver_features = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        for q in &mut self.queues {
            q.reset();
        }
        self.interrupt.acknowledge(u32::MAX);
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE {
            self.device.read_config(offset - CONFIG_SPACE, data);
            return;
        }
        let value = if data.len() == 4 && offset.is_multiple_of(4) {
            self.read_register(offset)
        } else {
            0
        };
        let bytes = value.to_le_bytes();
        let n = data.len().min(4);
        data[..n].copy_from_slice(&bytes[..n]);
        data[n..].fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE {
            self.device.write_config(offset - CONFIG_SPACE, data);
            return;
        }
        match <[u8; 4]>::try_from(data) {
            Ok(bytes) if offset.is_multiple_of(4) => {
                self.write_register(offset, u32::from_le_bytes(bytes))
            }
            _ => tracing::debug!(
                device = self.device.name(),
                offset,
                len = data.len(),
                "ignoring a register write that is not 32-bit aligned"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::{ActivateError, VIRTIO_F_VERSION_1};
    use std::sync::Mutex;
    use vm_memory::GuestAddress;

    /// Queue count and features the device was activated with.
    type Seen = Arc<Mutex<Option<(usize, u64)>>>;

    struct Dummy {
        activated: Seen,
    }

    impl VirtioDevice for Dummy {
        fn device_type(&self) -> u32 {
            2
        }
        fn name(&self) -> &str {
            "dummy"
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16, 16]
        }
        fn features(&self) -> u64 {
            VIRTIO_F_VERSION_1 | 1 << 9
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            super::super::read_config_bytes(&[0xaa, 0xbb], offset, data);
        }
        fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
            *self.activated.lock().unwrap() = Some((a.queues.len(), a.features));
            Ok(())
        }
        fn reset(&mut self) -> bool {
            *self.activated.lock().unwrap() = None;
            true
        }
    }

    fn transport() -> (MmioTransport, Seen) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let activated = Arc::new(Mutex::new(None));
        let irq = Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let t = MmioTransport::new(
            Box::new(Dummy {
                activated: activated.clone(),
            }),
            mem,
            irq,
        )
        .unwrap();
        (t, activated)
    }

    fn r(t: &mut MmioTransport, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    fn w(t: &mut MmioTransport, offset: u64, v: u32) {
        t.write(offset, &v.to_le_bytes());
    }

    fn setup_queue(t: &mut MmioTransport, index: u32, base: u32) {
        w(t, REG_QUEUE_SEL, index);
        w(t, REG_QUEUE_NUM, 16);
        w(t, REG_QUEUE_DESC_LOW, base);
        w(t, REG_QUEUE_AVAIL_LOW, base + 0x1000);
        w(t, REG_QUEUE_USED_LOW, base + 0x2000);
        w(t, REG_QUEUE_READY, 1);
    }

    #[test]
    fn identifies_itself() {
        let (mut t, _) = transport();
        assert_eq!(r(&mut t, REG_MAGIC), MAGIC);
        assert_eq!(r(&mut t, REG_VERSION), 2);
        assert_eq!(r(&mut t, REG_DEVICE_ID), 2);
        w(&mut t, REG_DEVICE_FEATURES_SEL, 1);
        assert_eq!(
            r(&mut t, REG_DEVICE_FEATURES),
            1,
            "VERSION_1 in the high word"
        );
        w(&mut t, REG_QUEUE_SEL, 1);
        assert_eq!(r(&mut t, REG_QUEUE_NUM_MAX), 16);
        w(&mut t, REG_QUEUE_SEL, 7);
        assert_eq!(r(&mut t, REG_QUEUE_NUM_MAX), 0, "no such queue");
        let mut b = [0u8; 1];
        t.read(CONFIG_SPACE + 1, &mut b);
        assert_eq!(b[0], 0xbb);
    }

    #[test]
    fn full_handshake_activates_with_the_accepted_features() {
        let (mut t, activated) = transport();
        w(&mut t, REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        w(&mut t, REG_DRIVER_FEATURES_SEL, 1);
        w(&mut t, REG_DRIVER_FEATURES, 1);
        w(
            &mut t,
            REG_STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        assert_ne!(r(&mut t, REG_STATUS) & STATUS_FEATURES_OK, 0);
        setup_queue(&mut t, 0, 0x10000);
        setup_queue(&mut t, 1, 0x20000);
        w(&mut t, REG_STATUS, 0xf & !STATUS_FAILED);
        assert_eq!(*activated.lock().unwrap(), Some((2, VIRTIO_F_VERSION_1)));
        // Queue registers are frozen once active.
        w(&mut t, REG_QUEUE_SEL, 0);
        w(&mut t, REG_QUEUE_READY, 0);
        assert_eq!(r(&mut t, REG_QUEUE_READY), 1);
        // A reset stops the device; the queues start afresh and it can be activated again.
        w(&mut t, REG_STATUS, 0);
        assert_eq!(*activated.lock().unwrap(), None);
        assert_eq!(r(&mut t, REG_STATUS), 0);
        assert_eq!(r(&mut t, REG_QUEUE_READY), 0);
        w(&mut t, REG_QUEUE_SEL, 1);
        assert_eq!(r(&mut t, REG_QUEUE_NUM_MAX), 16);
    }

    #[test]
    fn features_not_offered_are_refused() {
        let (mut t, _) = transport();
        w(&mut t, REG_DRIVER_FEATURES_SEL, 0);
        w(&mut t, REG_DRIVER_FEATURES, 1 << 3);
        w(&mut t, REG_DRIVER_FEATURES_SEL, 1);
        w(&mut t, REG_DRIVER_FEATURES, 1);
        w(
            &mut t,
            REG_STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        assert_eq!(r(&mut t, REG_STATUS) & STATUS_FEATURES_OK, 0);
    }

    #[test]
    fn a_queue_outside_guest_memory_fails_activation() {
        let (mut t, activated) = transport();
        w(&mut t, REG_DRIVER_FEATURES_SEL, 1);
        w(&mut t, REG_DRIVER_FEATURES, 1);
        w(
            &mut t,
            REG_STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        setup_queue(&mut t, 0, 0x7000_0000);
        w(
            &mut t,
            REG_STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        );
        assert!(activated.lock().unwrap().is_none());
        assert_ne!(r(&mut t, REG_STATUS) & STATUS_NEEDS_RESET, 0);
    }

    #[test]
    fn reset_before_activation_clears_state_and_odd_accesses_are_ignored() {
        let (mut t, _) = transport();
        setup_queue(&mut t, 0, 0x10000);
        w(&mut t, REG_STATUS, STATUS_ACKNOWLEDGE);
        w(&mut t, REG_STATUS, 0);
        assert_eq!(r(&mut t, REG_STATUS), 0);
        w(&mut t, REG_QUEUE_SEL, 0);
        assert_eq!(r(&mut t, REG_QUEUE_READY), 0);
        t.write(REG_STATUS, &[1, 0]);
        assert_eq!(r(&mut t, REG_STATUS), 0, "16-bit register write ignored");
        let mut b = [0u8; 2];
        t.read(REG_MAGIC + 1, &mut b);
        assert_eq!(b, [0, 0]);
    }

    /// ACKNOWLEDGE, DRIVER, VERSION_1 accepted (plus `extra` feature bits in the low word),
    /// both queues ready: everything but FEATURES_OK and DRIVER_OK.
    fn up_to_features(t: &mut MmioTransport, extra: u32) {
        w(t, REG_STATUS, STATUS_ACKNOWLEDGE);
        w(t, REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        w(t, REG_DRIVER_FEATURES_SEL, 0);
        w(t, REG_DRIVER_FEATURES, extra);
        w(t, REG_DRIVER_FEATURES_SEL, 1);
        w(t, REG_DRIVER_FEATURES, 1);
        setup_queue(t, 0, 0x10000);
        setup_queue(t, 1, 0x20000);
    }

    #[test]
    fn driver_ok_without_features_ok_does_not_activate() {
        let (mut t, activated) = transport();
        up_to_features(&mut t, 1 << 3);
        w(
            &mut t,
            REG_STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK,
        );
        assert!(activated.lock().unwrap().is_none(), "unchecked features");
        assert_eq!(r(&mut t, REG_STATUS), STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    }

    #[test]
    fn driver_ok_after_refused_features_does_not_activate() {
        let (mut t, activated) = transport();
        up_to_features(&mut t, 1 << 3);
        let driver = STATUS_ACKNOWLEDGE | STATUS_DRIVER;
        w(&mut t, REG_STATUS, driver | STATUS_FEATURES_OK);
        assert_eq!(r(&mut t, REG_STATUS), driver, "bit 3 was not offered");
        w(
            &mut t,
            REG_STATUS,
            driver | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        );
        w(&mut t, REG_STATUS, driver | STATUS_DRIVER_OK);
        assert!(activated.lock().unwrap().is_none());
        assert_eq!(r(&mut t, REG_STATUS), driver);
    }

    #[test]
    fn status_steps_out_of_order_are_ignored() {
        let (mut t, activated) = transport();
        w(&mut t, REG_STATUS, STATUS_DRIVER);
        assert_eq!(r(&mut t, REG_STATUS), 0, "DRIVER before ACKNOWLEDGE");
        up_to_features(&mut t, 1 << 9);
        let features_ok = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK;
        w(&mut t, REG_STATUS, features_ok);
        w(&mut t, REG_STATUS, STATUS_ACKNOWLEDGE);
        assert_eq!(r(&mut t, REG_STATUS), features_ok, "bits are not cleared");
        w(&mut t, REG_STATUS, features_ok | STATUS_FAILED);
        w(
            &mut t,
            REG_STATUS,
            features_ok | STATUS_FAILED | STATUS_DRIVER_OK,
        );
        assert!(activated.lock().unwrap().is_none(), "the driver gave up");
        w(&mut t, REG_STATUS, 0);
        up_to_features(&mut t, 1 << 9);
        w(&mut t, REG_STATUS, features_ok);
        w(&mut t, REG_STATUS, features_ok | STATUS_DRIVER_OK);
        assert_eq!(
            *activated.lock().unwrap(),
            Some((2, VIRTIO_F_VERSION_1 | 1 << 9))
        );
    }

    #[test]
    fn a_state_that_skipped_the_status_sequence_is_not_restored_active() {
        let (t, _) = transport();
        let mut state = t.save();
        state.activated = true;
        state.driver_features = VIRTIO_F_VERSION_1;
        // DRIVER_OK without FEATURES_OK, and without VERSION_1: what a forged or tampered
        // state file could hold.
        for (status, features) in [
            (
                STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK,
                VIRTIO_F_VERSION_1,
            ),
            (0xf | STATUS_FAILED, VIRTIO_F_VERSION_1),
            (0xf, 1 << 9),
        ] {
            let (mut t, seen) = transport();
            state.status = status;
            state.driver_features = features;
            let e = t.restore(&state).unwrap_err();
            assert!(matches!(e, RestoreError::Status { .. }), "{e}");
            assert!(seen.lock().unwrap().is_none(), "activated from {status:#x}");
        }
        // Not active, but past FEATURES_OK without VERSION_1: DRIVER_OK would activate it
        // with features nobody checked.
        let (mut t, _) = transport();
        state.activated = false;
        state.status = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK;
        state.driver_features = 1 << 9;
        let e = t.restore(&state).unwrap_err();
        assert!(matches!(e, RestoreError::Status { .. }), "{e}");
    }
}
