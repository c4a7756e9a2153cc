//! The model layer latentcam's edge and host share: the model manifest and
//! its SHA-256 checks, picture decoding, the manifest's preprocessing, and
//! the [`encoder::Encoder`] trait with its backends (tract always; TFLite
//! and LiteRT behind the cargo features of the same names).
//!
//! The edge program runs it on camera frames; the host runs it on
//! enrolment photos and search-by-photo queries, so their latents compare
//! with the devices'. Nothing here knows about cameras, links or the wire.
#![deny(missing_docs)]

pub mod encoder;
pub mod manifest;
pub mod picture;
pub mod preprocess;
