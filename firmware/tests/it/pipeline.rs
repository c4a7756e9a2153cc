//! The whole edge program, as a process: `latentcam-edge` replays real video
//! and photos through tract and sends latents over real links — loopback TCP
//! to a receiver that speaks the host's half of the session (Welcome, Ack),
//! a socat pseudo-terminal pair at 921 600 baud, UDP, and a recording file.
//! Faults: the receiver killed and restarted mid-stream, the host away for a
//! whole run, SIGTERM, a refusing host, missing model / port / camera.
//!
//! No test asserts timing; every wait has a deadline.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use latentcam_firmware::encoder::cosine;
use latentcam_testkit::PtyPair;
use latentcam_testkit::{Reference, ReferencePhoto, repo, vtest};
use latentcam_wire::frame::{self, MAX_FRAME_LEN};
use latentcam_wire::{
    Ack, AuthChallenge, AuthScheme, Codec, FrameDecoder, Message, PROTOCOL_VERSION, Welcome,
    WelcomeStatus,
};
use serde_json::Value;

// ------------------------------------------------------------- the edge

fn scratch(name: &str) -> latentcam_testkit::Scratch {
    latentcam_testkit::scratch("pipeline", name)
}

/// `latentcam-edge` with the repository's models and `args`.
fn edge(args: &[&str]) -> Command {
    let mut cmd = latentcam_testkit::program(env!("CARGO_BIN_EXE_latentcam-edge"));
    cmd.arg("--models")
        .arg(repo().join("models"))
        .args(["--device-id", "pipeline-test-cam"])
        .args(args)
        .env("LATENTCAM_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// `latentcam-edge` with whitespace-separated `args` (no spaces in paths).
fn edge_line(args: &str) -> Command {
    edge(&args.split_whitespace().collect::<Vec<_>>())
}

/// Waits for `child` at most `limit`, killing it (and failing) after that.
fn wait(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "latentcam-edge did not finish within {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn run_ok(cmd: &mut Command, limit: Duration) -> String {
    let out = wait(cmd.spawn().expect("spawn latentcam-edge"), limit);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "latentcam-edge failed:\n{stderr}");
    stderr
}

fn report(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("report written")).unwrap()
}

fn num(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{pointer} missing in {v}"))
}

// ------------------------------------------------------------- the host

/// One latent as the receiver stored it.
#[derive(Debug, Clone)]
struct Received {
    seq: u64,
    codec: Codec,
    payload: Vec<u8>,
}

/// What a receiver keeps; it outlives a receiver "restart", like a host's
/// storage does.
#[derive(Debug, Default)]
struct HostState {
    latents: Vec<Received>,
    duplicates: u64,
    gaps: u64,
    hellos: u64,
    heartbeats: u64,
    byes: u64,
    errors: u64,
    /// Answer Hello with this refusal instead of accepting.
    refuse: Option<WelcomeStatus>,
}

impl HostState {
    fn highest(&self) -> Option<u64> {
        self.latents.last().map(|l| l.seq)
    }

    fn seqs(&self) -> Vec<u64> {
        self.latents.iter().map(|l| l.seq).collect()
    }

    /// Handles one message; returns frames to send back.
    fn on_message(&mut self, message: &Message<'_>, replies: &mut Vec<Vec<u8>>) {
        match message {
            Message::Hello(_) => {
                self.hellos += 1;
                let (status, reason) = match self.refuse {
                    Some(status) => (status, "test host refuses this model"),
                    None => (WelcomeStatus::Accepted, "welcome"),
                };
                replies.push(
                    frame::encode_to_vec(&Message::Welcome(Welcome {
                        protocol: u16::from(PROTOCOL_VERSION),
                        status,
                        reason,
                        host_id: "pipeline-test-host",
                        acked: self.highest(),
                        auth: AuthChallenge {
                            scheme: AuthScheme::None,
                            host_nonce: [0; 16],
                            host_proof: &[],
                        },
                    }))
                    .unwrap(),
                );
            }
            Message::Latent(l) => match self.highest() {
                Some(h) if l.seq <= h => self.duplicates += 1,
                highest => {
                    if l.seq != highest.map_or(0, |h| h + 1) {
                        self.gaps += 1;
                    }
                    self.latents.push(Received {
                        seq: l.seq,
                        codec: l.codec,
                        payload: l.payload.to_vec(),
                    });
                }
            },
            Message::Heartbeat(_) => self.heartbeats += 1,
            Message::Bye(_) => self.byes += 1,
            _ => {}
        }
    }
}

/// Serves one byte stream (TCP connection or serial line) until `stop`, EOF
/// or an error: decodes frames, answers Hello, acks after every read.
fn serve<C: Read + Write>(conn: &mut C, state: &Mutex<HostState>, stop: &AtomicBool) {
    let mut decoder: Box<FrameDecoder<MAX_FRAME_LEN>> = Box::default();
    let mut buf = vec![0u8; 16384];
    while !stop.load(Ordering::Relaxed) {
        let n = match conn.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => return,
        };
        let mut replies = Vec::new();
        let mut got_latent = false;
        {
            let mut state = state.lock().unwrap();
            decoder.feed_all(&buf[..n], |item| match item {
                Ok(message) => {
                    got_latent |= matches!(message, Message::Latent(_));
                    state.on_message(&message, &mut replies);
                }
                Err(_) => state.errors += 1,
            });
            if got_latent && let Some(h) = state.highest() {
                replies.push(frame::encode_to_vec(&Message::Ack(Ack { up_to: h })).unwrap());
            }
        }
        for reply in replies {
            if conn.write_all(&reply).and_then(|()| conn.flush()).is_err() {
                return;
            }
        }
    }
}

/// A TCP receiver on 127.0.0.1 that can be killed and restarted on the
/// same port with the same storage.
struct TcpHost {
    port: u16,
    state: Arc<Mutex<HostState>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpHost {
    fn start(port: u16, state: Arc<Mutex<HostState>>) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind loopback");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (Arc::clone(&state), Arc::clone(&stop));
            thread::spawn(move || {
                let mut connections = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (state, stop) = (Arc::clone(&state), Arc::clone(&stop));
                            connections.push(thread::spawn(move || {
                                let mut stream: TcpStream = stream;
                                stream.set_nonblocking(false).unwrap();
                                stream
                                    .set_read_timeout(Some(Duration::from_millis(20)))
                                    .unwrap();
                                serve(&mut stream, &state, &stop);
                                let _ = stream.shutdown(Shutdown::Both);
                            }));
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(5));
                        }
                        Err(e) => panic!("accept: {e}"),
                    }
                }
                drop(listener);
                for c in connections {
                    let _ = c.join();
                }
            })
        };
        Self {
            port,
            state,
            stop,
            thread: Some(thread),
        }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Closes the listener and every connection, as a crashed host would.
    fn kill(mut self) -> (u16, Arc<Mutex<HostState>>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        (self.port, Arc::clone(&self.state))
    }

    fn latents(&self) -> usize {
        self.state.lock().unwrap().latents.len()
    }
}

impl Drop for TcpHost {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    done()
}

/// The host's storage must hold exactly `0..n`, each once, in order.
fn assert_exactly_once(state: &HostState, n: u64) {
    assert_eq!(state.duplicates, 0, "duplicates reached the host");
    assert_eq!(state.gaps, 0, "sequence gaps at the host");
    assert_eq!(state.errors, 0, "frames failed to decode at the host");
    assert_eq!(state.seqs(), (0..n).collect::<Vec<_>>());
}

// ------------------------------------------------------ reference photos

/// Checks each latent against onnxruntime's latent of the same precision
/// (`fp32` or `int8`, as the edge's report says it ran).
fn check_against_reference(
    received: &[Received],
    reference: &[&ReferencePhoto],
    precision: &str,
    min: f64,
) {
    assert_eq!(received.len(), reference.len());
    let mut worst = f64::INFINITY;
    for (got, photo) in received.iter().zip(reference) {
        let latent = got.codec.decode_to_vec(&got.payload).unwrap();
        let c = cosine(&latent, photo.latent(precision));
        let name = &photo.name;
        eprintln!(
            "{name}: cosine to the Python {precision} reference {c:.6} ({:?})",
            got.codec
        );
        assert!(c >= min, "{name}: cosine {c} < {min}");
        worst = worst.min(c);
    }
    eprintln!("worst cosine {worst:.6}");
}

// ------------------------------------------------------------ the tests

#[test]
fn tcp_photos_arrive_and_match_the_python_reference() {
    let dir = scratch("tcp-photos");
    let photos = dir.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    let fixtures = Reference::load();
    let reference = fixtures.copy_originals(&photos);
    // A damaged file among the photos (sorted last) is skipped and counted.
    std::fs::write(
        photos.join("zz-damaged.jpg"),
        b"\xff\xd8\xff\xe0 not really a JPEG",
    )
    .unwrap();
    let host = TcpHost::start(0, Arc::default());
    let report_path = dir.join("report.json");
    run_ok(
        edge_line(&format!(
            "--source replay --unpaced --codec u8 --link tcp --address {}",
            host.address()
        ))
        .arg("--input")
        .arg(&photos)
        .arg("--spool")
        .arg(dir.join("spool"))
        .arg("--report")
        .arg(&report_path),
        Duration::from_secs(120),
    );
    let r = report(&report_path);
    assert_eq!(num(&r, "/encoded"), reference.len() as u64);
    assert_eq!(num(&r, "/corrupt"), 1, "the damaged file is counted");
    assert_eq!(num(&r, "/session/spool_pending"), 0);
    let (_, state) = host.kill();
    let state = state.lock().unwrap();
    assert_exactly_once(&state, reference.len() as u64);
    assert_eq!(state.hellos, 1);
    assert_eq!(state.byes, 1, "a clean end says Bye");
    // The edge's default backend (`auto`: LiteRT int8 in a build with it,
    // tract fp32 otherwise), against onnxruntime's latent of that
    // precision. fp32: U8 quantisation costs a little; tract + Rust
    // preprocessing match the onnxruntime + Pillow reference to 1e-4 before
    // it (encoder_parity.rs). int8: two int8 runtimes round differently;
    // the encoder suite's tolerance (encoder_backends.rs).
    let backend = r.pointer("/backend").and_then(Value::as_str).unwrap();
    let precision = r.pointer("/precision").and_then(Value::as_str).unwrap();
    eprintln!("default backend: {backend} {precision}");
    let min = if precision == "int8" { 0.99 } else { 0.999 };
    check_against_reference(&state.latents, &reference, precision, min);
}

#[test]
fn tcp_video_survives_a_receiver_restart_exactly_once_in_order() {
    let dir = scratch("tcp-restart");
    let host = TcpHost::start(0, Arc::default());
    let report_path = dir.join("report.json");
    // vtest.avi at its own 10 fps for 100 frames: ~10 s of surveillance video.
    let child = edge_line(&format!(
        "--source replay --input {} --max-frames 100 --link tcp --address {}",
        vtest(),
        host.address()
    ))
    .arg("--spool")
    .arg(dir.join("spool"))
    .args(["--drain-seconds", "20"])
    .arg("--report")
    .arg(&report_path)
    .spawn()
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || host.latents() >= 20),
        "no latents arrived"
    );
    let (port, state) = host.kill();
    let during = state.lock().unwrap().latents.len();
    // The host stays away for ~2 s (~20 frames) while the edge spools.
    thread::sleep(Duration::from_secs(2));
    let host = TcpHost::start(port, state);
    let out = wait(child, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let r = report(&report_path);
    let encoded = num(&r, "/encoded");
    eprintln!(
        "{encoded} encoded, {during} before the kill, {} sent live, {} from the spool, {} connects",
        num(&r, "/session/sent"),
        num(&r, "/session/sent_from_spool"),
        num(&r, "/session/connects")
    );
    assert!(encoded >= 50, "too few frames encoded: {encoded}");
    assert!(num(&r, "/session/connects") >= 2);
    assert!(
        num(&r, "/session/sent_from_spool") > 0,
        "the outage was bridged by the spool"
    );
    assert_eq!(num(&r, "/session/spool_pending"), 0);
    assert_eq!(num(&r, "/session/link_dropped"), 0);
    let (_, state) = host.kill();
    let state = state.lock().unwrap();
    assert_exactly_once(&state, encoded);
    assert!(state.hellos >= 2);
    assert!(
        stderr.contains("link down"),
        "the outage is logged:\n{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("INFO") && l.contains("link up again after")),
        "and so is the recovery:\n{stderr}"
    );
}

#[test]
fn host_away_for_a_whole_run_loses_nothing_across_edge_restarts() {
    let dir = scratch("away");
    let spool = dir.join("spool");
    // A port with nobody listening: bind, note, release.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let first = dir.join("first.json");
    let stderr = run_ok(
        edge_line(&format!(
            "--source replay --input {} --unpaced --max-frames 12 --link \
             tcp --address {} --drain-seconds 0.5",
            vtest(),
            address
        ))
        .arg("--spool")
        .arg(&spool)
        .arg("--report")
        .arg(&first),
        Duration::from_secs(120),
    );
    let r = report(&first);
    assert_eq!(num(&r, "/encoded"), 12);
    assert_eq!(num(&r, "/session/spool_pending"), 12, "all spooled");
    // The host never answered: said at once, at the default level, with
    // what is waiting.
    assert!(
        stderr.lines().any(|l| l.contains("WARN")
            && l.contains("link down:")
            && l.contains("latents waiting")),
        "the first failure is a warning:\n{stderr}"
    );
    assert!(
        !stderr.contains("next attempt in"),
        "one retry time, the session's:\n{stderr}"
    );

    // Next start: the host is back; the spooled latents go first, then new
    // ones continue the numbering.
    let host = TcpHost::start(port, Arc::default());
    let second = dir.join("second.json");
    run_ok(
        edge_line(&format!(
            "--source replay --input {} --unpaced --max-frames 5 --link \
             tcp --address {} --drain-seconds 20",
            vtest(),
            address
        ))
        .arg("--spool")
        .arg(&spool)
        .arg("--report")
        .arg(&second),
        Duration::from_secs(120),
    );
    let r = report(&second);
    assert_eq!(
        num(&r, "/session/sent_from_spool") + num(&r, "/session/sent"),
        17
    );
    assert_eq!(num(&r, "/session/spool_pending"), 0);
    let (_, state) = host.kill();
    assert_exactly_once(&state.lock().unwrap(), 17);

    // A third start with an empty spool still numbers above what the host
    // holds (the acked mark survives the released segments).
    let host = TcpHost::start(port, Arc::clone(&state));
    run_ok(
        edge_line(&format!(
            "--source replay --input {} --unpaced --max-frames 3 --link \
             tcp --address {} --drain-seconds 20",
            vtest(),
            address
        ))
        .arg("--spool")
        .arg(&spool),
        Duration::from_secs(120),
    );
    let (_, state) = host.kill();
    assert_exactly_once(&state.lock().unwrap(), 20);
}

/// Run as a systemd `Type=notify` service would: `NOTIFY_SOCKET` is a
/// datagram socket the test listens on, with a 400 ms watchdog.
#[test]
fn sigterm_flushes_says_bye_and_exits_cleanly() {
    let dir = scratch("sigterm");
    let host = TcpHost::start(0, Arc::default());
    let report_path = dir.join("report.json");
    let notify_path = dir.join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let child = edge_line(&format!(
        "--source replay --input {} --loop --link tcp --address {}",
        vtest(),
        host.address()
    ))
    .arg("--spool")
    .arg(dir.join("spool"))
    .arg("--report")
    .arg(&report_path)
    .env("NOTIFY_SOCKET", &notify_path)
    .env("WATCHDOG_USEC", "400000")
    .spawn()
    .unwrap();
    assert!(wait_until(Duration::from_secs(60), || host.latents() >= 5));
    // Streaming for a while: the service manager has heard READY and pings.
    let mut told = Vec::new();
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + Duration::from_secs(30);
    while told.iter().filter(|m| *m == "WATCHDOG=1").count() < 2 {
        assert!(Instant::now() < deadline, "no watchdog pings: {told:?}");
        if let Ok(n) = notify.recv(&mut buf) {
            told.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    assert!(told[0].starts_with("READY=1\nSTATUS="), "{told:?}");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = wait(child, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report(&report_path);
    assert_eq!(num(&r, "/session/spool_pending"), 0);
    let (_, state) = host.kill();
    let state = state.lock().unwrap();
    assert_eq!(state.byes, 1);
    assert_exactly_once(&state, num(&r, "/encoded"));
    while let Ok(n) = notify.recv(&mut buf) {
        told.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_eq!(
        told.last().map(String::as_str),
        Some("STOPPING=1"),
        "{told:?}"
    );
}

#[test]
fn a_refusing_host_gets_no_latents_and_the_reason_is_logged() {
    let dir = scratch("refused");
    let host = TcpHost::start(
        0,
        Arc::new(Mutex::new(HostState {
            refuse: Some(WelcomeStatus::UnknownModel),
            ..HostState::default()
        })),
    );
    let report_path = dir.join("report.json");
    let stderr = run_ok(
        edge_line(&format!(
            "--source replay --input {} --unpaced --max-frames 3 --link \
             tcp --address {} --drain-seconds 1",
            vtest(),
            host.address()
        ))
        .arg("--spool")
        .arg(dir.join("spool"))
        .arg("--report")
        .arg(&report_path),
        Duration::from_secs(120),
    );
    assert!(
        stderr.contains("host refused") && stderr.contains("test host refuses this model"),
        "{stderr}"
    );
    let r = report(&report_path);
    assert!(num(&r, "/session/refusals") >= 1);
    assert_eq!(
        num(&r, "/session/spool_pending"),
        3,
        "kept for a host that accepts"
    );
    let (_, state) = host.kill();
    assert!(state.lock().unwrap().latents.is_empty());
}

#[test]
fn udp_carries_every_latent_of_a_video_with_hello_first() {
    let dir = scratch("udp");
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let address = socket.local_addr().unwrap().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut kinds = Vec::new();
            let mut seqs = Vec::new();
            let mut buf = vec![0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                let Ok(n) = socket.recv(&mut buf) else {
                    continue;
                };
                let message =
                    frame::decode_datagram(&mut buf[..n]).expect("one frame per datagram");
                kinds.push(message.kind());
                if let Message::Latent(l) = message {
                    seqs.push(l.seq);
                }
            }
            (kinds, seqs)
        })
    };
    let report_path = dir.join("report.json");
    run_ok(
        edge_line(&format!(
            "--source replay --input {} --unpaced --max-frames 40 --link \
             udp --address {} --codec f16",
            vtest(),
            address
        ))
        .arg("--report")
        .arg(&report_path),
        Duration::from_secs(120),
    );
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (kinds, seqs) = receiver.join().unwrap();
    assert_eq!(kinds.first(), Some(&latentcam_wire::MessageKind::Hello));
    assert_eq!(seqs, (0..40).collect::<Vec<_>>());
    assert_eq!(num(&report(&report_path), "/session/sent"), 40);
}

/// A run says how it goes every `progress_seconds`, link up or down.
#[test]
fn a_run_reports_its_progress_periodically() {
    let dir = scratch("progress");
    // vtest.avi at its own 10 fps: 25 frames take about 2.5 s.
    let stderr = run_ok(
        edge_line(&format!(
            "--source replay --input {} --max-frames 25 --link file --progress-seconds 0.5",
            vtest()
        ))
        .arg("--link-path")
        .arg(dir.join("progress.lcr")),
        Duration::from_secs(120),
    );
    let progress = stderr
        .lines()
        .filter(|l| l.contains("INFO") && l.contains("frames captured") && l.contains("fps lately"))
        .count();
    assert!(progress >= 2, "{stderr}");
}

/// With `--log-format json` every log line of ours is one JSON object a
/// log collector can read: time, level, message and fields.
#[test]
fn json_logs_are_one_object_per_line() {
    let dir = scratch("json-logs");
    let stderr = run_ok(
        edge_line(&format!(
            "--log-format json --source replay --input {} --unpaced --max-frames 3 --link file",
            vtest()
        ))
        .arg("--link-path")
        .arg(dir.join("json.lcr")),
        Duration::from_secs(120),
    );
    let objects: Vec<Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        objects.iter().any(|o| o["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("pipeline starting"))),
        "{stderr}"
    );
    for object in &objects {
        assert!(
            object["timestamp"].is_string() && object["level"].is_string(),
            "{object}"
        );
    }
    assert!(
        !stderr
            .lines()
            .any(|l| !l.starts_with('{') && l.contains("pipeline starting")),
        "no text lines of ours: {stderr}"
    );
}

#[test]
fn file_recording_of_photos_reads_back_and_matches_the_python_reference() {
    let dir = scratch("file");
    let photos = dir.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    let fixtures = Reference::load();
    let reference = fixtures.copy_originals(&photos);
    let recording = dir.join("photos.lcr");
    run_ok(
        edge_line(
            "--source replay --unpaced --codec f32 --link file --backend tract --precision fp32",
        )
        .arg("--input")
        .arg(&photos)
        .arg("--link-path")
        .arg(&recording),
        Duration::from_secs(120),
    );
    let bytes = std::fs::read(&recording).unwrap();
    let mut state = HostState::default();
    let mut decoder: Box<FrameDecoder<MAX_FRAME_LEN>> = Box::default();
    decoder.feed_all(&bytes, |item| match item {
        Ok(m) => state.on_message(&m, &mut Vec::new()),
        Err(_) => state.errors += 1,
    });
    assert_eq!(state.hellos, 1);
    assert_eq!(state.byes, 1);
    assert_exactly_once(&state, reference.len() as u64);
    // F32 on the wire and tract fp32 (named: the test above runs the
    // default): only the JPEG decoder (zune-jpeg vs libjpeg-turbo) and
    // float summation order separate us from the reference.
    check_against_reference(&state.latents, &reference, "fp32", 0.999);
}

#[test]
#[cfg_attr(
    not(target_arch = "x86_64"),
    ignore = "serialport's TCGETS2 ioctl fails under qemu-user; run natively"
)]
fn serial_at_921600_baud_carries_video_latents_with_acks() {
    use linux_embedded_hal::serialport;
    let dir = scratch("serial");
    let pty = PtyPair::new();
    let mut port = serialport::new(&pty.paths[1], 921_600)
        .timeout(Duration::from_millis(20))
        .open_native()
        .expect("open the host end of the pty pair");
    let state: Arc<Mutex<HostState>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let host = {
        let (state, stop) = (Arc::clone(&state), Arc::clone(&stop));
        thread::spawn(move || serve(&mut port, &state, &stop))
    };
    let report_path = dir.join("report.json");
    run_ok(
        edge_line(&format!(
            "--source replay --input {} --unpaced --max-frames 30 --link \
             serial --link-path {} --baud 921600 --drain-seconds 20",
            vtest(),
            pty.paths[0]
        ))
        .arg("--spool")
        .arg(dir.join("spool"))
        .arg("--report")
        .arg(&report_path),
        Duration::from_secs(120),
    );
    stop.store(true, Ordering::Relaxed);
    host.join().unwrap();
    let r = report(&report_path);
    assert_eq!(num(&r, "/encoded"), 30);
    assert_eq!(
        num(&r, "/session/spool_pending"),
        0,
        "every latent acked over the line"
    );
    let state = state.lock().unwrap();
    assert_exactly_once(&state, 30);
    assert_eq!(state.byes, 1);
}

#[test]
fn missing_model_port_and_camera_are_one_clear_error_each() {
    // With the exit code: 78 (EX_CONFIG, no restart by systemd) for a
    // configuration that cannot work; 1 for a camera that is not there
    // (yet): systemd starts the program again until it is.
    let cases: [(&[&str], &[&str], i32); 3] = [
        (
            &[
                "--source",
                "synthetic",
                "--link",
                "serial",
                "--link-path",
                "/dev/ttyNOPE9",
                "--no-spool",
            ],
            &["/dev/ttyNOPE9"],
            78,
        ),
        (
            &[
                "--source",
                "v4l",
                "--input",
                "/dev/video9",
                "--link",
                "udp",
                "--address",
                "127.0.0.1:9",
            ],
            &["/dev/video9"],
            1,
        ),
        (
            &[
                "--source",
                "replay",
                "--input",
                "/nonexistent/clip.avi",
                "--link",
                "udp",
                "--address",
                "127.0.0.1:9",
            ],
            &["/nonexistent/clip.avi"],
            78,
        ),
    ];
    for (args, expect, code) in cases {
        let out = wait(edge(args).spawn().unwrap(), Duration::from_secs(60));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: exit code:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        for e in expect {
            assert!(
                stderr.contains(e),
                "{args:?}: error should name {e}:\n{stderr}"
            );
        }
    }
    // A models directory without a manifest.
    let empty = scratch("no-models");
    let out = wait(
        latentcam_testkit::program(env!("CARGO_BIN_EXE_latentcam-edge"))
            .args([
                "--source",
                "synthetic",
                "--link",
                "udp",
                "--address",
                "127.0.0.1:9",
            ])
            .arg("--models")
            .arg(&empty)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains(&empty.display().to_string()) && stderr.contains("LATENTCAM_MODELS"),
        "{stderr}"
    );
}

#[test]
fn without_a_spool_latents_wait_in_memory_for_the_handshake() {
    let dir = scratch("no-spool");
    let host = TcpHost::start(0, Arc::default());
    let report_path = dir.join("report.json");
    // Three photos encode faster than Hello → Welcome completes.
    run_ok(
        edge_line(&format!(
            "--source replay --input {} --unpaced --link tcp --address {} --no-spool",
            repo()
                .join("models/efficientnet-lite0/fixtures/originals")
                .display(),
            host.address()
        ))
        .arg("--report")
        .arg(&report_path),
        Duration::from_secs(120),
    );
    let r = report(&report_path);
    assert_eq!(num(&r, "/encoded"), 3);
    assert_eq!(num(&r, "/session/link_dropped"), 0);
    let (_, state) = host.kill();
    assert_exactly_once(&state.lock().unwrap(), 3);
}
