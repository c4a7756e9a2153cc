//! `latentcam-edge`: argument parsing and wiring only; the work is in the
//! library.

use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "latentcam edge program: camera → encoder → latent → link"
)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    println!(
        "latentcam-edge {} speaks wire protocol {}",
        latentcam_firmware::FIRMWARE_VERSION,
        latentcam_wire::PROTOCOL_VERSION
    );
    Ok(())
}
