//! tract against the recipe's independent reference (onnxruntime, stored in
//! models/efficientnet-lite0/fixtures/reference.json) on real photos, and the
//! Rust preprocessing against the recipe's Python (Pillow) preprocessing.

use std::path::Path;

use latentcam_firmware::encoder::{self, EncoderOptions, Precision, cosine};
use latentcam_firmware::manifest::{Layout, Manifest, default_models_dir};
use latentcam_firmware::preprocess::Preprocessor;
use latentcam_testkit::Reference;

fn models() -> (Manifest, Reference) {
    let manifest = Manifest::load(default_models_dir()).expect("models/manifest.toml loads");
    (manifest, Reference::load())
}

fn rgb8(path: &Path) -> (Vec<u8>, u32, u32) {
    let image = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    let (w, h) = image.dimensions();
    (image.into_raw(), w, h)
}

fn check_precision(precision: Precision, min_cosine: f64) {
    let (manifest, reference) = models();
    let mut encoder = encoder::open(
        &manifest,
        &EncoderOptions {
            precision,
            ..EncoderOptions::default()
        },
    )
    .expect("encoder loads");
    let mut pre = Preprocessor::new(&manifest.preprocessing, Layout::Nchw);
    let photos = &reference.photos;
    assert!(photos.len() >= 5, "need at least 5 reference photos");
    let mut worst = f64::INFINITY;
    for photo in photos {
        let (crop, w, h) = rgb8(&reference.crop_path(photo));
        assert_eq!((w, h), (224, 224));
        let input = pre.normalize_crop(&crop).unwrap().to_vec();
        let mut latent = vec![0f32; manifest.latent_dim];
        encoder.encode(&input, &mut latent).unwrap();
        let c = cosine(&latent, photo.latent(precision.name()));
        eprintln!("{precision:?} {}: cosine {c:.7}", photo.name);
        assert!(
            c >= min_cosine,
            "{}: tract {precision:?} vs onnxruntime cosine {c} < {min_cosine}",
            photo.name
        );
        worst = worst.min(c);
    }
    eprintln!(
        "{precision:?}: worst cosine over {} photos {worst:.6}",
        photos.len()
    );
}

#[test]
fn tract_fp32_matches_onnxruntime() {
    check_precision(Precision::Fp32, 0.9999);
}

#[test]
fn tract_int8_matches_onnxruntime() {
    check_precision(Precision::Int8, 0.99);
}

/// The Rust resize + crop against Pillow's on the original photos. Both
/// resample with the same fixed-point arithmetic; remaining differences come
/// from the JPEG decoders (zune-jpeg here, libjpeg-turbo under Pillow).
#[test]
fn preprocessing_matches_recipe() {
    let (manifest, reference) = models();
    let mut pre = Preprocessor::new(&manifest.preprocessing, Layout::Nchw);
    let mut checked = 0;
    for photo in reference.originals() {
        let (rgb, w, h) = rgb8(&reference.original_path(photo));
        let (expected, _, _) = rgb8(&reference.crop_path(photo));
        pre.run(&rgb, w, h).unwrap();
        let diffs: Vec<u32> = pre
            .crop()
            .iter()
            .zip(&expected)
            .map(|(&a, &b)| a.abs_diff(b) as u32)
            .collect();
        let mean = diffs.iter().sum::<u32>() as f64 / diffs.len() as f64;
        let max = *diffs.iter().max().unwrap();
        let exact = diffs.iter().filter(|&&d| d == 0).count() as f64 / diffs.len() as f64;
        eprintln!(
            "{}: mean |Δ| {mean:.3}, max |Δ| {max}, identical {:.1}%",
            photo.name,
            exact * 100.0
        );
        assert!(mean < 0.5, "{}: mean abs difference {mean}", photo.name);
        assert!(max <= 8, "{}: max abs difference {max}", photo.name);
        checked += 1;
    }
    assert!(checked >= 2, "reference.json has too few original photos");
}

#[test]
fn tampered_model_is_refused() {
    let (manifest, _) = models();
    let mut tampered = manifest.clone();
    let entry = tampered
        .files
        .iter_mut()
        .find(|f| f.role == "encoder" && f.precision.as_deref() == Some("fp32"))
        .unwrap();
    entry.sha256 = "00".repeat(32);
    let err = encoder::open(&tampered, &EncoderOptions::default()).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("SHA-256"), "{message}");
    assert!(message.contains("encoder-fp32.onnx"), "{message}");
}

#[test]
#[cfg(not(feature = "tflite"))]
fn tflite_without_feature_is_a_clear_error() {
    let (manifest, _) = models();
    let options = EncoderOptions {
        backend: encoder::Backend::Tflite,
        ..EncoderOptions::default()
    };
    match encoder::open(&manifest, &options) {
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.contains("tflite") || message.contains("TFLite"),
                "{message}"
            );
        }
        Ok(_) => panic!("tflite opened in a build without the feature"),
    }
}
