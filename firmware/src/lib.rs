//! latentcam edge program: camera → preprocess → encoder → latent codec →
//! link. This crate is both the `latentcam-edge` binary and a library, so
//! tests and benchmarks can use its parts.
#![deny(missing_docs)]

/// Firmware version reported in `Hello`.
pub const FIRMWARE_VERSION: &str = env!("CARGO_PKG_VERSION");

pub mod assemble;
pub mod backoff;
pub mod batch;
pub mod config;
pub mod doctor;
pub mod encoder;
pub mod led;
pub mod link;
pub mod manifest;
pub mod notify;
pub mod picture;
pub mod pipeline;
pub mod preprocess;
pub mod source;
pub mod spool;
pub mod stats;
