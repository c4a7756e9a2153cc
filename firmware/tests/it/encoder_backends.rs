//! One encoder suite for every backend this build has (tract always,
//! TensorFlow Lite with `--features tflite`): the same real photos through
//! each, compared with the onnxruntime reference latents of
//! models/efficientnet-lite0/fixtures/reference.json and with each other,
//! with an explicit tolerance per comparison, and the same ImageNet top-1
//! from the head in head.bin.
//!
//! TFLite model files are not committed: `bash models/build/build.sh --tflite`
//! writes them to the cache (scripts/test.sh runs it before this suite).

use std::path::{Path, PathBuf};

use latentcam_firmware::encoder::{
    self, Backend, Encoder, EncoderError, EncoderOptions, Precision, cosine,
};
use latentcam_firmware::manifest::Manifest;
use latentcam_firmware::manifest::default_models_dir;
use latentcam_firmware::preprocess::Preprocessor;
use latentcam_testkit::{Reference, ReferencePhoto};

/// How close two latents must be.
#[derive(Debug, Clone, Copy)]
struct Tolerance {
    /// Minimum cosine similarity, on every photo.
    min_cosine: f64,
}

/// Backend against backend, same precision. fp32 engines differ only in
/// summation order; int8 engines round requantization differently, and one
/// flipped rounding cascades through later layers.
fn between_backends(precision: Precision) -> Tolerance {
    match precision {
        Precision::Fp32 => Tolerance { min_cosine: 0.999 },
        Precision::Int8 => Tolerance { min_cosine: 0.99 },
    }
}

/// Backend against the onnxruntime latent of the same precision
/// (models/README.md, "Tolerances").
fn against_reference(precision: Precision) -> Tolerance {
    match precision {
        Precision::Fp32 => Tolerance {
            min_cosine: 0.99999,
        },
        Precision::Int8 => Tolerance { min_cosine: 0.99 },
    }
}

struct Photo {
    name: String,
    /// The 224x224 RGB8 crop the recipe fed onnxruntime.
    crop: Vec<u8>,
    reference: ReferencePhoto,
}

struct Fixtures {
    manifest: Manifest,
    photos: Vec<Photo>,
    head: Head,
}

fn fixtures() -> Fixtures {
    let manifest = Manifest::load(default_models_dir()).expect("models/manifest.toml loads");
    let reference = Reference::load_from(&manifest.root().join("efficientnet-lite0/fixtures"));
    let photos: Vec<Photo> = reference
        .photos
        .iter()
        .map(|photo| {
            let path = reference.crop_path(photo);
            let image = image::open(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                .to_rgb8();
            assert_eq!(image.dimensions(), (224, 224), "{}", path.display());
            Photo {
                name: photo.name.clone(),
                crop: image.into_raw(),
                reference: photo.clone(),
            }
        })
        .collect();
    assert_eq!(photos.len(), 9, "reference.json lists 9 photos");
    let head_entry = manifest.file_with_role("head").expect("manifest head");
    let (head_path, _) = manifest
        .verify(head_entry)
        .expect("head.bin matches manifest");
    Fixtures {
        head: Head::load(&head_path),
        manifest,
        photos,
    }
}

/// The ImageNet classifier (`LCHEAD01`: magic, in_dim u32le, out_dim u32le,
/// weight f32le[out][in], bias f32le[out]), read here so this suite does not
/// depend on the host crate.
struct Head {
    in_dim: usize,
    weight: Vec<f32>,
    bias: Vec<f32>,
}

impl Head {
    fn load(path: &Path) -> Self {
        let bytes = std::fs::read(path).expect("head.bin");
        assert_eq!(&bytes[..8], b"LCHEAD01", "head.bin magic");
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let (in_dim, out_dim) = (u32_at(8), u32_at(12));
        assert_eq!(bytes.len(), 16 + 4 * (in_dim * out_dim + out_dim));
        let floats: Vec<f32> = bytes[16..]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let (weight, bias) = floats.split_at(in_dim * out_dim);
        Self {
            in_dim,
            weight: weight.to_vec(),
            bias: bias.to_vec(),
        }
    }

    /// argmax of `bias + weight · latent`, accumulated in f64 like the recipe.
    fn top1(&self, latent: &[f32]) -> usize {
        assert_eq!(latent.len(), self.in_dim);
        let logit = |class: usize| {
            let row = &self.weight[class * self.in_dim..(class + 1) * self.in_dim];
            f64::from(self.bias[class])
                + row
                    .iter()
                    .zip(latent)
                    .map(|(&w, &x)| f64::from(w) * f64::from(x))
                    .sum::<f64>()
        };
        (0..self.bias.len())
            .map(|class| (class, logit(class)))
            .fold((0, f64::NEG_INFINITY), |best, (class, value)| {
                if value > best.1 { (class, value) } else { best }
            })
            .0
    }
}

/// Backends this build can run, each with the settings worth covering.
fn configurations() -> Vec<EncoderOptions> {
    let mut all = vec![];
    for backend in Backend::ALL.into_iter().filter(|b| b.is_compiled()) {
        let xnnpack_settings: &[bool] = match backend {
            Backend::Tflite => &[true, false],
            _ => &[true],
        };
        for &xnnpack in xnnpack_settings {
            all.push(EncoderOptions {
                backend,
                xnnpack,
                ..EncoderOptions::default()
            });
        }
    }
    all
}

fn label(options: &EncoderOptions) -> String {
    match options.backend {
        Backend::Tflite if !options.xnnpack => {
            format!(
                "{}-{} (no XNNPACK)",
                options.backend,
                options.precision.name()
            )
        }
        _ => format!("{}-{}", options.backend, options.precision.name()),
    }
}

/// Whether the manifest has a file for this backend and precision (the
/// TFLite int8 encoder may be absent from a manifest).
fn has_model(manifest: &Manifest, options: &EncoderOptions) -> bool {
    manifest
        .encoder(options.backend.format(), options.precision.name())
        .is_ok()
}

fn open(manifest: &Manifest, options: &EncoderOptions) -> Box<dyn Encoder> {
    encoder::open(manifest, options).unwrap_or_else(|e| panic!("{}: {e}", label(options)))
}

/// Latents of every photo through one encoder.
fn encode_all(fixtures: &Fixtures, encoder: &mut dyn Encoder) -> Vec<Vec<f32>> {
    let info = encoder.info().clone();
    let mut pre = Preprocessor::new(&fixtures.manifest.preprocessing, info.layout);
    fixtures
        .photos
        .iter()
        .map(|photo| {
            let input = pre.normalize_crop(&photo.crop).unwrap().to_vec();
            assert_eq!(input.len(), info.input_len);
            let mut latent = vec![0f32; info.latent_dim];
            encoder
                .encode(&input, &mut latent)
                .unwrap_or_else(|e| panic!("{}: {e}", photo.name));
            latent
        })
        .collect()
}

fn reference_latent(photo: &Photo, precision: Precision) -> &[f32] {
    photo.reference.latent(precision.name())
}

/// Every compiled-in backend at one precision: each against onnxruntime,
/// each against every other, and the same top-1 (the reference's fp32
/// argmax) everywhere.
fn suite(precision: Precision) {
    let fixtures = fixtures();
    let mut runs: Vec<(String, Vec<Vec<f32>>)> = vec![];
    for options in configurations() {
        let options = EncoderOptions {
            precision,
            ..options
        };
        if !has_model(&fixtures.manifest, &options) {
            eprintln!(
                "{}: the manifest has no such model; skipped",
                label(&options)
            );
            assert_ne!(
                (options.backend, precision),
                (Backend::Tract, Precision::Fp32),
                "the tract fp32 encoder must exist"
            );
            continue;
        }
        let mut encoder = open(&fixtures.manifest, &options);
        assert_eq!(encoder.info().backend, options.backend);
        assert_eq!(encoder.info().precision, precision);
        runs.push((label(&options), encode_all(&fixtures, encoder.as_mut())));
    }
    assert!(!runs.is_empty());

    let tolerance = against_reference(precision);
    for (name, latents) in &runs {
        let mut worst = f64::INFINITY;
        for (photo, latent) in fixtures.photos.iter().zip(latents) {
            let c = cosine(latent, reference_latent(photo, precision));
            assert!(
                c >= tolerance.min_cosine,
                "{name} vs onnxruntime on {}: cosine {c:.7} < {}",
                photo.name,
                tolerance.min_cosine
            );
            worst = worst.min(c);
        }
        eprintln!(
            "{name} vs onnxruntime {precision:?}: worst cosine {worst:.7} (1 - cos = {:.1e})",
            1.0 - worst
        );
    }

    let tolerance = between_backends(precision);
    for (i, (name_a, a)) in runs.iter().enumerate() {
        for (name_b, b) in &runs[i + 1..] {
            let mut worst = f64::INFINITY;
            for (photo, (la, lb)) in fixtures.photos.iter().zip(a.iter().zip(b)) {
                let c = cosine(la, lb);
                assert!(
                    c >= tolerance.min_cosine,
                    "{name_a} vs {name_b} on {}: cosine {c:.7} < {}",
                    photo.name,
                    tolerance.min_cosine
                );
                worst = worst.min(c);
            }
            eprintln!(
                "{name_a} vs {name_b}: worst cosine {worst:.7} (1 - cos = {:.1e})",
                1.0 - worst
            );
        }
    }

    for (photo_index, photo) in fixtures.photos.iter().enumerate() {
        let expected = photo.reference.top5_fp32[0] as usize;
        for (name, latents) in &runs {
            let top1 = fixtures.head.top1(&latents[photo_index]);
            assert_eq!(
                top1, expected,
                "{name} on {}: ImageNet top-1 {top1}, onnxruntime fp32 says {expected}",
                photo.name
            );
        }
    }
    eprintln!(
        "{precision:?}: {} configurations agree on the top-1 of {} photos",
        runs.len(),
        fixtures.photos.len()
    );
}

#[test]
fn fp32_backends_agree_on_real_photos() {
    suite(Precision::Fp32);
}

#[test]
fn int8_backends_agree_on_real_photos() {
    suite(Precision::Int8);
}

/// The head itself reproduces the recipe's argmax from the reference
/// latents, so a top-1 failure above points at an encoder, not the head.
#[test]
fn head_reproduces_reference_top1() {
    let fixtures = fixtures();
    for photo in &fixtures.photos {
        for precision in [Precision::Fp32, Precision::Int8] {
            let expected = photo.reference.top5(precision.name())[0] as usize;
            let top1 = fixtures.head.top1(reference_latent(photo, precision));
            assert_eq!(top1, expected, "{} {precision:?}", photo.name);
        }
    }
}

#[test]
fn wrong_input_length_is_an_error_not_a_crash() {
    let fixtures = fixtures();
    for options in configurations() {
        let mut encoder = open(&fixtures.manifest, &options);
        let mut latent = vec![0f32; fixtures.manifest.latent_dim];
        let short = vec![0f32; encoder.info().input_len - 1];
        match encoder.encode(&short, &mut latent) {
            Err(EncoderError::Shape { expected, got, .. }) => {
                assert_eq!((expected, got), (short.len() + 1, short.len()));
            }
            other => panic!("{}: {other:?}", label(&options)),
        }
    }
}

#[test]
fn tampered_model_is_refused_by_every_backend() {
    let fixtures = fixtures();
    for options in configurations() {
        let mut tampered = fixtures.manifest.clone();
        let entry = tampered
            .files
            .iter_mut()
            .find(|f| {
                f.role == "encoder"
                    && f.format == options.backend.format()
                    && f.precision.as_deref() == Some("fp32")
            })
            .unwrap();
        entry.sha256 = "00".repeat(32);
        let message = encoder::open(&tampered, &options).unwrap_err().to_string();
        assert!(
            message.contains("SHA-256"),
            "{}: {message}",
            label(&options)
        );
    }
}

/// A TFLite file that was never built names the build command.
#[test]
fn missing_uncommitted_model_names_the_build_command() {
    let fixtures = fixtures();
    let mut manifest = fixtures.manifest.clone();
    let entry = manifest
        .files
        .iter_mut()
        .find(|f| f.format == "tflite")
        .expect("the manifest lists a tflite encoder");
    entry.path = PathBuf::from("efficientnet-lite0/never-built.tflite");
    let options = EncoderOptions {
        backend: Backend::Tflite,
        ..EncoderOptions::default()
    };
    match encoder::open(&manifest, &options) {
        Err(e @ EncoderError::NotBuilt { .. }) => {
            assert!(e.to_string().contains("models/build/build.sh"), "{e}");
        }
        Err(EncoderError::NotCompiled { .. }) if !Backend::Tflite.is_compiled() => {}
        other => panic!("{other:?}"),
    }
}

/// The backends that load `.tflite` files.
const TFLITE_BACKENDS: [Backend; 2] = [Backend::Tflite, Backend::Litert];

#[test]
fn tflite_file_backends_report_their_layout_and_backend() {
    let fixtures = fixtures();
    for backend in TFLITE_BACKENDS.into_iter().filter(|b| b.is_compiled()) {
        let encoder = open(
            &fixtures.manifest,
            &EncoderOptions {
                backend,
                ..EncoderOptions::default()
            },
        );
        let info = encoder.info();
        assert_eq!(info.backend, backend);
        assert_eq!(info.layout, latentcam_firmware::manifest::Layout::Nhwc);
        assert_eq!(info.input_len, 224 * 224 * 3);
        assert!(info.path.extension().is_some_and(|e| e == "tflite"));
    }
}

#[test]
fn a_backend_without_its_feature_is_a_clear_error() {
    let fixtures = fixtures();
    for backend in TFLITE_BACKENDS.into_iter().filter(|b| !b.is_compiled()) {
        let options = EncoderOptions {
            backend,
            ..EncoderOptions::default()
        };
        match encoder::open(&fixtures.manifest, &options) {
            Err(e @ EncoderError::NotCompiled { .. }) => {
                let message = e.to_string();
                assert!(
                    message.contains(&format!("built without {backend} support")),
                    "{message}"
                );
                assert!(
                    message.contains(&format!("--features {backend}")),
                    "{message}"
                );
            }
            other => panic!("{backend}: expected NotCompiled, got {other:?}"),
        }
    }
}
