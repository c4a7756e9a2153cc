//! Links: how framed bytes leave the device.
//!
//! Every transport carries the same bytes — complete frames from
//! [`latentcam_wire::frame::encode`] (`0x00 ‖ COBS ‖ 0x00`) — behind one
//! trait, [`Link`]:
//!
//! | link | module | direction | reconnects |
//! |---|---|---|---|
//! | TCP client to the host | [`tcp`] | both | with [`Backoff`], inside [`Link::send`] |
//! | MQTT 5 client to a broker (host workers behind it) | [`mqtt`] | both | with [`Backoff`], in a background thread |
//! | UDP, one frame per datagram | [`udp`] | device → host | re-creates the socket |
//! | serial line (`linux-embedded-hal`) | [`serial`] | both | reopens the device |
//! | recording file | [`file`](mod@file) | device → file | reopens the file |
//! | in memory, for tests | [`channel`] | both | when the far end allows |
//!
//! TCP, serial and the channel are one generic [`Framed`] link ([`framed`]:
//! `Hello` on every new connection, counters, the host → device decoder)
//! over a small byte [`Transport`] per medium.
//!
//! [`SecureLink`] ([`secure`]) wraps a TCP or serial link and authenticates
//! and encrypts its sessions (Noise IK, `[link] host_key` and `key_file`).
//!
//! A link never blocks the pipeline for long: sends carry write timeouts and a
//! link that is down answers [`LinkError::Down`] at once, so the caller keeps
//! the frame in its spool and tries again later ([`LinkError::is_transient`]).

pub mod channel;
pub mod file;
pub mod framed;
pub mod mqtt;
pub mod probe;
pub mod secure;
pub mod serial;
pub mod tcp;
pub mod udp;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use latentcam_wire::{
    AuthScheme, ByeReason, FrameDecoder, Message, MessageKind, NONCE_LEN, WelcomeStatus,
};

pub use crate::backoff::Backoff;
pub use file::{FileLink, FsyncPolicy};
pub use framed::{Framed, Reopen, Transport};
pub use mqtt::{MqttConfig, MqttLink};
pub use probe::{ProbeAnswer, ProbeError, probe};
pub use secure::SecureLink;
pub use serial::{DEFAULT_BAUD, SerialConfig, SerialLink, SerialTransport};
pub use tcp::{TcpConfig, TcpLink, TcpTransport};
pub use udp::UdpLink;

/// A transport that carries encoded frames from the device to a host.
pub trait Link {
    /// Writes one complete encoded frame (both delimiters included). On
    /// [`LinkError::Down`] the frame was not (or not completely) delivered
    /// and the caller should keep it for a later attempt.
    fn send(&mut self, frame: &[u8]) -> Result<(), LinkError>;

    /// Host → device messages that arrived, waiting at most `timeout` for the
    /// first bytes and then taking whatever else is already buffered.
    /// Corrupt frames are counted in [`LinkStats::frame_errors`], never
    /// returned as errors. One-way links return an empty list at once.
    fn poll_incoming(&mut self, timeout: Duration) -> Result<Vec<Incoming>, LinkError>;

    /// Drops the current connection (if any) and opens a new one now,
    /// ignoring any backoff schedule.
    fn reconnect(&mut self) -> Result<(), LinkError>;

    /// Closes the current connection, if any, without opening a new one
    /// ([`SecureLink`] ends a connection whose peer failed authentication
    /// this way); [`Link::reconnect`] opens the next. The default does
    /// nothing: UDP, file and MQTT links hold no connection to a host that
    /// could be closed here.
    fn disconnect(&mut self) {}

    /// True while the link holds an open connection, socket, port or file.
    fn is_connected(&self) -> bool;

    /// True for links the host answers on (`Welcome`, `Ack`): TCP, serial
    /// and MQTT. On one-way links (UDP, file) nothing is ever acknowledged.
    fn is_bidirectional(&self) -> bool;

    /// Sets the frame (a `Hello`) sent first on every new connection of a
    /// bidirectional link, so a host always learns who is talking before the
    /// first `Latent`. One-way links ignore it: on those the pipeline repeats
    /// `Hello` every 10 s (SPEC.md, section 2).
    fn set_hello(&mut self, frame: Vec<u8>);

    /// Counters since the link was created.
    fn stats(&self) -> LinkStats;

    /// A one-line description for logs, e.g. `tcp://10.0.0.2:7878 (connected)`.
    fn describe(&self) -> String;
}

/// A boxed link is a link, so wrappers such as [`SecureLink`] take either.
impl<L: Link + ?Sized> Link for Box<L> {
    fn send(&mut self, frame: &[u8]) -> Result<(), LinkError> {
        (**self).send(frame)
    }

    fn poll_incoming(&mut self, timeout: Duration) -> Result<Vec<Incoming>, LinkError> {
        (**self).poll_incoming(timeout)
    }

    fn reconnect(&mut self) -> Result<(), LinkError> {
        (**self).reconnect()
    }

    fn disconnect(&mut self) {
        (**self).disconnect()
    }

    fn is_connected(&self) -> bool {
        (**self).is_connected()
    }

    fn is_bidirectional(&self) -> bool {
        (**self).is_bidirectional()
    }

    fn set_hello(&mut self, frame: Vec<u8>) {
        (**self).set_hello(frame)
    }

    fn stats(&self) -> LinkStats {
        (**self).stats()
    }

    fn describe(&self) -> String {
        (**self).describe()
    }
}

/// Counters kept by every link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Frames written completely (not counting `Hello` frames sent on connect).
    pub frames_sent: u64,
    /// Bytes of those frames.
    pub bytes_sent: u64,
    /// Host → device messages decoded.
    pub frames_received: u64,
    /// Host → device frames rejected by the decoder (CRC, COBS, unknown kind…).
    pub frame_errors: u64,
    /// Connections (or opens) that succeeded, the first one included.
    pub connects: u64,
}

/// A host → device message, owned so it outlives the link's buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Incoming {
    /// The host's answer to `Hello`.
    Welcome {
        /// Accepted, or why not.
        status: WelcomeStatus,
        /// Human-readable reason, logged by the device.
        reason: String,
        /// The host's identity.
        host_id: String,
        /// Highest `seq` the host already holds for this device.
        acked: Option<u64>,
        /// Authentication scheme the host requires.
        auth_scheme: AuthScheme,
        /// The host's nonce for authentication.
        host_nonce: [u8; NONCE_LEN],
        /// The host's proof (empty without authentication).
        host_proof: Vec<u8>,
    },
    /// The host holds every latent with `seq ≤ up_to`.
    Ack {
        /// Highest acknowledged sequence number.
        up_to: u64,
    },
    /// The host ends the session.
    Bye {
        /// Why.
        reason: ByeReason,
        /// Human-readable detail.
        detail: String,
    },
    /// One Noise handshake message (plain), read by [`SecureLink`].
    Handshake {
        /// The handshake message.
        payload: Vec<u8>,
    },
    /// A sealed message, opened by [`SecureLink`].
    Sealed {
        /// Its counter (the AEAD nonce).
        counter: u64,
        /// The encrypted inner message with its tag.
        ciphertext: Vec<u8>,
    },
    /// A well-formed message that a host should not send to a device
    /// (e.g. a `Latent`); the caller may log it.
    Unexpected {
        /// Its kind.
        kind: MessageKind,
    },
}

impl Incoming {
    /// Converts a decoded message into its owned form.
    pub fn from_message(message: &Message<'_>) -> Self {
        match message {
            Message::Welcome(w) => Incoming::Welcome {
                status: w.status,
                reason: w.reason.to_owned(),
                host_id: w.host_id.to_owned(),
                acked: w.acked,
                auth_scheme: w.auth.scheme,
                host_nonce: w.auth.host_nonce,
                host_proof: w.auth.host_proof.to_vec(),
            },
            Message::Ack(a) => Incoming::Ack { up_to: a.up_to },
            Message::Bye(b) => Incoming::Bye {
                reason: b.reason,
                detail: b.detail.to_owned(),
            },
            Message::Handshake(h) => Incoming::Handshake {
                payload: h.payload.to_vec(),
            },
            Message::Sealed(s) => Incoming::Sealed {
                counter: s.counter,
                ciphertext: s.ciphertext.to_vec(),
            },
            other => Incoming::Unexpected { kind: other.kind() },
        }
    }
}

/// Why a link could not do what was asked.
///
/// [`LinkError::is_transient`] separates "down, retry later" from errors that
/// retrying cannot fix (configuration, full disk).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The link is down (refused, reset, broken pipe, host stalled, serial
    /// adapter unplugged). Keep the frame and retry later.
    #[error("{link} is down: {source}")]
    Down {
        /// [`Link::describe`] of the link.
        link: String,
        /// What the operating system said.
        #[source]
        source: io::Error,
        /// When the link will next try to connect by itself, if it does
        /// (not in the message: a caller with its own schedule, like the
        /// pipeline's session, reconnects at its own time).
        retry_in: Option<Duration>,
    },
    /// The configuration cannot work (bad address, no such serial device,
    /// no permission). Retrying does not help; the message says what to fix.
    #[error("{link}: {problem}")]
    Config {
        /// The link as configured.
        link: String,
        /// What is wrong and what to do about it.
        problem: String,
    },
    /// The recording's file system is full. Every frame written before this
    /// one is intact; the partial frame, if any, was cut off again.
    #[error(
        "disk full writing recording {path} ({kept_bytes} bytes kept intact): \
         free space or point the recording at a larger disk"
    )]
    DiskFull {
        /// The recording.
        path: PathBuf,
        /// Length of the recording, all complete frames.
        kept_bytes: u64,
    },
    /// A frame is too large for this link (e.g. a UDP datagram).
    #[error("frame of {len} bytes is too large for {link} (at most {max})")]
    FrameTooLarge {
        /// The link.
        link: String,
        /// The frame's length.
        len: usize,
        /// The link's limit.
        max: usize,
    },
    /// Any other I/O failure, with the file or device it concerns.
    #[error("{link}: {source}")]
    Io {
        /// The link.
        link: String,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
}

impl LinkError {
    /// True when retrying later can succeed: the frame should stay spooled.
    pub fn is_transient(&self) -> bool {
        matches!(self, LinkError::Down { .. })
    }
}

/// True for I/O errors that mean "the peer or the line went away", as
/// opposed to a programming or configuration error.
pub(crate) fn is_disconnect(kind: io::ErrorKind) -> bool {
    use io::ErrorKind as K;
    matches!(
        kind,
        K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::BrokenPipe
            | K::NotConnected
            | K::TimedOut
            | K::WouldBlock
            | K::UnexpectedEof
            | K::Interrupted
            | K::HostUnreachable
            | K::NetworkUnreachable
            | K::NetworkDown
            | K::AddrNotAvailable
    )
}

/// Largest host → device frame a link accepts; `Welcome`, the largest, is
/// well under 512 bytes, sealed or not.
const INCOMING_FRAME_LIMIT: usize = 1024;

/// Decodes the host → device byte stream of a bidirectional link.
#[derive(Debug, Default)]
pub(crate) struct IncomingDecoder {
    decoder: FrameDecoder<INCOMING_FRAME_LIMIT>,
}

impl IncomingDecoder {
    /// Feeds received bytes, appending decoded messages to `out` and
    /// counting rejected frames in `stats`.
    pub(crate) fn push(&mut self, bytes: &[u8], out: &mut Vec<Incoming>, stats: &mut LinkStats) {
        self.decoder.feed_all(bytes, |item| match item {
            Ok(message) => {
                out.push(Incoming::from_message(&message));
                stats.frames_received += 1;
            }
            Err(_) => stats.frame_errors += 1,
        });
    }

    /// Forgets a partial frame from a previous connection.
    pub(crate) fn reset(&mut self) {
        self.decoder.reset();
    }
}
