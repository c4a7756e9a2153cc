//! Heads trained later on stored latents: `latentcam-host train` fits a
//! softmax classifier on a recording and a labels file, reports held-out
//! accuracy, and saves it; `serve --head` and `replay --head` then run it
//! live and over old recordings. No device is touched.
//!
//! Files: the classifier in the LCHEAD01 format of [`LinearHead`], and its
//! class names one per line in `<head>.labels`.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use latentcam_firmware::manifest::Manifest;
use latentcam_wire::Message;
use serde_json::json;

use super::linear::{FitOptions, HeadError, LinearHead, fit_softmax};
use super::{Head, LatentRef};
use crate::recording::for_each_frame;
use crate::session::check_hello;

/// A trained classifier with class names.
#[derive(Debug, Clone)]
pub struct TrainedHead {
    /// The classifier.
    pub head: LinearHead,
    /// One name per class.
    pub labels: Vec<String>,
}

/// The labels file beside a head file.
pub fn labels_path(head: &Path) -> PathBuf {
    let mut name = head.as_os_str().to_owned();
    name.push(".labels");
    PathBuf::from(name)
}

impl TrainedHead {
    /// Loads a head and its `.labels` file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, HeadError> {
        let path = path.as_ref();
        let head = LinearHead::load(path)?;
        let labels = super::imagenet::load_labels(&labels_path(path))?;
        if labels.len() != head.out_dim() {
            return Err(HeadError::Format {
                path: labels_path(path),
                reason: format!(
                    "{} labels for a head with {} classes",
                    labels.len(),
                    head.out_dim()
                ),
            });
        }
        Ok(Self { head, labels })
    }

    /// Saves the head and its `.labels` file.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), HeadError> {
        let path = path.as_ref();
        self.head.save(path)?;
        let labels = labels_path(path);
        std::fs::write(&labels, self.labels.join("\n") + "\n").map_err(|source| HeadError::Io {
            path: labels,
            source,
        })
    }
}

impl Head for TrainedHead {
    fn name(&self) -> &str {
        "trained"
    }

    fn run(&mut self, input: &LatentRef<'_>) -> Result<serde_json::Value, HeadError> {
        let (class, p) = self.head.top_k(input.latent, 1)?[0];
        Ok(json!({"label": self.labels[class], "p": p}))
    }
}

/// Latents of a recording by (device, seq), after the manifest check.
pub fn latents_of<R: Read>(
    reader: R,
    manifest: &Manifest,
) -> Result<HashMap<(String, u64), Vec<f32>>, HeadError> {
    let mut out = HashMap::new();
    let mut device: Option<String> = None;
    for_each_frame(reader, |item| match item {
        Ok(Message::Hello(hello)) => {
            device = check_hello(manifest, &hello)
                .ok()
                .map(|()| hello.device_id.to_owned());
        }
        Ok(Message::Latent(latent)) => {
            if let (Some(d), Ok(v)) = (&device, latent.codec.decode_to_vec(latent.payload))
                && v.len() == manifest.latent_dim
            {
                out.insert((d.clone(), latent.seq), v);
            }
        }
        _ => {}
    })
    .map_err(|e| HeadError::Training(e.to_string()))?;
    Ok(out)
}

/// One labelled latent: `device,seq,label` (or `seq,label` when the
/// recording has one device) per line of a CSV file; `#` starts a comment.
pub fn read_labels(path: &Path) -> Result<Vec<(Option<String>, u64, String)>, HeadError> {
    let text = std::fs::read_to_string(path).map_err(|source| HeadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let bad = |reason: &str| HeadError::Format {
            path: path.to_path_buf(),
            reason: format!("line {}: {reason}: {line:?}", i + 1),
        };
        let (device, seq, label) = match fields.as_slice() {
            [seq, label] => (None, *seq, *label),
            [device, seq, label] => (Some((*device).to_owned()), *seq, *label),
            _ => return Err(bad("expected device,seq,label or seq,label")),
        };
        if seq == "seq" {
            continue; // a header line
        }
        let seq = seq.parse().map_err(|_| bad("seq is not a number"))?;
        if label.is_empty() {
            return Err(bad("empty label"));
        }
        out.push((device, seq, label.to_owned()));
    }
    Ok(out)
}

/// What [`train`] reports.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// The fitted head.
    pub head: TrainedHead,
    /// Latents used for fitting and for the held-out check.
    pub train: usize,
    /// See `train`.
    pub held_out: usize,
    /// Top-1 accuracy on the held-out latents.
    pub accuracy: f64,
    /// Labelled (device, seq) pairs not found in the recording.
    pub unmatched: usize,
}

/// Fits a head on the labelled latents of a recording, holding out every
/// `1/holdout_every`-th latent of each class (deterministic) for the
/// accuracy check.
pub fn train(
    latents: &HashMap<(String, u64), Vec<f32>>,
    labels: &[(Option<String>, u64, String)],
    holdout_every: usize,
    options: &FitOptions,
) -> Result<TrainReport, HeadError> {
    let devices: std::collections::BTreeSet<&String> = latents.keys().map(|(d, _)| d).collect();
    let only = (devices.len() == 1).then(|| (*devices.iter().next().expect("one")).clone());
    let mut classes: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, _, label) in labels {
        let next = classes.len();
        classes.entry(label).or_insert(next);
    }
    if classes.len() < 2 {
        return Err(HeadError::Training("need at least two labels".into()));
    }
    let names: Vec<String> = {
        let mut v = vec![String::new(); classes.len()];
        for (name, &i) in &classes {
            v[i] = (*name).to_owned();
        }
        v
    };
    let dim = latents.values().next().map_or(0, Vec::len);
    let (mut train_x, mut train_y, mut test_x, mut test_y) = (vec![], vec![], vec![], vec![]);
    let mut seen_per_class = vec![0usize; classes.len()];
    let mut unmatched = 0;
    for (device, seq, label) in labels {
        let Some(device) = device.clone().or_else(|| only.clone()) else {
            return Err(HeadError::Training(
                "the recording has several devices: give device,seq,label".into(),
            ));
        };
        let Some(latent) = latents.get(&(device, *seq)) else {
            unmatched += 1;
            continue;
        };
        let class = classes[label.as_str()];
        seen_per_class[class] += 1;
        if holdout_every > 1 && seen_per_class[class].is_multiple_of(holdout_every) {
            test_x.extend_from_slice(latent);
            test_y.push(class);
        } else {
            train_x.extend_from_slice(latent);
            train_y.push(class);
        }
    }
    let head = fit_softmax(&train_x, dim, &train_y, classes.len(), options)?;
    let correct = test_x
        .chunks_exact(dim.max(1))
        .zip(&test_y)
        .filter(|(x, y)| head.top_k(x, 1).is_ok_and(|t| t[0].0 == **y))
        .count();
    Ok(TrainReport {
        accuracy: if test_y.is_empty() {
            f64::NAN
        } else {
            correct as f64 / test_y.len() as f64
        },
        train: train_y.len(),
        held_out: test_y.len(),
        unmatched,
        head: TrainedHead {
            head,
            labels: names,
        },
    })
}
