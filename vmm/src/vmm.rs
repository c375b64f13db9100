//! The running VM: the VMM thread's event loop (guest exits, the control API, signals), the
//! power-off check, and the stop path that every exit goes through.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hako_vmm_api::{ControlReply, ControlRequest, ExitReason, Metrics, VmState};

use crate::arch::x86_64::vm_state::VmState as KvmVmState;
use crate::devices::legacy::i8042::I8042;
use crate::devices::legacy::serial::SerialConsole;
use crate::devices::virtio::mmio::MmioTransport;
use crate::metrics::{self, Counters};
use crate::snapshot::{self, DevicesState, MachineShape, Snapshot};
use crate::vcpu::{VcpuControl, Wanted, Where};
use crate::vm::Vm;

/// How often the VMM checks whether every vCPU has halted for good (Linux's poweroff
/// without ACPI ends that way).
const POWEROFF_POLL: Duration = Duration::from_millis(500);

/// What reaches the VMM thread.
pub enum VmmEvent {
    /// The guest pulsed the i8042 reset line.
    GuestReset,
    /// A vCPU thread ended the VM.
    VcpuExit {
        index: u8,
        reason: ExitReason,
        detail: String,
    },
    /// A control API request and where its reply goes.
    Control(ControlRequest, Sender<ControlReply>),
    /// SIGTERM, SIGINT or SIGHUP.
    Signal(i32),
}

/// A booted VM and everything that runs it.
pub struct Vmm {
    // Field order: vCPU threads are joined (in `stop`) before the VM and its memory drop.
    pub(crate) vcpu_threads: Vec<JoinHandle<()>>,
    pub(crate) control: Arc<VcpuControl>,
    pub(crate) events: Receiver<VmmEvent>,
    pub(crate) vcpu_exits: Vec<Arc<Counters>>,
    pub(crate) devices: Vec<(String, Arc<Counters>)>,
    /// The virtio transports in wiring order (snapshots save their registers).
    pub(crate) transports: Vec<Arc<Mutex<MmioTransport>>>,
    pub(crate) shape: MachineShape,
    pub(crate) console: Option<Arc<Mutex<SerialConsole>>>,
    pub(crate) i8042: Arc<Mutex<I8042>>,
    /// When a graceful shutdown gives up waiting for the guest.
    pub(crate) shutdown_deadline: Option<Instant>,
    pub(crate) vcpus: u8,
    pub(crate) memory_mib: u32,
    pub(crate) started: Instant,
    pub(crate) state: VmState,
    pub(crate) _vm: Vm,
}

impl Vmm {
    /// Runs until the guest ends, a control request or a signal stops it; returns why.
    pub fn run(mut self) -> ExitReason {
        let reason = loop {
            let wait = match self.shutdown_deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        tracing::info!(
                            "the guest did not stop within the grace period; stopping it"
                        );
                        break ExitReason::Stopped;
                    }
                    left.min(POWEROFF_POLL)
                }
                None => POWEROFF_POLL,
            };
            match self.events.recv_timeout(wait) {
                Ok(VmmEvent::GuestReset) => {
                    tracing::info!("the guest reset the machine (i8042)");
                    break ExitReason::GuestReset;
                }
                Ok(VmmEvent::VcpuExit {
                    index,
                    reason,
                    detail,
                }) => {
                    if reason == ExitReason::GuestCrash {
                        tracing::error!(vcpu = index, "guest crashed: {detail}");
                    } else {
                        tracing::info!(vcpu = index, "guest ended: {detail}");
                    }
                    break reason;
                }
                Ok(VmmEvent::Control(request, reply)) => {
                    let (answer, exit) = self.handle(request);
                    let _ = reply.send(answer);
                    if let Some(reason) = exit {
                        break reason;
                    }
                }
                Ok(VmmEvent::Signal(signal)) => {
                    tracing::info!(signal, "stopping on a signal");
                    break ExitReason::Stopped;
                }
                Err(RecvTimeoutError::Timeout) => {
                    if self.state != VmState::Paused && self.powered_off() {
                        tracing::info!("every vCPU halted with interrupts off: guest powered off");
                        break ExitReason::GuestPoweroff;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break ExitReason::Stopped,
            }
        };
        self.stop();
        reason
    }

    fn powered_off(&self) -> bool {
        let places = self.control.request(Wanted::Pause, &self.vcpu_threads);
        let all_halted = places.iter().all(|p| {
            matches!(
                p,
                Where::Parked {
                    halted_for_good: true
                } | Where::Stopped
            )
        });
        self.control.request(Wanted::Run, &self.vcpu_threads);
        all_halted
    }

    /// Carries out one control request; the second value ends the VM.
    fn handle(&mut self, request: ControlRequest) -> (ControlReply, Option<ExitReason>) {
        tracing::debug!(?request, "control request");
        match request {
            ControlRequest::Status => (self.status(), None),
            ControlRequest::Pause => {
                self.control.request(Wanted::Pause, &self.vcpu_threads);
                self.state = VmState::Paused;
                (ControlReply::Done, None)
            }
            ControlRequest::Resume => {
                self.control.request(Wanted::Run, &self.vcpu_threads);
                self.state = VmState::Running;
                (ControlReply::Done, None)
            }
            ControlRequest::Shutdown { grace_ms: 0 } => {
                self.state = VmState::ShuttingDown;
                (ControlReply::Done, Some(ExitReason::Stopped))
            }
            ControlRequest::Shutdown { grace_ms } => {
                if self.state == VmState::Paused {
                    self.control.request(Wanted::Run, &self.vcpu_threads);
                }
                self.state = VmState::ShuttingDown;
                let typed = self
                    .i8042
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .ctrl_alt_del();
                tracing::info!(
                    grace_ms,
                    ctrl_alt_del = typed,
                    "shutting down: asked the guest (Ctrl-Alt-Del) where it has a keyboard"
                );
                self.shutdown_deadline = Some(Instant::now() + Duration::from_millis(grace_ms));
                (ControlReply::Done, None)
            }
            ControlRequest::Metrics => (ControlReply::Metrics(self.metrics()), None),
            ControlRequest::Snapshot { dir } => {
                if self.state == VmState::ShuttingDown {
                    return (
                        ControlReply::Error {
                            message: "the VM is shutting down".into(),
                        },
                        None,
                    );
                }
                if self.state != VmState::Paused {
                    self.control.request(Wanted::Pause, &self.vcpu_threads);
                    self.state = VmState::Paused;
                }
                let started = Instant::now();
                match self.snapshot(&dir) {
                    Ok(()) => {
                        tracing::info!(
                            dir = %dir.display(),
                            ms = started.elapsed().as_secs_f64() * 1e3,
                            "snapshot written; the VM stays paused"
                        );
                        (ControlReply::Done, None)
                    }
                    Err(message) => {
                        tracing::error!(dir = %dir.display(), "snapshot failed: {message}");
                        (ControlReply::Error { message }, None)
                    }
                }
            }
        }
    }

    /// Writes the paused VM to `dir`. A failure leaves no partial snapshot behind.
    fn snapshot(&self, dir: &std::path::Path) -> Result<(), String> {
        let chain = crate::error_chain;
        if let Some((name, _)) = self
            .devices
            .iter()
            .find(|(name, c)| name.starts_with("fs:") && c.snapshot().get("requests") > Some(&0))
        {
            return Err(format!(
                "the guest has mounted {name}: its open files cannot move to another VM; \
                 snapshot before the shared directory is mounted"
            ));
        }
        snapshot::prepare_dir(dir).map_err(|e| chain(&e))?;
        let vcpus = self.control.save_all().map_err(|e| chain(&e))?;
        let vm = KvmVmState::save(self._vm.fd()).map_err(|e| chain(&e))?;
        let devices = DevicesState {
            serial: self
                .console
                .as_ref()
                .map(|c| c.lock().unwrap_or_else(|p| p.into_inner()).save()),
            i8042: self.i8042.lock().unwrap_or_else(|p| p.into_inner()).save(),
            virtio: self
                .transports
                .iter()
                .map(|t| t.lock().unwrap_or_else(|p| p.into_inner()).save())
                .collect(),
        };
        let memory_path = dir.join(snapshot::MEMORY_FILE);
        let written = snapshot::memory::write(self._vm.memory(), &memory_path)
            .map_err(|e| chain(&e))
            .and_then(|memory| {
                let state = Snapshot {
                    format_version: snapshot::FORMAT_VERSION,
                    vmm_version: env!("CARGO_PKG_VERSION").to_owned(),
                    machine: self.shape.clone(),
                    memory,
                    vm,
                    vcpus,
                    devices,
                };
                snapshot::write_state(dir, &state).map_err(|e| chain(&e))
            });
        if written.is_err() {
            let _ = std::fs::remove_file(&memory_path);
            let _ = std::fs::remove_file(dir.join(snapshot::STATE_FILE));
        }
        written
    }

    fn status(&self) -> ControlReply {
        ControlReply::Status {
            state: self.state,
            vcpus: self.vcpus,
            memory_mib: self.memory_mib,
            uptime_ms: self.started.elapsed().as_millis() as u64,
        }
    }

    fn metrics(&self) -> Metrics {
        Metrics {
            vcpu_exits: metrics::sum(self.vcpu_exits.iter().map(|c| &**c)),
            devices: self
                .devices
                .iter()
                .map(|(name, c)| (name.clone(), c.snapshot()))
                .collect(),
        }
    }

    /// Stops and joins every vCPU thread and flushes the console.
    fn stop(&mut self) {
        self.control.request(Wanted::Stop, &self.vcpu_threads);
        for t in self.vcpu_threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("a vCPU thread panicked");
            }
        }
        if let Some(console) = &self.console {
            console.lock().unwrap_or_else(|p| p.into_inner()).flush();
        }
    }
}
