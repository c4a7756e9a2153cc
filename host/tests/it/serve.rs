//! `latentcam-host serve` as a process, fed by the real edge pipeline
//! (in-process, through the library the edge binary uses) over loopback
//! TCP: results per latent, exactly once across a host crash, and hostile
//! peers that only lose their own connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crate::common;

use latentcam_testkit::repo;

use latentcam_firmware::assemble;
use latentcam_firmware::config::{EdgeConfig, LinkKind, SourceKind};
use latentcam_firmware::pipeline::{self, Report};
use latentcam_wire::frame::{self, MAX_FRAME_LEN};
use latentcam_wire::{
    ByeReason, Codec, FrameDecoder, Latent, Message, PROTOCOL_VERSION, WelcomeStatus,
};
use serde_json::{Value, json};

use latentcam_testkit::VTEST;

pub(crate) fn scratch(name: &str) -> latentcam_testkit::Scratch {
    latentcam_testkit::scratch("serve", name)
}

/// A `latentcam-host serve` process on an ephemeral loopback port.
pub(crate) struct Host {
    child: Child,
    pub(crate) address: String,
    /// Base URL of the HTTP API, when started with `--http`.
    http: Option<String>,
    /// The HTTP API's token, when started with `--http`.
    token: Option<String>,
    /// UDP address, when started with `--udp`.
    pub(crate) udp: Option<String>,
}

impl Host {
    /// A host on an ephemeral port.
    pub(crate) fn start(jsonl: &Path) -> Self {
        Self::start_at(jsonl, "127.0.0.1:0")
    }

    fn start_at(jsonl: &Path, address: &str) -> Self {
        Self::start_with(jsonl, address, &[])
    }

    /// A host on `address`, retrying while a crashed predecessor's port is
    /// still being released.
    pub(crate) fn start_with(jsonl: &Path, address: &str, extra: &[&str]) -> Self {
        Self::launch(jsonl, address, extra, None)
    }

    /// A host on an ephemeral port whose process may have at most `files`
    /// descriptors open (through util-linux's `prlimit`).
    pub(crate) fn start_limited(jsonl: &Path, files: u32, extra: &[&str]) -> Self {
        Self::launch(jsonl, "127.0.0.1:0", extra, Some(files))
    }

    fn launch(jsonl: &Path, address: &str, extra: &[&str], files: Option<u32>) -> Self {
        let deadline = Instant::now() + Duration::from_secs(10);
        // With `--http` and no access flag of the test's own, the API
        // gets a token file beside the results (created by the host).
        let token_file = jsonl.with_file_name("http.token");
        let access: Vec<&std::ffi::OsStr> = if extra.contains(&"--http")
            && !extra
                .iter()
                .any(|a| a.starts_with("--http-token-file") || *a == "--http-allow-anonymous")
        {
            vec!["--http-token-file".as_ref(), token_file.as_os_str()]
        } else {
            Vec::new()
        };
        loop {
            let mut command = match files {
                Some(n) => {
                    let mut c = Command::new("prlimit");
                    c.arg(format!("--nofile={n}:{n}"))
                        .arg("--")
                        .arg(env!("CARGO_BIN_EXE_latentcam-host"))
                        .env("LATENTCAM_HOST_CONFIG", "");
                    c
                }
                None => crate::common::host_command(),
            };
            let mut child = command
                .args(["serve", "--tcp", address, "--models"])
                .arg(repo().join("models"))
                .arg("--jsonl")
                .arg(jsonl)
                .args(extra)
                .args(&access)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn latentcam-host");
            let stderr = child.stderr.take().unwrap();
            let (tx, rx) = mpsc::channel();
            thread::spawn(move || {
                let (mut http, mut udp) = (None, None);
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("host: {line}");
                    if let Some((_, url)) = line.split_once("HTTP API on ") {
                        http = Some(url.trim().to_owned());
                    } else if let Some((what, address)) = line.split_once(" bound to ")
                        && what.contains("udp ")
                    {
                        udp = Some(address.trim().to_owned());
                    } else if let Some((_, bound)) = line.split_once("listening on ") {
                        let _ = tx.send(Some((bound.trim().to_owned(), http.take(), udp.take())));
                    }
                }
                let _ = tx.send(None);
            });
            if let Ok(Some((address, http, udp))) = rx.recv_timeout(Duration::from_secs(60)) {
                let token = (!access.is_empty()).then(|| {
                    std::fs::read_to_string(&token_file)
                        .unwrap()
                        .trim()
                        .to_owned()
                });
                return Self {
                    child,
                    address,
                    http,
                    token,
                    udp,
                };
            }
            let _ = child.wait();
            assert!(Instant::now() < deadline, "cannot listen on {address}");
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    /// The host's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Base URL of the HTTP API (started with `--http`).
    pub(crate) fn http(&self) -> &str {
        self.http.as_deref().expect("HTTP API address")
    }

    /// A client of the HTTP API with the host's token (started with
    /// `--http` and no access flag of the test's own).
    pub(crate) fn api(&self) -> common::http::Api {
        common::http::Api {
            base: self.http.clone().expect("HTTP API address"),
            token: self.token.clone().expect("HTTP API token"),
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub(crate) fn stop(mut self) {
        self.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "host exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "host did not stop on SIGTERM");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: a crash.
    fn crash(mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An edge configuration replaying `input` to `address` over TCP.
pub(crate) fn edge_config(input: &Path, address: &str, spool: &Path, device: &str) -> EdgeConfig {
    let mut c = EdgeConfig::default();
    c.device.id = device.to_owned();
    c.model.dir = repo().join("models");
    c.source.kind = SourceKind::Replay;
    c.source.path = input.to_path_buf();
    c.link.kind = LinkKind::Tcp;
    c.link.address = address.to_owned();
    c.spool.dir = spool.to_path_buf();
    c
}

/// Runs the edge pipeline in a thread.
pub(crate) fn run_edge(config: EdgeConfig, max_frames: u64) -> thread::JoinHandle<Report> {
    thread::spawn(move || {
        let stop = Arc::new(AtomicBool::new(false));
        let (parts, mut settings) = assemble::open_all(&config, Arc::clone(&stop)).unwrap();
        settings.max_frames = Some(max_frames);
        settings.drain_timeout = Duration::from_secs(30);
        pipeline::run(parts, settings, stop, None).unwrap()
    })
}

/// The result lines of a results file.
pub(crate) fn results(jsonl: &Path) -> Vec<Value> {
    std::fs::read_to_string(jsonl)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub(crate) fn seqs_of(lines: &[Value], device: &str) -> Vec<u64> {
    lines
        .iter()
        .filter(|l| l["device"] == device)
        .map(|l| l["seq"].as_u64().unwrap())
        .collect()
}

pub(crate) fn wait_for_lines(jsonl: &Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while results(jsonl).len() < n {
        assert!(Instant::now() < deadline, "fewer than {n} results arrived");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn photos_are_classified_like_the_reference() {
    let dir = scratch("photos");
    let jsonl = dir.join("results.jsonl");
    let originals = repo().join("models/efficientnet-lite0/fixtures/originals");
    // Enroll one photo for the few-shot head, through the CLI.
    let store = dir.join("fewshot.bin");
    let enrolled = crate::common::host_command()
        .args(["enroll", "--label", "my-butterfly", "--store"])
        .arg(&store)
        .arg("--models")
        .arg(repo().join("models"))
        .arg(originals.join("butterfly.jpg"))
        .output()
        .unwrap();
    assert!(enrolled.status.success(), "{enrolled:?}");
    let store_arg = store.display().to_string();
    let records = dir.join("records");
    let records_arg = records.display().to_string();
    let host = Host::start_with(
        &jsonl,
        "127.0.0.1:0",
        &[
            "--fewshot",
            &store_arg,
            "--anomaly",
            "--record",
            &records_arg,
        ],
    );
    let mut config = edge_config(&originals, &host.address, &dir.join("spool"), "door");
    config.source.unpaced = true;
    let report = run_edge(config, 100).join().unwrap();
    assert_eq!(report.encoded, 3);
    assert_eq!(report.session.spool_pending, 0, "all acknowledged");
    host.stop();

    // The reference's onnxruntime top-1 for each original photo.
    let mut expected: Vec<(String, u64)> = latentcam_testkit::Reference::load()
        .originals()
        .map(|p| (p.name.clone(), u64::from(p.top5_fp32[0])))
        .collect();
    expected.sort();
    let lines = results(&jsonl);
    assert_eq!(seqs_of(&lines, "door"), vec![0, 1, 2]);
    for (line, (name, class)) in lines.iter().zip(&expected) {
        let top = &line["heads"]["imagenet"][0];
        eprintln!("{name}: {} {:.3}", top["label"], top["p"]);
        assert_eq!(top["class"].as_u64(), Some(*class), "{name}: {line}");
        assert_eq!(line["payload_bytes"], 1288);
        // The enrolled photo is recognised; the others are not.
        let fewshot = &line["heads"]["fewshot"];
        eprintln!("{name}: few-shot {fewshot}");
        let expected = if name == "butterfly.jpg" {
            "my-butterfly"
        } else {
            "unknown"
        };
        assert_eq!(fewshot["label"], expected, "{name}: {fewshot}");
        // Three frames are still the anomaly head's warm-up.
        assert_eq!(line["heads"]["anomaly"]["warm"], false);
    }

    // The host's own recording replays to the same answers.
    let recorded: Vec<PathBuf> = std::fs::read_dir(&records)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let replayed = dir.join("replayed.jsonl");
    let out = crate::common::host_command()
        .args(["replay", "--models"])
        .arg(repo().join("models"))
        .arg("--jsonl")
        .arg(&replayed)
        .arg(&recorded[0])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let again = results(&replayed);
    assert_eq!(again.len(), 3);
    for (a, b) in again.iter().zip(&lines) {
        assert_eq!(a["seq"], b["seq"]);
        assert_eq!(a["heads"]["imagenet"][0], b["heads"]["imagenet"][0]);
    }
}

#[test]
fn a_host_crash_loses_and_repeats_nothing() {
    let dir = scratch("crash");
    let jsonl = dir.join("results.jsonl");
    let host = Host::start(&jsonl);
    // vtest.avi at 20 fps: the crash lands mid-stream.
    let mut config = edge_config(Path::new(VTEST), &host.address, &dir.join("spool"), "hall");
    config.source.fps = 20.0;
    let edge = run_edge(config, 120);
    wait_for_lines(&jsonl, 25);
    let address = host.address.clone();
    host.crash();
    thread::sleep(Duration::from_secs(1));
    // The same address: the edge reconnects to where it was configured.
    let host = Host::start_at(&jsonl, &address);
    let report = edge.join().unwrap();
    host.stop();
    let seqs = seqs_of(&results(&jsonl), "hall");
    eprintln!(
        "{} encoded, {} sent live, {} from the spool, {} connects",
        report.encoded,
        report.session.sent,
        report.session.sent_from_spool,
        report.session.connects
    );
    assert!(report.session.connects >= 2);
    assert_eq!(report.session.spool_pending, 0);
    assert_eq!(seqs, (0..report.encoded).collect::<Vec<_>>());
}

// ----------------------------------------------------------- hostile peers

fn hello(model_id: &str, protocol: u16) -> Vec<u8> {
    latentcam_testkit::hello::hello_frame("intruder", model_id, [0; 32], protocol)
}

/// What the host sends back before closing: (Welcome status, Bye reason).
fn answer(address: &str, bytes: &[u8]) -> (Option<WelcomeStatus>, Option<ByeReason>) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // The host may close while we still write garbage; that is the point.
    let _ = stream.write_all(bytes);
    let mut received = Vec::new();
    let _ = stream.read_to_end(&mut received);
    let (mut welcome, mut bye) = (None, None);
    let mut decoder: Box<FrameDecoder<MAX_FRAME_LEN>> = Box::default();
    decoder.feed_all(&received, |m| match m {
        Ok(Message::Welcome(w)) => welcome = Some(w.status),
        Ok(Message::Bye(b)) => bye = Some(b.reason),
        _ => {}
    });
    (welcome, bye)
}

#[test]
fn hostile_peers_lose_only_their_own_connection() {
    let dir = scratch("hostile");
    let jsonl = dir.join("results.jsonl");
    let host = Host::start(&jsonl);
    let mut config = edge_config(Path::new(VTEST), &host.address, &dir.join("spool"), "gate");
    config.source.fps = 20.0;
    let edge = run_edge(config, 60);
    wait_for_lines(&jsonl, 5);

    // Random bytes (many delimiters, no valid frame): closed as a violation.
    let mut noise = vec![0u8; 64 * 1024];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x >> 56) as u8 & 0x0f; // small values: plenty of zero bytes
    }
    assert_eq!(
        answer(&host.address, &noise),
        (None, Some(ByeReason::ProtocolViolation))
    );
    // Oversized frames: rejected without buffering, then closed.
    let mut oversized = Vec::new();
    for _ in 0..16 {
        oversized.push(0);
        oversized.extend(std::iter::repeat_n(0x55u8, MAX_FRAME_LEN + 100));
    }
    oversized.push(0);
    assert_eq!(
        answer(&host.address, &oversized),
        (None, Some(ByeReason::ProtocolViolation))
    );
    // A model the host does not know, and a future protocol version.
    assert_eq!(
        answer(
            &host.address,
            &hello("someone-elses-model", PROTOCOL_VERSION.into())
        ),
        (Some(WelcomeStatus::UnknownModel), None)
    );
    assert_eq!(
        answer(
            &host.address,
            &hello(
                "efficientnet-lite0-imagenet-v1",
                u16::from(PROTOCOL_VERSION) + 1
            )
        ),
        (Some(WelcomeStatus::UnsupportedVersion), None)
    );
    // A latent without Hello.
    let latent = frame::encode_to_vec(&Message::Latent(Latent {
        seq: 0,
        capture_us: 0,
        frame_width: 1,
        frame_height: 1,
        codec: Codec::F32,
        payload: &[0; 16],
        mac: &[],
        wall: None,
    }))
    .unwrap();
    assert_eq!(
        answer(&host.address, &latent),
        (None, Some(ByeReason::ProtocolViolation))
    );

    // The honest device never noticed.
    let report = edge.join().unwrap();
    host.stop();
    assert_eq!(
        report.session.connects, 1,
        "the good device kept its connection"
    );
    assert_eq!(report.session.spool_pending, 0);
    let lines = results(&jsonl);
    assert_eq!(
        seqs_of(&lines, "gate"),
        (0..report.encoded).collect::<Vec<_>>()
    );
    assert!(lines.iter().all(|l| l["device"] == "gate"));
}

// ------------------------------------------------------- HTTP and live page

/// An authenticated GET: status and body.
fn get(api: &common::http::Api, path: &str) -> (u16, String) {
    let answer = api.get(path);
    (answer.status, answer.text())
}

/// An authenticated POST of JSON: status and body.
fn request(api: &common::http::Api, method: &str, path: &str, body: &str) -> (u16, String) {
    request_bytes(api, method, path, "application/json", body.as_bytes())
}

/// An authenticated POST: status and body.
fn request_bytes(
    api: &common::http::Api,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, String) {
    assert_eq!(method, "POST");
    let answer = api.post(path, content_type, body);
    (answer.status, answer.text())
}

/// The live page as headless Chromium renders it (Debian's chromium;
/// scripts/setup.sh installs it) after logging in through the form (the
/// login page submits a token given after `#` in its address): its DOM,
/// and a 1280×900 screenshot written to `shot`.
pub(crate) fn live_page(api: &common::http::Api, shot: &Path) -> String {
    let chromium = |extra: &[String]| {
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--window-size=1280,900",
                "--virtual-time-budget=5000",
            ])
            .args(extra)
            .arg(format!("{}login#token={}", api.base, api.token))
            .stderr(Stdio::null())
            .output()
            .expect("chromium is needed for the live-page test: apt-get install chromium")
    };
    let out = chromium(&["--dump-dom".to_owned()]);
    let shot_out = chromium(&[format!("--screenshot={}", shot.display())]);
    assert!(shot_out.status.success(), "chromium screenshot failed");
    let png = image::open(shot).expect("a PNG screenshot");
    assert_eq!((png.width(), png.height()), (1280, 900));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether the picture at `path` has a pixel within a few steps of `rgb`.
pub(crate) fn has_colour(path: &Path, rgb: [u8; 3]) -> bool {
    let png = image::open(path).unwrap().to_rgb8();
    png.pixels()
        .any(|p| p.0.iter().zip(rgb).all(|(&a, b)| a.abs_diff(b) <= 6))
}

/// `iso` is an ISO-8601 UTC time within a minute of now.
fn assert_near_now(iso: &str) {
    let t = humantime::parse_rfc3339(iso).unwrap_or_else(|e| panic!("{iso:?}: {e}"));
    assert!(iso.ends_with('Z'), "{iso} is not UTC");
    let now = SystemTime::now();
    let off = now.duration_since(t).unwrap_or_else(|e| e.duration());
    assert!(off < Duration::from_secs(60), "{iso} is {off:?} from now");
}

#[test]
fn api_metrics_and_the_live_page_in_headless_chromium() {
    let dir = scratch("http");
    let jsonl = dir.join("results.jsonl");
    let index = dir.join("latents.idx").display().to_string();
    let host = Host::start_with(
        &jsonl,
        "127.0.0.1:0",
        &[
            "--http",
            "127.0.0.1:0",
            "--index",
            &index,
            "--anomaly",
            "--offline-after",
            "5",
        ],
    );
    let api = host.api();
    let originals = repo().join("models/efficientnet-lite0/fixtures/originals");
    let mut config = edge_config(&originals, &host.address, &dir.join("spool"), "porch");
    config.source.unpaced = true;
    let report = run_edge(config, 100).join().unwrap();
    assert_eq!(report.encoded, 3);

    let (status, body) = get(&api, "/api/devices");
    let asked = Instant::now();
    assert_eq!(status, 200);
    let devices: Value = serde_json::from_str(&body).unwrap();
    let porch = &devices["devices"][0];
    assert_eq!(porch["id"], "porch");
    assert_eq!(porch["record"]["latents"], 3);
    // Just heard from: online, seen a moment ago on the host's clock.
    assert_eq!(porch["online"], true, "{porch}");
    assert!(porch["seen_seconds_ago"].as_f64().unwrap() < 5.0, "{porch}");
    assert_near_now(porch["last_seen"].as_str().unwrap());
    assert!(porch["spool_depth"].is_u64() || porch["spool_depth"].is_null());
    let (status, body) = get(&api, "/api/devices/porch/latest");
    assert_eq!(status, 200);
    let latest: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(latest["seq"], 2);
    // Real time: the edge's wall clock at capture and the host's at receipt.
    assert_near_now(latest["captured_at"].as_str().unwrap());
    assert_near_now(latest["received_at"].as_str().unwrap());
    assert!(latest["clock_synced"].is_boolean(), "{latest}");
    assert_eq!(latest["heads"]["search"]["indexed"], 3);
    let (status, _) = get(&api, "/api/devices/nobody/latest");
    assert_eq!(status, 404);

    // Frames like a stored one: itself first.
    let (status, body) = get(&api, "/api/search?device=porch&seq=1&k=2");
    assert_eq!(status, 200, "{body}");
    let hits: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(hits["hits"][0]["seq"], 1);
    assert!(hits["hits"][0]["similarity"].as_f64().unwrap() > 0.999);
    assert_eq!(hits["hits"].as_array().unwrap().len(), 2);
    // By a latent; a wrong dimension is a clear 400.
    let query = serde_json::to_string(&json!({"latent": vec![0.5f32; 1280], "k": 3})).unwrap();
    let (status, body) = request(&api, "POST", "/api/search", &query);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["hits"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let (status, body) = request(&api, "POST", "/api/search", r#"{"latent": [1, 2, 3]}"#);
    assert_eq!(status, 400, "{body}");
    let (status, metrics) = get(&api, "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("latentcam_latents_total{device=\"porch\"} 3"),
        "{metrics}"
    );
    assert!(metrics.contains("latentcam_head_runs_total{head=\"imagenet\"} 3"));
    assert!(
        metrics.contains("latentcam_device_up{device=\"porch\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("latentcam_device_last_seen_timestamp_seconds{device=\"porch\"} 1"));

    // Silent for the offline window: offline everywhere, last seen kept.
    std::thread::sleep(Duration::from_secs(5).saturating_sub(asked.elapsed()));
    let devices = api.get("/api/devices").json();
    let porch = &devices["devices"][0];
    assert_eq!(porch["online"], false, "{porch}");
    assert_near_now(porch["last_seen"].as_str().unwrap());
    let (_, metrics) = get(&api, "/metrics");
    assert!(
        metrics.contains("latentcam_device_up{device=\"porch\"} 0"),
        "{metrics}"
    );

    // The live page renders the device and its latest top label in a real
    // browser (Debian's chromium, headless; scripts/setup.sh installs it),
    // which logs in through the form first: the login page submits a token
    // given after `#` in its address.
    let top_label = latest["heads"]["imagenet"][0]["label"]
        .as_str()
        .unwrap()
        .to_owned();
    let shot = dir.join("live-offline.png");
    let dom = live_page(&api, &shot);
    if let Some(keep) = std::env::var_os("LATENTCAM_KEEP_SCREENSHOTS") {
        std::fs::copy(&shot, Path::new(&keep).join("live-offline.png")).unwrap();
    }
    assert!(dom.contains(r#"data-device="porch""#), "{dom}");
    assert!(
        dom.contains(&top_label),
        "top label {top_label:?} missing:\n{dom}"
    );
    assert!(
        dom.contains("1 device(s), 0 online, 3 latents processed"),
        "{dom}"
    );
    assert!(
        dom.contains(r#"<span class="state offline">offline</span>"#),
        "{dom}"
    );
    assert!(dom.contains("last seen "), "{dom}");
    // Three latents are too few for the anomaly head's reference of normal.
    assert!(dom.contains("anomaly: warming up"), "{dom}");
    // The forms that use the API are there.
    assert!(dom.contains(r#"<form id="enroll""#) && dom.contains(r#"<form id="search""#));
    // The style sheet (served by the host, like the script) applied: the
    // offline badge is drawn in its red.
    assert!(has_colour(&shot, [0xb3, 0x26, 0x1e]), "{}", shot.display());
    host.stop();
}

#[test]
fn photos_enrolled_and_searched_over_http() {
    let dir = scratch("enroll");
    let jsonl = dir.join("results.jsonl");
    let store = dir.join("fewshot.bin");
    let index = dir.join("latents.idx");
    let host = Host::start_with(
        &jsonl,
        "127.0.0.1:0",
        &[
            "--http",
            "127.0.0.1:0",
            "--fewshot",
            store.to_str().unwrap(),
            "--index",
            index.to_str().unwrap(),
        ],
    );
    let api = host.api();
    let fixtures = repo().join("models/efficientnet-lite0/fixtures");
    // Enrol 224×224 crops (PNG) while the host runs; the devices will send
    // the full photos (JPEG) they were cut from.
    for (label, crop) in [("fish", "HappyFish.png"), ("squirrel", "squirrel_cls.png")] {
        let photo = std::fs::read(fixtures.join("crops").join(crop)).unwrap();
        let (status, body) = request_bytes(
            &api,
            "POST",
            &format!("/api/enroll?label={label}"),
            "image/png",
            &photo,
        );
        assert_eq!(status, 200, "{body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer, json!({"label": label, "examples": 1}));
    }
    // Bad uploads get a clear refusal and change nothing.
    let (status, body) = request_bytes(
        &api,
        "POST",
        "/api/enroll?label=noise",
        "image/jpeg",
        b"not a photo",
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("JPEG or PNG"), "{body}");
    let crop = std::fs::read(fixtures.join("crops/butterfly.png")).unwrap();
    let (status, _) = request_bytes(&api, "POST", "/api/enroll", "image/png", &crop);
    assert_eq!(status, 400, "a label is required");

    let originals = fixtures.join("originals");
    let mut config = edge_config(&originals, &host.address, &dir.join("spool"), "desk");
    config.source.unpaced = true;
    let report = run_edge(config, 100).join().unwrap();
    assert_eq!(report.encoded, 3);
    wait_for_lines(&jsonl, 3);

    // Photos in name order: HappyFish, butterfly, squirrel_cls.
    let lines = results(&jsonl);
    let labels: Vec<&str> = lines
        .iter()
        .map(|l| l["heads"]["fewshot"]["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["fish", "unknown", "squirrel"], "{lines:#?}");

    // Search by photo: the butterfly's own frame comes first.
    let photo = std::fs::read(originals.join("butterfly.jpg")).unwrap();
    let (status, body) = request_bytes(&api, "POST", "/api/search/image?k=3", "image/jpeg", &photo);
    assert_eq!(status, 200, "{body}");
    let hits: Value = serde_json::from_str(&body).unwrap();
    eprintln!("search by image: {hits}");
    assert_eq!(hits["hits"].as_array().unwrap().len(), 3);
    assert_eq!(hits["hits"][0]["device"], "desk");
    assert_eq!(hits["hits"][0]["seq"], 1);
    let best = hits["hits"][0]["similarity"].as_f64().unwrap();
    let next = hits["hits"][1]["similarity"].as_f64().unwrap();
    assert!(best > 0.95 && next < 0.6, "{hits}");
    let (status, _) = request_bytes(&api, "POST", "/api/search/image", "image/jpeg", b"");
    assert_eq!(status, 400);
    host.stop();

    // Enrolments were saved: the store on disk holds both labels.
    let saved = latentcam_host::heads::fewshot::FewShotStore::load(&store, 1280).unwrap();
    let labels: Vec<(&str, usize)> = saved.labels().collect();
    assert_eq!(labels, [("fish", 1), ("squirrel", 1)]);
}

/// The results file rotates at `--jsonl-max-mb`: the full file becomes
/// `FILE.1`, the new one starts with every device's progress, and a
/// restarted host resumes from it alone (no latent is lost or repeated).
#[test]
fn the_results_file_rotates_and_a_restart_resumes_from_its_checkpoints() {
    let dir = scratch("rotate");
    let jsonl = dir.join("results.jsonl");
    let rotated = dir.join("results.jsonl.1");
    // An earlier run's results: 1 MiB of lines of a device now quiet.
    let mut earlier = String::new();
    let mut attic = 0u64;
    while earlier.len() < 1 << 20 {
        earlier += &format!("{{\"device\":\"attic\",\"seq\":{attic},\"heads\":{{}}}}\n");
        attic += 1;
    }
    std::fs::write(&jsonl, &earlier).unwrap();
    let flags = [
        "--jsonl-max-mb",
        "1",
        "--jsonl-keep",
        "1",
        "--no-imagenet",
        "--anomaly",
    ];
    let spool = dir.join("spool");
    let host = Host::start_with(&jsonl, "127.0.0.1:0", &flags);
    let mut config = edge_config(Path::new(VTEST), &host.address, &spool, "gate");
    config.source.unpaced = true;
    let report = run_edge(config.clone(), 6).join().unwrap();
    assert_eq!(report.session.spool_pending, 0, "{:?}", report.session);
    host.stop();

    let old = std::fs::read_to_string(&rotated).expect("the full file was rotated");
    assert!(old.starts_with(&earlier));
    let current = results(&jsonl);
    let checkpoints: Vec<&Value> = current
        .iter()
        .take_while(|l| l["checkpoint"] == true)
        .collect();
    assert!(
        checkpoints
            .iter()
            .any(|l| l["device"] == "attic" && l["seq"] == attic - 1),
        "the quiet device's progress is carried: {checkpoints:?}"
    );
    assert!(
        current[checkpoints.len()..]
            .iter()
            .all(|l| l.get("checkpoint").is_none())
    );

    // A restart resumes from the new file alone: the edge goes on from
    // seq 6 and nothing is delivered twice.
    let host = Host::start_with(&jsonl, "127.0.0.1:0", &flags);
    config.link.address = host.address.clone();
    let report = run_edge(config, 3).join().unwrap();
    assert_eq!(report.session.spool_pending, 0, "{:?}", report.session);
    host.stop();
    let mut delivered: Vec<Value> = results(&rotated);
    delivered.extend(results(&jsonl));
    let gate: Vec<u64> = delivered
        .iter()
        .filter(|l| l["device"] == "gate" && l.get("checkpoint").is_none())
        .map(|l| l["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(gate, (0..9).collect::<Vec<_>>());
    let _ = std::fs::remove_dir_all(&dir);
}
