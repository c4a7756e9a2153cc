//! Exit codes: 78 (`EX_CONFIG` of sysexits.h) when the configuration
//! cannot work, so that systemd does not restart the host in a loop
//! (`RestartPreventExitStatus=78` in the unit); 1 for any other failure.

use std::fmt;
use std::process::ExitCode;

use latentcam_host::ingest::ServeError;

/// The exit code of a configuration that cannot work.
pub const CONFIG: u8 = 78;

/// A failure that restarting cannot cure: the configuration (flags,
/// file, keys, models) must change. Displays as the failure it wraps.
#[derive(Debug)]
pub struct ConfigError(anyhow::Error);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// Marks the failure of a result as one of the configuration.
pub trait OrConfig<T> {
    /// The result, its error marked as the configuration's.
    fn or_config(self) -> anyhow::Result<T>;
}

impl<T, E: Into<anyhow::Error>> OrConfig<T> for Result<T, E> {
    fn or_config(self) -> anyhow::Result<T> {
        self.map_err(|error| ConfigError(error.into()).into())
    }
}

/// Prints a failure as anyhow's `main` would, and picks the exit code.
pub fn report(result: anyhow::Result<()>) -> ExitCode {
    let Err(error) = result else {
        return ExitCode::SUCCESS;
    };
    eprintln!("Error: {error:?}");
    ExitCode::from(if is_config(&error) { CONFIG } else { 1 })
}

fn is_config(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.is::<ConfigError>()
            || cause.downcast_ref::<ServeError>().is_some_and(|serve| {
                matches!(serve, ServeError::Address { .. } | ServeError::Mqtt { .. })
            })
    })
}
