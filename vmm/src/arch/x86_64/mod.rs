//! x86_64 boot structures: the guest-physical layout, GDT, identity page tables, and the
//! e820 map / zero page. `builder.rs` (VMM issue) wires them into a booting VM.

pub mod boot_params;
pub mod cpuid;
pub mod gdt;
pub mod layout;
pub mod mptable;
pub mod page_tables;

use vm_memory::GuestAddress;

/// Guest RAM regions for `mem_size` bytes: below the 32-bit MMIO gap, and the rest above 4 GiB.
pub fn memory_regions(mem_size: u64) -> Vec<(GuestAddress, usize)> {
    let below = mem_size.min(layout::MMIO32_START);
    let mut regions = vec![(GuestAddress(0), below as usize)];
    if mem_size > below {
        regions.push((
            GuestAddress(layout::FIRST_ADDR_PAST_4GIB),
            (mem_size - below) as usize,
        ));
    }
    regions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_memory_is_one_region() {
        assert_eq!(
            memory_regions(256 << 20),
            vec![(GuestAddress(0), 256 << 20)]
        );
    }

    #[test]
    fn large_memory_skips_the_mmio_gap() {
        let r = memory_regions(4 << 30);
        assert_eq!(r[0], (GuestAddress(0), layout::MMIO32_START as usize));
        assert_eq!(r[1].0, GuestAddress(1 << 32));
        assert_eq!(r[0].1 + r[1].1, 4 << 30);
    }
}
