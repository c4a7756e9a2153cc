//! The Noise handshakes, both sides: IK for links the host answers on,
//! K for one-way links.
//!
//! The device's first message carries a [`Stamp`] as its (encrypted and
//! authenticated) payload: the host accepts a device's handshake only if
//! its stamp is newer than the last one it accepted from that device, so a
//! recorded handshake cannot be replayed (WireGuard's rule, with its
//! TAI64N timestamp).

use latentcam_wire::{Hello, MAX_HANDSHAKE_LEN, Message, frame};
use snow::HandshakeState;

use crate::{Channel, PublicKey, SecureError, StaticKey};

/// The Noise protocol name of scheme `NoiseIk` (SPEC.md, section 7).
pub const NOISE_PARAMS: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";

/// The Noise protocol name of scheme `NoiseK` (SPEC.md, section 7).
pub const NOISE_K_PARAMS: &str = "Noise_K_25519_ChaChaPoly_BLAKE2s";

const PROLOGUE_LABEL: &[u8] = b"latentcam/1 Noise_IK hello\0";
const PROLOGUE_K_LABEL: &[u8] = b"latentcam/1 Noise_K hello\0";

/// Length of a [`Stamp`] on the wire.
pub const STAMP_LEN: usize = 8;

/// The freshness stamp of a handshake: nanoseconds since the Unix epoch on
/// the device's clock, sent big-endian as the first message's payload.
/// A device's stamps must increase from handshake to handshake
/// ([`Stamps`]); the host refuses one that is not newer than the last it
/// accepted from the same device.
pub type Stamp = u64;

/// Stamps for one device's handshakes: the wall clock in nanoseconds, but
/// always at least one more than the previous stamp, so two handshakes in
/// the same clock tick (or after a small step back of the clock within one
/// process) still increase.
#[derive(Debug, Default, Clone)]
pub struct Stamps {
    last: Stamp,
}

impl Stamps {
    /// No stamp issued yet.
    pub const fn new() -> Self {
        Self { last: 0 }
    }

    /// The next stamp at wall-clock time `now_ns`.
    pub fn at(&mut self, now_ns: u64) -> Stamp {
        self.last = now_ns.max(self.last.saturating_add(1));
        self.last
    }

    /// The next stamp, now.
    pub fn now(&mut self) -> Stamp {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        self.at(now)
    }
}

fn read_stamp(payload: &[u8]) -> Result<Stamp, SecureError> {
    <[u8; STAMP_LEN]>::try_from(payload)
        .map(u64::from_be_bytes)
        .map_err(|_| SecureError::Stamp { len: payload.len() })
}

fn labelled(label: &[u8], hello: &Hello<'_>) -> Vec<u8> {
    let mut p = label.to_vec();
    // A Hello that decoded (or that we built) always re-encodes.
    p.extend(frame::encode_inner_to_vec(&Message::Hello(*hello)).unwrap_or_default());
    p
}

/// The IK handshake's prologue: a label and the `Hello` as `kind ‖ body`
/// (re-encoded, so both sides hash the same bytes). Binding the `Hello`
/// means its device id, model and authentication offer cannot be changed
/// by anyone on the path without the handshake failing.
pub fn prologue(hello: &Hello<'_>) -> Vec<u8> {
    labelled(PROLOGUE_LABEL, hello)
}

fn params(name: &str) -> snow::params::NoiseParams {
    // Constants this crate's tests parse.
    name.parse().expect("valid Noise parameters")
}

/// Which side of a handshake to build.
#[derive(Clone, Copy)]
enum Side {
    Initiator,
    Responder,
}

/// A handshake state for protocol `name` with this side's static key, the
/// peer's static key if known in advance, and the prologue.
fn build(
    name: &str,
    side: Side,
    local: &StaticKey,
    remote: Option<&PublicKey>,
    prologue: &[u8],
) -> Result<HandshakeState, SecureError> {
    let mut builder = snow::Builder::new(params(name)).local_private_key(local.private_bytes());
    if let Some(remote) = remote {
        builder = builder.and_then(|b| b.remote_public_key(remote.as_bytes()));
    }
    builder
        .and_then(|b| b.prologue(prologue))
        .and_then(|b| match side {
            Side::Initiator => b.build_initiator(),
            Side::Responder => b.build_responder(),
        })
        .map_err(SecureError::Handshake)
}

/// Writes the first handshake message, carrying `stamp`.
fn write_first(state: &mut HandshakeState, stamp: Stamp) -> Result<Vec<u8>, SecureError> {
    let mut message = vec![0u8; MAX_HANDSHAKE_LEN];
    let n = state
        .write_message(&stamp.to_be_bytes(), &mut message)
        .map_err(SecureError::Handshake)?;
    message.truncate(n);
    Ok(message)
}

/// Reads the first handshake message and returns its stamp.
fn read_first(state: &mut HandshakeState, message: &[u8]) -> Result<Stamp, SecureError> {
    let mut payload = vec![0u8; MAX_HANDSHAKE_LEN];
    let n = state
        .read_message(message, &mut payload)
        .map_err(SecureError::Handshake)?;
    read_stamp(&payload[..n])
}

/// The channel of a finished handshake.
fn channel(state: HandshakeState) -> Result<Channel, SecureError> {
    state
        .into_stateless_transport_mode()
        .map(Channel::new)
        .map_err(SecureError::Handshake)
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
    /// `host`, for this `Hello` (which must offer scheme `NoiseIk`), with
    /// freshness stamp `stamp`. Returns the first handshake message, sent
    /// in a `Handshake` right after the `Hello`. A fresh ephemeral key is
    /// drawn every time.
    pub fn start(
        device: &StaticKey,
        host: &PublicKey,
        hello: &Hello<'_>,
        stamp: Stamp,
    ) -> Result<(Self, Vec<u8>), SecureError> {
        let mut state = build(
            NOISE_PARAMS,
            Side::Initiator,
            device,
            Some(host),
            &prologue(hello),
        )?;
        let message = write_first(&mut state, stamp)?;
        Ok((Self { state }, message))
    }

    /// Reads the host's handshake message. Success proves the host holds
    /// the private key of the expected static key.
    pub fn finish(mut self, response: &[u8]) -> Result<Channel, SecureError> {
        let mut payload = vec![0u8; MAX_HANDSHAKE_LEN];
        self.state
            .read_message(response, &mut payload)
            .map_err(SecureError::Handshake)?;
        channel(self.state)
    }
}

/// The host's side after the device's first message: the device's static
/// key is known (and proven); the host decides whether it is the key
/// registered for the `Hello`'s device id, then [`accept`](Self::accept)s.
pub struct Pending {
    state: HandshakeState,
    device: PublicKey,
    stamp: Stamp,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("device", &self.device)
            .field("stamp", &self.stamp)
            .finish()
    }
}

/// Reads the device's first handshake message for this `Hello` with the
/// host's static key. A message whose payload is not a [`Stamp`] is
/// refused.
pub fn respond(
    host: &StaticKey,
    hello: &Hello<'_>,
    message: &[u8],
) -> Result<Pending, SecureError> {
    let mut state = build(NOISE_PARAMS, Side::Responder, host, None, &prologue(hello))?;
    let stamp = read_first(&mut state, message)?;
    let device = state
        .get_remote_static()
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .map(PublicKey::from_bytes)
        .ok_or(SecureError::Handshake(snow::Error::Input))?;
    Ok(Pending {
        state,
        device,
        stamp,
    })
}

impl Pending {
    /// The static key the device proved it holds.
    pub fn device_key(&self) -> &PublicKey {
        &self.device
    }

    /// The handshake's freshness stamp (proven to come from the device).
    pub fn stamp(&self) -> Stamp {
        self.stamp
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
        Ok((message, channel(self.state)?))
    }
}

/// The device's side of scheme `NoiseK` on a one-way link: from `device` to
/// the host whose static key is `host`, for this `Hello` (which must offer
/// `NoiseK`), with freshness stamp `stamp`. Returns the channel to seal
/// with at once and the only handshake message, sent in a `Handshake`
/// right after the `Hello`. The channel only seals: nothing comes back.
pub fn initiate_one_way(
    device: &StaticKey,
    host: &PublicKey,
    hello: &Hello<'_>,
    stamp: Stamp,
) -> Result<(Channel, Vec<u8>), SecureError> {
    let prologue = labelled(PROLOGUE_K_LABEL, hello);
    let mut state = build(
        NOISE_K_PARAMS,
        Side::Initiator,
        device,
        Some(host),
        &prologue,
    )?;
    let message = write_first(&mut state, stamp)?;
    Ok((channel(state)?, message))
}

/// The host's side of scheme `NoiseK`: reads the device's handshake message
/// for this `Hello`, which only the holder of `device`'s private key (the
/// key registered for the `Hello`'s device id) can have written to this
/// host. Returns the channel to open the device's sealed messages with,
/// and the handshake's stamp (the caller checks it is fresh).
pub fn respond_one_way(
    host: &StaticKey,
    device: &PublicKey,
    hello: &Hello<'_>,
    message: &[u8],
) -> Result<(Channel, Stamp), SecureError> {
    let prologue = labelled(PROLOGUE_K_LABEL, hello);
    let mut state = build(
        NOISE_K_PARAMS,
        Side::Responder,
        host,
        Some(device),
        &prologue,
    )?;
    let stamp = read_first(&mut state, message)?;
    Ok((channel(state)?, stamp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_increase_even_when_the_clock_does_not() {
        let mut s = Stamps::new();
        assert_eq!(s.at(100), 100);
        assert_eq!(s.at(100), 101);
        assert_eq!(s.at(50), 102, "a clock stepping back still increases");
        assert_eq!(s.at(1_000), 1_000);
        assert!(s.now() > 1_000);
    }

    #[test]
    fn a_payload_that_is_not_a_stamp_is_refused() {
        assert!(matches!(
            read_stamp(&[1; 7]),
            Err(SecureError::Stamp { len: 7 })
        ));
        assert!(matches!(
            read_stamp(&[]),
            Err(SecureError::Stamp { len: 0 })
        ));
        assert_eq!(read_stamp(&[0, 0, 0, 0, 0, 0, 1, 2]).unwrap(), 258);
    }

    #[test]
    fn both_parameter_sets_parse() {
        params(NOISE_PARAMS);
        params(NOISE_K_PARAMS);
    }
}
