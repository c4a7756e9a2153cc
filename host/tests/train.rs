//! A head trained later on stored latents, through the CLI: real labelled
//! images (Debian's Fashion-MNIST, all 10 classes, the linear probe's
//! 2000 training and 1000 test images) are encoded into a recording of
//! 8-bit latents as a device sends them, `train` fits a classifier from the
//! recording and a labels file and reports accuracy on a test labels file,
//! and `replay` runs the new head over the recording.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::idx;
use latentcam_firmware::batch::{self, BatchSettings};
use latentcam_firmware::encoder::{self, EncoderOptions};
use latentcam_firmware::manifest::Manifest;
use latentcam_firmware::preprocess::Preprocessor;
use latentcam_wire::Codec;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Fashion-MNIST's classes, by label index.
const CLASSES: [&str; 10] = [
    "tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot",
];
/// The linear probe of the models issue: the first 2000 training images,
/// the first 1000 test images (`host/tests/model_accuracy.rs`, fp32
/// latents, 85.8 % reported in the README).
const TRAIN: usize = 2000;
const TEST: usize = 1000;
const PROBE_ACCURACY: f64 = 85.8;

#[test]
fn train_then_replay_a_new_head_on_stored_latents() {
    let dir = std::env::temp_dir().join(format!("latentcam-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    // Training images first (seq 0..2000), then test images (seq
    // 2000..3000); file names sort in that order, so seq = position.
    let mut truth = Vec::new();
    let (mut train_csv, mut test_csv) = (String::from("seq,label\n"), String::from("seq,label\n"));
    for (split, count) in [("train", TRAIN), ("t10k", TEST)] {
        let (shape, pixels) = idx(&format!("{split}-images-idx3-ubyte.gz"));
        let (_, labels) = idx(&format!("{split}-labels-idx1-ubyte.gz"));
        let (h, w) = (shape[1], shape[2]);
        for (i, &label) in labels.iter().take(count).enumerate() {
            let seq = truth.len();
            let grey = &pixels[i * h * w..(i + 1) * h * w];
            let image = image::GrayImage::from_raw(w as u32, h as u32, grey.to_vec()).unwrap();
            image.save(images.join(format!("{seq:05}.png"))).unwrap();
            let csv = if split == "train" {
                &mut train_csv
            } else {
                &mut test_csv
            };
            csv.push_str(&format!("{seq},{}\n", CLASSES[label as usize]));
            truth.push(CLASSES[label as usize]);
        }
    }
    let labels_csv = dir.join("labels.csv");
    std::fs::write(&labels_csv, train_csv).unwrap();
    let test_labels_csv = dir.join("test.csv");
    std::fs::write(&test_labels_csv, test_csv).unwrap();

    // The recording an edge would have sent (U8 latents, wire format).
    let manifest = Manifest::load(repo().join("models")).unwrap();
    let mut encoder = encoder::open(&manifest, &EncoderOptions::default()).unwrap();
    let mut pre = Preprocessor::new(&manifest.preprocessing, encoder.info().layout);
    let recording = dir.join("shop.lcr");
    let paths = batch::expand_inputs(&[images]).unwrap();
    let report = batch::encode_images(
        &paths,
        encoder.as_mut(),
        &mut pre,
        &BatchSettings {
            device_id: "shelf-cam".into(),
            codec: Codec::U8Affine,
            preprocessing_id: manifest.preprocessing.id.clone(),
        },
        &mut std::fs::File::create(&recording).unwrap(),
    )
    .unwrap();
    assert_eq!(report.encoded as usize, TRAIN + TEST);

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
    // least as well as the models issue's probe on fp32 latents.
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
