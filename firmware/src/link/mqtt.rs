//! MQTT 5 client to a broker, following the topic contract of
//! [`latentcam_wire::mqtt`] (`wire/SPEC.md`, section 9).
//!
//! Every message carries one frame, the same bytes as on every other link:
//!
//! | frame | topic | QoS | retained |
//! |---|---|---|---|
//! | `Hello` | `latentcam/<site>/<device>/hello` | 1 | yes |
//! | `Latent`, `Bye` (and anything else) | `…/latent/<p>` | 1 | no |
//! | `Heartbeat` | `…/heartbeat` | 0 | no |
//! | `"online"` / will `"offline"` (text) | `…/status` | 1 | yes |
//!
//! and the link subscribes (QoS 1) to `…/welcome` and `…/ack/<p>`, where a
//! host worker answers with `Welcome` and retained cumulative `Ack` frames.
//! So the session on top ([`crate::pipeline`]) runs exactly as over TCP:
//! `Hello`, wait for `Welcome`, stream, release the spool on `Ack`.
//!
//! A background thread owns the [`rumqttc`] event loop: it reconnects with
//! [`Backoff`] after an error, announces `"online"` and subscribes on every
//! `ConnAck`, and hands decoded `Welcome`/`Ack` frames to the link. The
//! session is persistent (clean start off, a session expiry), so QoS 1
//! messages in flight when the connection broke are completed on
//! reconnection.
//!
//! The broker acknowledging a publish does not mean a worker holds the
//! latent: a worker may die with latents queued for it. The link therefore
//! watches the worker's `Ack`s: when latents are outstanding and no `Ack`
//! has advanced for [`MqttConfig::ack_timeout`], [`Link::poll_incoming`]
//! reports the link down. The session then calls [`Link::reconnect`], which
//! keeps a healthy broker connection, re-publishes `Hello`, and after the
//! new `Welcome` re-sends what its spool still holds.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub use latentcam_secure::tls::{ClientCert, tls_client_config};
pub use latentcam_wire::mqtt::{
    Broker, DEFAULT_PORT, DEFAULT_TLS_PORT, parse_address, parse_broker,
};
use latentcam_wire::mqtt::{DeviceTopics, valid_level};
use latentcam_wire::{Message, frame};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, LastWill, Packet};
use rumqttc::v5::{Client, ClientError, Connection, Event, MqttOptions};
use rumqttc::{Outgoing, TlsConfiguration, Transport};

use super::{Backoff, Incoming, IncomingDecoder, Link, LinkError, LinkStats};

/// Keep-alive interval: a dead broker connection is noticed within ~1.5×.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// Requests (publishes) the client queues for its event loop.
const REQUEST_CAPACITY: usize = 512;

/// Longest [`Link::send`] waits for room in a full request queue.
const PUBLISH_WAIT: Duration = Duration::from_secs(1);

/// Seconds one connection attempt (TCP connect and `ConnAck`) may take.
const CONNECT_TIMEOUT_S: u64 = 5;

/// How often the event-loop thread looks at its stop flag while connected.
const POLL_CONNECTED: Duration = Duration::from_millis(100);

/// Wait per poll while connecting; longer than [`CONNECT_TIMEOUT_S`] so a
/// slow connection attempt is never cut off by the poll itself.
const POLL_CONNECTING: Duration = Duration::from_secs(CONNECT_TIMEOUT_S + 1);

/// Longest a dropped link waits for its last messages (`"offline"`, the
/// MQTT `DISCONNECT`) to leave.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Settings of an [`MqttLink`].
#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// The broker as `host:port`, `host` (port 1883), `mqtt://host:port`,
    /// or `mqtts://host:port` (TLS, port 8883 by default).
    pub address: String,
    /// With `mqtts://`: a PEM file of the certificate authorities that may
    /// sign the broker's certificate (a private CA); `None` trusts the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
    /// With `mqtts://`: the certificate this device proves its id with, for
    /// a broker that requires client certificates.
    pub client_cert: Option<ClientCert>,
    /// The `<site>` topic level.
    pub site: String,
    /// The `<device>` topic level: the device id sent in `Hello`.
    pub device_id: String,
    /// User name for the broker, if it requires one.
    pub username: Option<String>,
    /// Password for the broker (only sent with a user name).
    pub password: Option<String>,
    /// How long the broker keeps the device's session (subscriptions and
    /// QoS 1 messages in flight) after the connection is lost.
    pub session_expiry: Duration,
    /// Outstanding latents without an advancing `Ack` for this long mean
    /// the worker is gone: the link reports itself down.
    pub ack_timeout: Duration,
    /// Most QoS 1 publishes awaiting the broker's `PUBACK` at once.
    pub inflight: u16,
    /// Delays between failed connection attempts.
    pub backoff: Backoff,
}

impl MqttConfig {
    /// Defaults for a broker address, site and device: no credentials,
    /// session expiry 1 day, ack timeout 10 s, 64 in flight, backoff
    /// 100 ms doubling to 30 s.
    pub fn new(
        address: impl Into<String>,
        site: impl Into<String>,
        device_id: impl Into<String>,
    ) -> Self {
        Self {
            address: address.into(),
            site: site.into(),
            device_id: device_id.into(),
            ca_file: None,
            client_cert: None,
            username: None,
            password: None,
            session_expiry: Duration::from_secs(86_400),
            ack_timeout: Duration::from_secs(10),
            inflight: 64,
            backoff: Backoff::default(),
        }
    }
}

/// True for `localhost` and loopback addresses (brackets allowed).
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_matches(['[', ']']);
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// State shared with the event-loop thread.
#[derive(Debug, Default)]
struct Status {
    /// Between a `ConnAck` and the next connection error.
    connected: AtomicBool,
    /// The thread must end now.
    stop: AtomicBool,
    /// The link is being dropped: end after the `DISCONNECT` went out.
    closing: AtomicBool,
    connects: AtomicU64,
    frames_received: AtomicU64,
    frame_errors: AtomicU64,
    /// The last connection error, for [`LinkError::Down`].
    last_error: Mutex<Option<String>>,
}

impl Status {
    fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    fn set_last_error(&self, error: Option<String>) {
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = error;
        }
    }
}

/// Where a frame is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Hello,
    Latent { seq: Option<u64> },
    Heartbeat,
}

/// An MQTT 5 connection to a broker, kept up by a background thread.
pub struct MqttLink {
    name: String,
    topics: DeviceTopics,
    client: Client,
    status: Arc<Status>,
    incoming: Receiver<Incoming>,
    thread: Option<JoinHandle<()>>,
    ack_timeout: Duration,
    hello: Option<Vec<u8>>,
    /// A copy of the frame being sent, decoded in place to route it.
    scratch: Vec<u8>,
    frames_sent: u64,
    bytes_sent: u64,
    /// Highest `Latent` seq published.
    published: Option<u64>,
    /// Highest seq a worker acknowledged.
    acked: Option<u64>,
    /// When an `Ack` last advanced (or latents became outstanding).
    ack_clock: Instant,
}

impl std::fmt::Debug for MqttLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttLink")
            .field("name", &self.name)
            .field("connected", &self.is_connected())
            .field("published", &self.published)
            .field("acked", &self.acked)
            .finish_non_exhaustive()
    }
}

impl MqttLink {
    /// Checks the configuration and starts connecting in the background.
    /// A malformed address, a site or device id that is not a valid topic
    /// level, or impossible limits are [`LinkError::Config`]; a broker that
    /// is not reachable yet is not an error (the link is down until it is).
    pub fn new(config: MqttConfig) -> Result<Self, LinkError> {
        let shown = format!("mqtt://{}", config.address);
        let problem = |problem: String| LinkError::Config {
            link: shown.clone(),
            problem,
        };
        let Broker { host, port, tls } =
            parse_broker(&config.address).map_err(|p| problem(format!("bad address: {p}")))?;
        let tls = if tls {
            let ca = config.ca_file.as_deref();
            Some(tls_client_config(ca, config.client_cert.as_ref()).map_err(problem)?)
        } else if config.client_cert.is_some() {
            return Err(problem(
                "a client certificate is only used with a TLS broker (mqtts://)".into(),
            ));
        } else {
            if config.username.is_some() && !is_loopback_host(&host) {
                tracing::warn!(
                    "the MQTT password for {host} travels in cleartext: use mqtts:// to encrypt it"
                );
            }
            None
        };
        for (what, level) in [("site", &config.site), ("device id", &config.device_id)] {
            if !valid_level(level) {
                return Err(problem(format!(
                    "{what} {level:?} cannot be an MQTT topic level: use 1 to {} bytes without \
                     `/`, `+`, `#` or control characters, not starting with `$` or `_`",
                    latentcam_wire::mqtt::MAX_LEVEL_LEN
                )));
            }
        }
        if config.inflight == 0 {
            return Err(problem("inflight must be at least 1".into()));
        }
        if config.ack_timeout.is_zero() {
            return Err(problem("the ack timeout must be longer than zero".into()));
        }
        let topics = DeviceTopics::new(&config.site, &config.device_id)
            .ok_or_else(|| problem("site or device id is not a valid topic level".into()))?;
        let name = format!(
            "{}://{host}:{port} site {} device {}",
            if tls.is_some() { "mqtts" } else { "mqtt" },
            config.site,
            config.device_id
        );

        let client_id = format!("latentcam-edge-{}-{}", config.site, config.device_id);
        // rumqttc wants an IPv6 address without its brackets.
        let mut options = MqttOptions::new(client_id, host.trim_matches(['[', ']']), port);
        if let Some(tls) = tls {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
        }
        options
            .set_keep_alive(KEEP_ALIVE)
            .set_clean_start(false)
            .set_session_expiry_interval(Some(
                u32::try_from(config.session_expiry.as_secs()).unwrap_or(u32::MAX),
            ))
            .set_outgoing_inflight_upper_limit(config.inflight)
            .set_request_channel_capacity(REQUEST_CAPACITY)
            .set_connection_timeout(CONNECT_TIMEOUT_S)
            // Room for any frame the wire allows, plus the MQTT header.
            .set_max_packet_size(Some((frame::MAX_ENCODED_LEN + 1024) as u32))
            .set_last_will(LastWill::new(
                &topics.status,
                "offline",
                QoS::AtLeastOnce,
                true,
                None,
            ));
        if let Some(user) = &config.username {
            options.set_credentials(user, config.password.clone().unwrap_or_default());
        }
        let (client, connection) = Client::new(options, REQUEST_CAPACITY);
        let status = Arc::new(Status::default());
        let (tx, rx) = mpsc::channel();
        let thread = {
            let (client, topics, status) = (client.clone(), topics.clone(), Arc::clone(&status));
            let (backoff, name) = (config.backoff.clone(), name.clone());
            thread::Builder::new()
                .name("mqtt".into())
                .spawn(move || drive(connection, &client, &topics, &status, &tx, backoff, &name))
                .map_err(|e| LinkError::Io {
                    link: shown.clone(),
                    source: e,
                })?
        };
        Ok(Self {
            name,
            topics,
            client,
            status,
            incoming: rx,
            thread: Some(thread),
            ack_timeout: config.ack_timeout,
            hello: None,
            scratch: Vec::new(),
            frames_sent: 0,
            bytes_sent: 0,
            published: None,
            acked: None,
            ack_clock: Instant::now(),
        })
    }

    /// The topics this device publishes and subscribes to.
    pub fn topics(&self) -> &DeviceTopics {
        &self.topics
    }

    /// The `Hello` given to [`Link::set_hello`], if any.
    pub fn hello(&self) -> Option<&[u8]> {
        self.hello.as_deref()
    }

    fn down(&self, why: impl Into<String>) -> LinkError {
        let mut why = why.into();
        if let Some(last) = self.status.last_error() {
            why = format!("{why} (last error: {last})");
        }
        LinkError::Down {
            link: self.describe(),
            source: io::Error::new(io::ErrorKind::NotConnected, why),
            retry_in: None,
        }
    }

    /// Latents published that no worker acknowledged yet.
    fn outstanding(&self) -> bool {
        match (self.published, self.acked) {
            (Some(p), Some(a)) => p > a,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    fn observe(&mut self, message: &Incoming) {
        let up_to = match message {
            Incoming::Ack { up_to } => Some(*up_to),
            Incoming::Welcome { acked, .. } => {
                // A worker answering is progress too.
                self.ack_clock = Instant::now();
                *acked
            }
            _ => None,
        };
        // Anyone may publish on the ack topic: an ack above what this
        // device published is not believed.
        if let Some(up_to) = up_to
            && self.published.is_some_and(|p| up_to <= p)
            && self.acked.is_none_or(|a| up_to > a)
        {
            self.acked = Some(up_to);
            self.ack_clock = Instant::now();
        }
    }

    fn route(&mut self, frame_bytes: &[u8]) -> Route {
        self.scratch.clear();
        self.scratch.extend_from_slice(frame_bytes);
        match frame::decode_datagram(&mut self.scratch) {
            Ok(Message::Hello(_)) => Route::Hello,
            Ok(Message::Latent(l)) => Route::Latent { seq: Some(l.seq) },
            Ok(Message::Heartbeat(_)) => Route::Heartbeat,
            _ => Route::Latent { seq: None },
        }
    }
}

impl Link for MqttLink {
    fn send(&mut self, frame: &[u8]) -> Result<(), LinkError> {
        if !self.is_connected() {
            return Err(self.down("not connected to the broker"));
        }
        let route = self.route(frame);
        let (topic, qos, retain) = match route {
            Route::Hello => (&self.topics.hello, QoS::AtLeastOnce, true),
            Route::Latent { .. } => (&self.topics.latent, QoS::AtLeastOnce, false),
            Route::Heartbeat => (&self.topics.heartbeat, QoS::AtMostOnce, false),
        };
        let deadline = Instant::now() + PUBLISH_WAIT;
        loop {
            match self
                .client
                .try_publish(topic.as_str(), qos, retain, frame.to_vec())
            {
                Ok(()) => break,
                Err(ClientError::TryRequest(_) | ClientError::Request(_)) => {
                    if Instant::now() >= deadline || !self.is_connected() {
                        return Err(self.down(format!(
                            "the MQTT request queue stayed full for {PUBLISH_WAIT:?} \
                             (broker slow or connection stalled)"
                        )));
                    }
                    thread::sleep(Duration::from_millis(5));
                }
            }
        }
        if let Route::Latent { seq: Some(seq) } = route {
            if !self.outstanding() {
                // The stall clock starts when latents become outstanding.
                self.ack_clock = Instant::now();
            }
            self.published = Some(self.published.map_or(seq, |p| p.max(seq)));
        }
        self.frames_sent += 1;
        self.bytes_sent += frame.len() as u64;
        Ok(())
    }

    fn poll_incoming(&mut self, timeout: Duration) -> Result<Vec<Incoming>, LinkError> {
        let mut out = Vec::new();
        match self.incoming.recv_timeout(timeout) {
            Ok(message) => out.push(message),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Err(self.down("the MQTT client thread has stopped"));
            }
        }
        while let Ok(message) = self.incoming.try_recv() {
            out.push(message);
        }
        for message in &out {
            self.observe(message);
        }
        if !out.is_empty() {
            return Ok(out);
        }
        if !self.is_connected() {
            return Err(self.down("not connected to the broker"));
        }
        if self.outstanding() && self.ack_clock.elapsed() >= self.ack_timeout {
            return Err(LinkError::Down {
                link: self.describe(),
                source: io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no acknowledgement from a host worker for {} s (latents up to {} \
                         published, acknowledged up to {}); saying Hello again",
                        self.ack_timeout.as_secs_f64(),
                        self.published.unwrap_or_default(),
                        self.acked
                            .map_or_else(|| "none".to_string(), |a| a.to_string()),
                    ),
                ),
                retry_in: None,
            });
        }
        Ok(out)
    }

    /// Keeps a live broker connection (the event-loop thread reconnects by
    /// itself) and restarts the acknowledgement clock, so the session's new
    /// `Hello` gets a full `ack_timeout`; [`LinkError::Down`] while the
    /// broker is unreachable.
    fn reconnect(&mut self) -> Result<(), LinkError> {
        if self.is_connected() {
            self.ack_clock = Instant::now();
            Ok(())
        } else {
            Err(self.down("not connected to the broker, reconnecting in the background"))
        }
    }

    fn is_connected(&self) -> bool {
        self.status.connected.load(Ordering::SeqCst)
    }

    fn is_bidirectional(&self) -> bool {
        true
    }

    fn set_hello(&mut self, frame: Vec<u8>) {
        // The session publishes `Hello` itself after every (re)connect; it
        // is retained, so workers that start later still read it.
        self.hello = Some(frame);
    }

    fn stats(&self) -> LinkStats {
        LinkStats {
            frames_sent: self.frames_sent,
            bytes_sent: self.bytes_sent,
            frames_received: self.status.frames_received.load(Ordering::Relaxed),
            frame_errors: self.status.frame_errors.load(Ordering::Relaxed),
            connects: self.status.connects.load(Ordering::Relaxed),
        }
    }

    fn describe(&self) -> String {
        let state = if self.is_connected() {
            "connected"
        } else {
            "disconnected"
        };
        format!("{} ({state})", self.name)
    }
}

impl Drop for MqttLink {
    fn drop(&mut self) {
        self.status.closing.store(true, Ordering::SeqCst);
        let said_goodbye = self.is_connected()
            && self
                .client
                .try_publish(
                    self.topics.status.as_str(),
                    QoS::AtLeastOnce,
                    true,
                    "offline",
                )
                .is_ok()
            && self.client.try_disconnect().is_ok();
        if !said_goodbye {
            self.status.stop.store(true, Ordering::SeqCst);
        }
        let Some(thread) = self.thread.take() else {
            return;
        };
        let deadline = Instant::now() + CLOSE_WAIT;
        while !thread.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        self.status.stop.store(true, Ordering::SeqCst);
        if thread.is_finished() {
            let _ = thread.join();
        }
        // Otherwise the thread is inside a connection attempt; it sees the
        // stop flag within one attempt and ends on its own.
    }
}

/// The event-loop thread: polls the connection, reconnecting with backoff,
/// and forwards `Welcome`/`Ack` frames until the link is dropped.
fn drive(
    mut connection: Connection,
    client: &Client,
    topics: &DeviceTopics,
    status: &Status,
    incoming: &Sender<Incoming>,
    mut backoff: Backoff,
    name: &str,
) {
    let mut decoder = IncomingDecoder::default();
    while !status.stop.load(Ordering::SeqCst) {
        let wait = if status.connected.load(Ordering::SeqCst) {
            POLL_CONNECTED
        } else {
            POLL_CONNECTING
        };
        let event = match connection.recv_timeout(wait) {
            Ok(event) => event,
            Err(rumqttc::v5::RecvTimeoutError::Timeout) => continue,
            Err(rumqttc::v5::RecvTimeoutError::Disconnected) => break,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                // Announce and (re)subscribe before the link may publish, so
                // no Welcome can come back before its subscription exists.
                let _ =
                    client.try_publish(topics.status.as_str(), QoS::AtLeastOnce, true, "online");
                let filters = [
                    Filter::new(topics.welcome.as_str(), QoS::AtLeastOnce),
                    Filter::new(topics.ack.as_str(), QoS::AtLeastOnce),
                ];
                if let Err(e) = client.try_subscribe_many(filters) {
                    tracing::error!("{name}: cannot subscribe to the worker's answers: {e}");
                }
                backoff.reset();
                status.set_last_error(None);
                status.connects.fetch_add(1, Ordering::Relaxed);
                status.connected.store(true, Ordering::SeqCst);
                tracing::info!(
                    session_present = ack.session_present,
                    partition = topics.partition,
                    "{name}: connected to the broker"
                );
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let topic = publish.topic.as_ref();
                if topic != topics.welcome.as_bytes() && topic != topics.ack.as_bytes() {
                    continue;
                }
                if publish.payload.is_empty() {
                    // A retained message being cleared.
                    continue;
                }
                let mut messages = Vec::new();
                let mut counts = LinkStats::default();
                decoder.reset();
                decoder.push(&publish.payload, &mut messages, &mut counts);
                // One frame per message; the trailing delimiter is optional.
                decoder.push(&[0], &mut messages, &mut counts);
                status
                    .frames_received
                    .fetch_add(counts.frames_received, Ordering::Relaxed);
                status
                    .frame_errors
                    .fetch_add(counts.frame_errors, Ordering::Relaxed);
                if counts.frame_errors > 0 {
                    tracing::warn!("{name}: corrupt frame on {}", topics_name(topic));
                }
                for message in messages {
                    if incoming.send(message).is_err() {
                        return;
                    }
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) if status.closing.load(Ordering::SeqCst) => {
                break;
            }
            Ok(_) => {}
            Err(e) => {
                let was_connected = status.connected.swap(false, Ordering::SeqCst);
                if status.closing.load(Ordering::SeqCst) {
                    break;
                }
                let delay = backoff.next_delay();
                if was_connected {
                    tracing::warn!("{name}: connection lost: {e}; reconnecting in {delay:?}");
                } else if backoff.failures() <= 3 || backoff.failures().is_multiple_of(10) {
                    tracing::warn!(
                        "{name}: cannot connect (attempt {}): {e}; next attempt in {delay:?}",
                        backoff.failures()
                    );
                }
                status.set_last_error(Some(e.to_string()));
                sleep_unless_stopped(delay, status);
            }
        }
    }
    status.connected.store(false, Ordering::SeqCst);
}

fn topics_name(topic: &[u8]) -> String {
    String::from_utf8_lossy(topic).into_owned()
}

/// The event loop reconnects on its very next poll, so the backoff delay is
/// slept here, in short slices so a dropped link ends promptly.
fn sleep_unless_stopped(delay: Duration, status: &Status) {
    let until = Instant::now() + delay;
    while !status.stop.load(Ordering::SeqCst) && !status.closing.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= until {
            break;
        }
        thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback_host("[::1]") && is_loopback_host("LOCALHOST"));
        assert!(!is_loopback_host("broker") && !is_loopback_host("10.0.0.1"));
    }

    #[test]
    fn bad_levels_and_addresses_are_config_errors() {
        let err = MqttLink::new(MqttConfig::new("127.0.0.1:1883", "shop", "cam/01")).unwrap_err();
        assert!(matches!(err, LinkError::Config { .. }), "{err}");
        assert!(err.to_string().contains("device id \"cam/01\""), "{err}");
        let err = MqttLink::new(MqttConfig::new("127.0.0.1:1883", "$SYS", "cam")).unwrap_err();
        assert!(err.to_string().contains("site"), "{err}");
        let err = MqttLink::new(MqttConfig::new("127.0.0.1:notaport", "shop", "cam")).unwrap_err();
        assert!(err.to_string().contains("notaport"), "{err}");
    }

    #[test]
    fn an_unreachable_broker_is_down_not_an_error() {
        // A port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut link = MqttLink::new(MqttConfig::new(
            format!("127.0.0.1:{port}"),
            "shop",
            "cam-01",
        ))
        .unwrap();
        assert!(!link.is_connected());
        assert!(
            link.describe()
                .contains("site shop device cam-01 (disconnected)")
        );
        let frame = frame::encode_to_vec(&Message::Ack(latentcam_wire::Ack { up_to: 1 })).unwrap();
        assert!(link.send(&frame).unwrap_err().is_transient());
        assert!(link.reconnect().unwrap_err().is_transient());
        let started = Instant::now();
        drop(link);
        assert!(started.elapsed() < Duration::from_secs(3), "drop is prompt");
    }
}
