//! The stream decoder on a hostile line: random chunking, garbage between
//! frames, random corruption, oversized frames, and well-formed frames that
//! break the rules (wrong version, unknown kind, oversized fields).

use crate::common;

use latentcam_wire::*;

/// SplitMix64: a tiny deterministic generator so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: f64) -> bool {
        (self.next() as f64 / u64::MAX as f64) < percent / 100.0
    }
}

/// The message with id `i`: mostly latents of varying codecs and sizes.
fn message_for(i: u64, payloads: &[Vec<u8>]) -> Message<'_> {
    match i % 10 {
        0 => Message::Heartbeat(Heartbeat {
            uptime_ms: i,
            frames_captured: i,
            ..Heartbeat::default()
        }),
        1 => Message::Ack(Ack { up_to: i }),
        _ => Message::Latent(Latent {
            seq: i,
            capture_us: i * 33_333,
            frame_width: 640,
            frame_height: 480,
            codec: Codec::U8Affine,
            payload: &payloads[(i % payloads.len() as u64) as usize],
            mac: &[],
            wall: None,
        }),
    }
}

fn id_of(message: &Message<'_>) -> u64 {
    match message {
        Message::Heartbeat(h) => h.uptime_ms,
        Message::Ack(a) => a.up_to,
        Message::Latent(l) => l.seq,
        other => panic!("unexpected message {other:?}"),
    }
}

struct Outcome {
    accepted: Vec<u64>,
    intact: Vec<u64>,
    corrupted: usize,
    errors: usize,
    too_long: usize,
}

/// Builds a stream of `frames` frames with garbage and corruption, decodes it
/// in random chunks, and returns which ids came out.
fn run(seed: u64, frames: u64, corrupt_frame_percent: f64, byte_error_percent: f64) -> Outcome {
    let mut rng = Rng(seed);
    let payloads: Vec<Vec<u8>> = (0..64)
        .map(|k| {
            let dim = [16usize, 128, 512, 1280][k % 4];
            let v: Vec<f32> = (0..dim)
                .map(|_| rng.below(2000) as f32 / 1000.0 - 1.0)
                .collect();
            Codec::U8Affine.encode_to_vec(&v).unwrap()
        })
        .collect();
    let mut stream = Vec::new();
    let mut intact = Vec::new();
    let mut corrupted = 0;
    for i in 0..frames {
        // Garbage between frames: noise on the line, sometimes with zeros,
        // sometimes a long run with none (an oversized "frame").
        if rng.chance(5.0) {
            let len = rng.below(40) as usize;
            stream.extend((0..len).map(|_| rng.below(256) as u8));
        }
        if rng.chance(0.05) {
            stream.extend(std::iter::repeat_n(0x55u8, frame::MAX_ENCODED_LEN + 10));
        }
        let mut bytes = common::encode(&message_for(i, &payloads));
        let mut changed = false;
        let corrupt_whole = rng.chance(corrupt_frame_percent);
        for byte in bytes.iter_mut() {
            let hit = if corrupt_whole {
                rng.chance(2.0)
            } else {
                false
            } || rng.chance(byte_error_percent);
            if hit {
                let value = rng.below(256) as u8;
                changed |= value != *byte;
                *byte = value;
            }
        }
        if corrupt_whole && !changed {
            let at = rng.below(bytes.len() as u64) as usize;
            bytes[at] ^= 1 + rng.below(255) as u8;
            changed = true;
        }
        if changed {
            corrupted += 1;
        } else {
            intact.push(i);
        }
        stream.extend(bytes);
    }

    let mut decoder = FrameDecoder::<{ frame::MAX_FRAME_LEN }>::new();
    let mut accepted = Vec::new();
    let mut errors = 0;
    let mut too_long = 0;
    let mut rest = &stream[..];
    while !rest.is_empty() {
        // Mostly small reads like a UART, sometimes large ones like TCP.
        let take = if rng.chance(80.0) {
            1 + rng.below(64)
        } else {
            1 + rng.below(8192)
        };
        let (chunk, tail) = rest.split_at((take as usize).min(rest.len()));
        rest = tail;
        let mut input = chunk;
        while !input.is_empty() {
            input = match decoder.feed(input) {
                FeedResult::Consumed => break,
                FeedResult::Message { message, remaining } => {
                    let id = id_of(&message);
                    assert_eq!(
                        message,
                        message_for(id, &payloads),
                        "accepted a wrong message"
                    );
                    accepted.push(id);
                    remaining
                }
                FeedResult::Error { error, remaining } => {
                    errors += 1;
                    if error == FrameError::TooLong {
                        too_long += 1;
                    }
                    remaining
                }
            };
        }
    }
    Outcome {
        accepted,
        intact,
        corrupted,
        errors,
        too_long,
    }
}

/// The stream decoder's main guarantee at scale: ≥ 100k frames, random
/// chunks, garbage, 1% of frames corrupted. Every intact frame comes out, in
/// order; no corrupted frame does.
#[test]
fn hundred_thousand_frames_one_percent_corrupted() {
    let outcome = run(0x1a7e_c0de, 100_000, 1.0, 0.0);
    assert!(
        outcome.corrupted > 700 && outcome.corrupted < 1300,
        "{}",
        outcome.corrupted
    );
    assert_eq!(
        outcome.accepted, outcome.intact,
        "lost or accepted the wrong frames"
    );
    assert!(outcome.too_long > 10, "oversized garbage never exercised");
    assert!(outcome.errors >= outcome.corrupted);
    eprintln!(
        "frames: {} intact, {} corrupted; decoder errors: {} (too long: {})",
        outcome.intact.len(),
        outcome.corrupted,
        outcome.errors,
        outcome.too_long
    );
}

/// A much noisier line: 1% of all *bytes* corrupted, so most large frames
/// die. Still: every intact frame survives and nothing corrupted gets in.
#[test]
fn one_percent_byte_error_rate() {
    let outcome = run(7, 20_000, 0.0, 1.0);
    assert!(outcome.corrupted > 5_000);
    assert_eq!(outcome.accepted, outcome.intact);
}

/// Independent COBS encoder (the textbook loop) and CRC, to craft frames the
/// crate's own encoder refuses to produce.
fn frame_raw(mut raw: Vec<u8>) -> Vec<u8> {
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI).checksum(&raw);
    raw.extend(crc.to_le_bytes());
    let mut out = vec![0u8];
    for block in raw.split(|&b| b == 0) {
        let mut rest = block;
        loop {
            let n = rest.len().min(254);
            out.push(n as u8 + 1);
            out.extend(&rest[..n]);
            rest = &rest[n..];
            if n < 254 {
                break;
            }
        }
    }
    out.push(0);
    out
}

fn decode_stream(bytes: &[u8]) -> Vec<Result<Vec<u8>, FrameError>> {
    let mut decoder = FrameDecoder::<{ frame::MAX_FRAME_LEN }>::new();
    common::feed_all(&mut decoder, bytes, &mut || 3)
}

#[test]
fn independent_encoder_agrees_on_ack() {
    let raw = vec![PROTOCOL_VERSION, MessageKind::Ack as u8, 0xac, 0x02];
    assert_eq!(frame_raw(raw), common::encode(&common::ack()));
}

#[test]
fn unsupported_version_is_reported() {
    let bytes = frame_raw(vec![9, MessageKind::Ack as u8, 0x05]);
    assert_eq!(
        decode_stream(&bytes),
        vec![Err(FrameError::UnsupportedVersion(9))]
    );
}

#[test]
fn unknown_kind_is_reported_and_the_next_frame_survives() {
    let mut bytes = frame_raw(vec![PROTOCOL_VERSION, 200, 1, 2, 3]);
    bytes.extend(common::encode(&common::ack()));
    assert_eq!(
        decode_stream(&bytes),
        vec![
            Err(FrameError::UnknownKind(200)),
            Ok(common::encode(&common::ack()))
        ]
    );
}

#[test]
fn undecodable_body_is_reported() {
    // A Latent whose payload length says 100 bytes but holds 2.
    let bytes = frame_raw(vec![
        PROTOCOL_VERSION,
        MessageKind::Latent as u8,
        1,
        1,
        1,
        1,
        3,
        100,
        1,
        2,
    ]);
    assert_eq!(decode_stream(&bytes), vec![Err(FrameError::Undecodable)]);
}

#[test]
fn hostile_oversized_field_is_refused_on_decode() {
    // Hand-serialised Bye whose detail exceeds MAX_TEXT_LEN; the crate's
    // encoder would refuse to send it, a hostile peer need not.
    let detail = "y".repeat(MAX_TEXT_LEN + 1);
    let mut raw = vec![PROTOCOL_VERSION, MessageKind::Bye as u8];
    raw.extend(postcard::to_allocvec(&(0u8, detail.as_str())).unwrap());
    assert_eq!(
        decode_stream(&frame_raw(raw)),
        vec![Err(FrameError::FieldTooLong {
            field: "detail",
            len: MAX_TEXT_LEN + 1,
            max: MAX_TEXT_LEN
        })]
    );
}

#[test]
fn trailing_bytes_are_ignored_for_forward_compatibility() {
    // A later revision may append fields; this revision decodes the prefix.
    let bytes = frame_raw(vec![
        PROTOCOL_VERSION,
        MessageKind::Ack as u8,
        0xac,
        0x02,
        0x77,
        0x01,
    ]);
    assert_eq!(
        decode_stream(&bytes),
        vec![Ok(common::encode(&common::ack()))]
    );
}

#[test]
fn too_short_and_truncated_frames() {
    assert_eq!(
        decode_stream(&[0, 2, 1, 0]),
        vec![Err(FrameError::TooShort)]
    );
    // A block code promising 10 bytes, cut off by a delimiter.
    assert_eq!(
        decode_stream(&[0, 11, 1, 2, 0]),
        vec![Err(FrameError::Cobs)]
    );
}

#[test]
fn oversized_frame_is_rejected_without_buffering_and_decoder_recovers() {
    // A small decoder (as on a microcontroller) sees a latent bigger than it
    // can hold: one TooLong, then the next frame decodes.
    let big: Vec<f32> = (0..1280).map(|i| i as f32).collect();
    let payload = Codec::F32.encode_to_vec(&big).unwrap();
    let latent = Message::Latent(Latent {
        seq: 1,
        capture_us: 2,
        frame_width: 3,
        frame_height: 4,
        codec: Codec::F32,
        payload: &payload,
        mac: &[],
        wall: None,
    });
    let mut bytes = common::encode(&latent);
    bytes.extend(common::encode(&common::ack()));
    let mut decoder = FrameDecoder::<256>::new();
    let results = common::feed_all(&mut decoder, &bytes, &mut || 100);
    assert_eq!(
        results,
        vec![Err(FrameError::TooLong), Ok(common::encode(&common::ack()))]
    );
}

#[test]
fn idle_delimiters_are_not_errors() {
    let mut bytes = vec![0u8; 100];
    bytes.extend(common::encode(&common::ack()));
    bytes.extend([0u8; 5]);
    assert_eq!(
        decode_stream(&bytes),
        vec![Ok(common::encode(&common::ack()))]
    );
}
