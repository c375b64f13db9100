//! A guest's network chains: a TX chain gathered as a frame (even last byte), or an RX chain a
//! frame from the tap is scattered over (odd last byte; the frame is the input's tail).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let rx = data.last().is_some_and(|b| b & 1 == 1);
    hako_fuzz::with_chain(data, |mem, chain| {
        if rx {
            let mut frame = data[data.len().saturating_sub(128)..].to_vec();
            if let Some(used) = hako_vmm::fuzzing::net_rx(chain, mem, &mut frame) {
                assert_eq!(used as usize, frame.len());
            }
        } else if let Some(len) = hako_vmm::fuzzing::net_tx(chain, mem) {
            assert!(len <= hako_vmm::devices::virtio::net::MAX_FRAME);
        }
    });
});
