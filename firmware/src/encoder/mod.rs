//! Encoders: an input tensor in, a latent vector out, behind one trait.
//!
//! Backends: `tract` (always built, pure Rust) and `tflite` (cargo feature
//! `tflite`). A backend compiled out still exists and answers
//! [`EncoderError::NotCompiled`], so choosing it gives a clear error rather
//! than a missing symbol.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::manifest::{Layout, Manifest, ManifestError};

mod tract;

pub use self::tract::TractEncoder;

/// Errors loading or running an encoder.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncoderError {
    /// The manifest or the model file failed its checks.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The backend is not part of this build.
    #[error(
        "this build has no {backend} support: rebuild latentcam with `--features {feature}`, or choose another backend"
    )]
    NotCompiled {
        /// Backend name.
        backend: Backend,
        /// The cargo feature that adds it.
        feature: &'static str,
    },
    /// The inference engine could not load the model.
    #[error("{backend} could not load {path}: {message}")]
    Load {
        /// Backend.
        backend: Backend,
        /// Model file.
        path: PathBuf,
        /// Engine message.
        message: String,
    },
    /// Inference failed.
    #[error("{backend} inference failed: {message}")]
    Run {
        /// Backend.
        backend: Backend,
        /// Engine message.
        message: String,
    },
    /// Input or output has the wrong size.
    #[error("{what}: expected {expected} values, got {got}")]
    Shape {
        /// Which tensor.
        what: &'static str,
        /// Expected number of values.
        expected: usize,
        /// Actual number.
        got: usize,
    },
}

/// Inference backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// tract (pure Rust, ONNX).
    Tract,
    /// TensorFlow Lite through tflitec.
    Tflite,
}

impl Backend {
    /// Name used in configs, the CLI and `Hello`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Tract => "tract",
            Backend::Tflite => "tflite",
        }
    }

    /// The model file format this backend loads.
    pub fn format(self) -> &'static str {
        match self {
            Backend::Tract => "onnx",
            Backend::Tflite => "tflite",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tract" => Ok(Backend::Tract),
            "tflite" => Ok(Backend::Tflite),
            other => Err(format!(
                "unknown backend {other:?} (expected tract or tflite)"
            )),
        }
    }
}

/// Encoder precision: which file of the manifest to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Precision {
    /// 32-bit float weights and activations.
    Fp32,
    /// 8-bit quantized.
    Int8,
}

impl Precision {
    /// Name used in the manifest and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Int8 => "int8",
        }
    }
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "int8" => Ok(Precision::Int8),
            other => Err(format!(
                "unknown precision {other:?} (expected fp32 or int8)"
            )),
        }
    }
}

/// What identifies a loaded encoder (goes into `Hello`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncoderInfo {
    /// Backend.
    pub backend: Backend,
    /// Precision.
    pub precision: Precision,
    /// Model id from the manifest.
    pub model_id: String,
    /// SHA-256 of the loaded file.
    pub sha256: [u8; 32],
    /// Model file.
    pub path: PathBuf,
    /// Latent dimension.
    pub latent_dim: usize,
    /// Input layout.
    pub layout: Layout,
    /// Input tensor length (values).
    pub input_len: usize,
}

/// An image encoder.
pub trait Encoder: Send {
    /// Identity of the loaded model.
    fn info(&self) -> &EncoderInfo;

    /// Runs the encoder on one input tensor (layout and length from
    /// [`EncoderInfo`]), writing the latent into `latent`.
    fn encode(&mut self, input: &[f32], latent: &mut [f32]) -> Result<(), EncoderError>;
}

impl fmt::Debug for dyn Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Encoder").field(self.info()).finish()
    }
}

/// Encoder options.
#[derive(Debug, Clone)]
pub struct EncoderOptions {
    /// Backend.
    pub backend: Backend,
    /// Precision.
    pub precision: Precision,
    /// Inference threads (backends that support it).
    pub threads: usize,
}

impl Default for EncoderOptions {
    fn default() -> Self {
        Self {
            backend: Backend::Tract,
            precision: Precision::Fp32,
            threads: 1,
        }
    }
}

/// Loads the encoder a manifest names for the given options, after checking
/// the file's SHA-256 against the manifest.
pub fn open(
    manifest: &Manifest,
    options: &EncoderOptions,
) -> Result<Box<dyn Encoder>, EncoderError> {
    let entry = manifest.encoder(options.backend.format(), options.precision.name())?;
    let (path, sha256) = manifest.verify(entry)?;
    let shape = entry.input_shape.clone().unwrap_or_default();
    let info = EncoderInfo {
        backend: options.backend,
        precision: options.precision,
        model_id: manifest.model_id.clone(),
        sha256,
        path,
        latent_dim: manifest.latent_dim,
        layout: entry.input_layout.unwrap_or(Layout::Nchw),
        input_len: shape.iter().product(),
    };
    if info.input_len == 0 {
        return Err(EncoderError::Load {
            backend: options.backend,
            path: info.path,
            message: "the manifest gives no input_shape for this file".into(),
        });
    }
    match options.backend {
        Backend::Tract => Ok(Box::new(TractEncoder::load(info, &shape)?)),
        Backend::Tflite => Err(EncoderError::NotCompiled {
            backend: Backend::Tflite,
            feature: "tflite",
        }),
    }
}

/// Cosine similarity of two vectors (0 when either is all zeros).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        dot += f64::from(x) * f64::from(y);
        na += f64::from(x) * f64::from(x);
        nb += f64::from(y) * f64::from(y);
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}
