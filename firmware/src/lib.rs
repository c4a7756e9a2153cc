//! The latentcam edge program, `latentcam-edge`: frame source → preprocess →
//! encoder → latent codec → link, with the spool that keeps what the host
//! has not acknowledged. The binary parses arguments and wires this library
//! together ([`assemble`] builds the parts from a configuration); the tests,
//! the demo and the benchmarks use the same parts. Preprocessing, the
//! encoders and the manifest come from `latentcam-model`, shared with the
//! host.
#![deny(missing_docs)]

/// Firmware version reported in `Hello`.
pub const FIRMWARE_VERSION: &str = env!("CARGO_PKG_VERSION");

// The model layer lives in its own crate (shared with the host); its
// modules keep their paths here.
pub use latentcam_model::{encoder, manifest, picture, preprocess};

pub mod assemble;
pub mod backoff;
pub mod batch;
pub mod clock;
pub mod config;
pub mod doctor;
pub mod led;
pub mod link;
pub mod notify;
pub mod pipeline;
pub mod source;
pub mod spool;
pub mod stats;
