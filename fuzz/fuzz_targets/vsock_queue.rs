//! A guest's whole vsock queues, many chains over many wakeups: the TX and RX descriptor
//! tables come from the input, then a script of rounds in which the guest offers TX chains
//! (packets) and RX buffers and the device wakes, as its worker does. Whatever the guest
//! does, the replies waiting for RX buffers stay under the pause mark (TX back-pressure).
//! (Its ring indices are no check: RX buffers may point at its own rings.)
//!
//! Input: bytes 0..256 the TX descriptor table and 256..512 the RX one (16 descriptors each);
//! byte 512 the number of script bytes S, then S bytes, one per round (low nibble: TX chains
//! offered, at heads 0, 1, ... 15, 0...; high nibble: RX buffers, likewise); the rest is
//! copied into guest memory at `hako_fuzz::DATA` for the descriptors to point at.
#![no_main]

use std::sync::OnceLock;

use hako_fuzz::{DATA, MEMORY, Ring};
use hako_vmm::fuzzing::{TX_PAUSE_AT, VsockQueues};
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const SIZE: u16 = 16;
const TABLE: usize = 16 * SIZE as usize;

fn scratch() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a scratch directory"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(mem) = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEMORY)]) else {
        return;
    };
    let table = |i: usize| {
        data.get(i * TABLE..)
            .map_or(&[][..], |t| &t[..t.len().min(TABLE)])
    };
    let tx = Ring::new(&mem, GuestAddress(0), SIZE, table(0));
    let rx = Ring::new(&mem, GuestAddress(0x400), SIZE, table(1));
    let ev = Ring::new(&mem, GuestAddress(0x800), SIZE, &[]);
    let script_len = data.get(2 * TABLE).copied().unwrap_or(0) as usize;
    let script = data.get(2 * TABLE + 1..).unwrap_or_default();
    let (script, payload) = script.split_at(script_len.min(script.len()));
    let payload = &payload[..payload.len().min(MEMORY - DATA as usize)];
    if mem.write_slice(payload, GuestAddress(DATA)).is_err() {
        return;
    }
    let (Some(rxq), Some(txq), Some(evq)) = (rx.queue(), tx.queue(), ev.queue()) else {
        return;
    };
    let path = scratch().path().join("v.sock");
    let mut device = VsockQueues::new(&path, mem.clone(), [rxq, txq, evq]).expect("a vsock muxer");
    let (mut tx_head, mut rx_head) = (0u16, 0u16);
    for round in script {
        let mut tx_offered = false;
        for _ in 0..round & 0xf {
            if tx.offer(&mem, tx_head % SIZE) {
                tx_head = tx_head.wrapping_add(1);
                tx_offered = true;
            }
        }
        for _ in 0..round >> 4 {
            if rx.offer(&mem, rx_head % SIZE) {
                rx_head = rx_head.wrapping_add(1);
            }
        }
        device.wake(tx_offered);
        assert!(
            device.pending_control() <= TX_PAUSE_AT,
            "{}",
            device.pending_control()
        );
    }
});
