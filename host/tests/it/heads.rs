//! The few-shot, anomaly and search heads on real latents: the shipped
//! encoder run through the firmware's own preprocessing on real photos (the
//! foolbox ImageNet photos and OpenCV's sample images) and on the frames of
//! OpenCV's `vtest.avi` surveillance video (decoded by ffmpeg).
//! `scripts/setup.sh` installs all three.
//!
//! Thresholds are the heads' shipped defaults, not values fitted here; the
//! similarities and scores observed are printed (`--nocapture`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use image::RgbImage;
use image::imageops::{crop_imm, flip_horizontal};
use latentcam_firmware::encoder::{self, Encoder, EncoderOptions};
use latentcam_firmware::manifest::{Manifest, default_models_dir};
use latentcam_firmware::preprocess::Preprocessor;
use latentcam_firmware::source::{
    Frame, FrameSource, Pace, ReplayOptions, SourceEvent, VideoSource,
};
use latentcam_host::heads::anomaly::{self, AnomalyHead, AnomalyOptions};
use latentcam_host::heads::fewshot::{
    self, FewShotHead, FewShotOptions, FewShotStore, Method, UNKNOWN,
};
use latentcam_host::heads::search::{DEFAULT_CAPACITY, LatentIndex};
use latentcam_host::heads::{Head, LatentRef};

const OPENCV_DATA: &str = "/usr/share/doc/opencv-doc/examples/data";

struct Model {
    encoder: Box<dyn Encoder>,
    pre: Preprocessor,
    dim: usize,
}

impl Model {
    fn new() -> Self {
        let manifest = Manifest::load(default_models_dir()).unwrap();
        let encoder = encoder::open(&manifest, &EncoderOptions::default()).unwrap();
        let pre = Preprocessor::new(&manifest.preprocessing, encoder.info().layout);
        Self {
            encoder,
            pre,
            dim: manifest.latent_dim,
        }
    }

    fn latent(&mut self, rgb: &[u8], width: u32, height: u32) -> Vec<f32> {
        let input = self.pre.run(rgb, width, height).unwrap();
        let mut latent = vec![0f32; self.dim];
        self.encoder.encode(input, &mut latent).unwrap();
        latent
    }

    fn image(&mut self, image: &RgbImage) -> Vec<f32> {
        self.latent(image.as_raw(), image.width(), image.height())
    }
}

fn cache_dir() -> PathBuf {
    std::env::var_os("LATENTCAM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/latentcam"))
}

fn open_image(path: &Path) -> RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/setup.sh", path.display()))
        .to_rgb8()
}

/// The foolbox photo `index` (its name is `imagenet_<index>_<class>.jpg`).
fn foolbox(index: usize) -> RgbImage {
    let dir = cache_dir().join("foolbox-imagenet");
    let prefix = format!("imagenet_{index:02}_");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run scripts/setup.sh to fetch the foolbox ImageNet photos",
            dir.display()
        )
    });
    let path = entries
        .map(|entry| entry.unwrap().path())
        .find(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .unwrap_or_else(|| panic!("no {prefix}*.jpg in {}", dir.display()));
    open_image(&path)
}

fn opencv(name: &str) -> RgbImage {
    open_image(&Path::new(OPENCV_DATA).join(name))
}

/// The part of `image` that is `fraction` of its size, placed at `(fx, fy)`
/// of the free room (0 = left/top, 1 = right/bottom).
fn crop(image: &RgbImage, fx: f32, fy: f32, fraction: f32) -> RgbImage {
    let (w, h) = image.dimensions();
    let (cw, ch) = ((w as f32 * fraction) as u32, (h as f32 * fraction) as u32);
    let (x, y) = (((w - cw) as f32 * fx) as u32, ((h - ch) as f32 * fy) as u32);
    crop_imm(image, x, y, cw, ch).to_image()
}

/// One encoded frame of vtest.avi.
struct VideoLatent {
    index: u64,
    capture_us: u64,
    latent: Vec<f32>,
}

/// Every other frame of vtest.avi (10 fps) in frames 0–199 and 400–459:
/// 130 latents, encoded once for all tests.
fn vtest() -> &'static [VideoLatent] {
    static LATENTS: OnceLock<Vec<VideoLatent>> = OnceLock::new();
    LATENTS.get_or_init(|| {
        let path = Path::new(OPENCV_DATA).join("vtest.avi");
        let options = ReplayOptions {
            pace: Pace::AsFastAsPossible,
            looping: false,
        };
        let mut source = VideoSource::open(&path, options).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run scripts/setup.sh (opencv-doc, ffmpeg)",
                path.display()
            )
        });
        let mut model = Model::new();
        let mut frame = Frame::new();
        let mut latents = Vec::new();
        while source.next_frame(&mut frame).unwrap() == SourceEvent::Frame {
            let i = frame.index;
            if i.is_multiple_of(2) && (i < 200 || (400..460).contains(&i)) {
                latents.push(VideoLatent {
                    index: i,
                    capture_us: frame.capture_us,
                    latent: model.latent(&frame.rgb, frame.width, frame.height),
                });
            }
            if i >= 460 {
                break;
            }
        }
        assert_eq!(latents.len(), 130, "vtest.avi is shorter than expected");
        latents
    })
}

fn frames(range: std::ops::Range<u64>) -> impl Iterator<Item = &'static VideoLatent> {
    vtest().iter().filter(move |f| range.contains(&f.index))
}

fn temp_dir(name: &str) -> latentcam_testkit::Scratch {
    latentcam_testkit::scratch("heads", name)
}

/// Foolbox photos used as few-shot labels: (index, label).
const ENROLLED: [(usize, &str); 5] = [
    (4, "strawberry"),
    (6, "jeep"),
    (13, "cannon"),
    (15, "goose"),
    (16, "dalmatian"),
];

#[test]
fn fewshot_names_new_views_and_rejects_unrelated_photos() {
    let mut model = Model::new();
    let dir = temp_dir("fewshot");
    let path = dir.join("enrolled.lcfs");

    // Enrol the way `latentcam-host enroll --label <label> <images…>` does:
    // load or start the file, add, save; one command per label.
    let mut queries = Vec::new();
    for (index, label) in ENROLLED {
        let photo = foolbox(index);
        let mut store = FewShotStore::load_or_default(&path, model.dim).unwrap();
        for view in [
            photo.clone(),
            flip_horizontal(&photo),
            crop(&photo, 0.0, 0.0, 0.75),
        ] {
            store.add(label, &model.image(&view)).unwrap();
        }
        store.save(&path).unwrap();
        // Views never enrolled: another corner, a tighter centre crop.
        queries.push((label, model.image(&crop(&photo, 1.0, 1.0, 0.75))));
        queries.push((label, model.image(&crop(&photo, 0.5, 0.5, 0.6))));
    }
    let store = FewShotStore::load(&path, model.dim).unwrap();
    assert_eq!(store.len(), ENROLLED.len());
    assert!(store.labels().all(|(_, count)| count == 3));

    // Unrelated: OpenCV samples, and foolbox photos of classes not enrolled
    // (beaker, yurt, prayer rug).
    let unrelated_images: Vec<(String, RgbImage)> = ["baboon.jpg", "building.jpg", "fruits.jpg"]
        .into_iter()
        .map(|name| (name.to_owned(), opencv(name)))
        .chain(
            [2, 8, 12]
                .into_iter()
                .map(|i| (format!("foolbox {i}"), foolbox(i))),
        )
        .collect();
    let unrelated: Vec<(String, Vec<f32>)> = unrelated_images
        .into_iter()
        .map(|(name, image)| (name, model.image(&image)))
        .collect();
    // Another jeep than the enrolled one: the same kind of thing.
    let other_jeep = model.image(&foolbox(7));

    for method in [Method::Prototype, Method::Knn { k: 3 }] {
        let head = FewShotHead::new(
            store.clone(),
            FewShotOptions {
                method,
                threshold: fewshot::DEFAULT_THRESHOLD,
            },
        )
        .unwrap();
        let mut lowest_known = f32::INFINITY;
        for (label, latent) in &queries {
            let found = head.classify(latent).unwrap();
            let similarity = found.similarity.unwrap();
            lowest_known = lowest_known.min(similarity);
            assert_eq!(
                found.label(),
                *label,
                "{method:?}: a new view of {label} gave {found:?}"
            );
        }
        let mut highest_unrelated = f32::NEG_INFINITY;
        for (name, latent) in &unrelated {
            let found = head.classify(latent).unwrap();
            highest_unrelated = highest_unrelated.max(found.similarity.unwrap());
            assert_eq!(found.label(), UNKNOWN, "{method:?}: {name} gave {found:?}");
        }
        let jeep = head.classify(&other_jeep).unwrap();
        assert_eq!(jeep.closest.as_deref(), Some("jeep"), "{jeep:?}");
        eprintln!(
            "fewshot {}: new views of enrolled photos ≥ {lowest_known:.3}, unrelated photos ≤ \
             {highest_unrelated:.3}, another jeep {:.3} ({}), threshold {}",
            method.name(),
            jeep.similarity.unwrap(),
            jeep.label(),
            fewshot::DEFAULT_THRESHOLD
        );
    }

    // The JSON the ingest reports.
    let mut head = FewShotHead::new(store, FewShotOptions::default()).unwrap();
    let value = head
        .run(&LatentRef {
            device: "cam",
            seq: 1,
            capture_us: 0,
            latent: &queries[0].1,
        })
        .unwrap();
    assert_eq!(value["label"], "strawberry");
    assert_eq!(value["method"], "prototype");
    assert!(value["similarity"].as_f64().unwrap() > 0.5);
}

#[test]
fn anomaly_flags_a_photo_in_the_hall_camera_and_keeps_devices_apart() {
    let mut model = Model::new();
    let strawberry = model.image(&foolbox(4));
    let dalmatian = model.image(&foolbox(16));
    let options = AnomalyOptions::default();
    assert_eq!(options.warmup, 60);
    let mut head = AnomalyHead::new(model.dim, options).unwrap();
    /// (score, event, warm) from the head's JSON.
    fn run(head: &mut AnomalyHead, device: &str, latent: &[f32]) -> (Option<f32>, bool, bool) {
        let value = head
            .run(&LatentRef {
                device,
                seq: 0,
                capture_us: 0,
                latent,
            })
            .unwrap();
        (
            value["score"].as_f64().map(|s| s as f32),
            value["event"].as_bool().unwrap(),
            value["warm"].as_bool().unwrap(),
        )
    }

    // Warm-up: the first 12 s of the hall (60 frames).
    for frame in frames(0..120) {
        assert_eq!(run(&mut head, "hall", &frame.latent), (None, false, false));
    }
    // The next 8 s, and 28–46 s in: other people in other places.
    let mut highest_normal = 0f32;
    for frame in frames(120..200).chain(frames(400..460)) {
        let (score, event, warm) = run(&mut head, "hall", &frame.latent);
        let score = score.unwrap();
        highest_normal = highest_normal.max(score);
        assert!(warm);
        assert!(!event, "hall frame {} scored {score}", frame.index);
    }
    // A strawberry in front of the camera: one event, on the rising edge.
    let (score, event, _) = run(&mut head, "hall", &strawberry);
    let strawberry_score = score.unwrap();
    assert!(event, "strawberry scored {strawberry_score}");
    let (score, event, _) = run(&mut head, "hall", &dalmatian);
    let dalmatian_score = score.unwrap();
    assert!(
        dalmatian_score >= anomaly::DEFAULT_THRESHOLD && !event,
        "still anomalous, but no second event: {dalmatian_score}"
    );
    // Back to the hall: the alarm ends; the photo again raises a new event.
    let last = frames(400..460).last().unwrap();
    let (score, event, _) = run(&mut head, "hall", &last.latent);
    assert!(!event && score.unwrap() < anomaly::DEFAULT_THRESHOLD);
    let mut verdict = head.observe("hall", &strawberry).unwrap();
    assert!(verdict.event && verdict.alarm);
    verdict = head.observe("hall", &last.latent).unwrap();
    assert!(!verdict.alarm);
    eprintln!(
        "anomaly: hall frames ≤ {highest_normal:.3}, strawberry {strawberry_score:.3}, \
         dalmatian {dalmatian_score:.3}, threshold {}",
        anomaly::DEFAULT_THRESHOLD
    );

    // A second device starts its own warm-up and never sees the hall's
    // memory; the photos it warms up on do not change the hall's verdicts.
    let hall_seen = head.seen("hall");
    for _ in 0..options.warmup {
        assert_eq!(run(&mut head, "desk", &strawberry), (None, false, false));
    }
    let (score, event, warm) = run(&mut head, "desk", &strawberry);
    assert!(warm && !event && score.unwrap() < 0.01, "{score:?}");
    let (score, event, _) = run(&mut head, "desk", &vtest()[10].latent);
    assert!(event, "the hall is anomalous on the desk camera: {score:?}");
    assert_eq!(head.seen("hall"), hall_seen);
    assert!(!head.observe("hall", &vtest()[10].latent).unwrap().event);
    assert!(head.observe("hall", &strawberry).unwrap().event);
}

#[test]
fn search_finds_the_frame_its_neighbours_and_a_photo() {
    let mut model = Model::new();
    let dir = temp_dir("search");
    let path = dir.join("index.lcix");
    let mut index = LatentIndex::open(&path, model.dim, DEFAULT_CAPACITY).unwrap();

    // 100 hall frames (20 s), indexed as the ingest does, through Head::run.
    for frame in frames(0..200) {
        let value = index
            .run(&LatentRef {
                device: "hall",
                seq: frame.index,
                capture_us: frame.capture_us,
                latent: &frame.latent,
            })
            .unwrap();
        assert_eq!(value["added"], true);
        assert!(value["indexed"].as_u64().is_some());
    }
    // A few photos from another device.
    let photos = [4usize, 6, 13, 16];
    for (seq, &i) in photos.iter().enumerate() {
        index
            .add("desk", seq as u64, 0, &model.image(&foolbox(i)))
            .unwrap();
    }
    assert_eq!(index.len(), 104);
    // A device resending a latent after a reconnect does not duplicate it.
    let first = &frames(0..1).next().unwrap();
    let resend = LatentRef {
        device: "hall",
        seq: first.index,
        capture_us: first.capture_us,
        latent: &first.latent,
    };
    assert_eq!(index.run(&resend).unwrap()["added"], false);
    assert_eq!(index.len(), 104);

    // A stored frame finds itself, then frames from within ±0.8 s.
    let mut farthest = 0;
    for seq in [20u64, 60, 100, 160] {
        let hits = index.search_stored("hall", seq, 4).unwrap();
        assert_eq!((hits[0].device.as_str(), hits[0].seq), ("hall", seq));
        assert!(hits[0].similarity > 0.9999, "{hits:?}");
        for hit in &hits[1..] {
            assert_eq!(hit.device, "hall");
            let distance = hit.seq.abs_diff(seq);
            farthest = farthest.max(distance);
            assert!(distance <= 8, "frame {seq}: neighbours {hits:?}");
        }
        eprintln!(
            "search: frame {seq} → {:?}",
            hits.iter()
                .map(|h| format!("{} ({:.3})", h.seq, h.similarity))
                .collect::<Vec<_>>()
        );
    }
    eprintln!("search: 3 nearest neighbours always within {farthest} frames");

    // Another view of a photo finds that photo, far ahead of the hall.
    for (seq, &i) in photos.iter().enumerate() {
        let view = model.image(&flip_horizontal(&crop(&foolbox(i), 1.0, 0.0, 0.8)));
        let hits = index.search(&view, 2).unwrap();
        assert_eq!((hits[0].device.as_str(), hits[0].seq), ("desk", seq as u64));
        eprintln!(
            "search: view of photo {i}: {:.3}, next {} {} {:.3}",
            hits[0].similarity, hits[1].device, hits[1].seq, hits[1].similarity
        );
        assert!(
            hits[0].similarity > 0.7 && hits[1].similarity < 0.5,
            "{hits:?}"
        );
    }

    // The file holds all of it: a restarted host answers the same.
    let before = index.search_stored("hall", 60, 10).unwrap();
    drop(index);
    let bytes = std::fs::metadata(&path).unwrap().len();
    let reopened = LatentIndex::open(&path, model.dim, DEFAULT_CAPACITY).unwrap();
    assert_eq!(reopened.len(), 104);
    assert_eq!(reopened.repaired_bytes(), 0);
    assert_eq!(reopened.search_stored("hall", 60, 10).unwrap(), before);
    eprintln!("search: 104 vectors in a {bytes}-byte file");
}
