//! Load: 50 simulated devices stream real latents to a real
//! `latentcam-host serve` process over loopback TCP for at least 15 s, with
//! every head on (ImageNet top-k, few-shot, anomaly, similarity index) and
//! the host recording what it accepts. Nothing may be lost or duplicated,
//! and every head's result for every latent must be identical to an offline
//! replay of the host's own recording.
//!
//! The latents are real: frames of `vtest.avi` encoded once, in-process, by
//! the edge pipeline (the library the edge binary runs) into a recording
//! file, then read back with the wire decoder. Each simulated device is a
//! thread with its own TCP connection speaking the protocol through the wire
//! crate: `Hello`, `Welcome`, a paced stream of `Latent`s (each device
//! cycling through the real latents from its own offset) while a reader
//! thread takes the `Ack`s, then `Bye` once its last latent is acknowledged.
//!
//! The replay is `latentcam-host replay` with exactly the heads `serve` was
//! given (a fresh index file for the similarity head), so every head is
//! compared.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier, Condvar, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use crate::common;

use crate::common::edge::{self, EdgeRecording};
use latentcam_testkit::repo;

use latentcam_wire::frame::{self, MAX_FRAME_LEN};
use latentcam_wire::{Bye, ByeReason, FrameDecoder, Latent, Message, WelcomeStatus};
use serde_json::Value;

/// Simulated devices, all connected at once.
const DEVICES: usize = 50;
/// Latents per second each device sends (the host allows 200 per connection).
const RATE: u64 = 10;
/// Seconds of streaming: latent `k` is due `k / RATE` s after the start, so
/// the last of the `RATE * SECONDS + 1` latents goes out `SECONDS` s in.
/// 15 s is 7 550 latents, each checked for loss, duplication and equality
/// with the replay; every device's anomaly head is past its 60-latent
/// warm-up after 6 s, so 9 s of scored latents per device follow. (It was
/// 30 s; nothing asserted needs the longer run.)
const SECONDS: u64 = 15;
const PER_DEVICE: u64 = RATE * SECONDS + 1;
/// Video frames encoded once and shared by the devices.
const SOURCE_FRAMES: u64 = 120;

fn models() -> PathBuf {
    repo().join("models")
}

fn scratch(name: &str) -> latentcam_testkit::Scratch {
    latentcam_testkit::scratch("load", name)
}

// ------------------------------------------------------------ real latents

// -------------------------------------------------------------------- host

/// A `latentcam-host serve` process on ephemeral loopback ports.
struct Host {
    child: Child,
    address: String,
    http: String,
}

impl Host {
    fn start(extra: &[&std::ffi::OsStr]) -> Self {
        let mut child = crate::common::host_command()
            .args(["serve", "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .arg("--models")
            .arg(models())
            .args(extra)
            // Plain log lines: they are echoed into the test output.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn latentcam-host");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut http = None;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Per-connection lines would be 100 of the same; keep the rest.
                if !line.contains("connection closed") {
                    eprintln!("host: {line}");
                }
                if let Some((_, url)) = line.split_once("HTTP API on ") {
                    http = Some(url.trim().to_owned());
                } else if let Some((_, bound)) = line.split_once("listening on ") {
                    let _ = tx.send(Some((bound.trim().to_owned(), http.take())));
                }
            }
            let _ = tx.send(None);
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Some((address, Some(http)))) => Self {
                child,
                address,
                http,
            },
            other => panic!("the host did not start listening: {other:?}"),
        }
    }

    /// Peak resident memory so far, from /proc.
    fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// SIGTERM, then wait for a clean exit.
    fn stop(mut self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "host exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "host did not stop on SIGTERM");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An authenticated GET of the API; the body as JSON.
fn get_json(base: &str, token: &str, path: &str) -> Value {
    let answer = common::http::send(
        base,
        "GET",
        path,
        &[("Authorization", &format!("Bearer {token}"))],
        b"",
    );
    assert_eq!(answer.status, 200, "GET {path}: {answer:?}");
    answer.json()
}

fn enroll(store: &Path, label: &str, photo: &Path) {
    let out = crate::common::host_command()
        .args(["enroll", "--label", label, "--store"])
        .arg(store)
        .arg("--models")
        .arg(models())
        .arg(photo)
        .output()
        .unwrap();
    assert!(out.status.success(), "enroll {label}: {out:?}");
}

// ----------------------------------------------------------------- devices

/// What a device's reader thread has heard from the host.
#[derive(Default)]
struct Inbox {
    welcome: Option<(WelcomeStatus, Option<u64>)>,
    acked: Option<u64>,
    /// When each seq was written, for acknowledgement latencies.
    sent_at: Vec<Instant>,
    ack_latencies: Vec<Duration>,
    host_bye: Option<String>,
    problems: Vec<String>,
    closed: bool,
}

#[derive(Default)]
struct Mailbox {
    inbox: Mutex<Inbox>,
    changed: Condvar,
}

impl Mailbox {
    /// Waits until `done` holds or the connection closed; the inbox either
    /// way, or an error after `timeout`.
    fn wait(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&Inbox) -> bool,
    ) -> Result<std::sync::MutexGuard<'_, Inbox>, String> {
        let inbox = self.inbox.lock().unwrap();
        let (inbox, _) = self
            .changed
            .wait_timeout_while(inbox, timeout, |i| !done(i) && !i.closed)
            .unwrap();
        if done(&inbox) {
            Ok(inbox)
        } else {
            Err(format!(
                "{what}: not within {timeout:?} (closed: {}, acked: {:?}, host Bye: {:?}, problems: {:?})",
                inbox.closed, inbox.acked, inbox.host_bye, inbox.problems
            ))
        }
    }
}

/// Decodes what the host sends until it closes the connection.
fn read_replies(mut stream: TcpStream, mailbox: &Mailbox) {
    let mut decoder: Box<FrameDecoder<MAX_FRAME_LEN>> = Box::default();
    let mut buf = [0u8; 4096];
    loop {
        let read = stream.read(&mut buf);
        let now = Instant::now();
        let mut guard = mailbox.inbox.lock().unwrap();
        let inbox = &mut *guard;
        match read {
            Ok(0) => inbox.closed = true,
            Ok(n) => decoder.feed_all(&buf[..n], |item| match item {
                Ok(Message::Welcome(w)) => inbox.welcome = Some((w.status, w.acked)),
                Ok(Message::Ack(ack)) => {
                    if inbox.acked.is_some_and(|a| ack.up_to < a) {
                        inbox.problems.push(format!(
                            "Ack went back from {:?} to {}",
                            inbox.acked, ack.up_to
                        ));
                        return;
                    }
                    let first = inbox.acked.map_or(0, |a| a + 1);
                    for seq in first..=ack.up_to {
                        match inbox.sent_at.get(seq as usize) {
                            Some(sent) => inbox.ack_latencies.push(now - *sent),
                            None => inbox
                                .problems
                                .push(format!("Ack for seq {seq}, which was never sent")),
                        }
                    }
                    inbox.acked = Some(ack.up_to);
                }
                Ok(Message::Bye(b)) => {
                    inbox.host_bye = Some(format!("{:?}: {}", b.reason, b.detail));
                }
                Ok(other) => inbox
                    .problems
                    .push(format!("unexpected {:?} from the host", other.kind())),
                Err(e) => inbox.problems.push(format!("frame error: {e}")),
            }),
            Err(e) => {
                inbox.problems.push(format!("read failed: {e}"));
                inbox.closed = true;
            }
        }
        let closed = inbox.closed;
        drop(guard);
        mailbox.changed.notify_all();
        if closed {
            return;
        }
    }
}

/// One device's figures.
struct DeviceReport {
    sent: u64,
    /// Time from its first latent to its last being acknowledged.
    streamed: Duration,
    /// How far behind its schedule a latent went out, at worst.
    max_send_lag: Duration,
    ack_latencies: Vec<Duration>,
}

fn device_id(index: usize) -> String {
    format!("load-cam-{index:02}")
}

/// A simulated device: connects, says `Hello`, waits at `start_line` until
/// every device is welcomed, streams `PER_DEVICE` latents at `RATE`, waits
/// for the last one's `Ack`, says `Bye` and waits for the host to close.
fn run_device(
    index: usize,
    address: &str,
    edge: &EdgeRecording,
    start_line: &Barrier,
) -> Result<DeviceReport, String> {
    let id = device_id(index);
    let mailbox = Arc::new(Mailbox::default());
    let connected = connect(&id, address, edge, &mailbox);
    // Every device waits here, connected or not, so that one failure cannot
    // leave the others waiting forever.
    start_line.wait();
    let (mut stream, reader) = connected?;

    // Devices start a few milliseconds apart, as real cameras would.
    let phase = Duration::from_millis(1000 / RATE) * index as u32 / DEVICES as u32;
    let start = Instant::now() + phase;
    let boot_us = 1_000_000 * (index as u64 + 1);
    let offset = index * edge.latents.len() / DEVICES;
    let mut max_send_lag = Duration::ZERO;
    for seq in 0..PER_DEVICE {
        let due = start + Duration::from_micros(seq * 1_000_000 / RATE);
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        } else {
            max_send_lag = max_send_lag.max(now - due);
        }
        let recorded = &edge.latents[(offset + seq as usize) % edge.latents.len()];
        let bytes = frame::encode_to_vec(&Message::Latent(Latent {
            seq,
            capture_us: boot_us + seq * 1_000_000 / RATE,
            frame_width: recorded.width,
            frame_height: recorded.height,
            codec: edge.identity.codec,
            payload: &recorded.payload,
            mac: &[],
            wall: None,
        }))
        .unwrap();
        mailbox.inbox.lock().unwrap().sent_at.push(Instant::now());
        stream
            .write_all(&bytes)
            .map_err(|err| format!("{id}: sending latent {seq}: {err}"))?;
    }
    // The host acknowledges only on an open connection, so `Bye` waits for
    // the last Ack.
    let last = PER_DEVICE - 1;
    let ack_latencies = {
        let inbox = mailbox.wait(
            Duration::from_secs(120),
            &format!("{id}: Ack of seq {last}"),
            |i| i.acked == Some(last),
        )?;
        if !inbox.problems.is_empty() || inbox.host_bye.is_some() {
            return Err(format!(
                "{id}: problems {:?}, host Bye {:?}",
                inbox.problems, inbox.host_bye
            ));
        }
        inbox.ack_latencies.clone()
    };
    let streamed = start.elapsed();
    let bye = frame::encode_to_vec(&Message::Bye(Bye {
        reason: ByeReason::Shutdown,
        detail: "load test done",
    }))
    .unwrap();
    stream
        .write_all(&bye)
        .map_err(|err| format!("{id}: sending Bye: {err}"))?;
    drop(mailbox.wait(
        Duration::from_secs(30),
        &format!("{id}: the host closing after Bye"),
        |i| i.closed,
    )?);
    reader
        .join()
        .map_err(|_| format!("{id}: reader panicked"))?;
    Ok(DeviceReport {
        sent: PER_DEVICE,
        streamed,
        max_send_lag,
        ack_latencies,
    })
}

/// Connects, sends `Hello`, and waits for `Welcome: Accepted`.
fn connect(
    id: &str,
    address: &str,
    edge: &EdgeRecording,
    mailbox: &Arc<Mailbox>,
) -> Result<(TcpStream, thread::JoinHandle<()>), String> {
    let mut stream =
        TcpStream::connect(address).map_err(|e| format!("{id}: connect {address}: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("{id}: nodelay: {e}"))?;
    let replies = stream
        .try_clone()
        .map_err(|e| format!("{id}: clone: {e}"))?;
    // A silent host ends the reader instead of hanging the test.
    replies
        .set_read_timeout(Some(Duration::from_secs(180)))
        .map_err(|e| format!("{id}: timeout: {e}"))?;
    let reader = {
        let mailbox = Arc::clone(mailbox);
        thread::spawn(move || read_replies(replies, &mailbox))
    };
    let hello = edge.identity.hello_frame(id);
    stream
        .write_all(&hello)
        .map_err(|e| format!("{id}: sending Hello: {e}"))?;
    let inbox = mailbox.wait(Duration::from_secs(30), &format!("{id}: Welcome"), |i| {
        i.welcome.is_some()
    })?;
    match inbox.welcome {
        Some((WelcomeStatus::Accepted, None)) => {}
        other => {
            return Err(format!(
                "{id}: Welcome {other:?}, expected Accepted, nothing held"
            ));
        }
    }
    drop(inbox);
    Ok((stream, reader))
}

// ----------------------------------------------------------------- results

/// Result lines keyed by (device, seq), without the timing field; panics
/// on a line seen twice.
fn keyed(path: &Path, what: &str) -> BTreeMap<(String, u64), Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = BTreeMap::new();
    let mut duplicates = Vec::new();
    for line in text.lines() {
        let mut value: Value = serde_json::from_str(line).unwrap();
        let key = (
            value["device"].as_str().unwrap().to_owned(),
            value["seq"].as_u64().unwrap(),
        );
        // The head time, and when the host received it, are of the run.
        let fields = value.as_object_mut().unwrap();
        fields.remove("heads_us");
        assert!(fields.remove("received_at").is_some_and(|t| t.is_string()));
        if lines.insert(key.clone(), value).is_some() {
            duplicates.push(key);
        }
    }
    assert!(
        duplicates.is_empty(),
        "{what}: {} result lines repeat a (device, seq), first {:?}",
        duplicates.len(),
        &duplicates[..duplicates.len().min(5)]
    );
    lines
}

/// Checks that `replayed` holds the same (device, seq) as `live` and the same
/// result line (every head) for each.
fn assert_same_results(
    live: &BTreeMap<(String, u64), Value>,
    replayed: &BTreeMap<(String, u64), Value>,
    what: &str,
) {
    let live_keys: BTreeSet<_> = live.keys().collect();
    let replay_keys: BTreeSet<_> = replayed.keys().collect();
    let only_live: Vec<_> = live_keys.difference(&replay_keys).take(5).collect();
    let only_replay: Vec<_> = replay_keys.difference(&live_keys).take(5).collect();
    assert!(
        only_live.is_empty() && only_replay.is_empty(),
        "{what}: (device, seq) differ: live only {only_live:?}…, replay only {only_replay:?}…"
    );
    let mut differences = Vec::new();
    for (key, live_line) in live {
        if &replayed[key] != live_line {
            differences.push(key);
        }
    }
    if let Some(first) = differences.first() {
        panic!(
            "{what}: {} of {} results differ from the live ones; first {first:?}:\n live:   {}\n replay: {}",
            differences.len(),
            live.len(),
            live[*first],
            replayed[*first]
        );
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn fifty_devices_for_fifteen_seconds_lose_nothing_and_match_a_replay() {
    let _alone = common::exclusive();
    let dir = scratch("fifty");
    let started = Instant::now();
    let edge = edge::encode_video(&dir, SOURCE_FRAMES);
    eprintln!(
        "{} real latents ({} payload bytes each) encoded from vtest.avi in {:.1} s",
        edge.latents.len(),
        edge.latents[0].payload.len(),
        started.elapsed().as_secs_f64()
    );

    // The few-shot head knows two labels, enrolled through the CLI.
    let originals = repo().join("models/efficientnet-lite0/fixtures/originals");
    let store = dir.join("fewshot.bin");
    enroll(&store, "butterfly", &originals.join("butterfly.jpg"));
    enroll(&store, "squirrel", &originals.join("squirrel_cls.jpg"));

    let jsonl = dir.join("results.jsonl");
    let records = dir.join("records");
    let live_index = dir.join("live.idx");
    let token_file = dir.join("http.token");
    let host = Host::start(&[
        "--http-token-file".as_ref(),
        token_file.as_os_str(),
        "--jsonl".as_ref(),
        jsonl.as_os_str(),
        "--record".as_ref(),
        records.as_os_str(),
        "--fewshot".as_ref(),
        store.as_os_str(),
        "--anomaly".as_ref(),
        "--index".as_ref(),
        live_index.as_os_str(),
    ]);

    let start_line = Barrier::new(DEVICES + 1);
    let (reports, load_time) = thread::scope(|scope| {
        let devices: Vec<_> = (0..DEVICES)
            .map(|index| {
                let (address, edge, start_line) = (&host.address, &edge, &start_line);
                scope.spawn(move || run_device(index, address, edge, start_line))
            })
            .collect();
        start_line.wait();
        let load_started = Instant::now();
        let reports: Vec<_> = devices
            .into_iter()
            .map(|d| d.join().expect("device thread panicked"))
            .collect();
        (reports, load_started.elapsed())
    });
    let failures: Vec<&String> = reports.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {DEVICES} devices failed: {failures:#?}",
        failures.len()
    );
    let reports: Vec<DeviceReport> = reports.into_iter().map(Result::unwrap).collect();

    // What the host counted per device: nothing dropped, skipped or repeated.
    let token = std::fs::read_to_string(&token_file).unwrap();
    let api = get_json(&host.http, token.trim(), "/api/devices");
    let devices = api["devices"].as_array().unwrap();
    assert_eq!(devices.len(), DEVICES, "devices the host knows");
    for device in devices {
        let r = &device["record"];
        for (counter, expected) in [
            ("latents", PER_DEVICE),
            ("duplicates", 0),
            ("missing", 0),
            ("rate_limited", 0),
            ("frame_errors", 0),
            ("hellos", 1),
        ] {
            assert_eq!(
                r[counter].as_u64(),
                Some(expected),
                "{}: {counter} in {r}",
                device["id"]
            );
        }
    }
    let peak_rss = host.peak_rss_kib();
    host.stop();

    // Every device's seqs 0..PER_DEVICE, each exactly once, in the results.
    let live = keyed(&jsonl, "live results");
    for index in 0..DEVICES {
        let id = device_id(index);
        let seqs: Vec<u64> = live
            .keys()
            .filter(|(d, _)| *d == id)
            .map(|(_, s)| *s)
            .collect();
        let missing: Vec<u64> = (0..PER_DEVICE).filter(|s| !seqs.contains(s)).collect();
        assert!(
            missing.is_empty() && seqs.len() as u64 == PER_DEVICE,
            "{id}: {} results, seqs missing: {missing:?}",
            seqs.len()
        );
    }
    let total = (DEVICES as u64) * PER_DEVICE;
    assert_eq!(live.len() as u64, total, "result lines in all");

    // Figures.
    let mut latencies: Vec<Duration> = reports
        .iter()
        .flat_map(|r| r.ack_latencies.iter().copied())
        .collect();
    latencies.sort();
    assert_eq!(latencies.len() as u64, total, "every latent's Ack was seen");
    let sent: u64 = reports.iter().map(|r| r.sent).sum();
    let shortest = reports.iter().map(|r| r.streamed).min().unwrap();
    let max_lag = reports.iter().map(|r| r.max_send_lag).max().unwrap();
    assert!(
        shortest >= Duration::from_secs(SECONDS),
        "every device streamed for at least {SECONDS} s (shortest {shortest:?})"
    );
    let anomaly_warm = live
        .values()
        .filter(|l| l["heads"]["anomaly"]["warm"] == true)
        .count();
    let known = live
        .values()
        .filter(|l| l["heads"]["fewshot"]["label"] != "unknown")
        .count();
    eprintln!(
        "{DEVICES} devices × {PER_DEVICE} latents = {sent} latents in {:.1} s: {:.1} latents/s \
         (target {}); each device streamed ≥ {:.1} s, worst send lag behind schedule {:?}",
        load_time.as_secs_f64(),
        sent as f64 / load_time.as_secs_f64(),
        DEVICES as u64 * RATE,
        shortest.as_secs_f64(),
        max_lag
    );
    eprintln!(
        "send-to-Ack latency: p50 {:?}, p99 {:?}, max {:?}; host peak RSS {} MiB",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap(),
        peak_rss.map_or("?".into(), |k| (k / 1024).to_string())
    );
    eprintln!(
        "{anomaly_warm} results with a warm anomaly head, {known} with a known few-shot label"
    );

    // The host's recording: files in name order, each one a whole stream.
    let mut files: Vec<PathBuf> = std::fs::read_dir(&records)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "lcr"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the host recorded nothing");
    let recording = dir.join("recording.lcr");
    let mut bytes = Vec::new();
    for file in &files {
        bytes.extend(std::fs::read(file).unwrap());
    }
    std::fs::write(&recording, &bytes).unwrap();
    let mut decoder: Box<FrameDecoder<MAX_FRAME_LEN>> = Box::default();
    let (mut hellos, mut latents) = (0u64, 0u64);
    decoder.feed_all(&bytes, |item| match item {
        Ok(Message::Hello(_)) => hellos += 1,
        Ok(Message::Latent(_)) => latents += 1,
        _ => {}
    });
    eprintln!(
        "recording: {} file(s), {:.1} MB, {latents} latents, {hellos} Hellos (one per device switch), \
         {:.0} bytes/latent",
        files.len(),
        bytes.len() as f64 / 1e6,
        bytes.len() as f64 / latents as f64
    );
    assert_eq!(latents, total, "latents in the recording");

    // Offline replay through the binary with every head `serve` ran (a
    // fresh index file for the similarity head).
    let replay_jsonl = dir.join("replay.jsonl");
    let t = Instant::now();
    let out = crate::common::host_command()
        .args(["replay", "--models"])
        .arg(models())
        .arg("--jsonl")
        .arg(&replay_jsonl)
        .arg("--fewshot")
        .arg(&store)
        .arg("--anomaly")
        .arg("--index")
        .arg(dir.join("replay.idx"))
        .arg(&recording)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "latentcam-host replay: {stderr}");
    let summary = stderr.lines().last().unwrap_or_default();
    eprintln!("replay in {:.1} s: {summary}", t.elapsed().as_secs_f64());
    assert!(
        summary.contains(&format!(
            "{total} latents through the heads, 0 skipped, 0 frame errors"
        )),
        "{stderr}"
    );
    let replayed = keyed(&replay_jsonl, "replay");
    assert_same_results(&live, &replayed, "replay");
    let _ = std::fs::remove_dir_all(&dir);
}
