//! The boot GDT (flat 64-bit code and data, a TSS) and KVM segments built from its entries.

use kvm_bindings::kvm_segment;

/// One GDT descriptor from flags (access byte in bits 0..8, flags nibble in 12..16), base, limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
        | ((limit as u64 & 0x000f_0000) << 32)
        | ((flags as u64 & 0xf0ff) << 40)
}

/// Null, 64-bit code (0x08), data (0x10), TSS (0x18).
pub const BOOT_GDT: [u64; 4] = [
    gdt_entry(0, 0, 0),
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
];

/// PVH entry: null, flat 32-bit code (0x08), data (0x10), TSS (0x18).
pub const PVH_GDT: [u64; 4] = [
    gdt_entry(0, 0, 0),
    gdt_entry(0xc09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x008b, 0, 0x67),
];

/// The KVM segment for GDT entry `index` (selector = index * 8).
pub fn kvm_segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let flag = |shift: u32, width: u32| ((entry >> shift) & ((1 << width) - 1)) as u8;
    let limit_raw = ((entry >> 32) & 0x000f_0000) | (entry & 0xffff);
    let granular = flag(55, 1) == 1;
    kvm_segment {
        base: ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000),
        limit: if granular {
            ((limit_raw as u32) << 12) | 0xfff
        } else {
            limit_raw as u32
        },
        selector: u16::from(index) * 8,
        type_: flag(40, 4),
        present: flag(47, 1),
        dpl: flag(45, 2),
        db: flag(54, 1),
        s: flag(44, 1),
        l: flag(53, 1),
        g: flag(55, 1),
        avl: flag(52, 1),
        padding: 0,
        unusable: u8::from(flag(47, 1) == 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_segment_is_flat_64_bit_ring_0() {
        let cs = kvm_segment_from_gdt(BOOT_GDT[1], 1);
        assert_eq!((cs.selector, cs.base, cs.limit), (0x08, 0, 0xffff_ffff));
        assert_eq!(
            (cs.type_, cs.present, cs.dpl, cs.l, cs.db, cs.s, cs.g),
            (0xb, 1, 0, 1, 0, 1, 1)
        );
        assert_eq!(cs.unusable, 0);
    }

    #[test]
    fn entry_round_trips_base_and_limit() {
        let e = gdt_entry(0x0093, 0x1234_5678, 0xabcde);
        let s = kvm_segment_from_gdt(e, 2);
        assert_eq!(s.base, 0x1234_5678);
        assert_eq!(s.limit, 0xabcde, "byte granular: limit as given");
        assert_eq!(
            kvm_segment_from_gdt(BOOT_GDT[0], 0).unusable,
            1,
            "the null entry is unusable"
        );
        let g = kvm_segment_from_gdt(gdt_entry(0x8093, 0, 0xabcde), 2);
        assert_eq!(g.limit, 0xabcd_efff, "4 KiB granular: limit scaled");
    }
}
