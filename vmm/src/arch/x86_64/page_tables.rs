//! Identity-mapped page tables for the 64-bit boot: the first 1 GiB in 2 MiB pages, enough
//! for the kernel, its command line and an initrd placed below 1 GiB.

use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::layout::{PDE_START, PDPTE_START, PML4_START};

const PRESENT_WRITABLE: u64 = 0x3;
const HUGE_PAGE: u64 = 0x80;

/// Errors writing the tables into guest memory.
#[derive(Debug, thiserror::Error)]
#[error("writing page table entry at {addr:#x}")]
pub struct PageTableError {
    pub addr: u64,
    source: vm_memory::GuestMemoryError,
}

fn write(mem: &impl GuestMemory, addr: u64, value: u64) -> Result<(), PageTableError> {
    mem.write_obj(value, GuestAddress(addr))
        .map_err(|source| PageTableError { addr, source })
}

/// Writes PML4 → PDPT → PD (512 × 2 MiB); returns the CR3 value.
pub fn setup_identity_map(mem: &impl GuestMemory) -> Result<u64, PageTableError> {
    write(mem, PML4_START, PDPTE_START | PRESENT_WRITABLE)?;
    write(mem, PDPTE_START, PDE_START | PRESENT_WRITABLE)?;
    for i in 0..512u64 {
        write(
            mem,
            PDE_START + i * 8,
            (i << 21) | HUGE_PAGE | PRESENT_WRITABLE,
        )?;
    }
    Ok(PML4_START)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    #[test]
    fn maps_first_gib_with_2mib_pages() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        assert_eq!(setup_identity_map(&mem).unwrap(), PML4_START);
        let read = |a: u64| mem.read_obj::<u64>(GuestAddress(a)).unwrap();
        assert_eq!(read(PML4_START), PDPTE_START | 3);
        assert_eq!(read(PDPTE_START), PDE_START | 3);
        assert_eq!(read(PDE_START), 0x83);
        assert_eq!(read(PDE_START + 511 * 8), (511 << 21) | 0x83);
    }

    #[test]
    fn too_small_memory_is_an_error_naming_the_address() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
        let err = setup_identity_map(&mem).unwrap_err();
        assert_eq!(err.addr, PML4_START);
    }
}
