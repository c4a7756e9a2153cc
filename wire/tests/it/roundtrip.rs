//! Property tests: every message survives encode → decode, whole and in
//! arbitrary chunks; codecs stay inside their documented error bounds.

use crate::common;

use latentcam_wire::*;
use proptest::prelude::*;

fn text(max: usize) -> impl Strategy<Value = String> {
    // Multi-byte characters make byte length and char count differ.
    proptest::collection::vec(
        prop_oneof![Just('a'), Just('Z'), Just('-'), Just('é'), Just('漢')],
        0..max,
    )
    .prop_map(|chars| chars.into_iter().collect::<String>())
    .prop_filter("byte bound", move |s| s.len() <= max)
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..=max)
}

/// Owned storage for the borrowed fields of one message.
#[derive(Debug, Clone)]
struct Owned {
    kind: u8,
    texts: [String; 5],
    blob: Vec<u8>,
    mac: Vec<u8>,
    nums: [u64; 12],
    sha: [u8; 32],
    nonce: [u8; 16],
    small: [u8; 3],
    opt: Option<u64>,
    temp: Option<i32>,
}

impl Owned {
    fn message(&self) -> Message<'_> {
        let n = &self.nums;
        let t = &self.texts;
        match self.kind {
            0 => Message::Hello(Hello {
                protocol: n[0] as u16,
                device_id: &t[0],
                firmware_version: &t[1],
                model: ModelIdentity {
                    model_id: &t[2],
                    encoder_sha256: self.sha,
                    latent_dim: n[1] as u32,
                    preprocessing: &t[3],
                },
                backend: "tract",
                codec: Codec::from_u8(self.small[0]),
                auth: AuthOffer {
                    scheme: AuthScheme::from_u8(self.small[1]),
                    key_id: &t[4],
                    device_nonce: self.nonce,
                },
            }),
            1 => Message::Welcome(Welcome {
                protocol: n[0] as u16,
                status: WelcomeStatus::from_u8(self.small[0]),
                reason: &t[0],
                host_id: &t[1],
                acked: self.opt,
                auth: AuthChallenge {
                    scheme: AuthScheme::from_u8(self.small[1]),
                    host_nonce: self.nonce,
                    host_proof: &self.mac,
                },
            }),
            2 => Message::Auth(Auth {
                device_proof: &self.mac,
            }),
            3 => Message::Latent(Latent {
                seq: n[0],
                capture_us: n[1],
                frame_width: n[2] as u32,
                frame_height: n[3] as u32,
                codec: Codec::from_u8(self.small[0]),
                payload: &self.blob,
                mac: &self.mac,
                wall: self.opt.map(|unix_us| WallTime {
                    unix_us,
                    synced: self.small[1] & 1 == 1,
                }),
            }),
            4 => Message::Heartbeat(Heartbeat {
                uptime_ms: n[0],
                frames_captured: n[1],
                frames_encoded: n[2],
                frames_sent: n[3],
                frames_dropped: n[4],
                frames_corrupt: n[5],
                spool_dropped: n[6],
                spool_depth: n[7],
                queue_depth: n[8] as u32,
                inference: LatencyStats {
                    count: n[9] as u32,
                    min_us: n[10] as u32,
                    p50_us: n[11] as u32,
                    p99_us: (n[11] >> 32) as u32,
                    max_us: (n[10] >> 32) as u32,
                },
                cpu_temp_millicelsius: self.temp,
            }),
            5 => Message::Ack(Ack { up_to: n[0] }),
            _ => Message::Bye(Bye {
                reason: ByeReason::from_u8(self.small[2]),
                detail: &t[0],
            }),
        }
    }
}

fn owned() -> impl Strategy<Value = Owned> {
    (
        0u8..7,
        [
            text(MAX_ID_LEN),
            text(MAX_LABEL_LEN),
            text(MAX_ID_LEN),
            text(MAX_LABEL_LEN),
            text(MAX_ID_LEN),
        ],
        prop_oneof![bytes(64), bytes(MAX_PAYLOAD_LEN)],
        bytes(MAX_MAC_LEN),
        any::<[u64; 12]>(),
        any::<[u8; 32]>(),
        any::<[u8; 16]>(),
        any::<[u8; 3]>(),
        any::<Option<u64>>(),
        any::<Option<i32>>(),
    )
        .prop_map(
            |(kind, texts, blob, mac, nums, sha, nonce, small, opt, temp)| Owned {
                kind,
                texts,
                blob,
                mac,
                nums,
                sha,
                nonce,
                small,
                opt,
                temp,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn datagram_roundtrip(owned in owned()) {
        let message = owned.message();
        let mut bytes = common::encode(&message);
        prop_assert!(bytes.len() <= frame::MAX_ENCODED_LEN);
        prop_assert_eq!(bytes[0], 0);
        prop_assert_eq!(*bytes.last().unwrap(), 0);
        prop_assert!(bytes[1..bytes.len() - 1].iter().all(|&b| b != 0));
        let decoded = frame::decode_datagram(&mut bytes).unwrap();
        prop_assert_eq!(decoded, message);
    }

    #[test]
    fn stream_roundtrip_any_chunking(
        messages in proptest::collection::vec(owned(), 1..8),
        chunk_sizes in proptest::collection::vec(1usize..300, 1..50),
    ) {
        let mut stream = Vec::new();
        for m in &messages {
            stream.extend(common::encode(&m.message()));
        }
        let mut decoder = FrameDecoder::<{ frame::MAX_FRAME_LEN }>::new();
        let mut i = 0;
        let results = common::feed_all(&mut decoder, &stream, &mut || {
            i += 1;
            chunk_sizes[i % chunk_sizes.len()]
        });
        prop_assert_eq!(results.len(), messages.len());
        for (result, m) in results.iter().zip(&messages) {
            prop_assert_eq!(result.as_ref().unwrap(), &common::encode(&m.message()));
        }
        prop_assert!(decoder.is_idle());
    }

    #[test]
    fn single_byte_corruption_never_accepted(
        owned in owned(),
        position in any::<prop::sample::Index>(),
        value in any::<u8>(),
    ) {
        let original = common::encode(&owned.message());
        let mut corrupted = original.clone();
        let at = 1 + position.index(corrupted.len() - 2);
        prop_assume!(corrupted[at] != value);
        corrupted[at] = value;
        let mut decoder = FrameDecoder::<{ frame::MAX_FRAME_LEN }>::new();
        let results = common::feed_all(&mut decoder, &corrupted, &mut || usize::MAX);
        for result in results {
            prop_assert!(result.is_err(), "corrupted frame accepted");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in bytes(4096), chunk in 1usize..64) {
        let mut decoder = FrameDecoder::<512>::new();
        let _ = common::feed_all(&mut decoder, &data, &mut || chunk);
        let mut copy = data.clone();
        let _ = frame::decode_datagram(&mut copy);
    }

    #[test]
    fn f32_is_exact(v in proptest::collection::vec(-1e30f32..1e30, 0..2048)) {
        let payload = Codec::F32.encode_to_vec(&v).unwrap();
        prop_assert_eq!(payload.len(), 4 * v.len());
        prop_assert_eq!(Codec::F32.decode_to_vec(&payload).unwrap(), v);
    }

    #[test]
    fn f16_within_half_ulp(v in proptest::collection::vec(-65000f32..65000.0, 0..2048)) {
        let payload = Codec::F16.encode_to_vec(&v).unwrap();
        prop_assert_eq!(payload.len(), 2 * v.len());
        let back = Codec::F16.decode_to_vec(&payload).unwrap();
        for (x, y) in v.iter().zip(&back) {
            // Round-to-nearest: relative error ≤ 2^-11 in the normal range,
            // absolute error ≤ 2^-25 (half the subnormal step) below it.
            let bound = (x.abs() * 2f32.powi(-11)).max(2f32.powi(-25));
            prop_assert!((x - y).abs() <= bound, "{} -> {} (bound {})", x, y, bound);
        }
    }

    #[test]
    fn u8_affine_within_half_step(
        v in proptest::collection::vec(-1000f32..1000.0, 1..2048),
    ) {
        let payload = Codec::U8Affine.encode_to_vec(&v).unwrap();
        prop_assert_eq!(payload.len(), 8 + v.len());
        let back = Codec::U8Affine.decode_to_vec(&payload).unwrap();
        let min = v.iter().cloned().fold(f32::INFINITY, f32::min);
        let max = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let scale = (max - min) / 255.0;
        // Half a quantisation step, plus float rounding in the affine maths.
        let bound = scale / 2.0 + (max.abs().max(min.abs())) * 4.0 * f32::EPSILON;
        for (x, y) in v.iter().zip(&back) {
            prop_assert!((x - y).abs() <= bound, "{} -> {} (bound {})", x, y, bound);
        }
    }
}

#[test]
fn codecs_refuse_non_finite_and_out_of_range() {
    for codec in [Codec::F32, Codec::F16, Codec::U8Affine] {
        assert_eq!(
            codec.encode_to_vec(&[1.0, f32::NAN]),
            Err(CodecError::NonFinite)
        );
        assert_eq!(
            codec.encode_to_vec(&[f32::INFINITY]),
            Err(CodecError::NonFinite)
        );
    }
    assert_eq!(
        Codec::F16.encode_to_vec(&[70000.0]),
        Err(CodecError::OutOfRange)
    );
    assert_eq!(
        Codec::U8Affine.encode_to_vec(&[-3e38, 3e38]),
        Err(CodecError::OutOfRange)
    );
}

#[test]
fn codecs_reject_bad_payloads() {
    assert_eq!(
        Codec::F32.decode_to_vec(&[0; 5]),
        Err(CodecError::BadPayloadLength {
            codec: Codec::F32,
            len: 5
        })
    );
    assert_eq!(
        Codec::F16.decode_to_vec(&[0; 3]),
        Err(CodecError::BadPayloadLength {
            codec: Codec::F16,
            len: 3
        })
    );
    assert_eq!(
        Codec::U8Affine.decode_to_vec(&[0; 7]),
        Err(CodecError::BadPayloadLength {
            codec: Codec::U8Affine,
            len: 7
        })
    );
    assert_eq!(
        Codec::from_u8(99).decode_to_vec(&[0; 8]),
        Err(CodecError::UnknownCodec(99))
    );
    // A hostile NaN scale is refused rather than handed to a head.
    let mut payload = Codec::U8Affine.encode_to_vec(&[1.0, 2.0]).unwrap();
    payload[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
    assert_eq!(
        Codec::U8Affine.decode_to_vec(&payload),
        Err(CodecError::NonFinite)
    );
}

#[test]
fn constant_vector_u8_is_exact() {
    let v = [0.25f32; 1280];
    let back = Codec::U8Affine
        .decode_to_vec(&Codec::U8Affine.encode_to_vec(&v).unwrap())
        .unwrap();
    assert_eq!(back, v);
}

#[test]
fn oversized_fields_are_refused_both_ways() {
    let long_id = "x".repeat(MAX_ID_LEN + 1);
    let mut hello = match common::hello() {
        Message::Hello(h) => h,
        _ => unreachable!(),
    };
    hello.device_id = &long_id;
    let err = frame::encode_to_vec(&Message::Hello(hello)).unwrap_err();
    assert_eq!(
        err,
        FrameError::FieldTooLong {
            field: "device_id",
            len: MAX_ID_LEN + 1,
            max: MAX_ID_LEN
        }
    );
    let payload = vec![1u8; MAX_PAYLOAD_LEN + 1];
    let latent = Message::Latent(Latent {
        seq: 0,
        capture_us: 0,
        frame_width: 0,
        frame_height: 0,
        codec: Codec::U8Affine,
        payload: &payload,
        mac: &[],
        wall: None,
    });
    assert!(matches!(
        frame::encode_to_vec(&latent),
        Err(FrameError::FieldTooLong {
            field: "payload",
            ..
        })
    ));
}
