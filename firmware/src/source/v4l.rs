//! V4L2 cameras (USB webcams, the Raspberry Pi camera through its V4L2
//! driver), captured with mmap streaming.
//!
//! The device code needs the cargo feature `v4l` (the `v4l` crate runs
//! bindgen, so building it needs clang and libclang). Without the feature
//! this module keeps the same API: [`V4lSource::open`] and
//! [`list_cameras`] return [`SourceError::NotCompiled`]. The pixel
//! conversions and the format negotiation are plain Rust, compiled and
//! tested in every build.

use std::fmt;
use std::path::{Path, PathBuf};

use super::SourceError;

/// Pixel formats this module can turn into RGB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PixelFormat {
    /// Motion JPEG: one JPEG per frame.
    Mjpeg,
    /// YUYV 4:2:2, two pixels in four bytes.
    Yuyv,
    /// Packed RGB, three bytes per pixel.
    Rgb3,
}

impl PixelFormat {
    /// The V4L2 fourcc.
    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::Mjpeg => *b"MJPG",
            PixelFormat::Yuyv => *b"YUYV",
            PixelFormat::Rgb3 => *b"RGB3",
        }
    }

    /// The format for a V4L2 fourcc, if it is one of ours.
    pub fn from_fourcc(fourcc: [u8; 4]) -> Option<Self> {
        match &fourcc {
            b"MJPG" => Some(PixelFormat::Mjpeg),
            b"YUYV" => Some(PixelFormat::Yuyv),
            b"RGB3" => Some(PixelFormat::Rgb3),
            _ => None,
        }
    }

    /// Preference when several formats give the requested size and rate:
    /// uncompressed first (no decoding cost, no JPEG artefacts).
    fn rank(self) -> u8 {
        match self {
            PixelFormat::Rgb3 => 0,
            PixelFormat::Yuyv => 1,
            PixelFormat::Mjpeg => 2,
        }
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.fourcc()))
    }
}

/// One frame size a camera offers for a format, with its frame rates.
#[derive(Debug, Clone, PartialEq)]
pub struct SizeOffer {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frame rates offered at this size; empty when the driver does not
    /// list them (any rate is then assumed possible).
    pub fps: Vec<f64>,
}

/// One pixel format a camera offers.
#[derive(Debug, Clone, PartialEq)]
pub struct FormatOffer {
    /// The fourcc as text, e.g. `MJPG`.
    pub fourcc: String,
    /// The driver's description.
    pub description: String,
    /// The format, if this module can convert it.
    pub format: Option<PixelFormat>,
    /// Sizes offered.
    pub sizes: Vec<SizeOffer>,
}

/// A camera found by [`list_cameras`].
#[derive(Debug, Clone, PartialEq)]
pub struct CameraInfo {
    /// Device node, e.g. `/dev/video0`.
    pub path: PathBuf,
    /// The driver's name for the card.
    pub name: String,
    /// Formats offered.
    pub formats: Vec<FormatOffer>,
}

/// What to ask a camera for.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraRequest {
    /// Device node.
    pub device: PathBuf,
    /// Wanted width.
    pub width: u32,
    /// Wanted height.
    pub height: u32,
    /// Wanted frames per second.
    pub fps: f64,
    /// A format to insist on; `None` picks one.
    pub format: Option<PixelFormat>,
}

impl CameraRequest {
    /// `device` at 640×480, 30 fps, any format.
    pub fn new(device: impl Into<PathBuf>) -> Self {
        Self {
            device: device.into(),
            width: 640,
            height: 480,
            fps: 30.0,
            format: None,
        }
    }
}

/// The mode chosen by [`negotiate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Negotiated {
    /// Pixel format.
    pub format: PixelFormat,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Frame rate to ask for.
    pub fps: f64,
}

/// Chooses a format, size and rate among a camera's offers.
///
/// Order of preference: the exact size, else the smallest size at least as
/// large in both dimensions, else the largest; then a rate at least the
/// requested one; then RGB3 over YUYV over MJPEG. The rate asked for is the
/// smallest offered rate reaching the request, else the highest offered.
pub fn negotiate(
    offers: &[FormatOffer],
    request: &CameraRequest,
) -> Result<Negotiated, SourceError> {
    let (want_w, want_h) = (u64::from(request.width), u64::from(request.height));
    let mut best: Option<((u8, u64, bool, u8), Negotiated)> = None;
    for offer in offers {
        let Some(format) = offer.format else { continue };
        if request.format.is_some_and(|f| f != format) {
            continue;
        }
        for size in &offer.sizes {
            let (w, h) = (u64::from(size.width), u64::from(size.height));
            let size_key = if (w, h) == (want_w, want_h) {
                (0, 0)
            } else if w >= want_w && h >= want_h {
                (1, w * h)
            } else {
                (2, u64::MAX - w * h)
            };
            let reaching = size
                .fps
                .iter()
                .copied()
                .filter(|&f| f + 1e-6 >= request.fps)
                .reduce(f64::min);
            let fps = if size.fps.is_empty() {
                request.fps
            } else {
                reaching.unwrap_or_else(|| size.fps.iter().copied().fold(0.0, f64::max))
            };
            let slow = !size.fps.is_empty() && reaching.is_none();
            let key = (size_key.0, size_key.1, slow, format.rank());
            if best.as_ref().is_none_or(|(k, _)| key < *k) {
                best = Some((
                    key,
                    Negotiated {
                        format,
                        width: size.width,
                        height: size.height,
                        fps,
                    },
                ));
            }
        }
    }
    best.map(|(_, n)| n).ok_or_else(|| {
        let offered: Vec<&str> = offers.iter().map(|o| o.fourcc.as_str()).collect();
        let wanted = request
            .format
            .map_or_else(|| "MJPG, YUYV or RGB3".to_string(), |f| f.to_string());
        SourceError::config(
            request.device.display(),
            format!(
                "the camera offers no {wanted} mode (it offers: {})",
                offered.join(", ")
            ),
            "use a camera with MJPG, YUYV or RGB3 output, or drop the format setting",
        )
    })
}

/// Converts YUYV 4:2:2 (BT.601, limited range, as UVC cameras send) to
/// packed RGB. `stride` is the bytes per YUYV row (at least `width × 2`);
/// `width` must be even. Returns `false` if `yuyv` is too short.
pub fn yuyv_to_rgb(yuyv: &[u8], width: u32, height: u32, stride: usize, rgb: &mut [u8]) -> bool {
    let (w, h) = (width as usize, height as usize);
    if w % 2 != 0 || stride < w * 2 || rgb.len() < w * h * 3 || h == 0 {
        return false;
    }
    if yuyv.len() < stride * (h - 1) + w * 2 {
        return false;
    }
    for (y, out_row) in rgb.chunks_exact_mut(w * 3).take(h).enumerate() {
        let in_row = &yuyv[y * stride..][..w * 2];
        for (quad, out) in in_row.chunks_exact(4).zip(out_row.chunks_exact_mut(6)) {
            let (u, v) = (i32::from(quad[1]) - 128, i32::from(quad[3]) - 128);
            for (luma, px) in [quad[0], quad[2]].into_iter().zip(out.chunks_exact_mut(3)) {
                let c = 298 * (i32::from(luma) - 16) + 128;
                px[0] = ((c + 409 * v) >> 8).clamp(0, 255) as u8;
                px[1] = ((c - 100 * u - 208 * v) >> 8).clamp(0, 255) as u8;
                px[2] = ((c + 516 * u) >> 8).clamp(0, 255) as u8;
            }
        }
    }
    true
}

/// Copies RGB3 rows with a stride into packed RGB. Returns `false` if
/// `src` is too short.
pub fn rgb3_to_rgb(src: &[u8], width: u32, height: u32, stride: usize, rgb: &mut [u8]) -> bool {
    let (w, h) = (width as usize, height as usize);
    if stride < w * 3 || rgb.len() < w * h * 3 || h == 0 || src.len() < stride * (h - 1) + w * 3 {
        return false;
    }
    for (y, out_row) in rgb.chunks_exact_mut(w * 3).take(h).enumerate() {
        out_row.copy_from_slice(&src[y * stride..][..w * 3]);
    }
    true
}

/// Whether this build can capture from V4L2 cameras (cargo feature `v4l`).
pub const COMPILED: bool = cfg!(feature = "v4l");

/// Fails with [`SourceError::NotCompiled`] for `origin` on a build
/// without V4L2 support; a configuration check calls it without opening
/// the camera (which may be busy).
pub fn check_compiled(origin: &std::path::Path) -> Result<(), SourceError> {
    if COMPILED {
        Ok(())
    } else {
        Err(SourceError::NotCompiled {
            origin: origin.display().to_string(),
            feature: "v4l",
        })
    }
}

#[cfg(feature = "v4l")]
mod device;
#[cfg(feature = "v4l")]
pub use device::{V4lSource, list_cameras};

#[cfg(not(feature = "v4l"))]
mod dummy {
    use super::*;
    use crate::source::{Frame, FrameSource, SourceEvent};

    /// A V4L2 camera. This build has no V4L2 support: opening fails with
    /// [`SourceError::NotCompiled`].
    #[derive(Debug)]
    pub struct V4lSource {
        never: std::convert::Infallible,
    }

    impl V4lSource {
        /// Fails: this build has no V4L2 support.
        pub fn open(request: &CameraRequest) -> Result<Self, SourceError> {
            Err(not_compiled(&request.device))
        }

        /// The mode in use (never reached in this build).
        pub fn negotiated(&self) -> Negotiated {
            match self.never {}
        }
    }

    impl FrameSource for V4lSource {
        fn next_frame(&mut self, _frame: &mut Frame) -> Result<SourceEvent, SourceError> {
            match self.never {}
        }
        fn reopen(&mut self) -> Result<(), SourceError> {
            match self.never {}
        }
        fn describe(&self) -> String {
            "V4L2 camera (not compiled in)".to_string()
        }
    }

    /// Fails: this build has no V4L2 support.
    pub fn list_cameras() -> Result<Vec<CameraInfo>, SourceError> {
        Err(not_compiled(Path::new("/dev/video*")))
    }

    fn not_compiled(origin: &Path) -> SourceError {
        SourceError::NotCompiled {
            origin: origin.display().to_string(),
            feature: "v4l",
        }
    }
}
#[cfg(not(feature = "v4l"))]
pub use dummy::{V4lSource, list_cameras};

/// True for the errors a V4L2 device gives once it is unplugged.
#[cfg_attr(not(feature = "v4l"), allow(dead_code))]
fn is_gone(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    // ENODEV (19) after unplugging, ENOENT when the node is gone, EIO from
    // some drivers mid-stream.
    error.kind() == ErrorKind::NotFound || matches!(error.raw_os_error(), Some(19 | 2 | 5))
}

#[cfg_attr(not(feature = "v4l"), allow(dead_code))]
fn device_error(device: &Path, action: &str, error: &std::io::Error) -> SourceError {
    if is_gone(error) || !device.exists() {
        SourceError::disappeared(device.display(), format!("{action}: {error}"))
    } else {
        SourceError::config(
            device.display(),
            format!("{action}: {error}"),
            "check that no other program holds the camera and that this user may open it (group `video`)",
        )
    }
}
