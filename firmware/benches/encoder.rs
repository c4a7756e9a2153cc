//! Encoder latency, tract fp32 against tract int8 on the same real photo in
//! the same run, plus the preprocessing of a 640x480 frame.
//! `cargo bench -p latentcam-firmware --bench encoder`.
//!
//! With `--features tflite` (through scripts/with-tflite.sh, and after
//! `bash models/build/build.sh --tflite`), TensorFlow Lite fp32 and int8 with
//! XNNPACK on and off run in the same group, all with 1 thread.

use criterion::{Criterion, criterion_group, criterion_main};
use latentcam_firmware::encoder::{self, EncoderOptions, Precision};
use latentcam_firmware::manifest::{Manifest, default_models_dir};
use latentcam_firmware::preprocess::Preprocessor;

fn bench(c: &mut Criterion) {
    let manifest = Manifest::load(default_models_dir()).expect("models/manifest.toml");
    let photo = manifest
        .root()
        .join("efficientnet-lite0/fixtures/originals/butterfly.jpg");
    let image = image::open(&photo).expect("fixture photo").to_rgb8();
    let (w, h) = image.dimensions();

    let mut group = c.benchmark_group("encoder");
    group.sample_size(30);
    for precision in [Precision::Fp32, Precision::Int8] {
        let options = EncoderOptions {
            precision,
            ..EncoderOptions::default()
        };
        let mut enc = encoder::open(&manifest, &options).expect("encoder");
        let mut pre = Preprocessor::new(&manifest.preprocessing, enc.info().layout);
        let input = pre.run(image.as_raw(), w, h).unwrap().to_vec();
        let mut latent = vec![0f32; manifest.latent_dim];
        group.bench_function(format!("tract-{}", precision.name()), |b| {
            b.iter(|| enc.encode(&input, &mut latent).unwrap())
        });
    }
    #[cfg(feature = "tflite")]
    for precision in [Precision::Fp32, Precision::Int8] {
        for xnnpack in [true, false] {
            let options = EncoderOptions {
                backend: encoder::Backend::Tflite,
                precision,
                xnnpack,
                threads: 1,
            };
            let mut enc = encoder::open(&manifest, &options).expect("tflite encoder");
            let mut pre = Preprocessor::new(&manifest.preprocessing, enc.info().layout);
            let input = pre.run(image.as_raw(), w, h).unwrap().to_vec();
            let mut latent = vec![0f32; manifest.latent_dim];
            let name = format!(
                "tflite-{}-xnnpack-{}",
                precision.name(),
                if xnnpack { "on" } else { "off" }
            );
            group.bench_function(name, |b| {
                b.iter(|| enc.encode(&input, &mut latent).unwrap())
            });
        }
    }
    group.finish();

    let frame = image::imageops::resize(&image, 640, 480, image::imageops::FilterType::Triangle);
    let mut pre = Preprocessor::new(
        &manifest.preprocessing,
        latentcam_firmware::manifest::Layout::Nchw,
    );
    c.bench_function("preprocess-640x480", |b| {
        b.iter(|| {
            pre.run(frame.as_raw(), 640, 480).unwrap();
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
