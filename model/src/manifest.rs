//! The model manifest (`models/manifest.toml`): which files make up a model,
//! their SHA-256, tensor shapes and the preprocessing the encoder expects.
//!
//! The edge refuses to start with an encoder file whose SHA-256 differs from
//! the manifest, and reports the model id and hash in `Hello`, so a host never
//! interprets latents of one model with the heads of another.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Errors loading or checking a manifest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The manifest or a file it names could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The manifest is not valid TOML of the expected shape.
    #[error("{path} is not a valid model manifest: {message}")]
    Parse {
        /// The manifest.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// The manifest asks for something this build cannot do.
    #[error("{path}: unsupported {what}: {value:?} (supported: {supported})")]
    Unsupported {
        /// The manifest.
        path: PathBuf,
        /// Which setting.
        what: &'static str,
        /// Its value.
        value: String,
        /// What would work.
        supported: &'static str,
    },
    /// No file of the requested role/format/precision.
    #[error("the manifest {path} lists no {what}")]
    Missing {
        /// The manifest.
        path: PathBuf,
        /// What was asked for.
        what: String,
    },
    /// A file's SHA-256 differs from the manifest: wrong or damaged model.
    #[error(
        "{path} has SHA-256 {actual}, but the manifest expects {expected}: the file is damaged, \
         was replaced, or belongs to another model; reinstall the models directory (the package's \
         models/, or `git checkout models/` in a source checkout) or rebuild it with \
         models/build/build.sh"
    )]
    Sha256Mismatch {
        /// The file.
        path: PathBuf,
        /// From the manifest.
        expected: String,
        /// Computed.
        actual: String,
    },
}

/// How the encoder input tensor is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Layout {
    /// Batch, channel, height, width (ONNX).
    #[serde(rename = "NCHW")]
    Nchw,
    /// Batch, height, width, channel (TFLite).
    #[serde(rename = "NHWC")]
    Nhwc,
}

/// The `[preprocessing]` table: frame → encoder input.
#[derive(Debug, Clone, Deserialize)]
pub struct PreprocessingSpec {
    /// Preprocessing id, sent in `Hello`.
    pub id: String,
    /// The shorter side of the frame is resized to this many pixels.
    pub resize_shorter_side: u32,
    /// Resampling filter; only `bilinear` (PIL's antialiased triangle) is implemented.
    pub resize_filter: String,
    /// Crop policy; only `center` is implemented.
    pub crop: String,
    /// Crop width in pixels.
    pub crop_width: u32,
    /// Crop height in pixels.
    pub crop_height: u32,
    /// Channel order; only `RGB` is implemented.
    pub channel_order: String,
    /// Per-channel value subtracted from the 8-bit sample.
    pub mean: [f32; 3],
    /// Per-channel divisor applied after subtracting the mean.
    pub std: [f32; 3],
}

/// One `[[file]]` entry.
#[derive(Debug, Clone, Deserialize)]
pub struct FileEntry {
    /// Path relative to the manifest's directory.
    pub path: PathBuf,
    /// Lower-case hex SHA-256.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// `encoder`, `head` or `labels`.
    pub role: String,
    /// `onnx`, `tflite`, `head`, `text`.
    pub format: String,
    /// `fp32` or `int8` for encoders and heads.
    #[serde(default)]
    pub precision: Option<String>,
    /// Encoder input tensor name.
    #[serde(default)]
    pub input_name: Option<String>,
    /// Encoder input tensor shape.
    #[serde(default)]
    pub input_shape: Option<Vec<usize>>,
    /// Encoder input layout.
    #[serde(default)]
    pub input_layout: Option<Layout>,
    /// Encoder output tensor names; the first is the latent.
    #[serde(default)]
    pub output_names: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct RawManifest {
    schema_version: u32,
    model_id: String,
    latent_dim: usize,
    #[serde(default)]
    num_classes: Option<usize>,
    preprocessing: PreprocessingSpec,
    #[serde(rename = "file", default)]
    files: Vec<FileEntry>,
}

/// A loaded, validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Where it was loaded from.
    pub path: PathBuf,
    /// Stable model id, sent in `Hello` and checked by the host.
    pub model_id: String,
    /// Latent dimension.
    pub latent_dim: usize,
    /// Number of classes of the classifier head, if any.
    pub num_classes: Option<usize>,
    /// Preprocessing.
    pub preprocessing: PreprocessingSpec,
    /// Files.
    pub files: Vec<FileEntry>,
}

/// Where the models directory is when none is given: `$LATENTCAM_MODELS`,
/// then `models/` beside the executable's install prefix
/// (`/usr/share/latentcam/models` style layouts use the variable), then the
/// source tree's `models/` (development builds).
pub fn default_models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LATENTCAM_MODELS") {
        return PathBuf::from(dir);
    }
    if let Ok(exe) = std::env::current_exe() {
        for ancestor in exe.ancestors().skip(1).take(3) {
            let candidate = ancestor.join("models").join("manifest.toml");
            if candidate.is_file() {
                return ancestor.join("models");
            }
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("models")
}

impl Manifest {
    /// Loads `manifest.toml` from a models directory or a manifest path.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ManifestError> {
        let mut path = path.as_ref().to_path_buf();
        if path.is_dir() {
            path = path.join("manifest.toml");
        }
        let text = std::fs::read_to_string(&path).map_err(|source| ManifestError::Io {
            path: path.clone(),
            source,
        })?;
        let raw: RawManifest = toml::from_str(&text).map_err(|e| ManifestError::Parse {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let unsupported = |what, value: &str, supported| ManifestError::Unsupported {
            path: path.clone(),
            what,
            value: value.to_owned(),
            supported,
        };
        if raw.schema_version != 1 {
            return Err(unsupported(
                "schema_version",
                &raw.schema_version.to_string(),
                "1",
            ));
        }
        let p = &raw.preprocessing;
        if p.resize_filter != "bilinear" {
            return Err(unsupported("resize_filter", &p.resize_filter, "bilinear"));
        }
        if p.crop != "center" {
            return Err(unsupported("crop", &p.crop, "center"));
        }
        if p.channel_order != "RGB" {
            return Err(unsupported("channel_order", &p.channel_order, "RGB"));
        }
        if p.std.contains(&0.0) || p.crop_width == 0 || p.crop_height == 0 {
            return Err(unsupported(
                "preprocessing values",
                "zero",
                "non-zero std and crop",
            ));
        }
        if p.resize_shorter_side < p.crop_width.max(p.crop_height) {
            return Err(unsupported(
                "resize_shorter_side",
                &p.resize_shorter_side.to_string(),
                "at least the crop size",
            ));
        }
        Ok(Self {
            path,
            model_id: raw.model_id,
            latent_dim: raw.latent_dim,
            num_classes: raw.num_classes,
            preprocessing: raw.preprocessing,
            files: raw.files,
        })
    }

    /// The directory the manifest's paths are relative to.
    pub fn root(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// Absolute path of a file entry.
    pub fn resolve(&self, entry: &FileEntry) -> PathBuf {
        self.root().join(&entry.path)
    }

    /// The encoder file of a format (`onnx`, `tflite`) and precision (`fp32`, `int8`).
    pub fn encoder(&self, format: &str, precision: &str) -> Result<&FileEntry, ManifestError> {
        self.files
            .iter()
            .find(|f| {
                f.role == "encoder"
                    && f.format == format
                    && f.precision.as_deref() == Some(precision)
            })
            .ok_or_else(|| ManifestError::Missing {
                path: self.path.clone(),
                what: format!("{precision} {format} encoder"),
            })
    }

    /// The first file with a role (`head`, `labels`).
    pub fn file_with_role(&self, role: &str) -> Result<&FileEntry, ManifestError> {
        self.files
            .iter()
            .find(|f| f.role == role)
            .ok_or_else(|| ManifestError::Missing {
                path: self.path.clone(),
                what: role.to_owned(),
            })
    }

    /// Checks a file's SHA-256 against the manifest and returns its path and
    /// raw hash.
    pub fn verify(&self, entry: &FileEntry) -> Result<(PathBuf, [u8; 32]), ManifestError> {
        self.verify_at(entry, self.resolve(entry))
    }

    /// Checks the file at `path` (e.g. a cached copy of an uncommitted
    /// file) against `entry`'s SHA-256 and returns the path and raw hash.
    pub fn verify_at(
        &self,
        entry: &FileEntry,
        path: PathBuf,
    ) -> Result<(PathBuf, [u8; 32]), ManifestError> {
        let digest = sha256_file(&path)?;
        let actual = hex::encode(digest);
        if !actual.eq_ignore_ascii_case(&entry.sha256) {
            return Err(ManifestError::Sha256Mismatch {
                path,
                expected: entry.sha256.clone(),
                actual,
            });
        }
        Ok((path, digest))
    }
}

/// SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<[u8; 32], ManifestError> {
    let io_err = |source| ManifestError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io_err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(io_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}
