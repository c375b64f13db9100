//! Config → running VM: memory, kernel and initrd, boot structures, legacy devices, vCPUs.
//! The only place that wires the parts together.

use std::fs::OpenOptions;
use std::io::{LineWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hako_vmm_api::{BootProtocol, ConsoleConfig, CpuProfile, VmConfig, VmState};
use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::vcpu_state::{self, StateCaps, VcpuStateError};
use crate::arch::x86_64::vm_state::VmStateError;
use crate::arch::x86_64::{self as arch, cpuid, layout, loader, regs};
use crate::capped_log::{self, CappedLog};
use crate::devices::legacy::i8042::{I8042, ResetSignal};
use crate::devices::legacy::serial::{self, SerialConsole};
use crate::devices::manager::{DeviceManager, ManagerError};
use crate::devices::virtio::VirtioDevice;
use crate::devices::virtio::block::{self, Block, BlockError};
use crate::devices::virtio::fs::{self, Fs, FsError};
use crate::devices::virtio::mmio::{MmioTransport, RestoreError};
use crate::devices::virtio::net::{self, Net};
use crate::devices::virtio::vsock::{self, Vsock, VsockError};
use crate::devices::{Bus, BusError, IrqTrigger};
use crate::host_devices::HostDevices;
use crate::metrics::Counters;
use crate::snapshot::{self, MachineShape, Snapshot, SnapshotError};
use crate::vcpu::{self, StateInfo, Vcpu, VcpuControl};
use crate::vm::{Vm, VmError};
use crate::vmm::{Vmm, VmmEvent};
use crate::{memory, vmm};

/// Errors building the VM.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Loader(#[from] loader::LoaderError),
    #[error(transparent)]
    Arch(#[from] arch::ArchError),
    #[error("setting up vCPU {index}")]
    Regs {
        index: u8,
        #[source]
        source: regs::RegsError,
    },
    #[error("{what}")]
    KvmCall {
        what: String,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("opening the console log {path}")]
    ConsoleLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("placing a device")]
    Bus(#[from] BusError),
    #[error(transparent)]
    Manager(#[from] ManagerError),
    #[error(transparent)]
    Block(#[from] BlockError),
    #[error(transparent)]
    Vsock(#[from] VsockError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("devices.net {0}: its tap was not opened")]
    TapNotOpen(String),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("restoring vCPU {index} from the snapshot")]
    VcpuState {
        index: u8,
        #[source]
        source: VcpuStateError,
    },
    #[error("reading what KVM saves of a vCPU")]
    StateInfo(#[source] VcpuStateError),
    #[error("restoring the VM from the snapshot")]
    VmState(#[source] VmStateError),
    #[error(transparent)]
    Transport(#[from] RestoreError),
    #[error("{0}")]
    Serial(String),
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> BuildError {
    move |source| BuildError::Io { what, source }
}

/// The kernel command line: the VMM's arguments, the CPU profile's fallbacks, then the
/// user's, so the user's win where the kernel takes the last value.
pub fn kernel_cmdline(config: &VmConfig, devices: &str) -> String {
    let mut args = vec!["reboot=k", "panic=-1", "8250.nr_uarts=1"];
    match config.console {
        ConsoleConfig::Off => args.push("console=none"),
        _ => args.push("console=ttyS0"),
    }
    if config.machine.cpu_profile == CpuProfile::Conservative {
        args.push(cpuid::conservative_cmdline());
    }
    if !devices.is_empty() {
        args.push(devices);
    }
    let user = config.kernel.cmdline.trim();
    if !user.is_empty() {
        args.push(user);
    }
    args.join(" ")
}

fn console_output(config: &ConsoleConfig) -> Result<Option<Box<dyn Write + Send>>, BuildError> {
    Ok(match config {
        ConsoleConfig::Stdout => Some(Box::new(std::io::stdout())),
        ConsoleConfig::File(path) => {
            let err = |source| BuildError::ConsoleLog {
                path: path.clone(),
                source,
            };
            // Appended to (the cap's truncation relies on it), never through a symlink.
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
                .map_err(err)?;
            let log =
                CappedLog::new(file, capped_log::CONSOLE_CAP, capped_log::KEPT).map_err(err)?;
            Some(Box::new(LineWriter::new(log)))
        }
        ConsoleConfig::Off => None,
    })
}

/// Builds the VM on the open `host` devices, boots its kernel and starts its vCPUs.
/// `events` is the channel `Vmm::run` listens on.
pub fn build(
    config: &VmConfig,
    host: HostDevices,
    events: (Sender<VmmEvent>, std::sync::mpsc::Receiver<VmmEvent>),
    started: Instant,
) -> Result<Vmm, BuildError> {
    assemble(config, host, events, started, None)
}

/// Builds the VM from the snapshot in `dir` (taken of a VM configured like `config` but
/// for its sockets, CID, shared directories and console) and resumes it.
pub fn restore(
    config: &VmConfig,
    host: HostDevices,
    dir: &Path,
    events: (Sender<VmmEvent>, std::sync::mpsc::Receiver<VmmEvent>),
    started: Instant,
) -> Result<Vmm, BuildError> {
    let snapshot = snapshot::read_state(dir)?;
    snapshot.machine.check(&MachineShape::of(config))?;
    let memory = snapshot::memory::map(&dir.join(snapshot::MEMORY_FILE), &snapshot.memory)
        .map_err(SnapshotError::from)?;
    tracing::debug!(
        ms = started.elapsed().as_secs_f64() * 1e3,
        "snapshot state read and memory mapped"
    );
    assemble(config, host, events, started, Some((&snapshot, memory)))
}

/// The one wiring of a VM, booted fresh (`from` None) or from a snapshot's state and mapped
/// memory.
fn assemble(
    config: &VmConfig,
    host: HostDevices,
    events: (Sender<VmmEvent>, std::sync::mpsc::Receiver<VmmEvent>),
    started: Instant,
    from: Option<(&Snapshot, vm_memory::GuestMemoryMmap)>,
) -> Result<Vmm, BuildError> {
    let (tx, rx) = events;
    let HostDevices { kvm, mut taps } = host;
    let kvm = &kvm;
    let machine = &config.machine;
    let mem_size = u64::from(machine.memory_mib) << 20;
    let (saved, guest_memory) = match from {
        Some((s, m)) => (Some(s), m),
        None => (None, memory::create(machine.memory_mib)?),
    };
    let vm = Vm::new(kvm, guest_memory.clone())?;
    tracing::debug!(ms = started.elapsed().as_secs_f64() * 1e3, "VM created");

    let kernel = match saved {
        Some(_) => None,
        None => {
            memory::advise_huge_pages(&guest_memory, true);
            let allow_pvh = config.kernel.boot_protocol == BootProtocol::Auto;
            let kernel = loader::load_kernel(&guest_memory, &config.kernel.path, allow_pvh)?;
            tracing::debug!(ms = started.elapsed().as_secs_f64() * 1e3, "kernel loaded");
            let initrd = match &config.kernel.initrd {
                Some(path) => Some(loader::load_initrd(&guest_memory, path, &kernel)?),
                None => None,
            };
            tracing::debug!(ms = started.elapsed().as_secs_f64() * 1e3, "initrd loaded");
            memory::advise_huge_pages(&guest_memory, false);
            Some((kernel, initrd))
        }
    };
    let mut mmio = Bus::new();
    let mut devices = Vec::new();
    let mut transports = Vec::new();
    let mut manager = DeviceManager::default();
    if let Some(v) = &config.devices.vsock {
        let counters = Counters::new(vsock::COUNTERS);
        let dev = Vsock::new(v.guest_cid, &v.uds_path, counters.clone())?;
        devices.push(("vsock".to_owned(), counters));
        transports.push(manager.add(vm.fd(), &mut mmio, &guest_memory, Box::new(dev))?);
    }
    for fs in &config.devices.fs {
        let counters = Counters::new(fs::COUNTERS);
        let dev = Fs::new(&fs.tag, &fs.shared_dir, fs.read_only, counters.clone())?;
        devices.push((dev.name().to_owned(), counters));
        transports.push(manager.add(vm.fd(), &mut mmio, &guest_memory, Box::new(dev))?);
    }
    for blk in &config.devices.block {
        let counters = Counters::new(block::COUNTERS);
        let dev = Block::open(&blk.id, &blk.path, blk.read_only, counters.clone())?;
        devices.push((dev.name().to_owned(), counters));
        transports.push(manager.add(vm.fd(), &mut mmio, &guest_memory, Box::new(dev))?);
    }
    for net in &config.devices.net {
        let counters = Counters::new(net::COUNTERS);
        // Checked with the config; a default never reaches a guest.
        let mac = net.mac_bytes().unwrap_or([2, 0, 0, 0, 0, 1]);
        let tap = taps
            .remove(&net.tap)
            .ok_or_else(|| BuildError::TapNotOpen(net.id.clone()))?;
        let dev = Net::with_io(&net.id, Box::new(tap), mac, net.mtu, counters.clone())
            .with_rate_limit(net.rate_limit);
        devices.push((dev.name().to_owned(), counters));
        transports.push(manager.add(vm.fd(), &mut mmio, &guest_memory, Box::new(dev))?);
    }
    if let Some(s) = saved {
        for (t, state) in transports.iter().zip(&s.devices.virtio) {
            lock(t).restore(state)?;
        }
    }
    let mmio = Arc::new(mmio);

    // How each vCPU starts: at the kernel's entry with the boot structures, or as saved.
    let start = match (saved, &kernel) {
        (Some(s), _) => VcpuStart::Saved(s),
        // Not reached: without a snapshot the kernel was loaded above.
        (None, None) => {
            return Err(SnapshotError::Mismatch("no kernel and no snapshot".into()).into());
        }
        (None, Some((kernel, initrd))) => {
            let cmdline = kernel_cmdline(config, &manager.cmdline());
            tracing::info!(entry = ?kernel.entry, %cmdline, "kernel loaded");
            let boot_info = arch::configure_system(
                &guest_memory,
                mem_size,
                machine.vcpus,
                &cmdline,
                kernel,
                *initrd,
            )?;
            VcpuStart::Boot {
                entry: kernel.entry,
                boot_info,
            }
        }
    };

    let mut pio = Bus::new();
    let console = match console_output(&config.console)? {
        Some(out) => {
            let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(io("creating the serial irqfd"))?;
            vm.register_irqfd(&irq, layout::SERIAL_IRQ)?;
            let counters = Counters::new(serial::COUNTERS);
            devices.push(("serial".to_owned(), counters.clone()));
            let uart = match saved.and_then(|s| s.devices.serial.as_ref()) {
                Some(state) => SerialConsole::restore(state, IrqTrigger(irq), out, counters)
                    .map_err(BuildError::Serial)?,
                None => SerialConsole::new(IrqTrigger(irq), out, counters),
            };
            let dev = Arc::new(Mutex::new(uart));
            pio.insert(
                u64::from(layout::SERIAL_PORT_BASE),
                u64::from(layout::SERIAL_PORT_LEN),
                dev.clone(),
            )?;
            Some(dev)
        }
        None => None,
    };
    let reset_tx = Mutex::new(tx.clone());
    let kbd_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(io("creating the keyboard irqfd"))?;
    vm.register_irqfd(&kbd_irq, layout::I8042_KBD_IRQ)?;
    let mut keyboard = I8042::new(
        IrqTrigger(kbd_irq),
        ResetSignal(Box::new(move || {
            let tx = reset_tx.lock().unwrap_or_else(|p| p.into_inner());
            let _ = tx.send(VmmEvent::GuestReset);
        })),
    );
    if let Some(s) = saved {
        keyboard.restore(&s.devices.i8042);
    }
    let i8042 = Arc::new(Mutex::new(keyboard));
    pio.insert(
        u64::from(layout::I8042_PORT_BASE),
        u64::from(layout::I8042_PORT_LEN),
        i8042.clone(),
    )?;
    let pio = Arc::new(pio);

    let mut base_cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(|source| BuildError::KvmCall {
            what: "reading the supported CPUID".into(),
            source,
        })?;
    cpuid::apply_profile(&mut base_cpuid, machine.cpu_profile);

    vcpu::install_kick_handler().map_err(io("installing the vCPU kick signal handler"))?;
    let state_info = Arc::new(StateInfo {
        msr_indices: vcpu_state::msr_indices(kvm).map_err(BuildError::StateInfo)?,
        caps: StateCaps::of(kvm),
    });
    let control = VcpuControl::new(machine.vcpus);
    let mut prepared = Vec::new();
    let mut vcpu_exits = Vec::new();
    for index in 0..machine.vcpus {
        let fd = vm.create_vcpu(index)?;
        match start {
            VcpuStart::Saved(s) => {
                let state = s
                    .vcpus
                    .get(usize::from(index))
                    .ok_or_else(|| SnapshotError::Mismatch(format!("no state for vCPU {index}")))?;
                state
                    .restore(&fd)
                    .map_err(|source| BuildError::VcpuState { index, source })?;
            }
            VcpuStart::Boot { entry, boot_info } => {
                let mut cpuid = base_cpuid.clone();
                cpuid::set_vcpu_identity(&mut cpuid, index, machine.vcpus);
                fd.set_cpuid2(&cpuid)
                    .map_err(|source| BuildError::KvmCall {
                        what: format!("setting CPUID of vCPU {index}"),
                        source,
                    })?;
                regs::setup_vcpu(&fd, &guest_memory, index, entry, boot_info)
                    .map_err(|source| BuildError::Regs { index, source })?;
            }
        }
        let exits = Counters::new(vcpu::EXIT_KINDS);
        vcpu_exits.push(exits.clone());
        prepared.push(Vcpu {
            index,
            fd,
            memory: guest_memory.clone(),
            pio: pio.clone(),
            mmio: mmio.clone(),
            control: control.clone(),
            exits,
            events: tx.clone(),
            state_info: state_info.clone(),
        });
    }
    if let Some(s) = saved {
        s.vm.restore(vm.fd()).map_err(BuildError::VmState)?;
        tracing::info!(
            ms = started.elapsed().as_secs_f64() * 1e3,
            "VM restored from a snapshot"
        );
    }
    let mut vcpu_threads = Vec::new();
    for v in prepared {
        vcpu_threads.push(v.spawn().map_err(io("starting a vCPU thread"))?);
    }
    tracing::info!(ms = started.elapsed().as_secs_f64() * 1e3, "vCPUs started");
    Ok(vmm::Vmm {
        vcpu_threads,
        control,
        events: rx,
        vcpu_exits,
        devices,
        transports,
        shape: MachineShape::of(config),
        console,
        i8042,
        shutdown_deadline: None,
        vcpus: machine.vcpus,
        memory_mib: machine.memory_mib,
        started,
        state: VmState::Running,
        _vm: vm,
    })
}

#[derive(Clone, Copy)]
enum VcpuStart<'a> {
    Boot {
        entry: loader::EntryPoint,
        boot_info: u64,
    },
    Saved(&'a Snapshot),
}

fn lock(t: &Mutex<MmioTransport>) -> std::sync::MutexGuard<'_, MmioTransport> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hako_vmm_api::{KernelConfig, MachineConfig};

    fn config(profile: CpuProfile, console: ConsoleConfig, user: &str) -> VmConfig {
        VmConfig {
            machine: MachineConfig {
                cpu_profile: profile,
                ..Default::default()
            },
            kernel: KernelConfig {
                path: "/k".into(),
                initrd: None,
                cmdline: user.into(),
                boot_protocol: Default::default(),
            },
            console,
            control_socket: None,
            devices: Default::default(),
            security: Default::default(),
        }
    }

    #[test]
    fn cmdline_puts_the_users_arguments_last() {
        let c = kernel_cmdline(
            &config(CpuProfile::Host, ConsoleConfig::Stdout, " quiet "),
            "virtio_mmio.device=4K@0xc0000000:5",
        );
        assert!(c.contains(" virtio_mmio.device=4K@0xc0000000:5 "), "{c}");
        assert!(c.starts_with("reboot=k panic=-1"), "{c}");
        assert!(c.contains("console=ttyS0"));
        assert!(c.ends_with(" quiet"), "{c}");
        assert!(!c.contains("clearcpuid"));
    }

    #[test]
    fn conservative_profile_adds_the_clearcpuid_fallback() {
        let c = kernel_cmdline(
            &config(CpuProfile::Conservative, ConsoleConfig::Off, ""),
            "",
        );
        assert!(c.contains("clearcpuid=cx16,xsave,smap"), "{c}");
        assert!(c.contains("console=none") && !c.contains("ttyS0"), "{c}");
    }

    #[test]
    fn the_console_file_keeps_its_tail_under_its_cap_and_is_not_opened_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let mut out = console_output(&ConsoleConfig::File(path.clone()))
            .unwrap()
            .unwrap();
        // Twice the cap, in console-sized lines.
        let mut n = 0u64;
        let mut written = 0;
        while written < 2 * capped_log::CONSOLE_CAP {
            let line = format!("guest line {n}\n");
            out.write_all(line.as_bytes()).unwrap();
            written += line.len() as u64;
            n += 1;
        }
        out.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.len() as u64 <= capped_log::CONSOLE_CAP,
            "{}",
            text.len()
        );
        assert!(text.len() >= capped_log::KEPT);
        assert!(text.ends_with(&format!("guest line {}\n", n - 1)));
        let link = dir.path().join("link.log");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(console_output(&ConsoleConfig::File(link)).is_err());
    }
}
