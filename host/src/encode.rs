//! The encoder on the host: enrolment photos and search-by-image queries
//! become latents here with the same manifest, preprocessing and model the
//! devices run, so they compare with the devices' latents.

use std::path::Path;

use latentcam_model::encoder::{
    self, BackendChoice, Encoder, EncoderError, Precision, PrecisionChoice,
};
use latentcam_model::manifest::Manifest;
use latentcam_model::picture::{self, PictureError};
use latentcam_model::preprocess::{PreprocessError, Preprocessor};

/// Why an image could not be encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The bytes are not a JPEG or PNG image this build decodes, or the
    /// file could not be read.
    #[error(transparent)]
    Image(#[from] PictureError),
    /// Preprocessing refused the image (e.g. empty).
    #[error(transparent)]
    Preprocess(#[from] PreprocessError),
    /// The encoder failed.
    #[error(transparent)]
    Encoder(#[from] EncoderError),
}

/// An encoder with its preprocessing.
#[derive(Debug)]
pub struct HostEncoder {
    encoder: Box<dyn Encoder>,
    pre: Preprocessor,
    dim: usize,
}

impl HostEncoder {
    /// Loads the manifest's fp32 encoder (the reference the int8 files are
    /// quantized from), on LiteRT where this build has it and its file is
    /// built, else on tract ([`encoder::choose`] with `auto`).
    pub fn open(manifest: &Manifest) -> Result<Self, EncoderError> {
        let chosen = encoder::choose(
            manifest,
            BackendChoice::Auto,
            PrecisionChoice::Named(Precision::Fp32),
        );
        let options = chosen.options(1);
        let encoder = encoder::open(manifest, &options)?;
        tracing::debug!(backend = %chosen.backend, why = %chosen.reason, "host encoder loaded");
        let pre = Preprocessor::new(&manifest.preprocessing, encoder.info().layout);
        Ok(Self {
            encoder,
            pre,
            dim: manifest.latent_dim,
        })
    }

    /// The latent of an RGB image.
    pub fn encode_rgb(&mut self, image: &image::RgbImage) -> Result<Vec<f32>, EncodeError> {
        let input = self
            .pre
            .run(image.as_raw(), image.width(), image.height())?;
        let mut latent = vec![0f32; self.dim];
        self.encoder.encode(input, &mut latent)?;
        Ok(latent)
    }

    /// The latent of an encoded image (JPEG or PNG bytes).
    pub fn encode_bytes(&mut self, bytes: &[u8]) -> Result<Vec<f32>, EncodeError> {
        let image = picture::decode_rgb(bytes)?;
        self.encode_rgb(&image)
    }

    /// The latent of an image file.
    pub fn encode_file(&mut self, path: &Path) -> Result<Vec<f32>, EncodeError> {
        let image = picture::open_rgb(path)?;
        self.encode_rgb(&image)
    }
}
