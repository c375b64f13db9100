//! Guest RAM: anonymous private mappings laid out by the architecture (below the 32-bit MMIO
//! gap, the rest above 4 GiB).

use vm_memory::GuestMemoryMmap;

use crate::arch::x86_64::memory_regions;

/// Errors creating guest memory.
#[derive(Debug, thiserror::Error)]
#[error("mapping {mib} MiB of guest memory")]
pub struct MemoryError {
    pub mib: u32,
    #[source]
    source: vm_memory::mmap::FromRangesError,
}

/// Maps `mib` MiB of guest RAM.
pub fn create(mib: u32) -> Result<GuestMemoryMmap, MemoryError> {
    let size = u64::from(mib) << 20;
    GuestMemoryMmap::from_ranges(&memory_regions(size))
        .map_err(|source| MemoryError { mib, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{GuestAddress, GuestMemory};

    #[test]
    fn maps_the_requested_size() {
        let mem = create(64).unwrap();
        assert_eq!(mem.last_addr(), GuestAddress((64 << 20) - 1));
    }
}
