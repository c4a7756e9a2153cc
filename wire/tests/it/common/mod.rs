//! Sample messages shared by the wire tests.
#![allow(dead_code)]

use latentcam_wire::*;

pub const SHA: [u8; 32] = [
    0x5a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f, 0x60, 0x71, 0x82, 0x93, 0xa4, 0xb5, 0xc6, 0xd7, 0xe8, 0xf9,
    0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f, 0x60, 0x71, 0x82, 0x93, 0xa4, 0xb5, 0xc6, 0xd7, 0xe8, 0xf9,
];
pub const DEVICE_NONCE: [u8; NONCE_LEN] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
pub const HOST_NONCE: [u8; NONCE_LEN] = [0xF0; NONCE_LEN];
pub const PAYLOAD: [u8; 12] = [
    0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0,
];

pub fn hello() -> Message<'static> {
    Message::Hello(Hello {
        protocol: 1,
        device_id: "cam-01",
        firmware_version: "0.1.0",
        model: ModelIdentity {
            model_id: "effnet-l0",
            encoder_sha256: SHA,
            latent_dim: 1280,
            preprocessing: "lite224",
        },
        backend: "tract",
        codec: Codec::U8Affine,
        auth: AuthOffer {
            scheme: AuthScheme::None,
            key_id: "",
            device_nonce: DEVICE_NONCE,
        },
    })
}

pub fn welcome() -> Message<'static> {
    Message::Welcome(Welcome {
        protocol: 1,
        status: WelcomeStatus::Accepted,
        reason: "ok",
        host_id: "host-a",
        acked: Some(41),
        auth: AuthChallenge {
            scheme: AuthScheme::None,
            host_nonce: HOST_NONCE,
            host_proof: &[],
        },
    })
}

pub fn auth() -> Message<'static> {
    Message::Auth(Auth {
        device_proof: &[0xAB; 4],
    })
}

pub fn latent() -> Message<'static> {
    Message::Latent(Latent {
        seq: 42,
        capture_us: 1_700_000_000_000_000,
        frame_width: 640,
        frame_height: 480,
        codec: Codec::F32,
        payload: &PAYLOAD,
        mac: &[],
        wall: None,
    })
}

/// [`latent`] of protocol revision 2: with its wall-clock capture time.
pub fn latent_with_wall() -> Message<'static> {
    let Message::Latent(latent) = latent() else {
        unreachable!()
    };
    Message::Latent(Latent {
        wall: Some(WallTime {
            unix_us: 1_780_000_000_000_000,
            synced: true,
        }),
        ..latent
    })
}

pub fn heartbeat() -> Message<'static> {
    Message::Heartbeat(Heartbeat {
        uptime_ms: 3_600_000,
        frames_captured: 1000,
        frames_encoded: 990,
        frames_sent: 989,
        frames_dropped: 10,
        frames_corrupt: 0,
        spool_dropped: 0,
        spool_depth: 1,
        queue_depth: 2,
        inference: LatencyStats {
            count: 50,
            min_us: 28_000,
            p50_us: 29_000,
            p99_us: 35_000,
            max_us: 40_000,
        },
        cpu_temp_millicelsius: Some(51_500),
    })
}

pub fn ack() -> Message<'static> {
    Message::Ack(Ack { up_to: 300 })
}

pub fn bye() -> Message<'static> {
    Message::Bye(Bye {
        reason: ByeReason::Shutdown,
        detail: "SIGTERM",
    })
}

pub fn handshake() -> Message<'static> {
    Message::Handshake(Handshake {
        payload: &[0x5E; 48],
    })
}

pub fn sealed() -> Message<'static> {
    Message::Sealed(Sealed {
        counter: 300,
        ciphertext: &[0xC1, 0x00, 0x7A, 0x11, 0x00, 0x00, 0x9B],
    })
}

pub fn all() -> Vec<Message<'static>> {
    vec![
        hello(),
        welcome(),
        auth(),
        latent(),
        heartbeat(),
        ack(),
        bye(),
        handshake(),
        sealed(),
    ]
}

pub fn encode(message: &Message<'_>) -> Vec<u8> {
    frame::encode_to_vec(message).expect("encode")
}

/// Feeds `bytes` to `decoder` in the given chunk sizes, collecting owned
/// results: `Ok(encoded message)` or `Err(error)`.
pub fn feed_all<const N: usize>(
    decoder: &mut FrameDecoder<N>,
    bytes: &[u8],
    chunks: &mut dyn FnMut() -> usize,
) -> Vec<Result<Vec<u8>, FrameError>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let take = chunks().clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(take);
        rest = tail;
        decoder.feed_all(chunk, |item| out.push(item.map(|message| encode(&message))));
    }
    out
}
