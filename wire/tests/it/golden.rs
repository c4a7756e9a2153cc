//! Golden bytes: the exact encoding of every message is pinned here. A change
//! to any of these strings is a wire-format change and needs a protocol
//! version bump (see SPEC.md, "Evolution").

use crate::common::*;
use latentcam_wire::*;

fn check(message: Message<'static>, golden: &str) {
    let bytes = encode(&message);
    assert_eq!(
        hex::encode(&bytes),
        golden,
        "encoding of {message:?} changed"
    );
    let mut datagram = hex::decode(golden).unwrap();
    let decoded = frame::decode_datagram(&mut datagram).expect("golden decodes");
    assert_eq!(decoded, message);
}

#[test]
fn golden_hello() {
    check(
        hello(),
        "004c0101010663616d2d303105302e312e30096566666e65742d6c305a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9800a076c6974653232340574726163740301150102030405060708090a0b0c0d0e0f10ce26725400",
    );
}

#[test]
fn golden_welcome() {
    check(
        welcome(),
        "00040102010d026f6b06686f73742d61012911f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f005f402f7cb00",
    );
}

#[test]
fn golden_auth() {
    check(auth(), "000c010304abababab021a42b800");
}

#[test]
fn golden_latent() {
    check(
        latent(),
        "001201042a8080f9c0c1c482038005e003010c0103803f01010101010102c005e6f8c49a00",
    );
}

/// Revision 2 appends the wall-clock time; the bytes before it are the
/// revision-1 latent's.
#[test]
fn golden_latent_with_wall_time() {
    check(
        latent_with_wall(),
        "001201042a8080f9c0c1c482038005e003010c0103803f01010101010102c00e8080cddde8dc940301574aaf7500",
    );
}

/// A revision-1 body decodes with no wall time, and bytes appended after
/// the known fields (a later revision's) are ignored.
#[test]
fn latent_bodies_of_other_revisions() {
    let revision1 = frame::encode_inner_to_vec(&latent()).unwrap();
    assert_eq!(frame::decode_inner(&revision1).unwrap(), latent());
    let mut later = frame::encode_inner_to_vec(&latent_with_wall()).unwrap();
    later.extend_from_slice(&[0x07, 0xFF, 0x00]);
    assert_eq!(frame::decode_inner(&later).unwrap(), latent_with_wall());
    // A tail that is not a wall time is refused, not read as one.
    let mut bad = revision1.clone();
    bad.push(0x80); // a varint that never ends
    assert_eq!(frame::decode_inner(&bad), Err(FrameError::Undecodable));
    let mut bad = frame::encode_inner_to_vec(&latent_with_wall()).unwrap();
    *bad.last_mut().unwrap() = 2; // `synced` is a bool
    assert_eq!(frame::decode_inner(&bad), Err(FrameError::Undecodable));
}

#[test]
fn golden_heartbeat() {
    check(
        heartbeat(),
        "000e010580dddb01e807de07dd070a0118010232e0da01c8e201b89102c0b80201d8a406d5af99d800",
    );
}

#[test]
fn golden_ack() {
    check(ack(), "00050106ac0204dc7ef200");
}

#[test]
fn golden_bye() {
    check(bye(), "000301070d075349475445524db730a02000");
}

#[test]
fn golden_handshake() {
    check(
        handshake(),
        "00380108305e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5efff9bcb500",
    );
}

#[test]
fn golden_sealed() {
    check(sealed(), "00070109ac0207c1037a1101039b6d03fdf900");
}

/// A sealed latent with the largest payload still fits a frame.
#[test]
fn largest_latent_fits_sealed() {
    let payload = vec![0x55; MAX_PAYLOAD_LEN];
    let mac = [0x77; MAX_MAC_LEN];
    let latent = Message::Latent(Latent {
        seq: MAX_SEQ,
        capture_us: u64::MAX,
        frame_width: u32::MAX,
        frame_height: u32::MAX,
        codec: Codec::F32,
        payload: &payload,
        mac: &mac,
        wall: None,
    });
    let inner = frame::encode_inner_to_vec(&latent).unwrap();
    let ciphertext = vec![0xEE; inner.len() + 16];
    assert!(ciphertext.len() <= MAX_SEALED_LEN, "{}", ciphertext.len());
    let sealed = Message::Sealed(Sealed {
        counter: u64::MAX,
        ciphertext: &ciphertext,
    });
    let mut datagram = encode(&sealed);
    assert_eq!(frame::decode_datagram(&mut datagram).unwrap(), sealed);
    assert_eq!(frame::decode_inner(&inner).unwrap(), latent);
}

#[test]
fn inner_messages_never_nest() {
    for message in [handshake(), sealed()] {
        let inner = frame::encode_inner_to_vec(&message).unwrap();
        assert_eq!(frame::decode_inner(&inner), Err(FrameError::Undecodable));
    }
    assert_eq!(frame::decode_inner(&[]), Err(FrameError::TooShort));
}

/// The framed sizes quoted in SPEC.md and the README for a 1280-dim latent.
#[test]
fn latent_1280_framed_sizes() {
    let latent: Vec<f32> = (0..1280).map(|i| (i as f32 * 0.37).sin()).collect();
    // (codec, payload bytes, framed bytes)
    for (codec, payload_len, framed_len) in [
        (Codec::U8Affine, 1288, 1324),
        (Codec::F16, 2560, 2599),
        (Codec::F32, 5120, 5168),
    ] {
        let payload = codec.encode_to_vec(&latent).unwrap();
        assert_eq!(payload.len(), payload_len);
        // An hour after the device program started, in 2026.
        let message = Message::Latent(Latent {
            seq: 1_000_000,
            capture_us: 3_600_000_000,
            frame_width: 1920,
            frame_height: 1080,
            codec,
            payload: &payload,
            mac: &[],
            wall: Some(WallTime {
                unix_us: 1_780_000_000_000_000,
                synced: true,
            }),
        });
        let framed = encode(&message);
        assert_eq!(
            framed.len(),
            framed_len,
            "{codec:?}: update SPEC.md and README if this changes"
        );
    }
}

/// The worked example of SPEC.md, byte for byte.
#[test]
fn spec_worked_example() {
    let framed = encode(&ack());
    assert_eq!(hex::encode(framed), "00050106ac0204dc7ef200");
}
