//! Frame decoding on arbitrary bytes: whole frames, bare bodies, and the incremental decoder
//! fed in two chunks. Nothing may panic, and a frame that decodes must encode back to bytes
//! that decode to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_proto::codec::{self, FrameDecoder};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = codec::decode(data) {
        let again = codec::encode(&frame).expect("a decoded frame re-encodes");
        assert_eq!(codec::decode(&again).expect("and decodes again"), frame);
    }
    let _ = codec::decode_body(data);

    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let mut decoder = FrameDecoder::new();
    for chunk in [&data[..split], &data[split..]] {
        if decoder.push(chunk).is_err() {
            return;
        }
        while let Ok(Some(_)) = decoder.next_frame() {}
    }
});
