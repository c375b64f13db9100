//! The i8042 controller's reset line: the guest's `reboot=k` writes 0xfe to port 0x64, which
//! ends the VM with "guest reset". Reads return an idle controller.

use vm_superio::I8042Device;

use super::super::BusDevice;

/// Called when the guest pulses the reset line.
pub struct ResetSignal(pub Box<dyn Fn() + Send>);

impl vm_superio::Trigger for ResetSignal {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        (self.0)();
        Ok(())
    }
}

pub struct I8042 {
    device: I8042Device<ResetSignal>,
}

impl I8042 {
    pub fn new(on_reset: ResetSignal) -> Self {
        Self {
            device: I8042Device::new(on_reset),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (Some(first), Ok(offset)) = (data.first_mut(), u8::try_from(offset)) {
            *first = self.device.read(offset);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Some(&value), Ok(offset)) = (data.first(), u8::try_from(offset)) {
            let _ = self.device.write(offset, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn reset_command_on_the_command_port_fires_once() {
        let fired = Arc::new(AtomicU32::new(0));
        let f = fired.clone();
        let mut dev = I8042::new(ResetSignal(Box::new(move || {
            f.fetch_add(1, Ordering::SeqCst);
        })));
        dev.write(0, &[0xfe]);
        assert_eq!(
            fired.load(Ordering::SeqCst),
            0,
            "0xfe on the data port is data"
        );
        dev.write(4, &[0xfe]);
        assert_eq!(fired.load(Ordering::SeqCst), 1);
        let mut status = [0xffu8];
        dev.read(4, &mut status);
        assert_eq!(
            status[0] & 0x2,
            0,
            "input buffer empty, so kb_wait() returns"
        );
    }
}
