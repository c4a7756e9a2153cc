//! One contract, run over every link transport against its real far end
//! (a loopback TCP listener, a UDP socket, the other side of a socat pty
//! pair, the recording file, a host worker's client on a real mosquitto,
//! and the in-memory channel that tests of the layers above use), the way `encoder_backends` runs one suite
//! over every encoder:
//!
//! - a `Hello` and then 50 latents reach the far end intact and in order,
//!   with `Hello` first (set with `set_hello` on the links that send it on
//!   every new connection, TCP and serial; sent like any frame on the
//!   others, as the pipeline's session does);
//! - the link counts what it sent;
//! - on a link the host answers on, a `Welcome` and an `Ack` written by the
//!   far end come back from `poll_incoming`, and line noise before them is
//!   counted as a frame error, not returned; a one-way link returns nothing
//!   at once;
//! - `describe` names the medium.
//!
//! The transport-specific behaviour (reconnects, stalls, a full disk) stays
//! in `links.rs`.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use latentcam_firmware::link::channel::ChannelEnd;
use latentcam_firmware::link::{
    FileLink, FsyncPolicy, Incoming, Link, MqttConfig, MqttLink, SerialConfig, SerialLink,
    TcpConfig, TcpLink, UdpLink,
};
use latentcam_testkit::PtyPair;
use latentcam_wire::frame::{self, MAX_ENCODED_LEN};
use latentcam_wire::mqtt::DeviceTopics;
use latentcam_wire::{FrameDecoder, Message};
use rumqttc::v5::mqttbytes::QoS;

use crate::links::{
    Seen, ack_frame, decode_into, hello_frame, latent_frame, latents, poll_until, welcome_frame,
};

const LATENTS: u64 = 50;
const LIMIT: Duration = Duration::from_secs(10);

/// What receives a link's frames.
trait FarEnd {
    /// Everything decoded so far, waiting up to [`LIMIT`] for `latents`
    /// latents to have arrived.
    fn seen(&mut self, latents: usize) -> Vec<Seen>;

    /// Writes host → device frames (or noise), each as the medium carries
    /// one write; `false` on a one-way medium.
    fn reply(&mut self, writes: &[&[u8]]) -> bool;
}

/// A link under test with its far end.
struct Medium {
    link: Box<dyn Link + Send>,
    far: Box<dyn FarEnd>,
    /// What `describe` starts with.
    scheme: &'static str,
    /// The link itself sends the `set_hello` frame on every new connection.
    hello_on_connect: bool,
    /// Keeps a pty pair or a scratch directory alive for the test.
    _keep: Option<Box<dyn std::any::Any>>,
}

/// A byte stream (a TCP connection, a pty) read by a thread of its own.
struct StreamEnd {
    seen: Arc<Mutex<Vec<Seen>>>,
    writer: Box<dyn Write + Send>,
}

impl StreamEnd {
    fn start(mut reader: Box<dyn Read + Send>, writer: Box<dyn Write + Send>) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::clone(&seen);
        thread::spawn(move || {
            let mut decoder = FrameDecoder::<{ frame::MAX_FRAME_LEN }>::new();
            let mut buf = vec![0u8; 8192];
            let deadline = Instant::now() + LIMIT * 3;
            while Instant::now() < deadline {
                match reader.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        let mut seen = shared.lock().unwrap();
                        decode_into(&mut decoder, &buf[..n], &mut seen);
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {}
                    Err(_) => return,
                }
            }
        });
        Self { seen, writer }
    }
}

impl FarEnd for StreamEnd {
    fn seen(&mut self, want: usize) -> Vec<Seen> {
        wait_for(want, || self.seen.lock().unwrap().clone())
    }

    fn reply(&mut self, writes: &[&[u8]]) -> bool {
        for bytes in writes {
            self.writer.write_all(bytes).unwrap();
        }
        self.writer.flush().unwrap();
        true
    }
}

/// Polls `seen` until it holds `want` latents or [`LIMIT`] passes.
fn wait_for(want: usize, mut seen: impl FnMut() -> Vec<Seen>) -> Vec<Seen> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let now = seen();
        if latents(&now).len() >= want || Instant::now() > deadline {
            return now;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A TCP listener that accepts the link's connection.
struct TcpEnd {
    listener: Option<TcpListener>,
    stream: Option<StreamEnd>,
}

impl TcpEnd {
    fn stream(&mut self) -> &mut StreamEnd {
        if self.stream.is_none() {
            let listener = self.listener.take().expect("one connection");
            listener.set_nonblocking(false).unwrap();
            let (stream, _) = accept_within(&listener);
            stream
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let writer = stream.try_clone().unwrap();
            self.stream = Some(StreamEnd::start(Box::new(stream), Box::new(writer)));
        }
        self.stream.as_mut().expect("set above")
    }
}

fn accept_within(listener: &TcpListener) -> (TcpStream, std::net::SocketAddr) {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + LIMIT;
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                stream.set_nonblocking(false).unwrap();
                return (stream, peer);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("the link never connected: {e}"),
        }
    }
}

impl FarEnd for TcpEnd {
    fn seen(&mut self, want: usize) -> Vec<Seen> {
        self.stream().seen(want)
    }

    fn reply(&mut self, writes: &[&[u8]]) -> bool {
        self.stream().reply(writes)
    }
}

/// A UDP socket: one frame per datagram.
struct UdpEnd {
    socket: UdpSocket,
    seen: Vec<Seen>,
}

impl FarEnd for UdpEnd {
    fn seen(&mut self, want: usize) -> Vec<Seen> {
        let mut buf = vec![0u8; MAX_ENCODED_LEN + 1];
        let deadline = Instant::now() + LIMIT;
        while latents(&self.seen).len() < want && Instant::now() < deadline {
            let Ok(n) = self.socket.recv(&mut buf) else {
                continue;
            };
            self.seen.push(match frame::decode_datagram(&mut buf[..n]) {
                Ok(Message::Hello(_)) => Seen::Hello,
                Ok(Message::Latent(l)) => Seen::Latent(l.seq),
                Ok(other) => Seen::Other(other.kind() as u8),
                Err(_) => Seen::Error,
            });
        }
        self.seen.clone()
    }

    fn reply(&mut self, _: &[&[u8]]) -> bool {
        false
    }
}

/// The recording file, read back as `latentcam-host inspect` reads it.
struct FileEnd {
    path: PathBuf,
}

impl FarEnd for FileEnd {
    fn seen(&mut self, want: usize) -> Vec<Seen> {
        wait_for(want, || {
            let bytes = std::fs::read(&self.path).unwrap_or_default();
            let mut decoder = FrameDecoder::<{ frame::MAX_FRAME_LEN }>::new();
            let mut seen = Vec::new();
            for chunk in bytes.chunks(777) {
                decode_into(&mut decoder, chunk, &mut seen);
            }
            seen
        })
    }

    fn reply(&mut self, _: &[&[u8]]) -> bool {
        false
    }
}

/// A host worker's MQTT client on a real broker, subscribed to the
/// device's `hello` and `latent` topics; it answers on `welcome` and `ack`.
struct MqttEnd {
    client: rumqttc::v5::Client,
    topics: DeviceTopics,
    seen: Arc<Mutex<Vec<Seen>>>,
    _broker: latentcam_testkit::Broker,
}

impl MqttEnd {
    fn start(broker: latentcam_testkit::Broker, topics: DeviceTopics) -> Self {
        use rumqttc::v5::mqttbytes::v5::{Filter, Packet};
        use rumqttc::v5::{Client, Event, MqttOptions};
        let mut options = MqttOptions::new("link-suite-worker", "127.0.0.1", broker.port);
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut connection) = Client::new(options, 256);
        client
            .subscribe_many([
                Filter::new(topics.hello.clone(), QoS::AtLeastOnce),
                Filter::new(topics.latent.clone(), QoS::AtLeastOnce),
            ])
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (shared, subscribed) = (Arc::clone(&seen), std::sync::mpsc::channel());
        thread::spawn(move || {
            let deadline = Instant::now() + LIMIT * 3;
            while Instant::now() < deadline {
                match connection.recv_timeout(Duration::from_millis(100)) {
                    Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                        let _ = subscribed.0.send(());
                    }
                    Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                        let mut payload = p.payload.to_vec();
                        shared
                            .lock()
                            .unwrap()
                            .push(match frame::decode_datagram(&mut payload) {
                                Ok(Message::Hello(_)) => Seen::Hello,
                                Ok(Message::Latent(l)) => Seen::Latent(l.seq),
                                Ok(other) => Seen::Other(other.kind() as u8),
                                Err(_) => Seen::Error,
                            });
                    }
                    Ok(Ok(_)) | Err(_) => {}
                    Ok(Err(_)) => thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        subscribed
            .1
            .recv_timeout(LIMIT)
            .unwrap_or_else(|_| panic!("the worker did not subscribe:\n{}", broker.log()));
        Self {
            client,
            topics,
            seen,
            _broker: broker,
        }
    }
}

impl FarEnd for MqttEnd {
    fn seen(&mut self, want: usize) -> Vec<Seen> {
        wait_for(want, || self.seen.lock().unwrap().clone())
    }

    fn reply(&mut self, writes: &[&[u8]]) -> bool {
        for bytes in writes {
            // Acks go where workers publish them, everything else (noise
            // included) where Welcome goes.
            let mut copy = bytes.to_vec();
            let topic = match frame::decode_datagram(&mut copy) {
                Ok(Message::Ack(_)) => &self.topics.ack,
                _ => &self.topics.welcome,
            };
            self.client
                .publish(topic.as_str(), QoS::AtLeastOnce, false, bytes.to_vec())
                .unwrap();
        }
        true
    }
}

/// The far end of the in-memory channel.
struct ChannelFar {
    end: ChannelEnd,
    decoder: FrameDecoder<{ frame::MAX_FRAME_LEN }>,
    seen: Vec<Seen>,
}

impl FarEnd for ChannelFar {
    fn seen(&mut self, want: usize) -> Vec<Seen> {
        let deadline = Instant::now() + LIMIT;
        while latents(&self.seen).len() < want && Instant::now() < deadline {
            if let Some(bytes) = self.end.recv(Duration::from_millis(100)) {
                decode_into(&mut self.decoder, &bytes, &mut self.seen);
            }
        }
        self.seen.clone()
    }

    fn reply(&mut self, writes: &[&[u8]]) -> bool {
        for bytes in writes {
            self.end.send(bytes);
        }
        true
    }
}

fn channel() -> Medium {
    let (link, end) = latentcam_firmware::link::channel::pair();
    Medium {
        link: Box::new(link),
        far: Box::new(ChannelFar {
            end,
            decoder: FrameDecoder::new(),
            seen: Vec::new(),
        }),
        scheme: "channel",
        hello_on_connect: true,
        _keep: None,
    }
}

fn tcp() -> Medium {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    Medium {
        link: Box::new(TcpLink::new(TcpConfig::new(&address)).unwrap()),
        far: Box::new(TcpEnd {
            listener: Some(listener),
            stream: None,
        }),
        scheme: "tcp://",
        hello_on_connect: true,
        _keep: None,
    }
}

fn udp() -> Medium {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let address = socket.local_addr().unwrap().to_string();
    Medium {
        link: Box::new(UdpLink::connect(address).unwrap()),
        far: Box::new(UdpEnd {
            socket,
            seen: Vec::new(),
        }),
        scheme: "udp://",
        hello_on_connect: false,
        _keep: None,
    }
}

fn serial() -> Medium {
    use latentcam_firmware::link::serial::DEFAULT_BAUD;
    use linux_embedded_hal::serialport;
    let pty = PtyPair::new();
    let link = SerialLink::open(SerialConfig::new(&pty.paths[0])).unwrap();
    let host = serialport::new(&pty.paths[1], DEFAULT_BAUD)
        .timeout(Duration::from_millis(100))
        .open_native()
        .expect("open the host end of the pty pair");
    let writer = host.try_clone_native().unwrap();
    Medium {
        link: Box::new(link),
        far: Box::new(StreamEnd::start(Box::new(host), Box::new(writer))),
        scheme: "serial:",
        hello_on_connect: true,
        _keep: Some(Box::new(pty)),
    }
}

fn file() -> Medium {
    let dir = latentcam_testkit::scratch("link-suite", "file");
    let path = dir.join("recording.lcr");
    Medium {
        link: Box::new(FileLink::open(&path, FsyncPolicy::default()).unwrap()),
        far: Box::new(FileEnd { path }),
        scheme: "file:",
        hello_on_connect: false,
        _keep: Some(Box::new(dir)),
    }
}

fn mqtt() -> Medium {
    let dir = latentcam_testkit::scratch("link-suite", "mqtt");
    let broker = latentcam_testkit::Broker::start(&dir.join("broker"));
    let topics = DeviceTopics::new("suite", "links-test-cam").unwrap();
    let far = MqttEnd::start(broker, topics);
    let config = MqttConfig::new(far._broker.address(), "suite", "links-test-cam");
    let link = MqttLink::new(config).unwrap();
    let deadline = Instant::now() + LIMIT;
    while !link.is_connected() {
        assert!(
            Instant::now() < deadline,
            "the link never reached the broker"
        );
        thread::sleep(Duration::from_millis(10));
    }
    Medium {
        link: Box::new(link),
        far: Box::new(far),
        scheme: "mqtt://",
        hello_on_connect: false,
        _keep: Some(Box::new(dir)),
    }
}

/// The contract every link keeps.
fn contract(medium: Medium) {
    let Medium {
        mut link,
        mut far,
        scheme,
        hello_on_connect,
        _keep,
    } = medium;
    let description = link.describe();
    assert!(description.starts_with(scheme), "{description}");
    let answers = link.is_bidirectional();
    link.set_hello(hello_frame());
    if !hello_on_connect {
        link.send(&hello_frame()).unwrap();
    }
    for seq in 0..LATENTS {
        link.send(&latent_frame(seq))
            .unwrap_or_else(|e| panic!("{description}: {e}"));
    }
    let seen = far.seen(LATENTS as usize);
    assert_eq!(seen.first(), Some(&Seen::Hello), "{description}: {seen:?}");
    assert!(!seen.contains(&Seen::Error), "{description}: {seen:?}");
    assert_eq!(
        latents(&seen),
        (0..LATENTS).collect::<Vec<_>>(),
        "{description}"
    );
    let sent = if hello_on_connect {
        LATENTS
    } else {
        LATENTS + 1
    };
    assert_eq!(link.stats().frames_sent, sent, "{description}");

    let replied = far.reply(&[
        &[0x55, 0x13, 0x00],
        &welcome_frame(Some(41)),
        &ack_frame(LATENTS - 1),
    ]);
    assert_eq!(
        replied, answers,
        "{description}: a far end answers iff the link listens"
    );
    let mut incoming = Vec::new();
    if answers {
        assert!(
            poll_until(link.as_mut(), LIMIT, &mut incoming, |m| {
                *m == Incoming::Ack { up_to: LATENTS - 1 }
            }),
            "{description}: {incoming:?}"
        );
        assert!(
            matches!(
                incoming[0],
                Incoming::Welcome {
                    acked: Some(41),
                    ..
                }
            ),
            "{description}: {incoming:?}"
        );
        assert_eq!(link.stats().frame_errors, 1, "{description}");
    } else {
        let nothing = link.poll_incoming(Duration::from_millis(100)).unwrap();
        assert!(nothing.is_empty(), "{description}: {nothing:?}");
    }
}

#[test]
fn the_channel_keeps_the_link_contract() {
    contract(channel());
}

/// What the channel adds for the layers above: a cut connection is down
/// (transient) until the far end allows it again, and the next connection
/// starts with `Hello` and none of the old connection's bytes.
#[test]
fn a_cut_channel_is_down_until_restored_and_then_says_hello_again() {
    let (mut link, end) = latentcam_firmware::link::channel::pair();
    link.set_hello(hello_frame());
    link.send(&latent_frame(0)).unwrap();
    let hello = end.recv(LIMIT).unwrap();
    assert_eq!(hello, hello_frame());
    assert_eq!(end.recv(LIMIT).unwrap(), latent_frame(0));
    end.cut();
    end.send(&ack_frame(0));
    let err = link.send(&latent_frame(1)).unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(!link.is_connected());
    assert!(
        link.poll_incoming(Duration::ZERO)
            .unwrap_err()
            .is_transient()
    );
    end.restore();
    link.send(&latent_frame(1)).unwrap();
    assert_eq!(end.recv(LIMIT).unwrap(), hello_frame());
    assert_eq!(end.recv(LIMIT).unwrap(), latent_frame(1));
    assert!(
        link.poll_incoming(Duration::from_millis(50))
            .unwrap()
            .is_empty(),
        "the Ack written to the cut connection is not read on the new one"
    );
    assert_eq!(link.stats().connects, 2);
    assert_eq!(link.stats().frames_sent, 2);
}

#[test]
fn tcp_keeps_the_link_contract() {
    contract(tcp());
}

#[test]
fn udp_keeps_the_link_contract() {
    contract(udp());
}

#[test]
#[cfg_attr(
    not(target_arch = "x86_64"),
    ignore = "serialport's TCGETS2 ioctl fails under qemu-user; run natively with --include-ignored"
)]
fn serial_keeps_the_link_contract() {
    contract(serial());
}

#[test]
fn file_keeps_the_link_contract() {
    contract(file());
}

#[test]
fn mqtt_keeps_the_link_contract() {
    contract(mqtt());
}
