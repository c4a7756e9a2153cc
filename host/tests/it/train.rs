//! A head trained later on stored latents, through the CLI: real labelled
//! images (Debian's Fashion-MNIST, all 10 classes, the linear probe's
//! 2000 training and 1000 test images) are encoded into a recording of
//! 8-bit latents as a device sends them, `train` fits a classifier from the
//! recording and a labels file and reports accuracy on a test labels file,
//! and `replay` runs the new head over the recording.

use std::process::Command;

use crate::common::fashion::{self, CLASSES, TEST, TRAIN};
use latentcam_firmware::encoder::{self, EncoderOptions};
use latentcam_firmware::manifest::Manifest;
use latentcam_firmware::pipeline;
use latentcam_testkit::repo;
use latentcam_wire::{Codec, Latent, Message, frame};
use serde_json::Value;

/// The linear probe of `model_accuracy.rs` on the same images (fp32
/// latents; 85.8 % in the README's model figures).
const PROBE_ACCURACY: f64 = 85.8;

#[test]
fn train_then_replay_a_new_head_on_stored_latents() {
    let dir = latentcam_testkit::scratch("train", "replay");
    // The images' fp32 latents, encoded once for the Fashion-MNIST tests
    // through the edge's `encode` path (`common::fashion`).
    let (train, test) = (fashion::train(), fashion::test());
    assert_eq!((train.len(), test.len()), (TRAIN, TEST));
    // Training images first (seq 0..2000), then test images (seq
    // 2000..3000), so seq = position.
    let mut truth = Vec::new();
    let (mut train_csv, mut test_csv) = (String::from("seq,label\n"), String::from("seq,label\n"));
    for (split, csv) in [(train, &mut train_csv), (test, &mut test_csv)] {
        for &label in &split.labels {
            let seq = truth.len();
            csv.push_str(&format!("{seq},{}\n", CLASSES[label as usize]));
            truth.push(CLASSES[label as usize]);
        }
    }
    let labels_csv = dir.join("labels.csv");
    std::fs::write(&labels_csv, train_csv).unwrap();
    let test_labels_csv = dir.join("test.csv");
    std::fs::write(&test_labels_csv, test_csv).unwrap();

    // The recording an edge would have sent: its Hello, then each latent in
    // the U8 codec, framed as on the wire.
    let manifest = Manifest::load(repo().join("models")).unwrap();
    let encoder = encoder::open(&manifest, &EncoderOptions::default()).unwrap();
    let codec = Codec::U8Affine;
    let mut bytes = pipeline::hello_frame(
        encoder.info(),
        "shelf-cam",
        &manifest.preprocessing.id,
        codec,
    )
    .unwrap();
    let mut payload = vec![0u8; codec.payload_len(manifest.latent_dim).unwrap()];
    let mut framed = vec![0u8; frame::ENCODE_BUFFER_LEN];
    let latents = (0..TRAIN).map(|i| train.latent(i));
    for (seq, latent) in latents.chain((0..TEST).map(|i| test.latent(i))).enumerate() {
        let len = codec.encode(latent, &mut payload).unwrap();
        let message = Message::Latent(Latent {
            seq: seq as u64,
            capture_us: seq as u64 * 100_000,
            frame_width: 28,
            frame_height: 28,
            codec,
            payload: &payload[..len],
            mac: &[],
            wall: None,
        });
        let n = frame::encode(&message, &mut framed).unwrap();
        bytes.extend_from_slice(&framed[..n]);
    }
    let recording = dir.join("shop.lcr");
    std::fs::write(&recording, bytes).unwrap();

    let host = env!("CARGO_BIN_EXE_latentcam-host");
    let head = dir.join("shelf.head");
    let out = Command::new(host)
        .args(["train", "--models"])
        .arg(repo().join("models"))
        .arg("--recording")
        .arg(&recording)
        .arg("--labels")
        .arg(&labels_csv)
        .arg("--test-labels")
        .arg(&test_labels_csv)
        .arg("--out")
        .arg(&head)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{stdout}");
    let accuracy: f64 = stdout
        .split("held-out top-1 ")
        .nth(1)
        .and_then(|s| s.split('%').next())
        .and_then(|s| s.parse().ok())
        .expect("accuracy in the output");
    assert!(stdout.contains("trained on 2000 latents") && stdout.contains("on 1000"));
    // The head trained later on the device's stored 8-bit latents does at
    // least as well as the linear probe on fp32 latents.
    assert!(
        accuracy >= PROBE_ACCURACY,
        "trained head {accuracy}% < linear probe {PROBE_ACCURACY}%"
    );

    // The new head over the old recording answers as the training report
    // said: the same accuracy on the test latents.
    let results = dir.join("replayed.jsonl");
    let out = Command::new(host)
        .args(["replay", "--models"])
        .arg(repo().join("models"))
        .arg("--head")
        .arg(&head)
        .arg("--jsonl")
        .arg(&results)
        .arg(&recording)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = std::fs::read_to_string(&results)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), TRAIN + TEST);
    let correct = lines
        .iter()
        .filter(|line| line["seq"].as_u64().unwrap() as usize >= TRAIN)
        .filter(|line| {
            line["heads"]["trained"]["label"] == truth[line["seq"].as_u64().unwrap() as usize]
        })
        .count();
    let replayed = correct as f64 / TEST as f64 * 100.0;
    eprintln!("replayed: {correct}/{TEST} test latents agree with their labels");
    assert!(
        (replayed - accuracy).abs() < 0.051,
        "replay {replayed:.1}% against train's report {accuracy}%"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
