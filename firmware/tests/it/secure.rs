//! [`SecureLink`] over real loopback TCP connections, the test thread
//! playing the host with `latentcam_secure`'s responder: the handshake,
//! sealed traffic both ways, and every way a host can fail to authenticate
//! (no handshake at all, another static key, a replayed sealed message, a
//! forged plain message). Then `latentcam-edge keygen` and the doctor's
//! authenticated handshake as processes. Every wait has a deadline.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use latentcam_firmware::link::{Incoming, Link, SecureLink, TcpConfig, TcpLink};
use latentcam_firmware::pipeline::{EncodedLatent, Settings, run_link};
use latentcam_secure::{Channel, Initiator, PublicKey, StaticKey, respond};
use latentcam_testkit::PtyPair;
use latentcam_testkit::hello::hello;
use latentcam_testkit::repo;
use latentcam_wire::frame::{self, MAX_FRAME_LEN};
use latentcam_wire::{
    Ack, AuthChallenge, AuthOffer, AuthScheme, Bye, ByeReason, Codec, FrameDecoder, Handshake,
    Hello, Latent, Message, MessageKind, PROTOCOL_VERSION, Welcome, WelcomeStatus,
};

const LIMIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- helpers

fn hello_frame(scheme: AuthScheme) -> Vec<u8> {
    let hello = hello(
        "secure-test-cam",
        "efficientnet-lite0",
        [7; 32],
        PROTOCOL_VERSION.into(),
    );
    let auth = AuthOffer {
        scheme,
        ..hello.auth
    };
    frame::encode_to_vec(&Message::Hello(Hello { auth, ..hello })).unwrap()
}

fn latent_frame(seq: u64) -> Vec<u8> {
    let latent: Vec<f32> = (0..1280)
        .map(|i| ((i as f32 * 0.37 + seq as f32) * 0.11).sin())
        .collect();
    latentcam_testkit::hello::latent_frame(seq, 1_700_000_000_000_000 + seq, &latent)
}

fn welcome(status: WelcomeStatus, acked: Option<u64>) -> Message<'static> {
    Message::Welcome(Welcome {
        protocol: u16::from(PROTOCOL_VERSION),
        status,
        reason: "welcome",
        host_id: "secure-test-host",
        acked,
        auth: AuthChallenge {
            scheme: AuthScheme::NoiseIk,
            host_nonce: [0; 16],
            host_proof: &[],
        },
    })
}

fn encode(message: &Message<'_>) -> Vec<u8> {
    frame::encode_to_vec(message).unwrap()
}

/// Runs `f` on the message an encoded frame holds.
fn with_message<R>(frame: &[u8], f: impl FnOnce(Message<'_>) -> R) -> R {
    let mut copy = frame.to_vec();
    f(frame::decode_datagram(&mut copy).expect("a frame that decodes"))
}

fn temp_dir(name: &str) -> latentcam_testkit::Scratch {
    latentcam_testkit::scratch("secure", name)
}

/// The host's end of one connection (a TCP stream, or the far end of a
/// serial line): frames as they arrive, and the kind of every frame the
/// device sent.
struct Peer<S: Read + Write = TcpStream> {
    stream: S,
    decoder: Box<FrameDecoder<MAX_FRAME_LEN>>,
    queue: VecDeque<Vec<u8>>,
    kinds: Vec<MessageKind>,
    closed: bool,
}

impl Peer<TcpStream> {
    fn accept(listener: &TcpListener) -> Self {
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + LIMIT;
        let stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "host: nobody connected");
                    thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        Peer::over(stream)
    }
}

impl<S: Read + Write> Peer<S> {
    /// A peer on `stream`, whose reads must time out (50 ms or so).
    fn over(stream: S) -> Self {
        Self {
            stream,
            decoder: Box::default(),
            queue: VecDeque::new(),
            kinds: Vec::new(),
            closed: false,
        }
    }

    /// Reads what is there for up to 50 ms.
    fn read_some(&mut self) {
        let mut buf = [0u8; 8192];
        match self.stream.read(&mut buf) {
            Ok(0) => self.closed = true,
            Ok(n) => {
                let (queue, kinds) = (&mut self.queue, &mut self.kinds);
                self.decoder.feed_all(&buf[..n], |item| {
                    let message = item.expect("the device sends only valid frames");
                    kinds.push(message.kind());
                    queue.push_back(encode(&message));
                });
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => self.closed = true,
        }
    }

    /// The next frame the device sent.
    fn next(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(frame) = self.queue.pop_front() {
                return frame;
            }
            assert!(!self.closed, "host: the device closed the connection");
            assert!(Instant::now() < deadline, "host: nothing came");
            self.read_some();
        }
    }

    /// Reads until the device closes the connection; false if it never did.
    fn until_closed(&mut self) -> bool {
        let deadline = Instant::now() + LIMIT;
        while !self.closed && Instant::now() < deadline {
            self.read_some();
        }
        self.closed
    }

    fn send(&mut self, frame: &[u8]) {
        self.stream.write_all(frame).unwrap();
        self.stream.flush().unwrap();
    }

    /// Reads `Hello` and `Handshake`: the `Hello` frame and the device's
    /// first handshake message.
    fn hello_and_handshake(&mut self) -> (Vec<u8>, Vec<u8>) {
        let hello = self.next();
        with_message(&hello, |m| {
            let Message::Hello(h) = m else {
                panic!("expected Hello, got {m:?}")
            };
            assert_eq!(h.auth.scheme, AuthScheme::NoiseIk);
        });
        let handshake = self.next();
        let first = with_message(&handshake, |m| match m {
            Message::Handshake(h) => h.payload.to_vec(),
            other => panic!("expected Handshake, got {other:?}"),
        });
        (hello, first)
    }

    /// The host's half of the handshake with `host`'s key; checks the
    /// device's key and opens the channel.
    fn handshake(&mut self, host: &StaticKey, device: &PublicKey) -> Channel {
        let (hello, first) = self.hello_and_handshake();
        let pending = with_message(&hello, |m| {
            let Message::Hello(h) = m else { unreachable!() };
            respond(host, &h, &first).expect("the device's handshake message")
        });
        assert_eq!(pending.device_key(), device, "the device proved its key");
        let (second, channel) = pending.accept().unwrap();
        self.send(&encode(&Message::Handshake(Handshake { payload: &second })));
        channel
    }

    /// The next frame, which must be sealed, opened with `channel`.
    fn open_next(&mut self, channel: &mut Channel) -> Vec<u8> {
        let frame = self.next();
        with_message(&frame, |m| match m {
            Message::Sealed(s) => channel.open(&s).expect("a sealed message that opens"),
            other => panic!("expected a sealed message, got {other:?}"),
        })
    }
}

fn secure_link(address: &str, device: StaticKey, host: PublicKey) -> SecureLink<TcpLink> {
    let mut config = TcpConfig::new(address);
    config.write_timeout = Duration::from_secs(2);
    SecureLink::new(TcpLink::new(config).unwrap(), device, host).unwrap()
}

/// Polls until a message `want` accepts arrives, the link reports an error,
/// or the limit passes; returns everything that came.
fn poll_for(link: &mut dyn Link, want: impl Fn(&Incoming) -> bool) -> Vec<Incoming> {
    let deadline = Instant::now() + LIMIT;
    let mut all = Vec::new();
    while Instant::now() < deadline {
        match link.poll_incoming(Duration::from_millis(50)) {
            Ok(messages) => all.extend(messages),
            Err(_) => break,
        }
        if all.iter().any(&want) {
            break;
        }
    }
    all
}

fn is_welcome(m: &Incoming) -> bool {
    matches!(m, Incoming::Welcome { .. })
}

// ---------------------------------------------------------------- SecureLink

#[test]
fn secure_link_authenticates_the_host_and_seals_both_ways() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (device, host) = (StaticKey::generate(), StaticKey::generate());
    let (device_public, host_public) = (*device.public(), *host.public());
    let peer = thread::spawn(move || {
        let mut peer = Peer::accept(&listener);
        let mut channel = peer.handshake(&host, &device_public);
        peer.send(
            &channel
                .seal(&welcome(WelcomeStatus::Accepted, None))
                .unwrap(),
        );
        let latent = peer.open_next(&mut channel);
        // A forged plain Ack first, then the real one.
        peer.send(&encode(&Message::Ack(Ack { up_to: 7 })));
        peer.send(&channel.seal(&Message::Ack(Ack { up_to: 0 })).unwrap());
        let bye = peer.open_next(&mut channel);
        assert!(peer.until_closed(), "the device closes at the end");
        (peer.kinds, latent, bye)
    });

    let mut link = secure_link(&address, device, host_public);
    assert!(
        link.describe().ends_with(" noise-ik"),
        "{}",
        link.describe()
    );
    // Before any handshake nothing is sent, not even a connection opened.
    let early = link.send(&latent_frame(0)).unwrap_err();
    assert!(early.is_transient(), "{early}");
    assert!(!link.is_connected());

    link.reconnect().unwrap();
    link.send(&hello_frame(AuthScheme::NoiseIk)).unwrap();
    // Until the host has proved its key, latents stay with the caller.
    assert!(link.send(&latent_frame(0)).unwrap_err().is_transient());
    let incoming = poll_for(&mut link, is_welcome);
    match incoming.as_slice() {
        [
            Incoming::Welcome {
                status: WelcomeStatus::Accepted,
                host_id,
                ..
            },
        ] => assert_eq!(host_id, "secure-test-host"),
        other => panic!("expected one accepting Welcome, got {other:?}"),
    }
    assert!(link.is_established());

    let sent = latent_frame(0);
    link.send(&sent).unwrap();
    let incoming = poll_for(&mut link, |m| matches!(m, Incoming::Ack { .. }));
    assert_eq!(
        incoming,
        [Incoming::Ack { up_to: 0 }],
        "the forged Ack is not believed"
    );
    assert!(link.stats().frame_errors >= 1, "{:?}", link.stats());
    link.send(&encode(&Message::Bye(Bye {
        reason: ByeReason::Shutdown,
        detail: "done",
    })))
    .unwrap();
    drop(link);

    let (kinds, latent, bye) = peer.join().expect("host thread");
    use MessageKind::{Handshake, Hello, Sealed};
    assert_eq!(
        kinds,
        [Hello, Handshake, Sealed, Sealed],
        "nothing else in the clear"
    );
    // The sealed latent is the latent the pipeline framed, field by field.
    with_message(&sent, |original| {
        assert_eq!(frame::decode_inner(&latent).unwrap(), original);
    });
    assert!(matches!(
        frame::decode_inner(&bye).unwrap(),
        Message::Bye(Bye {
            reason: ByeReason::Shutdown,
            ..
        })
    ));
}

#[test]
fn secure_link_refuses_a_host_that_accepts_without_authenticating() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let host_public = *StaticKey::generate().public();
    let peer = thread::spawn(move || {
        let mut peer = Peer::accept(&listener);
        peer.hello_and_handshake();
        // A host without authentication (or an impostor) just says yes.
        let mut accept = welcome(WelcomeStatus::Accepted, Some(99));
        if let Message::Welcome(w) = &mut accept {
            w.auth.scheme = AuthScheme::None;
        }
        peer.send(&encode(&accept));
        let closed = peer.until_closed();
        (peer.kinds, closed)
    });

    let mut link = secure_link(&address, StaticKey::generate(), host_public);
    link.reconnect().unwrap();
    link.send(&hello_frame(AuthScheme::NoiseIk)).unwrap();
    let incoming = poll_for(&mut link, is_welcome);
    match incoming.as_slice() {
        [
            Incoming::Welcome {
                status: WelcomeStatus::AuthFailed,
                reason,
                acked: None,
                ..
            },
        ] => assert!(
            reason.contains("host accepted without authenticating"),
            "{reason}"
        ),
        other => panic!("expected one AuthFailed Welcome, got {other:?}"),
    }
    assert!(!link.is_connected(), "the connection is dropped");
    for seq in 0..3 {
        let refused = link.send(&latent_frame(seq)).unwrap_err();
        assert!(refused.is_transient(), "{refused}");
    }
    let (kinds, closed) = peer.join().expect("host thread");
    assert_eq!(kinds, [MessageKind::Hello, MessageKind::Handshake]);
    assert!(closed, "the device closed the connection");
}

#[test]
fn secure_link_refuses_a_host_with_another_key() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let expected_host = *StaticKey::generate().public();
    let peer = thread::spawn(move || {
        let impostor = StaticKey::generate();
        let mut peer = Peer::accept(&listener);
        let (hello, first) = peer.hello_and_handshake();
        with_message(&hello, |m| {
            let Message::Hello(h) = m else { unreachable!() };
            // The device's message is sealed to the expected host's key.
            assert!(respond(&impostor, &h, &first).is_err());
            // The best an impostor can do: answer with a handshake of its own.
            let (_, other) =
                Initiator::start(&StaticKey::generate(), impostor.public(), &h, 1).unwrap();
            let (second, mut channel) = respond(&impostor, &h, &other).unwrap().accept().unwrap();
            peer.send(&encode(&Message::Handshake(Handshake { payload: &second })));
            peer.send(
                &channel
                    .seal(&welcome(WelcomeStatus::Accepted, None))
                    .unwrap(),
            );
        });
        let closed = peer.until_closed();
        (peer.kinds, closed)
    });

    let mut link = secure_link(&address, StaticKey::generate(), expected_host);
    link.reconnect().unwrap();
    link.send(&hello_frame(AuthScheme::NoiseIk)).unwrap();
    let incoming = poll_for(&mut link, is_welcome);
    match incoming.as_slice() {
        [
            Incoming::Welcome {
                status: WelcomeStatus::AuthFailed,
                reason,
                ..
            },
        ] => assert!(
            reason.contains("could not prove its key")
                && reason.contains(&expected_host.to_string()),
            "{reason}"
        ),
        other => panic!("expected one AuthFailed Welcome, got {other:?}"),
    }
    // Whatever else arrives on the dead connection is never surfaced.
    assert!(poll_for(&mut link, is_welcome).is_empty());
    assert!(link.send(&latent_frame(0)).unwrap_err().is_transient());
    let (kinds, closed) = peer.join().expect("host thread");
    assert_eq!(kinds, [MessageKind::Hello, MessageKind::Handshake]);
    assert!(closed);
}

#[test]
fn secure_link_drops_the_connection_on_a_replayed_sealed_message() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (device, host) = (StaticKey::generate(), StaticKey::generate());
    let (device_public, host_public) = (*device.public(), *host.public());
    let peer = thread::spawn(move || {
        let mut peer = Peer::accept(&listener);
        let mut channel = peer.handshake(&host, &device_public);
        peer.send(
            &channel
                .seal(&welcome(WelcomeStatus::Accepted, None))
                .unwrap(),
        );
        let ack = channel.seal(&Message::Ack(Ack { up_to: 3 })).unwrap();
        peer.send(&ack);
        peer.send(&ack);
        peer.until_closed()
    });

    let mut link = secure_link(&address, device, host_public);
    link.reconnect().unwrap();
    link.send(&hello_frame(AuthScheme::NoiseIk)).unwrap();
    let deadline = Instant::now() + LIMIT;
    let mut incoming = Vec::new();
    while link.is_connected() && Instant::now() < deadline {
        if let Ok(messages) = link.poll_incoming(Duration::from_millis(50)) {
            incoming.extend(messages);
        }
    }
    assert!(!link.is_connected(), "a replay ends the connection");
    let acks: Vec<_> = incoming
        .iter()
        .filter(|m| matches!(m, Incoming::Ack { .. }))
        .collect();
    assert_eq!(acks, [&Incoming::Ack { up_to: 3 }], "{incoming:?}");
    assert!(link.stats().frame_errors >= 1);
    assert!(link.send(&latent_frame(4)).unwrap_err().is_transient());
    assert!(peer.join().expect("host thread"), "the device closed");
}

#[test]
fn secure_link_never_reopens_a_lost_connection_for_sealed_frames() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (device, host) = (StaticKey::generate(), StaticKey::generate());
    let (device_public, host_public) = (*device.public(), *host.public());
    let (sent_tx, sent_rx) = mpsc::channel::<()>();
    let peer = thread::spawn(move || {
        let mut peer = Peer::accept(&listener);
        let mut first = peer.handshake(&host, &device_public);
        peer.send(&first.seal(&welcome(WelcomeStatus::Accepted, None)).unwrap());
        drop(peer); // the host goes away
        sent_rx.recv_timeout(LIMIT).expect("the device's sends");
        // Its explicit reconnect gets a new session with new keys.
        let mut peer = Peer::accept(&listener);
        let mut second = peer.handshake(&host, &device_public);
        peer.send(
            &second
                .seal(&welcome(WelcomeStatus::Accepted, Some(0)))
                .unwrap(),
        );
        let frame = peer.next();
        with_message(&frame, |m| {
            let Message::Sealed(sealed) = m else {
                panic!("expected a sealed message, got {m:?}")
            };
            // Every connection has its own keys: the first session's
            // cannot open what the second one sealed.
            assert!(first.open(&sealed).is_err());
            second.open(&sealed).expect("sealed for the second session")
        })
    });

    let mut link = secure_link(&address, device, host_public);
    link.reconnect().unwrap();
    link.send(&hello_frame(AuthScheme::NoiseIk)).unwrap();
    assert_eq!(poll_for(&mut link, is_welcome).len(), 1);
    let deadline = Instant::now() + LIMIT;
    while link.is_connected() && Instant::now() < deadline {
        let _ = link.poll_incoming(Duration::from_millis(50));
    }
    assert!(!link.is_connected(), "the host's close is noticed");
    for seq in 1..4 {
        assert!(link.send(&latent_frame(seq)).unwrap_err().is_transient());
    }
    assert!(!link.is_established());
    // Sealed frames never make the TCP link connect again by itself.
    assert!(!link.inner().is_connected());
    assert_eq!(link.stats().connects, 1);
    sent_tx.send(()).unwrap();

    link.reconnect().unwrap();
    link.send(&hello_frame(AuthScheme::NoiseIk)).unwrap();
    let incoming = poll_for(&mut link, is_welcome);
    assert!(
        matches!(
            incoming.as_slice(),
            [Incoming::Welcome {
                status: WelcomeStatus::Accepted,
                acked: Some(0),
                ..
            }]
        ),
        "{incoming:?}"
    );
    link.send(&latent_frame(1)).unwrap();
    let latent = peer.join().expect("host thread");
    assert!(matches!(
        frame::decode_inner(&latent).unwrap(),
        Message::Latent(Latent { seq: 1, .. })
    ));
}

#[test]
fn secure_link_needs_a_hello_offering_noise_and_a_two_way_link() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let mut link = secure_link(
        &address,
        StaticKey::generate(),
        *StaticKey::generate().public(),
    );
    link.reconnect().unwrap();
    let err = link.send(&hello_frame(AuthScheme::None)).unwrap_err();
    assert!(!err.is_transient());
    assert!(err.to_string().contains("not NoiseIk"), "{err}");

    let udp = latentcam_firmware::link::UdpLink::connect(&address).unwrap();
    let err =
        SecureLink::new(udp, StaticKey::generate(), *StaticKey::generate().public()).unwrap_err();
    assert!(err.to_string().contains("SecureLink::one_way"), "{err}");
    let tcp = TcpLink::new(TcpConfig::new(&address)).unwrap();
    let err = SecureLink::one_way(tcp, StaticKey::generate(), *StaticKey::generate().public())
        .unwrap_err();
    assert!(err.to_string().contains("mutual handshake"), "{err}");
}

#[test]
#[cfg_attr(
    not(target_arch = "x86_64"),
    ignore = "serialport's TCGETS2 ioctl fails under qemu-user; run natively with --include-ignored"
)]
fn secure_link_over_a_serial_line() {
    use latentcam_firmware::link::serial::DEFAULT_BAUD;
    use latentcam_firmware::link::{SerialConfig, SerialLink};
    use linux_embedded_hal::serialport;

    let pty = PtyPair::new();
    let (device, host) = (StaticKey::generate(), StaticKey::generate());
    let (device_public, host_public) = (*device.public(), *host.public());
    let port = serialport::new(&pty.paths[1], DEFAULT_BAUD)
        .timeout(Duration::from_millis(50))
        .open_native()
        .expect("open the host end of the pty pair");
    let peer = thread::spawn(move || {
        let mut peer = Peer::over(port);
        let mut channel = peer.handshake(&host, &device_public);
        peer.send(
            &channel
                .seal(&welcome(WelcomeStatus::Accepted, Some(5)))
                .unwrap(),
        );
        let latent = peer.open_next(&mut channel);
        peer.send(&channel.seal(&Message::Ack(Ack { up_to: 6 })).unwrap());
        (peer.kinds, latent)
    });

    let serial = SerialLink::open(SerialConfig::new(&pty.paths[0])).unwrap();
    let mut link = SecureLink::new(serial, device, host_public).unwrap();
    link.send(&hello_frame(AuthScheme::NoiseIk)).unwrap();
    let incoming = poll_for(&mut link, is_welcome);
    assert!(
        matches!(
            incoming.as_slice(),
            [Incoming::Welcome {
                status: WelcomeStatus::Accepted,
                acked: Some(5),
                ..
            }]
        ),
        "{incoming:?}"
    );
    link.send(&latent_frame(6)).unwrap();
    let incoming = poll_for(&mut link, |m| matches!(m, Incoming::Ack { .. }));
    assert_eq!(incoming, [Incoming::Ack { up_to: 6 }]);
    let (kinds, latent) = peer.join().expect("host thread");
    use MessageKind::{Handshake, Hello, Sealed};
    assert_eq!(kinds, [Hello, Handshake, Sealed]);
    assert!(matches!(
        frame::decode_inner(&latent).unwrap(),
        Message::Latent(Latent { seq: 6, .. })
    ));
}

#[test]
fn secure_session_streams_sealed_latents_and_is_acknowledged() {
    const LATENTS: u64 = 20;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (device, host) = (StaticKey::generate(), StaticKey::generate());
    let (device_public, host_public) = (*device.public(), *host.public());
    let peer = thread::spawn(move || {
        let mut peer = Peer::accept(&listener);
        let mut channel = peer.handshake(&host, &device_public);
        peer.send(
            &channel
                .seal(&welcome(WelcomeStatus::Accepted, None))
                .unwrap(),
        );
        let mut seqs = Vec::new();
        loop {
            let inner = peer.open_next(&mut channel);
            match frame::decode_inner(&inner).unwrap() {
                Message::Latent(l) => {
                    seqs.push(l.seq);
                    let ack = channel.seal(&Message::Ack(Ack { up_to: l.seq })).unwrap();
                    peer.send(&ack);
                }
                Message::Bye(_) => break,
                _ => {}
            }
        }
        peer.until_closed();
        (peer.kinds, seqs)
    });

    let link = secure_link(&address, device, host_public);
    let mut settings = Settings::new("secure-test-cam", "imagenet-224");
    settings.drain_timeout = Duration::from_secs(10);
    settings.auth = AuthScheme::NoiseIk;
    let (tx, rx) = mpsc::sync_channel(LATENTS as usize);
    for i in 0..LATENTS {
        let mut payload = vec![0u8; Codec::U8Affine.payload_len(8).unwrap()];
        Codec::U8Affine
            .encode(&[i as f32; 8], &mut payload)
            .unwrap();
        tx.send(EncodedLatent {
            payload,
            capture_us: i * 100_000,
            wall: None,
            width: 640,
            height: 480,
        })
        .unwrap();
    }
    drop(tx);
    let report = run_link(
        Box::new(link),
        None,
        hello_frame(AuthScheme::NoiseIk),
        &settings,
        rx,
        Arc::new(AtomicBool::new(false)),
    );
    assert_eq!(report.welcomes, 1, "{report:?}");
    assert_eq!(report.refusals, 0, "{report:?}");
    assert_eq!(report.acked, Some(LATENTS - 1), "{report:?}");
    let (kinds, seqs) = peer.join().expect("host thread");
    assert_eq!(seqs, (0..LATENTS).collect::<Vec<_>>());
    assert_eq!(kinds[..2], [MessageKind::Hello, MessageKind::Handshake]);
    assert!(
        kinds[2..].iter().all(|k| *k == MessageKind::Sealed),
        "{kinds:?}"
    );
}

#[test]
fn secure_assembly_wraps_the_configured_link_and_names_a_missing_key() {
    use latentcam_firmware::assemble;
    use latentcam_firmware::config::EdgeConfig;

    let dir = temp_dir("assemble");
    let key = dir.join("device.key");
    let host = StaticKey::generate().public().to_string();
    let text = format!(
        "[link]\nkind = \"tcp\"\naddress = \"127.0.0.1:9\"\nhost_key = \"{host}\"\n\
         key_file = \"{}\"\n",
        key.display()
    );
    let config = EdgeConfig::parse(&text, Path::new("edge.toml")).unwrap();
    assert_eq!(assemble::auth_scheme(&config), AuthScheme::NoiseIk);
    let err = assemble::open_link(&config)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[link] key_file")
            && err.contains(&key.display().to_string())
            && err.contains("latentcam-edge keygen --out FILE"),
        "{err}"
    );
    StaticKey::write_new(&key).unwrap();
    let link = assemble::open_link(&config).unwrap();
    assert!(
        link.describe().ends_with(" noise-ik"),
        "{}",
        link.describe()
    );
    let plain = EdgeConfig::parse("", Path::new("edge.toml")).unwrap();
    assert_eq!(assemble::auth_scheme(&plain), AuthScheme::None);
}

// ---------------------------------------------------------------- CLI

#[test]
fn secure_keygen_writes_a_private_key_once_and_prints_the_public_key() {
    let dir = temp_dir("keygen");
    let key = dir.join("device.key");
    let keygen = || {
        latentcam_testkit::program(env!("CARGO_BIN_EXE_latentcam-edge"))
            .args(["keygen", "--out"])
            .arg(&key)
            .output()
            .unwrap()
    };
    let out = keygen();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let public = stdout.strip_suffix('\n').expect("one line");
    assert_eq!(public.len(), 64, "{stdout:?}");
    assert!(public.bytes().all(|b| b.is_ascii_hexdigit()), "{stdout:?}");
    assert!(
        stderr.contains(&format!("latentcam-host keys add <DEVICE-ID> {public}")),
        "{stderr}"
    );
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(StaticKey::load(&key).unwrap().public().to_string(), public);

    // Never overwritten.
    let before = std::fs::read(&key).unwrap();
    let again = keygen();
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(1), "{stderr}");
    assert!(again.stdout.is_empty());
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(std::fs::read(&key).unwrap(), before);
}

fn doctor(dir: &Path, address: &str, host: &PublicKey, key: &Path) -> String {
    let photos = repo().join("models/efficientnet-lite0/fixtures/originals");
    let out = latentcam_testkit::program(env!("CARGO_BIN_EXE_latentcam-edge"))
        .arg("doctor")
        .arg("--models")
        .arg(repo().join("models"))
        .arg("--spool")
        .arg(dir.join("spool"))
        .args([
            "--device-id",
            "doctor-noise-cam",
            "--source",
            "replay",
            "--input",
        ])
        .arg(&photos)
        .args(["--link", "tcp", "--address", address, "--host-key"])
        .arg(host.to_string())
        .arg("--key-file")
        .arg(key)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        out.status.success(),
        !text.lines().any(|l| l.starts_with("FAIL")),
        "{text}"
    );
    text
}

fn line<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find(|l| l.get(6..).is_some_and(|rest| rest.starts_with(name)))
        .unwrap_or_else(|| panic!("no {name} line in:\n{text}"))
}

#[test]
fn secure_doctor_makes_the_noise_handshake_and_refuses_an_unauthenticated_host() {
    let dir = temp_dir("doctor");
    let key = dir.join("device.key");
    let device_public = *StaticKey::write_new(&key).unwrap().public();
    let host = StaticKey::generate();
    let host_public = *host.public();

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let peer = thread::spawn(move || {
        let mut peer = Peer::accept(&listener);
        let mut channel = peer.handshake(&host, &device_public);
        peer.send(
            &channel
                .seal(&welcome(WelcomeStatus::Accepted, Some(41)))
                .unwrap(),
        );
        let bye = peer.open_next(&mut channel);
        peer.until_closed();
        (peer.kinds, bye)
    });
    let text = doctor(&dir, &address, &host_public, &key);
    let keys = line(&text, "keys");
    assert!(
        keys.starts_with("OK") && keys.contains(&device_public.to_string()),
        "{keys}"
    );
    let host_line = line(&text, "host");
    assert!(
        host_line.starts_with("OK")
            && host_line.contains("proved its key")
            && host_line.contains("up to seq 41"),
        "{host_line}"
    );
    let (kinds, bye) = peer.join().expect("host thread");
    use MessageKind::{Handshake, Hello, Sealed};
    assert_eq!(kinds, [Hello, Handshake, Sealed]);
    assert!(matches!(
        frame::decode_inner(&bye).unwrap(),
        Message::Bye(_)
    ));

    // A host that accepts without the handshake fails the check.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let peer = thread::spawn(move || {
        let mut peer = Peer::accept(&listener);
        peer.hello_and_handshake();
        peer.send(&encode(&welcome(WelcomeStatus::Accepted, None)));
        peer.until_closed();
        peer.kinds
    });
    let text = doctor(&dir, &address, &host_public, &key);
    let host_line = line(&text, "host");
    assert!(
        host_line.starts_with("FAIL") && host_line.contains("without authenticating"),
        "{text}"
    );
    assert_eq!(
        peer.join().expect("host thread"),
        [MessageKind::Hello, MessageKind::Handshake]
    );

    // A key others can read is refused, with the fix.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = doctor(&dir, "127.0.0.1:9", &host_public, &key);
    let keys = line(&text, "keys");
    assert!(keys.starts_with("FAIL"), "{text}");
    assert!(text.contains("chmod 600"), "{text}");
}

/// The one-way link over a real loopback UDP socket, the test thread
/// playing the host with `respond_one_way`: every `Hello` carries its own
/// Noise K handshake with a newer stamp, and everything else travels
/// sealed under the channel of the last `Hello`.
#[test]
fn one_way_secure_link_over_udp_authenticates_every_hello_and_seals_the_rest() {
    use latentcam_firmware::link::UdpLink;
    use std::net::UdpSocket;

    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(LIMIT)).unwrap();
    let (device, host) = (StaticKey::generate(), StaticKey::generate());
    let device_public = *device.public();
    let udp = UdpLink::connect(socket.local_addr().unwrap().to_string()).unwrap();
    let mut link = SecureLink::one_way(udp, device, *host.public()).unwrap();
    assert!(link.describe().ends_with("noise-k"), "{}", link.describe());

    // A Hello offering the mutual scheme is a configuration error here.
    assert!(
        link.send(&hello_frame(AuthScheme::NoiseIk))
            .unwrap_err()
            .to_string()
            .contains("not NoiseK")
    );
    // Nothing can be sealed before a Hello.
    assert!(link.send(&latent_frame(0)).unwrap_err().is_transient());

    let receive = || {
        let mut buf = vec![0u8; 65536];
        let n = socket.recv(&mut buf).unwrap();
        buf.truncate(n);
        buf
    };
    let mut last_stamp = 0;
    for round in 0..3u64 {
        link.send(&hello_frame(AuthScheme::NoiseK)).unwrap();
        link.send(&latent_frame(round)).unwrap();
        let hello_bytes = receive();
        let handshake = receive();
        let sealed = receive();
        let hello_owned = hello_bytes.clone();
        let (mut channel, stamp) = with_message(&hello_owned, |m| {
            let Message::Hello(h) = m else {
                panic!("not a Hello: {m:?}")
            };
            assert_eq!(h.auth.scheme, AuthScheme::NoiseK);
            with_message(&handshake, |m| {
                let Message::Handshake(hs) = m else {
                    panic!("not a Handshake: {m:?}")
                };
                latentcam_secure::respond_one_way(&host, &device_public, &h, hs.payload).unwrap()
            })
        });
        assert!(
            stamp > last_stamp,
            "stamps increase: {stamp} after {last_stamp}"
        );
        last_stamp = stamp;
        let inner = with_message(&sealed, |m| {
            let Message::Sealed(s) = m else {
                panic!("not Sealed: {m:?}")
            };
            channel.open(&s).unwrap()
        });
        assert!(matches!(
            frame::decode_inner(&inner).unwrap(),
            Message::Latent(Latent { seq, .. }) if seq == round
        ));
    }
    assert!(link.poll_incoming(Duration::ZERO).unwrap().is_empty());
}
