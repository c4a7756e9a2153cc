//! One contract over every host ingest — TCP, UDP, a serial line (a socat
//! pty pair), a recording followed as it grows, and MQTT through a real
//! mosquitto — with the real edge pipeline as the device, the way the
//! edge's `link_suite` runs one contract over every link:
//!
//! - noise ahead of the stream, where the medium can carry it, is skipped;
//! - every latent gets one result line, in order, classified by the
//!   ImageNet head;
//! - an ingest that answers (TCP, serial, MQTT) welcomes the device and
//!   acknowledges every latent, so nothing is left in the device's spool.

use std::any::Any;
use std::path::{Path, PathBuf};

use latentcam_firmware::config::{EdgeConfig, LinkKind};
use latentcam_testkit::{Broker, PtyPair};

use crate::serve::{Host, edge_config, results, run_edge, scratch, seqs_of, wait_for_lines};
use latentcam_testkit::VTEST;

const FRAMES: u64 = 20;

/// Points the edge's configuration at an ingest of a running host.
type PointEdge = Box<dyn Fn(&Host, &mut EdgeConfig)>;

/// An ingest under test.
struct Case {
    /// The device id, and the scratch directory's name.
    device: &'static str,
    /// `latentcam-host serve` flags that add the ingest.
    serve: Vec<String>,
    /// Points the edge at the ingest.
    edge: PointEdge,
    /// Welcome and Acks come back.
    answers: bool,
    /// Run once the host is up, before the device starts.
    before: Box<dyn Fn(&Host)>,
    /// Keeps a pty pair or a broker alive for the test.
    _keep: Option<Box<dyn Any>>,
}

fn nothing(_: &Host) {}

fn tcp(_: &Path) -> Case {
    Case {
        device: "ingest-tcp",
        serve: Vec::new(),
        edge: Box::new(|host, config| {
            config.link.kind = LinkKind::Tcp;
            config.link.address = host.address.clone();
        }),
        answers: true,
        before: Box::new(|host| {
            // A stranger's garbage on its own connection changes nothing.
            use std::io::Write;
            let mut stranger = std::net::TcpStream::connect(&host.address).unwrap();
            stranger.write_all(&[0, 1, 2, 3, 0, 9, 9, 0]).unwrap();
        }),
        _keep: None,
    }
}

fn udp(_: &Path) -> Case {
    Case {
        device: "ingest-udp",
        serve: vec!["--udp".into(), "127.0.0.1:0".into()],
        edge: Box::new(|host, config| {
            config.link.kind = LinkKind::Udp;
            config.link.address = host.udp.clone().expect("UDP address");
        }),
        answers: false,
        before: Box::new(|host| {
            // A datagram of noise from another address changes nothing.
            let noise = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let udp = host.udp.as_deref().expect("UDP address");
            noise.send_to(&[0, 1, 2, 3, 0, 9, 9, 0], udp).unwrap();
        }),
        _keep: None,
    }
}

fn serial(_: &Path) -> Case {
    let line = PtyPair::new();
    let device_end = PathBuf::from(&line.paths[0]);
    Case {
        device: "ingest-serial",
        serve: vec![
            "--serial".into(),
            line.paths[1].clone(),
            "--baud".into(),
            "921600".into(),
        ],
        edge: Box::new(move |_, config| {
            config.link.kind = LinkKind::Serial;
            config.link.path = device_end.clone();
            config.link.baud = 921_600;
        }),
        answers: true,
        before: Box::new(nothing),
        _keep: Some(Box::new(line)),
    }
}

fn recording(dir: &Path) -> Case {
    let file = dir.join("edge.lcr");
    // Noise ahead of the stream is counted and skipped; what follows is
    // read while the file grows.
    std::fs::write(&file, [0xde, 0xad, 0xbe, 0xef, 0, 0, 1, 2, 0]).unwrap();
    Case {
        device: "ingest-recording",
        serve: vec![
            "--recording".into(),
            file.display().to_string(),
            "--follow".into(),
        ],
        edge: Box::new(move |_, config| {
            config.link.kind = LinkKind::File;
            config.link.path = file.clone();
        }),
        answers: false,
        before: Box::new(nothing),
        _keep: None,
    }
}

fn mqtt(dir: &Path) -> Case {
    let broker = Broker::start(&dir.join("broker"));
    let address = broker.address();
    Case {
        device: "ingest-mqtt",
        serve: vec![
            "--mqtt".into(),
            format!("mqtt://{address}"),
            "--group".into(),
            "suite".into(),
            "--worker".into(),
            "w1".into(),
        ],
        edge: Box::new(move |_, config| {
            config.link.kind = LinkKind::Mqtt;
            config.link.address = address.clone();
            // A worker owns its partitions a moment after it starts; a
            // Hello sent before is repeated after this long.
            config.mqtt.ack_timeout_seconds = 2.0;
        }),
        answers: true,
        before: Box::new(nothing),
        _keep: Some(Box::new(broker)),
    }
}

/// The contract every ingest keeps.
fn contract(case: impl FnOnce(&Path) -> Case) {
    let dir = scratch("ingest-suite");
    let case = case(&dir);
    let jsonl = dir.join("results.jsonl");
    let serve: Vec<&str> = case.serve.iter().map(String::as_str).collect();
    let host = Host::start_with(&jsonl, "127.0.0.1:0", &serve);
    (case.before)(&host);
    let mut config = edge_config(Path::new(VTEST), "", &dir.join("spool"), case.device);
    config.source.unpaced = true;
    (case.edge)(&host, &mut config);
    let report = run_edge(config, FRAMES).join().unwrap();
    assert_eq!(report.encoded, FRAMES, "{}", case.device);
    wait_for_lines(&jsonl, FRAMES as usize);
    if case.answers {
        assert!(report.session.welcomes >= 1, "{}: {report:?}", case.device);
        assert_eq!(
            report.session.spool_pending, 0,
            "{}: every latent acknowledged",
            case.device
        );
    }
    host.stop();
    let lines = results(&jsonl);
    assert_eq!(
        seqs_of(&lines, case.device),
        (0..FRAMES).collect::<Vec<_>>(),
        "{}",
        case.device
    );
    assert!(
        lines
            .iter()
            .all(|l| l["heads"]["imagenet"][0]["label"].is_string()),
        "{}: every latent classified",
        case.device
    );
}

#[test]
fn tcp_keeps_the_ingest_contract() {
    contract(tcp);
}

#[test]
fn udp_keeps_the_ingest_contract() {
    contract(udp);
}

#[test]
fn serial_keeps_the_ingest_contract() {
    contract(serial);
}

#[test]
fn a_followed_recording_keeps_the_ingest_contract() {
    contract(recording);
}

#[test]
fn mqtt_keeps_the_ingest_contract() {
    contract(mqtt);
}
