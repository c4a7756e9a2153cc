//! The host's half of one device session, as a pure state machine: bytes
//! in, replies / latents / acks / a close decision out. The TCP, serial, UDP and
//! recording ingests drive it (the MQTT worker keeps its own per-device
//! state, see `mqtt`); unit tests drive it with byte strings.
//!
//! With authentication (wire/SPEC.md §7) a device sends a plain `Hello`
//! offering `NoiseIk`, then a plain `Handshake`; the host checks the static
//! key the device proves against the one registered for the `Hello`'s
//! device id ([`HostAuth`]), answers with its own `Handshake` and a sealed
//! `Welcome`, and from then on every message either way is `Sealed`.
//! Anything else — a plain message after the handshake, a sealed one that
//! does not open (tampered, replayed, another session's) — ends the
//! connection. The device is admitted to the registry only once it has
//! authenticated. The device's first handshake message carries a stamp
//! that must be newer than the last one accepted from that device, so a
//! recorded handshake cannot be replayed.
//!
//! A one-way connection ([`Conn::one_way`], UDP) uses scheme `NoiseK`: the
//! device's `Hello` and single `Handshake` open the channel, nothing is
//! ever sent back, and the device repeats both every few seconds; each new
//! handshake replaces the channel, and one that fails leaves the current
//! channel in place (a forged datagram cannot end a device's session).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use latentcam_model::manifest::Manifest;
use latentcam_secure::Channel;
use latentcam_wire::frame::MAX_FRAME_LEN;
use latentcam_wire::{
    Ack, AuthChallenge, AuthOffer, AuthScheme, Bye, ByeReason, FrameDecoder, Handshake, Hello,
    MAX_TEXT_LEN, Message, NONCE_LEN, PROTOCOL_VERSION, WallTime, Welcome, WelcomeStatus, fit_text,
    frame,
};

use super::registry::{Admission, Registry};
use crate::auth::HostAuth;
use crate::session::{self, Admit, Refusal, check_hello_for};

/// What a session reads of the host it runs in.
#[derive(Debug, Clone, Copy)]
pub struct Env<'a> {
    /// The models devices are checked against.
    pub manifest: &'a Manifest,
    /// Devices: admission, sequence numbers, acknowledgements.
    pub registry: &'a Registry,
    /// The host's id, sent in `Welcome`.
    pub host_id: &'a str,
    /// The host's wall-clock time of the bytes being fed: the receive time
    /// of the latents among them.
    pub received: SystemTime,
}

/// Limits that keep one peer from hurting the others.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A connection that has not sent `Hello` by then is closed.
    pub hello_timeout: Duration,
    /// A connection silent this long after its `Hello` (no latent, no
    /// heartbeat) is closed: an idle socket must not hold a slot forever.
    pub idle_timeout: Duration,
    /// Corrupt frames in a row after which the connection is closed.
    pub max_errors_in_a_row: u32,
    /// Sustained latents per second accepted per connection; more are
    /// dropped and counted.
    pub max_fps: f64,
    /// Latents accepted in a burst above `max_fps`.
    pub burst: f64,
    /// Most connections from one IP address at once (TCP); more are
    /// answered `Welcome { Busy }` and closed. Devices behind one NAT share
    /// an address, so this is a flood guard, not a device count.
    pub max_per_ip: usize,
    /// Refuse a latent numbered implausibly far ahead
    /// ([`super::registry::seq_plausible`]). Off only for recordings, the
    /// operator's own files, which may span days of gaps in an instant.
    pub seq_window: bool,
}

impl Default for Limits {
    /// Hello within 10 s, then something at least every 120 s (an edge
    /// sends a heartbeat every 5 s by default, at most every 60 s), 16
    /// corrupt frames in a row, 200 latents/s with a burst of 400, 64 connections per IP
    /// address.
    fn default() -> Self {
        Self {
            hello_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_errors_in_a_row: 16,
            max_fps: 200.0,
            burst: 400.0,
            max_per_ip: 64,
            seq_window: true,
        }
    }
}

/// A decoded latent on its way to the heads.
#[derive(Debug, Clone)]
pub struct Job {
    /// Device id.
    pub device: String,
    /// Sequence number.
    pub seq: u64,
    /// Capture time on the device, µs.
    pub capture_us: u64,
    /// Capture time on the device's real-time clock, when it sent one.
    pub wall: Option<WallTime>,
    /// When the host received the latent (its own clock).
    pub received: SystemTime,
    /// Source frame size.
    pub frame_size: (u32, u32),
    /// Wire bytes of the latent's frame payload (for byte accounting).
    pub payload_bytes: usize,
    /// The decoded latent.
    pub latent: Vec<f32>,
    /// The latent's frame, re-encoded (what a recording stores).
    pub frame: Vec<u8>,
    /// The device's `Hello` frame, re-encoded with no authentication
    /// offer (recordings repeat it, and replaying a recording must not
    /// wait for a handshake).
    pub hello: Arc<[u8]>,
    /// Told when the latent's result line is written (the MQTT ingest
    /// acknowledges and publishes results from this; TCP polls the
    /// registry instead).
    pub done: Option<tokio::sync::mpsc::UnboundedSender<Done>>,
}

/// A latent whose heads ran and whose result line is written.
#[derive(Debug, Clone)]
pub struct Done {
    /// Device id.
    pub device: String,
    /// Sequence number.
    pub seq: u64,
    /// The result line.
    pub line: serde_json::Value,
}

/// What the connection should do.
#[derive(Debug)]
pub enum Step {
    /// Write these bytes to the device.
    Reply(Vec<u8>),
    /// Run the heads on this latent.
    Job(Job),
    /// Close the connection (after writing any `Bye` given in a `Reply`).
    Close(String),
}

#[derive(Debug, Clone)]
struct Accepted {
    device: String,
    /// What its latents must match.
    check: session::Accepted,
    hello: Arc<[u8]>,
}

/// One connection's protocol state.
pub struct Conn {
    peer: String,
    auth: Arc<HostAuth>,
    decoder: Box<FrameDecoder<MAX_FRAME_LEN>>,
    device: Option<Accepted>,
    /// A `Hello` offering `NoiseIk` or `NoiseK` (`kind ‖ body`), waiting
    /// for the device's `Handshake`.
    awaiting_handshake: Option<Vec<u8>>,
    /// The session's keys once the handshake succeeded.
    channel: Option<Channel>,
    /// Nothing can be sent to the device (UDP).
    one_way: bool,
    opened: Instant,
    last_frame: Instant,
    errors_in_a_row: u32,
    tokens: f64,
    refill_at: Instant,
    limits: Limits,
    closed: bool,
    /// The last `Ack` sent.
    acked: Option<u64>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("peer", &self.peer)
            .field("device", &self.device())
            .field("authenticated", &self.is_authenticated())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

/// A `Welcome` message; a reason longer than the wire allows is cut,
/// never a reason to send nothing.
fn welcome_message<'a>(
    status: WelcomeStatus,
    reason: &'a str,
    host_id: &'a str,
    acked: Option<u64>,
    scheme: AuthScheme,
) -> Message<'a> {
    Message::Welcome(Welcome {
        protocol: PROTOCOL_VERSION.into(),
        status,
        reason: fit_text(reason, MAX_TEXT_LEN),
        host_id: fit_text(host_id, latentcam_wire::MAX_ID_LEN),
        acked,
        auth: AuthChallenge {
            scheme,
            host_nonce: [0; NONCE_LEN],
            host_proof: &[],
        },
    })
}

/// A plain `Welcome` frame (no authentication): refusals, and sessions
/// without a handshake.
pub(crate) fn welcome(
    status: WelcomeStatus,
    reason: &str,
    host_id: &str,
    acked: Option<u64>,
) -> Vec<u8> {
    frame::encode_to_vec(&welcome_message(
        status,
        reason,
        host_id,
        acked,
        AuthScheme::None,
    ))
    .unwrap_or_default()
}

/// The `Hello` a recording keeps: the device's, without its authentication
/// offer, so that reading the recording back admits it without a
/// handshake (the recording is the operator's own file).
fn recorded_hello(hello: &Hello<'_>) -> Vec<u8> {
    frame::encode_to_vec(&Message::Hello(Hello {
        auth: AuthOffer {
            scheme: AuthScheme::None,
            key_id: "",
            device_nonce: [0; NONCE_LEN],
        },
        ..*hello
    }))
    .unwrap_or_default()
}

/// What the device is told when its key is not the one registered for its
/// id: the same whether the id is unknown or holds another key, so a
/// forger learns nothing about which ids exist.
const NOT_REGISTERED: &str =
    "this device's key is not registered for its id on this host (`latentcam-host keys add`)";

/// What the device is told when its handshake is not newer than the last
/// one accepted from it.
const STALE: &str = "stale handshake: a replay, or the device's clock went back \
                     (it must not be behind its previous handshake)";

fn stale_detail(stamp: u64, last: u64) -> String {
    format!(
        "handshake stamp {stamp} is not newer than the last accepted {last} \
         (a replayed handshake, or the device's clock went back)"
    )
}

/// What the device is told when the handshake itself fails.
const HANDSHAKE_FAILED: &str =
    "handshake failed: is [link] host_key this host's key (`latentcam-host keys show`)?";

/// Checks a two-way device's first `NoiseIk` handshake message against
/// the key registered for its id and its last accepted stamp: the host's
/// answer and the session's channel, or what the device is told and what
/// is logged.
fn respond_two_way(
    auth: &HostAuth,
    host_key: &latentcam_secure::StaticKey,
    hello: &Hello<'_>,
    payload: &[u8],
) -> Result<(Vec<u8>, Channel), (&'static str, String)> {
    let device = hello.device_id;
    let pending = latentcam_secure::respond(host_key, hello, payload).map_err(|e| {
        let detail = format!("{e} (the device may have another host key)");
        (HANDSHAKE_FAILED, detail)
    })?;
    let proven = *pending.device_key();
    match auth.registered(device) {
        Ok(Some(registered)) if registered == proven => {}
        Ok(Some(registered)) => {
            let detail = format!(
                "the device proves key {proven}, but {registered} is registered for its id"
            );
            return Err((NOT_REGISTERED, detail));
        }
        Ok(None) => {
            let detail = format!("no key is registered for this id (it proves {proven})");
            return Err((NOT_REGISTERED, detail));
        }
        Err(e) => {
            tracing::error!("cannot read the device list: {e}");
            return Err((DEVICE_LIST_UNREADABLE, e.to_string()));
        }
    }
    auth.fresh(device, pending.stamp())
        .map_err(|last| (STALE, stale_detail(pending.stamp(), last)))?;
    pending
        .accept()
        .map_err(|e| (HANDSHAKE_FAILED, e.to_string()))
}

/// What the device is told when the host cannot read its device list.
const DEVICE_LIST_UNREADABLE: &str = "the host cannot read its device list";

impl Conn {
    /// A new connection from `peer` (for logs), authenticated as `auth`
    /// says.
    pub fn new(peer: impl Into<String>, limits: Limits, auth: Arc<HostAuth>, now: Instant) -> Self {
        Self {
            peer: peer.into(),
            auth,
            decoder: Box::default(),
            device: None,
            awaiting_handshake: None,
            channel: None,
            one_way: false,
            opened: now,
            last_frame: now,
            errors_in_a_row: 0,
            tokens: limits.burst,
            refill_at: now,
            limits,
            closed: false,
            acked: None,
        }
    }

    /// The same connection on a one-way link (UDP): nothing is sent back,
    /// and an authenticating device must offer `NoiseK` instead of
    /// `NoiseIk`.
    pub fn one_way(mut self) -> Self {
        self.one_way = true;
        self
    }

    /// The accepted device's id, once `Hello` was accepted.
    pub fn device(&self) -> Option<&str> {
        self.device.as_ref().map(|d| d.device.as_str())
    }

    /// The peer address given at creation.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// True once a `Close` step was produced.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// True once the device authenticated: everything is sealed from then on.
    pub fn is_authenticated(&self) -> bool {
        self.channel.is_some()
    }

    /// The bytes that carry `message` to the device: sealed once the
    /// channel is open, a plain frame otherwise. Every message the host
    /// sends after `Hello` goes through here (`Ack`, `Bye`).
    pub fn encode(&mut self, message: &Message<'_>) -> Vec<u8> {
        if self.one_way {
            // Nobody listens, and a one-way channel cannot seal this way.
            return Vec::new();
        }
        match &mut self.channel {
            Some(channel) => channel.seal(message).unwrap_or_else(|e| {
                tracing::error!(peer = %self.peer, "cannot seal a message: {e}");
                Vec::new()
            }),
            None => frame::encode_to_vec(message).unwrap_or_default(),
        }
    }

    /// A `Welcome`, sealed once the channel is open.
    fn welcome(
        &mut self,
        status: WelcomeStatus,
        reason: &str,
        host_id: &str,
        acked: Option<u64>,
    ) -> Vec<u8> {
        let scheme = if self.channel.is_some() {
            self.handshake_scheme()
        } else {
            AuthScheme::None
        };
        self.encode(&welcome_message(status, reason, host_id, acked, scheme))
    }

    fn bye(&mut self, reason: ByeReason, detail: &str) -> Vec<u8> {
        let detail = fit_text(detail, MAX_TEXT_LEN);
        self.encode(&Message::Bye(Bye { reason, detail }))
    }

    /// Checks time-based limits (the Hello deadline, then the idle
    /// timeout), then acknowledges what the registry holds of the device
    /// beyond the last `Ack` sent. Called every few tens of milliseconds.
    pub fn tick(&mut self, now: Instant, registry: &Registry, out: &mut Vec<Step>) {
        if self.closed {
            return;
        }
        if self.device.is_none() {
            if now.saturating_duration_since(self.opened) > self.limits.hello_timeout {
                let what = if self.awaiting_handshake.is_some() {
                    "Handshake"
                } else {
                    "Hello"
                };
                self.close(
                    ByeReason::Timeout,
                    &format!("no {what} within {:?}", self.limits.hello_timeout),
                    out,
                );
            }
        } else if now.saturating_duration_since(self.last_frame) > self.limits.idle_timeout {
            self.close(
                ByeReason::Timeout,
                &format!(
                    "nothing received for {:?} (send heartbeats more often)",
                    self.limits.idle_timeout
                ),
                out,
            );
        }
        self.ack(registry, out);
    }

    /// An `Ack` up to what the registry holds of the device, if that is
    /// more than the last one sent; nothing on a one-way link.
    fn ack(&mut self, registry: &Registry, out: &mut Vec<Step>) {
        if self.closed || self.one_way {
            return;
        }
        let held = self.device().and_then(|device| registry.acked(device));
        if held > self.acked
            && let Some(up_to) = held
        {
            self.acked = held;
            let bytes = self.encode(&Message::Ack(Ack { up_to }));
            out.push(Step::Reply(bytes));
        }
    }

    fn close(&mut self, reason: ByeReason, detail: &str, out: &mut Vec<Step>) {
        if !self.closed {
            let bytes = self.bye(reason, detail);
            out.push(Step::Reply(bytes));
            out.push(Step::Close(format!("{}: {detail}", self.peer)));
            self.closed = true;
        }
    }

    /// Feeds received bytes.
    pub fn feed(&mut self, bytes: &[u8], now: Instant, env: Env<'_>, out: &mut Vec<Step>) {
        let registry = env.registry;
        if self.closed {
            return;
        }
        let mut decoder = std::mem::take(&mut self.decoder);
        decoder.feed_all(bytes, |item| {
            if self.closed {
                return;
            }
            match item {
                Ok(message) => {
                    self.errors_in_a_row = 0;
                    self.last_frame = now;
                    self.on_message(&message, now, env, out);
                }
                Err(e) => {
                    self.errors_in_a_row += 1;
                    if let Some(d) = &self.device {
                        registry.update(&d.device, |r| r.frame_errors += 1);
                    }
                    if self.errors_in_a_row >= self.limits.max_errors_in_a_row {
                        let detail = format!(
                            "{} corrupt frames in a row (last: {e})",
                            self.errors_in_a_row
                        );
                        self.close(ByeReason::ProtocolViolation, &detail, out);
                    }
                }
            }
        });
        self.decoder = decoder;
    }

    fn on_message(
        &mut self,
        message: &Message<'_>,
        now: Instant,
        env: Env<'_>,
        out: &mut Vec<Step>,
    ) {
        let registry = env.registry;
        if let Some(channel) = &mut self.channel {
            let sealed = match message {
                Message::Sealed(sealed) => sealed,
                // A one-way device starts a new handshake now and then.
                Message::Hello(_) | Message::Handshake(_) if self.one_way => {
                    return self.on_plain(message, now, env, out);
                }
                _ => {
                    let detail = format!(
                        "plain {:?} after the handshake (every message must be sealed)",
                        message.kind()
                    );
                    self.close(ByeReason::ProtocolViolation, &detail, out);
                    return;
                }
            };
            let plain = match channel.open(sealed) {
                Ok(plain) => plain,
                // Anyone can send a datagram from any address: on a
                // one-way link one that does not open (forged, replayed,
                // or sealed under the channel a new handshake replaced)
                // is dropped and counted, never a reason to end the
                // device's session.
                Err(e) if self.one_way => {
                    if let Some(d) = &self.device {
                        registry.update(&d.device, |r| r.frame_errors += 1);
                    }
                    tracing::debug!(peer = %self.peer, "dropped a sealed datagram: {e}");
                    return;
                }
                Err(e) => {
                    self.close(ByeReason::ProtocolViolation, &e.to_string(), out);
                    return;
                }
            };
            match frame::decode_inner(&plain) {
                Ok(Message::Hello(_)) => {
                    self.close(
                        ByeReason::ProtocolViolation,
                        "Hello inside a sealed message",
                        out,
                    );
                }
                Ok(inner) => self.on_session_message(&inner, now, env, out),
                Err(e) => {
                    let detail = format!("sealed message holds no valid message: {e}");
                    self.close(ByeReason::ProtocolViolation, &detail, out);
                }
            }
            return;
        }
        self.on_plain(message, now, env, out);
    }

    /// A plain message: before the handshake, or a one-way device's new
    /// `Hello` and `Handshake`.
    fn on_plain(&mut self, message: &Message<'_>, now: Instant, env: Env<'_>, out: &mut Vec<Step>) {
        let Env {
            manifest, host_id, ..
        } = env;
        if let Some(hello) = self.awaiting_handshake.take() {
            match message {
                Message::Handshake(handshake) => {
                    self.on_handshake(&hello, handshake.payload, now, env, out);
                }
                // The one-way device's Handshake was lost: its next Hello
                // starts over.
                Message::Hello(_) if self.one_way => {}
                other => {
                    let detail = format!(
                        "{:?} where the Handshake must follow the Hello",
                        other.kind()
                    );
                    self.close(ByeReason::ProtocolViolation, &detail, out);
                }
            }
            if !matches!(message, Message::Hello(_)) {
                return;
            }
        }
        let in_session = self.one_way && self.channel.is_some();
        match message {
            // A forged or stray datagram must not end a one-way session.
            Message::Handshake(_) if in_session => {
                tracing::debug!(peer = %self.peer, "Handshake without its Hello: ignored");
            }
            Message::Hello(hello) => match check_hello_for(manifest, hello, &self.auth) {
                Err(refusal) if in_session => {
                    tracing::warn!(
                        peer = %self.peer,
                        device = ?hello.device_id,
                        "ignored a Hello on an authenticated one-way session: {refusal}"
                    );
                }
                Err(refusal) => self.refuse(hello.device_id, &refusal, None, host_id, out),
                Ok(Admit::Now) => {
                    self.admit(hello, None, now, env, out);
                }
                Ok(Admit::AfterHandshake) if hello.auth.scheme != self.handshake_scheme() => {
                    let refusal = Refusal {
                        status: WelcomeStatus::AuthFailed,
                        reason: if self.one_way {
                            "this link is one-way (UDP): authenticate with NoiseK".into()
                        } else {
                            "NoiseK is for one-way links (UDP): authenticate with NoiseIk".into()
                        },
                    };
                    self.refuse(hello.device_id, &refusal, None, host_id, out);
                }
                Ok(Admit::AfterHandshake) => {
                    // Another Hello on an admitted plain session starts
                    // over; a one-way session keeps its channel until the
                    // new handshake succeeds.
                    if !self.one_way {
                        self.device = None;
                    }
                    match frame::encode_inner_to_vec(message) {
                        Ok(inner) => self.awaiting_handshake = Some(inner),
                        Err(e) => {
                            let detail = format!("Hello does not re-encode: {e}");
                            self.close(ByeReason::ProtocolViolation, &detail, out);
                        }
                    }
                }
            },
            other => self.on_session_message(other, now, env, out),
        }
    }

    /// Answers a refused `Hello` (or handshake) with a plain `Welcome` and
    /// closes; authentication failures are counted and logged, with the
    /// detail the device is not told (`detail`).
    fn refuse(
        &mut self,
        device: &str,
        refusal: &Refusal,
        detail: Option<&str>,
        host_id: &str,
        out: &mut Vec<Step>,
    ) {
        if matches!(
            refusal.status,
            WelcomeStatus::AuthFailed | WelcomeStatus::AuthRequired
        ) {
            self.auth.count_failure();
            tracing::warn!(
                peer = %self.peer,
                device = ?device,
                "authentication failed: {}",
                detail.unwrap_or(&refusal.reason)
            );
        }
        if !self.one_way {
            out.push(Step::Reply(welcome(
                refusal.status,
                &refusal.reason,
                host_id,
                None,
            )));
        }
        out.push(Step::Close(format!(
            "{}: refused device {device:?}: {}",
            self.peer,
            detail.unwrap_or(&refusal.reason)
        )));
        self.closed = true;
    }

    /// The device's first handshake message for the `Hello` (`kind ‖
    /// body`) it sent before: the key it proves must be the one registered
    /// for its id, read from the device list now.
    fn on_handshake(
        &mut self,
        hello: &[u8],
        payload: &[u8],
        now: Instant,
        env: Env<'_>,
        out: &mut Vec<Step>,
    ) {
        let host_id = env.host_id;
        let Ok(Message::Hello(hello)) = frame::decode_inner(hello) else {
            self.close(
                ByeReason::ProtocolViolation,
                "the kept Hello does not decode",
                out,
            );
            return;
        };
        let device = hello.device_id;
        let failed = |reason: &str| Refusal {
            status: WelcomeStatus::AuthFailed,
            reason: reason.to_owned(),
        };
        let auth = Arc::clone(&self.auth);
        let Some(host_key) = auth.key() else {
            let refusal = failed("this host has no key (serve --keys DIR)");
            self.refuse(device, &refusal, None, host_id, out);
            return;
        };
        if self.one_way {
            self.on_one_way_handshake(&hello, host_key, payload, now, env, out);
            return;
        }
        match respond_two_way(&auth, host_key, &hello, payload) {
            Ok((response, channel)) => {
                let handshake =
                    frame::encode_to_vec(&Message::Handshake(Handshake { payload: &response }))
                        .unwrap_or_default();
                self.channel = Some(channel);
                tracing::debug!(peer = %self.peer, device = ?device, "device authenticated");
                self.admit(&hello, Some(handshake), now, env, out);
            }
            Err((reason, detail)) => {
                self.refuse(device, &failed(reason), Some(&detail), host_id, out);
            }
        }
    }

    /// The scheme an authenticating device must offer on this connection.
    fn handshake_scheme(&self) -> AuthScheme {
        if self.one_way {
            AuthScheme::NoiseK
        } else {
            AuthScheme::NoiseIk
        }
    }

    /// A one-way device's handshake (`NoiseK`): the message must be written
    /// with the key registered for the `Hello`'s id, to this host, and be
    /// fresh. Success replaces the channel; failure ends a connection with
    /// no session yet, and is only counted on one that has a session (a
    /// forged datagram must not end it).
    fn on_one_way_handshake(
        &mut self,
        hello: &Hello<'_>,
        host_key: &latentcam_secure::StaticKey,
        payload: &[u8],
        now: Instant,
        env: Env<'_>,
        out: &mut Vec<Step>,
    ) {
        let host_id = env.host_id;
        let device = hello.device_id;
        let checked = match self.auth.registered(device) {
            Ok(Some(registered)) => {
                latentcam_secure::respond_one_way(host_key, &registered, hello, payload)
                    .map_err(|e| {
                        (
                            NOT_REGISTERED,
                            format!(
                                "{e} (not written with the key registered for this id, \
                                 or for another host key)"
                            ),
                        )
                    })
                    .and_then(|(channel, stamp)| match self.auth.fresh(device, stamp) {
                        Ok(()) => Ok(channel),
                        Err(last) => Err((STALE, stale_detail(stamp, last))),
                    })
            }
            Ok(None) => Err((
                NOT_REGISTERED,
                "no key is registered for this id".to_owned(),
            )),
            Err(e) => {
                tracing::error!("cannot read the device list: {e}");
                Err((DEVICE_LIST_UNREADABLE, e.to_string()))
            }
        };
        match checked {
            Ok(channel) => {
                self.channel = Some(channel);
                tracing::debug!(peer = %self.peer, device = ?device, "device authenticated (one-way)");
                self.admit(hello, None, now, env, out);
            }
            Err((reason, detail)) if self.channel.is_some() => {
                self.auth.count_failure();
                tracing::warn!(
                    peer = %self.peer,
                    device = ?device,
                    "authentication failed, the current session goes on: {reason}: {detail}"
                );
            }
            Err((reason, detail)) => {
                let refusal = Refusal {
                    status: WelcomeStatus::AuthFailed,
                    reason: reason.to_owned(),
                };
                self.refuse(device, &refusal, Some(&detail), host_id, out);
            }
        }
    }

    /// Admits a device that passed every check: registers it and welcomes
    /// it (after the host's `Handshake`, if there was one, and then sealed).
    fn admit(
        &mut self,
        hello: &Hello<'_>,
        handshake: Option<Vec<u8>>,
        now: Instant,
        env: Env<'_>,
        out: &mut Vec<Step>,
    ) {
        let Env {
            manifest,
            registry,
            host_id,
            ..
        } = env;
        if let Some(handshake) = handshake {
            out.push(Step::Reply(handshake));
        }
        let device = hello.device_id.to_owned();
        let acked = match registry.hello(&device, &self.peer, hello, now) {
            Ok(acked) => acked,
            Err(full) => {
                let reason = full.to_string();
                let bytes = self.welcome(WelcomeStatus::Busy, &reason, host_id, None);
                out.push(Step::Reply(bytes));
                out.push(Step::Close(format!(
                    "{}: refused device {device:?}: {reason}",
                    self.peer
                )));
                self.closed = true;
                return;
            }
        };
        let precision = session::encoder_file(manifest, &hello.model.encoder_sha256)
            .and_then(|f| f.precision.clone())
            .unwrap_or_default();
        registry.update(&device, |r| r.precision = precision);
        let bytes = self.welcome(WelcomeStatus::Accepted, "welcome", host_id, acked);
        out.push(Step::Reply(bytes));
        self.device = Some(Accepted {
            device,
            check: session::Accepted::from_hello(hello),
            hello: recorded_hello(hello).into(),
        });
    }

    /// A message of an admitted session (plain, or opened from a `Sealed`).
    fn on_session_message(
        &mut self,
        message: &Message<'_>,
        now: Instant,
        env: Env<'_>,
        out: &mut Vec<Step>,
    ) {
        let registry = env.registry;
        match message {
            Message::Latent(latent) => {
                let Some(accepted) = self.device.clone() else {
                    self.close(ByeReason::ProtocolViolation, "Latent before Hello", out);
                    return;
                };
                let vector = match accepted.check.decode(latent) {
                    Ok(vector) => vector,
                    Err(detail) => {
                        self.close(ByeReason::ProtocolViolation, &detail, out);
                        return;
                    }
                };
                match registry.admit(&accepted.device, latent.seq, now, self.limits.seq_window) {
                    Admission::Admitted => {}
                    Admission::Duplicate => return, // counted by the registry
                    Admission::Implausible => {
                        let detail = format!(
                            "latent seq {} is implausibly far ahead of this device's latents",
                            latent.seq
                        );
                        self.close(ByeReason::ProtocolViolation, &detail, out);
                        return;
                    }
                }
                if !self.take_token(now) {
                    registry.update(&accepted.device, |r| r.rate_limited += 1);
                    return;
                }
                out.push(Step::Job(Job {
                    frame: frame::encode_to_vec(message).unwrap_or_default(),
                    hello: accepted.hello,
                    device: accepted.device,
                    seq: latent.seq,
                    capture_us: latent.capture_us,
                    wall: latent.wall,
                    received: env.received,
                    frame_size: (latent.frame_width, latent.frame_height),
                    payload_bytes: latent.payload.len(),
                    latent: vector,
                    done: None,
                }));
            }
            Message::Heartbeat(heartbeat) => {
                if let Some(d) = &self.device {
                    registry.update(&d.device, |r| {
                        r.heartbeat = Some(*heartbeat);
                        r.last_seen = Some(now);
                    });
                }
            }
            Message::Bye(b) => {
                out.push(Step::Close(format!(
                    "{}: device said Bye ({:?}: {:?})",
                    self.peer, b.reason, b.detail
                )));
                self.closed = true;
            }
            other => {
                let detail = format!("a device must not send {:?}", other.kind());
                self.close(ByeReason::ProtocolViolation, &detail, out);
            }
        }
    }

    fn take_token(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refill_at).as_secs_f64();
        self.refill_at = now;
        self.tokens = (self.tokens + elapsed * self.limits.max_fps).min(self.limits.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {

    use latentcam_secure::{DeviceKeys, Initiator, PublicKey, StaticKey};
    use latentcam_wire::{Codec, Latent, Sealed};

    use super::*;
    use crate::ingest::registry::RegistryLimits;

    fn env<'a>(manifest: &'a Manifest, registry: &'a Registry) -> Env<'a> {
        Env {
            manifest,
            registry,
            host_id: "host",
            received: SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000),
        }
    }

    fn manifest() -> Manifest {
        Manifest::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../models")).unwrap()
    }

    fn hello<'a>(manifest: &'a Manifest, id: &'a str, scheme: AuthScheme) -> Hello<'a> {
        let hello = latentcam_testkit::hello::hello_of(manifest, id);
        let auth = AuthOffer {
            scheme,
            ..hello.auth
        };
        Hello { auth, ..hello }
    }

    fn latent(manifest: &Manifest, seq: u64) -> Vec<u8> {
        let payload = Codec::U8Affine
            .encode_to_vec(&vec![0.5f32; manifest.latent_dim])
            .unwrap();
        frame::encode_inner_to_vec(&Message::Latent(Latent {
            seq,
            capture_us: 7,
            frame_width: 640,
            frame_height: 480,
            codec: Codec::U8Affine,
            payload: &payload,
            mac: &[],
            wall: None,
        }))
        .unwrap()
    }

    /// A host's key directory in a fresh scratch directory.
    struct Keys {
        dir: latentcam_testkit::Scratch,
        host: Arc<HostAuth>,
        host_public: PublicKey,
    }

    impl Keys {
        fn new(name: &str, require: bool) -> Self {
            let dir = latentcam_testkit::scratch("conn", name);
            let key = StaticKey::generate();
            let host_public = *key.public();
            let host = Arc::new(HostAuth::new(key, dir.join("devices"), require));
            Self {
                dir,
                host,
                host_public,
            }
        }

        fn register(&self, id: &str, key: &StaticKey) {
            DeviceKeys::add(self.dir.join("devices"), id, *key.public()).unwrap();
        }
    }

    /// What the device read from the host.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Got {
        Welcome(WelcomeStatus, AuthScheme),
        Handshake,
        Bye(ByeReason),
        Ack(u64),
        Other,
    }

    /// A fresh handshake stamp (increasing across the whole test binary).
    fn stamp() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    /// One device connection to a [`Conn`], the device side played by the
    /// secure crate's initiator.
    struct Session<'m> {
        manifest: &'m Manifest,
        conn: Conn,
        now: Instant,
        initiator: Option<Initiator>,
        channel: Option<Channel>,
        /// Every message the host sent, and whether it came sealed.
        got: Vec<(bool, Got)>,
        jobs: Vec<Job>,
        closed: bool,
    }

    impl<'m> Session<'m> {
        fn new(manifest: &'m Manifest, auth: &Arc<HostAuth>) -> Self {
            let now = Instant::now();
            Self {
                manifest,
                conn: Conn::new("test", Limits::default(), Arc::clone(auth), now),
                now,
                initiator: None,
                channel: None,
                got: Vec::new(),
                jobs: Vec::new(),
                closed: false,
            }
        }

        fn feed(&mut self, bytes: &[u8], registry: &Registry) {
            let mut steps = Vec::new();
            self.conn
                .feed(bytes, self.now, env(self.manifest, registry), &mut steps);
            self.take(steps);
        }

        fn take(&mut self, steps: Vec<Step>) {
            let mut replies = Vec::new();
            for step in steps {
                match step {
                    Step::Reply(bytes) => replies.extend(bytes),
                    Step::Job(job) => self.jobs.push(job),
                    Step::Close(_) => self.closed = true,
                }
            }
            let mut decoder: Box<FrameDecoder<MAX_FRAME_LEN>> = Box::default();
            decoder.feed_all(&replies, |m| {
                let (sealed, plain) = match m.expect("the host sends valid frames") {
                    Message::Handshake(h) => {
                        let initiator = self.initiator.take().expect("a handshake was started");
                        self.channel = Some(initiator.finish(h.payload).unwrap());
                        self.got.push((false, Got::Handshake));
                        return;
                    }
                    Message::Sealed(s) => {
                        let channel = self.channel.as_mut().expect("sealed after the handshake");
                        (
                            true,
                            channel.open(&s).expect("the host's sealed messages open"),
                        )
                    }
                    other => (false, frame::encode_inner_to_vec(&other).unwrap()),
                };
                let got = match frame::decode_inner(&plain).unwrap() {
                    Message::Welcome(w) => Got::Welcome(w.status, w.auth.scheme),
                    Message::Bye(b) => Got::Bye(b.reason),
                    Message::Ack(a) => Got::Ack(a.up_to),
                    _ => Got::Other,
                };
                self.got.push((sealed, got));
            });
        }

        /// Sends a plain `Hello` offering `NoiseIk` and the first
        /// handshake message, made with `device`'s key for `host`.
        fn handshake(
            &mut self,
            id: &str,
            device: &StaticKey,
            host: &PublicKey,
            registry: &Registry,
        ) {
            let hello = hello(self.manifest, id, AuthScheme::NoiseIk);
            let (initiator, msg1) = Initiator::start(device, host, &hello, stamp()).unwrap();
            self.initiator = Some(initiator);
            let mut bytes = frame::encode_to_vec(&Message::Hello(hello)).unwrap();
            bytes.extend(
                frame::encode_to_vec(&Message::Handshake(Handshake { payload: &msg1 })).unwrap(),
            );
            self.feed(&bytes, registry);
        }

        /// `kind ‖ body` sealed by the device, as a frame.
        fn seal(&mut self, inner: &[u8]) -> Vec<u8> {
            let message = frame::decode_inner(inner).unwrap();
            self.channel.as_mut().unwrap().seal(&message).unwrap()
        }

        fn welcome(&self) -> Option<(bool, WelcomeStatus, AuthScheme)> {
            self.got.iter().find_map(|(sealed, g)| match g {
                Got::Welcome(status, scheme) => Some((*sealed, *status, *scheme)),
                _ => None,
            })
        }

        fn bye(&self) -> Option<(bool, ByeReason)> {
            self.got.iter().find_map(|(sealed, g)| match g {
                Got::Bye(reason) => Some((*sealed, *reason)),
                _ => None,
            })
        }
    }

    #[test]
    fn an_authenticated_device_streams_sealed_latents_and_gets_sealed_replies() {
        let manifest = manifest();
        let keys = Keys::new("accepted", true);
        let device = StaticKey::generate();
        keys.register("cam-1", &device);
        let registry = Registry::in_memory();
        let mut s = Session::new(&manifest, &keys.host);
        s.handshake("cam-1", &device, &keys.host_public, &registry);
        assert_eq!(
            s.got[0],
            (false, Got::Handshake),
            "the host's handshake goes plain"
        );
        assert_eq!(
            s.welcome(),
            Some((true, WelcomeStatus::Accepted, AuthScheme::NoiseIk)),
            "then a sealed Welcome"
        );
        assert!(s.conn.is_authenticated() && !s.closed);
        assert_eq!(s.conn.device(), Some("cam-1"));
        for seq in 0..3 {
            let sealed = s.seal(&latent(&manifest, seq));
            s.feed(&sealed, &registry);
        }
        assert_eq!(s.jobs.iter().map(|j| j.seq).collect::<Vec<_>>(), [0, 1, 2]);
        // Recordings keep plain frames and a Hello that replays without a
        // handshake.
        let job = &s.jobs[0];
        let mut decoder: Box<FrameDecoder<MAX_FRAME_LEN>> = Box::default();
        let mut kinds = Vec::new();
        decoder.feed_all(&[&job.hello[..], &job.frame[..]].concat(), |m| {
            match m.unwrap() {
                Message::Hello(h) => {
                    kinds.push(format!("Hello {:?} {}", h.auth.scheme, h.device_id))
                }
                other => kinds.push(format!("{:?}", other.kind())),
            }
        });
        assert_eq!(kinds, ["Hello None cam-1", "Latent"]);
        // What the host sends from now on is sealed.
        let ack = s
            .conn
            .encode(&Message::Ack(latentcam_wire::Ack { up_to: 2 }));
        s.take(vec![Step::Reply(ack)]);
        assert_eq!(s.got.last(), Some(&(true, Got::Ack(2))));
        assert_eq!(keys.host.failures(), 0);
        assert!(registry.knows("cam-1"));
    }

    fn assert_refused(s: &Session<'_>, status: WelcomeStatus, registry: &Registry, id: &str) {
        assert_eq!(
            s.welcome(),
            Some((false, status, AuthScheme::None)),
            "{:?}",
            s.got
        );
        assert!(s.closed && s.conn.is_closed());
        assert!(
            !s.got.iter().any(|(_, g)| *g == Got::Handshake),
            "no handshake answer"
        );
        assert!(!s.conn.is_authenticated());
        assert!(!registry.knows(id), "the registry never heard of {id}");
    }

    #[test]
    fn an_unregistered_key_is_refused() {
        let manifest = manifest();
        let keys = Keys::new("unregistered", true);
        let registry = Registry::in_memory();
        let mut s = Session::new(&manifest, &keys.host);
        s.handshake(
            "cam-1",
            &StaticKey::generate(),
            &keys.host_public,
            &registry,
        );
        assert_refused(&s, WelcomeStatus::AuthFailed, &registry, "cam-1");
        assert_eq!(keys.host.failures(), 1);
    }

    #[test]
    fn a_key_registered_for_another_id_cannot_claim_this_one() {
        let manifest = manifest();
        let keys = Keys::new("forger", true);
        let (real, forger) = (StaticKey::generate(), StaticKey::generate());
        keys.register("cam-1", &real);
        keys.register("cam-2", &forger);
        let registry = Registry::in_memory();
        let mut s = Session::new(&manifest, &keys.host);
        s.handshake("cam-1", &forger, &keys.host_public, &registry);
        assert_refused(&s, WelcomeStatus::AuthFailed, &registry, "cam-1");
        // A latent sent anyway goes nowhere.
        s.feed(
            &frame::encode_to_vec(&frame::decode_inner(&latent(&manifest, 0)).unwrap()).unwrap(),
            &registry,
        );
        assert!(s.jobs.is_empty());
    }

    #[test]
    fn a_device_holding_another_host_key_fails_the_handshake() {
        let manifest = manifest();
        let keys = Keys::new("wrong-host", true);
        let device = StaticKey::generate();
        keys.register("cam-1", &device);
        let registry = Registry::in_memory();
        let mut s = Session::new(&manifest, &keys.host);
        let elsewhere = *StaticKey::generate().public();
        s.handshake("cam-1", &device, &elsewhere, &registry);
        assert_refused(&s, WelcomeStatus::AuthFailed, &registry, "cam-1");
    }

    #[test]
    fn a_plain_latent_after_the_handshake_closes_the_connection() {
        let manifest = manifest();
        let keys = Keys::new("plain-after", true);
        let device = StaticKey::generate();
        keys.register("cam-1", &device);
        let registry = Registry::in_memory();
        let mut s = Session::new(&manifest, &keys.host);
        s.handshake("cam-1", &device, &keys.host_public, &registry);
        let plain =
            frame::encode_to_vec(&frame::decode_inner(&latent(&manifest, 0)).unwrap()).unwrap();
        s.feed(&plain, &registry);
        assert!(s.closed);
        assert!(s.jobs.is_empty());
        assert_eq!(
            s.bye(),
            Some((true, ByeReason::ProtocolViolation)),
            "the Bye is sealed"
        );
    }

    #[test]
    fn a_replayed_sealed_latent_closes_the_connection_without_a_second_job() {
        let manifest = manifest();
        let keys = Keys::new("replay", true);
        let device = StaticKey::generate();
        keys.register("cam-1", &device);
        let registry = Registry::in_memory();
        let mut s = Session::new(&manifest, &keys.host);
        s.handshake("cam-1", &device, &keys.host_public, &registry);
        let sealed = s.seal(&latent(&manifest, 0));
        s.feed(&sealed, &registry);
        assert_eq!(s.jobs.len(), 1);
        s.feed(&sealed, &registry);
        assert_eq!(s.jobs.len(), 1, "no second job");
        assert!(s.closed);
        assert_eq!(s.bye(), Some((true, ByeReason::ProtocolViolation)));

        // The same bytes on a new connection (another session's keys) do
        // not even get past the handshake.
        let mut replayed = Session::new(&manifest, &keys.host);
        replayed.feed(&sealed, &registry);
        assert!(replayed.closed && replayed.jobs.is_empty());
    }

    #[test]
    fn tampered_sealed_messages_and_hellos_inside_them_are_violations() {
        let manifest = manifest();
        let keys = Keys::new("tamper", true);
        let device = StaticKey::generate();
        keys.register("cam-1", &device);
        let registry = Registry::in_memory();

        let mut s = Session::new(&manifest, &keys.host);
        s.handshake("cam-1", &device, &keys.host_public, &registry);
        let inner = latent(&manifest, 0);
        let message = frame::decode_inner(&inner).unwrap();
        let sealed_frame = s.channel.as_mut().unwrap().seal(&message).unwrap();
        let mut decoder: Box<FrameDecoder<MAX_FRAME_LEN>> = Box::default();
        let mut tampered = Vec::new();
        decoder.feed_all(&sealed_frame, |m| {
            let Ok(Message::Sealed(sealed)) = m else {
                panic!()
            };
            let mut ciphertext = sealed.ciphertext.to_vec();
            ciphertext[3] ^= 1;
            tampered = frame::encode_to_vec(&Message::Sealed(Sealed {
                counter: sealed.counter,
                ciphertext: &ciphertext,
            }))
            .unwrap();
        });
        s.feed(&tampered, &registry);
        assert!(s.closed && s.jobs.is_empty());

        let mut s = Session::new(&manifest, &keys.host);
        s.handshake("cam-1", &device, &keys.host_public, &registry);
        let again = frame::encode_inner_to_vec(&Message::Hello(hello(
            &manifest,
            "cam-2",
            AuthScheme::None,
        )))
        .unwrap();
        let sealed = s.seal(&again);
        s.feed(&sealed, &registry);
        assert!(s.closed);
        assert!(!registry.knows("cam-2"));
    }

    #[test]
    fn a_revoked_device_is_refused_on_its_next_connection() {
        let manifest = manifest();
        let keys = Keys::new("revoke", true);
        let device = StaticKey::generate();
        keys.register("cam-1", &device);
        let registry = Registry::in_memory();
        let mut first = Session::new(&manifest, &keys.host);
        first.handshake("cam-1", &device, &keys.host_public, &registry);
        assert_eq!(first.welcome().map(|w| w.1), Some(WelcomeStatus::Accepted));
        assert!(DeviceKeys::revoke(keys.dir.join("devices"), "cam-1").unwrap());
        let mut second = Session::new(&manifest, &keys.host);
        second.handshake("cam-1", &device, &keys.host_public, &registry);
        assert_eq!(
            second.welcome(),
            Some((false, WelcomeStatus::AuthFailed, AuthScheme::None))
        );
        assert!(second.closed);
    }

    #[test]
    fn a_host_that_requires_authentication_refuses_plain_devices() {
        let manifest = manifest();
        let keys = Keys::new("required", true);
        let registry = Registry::in_memory();
        let mut s = Session::new(&manifest, &keys.host);
        s.feed(
            &frame::encode_to_vec(&Message::Hello(hello(&manifest, "cam-1", AuthScheme::None)))
                .unwrap(),
            &registry,
        );
        assert_refused(&s, WelcomeStatus::AuthRequired, &registry, "cam-1");
        assert_eq!(keys.host.failures(), 1);
        // The reason tells the operator how to provision the device.
        let mut steps = Vec::new();
        let mut conn = Conn::new("test", Limits::default(), Arc::clone(&keys.host), s.now);
        conn.feed(
            &frame::encode_to_vec(&Message::Hello(hello(&manifest, "cam-1", AuthScheme::None)))
                .unwrap(),
            s.now,
            env(&manifest, &registry),
            &mut steps,
        );
        let Some(Step::Reply(bytes)) = steps.first() else {
            panic!("{steps:?}")
        };
        let mut reason = String::new();
        Box::<FrameDecoder<MAX_FRAME_LEN>>::default().feed_all(bytes, |m| {
            if let Ok(Message::Welcome(w)) = m {
                reason = w.reason.to_owned();
            }
        });
        assert!(reason.contains("latentcam-host keys add"), "{reason}");
    }

    #[test]
    fn a_host_that_does_not_require_it_admits_both_kinds_of_device() {
        let manifest = manifest();
        let keys = Keys::new("optional", false);
        let device = StaticKey::generate();
        keys.register("cam-1", &device);
        let registry = Registry::in_memory();
        let mut plain = Session::new(&manifest, &keys.host);
        plain.feed(
            &frame::encode_to_vec(&Message::Hello(hello(&manifest, "cam-9", AuthScheme::None)))
                .unwrap(),
            &registry,
        );
        assert_eq!(
            plain.welcome(),
            Some((false, WelcomeStatus::Accepted, AuthScheme::None))
        );
        let latent_frame =
            frame::encode_to_vec(&frame::decode_inner(&latent(&manifest, 4)).unwrap()).unwrap();
        plain.feed(&latent_frame, &registry);
        assert_eq!(plain.jobs.len(), 1);
        let mut sealed = Session::new(&manifest, &keys.host);
        sealed.handshake("cam-1", &device, &keys.host_public, &registry);
        assert_eq!(
            sealed.welcome(),
            Some((true, WelcomeStatus::Accepted, AuthScheme::NoiseIk))
        );
        // Both paths record the backend the Hello names and the precision
        // of the manifest file whose SHA-256 it gives.
        let encoder = manifest.files.iter().find(|f| f.role == "encoder").unwrap();
        let devices = registry.snapshot();
        for id in ["cam-9", "cam-1"] {
            assert_eq!(devices[id].backend, "tract", "{id}");
            assert_eq!(
                Some(&devices[id].precision),
                encoder.precision.as_ref(),
                "{id}"
            );
        }
        // Offering authentication is not optional once offered: a bad key
        // is refused, never admitted unauthenticated.
        let mut bad = Session::new(&manifest, &keys.host);
        bad.handshake(
            "cam-1",
            &StaticKey::generate(),
            &keys.host_public,
            &registry,
        );
        assert_eq!(
            bad.welcome(),
            Some((false, WelcomeStatus::AuthFailed, AuthScheme::None))
        );
    }

    #[test]
    fn offers_this_host_cannot_honour_are_refused_not_downgraded() {
        let manifest = manifest();
        let registry = Registry::in_memory();
        // No key: NoiseIk is refused.
        let none = Arc::new(HostAuth::none());
        let mut s = Session::new(&manifest, &none);
        s.handshake(
            "cam-1",
            &StaticKey::generate(),
            &StaticKey::generate().public().clone(),
            &registry,
        );
        assert_refused(&s, WelcomeStatus::AuthFailed, &registry, "cam-1");
        // The never-implemented scheme is refused even with a key.
        let keys = Keys::new("psk", false);
        let mut s = Session::new(&manifest, &keys.host);
        s.feed(
            &frame::encode_to_vec(&Message::Hello(hello(
                &manifest,
                "cam-1",
                AuthScheme::PskHmacSha256,
            )))
            .unwrap(),
            &registry,
        );
        assert_refused(&s, WelcomeStatus::AuthFailed, &registry, "cam-1");
    }

    #[test]
    fn only_the_handshake_may_follow_an_authenticating_hello_and_in_time() {
        let manifest = manifest();
        let keys = Keys::new("order", true);
        keys.register("cam-1", &StaticKey::generate());
        let registry = Registry::in_memory();
        let hello_frame = frame::encode_to_vec(&Message::Hello(hello(
            &manifest,
            "cam-1",
            AuthScheme::NoiseIk,
        )))
        .unwrap();
        let latent_frame =
            frame::encode_to_vec(&frame::decode_inner(&latent(&manifest, 0)).unwrap()).unwrap();
        let mut s = Session::new(&manifest, &keys.host);
        s.feed(&[hello_frame.clone(), latent_frame].concat(), &registry);
        assert!(s.closed && s.jobs.is_empty());
        assert_eq!(s.bye(), Some((false, ByeReason::ProtocolViolation)));
        assert!(!registry.knows("cam-1"));

        let mut s = Session::new(&manifest, &keys.host);
        s.feed(&hello_frame, &registry);
        assert!(!s.closed, "waiting for the handshake");
        let mut steps = Vec::new();
        s.conn.tick(
            s.now + Limits::default().hello_timeout / 2,
            &registry,
            &mut steps,
        );
        assert!(steps.is_empty());
        s.conn.tick(
            s.now + Limits::default().hello_timeout * 2,
            &registry,
            &mut steps,
        );
        s.take(steps);
        assert_eq!(s.bye(), Some((false, ByeReason::Timeout)));
    }

    #[test]
    fn a_full_registry_is_reported_sealed() {
        let manifest = manifest();
        let keys = Keys::new("busy", true);
        let device = StaticKey::generate();
        keys.register("cam-1", &device);
        let registry = Registry::in_memory().with_limits(RegistryLimits {
            max_devices: 1,
            ..RegistryLimits::default()
        });
        let t0 = Instant::now();
        registry
            .hello(
                "other",
                "p",
                &hello(&manifest, "other", AuthScheme::None),
                t0,
            )
            .unwrap();
        let mut s = Session::new(&manifest, &keys.host);
        s.handshake("cam-1", &device, &keys.host_public, &registry);
        assert_eq!(
            s.welcome(),
            Some((true, WelcomeStatus::Busy, AuthScheme::NoiseIk))
        );
        assert!(s.closed);
    }

    /// The `Hello` and first handshake message of a session, as sent, and
    /// the device's side of that handshake.
    fn recorded_handshake(
        manifest: &Manifest,
        id: &str,
        device: &StaticKey,
        host: &PublicKey,
    ) -> (Initiator, Vec<u8>) {
        let hello = hello(manifest, id, AuthScheme::NoiseIk);
        let (initiator, msg1) = Initiator::start(device, host, &hello, stamp()).unwrap();
        let mut bytes = frame::encode_to_vec(&Message::Hello(hello)).unwrap();
        bytes.extend(
            frame::encode_to_vec(&Message::Handshake(Handshake { payload: &msg1 })).unwrap(),
        );
        (initiator, bytes)
    }

    #[test]
    fn a_replayed_handshake_is_refused_as_stale_and_holds_no_slot() {
        let manifest = manifest();
        let keys = Keys::new("stale", true);
        let device = StaticKey::generate();
        keys.register("cam-1", &device);
        let registry = Registry::in_memory();
        let (initiator, recorded) =
            recorded_handshake(&manifest, "cam-1", &device, &keys.host_public);
        let mut first = Session::new(&manifest, &keys.host);
        first.initiator = Some(initiator);
        first.feed(&recorded, &registry);
        assert_eq!(
            first.welcome().map(|(_, status, _)| status),
            Some(WelcomeStatus::Accepted),
            "{:?}",
            first.got
        );
        // The same bytes again, on a new connection (the real device may
        // be connected or not): refused before the host answers the
        // handshake, and counted.
        let failures = keys.host.failures();
        let mut replay = Session::new(&manifest, &keys.host);
        replay.feed(&recorded, &registry);
        assert_eq!(
            replay.welcome(),
            Some((false, WelcomeStatus::AuthFailed, AuthScheme::None))
        );
        assert!(!replay.got.iter().any(|(_, g)| *g == Got::Handshake));
        assert!(replay.closed && replay.conn.device().is_none());
        assert_eq!(keys.host.failures(), failures + 1);
        // A newer handshake from the device is accepted.
        let mut again = Session::new(&manifest, &keys.host);
        again.handshake("cam-1", &device, &keys.host_public, &registry);
        assert_eq!(
            again.welcome(),
            Some((true, WelcomeStatus::Accepted, AuthScheme::NoiseIk))
        );
    }

    /// A one-way device's `Hello` and its Noise K handshake, as datagrams.
    fn one_way_handshake(
        manifest: &Manifest,
        id: &str,
        device: &StaticKey,
        host: &PublicKey,
        stamp: u64,
    ) -> (Channel, Vec<u8>, Vec<u8>) {
        let hello = hello(manifest, id, AuthScheme::NoiseK);
        let (channel, msg) =
            latentcam_secure::initiate_one_way(device, host, &hello, stamp).unwrap();
        (
            channel,
            frame::encode_to_vec(&Message::Hello(hello)).unwrap(),
            frame::encode_to_vec(&Message::Handshake(Handshake { payload: &msg })).unwrap(),
        )
    }

    /// Feeds datagrams to a one-way connection; returns the jobs. Nothing
    /// may ever be sent back.
    fn datagrams(
        conn: &mut Conn,
        manifest: &Manifest,
        registry: &Registry,
        items: &[&[u8]],
    ) -> Vec<u64> {
        let mut jobs = Vec::new();
        for item in items {
            let mut steps = Vec::new();
            conn.feed(item, Instant::now(), env(manifest, registry), &mut steps);
            for step in steps {
                match step {
                    Step::Reply(bytes) => assert!(bytes.is_empty(), "a one-way reply"),
                    Step::Job(job) => jobs.push(job.seq),
                    Step::Close(_) => {}
                }
            }
        }
        jobs
    }

    fn sealed_latent(manifest: &Manifest, channel: &mut Channel, seq: u64) -> Vec<u8> {
        let inner = latent(manifest, seq);
        channel.seal(&frame::decode_inner(&inner).unwrap()).unwrap()
    }

    #[test]
    fn a_one_way_device_authenticates_with_noise_k_and_renews_its_channel() {
        let manifest = manifest();
        let keys = Keys::new("one-way", true);
        let (device, forger) = (StaticKey::generate(), StaticKey::generate());
        keys.register("yard", &device);
        let registry = Registry::in_memory();
        let new = || {
            Conn::new(
                "udp",
                Limits::default(),
                Arc::clone(&keys.host),
                Instant::now(),
            )
            .one_way()
        };
        let mut conn = new();
        let (mut c1, hello1, hs1) =
            one_way_handshake(&manifest, "yard", &device, &keys.host_public, stamp());
        let l0 = sealed_latent(&manifest, &mut c1, 0);
        let l1 = sealed_latent(&manifest, &mut c1, 1);
        assert_eq!(
            datagrams(&mut conn, &manifest, &registry, &[&hello1, &hs1, &l0, &l1]),
            [0, 1]
        );
        assert!(conn.is_authenticated() && conn.device() == Some("yard"));

        // Forged or replayed datagrams change nothing and end nothing: a
        // plain latent, a sealed one replayed, the recorded handshake again,
        // a forger's handshake under the id.
        let failures = keys.host.failures();
        let (_, fh, fhs) =
            one_way_handshake(&manifest, "yard", &forger, &keys.host_public, stamp());
        let plain =
            frame::encode_to_vec(&frame::decode_inner(&latent(&manifest, 7)).unwrap()).unwrap();
        assert_eq!(
            datagrams(
                &mut conn,
                &manifest,
                &registry,
                &[&l1, &hello1, &hs1, &fh, &fhs]
            ),
            Vec::<u64>::new()
        );
        assert_eq!(
            keys.host.failures(),
            failures + 2,
            "the stale and the forged handshake"
        );
        assert!(!conn.is_closed());
        let l2 = sealed_latent(&manifest, &mut c1, 2);
        assert_eq!(datagrams(&mut conn, &manifest, &registry, &[&l2]), [2]);
        // (A plain latent after the handshake is a violation, as on TCP.)
        datagrams(&mut conn, &manifest, &registry, &[&plain]);
        assert!(conn.is_closed());

        // The device's next Hello renews the channel, on a new slot too.
        let mut conn = new();
        let (mut c2, hello2, hs2) =
            one_way_handshake(&manifest, "yard", &device, &keys.host_public, stamp());
        let l3 = sealed_latent(&manifest, &mut c2, 3);
        assert_eq!(
            datagrams(&mut conn, &manifest, &registry, &[&hello2, &hs2, &l3]),
            [3]
        );
        let (mut c3, hello3, hs3) =
            one_way_handshake(&manifest, "yard", &device, &keys.host_public, stamp());
        let l4 = sealed_latent(&manifest, &mut c3, 4);
        let late = sealed_latent(&manifest, &mut c2, 5);
        assert_eq!(
            datagrams(
                &mut conn,
                &manifest,
                &registry,
                &[&hello3, &hs3, &l4, &late]
            ),
            [4],
            "a datagram of the replaced channel is dropped"
        );
        assert!(!conn.is_closed());

        // A replay of the recorded first session from another address.
        let mut other = new();
        assert_eq!(
            datagrams(&mut other, &manifest, &registry, &[&hello1, &hs1, &l0]),
            Vec::<u64>::new()
        );
        assert!(other.is_closed() && other.device().is_none());
    }

    #[test]
    fn each_link_gets_its_own_noise_pattern() {
        let manifest = manifest();
        let keys = Keys::new("patterns", true);
        let device = StaticKey::generate();
        keys.register("cam-1", &device);
        let registry = Registry::in_memory();
        // The mutual scheme on a one-way link: refused.
        let mut conn = Conn::new(
            "udp",
            Limits::default(),
            Arc::clone(&keys.host),
            Instant::now(),
        )
        .one_way();
        let (_, recorded) = recorded_handshake(&manifest, "cam-1", &device, &keys.host_public);
        datagrams(&mut conn, &manifest, &registry, &[&recorded]);
        assert!(conn.is_closed() && conn.device().is_none());
        // The one-way scheme on a stream: refused.
        let mut s = Session::new(&manifest, &keys.host);
        let (_, hello, hs) =
            one_way_handshake(&manifest, "cam-1", &device, &keys.host_public, stamp());
        s.feed(&[hello, hs].concat(), &registry);
        assert_eq!(
            s.welcome(),
            Some((false, WelcomeStatus::AuthFailed, AuthScheme::None))
        );
        assert!(s.closed);
    }
}
