//! Photos and camera frames (JPEG, PNG) decoded to 8-bit RGB: the one place
//! the edge (image replay, MJPEG cameras, `latentcam-edge encode`) and the
//! host (enrolment photos, search by image) turn image bytes into pixels.
//!
//! `image` decodes JPEG with zune-jpeg, which is right for the files cameras
//! and most tools write: one interleaved scan (baseline) or progressive.
//! zune-jpeg 0.5.15 decodes a *sequential* JPEG whose colour components are
//! coded in separate scans to garbage and reports success: the fixture photo
//! rewritten that way by `jpegtran -scans` comes out 85–147 grey levels off on
//! average (upstream zune-image issues 419, 422, 448, 449; no fixed release
//! yet). Such files are valid baseline JPEG — T.81 Table 1 requires decoders
//! to process interleaved and non-interleaved scans — and encoders that
//! optimise Huffman tables per component write them. A latent of such a
//! frame would be confidently wrong, so they go to `jpeg-decoder`, which
//! decodes them within 0.11 grey levels of libjpeg. Everything else stays
//! on zune-jpeg, so latents of ordinary files do not change.
//!
//! A JPEG cut short (a USB camera dropping packets, a partial upload) is
//! refused: both decoders would fill the missing rows with grey and report
//! success.
//!
//! An image larger than [`MAX_PIXELS`] or [`MAX_SIDE`] is refused from its
//! header, before any pixel is decoded or converted: a 389 KB greyscale PNG
//! can declare 20000×20000 pixels, which is 400 MB decoded and 1.2 GB as
//! RGB. Within the limits the largest allocations are the decoder's own
//! buffer (at most 8 bytes a pixel, 16-bit RGBA) and the RGB result (3).

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{ImageDecoder, RgbImage};

/// The largest decoded image, in bytes (the `image` crate's default
/// allocation limit, applied to both decoders): a hostile 65535×65535 header
/// is refused instead of allocating 12 GiB.
pub const MAX_DECODED_BYTES: usize = 512 * 1024 * 1024;

/// The most pixels an image may have (40 megapixels: more than any camera
/// frame or phone photo we expect, and at most 120 MB as RGB).
pub const MAX_PIXELS: u64 = 40_000_000;

/// The longest side an image may have, in pixels.
pub const MAX_SIDE: u32 = 16_384;

/// Why image bytes could not become RGB pixels.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PictureError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A directory of images could not be listed.
    #[error("cannot list {path}: {source}")]
    List {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not a JPEG or PNG this build decodes, or a corrupt one.
    #[error("not a readable JPEG or PNG image: {0}")]
    Image(#[from] image::ImageError),
    /// A JPEG with separate scans per component that `jpeg-decoder` refused.
    #[error("not a readable JPEG (colour components in separate scans): {0}")]
    Jpeg(#[from] jpeg_decoder::Error),
    /// A JPEG in a pixel format other than 8-bit grey or colour (CMYK,
    /// 16-bit lossless).
    #[error("JPEG pixel format {0} is not supported (8-bit grey or colour only)")]
    PixelFormat(&'static str),
    /// A JPEG that ends before its end-of-image marker: a frame cut short
    /// (a USB camera dropping packets, a partial upload). Decoders fill the
    /// missing rows with grey and report success; a latent of that would
    /// look like a real frame.
    #[error("JPEG is truncated: no end-of-image marker after its {0} bytes")]
    Truncated(usize),
    /// The header declares more than [`MAX_PIXELS`] pixels or a side longer
    /// than [`MAX_SIDE`]; nothing was decoded.
    #[error(
        "image {width}×{height} is larger than the {}-megapixel limit (at most {} pixels a side); scale it down first",
        MAX_PIXELS / 1_000_000,
        MAX_SIDE
    )]
    TooLarge {
        /// Width in pixels, from the header.
        width: u32,
        /// Height in pixels, from the header.
        height: u32,
    },
    /// The header gives a zero width or height.
    #[error("image is {width}x{height}")]
    Empty {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
}

/// Decodes JPEG or PNG bytes (format taken from the content) to RGB8.
pub fn decode_rgb(bytes: &[u8]) -> Result<RgbImage, PictureError> {
    if separate_scans(bytes)? {
        return decode_separate_scans(bytes);
    }
    let decoder = zune_decoder(bytes)?;
    // Checked from the header, before from_decoder allocates.
    let (width, height) = checked_size(decoder.dimensions())?;
    let image = image::DynamicImage::from_decoder(decoder)?;
    let rgb = image.into_rgb8();
    debug_assert_eq!(rgb.dimensions(), (width, height));
    Ok(rgb)
}

/// Expands files and directories (one level, sorted; `.jpg`, `.jpeg` and
/// `.png` by name) into image paths.
pub fn expand_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, PictureError> {
    let mut out = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(input)
                .map_err(|source| PictureError::List {
                    path: input.clone(),
                    source,
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| is_image(p))
                .collect();
            entries.sort();
            out.extend(entries);
        } else {
            out.push(input.clone());
        }
    }
    Ok(out)
}

fn is_image(path: &Path) -> bool {
    matches!(
        path.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("jpg" | "jpeg" | "png")
    )
}

/// Reads and decodes an image file; the format is taken from the content,
/// not the file name.
pub fn open_rgb(path: &Path) -> Result<RgbImage, PictureError> {
    let bytes = std::fs::read(path).map_err(|source| PictureError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    decode_rgb(&bytes)
}

/// A reusable RGB8 pixel buffer that a decoder writes into: a camera
/// frame keeps its allocation from one frame to the next.
pub trait RgbBuffer {
    /// Sets the size and returns the `width × height × 3` bytes to fill.
    fn resize(&mut self, width: u32, height: u32) -> &mut [u8];
}

/// Decodes JPEG or PNG bytes into `frame`, writing straight into its buffer
/// when the image is 8-bit RGB (every colour camera JPEG is), so a replay or
/// MJPEG camera loop does not allocate per frame.
pub fn decode_into(bytes: &[u8], frame: &mut impl RgbBuffer) -> Result<(), PictureError> {
    if separate_scans(bytes)? {
        let rgb = decode_separate_scans(bytes)?;
        frame
            .resize(rgb.width(), rgb.height())
            .copy_from_slice(rgb.as_raw());
        return Ok(());
    }
    let decoder = zune_decoder(bytes)?;
    let (width, height) = checked_size(decoder.dimensions())?;
    if decoder.color_type() == image::ColorType::Rgb8 {
        decoder.read_image(frame.resize(width, height))?;
    } else {
        let rgb = image::DynamicImage::from_decoder(decoder)?.into_rgb8();
        frame.resize(width, height).copy_from_slice(rgb.as_raw());
    }
    Ok(())
}

/// Whether `bytes` must go to jpeg-decoder; refuses a JPEG cut short.
fn separate_scans(bytes: &[u8]) -> Result<bool, PictureError> {
    let Some(scan) = first_scan(bytes) else {
        // Not a JPEG, or one whose headers are already broken: the
        // ordinary decoder says what is wrong with it.
        return Ok(false);
    };
    // Entropy-coded data never holds FF D9 (an FF there is followed by 00
    // or a restart marker), so the last one is the end of the image; bytes
    // after it (padding in camera buffers) are ignored.
    let ended = bytes[scan.at..]
        .windows(2)
        .rev()
        .any(|pair| pair == [0xFF, 0xD9]);
    if !ended {
        return Err(PictureError::Truncated(bytes.len()));
    }
    Ok(scan.separate)
}

fn zune_decoder(bytes: &[u8]) -> Result<impl ImageDecoder + '_, PictureError> {
    let mut reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(image::ImageError::IoError)?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_DECODED_BYTES as u64);
    reader.limits(limits);
    Ok(reader.into_decoder()?)
}

/// Refuses an empty image or one beyond [`MAX_PIXELS`] or [`MAX_SIDE`]:
/// called with the header's size, before anything is decoded.
fn checked_size((width, height): (u32, u32)) -> Result<(u32, u32), PictureError> {
    if width == 0 || height == 0 {
        return Err(PictureError::Empty { width, height });
    }
    if width > MAX_SIDE || height > MAX_SIDE || u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(PictureError::TooLarge { width, height });
    }
    Ok((width, height))
}

fn decode_separate_scans(bytes: &[u8]) -> Result<RgbImage, PictureError> {
    let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    decoder.set_max_decoding_buffer_size(MAX_DECODED_BYTES);
    decoder.read_info()?;
    let info = decoder
        .info()
        .ok_or(PictureError::PixelFormat("unknown (no frame header)"))?;
    // Checked from the header, before decode allocates.
    let (width, height) = checked_size((u32::from(info.width), u32::from(info.height)))?;
    let pixels = decoder.decode()?;
    let rgb = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => pixels,
        jpeg_decoder::PixelFormat::L8 => pixels.iter().flat_map(|&l| [l, l, l]).collect(),
        jpeg_decoder::PixelFormat::L16 => return Err(PictureError::PixelFormat("16-bit grey")),
        jpeg_decoder::PixelFormat::CMYK32 => return Err(PictureError::PixelFormat("CMYK")),
    };
    RgbImage::from_raw(width, height, rgb)
        .ok_or(PictureError::PixelFormat("RGB24 with a short pixel buffer"))
}

/// Whether `bytes` are a sequential (baseline or extended Huffman) JPEG with
/// more than one component whose first scan does not hold all of them: the
/// files zune-jpeg decodes wrongly. Reads only the headers up to the first
/// scan; anything that is not such a JPEG, truncated input included, is
/// `false` and left to the ordinary decoder and its errors.
pub fn has_separate_component_scans(bytes: &[u8]) -> bool {
    first_scan(bytes).is_some_and(|scan| scan.separate)
}

/// Where a JPEG's first scan header starts, and whether the frame is the
/// kind [`has_separate_component_scans`] describes.
struct FirstScan {
    at: usize,
    separate: bool,
}

/// Walks a JPEG's marker segments up to its first scan header; `None` for
/// anything else.
fn first_scan(bytes: &[u8]) -> Option<FirstScan> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut at = 2;
    // (is sequential Huffman, number of components) of the frame header.
    let mut frame: Option<(bool, u8)> = None;
    loop {
        // Markers may be preceded by any number of 0xFF fill bytes.
        while bytes.get(at) == Some(&0xFF) && bytes.get(at + 1) == Some(&0xFF) {
            at += 1;
        }
        let (Some(&0xFF), Some(&marker)) = (bytes.get(at), bytes.get(at + 1)) else {
            return None;
        };
        let marker_at = at;
        at += 2;
        // Standalone markers carry no length.
        if marker == 0x01 || (0xD0..=0xD7).contains(&marker) {
            continue;
        }
        if marker == 0xD9 {
            return None;
        }
        let len = bytes
            .get(at..at + 2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))?;
        if len < 2 {
            return None;
        }
        let segment = bytes.get(at + 2..at + len)?;
        match marker {
            // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                frame = Some((matches!(marker, 0xC0 | 0xC1), *segment.get(5)?));
            }
            0xDA => {
                let in_scan = *segment.first()?;
                let separate = match frame {
                    Some((true, components)) => components > 1 && in_scan < components,
                    _ => false,
                };
                return Some(FirstScan {
                    at: marker_at,
                    separate,
                });
            }
            _ => {}
        }
        at += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A JPEG header sequence: SOI, a frame header of `sof` with
    /// `components`, a DHT, and a scan header with `in_scan` components.
    fn headers(sof: u8, components: u8, in_scan: u8) -> Vec<u8> {
        let mut b = vec![0xFF, 0xD8];
        // APP0 with a 4-byte body.
        b.extend_from_slice(&[0xFF, 0xE0, 0x00, 0x06, b'J', b'F', b'I', b'F']);
        let sof_len = 8 + 3 * u16::from(components);
        b.extend_from_slice(&[0xFF, sof]);
        b.extend_from_slice(&sof_len.to_be_bytes());
        b.extend_from_slice(&[8, 0, 16, 0, 16, components]);
        for c in 0..components {
            let sampling = if c == 0 { 0x22 } else { 0x11 };
            b.extend_from_slice(&[c + 1, sampling, u8::from(c > 0)]);
        }
        // DHT, then fill bytes before the scan header.
        b.extend_from_slice(&[0xFF, 0xC4, 0x00, 0x03, 0x00, 0xFF, 0xFF]);
        let sos_len = 6 + 2 * u16::from(in_scan);
        b.extend_from_slice(&[0xFF, 0xDA]);
        b.extend_from_slice(&sos_len.to_be_bytes());
        b.push(in_scan);
        for c in 0..in_scan {
            b.extend_from_slice(&[c + 1, 0x00]);
        }
        b.extend_from_slice(&[0, 63, 0, 0x12, 0x34]);
        b
    }

    #[test]
    fn sequential_colour_jpeg_with_one_component_per_scan_is_detected() {
        assert!(has_separate_component_scans(&headers(0xC0, 3, 1)));
        assert!(has_separate_component_scans(&headers(0xC1, 3, 2)));
    }

    #[test]
    fn interleaved_progressive_grey_and_non_jpeg_input_are_not() {
        assert!(!has_separate_component_scans(&headers(0xC0, 3, 3)));
        // Progressive scans are per component by design; zune handles them.
        assert!(!has_separate_component_scans(&headers(0xC2, 3, 1)));
        // One component: one scan is all of it.
        assert!(!has_separate_component_scans(&headers(0xC0, 1, 1)));
        assert!(!has_separate_component_scans(b"\x89PNG\r\n\x1a\n"));
        assert!(!has_separate_component_scans(&[]));
    }

    #[test]
    fn truncated_or_malformed_headers_are_left_to_the_decoder() {
        let whole = headers(0xC0, 3, 1);
        for cut in 0..whole.len() - 2 {
            // Any prefix that stops inside the headers.
            assert!(!has_separate_component_scans(&whole[..cut]), "cut at {cut}");
        }
        let mut zero_length = whole.clone();
        zero_length[4..6].copy_from_slice(&[0, 0]);
        assert!(!has_separate_component_scans(&zero_length));
    }
}
