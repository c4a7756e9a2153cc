//! The handshake and sealed messages end to end, both sides in one
//! process: what each side accepts and refuses.

use latentcam_secure::{
    Channel, Initiator, SecureError, StaticKey, initiate_one_way, respond, respond_one_way,
};
use latentcam_wire::{
    Ack, AuthOffer, AuthScheme, Codec, Hello, Latent, Message, ModelIdentity, NONCE_LEN, Sealed,
    frame,
};
use proptest::prelude::*;

fn hello(device_id: &str) -> Hello<'_> {
    Hello {
        protocol: 1,
        device_id,
        firmware_version: "0.1.0",
        model: ModelIdentity {
            model_id: "effnet-l0",
            encoder_sha256: [7; 32],
            latent_dim: 3,
            preprocessing: "lite224",
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

const PAYLOAD: [u8; 12] = [0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64];

fn latent(seq: u64) -> Message<'static> {
    Message::Latent(Latent {
        seq,
        capture_us: 1_000 * seq,
        frame_width: 640,
        frame_height: 480,
        codec: Codec::F32,
        payload: &PAYLOAD,
        mac: &[],
        wall: None,
    })
}

/// A completed handshake: (device's channel, host's channel).
fn session(device: &StaticKey, host: &StaticKey) -> (Channel, Channel) {
    let h = hello("cam-1");
    let (initiator, m1) = Initiator::start(device, host.public(), &h, 1).unwrap();
    let pending = respond(host, &h, &m1).unwrap();
    assert_eq!(
        pending.device_key(),
        device.public(),
        "the host learns the device's key"
    );
    let (m2, host_channel) = pending.accept().unwrap();
    (initiator.finish(&m2).unwrap(), host_channel)
}

/// Opens a sealed frame and returns the inner message re-encoded (owned).
fn open(channel: &mut Channel, bytes: &[u8]) -> Result<Vec<u8>, SecureError> {
    let mut bytes = bytes.to_vec();
    let Message::Sealed(sealed) = frame::decode_datagram(&mut bytes).unwrap() else {
        panic!("not a Sealed frame")
    };
    channel.open(&sealed)
}

#[test]
fn both_ways_seal_and_open() {
    let (device, host) = (StaticKey::generate(), StaticKey::generate());
    let (mut d, mut h) = session(&device, &host);
    for seq in 0..5 {
        let bytes = d.seal(&latent(seq)).unwrap();
        let inner = open(&mut h, &bytes).unwrap();
        assert_eq!(frame::decode_inner(&inner).unwrap(), latent(seq));
    }
    let ack = Message::Ack(Ack { up_to: 4 });
    let inner = open(&mut d, &h.seal(&ack).unwrap()).unwrap();
    assert_eq!(frame::decode_inner(&inner).unwrap(), ack);
    assert_eq!(d.sealed(), 5);
}

#[test]
fn the_plaintext_never_appears_on_the_wire() {
    let (device, host) = (StaticKey::generate(), StaticKey::generate());
    let (mut d, _h) = session(&device, &host);
    let bytes = d.seal(&latent(9)).unwrap();
    let plain = frame::encode_inner_to_vec(&latent(9)).unwrap();
    assert!(
        !bytes.windows(PAYLOAD.len()).any(|w| w == PAYLOAD),
        "the latent payload is visible"
    );
    assert!(bytes.len() >= plain.len() + 16);
}

#[test]
fn a_device_that_targets_another_host_key_is_refused() {
    let (device, host, other) = (
        StaticKey::generate(),
        StaticKey::generate(),
        StaticKey::generate(),
    );
    let h = hello("cam-1");
    let (_i, m1) = Initiator::start(&device, other.public(), &h, 1).unwrap();
    assert!(matches!(
        respond(&host, &h, &m1),
        Err(SecureError::Handshake(_))
    ));
}

#[test]
fn a_host_without_the_private_key_cannot_answer() {
    // A rogue host that knows the real host's public key only: it cannot
    // read the first message, and an answer from any other key pair fails
    // at the device.
    let (device, host, rogue) = (
        StaticKey::generate(),
        StaticKey::generate(),
        StaticKey::generate(),
    );
    let h = hello("cam-1");
    let (initiator, _m1) = Initiator::start(&device, host.public(), &h, 1).unwrap();
    let (_, m1_for_rogue) = Initiator::start(&device, rogue.public(), &h, 1).unwrap();
    let (m2, _) = respond(&rogue, &h, &m1_for_rogue)
        .unwrap()
        .accept()
        .unwrap();
    assert!(matches!(
        initiator.finish(&m2),
        Err(SecureError::Handshake(_))
    ));
}

#[test]
fn the_hello_is_bound_to_the_handshake() {
    let (device, host) = (StaticKey::generate(), StaticKey::generate());
    let h = hello("cam-1");
    let (_i, m1) = Initiator::start(&device, host.public(), &h, 1).unwrap();
    // Someone on the path swaps the device id, or strips the auth offer.
    assert!(respond(&host, &hello("cam-2"), &m1).is_err());
    let mut downgraded = h;
    downgraded.auth.scheme = AuthScheme::None;
    assert!(respond(&host, &downgraded, &m1).is_err());
}

#[test]
fn replays_and_tampering_are_refused_and_do_not_move_the_window() {
    let (device, host) = (StaticKey::generate(), StaticKey::generate());
    let (mut d, mut h) = session(&device, &host);
    let first = d.seal(&latent(1)).unwrap();
    let second = d.seal(&latent(2)).unwrap();
    open(&mut h, &first).unwrap();
    assert!(matches!(
        open(&mut h, &first),
        Err(SecureError::Replay { counter: 0 })
    ));

    // Flip one ciphertext bit of the second message, re-framed validly.
    let mut raw = second.clone();
    let Message::Sealed(s) = frame::decode_datagram(&mut raw).unwrap() else {
        panic!()
    };
    let mut ciphertext = s.ciphertext.to_vec();
    ciphertext[3] ^= 1;
    let forged = Sealed {
        counter: s.counter,
        ciphertext: &ciphertext,
    };
    assert!(matches!(
        h.open(&forged),
        Err(SecureError::Decrypt { counter: 1 })
    ));
    // A forged counter far ahead does not open and does not move the window.
    let ahead = Sealed {
        counter: 1_000_000,
        ciphertext: s.ciphertext,
    };
    assert!(matches!(h.open(&ahead), Err(SecureError::Decrypt { .. })));
    // The genuine message still opens once.
    let inner = open(&mut h, &second).unwrap();
    assert_eq!(frame::decode_inner(&inner).unwrap(), latent(2));
    assert!(open(&mut h, &second).is_err());
}

#[test]
fn messages_of_one_session_do_not_open_in_another() {
    let (device, host) = (StaticKey::generate(), StaticKey::generate());
    let (mut d1, _h1) = session(&device, &host);
    let (_d2, mut h2) = session(&device, &host);
    let bytes = d1.seal(&latent(1)).unwrap();
    assert!(matches!(
        open(&mut h2, &bytes),
        Err(SecureError::Decrypt { .. })
    ));
}

#[test]
fn a_replayed_first_message_gives_the_replayer_nothing() {
    // The host cannot tell a replayed first message from a fresh one, but
    // the session keys depend on the device's ephemeral private key: the
    // replayer cannot read the host's answer nor seal anything it accepts.
    let (device, host) = (StaticKey::generate(), StaticKey::generate());
    let h = hello("cam-1");
    let (initiator, m1) = Initiator::start(&device, host.public(), &h, 1).unwrap();
    let (m2, mut real_host) = respond(&host, &h, &m1).unwrap().accept().unwrap();
    let mut real_device = initiator.finish(&m2).unwrap();
    let recorded = real_device.seal(&latent(5)).unwrap();
    open(&mut real_host, &recorded).unwrap();
    let (_m2_again, mut replayed_host) = respond(&host, &h, &m1).unwrap().accept().unwrap();
    assert!(matches!(
        open(&mut replayed_host, &recorded),
        Err(SecureError::Decrypt { .. })
    ));
}

#[test]
fn the_host_reads_the_stamp_the_device_sent() {
    let (device, host) = (StaticKey::generate(), StaticKey::generate());
    let h = hello("cam-1");
    let (_i, m1) = Initiator::start(&device, host.public(), &h, 1_764_000_000_123_456_789).unwrap();
    assert_eq!(
        respond(&host, &h, &m1).unwrap().stamp(),
        1_764_000_000_123_456_789
    );
}

fn one_way_hello(device_id: &str) -> Hello<'_> {
    let mut h = hello(device_id);
    h.auth.scheme = AuthScheme::NoiseK;
    h
}

#[test]
fn a_one_way_session_seals_and_opens() {
    let (device, host) = (StaticKey::generate(), StaticKey::generate());
    let h = one_way_hello("cam-1");
    let (mut d, m1) = initiate_one_way(&device, host.public(), &h, 42).unwrap();
    let (mut hc, stamp) = respond_one_way(&host, device.public(), &h, &m1).unwrap();
    assert_eq!(stamp, 42);
    for seq in 0..5 {
        let sealed = d.seal(&latent(seq)).unwrap();
        assert_eq!(
            open(&mut hc, &sealed).unwrap(),
            frame::encode_inner_to_vec(&latent(seq)).unwrap()
        );
    }
    // The same datagram twice: a replay.
    let sealed = d.seal(&latent(9)).unwrap();
    open(&mut hc, &sealed).unwrap();
    assert!(matches!(
        open(&mut hc, &sealed),
        Err(SecureError::Replay { .. })
    ));
}

#[test]
fn a_one_way_handshake_needs_the_registered_key_the_right_host_and_the_hello() {
    let (device, host, other) = (
        StaticKey::generate(),
        StaticKey::generate(),
        StaticKey::generate(),
    );
    let h = one_way_hello("cam-1");
    let (_, m1) = initiate_one_way(&device, host.public(), &h, 1).unwrap();
    // Another key registered for the id (an impostor's message, seen from
    // the host that registered the real one).
    assert!(respond_one_way(&host, other.public(), &h, &m1).is_err());
    // Meant for another host.
    assert!(respond_one_way(&other, device.public(), &h, &m1).is_err());
    // The Hello changed in flight.
    assert!(respond_one_way(&host, device.public(), &one_way_hello("cam-2"), &m1).is_err());
    // An IK message is not a K message, nor the other way round.
    let (_, ik) = Initiator::start(&device, host.public(), &hello("cam-1"), 1).unwrap();
    assert!(respond_one_way(&host, device.public(), &h, &ik).is_err());
    assert!(respond(&host, &h, &m1).is_err());
    assert!(respond_one_way(&host, device.public(), &h, &m1).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary one-way handshake messages never authenticate.
    #[test]
    fn arbitrary_one_way_messages_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let device = StaticKey::from_private([3; 32]);
        let host = StaticKey::from_private([9; 32]);
        prop_assert!(respond_one_way(&host, device.public(), &one_way_hello("cam-1"), &bytes).is_err());
    }

    /// Arbitrary first messages never panic and never authenticate.
    #[test]
    fn arbitrary_first_messages_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let host = StaticKey::from_private([9; 32]);
        prop_assert!(respond(&host, &hello("cam-1"), &bytes).is_err());
    }

    /// Arbitrary answers never complete a device's handshake.
    #[test]
    fn arbitrary_answers_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let device = StaticKey::from_private([3; 32]);
        let host = StaticKey::from_private([9; 32]);
        let (initiator, _) = Initiator::start(&device, host.public(), &hello("cam-1"), 1).unwrap();
        prop_assert!(initiator.finish(&bytes).is_err());
    }
}

/// SPEC.md, section 5: sealing costs a 1280-dim U8 latent 16 to 32 bytes.
#[test]
fn sealing_a_1280_dim_latent_costs_a_few_dozen_bytes() {
    let (device, host) = (StaticKey::generate(), StaticKey::generate());
    let (mut d, _h) = session(&device, &host);
    let latent: Vec<f32> = (0..1280).map(|i| (i as f32 * 0.37).sin()).collect();
    let payload = Codec::U8Affine.encode_to_vec(&latent).unwrap();
    let message = Message::Latent(Latent {
        seq: 1_000_000,
        capture_us: 3_600_000_000,
        frame_width: 1920,
        frame_height: 1080,
        codec: Codec::U8Affine,
        payload: &payload,
        mac: &[],
        wall: Some(latentcam_wire::WallTime {
            unix_us: 1_780_000_000_000_000,
            synced: true,
        }),
    });
    let plain = frame::encode_to_vec(&message).unwrap().len();
    assert_eq!(plain, 1324);
    let sizes: Vec<usize> = (0..1000).map(|_| d.seal(&message).unwrap().len()).collect();
    let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
    eprintln!("sealed sizes {min}..={max}");
    assert!(1324 + 16 <= *min && *max <= 1324 + 32, "{min}..={max}");
}
