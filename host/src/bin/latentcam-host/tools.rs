//! The subcommands that describe the program: `completions` and
//! `manpage`.

use anyhow::Context;

/// Writes the completion script for `shell` to stdout.
pub fn completions(shell: latentcam_cli::Shell) -> anyhow::Result<()> {
    latentcam_cli::completions::<crate::args::Cli>(shell, "latentcam-host", &mut std::io::stdout());
    Ok(())
}

/// Writes the manual page to stdout.
pub fn manpage() -> anyhow::Result<()> {
    latentcam_cli::manpage::<crate::args::Cli>(&mut std::io::stdout())
        .context("writing the manual page")
}
