//! The MQTT link against a real broker (mosquitto on 127.0.0.1, started per
//! test from `scripts/mosquitto.conf`): `latentcam-edge` replays photos and
//! video over MQTT to a test-side host worker — a rumqttc client that
//! answers `Hello` with `Welcome` and publishes retained `Ack`s, following
//! `wire/src/mqtt.rs`. Faults: a worker that stops acknowledging (dies)
//! and another that takes over, the broker stopped and restarted mid-run,
//! bad configuration.
//!
//! No test asserts timing; every wait has a deadline.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use latentcam_firmware::link::{MqttConfig, MqttLink};
use latentcam_firmware::pipeline::{EncodedLatent, Settings, run_link};
use latentcam_firmware::spool::{Spool, SpoolConfig};
use latentcam_testkit::Broker;
#[allow(dead_code)]
use latentcam_testkit::{repo, vtest};
use latentcam_wire::mqtt::{DeviceTopics, TopicKind, hello_filter, parse_device_topic};
use latentcam_wire::{
    Ack, AuthChallenge, AuthScheme, Codec, Hello, Message, ModelIdentity, PROTOCOL_VERSION,
    Welcome, WelcomeStatus, frame,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet};
use rumqttc::v5::{Client, Event, MqttOptions};
use serde_json::Value;

const DEVICE: &str = "mqtt-test-cam";
const SITE: &str = "shop";

// ------------------------------------------------------------- the edge

fn scratch(name: &str) -> latentcam_testkit::Scratch {
    latentcam_testkit::scratch("mqtt", name)
}

/// `latentcam-edge` over MQTT to the broker at `address`, site `shop`,
/// with `args`.
fn edge(address: &str, args: &[&str]) -> Command {
    edge_as(DEVICE, address, args)
}

/// [`edge`] with another device id.
fn edge_as(device: &str, address: &str, args: &[&str]) -> Command {
    let mut cmd = latentcam_testkit::program(env!("CARGO_BIN_EXE_latentcam-edge"));
    cmd.arg("--models")
        .arg(repo().join("models"))
        .args(["--device-id", device, "--mqtt-site", SITE, "--link", "mqtt"])
        .args(["--address", address])
        .args(args)
        .env("LATENTCAM_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
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

fn report(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("report written")).unwrap()
}

fn num(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{pointer} missing in {v}"))
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

// ----------------------------------------------------- the host worker

/// What the test worker saw and holds.
#[derive(Debug, Default)]
struct WorkerState {
    /// Subscribed (SUBACK received) at least once.
    subscribed: bool,
    /// Latent seqs in arrival order, duplicates included.
    arrivals: Vec<u64>,
    /// Latents held.
    held: BTreeSet<u64>,
    /// Live (non-retained) Hellos answered.
    hellos: u64,
    /// Retained Hellos received on subscribing.
    retained_hellos: u64,
    byes: u64,
    /// Frames that failed to decode.
    errors: u64,
    /// Status payloads in arrival order.
    status: Vec<String>,
    /// From this seq on, the worker "dies": it neither holds nor
    /// acknowledges latents until the next live Hello, which another worker
    /// (the same client, reborn) answers.
    die_at: Option<u64>,
    dead: bool,
    /// Latents ignored while dead.
    ignored: u64,
}

impl WorkerState {
    /// Highest seq with every seq below it held.
    fn contiguous(&self) -> Option<u64> {
        let mut next = 0;
        while self.held.contains(&next) {
            next += 1;
        }
        next.checked_sub(1)
    }
}

/// A host worker on the broker: a rumqttc v5 client in a thread.
struct Worker {
    state: Arc<Mutex<WorkerState>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    fn start(broker: &Broker, state: WorkerState) -> Self {
        let state = Arc::new(Mutex::new(state));
        let stop = Arc::new(AtomicBool::new(false));
        let mut options = MqttOptions::new("test-worker", "127.0.0.1", broker.port);
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut connection) = Client::new(options, 4096);
        let thread = {
            let (state, stop) = (Arc::clone(&state), Arc::clone(&stop));
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match connection.recv_timeout(Duration::from_millis(100)) {
                        Err(_) => {}
                        Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                            client
                                .try_subscribe_many([
                                    Filter::new(hello_filter(), QoS::AtLeastOnce),
                                    Filter::new("latentcam/+/+/latent/+", QoS::AtLeastOnce),
                                    Filter::new("latentcam/+/+/status", QoS::AtLeastOnce),
                                ])
                                .unwrap();
                        }
                        Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                            state.lock().unwrap().subscribed = true;
                        }
                        Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                            let topic = String::from_utf8_lossy(&p.topic).into_owned();
                            let mut payload = p.payload.to_vec();
                            let mut state = state.lock().unwrap();
                            for (topic, bytes, retain) in
                                on_publish(&mut state, &topic, &mut payload, p.retain)
                            {
                                client
                                    .try_publish(topic, QoS::AtLeastOnce, retain, bytes)
                                    .unwrap();
                            }
                        }
                        Ok(Ok(_)) => {}
                        // The broker is away: the event loop reconnects on
                        // the next poll, so wait a little first.
                        Ok(Err(_)) => thread::sleep(Duration::from_millis(200)),
                    }
                }
            })
        };
        let worker = Self {
            state,
            stop,
            thread: Some(thread),
        };
        assert!(
            wait_until(Duration::from_secs(10), || worker.state().subscribed),
            "the test worker did not subscribe; broker log:\n{}",
            broker.log()
        );
        worker
    }

    fn state(&self) -> std::sync::MutexGuard<'_, WorkerState> {
        self.state.lock().unwrap()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The worker's reaction to one message: publishes to make (topic,
/// payload, retained).
fn on_publish(
    state: &mut WorkerState,
    topic: &str,
    payload: &mut [u8],
    retained: bool,
) -> Vec<(String, Vec<u8>, bool)> {
    let Some(t) = parse_device_topic(topic) else {
        return Vec::new();
    };
    let topics = DeviceTopics::new(t.site, t.device).unwrap();
    if t.kind == TopicKind::Status {
        state
            .status
            .push(String::from_utf8_lossy(payload).into_owned());
        return Vec::new();
    }
    let message = match frame::decode_datagram(payload) {
        Ok(m) => m,
        Err(_) => {
            state.errors += 1;
            return Vec::new();
        }
    };
    match (t.kind, message) {
        (TopicKind::Hello, Message::Hello(_)) if retained => {
            state.retained_hellos += 1;
            Vec::new()
        }
        (TopicKind::Hello, Message::Hello(_)) => {
            state.hellos += 1;
            // A live Hello is answered by a worker that is alive.
            state.dead = false;
            let welcome = Message::Welcome(Welcome {
                protocol: u16::from(PROTOCOL_VERSION),
                status: WelcomeStatus::Accepted,
                reason: "welcome",
                host_id: "mqtt-test-worker",
                acked: None,
                auth: AuthChallenge {
                    scheme: AuthScheme::None,
                    host_nonce: [0; 16],
                    host_proof: &[],
                },
            });
            vec![(
                topics.welcome,
                frame::encode_to_vec(&welcome).unwrap(),
                false,
            )]
        }
        (TopicKind::Latent(_), Message::Latent(l)) => {
            if state.die_at.is_some_and(|d| l.seq >= d) {
                state.die_at = None;
                state.dead = true;
            }
            if state.dead {
                state.ignored += 1;
                return Vec::new();
            }
            state.arrivals.push(l.seq);
            state.held.insert(l.seq);
            match state.contiguous() {
                Some(up_to) => {
                    let ack = frame::encode_to_vec(&Message::Ack(Ack { up_to })).unwrap();
                    vec![(topics.ack, ack, true)]
                }
                None => Vec::new(),
            }
        }
        (TopicKind::Latent(_), Message::Bye(_)) => {
            state.byes += 1;
            Vec::new()
        }
        _ => {
            state.errors += 1;
            Vec::new()
        }
    }
}

/// The retained messages of `topics` (a fresh subscription).
fn retained(broker: &Broker, topics: &[&str]) -> Vec<(String, Vec<u8>)> {
    let options = MqttOptions::new("test-retained-reader", "127.0.0.1", broker.port);
    let (client, mut connection) = Client::new(options, 16);
    let filters: Vec<Filter> = topics
        .iter()
        .map(|t| Filter::new(*t, QoS::AtLeastOnce))
        .collect();
    client.subscribe_many(filters).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while out.len() < topics.len() && Instant::now() < deadline {
        if let Ok(Ok(Event::Incoming(Packet::Publish(p)))) =
            connection.recv_timeout(Duration::from_millis(200))
            && p.retain
        {
            out.push((
                String::from_utf8_lossy(&p.topic).into_owned(),
                p.payload.to_vec(),
            ));
        }
    }
    out
}

// ------------------------------------------------------ reference photos

/// The recipe's reference photos (the ones the TCP pipeline test checks
/// against the Python reference), copied into `dir`; returns their count.
fn reference_photos(dir: &Path) -> usize {
    latentcam_testkit::Reference::load()
        .copy_originals(dir)
        .len()
}

// ------------------------------------------------------------ the tests

#[test]
fn photos_over_mqtt_arrive_once_in_order_and_are_all_acknowledged() {
    let dir = scratch("photos");
    let broker = Broker::start(&dir.join("broker"));
    let worker = Worker::start(&broker, WorkerState::default());
    let photos = dir.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    let count = reference_photos(&photos) as u64;
    let report_path = dir.join("report.json");
    let out = wait(
        edge(
            &broker.address(),
            &["--source", "replay", "--unpaced", "--codec", "u8"],
        )
        .arg("--input")
        .arg(&photos)
        .arg("--spool")
        .arg(dir.join("spool"))
        .arg("--report")
        .arg(&report_path)
        .spawn()
        .unwrap(),
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let r = report(&report_path);
    assert_eq!(num(&r, "/encoded"), count);
    assert_eq!(num(&r, "/session/spool_pending"), 0, "all acknowledged");
    assert_eq!(num(&r, "/session/acked"), count - 1);
    assert_eq!(num(&r, "/session/incoming_errors"), 0);
    assert!(wait_until(Duration::from_secs(5), || worker.state().byes == 1));
    {
        let state = worker.state();
        assert_eq!(
            state.arrivals,
            (0..count).collect::<Vec<_>>(),
            "once, in order"
        );
        assert_eq!(state.hellos, 1);
        assert_eq!(state.errors, 0);
        assert_eq!(
            state.status.first().map(String::as_str),
            Some("online"),
            "{:?}",
            state.status
        );
    }
    // What stays on the broker: the retained Hello, the last Ack, and the
    // status, "offline" after a clean exit.
    let topics = DeviceTopics::new(SITE, DEVICE).unwrap();
    let kept = retained(&broker, &[&topics.hello, &topics.status, &topics.ack]);
    let find = |topic: &str| {
        kept.iter()
            .find(|(t, _)| t == topic)
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| panic!("no retained message on {topic}: {kept:?}"))
    };
    let mut hello = find(&topics.hello);
    match frame::decode_datagram(&mut hello).unwrap() {
        Message::Hello(h) => {
            assert_eq!(h.device_id, DEVICE);
            assert_eq!(h.codec, Codec::U8Affine);
        }
        other => panic!("retained hello is {other:?}"),
    }
    assert_eq!(find(&topics.status), b"offline");
    let mut ack = find(&topics.ack);
    assert_eq!(
        frame::decode_datagram(&mut ack).unwrap(),
        Message::Ack(Ack { up_to: count - 1 })
    );
}

#[test]
fn a_worker_that_stops_acknowledging_is_replaced_and_nothing_is_lost() {
    let dir = scratch("stall");
    let broker = Broker::start(&dir.join("broker"));
    // The worker dies at latent 10: what it received from then on is gone.
    let worker = Worker::start(
        &broker,
        WorkerState {
            die_at: Some(10),
            ..WorkerState::default()
        },
    );
    let report_path = dir.join("report.json");
    // vtest.avi at its own 10 fps: 40 frames, ~4 s.
    let out = wait(
        edge(
            &broker.address(),
            &[
                "--source",
                "replay",
                "--input",
                vtest(),
                "--max-frames",
                "40",
                "--mqtt-ack-timeout",
                "2",
                "--drain-seconds",
                "20",
            ],
        )
        .arg("--spool")
        .arg(dir.join("spool"))
        .arg("--report")
        .arg(&report_path)
        .spawn()
        .unwrap(),
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("no acknowledgement from a host worker for 2 s"),
        "the stall is logged:\n{stderr}"
    );
    let r = report(&report_path);
    let encoded = num(&r, "/encoded");
    assert!(encoded >= 20, "too few frames encoded: {encoded}");
    assert_eq!(num(&r, "/session/spool_pending"), 0, "all acknowledged");
    assert!(
        num(&r, "/session/sent_from_spool") > 0,
        "re-sent from the spool"
    );
    let state = worker.state();
    eprintln!(
        "{encoded} encoded, {} ignored by the dead worker, {} hellos, {} re-sent from the spool",
        state.ignored,
        state.hellos,
        num(&r, "/session/sent_from_spool")
    );
    assert!(state.ignored > 0, "the worker did die");
    assert!(state.hellos >= 2, "Hello was repeated after the stall");
    assert_eq!(
        state.held,
        (0..encoded).collect::<BTreeSet<_>>(),
        "every latent held by a worker"
    );
    assert_eq!(state.errors, 0);
}

#[test]
fn a_broker_restart_mid_run_is_bridged_by_the_spool() {
    let dir = scratch("restart");
    let mut broker = Broker::start(&dir.join("broker"));
    let worker = Worker::start(&broker, WorkerState::default());
    let report_path = dir.join("report.json");
    let child = edge(
        &broker.address(),
        &[
            "--source",
            "replay",
            "--input",
            vtest(),
            "--max-frames",
            "120",
            "--drain-seconds",
            "20",
        ],
    )
    .arg("--spool")
    .arg(dir.join("spool"))
    .arg("--report")
    .arg(&report_path)
    .spawn()
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || worker.state().held.len() >= 15),
        "no latents arrived; broker log:\n{}",
        broker.log()
    );
    broker.stop();
    let before = worker.state().held.len();
    // ~3 s of video (~30 latents) while the broker is away.
    thread::sleep(Duration::from_secs(3));
    broker.start_again();
    let out = wait(child, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("connection lost"),
        "the outage is logged:\n{stderr}"
    );
    let r = report(&report_path);
    let encoded = num(&r, "/encoded");
    eprintln!(
        "{encoded} encoded, {before} held before the outage, {} sent live, {} from the spool",
        num(&r, "/session/sent"),
        num(&r, "/session/sent_from_spool")
    );
    assert!(encoded >= 90, "too few frames encoded: {encoded}");
    assert!(
        num(&r, "/session/connects") >= 2,
        "Hello again after the outage"
    );
    assert_eq!(num(&r, "/session/spool_pending"), 0, "all acknowledged");
    assert!(
        num(&r, "/session/sent_from_spool") > 0,
        "the gap came from the spool"
    );
    let state = worker.state();
    assert_eq!(state.held, (0..encoded).collect::<BTreeSet<_>>());
    assert_eq!(state.errors, 0);
}

#[test]
fn bad_mqtt_configuration_is_one_clear_error() {
    // No broker needed: these fail before connecting.
    let cases: [(&str, &str, &[&str]); 3] = [
        (
            "cam/01",
            "127.0.0.1:1883",
            &["device.id", "cam/01", "topic level"],
        ),
        (DEVICE, "tcp://127.0.0.1:1883", &["link.address", "mqtt://"]),
        (DEVICE, "127.0.0.1:port", &["link.address", "port"]),
    ];
    for (device, address, expect) in cases {
        let args = [device, address];
        let out = wait(
            edge_as(device, address, &["--source", "synthetic", "--no-spool"])
                .spawn()
                .unwrap(),
            Duration::from_secs(30),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(!stderr.contains("panicked"), "{stderr}");
        for e in expect {
            assert!(
                stderr.contains(e),
                "{args:?}: error should name {e}:\n{stderr}"
            );
        }
    }
    // The library refuses the same before starting anything.
    let err = MqttLink::new(MqttConfig::new("127.0.0.1:1883", "shop", "a/b")).unwrap_err();
    assert!(
        !err.is_transient() && err.to_string().contains("\"a/b\""),
        "{err}"
    );
}

#[test]
fn run_link_streams_latents_encoded_elsewhere() {
    let dir = scratch("run-link");
    let broker = Broker::start(&dir.join("broker"));
    let worker = Worker::start(&broker, WorkerState::default());
    let mut config = MqttConfig::new(broker.address(), SITE, "run-link-cam");
    config.ack_timeout = Duration::from_secs(5);
    let link = MqttLink::new(config).unwrap();
    let spool = Spool::open(dir.join("spool"), SpoolConfig::default()).unwrap();
    let hello = latentcam_testkit::hello::hello("run-link-cam", "none", [0; 32], 1);
    let model = ModelIdentity {
        latent_dim: 8,
        ..hello.model
    };
    let hello = frame::encode_to_vec(&Message::Hello(Hello {
        protocol: u16::from(PROTOCOL_VERSION),
        model,
        ..hello
    }))
    .unwrap();
    let mut settings = Settings::new("run-link-cam", "none");
    settings.drain_timeout = Duration::from_secs(10);
    let (tx, rx) = mpsc::sync_channel(8);
    let producer = thread::spawn(move || {
        for i in 0..50u64 {
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
            thread::sleep(Duration::from_millis(10));
        }
    });
    let report = run_link(
        Box::new(link),
        Some(spool),
        hello,
        &settings,
        rx,
        Arc::new(AtomicBool::new(false)),
    );
    producer.join().unwrap();
    assert_eq!(report.next_seq, 50);
    assert_eq!(report.spool_pending, 0, "{report:?}");
    assert_eq!(report.acked, Some(49));
    let state = worker.state();
    assert_eq!(state.arrivals, (0..50).collect::<Vec<_>>());
}
