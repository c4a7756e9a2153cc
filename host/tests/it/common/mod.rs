//! Helpers shared by the host's integration tests.

pub mod edge;
pub mod fashion;
pub mod http;

use std::io::Read;
use std::path::{Path, PathBuf};

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

/// The repository root.
#[allow(dead_code)]
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A fresh, empty scratch directory for one test (`suite`, `name`).
#[allow(dead_code)]
pub fn scratch(suite: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("latentcam-{suite}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
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

/// A `Hello` frame of a device `device_id` running `model_id` (an encoder
/// file with SHA-256 `sha`, 1280 dimensions, U8Affine) in `protocol`.
#[allow(dead_code)]
pub fn hello_frame(device_id: &str, model_id: &str, sha: [u8; 32], protocol: u16) -> Vec<u8> {
    use latentcam_wire::{AuthOffer, AuthScheme, Codec, Hello, Message, ModelIdentity, frame};
    frame::encode_to_vec(&Message::Hello(Hello {
        protocol,
        device_id,
        firmware_version: "0",
        model: ModelIdentity {
            model_id,
            encoder_sha256: sha,
            latent_dim: 1280,
            preprocessing: "x",
        },
        backend: "tract",
        codec: Codec::U8Affine,
        auth: AuthOffer {
            scheme: AuthScheme::None,
            key_id: "",
            device_nonce: [0; 16],
        },
    }))
    .unwrap()
}

/// The encoder SHA-256 a real device of the shipped model announces.
#[allow(dead_code)]
pub fn encoder_sha() -> [u8; 32] {
    let manifest = latentcam_firmware::manifest::Manifest::load(repo().join("models")).unwrap();
    let file = manifest.files.iter().find(|f| f.role == "encoder").unwrap();
    hex::decode(&file.sha256).unwrap().try_into().unwrap()
}
