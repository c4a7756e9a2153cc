//! The Noise IK handshake, both sides.

use latentcam_wire::{Hello, MAX_HANDSHAKE_LEN, Message, frame};
use snow::HandshakeState;

use crate::{Channel, PublicKey, SecureError, StaticKey};

/// The Noise protocol name of scheme `NoiseIk` (SPEC.md, section 7).
pub const NOISE_PARAMS: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";

const PROLOGUE_LABEL: &[u8] = b"latentcam/1 Noise_IK hello\0";

/// The handshake's prologue: a label and the `Hello` as `kind ‖ body`
/// (re-encoded, so both sides hash the same bytes). Binding the `Hello`
/// means its device id, model and authentication offer cannot be changed
/// by anyone on the path without the handshake failing.
pub fn prologue(hello: &Hello<'_>) -> Vec<u8> {
    let mut p = PROLOGUE_LABEL.to_vec();
    // A Hello that decoded (or that we built) always re-encodes.
    p.extend(frame::encode_inner_to_vec(&Message::Hello(*hello)).unwrap_or_default());
    p
}

fn params() -> snow::params::NoiseParams {
    // A constant this crate's tests parse.
    NOISE_PARAMS.parse().expect("valid Noise parameters")
}

/// The device's side: started with the `Hello`, finished by the host's
/// answer.
pub struct Initiator {
    state: HandshakeState,
}

impl std::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Initiator")
    }
}

impl Initiator {
    /// Starts a handshake from `device` to the host whose static key is
    /// `host`, for this `Hello` (which must offer scheme `NoiseIk`).
    /// Returns the first handshake message, sent in a `Handshake` right
    /// after the `Hello`. A fresh ephemeral key is drawn every time.
    pub fn start(
        device: &StaticKey,
        host: &PublicKey,
        hello: &Hello<'_>,
    ) -> Result<(Self, Vec<u8>), SecureError> {
        let prologue = prologue(hello);
        let mut state = snow::Builder::new(params())
            .local_private_key(device.private_bytes())
            .and_then(|b| b.remote_public_key(host.as_bytes()))
            .and_then(|b| b.prologue(&prologue))
            .and_then(|b| b.build_initiator())
            .map_err(SecureError::Handshake)?;
        let mut message = vec![0u8; MAX_HANDSHAKE_LEN];
        let n = state
            .write_message(&[], &mut message)
            .map_err(SecureError::Handshake)?;
        message.truncate(n);
        Ok((Self { state }, message))
    }

    /// Reads the host's handshake message. Success proves the host holds
    /// the private key of the expected static key.
    pub fn finish(mut self, response: &[u8]) -> Result<Channel, SecureError> {
        let mut payload = vec![0u8; MAX_HANDSHAKE_LEN];
        self.state
            .read_message(response, &mut payload)
            .map_err(SecureError::Handshake)?;
        let transport = self
            .state
            .into_stateless_transport_mode()
            .map_err(SecureError::Handshake)?;
        Ok(Channel::new(transport))
    }
}

/// The host's side after the device's first message: the device's static
/// key is known (and proven); the host decides whether it is the key
/// registered for the `Hello`'s device id, then [`accept`](Self::accept)s.
pub struct Pending {
    state: HandshakeState,
    device: PublicKey,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("device", &self.device)
            .finish()
    }
}

/// Reads the device's first handshake message for this `Hello` with the
/// host's static key.
pub fn respond(
    host: &StaticKey,
    hello: &Hello<'_>,
    message: &[u8],
) -> Result<Pending, SecureError> {
    let prologue = prologue(hello);
    let mut state = snow::Builder::new(params())
        .local_private_key(host.private_bytes())
        .and_then(|b| b.prologue(&prologue))
        .and_then(|b| b.build_responder())
        .map_err(SecureError::Handshake)?;
    let mut payload = vec![0u8; MAX_HANDSHAKE_LEN];
    state
        .read_message(message, &mut payload)
        .map_err(SecureError::Handshake)?;
    let device = state
        .get_remote_static()
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .map(PublicKey::from_bytes)
        .ok_or(SecureError::Handshake(snow::Error::Input))?;
    Ok(Pending { state, device })
}

impl Pending {
    /// The static key the device proved it holds.
    pub fn device_key(&self) -> &PublicKey {
        &self.device
    }

    /// Writes the host's handshake message (sent in a `Handshake`) and
    /// opens the channel.
    pub fn accept(mut self) -> Result<(Vec<u8>, Channel), SecureError> {
        let mut message = vec![0u8; MAX_HANDSHAKE_LEN];
        let n = self
            .state
            .write_message(&[], &mut message)
            .map_err(SecureError::Handshake)?;
        message.truncate(n);
        let transport = self
            .state
            .into_stateless_transport_mode()
            .map_err(SecureError::Handshake)?;
        Ok((message, Channel::new(transport)))
    }
}
