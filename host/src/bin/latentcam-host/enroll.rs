//! `latentcam-host enroll`: photos encoded on the host into the few-shot
//! store.

use anyhow::Context;
use latentcam_host::encode::HostEncoder;
use latentcam_host::heads::fewshot::FewShotStore;

use crate::args::EnrollArgs;
use crate::heads::load_manifest;

/// Adds the photos' latents to the store under the label.
pub fn enroll(args: EnrollArgs) -> anyhow::Result<()> {
    let EnrollArgs {
        label,
        store,
        images,
        models,
    } = args;
    let manifest = load_manifest(&models)?;
    let mut encoder = HostEncoder::open(&manifest).context("loading the encoder")?;
    let mut set = FewShotStore::load_or_default(&store, manifest.latent_dim)?;
    let paths = latentcam_model::picture::expand_inputs(&images)?;
    let mut added = 0;
    for path in &paths {
        let latent = encoder
            .encode_file(path)
            .with_context(|| format!("cannot encode {}", path.display()))?;
        set.add(&label, &latent)?;
        added += 1;
    }
    set.save(&store)?;
    println!(
        "{}: {added} example(s) of {label:?} added; {} label(s) enrolled",
        store.display(),
        set.len()
    );
    Ok(())
}
