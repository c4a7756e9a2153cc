//! How every latentcam program logs: one set-up, called first thing in the
//! `main` of the edge, the host and the demo, so that they filter, format
//! and write log lines alike.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The environment variable holding the filter: a level (`debug`) or
/// per-crate directives (`latentcam_host=debug,warn`).
pub const LOG_ENV: &str = "LATENTCAM_LOG";

/// Sends log lines to stderr, filtered by `$LATENTCAM_LOG` (else by
/// `default`, such as `"info"`), coloured only when stderr is a terminal
/// so that journald and redirected logs get plain text. A second call
/// leaves the first set-up in place.
pub fn init(default: &str) {
    let filter = EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
