//! The model's reference fixtures
//! (`models/efficientnet-lite0/fixtures/reference.json`): real photos, their
//! 224×224 crops, and the latents and ImageNet top-5 an independent
//! implementation (onnxruntime on Pillow preprocessing) computed for them.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where Debian's opencv-doc keeps the sample photos most references name.
pub const OPENCV_DATA: &str = "/usr/share/doc/opencv-doc/examples/data";

/// Debian opencv-doc's surveillance clip (768×576, 10 frames/s, 795 frames).
pub const VTEST: &str = "/usr/share/doc/opencv-doc/examples/data/vtest.avi";

/// [`VTEST`], after checking it is installed.
pub fn vtest() -> &'static str {
    assert!(
        Path::new(VTEST).is_file(),
        "{VTEST} is missing: apt-get install opencv-doc (scripts/setup.sh does)"
    );
    VTEST
}

/// `reference.json`, typed.
#[derive(Debug, Clone, Deserialize)]
pub struct Reference {
    /// The model the latents come from.
    pub model_id: String,
    /// The preprocessing the crops were made with.
    pub preprocessing_id: String,
    /// Latent dimensions.
    pub latent_dim: usize,
    /// One entry per photo.
    pub photos: Vec<ReferencePhoto>,
    /// The fixtures directory the relative paths start from.
    #[serde(skip)]
    pub dir: PathBuf,
}

/// One photo of the reference.
#[derive(Debug, Clone, Deserialize)]
pub struct ReferencePhoto {
    /// File name (of the opencv-doc sample when `original` is `None`).
    pub name: String,
    /// The 224×224 RGB crop, relative to the fixtures directory.
    pub crop_png: String,
    /// SHA-256 of the crop's RGB8 pixels.
    pub crop_rgb8_sha256: String,
    /// Width and height of the photo.
    pub original_size: [u32; 2],
    /// Size after the shorter-side resize.
    pub resized_size: [u32; 2],
    /// Left edge of the crop in the resized image.
    pub crop_left: u32,
    /// Top edge of the crop in the resized image.
    pub crop_top: u32,
    /// The photo's own file, relative to the fixtures directory, when it is
    /// not an opencv-doc sample.
    pub original: Option<String>,
    /// ImageNet top-5 class indices of the fp32 model.
    pub top5_fp32: Vec<u32>,
    /// The same for the int8 model.
    pub top5_int8: Vec<u32>,
    /// Labels of `top5_fp32`.
    pub top5_fp32_labels: Vec<String>,
    /// Cosine similarity of the fp32 and int8 latents.
    pub cosine_fp32_int8: f64,
    /// The fp32 model's latent.
    pub fp32_latent: Vec<f32>,
    /// The int8 model's latent.
    pub int8_latent: Vec<f32>,
}

impl Reference {
    /// Loads the shipped model's reference.
    pub fn load() -> Self {
        Self::load_from(&crate::models().join("efficientnet-lite0/fixtures"))
    }

    /// Loads `reference.json` from a fixtures directory.
    pub fn load_from(dir: &Path) -> Self {
        let path = dir.join("reference.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut reference: Reference = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
        reference.dir = dir.to_path_buf();
        reference
    }

    /// The photo's 224×224 crop.
    pub fn crop_path(&self, photo: &ReferencePhoto) -> PathBuf {
        self.dir.join(&photo.crop_png)
    }

    /// The photo's original file: beside the fixtures, or opencv-doc's
    /// sample of that name (`scripts/setup.sh` installs opencv-doc).
    pub fn original_path(&self, photo: &ReferencePhoto) -> PathBuf {
        match &photo.original {
            Some(relative) => self.dir.join(relative),
            None => Path::new(OPENCV_DATA).join(&photo.name),
        }
    }

    /// Copies every photo's original file into `dir` under the name the
    /// reference gives it, and returns the photos in the order of those
    /// names: the order a directory replay reads them in.
    pub fn copy_originals(&self, dir: &Path) -> Vec<&ReferencePhoto> {
        let mut photos: Vec<&ReferencePhoto> = self.photos.iter().collect();
        for photo in &photos {
            let source = self.original_path(photo);
            assert!(
                source.is_file(),
                "{} missing (scripts/setup.sh installs opencv-doc)",
                source.display()
            );
            std::fs::copy(&source, dir.join(&photo.name))
                .unwrap_or_else(|e| panic!("copying {}: {e}", source.display()));
        }
        photos.sort_by(|a, b| a.name.cmp(&b.name));
        photos
    }

    /// The photos that are the project's own files (not opencv-doc samples).
    pub fn originals(&self) -> impl Iterator<Item = &ReferencePhoto> {
        self.photos.iter().filter(|p| p.original.is_some())
    }
}

impl ReferencePhoto {
    /// The reference latent of a precision (`"fp32"` or `"int8"`).
    pub fn latent(&self, precision: &str) -> &[f32] {
        match precision {
            "fp32" => &self.fp32_latent,
            "int8" => &self.int8_latent,
            other => panic!("no reference latent for precision {other:?}"),
        }
    }

    /// The ImageNet top-5 of a precision (`"fp32"` or `"int8"`).
    pub fn top5(&self, precision: &str) -> &[u32] {
        match precision {
            "fp32" => &self.top5_fp32,
            "int8" => &self.top5_int8,
            other => panic!("no reference top-5 for precision {other:?}"),
        }
    }
}
