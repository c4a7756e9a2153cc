//! `latentcam-edge doctor` as a process against real counterparts: a TCP
//! peer that answers the doctor's `Hello` with `Welcome` (accepting or
//! refusing), a closed port, a socat pseudo-terminal as the serial port,
//! and absent camera, model and config. Each problem is one FAIL line with
//! a fix, and the exit status says whether anything failed.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::thread;
use std::time::Duration;

use latentcam_testkit::PtyPair;
use latentcam_testkit::repo;
use latentcam_wire::frame::{self, MAX_FRAME_LEN};
use latentcam_wire::{
    AuthChallenge, AuthScheme, FrameDecoder, Message, PROTOCOL_VERSION, Welcome, WelcomeStatus,
};

fn photos() -> String {
    repo()
        .join("models/efficientnet-lite0/fixtures/originals")
        .display()
        .to_string()
}

fn doctor(args: &[&str]) -> (Output, String) {
    let spool = std::env::temp_dir().join(format!("latentcam-doctor-{}", std::process::id()));
    let out = latentcam_testkit::program(env!("CARGO_BIN_EXE_latentcam-edge"))
        .arg("doctor")
        .arg("--models")
        .arg(repo().join("models"))
        .arg("--spool")
        .arg(&spool)
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    (out, text)
}

fn line<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find(|l| l.get(6..).is_some_and(|rest| rest.starts_with(name)))
        .unwrap_or_else(|| panic!("no {name} line in:\n{text}"))
}

/// A host that answers one connection's `Hello` with `status`, and returns
/// what the doctor sent.
fn host(status: WelcomeStatus, reason: &'static str) -> (String, thread::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let handle = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut decoder: Box<FrameDecoder<MAX_FRAME_LEN>> = Box::default();
        let (mut got, mut buf, mut answered) = (Vec::new(), [0u8; 4096], false);
        loop {
            let n = match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            got.extend_from_slice(&buf[..n]);
            let mut hello = false;
            decoder.feed_all(&buf[..n], |item| {
                hello |= matches!(item, Ok(Message::Hello(_)));
            });
            if hello && !answered {
                answered = true;
                let welcome = frame::encode_to_vec(&Message::Welcome(Welcome {
                    protocol: u16::from(PROTOCOL_VERSION),
                    status,
                    reason,
                    host_id: "doctor-test-host",
                    acked: Some(41),
                    auth: AuthChallenge {
                        scheme: AuthScheme::None,
                        host_nonce: [0; 16],
                        host_proof: &[],
                    },
                }))
                .unwrap();
                stream.write_all(&welcome).unwrap();
            }
        }
        got
    });
    (address, handle)
}

fn kinds(bytes: &[u8]) -> Vec<&'static str> {
    let mut decoder: Box<FrameDecoder<MAX_FRAME_LEN>> = Box::default();
    let mut out = Vec::new();
    decoder.feed_all(bytes, |item| match item {
        Ok(Message::Hello(_)) => out.push("hello"),
        Ok(Message::Bye(_)) => out.push("bye"),
        Ok(_) => out.push("other"),
        Err(_) => out.push("error"),
    });
    out
}

#[test]
fn a_healthy_setup_passes_with_a_real_handshake() {
    let (address, peer) = host(WelcomeStatus::Accepted, "welcome");
    let (out, text) = doctor(&[
        "--device-id",
        "doctor-cam",
        "--source",
        "replay",
        "--input",
        &photos(),
        "--link",
        "tcp",
        "--address",
        &address,
    ]);
    assert!(out.status.success(), "{text}");
    let model = line(&text, "model");
    assert!(
        model.starts_with("OK") && model.contains("verified"),
        "{model}"
    );
    assert!(line(&text, "backend").starts_with("OK"));
    let host = line(&text, "host");
    assert!(
        host.starts_with("OK")
            && host.contains("\"doctor-test-host\" accepted device \"doctor-cam\"")
            && host.contains("up to seq 41"),
        "{host}"
    );
    assert!(line(&text, "spool").starts_with("OK"));
    assert!(text.contains(" 0 FAIL"), "{text}");
    // The doctor said Hello and closed the session with Bye: nothing else.
    assert_eq!(kinds(&peer.join().unwrap()), ["hello", "bye"]);
}

#[test]
fn a_refusing_host_and_a_closed_port_fail_with_the_reason() {
    let (address, _peer) = host(
        WelcomeStatus::UnknownModel,
        "this host serves another model",
    );
    let (out, text) = doctor(&[
        "--source",
        "replay",
        "--input",
        &photos(),
        "--link",
        "tcp",
        "--address",
        &address,
    ]);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let host = line(&text, "host");
    assert!(
        host.starts_with("FAIL") && host.contains("this host serves another model"),
        "{host}"
    );

    // A port nobody listens on.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = closed.local_addr().unwrap().to_string();
    drop(closed);
    let (out, text) = doctor(&[
        "--source",
        "replay",
        "--input",
        &photos(),
        "--link",
        "tcp",
        "--address",
        &address,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(line(&text, "host").starts_with("FAIL"), "{text}");
    assert!(
        text.contains("fix: start `latentcam-host serve` there"),
        "{text}"
    );
}

#[test]
fn serial_port_camera_model_and_config_problems_each_get_a_fix() {
    // A real pseudo-terminal opens fine.
    let pty = PtyPair::new();
    let (_, text) = doctor(&[
        "--source",
        "replay",
        "--input",
        &photos(),
        "--link",
        "serial",
        "--link-path",
        &pty.paths[0],
    ]);
    assert!(line(&text, "serial").starts_with("OK"), "{text}");

    // No camera, no serial adapter, no models.
    let out = latentcam_testkit::program(env!("CARGO_BIN_EXE_latentcam-edge"))
        .args([
            "doctor",
            "--models",
            "/nonexistent/models",
            "--source",
            "v4l",
            "--input",
            "/dev/video97",
            "--link",
            "serial",
            "--link-path",
            "/dev/ttyUSB97",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for name in ["model", "camera", "serial"] {
        assert!(line(&text, name).starts_with("FAIL"), "{name}: {text}");
    }
    assert!(text.contains("/dev/video97 does not exist"), "{text}");
    assert!(
        text.contains("or set [model] dir / LATENTCAM_MODELS"),
        "{text}"
    );

    // A config file that does not parse.
    let bad =
        std::env::temp_dir().join(format!("latentcam-doctor-bad-{}.toml", std::process::id()));
    std::fs::write(&bad, "[link]\nkind = 7\n").unwrap();
    let out = latentcam_testkit::program(env!("CARGO_BIN_EXE_latentcam-edge"))
        .args(["doctor", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(text.starts_with("FAIL  config"), "{text}");
    let _ = std::fs::remove_file(bad);
}

/// A copy of the shipped models in a scratch directory.
fn models_copy(dir: &Path) -> PathBuf {
    let models = dir.join("models");
    let from = repo().join("models");
    std::fs::create_dir_all(models.join("efficientnet-lite0")).unwrap();
    std::fs::copy(from.join("manifest.toml"), models.join("manifest.toml")).unwrap();
    for entry in std::fs::read_dir(from.join("efficientnet-lite0")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(
                &path,
                models
                    .join("efficientnet-lite0")
                    .join(path.file_name().unwrap()),
            )
            .unwrap();
        }
    }
    models
}

/// A model file changed after installation, or gone, is a failure whose
/// fix is to reinstall it, in words that hold on a device (no build
/// features, no source checkout).
#[test]
fn a_tampered_or_missing_model_is_reinstalled() {
    let dir = latentcam_testkit::scratch("doctor", "tampered");
    let models = models_copy(&dir);
    let encoder = models.join("efficientnet-lite0/encoder-fp32.onnx");
    let mut bytes = std::fs::read(&encoder).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&encoder, &bytes).unwrap();
    let run = |what: &str| {
        let out = latentcam_testkit::program(env!("CARGO_BIN_EXE_latentcam-edge"))
            .args(["doctor", "--backend", "tract", "--precision", "fp32"])
            .args(["--source", "replay", "--input", &photos()])
            .args(["--link", "udp", "--address", "127.0.0.1:9"])
            .arg("--models")
            .arg(&models)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(1), "{what}: {text}");
        assert!(line(&text, "model").starts_with("FAIL"), "{what}: {text}");
        text
    };
    let text = run("tampered");
    assert!(
        text.contains("fix: the file was changed after it was installed: reinstall the models"),
        "{text}"
    );
    assert!(!text.contains("cargo feature"), "{text}");
    std::fs::remove_file(&encoder).unwrap();
    let text = run("missing");
    assert!(
        text.contains("fix: the file is missing: reinstall the models"),
        "{text}"
    );
}
