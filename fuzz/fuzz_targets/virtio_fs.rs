//! A guest's FUSE request chain (any descriptors, any bytes) to the virtio-fs device over a
//! scratch shared directory: guard, then the passthrough server.
#![no_main]

use std::sync::OnceLock;

use hako_vmm::devices::virtio::fs::{COUNTERS, Fs};
use hako_vmm::metrics::Counters;
use libfuzzer_sys::fuzz_target;

struct Share {
    fs: Fs,
    _dir: tempfile::TempDir,
}

fn share() -> &'static std::sync::Mutex<Share> {
    static SHARE: OnceLock<std::sync::Mutex<Share>> = OnceLock::new();
    SHARE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a scratch directory");
        std::fs::create_dir_all(dir.path().join("d")).expect("a directory in the share");
        std::fs::write(dir.path().join("f"), b"file in the share").expect("a file in the share");
        let fs = Fs::new("fuzz", dir.path(), false, Counters::new(COUNTERS)).expect("the device");
        std::sync::Mutex::new(Share { fs, _dir: dir })
    })
}

fuzz_target!(|data: &[u8]| {
    let share = share().lock().unwrap_or_else(|e| e.into_inner());
    hako_fuzz::with_chain(data, |mem, chain| {
        share.fs.handle(mem, chain);
    });
});
