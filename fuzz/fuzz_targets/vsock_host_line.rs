//! A host client's hybrid-vsock handshake (`CONNECT <port>\n`), any bytes: it is refused or
//! accepted, never a panic; only a well-formed line is accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if hako_vmm::fuzzing::vsock_host_line(data) {
        assert!(
            data.starts_with(b"CONNECT ") && data.ends_with(b"\n"),
            "{data:?}"
        );
    }
});
