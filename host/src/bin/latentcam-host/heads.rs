//! The heads `serve` and `replay` run, loaded from their flags.

use anyhow::Context;
use latentcam_host::heads::Head;
use latentcam_host::heads::anomaly::{AnomalyHead, AnomalyOptions};
use latentcam_host::heads::fewshot::{FewShotHead, FewShotOptions, FewShotStore, SharedFewShot};
use latentcam_host::heads::imagenet::{ImagenetHead, TopK};
use latentcam_host::heads::search::{DEFAULT_CAPACITY, LatentIndex, SharedIndex};
use latentcam_host::heads::trained;
use latentcam_model::manifest::Manifest;

use crate::args::HeadArgs;

/// Loaded heads, with handles to the ones the HTTP API also uses.
pub struct LoadedHeads {
    pub manifest: Manifest,
    pub heads: Vec<Box<dyn Head>>,
    pub fewshot: Option<SharedFewShot>,
    pub index: Option<SharedIndex>,
}

impl HeadArgs {
    /// Loads the manifest and every head asked for. `live`: the few-shot
    /// store may be created and is saved on enrolment (serve); otherwise it
    /// must exist and is only read (replay).
    pub fn load(&self, live: bool) -> anyhow::Result<LoadedHeads> {
        let manifest = load_manifest(&self.models)?;
        let dim = manifest.latent_dim;
        let mut heads: Vec<Box<dyn Head>> = Vec::new();
        if !self.no_imagenet {
            let imagenet = ImagenetHead::from_manifest(&manifest)
                .context("loading the model's ImageNet head")?;
            heads.push(Box::new(TopK {
                head: imagenet,
                k: self.top,
            }));
        }
        let fewshot = match &self.fewshot {
            Some(path) => {
                // Serving, the store is the host's own state: a damaged one
                // is moved aside (with an ERROR) rather than fatal.
                let store = if live {
                    FewShotStore::load_or_quarantine(path, dim)?.0
                } else {
                    FewShotStore::load(path, dim)?
                };
                tracing::info!(labels = store.len(), "few-shot store {}", path.display());
                let shared = SharedFewShot::new(
                    FewShotHead::new(store, FewShotOptions::default())?,
                    live.then(|| path.clone()),
                );
                heads.push(Box::new(shared.clone()));
                Some(shared)
            }
            None => None,
        };
        if self.anomaly {
            heads.push(Box::new(AnomalyHead::new(dim, AnomalyOptions::default())?));
        }
        let index = match &self.index {
            Some(path) => {
                let index = if live {
                    LatentIndex::open_or_quarantine(path, dim, DEFAULT_CAPACITY)?.0
                } else {
                    LatentIndex::open(path, dim, DEFAULT_CAPACITY)?
                };
                let shared = SharedIndex::new(index);
                heads.push(Box::new(shared.clone()));
                Some(shared)
            }
            None => None,
        };
        if let Some(path) = &self.head {
            heads.push(Box::new(trained::TrainedHead::load(path)?));
        }
        Ok(LoadedHeads {
            manifest,
            heads,
            fewshot,
            index,
        })
    }
}

pub fn load_manifest(models: &std::path::Path) -> anyhow::Result<Manifest> {
    Manifest::load(models)
        .with_context(|| format!("loading the model manifest from {}", models.display()))
}
