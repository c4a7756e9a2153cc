//! Device authentication and encryption (wire/SPEC.md, section 7):
//! [`SecureLink`] wraps a TCP or serial link and runs the Noise IK
//! handshake of [`latentcam_secure`] on every connection, or wraps a UDP
//! link ([`SecureLink::one_way`]) and sends the one-message Noise K
//! handshake with every `Hello`.
//!
//! The pipeline above it does not change: it still sends a plain `Hello`,
//! waits for `Welcome` and then sends latents, heartbeats and `Bye`.
//! `SecureLink` turns that into the authenticated session:
//!
//! 1. A `Hello` (which must offer [`AuthScheme::NoiseIk`]) goes out plain,
//!    followed by `Handshake{msg1}`, computed with a fresh ephemeral key for
//!    exactly that `Hello`.
//! 2. The host's plain `Handshake{msg2}` completes the handshake; only the
//!    holder of the configured host key can write it. From then on every
//!    message, both ways, is `Sealed`.
//! 3. Anything else is never believed: a plain `Welcome` that accepts (a
//!    host that skipped authentication) is reported as
//!    [`WelcomeStatus::AuthFailed`], plain messages after the handshake are
//!    dropped and counted, and nothing but `Hello` and `Handshake` is ever
//!    written unsealed. A sealed message that does not open ends the
//!    connection.
//!
//! The channel belongs to one connection of the inner link: when the inner
//! link reconnects (its [`LinkStats::connects`] moves) or drops the
//! connection, the channel is forgotten and sends answer
//! [`LinkError::Down`] (the caller keeps the frame spooled) until a new
//! `Hello` has been answered.
//!
//! On a one-way link nothing comes back: each `Hello` (the pipeline repeats
//! it every few seconds) goes out with a `Handshake` that opens a new
//! channel at once, and everything until the next `Hello` is sealed with
//! it. Every first handshake message carries a freshness stamp
//! ([`Stamps`]), so the host can refuse a recorded one.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use latentcam_secure::{Channel, Initiator, KeyError, PublicKey, Stamps, StaticKey};
use latentcam_wire::{
    AuthScheme, Handshake, Hello, Message, NONCE_LEN, Sealed, WelcomeStatus, frame,
};

use super::{Incoming, Link, LinkError, LinkStats};

/// Why `latentcam-edge keygen` wrote no key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeygenError {
    /// The file exists; a key is never overwritten.
    #[error(
        "{0} already exists: keygen never overwrites a key (its public half may be \
         registered on a host); move it away first to give this device a new identity"
    )]
    Exists(PathBuf),
    /// The file could not be written.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Creates this device's key pair: writes the private key to the new file
/// `out` (mode 0600) and returns the public key, which the host registers
/// for this device. An existing file is never overwritten.
pub fn keygen(out: &Path) -> Result<PublicKey, KeygenError> {
    match StaticKey::write_new(out) {
        Ok(key) => Ok(*key.public()),
        Err(KeyError::Io { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => {
            Err(KeygenError::Exists(out.to_path_buf()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Where the handshake of the current connection stands.
enum State {
    /// No handshake on the current connection.
    Idle,
    /// `Hello` and `Handshake{msg1}` sent on connection number `connection`
    /// (the inner link's [`LinkStats::connects`] at the time).
    Handshaking {
        // Boxed: a handshake state is some kilobytes, a channel much less.
        initiator: Box<Initiator>,
        connection: u64,
    },
    /// The host proved its key on connection number `connection`.
    Established { channel: Channel, connection: u64 },
}

impl State {
    fn connection(&self) -> Option<u64> {
        match self {
            State::Idle => None,
            State::Handshaking { connection, .. } | State::Established { connection, .. } => {
                Some(*connection)
            }
        }
    }

    fn name(&self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Handshaking { .. } => "handshaking",
            State::Established { .. } => "established",
        }
    }
}

/// A bidirectional [`Link`] whose sessions are mutually authenticated and
/// encrypted with Noise IK (see the [module documentation](self)).
pub struct SecureLink<L: Link> {
    inner: L,
    device: StaticKey,
    host: PublicKey,
    state: State,
    /// The frame set by [`Link::set_hello`]: sent (with the handshake) on
    /// every new connection this link opens by itself.
    hello: Option<Vec<u8>>,
    /// Host → device frames refused here (plain where only sealed ones
    /// count, sealed ones that do not open, handshakes out of turn).
    refused: u64,
    /// Noise K on a link the host never answers on.
    one_way: bool,
    stamps: Stamps,
}

impl<L: Link> fmt::Debug for SecureLink<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecureLink")
            .field("inner", &self.inner.describe())
            .field("device", self.device.public())
            .field("host", &self.host)
            .field("state", &self.state.name())
            .field("refused", &self.refused)
            .field("one_way", &self.one_way)
            .finish()
    }
}

impl<L: Link> SecureLink<L> {
    /// Wraps `inner`, authenticating this device with `device` to the host
    /// whose static public key is `host`. A one-way link (UDP, file) is
    /// [`LinkError::Config`]: the handshake needs the host's answer.
    pub fn new(inner: L, device: StaticKey, host: PublicKey) -> Result<Self, LinkError> {
        if !inner.is_bidirectional() {
            return Err(LinkError::Config {
                link: inner.describe(),
                problem: "this handshake needs a link the host answers on (tcp, serial); \
                          udp links use SecureLink::one_way, recordings are not authenticated"
                    .into(),
            });
        }
        Ok(Self::wrap(inner, device, host, false))
    }

    /// Wraps a one-way link (UDP): the device authenticates to the host
    /// whose static public key is `host` with the one-message Noise K
    /// handshake, and the host never answers; `Hello`s must offer
    /// [`AuthScheme::NoiseK`]. A bidirectional link is [`LinkError::Config`]
    /// (it gets the mutual handshake of [`new`](Self::new)).
    pub fn one_way(inner: L, device: StaticKey, host: PublicKey) -> Result<Self, LinkError> {
        if inner.is_bidirectional() {
            return Err(LinkError::Config {
                link: inner.describe(),
                problem: "a link the host answers on gets the mutual handshake (SecureLink::new)"
                    .into(),
            });
        }
        Ok(Self::wrap(inner, device, host, true))
    }

    fn wrap(inner: L, device: StaticKey, host: PublicKey, one_way: bool) -> Self {
        Self {
            inner,
            device,
            host,
            state: State::Idle,
            hello: None,
            refused: 0,
            one_way,
            stamps: Stamps::new(),
        }
    }

    /// The wrapped link.
    pub fn inner(&self) -> &L {
        &self.inner
    }

    /// This device's public key, as registered on the host.
    pub fn device_public(&self) -> &PublicKey {
        self.device.public()
    }

    /// True once the host has proved its key on the current connection:
    /// sealed messages can flow.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Established { .. }) && self.state_is_current()
    }

    /// The inner link's current connection, if it holds one.
    fn current_connection(&self) -> Option<u64> {
        self.inner
            .is_connected()
            .then(|| self.inner.stats().connects)
    }

    fn state_is_current(&self) -> bool {
        self.state.connection().is_some() && self.state.connection() == self.current_connection()
    }

    /// Forgets a handshake or channel of a connection that is gone.
    fn forget_stale(&mut self) {
        if !self.state_is_current() {
            self.state = State::Idle;
        }
    }

    fn down(&self, why: &str) -> LinkError {
        LinkError::Down {
            link: self.describe(),
            source: io::Error::new(io::ErrorKind::NotConnected, why.to_owned()),
            retry_in: None,
        }
    }

    /// Ends the current connection: nothing more is read from or written to
    /// it, and the next `Hello` (after [`Link::reconnect`]) starts afresh.
    fn drop_connection(&mut self) {
        self.state = State::Idle;
        self.inner.disconnect();
    }

    /// Sends `frame`, the encoding of `hello`, and the first handshake
    /// message for it.
    fn start_handshake(&mut self, frame: &[u8], hello: &Hello<'_>) -> Result<(), LinkError> {
        self.state = State::Idle;
        let scheme = if self.one_way {
            AuthScheme::NoiseK
        } else {
            AuthScheme::NoiseIk
        };
        if hello.auth.scheme != scheme {
            return Err(LinkError::Config {
                link: self.describe(),
                problem: format!(
                    "the Hello offers authentication {:?}, not {scheme:?}: with [link] host_key \
                     set, the device must offer the Noise handshake",
                    hello.auth.scheme
                ),
            });
        }
        let stamp = self.stamps.now();
        let link = self.describe();
        let failed = |e: latentcam_secure::SecureError| LinkError::Config {
            link: link.clone(),
            problem: format!("cannot start the Noise handshake: {e}"),
        };
        let (next, first) = if self.one_way {
            let (channel, first) =
                latentcam_secure::initiate_one_way(&self.device, &self.host, hello, stamp)
                    .map_err(failed)?;
            (Ok(channel), first)
        } else {
            let (initiator, first) =
                Initiator::start(&self.device, &self.host, hello, stamp).map_err(failed)?;
            (Err(Box::new(initiator)), first)
        };
        let handshake = frame::encode_to_vec(&Message::Handshake(Handshake { payload: &first }))
            .map_err(|e| LinkError::Config {
                link: self.describe(),
                problem: format!("cannot frame the handshake: {e}"),
            })?;
        self.inner.send(frame)?;
        let connection = self.inner.stats().connects;
        self.inner.send(&handshake)?;
        if self.current_connection() != Some(connection) {
            return Err(self.down("the connection changed during the handshake"));
        }
        self.state = match next {
            Ok(channel) => State::Established {
                channel,
                connection,
            },
            Err(initiator) => State::Handshaking {
                initiator,
                connection,
            },
        };
        Ok(())
    }

    /// Starts the handshake with the frame given to [`Link::set_hello`].
    fn send_stored_hello(&mut self) -> Result<(), LinkError> {
        let Some(frame) = self.hello.clone() else {
            return Ok(());
        };
        let mut copy = frame.clone();
        match frame::decode_datagram(&mut copy) {
            Ok(Message::Hello(hello)) => self.start_handshake(&frame, &hello),
            _ => Err(LinkError::Config {
                link: self.describe(),
                problem: "the frame given to set_hello is not an encoded Hello".into(),
            }),
        }
    }

    /// Reports that the host failed authentication as a refusing `Welcome`
    /// (the session logs it and backs off) and drops the connection.
    fn refuse(&mut self, out: &mut Vec<Incoming>, reason: String) {
        tracing::warn!(link = %self.describe(), "{reason}");
        self.drop_connection();
        out.push(Incoming::Welcome {
            status: WelcomeStatus::AuthFailed,
            reason,
            host_id: String::new(),
            acked: None,
            auth_scheme: AuthScheme::NoiseIk,
            host_nonce: [0; NONCE_LEN],
            host_proof: Vec::new(),
        });
    }

    /// Counts a host → device frame that is not believed.
    fn ignore(&mut self, what: &str, message: &Incoming) {
        self.refused += 1;
        tracing::debug!(
            state = self.state.name(),
            "dropped {what} from the host: {message:?}"
        );
    }
}

impl<L: Link> Link for SecureLink<L> {
    /// A `Hello` starts the handshake (it and `Handshake{msg1}` go out
    /// plain). Anything else is sealed, and only once the host has proved
    /// its key on the current connection; before that (or after the inner
    /// link lost or replaced the connection) it is [`LinkError::Down`] and
    /// nothing is written. A frame that does not decode cannot be sealed
    /// and is dropped (the host would have dropped it too).
    fn send(&mut self, frame: &[u8]) -> Result<(), LinkError> {
        let mut copy = frame.to_vec();
        let message = match frame::decode_datagram(&mut copy) {
            Ok(Message::Hello(hello)) => return self.start_handshake(frame, &hello),
            Ok(m @ (Message::Handshake(_) | Message::Sealed(_))) => {
                tracing::error!("not sending a {:?} frame from above the link", m.kind());
                return Ok(());
            }
            Ok(m) => m,
            Err(e) => {
                tracing::error!(
                    "not sending a frame that does not decode ({e}): it cannot be sealed"
                );
                return Ok(());
            }
        };
        self.forget_stale();
        if matches!(self.state, State::Idle) {
            // A link used through `set_hello` alone opens its session here
            // (without a hello set, this does nothing).
            self.send_stored_hello()?;
        }
        let State::Established { channel, .. } = &mut self.state else {
            return Err(self.down("no authenticated session on this connection yet"));
        };
        let sealed = match channel.seal(&message) {
            Ok(bytes) => bytes,
            Err(latentcam_secure::SecureError::Exhausted) => {
                self.drop_connection();
                return Err(self.down("the session's counter is exhausted; a new handshake is due"));
            }
            Err(e) => {
                tracing::error!("cannot seal a {:?}: {e}; dropped", message.kind());
                return Ok(());
            }
        };
        self.inner.send(&sealed)
    }

    fn poll_incoming(&mut self, timeout: Duration) -> Result<Vec<Incoming>, LinkError> {
        self.forget_stale();
        let messages = self.inner.poll_incoming(timeout)?;
        let mut out = Vec::new();
        for message in messages {
            match (&mut self.state, message) {
                (State::Handshaking { .. }, Incoming::Handshake { payload }) => {
                    let State::Handshaking {
                        initiator,
                        connection,
                    } = std::mem::replace(&mut self.state, State::Idle)
                    else {
                        unreachable!("matched just above")
                    };
                    match initiator.finish(&payload) {
                        Ok(channel) => {
                            self.state = State::Established {
                                channel,
                                connection,
                            };
                        }
                        Err(e) => {
                            self.refused += 1;
                            self.refuse(
                                &mut out,
                                format!(
                                    "the host could not prove its key ({e}): it is not the \
                                     host whose public key is [link] host_key {}",
                                    self.host
                                ),
                            );
                            return Ok(out);
                        }
                    }
                }
                (
                    State::Established { channel, .. },
                    Incoming::Sealed {
                        counter,
                        ciphertext,
                    },
                ) => {
                    let opened = channel.open(&Sealed {
                        counter,
                        ciphertext: &ciphertext,
                    });
                    let inner = opened.and_then(|plain| {
                        frame::decode_inner(&plain)
                            .map(|m| Incoming::from_message(&m))
                            .map_err(latentcam_secure::SecureError::Inner)
                    });
                    match inner {
                        Ok(incoming) => out.push(incoming),
                        Err(e) => {
                            self.refused += 1;
                            tracing::warn!(
                                link = %self.describe(),
                                "dropping the connection: {e}"
                            );
                            self.drop_connection();
                            return if out.is_empty() {
                                Err(self.down("a sealed message from the host did not open"))
                            } else {
                                Ok(out)
                            };
                        }
                    }
                }
                (
                    State::Idle | State::Handshaking { .. },
                    Incoming::Welcome {
                        status: WelcomeStatus::Accepted,
                        ..
                    },
                ) => {
                    self.refused += 1;
                    self.refuse(
                        &mut out,
                        "host accepted without authenticating (no Noise handshake); this device \
                         only talks to its configured host key"
                            .into(),
                    );
                    return Ok(out);
                }
                // A refusal or a goodbye can only end the session: believed
                // before the channel exists, never after.
                (
                    State::Idle | State::Handshaking { .. },
                    m @ (Incoming::Welcome { .. } | Incoming::Bye { .. }),
                ) => out.push(m),
                (State::Established { .. }, m) => self.ignore("a plain message", &m),
                (_, m) => self.ignore("a message out of turn", &m),
            }
        }
        Ok(out)
    }

    /// Opens a new connection of the inner link, forgetting the previous
    /// handshake; with a hello set ([`Link::set_hello`]) the handshake
    /// starts at once.
    fn reconnect(&mut self) -> Result<(), LinkError> {
        self.state = State::Idle;
        self.inner.reconnect()?;
        self.send_stored_hello()
    }

    fn disconnect(&mut self) {
        self.drop_connection();
    }

    fn is_connected(&self) -> bool {
        self.inner.is_connected()
    }

    fn is_bidirectional(&self) -> bool {
        self.inner.is_bidirectional()
    }

    /// Kept here, not given to the inner link: a `Hello` must be followed
    /// by its handshake message, which only this link can write.
    fn set_hello(&mut self, frame: Vec<u8>) {
        self.hello = Some(frame);
    }

    /// The inner link's counters; `frame_errors` also counts the host →
    /// device frames refused here.
    fn stats(&self) -> LinkStats {
        let mut stats = self.inner.stats();
        stats.frame_errors += self.refused;
        stats
    }

    fn describe(&self) -> String {
        let scheme = if self.one_way { "noise-k" } else { "noise-ik" };
        format!("{} {scheme}", self.inner.describe())
    }
}
