//! `latentcam-host`: parses the command line and calls one function per
//! subcommand; the work is in the library.

mod args;
mod config;
mod enroll;
mod exit;
mod heads;
mod keys;
mod progress;
mod recordings;
mod serve;
mod tools;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let cli = Cli::parse_from(&argv);
    latentcam_logging::init("info", cli.log_format);
    let result = match cli.command {
        Command::Serve(args) => config::load(&argv, *args).and_then(serve::serve),
        Command::CheckConfig(args) => config::load(&argv, *args).and_then(serve::check_config),
        Command::Replay(args) => recordings::replay(args),
        Command::Train(args) => recordings::train(args),
        Command::Compare(args) => recordings::compare(args),
        Command::Enroll(args) => enroll::enroll(args),
        Command::Keys { command } => keys::keys(command),
        Command::Inspect(args) => recordings::inspect(args),
        Command::Classify(args) => recordings::classify(args),
        Command::Completions { shell } => tools::completions(shell),
        Command::Manpage => tools::manpage(),
    };
    exit::report(result)
}
