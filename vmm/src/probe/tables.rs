//! The probe guest's system tables: page tables, IDT and TSS, as bytes at guest addresses.

use super::layout::*;

/// Identity map of the first 2 MiB with 4 KiB pages; only [`USER_PAGES`] are user-accessible.
/// Returns (guest address, bytes) pairs.
pub(crate) fn page_tables() -> Vec<(u64, Vec<u8>)> {
    let upper = PTE_PRESENT | PTE_WRITABLE | PTE_USER; // leaf entries decide user access
    let mut pt = Vec::with_capacity(4096);
    for page in 0..512u64 {
        let addr = page << 12;
        let user = if USER_PAGES.contains(&addr) {
            PTE_USER
        } else {
            0
        };
        pt.extend_from_slice(&(addr | PTE_PRESENT | PTE_WRITABLE | user).to_le_bytes());
    }
    vec![
        (PML4, (PDPT | upper).to_le_bytes().to_vec()),
        (PDPT, (PD | upper).to_le_bytes().to_vec()),
        (PD, (PT | upper).to_le_bytes().to_vec()),
        (PT, pt),
    ]
}

/// 64-bit interrupt gates (DPL 0) to each handler.
pub(crate) fn idt(handlers: &[u64]) -> Vec<u8> {
    let mut idt = Vec::with_capacity(handlers.len() * 16);
    for &h in handlers {
        let low = (h & 0xffff)
            | (u64::from(KERNEL_CS) << 16)
            | (0x8e << 40) // present, DPL 0, 64-bit interrupt gate
            | (((h >> 16) & 0xffff) << 48);
        idt.extend_from_slice(&low.to_le_bytes());
        idt.extend_from_slice(&(h >> 32).to_le_bytes());
    }
    idt
}

/// A 64-bit TSS whose RSP0 is the kernel stack (used when user mode takes an exception).
pub(crate) fn tss() -> Vec<u8> {
    let mut tss = vec![0u8; 104];
    tss[4..12].copy_from_slice(&KERNEL_STACK_TOP.to_le_bytes());
    tss[102..104].copy_from_slice(&104u16.to_le_bytes()); // no I/O permission bitmap
    tss
}

pub(crate) fn gdt() -> Vec<u8> {
    GDT_ENTRIES.iter().flat_map(|e| e.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pte(pt: &[u8], addr: u64) -> u64 {
        let i = (addr >> 12) as usize * 8;
        u64::from_le_bytes(pt[i..i + 8].try_into().unwrap())
    }

    #[test]
    fn only_user_pages_are_user_accessible() {
        let tables = page_tables();
        let (_, pt) = tables.iter().find(|(a, _)| *a == PT).unwrap();
        assert_eq!(pte(pt, USER_CODE) & PTE_USER, PTE_USER);
        assert_eq!(pte(pt, USER_STACK_TOP - 0x1000) & PTE_USER, PTE_USER);
        assert_eq!(
            pte(pt, SYSCALL_ENTRY) & PTE_USER,
            0,
            "LSTAR page must be supervisor-only"
        );
        assert_eq!(pte(pt, KERNEL_CODE) & PTE_USER, 0);
        assert_eq!(pte(pt, 0x1f_f000), 0x1f_f000 | PTE_PRESENT | PTE_WRITABLE);
    }

    #[test]
    fn idt_gate_splits_handler_address() {
        let idt = idt(&[0x1234_5678_9abc]);
        let low = u64::from_le_bytes(idt[0..8].try_into().unwrap());
        assert_eq!(low & 0xffff, 0x9abc);
        assert_eq!((low >> 16) & 0xffff, u64::from(KERNEL_CS));
        assert_eq!((low >> 40) & 0xff, 0x8e);
        assert_eq!((low >> 48) & 0xffff, 0x5678);
        assert_eq!(u32::from_le_bytes(idt[8..12].try_into().unwrap()), 0x1234);
    }

    #[test]
    fn tss_descriptor_points_at_tss() {
        let d = GDT_ENTRIES[usize::from(TSS_SELECTOR) / 8];
        assert_eq!(d & 0xffff, 0x67);
        assert_eq!((d >> 16) & 0xff_ffff, TSS);
        assert_eq!(
            u64::from_le_bytes(tss()[4..12].try_into().unwrap()),
            KERNEL_STACK_TOP
        );
    }
}
