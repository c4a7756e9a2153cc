//! Encoders: an input tensor in, a latent vector out, behind one trait.
//!
//! Backends: `tract` (always built, pure Rust), `tflite` (cargo feature
//! `tflite`, see `firmware/TFLITE.md`) and `litert` (cargo feature `litert`:
//! LiteRT 2.x, the `libLiteRt.so` of `scripts/fetch-litert.sh`). A backend
//! compiled out still exists
//! and answers [`EncoderError::NotCompiled`], so choosing it gives a clear
//! error rather than a missing symbol.
//!
//! Model files are looked up beside the manifest first. Files too big to
//! commit (`committed = false` in the manifest, such as the `.tflite`) are
//! written by `models/build/build.sh` to `$LATENTCAM_CACHE/models/<path>`
//! (default `~/.cache/latentcam`), and found there.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::manifest::{FileEntry, Layout, Manifest, ManifestError};

/// Serde for a choice written by name in configuration files: through its
/// `Display` and `FromStr`, so a file, a flag and a log line spell it the
/// same and a bad name gets the `FromStr` message (which lists the names).
macro_rules! named_in_config {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let name = String::deserialize(d)?;
                name.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

mod litert;
mod tflite;
mod tract;

pub use self::litert::LitertEncoder;
pub use self::tflite::{TfliteConfig, TfliteEncoder};
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
        "this latentcam was built without {backend} support: rebuild it with `--features {feature}` \
         (see firmware/TFLITE.md and scripts/fetch-litert.sh), or choose another backend"
    )]
    NotCompiled {
        /// Backend name.
        backend: Backend,
        /// The cargo feature that adds it.
        feature: &'static str,
    },
    /// A `.tflite` file the manifest lists is neither beside the manifest
    /// nor in the build cache: it is not committed and has not been built yet.
    #[error(
        "{path} is missing: this model file is not committed; build it with \
         `bash models/build/build.sh --tflite` (writes {cached}), or set LATENTCAM_CACHE to where it was built"
    )]
    NotBuilt {
        /// Where the manifest puts it.
        path: PathBuf,
        /// Where the build writes it.
        cached: PathBuf,
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
    /// LiteRT 2.x (the CPU accelerator: XNNPACK, int8 included).
    Litert,
}

impl Backend {
    /// Every backend, compiled in or not.
    pub const ALL: [Backend; 3] = [Backend::Tract, Backend::Tflite, Backend::Litert];

    /// Whether this build can run the backend (`tflite` and `litert` need
    /// the cargo feature of the same name).
    pub const fn is_compiled(self) -> bool {
        match self {
            Backend::Tract => true,
            Backend::Tflite => cfg!(feature = "tflite"),
            Backend::Litert => cfg!(feature = "litert"),
        }
    }

    /// Name used in configs, the CLI and `Hello`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Tract => "tract",
            Backend::Tflite => "tflite",
            Backend::Litert => "litert",
        }
    }

    /// The model file format this backend loads.
    pub fn format(self) -> &'static str {
        match self {
            Backend::Tract => "onnx",
            Backend::Tflite | Backend::Litert => "tflite",
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
            "litert" => Ok(Backend::Litert),
            other => Err(format!(
                "unknown backend {other:?} (expected tract, tflite or litert)"
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

impl Backend {
    /// The precision `precision = "auto"` gives this backend: int8 where
    /// the runtime has fast int8 kernels (LiteRT's XNNPACK), fp32 where
    /// int8 is slower than fp32 (tract, and the TF 2.6 library of tflitec).
    pub fn default_precision(self) -> Precision {
        match self {
            Backend::Litert => Precision::Int8,
            Backend::Tract | Backend::Tflite => Precision::Fp32,
        }
    }
}

/// A configured backend: one by name, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendChoice {
    /// LiteRT where this build has it and its model file is present,
    /// tract otherwise (see [`choose`]).
    Auto,
    /// This backend, or an error when it cannot run.
    Named(Backend),
}

impl FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(BackendChoice::Auto),
            other => other.parse().map(BackendChoice::Named).map_err(|_| {
                format!("unknown backend {other:?} (expected auto, tract, tflite or litert)")
            }),
        }
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendChoice::Auto => f.write_str("auto"),
            BackendChoice::Named(b) => b.fmt(f),
        }
    }
}

named_in_config!(BackendChoice);

/// A configured precision: one by name, or `auto` (the backend's
/// [`Backend::default_precision`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrecisionChoice {
    /// The chosen backend's default precision.
    Auto,
    /// This precision.
    Named(Precision),
}

impl FromStr for PrecisionChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(PrecisionChoice::Auto),
            other => other
                .parse()
                .map(PrecisionChoice::Named)
                .map_err(|_| format!("unknown precision {other:?} (expected auto, fp32 or int8)")),
        }
    }
}

impl fmt::Display for PrecisionChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PrecisionChoice::Auto => "auto",
            PrecisionChoice::Named(p) => p.name(),
        })
    }
}

named_in_config!(PrecisionChoice);

/// The backend and precision a configuration comes to on this build and
/// machine, and why (for the start-up log and `doctor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    /// Backend to load.
    pub backend: Backend,
    /// Precision to load.
    pub precision: Precision,
    /// Why, in words: "configured", or what `auto` found.
    pub reason: String,
}

impl Chosen {
    /// Options that load this choice with `threads` inference threads and
    /// every other option at its default.
    pub fn options(&self, threads: usize) -> EncoderOptions {
        EncoderOptions {
            backend: self.backend,
            precision: self.precision,
            threads,
            ..EncoderOptions::default()
        }
    }
}

/// Resolves `auto` in a configured backend and precision.
///
/// `auto` picks LiteRT when this build has it (cargo feature `litert`) and
/// the `.tflite` file for the precision is present (beside the manifest
/// or in the build cache); otherwise tract, saying which of the two was
/// missing. A named backend is taken as it is: [`open`] then reports what
/// stops it. A missing file is the only thing `auto` looks at; a file
/// that is present but fails its SHA-256 check is an error, never a
/// silent fallback.
pub fn choose(manifest: &Manifest, backend: BackendChoice, precision: PrecisionChoice) -> Chosen {
    let precision_for = |b: Backend| match precision {
        PrecisionChoice::Auto => b.default_precision(),
        PrecisionChoice::Named(p) => p,
    };
    let (backend, reason) = match backend {
        BackendChoice::Named(b) => (b, "configured".to_owned()),
        BackendChoice::Auto if !Backend::Litert.is_compiled() => (
            Backend::Tract,
            "auto: this build has no LiteRT (cargo feature `litert`; LiteRT ships no \
             library for 32-bit ARM)"
                .to_owned(),
        ),
        BackendChoice::Auto => {
            let p = precision_for(Backend::Litert);
            match manifest.encoder(Backend::Litert.format(), p.name()) {
                Ok(entry) if locate(manifest, entry).is_some() => {
                    (Backend::Litert, "auto: LiteRT is built in".to_owned())
                }
                Ok(entry) => (
                    Backend::Tract,
                    format!(
                        "auto: {} is not built (`bash models/build/build.sh --tflite`), so not LiteRT",
                        entry.path.display()
                    ),
                ),
                Err(e) => (Backend::Tract, format!("auto: no LiteRT model: {e}")),
            }
        }
    };
    Chosen {
        backend,
        precision: precision_for(backend),
        reason,
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
    /// Inference threads: TFLite's interpreter threads, LiteRT's XNNPACK
    /// threads; tract's matrix products on a private pool of this many
    /// threads.
    pub threads: usize,
    /// Run TFLite through its XNNPACK delegate (ignored by tract). On by
    /// default: for fp32 it was 6.4x faster than TFLite's own kernels on
    /// x86_64 with 1 thread (firmware/TFLITE.md); the TF 2.6 x86_64 library
    /// leaves int8 graphs to its own kernels either way.
    pub xnnpack: bool,
}

impl Default for EncoderOptions {
    fn default() -> Self {
        Self {
            backend: Backend::Tract,
            precision: Precision::Fp32,
            threads: 1,
            xnnpack: true,
        }
    }
}

/// Loads the encoder a manifest names for the given options, after checking
/// the file's SHA-256 against the manifest.
pub fn open(
    manifest: &Manifest,
    options: &EncoderOptions,
) -> Result<Box<dyn Encoder>, EncoderError> {
    // Before touching files: a build without the backend says so plainly.
    if !options.backend.is_compiled() {
        return Err(EncoderError::NotCompiled {
            backend: options.backend,
            feature: options.backend.name(),
        });
    }
    let entry = manifest.encoder(options.backend.format(), options.precision.name())?;
    let (path, sha256) = verify_file(manifest, entry)?;
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
        Backend::Tract => Ok(Box::new(TractEncoder::load(
            info,
            &shape,
            options.threads.max(1),
        )?)),
        Backend::Tflite | Backend::Litert => {
            let config = TfliteConfig {
                input_shape: &shape,
                input_name: entry.input_name.as_deref(),
                output_name: entry
                    .output_names
                    .as_ref()
                    .and_then(|names| names.first())
                    .map(String::as_str),
                threads: options.threads,
                xnnpack: options.xnnpack,
            };
            if options.backend == Backend::Litert {
                Ok(Box::new(LitertEncoder::load(info, &config)?))
            } else {
                Ok(Box::new(TfliteEncoder::load(info, &config)?))
            }
        }
    }
}

/// The build cache that `models/build/build.sh` writes uncommitted model
/// files to: `$LATENTCAM_CACHE`, else `~/.cache/latentcam`.
pub fn cache_dir() -> Option<PathBuf> {
    match std::env::var_os("LATENTCAM_CACHE") {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => std::env::var_os("HOME")
            .filter(|home| !home.is_empty())
            .map(|home| Path::new(&home).join(".cache").join("latentcam")),
    }
}

/// Where a manifest file is: beside the manifest, or else (for files too
/// big to commit) in the build cache under `models/<path>`. `None` when it
/// is in neither place.
pub fn locate(manifest: &Manifest, entry: &FileEntry) -> Option<PathBuf> {
    let beside = manifest.resolve(entry);
    if beside.is_file() {
        return Some(beside);
    }
    let cached = cache_dir()?.join("models").join(&entry.path);
    cached.is_file().then_some(cached)
}

/// [`locate`]s a file and checks its SHA-256 against the manifest.
fn verify_file(
    manifest: &Manifest,
    entry: &FileEntry,
) -> Result<(PathBuf, [u8; 32]), EncoderError> {
    let Some(path) = locate(manifest, entry) else {
        if entry.format != "tflite" {
            // Committed files: the manifest's own "cannot read" error.
            return Ok(manifest.verify(entry)?);
        }
        return Err(EncoderError::NotBuilt {
            path: manifest.resolve(entry),
            cached: cache_dir()
                .unwrap_or_else(|| PathBuf::from("$LATENTCAM_CACHE"))
                .join("models")
                .join(&entry.path),
        });
    };
    Ok(manifest.verify_at(entry, path)?)
}

/// Index of the tensor called `wanted` among `names`, or the only one when
/// no name is given (the manifest's `input_name` / `output_names`).
#[cfg_attr(not(any(feature = "tflite", feature = "litert")), allow(dead_code))]
pub(crate) fn find_tensor(
    what: &str,
    names: &[&str],
    wanted: Option<&str>,
) -> Result<usize, String> {
    match wanted {
        Some(name) => names.iter().position(|n| *n == name).ok_or_else(|| {
            format!(
                "the manifest names {what} tensor {name:?}, but the model's {what}s are {names:?}"
            )
        }),
        None if names.len() == 1 => Ok(0),
        None => Err(format!(
            "the model has {} {what}s {names:?} and the manifest names none",
            names.len()
        )),
    }
}

/// Checks an input tensor's length against the encoder's.
pub(crate) fn check_input(info: &EncoderInfo, input: &[f32]) -> Result<(), EncoderError> {
    if input.len() != info.input_len {
        return Err(EncoderError::Shape {
            what: "encoder input",
            expected: info.input_len,
            got: input.len(),
        });
    }
    Ok(())
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
