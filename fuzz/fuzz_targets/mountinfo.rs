//! `/proc/self/mountinfo` as the runtime reads it, any bytes: mount points a guest named (a
//! directory renamed to anything) must never blind the listing, so a line that does not parse
//! is skipped, the others are kept, and nothing panics. Every mount point kept is absolute,
//! and a listing that is a run of well-formed lines parses to as many mounts.
#![no_main]

use std::path::Path;

use hako_runtime::host::mountinfo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mounts = mountinfo::parse(data);
    for m in &mounts {
        assert!(m.mount_point.is_absolute(), "{m:?}");
    }
    let lines = data.split(|&b| b == b'\n').count();
    assert!(mounts.len() <= lines);
    let below = mountinfo::under(&mounts, Path::new("/run/hako"));
    assert!(below.len() <= mounts.len());
    // The same bytes behind well-formed fields are one mount each, whatever they hold.
    let point: Vec<u8> = data
        .iter()
        .copied()
        .filter(|b| !matches!(b, b' ' | b'\n'))
        .collect();
    let mut line = b"1 0 0:1 / /".to_vec();
    line.extend_from_slice(&point);
    line.extend_from_slice(b" rw - tmpfs t rw\n");
    let listing = [line.clone(), line].concat();
    assert_eq!(mountinfo::parse(&listing).len(), 2);
});
