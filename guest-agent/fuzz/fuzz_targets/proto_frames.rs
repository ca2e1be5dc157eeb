//! Untrusted bytes from either peer through the frame reader: every decode
//! must end in a frame or an error (never a panic, hang or huge allocation),
//! and every frame that decodes must survive an encode/decode round trip.
#![no_main]

use husk_proto::frame::{decode_body, encode};
use husk_proto::{FrameError, FrameReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // As a stream of frames.
    let mut reader = FrameReader::new(data);
    let mut out = Vec::new();
    for _ in 0..64 {
        match reader.read_frame() {
            Ok(frame) => {
                encode(&frame, &mut out).expect("a decoded frame re-encodes");
                let again = decode_body(&out[4..]).expect("a re-encoded frame decodes");
                assert_eq!(again, frame);
            }
            Err(FrameError::Closed) | Err(_) => break,
        }
    }
    // As one frame body.
    let _ = decode_body(data);
});
