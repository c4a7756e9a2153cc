//! One device connection's half of the session, as a pure state machine:
//! bytes in, replies / latents / a close decision out. The TCP and serial
//! servers drive it; unit tests drive it with byte strings.

use std::sync::Arc;
use std::time::{Duration, Instant};

use latentcam_firmware::manifest::Manifest;
use latentcam_wire::frame::MAX_FRAME_LEN;
use latentcam_wire::{
    AuthChallenge, AuthScheme, Bye, ByeReason, Codec, FrameDecoder, MAX_TEXT_LEN, Message,
    PROTOCOL_VERSION, Welcome, WelcomeStatus, fit_text, frame,
};

use super::registry::{Admission, Registry};
use crate::session::check_hello;

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
    /// Source frame size.
    pub frame_size: (u32, u32),
    /// Wire bytes of the latent's frame payload (for byte accounting).
    pub payload_bytes: usize,
    /// The decoded latent.
    pub latent: Vec<f32>,
    /// The latent's frame, re-encoded (what a recording stores).
    pub frame: Vec<u8>,
    /// The device's `Hello` frame, re-encoded (recordings repeat it).
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
    codec: Codec,
    dim: usize,
    hello: Arc<[u8]>,
}

/// One connection's protocol state.
pub struct Conn {
    peer: String,
    decoder: Box<FrameDecoder<MAX_FRAME_LEN>>,
    device: Option<Accepted>,
    opened: Instant,
    last_frame: Instant,
    errors_in_a_row: u32,
    tokens: f64,
    refill_at: Instant,
    limits: Limits,
    closed: bool,
}

fn bye(reason: ByeReason, detail: &str) -> Vec<u8> {
    let detail = fit_text(detail, MAX_TEXT_LEN);
    frame::encode_to_vec(&Message::Bye(Bye { reason, detail })).unwrap_or_default()
}

/// A `Welcome` frame (no authentication); a reason longer than the wire
/// allows is cut, never a reason to send nothing.
pub(crate) fn welcome(
    status: WelcomeStatus,
    reason: &str,
    host_id: &str,
    acked: Option<u64>,
) -> Vec<u8> {
    frame::encode_to_vec(&Message::Welcome(Welcome {
        protocol: PROTOCOL_VERSION.into(),
        status,
        reason: fit_text(reason, MAX_TEXT_LEN),
        host_id: fit_text(host_id, latentcam_wire::MAX_ID_LEN),
        acked,
        auth: AuthChallenge {
            scheme: AuthScheme::None,
            host_nonce: [0; latentcam_wire::NONCE_LEN],
            host_proof: &[],
        },
    }))
    .unwrap_or_default()
}

impl Conn {
    /// A new connection from `peer` (for logs).
    pub fn new(peer: impl Into<String>, limits: Limits, now: Instant) -> Self {
        Self {
            peer: peer.into(),
            decoder: Box::default(),
            device: None,
            opened: now,
            last_frame: now,
            errors_in_a_row: 0,
            tokens: limits.burst,
            refill_at: now,
            limits,
            closed: false,
        }
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

    /// Checks time-based limits: the Hello deadline, then the idle timeout.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Step>) {
        if self.closed {
            return;
        }
        if self.device.is_none() {
            if now.saturating_duration_since(self.opened) > self.limits.hello_timeout {
                self.close(
                    ByeReason::Timeout,
                    &format!("no Hello within {:?}", self.limits.hello_timeout),
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
    }

    fn close(&mut self, reason: ByeReason, detail: &str, out: &mut Vec<Step>) {
        if !self.closed {
            out.push(Step::Reply(bye(reason, detail)));
            out.push(Step::Close(format!("{}: {detail}", self.peer)));
            self.closed = true;
        }
    }

    /// Feeds received bytes.
    pub fn feed(
        &mut self,
        bytes: &[u8],
        now: Instant,
        manifest: &Manifest,
        registry: &Registry,
        host_id: &str,
        out: &mut Vec<Step>,
    ) {
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
                    self.on_message(&message, now, manifest, registry, host_id, out);
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
        manifest: &Manifest,
        registry: &Registry,
        host_id: &str,
        out: &mut Vec<Step>,
    ) {
        match message {
            Message::Hello(hello) => {
                if let Err(refusal) = check_hello(manifest, hello) {
                    out.push(Step::Reply(welcome(
                        refusal.status,
                        &refusal.reason,
                        host_id,
                        None,
                    )));
                    out.push(Step::Close(format!(
                        "{}: refused device {:?}: {}",
                        self.peer, hello.device_id, refusal.reason
                    )));
                    self.closed = true;
                    return;
                }
                let device = hello.device_id.to_owned();
                let acked = match registry.hello(&device, &self.peer, hello, now) {
                    Ok(acked) => acked,
                    Err(full) => {
                        let reason = full.to_string();
                        out.push(Step::Reply(welcome(
                            WelcomeStatus::Busy,
                            &reason,
                            host_id,
                            None,
                        )));
                        out.push(Step::Close(format!(
                            "{}: refused device {device:?}: {reason}",
                            self.peer
                        )));
                        self.closed = true;
                        return;
                    }
                };
                out.push(Step::Reply(welcome(
                    WelcomeStatus::Accepted,
                    "welcome",
                    host_id,
                    acked,
                )));
                self.device = Some(Accepted {
                    device,
                    codec: hello.codec,
                    dim: hello.model.latent_dim as usize,
                    hello: frame::encode_to_vec(message).unwrap_or_default().into(),
                });
            }
            Message::Latent(latent) => {
                let Some(accepted) = self.device.clone() else {
                    self.close(ByeReason::ProtocolViolation, "Latent before Hello", out);
                    return;
                };
                if latent.codec != accepted.codec {
                    self.close(
                        ByeReason::ProtocolViolation,
                        &format!(
                            "Latent in codec {:?}, Hello said {:?}",
                            latent.codec, accepted.codec
                        ),
                        out,
                    );
                    return;
                }
                let vector = match latent.codec.decode_to_vec(latent.payload) {
                    Ok(v) if v.len() == accepted.dim => v,
                    Ok(v) => {
                        let detail =
                            format!("latent of {} values, Hello said {}", v.len(), accepted.dim);
                        self.close(ByeReason::ProtocolViolation, &detail, out);
                        return;
                    }
                    Err(e) => {
                        let detail = format!("undecodable latent payload: {e}");
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
