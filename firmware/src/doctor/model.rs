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
            let fix = match &e {
                assemble::AssembleError::Manifest { .. } => format!(
                    "install the model files in {} (they ship in the package's models/), or set [model] dir / LATENTCAM_MODELS",
                    dir.display()
                ),
                _ => "check [model] backend and precision (`auto` picks what this build can run); \
                      the tflite and litert backends need a build with their cargo feature"
                    .into(),
            };
            checks.push(Check::fail("model", e.to_string(), fix));
            None
        }
    }
}
