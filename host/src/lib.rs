//! latentcam host: receives latents from edge devices and runs task heads on
//! them. This crate is both the `latentcam-host` binary and a library, so
//! tests and benchmarks can use its parts.
#![deny(missing_docs)]

pub mod auth;
pub mod classify;
pub mod clock;
pub mod compare;
pub mod encode;
pub mod heads;
pub mod ingest;
pub mod recorder;
pub mod recording;
pub mod replay;
pub mod session;
