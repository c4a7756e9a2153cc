//! The latentcam wire protocol.
//!
//! Every byte that travels between a latentcam edge device and a host — over a
//! serial line, TCP, UDP, MQTT, or into a recording on disk — is a *frame*
//! produced by this crate:
//!
//! ```text
//! 0x00 ‖ COBS( version ‖ kind ‖ postcard(body) ‖ CRC-32C LE ) ‖ 0x00
//! ```
//!
//! * [`message`] defines the messages ([`Message`]) and their bounds.
//! * [`frame`] turns a message into a frame ([`frame::encode`]) and a byte
//!   stream back into messages ([`frame::FrameDecoder`]), whatever the chunking,
//!   skipping garbage and resynchronising after corruption.
//! * [`codec`] packs latent vectors (`F32`, `F16`, `U8Affine`) into payloads.
//! * [`mqtt`] maps the protocol onto MQTT topics and hashes devices to
//!   partitions and partitions to host workers.
//!
//! The crate is `no_std`. Without default features it is also
//! allocation-free (`scripts/test.sh` checks that build for a
//! microcontroller target); `alloc` adds the helpers that return `Vec`s and
//! `String`s, and the default `std` feature only implies `alloc`. The
//! byte-level format is specified in `wire/SPEC.md`.
#![no_std]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod cobs;
pub mod codec;
pub mod frame;
pub mod message;
pub mod mqtt;

pub use codec::{Codec, CodecError};
pub use frame::{FeedResult, FrameDecoder, FrameError};
pub use message::*;

/// The protocol version carried in the first byte of every frame and in
/// [`Hello::protocol`]. A peer refuses frames of any other version.
pub const PROTOCOL_VERSION: u8 = 1;
