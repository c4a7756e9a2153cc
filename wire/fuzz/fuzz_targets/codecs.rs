//! Arbitrary payloads through every codec: decoding never panics, and any
//! vector that decodes re-encodes to a payload of the same length.
#![no_main]

use latentcam_wire::Codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&id, payload)) = data.split_first() else {
        return;
    };
    let codec = Codec::from_u8(id % 5);
    if let Ok(latent) = codec.decode_to_vec(payload) {
        let encoded = codec.encode_to_vec(&latent);
        if let Ok(encoded) = encoded {
            assert_eq!(encoded.len(), payload.len());
        }
    }
});
