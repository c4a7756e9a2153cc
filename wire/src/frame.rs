//! Framing: messages to bytes and byte streams back to messages.
//!
//! A frame is `0x00 ‖ COBS(raw) ‖ 0x00` with
//! `raw = version ‖ kind ‖ postcard(body) ‖ CRC-32C(version ‖ kind ‖ body) LE`.
//! The leading delimiter costs one byte and buys robustness: garbage that
//! precedes a frame on a serial line is cut off as its own (rejected) frame
//! instead of swallowing the frame behind it.

use core::fmt;

use crate::PROTOCOL_VERSION;
use crate::cobs::{self, Unstuffed, Unstuffer};
use crate::message::{MAX_PAYLOAD_LEN, Message};

/// Largest raw frame (version, kind, body and CRC, before COBS) a peer may
/// send: a [`Latent`](crate::Latent) with a full [`MAX_PAYLOAD_LEN`] payload
/// and MAC fits with room to spare.
pub const MAX_FRAME_LEN: usize = MAX_PAYLOAD_LEN + 128;

/// Largest encoded frame: [`MAX_FRAME_LEN`] plus COBS overhead and both
/// delimiters. A UDP datagram or MQTT message is never longer.
pub const MAX_ENCODED_LEN: usize = MAX_FRAME_LEN + cobs::max_overhead(MAX_FRAME_LEN) + 2;

/// Size of the buffer [`encode`] needs: the raw frame is built at the end of
/// the buffer and stuffed towards its start, in place.
pub const ENCODE_BUFFER_LEN: usize = MAX_FRAME_LEN + cobs::max_overhead(MAX_FRAME_LEN) + 2;

/// Bytes of a frame that are not message body: version, kind, CRC.
pub const RAW_OVERHEAD: usize = 2 + CRC_LEN;

const CRC_LEN: usize = 4;
const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// Why bytes were not accepted as a message. Every error is a value: the
/// decoder never panics on any input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The CRC did not match: corruption on the link.
    Crc {
        /// CRC carried in the frame.
        received: u32,
        /// CRC computed over the bytes received.
        computed: u32,
    },
    /// The frame exceeds [`MAX_FRAME_LEN`] (or the decoder's buffer); its
    /// bytes are discarded up to the next delimiter without being buffered.
    TooLong,
    /// The frame is shorter than version, kind and CRC.
    TooShort,
    /// The COBS encoding is broken (a block runs past the delimiter).
    Cobs,
    /// The frame's protocol version is not [`PROTOCOL_VERSION`].
    UnsupportedVersion(u8),
    /// The message kind is unknown to this version of the crate; a peer skips
    /// such frames.
    UnknownKind(u8),
    /// The CRC matched but the body is not a valid message of its kind.
    Undecodable,
    /// A variable-length field exceeds its maximum.
    FieldTooLong {
        /// Field name.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The output buffer given to [`encode`] is too small.
    BufferTooSmall,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Crc { received, computed } => write!(
                f,
                "CRC mismatch (frame says {received:#010x}, bytes give {computed:#010x}): corrupted on the link"
            ),
            FrameError::TooLong => write!(f, "frame longer than {MAX_FRAME_LEN} bytes, discarded"),
            FrameError::TooShort => write!(f, "frame too short to hold a header and CRC"),
            FrameError::Cobs => write!(f, "invalid COBS encoding"),
            FrameError::UnsupportedVersion(v) => write!(
                f,
                "unsupported protocol version {v} (this build speaks {PROTOCOL_VERSION})"
            ),
            FrameError::UnknownKind(k) => write!(f, "unknown message kind {k}, skipped"),
            FrameError::Undecodable => write!(f, "CRC valid but message body undecodable"),
            FrameError::FieldTooLong { field, len, max } => {
                write!(f, "field `{field}` is {len} bytes, maximum {max}")
            }
            FrameError::BufferTooSmall => write!(f, "output buffer too small for the frame"),
        }
    }
}

impl core::error::Error for FrameError {}

/// Encodes `message` as a complete frame (both delimiters included) into
/// `out`, returning its length. `out` must hold [`ENCODE_BUFFER_LEN`] bytes,
/// or at least the raw frame plus COBS overhead and delimiters.
pub fn encode(message: &Message<'_>, out: &mut [u8]) -> Result<usize, FrameError> {
    message.validate()?;
    let capacity = out.len().min(ENCODE_BUFFER_LEN);
    // The raw frame goes at `start`; stuffing writes from index 1 forwards and
    // never overtakes the read cursor because `start` leaves room for the
    // worst-case overhead of the largest raw frame that fits.
    let max_raw = capacity.saturating_sub(2 + cobs::max_overhead(capacity));
    let start = capacity - max_raw;
    if max_raw < RAW_OVERHEAD {
        return Err(FrameError::BufferTooSmall);
    }
    let raw = &mut out[start..capacity];
    raw[0] = PROTOCOL_VERSION;
    raw[1] = message.kind() as u8;
    let body_len = {
        let body_room = raw.len() - RAW_OVERHEAD;
        message.serialize_body(&mut raw[2..2 + body_room])?.len()
    };
    let raw_len = 2 + body_len + CRC_LEN;
    if raw_len > MAX_FRAME_LEN {
        return Err(FrameError::TooLong);
    }
    let crc = CRC32C.checksum(&raw[..2 + body_len]);
    raw[2 + body_len..raw_len].copy_from_slice(&crc.to_le_bytes());
    out[0] = 0;
    let stuffed = cobs::encode_in_place(out, start, raw_len, 1);
    out[1 + stuffed] = 0;
    Ok(stuffed + 2)
}

/// Encodes `message` into a new vector.
#[cfg(feature = "alloc")]
pub fn encode_to_vec(message: &Message<'_>) -> Result<alloc::vec::Vec<u8>, FrameError> {
    let mut buf = alloc::vec![0u8; ENCODE_BUFFER_LEN];
    let len = encode(message, &mut buf)?;
    buf.truncate(len);
    Ok(buf)
}

/// Writes `kind ‖ body` of `message` (no version, CRC or COBS) into `out`
/// and returns its length: the plaintext of a [`crate::Sealed`] message.
pub fn encode_inner(message: &Message<'_>, out: &mut [u8]) -> Result<usize, FrameError> {
    message.validate()?;
    let (kind, body) = out.split_first_mut().ok_or(FrameError::BufferTooSmall)?;
    *kind = message.kind() as u8;
    Ok(1 + message.serialize_body(body)?.len())
}

/// `kind ‖ body` of `message` in a new vector (see [`encode_inner`]).
#[cfg(feature = "alloc")]
pub fn encode_inner_to_vec(message: &Message<'_>) -> Result<alloc::vec::Vec<u8>, FrameError> {
    let mut buf = alloc::vec![0u8; MAX_FRAME_LEN];
    let len = encode_inner(message, &mut buf)?;
    buf.truncate(len);
    Ok(buf)
}

/// Decodes `kind ‖ body` (the plaintext of a [`crate::Sealed`] message). A
/// sealed message never holds another `Sealed` or a `Handshake`
/// ([`FrameError::Undecodable`]).
pub fn decode_inner(inner: &[u8]) -> Result<Message<'_>, FrameError> {
    let (&kind, body) = inner.split_first().ok_or(FrameError::TooShort)?;
    let message = Message::deserialize_body(kind, body)?;
    match message {
        Message::Sealed(_) | Message::Handshake(_) => Err(FrameError::Undecodable),
        m => Ok(m),
    }
}

/// Checks CRC and version of a raw (unstuffed) frame and decodes its message.
fn parse_raw(raw: &[u8]) -> Result<Message<'_>, FrameError> {
    if raw.len() < RAW_OVERHEAD {
        return Err(FrameError::TooShort);
    }
    let (data, crc_bytes) = raw.split_at(raw.len() - CRC_LEN);
    let received = u32::from_le_bytes([crc_bytes[0], crc_bytes[1], crc_bytes[2], crc_bytes[3]]);
    let computed = CRC32C.checksum(data);
    if received != computed {
        return Err(FrameError::Crc { received, computed });
    }
    if data[0] != PROTOCOL_VERSION {
        return Err(FrameError::UnsupportedVersion(data[0]));
    }
    Message::deserialize_body(data[1], &data[2..])
}

/// Decodes one frame that arrived whole — a UDP datagram or an MQTT message —
/// unstuffing it in place. Leading and trailing delimiters are optional; a
/// second frame inside the datagram is an error.
pub fn decode_datagram(datagram: &mut [u8]) -> Result<Message<'_>, FrameError> {
    let mut bytes = &mut datagram[..];
    while let [0, rest @ ..] = bytes {
        bytes = rest;
    }
    let mut end = bytes.len();
    while end > 0 && bytes[end - 1] == 0 {
        end -= 1;
    }
    let bytes = &mut bytes[..end];
    if bytes.len() > MAX_ENCODED_LEN {
        return Err(FrameError::TooLong);
    }
    let mut unstuffer = Unstuffer::default();
    let mut len = 0;
    for i in 0..bytes.len() {
        let b = bytes[i];
        if b == 0 {
            return Err(FrameError::Cobs);
        }
        // Writing at `len <= i` never clobbers unread input.
        match unstuffer.push(b) {
            Unstuffed::Nothing => {}
            Unstuffed::One(x) => {
                bytes[len] = x;
                len += 1;
            }
            Unstuffed::Zero => {
                bytes[len] = 0;
                len += 1;
            }
        }
    }
    if !unstuffer.complete() {
        return Err(FrameError::Cobs);
    }
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLong);
    }
    parse_raw(&bytes[..len])
}

/// Result of [`FrameDecoder::feed`].
#[derive(Debug)]
pub enum FeedResult<'input, 'buf> {
    /// All input was consumed without completing a frame.
    Consumed,
    /// A frame completed and decoded.
    Message {
        /// The message, borrowing the decoder's buffer.
        message: Message<'buf>,
        /// Input not yet fed.
        remaining: &'input [u8],
    },
    /// A frame completed (or overflowed) and was rejected. The decoder has
    /// already resynchronised; keep feeding `remaining`.
    Error {
        /// Why.
        error: FrameError,
        /// Input not yet fed.
        remaining: &'input [u8],
    },
}

/// Stream decoder for serial lines, TCP streams and recordings.
///
/// Feed it bytes in chunks of any size; it returns one message or error at a
/// time together with the unconsumed input:
///
/// ```
/// use latentcam_wire::{FeedResult, FrameDecoder, Message, Ack, frame};
/// let mut buf = [0u8; frame::ENCODE_BUFFER_LEN];
/// let n = frame::encode(&Message::Ack(Ack { up_to: 7 }), &mut buf).unwrap();
/// let mut decoder = FrameDecoder::<64>::new();
/// let mut input = &buf[..n];
/// while !input.is_empty() {
///     input = match decoder.feed(input) {
///         FeedResult::Consumed => break,
///         FeedResult::Message { message, remaining } => {
///             assert_eq!(message, Message::Ack(Ack { up_to: 7 }));
///             remaining
///         }
///         FeedResult::Error { remaining, .. } => remaining,
///     };
/// }
/// ```
///
/// `N` is the largest raw frame accepted; it defaults to [`MAX_FRAME_LEN`]
/// and a small device may choose less. Longer frames are reported once as
/// [`FrameError::TooLong`] and skipped to the next delimiter.
#[derive(Debug, Clone)]
pub struct FrameDecoder<const N: usize = MAX_FRAME_LEN> {
    buf: [u8; N],
    len: usize,
    unstuffer: Unstuffer,
    /// Discarding an oversized frame until the next delimiter.
    skipping: bool,
}

impl<const N: usize> Default for FrameDecoder<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> FrameDecoder<N> {
    /// A decoder waiting for the start of a frame.
    pub const fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
            unstuffer: Unstuffer::new(),
            skipping: false,
        }
    }

    /// Forgets any partial frame (e.g. after a reconnect).
    pub fn reset(&mut self) {
        self.len = 0;
        self.unstuffer = Unstuffer::default();
        self.skipping = false;
    }

    /// True when no partial frame is buffered.
    pub fn is_idle(&self) -> bool {
        self.unstuffer.is_empty() && !self.skipping
    }

    /// Feeds all of `input`, calling `visit` with every message or frame
    /// error it completes, in stream order: the loop around [`Self::feed`]
    /// that most callers want.
    pub fn feed_all(
        &mut self,
        mut input: &[u8],
        mut visit: impl FnMut(Result<Message<'_>, FrameError>),
    ) {
        while !input.is_empty() {
            input = match self.feed(input) {
                FeedResult::Consumed => break,
                FeedResult::Message { message, remaining } => {
                    visit(Ok(message));
                    remaining
                }
                FeedResult::Error { error, remaining } => {
                    visit(Err(error));
                    remaining
                }
            };
        }
    }

    /// Feeds bytes; see the type's documentation.
    pub fn feed<'input>(&mut self, input: &'input [u8]) -> FeedResult<'input, '_> {
        for (i, &byte) in input.iter().enumerate() {
            if byte == 0 {
                let was_skipping = self.skipping;
                let empty = self.unstuffer.is_empty();
                let complete = self.unstuffer.complete();
                let len = self.len;
                self.reset();
                if was_skipping || empty {
                    // Oversized frames were reported when they overflowed;
                    // back-to-back delimiters are idle line, not errors.
                    continue;
                }
                let remaining = &input[i + 1..];
                if !complete {
                    return FeedResult::Error {
                        error: FrameError::Cobs,
                        remaining,
                    };
                }
                return match parse_raw(&self.buf[..len]) {
                    Ok(message) => FeedResult::Message { message, remaining },
                    Err(error) => FeedResult::Error { error, remaining },
                };
            }
            if self.skipping {
                continue;
            }
            let out = match self.unstuffer.push(byte) {
                Unstuffed::Nothing => continue,
                Unstuffed::One(x) => x,
                Unstuffed::Zero => 0,
            };
            if self.len == N || self.len == MAX_FRAME_LEN {
                self.skipping = true;
                self.len = 0;
                return FeedResult::Error {
                    error: FrameError::TooLong,
                    remaining: &input[i + 1..],
                };
            }
            self.buf[self.len] = out;
            self.len += 1;
        }
        FeedResult::Consumed
    }
}
