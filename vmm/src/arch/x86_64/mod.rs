//! x86_64 boot: the guest-physical layout, kernel/initrd loading, the boot structures (zero
//! page or PVH start info, MP table, GDT, page tables), CPUID and initial vCPU state.
//! `builder.rs` calls [`configure_system`] and [`regs::setup_vcpu`].

pub mod boot_params;
pub mod cpuid;
pub mod gdt;
pub mod layout;
pub mod loader;
pub mod mptable;
pub mod page_tables;
pub mod pvh;
pub mod regs;
pub mod vcpu_state;
pub mod vm_state;

use vm_memory::{Bytes, GuestAddress, GuestMemory};

use boot_params::BootInputs;
use loader::{EntryPoint, LoadedKernel};

/// Errors writing the boot structures.
#[derive(Debug, thiserror::Error)]
pub enum ArchError {
    #[error("the kernel command line is {len} bytes; at most {max} fit")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("writing the kernel command line")]
    Cmdline(#[source] vm_memory::GuestMemoryError),
    #[error(transparent)]
    BootParams(#[from] boot_params::BootParamsError),
    #[error(transparent)]
    Pvh(#[from] pvh::PvhError),
    #[error(transparent)]
    Mptable(#[from] mptable::MptableError),
}

/// Writes command line, MP table and the boot protocol's structures; returns the address the
/// boot vCPU gets in `%rbx` (PVH start info) or `%rsi` (zero page).
pub fn configure_system(
    mem: &impl GuestMemory,
    mem_size: u64,
    vcpus: u8,
    cmdline: &str,
    kernel: &LoadedKernel,
    initrd: Option<(u64, u64)>,
) -> Result<u64, ArchError> {
    if cmdline.len() >= layout::CMDLINE_MAX_SIZE {
        return Err(ArchError::CmdlineTooLong {
            len: cmdline.len(),
            max: layout::CMDLINE_MAX_SIZE - 1,
        });
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(layout::CMDLINE_START))
        .map_err(ArchError::Cmdline)?;
    mptable::write(mem, vcpus)?;
    let map = boot_params::e820_map(mem_size)?;
    match kernel.entry {
        EntryPoint::Pvh(_) => Ok(pvh::write_start_info(
            mem,
            &map,
            layout::CMDLINE_START,
            initrd,
        )?),
        EntryPoint::Linux64(_) => {
            let inputs = BootInputs {
                cmdline_addr: layout::CMDLINE_START,
                cmdline_len: cmdline.len(),
                initrd,
                setup_header: kernel.setup_header,
            };
            boot_params::write_zero_page(mem, &map, inputs)?;
            Ok(layout::ZERO_PAGE_START)
        }
    }
}

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
