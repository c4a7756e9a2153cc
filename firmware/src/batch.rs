//! Encoding a batch of image files into a recording: the simplest complete
//! path from photos to latents on the wire format, used by
//! `latentcam-edge encode` (enrolment photos, demos, offline datasets).

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use latentcam_wire::{Codec, Latent, Message, frame};

use crate::encoder::{Encoder, EncoderError};
use crate::preprocess::Preprocessor;

/// Errors of a batch run that stop it (a single bad image does not).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// Writing the recording failed (disk full, closed pipe).
    #[error("cannot write the recording: {0}")]
    Write(#[source] std::io::Error),
    /// The encoder failed.
    #[error(transparent)]
    Encoder(#[from] EncoderError),
    /// Framing or codec failed.
    #[error("cannot frame latent: {0}")]
    Wire(String),
}

/// What a batch run did.
#[derive(Debug, Clone, Default)]
pub struct BatchReport {
    /// Images encoded.
    pub encoded: u64,
    /// Files skipped because they could not be decoded, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
    /// Bytes written, Hello included.
    pub bytes: u64,
    /// Bytes of the latent frames alone.
    pub latent_frame_bytes: u64,
    /// Seconds spent decoding + preprocessing, and in the encoder.
    pub preprocess_seconds: f64,
    /// Seconds spent in the encoder.
    pub encode_seconds: f64,
}

/// Settings of a batch run.
#[derive(Debug, Clone)]
pub struct BatchSettings {
    /// Device id sent in `Hello`.
    pub device_id: String,
    /// Latent codec.
    pub codec: Codec,
    /// Preprocessing id sent in `Hello`.
    pub preprocessing_id: String,
}

/// Encodes `images` in order and writes `Hello` then one `Latent` per image
/// (sequence numbers from 0) to `out`. Undecodable images are skipped and
/// reported; I/O errors on `out` stop the run.
pub fn encode_images<W: Write>(
    images: &[PathBuf],
    encoder: &mut dyn Encoder,
    preprocessor: &mut Preprocessor,
    settings: &BatchSettings,
    out: &mut W,
) -> Result<BatchReport, BatchError> {
    let info = encoder.info().clone();
    let mut report = BatchReport::default();
    let mut frame_buf = vec![0u8; frame::ENCODE_BUFFER_LEN];
    let hello = crate::pipeline::hello_frame(
        &info,
        &settings.device_id,
        &settings.preprocessing_id,
        settings.codec,
    )
    .map_err(|e| BatchError::Wire(e.to_string()))?;
    out.write_all(&hello).map_err(BatchError::Write)?;
    report.bytes += hello.len() as u64;

    let mut latent = vec![0f32; info.latent_dim];
    let mut payload = vec![
        0u8;
        settings
            .codec
            .payload_len(info.latent_dim)
            .map_err(|e| BatchError::Wire(e.to_string()))?
    ];
    let epoch = Instant::now();
    for (seq, path) in images.iter().enumerate() {
        let started = Instant::now();
        let image = match crate::picture::open_rgb(path) {
            Ok(image) => image,
            Err(e) => {
                report.skipped.push((path.clone(), e.to_string()));
                continue;
            }
        };
        let (width, height) = image.dimensions();
        let input = match preprocessor.run(image.as_raw(), width, height) {
            Ok(input) => input,
            Err(e) => {
                report.skipped.push((path.clone(), e.to_string()));
                continue;
            }
        };
        let encode_start = Instant::now();
        report.preprocess_seconds += (encode_start - started).as_secs_f64();
        encoder.encode(input, &mut latent)?;
        report.encode_seconds += encode_start.elapsed().as_secs_f64();
        let len = settings
            .codec
            .encode(&latent, &mut payload)
            .map_err(|e| BatchError::Wire(format!("{}: {e}", path.display())))?;
        let message = Message::Latent(Latent {
            seq: seq as u64,
            capture_us: started.duration_since(epoch).as_micros() as u64,
            frame_width: width,
            frame_height: height,
            codec: settings.codec,
            payload: &payload[..len],
            mac: &[],
            wall: None,
        });
        let n =
            frame::encode(&message, &mut frame_buf).map_err(|e| BatchError::Wire(e.to_string()))?;
        out.write_all(&frame_buf[..n]).map_err(BatchError::Write)?;
        report.bytes += n as u64;
        report.latent_frame_bytes += n as u64;
        report.encoded += 1;
    }
    out.flush().map_err(BatchError::Write)?;
    Ok(report)
}
