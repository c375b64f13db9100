//! Guest-physical layout of the probe guest: 2 MiB of RAM, identity-mapped with 4 KiB pages
//! so user and supervisor pages can be told apart.

pub(crate) const MEM_SIZE: usize = 2 << 20;

pub(crate) const GDT: u64 = 0x500;
pub(crate) const TSS: u64 = 0x600;
pub(crate) const IDT: u64 = 0x1000;
pub(crate) const PML4: u64 = 0x2000;
pub(crate) const PDPT: u64 = 0x3000;
pub(crate) const PD: u64 = 0x4000;
pub(crate) const PT: u64 = 0x5000;
pub(crate) const MAILBOX: u64 = 0x6000;
pub(crate) const KERNEL_CODE: u64 = 0x8000;
pub(crate) const SYSCALL_ENTRY: u64 = 0x9000;
pub(crate) const USER_CODE: u64 = 0xa000;
pub(crate) const EXCEPTION_CODE: u64 = 0xb000;
/// One user stack page at 0xc000.
pub(crate) const USER_STACK_TOP: u64 = 0xd000;
/// One kernel stack page at 0xf000.
pub(crate) const KERNEL_STACK_TOP: u64 = 0x10000;
/// Pages user mode may touch; every other page is supervisor-only.
pub(crate) const USER_PAGES: [u64; 2] = [USER_CODE, USER_STACK_TOP - 0x1000];

pub(crate) const IDT_VECTORS: usize = 32;

// GDT selectors.
pub(crate) const KERNEL_CS: u16 = 0x08;
pub(crate) const KERNEL_DS: u16 = 0x10;
pub(crate) const USER_DS: u16 = 0x20 | 3;
pub(crate) const USER_CS: u16 = 0x28 | 3;
pub(crate) const TSS_SELECTOR: u16 = 0x30;

/// 64-bit GDT descriptors, index = selector / 8 (the TSS takes two slots).
pub(crate) const GDT_ENTRIES: [u64; 8] = [
    0,
    0x00af_9b00_0000_ffff, // 0x08 kernel code, 64-bit
    0x00cf_9300_0000_ffff, // 0x10 kernel data
    0x00cf_fb00_0000_ffff, // 0x18 user code, 32-bit (unused; SYSRET layout)
    0x00cf_f300_0000_ffff, // 0x20 user data
    0x00af_fb00_0000_ffff, // 0x28 user code, 64-bit
    // 0x30 TSS: limit 0x67, base TSS, type 9 (available 64-bit TSS), present.
    0x0000_8900_0000_0067 | ((TSS & 0xff_ffff) << 16) | (((TSS >> 24) & 0xff) << 56),
    0,
];

// Mailbox fields (dword/qword slots) the handlers fill before reporting.
pub(crate) const MAILBOX_KIND: u32 = MAILBOX as u32;
pub(crate) const MAILBOX_RCX: u32 = MAILBOX as u32 + 0x08;
pub(crate) const MAILBOX_R11: u32 = MAILBOX as u32 + 0x10;
pub(crate) const MAILBOX_CS: u32 = MAILBOX as u32 + 0x18;
pub(crate) const MAILBOX_VECTOR: u32 = MAILBOX as u32 + 0x20;
pub(crate) const MAILBOX_ERROR_CODE: u32 = MAILBOX as u32 + 0x28;
pub(crate) const MAILBOX_RIP: u32 = MAILBOX as u32 + 0x30;
pub(crate) const MAILBOX_CR2: u32 = MAILBOX as u32 + 0x38;
/// RAX as the handler found it: [`SYSCALL_MAGIC`] if it came from the probe's `syscall`.
pub(crate) const MAILBOX_RAX: u32 = MAILBOX as u32 + 0x40;
pub(crate) const KIND_SYSCALL_ENTRY: u32 = 1;
pub(crate) const KIND_EXCEPTION: u32 = 2;

/// `out` to this port marks a point in time (the VMM timestamps each exit).
pub(crate) const PORT_MARK: u8 = 0xf0;
/// `out` to this port ends the probe; the mailbox holds the result.
pub(crate) const PORT_DONE: u8 = 0xf1;

/// Loop lengths: the kernel loops differ by `KERNEL_LONG_LOOP - KERNEL_SHORT_LOOP`
/// iterations (~0.2 s where kernel mode is emulated, microseconds elsewhere).
pub(crate) const KERNEL_SHORT_LOOP: u32 = 10_000;
pub(crate) const KERNEL_LONG_LOOP: u32 = 110_000;
pub(crate) const USER_LOOP: u32 = 200_000_000;
/// RAX at the probe's `syscall`; the handlers record RAX so the host can tell it from noise.
pub(crate) const SYSCALL_MAGIC: u32 = 0x4841_4b4f; // "HAKO"

// Page table entry bits.
pub(crate) const PTE_PRESENT: u64 = 1;
pub(crate) const PTE_WRITABLE: u64 = 2;
pub(crate) const PTE_USER: u64 = 4;

// MSRs.
pub(crate) const MSR_STAR: u32 = 0xc000_0081;
pub(crate) const MSR_LSTAR: u32 = 0xc000_0082;
pub(crate) const MSR_SYSCALL_MASK: u32 = 0xc000_0084;

// Control register bits.
pub(crate) const CR0_PE: u64 = 1;
pub(crate) const CR0_MP: u64 = 1 << 1;
pub(crate) const CR0_ET: u64 = 1 << 4;
pub(crate) const CR0_NE: u64 = 1 << 5;
pub(crate) const CR0_PG: u64 = 1 << 31;
pub(crate) const CR4_PAE: u64 = 1 << 5;
pub(crate) const EFER_SCE: u64 = 1;
pub(crate) const EFER_LME: u64 = 1 << 8;
pub(crate) const EFER_LMA: u64 = 1 << 10;
