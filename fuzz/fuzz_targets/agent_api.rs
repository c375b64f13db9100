//! Agent API messages off the wire: the first byte picks a request type, the rest is decoded
//! as it; whatever decodes must encode and decode back to the same message.
#![no_main]

use hako_agent_api::agent::*;
use hako_agent_api::health::CheckRequest;
use libfuzzer_sys::fuzz_target;
use protobuf::Message;

fn round_trip<M: Message + PartialEq>(bytes: &[u8]) {
    let Ok(m) = M::parse_from_bytes(bytes) else {
        return;
    };
    let again = m.write_to_bytes().expect("a decoded message encodes");
    let back = M::parse_from_bytes(&again).expect("an encoded message decodes");
    assert!(back == m, "round trip changed {}", M::NAME);
}

fuzz_target!(|data: &[u8]| {
    let Some((kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 16 {
        0 => round_trip::<CreateSandboxRequest>(bytes),
        1 => round_trip::<CreateContainerRequest>(bytes),
        2 => round_trip::<ExecProcessRequest>(bytes),
        3 => round_trip::<WriteStreamRequest>(bytes),
        4 => round_trip::<ReadStreamRequest>(bytes),
        5 => round_trip::<SignalProcessRequest>(bytes),
        6 => round_trip::<UpdateInterfaceRequest>(bytes),
        7 => round_trip::<UpdateRoutesRequest>(bytes),
        8 => round_trip::<AddARPNeighborsRequest>(bytes),
        9 => round_trip::<UpdateContainerRequest>(bytes),
        10 => round_trip::<TtyWinResizeRequest>(bytes),
        11 => round_trip::<SetGuestDateTimeRequest>(bytes),
        12 => round_trip::<RemoveContainerRequest>(bytes),
        13 => round_trip::<WaitProcessResponse>(bytes),
        14 => round_trip::<ReadStreamResponse>(bytes),
        _ => round_trip::<CheckRequest>(bytes),
    }
});
