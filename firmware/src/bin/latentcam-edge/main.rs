//! `latentcam-edge`: parses the command line and calls one function per
//! subcommand; the work is in the library.

mod args;
mod doctor;
mod exit;
mod run;
mod tools;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    latentcam_logging::init("info", cli.log_format);
    let result = match cli.command {
        None => run::run(&cli.run),
        Some(Command::Run(args)) => run::run(&args),
        Some(Command::Doctor(args)) => doctor::doctor(&args),
        Some(Command::Cameras) => tools::cameras(),
        Some(Command::Keygen { out }) => tools::keygen(&out),
        Some(Command::CheckConfig { config }) => tools::check_config(config.as_deref()),
        Some(Command::Completions { shell }) => tools::completions(shell),
        Some(Command::Manpage) => tools::manpage(),
        Some(Command::Encode {
            images,
            out,
            model,
            device_id,
        }) => tools::encode(&images, &out, &model, device_id),
    };
    exit::report(result)
}
