//! Guest RAM: anonymous private mappings laid out by the architecture (below the 32-bit MMIO
//! gap, the rest above 4 GiB).

use vm_memory::{GuestMemory, GuestMemoryMmap, GuestMemoryRegion};

use crate::arch::x86_64::memory_regions;

/// Errors creating guest memory.
#[derive(Debug, thiserror::Error)]
#[error("mapping {mib} MiB of guest memory")]
pub struct MemoryError {
    pub mib: u32,
    #[source]
    source: vm_memory::mmap::FromRangesError,
}

/// Asks the kernel to back guest RAM with huge pages (`true`) or not. The builder turns it
/// on while it copies the kernel and initrd in (thousands of page faults fewer) and off
/// before the guest runs, so only those fully used ranges stay huge and the guest's own
/// scattered touches cost 4 KiB each. Advice only: failure changes nothing but speed.
pub fn advise_huge_pages(mem: &GuestMemoryMmap, huge: bool) {
    let advice = if huge {
        libc::MADV_HUGEPAGE
    } else {
        libc::MADV_NOHUGEPAGE
    };
    for region in mem.iter() {
        #[allow(unsafe_code)]
        // SAFETY: madvise on a mapping this process owns, with its exact bounds; the advice
        // changes only how the kernel backs the pages, never their contents.
        let rc = unsafe { libc::madvise(region.as_ptr().cast(), region.len() as usize, advice) };
        if rc != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), huge, "madvise on guest RAM");
        }
    }
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
