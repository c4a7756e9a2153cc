//! The authentication handshake and sealed messages against arbitrary
//! bytes: the host's side reading a first handshake message, the device's
//! side reading an answer, the host reading a one-way (Noise K) handshake,
//! and an established session opening a sealed frame. None may panic, and none may accept what the fuzzer made up.
#![no_main]

use std::sync::{Mutex, OnceLock};

use latentcam_secure::{Channel, Initiator, StaticKey, respond, respond_one_way};
use latentcam_wire::{
    AuthOffer, AuthScheme, Codec, Hello, Message, ModelIdentity, NONCE_LEN, frame,
};
use libfuzzer_sys::fuzz_target;

fn hello() -> Hello<'static> {
    Hello {
        protocol: 1,
        device_id: "cam-1",
        firmware_version: "0.1.0",
        model: ModelIdentity {
            model_id: "m",
            encoder_sha256: [7; 32],
            latent_dim: 4,
            preprocessing: "p",
        },
        backend: "tract",
        codec: Codec::F32,
        auth: AuthOffer {
            scheme: AuthScheme::NoiseIk,
            key_id: "",
            device_nonce: [0; NONCE_LEN],
        },
    }
}

fn keys() -> (StaticKey, StaticKey) {
    (
        StaticKey::from_private([3; 32]),
        StaticKey::from_private([9; 32]),
    )
}

/// The host's end of one real session, opened once.
fn host_channel() -> &'static Mutex<Channel> {
    static CHANNEL: OnceLock<Mutex<Channel>> = OnceLock::new();
    CHANNEL.get_or_init(|| {
        let (device, host) = keys();
        let (initiator, m1) = Initiator::start(&device, host.public(), &hello(), 1).unwrap();
        let (m2, channel) = respond(&host, &hello(), &m1).unwrap().accept().unwrap();
        initiator.finish(&m2).unwrap();
        Mutex::new(channel)
    })
}

fuzz_target!(|data: &[u8]| {
    let (device, host) = keys();
    // The host reading a first handshake message.
    assert!(
        respond(&host, &hello(), data).is_err(),
        "a made-up first message authenticated"
    );
    // The device reading the host's answer.
    let (initiator, _) = Initiator::start(&device, host.public(), &hello(), 1).unwrap();
    assert!(
        initiator.finish(data).is_err(),
        "a made-up answer authenticated"
    );
    // The host reading a one-way handshake from a registered device.
    let mut one_way = hello();
    one_way.auth.scheme = AuthScheme::NoiseK;
    assert!(
        respond_one_way(&host, device.public(), &one_way, data).is_err(),
        "a made-up one-way handshake authenticated"
    );
    // A sealed frame (or anything else) arriving in an established session.
    let mut bytes = data.to_vec();
    if let Ok(Message::Sealed(sealed)) = frame::decode_datagram(&mut bytes) {
        let mut channel = host_channel().lock().unwrap();
        assert!(
            channel.open(&sealed).is_err(),
            "a made-up sealed message opened"
        );
    }
});
