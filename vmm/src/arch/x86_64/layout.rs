//! Every guest-physical address the x86_64 boot uses, in one place.

/// GDT and IDT of the boot vCPU.
pub const BOOT_GDT_START: u64 = 0x500;
pub const BOOT_IDT_START: u64 = 0x520;
/// The Linux zero page (boot_params).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity-mapping page tables (PML4, PDPT, PD), one page each.
pub const PML4_START: u64 = 0x9000;
pub const PDPTE_START: u64 = 0xa000;
pub const PDE_START: u64 = 0xb000;
/// Start of the extended BIOS data area: low RAM ends here.
pub const EBDA_START: u64 = 0x9fc00;
/// Kernel command line and its largest size.
pub const CMDLINE_START: u64 = 0x20000;
pub const CMDLINE_MAX_SIZE: usize = 4096;
/// Where the kernel is loaded (1 MiB).
pub const HIMEM_START: u64 = 0x10_0000;
/// The 32-bit MMIO window (virtio-mmio devices, IOAPIC, LAPIC) below 4 GiB.
pub const MMIO32_START: u64 = 0xc000_0000;
pub const FIRST_ADDR_PAST_4GIB: u64 = 1 << 32;
/// Local APIC and IOAPIC MMIO addresses, and the IOAPIC's input pins.
pub const LAPIC_ADDR: u32 = 0xfee0_0000;
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
pub const IOAPIC_PINS: u8 = 24;
/// PVH boot: `hvm_start_info`, the module list (initrd) and the memory map.
pub const PVH_INFO_START: u64 = 0x6000;
pub const PVH_MODLIST_START: u64 = 0x6040;
pub const PVH_MEMMAP_START: u64 = 0x6100;
/// Three pages KVM needs for the TSS on Intel hosts, just below the IOAPIC window's top area.
pub const KVM_TSS_ADDRESS: usize = 0xfffb_d000;
/// Legacy I/O ports and their ISA IRQs.
pub const SERIAL_PORT_BASE: u16 = 0x3f8;
pub const SERIAL_PORT_LEN: u16 = 8;
pub const SERIAL_IRQ: u32 = 4;
pub const I8042_PORT_BASE: u16 = 0x60;
pub const I8042_PORT_LEN: u16 = 5;
pub const I8042_KBD_IRQ: u32 = 1;
/// virtio-mmio windows start here (4 KiB each), with GSIs from `VIRTIO_FIRST_IRQ`.
pub const VIRTIO_MMIO_START: u64 = MMIO32_START;
pub const VIRTIO_MMIO_WINDOW: u64 = 0x1000;
pub const VIRTIO_FIRST_IRQ: u32 = 5;
pub const VIRTIO_LAST_IRQ: u32 = 23;
