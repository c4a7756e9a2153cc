//! `latentcam-host`: parses the command line and calls one function per
//! subcommand; the work is in the library.

mod args;
mod enroll;
mod heads;
mod keys;
mod recordings;
mod serve;

use clap::Parser;

use args::{Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    latentcam_logging::init("info", cli.log_format);
    match cli.command {
        Command::Serve(args) => serve::serve(*args),
        Command::Replay(args) => recordings::replay(args),
        Command::Train(args) => recordings::train(args),
        Command::Compare(args) => recordings::compare(args),
        Command::Enroll(args) => enroll::enroll(args),
        Command::Keys { command } => keys::keys(command),
        Command::Inspect(args) => recordings::inspect(args),
        Command::Classify(args) => recordings::classify(args),
    }
}
