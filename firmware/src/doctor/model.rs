//! The model file, its SHA-256 and the backend that loads it.

use crate::assemble;
use crate::config::EdgeConfig;
use crate::encoder::Encoder;

use super::Check;

pub(super) fn check_model(
    config: &EdgeConfig,
    checks: &mut Vec<Check>,
) -> Option<Box<dyn Encoder>> {
    let dir = assemble::models_dir(config);
    match assemble::open_model(config) {
        Ok((_, encoder, _, chosen)) => {
            let info = encoder.info();
            let size = std::fs::metadata(&info.path).map_or(0, |m| m.len());
            checks.push(Check::ok(
                "model",
                format!(
                    "{} {} at {}: sha256 {}… verified, {:.1} MB",
                    info.model_id,
                    info.precision.name(),
                    info.path.display(),
                    &hex::encode(info.sha256)[..16],
                    size as f64 / 1e6
                ),
            ));
            checks.push(Check::ok(
                "backend",
                format!(
                    "{} {} ({}) loaded the encoder, {} thread(s): {} inputs → {}-dim latent",
                    info.backend,
                    info.precision.name(),
                    chosen.reason,
                    config.model.threads,
                    info.input_len,
                    info.latent_dim
                ),
            ));
            Some(encoder)
        }
        Err(e) => {
            let fix = model_fix(&e, &dir);
            checks.push(Check::fail("model", e.to_string(), fix));
            None
        }
    }
}

/// What to do about a model that did not load, by what went wrong.
fn model_fix(error: &assemble::AssembleError, dir: &std::path::Path) -> String {
    use crate::encoder::EncoderError;
    use crate::manifest::ManifestError;

    let reinstall = format!(
        "reinstall the models in {} from the package (its models/ directory) or a \
         trusted copy; the edge never runs a model whose SHA-256 does not match",
        dir.display()
    );
    match error {
        assemble::AssembleError::Manifest { .. } => format!(
            "install the model files in {} (they ship in the package's models/), or set [model] dir / LATENTCAM_MODELS",
            dir.display()
        ),
        assemble::AssembleError::Encoder(EncoderError::Manifest(
            ManifestError::Sha256Mismatch { .. },
        )) => format!("the file was changed after it was installed: {reinstall}"),
        assemble::AssembleError::Encoder(EncoderError::Manifest(ManifestError::Io {
            source,
            ..
        })) if source.kind() == std::io::ErrorKind::NotFound => {
            format!("the file is missing: {reinstall}")
        }
        assemble::AssembleError::Encoder(EncoderError::Load { .. }) => {
            format!("the file does not load: {reinstall}")
        }
        assemble::AssembleError::Encoder(EncoderError::NotBuilt { .. }) => {
            "this model file is not shipped: build it on a development machine (the message \
             says how) and copy it here, or set [model] precision / backend to one whose file \
             is installed (`auto` picks what this build can run)"
                .into()
        }
        _ => "check [model] backend and precision (`auto` picks what this build can run); \
              the tflite and litert backends need a build with their cargo feature"
            .into(),
    }
}
