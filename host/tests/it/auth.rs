//! Device authentication end to end (wire/SPEC.md §7): the real host
//! binary with `--keys`, its `keys` subcommands, and the real edge
//! pipeline (in-process, through the library the edge binary runs) with
//! `[link] host_key` and `key_file`, all on 127.0.0.1. A provisioned edge
//! is served, and nothing readable crosses the wire; an edge without keys,
//! a forger, a revoked device and a replay of a recorded session add no
//! result; an edge never streams to a host that skips the handshake.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use latentcam_firmware::assemble;
use latentcam_firmware::config::{EdgeConfig, LinkKind};
use latentcam_firmware::link::secure::keygen;
use latentcam_firmware::pipeline::{self, Report};
use latentcam_secure::PublicKey;
use latentcam_wire::frame::{self, MAX_FRAME_LEN};
use latentcam_wire::{
    AuthChallenge, AuthScheme, FrameDecoder, Message, MessageKind, NONCE_LEN, PROTOCOL_VERSION,
    Welcome, WelcomeStatus,
};

use crate::serve::{Host, edge_config, results, scratch, seqs_of, wait_for_lines};
use latentcam_testkit::PtyPair;
use latentcam_testkit::VTEST;

/// Runs `latentcam-host ARGS`.
fn host_cli(args: &[&str]) -> Output {
    crate::common::host_command()
        .args(args)
        .output()
        .expect("run latentcam-host")
}

/// Runs `latentcam-host ARGS`, which must succeed; returns its stdout.
fn host_ok(args: &[&str]) -> String {
    let out = host_cli(args);
    assert!(
        out.status.success(),
        "latentcam-host {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A device key pair: the private key file and its public half, as
/// `latentcam-edge keygen` makes them.
fn device_key(dir: &Path, name: &str) -> (PathBuf, PublicKey) {
    let path = dir.join(format!("{name}.key"));
    let public = keygen(&path).unwrap();
    (path, public)
}

/// Registers `key` for device `id` in the host key directory `keys`.
fn register(keys: &Path, id: &str, key: &PublicKey) {
    host_ok(&[
        "keys",
        "add",
        id,
        &key.to_string(),
        "--dir",
        keys.to_str().unwrap(),
    ]);
}

/// A scratch directory `name` with a new host key directory in it: (the
/// directory, the key directory, a results file path, the host's public
/// key).
fn provisioned(name: &str) -> (latentcam_testkit::Scratch, PathBuf, PathBuf, PublicKey) {
    let dir = scratch(name);
    let keys = dir.join("keys");
    let host_public = host_ok(&["keys", "init", "--dir", keys.to_str().unwrap()])
        .trim()
        .parse()
        .unwrap();
    let jsonl = dir.join("results.jsonl");
    (dir, keys, jsonl, host_public)
}

/// An edge replaying vtest.avi to `address` as `id`, with keys if given.
fn edge(address: &str, spool: &Path, id: &str, keys: Option<(&Path, &PublicKey)>) -> EdgeConfig {
    let mut config = edge_config(Path::new(VTEST), address, spool, id);
    config.source.unpaced = true;
    if let Some((key_file, host)) = keys {
        config.link.key_file = key_file.to_path_buf();
        config.link.host_key = host.to_string();
    }
    config
}

/// Runs the edge pipeline for `frames` frames, waiting at most `drain`
/// for the acknowledgements at the end.
fn run_edge(config: &EdgeConfig, frames: u64, drain: Duration) -> Report {
    let stop = Arc::new(AtomicBool::new(false));
    let (parts, mut settings) = assemble::open_all(config, Arc::clone(&stop)).unwrap();
    settings.max_frames = Some(frames);
    settings.drain_timeout = drain;
    pipeline::run(parts, settings, stop, None).unwrap()
}

/// Copies `from` to `to` until either ends, keeping a copy in `capture`.
fn pump(mut from: TcpStream, mut to: TcpStream, capture: Option<Arc<Mutex<Vec<u8>>>>) {
    let mut buf = vec![0u8; 64 * 1024];
    // A stuck peer ends the copy instead of holding the test.
    let _ = from.set_read_timeout(Some(Duration::from_secs(30)));
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(capture) = &capture {
            capture.lock().unwrap().extend_from_slice(&buf[..n]);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// A relay on 127.0.0.1 in front of the host that keeps what the edge
/// sends (`T`: the bytes of a stream, or datagrams): what a passive
/// observer on the network sees. Its thread runs until the relay is
/// dropped, at most 120 s.
struct Relay<T> {
    address: String,
    captured: Arc<Mutex<T>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl<T: Clone + Default + Send + 'static> Relay<T> {
    /// Runs `step` (which must not block long) until stopped.
    fn spawn(address: String, mut step: impl FnMut(&Arc<Mutex<T>>) + Send + 'static) -> Self {
        let captured = Arc::new(Mutex::new(T::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (capture, stopped) = (Arc::clone(&captured), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stopped.load(Ordering::Relaxed) && Instant::now() < deadline {
                step(&capture);
            }
        });
        Self {
            address,
            captured,
            stop,
            thread: Some(thread),
        }
    }

    fn captured(&self) -> T {
        self.captured.lock().unwrap().clone()
    }
}

impl Relay<Vec<u8>> {
    /// A TCP relay to `host`, keeping the bytes the edge sends.
    fn start(host: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let host = host.to_owned();
        Self::spawn(address, move |capture| match listener.accept() {
            Ok((edge, _)) => {
                edge.set_nonblocking(false).unwrap();
                let host = TcpStream::connect(&host).unwrap();
                let (edge2, host2) = (edge.try_clone().unwrap(), host.try_clone().unwrap());
                let capture = Arc::clone(capture);
                thread::spawn(move || pump(edge, host, Some(capture)));
                thread::spawn(move || pump(host2, edge2, None));
            }
            Err(_) => thread::sleep(Duration::from_millis(10)),
        })
    }
}

impl Relay<Vec<Vec<u8>>> {
    /// A UDP relay to `host`, keeping every datagram the edge sends.
    fn datagrams(host: &str) -> Self {
        let inbound = UdpSocket::bind("127.0.0.1:0").unwrap();
        inbound
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let address = inbound.local_addr().unwrap().to_string();
        let outbound = UdpSocket::bind("127.0.0.1:0").unwrap();
        outbound.connect(host).unwrap();
        let mut buf = vec![0u8; 65536];
        Self::spawn(address, move |capture| {
            if let Ok(n) = inbound.recv(&mut buf) {
                capture.lock().unwrap().push(buf[..n].to_vec());
                let _ = outbound.send(&buf[..n]);
            }
        })
    }
}

impl<T> Drop for Relay<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The host's count of refused authentications.
fn auth_failures(host: &Host) -> u64 {
    let metrics = host.api().get("/metrics").text();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("latentcam_auth_failures_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no auth failure counter in {metrics}"))
}

/// The kinds of the frames in `bytes`, and how many did not decode.
fn kinds(bytes: &[u8]) -> (Vec<MessageKind>, usize) {
    let mut decoder: Box<FrameDecoder<MAX_FRAME_LEN>> = Box::default();
    let (mut kinds, mut errors) = (Vec::new(), 0);
    decoder.feed_all(bytes, |m| match m {
        Ok(m) => kinds.push(m.kind()),
        Err(_) => errors += 1,
    });
    (kinds, errors)
}

fn count(lines: &[serde_json::Value], id: &str) -> usize {
    seqs_of(lines, id).len()
}

#[test]
fn only_registered_devices_are_served_and_nothing_on_the_wire_is_readable() {
    let dir = scratch("auth");
    let keys = dir.join("keys");
    let keys_arg = keys.to_str().unwrap();
    let jsonl = dir.join("results.jsonl");

    // Provisioning, through the host's CLI.
    let host_public: PublicKey = host_ok(&["keys", "init", "--dir", keys_arg])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        host_ok(&["keys", "show", "--dir", keys_arg]).trim(),
        host_public.to_string()
    );
    let again = host_cli(&["keys", "init", "--dir", keys_arg]);
    assert!(
        !again.status.success(),
        "init never overwrites the host key"
    );
    assert_eq!(
        host_ok(&["keys", "show", "--dir", keys_arg]).trim(),
        host_public.to_string()
    );
    let (cam_key, cam_public) = device_key(&dir, "cam");
    let (forger_key, forger_public) = device_key(&dir, "forger");
    let said = host_ok(&[
        "keys",
        "add",
        "gate",
        &forger_public.to_string(),
        "--dir",
        keys_arg,
    ]);
    assert!(said.contains("registered"), "{said}");
    let said = host_ok(&[
        "keys",
        "add",
        "gate",
        &cam_public.to_string(),
        "--dir",
        keys_arg,
    ]);
    assert!(
        said.contains("replaced"),
        "a replaced key is reported: {said}"
    );
    host_ok(&[
        "keys",
        "add",
        "side-door",
        &forger_public.to_string(),
        "--dir",
        keys_arg,
    ]);
    let list = host_ok(&["keys", "list", "--dir", keys_arg]);
    assert!(list.contains(&format!("{cam_public} gate")), "{list}");
    assert!(
        list.contains(&format!("{forger_public} side-door")),
        "{list}"
    );

    let host = Host::start_with(
        &jsonl,
        "127.0.0.1:0",
        &[
            "--keys",
            keys_arg,
            "--no-imagenet",
            "--anomaly",
            "--http",
            "127.0.0.1:0",
        ],
    );

    // (a) + (e): the provisioned edge, through a relay that records what
    // it sends.
    let relay = Relay::start(&host.address);
    let frames = 8;
    let report = run_edge(
        &edge(
            &relay.address,
            &dir.join("spool"),
            "gate",
            Some((&cam_key, &host_public)),
        ),
        frames,
        Duration::from_secs(30),
    );
    assert_eq!(report.encoded, frames);
    assert_eq!(report.session.welcomes, 1, "{:?}", report.session);
    assert_eq!(report.session.spool_pending, 0, "every latent acknowledged");
    let served = results(&jsonl);
    assert_eq!(
        seqs_of(&served, "gate"),
        (0..frames).collect::<Vec<_>>(),
        "every latent exactly once"
    );
    let captured = relay.captured();
    drop(relay);
    let (seen, errors) = kinds(&captured);
    assert_eq!(errors, 0);
    assert!(
        seen.iter().all(|k| matches!(
            k,
            MessageKind::Hello | MessageKind::Handshake | MessageKind::Sealed
        )),
        "only Hello, Handshake and Sealed travel: {seen:?}"
    );
    assert_eq!(seen[..2], [MessageKind::Hello, MessageKind::Handshake]);
    assert!(
        seen.iter().filter(|k| **k == MessageKind::Sealed).count() as u64 >= frames,
        "the latents travel sealed: {seen:?}"
    );

    // (f): the recorded session, replayed on a new connection, is closed
    // and adds nothing.
    let mut replay = TcpStream::connect(&host.address).unwrap();
    replay
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = replay.write_all(&captured);
    let mut answer = Vec::new();
    match replay.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) => assert_eq!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset,
            "the host closes the replay: {e}"
        ),
    }
    let (answered, _) = kinds(&answer);
    assert!(
        !answered.contains(&MessageKind::Ack),
        "nothing readable is acknowledged: {answered:?}"
    );

    // (b): an edge without keys is refused.
    let plain = run_edge(
        &edge(&host.address, Path::new(""), "porch", None),
        3,
        Duration::from_secs(1),
    );
    assert_eq!(plain.session.welcomes, 0);
    let why = plain.session.last_refusal.clone().unwrap_or_default();
    assert!(why.contains("requires authenticated devices"), "{why:?}");

    // (c): a registered key claiming another device's id is refused.
    let forged = run_edge(
        &edge(
            &host.address,
            Path::new(""),
            "gate",
            Some((&forger_key, &host_public)),
        ),
        3,
        Duration::from_secs(1),
    );
    assert_eq!(forged.session.welcomes, 0);
    let why = forged.session.last_refusal.clone().unwrap_or_default();
    assert!(why.contains("not registered"), "{why:?}");

    // (d): after `keys revoke`, the device's next connection is refused.
    let said = host_ok(&["keys", "revoke", "gate", "--dir", keys_arg]);
    assert!(said.contains("revoked"), "{said}");
    let unknown = host_cli(&["keys", "revoke", "gate", "--dir", keys_arg]);
    assert!(
        !unknown.status.success(),
        "revoking an unlisted device fails"
    );
    let revoked = run_edge(
        &edge(
            &host.address,
            &dir.join("spool-2"),
            "gate",
            Some((&cam_key, &host_public)),
        ),
        3,
        Duration::from_secs(1),
    );
    assert_eq!(revoked.session.welcomes, 0);
    let why = revoked.session.last_refusal.clone().unwrap_or_default();
    assert!(why.contains("not registered"), "{why:?}");

    // Each refusal is counted for the operator.
    let metrics = host.api().get("/metrics").text();
    let failures: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("latentcam_auth_failures_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no auth failure counter in {metrics}"));
    assert!(failures >= 3, "(b), (c) and (d) counted: {failures}");

    // Give the host a moment to write anything it (wrongly) accepted.
    thread::sleep(Duration::from_millis(300));
    host.stop();
    let lines = results(&jsonl);
    assert_eq!(
        lines.len(),
        served.len(),
        "no result beyond the honest edge's"
    );
    assert_eq!(count(&lines, "gate"), frames as usize);
    assert_eq!(count(&lines, "porch"), 0);
}

#[test]
fn a_serial_device_authenticates_like_a_tcp_one() {
    let (dir, keys, jsonl, host_public) = provisioned("auth-serial");
    let keys_arg = keys.to_str().unwrap();
    let (key, public) = device_key(&dir, "till");
    register(&keys, "till", &public);
    let line = PtyPair::new();
    let host = Host::start_with(
        &jsonl,
        "127.0.0.1:0",
        &[
            "--keys",
            keys_arg,
            "--no-imagenet",
            "--anomaly",
            "--serial",
            &line.paths[1],
            "--baud",
            "921600",
        ],
    );
    let mut config = edge("", &dir.join("spool"), "till", Some((&key, &host_public)));
    config.link.kind = LinkKind::Serial;
    config.link.path = PathBuf::from(&line.paths[0]);
    config.link.baud = 921_600;
    let report = run_edge(&config, 6, Duration::from_secs(30));
    assert_eq!(report.session.welcomes, 1, "{:?}", report.session);
    assert_eq!(
        report.session.spool_pending, 0,
        "every latent acknowledged over the line (sealed acks)"
    );
    host.stop();
    assert_eq!(
        seqs_of(&results(&jsonl), "till"),
        (0..6).collect::<Vec<_>>()
    );
}

/// A host that skips authentication: it answers the first `Hello` with a
/// plain `Welcome { Accepted }`, then records what the edge sends until
/// `until`.
fn rogue_host(listener: TcpListener, until: Instant) -> Vec<u8> {
    listener.set_nonblocking(true).unwrap();
    let mut stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(_) if Instant::now() < until => thread::sleep(Duration::from_millis(10)),
            Err(_) => return Vec::new(),
        }
    };
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut received = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut welcomed = false;
    while Instant::now() < until {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if !welcomed && kinds(&received).0.contains(&MessageKind::Hello) {
            welcomed = true;
            let welcome = Message::Welcome(Welcome {
                protocol: PROTOCOL_VERSION.into(),
                status: WelcomeStatus::Accepted,
                reason: "welcome",
                host_id: "rogue",
                acked: None,
                auth: AuthChallenge {
                    scheme: AuthScheme::None,
                    host_nonce: [0; NONCE_LEN],
                    host_proof: &[],
                },
            });
            stream
                .write_all(&frame::encode_to_vec(&welcome).unwrap())
                .unwrap();
        }
    }
    received
}

#[test]
fn an_authenticating_edge_sends_nothing_to_a_host_that_skips_the_handshake() {
    let dir = scratch("auth-rogue");
    let (key, _) = device_key(&dir, "cam");
    let expected_host = *latentcam_secure::StaticKey::generate().public();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let until = Instant::now() + Duration::from_secs(20);
    let rogue = thread::spawn(move || rogue_host(listener, until));
    let report = run_edge(
        &edge(
            &address,
            Path::new(""),
            "gate",
            Some((&key, &expected_host)),
        ),
        5,
        Duration::from_secs(2),
    );
    assert_eq!(report.session.welcomes, 0, "{:?}", report.session);
    assert!(report.session.refusals >= 1, "{:?}", report.session);
    let received = rogue.join().unwrap();
    let (seen, _) = kinds(&received);
    assert!(seen.contains(&MessageKind::Hello), "{seen:?}");
    assert!(
        !seen.contains(&MessageKind::Latent) && !seen.contains(&MessageKind::Sealed),
        "no latent, plain or sealed, reaches a host that did not prove its key: {seen:?}"
    );
}

#[test]
fn serve_refuses_to_expose_unauthenticated_devices() {
    let dir = scratch("auth-policy");
    let keys = dir.join("keys");
    let keys_arg = keys.to_str().unwrap();
    // Beyond loopback without keys: refused, naming both ways out.
    let out = host_cli(&["serve", "--tcp", "0.0.0.0:0"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for fix in ["keys init", "--keys", "--allow-unauthenticated"] {
        assert!(stderr.contains(fix), "names {fix}: {stderr}");
    }
    // MQTT without a broker that authenticates devices, on a host that
    // requires authentication.
    host_ok(&["keys", "init", "--dir", keys_arg]);
    let out = host_cli(&[
        "serve",
        "--tcp",
        "127.0.0.1:0",
        "--keys",
        keys_arg,
        "--mqtt",
        "127.0.0.1:1",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--mqtt-cert"), "{stderr}");
    // A missing key directory says how to create it.
    let out = host_cli(&[
        "serve",
        "--tcp",
        "127.0.0.1:0",
        "--keys",
        "/nonexistent/keys",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("keys init --dir /nonexistent/keys"),
        "{stderr}"
    );
}

/// UDP devices authenticate with the one-way Noise K handshake: the
/// provisioned edge is served with nothing readable on the wire; a plain
/// sender, a forger with another registered key and a replay of the
/// recorded datagrams (a stale handshake) add no result and are counted.
#[test]
fn udp_devices_authenticate_and_forged_or_replayed_datagrams_add_nothing() {
    let (dir, keys, jsonl, host_public) = provisioned("auth-udp");
    let keys_arg = keys.to_str().unwrap();
    let (cam_key, cam_public) = device_key(&dir, "cam");
    let (forger_key, forger_public) = device_key(&dir, "forger");
    for (id, key) in [("yard", cam_public), ("shed", forger_public)] {
        register(&keys, id, &key);
    }
    let host = Host::start_with(
        &jsonl,
        "127.0.0.1:0",
        &[
            "--keys",
            keys_arg,
            "--udp",
            "127.0.0.1:0",
            "--no-imagenet",
            "--anomaly",
            "--http",
            "127.0.0.1:0",
        ],
    );
    let udp = host.udp.clone().expect("UDP address");
    let udp_edge = |id: &str, address: &str, keys: Option<(&Path, &PublicKey)>| {
        let mut config = edge(address, Path::new(""), id, keys);
        config.link.kind = LinkKind::Udp;
        config
    };

    let relay = Relay::datagrams(&udp);
    let frames = 10;
    let report = run_edge(
        &udp_edge("yard", &relay.address, Some((&cam_key, &host_public))),
        frames,
        Duration::from_secs(1),
    );
    assert_eq!(report.session.sent, frames, "{:?}", report.session);
    wait_for_lines(&jsonl, frames as usize);
    let captured = relay.captured();
    drop(relay);
    let seen: Vec<MessageKind> = captured.iter().map(|d| kinds(d).0[0]).collect();
    assert_eq!(seen[..2], [MessageKind::Hello, MessageKind::Handshake]);
    assert!(
        seen[2..].iter().all(|k| *k == MessageKind::Sealed),
        "only the Hello and its Handshake travel plain: {seen:?}"
    );
    let before = auth_failures(&host);

    // The recorded datagrams again, from another address: the handshake
    // is stale, so nothing is admitted.
    let replayer = UdpSocket::bind("127.0.0.1:0").unwrap();
    for datagram in &captured {
        replayer.send_to(datagram, &udp).unwrap();
    }
    // A plain device under the same id, and a registered forger claiming it.
    let plain = run_edge(&udp_edge("yard", &udp, None), 3, Duration::from_secs(1));
    assert_eq!(plain.session.sent, 3);
    let forged = run_edge(
        &udp_edge("yard", &udp, Some((&forger_key, &host_public))),
        3,
        Duration::from_secs(1),
    );
    assert_eq!(forged.session.sent, 3);

    // The three were refused and counted (UDP senders are never told).
    let deadline = Instant::now() + Duration::from_secs(10);
    while auth_failures(&host) < before + 3 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        auth_failures(&host) >= before + 3,
        "the replay, the plain sender and the forger are counted"
    );
    thread::sleep(Duration::from_millis(300));
    host.stop();
    let lines = results(&jsonl);
    assert_eq!(
        seqs_of(&lines, "yard"),
        (0..frames).collect::<Vec<_>>(),
        "the honest edge's latents exactly once, nothing else"
    );
    assert_eq!(lines.len(), frames as usize);
}

/// 1 024 anonymous UDP senders, each announcing itself as a device that
/// will authenticate (a `Hello` offering NoiseK) and then again and again,
/// on a host with four UDP slots, while a provisioned camera streams: the
/// camera is served, each latent once, and the flood takes no slot (before,
/// such a flood locked every honest UDP device out). The first round also
/// sends a bogus handshake per sender, so the host's failure count shows
/// the flood arrived.
#[test]
fn an_anonymous_udp_flood_takes_no_slot_from_an_authenticated_camera() {
    use latentcam_wire::{AuthOffer, Handshake};

    let (dir, keys, jsonl, host_public) = provisioned("udp-flood");
    let keys_arg = keys.to_str().unwrap();
    let (cam_key, cam_public) = device_key(&dir, "cam");
    register(&keys, "yard", &cam_public);
    let host = Host::start_with(
        &jsonl,
        "127.0.0.1:0",
        &[
            "--keys",
            keys_arg,
            "--udp",
            "127.0.0.1:0",
            "--max-connections",
            "4",
            "--no-imagenet",
            "--anomaly",
            "--http",
            "127.0.0.1:0",
        ],
    );
    let udp = host.udp.clone().expect("UDP address");
    let before = auth_failures(&host);

    let senders = 1024;
    let hellos: Vec<Vec<u8>> = (0..senders)
        .map(|i| {
            let id = format!("anon-{i:04}");
            let hello = latentcam_testkit::hello::hello(
                &id,
                "efficientnet-lite0-imagenet-v1",
                latentcam_testkit::hello::encoder_sha(),
                PROTOCOL_VERSION.into(),
            );
            frame::encode_to_vec(&Message::Hello(latentcam_wire::Hello {
                auth: AuthOffer {
                    scheme: AuthScheme::NoiseK,
                    ..hello.auth
                },
                ..hello
            }))
            .unwrap()
        })
        .collect();
    let bogus = frame::encode_to_vec(&Message::Handshake(Handshake { payload: &[7; 48] })).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let (stop, udp) = (Arc::clone(&stop), udp.clone());
        thread::spawn(move || {
            // A new source port per sender and round; at most 20 rounds.
            for round in 0..20 {
                if round >= 3 && stop.load(Ordering::Relaxed) {
                    return round;
                }
                for hello in &hellos {
                    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                    socket.send_to(hello, &udp).unwrap();
                    if round == 0 {
                        socket.send_to(&bogus, &udp).unwrap();
                    }
                    // Paced so the host's receive buffer never overflows:
                    // every datagram must arrive for the count below.
                    thread::sleep(Duration::from_micros(300));
                }
            }
            20
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while auth_failures(&host) < before + senders && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        auth_failures(&host),
        before + senders,
        "each bogus handshake refused and counted"
    );

    let mut config = edge(&udp, Path::new(""), "yard", Some((&cam_key, &host_public)));
    config.link.kind = LinkKind::Udp;
    let frames = 20;
    let report = run_edge(&config, frames, Duration::from_secs(1));
    assert_eq!(report.session.sent, frames, "{:?}", report.session);
    stop.store(true, Ordering::Relaxed);
    let rounds = flood.join().unwrap();
    assert!(rounds >= 3, "the flood ran through the camera's stream");
    wait_for_lines(&jsonl, frames as usize);
    thread::sleep(Duration::from_millis(300));
    host.stop();
    let lines = results(&jsonl);
    assert_eq!(seqs_of(&lines, "yard"), (0..frames).collect::<Vec<_>>());
    assert_eq!(lines.len(), frames as usize, "nothing from the flood");
}

/// Runs `openssl ARGS` in `dir`; it must succeed.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private CA and a certificate it signed for 127.0.0.1, made by the
/// openssl CLI: (CA, certificate, key), readable by mosquitto's user.
fn broker_certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=latentcam test CA",
            ],
        ]
        .concat(),
    );
    openssl(
        dir,
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "broker.key",
                "-out",
                "broker.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "broker.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "broker.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
    for file in ["broker.pem", "broker.key", "ca.pem"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join(file), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    (
        dir.join("ca.pem"),
        dir.join("broker.pem"),
        dir.join("broker.key"),
    )
}

/// `mqtts://`: the host worker and the edge reach a TLS-only broker
/// (mosquitto with a certificate from a private CA), each trusting that CA
/// only; latents flow and are acknowledged. An edge that does not trust the
/// CA, or speaks plain MQTT to the TLS port, delivers nothing.
#[test]
fn devices_and_host_workers_reach_a_tls_broker() {
    use latentcam_testkit::Broker;

    let dir = scratch("mqtts");
    let (ca, cert, key) = broker_certificate(&dir.join("tls"));
    let broker = Broker::start_tls(&dir.join("broker"), &cert, &key);
    let url = format!("mqtts://127.0.0.1:{}", broker.port);
    let jsonl = dir.join("results.jsonl");
    let host = Host::start_with(
        &jsonl,
        "127.0.0.1:0",
        &[
            "--mqtt",
            &url,
            "--mqtt-ca",
            ca.to_str().unwrap(),
            "--group",
            "tls",
            "--worker",
            "w1",
            "--no-imagenet",
            "--anomaly",
        ],
    );
    let mqtt_edge = |id: &str, address: &str, ca: Option<&Path>| {
        let mut config = edge(address, &dir.join(format!("spool-{id}")), id, None);
        config.link.kind = LinkKind::Mqtt;
        config.mqtt.site = "shop".into();
        config.mqtt.ca_file = ca.map(Path::to_path_buf).unwrap_or_default();
        config
    };
    let frames = 6;
    let report = run_edge(
        &mqtt_edge("porch", &url, Some(&ca)),
        frames,
        Duration::from_secs(30),
    );
    assert_eq!(report.encoded, frames);
    assert_eq!(report.session.spool_pending, 0, "{:?}", report.session);
    wait_for_lines(&jsonl, frames as usize);

    // Trusting another CA: the broker's certificate is refused.
    let other = dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    openssl(
        &other,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=another CA",
        ],
    );
    let untrusting = run_edge(
        &mqtt_edge("attic", &url, Some(&other.join("ca.pem"))),
        2,
        Duration::from_secs(2),
    );
    assert_eq!(untrusting.session.welcomes, 0, "{:?}", untrusting.session);
    // Plain MQTT to the TLS listener.
    let plain = format!("mqtt://127.0.0.1:{}", broker.port);
    let cleartext = run_edge(
        &mqtt_edge("cellar", &plain, None),
        2,
        Duration::from_secs(2),
    );
    assert_eq!(cleartext.session.welcomes, 0, "{:?}", cleartext.session);

    thread::sleep(Duration::from_millis(300));
    host.stop();
    let lines = results(&jsonl);
    assert_eq!(seqs_of(&lines, "porch"), (0..frames).collect::<Vec<_>>());
    assert_eq!(lines.len(), frames as usize);
}

/// `scripts/mqtt-certs.sh DIR ARGS`, which must succeed.
fn mqtt_certs(dir: &Path, args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/mqtt-certs.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(dir)
        .args(args)
        .output()
        .expect("run scripts/mqtt-certs.sh");
    assert!(
        out.status.success(),
        "mqtt-certs.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `mosquitto_pub` with `device`'s certificate publishing the frame
/// `payload` on `topic` (QoS 1, MQTT 5, retained if asked); returns what it
/// printed (a broker refusing the publish says "Not authorized").
fn forge(
    broker: u16,
    certs: &Path,
    device: &str,
    topic: &str,
    payload: &[u8],
    retain: bool,
) -> String {
    let file = certs.join("forged.bin");
    std::fs::write(&file, payload).unwrap();
    let mut command = Command::new("mosquitto_pub");
    command
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.to_string(),
            "-V",
            "5",
            "-q",
            "1",
        ])
        .arg("--cafile")
        .arg(certs.join("ca.pem"))
        .arg("--cert")
        .arg(certs.join(format!("device-{device}.pem")))
        .arg("--key")
        .arg(certs.join(format!("device-{device}.key")))
        .args(["-t", topic, "-f"])
        .arg(&file);
    if retain {
        command.arg("-r");
    }
    let out = command
        .output()
        .expect("run mosquitto_pub (scripts/setup.sh installs mosquitto-clients)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// MQTT devices prove their id to the broker (README, security): mosquitto
/// with the shipped `scripts/mosquitto-mtls.conf` and ACL, certificates
/// from `scripts/mqtt-certs.sh`, a host that requires authentication
/// (`--keys`) serving MQTT with its worker certificate. A device streams
/// under its own id. Another device's valid certificate cannot publish
/// under that id, forge the acknowledgement its edge and the next worker
/// believe, or impersonate it through its own edge; a client without a
/// certificate does not get in. Latents spooled while the host was down and
/// "acknowledged" by the forger are all processed, exactly once.
#[test]
fn mqtt_devices_prove_their_id_to_the_broker_and_cannot_speak_for_another() {
    use latentcam_testkit::Broker;
    use latentcam_wire::Ack;
    use latentcam_wire::mqtt::{DeviceTopics, partition};

    let (dir, keys, jsonl, _) = provisioned("mtls");
    let certs = dir.join("certs");
    mqtt_certs(&certs, &["ca"]);
    mqtt_certs(&certs, &["broker", "127.0.0.1"]);
    mqtt_certs(&certs, &["worker", "w1"]);
    mqtt_certs(&certs, &["device", "porch"]);
    mqtt_certs(&certs, &["device", "attic"]);
    {
        // mosquitto drops to its own user after reading its configuration.
        use std::os::unix::fs::PermissionsExt;
        for (path, mode) in [(&certs, 0o755), (&certs.join("broker.key"), 0o644)] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }
    let ca = certs.join("ca.pem");
    let broker = Broker::start_mutual_tls(
        &dir.join("broker"),
        &ca,
        &certs.join("broker.pem"),
        &certs.join("broker.key"),
        &["w1"],
    );
    let url = format!("mqtts://127.0.0.1:{}", broker.port);
    let worker = |n: &str| certs.join(format!("worker-w1.{n}"));
    let serve_args = [
        "--keys",
        keys.to_str().unwrap(),
        "--mqtt",
        &url,
        "--mqtt-ca",
        ca.to_str().unwrap(),
        "--mqtt-cert",
        worker("pem").to_str().unwrap(),
        "--mqtt-key",
        worker("key").to_str().unwrap(),
        "--group",
        "g",
        "--worker",
        "w1",
        "--no-imagenet",
        "--anomaly",
    ]
    .map(str::to_owned);
    let serve_args: Vec<&str> = serve_args.iter().map(String::as_str).collect();
    let mqtt_edge = |id: &str, cert: Option<&str>, spool: &str| {
        let mut config = edge(&url, &dir.join(spool), id, None);
        config.link.kind = LinkKind::Mqtt;
        config.mqtt.site = "shop".into();
        config.mqtt.ca_file = ca.clone();
        config.mqtt.ack_timeout_seconds = 1.0;
        if let Some(cert) = cert {
            config.mqtt.cert_file = certs.join(format!("device-{cert}.pem"));
            config.mqtt.key_file = certs.join(format!("device-{cert}.key"));
        }
        config
    };
    let porch = mqtt_edge("porch", Some("porch"), "spool-porch");

    // The device streams under its own id to a host that requires
    // authentication.
    let host = Host::start_with(&jsonl, "127.0.0.1:0", &serve_args);
    let report = run_edge(&porch, 6, Duration::from_secs(30));
    assert_eq!(report.session.spool_pending, 0, "{:?}", report.session);
    wait_for_lines(&jsonl, 6);
    host.stop();

    // With the host down, six more latents wait in the edge's spool.
    let report = run_edge(&porch, 6, Duration::from_secs(2));
    assert_eq!(report.session.spool_pending, 6, "{:?}", report.session);

    // attic's valid certificate, speaking for porch: an acknowledgement of
    // everything spooled (retained, so the next worker reads it too), a
    // latent and a Hello. The broker refuses each.
    let topics = DeviceTopics::new("shop", "porch").unwrap();
    assert_eq!(topics.partition, partition("porch"));
    let ack = frame::encode_to_vec(&Message::Ack(Ack { up_to: 11 })).unwrap();
    let latent = crate::hostile::latent(12);
    for (topic, bytes, retain) in [
        (&topics.ack, &ack, true),
        (&topics.latent, &latent, false),
        (&topics.hello, &ack, true),
    ] {
        let said = forge(broker.port, &certs, "attic", topic, bytes, retain);
        assert!(said.contains("Not authorized"), "{topic}: {said}");
    }

    // attic's certificate in an edge configured as porch, and an edge with
    // no certificate: neither is welcomed.
    let host = Host::start_with(&jsonl, "127.0.0.1:0", &serve_args);
    for (config, what) in [
        (mqtt_edge("porch", Some("attic"), "spool-x"), "another id"),
        (mqtt_edge("cellar", None, "spool-y"), "no certificate"),
    ] {
        let report = run_edge(&config, 2, Duration::from_secs(2));
        assert_eq!(report.session.welcomes, 0, "{what}: {:?}", report.session);
        assert_eq!(
            report.session.spool_pending, 2,
            "{what}: {:?}",
            report.session
        );
    }

    // The real porch delivers its spool and two more: everything, once.
    let report = run_edge(&porch, 2, Duration::from_secs(30));
    assert_eq!(report.session.spool_pending, 0, "{:?}", report.session);
    wait_for_lines(&jsonl, 14);
    thread::sleep(Duration::from_millis(300));
    host.stop();
    let lines = results(&jsonl);
    assert_eq!(seqs_of(&lines, "porch"), (0..14).collect::<Vec<_>>());
    assert_eq!(lines.len(), 14, "only porch's own latents");
}
