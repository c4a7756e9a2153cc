//! Frame → encoder input, driven by the manifest's `[preprocessing]` table.
//!
//! The resize is Pillow's antialiased bilinear resampling (`Image.resize(…,
//! BILINEAR)`), re-implemented with the same coefficients and the same 22-bit
//! fixed-point arithmetic, so a frame preprocessed here matches the Python
//! recipe's reference preprocessing to the byte when both decode the image to
//! the same pixels. Only the pixels inside the centre crop are computed.
//!
//! All buffers are kept between frames: after the first frame of a given size
//! no call allocates.

use crate::manifest::{Layout, PreprocessingSpec};

/// Fixed-point precision of Pillow's 8-bit resampling.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Errors preprocessing a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PreprocessError {
    /// The frame buffer does not hold width × height × 3 bytes.
    #[error("frame of {width}x{height} needs {expected} RGB bytes, got {got}")]
    BadFrame {
        /// Frame width.
        width: u32,
        /// Frame height.
        height: u32,
        /// Bytes expected.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// The frame is empty.
    #[error("empty frame ({width}x{height})")]
    Empty {
        /// Frame width.
        width: u32,
        /// Frame height.
        height: u32,
    },
}

/// Resampling coefficients for one axis, restricted to the output range that
/// survives the crop.
#[derive(Debug, Default, Clone)]
struct Axis {
    /// For each kept output index: first input index and number of taps.
    bounds: Vec<(usize, usize)>,
    /// `bounds.len() × ksize` fixed-point weights.
    coeffs: Vec<i32>,
    ksize: usize,
    /// The same taps as windows of exactly `window` inputs (the weights
    /// padded with zeros, the window moved left where it would run past
    /// the last input), so the horizontal pass runs a loop of fixed length
    /// the compiler unrolls. Filled by [`Axis::fixed_windows`].
    starts: Vec<usize>,
    /// `starts.len() × window` weights of those windows.
    padded: Vec<i32>,
    /// `ksize`, or the input size where that is smaller.
    window: usize,
}

impl Axis {
    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the triangle
    /// filter, for output indices `first..first + count` of `out_size`.
    fn compute(&mut self, in_size: usize, out_size: usize, first: usize, count: usize) {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filterscale; // triangle support is 1.0
        let ksize = support.ceil() as usize * 2 + 1;
        self.ksize = ksize;
        self.bounds.clear();
        self.coeffs.clear();
        self.coeffs.resize(count * ksize, 0);
        let mut weights = vec![0f64; ksize];
        for (i, xx) in (first..first + count).enumerate() {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // C's (int) truncates toward zero, as `as` does.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let taps = xmax.saturating_sub(xmin).min(ksize);
            let mut total = 0.0;
            for (x, w) in weights.iter_mut().enumerate().take(taps) {
                let arg = ((x + xmin) as f64 - center + 0.5) * ss;
                *w = (1.0 - arg.abs()).max(0.0);
                total += *w;
            }
            for (x, w) in weights.iter().enumerate().take(taps) {
                let w = if total != 0.0 { w / total } else { *w };
                let fixed = w * f64::from(1u32 << PRECISION_BITS);
                self.coeffs[i * ksize + x] = if fixed < 0.0 {
                    (fixed - 0.5) as i32
                } else {
                    (fixed + 0.5) as i32
                };
            }
            self.bounds.push((xmin, taps));
        }
    }

    /// Fills `starts`, `padded` and `window` from `bounds` and `coeffs`.
    /// Every output's taps lie inside `0..in_size` and number at most
    /// `ksize`, so they fit a window of `ksize.min(in_size)` inputs.
    fn fixed_windows(&mut self, in_size: usize) {
        let (ksize, window) = (self.ksize, self.ksize.min(in_size));
        self.window = window;
        self.starts.clear();
        self.padded.clear();
        self.padded.resize(self.bounds.len() * window, 0);
        for (i, &(xmin, taps)) in self.bounds.iter().enumerate() {
            let start = xmin.min(in_size - window);
            self.padded[i * window + xmin - start..][..taps]
                .copy_from_slice(&self.coeffs[i * ksize..][..taps]);
            self.starts.push(start);
        }
    }
}

/// One row of the horizontal pass over windows of `window` RGB pixels.
/// Inlined into calls with a constant `window`, where the tap loop unrolls.
#[inline(always)]
fn horizontal_row(src: &[u8], dst: &mut [u8], starts: &[usize], weights: &[i32], window: usize) {
    let half = 1i32 << (PRECISION_BITS - 1);
    for ((out, &start), k) in dst
        .chunks_exact_mut(3)
        .zip(starts)
        .zip(weights.chunks_exact(window))
    {
        let px = &src[start * 3..start * 3 + window * 3];
        let mut acc = [half; 3];
        for t in 0..window {
            let w = k[t];
            acc[0] += i32::from(px[3 * t]) * w;
            acc[1] += i32::from(px[3 * t + 1]) * w;
            acc[2] += i32::from(px[3 * t + 2]) * w;
        }
        out[0] = clip8(acc[0]);
        out[1] = clip8(acc[1]);
        out[2] = clip8(acc[2]);
    }
}

#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Reusable preprocessor for one model.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    spec: PreprocessingSpec,
    layout: Layout,
    /// Input size the coefficients were computed for.
    prepared_for: Option<(u32, u32)>,
    horizontal: Axis,
    vertical: Axis,
    /// First input row the vertical pass reads.
    row_base: usize,
    /// Horizontally resampled rows: (rows needed) × crop_width × 3.
    temp: Vec<u8>,
    /// One output row's accumulators in the vertical pass.
    acc: Vec<i32>,
    /// The crop as 8-bit RGB, crop_height × crop_width × 3.
    crop: Vec<u8>,
    /// The normalised tensor.
    tensor: Vec<f32>,
}

impl Preprocessor {
    /// A preprocessor for a manifest's spec and the encoder's input layout.
    pub fn new(spec: &PreprocessingSpec, layout: Layout) -> Self {
        let pixels = (spec.crop_width * spec.crop_height) as usize;
        Self {
            spec: spec.clone(),
            layout,
            prepared_for: None,
            horizontal: Axis::default(),
            vertical: Axis::default(),
            row_base: 0,
            temp: Vec::new(),
            acc: Vec::new(),
            crop: vec![0; pixels * 3],
            tensor: vec![0.0; pixels * 3],
        }
    }

    /// Size of the intermediate resized image for a frame, before the crop:
    /// shorter side to `resize_shorter_side`, the other side scaled and
    /// truncated.
    pub fn resized_size(&self, width: u32, height: u32) -> (u32, u32) {
        let target = u64::from(self.spec.resize_shorter_side);
        let (w, h) = (u64::from(width), u64::from(height));
        if w <= h {
            (target as u32, (h * target / w) as u32)
        } else {
            ((w * target / h) as u32, target as u32)
        }
    }

    fn prepare(&mut self, width: u32, height: u32) {
        if self.prepared_for == Some((width, height)) {
            return;
        }
        let (rw, rh) = self.resized_size(width, height);
        let (cw, ch) = (self.spec.crop_width, self.spec.crop_height);
        let left = ((rw - cw) / 2) as usize;
        let top = ((rh - ch) / 2) as usize;
        self.horizontal
            .compute(width as usize, rw as usize, left, cw as usize);
        self.horizontal.fixed_windows(width as usize);
        self.vertical
            .compute(height as usize, rh as usize, top, ch as usize);
        let first = self.vertical.bounds.first().map_or(0, |b| b.0);
        let last = self
            .vertical
            .bounds
            .iter()
            .map(|(start, taps)| start + taps)
            .max()
            .unwrap_or(first);
        self.row_base = first;
        self.temp.clear();
        self.temp.resize((last - first) * cw as usize * 3, 0);
        self.prepared_for = Some((width, height));
    }

    /// Preprocesses a packed RGB8 frame into the encoder's input tensor.
    pub fn run(&mut self, rgb: &[u8], width: u32, height: u32) -> Result<&[f32], PreprocessError> {
        if width == 0 || height == 0 {
            return Err(PreprocessError::Empty { width, height });
        }
        let expected = width as usize * height as usize * 3;
        if rgb.len() != expected {
            return Err(PreprocessError::BadFrame {
                width,
                height,
                expected,
                got: rgb.len(),
            });
        }
        self.prepare(width, height);
        let cw = self.spec.crop_width as usize;
        let stride = width as usize * 3;
        let half = 1i32 << (PRECISION_BITS - 1);

        // Horizontal pass over the input rows the vertical pass will read.
        let rows = self.temp.len() / (cw * 3);
        let h = &self.horizontal;
        for r in 0..rows {
            let src = &rgb[(self.row_base + r) * stride..][..stride];
            let dst = &mut self.temp[r * cw * 3..][..cw * 3];
            let (starts, weights) = (&h.starts[..], &h.padded[..]);
            // The window sizes of common downscales (up to 6×) get their
            // own unrolled copy.
            match h.window {
                3 => horizontal_row(src, dst, starts, weights, 3),
                5 => horizontal_row(src, dst, starts, weights, 5),
                7 => horizontal_row(src, dst, starts, weights, 7),
                9 => horizontal_row(src, dst, starts, weights, 9),
                11 => horizontal_row(src, dst, starts, weights, 11),
                13 => horizontal_row(src, dst, starts, weights, 13),
                k => horizontal_row(src, dst, starts, weights, k),
            }
        }

        // Vertical pass into the crop, a whole row at a time: each tap
        // adds one resampled row times one weight into a row of
        // accumulators, which the compiler vectorises (the per-pixel sum
        // over taps did not; it was most of this function's time). The
        // sums are the same integers in another order.
        let v = &self.vertical;
        let row = cw * 3;
        self.acc.resize(row, 0);
        for (y, &(ymin, taps)) in v.bounds.iter().enumerate() {
            let k = &v.coeffs[y * v.ksize..][..taps];
            let base = ymin - self.row_base;
            self.acc.fill(half);
            for (t, &w) in k.iter().enumerate() {
                let src = &self.temp[(base + t) * row..][..row];
                for (a, &p) in self.acc.iter_mut().zip(src) {
                    *a += i32::from(p) * w;
                }
            }
            let dst = &mut self.crop[y * row..][..row];
            for (out, &a) in dst.iter_mut().zip(&self.acc) {
                *out = clip8(a);
            }
        }

        self.normalize();
        Ok(&self.tensor)
    }

    /// Normalises `self.crop` into `self.tensor` in the encoder's layout.
    fn normalize(&mut self) {
        let mean = self.spec.mean;
        let inv = self.spec.std.map(|s| 1.0 / s);
        let plane = (self.spec.crop_width * self.spec.crop_height) as usize;
        match self.layout {
            Layout::Nchw => {
                for (p, px) in self.crop.chunks_exact(3).enumerate() {
                    for c in 0..3 {
                        self.tensor[c * plane + p] = (f32::from(px[c]) - mean[c]) * inv[c];
                    }
                }
            }
            Layout::Nhwc => {
                for (i, (&v, t)) in self.crop.iter().zip(self.tensor.iter_mut()).enumerate() {
                    let c = i % 3;
                    *t = (f32::from(v) - mean[c]) * inv[c];
                }
            }
        }
    }

    /// The 8-bit RGB crop of the last frame (crop_height × crop_width × 3).
    pub fn crop(&self) -> &[u8] {
        &self.crop
    }

    /// Normalises an already cropped RGB8 image (crop size) into the tensor,
    /// skipping the resize: for inputs stored as crops, like the test fixtures.
    pub fn normalize_crop(&mut self, crop: &[u8]) -> Result<&[f32], PreprocessError> {
        let (w, h) = (self.spec.crop_width, self.spec.crop_height);
        if crop.len() != self.crop.len() {
            return Err(PreprocessError::BadFrame {
                width: w,
                height: h,
                expected: self.crop.len(),
                got: crop.len(),
            });
        }
        self.crop.copy_from_slice(crop);
        self.normalize();
        Ok(&self.tensor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PreprocessingSpec {
        PreprocessingSpec {
            id: "t".into(),
            resize_shorter_side: 256,
            resize_filter: "bilinear".into(),
            crop: "center".into(),
            crop_width: 224,
            crop_height: 224,
            channel_order: "RGB".into(),
            mean: [127.0; 3],
            std: [128.0; 3],
        }
    }

    #[test]
    fn constant_frame_stays_constant_at_any_size() {
        let mut pre = Preprocessor::new(&spec(), Layout::Nchw);
        for (w, h) in [(640, 480), (100, 90), (1920, 1080), (256, 256), (224, 300)] {
            let frame = vec![200u8; w * h * 3];
            let t = pre.run(&frame, w as u32, h as u32).unwrap();
            let expected = (200.0 - 127.0) / 128.0;
            assert!(t.iter().all(|&v| (v - expected).abs() < 1e-6), "{w}x{h}");
        }
    }

    /// Pillow's horizontal pass as written: each output over its own
    /// taps, of varying number.
    fn horizontal_by_taps(axis: &Axis, src: &[u8], dst: &mut [u8]) {
        let half = 1i32 << (PRECISION_BITS - 1);
        for (x, &(xmin, taps)) in axis.bounds.iter().enumerate() {
            let k = &axis.coeffs[x * axis.ksize..][..taps];
            let mut acc = [half; 3];
            for (t, &w) in k.iter().enumerate() {
                for (c, a) in acc.iter_mut().enumerate() {
                    *a += i32::from(src[(xmin + t) * 3 + c]) * w;
                }
            }
            for (c, a) in acc.into_iter().enumerate() {
                dst[x * 3 + c] = clip8(a);
            }
        }
    }

    #[test]
    fn fixed_windows_give_pillows_taps_to_the_byte() {
        // The unrolled horizontal pass (windows padded to a fixed size,
        // moved off the right edge) against the taps as Pillow sums them,
        // on a noisy frame, for windows of 1 and 2 pixels (inputs narrower
        // than the filter), 3 (upscales) to 17 taps (the arm without its
        // own copy) and odd widths.
        let sizes = [
            (768, 576),
            (640, 480),
            (1920, 1080),
            (259, 194),
            (2000, 301),
            (2400, 1800),
            (225, 700),
            (1, 300),
            (2, 300),
        ];
        for (w, h) in sizes {
            let frame: Vec<u8> = (0..w * h * 3)
                .map(|i: usize| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect();
            let mut pre = Preprocessor::new(&spec(), Layout::Nhwc);
            pre.run(&frame, w as u32, h as u32).unwrap();
            let row = pre.spec.crop_width as usize * 3;
            let mut expected = vec![0u8; row];
            for (r, got) in pre.temp.chunks_exact(row).enumerate() {
                let src = &frame[(pre.row_base + r) * w * 3..][..w * 3];
                horizontal_by_taps(&pre.horizontal, src, &mut expected);
                assert_eq!(got, &expected[..], "{w}x{h}, row {r}");
            }
        }
    }

    #[test]
    fn resized_size_matches_recipe() {
        let pre = Preprocessor::new(&spec(), Layout::Nchw);
        assert_eq!(pre.resized_size(640, 480), (341, 256));
        assert_eq!(pre.resized_size(868, 600), (370, 256));
        assert_eq!(pre.resized_size(259, 194), (341, 256));
        assert_eq!(pre.resized_size(480, 640), (256, 341));
    }

    #[test]
    fn normalizing_the_crop_gives_the_run_tensor_bit_for_bit() {
        // A host that receives the 224×224 crop (the link benchmark's JPEG
        // rows) gets exactly the edge's tensor, with no second resample.
        let (w, h) = (400u32, 300u32);
        let frame: Vec<u8> = (0..w * h * 3).map(|i| (i * 31 % 253) as u8).collect();
        let mut edge = Preprocessor::new(&spec(), Layout::Nchw);
        let tensor = edge.run(&frame, w, h).unwrap().to_vec();
        let crop = edge.crop().to_vec();
        assert_eq!(crop.len(), 224 * 224 * 3);
        let mut host = Preprocessor::new(&spec(), Layout::Nchw);
        let again = host.normalize_crop(&crop).unwrap();
        assert!(
            tensor
                .iter()
                .zip(again)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
    }

    #[test]
    fn layouts_agree() {
        let (w, h) = (300u32, 260u32);
        let frame: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
        let nchw = Preprocessor::new(&spec(), Layout::Nchw)
            .run(&frame, w, h)
            .unwrap()
            .to_vec();
        let nhwc = Preprocessor::new(&spec(), Layout::Nhwc)
            .run(&frame, w, h)
            .unwrap()
            .to_vec();
        let plane = 224 * 224;
        for p in 0..plane {
            for c in 0..3 {
                assert_eq!(nchw[c * plane + p], nhwc[p * 3 + c]);
            }
        }
    }

    #[test]
    fn bad_frames_are_errors() {
        let mut pre = Preprocessor::new(&spec(), Layout::Nchw);
        assert!(matches!(
            pre.run(&[0; 10], 4, 4),
            Err(PreprocessError::BadFrame { .. })
        ));
        assert!(matches!(
            pre.run(&[], 0, 4),
            Err(PreprocessError::Empty { .. })
        ));
    }
}
