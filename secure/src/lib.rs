//! Device authentication and encryption for latentcam (SPEC.md, section 7).
//!
//! A session starts with the Noise protocol framework's IK handshake,
//! `Noise_IK_25519_ChaChaPoly_BLAKE2s`, through [`snow`]: the device
//! (initiator) knows the host's static public key in advance and proves
//! its own static key in the first message; the host looks the device's key
//! up under the device id of the `Hello` and answers with the second
//! message, which only the holder of the host's private key can write. The
//! `Hello` itself is the handshake's prologue, so neither its device id
//! nor its model can be swapped in flight, and a `Hello` offering no
//! authentication is refused by a host that requires it (no downgrade).
//! The first message carries a freshness stamp the host checks, so a
//! recorded handshake cannot be replayed.
//!
//! One-way links (UDP), where the host never answers, use the one-message
//! pattern `Noise_K_25519_ChaChaPoly_BLAKE2s` instead: the device proves
//! its registered key to the host whose key it knows, then seals.
//!
//! After the handshake every message travels [`latentcam_wire::Sealed`]:
//! ChaCha20-Poly1305 under the session's keys with an explicit 64-bit
//! counter as the nonce, checked against a [`ReplayWindow`]. Nothing here
//! is home-made cryptography: the handshake, key derivation and AEAD are
//! snow's implementation of the Noise specification (revision 34).
//!
//! | piece | what it does |
//! |---|---|
//! | [`StaticKey`], [`PublicKey`] | X25519 key pairs and their files |
//! | [`DeviceKeys`] | the host's list of device ids and their public keys |
//! | [`Initiator`] | the device's side of the handshake |
//! | [`respond`], [`Pending`] | the host's side |
//! | [`initiate_one_way`], [`respond_one_way`] | scheme `NoiseK` for one-way links (UDP) |
//! | [`Stamps`] | freshness stamps, so a recorded handshake cannot be replayed |
//! | [`Channel`] | sealing and opening messages after the handshake |
//! | [`ReplayWindow`] | which counters were already accepted |
//! | [`tls`] | TLS client identities for `mqtts://` brokers (rustls), edge and host alike |

mod channel;
mod handshake;
mod keys;
pub mod tls;
mod window;

pub use channel::Channel;
pub use handshake::{
    Initiator, NOISE_K_PARAMS, NOISE_PARAMS, Pending, STAMP_LEN, Stamp, Stamps, initiate_one_way,
    prologue, respond, respond_one_way,
};
pub use keys::{DeviceKeys, KeyError, PublicKey, StaticKey};
pub use window::ReplayWindow;

/// Why a handshake or a sealed message was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecureError {
    /// The Noise handshake failed: a message not made with the expected
    /// keys, a tampered or truncated message, or one out of order.
    #[error("handshake failed: {0}")]
    Handshake(snow::Error),
    /// A sealed message did not authenticate under the session's keys.
    #[error("sealed message {counter} does not authenticate (tampered, or another session's)")]
    Decrypt {
        /// Its counter.
        counter: u64,
    },
    /// A sealed message whose counter was already accepted, or is too old
    /// to tell.
    #[error("sealed message {counter} is a replay (or older than the replay window)")]
    Replay {
        /// Its counter.
        counter: u64,
    },
    /// The first handshake message's payload is not a freshness stamp.
    #[error("the handshake carries no freshness stamp ({len}-byte payload)")]
    Stamp {
        /// The payload's length.
        len: usize,
    },
    /// The plaintext of a sealed message is not a message that may travel
    /// sealed.
    #[error("sealed message holds no valid message: {0}")]
    Inner(latentcam_wire::FrameError),
    /// This side has sealed 2⁶⁴ − 1 messages in one session.
    #[error("the session's counter is exhausted; a new handshake is needed")]
    Exhausted,
}
