//! Fleet on MQTT 5 (wire/SPEC.md §9): 200 simulated devices at 10 latents/s
//! for 60 s through a real mosquitto (on 127.0.0.1, the project's
//! `scripts/mosquitto.conf`) to three `latentcam-host serve --mqtt` worker
//! processes in one share group. Midway one worker is killed (SIGKILL), and
//! later the broker is restarted.
//!
//! Each simulated device is the edge's own link side — `MqttLink`, an
//! on-disk `Spool`, and the pipeline's session (`pipeline::run_link`:
//! Hello/Welcome, acks, re-sends, heartbeats) — fed with real latents of
//! vtest.avi encoded once by the edge pipeline. Only the camera and the
//! encoder are left out, so 200 devices fit on a CI machine.
//!
//! Checked from the workers' result files (sequence accounting per device):
//! - every latent of every device processed, none lost, and every device's
//!   spool empty at the end, across the kill and the broker restart;
//! - exactly once, except latents the killed worker finished in its last
//!   moments without publishing their acknowledgement: those may be
//!   processed again by the worker that takes its partitions over — only
//!   a killed worker's device's latents among its last 2 s (20 latents) of
//!   results for that device may appear twice;
//! - the killed worker's devices keep being processed by the other two.
//!
//! Printed for the closing note: latents/s per worker, capture → result
//! published latency percentiles (measured by a subscriber to the
//! `…/result` topics), and what each fault cost.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common;

use crate::common::edge::{self, EdgeRecording};
use latentcam_firmware::link::mqtt::{MqttConfig, MqttLink};
use latentcam_firmware::pipeline::{self, EncodedLatent, Settings};
use latentcam_firmware::spool::{Spool, SpoolConfig};
use latentcam_testkit::Broker;
use latentcam_testkit::repo;
use latentcam_wire::mqtt::partition;
use serde_json::Value;

const DEVICES: usize = 200;
const RATE: u64 = 10;
/// 60 s of streaming. A 35 s run (the kill at 8 s, the broker down at
/// 24 s) was tried to save CI time and failed: latents were processed twice
/// outside a 2 s window before the kill (the check then in place; it now
/// reads the acknowledgements the broker actually carried). The faults need
/// a settled group on both sides.
const SECONDS: u64 = 60;
const PER_DEVICE: u64 = RATE * SECONDS;
const SOURCE_FRAMES: u64 = 60;
const SITE: &str = "fleet-test";
const GROUP: &str = "fleet";
/// When the third worker is killed, and when the broker goes down and for
/// how long, counted from the start of streaming.
const KILL_AT: Duration = Duration::from_secs(25);
const BROKER_DOWN_AT: Duration = Duration::from_secs(40);
const BROKER_DOWN_FOR: Duration = Duration::from_secs(3);

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn device_id(index: usize) -> String {
    format!("fleet-cam-{index:03}")
}

// ----------------------------------------------------------------- workers

/// A `latentcam-host serve --mqtt` process.
struct Worker {
    name: String,
    child: Child,
    /// The latest "N members, owns M of 64 partitions" it logged.
    view: Arc<Mutex<Option<(usize, usize)>>>,
}

impl Worker {
    fn start(name: &str, broker: &Broker, dir: &Path) -> Self {
        let mut child = crate::common::host_command()
            .args(["serve", "--tcp", "127.0.0.1:0"])
            .arg("--mqtt")
            .arg(format!("mqtt://{}", broker.address()))
            .args(["--group", GROUP, "--worker", name])
            // The per-device head (its state is why a device stays on one
            // worker); the ImageNet head's 1.3 M multiply-adds per latent
            // at 2000 latents/s would not fit beside 200 simulated devices
            // on a 2-core CI machine, and is tested elsewhere.
            .args(["--no-imagenet", "--anomaly"])
            .arg("--jsonl")
            .arg(dir.join(format!("{name}.jsonl")))
            .arg("--models")
            .arg(repo().join("models"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn latentcam-host");
        let view = Arc::new(Mutex::new(None));
        let stderr = child.stderr.take().unwrap();
        {
            let (view, name) = (Arc::clone(&view), name.to_owned());
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("{name}: {line}");
                    if let Some(rest) = line
                        .split_once(": ")
                        .and_then(|(_, r)| r.contains(" members, owns ").then_some(r.to_owned()))
                    {
                        let numbers: Vec<usize> = rest
                            .split(|c: char| !c.is_ascii_digit())
                            .filter_map(|n| n.parse().ok())
                            .collect();
                        if numbers.len() >= 2 {
                            *view.lock().unwrap() = Some((numbers[0], numbers[1]));
                        }
                    }
                }
            });
        }
        Self {
            name: name.to_owned(),
            child,
            view,
        }
    }

    fn view(&self) -> Option<(usize, usize)> {
        *self.view.lock().unwrap()
    }

    /// SIGTERM and a clean exit.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{} exited with {status}", self.name);
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the `n` workers agree that the group has `n` members and
/// together own all 64 partitions.
fn wait_for_group(workers: &[&Worker], n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let views: Vec<_> = workers.iter().map(|w| w.view()).collect();
        let settled = views.iter().all(|v| v.is_some_and(|(m, _)| m == n))
            && views.iter().map(|v| v.map_or(0, |(_, p)| p)).sum::<usize>() == 64;
        if settled {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "workers did not settle into a group of {n}: {views:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

// ----------------------------------------------------------------- results

/// Every result line of a worker: (device, seq) → capture_us, counting
/// repeats within the file.
fn read_results(path: &Path) -> Vec<(String, u64, u64)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .map(|v| {
            (
                v["device"].as_str().unwrap().to_owned(),
                v["seq"].as_u64().unwrap(),
                v["capture_us"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// What the watcher saw on the broker.
#[derive(Default)]
struct Watched {
    /// capture → arrival of every published result (µs).
    latencies: Vec<(u64, u64)>,
    /// Every acknowledgement that reached the broker: (device, up_to,
    /// arrival µs).
    acks: Vec<(String, u64, u64)>,
}

/// Subscribes to every device's `…/result` and `…/ack/<p>`, and records
/// capture → arrival of results and every acknowledgement with its time.
fn watch_results(address: &str, stop: Arc<AtomicBool>) -> thread::JoinHandle<Watched> {
    use latentcam_wire::mqtt::{TopicKind, parse_device_topic};
    use latentcam_wire::{Ack, Message, frame};
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{Client, Event, MqttOptions};
    let (host, port) = address.split_once(':').unwrap();
    let mut options = MqttOptions::new("fleet-test-results", host, port.parse().unwrap());
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut connection) = Client::new(options, 64);
    thread::spawn(move || {
        let mut seen = Watched::default();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            match connection.recv_timeout(Duration::from_millis(200)) {
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                    let _ =
                        client.try_subscribe(format!("latentcam/{SITE}/+/result"), QoS::AtMostOnce);
                    let _ =
                        client.try_subscribe(format!("latentcam/{SITE}/+/ack/+"), QoS::AtMostOnce);
                }
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    let arrived = now_us();
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    let Some(parsed) = parse_device_topic(&topic) else {
                        continue;
                    };
                    match parsed.kind {
                        TopicKind::Ack(_) => {
                            let mut bytes = p.payload.to_vec();
                            if let Ok(Message::Ack(Ack { up_to })) =
                                frame::decode_datagram(&mut bytes)
                            {
                                seen.acks.push((parsed.device.to_owned(), up_to, arrived));
                            }
                        }
                        TopicKind::Result => {
                            if let Ok(v) = serde_json::from_slice::<Value>(&p.payload)
                                && let Some(capture) = v["capture_us"].as_u64()
                            {
                                seen.latencies
                                    .push((capture, arrived.saturating_sub(capture)));
                            }
                        }
                        _ => {}
                    }
                }
                Ok(Ok(_)) | Err(_) => {}
                Ok(Err(_)) => thread::sleep(Duration::from_millis(200)),
            }
        }
        seen
    })
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

// -------------------------------------------------------------------- test

#[test]
fn two_hundred_devices_three_workers_a_kill_and_a_broker_restart_lose_nothing() {
    let _alone = common::exclusive();
    let dir = latentcam_testkit::scratch("fleet", "run");
    let edge: Arc<EdgeRecording> = Arc::new(edge::encode_video(&dir, SOURCE_FRAMES));
    let mut broker = Broker::start(&dir.join("broker"));

    let w1 = Worker::start("w1", &broker, &dir);
    let w2 = Worker::start("w2", &broker, &dir);
    let w3 = Worker::start("w3", &broker, &dir);
    wait_for_group(&[&w1, &w2, &w3], 3, Duration::from_secs(60));
    let killed_partitions: BTreeSet<u16> = {
        let members = ["w1", "w2", "w3"];
        (0..64)
            .filter(|&p| latentcam_wire::mqtt::owner(p, members) == Some("w3"))
            .collect()
    };

    let stop_watch = Arc::new(AtomicBool::new(false));
    let watcher = watch_results(&broker.address(), Arc::clone(&stop_watch));

    // The devices: each its own MQTT session, spool and session thread.
    let mut feeds = Vec::new();
    let mut devices = Vec::new();
    for i in 0..DEVICES {
        let id = device_id(i);
        let mut config = MqttConfig::new(broker.address(), SITE, &id);
        config.ack_timeout = Duration::from_secs(10);
        let link = MqttLink::new(config).expect("MQTT link");
        let spool =
            Spool::open(dir.join("spools").join(&id), SpoolConfig::default()).expect("spool");
        let mut settings = Settings::new(&id, &edge.identity.preprocessing);
        settings.codec = edge.identity.codec;
        settings.drain_timeout = Duration::from_secs(120);
        let hello = edge.identity.hello_frame(&id);
        let (tx, rx) = mpsc::sync_channel::<EncodedLatent>(4 * RATE as usize);
        feeds.push(tx);
        devices.push(thread::spawn(move || {
            pipeline::run_link(
                Box::new(link),
                Some(spool),
                hello,
                &settings,
                rx,
                Arc::new(AtomicBool::new(false)),
            )
        }));
    }

    // Stream: device i's latent k is due k/RATE s after the start, devices
    // spread over the first 100 ms. The faults happen on the way.
    let start = Instant::now();
    let mut w3 = Some(w3);
    let mut killed_at_us = None;
    let mut broker_down: Option<Instant> = None;
    let mut broker_restarted = false;
    let tick = Duration::from_millis(1000 / RATE) / DEVICES as u32;
    for k in 0..PER_DEVICE {
        for (i, feed) in feeds.iter().enumerate() {
            let due = start + Duration::from_millis(k * 1000 / RATE) + tick * i as u32;
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
            let elapsed = start.elapsed();
            if elapsed >= KILL_AT && w3.is_some() {
                let mut victim = w3.take().unwrap();
                victim.child.kill().unwrap();
                victim.child.wait().unwrap();
                killed_at_us = Some(now_us());
                eprintln!("fleet: worker w3 killed at {elapsed:?}");
            }
            if elapsed >= BROKER_DOWN_AT && broker_down.is_none() {
                broker.stop();
                broker_down = Some(Instant::now());
                eprintln!("fleet: broker stopped at {elapsed:?}");
            }
            if !broker_restarted && broker_down.is_some_and(|d| d.elapsed() >= BROKER_DOWN_FOR) {
                broker.start_again();
                broker_restarted = true;
                eprintln!("fleet: broker started again at {:?}", start.elapsed());
            }
            let recorded = &edge.latents[(i + k as usize) % edge.latents.len()];
            feed.send(EncodedLatent {
                payload: recorded.payload.clone(),
                capture_us: now_us(),
                wall: None,
                width: recorded.width,
                height: recorded.height,
            })
            .expect("device thread alive");
        }
    }
    let streamed = start.elapsed();
    drop(feeds);
    let reports: Vec<_> = devices
        .into_iter()
        .map(|d| d.join().expect("device thread"))
        .collect();
    let drained = start.elapsed();
    thread::sleep(Duration::from_secs(1));
    stop_watch.store(true, std::sync::atomic::Ordering::Relaxed);
    let Watched { latencies, acks } = watcher.join().unwrap();
    w1.stop();
    w2.stop();

    // ------------------------------------------------------------ checks
    let killed_at_us = killed_at_us.expect("w3 was killed");
    let mut count: BTreeMap<(String, u64), u32> = BTreeMap::new();
    let mut capture: BTreeMap<(String, u64), u64> = BTreeMap::new();
    let mut per_worker = Vec::new();
    let mut after_kill_by_survivors: BTreeSet<String> = BTreeSet::new();
    for name in ["w1", "w2", "w3"] {
        let lines = read_results(&dir.join(format!("{name}.jsonl")));
        per_worker.push((name, lines.len()));
        for (device, seq, capture_us) in lines {
            if name != "w3" && capture_us > killed_at_us {
                after_kill_by_survivors.insert(device.clone());
            }
            *count.entry((device.clone(), seq)).or_default() += 1;
            capture.insert((device, seq), capture_us);
        }
    }
    let mut lost = Vec::new();
    for i in 0..DEVICES {
        for seq in 0..PER_DEVICE {
            if !count.contains_key(&(device_id(i), seq)) {
                lost.push((device_id(i), seq));
            }
        }
    }
    let repeated: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    // A latent may be processed twice only if the killed worker processed
    // it and died before an acknowledgement covering it reached the broker
    // (its successor, reading the retained acks, then processed it again).
    // Anything an ack had covered before the kill must never come twice.
    let mut killed_last: BTreeMap<String, u64> = BTreeMap::new();
    for (device, seq, _) in read_results(&dir.join("w3.jsonl")) {
        let last = killed_last.entry(device).or_default();
        *last = (*last).max(seq);
    }
    let mut acked_before_kill: BTreeMap<&str, u64> = BTreeMap::new();
    for (device, up_to, arrived) in &acks {
        if *arrived < killed_at_us {
            let a = acked_before_kill.entry(device.as_str()).or_default();
            *a = (*a).max(*up_to);
        }
    }
    let unacked_at_kill =
        |device: &str, seq: u64| acked_before_kill.get(device).is_none_or(|&a| seq > a);
    let unexplained: Vec<_> = repeated
        .iter()
        .filter(|((device, seq), _)| {
            !(killed_partitions.contains(&partition(device))
                && killed_last.get(device).is_some_and(|&last| *seq <= last)
                && unacked_at_kill(device, *seq))
        })
        .collect();
    // How far the killed worker's acknowledgements trailed its results.
    let ack_lag = killed_last
        .iter()
        .map(|(device, &last)| {
            last.saturating_sub(acked_before_kill.get(device.as_str()).copied().unwrap_or(0))
        })
        .max()
        .unwrap_or(0);
    let mut sorted: Vec<u64> = latencies.iter().map(|&(_, l)| l).collect();
    sorted.sort_unstable();
    let mut steady: Vec<u64> = latencies
        .iter()
        .filter(|&&(c, _)| c + 2_000_000 < killed_at_us)
        .map(|&(_, l)| l)
        .collect();
    steady.sort_unstable();
    let resent: u64 = reports.iter().map(|r| r.sent_from_spool).sum();
    let welcomes: u64 = reports.iter().map(|r| r.welcomes).sum();
    eprintln!(
        "fleet: {DEVICES} devices x {PER_DEVICE} latents = {} in {streamed:?} streaming, \
         {drained:?} until every spool drained",
        DEVICES as u64 * PER_DEVICE
    );
    for (name, n) in &per_worker {
        eprintln!(
            "fleet: {name} processed {n} latents ({:.0}/s over the streaming time)",
            *n as f64 / streamed.as_secs_f64()
        );
    }
    eprintln!(
        "fleet: lost {}, processed twice {} (all processed by the killed worker and not yet \
         acknowledged when it died: {}), re-sent from spools {resent}, Welcomes {welcomes}; \
         {} acknowledgements seen, the killed worker's trailed its results by up to {ack_lag} \
         latents",
        lost.len(),
        repeated.len(),
        unexplained.is_empty(),
        acks.len()
    );
    eprintln!(
        "fleet: capture -> result published: steady state p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms \
         ({} results); whole run p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} results)",
        percentile(&steady, 0.5),
        percentile(&steady, 0.99),
        percentile(&steady, 1.0),
        steady.len(),
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.99),
        percentile(&sorted, 1.0),
        sorted.len()
    );

    assert!(
        lost.is_empty(),
        "lost latents: {:?}…",
        &lost[..lost.len().min(20)]
    );
    assert!(
        unexplained.is_empty(),
        "latents processed twice that were acknowledged before the kill or not processed by the killed worker: {:?}",
        &unexplained[..unexplained.len().min(20)]
    );
    for (i, r) in reports.iter().enumerate() {
        assert_eq!(
            r.spool_pending,
            0,
            "{}: spool not empty: {r:?}",
            device_id(i)
        );
        assert_eq!(
            r.link_dropped + r.spool_dropped,
            0,
            "{}: {r:?}",
            device_id(i)
        );
        assert_eq!(r.next_seq, PER_DEVICE, "{}", device_id(i));
    }
    let moved: Vec<String> = (0..DEVICES)
        .map(device_id)
        .filter(|d| killed_partitions.contains(&partition(d)))
        .collect();
    assert!(!moved.is_empty(), "the killed worker owned some devices");
    for d in &moved {
        assert!(
            after_kill_by_survivors.contains(d),
            "{d} (the killed worker's) was not taken over"
        );
    }
    assert!(
        per_worker.iter().all(|(_, n)| *n > 0),
        "every worker processed latents: {per_worker:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
