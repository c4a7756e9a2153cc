//! A head trained later on stored latents, through the CLI: real labelled
//! images (Debian's Fashion-MNIST) are encoded into a recording, `train`
//! fits a classifier from the recording and a labels file and reports
//! held-out accuracy, and `replay` runs the new head over the recording.

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

const CLASSES: [(u8, &str); 4] = [(0, "tshirt"), (1, "trouser"), (7, "sneaker"), (8, "bag")];
const PER_CLASS: usize = 30;

#[test]
fn train_then_replay_a_new_head_on_stored_latents() {
    let dir = std::env::temp_dir().join(format!("latentcam-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let (shape, pixels) = idx("t10k-images-idx3-ubyte.gz");
    let (_, labels) = idx("t10k-labels-idx1-ubyte.gz");
    let (h, w) = (shape[1], shape[2]);
    // The first PER_CLASS test images of each class, interleaved in file
    // order; file names sort in that order, so seq = position.
    let mut chosen = Vec::new();
    let mut taken = [0usize; 10];
    for (i, &label) in labels.iter().enumerate() {
        if CLASSES.iter().any(|(c, _)| *c == label) && taken[label as usize] < PER_CLASS {
            taken[label as usize] += 1;
            chosen.push((i, label));
        }
    }
    assert_eq!(chosen.len(), CLASSES.len() * PER_CLASS);
    let mut csv = String::from("seq,label\n");
    for (seq, (i, label)) in chosen.iter().enumerate() {
        let grey = &pixels[i * h * w..(i + 1) * h * w];
        let image = image::GrayImage::from_raw(w as u32, h as u32, grey.to_vec()).unwrap();
        image.save(images.join(format!("{seq:04}.png"))).unwrap();
        let name = CLASSES.iter().find(|(c, _)| c == label).unwrap().1;
        csv.push_str(&format!("{seq},{name}\n"));
    }
    let labels_csv = dir.join("labels.csv");
    std::fs::write(&labels_csv, csv).unwrap();

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
    assert_eq!(report.encoded as usize, chosen.len());

    let host = env!("CARGO_BIN_EXE_latentcam-host");
    let head = dir.join("shelf.head");
    let out = Command::new(host)
        .args(["train", "--models"])
        .arg(repo().join("models"))
        .arg("--recording")
        .arg(&recording)
        .arg("--labels")
        .arg(&labels_csv)
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
    // 4 classes: chance is 25 %.
    assert!(accuracy >= 80.0, "held-out accuracy {accuracy}%");
    assert!(stdout.contains("trained on 96 latents") && stdout.contains("on 24"));

    // The new head over the old recording.
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
    assert_eq!(lines.len(), chosen.len());
    let correct = lines
        .iter()
        .zip(&chosen)
        .filter(|(line, (_, label))| {
            let name = CLASSES.iter().find(|(c, _)| c == label).unwrap().1;
            line["heads"]["trained"]["label"] == name
        })
        .count();
    eprintln!("replayed: {correct}/{} agree with the labels", lines.len());
    assert!(correct * 10 >= lines.len() * 8);
}
