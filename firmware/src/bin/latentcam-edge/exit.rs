//! Exit codes: 78 (`EX_CONFIG` of sysexits.h) when the configuration
//! cannot work, so that systemd does not restart the program in a loop
//! (`RestartPreventExitStatus=78` in the unit); 1 for any other failure.

use std::process::ExitCode;

use latentcam_firmware::assemble::AssembleError;
use latentcam_firmware::config::ConfigError;

/// The exit code of a configuration that cannot work.
pub const CONFIG: u8 = 78;

/// Prints a failure as anyhow's `main` would, and picks the exit code.
pub fn report(result: anyhow::Result<()>) -> ExitCode {
    let Err(error) = result else {
        return ExitCode::SUCCESS;
    };
    eprintln!("Error: {error:?}");
    let config = error.chain().any(|cause| {
        cause.is::<ConfigError>()
            || cause
                .downcast_ref::<AssembleError>()
                .is_some_and(AssembleError::is_config)
    });
    ExitCode::from(if config { CONFIG } else { 1 })
}
