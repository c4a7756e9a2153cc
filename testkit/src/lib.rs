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

/// A fresh, empty scratch directory for one test of one suite, removed
/// with everything in it when the guard drops (also when the test fails,
/// so keep the guard for as long as the test uses the directory).
pub fn scratch(suite: &str, name: &str) -> Scratch {
    let dir = tempfile::Builder::new()
        .prefix(&format!("latentcam-{suite}-{name}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("creating a scratch directory for {suite}/{name}: {e}"));
    Scratch(dir)
}

/// A scratch directory from [`scratch`]; reads as its [`Path`].
#[derive(Debug)]
pub struct Scratch(tempfile::TempDir);

impl std::ops::Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<std::ffi::OsStr> for Scratch {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.path().as_os_str()
    }
}

/// A command that runs `binary`, through `$LATENTCAM_TEST_RUNNER` when it
/// is set: the test scripts set it to `qemu-aarch64-static -L
/// /usr/aarch64-linux-gnu` (or the armv7 equivalent) for a cross build's
/// tests, because without binfmt_misc the kernel cannot start a foreign
/// binary that a test spawns. The edge's and the host's default
/// configuration files are switched off (`LATENTCAM_EDGE_CONFIG` and
/// `LATENTCAM_HOST_CONFIG` empty); a test that wants one sets the variable
/// again.
pub fn program(binary: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = runner(binary);
    // The edge reads /etc/latentcam/edge.toml when no --config is given,
    // the host /etc/latentcam/host.toml: a machine's own configuration
    // must not change what a test runs.
    cmd.env("LATENTCAM_EDGE_CONFIG", "");
    cmd.env("LATENTCAM_HOST_CONFIG", "");
    cmd
}

fn runner(binary: impl AsRef<std::ffi::OsStr>) -> Command {
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
