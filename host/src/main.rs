//! `latentcam-host`: argument parsing and wiring only; the work is in the
//! library.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use latentcam_firmware::manifest::{Manifest, default_models_dir};
use latentcam_host::heads::Head;
use latentcam_host::heads::imagenet::{ImagenetHead, TopK};
use latentcam_host::ingest::{self, Limits, Registry, ServeOptions};

#[derive(Parser)]
#[command(
    version,
    about = "latentcam host: receives latents and runs task heads on them"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve devices: accept TCP connections, run the heads on every latent,
    /// write one JSON line per latent, acknowledge. Stops on SIGINT/SIGTERM.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0:7878")]
        tcp: String,
        /// Models directory (holding manifest.toml).
        #[arg(long, default_value_os_t = default_models_dir())]
        models: PathBuf,
        /// Append result lines here instead of stdout; a restarted host
        /// resumes from this file (what each device already delivered).
        #[arg(long)]
        jsonl: Option<PathBuf>,
        /// ImageNet classes per latent.
        #[arg(long, default_value_t = 3)]
        top: usize,
        /// Sustained latents/s accepted per connection.
        #[arg(long, default_value_t = 200.0)]
        max_fps: f64,
        /// Most device connections at once.
        #[arg(long, default_value_t = 1024)]
        max_connections: usize,
        /// Host id sent to devices.
        #[arg(long, default_value = "latentcam-host")]
        host_id: String,
    },
    /// Decode a recording (a latentcam frame stream on disk) and summarise it:
    /// messages by kind, devices, sequence gaps, frame errors.
    Inspect {
        /// The recording file.
        recording: PathBuf,
    },
    /// Run the model's ImageNet head over every latent of a recording and
    /// print the top classes.
    Classify {
        /// The recording file.
        recording: PathBuf,
        /// Models directory (holding manifest.toml).
        #[arg(long, default_value_os_t = default_models_dir())]
        models: PathBuf,
        /// Classes to show per latent.
        #[arg(long, default_value_t = 3)]
        top: usize,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve {
            tcp,
            models,
            jsonl,
            top,
            max_fps,
            max_connections,
            host_id,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_env("LATENTCAM_LOG")
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .with_writer(std::io::stderr)
                .with_target(false)
                .init();
            let manifest = Manifest::load(&models)
                .with_context(|| format!("loading the model manifest from {}", models.display()))?;
            let imagenet = ImagenetHead::from_manifest(&manifest)
                .context("loading the model's ImageNet head")?;
            let heads: Vec<Box<dyn Head>> = vec![Box::new(TopK {
                head: imagenet,
                k: top,
            })];
            let out: Box<dyn std::io::Write + Send> = match &jsonl {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .with_context(|| format!("cannot open {}", path.display()))?,
                )),
                None => Box::new(std::io::stdout()),
            };
            // Results appended to a file are the durable record: a restarted
            // host resumes from them, so devices re-send only what it lacks.
            let registry = match &jsonl {
                Some(path) => Registry::resume_from_results(path)?,
                None => Registry::in_memory(),
            };
            let limits = Limits {
                max_fps,
                burst: max_fps * 2.0,
                ..Limits::default()
            };
            ingest::serve(ServeOptions {
                tcp,
                context: ingest::Context {
                    manifest,
                    registry: std::sync::Arc::new(registry),
                    limits,
                    host_id,
                    max_connections,
                },
                heads,
                out,
                queue: 256,
            })?;
        }
        Command::Inspect { recording } => {
            let file = File::open(&recording)
                .with_context(|| format!("cannot open recording {}", recording.display()))?;
            let summary = latentcam_host::recording::summarize(BufReader::new(file))
                .with_context(|| format!("while reading {}", recording.display()))?;
            println!("{}: {} bytes", recording.display(), summary.bytes);
            for (device, model) in &summary.devices {
                println!("device {device}: {model}");
            }
            for (kind, count) in &summary.messages {
                println!("  {kind:<10} {count}");
            }
            let seq = &summary.sequence;
            if let Some((first, last)) = seq.first_last {
                println!(
                    "latents: seq {first}..={last}, {} missing, {} out of order or duplicate, {:.1} payload bytes/latent",
                    seq.missing,
                    seq.out_of_order_or_duplicate,
                    summary.payload_bytes as f64 / seq.latents as f64
                );
            }
            if summary.errors.is_empty() {
                println!("frame errors: none");
            } else {
                for (kind, count) in &summary.errors {
                    println!("frame errors: {kind} {count}");
                }
            }
        }
        Command::Classify {
            recording,
            models,
            top,
        } => {
            let manifest = Manifest::load(&models).with_context(|| {
                format!(
                    "loading the model manifest from {} (set --models or LATENTCAM_MODELS)",
                    models.display()
                )
            })?;
            let head =
                ImagenetHead::from_manifest(&manifest).context("loading the ImageNet head")?;
            let file = File::open(&recording)
                .with_context(|| format!("cannot open recording {}", recording.display()))?;
            let summary = latentcam_host::classify::classify_recording(
                BufReader::new(file),
                &manifest,
                &head,
                top.max(1),
                |c| {
                    let classes: Vec<String> = c
                        .predictions
                        .iter()
                        .map(|p| format!("{} {:.0}%", p.label, p.probability * 100.0))
                        .collect();
                    println!(
                        "{} #{:<4} {:>4}x{:<4} {}",
                        c.device_id,
                        c.seq,
                        c.frame_size.0,
                        c.frame_size.1,
                        classes.join(" | ")
                    );
                },
            )
            .with_context(|| format!("while reading {}", recording.display()))?;
            for (device, refusal) in &summary.refused {
                eprintln!("refused device {device}: {refusal}");
            }
            println!(
                "{} latents classified, {} without an accepted Hello, {} bad payloads, {} frame errors",
                summary.classified,
                summary.without_hello,
                summary.bad_payload,
                summary.frame_errors
            );
            if summary.classified == 0 && !summary.refused.is_empty() {
                anyhow::bail!("no latent could be classified: every device was refused");
            }
        }
    }
    Ok(())
}
