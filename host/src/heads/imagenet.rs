//! The ImageNet head of a model: its classifier weights and class names, both
//! named in the model manifest.

use std::path::Path;

use latentcam_model::manifest::{Manifest, ManifestError};

use super::linear::{HeadError, LinearHead};

/// Loading a head failed in the manifest or in the head file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// Manifest lookup or hash check.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Head or labels file.
    #[error(transparent)]
    Head(#[from] HeadError),
}

/// A classifier with class names.
#[derive(Debug, Clone)]
pub struct ImagenetHead {
    /// The linear classifier.
    pub head: LinearHead,
    /// One name per class.
    pub labels: Vec<String>,
}

/// A prediction: class index, name, probability.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Class index.
    pub class: usize,
    /// Class name.
    pub label: String,
    /// Softmax probability.
    pub probability: f32,
}

impl ImagenetHead {
    /// Loads the head and labels a manifest names, checking their SHA-256.
    pub fn from_manifest(manifest: &Manifest) -> Result<Self, LoadError> {
        let head_entry = manifest.file_with_role("head")?;
        let (head_path, _) = manifest.verify(head_entry)?;
        let labels_entry = manifest.file_with_role("labels")?;
        let (labels_path, _) = manifest.verify(labels_entry)?;
        let head = LinearHead::load(&head_path)?;
        let labels = load_labels(&labels_path)?;
        if head.in_dim() != manifest.latent_dim || labels.len() != head.out_dim() {
            return Err(HeadError::Format {
                path: head_path,
                reason: format!(
                    "{}x{} head with {} labels does not fit latent dimension {}",
                    head.out_dim(),
                    head.in_dim(),
                    labels.len(),
                    manifest.latent_dim
                ),
            }
            .into());
        }
        Ok(Self { head, labels })
    }

    /// The `k` most probable classes for each of several latents, with one
    /// pass over the classifier's weights ([`LinearHead::logits_batch`]);
    /// equal to [`Self::predict`] on each.
    pub fn predict_batch(
        &self,
        latents: &[&[f32]],
        k: usize,
    ) -> Result<Vec<Vec<Prediction>>, HeadError> {
        let classes = self.head.out_dim();
        let mut logits = vec![0f32; latents.len() * classes];
        self.head.logits_batch(latents, &mut logits)?;
        Ok(logits
            .chunks_exact_mut(classes)
            .map(|row| {
                super::linear::softmax_in_place(row);
                self.named(super::linear::top_k(row, k))
            })
            .collect())
    }

    fn named(&self, top: Vec<(usize, f32)>) -> Vec<Prediction> {
        top.into_iter()
            .map(|(class, probability)| Prediction {
                class,
                label: self.labels[class].clone(),
                probability,
            })
            .collect()
    }

    /// The `k` most probable classes for a latent.
    pub fn predict(&self, latent: &[f32], k: usize) -> Result<Vec<Prediction>, HeadError> {
        Ok(self.named(self.head.top_k(latent, k)?))
    }
}

/// Reads one label per line.
pub fn load_labels(path: &Path) -> Result<Vec<String>, HeadError> {
    let text = std::fs::read_to_string(path).map_err(|source| HeadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text.lines().map(str::to_owned).collect())
}

/// The ImageNet head as a [`super::Head`]: the `k` most likely classes.
#[derive(Debug, Clone)]
pub struct TopK {
    /// The classifier.
    pub head: ImagenetHead,
    /// Classes reported per latent.
    pub k: usize,
}

impl super::Head for TopK {
    fn name(&self) -> &str {
        "imagenet"
    }

    fn run(&mut self, input: &super::LatentRef<'_>) -> Result<serde_json::Value, HeadError> {
        Ok(predictions_json(self.head.predict(input.latent, self.k)?))
    }

    fn run_batch(
        &mut self,
        inputs: &[super::LatentRef<'_>],
    ) -> Vec<Result<serde_json::Value, HeadError>> {
        let latents: Vec<&[f32]> = inputs.iter().map(|i| i.latent).collect();
        match self.head.predict_batch(&latents, self.k) {
            Ok(all) => all.into_iter().map(|p| Ok(predictions_json(p))).collect(),
            // A latent of the wrong size fails the batch: fall back to one
            // at a time, so only that latent's result is an error.
            Err(_) => inputs.iter().map(|i| self.run(i)).collect(),
        }
    }
}

fn predictions_json(predictions: Vec<Prediction>) -> serde_json::Value {
    serde_json::Value::Array(
        predictions
            .into_iter()
            .map(|p| serde_json::json!({"label": p.label, "class": p.class, "p": p.probability}))
            .collect(),
    )
}
