//! The PVH boot protocol: `hvm_start_info`, its memory map and module list (the initrd),
//! written where `layout.rs` says. The kernel enters at its PVH note's address in 32-bit
//! protected mode with paging off and `%ebx` pointing at the start info.

use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::boot_params::E820Entry;
use super::layout::{PVH_INFO_START, PVH_MEMMAP_START, PVH_MODLIST_START};

/// `hvm_start_info.magic`: "xEn3" with the top bit set.
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
/// Largest memory map the area between `PVH_MEMMAP_START` and the zero page holds.
const MAX_MEMMAP_ENTRIES: usize = 128;

/// Errors writing the PVH structures.
#[derive(Debug, thiserror::Error)]
pub enum PvhError {
    #[error("the memory map has {0} entries; at most {MAX_MEMMAP_ENTRIES} fit")]
    TooManyEntries(usize),
    #[error("writing the PVH {what} at {addr:#x}")]
    Write {
        what: &'static str,
        addr: u64,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

fn write<T: vm_memory::ByteValued>(
    mem: &impl GuestMemory,
    value: T,
    addr: u64,
    what: &'static str,
) -> Result<(), PvhError> {
    mem.write_obj(value, GuestAddress(addr))
        .map_err(|source| PvhError::Write { what, addr, source })
}

/// Writes start info, memory map and (when there is an initrd) the module list; returns the
/// start info's address, which the boot vCPU gets in `%rbx`.
pub fn write_start_info(
    mem: &impl GuestMemory,
    map: &[E820Entry],
    cmdline_addr: u64,
    initrd: Option<(u64, u64)>,
) -> Result<u64, PvhError> {
    if map.len() > MAX_MEMMAP_ENTRIES {
        return Err(PvhError::TooManyEntries(map.len()));
    }
    for (i, e) in map.iter().enumerate() {
        let entry = hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
            reserved: 0,
        };
        let addr = PVH_MEMMAP_START + (i * size_of::<hvm_memmap_table_entry>()) as u64;
        write(mem, entry, addr, "memory map entry")?;
    }
    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: cmdline_addr,
        memmap_paddr: PVH_MEMMAP_START,
        memmap_entries: map.len() as u32,
        ..Default::default()
    };
    if let Some((paddr, size)) = initrd {
        let module = hvm_modlist_entry {
            paddr,
            size,
            ..Default::default()
        };
        write(mem, module, PVH_MODLIST_START, "module list")?;
        info.nr_modules = 1;
        info.modlist_paddr = PVH_MODLIST_START;
    }
    write(mem, info, PVH_INFO_START, "start info")?;
    Ok(PVH_INFO_START)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::boot_params::e820_map;
    use vm_memory::GuestMemoryMmap;

    #[test]
    fn start_info_points_at_map_cmdline_and_initrd() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let map = e820_map(256 << 20).unwrap();
        let addr = write_start_info(&mem, &map, 0x20000, Some((0x800_0000, 0x1234))).unwrap();
        let info: hvm_start_info = mem.read_obj(GuestAddress(addr)).unwrap();
        assert_eq!(info.magic, XEN_HVM_START_MAGIC);
        assert_eq!(info.cmdline_paddr, 0x20000);
        assert_eq!(info.memmap_entries as usize, map.len());
        assert_eq!(info.nr_modules, 1);
        let module: hvm_modlist_entry = mem.read_obj(GuestAddress(info.modlist_paddr)).unwrap();
        assert_eq!((module.paddr, module.size), (0x800_0000, 0x1234));
        let last: hvm_memmap_table_entry = mem
            .read_obj(GuestAddress(
                info.memmap_paddr + 2 * size_of::<hvm_memmap_table_entry>() as u64,
            ))
            .unwrap();
        assert_eq!(last.addr + last.size, 256 << 20);
        assert!(
            PVH_MEMMAP_START + (MAX_MEMMAP_ENTRIES * size_of::<hvm_memmap_table_entry>()) as u64
                <= super::super::layout::ZERO_PAGE_START,
            "the largest map stays below the zero page"
        );
    }

    #[test]
    fn no_initrd_means_no_modules() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let addr = write_start_info(&mem, &e820_map(64 << 20).unwrap(), 0x20000, None).unwrap();
        let info: hvm_start_info = mem.read_obj(GuestAddress(addr)).unwrap();
        assert_eq!((info.nr_modules, info.modlist_paddr), (0, 0));
    }
}
