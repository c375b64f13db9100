//! A guest's block request chain against a 64 KiB scratch disk, writable or read-only (the
//! last input byte's low bit).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

const CAPACITY: u64 = 64 * 1024;

fn disk() -> &'static std::fs::File {
    static DISK: OnceLock<std::fs::File> = OnceLock::new();
    DISK.get_or_init(|| {
        let f = tempfile::tempfile().expect("a scratch disk");
        f.set_len(CAPACITY).expect("sizing the scratch disk");
        f
    })
}

fuzz_target!(|data: &[u8]| {
    let read_only = data.last().is_some_and(|b| b & 1 == 1);
    hako_fuzz::with_chain(data, |mem, chain| {
        let used = hako_vmm::fuzzing::block(chain, mem, disk(), CAPACITY, read_only);
        assert!(used.is_none_or(|n| (n as usize) <= hako_fuzz::MEMORY));
    });
});
