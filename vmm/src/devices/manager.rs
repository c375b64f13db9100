//! Places virtio-mmio devices: a 4 KiB MMIO window and a GSI each, the irqfd that raises the
//! GSI, one ioeventfd per queue on the notify register, and the `virtio_mmio.device=`
//! argument that announces the device to the guest kernel.

use std::sync::{Arc, Mutex};

use kvm_ioctls::{IoEventAddress, VmFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::virtio::mmio::{MmioError, MmioTransport, REG_QUEUE_NOTIFY};
use super::virtio::{Interrupt, VirtioDevice};
use super::{Bus, BusError};
use crate::arch::x86_64::layout::{
    VIRTIO_FIRST_IRQ, VIRTIO_LAST_IRQ, VIRTIO_MMIO_START, VIRTIO_MMIO_WINDOW,
};

/// Errors placing a device.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("no interrupt line left for device {0} (at most {n} virtio devices)", n = VIRTIO_LAST_IRQ - VIRTIO_FIRST_IRQ + 1)]
    NoIrq(String),
    #[error("device {name}: {what}")]
    Kvm {
        name: String,
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("device {name}: creating its interrupt eventfd")]
    EventFd {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Mmio(#[from] MmioError),
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// Hands out windows and GSIs in order.
pub struct DeviceManager {
    next_base: u64,
    next_irq: u32,
    cmdline: Vec<String>,
}

impl Default for DeviceManager {
    fn default() -> Self {
        Self {
            next_base: VIRTIO_MMIO_START,
            next_irq: VIRTIO_FIRST_IRQ,
            cmdline: Vec::new(),
        }
    }
}

impl DeviceManager {
    /// The next window and GSI, without taking them.
    fn slot(&self, name: &str) -> Result<(u64, u32), ManagerError> {
        if self.next_irq > VIRTIO_LAST_IRQ {
            return Err(ManagerError::NoIrq(name.to_owned()));
        }
        Ok((self.next_base, self.next_irq))
    }

    /// Wires `device` behind a transport on `mmio` and records its kernel argument.
    pub fn add(
        &mut self,
        vm: &VmFd,
        mmio: &mut Bus,
        memory: &GuestMemoryMmap,
        device: Box<dyn VirtioDevice>,
    ) -> Result<Arc<Mutex<MmioTransport>>, ManagerError> {
        let name = device.name().to_owned();
        let (base, irq) = self.slot(&name)?;
        let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| ManagerError::EventFd {
            name: name.clone(),
            source,
        })?;
        vm.register_irqfd(&evt, irq)
            .map_err(|source| ManagerError::Kvm {
                name: name.clone(),
                what: "registering its irqfd",
                source,
            })?;
        let transport = MmioTransport::new(device, memory.clone(), Interrupt::new(evt))?;
        for (index, qevt) in transport.queue_events().iter().enumerate() {
            let addr = IoEventAddress::Mmio(base + REG_QUEUE_NOTIFY);
            vm.register_ioevent(qevt, &addr, index as u32)
                .map_err(|source| ManagerError::Kvm {
                    name: name.clone(),
                    what: "registering a queue ioeventfd",
                    source,
                })?;
        }
        let transport = Arc::new(Mutex::new(transport));
        mmio.insert(base, VIRTIO_MMIO_WINDOW, transport.clone())?;
        self.cmdline.push(mmio_arg(base, irq));
        tracing::info!(device = %name, base, irq, "virtio-mmio device");
        self.next_base += VIRTIO_MMIO_WINDOW;
        self.next_irq += 1;
        Ok(transport)
    }

    /// The `virtio_mmio.device=` arguments of every device added.
    pub fn cmdline(&self) -> String {
        self.cmdline.join(" ")
    }
}

/// `virtio_mmio.device=<size>@<base>:<irq>` (virtio_mmio's cmdline device syntax).
pub fn mmio_arg(base: u64, irq: u32) -> String {
    format!("virtio_mmio.device=4K@{base:#x}:{irq}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_argument_names_window_and_irq() {
        assert_eq!(
            mmio_arg(0xc000_1000, 6),
            "virtio_mmio.device=4K@0xc0001000:6"
        );
    }

    #[test]
    fn irqs_run_out_with_a_clear_error() {
        let m = DeviceManager {
            next_irq: VIRTIO_LAST_IRQ + 1,
            ..Default::default()
        };
        let e = m.slot("block:x").unwrap_err().to_string();
        assert!(e.contains("block:x") && e.contains("19"), "{e}");
    }
}
