//! `latentcam-host enroll`: photos encoded on the host into the few-shot
//! store.

use std::path::{Path, PathBuf};

use anyhow::Context;
use latentcam_host::encode::HostEncoder;
use latentcam_host::heads::fewshot::FewShotStore;

use crate::args::EnrollArgs;
use crate::heads::load_manifest;

/// Adds the photos' latents to the store under the label. Nothing is
/// written unless every photo was encoded: a run that finds no photo fails
/// and leaves the store as it was (or absent).
pub fn enroll(args: EnrollArgs) -> anyhow::Result<()> {
    let EnrollArgs {
        label,
        store,
        images,
        models,
    } = args;
    let paths = latentcam_model::picture::expand_inputs(&images)?;
    if paths.is_empty() {
        return Err(anyhow::anyhow!(why_no_photos(&images))).with_context(|| {
            format!(
                "no photos to enroll from {}; the store {} is unchanged",
                list(&images),
                store.display()
            )
        });
    }
    let manifest = load_manifest(&models)?;
    let mut encoder = HostEncoder::open(&manifest).context("loading the encoder")?;
    let mut set = FewShotStore::load_or_default(&store, manifest.latent_dim)?;
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

fn list(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}

/// Why directories expanded to no photo (a file given by name is always
/// tried, so only directories can come up empty): what each one holds.
fn why_no_photos(inputs: &[PathBuf]) -> String {
    let each: Vec<String> = inputs.iter().map(|dir| what_it_holds(dir)).collect();
    format!(
        "{}; give JPEG or PNG photos (.jpg, .jpeg or .png), or directories holding them",
        each.join("; ")
    )
}

fn what_it_holds(dir: &Path) -> String {
    let others = std::fs::read_dir(dir).map_or(0, |entries| entries.count());
    match others {
        0 => format!("{} is an empty directory", dir.display()),
        n => format!(
            "{} holds {n} entr{} but no .jpg, .jpeg or .png file",
            dir.display(),
            if n == 1 { "y" } else { "ies" }
        ),
    }
}
