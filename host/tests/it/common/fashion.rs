//! Fashion-MNIST latents (Debian `dataset-fashion-mnist`, installed by
//! `scripts/setup.sh`), encoded once for every test that needs them: the
//! linear probe, the few-shot accuracy and the head trained on stored
//! latents all use the first [`TRAIN`] images of the train split and the
//! first [`TEST`] of the t10k split.
//!
//! The images go through the product path the edge's `encode` command runs
//! — each written as the PNG a user would hand it, then
//! [`batch::encode_images`]: picture decoding, the manifest's
//! preprocessing, the tract fp32 encoder, a wire recording (codec `F32`,
//! exact) — and the latents are read back from the recording.
//!
//! Encoding 3 000 images is most of these tests' time, so the latents are
//! kept for the run: in memory for the rest of the process, and in a file
//! under `CARGO_TARGET_TMPDIR` for the other test processes (nextest runs
//! each test in its own). The file is named after this test binary (path,
//! size, modification time) and the model manifest, so a rebuilt binary or
//! a changed model never reads latents of another build; a lock file keeps
//! concurrent tests from encoding the same images twice.
#![allow(dead_code)]

use std::collections::hash_map::DefaultHasher;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::OnceLock;

use latentcam_firmware::batch::{self, BatchSettings};
use latentcam_firmware::encoder::{self, BackendChoice, Precision, PrecisionChoice};
use latentcam_firmware::manifest::{Manifest, default_models_dir};
use latentcam_firmware::preprocess::Preprocessor;
use latentcam_wire::frame::MAX_FRAME_LEN;
use latentcam_wire::{Codec, FrameDecoder, Message};

use super::idx;

/// Fashion-MNIST's classes, by label index.
pub const CLASSES: [&str; 10] = [
    "tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot",
];
/// Images taken from the start of the train split.
pub const TRAIN: usize = 2000;
/// Images taken from the start of the t10k split.
pub const TEST: usize = 1000;

/// The latents of the first images of one split, in file order.
pub struct Split {
    /// Latent dimension.
    pub dim: usize,
    /// `len() * dim` floats, image after image.
    pub latents: Vec<f32>,
    /// The class index of each image.
    pub labels: Vec<u8>,
}

impl Split {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// The latent of image `i`.
    pub fn latent(&self, i: usize) -> &[f32] {
        &self.latents[i * self.dim..(i + 1) * self.dim]
    }

    /// The latents of the first `per_class` images of each class, grouped
    /// by class (`[class][i]`). Panics if the split holds fewer.
    pub fn by_class(&self, per_class: usize) -> Vec<Vec<Vec<f32>>> {
        let mut by_class = vec![Vec::with_capacity(per_class); CLASSES.len()];
        for (i, &label) in self.labels.iter().enumerate() {
            let class: &mut Vec<Vec<f32>> = &mut by_class[label as usize];
            if class.len() < per_class {
                class.push(self.latent(i).to_vec());
            }
        }
        assert!(
            by_class.iter().all(|c| c.len() == per_class),
            "the first {} images hold fewer than {per_class} of some class",
            self.len()
        );
        by_class
    }
}

/// The first [`TRAIN`] images of the train split.
pub fn train() -> &'static Split {
    &all().0
}

/// The first [`TEST`] images of the t10k split.
pub fn test() -> &'static Split {
    &all().1
}

fn all() -> &'static (Split, Split) {
    static ALL: OnceLock<(Split, Split)> = OnceLock::new();
    ALL.get_or_init(|| {
        let manifest = Manifest::load(default_models_dir()).unwrap();
        let labels = |split: &str, count: usize| {
            let (_, labels) = idx(&format!("{split}-labels-idx1-ubyte.gz"));
            labels[..count].to_vec()
        };
        let dim = manifest.latent_dim;
        let latents = cached(&manifest, || encode(&manifest));
        assert_eq!(latents.len(), (TRAIN + TEST) * dim);
        let (train, test) = latents.split_at(TRAIN * dim);
        (
            Split {
                dim,
                latents: train.to_vec(),
                labels: labels("train", TRAIN),
            },
            Split {
                dim,
                latents: test.to_vec(),
                labels: labels("t10k", TEST),
            },
        )
    })
}

/// The cache file's contents, or `compute()` written to it, under an
/// exclusive lock so that only one process computes.
fn cached(manifest: &Manifest, compute: impl FnOnce() -> Vec<f32>) -> Vec<f32> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!(
        "fashion-mnist-latents-{:016x}.f32",
        cache_key(manifest)
    ));
    let lock = File::create(dir.join("fashion-mnist-latents.lock")).unwrap();
    flock(&lock);
    if let Ok(bytes) = std::fs::read(&path) {
        return bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
    }
    let latents = compute();
    let bytes: Vec<u8> = latents.iter().flat_map(|x| x.to_le_bytes()).collect();
    let partial = path.with_extension("partial");
    std::fs::write(&partial, bytes).unwrap();
    std::fs::rename(&partial, &path).unwrap();
    latents
    // The lock is released when `lock` is closed here.
}

/// Exclusive advisory lock on `file`, held until it is closed.
fn flock(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor this function borrows for the call.
    let status = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(status, 0, "flock: {}", std::io::Error::last_os_error());
}

/// What the latents depend on besides the dataset: this test binary (so any
/// change of the code under test, which rebuilds it) and the model files.
fn cache_key(manifest: &Manifest) -> u64 {
    let exe = std::env::current_exe().unwrap();
    let meta = std::fs::metadata(&exe).unwrap();
    let mut hasher = DefaultHasher::new();
    exe.hash(&mut hasher);
    meta.len().hash(&mut hasher);
    meta.modified().unwrap().hash(&mut hasher);
    std::fs::read(&manifest.path).unwrap().hash(&mut hasher);
    (TRAIN, TEST).hash(&mut hasher);
    hasher.finish()
}

/// Writes the images as PNG files and encodes them with
/// [`batch::encode_images`] on a few threads, one encoder each.
fn encode(manifest: &Manifest) -> Vec<f32> {
    let dir = latentcam_testkit::scratch("fashion", "images");
    let mut paths = Vec::with_capacity(TRAIN + TEST);
    for (split, count) in [("train", TRAIN), ("t10k", TEST)] {
        let (shape, pixels) = idx(&format!("{split}-images-idx3-ubyte.gz"));
        let (h, w) = (shape[1], shape[2]);
        for i in 0..count {
            let grey = pixels[i * h * w..(i + 1) * h * w].to_vec();
            let image = image::GrayImage::from_raw(w as u32, h as u32, grey).unwrap();
            let path = dir.join(format!("{split}-{i:05}.png"));
            image.save(&path).unwrap();
            paths.push(path);
        }
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let chunk = paths.len().div_ceil(threads);
    let latents: Vec<f32> = std::thread::scope(|scope| {
        let workers: Vec<_> = paths
            .chunks(chunk)
            .map(|part| scope.spawn(move || encode_part(manifest, part)))
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().unwrap())
            .collect()
    });
    let _ = std::fs::remove_dir_all(&dir);
    latents
}

/// The latents of `paths` in order, through a recording in memory.
fn encode_part(manifest: &Manifest, paths: &[PathBuf]) -> Vec<f32> {
    // The host's own encoder choice (fp32 on LiteRT where built, else
    // tract): the latents enrolment photos get.
    let chosen = encoder::choose(
        manifest,
        BackendChoice::Auto,
        PrecisionChoice::Named(Precision::Fp32),
    );
    let options = chosen.options(1);
    let mut encoder = encoder::open(manifest, &options).unwrap();
    let mut pre = Preprocessor::new(&manifest.preprocessing, encoder.info().layout);
    let mut recording = Vec::new();
    let report = batch::encode_images(
        paths,
        encoder.as_mut(),
        &mut pre,
        &BatchSettings {
            device_id: "fashion".into(),
            codec: Codec::F32,
            preprocessing_id: manifest.preprocessing.id.clone(),
        },
        &mut recording,
    )
    .unwrap();
    assert_eq!(report.encoded as usize, paths.len(), "{:?}", report.skipped);
    read_latents(&recording, paths.len(), manifest.latent_dim)
}

/// The `F32` latents of a recording, checked to be in sequence.
fn read_latents(recording: &[u8], count: usize, dim: usize) -> Vec<f32> {
    let mut decoder: Box<FrameDecoder<MAX_FRAME_LEN>> = Box::default();
    let mut latents = Vec::with_capacity(count * dim);
    let mut seq = 0;
    decoder.feed_all(recording, |item| match item.unwrap() {
        Message::Latent(latent) => {
            assert_eq!(latent.seq, seq);
            seq += 1;
            latents.extend(latent.codec.decode_to_vec(latent.payload).unwrap());
        }
        Message::Hello(_) => {}
        other => panic!("unexpected message in a recording: {other:?}"),
    });
    assert_eq!(latents.len(), count * dim);
    latents
}
