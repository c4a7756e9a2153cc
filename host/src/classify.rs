//! Running the ImageNet head over a recording: `latentcam-host classify`.

use std::io::Read;

use latentcam_model::manifest::Manifest;
use latentcam_wire::Message;

use crate::heads::imagenet::{ImagenetHead, Prediction};
use crate::recording::{RecordingError, for_each_frame};
use crate::session::{Refusal, Replay, Replayed};

/// One classified latent.
#[derive(Debug, Clone)]
pub struct Classified {
    /// Device that sent it.
    pub device_id: String,
    /// Its sequence number.
    pub seq: u64,
    /// Source frame size.
    pub frame_size: (u32, u32),
    /// Best classes first.
    pub predictions: Vec<Prediction>,
}

/// Totals of a classification run.
#[derive(Debug, Clone, Default)]
pub struct ClassifySummary {
    /// Latents classified.
    pub classified: u64,
    /// Latents ignored because no accepted `Hello` preceded them.
    pub without_hello: u64,
    /// Latents that did not match their `Hello` (codec, dimension) or
    /// whose payload did not decode.
    pub bad_payload: u64,
    /// Frames rejected by the wire decoder.
    pub frame_errors: u64,
    /// Devices refused, with the reason.
    pub refused: Vec<(String, Refusal)>,
}

/// Classifies every latent of a recording, calling `visit` for each.
pub fn classify_recording<R: Read>(
    reader: R,
    manifest: &Manifest,
    head: &ImagenetHead,
    top_k: usize,
    mut visit: impl FnMut(&Classified),
) -> Result<ClassifySummary, RecordingError> {
    let mut summary = ClassifySummary::default();
    let mut replay = Replay::new(manifest);
    for_each_frame(reader, |item| {
        let message = match item {
            Ok(message) => message,
            Err(_) => {
                summary.frame_errors += 1;
                return;
            }
        };
        match replay.feed(&message) {
            Replayed::Latent { device, vector } => {
                let Message::Latent(latent) = &message else {
                    return;
                };
                let Ok(predictions) = head.predict(&vector, top_k) else {
                    summary.bad_payload += 1;
                    return;
                };
                summary.classified += 1;
                visit(&Classified {
                    device_id: device,
                    seq: latent.seq,
                    frame_size: (latent.frame_width, latent.frame_height),
                    predictions,
                });
            }
            Replayed::Refused { device, refusal } => summary.refused.push((device, refusal)),
            Replayed::WithoutHello => summary.without_hello += 1,
            Replayed::BadLatent(_) => summary.bad_payload += 1,
            Replayed::Other => {}
        }
    })?;
    Ok(summary)
}
