//! A minimal i8042 keyboard controller: enough for Linux's i8042 and atkbd drivers
//! (`i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd`) to find a keyboard, the reset line
//! (`reboot=k` writes 0xfe to port 0x64: the VM ends with "guest reset"), and Ctrl-Alt-Del
//! injected for a graceful shutdown. Keys are scan code set 2 (no translation).

use std::collections::VecDeque;

use vm_superio::Trigger;

use super::super::{BusDevice, IrqTrigger};
use crate::devices::log_limit::LogLimit;

/// Offsets from port 0x60.
const DATA: u64 = 0;
const COMMAND: u64 = 4;

/// Status register bits.
const STATUS_OUTPUT_FULL: u8 = 0x01;
const STATUS_SYSTEM: u8 = 0x04;
const STATUS_LAST_WAS_COMMAND: u8 = 0x08;

/// Controller command byte bits.
const CTR_KBD_INTERRUPT: u8 = 0x01;
const CTR_SYSTEM: u8 = 0x04;
const CTR_KBD_DISABLED: u8 = 0x10;

/// Controller commands (port 0x64).
const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_KBD_DISABLE: u8 = 0xad;
const CMD_KBD_ENABLE: u8 = 0xae;
const CMD_WRITE_OUTPUT_PORT: u8 = 0xd1;
const CMD_WRITE_KBD_BUFFER: u8 = 0xd2;
const CMD_RESET_CPU: u8 = 0xfe;

/// Keyboard replies.
const KBD_ACK: u8 = 0xfa;
const KBD_SELF_TEST_OK: u8 = 0xaa;
const KBD_RESET: u8 = 0xff;
const KBD_IDENTIFY: u8 = 0xf2;

/// Ctrl, Alt and Delete pressed then released, in scan code set 2.
const CTRL_ALT_DEL: &[u8] = &[
    0x14, 0x11, 0xe0, 0x71, // make: left Ctrl, left Alt, Delete
    0xe0, 0xf0, 0x71, 0xf0, 0x11, 0xf0, 0x14, // break: Delete, Alt, Ctrl
];

/// Bytes the output buffer holds before further input is dropped.
const BUFFER_LIMIT: usize = 64;

/// Called when the guest pulses the reset line.
pub struct ResetSignal(pub Box<dyn Fn() + Send>);

pub struct I8042 {
    ctr: u8,
    last_was_command: bool,
    /// A command that takes the next data byte.
    pending: Option<u8>,
    output: VecDeque<u8>,
    irq: IrqTrigger,
    on_reset: ResetSignal,
    /// For failures to raise the interrupt, which the guest raises as often as it likes.
    warnings: LogLimit,
}

/// The controller in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct I8042Snapshot {
    pub ctr: u8,
    pub last_was_command: bool,
    pub pending: Option<u8>,
    pub output: Vec<u8>,
}

impl I8042 {
    pub fn save(&self) -> I8042Snapshot {
        I8042Snapshot {
            ctr: self.ctr,
            last_was_command: self.last_was_command,
            pending: self.pending,
            output: self.output.iter().copied().collect(),
        }
    }

    /// Takes the saved state (the lines stay this VM's).
    pub fn restore(&mut self, s: &I8042Snapshot) {
        self.ctr = s.ctr;
        self.last_was_command = s.last_was_command;
        self.pending = s.pending;
        self.output = s.output.iter().copied().take(BUFFER_LIMIT).collect();
    }

    pub fn new(irq: IrqTrigger, on_reset: ResetSignal) -> Self {
        Self {
            ctr: CTR_KBD_INTERRUPT | CTR_SYSTEM,
            last_was_command: false,
            pending: None,
            output: VecDeque::new(),
            irq,
            on_reset,
            warnings: LogLimit::new(),
        }
    }

    /// Types Ctrl-Alt-Delete. Returns false when the guest's keyboard is not enabled (no
    /// driver took it), so nothing would read the keys.
    pub fn ctrl_alt_del(&mut self) -> bool {
        if self.ctr & CTR_KBD_DISABLED != 0 || self.ctr & CTR_KBD_INTERRUPT == 0 {
            return false;
        }
        self.push(CTRL_ALT_DEL);
        true
    }

    fn push(&mut self, bytes: &[u8]) {
        for b in bytes {
            if self.output.len() < BUFFER_LIMIT {
                self.output.push_back(*b);
            }
        }
        self.interrupt();
    }

    fn interrupt(&mut self) {
        if !self.output.is_empty()
            && self.ctr & CTR_KBD_INTERRUPT != 0
            && let Err(e) = self.irq.trigger()
            && let Some(suppressed) = self.warnings.allow()
        {
            tracing::warn!(error = %e, suppressed, "raising the keyboard interrupt");
        }
    }

    fn status(&self) -> u8 {
        let mut s = STATUS_SYSTEM;
        if !self.output.is_empty() {
            s |= STATUS_OUTPUT_FULL;
        }
        if self.last_was_command {
            s |= STATUS_LAST_WAS_COMMAND;
        }
        s
    }

    fn command(&mut self, cmd: u8) {
        self.last_was_command = true;
        match cmd {
            CMD_READ_CTR => self.push(&[self.ctr]),
            CMD_WRITE_CTR | CMD_WRITE_OUTPUT_PORT | CMD_WRITE_KBD_BUFFER => {
                self.pending = Some(cmd)
            }
            CMD_SELF_TEST => self.push(&[0x55]),
            CMD_KBD_TEST => self.push(&[0x00]),
            CMD_KBD_DISABLE => self.ctr |= CTR_KBD_DISABLED,
            CMD_KBD_ENABLE => self.ctr &= !CTR_KBD_DISABLED,
            CMD_RESET_CPU => (self.on_reset.0)(),
            other => tracing::trace!(cmd = other, "ignoring an i8042 command"),
        }
    }

    fn data(&mut self, value: u8) {
        self.last_was_command = false;
        match self.pending.take() {
            Some(CMD_WRITE_CTR) => {
                self.ctr = value;
                self.interrupt();
            }
            Some(CMD_WRITE_KBD_BUFFER) => self.push(&[value]),
            Some(_) => {} // output port: nothing to drive
            // A byte for the keyboard itself.
            None => match value {
                KBD_RESET => self.push(&[KBD_ACK, KBD_SELF_TEST_OK]),
                KBD_IDENTIFY => self.push(&[KBD_ACK, 0xab, 0x83]),
                _ => self.push(&[KBD_ACK]),
            },
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let value = match offset {
            DATA => {
                let v = self.output.pop_front().unwrap_or(0);
                self.interrupt();
                v
            }
            COMMAND => self.status(),
            _ => 0xff,
        };
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else {
            return;
        };
        match offset {
            DATA => self.data(value),
            COMMAND => self.command(value),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use vmm_sys_util::eventfd::EventFd;

    fn device() -> (I8042, Arc<AtomicU32>, EventFd) {
        let resets = Arc::new(AtomicU32::new(0));
        let r = resets.clone();
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let dev = I8042::new(
            IrqTrigger(evt.try_clone().unwrap()),
            ResetSignal(Box::new(move || {
                r.fetch_add(1, Ordering::SeqCst);
            })),
        );
        (dev, resets, evt)
    }

    fn read(dev: &mut I8042, offset: u64) -> u8 {
        let mut b = [0u8];
        dev.read(offset, &mut b);
        b[0]
    }

    #[test]
    fn reset_command_fires_once_and_data_0xfe_does_not() {
        let (mut dev, resets, _) = device();
        dev.write(DATA, &[0xfe]);
        assert_eq!(resets.load(Ordering::SeqCst), 0);
        let _ = read(&mut dev, DATA);
        dev.write(COMMAND, &[CMD_RESET_CPU]);
        assert_eq!(resets.load(Ordering::SeqCst), 1);
        assert_eq!(
            read(&mut dev, COMMAND) & 0x02,
            0,
            "input buffer empty: kb_wait returns"
        );
    }

    #[test]
    fn controller_answers_the_linux_probe() {
        let (mut dev, _, evt) = device();
        dev.write(COMMAND, &[CMD_SELF_TEST]);
        assert_ne!(read(&mut dev, COMMAND) & STATUS_OUTPUT_FULL, 0);
        assert_eq!(read(&mut dev, DATA), 0x55);
        dev.write(COMMAND, &[CMD_READ_CTR]);
        let ctr = read(&mut dev, DATA);
        assert_eq!(ctr & CTR_KBD_INTERRUPT, CTR_KBD_INTERRUPT);
        dev.write(COMMAND, &[CMD_WRITE_CTR]);
        dev.write(DATA, &[0x45]);
        dev.write(COMMAND, &[CMD_READ_CTR]);
        assert_eq!(read(&mut dev, DATA), 0x45);
        dev.write(COMMAND, &[CMD_KBD_TEST]);
        assert_eq!(read(&mut dev, DATA), 0);
        dev.write(DATA, &[KBD_RESET]);
        assert_eq!(
            (read(&mut dev, DATA), read(&mut dev, DATA)),
            (KBD_ACK, KBD_SELF_TEST_OK)
        );
        assert_eq!(
            read(&mut dev, COMMAND) & STATUS_OUTPUT_FULL,
            0,
            "buffer drained"
        );
        assert!(evt.read().unwrap() > 0, "interrupts were raised");
    }

    #[test]
    fn ctrl_alt_del_needs_an_enabled_keyboard() {
        let (mut dev, _, _) = device();
        dev.write(COMMAND, &[CMD_KBD_DISABLE]);
        assert!(!dev.ctrl_alt_del());
        dev.write(COMMAND, &[CMD_KBD_ENABLE]);
        assert!(dev.ctrl_alt_del());
        let keys: Vec<u8> = (0..CTRL_ALT_DEL.len())
            .map(|_| read(&mut dev, DATA))
            .collect();
        assert_eq!(keys, CTRL_ALT_DEL);
    }

    #[test]
    fn the_output_buffer_is_bounded() {
        let (mut dev, _, _) = device();
        for _ in 0..200 {
            dev.write(DATA, &[0xee]);
        }
        assert_eq!(dev.output.len(), BUFFER_LIMIT);
    }
}
