//! A guest's vsock TX chains: header and payload checks, then the connection state machine
//! (a muxer with no host listeners: every guest connection is refused or reset), then the
//! replies it queues.
#![no_main]

use std::sync::{Mutex, OnceLock};

use hako_vmm::fuzzing::VsockHost;
use libfuzzer_sys::fuzz_target;

struct Host {
    vsock: VsockHost,
    _dir: tempfile::TempDir,
}

fn host() -> &'static Mutex<Host> {
    static HOST: OnceLock<Mutex<Host>> = OnceLock::new();
    HOST.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let vsock = VsockHost::new(&dir.path().join("v.sock")).expect("a vsock muxer");
        Mutex::new(Host { vsock, _dir: dir })
    })
}

fuzz_target!(|data: &[u8]| {
    let mut host = host().lock().unwrap_or_else(|e| e.into_inner());
    hako_fuzz::with_chain(data, |mem, chain| {
        host.vsock.tx(chain, mem);
    });
});
