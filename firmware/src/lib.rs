//! latentcam edge program: camera → preprocess → encoder → latent codec →
//! link. This crate is both the `latentcam-edge` binary and a library, so
//! tests and benchmarks can use its parts.
#![deny(missing_docs)]

/// Firmware version reported in `Hello`.
pub const FIRMWARE_VERSION: &str = env!("CARGO_PKG_VERSION");

// The model layer lives in its own crate (shared with the host); its
// modules keep their paths here.
pub use latentcam_model::{encoder, manifest, picture, preprocess};

pub mod assemble;
pub mod backoff;
pub mod batch;
pub mod config;
pub mod doctor;
pub mod led;
pub mod link;
pub mod notify;
pub mod pipeline;
pub mod source;
pub mod spool;
pub mod stats;
