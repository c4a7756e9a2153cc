//! `latentcam-edge`: argument parsing and wiring only; the work is in the
//! library.

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use latentcam_firmware::batch::{self, BatchSettings};
use latentcam_firmware::config::EdgeConfig;
use latentcam_firmware::encoder::{self, Backend, EncoderOptions, Precision};
use latentcam_firmware::manifest::{Manifest, default_models_dir};
use latentcam_firmware::preprocess::Preprocessor;
use latentcam_wire::Codec;

#[derive(Parser)]
#[command(
    version,
    about = "latentcam edge program: camera → encoder → latent → link"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum CodecArg {
    F32,
    F16,
    U8,
}

impl From<CodecArg> for Codec {
    fn from(c: CodecArg) -> Self {
        match c {
            CodecArg::F32 => Codec::F32,
            CodecArg::F16 => Codec::F16,
            CodecArg::U8 => Codec::U8Affine,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// List V4L2 cameras with their formats, sizes and frame rates (needs a
    /// build with `--features v4l`).
    Cameras,
    /// Load and validate a configuration file and the model it names, print
    /// the effective configuration, and exit.
    CheckConfig {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Encode image files (JPEG/PNG, or directories of them) into a recording
    /// the host can read: a Hello, then one latent per image.
    Encode {
        /// Images or directories.
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// Recording to write.
        #[arg(long, short)]
        out: PathBuf,
        /// Models directory (holding manifest.toml).
        #[arg(long, default_value_os_t = default_models_dir())]
        models: PathBuf,
        /// Inference backend.
        #[arg(long, default_value = "tract")]
        backend: Backend,
        /// Encoder precision. On tract, fp32 is the faster variant.
        #[arg(long, default_value = "fp32")]
        precision: Precision,
        /// Latent codec on the wire.
        #[arg(long, value_enum, default_value = "u8")]
        codec: CodecArg,
        /// Device id sent in Hello.
        #[arg(long, default_value = "edge-batch")]
        device_id: String,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Cameras => {
            let cameras = latentcam_firmware::source::v4l::list_cameras()?;
            if cameras.is_empty() {
                println!("no V4L2 camera found (/dev/video* absent or not capture devices)");
            }
            for camera in cameras {
                println!("{} — {}", camera.path.display(), camera.name);
                for format in camera.formats {
                    let usable = if format.format.is_some() {
                        ""
                    } else {
                        " (unsupported)"
                    };
                    println!("  {} {}{usable}", format.fourcc, format.description);
                    for size in format.sizes {
                        let rates: Vec<String> =
                            size.fps.iter().map(|f| format!("{f:.0}")).collect();
                        println!(
                            "    {}x{} @ {} fps",
                            size.width,
                            size.height,
                            rates.join("/")
                        );
                    }
                }
            }
        }
        Command::CheckConfig { config } => {
            let config = EdgeConfig::load(&config)?;
            let models = if config.model.dir.as_os_str().is_empty() {
                default_models_dir()
            } else {
                config.model.dir.clone()
            };
            let manifest = Manifest::load(&models)
                .with_context(|| format!("model manifest in {}", models.display()))?;
            let backend: Backend = config.model.backend.parse().map_err(anyhow::Error::msg)?;
            let precision: Precision =
                config.model.precision.parse().map_err(anyhow::Error::msg)?;
            let entry = manifest.encoder(backend.format(), precision.name())?;
            let (path, _) = manifest.verify(entry)?;
            print!("{}", config.to_toml());
            println!(
                "# ok: model {} ({} {}) at {} matches its SHA-256",
                manifest.model_id,
                backend,
                precision.name(),
                path.display()
            );
        }
        Command::Encode {
            images,
            out,
            models,
            backend,
            precision,
            codec,
            device_id,
        } => {
            let manifest = Manifest::load(&models).with_context(|| {
                format!(
                    "loading the model manifest from {} (set --models or LATENTCAM_MODELS)",
                    models.display()
                )
            })?;
            let options = EncoderOptions {
                backend,
                precision,
                ..EncoderOptions::default()
            };
            let mut encoder = encoder::open(&manifest, &options).context("loading the encoder")?;
            let mut preprocessor =
                Preprocessor::new(&manifest.preprocessing, encoder.info().layout);
            let images = batch::expand_inputs(&images)?;
            if images.is_empty() {
                bail!("no JPEG or PNG images found in the given paths");
            }
            let file =
                File::create(&out).with_context(|| format!("cannot create {}", out.display()))?;
            let settings = BatchSettings {
                device_id,
                codec: codec.into(),
                preprocessing_id: manifest.preprocessing.id.clone(),
            };
            let report = batch::encode_images(
                &images,
                encoder.as_mut(),
                &mut preprocessor,
                &settings,
                &mut BufWriter::new(file),
            )
            .with_context(|| format!("writing {}", out.display()))?;
            for (path, reason) in &report.skipped {
                eprintln!("skipped {}: {reason}", path.display());
            }
            let n = report.encoded.max(1) as f64;
            println!(
                "{}: {} latents ({} skipped), {:.0} bytes/frame, preprocess {:.1} ms/frame, {} {} {:.1} ms/frame",
                out.display(),
                report.encoded,
                report.skipped.len(),
                report.latent_frame_bytes as f64 / n,
                report.preprocess_seconds * 1e3 / n,
                options.backend,
                options.precision.name(),
                report.encode_seconds * 1e3 / n,
            );
        }
    }
    Ok(())
}
