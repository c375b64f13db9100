//! The 16550 UART at 0x3f8 (vm-superio) whose output is the guest console: written to the
//! VMM's stdout or a log file, which keeps its tail under a cap (`crate::capped_log`; the
//! builder opens it). Its interrupt goes to the guest through an irqfd.

use std::io::{self, Write};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vm_superio::Serial;
use vm_superio::serial::SerialState;

use super::super::{BusDevice, IrqTrigger};
use crate::metrics::Counters;

/// Counters: bytes the guest wrote to the console, and write errors on the output.
pub const COUNTERS: &[&str] = &["tx_bytes", "output_errors"];

/// Console output that counts what passes through.
struct CountingWriter {
    inner: Box<dyn Write + Send>,
    counters: Arc<Counters>,
}

impl Write for CountingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self
            .inner
            .write(buf)
            .inspect_err(|_| self.counters.add(1, 1))?;
        self.counters.add(0, n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The guest's serial console.
pub struct SerialConsole {
    uart: Serial<IrqTrigger, vm_superio::serial::NoEvents, CountingWriter>,
}

impl SerialConsole {
    pub fn new(irq: IrqTrigger, out: Box<dyn Write + Send>, counters: Arc<Counters>) -> Self {
        Self {
            uart: Serial::new(
                irq,
                CountingWriter {
                    inner: out,
                    counters,
                },
            ),
        }
    }

    /// The UART's registers and input FIFO, for a snapshot.
    pub fn save(&self) -> SerialSnapshot {
        let s = self.uart.state();
        SerialSnapshot {
            registers: [
                s.baud_divisor_low,
                s.baud_divisor_high,
                s.interrupt_enable,
                s.interrupt_identification,
                s.line_control,
                s.line_status,
                s.modem_control,
                s.modem_status,
                s.scratch,
            ],
            in_buffer: s.in_buffer,
        }
    }

    /// A console in a saved state, writing to a new output.
    pub fn restore(
        state: &SerialSnapshot,
        irq: IrqTrigger,
        out: Box<dyn Write + Send>,
        counters: Arc<Counters>,
    ) -> Result<Self, String> {
        let [l, h, ie, ii, lc, ls, mc, ms, sc] = state.registers;
        let s = SerialState {
            baud_divisor_low: l,
            baud_divisor_high: h,
            interrupt_enable: ie,
            interrupt_identification: ii,
            line_control: lc,
            line_status: ls,
            modem_control: mc,
            modem_status: ms,
            scratch: sc,
            in_buffer: state.in_buffer.clone(),
        };
        let writer = CountingWriter {
            inner: out,
            counters,
        };
        let uart = Serial::from_state(&s, irq, vm_superio::serial::NoEvents, writer)
            .map_err(|e| format!("restoring the serial console: {e:?}"))?;
        Ok(Self { uart })
    }

    /// Flushes buffered console output (on VMM exit).
    pub fn flush(&mut self) {
        let _ = self.uart.writer_mut().flush();
    }
}

/// The serial console in a snapshot: the 16550's nine registers in vm-superio's order
/// (divisor low/high, IER, IIR, LCR, LSR, MCR, MSR, scratch) and the input FIFO.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialSnapshot {
    pub registers: [u8; 9],
    pub in_buffer: Vec<u8>,
}

impl BusDevice for SerialConsole {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (Some(first), Ok(offset)) = (data.first_mut(), u8::try_from(offset)) {
            *first = self.uart.read(offset);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (Some(&value), Ok(offset)) = (data.first(), u8::try_from(offset)) else {
            return;
        };
        if let Err(e) = self.uart.write(offset, value) {
            tracing::trace!(error = ?e, "serial console write");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use vmm_sys_util::eventfd::EventFd;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bytes_written_to_thr_reach_the_output_and_are_counted() {
        let out = Shared::default();
        let counters = Counters::new(COUNTERS);
        let irq = IrqTrigger(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let mut s = SerialConsole::new(irq, Box::new(out.clone()), counters.clone());
        for b in b"hi\n" {
            s.write(0, &[*b]);
        }
        assert_eq!(&*out.0.lock().unwrap(), b"hi\n");
        assert_eq!(counters.snapshot()["tx_bytes"], 3);
        let mut lsr = [0u8; 1];
        s.read(5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0, "transmitter holding register empty");
    }
}
