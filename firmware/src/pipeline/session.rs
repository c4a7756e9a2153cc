//! The link side of the pipeline: one thread owns the link and the spool and
//! runs the device's half of the session (wire/SPEC.md, section 2).
//!
//! On a bidirectional link (TCP, serial) every connection starts with
//! `Hello`; no latent is sent until the host's `Welcome` accepts it. The
//! `Welcome`'s `acked` and every later cumulative `Ack` release spooled
//! latents; after a reconnect what is still pending is re-sent in order, in
//! chunks between new latents, so the encoder never waits. On one-way links
//! (UDP, file) `Hello` is repeated every [`Settings::hello_repeat`] and
//! latents are sent as they come.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use latentcam_wire::{Bye, ByeReason, Latent, MAX_SEQ, Message, WelcomeStatus, frame};
use serde::Serialize;

use super::health::{self, Failure, LinkHealth};
use super::{Encoded, Settings, Shared, Stage, StageTiming};
use crate::backoff::Backoff;
use crate::led::LedState;
use crate::link::{Incoming, Link};
use crate::spool::Spool;
use crate::stats::{self, LatencyWindow};

/// Frames re-sent from the spool per loop turn, between new latents.
const RESEND_CHUNK: usize = 32;

/// Latents kept in memory, without a spool, while the link is not ready
/// (before `Welcome`, during a short outage); beyond this the oldest go.
const MEMORY_BACKLOG: usize = 256;

/// Waiting after a refusal: the host will not change its mind quickly.
const REFUSED_RETRY: Duration = Duration::from_secs(30);

/// Highest number a host's `Welcome.acked` may move this device's numbering
/// to (half of [`MAX_SEQ`]): a device without a spool learns where to
/// continue from the host, but a forged `Welcome` must not push it to where
/// it soon runs out of numbers.
const MAX_RENUMBER: u64 = MAX_SEQ / 2;

/// What the link side did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SessionReport {
    /// Latents written to the link as they were produced.
    pub sent: u64,
    /// Latents written from the spool after a reconnect or while catching up.
    pub sent_from_spool: u64,
    /// Latents lost: without a spool, more than 256 waiting for the link
    /// or still waiting at exit; with one, a spool write that failed.
    pub link_dropped: u64,
    /// Latents the full spool dropped (oldest first).
    pub spool_dropped: u64,
    /// Latents still spooled at the end (sent on the next start).
    pub spool_pending: u64,
    /// Spool write or read failures.
    pub spool_errors: u64,
    /// Connections (or opens) made.
    pub connects: u64,
    /// `Welcome`s that accepted the device.
    pub welcomes: u64,
    /// `Welcome`s that refused it.
    pub refusals: u64,
    /// The last refusal's reason.
    pub last_refusal: Option<String>,
    /// Connections on which no `Welcome` came in time.
    pub welcome_timeouts: u64,
    /// Heartbeats sent.
    pub heartbeats: u64,
    /// Highest sequence number the host acknowledged.
    pub acked: Option<u64>,
    /// The sequence number the next latent would have carried.
    pub next_seq: u64,
    /// Bytes written by the link, `Hello`s and heartbeats included.
    pub bytes_sent: u64,
    /// Host → device frames that failed to decode.
    pub incoming_errors: u64,
    /// Acks (or `Welcome.acked`) for latents this device never sent:
    /// ignored, the spool keeps them.
    pub bogus_acks: u64,
}

/// The session thread's result.
pub(crate) struct SessionOutput {
    pub(crate) report: SessionReport,
    pub(crate) send: StageTiming,
    pub(crate) end_to_end: StageTiming,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Not connected; next attempt at the instant.
    Down { retry_at: Instant },
    /// `Hello` sent, waiting for `Welcome` until the instant.
    AwaitWelcome { deadline: Instant },
    /// Latents flow.
    Live,
}

pub(crate) struct Session<'a> {
    link: Box<dyn Link + Send>,
    spool: Option<Spool>,
    hello: Vec<u8>,
    settings: &'a Settings,
    shared: &'a Shared,
    started: Instant,
    phase: Phase,
    backoff: Backoff,
    /// When the link's failures and recovery are worth a log line.
    health: LinkHealth,
    /// Drop the current connection before the next attempt (it failed or
    /// the host did not answer on it).
    needs_fresh: bool,
    /// The link was not connected when it went down: a link that
    /// reconnects by itself (MQTT) is retried as soon as it is back,
    /// without waiting out this session's backoff on top of its own.
    down_while_disconnected: bool,
    next_seq: u64,
    /// Next sequence number to send from the spool when live.
    cursor: u64,
    last_sent: Option<u64>,
    heartbeat_at: Instant,
    hello_at: Instant,
    /// When the next progress line is due, and when and at how many
    /// encoded frames the last one was written.
    progress_at: Instant,
    progress_from: (Instant, u64),
    inference: LatencyWindow,
    frame_buf: Vec<u8>,
    backlog: Vec<(u64, Vec<u8>)>,
    /// Without a spool: latents not yet written, oldest first.
    memory: std::collections::VecDeque<(u64, Vec<u8>)>,
    report: SessionReport,
    send: Stage,
    end_to_end: Stage,
}

impl<'a> Session<'a> {
    pub(crate) fn new(
        link: Box<dyn Link + Send>,
        spool: Option<Spool>,
        hello: Vec<u8>,
        settings: &'a Settings,
        shared: &'a Shared,
        started: Instant,
    ) -> Self {
        // Spooling only makes sense where the host acknowledges.
        let spool = spool.filter(|_| link.is_bidirectional());
        let next_seq = spool.as_ref().map_or(0, Spool::next_seq);
        let cursor = spool
            .as_ref()
            .and_then(Spool::first_pending)
            .unwrap_or(next_seq);
        if let Some(spool) = &spool
            && spool.pending() > 0
        {
            tracing::info!(
                pending = spool.pending(),
                "spool holds latents from an earlier run; they are sent first"
            );
        }
        let now = Instant::now();
        Self {
            link,
            spool,
            hello,
            settings,
            shared,
            started,
            phase: Phase::Down { retry_at: now },
            backoff: settings.reconnect.clone(),
            health: LinkHealth::new(health::REPORT_EVERY),
            needs_fresh: false,
            down_while_disconnected: false,
            next_seq,
            cursor,
            last_sent: None,
            heartbeat_at: now + settings.heartbeat,
            hello_at: now + settings.hello_repeat,
            progress_at: now + settings.progress.unwrap_or_default(),
            progress_from: (now, 0),
            inference: LatencyWindow::new(1024),
            frame_buf: vec![0; frame::ENCODE_BUFFER_LEN],
            backlog: Vec::new(),
            memory: std::collections::VecDeque::new(),
            report: SessionReport::default(),
            send: Stage::new(),
            end_to_end: Stage::new(),
        }
    }

    pub(crate) fn run(
        mut self,
        rx: Receiver<Encoded>,
        queue_depth: &dyn Fn() -> u32,
    ) -> SessionOutput {
        loop {
            let wait = if self.backlog_waiting() {
                Duration::ZERO
            } else {
                Duration::from_millis(10)
            };
            match rx.recv_timeout(wait) {
                Ok(item) => {
                    self.on_latent(item);
                    while let Ok(item) = rx.try_recv() {
                        self.on_latent(item);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.step(queue_depth);
            self.progress();
            self.shared.beat();
        }
        self.drain(queue_depth);
        self.finish()
    }

    fn backlog_waiting(&self) -> bool {
        self.phase == Phase::Live
            && ((self.spool.is_some() && self.cursor < self.next_seq) || !self.memory.is_empty())
    }

    /// Latents not yet written, or (on bidirectional links) not yet
    /// acknowledged.
    fn outstanding(&self) -> u64 {
        let unsent = self.memory.len() as u64;
        if !self.link.is_bidirectional() {
            return unsent;
        }
        match &self.spool {
            Some(spool) => spool.pending(),
            None => {
                unsent
                    + match (self.last_sent, self.report.acked) {
                        (Some(s), Some(a)) => s.saturating_sub(a),
                        (Some(s), None) => s + 1,
                        (None, _) => 0,
                    }
            }
        }
    }

    fn drain(&mut self, queue_depth: &dyn Fn() -> u32) {
        let deadline = Instant::now() + self.settings.drain_timeout;
        while self.outstanding() > 0 && Instant::now() < deadline {
            self.step(queue_depth);
            if matches!(self.phase, Phase::Down { .. }) {
                std::thread::sleep(Duration::from_millis(10));
            } else if self.phase == Phase::Live && !self.backlog_waiting() {
                // Only acks are awaited: wait for them instead of spinning
                // (a live step polls for 1 ms only).
                self.poll(Duration::from_millis(20));
            }
        }
        let left = self.outstanding();
        if left > 0 {
            if self.spool.is_some() {
                tracing::info!(
                    pending = left,
                    "stopping with latents not yet acknowledged; they stay spooled and are sent on the next start"
                );
            } else {
                tracing::warn!(
                    unacknowledged = left,
                    "stopping with latents the host has not acknowledged (no spool)"
                );
            }
        }
        if self.phase == Phase::Live {
            let bye = Message::Bye(Bye {
                reason: ByeReason::Shutdown,
                detail: "edge shutting down",
            });
            if let Ok(bytes) = frame::encode_to_vec(&bye) {
                let _ = self.link.send(&bytes);
            }
        }
        if let Some(spool) = self.spool.as_mut()
            && let Err(e) = spool.sync()
        {
            self.report.spool_errors += 1;
            tracing::error!("{e}");
        }
    }

    fn finish(mut self) -> SessionOutput {
        self.finish_memory();
        let stats = self.link.stats();
        self.report.bytes_sent = stats.bytes_sent;
        self.report.incoming_errors = stats.frame_errors;
        self.report.next_seq = self.next_seq;
        if let Some(spool) = &self.spool {
            self.report.spool_dropped = spool.dropped();
            self.report.spool_pending = spool.pending();
        }
        tracing::info!(link = %self.link.describe(), "link closed");
        SessionOutput {
            report: self.report,
            send: self.send.finish(),
            end_to_end: self.end_to_end.finish(),
        }
    }

    fn step(&mut self, queue_depth: &dyn Fn() -> u32) {
        let now = Instant::now();
        match self.phase {
            Phase::Down { retry_at } => {
                if now >= retry_at || (self.down_while_disconnected && self.link.is_connected()) {
                    self.connect();
                }
            }
            Phase::AwaitWelcome { deadline } => {
                self.poll(Duration::from_millis(5));
                if matches!(self.phase, Phase::AwaitWelcome { .. }) && Instant::now() >= deadline {
                    self.report.welcome_timeouts += 1;
                    self.fail(&format!(
                        "{}: no Welcome within {:?} of Hello (is a latentcam host listening there?)",
                        self.link.describe(),
                        self.settings.welcome_timeout
                    ));
                }
            }
            Phase::Live => {
                if self.link.is_bidirectional() {
                    self.poll(Duration::from_millis(1));
                }
                self.resend_chunk();
                self.periodic(queue_depth);
            }
        }
    }

    fn connect(&mut self) {
        if (self.needs_fresh || !self.link.is_connected())
            && let Err(e) = self.link.reconnect()
        {
            if !e.is_transient() {
                // A configuration problem: say so loudly, keep trying
                // slowly (the adapter may be plugged in later).
                self.shared.led(LedState::Error);
                tracing::error!("{e}");
            }
            self.fail(&e.to_string());
            return;
        }
        self.needs_fresh = false;
        self.report.connects += 1;
        if let Err(e) = self.link.send(&self.hello) {
            self.fail(&e.to_string());
            return;
        }
        if self.link.is_bidirectional() {
            self.phase = Phase::AwaitWelcome {
                deadline: Instant::now() + self.settings.welcome_timeout,
            };
        } else {
            self.go_live();
        }
    }

    fn go_live(&mut self) {
        self.phase = Phase::Live;
        self.backoff.reset();
        self.shared.led(LedState::Streaming);
        self.hello_at = Instant::now() + self.settings.hello_repeat;
        if let Some(down_for) = self.health.up(Instant::now()) {
            tracing::info!(
                "link up again after {} down; {} latents to deliver",
                health::readable(down_for),
                self.outstanding()
            );
        }
        tracing::info!(link = %self.link.describe(), "streaming");
    }

    fn fail(&mut self, why: &str) {
        let delay = self.backoff.next_delay();
        self.fail_after(why, delay);
    }

    /// The link failed (or the host refused or did not answer): retry
    /// after `delay`. The first failure since the link was up is a
    /// warning, and so is one a minute while it stays down, each with the
    /// latents waiting for the host; the rest are debug lines.
    fn fail_after(&mut self, why: &str, delay: Duration) {
        let was_down = matches!(self.phase, Phase::Down { .. });
        let waiting = self.outstanding();
        let retry = health::readable(delay);
        match self.health.failed(Instant::now()) {
            Failure::First => {
                tracing::warn!("link down: {why}; {waiting} latents waiting; retrying in {retry}");
            }
            Failure::StillDown { down_for, attempts } => tracing::warn!(
                "link still down after {} and {attempts} attempts: {why}; {waiting} latents \
                 waiting; retrying in {retry}",
                health::readable(down_for)
            ),
            Failure::Quiet => {
                tracing::debug!(
                    "link still down: {why}; {waiting} latents waiting; retrying in {retry}"
                );
            }
        }
        if !was_down {
            self.shared.led(LedState::LinkDown);
        }
        self.phase = Phase::Down {
            retry_at: Instant::now() + delay,
        };
        self.needs_fresh = true;
        self.down_while_disconnected = !self.link.is_connected();
    }

    fn poll(&mut self, timeout: Duration) {
        if !self.link.is_connected() {
            self.fail("connection lost");
            return;
        }
        match self.link.poll_incoming(timeout) {
            Ok(messages) => {
                for message in messages {
                    self.on_incoming(message);
                }
            }
            Err(e) => self.fail(&e.to_string()),
        }
    }

    fn on_incoming(&mut self, message: Incoming) {
        match message {
            Incoming::Welcome {
                status: WelcomeStatus::Accepted,
                host_id,
                acked,
                ..
            } => {
                self.report.welcomes += 1;
                let mut floor = 0;
                if let Some(a) = acked {
                    if a < self.next_seq {
                        self.apply_ack(a);
                        floor = a + 1;
                    } else if a < MAX_RENUMBER {
                        // Never an ack: the spool keeps whatever it holds.
                        tracing::warn!(
                            host_holds = a,
                            next_seq = self.next_seq,
                            "the host already holds latents numbered above this device's \
                             (no spool, or the spool directory was wiped?); numbering new \
                             latents after them"
                        );
                        self.next_seq = a + 1;
                    } else {
                        self.bogus_ack(a);
                    }
                }
                self.cursor = self
                    .spool
                    .as_ref()
                    .and_then(Spool::first_pending)
                    .unwrap_or(self.next_seq)
                    .max(floor);
                tracing::info!(
                    host = %latentcam_wire::printable(&host_id),
                    host_holds = ?acked,
                    resend = self.next_seq.saturating_sub(self.cursor),
                    "host accepted the device"
                );
                self.go_live();
            }
            Incoming::Welcome { status, reason, .. } => {
                self.report.refusals += 1;
                let fix = match status {
                    WelcomeStatus::AuthFailed | WelcomeStatus::AuthRequired => {
                        "check [link] host_key and key_file, and that the host lists this \
                         device's public key"
                    }
                    _ => "fix the model or configuration on one side",
                };
                tracing::error!(
                    "host refused this device ({status:?}): {} — {fix}; retrying every \
                     {REFUSED_RETRY:?}",
                    latentcam_wire::printable(&reason)
                );
                self.report.last_refusal = Some(reason);
                let delay = REFUSED_RETRY.max(self.backoff.next_delay());
                self.fail_after("refused by the host", delay);
                self.shared.led(LedState::Error);
            }
            Incoming::Ack { up_to } => self.apply_ack(up_to),
            Incoming::Bye { reason, detail } => {
                tracing::info!(
                    "host ended the session ({reason:?}): {}",
                    latentcam_wire::printable(&detail)
                );
                self.fail("the host said Bye");
            }
            other => tracing::debug!("ignored host message {other:?}"),
        }
    }

    /// An ack for latents this device never sent: counted and ignored.
    fn bogus_ack(&mut self, up_to: u64) {
        self.report.bogus_acks += 1;
        let n = self.report.bogus_acks;
        if n == 1 || n.is_multiple_of(100) {
            tracing::warn!(
                up_to,
                next_seq = self.next_seq,
                bogus_acks = n,
                "ignoring an acknowledgement of latents this device never sent \
                 (a confused or forged host); the spool keeps everything"
            );
        }
    }

    fn apply_ack(&mut self, up_to: u64) {
        if up_to >= self.next_seq {
            self.bogus_ack(up_to);
            return;
        }
        self.report.acked = Some(self.report.acked.map_or(up_to, |a| a.max(up_to)));
        if let Some(spool) = self.spool.as_mut()
            && let Err(e) = spool.ack(up_to)
        {
            self.report.spool_errors += 1;
            tracing::error!("{e}");
        }
    }

    fn on_latent(&mut self, item: Encoded) {
        let started = Instant::now();
        self.inference.record(item.encode_us);
        let seq = self.next_seq;
        if seq > MAX_SEQ {
            // Unreachable in practice (see MAX_RENUMBER); never wrap.
            self.report.link_dropped += 1;
            tracing::error!("sequence numbers exhausted; latent dropped");
            return;
        }
        self.next_seq += 1;
        let message = Message::Latent(Latent {
            seq,
            capture_us: item.capture_us,
            frame_width: item.width,
            frame_height: item.height,
            codec: self.settings.codec,
            payload: &item.payload,
            mac: &[],
            wall: item.wall,
        });
        let n = match frame::encode(&message, &mut self.frame_buf) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!("cannot frame latent {seq}: {e}");
                self.report.link_dropped += 1;
                return;
            }
        };
        let spooled = match self.spool.as_mut() {
            None => false,
            Some(spool) => match spool.push(seq, &self.frame_buf[..n]) {
                Ok(()) => true,
                Err(e) => {
                    self.report.spool_errors += 1;
                    if self.report.spool_errors == 1 || self.report.spool_errors.is_multiple_of(100)
                    {
                        tracing::error!("latent {seq} not spooled: {e}");
                    }
                    false
                }
            },
        };
        // Send now only when nothing older is still waiting.
        let in_order = match &self.spool {
            Some(_) => self.cursor == seq,
            None => self.memory.is_empty(),
        };
        let mut sent = false;
        if self.phase == Phase::Live && in_order {
            match self.link.send(&self.frame_buf[..n]) {
                Ok(()) => {
                    sent = true;
                    self.cursor = seq + 1;
                    self.last_sent = Some(seq);
                    self.report.sent += 1;
                    self.shared.counters.sent.fetch_add(1, Ordering::Relaxed);
                    self.end_to_end.record(item.captured_at.elapsed());
                }
                Err(e) => self.fail(&e.to_string()),
            }
        }
        if !sent && !spooled {
            if self.spool.is_none() {
                // No spool: hold it in memory until the link is ready.
                if self.memory.len() == MEMORY_BACKLOG {
                    self.memory.pop_front();
                    self.report.link_dropped += 1;
                }
                self.memory.push_back((seq, self.frame_buf[..n].to_vec()));
            } else {
                self.report.link_dropped += 1;
                if self.cursor == seq {
                    // Not in the spool, so the backlog must not wait for it.
                    self.cursor = seq + 1;
                }
            }
        }
        self.send.record(started.elapsed());
    }

    fn resend_chunk(&mut self) {
        let Some(spool) = self.spool.as_mut() else {
            self.send_from_memory();
            return;
        };
        if self.cursor >= self.next_seq {
            return;
        }
        self.backlog.clear();
        if let Err(e) = spool.read_pending(self.cursor, RESEND_CHUNK, &mut self.backlog) {
            self.report.spool_errors += 1;
            tracing::error!("cannot read the spool, skipping its backlog: {e}");
            self.cursor = self.next_seq;
            return;
        }
        if self.backlog.is_empty() {
            self.cursor = self.next_seq;
            return;
        }
        let backlog = std::mem::take(&mut self.backlog);
        for (seq, bytes) in &backlog {
            if let Err(e) = self.link.send(bytes) {
                self.fail(&e.to_string());
                break;
            }
            self.cursor = seq + 1;
            self.last_sent = Some(*seq);
            self.report.sent_from_spool += 1;
            self.shared.counters.sent.fetch_add(1, Ordering::Relaxed);
        }
        self.backlog = backlog;
    }

    fn send_from_memory(&mut self) {
        for _ in 0..RESEND_CHUNK {
            let Some((seq, bytes)) = self.memory.front() else {
                return;
            };
            if let Err(e) = self.link.send(bytes) {
                self.fail(&e.to_string());
                return;
            }
            self.last_sent = Some(*seq);
            self.memory.pop_front();
            self.report.sent += 1;
            self.shared.counters.sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn finish_memory(&mut self) {
        // Whatever never left memory is lost with the process.
        self.report.link_dropped += self.memory.len() as u64;
        self.memory.clear();
    }

    /// Every [`Settings::progress`], one INFO line on how the run goes,
    /// whatever the link's state.
    fn progress(&mut self) {
        let Some(every) = self.settings.progress else {
            return;
        };
        let now = Instant::now();
        if now < self.progress_at {
            return;
        }
        let counters = &self.shared.counters;
        let encoded = counters.encoded.load(Ordering::Relaxed);
        let (since, encoded_then) = self.progress_from;
        let seconds = now.saturating_duration_since(since).as_secs_f64().max(1e-3);
        let fps = encoded.saturating_sub(encoded_then) as f64 / seconds;
        self.progress_from = (now, encoded);
        self.progress_at = now + every;
        let link = if self.phase == Phase::Live {
            "up"
        } else {
            "down"
        };
        tracing::info!(
            "running for {}: {} frames captured, {encoded} encoded ({fps:.1} fps lately), \
             {} sent, {} dropped by the queue; link {link}, {} latents waiting",
            health::readable(now.saturating_duration_since(self.started)),
            counters.captured.load(Ordering::Relaxed),
            counters.sent.load(Ordering::Relaxed),
            counters.dropped.load(Ordering::Relaxed),
            self.outstanding()
        );
    }

    fn periodic(&mut self, queue_depth: &dyn Fn() -> u32) {
        let now = Instant::now();
        if now >= self.heartbeat_at {
            self.heartbeat_at = now + self.settings.heartbeat;
            if let Some(spool) = &self.spool {
                self.shared
                    .counters
                    .spool_dropped
                    .store(spool.dropped(), Ordering::Relaxed);
            }
            let heartbeat = stats::heartbeat(
                &self.shared.counters,
                self.inference.take(),
                u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                queue_depth(),
                self.spool.as_ref().map_or(0, Spool::pending),
            );
            match frame::encode_to_vec(&Message::Heartbeat(heartbeat)) {
                Ok(bytes) => match self.link.send(&bytes) {
                    Ok(()) => self.report.heartbeats += 1,
                    Err(e) => {
                        self.fail(&e.to_string());
                        return;
                    }
                },
                Err(e) => tracing::error!("cannot frame heartbeat: {e}"),
            }
        }
        if !self.link.is_bidirectional() && now >= self.hello_at {
            self.hello_at = now + self.settings.hello_repeat;
            if let Err(e) = self.link.send(&self.hello) {
                self.fail(&e.to_string());
            }
        }
    }
}
