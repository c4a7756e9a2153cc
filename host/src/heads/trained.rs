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

use latentcam_model::manifest::Manifest;
use latentcam_wire::Message;
use serde_json::json;

use super::linear::{FitOptions, HeadError, LinearHead, fit_softmax_with};
use super::{Head, LatentRef};
use crate::recording::for_each_frame;
use crate::session::{Replay, Replayed};

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
    let mut replay = Replay::new(manifest);
    for_each_frame(reader, |item| {
        let Ok(message) = item else {
            return;
        };
        if let Replayed::Latent { device, vector } = replay.feed(&message)
            && let Message::Latent(latent) = &message
        {
            out.insert((device, latent.seq), vector);
        }
    })?;
    Ok(out)
}

/// One labelled latent: `device,seq,label` (or `seq,label` when the
/// recording has one device) per line of a CSV file; `#` starts a comment.
/// A line that is neither is a [`HeadError::Labels`] naming it.
pub fn read_labels(path: &Path) -> Result<Vec<(Option<String>, u64, String)>, HeadError> {
    let bytes = std::fs::read(path).map_err(|source| HeadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let bad = |reason: String| HeadError::Labels {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        };
        let Ok(line) = std::str::from_utf8(line) else {
            let start = String::from_utf8_lossy(&line[..line.len().min(40)]).into_owned();
            return Err(bad(format!("not text (UTF-8): {start:?}")));
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let (device, seq, label) = match fields.as_slice() {
            [seq, label] => (None, *seq, *label),
            [device, seq, label] => (Some((*device).to_owned()), *seq, *label),
            _ => {
                return Err(bad(format!(
                    "{} fields where 2 or 3 were expected: {line:?}",
                    fields.len()
                )));
            }
        };
        if seq == "seq" {
            continue; // a header line
        }
        let seq = seq
            .parse()
            .map_err(|_| bad(format!("seq {seq:?} is not a whole number: {line:?}")))?;
        if label.is_empty() {
            return Err(bad(format!("the label is empty: {line:?}")));
        }
        if device.as_deref() == Some("") {
            return Err(bad(format!("the device is empty: {line:?}")));
        }
        out.push((device, seq, label.to_owned()));
    }
    Ok(out)
}

/// Top-1 accuracy of `head` on `x` (rows of `dim`) against `y`; NaN for
/// none.
fn accuracy(head: &LinearHead, x: &[f32], y: &[usize], dim: usize) -> f64 {
    if y.is_empty() {
        return f64::NAN;
    }
    let correct = x
        .chunks_exact(dim.max(1))
        .zip(y)
        .filter(|(x, y)| head.top_k(x, 1).is_ok_and(|t| t[0].0 == **y))
        .count();
    correct as f64 / y.len() as f64
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
    /// The weight decay used.
    pub l2: f32,
    /// Validation accuracy of each decay tried, when one was chosen.
    pub validation: Vec<(f32, f64)>,
    /// Labelled (device, seq) pairs not found in the recording.
    pub unmatched: usize,
}

/// Labelled latents: `(device, seq, label)`, the device `None` when the
/// recording has one.
pub type Labels = [(Option<String>, u64, String)];

/// Which labelled latents check the fitted head instead of training it.
#[derive(Debug, Clone)]
pub enum Holdout {
    /// Every n-th latent of each class, in label-file order (deterministic;
    /// 0 or 1 holds out nothing).
    EveryNth(usize),
    /// A separate labels file: these latents are only used for the check
    /// (every label must also occur in the training labels).
    Labels(Vec<(Option<String>, u64, String)>),
}

/// Weight decays tried when [`train`] chooses one.
pub const L2_GRID: [f32; 4] = [1e-4, 1e-3, 1e-2, 1e-1];

/// Fits a head on the labelled latents of a recording and reports its
/// top-1 accuracy on the held-out ones. With `choose_l2`, the weight decay
/// is the one of [`L2_GRID`] that does best on a validation split of the
/// *training* latents (every 5th of each class; the held-out latents play
/// no part), and the head is then refitted on all training latents;
/// otherwise `options.l2` is used.
pub fn train(
    latents: &HashMap<(String, u64), Vec<f32>>,
    labels: &Labels,
    holdout: &Holdout,
    options: &FitOptions,
    choose_l2: bool,
) -> Result<TrainReport, HeadError> {
    train_with(latents, labels, holdout, options, choose_l2, &mut |_, _| {})
}

/// The optimisation steps [`train`] takes: one fit per weight decay of
/// [`L2_GRID`] when it chooses one, then the final fit.
pub fn train_steps(options: &FitOptions, choose_l2: bool) -> usize {
    options.epochs * (1 + if choose_l2 { L2_GRID.len() } else { 0 })
}

/// [`train`], calling `progress(done, total)` after each optimisation
/// step of every fit ([`train_steps`] in all).
pub fn train_with(
    latents: &HashMap<(String, u64), Vec<f32>>,
    labels: &Labels,
    holdout: &Holdout,
    options: &FitOptions,
    choose_l2: bool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<TrainReport, HeadError> {
    let total = train_steps(options, choose_l2);
    let mut done = 0;
    let mut step_done = |_: usize| {
        done += 1;
        progress(done, total);
    };
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
    let find = |device: &Option<String>, seq: u64| -> Result<Option<&Vec<f32>>, HeadError> {
        let Some(device) = device.clone().or_else(|| only.clone()) else {
            return Err(HeadError::Training(
                "the recording has several devices: give device,seq,label".into(),
            ));
        };
        Ok(latents.get(&(device, seq)))
    };
    let (mut train_x, mut train_y, mut test_x, mut test_y) = (vec![], vec![], vec![], vec![]);
    let mut seen_per_class = vec![0usize; classes.len()];
    let mut unmatched = 0;
    let every = match holdout {
        Holdout::EveryNth(n) => *n,
        Holdout::Labels(_) => 0,
    };
    for (device, seq, label) in labels {
        let Some(latent) = find(device, *seq)? else {
            unmatched += 1;
            continue;
        };
        let class = classes[label.as_str()];
        seen_per_class[class] += 1;
        if every > 1 && seen_per_class[class].is_multiple_of(every) {
            test_x.extend_from_slice(latent);
            test_y.push(class);
        } else {
            train_x.extend_from_slice(latent);
            train_y.push(class);
        }
    }
    if let Holdout::Labels(test) = holdout {
        for (device, seq, label) in test {
            let Some(&class) = classes.get(label.as_str()) else {
                return Err(HeadError::Training(format!(
                    "test label {label:?} does not occur in the training labels"
                )));
            };
            let Some(latent) = find(device, *seq)? else {
                unmatched += 1;
                continue;
            };
            test_x.extend_from_slice(latent);
            test_y.push(class);
        }
    }
    let mut validation = Vec::new();
    let l2 = if choose_l2 {
        let (mut fit_x, mut fit_y, mut val_x, mut val_y) = (vec![], vec![], vec![], vec![]);
        let mut seen = vec![0usize; classes.len()];
        for (x, &y) in train_x.chunks_exact(dim.max(1)).zip(&train_y) {
            seen[y] += 1;
            if seen[y].is_multiple_of(5) {
                val_x.extend_from_slice(x);
                val_y.push(y);
            } else {
                fit_x.extend_from_slice(x);
                fit_y.push(y);
            }
        }
        let mut best = (options.l2, f64::NEG_INFINITY);
        for l2 in L2_GRID {
            let candidate = fit_softmax_with(
                &fit_x,
                dim,
                &fit_y,
                classes.len(),
                &FitOptions {
                    l2,
                    ..options.clone()
                },
                &mut step_done,
            )?;
            let score = accuracy(&candidate, &val_x, &val_y, dim);
            validation.push((l2, score));
            // Ties go to the stronger decay (later in the grid); with no
            // validation latents (NaN) `options.l2` stays.
            if score >= best.1 {
                best = (l2, score);
            }
        }
        best.0
    } else {
        options.l2
    };
    let head = fit_softmax_with(
        &train_x,
        dim,
        &train_y,
        classes.len(),
        &FitOptions {
            l2,
            ..options.clone()
        },
        &mut step_done,
    )?;
    Ok(TrainReport {
        accuracy: accuracy(&head, &test_x, &test_y, dim),
        l2,
        validation,
        train: train_y.len(),
        held_out: test_y.len(),
        unmatched,
        head: TrainedHead {
            head,
            labels: names,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labelled(rows: &[(u64, &str)]) -> Vec<(Option<String>, u64, String)> {
        rows.iter()
            .map(|(seq, label)| (None, *seq, (*label).to_owned()))
            .collect()
    }

    #[test]
    fn a_test_labels_file_is_held_out_and_checked() {
        // Two classes on either side of the first axis.
        let latents: HashMap<(String, u64), Vec<f32>> = (0..8u64)
            .map(|seq| {
                let x = if seq % 2 == 0 { 1.0 } else { -1.0 };
                (("cam".to_owned(), seq), vec![x, 0.1 * seq as f32])
            })
            .collect();
        let train_rows = labelled(&[(0, "a"), (1, "b"), (2, "a"), (3, "b")]);
        let test_rows = labelled(&[(4, "a"), (5, "b"), (6, "a"), (7, "b"), (99, "a")]);
        let report = train(
            &latents,
            &train_rows,
            &Holdout::Labels(test_rows),
            &FitOptions::default(),
            true,
        )
        .unwrap();
        assert_eq!((report.train, report.held_out, report.unmatched), (4, 4, 1));
        assert_eq!(report.accuracy, 1.0);
        let unknown = labelled(&[(4, "c")]);
        let err = train(
            &latents,
            &train_rows,
            &Holdout::Labels(unknown),
            &FitOptions::default(),
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("\"c\""), "{err}");
    }
}
