//! Protocol messages.
//!
//! Messages borrow their variable-length fields (strings, payloads) from the
//! buffer they were decoded from, so decoding never allocates. Every
//! variable-length field has a maximum length, checked by [`Message::validate`]
//! when encoding and when decoding: a hostile peer cannot make us accept a
//! 1 MB device id.
//!
//! Enumerated fields ([`Codec`], [`AuthScheme`], [`WelcomeStatus`],
//! [`ByeReason`]) travel as one raw byte and decode to an `Unknown(u8)` variant
//! when the value is newer than this code, so the receiver can answer with a
//! precise refusal instead of failing to decode.

use serde::{Deserialize, Serialize};

use crate::codec::Codec;
use crate::frame::FrameError;

/// Maximum length in bytes of identifiers: device id, model id, host id, key id.
pub const MAX_ID_LEN: usize = 64;
/// Maximum length in bytes of short labels: firmware version, preprocessing id, backend.
pub const MAX_LABEL_LEN: usize = 32;
/// Maximum length in bytes of human-readable reasons in [`Welcome`] and [`Bye`].
pub const MAX_TEXT_LEN: usize = 128;
/// Maximum length in bytes of a latent payload ([`Latent::payload`]): 4096
/// `f32` values.
pub const MAX_PAYLOAD_LEN: usize = 16 * 1024;
/// Maximum length in bytes of a MAC or an authentication proof.
pub const MAX_MAC_LEN: usize = 32;
/// Maximum length in bytes of a Noise handshake message ([`Handshake`]).
pub const MAX_HANDSHAKE_LEN: usize = 256;
/// Maximum length in bytes of a [`Sealed`] ciphertext: the largest message
/// (a [`Latent`] with a full payload) with its kind byte and the 16-byte
/// AEAD tag, so every message can travel sealed.
pub const MAX_SEALED_LEN: usize = MAX_PAYLOAD_LEN + 100;
/// Length in bytes of the nonces of the challenge/response handshake.
pub const NONCE_LEN: usize = 16;
/// Largest sequence number a device may use (2^53 − 1). Receivers refuse a
/// [`Latent`] numbered above it and an [`Ack`] or `Welcome.acked` claiming
/// it; a device at 1 000 latents per second needs 285 000 years to get
/// there. It is also the largest integer a JSON reader such as JavaScript
/// holds exactly, and results carry `seq` as JSON.
pub const MAX_SEQ: u64 = (1 << 53) - 1;

/// True if `id` may name a device: 1 to [`MAX_ID_LEN`] bytes, no control
/// characters (a device id ends up in log lines, metric labels and file
/// names, where a newline or an escape sequence would forge or garble them).
pub fn valid_device_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && !id.chars().any(char::is_control)
}

/// `text` with control characters escaped (`\n`, `\u{1b}`…), for a log
/// line: a peer's reason or id must not start a forged line of its own or
/// send escape sequences to an operator's terminal.
#[cfg(feature = "alloc")]
pub fn printable(text: &str) -> alloc::borrow::Cow<'_, str> {
    use alloc::string::String;
    if !text.chars().any(char::is_control) {
        return alloc::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    alloc::borrow::Cow::Owned(out)
}

/// The longest prefix of `text` that fits in `max` bytes, cut at a character
/// boundary: what a sender does with a reason longer than
/// [`MAX_TEXT_LEN`] rather than failing to send it.
pub fn fit_text(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// One-byte message kind, the second byte of every frame. Append-only: a kind
/// number is never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u8)]
pub enum MessageKind {
    /// [`Hello`], device → host, first message of a session.
    Hello = 1,
    /// [`Welcome`], host → device, the answer to `Hello`.
    Welcome = 2,
    /// [`Auth`], device → host, the device's proof of the pre-shared key.
    Auth = 3,
    /// [`Latent`], device → host, one encoded frame.
    Latent = 4,
    /// [`Heartbeat`], device → host, counters and health.
    Heartbeat = 5,
    /// [`Ack`], host → device, cumulative acknowledgement.
    Ack = 6,
    /// [`Bye`], either way, orderly end of a session.
    Bye = 7,
    /// [`Handshake`], either way, one Noise handshake message.
    Handshake = 8,
    /// [`Sealed`], either way, one message encrypted and authenticated with
    /// the session's keys.
    Sealed = 9,
}

impl MessageKind {
    /// The kind for a raw byte, or `None` for a kind this code does not know.
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => Self::Hello,
            2 => Self::Welcome,
            3 => Self::Auth,
            4 => Self::Latent,
            5 => Self::Heartbeat,
            6 => Self::Ack,
            7 => Self::Bye,
            8 => Self::Handshake,
            9 => Self::Sealed,
            _ => return None,
        })
    }
}

/// Declares a one-byte enumeration with an `Unknown(u8)` fallback, serialised
/// as its raw byte so that unknown values survive decoding.
macro_rules! byte_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A value this version of the protocol crate does not know.
            Unknown(u8),
        }

        impl $name {
            /// The raw byte of this value.
            pub const fn to_u8(self) -> u8 {
                match self {
                    $( Self::$variant => $value, )*
                    Self::Unknown(v) => v,
                }
            }

            /// The value for a raw byte; unknown bytes map to `Unknown`.
            pub const fn from_u8(value: u8) -> Self {
                match value {
                    $( $value => Self::$variant, )*
                    v => Self::Unknown(v),
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                serde::Serializer::serialize_u8(s, self.to_u8())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                <u8 as serde::Deserialize>::deserialize(d).map(Self::from_u8)
            }
        }
    };
}
pub(crate) use byte_enum;

byte_enum! {
    /// Authentication scheme offered in [`Hello`] and chosen in [`Welcome`].
    pub enum AuthScheme {
        /// No authentication.
        None = 0,
        /// Pre-shared-key challenge/response with HMAC-SHA-256 and per-frame
        /// MACs. Reserved and never implemented: superseded by `NoiseIk`
        /// (see SPEC.md, "Authentication and encryption").
        PskHmacSha256 = 1,
        /// `Noise_IK_25519_ChaChaPoly_BLAKE2s`: mutual authentication with
        /// per-device static keys, then every message [`Sealed`].
        NoiseIk = 2,
        /// `Noise_K_25519_ChaChaPoly_BLAKE2s`: one-way links (UDP). The
        /// device proves its registered static key to the host whose key
        /// it knows in one message, then sends every message [`Sealed`];
        /// the host never answers.
        NoiseK = 3,
    }
}

byte_enum! {
    /// The host's verdict on a [`Hello`].
    pub enum WelcomeStatus {
        /// The session is accepted; the device may stream.
        Accepted = 0,
        /// The host does not speak the device's protocol version.
        UnsupportedVersion = 1,
        /// The host does not know the model id, or its SHA-256 differs.
        UnknownModel = 2,
        /// The host cannot decode the latent codec.
        UnsupportedCodec = 3,
        /// The host requires authentication and the device offered none.
        AuthRequired = 4,
        /// The authentication proof was wrong or the key id unknown.
        AuthFailed = 5,
        /// The host is at capacity or the device exceeds its rate limit.
        Busy = 6,
        /// The latent dimension disagrees with the model.
        BadLatentDim = 7,
        /// The device id is empty, too long or holds control characters.
        BadDeviceId = 8,
    }
}

byte_enum! {
    /// Why a session ends.
    pub enum ByeReason {
        /// Orderly shutdown (SIGTERM, end of a replay).
        Shutdown = 0,
        /// The peer violated the protocol (bad frames, wrong order).
        ProtocolViolation = 1,
        /// A local error unrelated to the peer.
        LocalError = 2,
        /// The session was refused (see the preceding [`Welcome`]).
        Refused = 3,
        /// The peer was idle too long.
        Timeout = 4,
    }
}

/// What identifies the encoder that produced the latents of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelIdentity<'a> {
    /// Stable model id from `models/manifest.toml`, e.g.
    /// `efficientnet-lite0-imagenet-v1`; at most [`MAX_ID_LEN`] bytes.
    pub model_id: &'a str,
    /// SHA-256 of the encoder file the device loaded.
    pub encoder_sha256: [u8; 32],
    /// Number of values in each latent vector.
    pub latent_dim: u32,
    /// Preprocessing id from the manifest; at most [`MAX_LABEL_LEN`] bytes.
    pub preprocessing: &'a str,
}

/// The device's half of the authentication handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthOffer<'a> {
    /// Scheme the device proposes; [`AuthScheme::None`] when it has no key.
    pub scheme: AuthScheme,
    /// Which pre-shared key the device holds; at most [`MAX_ID_LEN`] bytes.
    pub key_id: &'a str,
    /// Fresh random nonce of the device.
    pub device_nonce: [u8; NONCE_LEN],
}

/// First message of every session, device → host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello<'a> {
    /// Protocol version the device speaks ([`crate::PROTOCOL_VERSION`]).
    pub protocol: u16,
    /// Unique device id; at most [`MAX_ID_LEN`] bytes.
    pub device_id: &'a str,
    /// Firmware version; at most [`MAX_LABEL_LEN`] bytes.
    pub firmware_version: &'a str,
    /// The encoder in use.
    pub model: ModelIdentity<'a>,
    /// Inference backend (`tract`, `tflite`); at most [`MAX_LABEL_LEN`] bytes.
    pub backend: &'a str,
    /// Codec of every [`Latent`] payload in this session.
    pub codec: Codec,
    /// Authentication offer.
    pub auth: AuthOffer<'a>,
}

/// The host's half of the authentication handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthChallenge<'a> {
    /// Scheme the host requires; [`AuthScheme::None`] when it requires none.
    pub scheme: AuthScheme,
    /// Fresh random nonce of the host.
    pub host_nonce: [u8; NONCE_LEN],
    /// The host's proof of the key (empty without authentication); at most
    /// [`MAX_MAC_LEN`] bytes.
    pub host_proof: &'a [u8],
}

/// The host's answer to [`Hello`], host → device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome<'a> {
    /// Protocol version the host speaks.
    pub protocol: u16,
    /// Accepted, or why not.
    pub status: WelcomeStatus,
    /// Human-readable detail the device logs; at most [`MAX_TEXT_LEN`] bytes.
    pub reason: &'a str,
    /// Host id; at most [`MAX_ID_LEN`] bytes.
    pub host_id: &'a str,
    /// Highest sequence number the host already holds for this device, so the
    /// device's spool can skip what survived a reconnect.
    pub acked: Option<u64>,
    /// Authentication challenge.
    pub auth: AuthChallenge<'a>,
}

/// The device's proof of the pre-shared key, device → host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auth<'a> {
    /// HMAC proof; at most [`MAX_MAC_LEN`] bytes.
    pub device_proof: &'a [u8],
}

/// One encoded camera frame, device → host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latent<'a> {
    /// Sequence number, monotonic per device across reconnects.
    pub seq: u64,
    /// Capture time in microseconds on the device clock.
    pub capture_us: u64,
    /// Width in pixels of the source frame.
    pub frame_width: u32,
    /// Height in pixels of the source frame.
    pub frame_height: u32,
    /// How `payload` encodes the latent vector.
    pub codec: Codec,
    /// The encoded latent; at most [`MAX_PAYLOAD_LEN`] bytes.
    pub payload: &'a [u8],
    /// Per-frame MAC (empty without authentication); at most [`MAX_MAC_LEN`] bytes.
    pub mac: &'a [u8],
    /// Wall-clock capture time, appended after `mac` by revision 2 of
    /// version 1 (SPEC.md, section 3). `None` when the device did not send
    /// it: a device of revision 1, or one whose clock was never set.
    #[serde(skip)]
    pub wall: Option<WallTime>,
}

/// When a frame was captured, on the device's real-time clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WallTime {
    /// Microseconds since 1970-01-01T00:00:00Z (Unix time).
    pub unix_us: u64,
    /// Whether the device's kernel held its clock synchronised (NTP, PTP,
    /// GPS) at capture. An unsynchronised clock may be far off: a
    /// Raspberry Pi has no battery clock and starts from the time it last
    /// saved.
    pub synced: bool,
}

/// One Noise handshake message, either way (SPEC.md, section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handshake<'a> {
    /// The handshake message; at most [`MAX_HANDSHAKE_LEN`] bytes.
    pub payload: &'a [u8],
}

/// One message encrypted and authenticated with the session's transport
/// keys, either way (SPEC.md, section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed<'a> {
    /// The AEAD nonce: counts the sender's sealed messages of this session
    /// from 0; a receiver refuses a counter it has seen.
    pub counter: u64,
    /// `kind ‖ body` of the inner message, encrypted, with its 16-byte tag;
    /// at most [`MAX_SEALED_LEN`] bytes.
    pub ciphertext: &'a [u8],
}

/// Inference latency statistics over the last heartbeat interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LatencyStats {
    /// Number of inferences measured.
    pub count: u32,
    /// Fastest, µs.
    pub min_us: u32,
    /// Median, µs.
    pub p50_us: u32,
    /// 99th percentile, µs.
    pub p99_us: u32,
    /// Slowest, µs.
    pub max_us: u32,
}

/// Counters and health, device → host, every few seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Milliseconds since the edge program started.
    pub uptime_ms: u64,
    /// Frames delivered by the camera or replay source.
    pub frames_captured: u64,
    /// Frames run through the encoder.
    pub frames_encoded: u64,
    /// Latents written to the link.
    pub frames_sent: u64,
    /// Frames dropped because the encoder was busy (latest frame wins).
    pub frames_dropped: u64,
    /// Frames skipped because they could not be decoded.
    pub frames_corrupt: u64,
    /// Latents dropped because the spool was full.
    pub spool_dropped: u64,
    /// Latents waiting in the spool for an [`Ack`].
    pub spool_depth: u64,
    /// Frames waiting for the encoder.
    pub queue_depth: u32,
    /// Inference latency over the interval.
    pub inference: LatencyStats,
    /// CPU temperature in milli-degrees Celsius, when the device knows it.
    pub cpu_temp_millicelsius: Option<i32>,
}

/// Cumulative acknowledgement, host → device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The host holds every latent with `seq <= up_to` that it will ever get;
    /// the device may drop them from its spool.
    pub up_to: u64,
}

/// Orderly end of a session, either direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bye<'a> {
    /// Why.
    pub reason: ByeReason,
    /// Human-readable detail; at most [`MAX_TEXT_LEN`] bytes.
    pub detail: &'a str,
}

/// Any protocol message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message<'a> {
    /// See [`Hello`].
    Hello(Hello<'a>),
    /// See [`Welcome`].
    Welcome(Welcome<'a>),
    /// See [`Auth`].
    Auth(Auth<'a>),
    /// See [`Latent`].
    Latent(Latent<'a>),
    /// See [`Heartbeat`].
    Heartbeat(Heartbeat),
    /// See [`Ack`].
    Ack(Ack),
    /// See [`Bye`].
    Bye(Bye<'a>),
    /// See [`Handshake`].
    Handshake(Handshake<'a>),
    /// See [`Sealed`].
    Sealed(Sealed<'a>),
}

fn check(field: &'static str, len: usize, max: usize) -> Result<(), FrameError> {
    if len > max {
        Err(FrameError::FieldTooLong { field, len, max })
    } else {
        Ok(())
    }
}

impl<'a> Message<'a> {
    /// The message's kind byte.
    pub fn kind(&self) -> MessageKind {
        match self {
            Message::Hello(_) => MessageKind::Hello,
            Message::Welcome(_) => MessageKind::Welcome,
            Message::Auth(_) => MessageKind::Auth,
            Message::Latent(_) => MessageKind::Latent,
            Message::Heartbeat(_) => MessageKind::Heartbeat,
            Message::Ack(_) => MessageKind::Ack,
            Message::Bye(_) => MessageKind::Bye,
            Message::Handshake(_) => MessageKind::Handshake,
            Message::Sealed(_) => MessageKind::Sealed,
        }
    }

    /// Checks every variable-length field against its maximum.
    pub fn validate(&self) -> Result<(), FrameError> {
        match self {
            Message::Hello(h) => {
                check("device_id", h.device_id.len(), MAX_ID_LEN)?;
                check("firmware_version", h.firmware_version.len(), MAX_LABEL_LEN)?;
                check("model_id", h.model.model_id.len(), MAX_ID_LEN)?;
                check("preprocessing", h.model.preprocessing.len(), MAX_LABEL_LEN)?;
                check("backend", h.backend.len(), MAX_LABEL_LEN)?;
                check("key_id", h.auth.key_id.len(), MAX_ID_LEN)
            }
            Message::Welcome(w) => {
                check("reason", w.reason.len(), MAX_TEXT_LEN)?;
                check("host_id", w.host_id.len(), MAX_ID_LEN)?;
                check("host_proof", w.auth.host_proof.len(), MAX_MAC_LEN)
            }
            Message::Auth(a) => check("device_proof", a.device_proof.len(), MAX_MAC_LEN),
            Message::Latent(l) => {
                check("payload", l.payload.len(), MAX_PAYLOAD_LEN)?;
                check("mac", l.mac.len(), MAX_MAC_LEN)
            }
            Message::Heartbeat(_) | Message::Ack(_) => Ok(()),
            Message::Bye(b) => check("detail", b.detail.len(), MAX_TEXT_LEN),
            Message::Handshake(h) => check("handshake", h.payload.len(), MAX_HANDSHAKE_LEN),
            Message::Sealed(s) => check("ciphertext", s.ciphertext.len(), MAX_SEALED_LEN),
        }
    }

    /// Serialises the body (everything after the kind byte) with postcard.
    pub(crate) fn serialize_body<'b>(&self, out: &'b mut [u8]) -> Result<&'b mut [u8], FrameError> {
        let result = match self {
            Message::Hello(m) => postcard::to_slice(m, out),
            Message::Welcome(m) => postcard::to_slice(m, out),
            Message::Auth(m) => postcard::to_slice(m, out),
            Message::Latent(m) => return serialize_latent(m, out),
            Message::Heartbeat(m) => postcard::to_slice(m, out),
            Message::Ack(m) => postcard::to_slice(m, out),
            Message::Bye(m) => postcard::to_slice(m, out),
            Message::Handshake(m) => postcard::to_slice(m, out),
            Message::Sealed(m) => postcard::to_slice(m, out),
        };
        result.map_err(|_| FrameError::BufferTooSmall)
    }

    /// Deserialises a body of the given kind. Trailing bytes after the known
    /// fields are ignored: they are reserved for fields a later revision
    /// appends (see SPEC.md, "Evolution").
    pub(crate) fn deserialize_body(kind: u8, body: &'a [u8]) -> Result<Self, FrameError> {
        fn take<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, FrameError> {
            postcard::take_from_bytes(body)
                .map(|(value, _rest)| value)
                .map_err(|_| FrameError::Undecodable)
        }
        let kind = MessageKind::from_u8(kind).ok_or(FrameError::UnknownKind(kind))?;
        let message = match kind {
            MessageKind::Hello => Message::Hello(take(body)?),
            MessageKind::Welcome => Message::Welcome(take(body)?),
            MessageKind::Auth => Message::Auth(take(body)?),
            MessageKind::Latent => Message::Latent(deserialize_latent(body)?),
            MessageKind::Heartbeat => Message::Heartbeat(take(body)?),
            MessageKind::Ack => Message::Ack(take(body)?),
            MessageKind::Bye => Message::Bye(take(body)?),
            MessageKind::Handshake => Message::Handshake(take(body)?),
            MessageKind::Sealed => Message::Sealed(take(body)?),
        };
        message.validate()?;
        Ok(message)
    }
}

/// A `Latent` body: the fields of revision 1, then the appended
/// [`WallTime`] when there is one.
fn serialize_latent<'b>(
    latent: &Latent<'_>,
    out: &'b mut [u8],
) -> Result<&'b mut [u8], FrameError> {
    let base = postcard::to_slice(latent, out)
        .map_err(|_| FrameError::BufferTooSmall)?
        .len();
    let tail = match &latent.wall {
        Some(wall) => postcard::to_slice(wall, &mut out[base..])
            .map_err(|_| FrameError::BufferTooSmall)?
            .len(),
        None => 0,
    };
    Ok(&mut out[..base + tail])
}

/// Reads a `Latent` body of any revision: without the appended
/// [`WallTime`] (revision 1) it decodes with `wall: None`. Bytes after the
/// fields known here are ignored, as for every body.
fn deserialize_latent(body: &[u8]) -> Result<Latent<'_>, FrameError> {
    let (mut latent, rest): (Latent<'_>, _) =
        postcard::take_from_bytes(body).map_err(|_| FrameError::Undecodable)?;
    if !rest.is_empty() {
        let (wall, _later) =
            postcard::take_from_bytes::<WallTime>(rest).map_err(|_| FrameError::Undecodable)?;
        latent.wall = Some(wall);
    }
    Ok(latent)
}
