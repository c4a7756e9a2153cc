//! What latentcam's integration tests share: paths into the repository,
//! scratch directories, the model's reference photos and latents, `Hello`
//! frames, and real stand-ins for hardware and services (a socat pty pair
//! for a serial line, a mosquitto broker, qemu for cross-built binaries).
//! Every helper panics with the fix when something it needs is missing.

pub mod broker;
pub mod hello;
pub mod pty;
pub mod reference;

use std::path::{Path, PathBuf};
use std::process::Command;

pub use broker::Broker;
pub use pty::PtyPair;
pub use reference::{Reference, ReferencePhoto, VTEST, vtest};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit/ is inside the repository")
        .to_path_buf()
}

/// The shipped models directory (`models/`).
pub fn models() -> PathBuf {
    repo().join("models")
}

/// A fresh, empty scratch directory for one test of one suite, unique to
/// this process.
pub fn scratch(suite: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("latentcam-{suite}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("creating scratch directory {}: {e}", dir.display()));
    dir
}

/// A command that runs `binary`, through `$LATENTCAM_TEST_RUNNER` when it
/// is set: the test scripts set it to `qemu-aarch64-static -L
/// /usr/aarch64-linux-gnu` (or the armv7 equivalent) for a cross build's
/// tests, because without binfmt_misc the kernel cannot start a foreign
/// binary that a test spawns.
pub fn program(binary: impl AsRef<std::ffi::OsStr>) -> Command {
    match std::env::var("LATENTCAM_TEST_RUNNER") {
        Ok(runner) if !runner.trim().is_empty() => {
            let mut words = runner.split_whitespace();
            let mut cmd = Command::new(words.next().expect("non-empty"));
            cmd.args(words).arg(binary);
            cmd
        }
        _ => Command::new(binary),
    }
}
