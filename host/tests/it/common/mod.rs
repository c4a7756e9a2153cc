//! Helpers shared by the host's integration tests.

pub mod edge;
pub mod fashion;
pub mod http;

use std::io::Read;
use std::path::PathBuf;
use std::process::Command;

/// A command that runs this build's `latentcam-host`, with the default
/// configuration file switched off: /etc/latentcam/host.toml on the
/// machine must not change what a test runs.
pub fn host_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_latentcam-host"));
    command.env("LATENTCAM_HOST_CONFIG", "");
    command
}

/// Held by the tests that load both cores for tens of seconds (the fleet
/// and load tests), so that under `cargo test`, which runs the tests of
/// this binary on several threads, they do not overlap each other. Under
/// cargo-nextest each test is its own process, and `.config/nextest.toml`
/// runs these alone.
#[allow(dead_code)]
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A failed heavy test poisons the lock; the next one may still run.
    HEAVY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Reads an IDX file (gzip) of Fashion-MNIST.
#[allow(dead_code)]
pub fn idx(name: &str) -> (Vec<usize>, Vec<u8>) {
    let path = PathBuf::from("/usr/share/datasets/fashion-mnist").join(name);
    let file = std::fs::File::open(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run scripts/setup.sh (Debian package dataset-fashion-mnist)",
            path.display()
        )
    });
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut bytes)
        .unwrap();
    let dims = bytes[3] as usize;
    let shape: Vec<usize> = (0..dims)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let data = bytes[4 + 4 * dims..].to_vec();
    assert_eq!(data.len(), shape.iter().product::<usize>());
    (shape, data)
}
