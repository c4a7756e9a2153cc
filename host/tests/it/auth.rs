//! Device authentication end to end (wire/SPEC.md §7): the real host
//! binary with `--keys`, its `keys` subcommands, and the real edge
//! pipeline (in-process, through the library the edge binary runs) with
//! `[link] host_key` and `key_file`, all on 127.0.0.1. A provisioned edge
//! is served, and nothing readable crosses the wire; an edge without keys,
//! a forger, a revoked device and a replay of a recorded session add no
//! result; an edge never streams to a host that skips the handshake.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use latentcam_firmware::assemble;
use latentcam_firmware::config::EdgeConfig;
use latentcam_firmware::link::secure::keygen;
use latentcam_firmware::pipeline::{self, Report};
use latentcam_secure::PublicKey;
use latentcam_wire::frame::{self, MAX_FRAME_LEN};
use latentcam_wire::{
    AuthChallenge, AuthScheme, FrameDecoder, Message, MessageKind, NONCE_LEN, PROTOCOL_VERSION,
    Welcome, WelcomeStatus,
};

use crate::firmware_common as pty;
use crate::serve::{Host, VTEST, edge_config, results, scratch, seqs_of};

/// Runs `latentcam-host ARGS`.
fn host_cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_latentcam-host"))
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

/// A TCP relay on 127.0.0.1 in front of `host` that keeps every byte the
/// edge sends: what a passive observer on the network sees.
struct Relay {
    address: String,
    captured: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Relay {
    fn start(host: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let captured = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (host, capture, stopped) = (host.to_owned(), Arc::clone(&captured), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stopped.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((edge, _)) => {
                        edge.set_nonblocking(false).unwrap();
                        let host = TcpStream::connect(&host).unwrap();
                        let (edge2, host2) = (edge.try_clone().unwrap(), host.try_clone().unwrap());
                        let capture = Arc::clone(&capture);
                        thread::spawn(move || pump(edge, host, Some(capture)));
                        thread::spawn(move || pump(host2, edge2, None));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self {
            address,
            captured,
            stop,
            thread: Some(thread),
        }
    }

    fn captured(&self) -> Vec<u8> {
        self.captured.lock().unwrap().clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
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
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_serial_device_authenticates_like_a_tcp_one() {
    let dir = scratch("auth-serial");
    let keys = dir.join("keys");
    let keys_arg = keys.to_str().unwrap();
    let jsonl = dir.join("results.jsonl");
    let host_public: PublicKey = host_ok(&["keys", "init", "--dir", keys_arg])
        .trim()
        .parse()
        .unwrap();
    let (key, public) = device_key(&dir, "till");
    host_ok(&[
        "keys",
        "add",
        "till",
        &public.to_string(),
        "--dir",
        keys_arg,
    ]);
    let line = pty::PtyPair::new();
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
    config.link.kind = "serial".into();
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
    let _ = std::fs::remove_dir_all(&dir);
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
    let _ = std::fs::remove_dir_all(&dir);
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
    // Transports that cannot authenticate yet, on a host that requires it.
    host_ok(&["keys", "init", "--dir", keys_arg]);
    let out = host_cli(&[
        "serve",
        "--tcp",
        "127.0.0.1:0",
        "--keys",
        keys_arg,
        "--udp",
        "127.0.0.1:0",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot authenticate devices yet"),
        "{stderr}"
    );
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
    let _ = std::fs::remove_dir_all(&dir);
}
