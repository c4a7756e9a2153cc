//! `latentcam-demo`: a host and an edge pipeline in one process, talking
//! over loopback TCP, replaying a real video; prints each latent's result
//! and a summary of bytes per frame against JPEG. Only wiring: the work is
//! in the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use latentcam_demo::DemoOptions;
use latentcam_firmware::manifest::{Manifest, default_models_dir};
use latentcam_host::heads::anomaly::{AnomalyHead, AnomalyOptions};

/// The whole latentcam system on one machine.
#[derive(Debug, Parser)]
#[command(name = "latentcam-demo", version)]
struct Cli {
    /// Video file or image directory to replay.
    #[arg(
        long,
        default_value = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"
    )]
    video: PathBuf,
    /// Models directory (holding manifest.toml).
    #[arg(long, default_value_os_t = default_models_dir())]
    models: PathBuf,
    /// Frames to replay (0: all).
    #[arg(long, default_value_t = 200)]
    frames: u64,
    /// JPEG quality for the size comparison.
    #[arg(long, default_value_t = 85)]
    jpeg_quality: u8,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    latentcam_logging::init("warn", latentcam_logging::LogFormat::Text);
    if !cli.video.exists() {
        anyhow::bail!(
            "{} not found: install Debian's opencv-doc (scripts/setup.sh does) or pass --video",
            cli.video.display()
        );
    }
    let options = DemoOptions {
        video: cli.video,
        models: cli.models,
        frames: cli.frames,
        jpeg_quality: cli.jpeg_quality,
    };
    let manifest = Manifest::load(&options.models)
        .with_context(|| format!("model manifest in {}", options.models.display()))?;
    let anomaly = AnomalyHead::new(manifest.latent_dim, AnomalyOptions::default())?;
    let summary =
        latentcam_demo::run(&options, vec![Box::new(anomaly)], |line| println!("{line}"))?;
    let e = &summary.edge;
    println!(
        "\n{} frames encoded ({} dropped), {:.1} fps end to end in {:.1} s; {} results from the host",
        e.encoded,
        e.dropped,
        e.encoded as f64 / summary.seconds.max(1e-9),
        summary.seconds,
        summary.host.processed
    );
    println!(
        "bytes per frame on the link: {:.0} (U8 latent, framing and session messages included); \
         the same frames as JPEG q{}: {:.0} — {:.1}x smaller",
        summary.latent_bytes,
        options.jpeg_quality,
        summary.jpeg_bytes,
        summary.jpeg_bytes / summary.latent_bytes.max(1.0)
    );
    Ok(())
}
