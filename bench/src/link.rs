//! `latentcam-bench link`: bytes per frame against fidelity, on real video.
//!
//! Every sampled frame is encoded by the fp32 tract encoder exactly as the
//! edge does it (the firmware's replay source, preprocessor and encoder); that
//! latent is the *reference*. Each row of the result is one way of getting a
//! latent to the host, measured against the reference on the same frames:
//!
//! * **latentcam**: the reference latent through each wire codec, framed as
//!   the edge frames a `Message::Latent` (`frame::encode`: postcard, CRC,
//!   COBS, delimiters), unframed and decoded as the host does; plus the int8
//!   encoder's latent with `U8Affine`, what a device running the quantised
//!   model sends.
//! * **JPEG**: the 224×224 crop the encoder sees (the preprocessor's resize
//!   and centre crop, before normalisation) as a JPEG at several qualities,
//!   decoded by `image`, normalised by the same preprocessor and encoded by
//!   the fp32 encoder on the host. Its bytes are the bare JPEG, without any
//!   framing. Two encoders: `image`'s (4:4:4, the standard Huffman tables)
//!   and `jpeg-encoder` set up as camera encoders and libjpeg's defaults
//!   are (4:2:0 chroma), which is the smaller at equal quality.
//! * **raw RGB**: the same crop sent uncompressed and encoded on the host.
//!   Equal to the reference by construction; it is measured anyway, which
//!   checks that the host path of the JPEG rows adds nothing of its own.
//!
//! Fidelity is the cosine similarity to the reference latent (mean and
//! minimum over frames), ImageNet top-1 agreement with the reference's top-1,
//! and top-5 overlap (|top-5 ∩ reference top-5| / 5), both from the
//! manifest's ImageNet head. Writes `link.md`, `link.json` and `link.png`.

mod plot;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use image::codecs::jpeg::JpegEncoder;
use latentcam_firmware::encoder::{self, Encoder, EncoderOptions, Precision};
use latentcam_firmware::manifest::{Manifest, default_models_dir};
use latentcam_firmware::preprocess::Preprocessor;
use latentcam_firmware::source::{
    ErrorKind, Frame, FrameSource, Pace, ReplayOptions, SourceEvent, VideoSource,
};
use latentcam_host::heads::imagenet::ImagenetHead;
use latentcam_wire::{Codec, Latent, Message, frame};
use serde::Serialize;

/// opencv-doc's surveillance clip (768×576, 795 frames), the project's video.
const DEFAULT_VIDEO: &str = "/usr/share/doc/opencv-doc/examples/data/vtest.avi";

/// Classes compared for the top-k overlap.
const TOP_K: usize = 5;

/// Arguments of `latentcam-bench link`.
#[derive(clap::Args)]
pub struct LinkArgs {
    /// A video to sample (repeat for several); default opencv-doc's vtest.avi.
    #[arg(long = "video", value_name = "PATH")]
    pub videos: Vec<PathBuf>,
    /// Use every Nth decoded frame of each video (4 gives vtest.avi's 795
    /// frames 199 samples).
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub every: u64,
    /// Stop each video after this many sampled frames.
    #[arg(long, value_name = "M")]
    pub max_frames: Option<usize>,
    /// JPEG qualities of the baseline rows.
    #[arg(long = "jpeg-quality", value_name = "Q", value_delimiter = ',',
          default_values_t = [10u8, 25, 50, 75, 90, 95],
          value_parser = clap::value_parser!(u8).range(1..=100))]
    pub jpeg_qualities: Vec<u8>,
    /// Models directory holding manifest.toml (default: the edge's default).
    #[arg(long, value_name = "DIR")]
    pub models: Option<PathBuf>,
    /// Inference threads of each tract encoder.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threads: usize,
    /// Directory for link.md, link.json and link.png (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Runs the link benchmark: measures every row on every sampled frame, then
/// writes the table, the JSON and the plot, and prints the table.
pub fn run(args: &LinkArgs) -> Result<()> {
    let started = Instant::now();
    let videos = video_paths(args)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create the output directory {}", args.out.display()))?;

    let models_dir = args.models.clone().unwrap_or_else(default_models_dir);
    let manifest = Manifest::load(&models_dir).with_context(|| {
        format!(
            "cannot load the model manifest from {}; pass --models DIR",
            models_dir.display()
        )
    })?;
    let mut bench = Bench::new(&manifest, args)?;

    let mut video_reports = Vec::new();
    for path in &videos {
        video_reports.push(bench.sample_video(path, args)?);
    }
    let sampled: usize = video_reports.iter().map(|v| v.frames_sampled).sum();
    ensure!(
        sampled > 0,
        "no frame was sampled from {}; check the videos with ffprobe",
        videos
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );

    let report = bench.report(&manifest, args, video_reports, started);
    let markdown = render_markdown(&report);
    let md_path = args.out.join("link.md");
    std::fs::write(&md_path, &markdown)
        .with_context(|| format!("cannot write {}", md_path.display()))?;
    let json_path = args.out.join("link.json");
    let json = serde_json::to_string_pretty(&report).context("cannot serialise the report")?;
    std::fs::write(&json_path, json + "\n")
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    let png_path = args.out.join("link.png");
    plot::write_png(&png_path, &plot_points(&report), &plot_title(&report))?;

    print!("{markdown}");
    eprintln!(
        "wrote {}, {} and {} in {:.1} s",
        md_path.display(),
        json_path.display(),
        png_path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The videos to read: those given, else the default clip, which must exist.
fn video_paths(args: &LinkArgs) -> Result<Vec<PathBuf>> {
    if !args.videos.is_empty() {
        return Ok(args.videos.clone());
    }
    let default = PathBuf::from(DEFAULT_VIDEO);
    ensure!(
        default.is_file(),
        "the default video {DEFAULT_VIDEO} is missing: install the Debian package opencv-doc \
         (apt-get install opencv-doc), or pass --video PATH"
    );
    Ok(vec![default])
}

/// How a row's latent reaches the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// The edge encodes with `precision` and sends the latent with `codec`.
    Wire { precision: Precision, codec: Codec },
    /// The edge sends the 224×224 crop as a JPEG of this quality; the host
    /// runs the fp32 encoder.
    Jpeg { quality: u8, flavour: JpegFlavour },
    /// The edge sends the 224×224 crop as raw RGB; the host runs the fp32
    /// encoder.
    RawRgb,
}

impl Transport {
    fn kind(self) -> RowKind {
        match self {
            Transport::Wire { .. } => RowKind::Latentcam,
            Transport::Jpeg {
                flavour: JpegFlavour::Image444,
                ..
            } => RowKind::Jpeg444,
            Transport::Jpeg {
                flavour: JpegFlavour::Subsampled420,
                ..
            } => RowKind::Jpeg420,
            Transport::RawRgb => RowKind::RawRgb,
        }
    }

    /// Row name in the table.
    fn name(self) -> String {
        match self {
            Transport::Wire { precision, codec } => {
                format!("latentcam {} encoder, {codec:?}", precision.name())
            }
            Transport::Jpeg { quality, flavour } => {
                format!("JPEG q{quality} {}, host encodes", flavour.name())
            }
            Transport::RawRgb => "raw RGB 224×224, host encodes".to_string(),
        }
    }

    /// Short label for the plot.
    fn label(self) -> String {
        match self {
            Transport::Wire {
                precision: Precision::Fp32,
                codec,
            } => format!("{codec:?}"),
            Transport::Wire { precision, codec } => format!("{} {codec:?}", precision.name()),
            Transport::Jpeg { quality, .. } => format!("q{quality}"),
            Transport::RawRgb => "raw RGB".to_string(),
        }
    }
}

/// Which JPEG encoder makes the baseline's JPEGs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JpegFlavour {
    /// `image`'s `JpegEncoder::new_with_quality`: 4:4:4 (no chroma
    /// subsampling), the standard Huffman tables of the JPEG spec.
    Image444,
    /// `jpeg-encoder` as camera encoders and libjpeg's defaults encode:
    /// 4:2:0 with box-averaged chroma (libjpeg's `h2v2_downsample`), the
    /// standard Huffman tables, one interleaved baseline scan. Same
    /// quantisation tables and quality scaling as the other.
    ///
    /// Not with optimised Huffman tables (about 8 % smaller): jpeg-encoder
    /// then writes one scan per component, which camera encoders do not,
    /// and which zune-jpeg 0.5.15 decodes to garbage (PSNR ~7 dB where
    /// ffmpeg gets 31 dB; the host's `picture::decode_rgb` now sends such
    /// files to jpeg-decoder).
    Subsampled420,
}

impl JpegFlavour {
    const ALL: [JpegFlavour; 2] = [JpegFlavour::Image444, JpegFlavour::Subsampled420];

    fn name(self) -> &'static str {
        match self {
            JpegFlavour::Image444 => "4:4:4 (image)",
            JpegFlavour::Subsampled420 => "4:2:0 (jpeg-encoder)",
        }
    }

    /// Encodes packed RGB8 into `out` (cleared first).
    fn encode(
        self,
        rgb: &[u8],
        width: u32,
        height: u32,
        quality: u8,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        out.clear();
        match self {
            JpegFlavour::Image444 => JpegEncoder::new_with_quality(&mut *out, quality)
                .encode(rgb, width, height, image::ExtendedColorType::Rgb8)
                .with_context(|| {
                    format!("image cannot encode a {width}x{height} JPEG at quality {quality}")
                }),
            JpegFlavour::Subsampled420 => {
                let (w, h) = (u16::try_from(width)?, u16::try_from(height)?);
                let mut encoder = jpeg_encoder::Encoder::new(&mut *out, quality);
                encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_2_0);
                encoder
                    .set_chroma_subsampling_method(jpeg_encoder::ChromaSubsamplingMethod::Average);
                encoder.set_optimized_huffman_tables(false);
                encoder.set_progressive(false);
                encoder
                    .encode(rgb, w, h, jpeg_encoder::ColorType::Rgb)
                    .with_context(|| format!("jpeg-encoder cannot encode a {width}x{height} JPEG at quality {quality}"))
            }
        }
    }
}

/// Which family a row belongs to (its series in the plot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowKind {
    /// A latent sent over the latentcam wire.
    Latentcam,
    /// The frame sent as a 4:4:4 JPEG (`image`), encoded on the host.
    #[serde(rename = "jpeg_444")]
    Jpeg444,
    /// The frame sent as a 4:2:0 JPEG
    /// (`jpeg-encoder`), encoded on the host.
    #[serde(rename = "jpeg_420")]
    Jpeg420,
    /// The frame sent as raw RGB, encoded on the host.
    RawRgb,
}

/// Every codec this build of the wire crate implements, in id order, so a
/// codec added to the crate gets its row without touching this file.
fn wire_codecs() -> Vec<Codec> {
    (0..=u8::MAX)
        .map(Codec::from_u8)
        .filter(|codec| !matches!(codec, Codec::Unknown(_)))
        .collect()
}

/// The rows, in table order: latentcam (fp32 with every codec, then int8 with
/// `U8Affine`), raw RGB, then for each JPEG encoder its rows by rising
/// quality.
fn transports(jpeg_qualities: &[u8]) -> Vec<Transport> {
    let mut rows: Vec<Transport> = wire_codecs()
        .into_iter()
        .map(|codec| Transport::Wire {
            precision: Precision::Fp32,
            codec,
        })
        .collect();
    rows.push(Transport::Wire {
        precision: Precision::Int8,
        codec: Codec::U8Affine,
    });
    rows.push(Transport::RawRgb);
    let mut qualities = jpeg_qualities.to_vec();
    qualities.sort_unstable();
    qualities.dedup();
    for flavour in JpegFlavour::ALL {
        rows.extend(
            qualities
                .iter()
                .map(|&quality| Transport::Jpeg { quality, flavour }),
        );
    }
    rows
}

/// One row's measurement of one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    /// Bytes that cross the link for this frame.
    bytes: usize,
    /// The codec payload inside them (latentcam rows), else `bytes`.
    payload_bytes: usize,
    /// Cosine similarity to the reference latent.
    cosine: f64,
    /// Same top-1 class as the reference.
    top1_agrees: bool,
    /// |top-k ∩ reference top-k| / k.
    top_k_overlap: f64,
}

/// Running totals of one row over the frames.
#[derive(Debug, Clone, PartialEq)]
struct Fidelity {
    frames: usize,
    bytes: u64,
    payload_bytes: u64,
    cosine_sum: f64,
    cosine_min: f64,
    top1_agreements: usize,
    top_k_overlap_sum: f64,
}

impl Default for Fidelity {
    fn default() -> Self {
        Self {
            frames: 0,
            bytes: 0,
            payload_bytes: 0,
            cosine_sum: 0.0,
            cosine_min: f64::INFINITY,
            top1_agreements: 0,
            top_k_overlap_sum: 0.0,
        }
    }
}

impl Fidelity {
    fn add(&mut self, sample: Sample) {
        self.frames += 1;
        self.bytes += sample.bytes as u64;
        self.payload_bytes += sample.payload_bytes as u64;
        self.cosine_sum += sample.cosine;
        self.cosine_min = self.cosine_min.min(sample.cosine);
        self.top1_agreements += usize::from(sample.top1_agrees);
        self.top_k_overlap_sum += sample.top_k_overlap;
    }

    fn mean(&self, total: f64) -> f64 {
        if self.frames == 0 {
            f64::NAN
        } else {
            total / self.frames as f64
        }
    }
}

/// Whether two ranked class lists (best first) agree on the best class.
fn top1_agrees(reference: &[usize], other: &[usize]) -> bool {
    matches!((reference.first(), other.first()), (Some(a), Some(b)) if a == b)
}

/// |reference ∩ other| / |reference| for two top-k class lists (each class
/// at most once per list); 0 for an empty reference.
fn top_k_overlap(reference: &[usize], other: &[usize]) -> f64 {
    if reference.is_empty() {
        return 0.0;
    }
    let shared = reference.iter().filter(|c| other.contains(c)).count();
    shared as f64 / reference.len() as f64
}

/// `count` as a percentage of `total` (NaN for no total).
fn percent(count: usize, total: usize) -> f64 {
    if total == 0 {
        f64::NAN
    } else {
        100.0 * count as f64 / total as f64
    }
}

/// A latent's top-k ImageNet classes (best first) and their probabilities.
fn top_classes(head: &ImagenetHead, latent: &[f32]) -> Result<Vec<(usize, f32)>> {
    head.head
        .top_k(latent, TOP_K)
        .context("the ImageNet head refused a latent")
}

/// What the edge would put in the `Latent` message besides the payload.
#[derive(Debug, Clone, Copy)]
struct FrameMeta {
    seq: u64,
    capture_us: u64,
    /// The wall-clock time every edge sends beside `capture_us`.
    wall: Option<latentcam_wire::WallTime>,
    width: u32,
    height: u32,
}

/// Sends `latent` through the wire as the edge and the host do: codec
/// payload, `Message::Latent` framed by `frame::encode` (what the edge
/// writes to its link), then `frame::decode_datagram` and the codec's
/// decoder. Returns (frame bytes, payload bytes, the latent the host gets).
fn wire_round_trip(
    codec: Codec,
    latent: &[f32],
    meta: FrameMeta,
    frame_buf: &mut [u8],
) -> Result<(usize, usize, Vec<f32>)> {
    let payload = codec
        .encode_to_vec(latent)
        .map_err(|e| anyhow::anyhow!("{codec:?} cannot encode the latent: {e}"))?;
    let message = Message::Latent(Latent {
        seq: meta.seq,
        capture_us: meta.capture_us,
        frame_width: meta.width,
        frame_height: meta.height,
        codec,
        payload: &payload,
        mac: &[],
        wall: meta.wall,
    });
    let len = frame::encode(&message, frame_buf)
        .map_err(|e| anyhow::anyhow!("cannot frame a {codec:?} latent: {e}"))?;
    let mut received = frame_buf[..len].to_vec();
    let decoded = match frame::decode_datagram(&mut received) {
        Ok(Message::Latent(got)) => got
            .codec
            .decode_to_vec(got.payload)
            .map_err(|e| anyhow::anyhow!("{codec:?} cannot decode its own payload: {e}"))?,
        Ok(other) => bail!("a framed Latent came back as {:?}", other.kind()),
        Err(e) => bail!("a framed {codec:?} latent does not unframe: {e}"),
    };
    Ok((len, payload.len(), decoded))
}

/// Encodes an RGB8 image as JPEG of `quality` into `jpeg` and decodes it
/// back to RGB8 with the host's decoder (`picture::decode_rgb`), as a host
/// receiving it would.
fn jpeg_round_trip(
    flavour: JpegFlavour,
    rgb: &[u8],
    width: u32,
    height: u32,
    quality: u8,
    jpeg: &mut Vec<u8>,
) -> Result<Vec<u8>> {
    flavour.encode(rgb, width, height, quality, jpeg)?;
    let decoded = latentcam_firmware::picture::decode_rgb(jpeg)
        .with_context(|| format!("cannot decode our own JPEG at quality {quality}"))?;
    ensure!(
        decoded.dimensions() == (width, height),
        "a {width}x{height} JPEG decoded as {:?}",
        decoded.dimensions()
    );
    Ok(decoded.into_raw())
}

/// A per-video account in the report.
#[derive(Debug, Clone, Serialize)]
pub struct VideoReport {
    /// The file.
    pub path: PathBuf,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Frame rate ffprobe reports, if any.
    pub fps: Option<f64>,
    /// Frames ffmpeg decoded (every frame is decoded; one in `every` is used).
    pub frames_decoded: u64,
    /// Frames measured.
    pub frames_sampled: usize,
    /// Frames the source reported as corrupt and skipped.
    pub frames_corrupt: u64,
}

/// One row of the result.
#[derive(Debug, Clone, Serialize)]
pub struct RowReport {
    /// Row name, as in the table.
    pub name: String,
    /// Short label, as in the plot.
    pub label: String,
    /// Family of the row.
    pub kind: RowKind,
    /// Encoder precision that made the latent: on the edge for latentcam
    /// rows, on the host for the others.
    pub encoder: String,
    /// Wire codec (latentcam rows).
    pub codec: Option<String>,
    /// JPEG quality (JPEG rows).
    pub jpeg_quality: Option<u8>,
    /// JPEG encoder and set-up (JPEG rows).
    pub jpeg_encoder: Option<String>,
    /// Frames measured.
    pub frames: usize,
    /// Mean bytes per frame on the link: the whole wire frame for latentcam
    /// rows, the bare JPEG or RGB otherwise.
    pub bytes_per_frame: f64,
    /// Mean codec payload bytes inside the wire frame (latentcam rows).
    pub payload_bytes_per_frame: Option<f64>,
    /// `bytes_per_frame` over that of the fp32 `U8Affine` wire frame.
    pub ratio_vs_u8_frame: Option<f64>,
    /// Mean cosine similarity to the reference latent.
    pub cosine_mean: f64,
    /// Lowest cosine similarity to the reference latent.
    pub cosine_min: f64,
    /// Frames whose ImageNet top-1 equals the reference's, in percent.
    pub top1_agreement_pct: f64,
    /// Mean |top-5 ∩ reference top-5| / 5.
    pub top5_overlap_mean: f64,
}

/// A reference top-1 class and how often it came up.
#[derive(Debug, Clone, Serialize)]
pub struct ClassCount {
    /// ImageNet class index.
    pub class: usize,
    /// Its name.
    pub label: String,
    /// Frames whose reference top-1 it is.
    pub frames: usize,
}

/// Everything `link.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct LinkReport {
    /// Model id from the manifest.
    pub model_id: String,
    /// What the rows are compared with.
    pub reference: String,
    /// One decoded frame in `every` was measured.
    pub every: u64,
    /// Inference threads per encoder.
    pub threads: usize,
    /// The videos.
    pub videos: Vec<VideoReport>,
    /// Frames measured, all videos.
    pub frames: usize,
    /// The rows, in table order.
    pub rows: Vec<RowReport>,
    /// Most frequent reference top-1 classes (at most five).
    pub reference_top1_classes: Vec<ClassCount>,
    /// Mean probability of the reference top-1 class.
    pub reference_top1_probability_mean: f64,
    /// Wall time of the whole run, decoding included.
    pub runtime_seconds: f64,
}

/// The encoders, preprocessors and head, and the rows' running totals.
struct Bench {
    head: ImagenetHead,
    fp32: Box<dyn Encoder>,
    int8: Box<dyn Encoder>,
    /// The edge's preprocessing for the fp32 encoder; also yields the crop.
    edge_fp32: Preprocessor,
    /// The edge's preprocessing for the int8 encoder.
    edge_int8: Preprocessor,
    /// The host's normalisation of a received crop, for the fp32 encoder.
    host_fp32: Preprocessor,
    crop_size: (u32, u32),
    rows: Vec<(Transport, Fidelity)>,
    reference: Vec<f32>,
    int8_latent: Vec<f32>,
    host_latent: Vec<f32>,
    frame_buf: Vec<u8>,
    jpeg: Vec<u8>,
    reference_top1: HashMap<usize, usize>,
    reference_top1_probability_sum: f64,
    /// Frames counted across videos: the `seq` a device would give them.
    seq: u64,
}

impl Bench {
    fn new(manifest: &Manifest, args: &LinkArgs) -> Result<Self> {
        let open = |precision: Precision| {
            let options = EncoderOptions {
                precision,
                threads: args.threads.max(1),
                ..EncoderOptions::default()
            };
            encoder::open(manifest, &options)
                .with_context(|| format!("cannot open the tract {} encoder", precision.name()))
        };
        let fp32 = open(Precision::Fp32)?;
        let int8 = open(Precision::Int8)?;
        let head = ImagenetHead::from_manifest(manifest)
            .context("cannot load the ImageNet head the manifest names")?;
        let spec = &manifest.preprocessing;
        let dim = manifest.latent_dim;
        Ok(Self {
            edge_fp32: Preprocessor::new(spec, fp32.info().layout),
            edge_int8: Preprocessor::new(spec, int8.info().layout),
            host_fp32: Preprocessor::new(spec, fp32.info().layout),
            crop_size: (spec.crop_width, spec.crop_height),
            head,
            fp32,
            int8,
            rows: transports(&args.jpeg_qualities)
                .into_iter()
                .map(|t| (t, Fidelity::default()))
                .collect(),
            reference: vec![0.0; dim],
            int8_latent: vec![0.0; dim],
            host_latent: vec![0.0; dim],
            frame_buf: vec![0; frame::ENCODE_BUFFER_LEN],
            jpeg: Vec::new(),
            reference_top1: HashMap::new(),
            reference_top1_probability_sum: 0.0,
            seq: 0,
        })
    }

    /// Decodes one video unpaced with the firmware's replay source and
    /// measures every `args.every`th frame.
    fn sample_video(&mut self, path: &Path, args: &LinkArgs) -> Result<VideoReport> {
        let options = ReplayOptions {
            pace: Pace::AsFastAsPossible,
            looping: false,
        };
        let mut source = VideoSource::open(path, options)
            .with_context(|| format!("cannot open {} for replay", path.display()))?;
        let info = source.info();
        eprintln!("link: {}", source.describe());
        let expected = info
            .frames
            .map(|n| n.div_ceil(args.every) as usize)
            .map(|n| args.max_frames.map_or(n, |m| n.min(m)));
        let mut report = VideoReport {
            path: path.to_path_buf(),
            width: info.width,
            height: info.height,
            fps: info.fps,
            frames_decoded: 0,
            frames_sampled: 0,
            frames_corrupt: 0,
        };
        let started = Instant::now();
        let mut frame = Frame::new();
        loop {
            if args.max_frames.is_some_and(|m| report.frames_sampled >= m) {
                break;
            }
            match source.next_frame(&mut frame) {
                Ok(SourceEvent::Frame) => {}
                Ok(SourceEvent::End) => break,
                Ok(other) => bail!("{}: unexpected source event {other:?}", path.display()),
                Err(e) if e.kind() == ErrorKind::Corrupt => {
                    eprintln!("link: {e}");
                    report.frames_corrupt += 1;
                    continue;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("replay of {} failed", path.display()));
                }
            }
            report.frames_decoded += 1;
            let seq = self.seq;
            self.seq += 1;
            if !frame.index.is_multiple_of(args.every) {
                continue;
            }
            // The time a camera running at the file's rate would stamp; the
            // unpaced replay's own clock says how fast ffmpeg decodes instead.
            let capture_us = info.fps.map_or(frame.capture_us, |fps| {
                (frame.index as f64 * 1e6 / fps).round() as u64
            });
            let meta = FrameMeta {
                seq,
                capture_us,
                wall: frame.wall,
                width: frame.width,
                height: frame.height,
            };
            self.measure(&frame, meta).with_context(|| {
                format!("measuring frame {} of {}", frame.index, path.display())
            })?;
            report.frames_sampled += 1;
            if report.frames_sampled.is_multiple_of(20) || Some(report.frames_sampled) == expected {
                let elapsed = started.elapsed().as_secs_f64();
                let per_frame = elapsed / report.frames_sampled as f64;
                let eta = expected.map_or(String::new(), |n| {
                    format!(
                        " of {n}, ~{:.0} s left",
                        n.saturating_sub(report.frames_sampled) as f64 * per_frame
                    )
                });
                eprintln!(
                    "link: {} frames measured{eta} ({:.2} s per frame)",
                    report.frames_sampled, per_frame
                );
            }
        }
        Ok(report)
    }

    /// Measures every row on one frame.
    fn measure(&mut self, frame: &Frame, meta: FrameMeta) -> Result<()> {
        let input = self
            .edge_fp32
            .run(&frame.rgb, frame.width, frame.height)
            .context("preprocessing for the fp32 encoder")?;
        self.fp32
            .encode(input, &mut self.reference)
            .context("fp32 encoder")?;
        let crop = self.edge_fp32.crop().to_vec();
        let input = self
            .edge_int8
            .run(&frame.rgb, frame.width, frame.height)
            .context("preprocessing for the int8 encoder")?;
        self.int8
            .encode(input, &mut self.int8_latent)
            .context("int8 encoder")?;

        let reference_top = top_classes(&self.head, &self.reference)?;
        let reference_classes: Vec<usize> = reference_top.iter().map(|&(c, _)| c).collect();
        if let Some(&(class, probability)) = reference_top.first() {
            *self.reference_top1.entry(class).or_default() += 1;
            self.reference_top1_probability_sum += f64::from(probability);
        }

        let (crop_w, crop_h) = self.crop_size;
        for i in 0..self.rows.len() {
            let transport = self.rows[i].0;
            let (bytes, payload_bytes, latent) = match transport {
                Transport::Wire { precision, codec } => {
                    let sent = match precision {
                        Precision::Fp32 => &self.reference,
                        Precision::Int8 => &self.int8_latent,
                    };
                    wire_round_trip(codec, sent, meta, &mut self.frame_buf)?
                }
                Transport::RawRgb => {
                    let latent = self.host_encode(&crop)?;
                    (crop.len(), crop.len(), latent)
                }
                Transport::Jpeg { quality, flavour } => {
                    let received =
                        jpeg_round_trip(flavour, &crop, crop_w, crop_h, quality, &mut self.jpeg)?;
                    let latent = self.host_encode(&received)?;
                    (self.jpeg.len(), self.jpeg.len(), latent)
                }
            };
            let classes: Vec<usize> = top_classes(&self.head, &latent)?
                .into_iter()
                .map(|(c, _)| c)
                .collect();
            self.rows[i].1.add(Sample {
                bytes,
                payload_bytes,
                cosine: encoder::cosine(&self.reference, &latent),
                top1_agrees: top1_agrees(&reference_classes, &classes),
                top_k_overlap: top_k_overlap(&reference_classes, &classes),
            });
        }
        Ok(())
    }

    /// The host's side of the image baselines: normalise a received 224×224
    /// crop exactly as the preprocessor does (no second resize) and run the
    /// fp32 encoder.
    fn host_encode(&mut self, crop: &[u8]) -> Result<Vec<f32>> {
        let input = self
            .host_fp32
            .normalize_crop(crop)
            .context("normalising a received crop")?;
        self.fp32
            .encode(input, &mut self.host_latent)
            .context("fp32 encoder on the host")?;
        Ok(self.host_latent.clone())
    }

    fn report(
        &self,
        manifest: &Manifest,
        args: &LinkArgs,
        videos: Vec<VideoReport>,
        started: Instant,
    ) -> LinkReport {
        let u8_frame = self.rows.iter().find_map(|(t, f)| {
            (*t == Transport::Wire {
                precision: Precision::Fp32,
                codec: Codec::U8Affine,
            })
            .then(|| f.mean(f.bytes as f64))
        });
        let rows = self
            .rows
            .iter()
            .map(|&(transport, ref f)| {
                let bytes_per_frame = f.mean(f.bytes as f64);
                let (encoder, codec, jpeg_quality, jpeg_encoder) = match transport {
                    Transport::Wire { precision, codec } => {
                        (precision.name(), Some(format!("{codec:?}")), None, None)
                    }
                    Transport::Jpeg { quality, flavour } => (
                        "fp32",
                        None,
                        Some(quality),
                        Some(flavour.name().to_string()),
                    ),
                    Transport::RawRgb => ("fp32", None, None, None),
                };
                RowReport {
                    name: transport.name(),
                    label: transport.label(),
                    kind: transport.kind(),
                    encoder: encoder.to_string(),
                    payload_bytes_per_frame: codec
                        .is_some()
                        .then(|| f.mean(f.payload_bytes as f64)),
                    codec,
                    jpeg_quality,
                    jpeg_encoder,
                    frames: f.frames,
                    bytes_per_frame,
                    ratio_vs_u8_frame: u8_frame.map(|u| bytes_per_frame / u),
                    cosine_mean: f.mean(f.cosine_sum),
                    cosine_min: f.cosine_min,
                    top1_agreement_pct: percent(f.top1_agreements, f.frames),
                    top5_overlap_mean: f.mean(f.top_k_overlap_sum),
                }
            })
            .collect();
        let frames: usize = videos.iter().map(|v| v.frames_sampled).sum();
        let mut classes: Vec<(usize, usize)> =
            self.reference_top1.iter().map(|(&c, &n)| (c, n)).collect();
        classes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        LinkReport {
            model_id: manifest.model_id.clone(),
            reference: "the fp32 tract encoder's latent of the original frame (edge preprocessing)"
                .to_string(),
            every: args.every,
            threads: args.threads.max(1),
            videos,
            frames,
            rows,
            reference_top1_classes: classes
                .into_iter()
                .take(5)
                .map(|(class, frames)| ClassCount {
                    class,
                    label: self.head.labels.get(class).cloned().unwrap_or_default(),
                    frames,
                })
                .collect(),
            reference_top1_probability_mean: if frames == 0 {
                f64::NAN
            } else {
                self.reference_top1_probability_sum / frames as f64
            },
            runtime_seconds: started.elapsed().as_secs_f64(),
        }
    }
}

/// Bytes as an integer when they are one, else with one decimal.
fn format_bytes(bytes: f64) -> String {
    if (bytes - bytes.round()).abs() < 0.05 {
        format!("{bytes:.0}")
    } else {
        format!("{bytes:.1}")
    }
}

/// "every frame", "every 2nd frame", "every 4th frame"…
fn sampling(every: u64) -> String {
    let suffix = match (every % 10, every % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    if every == 1 {
        "every frame".to_string()
    } else {
        format!("every {every}{suffix} frame")
    }
}

/// `link.md`: the table and what it was measured on.
fn render_markdown(report: &LinkReport) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Link: bytes per frame against fidelity\n");
    let videos: Vec<String> = report
        .videos
        .iter()
        .map(|v| {
            format!(
                "{} of {} decoded frames of `{}` ({}×{})",
                v.frames_sampled,
                v.frames_decoded,
                v.path.display(),
                v.width,
                v.height
            )
        })
        .collect();
    let _ = writeln!(
        md,
        "{} frames ({}): {}. Reference: {}, model `{}`; \
         ImageNet classes from the manifest's head.\n",
        report.frames,
        sampling(report.every),
        videos.join("; "),
        report.reference,
        report.model_id
    );
    let _ = writeln!(
        md,
        "| row | bytes/frame | payload B | × U8 frame | mean cos | min cos | top-1 agree % | top-5 overlap |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for row in &report.rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.6} | {:.6} | {:.1} | {:.3} |",
            row.name,
            format_bytes(row.bytes_per_frame),
            row.payload_bytes_per_frame
                .map_or_else(|| "–".to_string(), format_bytes),
            row.ratio_vs_u8_frame
                .map_or_else(|| "–".to_string(), |r| format!("{r:.2}")),
            row.cosine_mean,
            row.cosine_min,
            row.top1_agreement_pct,
            row.top5_overlap_mean
        );
    }
    let top: Vec<String> = report
        .reference_top1_classes
        .iter()
        .map(|c| format!("{} ({})", c.label, c.frames))
        .collect();
    let _ = writeln!(
        md,
        "\n* bytes/frame: latentcam rows, the whole wire frame of a `Message::Latent` \
         (`frame::encode`: version, kind, postcard body, CRC-32C, COBS, two delimiters), \
         with the codec payload beside it; image rows, the bare JPEG or RGB bytes, \
         without any framing. Means over frames.\n\
         * JPEG rows: the 224×224 crop the encoder sees (resize and centre crop, before \
         normalisation) as JPEG, decoded (`image`) and normalised like the edge (no second \
         resize), encoded by the fp32 encoder on the host. 4:4:4 (image): `image`'s \
         `JpegEncoder::new_with_quality`, no chroma subsampling, standard Huffman tables. \
         4:2:0 (jpeg-encoder): 4:2:0 with averaged chroma, standard Huffman tables, as camera \
         encoders and libjpeg's defaults; same quantisation tables.\n\
         * raw RGB: the same crop unencoded; its fidelity is 1 by construction \
         (measured, it checks the host path).\n\
         * top-5 overlap: |top-5 ∩ reference top-5| / 5.\n\
         * Most frequent reference top-1 classes: {}; mean reference top-1 probability {:.3}.\n\
         * {} inference thread(s) per encoder; run took {:.1} s.",
        top.join(", "),
        report.reference_top1_probability_mean,
        report.threads,
        report.runtime_seconds
    );
    md
}

/// The plot's points, one per row.
fn plot_points(report: &LinkReport) -> Vec<plot::Point> {
    report
        .rows
        .iter()
        .map(|row| plot::Point {
            label: row.label.clone(),
            series: row.kind,
            bytes: row.bytes_per_frame,
            top1_pct: row.top1_agreement_pct,
        })
        .collect()
}

fn plot_title(report: &LinkReport) -> String {
    let names: Vec<String> = report
        .videos
        .iter()
        .map(|v| {
            v.path.file_name().map_or_else(
                || v.path.display().to_string(),
                |n| n.to_string_lossy().into(),
            )
        })
        .collect();
    format!(
        "Bytes per frame vs ImageNet top-1 agreement with the fp32 latent ({} frames of {})",
        report.frames,
        names.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_hand_computed_vectors() {
        // Same direction, any length: 1.
        assert!((encoder::cosine(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]) - 1.0).abs() < 1e-12);
        // Orthogonal: 0; opposite: −1.
        assert_eq!(encoder::cosine(&[1.0, 0.0], &[0.0, 5.0]), 0.0);
        assert!((encoder::cosine(&[1.0, -2.0], &[-1.0, 2.0]) + 1.0).abs() < 1e-12);
        // (1,1)·(1,0) = 1, |(1,1)| = √2, |(1,0)| = 1: 1/√2.
        let c = encoder::cosine(&[1.0, 1.0], &[1.0, 0.0]);
        assert!((c - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-12);
        // (3,4)·(4,3) = 24, both of length 5: 24/25.
        assert!((encoder::cosine(&[3.0, 4.0], &[4.0, 3.0]) - 0.96).abs() < 1e-12);
        // An all-zero vector has no direction: 0 by definition.
        assert_eq!(encoder::cosine(&[0.0, 0.0], &[1.0, 2.0]), 0.0);
    }

    #[test]
    fn top_k_overlap_counts_shared_classes_in_any_order() {
        assert_eq!(top_k_overlap(&[1, 2, 3, 4, 5], &[1, 2, 3, 4, 5]), 1.0);
        assert_eq!(top_k_overlap(&[1, 2, 3, 4, 5], &[5, 4, 3, 2, 1]), 1.0);
        assert_eq!(top_k_overlap(&[1, 2, 3, 4, 5], &[6, 7, 8, 9, 10]), 0.0);
        // {1, 3, 5} shared: 3/5.
        assert_eq!(top_k_overlap(&[1, 2, 3, 4, 5], &[5, 9, 1, 8, 3]), 0.6);
        // Only 4 shared: 1/5.
        assert_eq!(top_k_overlap(&[1, 2, 3, 4, 5], &[4, 6, 7, 8, 9]), 0.2);
        assert_eq!(top_k_overlap(&[], &[1]), 0.0);
    }

    #[test]
    fn sampling_reads_as_english() {
        assert_eq!(sampling(1), "every frame");
        assert_eq!(sampling(2), "every 2nd frame");
        assert_eq!(sampling(3), "every 3rd frame");
        assert_eq!(sampling(4), "every 4th frame");
        assert_eq!(sampling(11), "every 11th frame");
        assert_eq!(sampling(21), "every 21st frame");
        assert_eq!(sampling(112), "every 112th frame");
    }

    #[test]
    fn top1_agreement_looks_only_at_the_first_class() {
        assert!(top1_agrees(&[7, 1, 2], &[7, 2, 1]));
        assert!(!top1_agrees(&[7, 1, 2], &[1, 7, 2]));
        assert!(!top1_agrees(&[], &[]));
        assert_eq!(percent(3, 4), 75.0);
        assert_eq!(percent(0, 8), 0.0);
        assert!(percent(1, 0).is_nan());
    }

    #[test]
    fn fidelity_means_minimum_and_agreement_over_frames() {
        let mut f = Fidelity::default();
        for (bytes, cosine, agrees, overlap) in [
            (100, 1.0, true, 1.0),
            (110, 0.9, false, 0.6),
            (120, 0.95, true, 0.8),
            (130, 0.99, true, 1.0),
        ] {
            f.add(Sample {
                bytes,
                payload_bytes: bytes - 10,
                cosine,
                top1_agrees: agrees,
                top_k_overlap: overlap,
            });
        }
        assert_eq!(f.frames, 4);
        assert_eq!(f.mean(f.bytes as f64), 115.0);
        assert_eq!(f.mean(f.payload_bytes as f64), 105.0);
        assert!((f.mean(f.cosine_sum) - 0.96).abs() < 1e-12);
        assert_eq!(f.cosine_min, 0.9);
        assert_eq!(percent(f.top1_agreements, f.frames), 75.0);
        assert!((f.mean(f.top_k_overlap_sum) - 0.85).abs() < 1e-12);
        assert!(Fidelity::default().mean(0.0).is_nan());
    }

    #[test]
    fn every_wire_codec_round_trips_through_a_latent_frame() {
        let latent: Vec<f32> = (0..1280).map(|i| ((i * 37 % 101) as f32) / 17.0).collect();
        let meta = FrameMeta {
            seq: 12,
            capture_us: 1_200_000,
            wall: None,
            width: 768,
            height: 576,
        };
        let mut buf = vec![0; frame::ENCODE_BUFFER_LEN];
        let codecs = wire_codecs();
        assert!(codecs.contains(&Codec::F32) && codecs.contains(&Codec::U8Affine));
        for codec in codecs {
            let (len, payload, decoded) = wire_round_trip(codec, &latent, meta, &mut buf).unwrap();
            assert_eq!(payload, codec.payload_len(latent.len()).unwrap());
            // Header, CRC, COBS and delimiters cost something, not much.
            assert!(
                len > payload && len < payload + payload / 200 + 40,
                "{codec:?}"
            );
            assert!(encoder::cosine(&latent, &decoded) > 0.999, "{codec:?}");
            if codec == Codec::F32 {
                assert_eq!(decoded, latent);
            }
        }
    }

    #[test]
    fn jpeg_round_trip_keeps_the_size_and_grows_with_quality() {
        let (w, h) = (64u32, 48u32);
        let rgb = gradient(w, h);
        let mut jpeg = Vec::new();
        let mut sizes = Vec::new();
        for flavour in JpegFlavour::ALL {
            let low = jpeg_round_trip(flavour, &rgb, w, h, 10, &mut jpeg).unwrap();
            let low_len = jpeg.len();
            let high = jpeg_round_trip(flavour, &rgb, w, h, 95, &mut jpeg).unwrap();
            assert_eq!(low.len(), rgb.len(), "{flavour:?}");
            assert_eq!(high.len(), rgb.len(), "{flavour:?}");
            assert!(jpeg.len() > low_len, "{flavour:?}");
            jpeg_round_trip(flavour, &rgb, w, h, 50, &mut jpeg).unwrap();
            sizes.push(jpeg.len());
        }
        // Subsampled chroma: the smaller JPEG.
        assert!(sizes[1] < sizes[0], "{sizes:?}");
    }

    /// A smooth colour gradient, like most of a photo.
    /// Mean absolute difference of two pixel buffers, in grey levels.
    fn mean_abs_error(a: &[u8], b: &[u8]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(&x, &y)| f64::from(x.abs_diff(y)))
            .sum::<f64>()
            / a.len() as f64
    }

    fn gradient(w: u32, h: u32) -> Vec<u8> {
        (0..w * h)
            .flat_map(|i| {
                let (x, y) = (i % w, i / w);
                [(x * 4) as u8, (y * 5) as u8, ((x + y) * 2) as u8]
            })
            .collect()
    }

    #[test]
    fn jpeg_baselines_decode_close_to_the_original_with_the_hosts_decoder() {
        // Regression: jpeg-encoder with optimised Huffman tables writes one
        // scan per component, which zune-jpeg 0.5.15 decoded to garbage
        // (mean error ~108 here, ~1 when right) and made every 4:2:0 row
        // score a cosine of 0.16.
        let (w, h) = (64u32, 48u32);
        let rgb = gradient(w, h);
        let mut jpeg = Vec::new();
        for flavour in JpegFlavour::ALL {
            let back = jpeg_round_trip(flavour, &rgb, w, h, 95, &mut jpeg).unwrap();
            let mean_error = mean_abs_error(&rgb, &back);
            assert!(mean_error < 2.0, "{flavour:?}: mean error {mean_error}");
        }
    }

    #[test]
    fn optimised_table_jpegs_with_one_scan_per_component_decode_on_the_host() {
        // jpeg-encoder's optimised Huffman tables mean one scan per
        // component: the file shape picture::decode_rgb hands to
        // jpeg-decoder because zune-jpeg decodes it to garbage.
        let (w, h) = (64u32, 48u32);
        let rgb = gradient(w, h);
        let mut jpeg = Vec::new();
        let mut encoder = jpeg_encoder::Encoder::new(&mut jpeg, 95);
        encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_2_0);
        encoder.set_optimized_huffman_tables(true);
        encoder
            .encode(&rgb, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        assert!(latentcam_firmware::picture::has_separate_component_scans(
            &jpeg
        ));
        let back = latentcam_firmware::picture::decode_rgb(&jpeg).unwrap();
        let mean_error = mean_abs_error(&rgb, back.as_raw());
        assert!(mean_error < 2.0, "mean error {mean_error}");
    }

    #[test]
    fn rows_cover_every_codec_then_int8_raw_and_each_jpeg_encoder_sorted() {
        let rows = transports(&[90, 10, 50, 10]);
        let codecs = wire_codecs().len();
        assert_eq!(rows.len(), codecs + 1 + 1 + 2 * 3);
        assert_eq!(
            rows[codecs],
            Transport::Wire {
                precision: Precision::Int8,
                codec: Codec::U8Affine
            }
        );
        assert_eq!(rows[codecs + 1], Transport::RawRgb);
        let jpeg = |flavour, quality| Transport::Jpeg { quality, flavour };
        use JpegFlavour::{Image444, Subsampled420};
        assert_eq!(
            &rows[codecs + 2..],
            &[
                jpeg(Image444, 10),
                jpeg(Image444, 50),
                jpeg(Image444, 90),
                jpeg(Subsampled420, 10),
                jpeg(Subsampled420, 50),
                jpeg(Subsampled420, 90),
            ]
        );
    }
}
