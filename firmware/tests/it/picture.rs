//! Image decoding on real files: JPEGs whose colour components sit in
//! separate scans (lossless `jpegtran` rewrites of the fixture photos, see
//! tests/data/jpeg/README.md) must decode to the same pixels as their
//! interleaved originals, through every entry point the edge and host use.

use std::path::{Path, PathBuf};

use latentcam_firmware::picture::{self, PictureError};
use latentcam_firmware::source::Frame;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn original(name: &str) -> PathBuf {
    root()
        .join("models/efficientnet-lite0/fixtures/originals")
        .join(name)
}

fn rewritten(name: &str) -> PathBuf {
    root().join("firmware/tests/data/jpeg").join(name)
}

/// (rewritten file, its interleaved original)
const PAIRS: [(&str, &str); 3] = [
    ("HappyFish-separate-scans.jpg", "HappyFish.jpg"),
    ("HappyFish-two-scans.jpg", "HappyFish.jpg"),
    ("butterfly-separate-scans.jpg", "butterfly.jpg"),
];

/// Mean absolute difference in grey levels and PSNR in dB.
fn compare(a: &[u8], b: &[u8]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    let (mut abs, mut sq) = (0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let d = f64::from(x) - f64::from(y);
        abs += d.abs();
        sq += d * d;
    }
    let n = a.len() as f64;
    let mse = sq / n;
    (abs / n, 10.0 * (255.0 * 255.0 / mse.max(1e-12)).log10())
}

#[test]
fn separate_scan_jpegs_decode_like_their_interleaved_originals() {
    for (file, orig) in PAIRS {
        let bytes = std::fs::read(rewritten(file)).unwrap();
        assert!(picture::has_separate_component_scans(&bytes), "{file}");
        let expected = picture::open_rgb(&original(orig)).unwrap();
        assert!(!picture::has_separate_component_scans(
            &std::fs::read(original(orig)).unwrap()
        ));

        let decoded = picture::decode_rgb(&bytes).unwrap();
        assert_eq!(decoded.dimensions(), expected.dimensions(), "{file}");
        // Same coefficients, two decoders (upsampling and IDCT rounding
        // differ): ~0.3 grey levels apart. zune-jpeg is ~85-147 off here.
        let (mae, psnr) = compare(decoded.as_raw(), expected.as_raw());
        assert!(
            mae < 1.0 && psnr > 40.0,
            "{file}: mae {mae:.3}, PSNR {psnr:.1} dB"
        );

        let from_file = picture::open_rgb(&rewritten(file)).unwrap();
        assert_eq!(from_file, decoded, "{file}: open_rgb");

        // Into a frame that held a bigger image before, as a replay loop does.
        let mut frame = Frame::default();
        frame.resize(1000, 1000);
        picture::decode_into(&bytes, &mut frame).unwrap();
        assert_eq!((frame.width, frame.height), decoded.dimensions());
        assert_eq!(
            frame.rgb,
            decoded.as_raw().as_slice(),
            "{file}: decode_into"
        );
    }
}

#[test]
fn ordinary_files_take_the_usual_decoder_unchanged() {
    // Latents of ordinary photos must not move: decode_rgb is image's own
    // result for interleaved JPEGs.
    for name in ["HappyFish.jpg", "butterfly.jpg", "squirrel_cls.jpg"] {
        let path = original(name);
        let ours = picture::open_rgb(&path).unwrap();
        let image_crate = image::open(&path).unwrap().to_rgb8();
        assert_eq!(ours, image_crate, "{name}");
    }
}

#[test]
fn damaged_and_foreign_bytes_are_clear_errors() {
    for file in [
        rewritten("butterfly-separate-scans.jpg"),
        original("butterfly.jpg"),
    ] {
        let bytes = std::fs::read(&file).unwrap();
        // Cut inside the image data, as a camera dropping packets does:
        // both decoders would fill the rest with grey and report success.
        let cut = &bytes[..bytes.len() * 2 / 3];
        for result in [
            picture::decode_rgb(cut).map(|_| ()),
            picture::decode_into(cut, &mut Frame::default()),
        ] {
            match result {
                Err(e @ PictureError::Truncated(_)) => {
                    assert!(e.to_string().contains("truncated"), "{e}")
                }
                other => panic!("{}: truncated JPEG gave {other:?}", file.display()),
            }
        }
        // Padding after the end marker (camera buffers carry it) is fine.
        let mut padded = bytes.clone();
        padded.extend_from_slice(&[0; 4096]);
        assert_eq!(
            picture::decode_rgb(&padded).unwrap(),
            picture::decode_rgb(&bytes).unwrap()
        );
    }
    let err = picture::decode_rgb(b"this is not an image").unwrap_err();
    assert!(matches!(err, PictureError::Image(_)), "{err:?}");
    let err = picture::open_rgb(Path::new("/nonexistent/photo.jpg")).unwrap_err();
    assert!(
        matches!(err, PictureError::Read { .. })
            && err.to_string().contains("/nonexistent/photo.jpg"),
        "{err}"
    );
}

/// The CRC-32 of PNG chunks (ISO 3309, the zlib one).
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG that declares `width`×`height` 8-bit grey pixels; its data is an
/// empty zlib stream, which no decoder reaches if the header is refused.
fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        png.extend_from_slice(&body);
        png.extend_from_slice(&crc32(&body).to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(b"IEND", &[]);
    png
}

/// `jpeg` with its frame header rewritten to declare `width`×`height`.
fn jpeg_declaring(jpeg: &[u8], width: u16, height: u16) -> Vec<u8> {
    let mut out = jpeg.to_vec();
    let mut at = 2;
    loop {
        assert_eq!(out[at], 0xFF, "marker expected at {at}");
        let marker = out[at + 1];
        let len = usize::from(u16::from_be_bytes([out[at + 2], out[at + 3]]));
        if (0xC0..=0xCF).contains(&marker) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
            out[at + 5..at + 7].copy_from_slice(&height.to_be_bytes());
            out[at + 7..at + 9].copy_from_slice(&width.to_be_bytes());
            return out;
        }
        at += 2 + len;
    }
}

#[test]
fn picture_bombs_are_refused_from_their_header() {
    let bombs = [
        ("grey PNG 20000×20000", png_header_only(20_000, 20_000)),
        ("grey PNG 16385×1", png_header_only(16_385, 1)),
        (
            "JPEG 20000×20000",
            jpeg_declaring(
                &std::fs::read(original("butterfly.jpg")).unwrap(),
                20_000,
                20_000,
            ),
        ),
        (
            "separate-scan JPEG 20000×20000",
            jpeg_declaring(
                &std::fs::read(rewritten("butterfly-separate-scans.jpg")).unwrap(),
                20_000,
                20_000,
            ),
        ),
    ];
    for (what, bytes) in &bombs {
        for result in [
            picture::decode_rgb(bytes).map(|_| ()),
            picture::decode_into(bytes, &mut Frame::default()),
        ] {
            match result {
                Err(e @ PictureError::TooLarge { .. }) => {
                    let message = e.to_string();
                    assert!(message.contains("megapixel limit"), "{what}: {message}");
                }
                other => panic!("{what}: {other:?}"),
            }
        }
    }
    let e = picture::decode_rgb(&bombs[0].1).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("image 20000×20000 is larger than the 40-megapixel limit"),
        "{e}"
    );
}

#[test]
fn an_image_at_the_side_limit_decodes() {
    let mut png = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut png),
        &vec![7u8; picture::MAX_SIDE as usize * 2],
        picture::MAX_SIDE,
        2,
        image::ExtendedColorType::L8,
    )
    .unwrap();
    let rgb = picture::decode_rgb(&png).unwrap();
    assert_eq!(rgb.dimensions(), (picture::MAX_SIDE, 2));
    assert!(rgb.as_raw().iter().all(|&v| v == 7));
}
