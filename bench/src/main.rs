//! `latentcam-bench`: the measurements behind `just bench`.
//!
//! * `edge` — encoder latency, tract fp32/int8 (and TFLite when built)
//!   interleaved round by round with the peer runtimes a user would pick
//!   instead (onnxruntime, LiteRT through `bench/peers.py`), at 1 thread and
//!   at all cores.
//! * `link` — bytes per frame against fidelity on real video: each wire codec
//!   against sending the 224×224 frame as JPEG and encoding on the host.
//!
//! `scripts/bench.sh` runs these with the criterion suites and the pipeline
//! and host runs, and writes `bench/results/<date>-<machine>.md`.

mod edge;
mod link;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "latentcam-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Encoder latency against peer runtimes, interleaved in one run.
    Edge(edge::EdgeArgs),
    /// Bytes per frame against fidelity: wire codecs against JPEG.
    Link(link::LinkArgs),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Edge(args) => edge::run(&args),
        Command::Link(args) => link::run(&args),
    }
}
