//! Feeds arbitrary bytes to the stream decoder in arbitrary chunks (the first
//! byte picks the chunk size) and to the datagram decoder. Neither may panic,
//! and every message either accepts must re-encode and decode to itself.
#![no_main]

use latentcam_wire::{FeedResult, FrameDecoder, Message, frame};
use libfuzzer_sys::fuzz_target;

fn roundtrips(message: &Message<'_>) {
    let mut encoded = frame::encode_to_vec(message).expect("decoded message re-encodes");
    let again = frame::decode_datagram(&mut encoded).expect("re-encoded message decodes");
    assert_eq!(&again, message);
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut decoder = FrameDecoder::<4096>::new();
    for piece in data.chunks(chunk) {
        let mut input = piece;
        while !input.is_empty() {
            input = match decoder.feed(input) {
                FeedResult::Consumed => break,
                FeedResult::Message { message, remaining } => {
                    roundtrips(&message);
                    remaining
                }
                FeedResult::Error { remaining, .. } => remaining,
            };
        }
    }
    let mut copy = data.to_vec();
    if let Ok(message) = frame::decode_datagram(&mut copy) {
        roundtrips(&message);
    }
});
