//! vCPU threads: the KVM_RUN loop, exits routed to the port I/O and MMIO buses, and the
//! pause/stop handshake with the VMM thread. A vCPU is interrupted out of KVM_RUN by a signal
//! (`KICK_SIGNAL`), repeated until it acknowledges, so a kick that lands just before KVM_RUN
//! is never lost.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use hako_vmm_api::ExitReason;
use kvm_bindings::{
    KVM_MP_STATE_HALTED, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{VcpuExit, VcpuFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::signal::{Killable, SIGRTMIN, register_signal_handler};

use crate::arch::x86_64::vcpu_state::{StateCaps, VcpuState, VcpuStateError};
use crate::devices::Bus;
use crate::devices::log_limit::LogLimit;
use crate::metrics::Counters;
use crate::vmm::VmmEvent;

/// Exit kinds counted per vCPU (control API metrics).
pub const EXIT_KINDS: &[&str] = &[
    "io_in",
    "io_out",
    "mmio_read",
    "mmio_write",
    "hlt",
    "shutdown",
    "intr",
    "internal_error",
    "system_event",
    "other",
];
const IO_IN: usize = 0;
const IO_OUT: usize = 1;
const MMIO_READ: usize = 2;
const MMIO_WRITE: usize = 3;
const HLT: usize = 4;
const SHUTDOWN: usize = 5;
const INTR: usize = 6;
const INTERNAL_ERROR: usize = 7;
const SYSTEM_EVENT: usize = 8;
const OTHER: usize = 9;

const RFLAGS_IF: u64 = 1 << 9;
/// How long a kicker waits for acknowledgements before signalling again.
const KICK_RETRY: Duration = Duration::from_millis(5);

/// The signal that interrupts KVM_RUN.
pub fn kick_signal() -> i32 {
    SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the (empty) kick handler; its only effect is to make KVM_RUN return EINTR.
pub fn install_kick_handler() -> std::io::Result<()> {
    register_signal_handler(kick_signal(), on_kick).map_err(std::io::Error::from)
}

/// What the VMM wants of the vCPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Wanted {
    Run = 0,
    Pause = 1,
    Stop = 2,
}

/// Where one vCPU thread is, as it last told the VMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Where {
    Running,
    /// Parked for a pause; `halted_for_good` is true when it sat in HLT with interrupts off.
    Parked {
        halted_for_good: bool,
    },
    Stopped,
}

/// The handshake between the VMM thread and the vCPU threads.
pub struct VcpuControl {
    wanted: AtomicU8,
    places: Mutex<Vec<Where>>,
    changed: Condvar,
    /// Per vCPU: the VMM wants its state saved (answered while parked).
    save_wanted: Vec<AtomicBool>,
    saved: Mutex<Vec<Option<Result<VcpuState, VcpuStateError>>>>,
}

/// What saving vCPU state needs from the host's KVM, shared by every vCPU.
#[derive(Debug)]
pub struct StateInfo {
    pub msr_indices: Vec<u32>,
    pub caps: StateCaps,
}

/// Errors collecting vCPU state for a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("vCPU {0} has stopped; its state is gone")]
    Stopped(usize),
    #[error("vCPU {0} is not paused")]
    NotPaused(usize),
    #[error("saving the state of vCPU {index}")]
    Failed {
        index: usize,
        #[source]
        source: VcpuStateError,
    },
}

impl VcpuControl {
    pub fn new(vcpus: u8) -> Arc<Self> {
        Arc::new(Self {
            wanted: AtomicU8::new(Wanted::Run as u8),
            places: Mutex::new(vec![Where::Running; usize::from(vcpus)]),
            changed: Condvar::new(),
            save_wanted: (0..vcpus).map(|_| AtomicBool::new(false)).collect(),
            saved: Mutex::new((0..vcpus).map(|_| None).collect()),
        })
    }

    fn wanted(&self) -> Wanted {
        match self.wanted.load(Ordering::Acquire) {
            0 => Wanted::Run,
            1 => Wanted::Pause,
            _ => Wanted::Stop,
        }
    }

    fn places(&self) -> MutexGuard<'_, Vec<Where>> {
        // Plain data: a panicked holder cannot leave it half-updated.
        self.places.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_place(&self, index: u8, place: Where) {
        if let Some(p) = self.places().get_mut(usize::from(index)) {
            *p = place;
        }
        self.changed.notify_all();
    }

    /// Blocks a vCPU thread while a pause is wanted, saving its state when asked to.
    fn park(
        &self,
        index: u8,
        halted_for_good: bool,
        save: &mut dyn FnMut() -> Result<VcpuState, VcpuStateError>,
    ) {
        let i = usize::from(index);
        let mut places = self.places();
        if let Some(p) = places.get_mut(i) {
            *p = Where::Parked { halted_for_good };
        }
        self.changed.notify_all();
        while self.wanted() == Wanted::Pause {
            if self
                .save_wanted
                .get(i)
                .is_some_and(|w| w.swap(false, Ordering::AcqRel))
            {
                let state = save();
                if let Some(slot) = self.saved_slots().get_mut(i) {
                    *slot = Some(state);
                }
                self.changed.notify_all();
                continue;
            }
            places = self.changed.wait(places).unwrap_or_else(|p| p.into_inner());
        }
        if let Some(p) = places.get_mut(usize::from(index)) {
            *p = Where::Running;
        }
        self.changed.notify_all();
    }

    fn saved_slots(&self) -> MutexGuard<'_, Vec<Option<Result<VcpuState, VcpuStateError>>>> {
        self.saved.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Collects the state of every vCPU; they must all be parked (the VM paused). Each
    /// vCPU thread saves its own (it owns its fd) and stays parked.
    pub fn save_all(&self) -> Result<Vec<VcpuState>, SaveError> {
        let mut places = self.places();
        for (i, p) in places.iter().enumerate() {
            match p {
                Where::Parked { .. } => {}
                Where::Stopped => return Err(SaveError::Stopped(i)),
                Where::Running => return Err(SaveError::NotPaused(i)),
            }
        }
        self.saved_slots().iter_mut().for_each(|s| *s = None);
        for w in &self.save_wanted {
            w.store(true, Ordering::Release);
        }
        self.changed.notify_all();
        loop {
            if self.saved_slots().iter().all(Option::is_some) {
                break;
            }
            if let Some(i) = places.iter().position(|p| *p == Where::Stopped) {
                return Err(SaveError::Stopped(i));
            }
            places = self
                .changed
                .wait_timeout(places, KICK_RETRY)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        drop(places);
        self.saved_slots()
            .iter_mut()
            .enumerate()
            .map(|(index, slot)| match slot.take() {
                Some(Ok(state)) => Ok(state),
                Some(Err(source)) => Err(SaveError::Failed { index, source }),
                None => Err(SaveError::Stopped(index)),
            })
            .collect()
    }

    /// Asks every vCPU for `wanted` and waits until each has complied (parked or stopped),
    /// kicking the ones still inside KVM_RUN. Returns where each one ended up.
    pub fn request(&self, wanted: Wanted, threads: &[JoinHandle<()>]) -> Vec<Where> {
        self.wanted.store(wanted as u8, Ordering::Release);
        let mut places = self.places();
        self.changed.notify_all();
        if wanted == Wanted::Run {
            return places.clone();
        }
        loop {
            let pending: Vec<usize> = places
                .iter()
                .enumerate()
                .filter(|(_, p)| match wanted {
                    Wanted::Pause => **p == Where::Running,
                    _ => **p != Where::Stopped,
                })
                .map(|(i, _)| i)
                .collect();
            if pending.is_empty() {
                return places.clone();
            }
            for i in pending {
                if let Some(t) = threads.get(i).filter(|t| !t.is_finished()) {
                    let _ = t.kill(kick_signal());
                }
            }
            places = self
                .changed
                .wait_timeout(places, KICK_RETRY)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// One vCPU and what its exits need.
pub struct Vcpu {
    pub index: u8,
    // Field order: the vCPU fd closes before this clone of guest memory is dropped.
    pub fd: VcpuFd,
    pub memory: GuestMemoryMmap,
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
    pub control: Arc<VcpuControl>,
    pub exits: Arc<Counters>,
    pub events: Sender<VmmEvent>,
    pub state_info: Arc<StateInfo>,
}

/// How the run loop goes on after an exit.
enum Next {
    Continue,
    Exit(ExitReason, String),
}

impl Vcpu {
    /// Starts the thread; it runs the guest until the VMM stops it or the guest ends.
    pub fn spawn(self) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name(format!("vcpu{}", self.index))
            .spawn(move || self.run())
    }

    fn run(mut self) {
        crate::seccomp::confine(crate::seccomp::Profile::Vcpu);
        let span = tracing::info_span!("vcpu", index = self.index);
        let _enter = span.enter();
        let mut first = true;
        // For the exits a guest can cause over and over.
        let mut warnings = LogLimit::new();
        loop {
            match self.control.wanted() {
                Wanted::Run => {}
                Wanted::Pause => {
                    let halted = self.halted_for_good();
                    let (fd, info) = (&self.fd, &self.state_info);
                    self.control.park(self.index, halted, &mut || {
                        VcpuState::save(fd, &info.msr_indices, info.caps)
                    });
                    continue;
                }
                Wanted::Stop => break,
            }
            if first {
                // Wall-clock microseconds, so a benchmark can compare with when it spawned us.
                let epoch_us = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros());
                tracing::debug!(epoch_us, "first KVM_RUN");
                first = false;
            }
            let next = match self.fd.run() {
                Ok(exit) => handle_exit(exit, &self.pio, &self.mmio, &self.exits, &mut warnings),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.exits.add(INTR, 1);
                    Next::Continue
                }
                Err(e) => Next::Exit(ExitReason::GuestCrash, format!("KVM_RUN failed: {e}")),
            };
            if let Next::Exit(reason, detail) = next {
                let detail = match reason {
                    ExitReason::GuestCrash => format!("{detail} at {}", self.where_guest_is()),
                    _ => detail,
                };
                let _ = self.events.send(VmmEvent::VcpuExit {
                    index: self.index,
                    reason,
                    detail,
                });
                break;
            }
        }
        self.control.set_place(self.index, Where::Stopped);
    }

    /// True when the vCPU sits in HLT with interrupts disabled: nothing but an NMI or INIT
    /// wakes it, which is how Linux halts or powers off without ACPI.
    fn halted_for_good(&self) -> bool {
        let halted = self
            .fd
            .get_mp_state()
            .is_ok_and(|s| s.mp_state == KVM_MP_STATE_HALTED);
        halted && self.fd.get_regs().is_ok_and(|r| r.rflags & RFLAGS_IF == 0)
    }

    /// The guest's RIP and mode, for crash reports (map RIP through System.map).
    fn where_guest_is(&self) -> String {
        match (self.fd.get_regs(), self.fd.get_sregs()) {
            (Ok(r), Ok(s)) => format!("rip {:#x} (cpl {}, cr3 {:#x})", r.rip, s.cs.dpl, s.cr3),
            _ => "an unknown rip".to_owned(),
        }
    }
}

fn handle_exit(
    exit: VcpuExit<'_>,
    pio: &Bus,
    mmio: &Bus,
    exits: &Counters,
    warnings: &mut LogLimit,
) -> Next {
    match exit {
        VcpuExit::IoIn(port, data) => {
            exits.add(IO_IN, 1);
            if !pio.read(u64::from(port), data) {
                data.fill(0xff);
                tracing::trace!(port, "read from an unmapped port");
            }
            Next::Continue
        }
        VcpuExit::IoOut(port, data) => {
            exits.add(IO_OUT, 1);
            if !pio.write(u64::from(port), data) {
                tracing::trace!(port, "write to an unmapped port");
            }
            Next::Continue
        }
        VcpuExit::MmioRead(addr, data) => {
            exits.add(MMIO_READ, 1);
            if !mmio.read(addr, data) {
                data.fill(0);
                tracing::trace!(addr, "read from unmapped MMIO");
            }
            Next::Continue
        }
        VcpuExit::MmioWrite(addr, data) => {
            exits.add(MMIO_WRITE, 1);
            if !mmio.write(addr, data) {
                tracing::trace!(addr, "write to unmapped MMIO");
            }
            Next::Continue
        }
        VcpuExit::Hlt => {
            exits.add(HLT, 1);
            Next::Exit(ExitReason::GuestPoweroff, "the vCPU halted".into())
        }
        VcpuExit::Shutdown => {
            exits.add(SHUTDOWN, 1);
            Next::Exit(
                ExitReason::GuestCrash,
                "the guest triple-faulted (KVM_EXIT_SHUTDOWN)".into(),
            )
        }
        VcpuExit::SystemEvent(kind, _) => {
            exits.add(SYSTEM_EVENT, 1);
            match kind {
                KVM_SYSTEM_EVENT_SHUTDOWN => {
                    Next::Exit(ExitReason::GuestPoweroff, "system event: shutdown".into())
                }
                KVM_SYSTEM_EVENT_RESET => {
                    Next::Exit(ExitReason::GuestReset, "system event: reset".into())
                }
                KVM_SYSTEM_EVENT_CRASH => {
                    Next::Exit(ExitReason::GuestCrash, "system event: crash".into())
                }
                other => {
                    if let Some(suppressed) = warnings.allow() {
                        tracing::warn!(
                            kind = other,
                            suppressed,
                            "ignoring an unknown KVM system event"
                        );
                    }
                    Next::Continue
                }
            }
        }
        VcpuExit::InternalError => {
            exits.add(INTERNAL_ERROR, 1);
            Next::Exit(
                ExitReason::GuestCrash,
                "KVM internal error (emulation failure?)".into(),
            )
        }
        VcpuExit::FailEntry(reason, cpu) => {
            exits.add(OTHER, 1);
            Next::Exit(
                ExitReason::GuestCrash,
                format!("KVM could not enter the guest (reason {reason:#x}, cpu {cpu})"),
            )
        }
        VcpuExit::Intr => {
            exits.add(INTR, 1);
            Next::Continue
        }
        other => {
            exits.add(OTHER, 1);
            if let Some(suppressed) = warnings.allow() {
                tracing::warn!(
                    exit = ?other,
                    suppressed,
                    "unexpected vCPU exit; resuming the guest"
                );
            }
            Next::Continue
        }
    }
}
