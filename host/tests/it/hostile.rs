//! Hostile peers against the real host binary and the real edge pipeline,
//! on 127.0.0.1: forged sequence numbers and acknowledgements, floods of
//! idle connections and of made-up device ids, forged log lines. Each
//! attack is asserted to change nothing for an honest camera.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::{Duration, Instant};

use latentcam_firmware::assemble;
use latentcam_firmware::pipeline::{self, Report};
use latentcam_wire::frame::{self, MAX_FRAME_LEN};
use latentcam_wire::{
    Ack, AuthChallenge, AuthScheme, ByeReason, FrameDecoder, MAX_SEQ, Message, NONCE_LEN,
    PROTOCOL_VERSION, Welcome, WelcomeStatus,
};

use crate::serve::{Host, edge_config, results, run_edge, scratch, seqs_of, wait_for_lines};
use latentcam_testkit::VTEST;
use latentcam_testkit::hello::{encoder_sha, hello_frame};

/// A `Hello` a real device of the shipped model would send, under `id`.
fn hello_as(id: &str, sha: &[u8; 32]) -> Vec<u8> {
    hello_frame(
        id,
        "efficientnet-lite0-imagenet-v1",
        *sha,
        PROTOCOL_VERSION.into(),
    )
}

/// A well-formed U8Affine latent numbered `seq`.
pub(crate) fn latent(seq: u64) -> Vec<u8> {
    latentcam_testkit::hello::latent_frame(seq, 0, &[0.5f32; 1280])
}

/// What a peer sent, as far as these tests care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Welcome(WelcomeStatus),
    Bye(ByeReason),
    Ack(u64),
    Other,
}

/// Every message the peer sent until it closed (or `limit` passed).
fn read_all(stream: &mut TcpStream, limit: Duration) -> Vec<Seen> {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut received = Vec::new();
    let _ = stream.read_to_end(&mut received);
    let mut out = Vec::new();
    let mut decoder: Box<FrameDecoder<MAX_FRAME_LEN>> = Box::default();
    decoder.feed_all(&received, |m| {
        out.push(match m {
            Ok(Message::Welcome(w)) => Seen::Welcome(w.status),
            Ok(Message::Bye(b)) => Seen::Bye(b.reason),
            Ok(Message::Ack(a)) => Seen::Ack(a.up_to),
            _ => Seen::Other,
        })
    });
    out
}

fn welcome_status(seen: &[Seen]) -> Option<WelcomeStatus> {
    seen.iter().find_map(|m| match m {
        Seen::Welcome(status) => Some(*status),
        _ => None,
    })
}

fn bye_reason(seen: &[Seen]) -> Option<ByeReason> {
    seen.iter().find_map(|m| match m {
        Seen::Bye(reason) => Some(*reason),
        _ => None,
    })
}

/// Resident set high-water mark of a process, KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// A TCP connection to `to` from the loopback address `from` (127.0.0.x),
/// so a flood can come from another address than the honest camera's.
fn connect_from(from: [u8; 4], to: &str) -> TcpStream {
    let to: SocketAddr = to.parse().unwrap();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    socket.connect(&to.into()).unwrap();
    socket.into()
}

#[test]
fn forged_sequence_numbers_change_nothing_for_the_real_camera() {
    let dir = scratch("forged-seq");
    let jsonl = dir.join("results.jsonl");
    let host = Host::start(&jsonl);
    let mut config = edge_config(Path::new(VTEST), &host.address, &dir.join("spool"), "gate");
    config.source.fps = 20.0;
    let edge = run_edge(config, 60);
    wait_for_lines(&jsonl, 5);

    // A second connection under the camera's id, with latents numbered
    // where no camera can be: each is refused and closes the forger's
    // connection, never reaching the heads or the acks.
    let sha = encoder_sha();
    for forged in [u64::MAX, MAX_SEQ + 1, MAX_SEQ, 5_000_000] {
        let mut stream = TcpStream::connect(&host.address).unwrap();
        stream.write_all(&hello_as("gate", &sha)).unwrap();
        stream.write_all(&latent(forged)).unwrap();
        let answer = read_all(&mut stream, Duration::from_secs(20));
        assert_eq!(welcome_status(&answer), Some(WelcomeStatus::Accepted));
        assert_eq!(
            bye_reason(&answer),
            Some(ByeReason::ProtocolViolation),
            "seq {forged}"
        );
        assert!(
            // (Acks of the real camera's progress may reach the forger's
            // connection under its id: without authentication the host
            // cannot tell the two apart.)
            !answer
                .iter()
                .any(|m| matches!(m, Seen::Ack(up_to) if *up_to >= forged)),
            "a refused latent is never acknowledged (seq {forged})"
        );
    }

    let report = edge.join().unwrap();
    assert_eq!(report.session.bogus_acks, 0);
    assert_eq!(report.session.spool_pending, 0);
    assert_eq!(report.session.connects, 1);
    let lines = results(&jsonl);
    assert_eq!(
        seqs_of(&lines, "gate"),
        (0..report.encoded).collect::<Vec<_>>(),
        "every real latent exactly once, no forged one"
    );
    host.stop();

    // The host resumes from its results: still nothing forged in them.
    let host = Host::start(&jsonl);
    let mut config = edge_config(Path::new(VTEST), &host.address, &dir.join("spool"), "gate");
    config.source.fps = 20.0;
    let second = run_edge(config, 20).join().unwrap();
    host.stop();
    let lines = results(&jsonl);
    assert_eq!(
        seqs_of(&lines, "gate"),
        (0..report.encoded + second.encoded).collect::<Vec<_>>()
    );
}

/// A fake host that accepts one edge connection, answers its `Hello` with
/// `Welcome { acked }` and then sends `acks`, then keeps the connection
/// open without acknowledging anything until `hold` passes.
fn lying_host(listener: TcpListener, acked: Option<u64>, acks: Vec<u64>, hold: Duration) {
    let (mut stream, _) = listener.accept().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut decoder: Box<FrameDecoder<MAX_FRAME_LEN>> = Box::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut greeted = false;
    let until = Instant::now() + hold;
    while Instant::now() < until {
        let n = match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(_) => 0,
        };
        let mut hello = false;
        decoder.feed_all(&buf[..n], |m| hello |= matches!(m, Ok(Message::Hello(_))));
        if hello && !greeted {
            greeted = true;
            let welcome = Message::Welcome(Welcome {
                protocol: PROTOCOL_VERSION.into(),
                status: WelcomeStatus::Accepted,
                reason: "welcome",
                host_id: "liar",
                acked,
                auth: AuthChallenge {
                    scheme: AuthScheme::None,
                    host_nonce: [0; NONCE_LEN],
                    host_proof: &[],
                },
            });
            stream
                .write_all(&frame::encode_to_vec(&welcome).unwrap())
                .unwrap();
            for &up_to in &acks {
                let ack = Message::Ack(Ack { up_to });
                stream
                    .write_all(&frame::encode_to_vec(&ack).unwrap())
                    .unwrap();
            }
        }
    }
}

/// Runs the edge against `address` for `frames` frames, waiting at most
/// `drain` for acknowledgements at the end.
fn run_edge_briefly(address: &str, spool: &Path, frames: u64, drain: Duration) -> Report {
    let mut config = edge_config(Path::new(VTEST), address, spool, "gate");
    config.source.fps = 20.0;
    let stop = Arc::new(AtomicBool::new(false));
    let (parts, mut settings) = assemble::open_all(&config, Arc::clone(&stop)).unwrap();
    settings.max_frames = Some(frames);
    settings.drain_timeout = drain;
    pipeline::run(parts, settings, stop, None).unwrap()
}

#[test]
fn acknowledgements_of_latents_never_sent_are_ignored_by_the_edge() {
    let dir = scratch("lying-host");
    let spool = dir.join("spool");
    let mut encoded = 0;
    for (acked, acks) in [
        (Some(u64::MAX), vec![u64::MAX, MAX_SEQ, 1_000]),
        (Some(MAX_SEQ), vec![u64::MAX - 1, 1_000]),
    ] {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let liar =
            thread::spawn(move || lying_host(listener, acked, acks, Duration::from_secs(30)));
        let report = run_edge_briefly(&address, &spool, 10, Duration::from_secs(2));
        drop(liar);
        assert!(
            report.session.bogus_acks >= 2,
            "acks above what was sent are counted: {:?}",
            report.session
        );
        assert_eq!(report.session.acked, None, "no ack was believed");
        encoded += report.encoded;
        assert_eq!(
            report.session.spool_pending, encoded,
            "the spool kept everything"
        );
        assert_eq!(report.session.next_seq, encoded, "no renumbering");
    }
    // Nothing was released, nothing renumbered: a real host gets them all.
    let jsonl = dir.join("results.jsonl");
    let host = Host::start(&jsonl);
    let report = run_edge_briefly(&host.address, &spool, 5, Duration::from_secs(30));
    host.stop();
    encoded += report.encoded;
    assert_eq!(report.session.spool_pending, 0);
    assert_eq!(report.session.next_seq, encoded);
    assert_eq!(
        seqs_of(&results(&jsonl), "gate"),
        (0..encoded).collect::<Vec<_>>()
    );
}

#[test]
fn floods_of_idle_connections_and_new_ids_leave_the_camera_served() {
    let dir = scratch("flood");
    let jsonl = dir.join("results.jsonl");
    let host = Host::start_with(
        &jsonl,
        "127.0.0.1:0",
        &["--idle-timeout", "3", "--max-devices", "2000"],
    );
    let sha = encoder_sha();
    let baseline = vm_hwm_kib(host.pid());

    // 200 sockets from another loopback address say Hello and go quiet:
    // 64 (the per-address limit) are held until the idle timeout, the rest
    // are answered Busy at once.
    let mut idle: Vec<TcpStream> = (0..200)
        .map(|i| {
            let mut s = connect_from([127, 0, 0, 2], &host.address);
            // A refused socket may already be closed by the host.
            let _ = s.write_all(&hello_as(&format!("idle-{i}"), &sha));
            s
        })
        .collect();

    // The honest camera connects from 127.0.0.1 during the flood.
    let mut config = edge_config(Path::new(VTEST), &host.address, &dir.join("spool"), "gate");
    config.source.fps = 20.0;
    // Well inside the host's 3 s idle timeout.
    config.device.heartbeat_seconds = 0.5;
    let edge = run_edge(config, 40);

    // Refusals are written a bounded number at a time; a connection
    // arriving while that many are in flight (a loaded machine) is closed
    // unanswered rather than costing the host more.
    let (mut busy, mut unanswered, mut timed_out) = (0, 0, 0);
    for s in idle.iter_mut() {
        let answer = read_all(s, Duration::from_secs(20));
        match (welcome_status(&answer), bye_reason(&answer)) {
            (Some(WelcomeStatus::Busy), _) => busy += 1,
            (None, None) => unanswered += 1,
            (Some(WelcomeStatus::Accepted), Some(ByeReason::Timeout)) => timed_out += 1,
            other => panic!("unexpected answer to an idle socket: {other:?}"),
        }
    }
    assert_eq!(timed_out, 64, "the per-address limit held exactly");
    assert_eq!(busy + unanswered, 200 - 64);
    assert!(busy >= 64, "refused connections are told Busy ({busy})");

    // 5 000 made-up ids (a few connections from the flood address, each
    // saying Hello until the host answers Busy): the registry stops at
    // --max-devices and the host's memory stays bounded.
    let mut said = 0;
    let mut refused = 0;
    while said < 5_000 {
        let mut s = connect_from([127, 0, 0, 3], &host.address);
        let mut batch = Vec::new();
        for _ in 0..500 {
            batch.extend(hello_as(&format!("made-up-{said}"), &sha));
            said += 1;
        }
        let _ = s.write_all(&batch);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let answer = read_all(&mut s, Duration::from_secs(20));
        if answer.contains(&Seen::Welcome(WelcomeStatus::Busy)) {
            refused += 1;
        }
    }
    assert!(refused > 0, "ids beyond --max-devices are refused");
    let grown_mib = vm_hwm_kib(host.pid()).saturating_sub(baseline) / 1024;
    assert!(
        grown_mib < 64,
        "the id flood grew the host by {grown_mib} MiB"
    );

    // The camera is still served, every latent exactly once.
    let report = edge.join().unwrap();
    assert_eq!(report.session.refusals, 0, "{:?}", report.session);
    assert_eq!(
        seqs_of(&results(&jsonl), "gate"),
        (0..report.encoded).collect::<Vec<_>>()
    );
    host.stop();
}

#[test]
fn forged_log_lines_and_empty_ids_are_refused() {
    let dir = scratch("forged-ids");
    let jsonl = dir.join("results.jsonl");
    let host = Host::start(&jsonl);
    let sha = encoder_sha();
    for id in [
        "",
        "gate\n2026-12-02T00:00:00Z ERROR forged line",
        "\u{1b}[2Jclear",
    ] {
        let mut s = TcpStream::connect(&host.address).unwrap();
        s.write_all(&hello_as(id, &sha)).unwrap();
        let answer = read_all(&mut s, Duration::from_secs(20));
        assert_eq!(
            welcome_status(&answer),
            Some(WelcomeStatus::BadDeviceId),
            "{id:?}"
        );
    }
    // A device asking for authentication is refused, not silently served
    // without it.
    let mut plain = hello_as("gate", &sha);
    let offer = match frame::decode_datagram(&mut plain) {
        Ok(Message::Hello(mut h)) => {
            h.auth.scheme = AuthScheme::PskHmacSha256;
            h.auth.key_id = "gate";
            frame::encode_to_vec(&Message::Hello(h)).unwrap()
        }
        other => panic!("{other:?}"),
    };
    let mut s = TcpStream::connect(&host.address).unwrap();
    s.write_all(&offer).unwrap();
    let answer = read_all(&mut s, Duration::from_secs(20));
    assert_eq!(welcome_status(&answer), Some(WelcomeStatus::AuthFailed));
    host.stop();
    assert!(results(&jsonl).is_empty());
}
