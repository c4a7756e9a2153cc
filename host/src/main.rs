//! `latentcam-host`: argument parsing and wiring only; the work is in the
//! library.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

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
    /// Decode a recording (a latentcam frame stream on disk) and summarise it:
    /// messages by kind, devices, sequence gaps, frame errors.
    Inspect {
        /// The recording file.
        recording: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
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
    }
    Ok(())
}
