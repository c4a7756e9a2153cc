//! Link transports against real substitutes: loopback TCP and UDP sockets, a
//! socat pseudo-terminal pair for the serial line, files and `/dev/full`.
//! No test asserts timing; every wait has a deadline so nothing hangs.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use latentcam_firmware::link::{
    Backoff, FileLink, FsyncPolicy, Incoming, Link, LinkError, SerialConfig, SerialLink, TcpConfig,
    TcpLink, UdpLink,
};
use latentcam_testkit::PtyPair;
use latentcam_wire::frame::{self, MAX_ENCODED_LEN};
use latentcam_wire::{
    Ack, AuthChallenge, AuthScheme, Codec, FeedResult, FrameDecoder, Latent, Message,
    PROTOCOL_VERSION, Welcome, WelcomeStatus,
};

// ---------------------------------------------------------------- helpers

/// A realistic 1280-dim U8Affine latent frame (~1.3 KB) for `seq`.
pub(crate) fn latent_frame(seq: u64) -> Vec<u8> {
    latent_frame_dim(seq, 1280, Codec::U8Affine)
}

fn latent_frame_dim(seq: u64, dim: usize, codec: Codec) -> Vec<u8> {
    let latent: Vec<f32> = (0..dim)
        .map(|i| ((i as f32 * 0.37 + seq as f32) * 0.11).sin())
        .collect();
    let payload = codec.encode_to_vec(&latent).unwrap();
    frame::encode_to_vec(&Message::Latent(Latent {
        seq,
        capture_us: 1_700_000_000_000_000 + seq * 33_333,
        frame_width: 1920,
        frame_height: 1080,
        codec,
        payload: &payload,
        mac: &[],
        wall: None,
    }))
    .unwrap()
}

pub(crate) fn hello_frame() -> Vec<u8> {
    latentcam_testkit::hello::hello_frame(
        "links-test-cam",
        "efficientnet-lite0",
        [7; 32],
        PROTOCOL_VERSION.into(),
    )
}

pub(crate) fn welcome_frame(acked: Option<u64>) -> Vec<u8> {
    frame::encode_to_vec(&Message::Welcome(Welcome {
        protocol: u16::from(PROTOCOL_VERSION),
        status: WelcomeStatus::Accepted,
        reason: "ok",
        host_id: "links-test-host",
        acked,
        auth: AuthChallenge {
            scheme: AuthScheme::None,
            host_nonce: [0; 16],
            host_proof: &[],
        },
    }))
    .unwrap()
}

pub(crate) fn ack_frame(up_to: u64) -> Vec<u8> {
    frame::encode_to_vec(&Message::Ack(Ack { up_to })).unwrap()
}

/// What a receiver saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seen {
    Hello,
    Latent(u64),
    Other(u8),
    Error,
}

/// Feeds `bytes` to `decoder`, recording what decodes.
pub(crate) fn decode_into<const N: usize>(
    decoder: &mut FrameDecoder<N>,
    mut bytes: &[u8],
    seen: &mut Vec<Seen>,
) {
    while !bytes.is_empty() {
        bytes = match decoder.feed(bytes) {
            FeedResult::Consumed => break,
            FeedResult::Message { message, remaining } => {
                seen.push(match message {
                    Message::Hello(_) => Seen::Hello,
                    Message::Latent(l) => Seen::Latent(l.seq),
                    other => Seen::Other(other.kind() as u8),
                });
                remaining
            }
            FeedResult::Error { remaining, .. } => {
                seen.push(Seen::Error);
                remaining
            }
        };
    }
}

pub(crate) fn latents(seen: &[Seen]) -> Vec<u64> {
    seen.iter()
        .filter_map(|s| match s {
            Seen::Latent(seq) => Some(*seq),
            _ => None,
        })
        .collect()
}

/// Polls `link` until `want` has been returned or `limit` passes.
pub(crate) fn poll_until(
    link: &mut dyn Link,
    limit: Duration,
    all: &mut Vec<Incoming>,
    want: impl Fn(&Incoming) -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match link.poll_incoming(Duration::from_millis(50)) {
            Ok(messages) => all.extend(messages),
            Err(e) => assert!(e.is_transient(), "poll_incoming: {e}"),
        }
        if all.iter().any(&want) {
            return true;
        }
    }
    false
}

// ---------------------------------------------------------------- backoff

#[test]
fn backoff_doubles_to_the_cap_and_resets() {
    let mut backoff =
        Backoff::new(Duration::from_millis(100), Duration::from_secs(30)).with_jitter(0.0);
    let delays: Vec<u64> = (0..12)
        .map(|_| backoff.next_delay().as_millis() as u64)
        .collect();
    assert_eq!(
        delays,
        [
            100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000
        ]
    );
    assert_eq!(backoff.failures(), 12);
    backoff.reset();
    assert_eq!(backoff.failures(), 0);
    assert_eq!(backoff.next_delay(), Duration::from_millis(100));
}

#[test]
fn backoff_jitter_stays_within_twenty_percent_and_is_reproducible() {
    let make = |seed| Backoff::default().with_seed(seed);
    let (mut a, mut b, mut c) = (make(42), make(42), make(43));
    let mut base = Duration::from_millis(100);
    let mut seq_a = Vec::new();
    let mut seq_c = Vec::new();
    for _ in 0..40 {
        let d = a.next_delay();
        assert!(
            d >= base.mul_f64(0.8) && d <= base.mul_f64(1.2),
            "{d:?} outside ±20 % of {base:?}"
        );
        assert_eq!(d, b.next_delay(), "same seed, same sequence");
        seq_a.push(d);
        seq_c.push(c.next_delay());
        base = (base * 2).min(Duration::from_secs(30));
    }
    assert_ne!(seq_a, seq_c, "different seeds give different jitter");
    let distinct: BTreeSet<_> = seq_a[20..].iter().collect();
    assert!(
        distinct.len() > 10,
        "jitter varies at the cap: {distinct:?}"
    );
}

// ---------------------------------------------------------------- TCP

/// A host stand-in: accepts one connection, greets it (after a garbage frame
/// the link must count and skip), decodes everything, and acknowledges the
/// last latent when it stops after `stop_after` latents or at seq 199.
fn tcp_receiver(
    listener: TcpListener,
    welcome_acked: Option<u64>,
    stop_after: Option<usize>,
) -> Vec<Seen> {
    let deadline = Instant::now() + Duration::from_secs(20);
    listener.set_nonblocking(true).unwrap();
    let mut stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "receiver: nobody connected");
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    drop(listener);
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    stream.write_all(&[0, 0x03, 0xde, 0xad, 0]).unwrap();
    stream.write_all(&welcome_frame(welcome_acked)).unwrap();
    let mut decoder = FrameDecoder::<{ frame::MAX_FRAME_LEN }>::new();
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        assert!(Instant::now() < deadline, "receiver timed out: {seen:?}");
        match stream.read(&mut buf) {
            Ok(0) => return seen,
            Ok(n) => decode_into(&mut decoder, &buf[..n], &mut seen),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("receiver read: {e}"),
        }
        let got = latents(&seen);
        let done = stop_after.is_some_and(|n| got.len() >= n) || got.last() == Some(&199);
        if done {
            stream.write_all(&ack_frame(*got.last().unwrap())).unwrap();
            return seen; // closing: "kills" this receiver mid-stream
        }
    }
}

#[test]
fn tcp_delivers_across_a_receiver_restart_and_returns_host_messages() {
    const FRAMES: u64 = 200;
    const KILL_AFTER: u64 = 100;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut first = Some(thread::spawn(move || {
        tcp_receiver(listener, None, Some(KILL_AFTER as usize))
    }));
    let mut first_seen = None;
    let mut second = None;

    let mut config = TcpConfig::new(addr.to_string());
    config.backoff =
        Backoff::new(Duration::from_millis(10), Duration::from_millis(200)).with_seed(1);
    config.write_timeout = Duration::from_secs(2);
    let mut link = TcpLink::new(config).unwrap();
    link.set_hello(hello_frame());
    assert!(!link.is_connected(), "connects lazily");

    let frames: Vec<Vec<u8>> = (0..FRAMES).map(latent_frame).collect();
    let mut incoming = Vec::new();
    let mut ok_before_first_down = BTreeSet::new();
    let mut downs = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seq = 0;
    while seq < FRAMES {
        assert!(
            Instant::now() < deadline,
            "stuck at seq {seq}: {}",
            link.describe()
        );
        if seq == KILL_AFTER && first_seen.is_none() && downs == 0 {
            // Like a spool before dropping frames: wait for the host's Ack.
            // The first receiver closes right after sending it.
            let acked = poll_until(&mut link, Duration::from_secs(10), &mut incoming, |m| {
                *m == Incoming::Ack {
                    up_to: KILL_AFTER - 1,
                }
            });
            assert!(acked, "no Ack from the first receiver: {incoming:?}");
            // Make sure it is really gone before sending on.
            first_seen = Some(first.take().unwrap().join().expect("first receiver"));
        }
        match link.send(&frames[seq as usize]) {
            Ok(()) => {
                if downs == 0 {
                    ok_before_first_down.insert(seq);
                }
                seq += 1;
            }
            Err(e) => {
                assert!(e.is_transient(), "{e}");
                assert!(e.to_string().contains(&addr.to_string()), "{e}");
                downs += 1;
                if second.is_none() {
                    let seen = first_seen
                        .as_ref()
                        .expect("down before the first receiver quit");
                    let last = latents(seen).last().copied();
                    // Restart on the same port (std sets SO_REUSEADDR).
                    let listener = TcpListener::bind(addr).expect("rebind the same port");
                    second = Some(thread::spawn(move || tcp_receiver(listener, last, None)));
                }
                thread::sleep(
                    link.retry_in()
                        .unwrap_or_default()
                        .clamp(Duration::from_millis(1), Duration::from_millis(50)),
                );
            }
        }
    }
    let final_ack = poll_until(&mut link, Duration::from_secs(10), &mut incoming, |m| {
        *m == Incoming::Ack { up_to: FRAMES - 1 }
    });
    if !final_ack {
        let second = second.map(|h| h.join().map(|seen| latents(&seen)));
        panic!(
            "no final Ack: {incoming:?}; {:?}; {}; downs {downs}; ok before down {ok_before_first_down:?}; second {second:?}",
            link.stats(),
            link.describe()
        );
    }
    let first_seen = first_seen.expect("first receiver joined at the pause");
    let second_seen = second.unwrap().join().expect("second receiver");

    // Every session starts with the hello.
    assert_eq!(first_seen.first(), Some(&Seen::Hello));
    assert_eq!(second_seen.first(), Some(&Seen::Hello));
    assert!(!first_seen.contains(&Seen::Error) && !second_seen.contains(&Seen::Error));
    // The first receiver got exactly the first 100, the second an ordered
    // tail to the end.
    let first_latents = latents(&first_seen);
    let second_latents = latents(&second_seen);
    assert_eq!(first_latents, (0..KILL_AFTER).collect::<Vec<_>>());
    assert!(
        second_latents.windows(2).all(|w| w[0] < w[1]),
        "{second_latents:?}"
    );
    assert_eq!(second_latents.last(), Some(&(FRAMES - 1)));
    // Only frames written into the dead connection before the link noticed
    // can be missing (a spool resends them after the next Welcome).
    let delivered: BTreeSet<u64> = first_latents
        .iter()
        .chain(&second_latents)
        .copied()
        .collect();
    for seq in 0..FRAMES {
        assert!(
            delivered.contains(&seq) || ok_before_first_down.contains(&seq),
            "seq {seq} lost after the link reported the outage"
        );
    }
    // Host → device messages: both Welcomes, both Acks; garbage counted.
    let welcomes: Vec<Option<u64>> = incoming
        .iter()
        .filter_map(|m| match m {
            Incoming::Welcome { status, acked, .. } => {
                assert_eq!(*status, WelcomeStatus::Accepted);
                Some(*acked)
            }
            _ => None,
        })
        .collect();
    assert_eq!(welcomes, [None, Some(KILL_AFTER - 1)]);
    let stats = link.stats();
    assert_eq!(stats.connects, 2);
    assert!(downs >= 1);
    assert_eq!(stats.frame_errors, 2, "one garbage frame per connection");
    assert_eq!(stats.frames_received, 4);
}

#[test]
fn tcp_host_away_is_transient_and_waits_for_the_backoff() {
    // A port that was just free: connection refused.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = TcpConfig::new(addr.to_string());
    config.backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(30));
    let mut link = TcpLink::new(config).unwrap();
    let first = link.send(&latent_frame(0)).unwrap_err();
    assert!(first.is_transient(), "{first}");
    let second = link.send(&latent_frame(0)).unwrap_err();
    match &second {
        LinkError::Down { retry_in, .. } => {
            assert!(retry_in.is_some_and(|d| d > Duration::ZERO), "{second}")
        }
        other => panic!("expected Down, got {other}"),
    }
    assert!(!link.is_connected());
    assert!(
        link.poll_incoming(Duration::from_millis(1))
            .unwrap_err()
            .is_transient()
    );
}

#[test]
fn tcp_bad_addresses_are_config_errors() {
    for bad in [
        "localhost",
        "10.0.0.1:http",
        ":7878",
        "10.0.0.1:0",
        "host:70000",
    ] {
        let err = TcpLink::new(TcpConfig::new(bad)).unwrap_err();
        assert!(matches!(err, LinkError::Config { .. }), "{bad}: {err}");
        assert!(!err.is_transient());
        assert!(err.to_string().contains(bad), "{err}");
    }
}

#[test]
fn tcp_stalled_host_does_not_wedge_the_sender() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (hold_tx, hold_rx) = mpsc::channel::<()>();
    // Accepts and never reads until told to stop.
    let host = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let _ = hold_rx.recv_timeout(Duration::from_secs(25));
        drop(stream);
    });
    let mut config = TcpConfig::new(addr.to_string());
    config.write_timeout = Duration::from_millis(200);
    let mut link = TcpLink::new(config).unwrap();
    // Largest latents, so the socket buffers fill after a few MB.
    let big = latent_frame_dim(0, 4096, Codec::F32);
    let mut error = None;
    for _ in 0..10_000 {
        if let Err(e) = link.send(&big) {
            error = Some(e);
            break;
        }
    }
    hold_tx.send(()).unwrap();
    host.join().unwrap();
    let error = error.expect("10 000 unread 16 KB frames never blocked the writer");
    assert!(error.is_transient(), "{error}");
    assert!(!link.is_connected(), "a stalled connection is dropped");
}

// ---------------------------------------------------------------- UDP

#[test]
fn udp_sends_one_decodable_frame_per_datagram() {
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut link = UdpLink::connect(receiver.local_addr().unwrap().to_string()).unwrap();
    assert!(link.describe().starts_with("udp://127.0.0.1:"));
    link.send(&hello_frame()).unwrap();
    for seq in 0..50 {
        link.send(&latent_frame(seq)).unwrap();
    }
    let mut seen = Vec::new();
    let mut buf = vec![0u8; MAX_ENCODED_LEN + 1];
    for _ in 0..51 {
        let n = receiver.recv(&mut buf).expect("datagram within 5 s");
        match frame::decode_datagram(&mut buf[..n]).expect("every datagram decodes") {
            Message::Hello(_) => seen.push(Seen::Hello),
            Message::Latent(l) => seen.push(Seen::Latent(l.seq)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen[0], Seen::Hello);
    assert_eq!(latents(&seen), (0..50).collect::<Vec<_>>());
    assert_eq!(link.stats().frames_sent, 51);
    assert!(
        link.poll_incoming(Duration::from_millis(10))
            .unwrap()
            .is_empty()
    );

    let oversized = vec![1u8; MAX_ENCODED_LEN + 1];
    let err = link.send(&oversized).unwrap_err();
    assert!(matches!(err, LinkError::FrameTooLarge { .. }), "{err}");
    assert!(matches!(
        UdpLink::connect("127.0.0.1").unwrap_err(),
        LinkError::Config { .. }
    ));
}

// ---------------------------------------------------------------- file

fn temp_path(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::env::temp_dir().join(format!(
        "latentcam-links-{}-{nanos}-{name}",
        std::process::id()
    ))
}

#[test]
fn file_recording_appends_and_reads_back() {
    let path = temp_path("recording.lcr");
    let mut expected = vec![Seen::Hello];
    {
        let mut link = FileLink::open(&path, FsyncPolicy::EveryFrame).unwrap();
        link.send(&hello_frame()).unwrap();
        for seq in 0..50 {
            link.send(&latent_frame(seq)).unwrap();
            expected.push(Seen::Latent(seq));
        }
    }
    // Reopening appends rather than truncating.
    let mut link = FileLink::open(&path, FsyncPolicy::default()).unwrap();
    let before = link.len();
    for seq in 50..60 {
        link.send(&latent_frame(seq)).unwrap();
        expected.push(Seen::Latent(seq));
    }
    link.sync().unwrap();
    assert!(link.len() > before);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len() as u64, link.len());
    drop(link);
    std::fs::remove_file(&path).unwrap();

    // Read it back the way `latentcam-host inspect` does: a stream decoder
    // fed in arbitrary chunks.
    let mut decoder = FrameDecoder::<{ frame::MAX_FRAME_LEN }>::new();
    let mut seen = Vec::new();
    for chunk in bytes.chunks(777) {
        decode_into(&mut decoder, chunk, &mut seen);
    }
    assert_eq!(seen, expected);
}

#[test]
fn file_full_disk_is_a_clear_non_transient_error() {
    let mut link = FileLink::open("/dev/full", FsyncPolicy::Never).unwrap();
    let err = link.send(&latent_frame(0)).unwrap_err();
    assert!(matches!(err, LinkError::DiskFull { .. }), "{err}");
    assert!(!err.is_transient());
    let text = err.to_string();
    assert!(
        text.contains("/dev/full") && text.contains("disk full"),
        "{text}"
    );
}

#[test]
fn file_in_a_missing_directory_is_a_config_error() {
    let path = temp_path("no-such-dir").join("rec.lcr");
    let err = FileLink::open(&path, FsyncPolicy::default()).unwrap_err();
    assert!(matches!(err, LinkError::Config { .. }), "{err}");
    assert!(err.to_string().contains("directory"), "{err}");
}

// ---------------------------------------------------------------- serial

#[test]
#[cfg_attr(
    not(target_arch = "x86_64"),
    ignore = "serialport's TCGETS2 ioctl fails under qemu-user; run natively with --include-ignored"
)]
fn serial_carries_frames_both_ways_over_a_pty_pair() {
    use latentcam_firmware::link::serial::DEFAULT_BAUD;
    use linux_embedded_hal::serialport;

    const FRAMES: u64 = 200;
    let pty = PtyPair::new();
    let mut link = SerialLink::open(SerialConfig::new(&pty.paths[0])).unwrap();
    assert!(link.describe().contains("921600"), "{}", link.describe());
    link.set_hello(hello_frame());
    let mut host = serialport::new(&pty.paths[1], DEFAULT_BAUD)
        .timeout(Duration::from_millis(100))
        .open_native()
        .expect("open the host end of the pty pair");

    let reader = thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut decoder = FrameDecoder::<{ frame::MAX_FRAME_LEN }>::new();
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 8192];
        while latents(&seen).len() < FRAMES as usize && Instant::now() < deadline {
            match host.read(&mut buf) {
                Ok(n) => decode_into(&mut decoder, &buf[..n], &mut seen),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("host end read: {e}"),
            }
        }
        (host, seen)
    });
    for seq in 0..FRAMES {
        link.send(&latent_frame(seq)).expect("serial send");
    }
    let (mut host, seen) = reader.join().expect("reader");
    assert_eq!(seen.first(), Some(&Seen::Hello));
    assert!(!seen.contains(&Seen::Error), "{seen:?}");
    assert_eq!(latents(&seen), (0..FRAMES).collect::<Vec<_>>());

    // Host → device: line noise (counted), a Welcome and an Ack.
    host.write_all(&[0x55, 0x13, 0x00]).unwrap();
    host.write_all(&welcome_frame(Some(41))).unwrap();
    host.write_all(&ack_frame(FRAMES - 1)).unwrap();
    host.flush().unwrap();
    let mut incoming = Vec::new();
    assert!(
        poll_until(&mut link, Duration::from_secs(5), &mut incoming, |m| {
            *m == Incoming::Ack { up_to: FRAMES - 1 }
        }),
        "{incoming:?}"
    );
    assert!(matches!(
        incoming[0],
        Incoming::Welcome {
            acked: Some(41),
            ..
        }
    ));
    assert_eq!(link.stats().frame_errors, 1);
    assert_eq!(link.stats().frames_sent, FRAMES);
}

/// A closed serial port stays closed until `reconnect` (reopening a device
/// node in a loop helps no one), and the reopened port says `Hello` again
/// before anything else.
#[test]
#[cfg_attr(
    not(target_arch = "x86_64"),
    ignore = "serialport's TCGETS2 ioctl fails under qemu-user; run natively with --include-ignored"
)]
fn serial_reopens_only_on_request_and_says_hello_first() {
    use latentcam_firmware::link::serial::DEFAULT_BAUD;
    use linux_embedded_hal::serialport;

    let pty = PtyPair::new();
    let mut link = SerialLink::open(SerialConfig::new(&pty.paths[0])).unwrap();
    link.set_hello(hello_frame());
    let mut host = serialport::new(&pty.paths[1], DEFAULT_BAUD)
        .timeout(Duration::from_millis(100))
        .open_native()
        .expect("open the host end of the pty pair");
    link.send(&latent_frame(0)).unwrap();
    link.disconnect();
    assert!(!link.is_connected());
    for _ in 0..3 {
        let err = link.send(&latent_frame(1)).unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(!link.is_connected(), "a send must not reopen the port");
    }
    link.reconnect().unwrap();
    link.send(&latent_frame(2)).unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut decoder = FrameDecoder::<{ frame::MAX_FRAME_LEN }>::new();
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 8192];
    while latents(&seen).len() < 2 && Instant::now() < deadline {
        match host.read(&mut buf) {
            Ok(n) => decode_into(&mut decoder, &buf[..n], &mut seen),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("host end read: {e}"),
        }
    }
    assert_eq!(
        seen,
        [Seen::Hello, Seen::Latent(0), Seen::Hello, Seen::Latent(2)]
    );
    assert_eq!(link.stats().connects, 2);
    assert_eq!(link.stats().frames_sent, 2);
}

#[test]
fn serial_missing_device_names_the_path_and_the_fix() {
    let path = "/dev/ttyLATENTCAM-no-such-port";
    let err = SerialLink::open(SerialConfig::new(path)).unwrap_err();
    assert!(matches!(err, LinkError::Config { .. }), "{err}");
    assert!(!err.is_transient());
    let text = err.to_string();
    assert!(
        text.contains(path) && text.contains("no such serial device"),
        "{text}"
    );
}
