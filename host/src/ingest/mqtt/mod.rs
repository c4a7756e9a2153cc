//! The MQTT 5 ingest: one worker of a share group (wire/SPEC.md §9).
//!
//! Devices publish each latent frame to `latentcam/<site>/<device>/latent/<p>`,
//! where `<p>` is the device's partition ([`latentcam_wire::mqtt::partition`]).
//! The workers of a group (`serve --mqtt URL --group G --worker W`) split the
//! 64 partitions between them:
//!
//! * every worker announces itself with a retained `latentcam/_workers/G/W`
//!   (its last will deletes it), and reads everyone else's;
//! * rendezvous hashing over the live members gives each partition one owner
//!   ([`owner`]); a worker subscribes to `$share/G/latentcam/+/+/latent/<p>`
//!   for the partitions it owns, and unsubscribes from those it loses. All of
//!   a device's frames therefore reach one worker, in order, and per-device
//!   state (anomaly memory, sequence accounting) stays whole. While two
//!   workers briefly both hold a partition during a membership change, the
//!   shared subscription still gives each message to only one of them.
//!
//! Acknowledgement is end to end, as on TCP: the owner publishes a retained
//! `Ack` on `…/ack/<p>` covering the longest *contiguous* run of latents
//! whose results are written, so a latent lost anywhere (a worker killed
//! with messages in flight, a broker restart) is never acknowledged and the
//! edge re-sends it from its spool (the edge re-announces itself when
//! acknowledgements stall; the owner answers its fresh `Hello` with a
//! `Welcome` carrying what it holds). A worker taking a partition over reads
//! the retained acks first, so what its predecessor acknowledged counts as
//! a duplicate. Results are also published as JSON on `…/result` (QoS 0:
//! the durable record is the results file) for other systems (Home
//! Assistant, Node-RED).
//!
//! Worker sessions are not persistent (clean start): a dead worker's
//! subscriptions must vanish at once so its partitions move; what was in
//! flight to it is re-sent by the edges.
//!
//! After a lost connection a worker subscribes to nothing until it has read
//! the group's presence again for 1.5 s, so two workers never both
//! hold a partition because of a stale view (a broker restart fires every
//! worker's last will); messages read from the failed connection are
//! dropped, not acknowledged on the next one.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use latentcam_secure::tls::{ClientCert, tls_client_config};
use latentcam_wire::mqtt::{self as topics, DeviceTopics, PARTITIONS, TopicKind, owner};
use latentcam_wire::mqtt::{Broker, parse_url};
use latentcam_wire::{Ack, MAX_SEQ, Message, WelcomeStatus, frame};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, LastWill, Packet, Publish};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use rumqttc::{TlsConfiguration, Transport};
use tokio::sync::{mpsc, watch};

use super::conn::welcome;
use super::{Context, Done, Ingest, IngestKind, Job, Running, ServeError, Started};
use crate::session::{self, Refusal, check_hello};

/// How often acknowledgements of newly finished latents are published.
const ACK_EVERY: Duration = Duration::from_millis(200);
/// After (re)connecting, how long to read the retained worker list before
/// choosing partitions, so a joining worker does not grab all of them.
const SETTLE: Duration = Duration::from_millis(1500);

/// An MQTT broker address, credentials and this worker's place in a group.
#[derive(Debug, Clone)]
pub struct MqttIngest {
    /// `mqtt://host:port`, `tcp://host:port` or `host:port` (port 1883 if
    /// absent), or `mqtts://host:port` / `ssl://host:port` for TLS (port
    /// 8883 if absent).
    pub url: String,
    /// With a TLS URL: a PEM file of the certificate authorities that may
    /// sign the broker's certificate; `None` trusts the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// With a TLS URL: this worker's client certificate. A broker that
    /// requires certificates of every client and binds each device's
    /// topics to the device id its certificate names (README, security)
    /// is what authenticates MQTT devices; a host that requires
    /// authentication serves MQTT only with one.
    pub client_cert: Option<ClientCert>,
    /// The share group: workers of one group split the devices.
    pub group: String,
    /// This worker's name, unique in the group.
    pub worker: String,
    /// Broker user name, if the broker wants one.
    pub username: Option<String>,
    /// Broker password.
    pub password: Option<String>,
    /// Publish each result line on `…/result`.
    pub publish_results: bool,
}

impl Ingest for MqttIngest {
    fn kind(&self) -> IngestKind {
        IngestKind::Mqtt
    }

    fn describe(&self) -> String {
        format!(
            "mqtt {} group {} worker {}",
            self.url, self.group, self.worker
        )
    }

    fn start(self: Box<Self>, running: Running) -> Result<Started, ServeError> {
        if running.context.auth.required() && self.client_cert.is_none() {
            return Err(ServeError::Unauthenticated { transport: "MQTT" });
        }
        let config = |message: String| ServeError::Mqtt { message };
        let Broker { host, port, tls } = parse_url(&self.url).map_err(config)?;
        let loopback = crate::auth::is_loopback(&host);
        let tls = match tls {
            true => Some(
                tls_client_config(self.ca_file.as_deref(), self.client_cert.as_ref())
                    .map_err(config)?,
            ),
            false if self.ca_file.is_some() || self.client_cert.is_some() => {
                return Err(config(format!(
                    "--mqtt-ca and --mqtt-cert are only used with a TLS broker (mqtts://), not {}",
                    self.url
                )));
            }
            false => None,
        };
        if self.client_cert.is_some() {
            tracing::info!(
                "MQTT devices are authenticated by the broker: it must require a client \
                 certificate of every client and let each device publish only under the id \
                 its certificate names (README, security: scripts/mosquitto-mtls.conf)"
            );
        }
        for (what, level) in [("group", &self.group), ("worker", &self.worker)] {
            if !topics::valid_level(level) {
                return Err(config(format!(
                    "{what} {level:?} cannot be an MQTT topic level \
                     (1-64 bytes, no '/', '+', '#', not starting with '$' or '_')"
                )));
            }
        }
        let me = topics::worker_topic(&self.group, &self.worker);
        let mut options = MqttOptions::new(
            format!("latentcam-host-{}-{}", self.group, self.worker),
            host,
            port,
        );
        options
            .set_keep_alive(Duration::from_secs(5))
            .set_clean_start(true)
            .set_manual_acks(true)
            .set_receive_maximum(Some(512))
            .set_outgoing_inflight_upper_limit(512)
            .set_max_packet_size(Some(1 << 20))
            .set_last_will(LastWill::new(
                &me,
                Vec::<u8>::new(),
                QoS::AtLeastOnce,
                true,
                None,
            ));
        if let Some(tls) = tls {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
        } else if self.username.is_some() && !loopback {
            tracing::warn!(
                "the MQTT password for {} travels in cleartext: use mqtts:// to encrypt it",
                self.url
            );
        }
        if let Some(user) = &self.username {
            options.set_credentials(user.clone(), self.password.clone().unwrap_or_default());
        }
        let (client, eventloop) = AsyncClient::new(options, 8192);
        let workers_prefix = format!("{}/_workers/{}/", topics::ROOT, self.group);
        let worker = Worker {
            ingest: *self,
            workers_prefix,
            me,
            client,
            ctx: running.context,
            jobs: running.jobs,
            devices: HashMap::new(),
            members: BTreeSet::new(),
            owned: BTreeSet::new(),
            connected: false,
            settle_until: None,
            departed_at: None,
            dirty: BTreeSet::new(),
        };
        Ok(Started {
            local: None,
            task: tokio::spawn(worker.run(eventloop, running.shutdown)),
        })
    }
}

/// A device as this worker knows it.
struct Device {
    topics: DeviceTopics,
    /// What the accepted `Hello` fixes and its frame, or `None` when none
    /// arrived or the last one was refused.
    accepted: Option<(session::Accepted, Arc<[u8]>)>,
    /// First sequence number not yet acknowledged; `None` until known: from
    /// a retained ack, a latent numbered 0 (a device's first ever), or the
    /// first latent after this worker answered a live `Hello` without
    /// knowing it (the device then re-sends from its oldest pending
    /// latent). Never guessed from an arbitrary latent: an ack above what a
    /// device really delivered would release latents nobody processed.
    floor: Option<u64>,
    /// A `Welcome` that knew no floor went out: the next latent is the base.
    base_next: bool,
    /// Admitted (queued or finished) latents at or above `floor`.
    admitted: BTreeSet<u64>,
    /// Finished latents at or above `floor`.
    finished: BTreeSet<u64>,
}

impl Device {
    fn new(topics: DeviceTopics) -> Self {
        Self {
            topics,
            accepted: None,
            floor: None,
            base_next: false,
            admitted: BTreeSet::new(),
            finished: BTreeSet::new(),
        }
    }

    fn acked(&self) -> Option<u64> {
        self.floor.and_then(|f| f.checked_sub(1))
    }

    /// Raises the floor to `up_to + 1` (an acknowledgement read back).
    fn raise(&mut self, up_to: u64) {
        let floor = self.floor.map_or(up_to + 1, |f| f.max(up_to + 1));
        self.floor = Some(floor);
        self.admitted = self.admitted.split_off(&floor);
        self.finished = self.finished.split_off(&floor);
        self.advance();
    }

    /// Moves the floor over finished latents; true if it moved.
    fn advance(&mut self) -> bool {
        let Some(mut floor) = self.floor else {
            return false;
        };
        let before = floor;
        while self.finished.remove(&floor) {
            self.admitted.remove(&floor);
            floor += 1;
        }
        self.floor = Some(floor);
        floor != before
    }
}

/// Incoming from the event loop task.
enum FromBroker {
    Connected,
    /// The connection failed. Events rumqttc had already read from it may
    /// still follow (it buffers a whole read), up to the next `Connected`:
    /// they belong to a session that no longer exists.
    Disconnected,
    Publish(Box<Publish>),
}

struct Worker {
    ingest: MqttIngest,
    me: String,
    /// `latentcam/_workers/<group>/`: presence topics start with it.
    workers_prefix: String,
    client: AsyncClient,
    ctx: Arc<Context>,
    jobs: mpsc::Sender<Job>,
    devices: HashMap<String, Device>,
    members: BTreeSet<String>,
    owned: BTreeSet<u16>,
    /// Between a `ConnAck` and the next connection error: only then do
    /// subscriptions exist and may be changed.
    connected: bool,
    settle_until: Option<Instant>,
    /// When a member's departure was first seen and not yet acted on.
    departed_at: Option<Instant>,
    /// Devices whose acknowledgement moved since the last publish.
    dirty: BTreeSet<String>,
}

/// Polls the event loop forever, reconnecting with backoff. It never
/// waits for the worker (the channel is unbounded), so keep-alive pings
/// are answered however busy the heads are; what bounds the channel is
/// the broker's flow control: messages are acknowledged (`PUBACK`) only
/// once the worker has taken them, and the broker sends at most the
/// receive maximum of unacknowledged ones.
async fn drive(mut eventloop: EventLoop, tx: mpsc::UnboundedSender<FromBroker>, label: String) {
    let mut delay = Duration::from_millis(100);
    let mut down_logged = false;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                delay = Duration::from_millis(100);
                if down_logged {
                    tracing::info!("{label}: connected to the broker again");
                }
                down_logged = false;
                if tx.send(FromBroker::Connected).is_err() {
                    return;
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if tx.send(FromBroker::Publish(Box::new(publish))).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                if !down_logged {
                    tracing::warn!("{label}: broker connection: {e}; reconnecting");
                    down_logged = true;
                    if tx.send(FromBroker::Disconnected).is_err() {
                        return;
                    }
                }
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Decodes the one frame an MQTT message carries (the same bytes as a UDP
/// datagram, SPEC §9), unstuffing a copy of the payload in place.
fn one_frame<T>(payload: &[u8], f: impl FnOnce(&Message<'_>) -> T) -> Result<T, String> {
    let mut bytes = payload.to_vec();
    frame::decode_datagram(&mut bytes)
        .map(|message| f(&message))
        .map_err(|e| e.to_string())
}

impl Worker {
    async fn run(mut self, eventloop: EventLoop, mut shutdown: watch::Receiver<bool>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<FromBroker>();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let label = format!("mqtt worker {}", self.ingest.worker);
        let driver = tokio::spawn(drive(eventloop, tx, label));
        let mut tick = tokio::time::interval(ACK_EVERY);
        loop {
            tokio::select! {
                event = rx.recv() => match event {
                    Some(FromBroker::Connected) => self.on_connected().await,
                    Some(FromBroker::Disconnected) => self.on_disconnected(),
                    Some(FromBroker::Publish(p)) => self.on_publish(*p, &done_tx).await,
                    None => break,
                },
                Some(done) = done_rx.recv() => {
                    self.on_done(done).await;
                    while let Ok(done) = done_rx.try_recv() {
                        self.on_done(done).await;
                    }
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    if self.settle_until.is_some_and(|t| now >= t) {
                        self.settle_until = None;
                        self.rebalance().await;
                    }
                    if self.departed_at.is_some_and(|t| now >= t + SETTLE) {
                        self.departed_at = None;
                        self.rebalance().await;
                    }
                    self.publish_acks().await;
                }
                _ = shutdown.changed() => break,
            }
        }
        // Leave the group: the others take the partitions at once.
        tracing::info!("mqtt worker {} leaving its group", self.ingest.worker);
        let _ = self
            .client
            .publish(self.me.clone(), QoS::AtLeastOnce, true, Vec::<u8>::new())
            .await;
        // Latents already queued finish; acknowledge them before going. The
        // queue closes when the last ingest drops it; each job holds a
        // `done` sender, so `done_rx` ends when the last job is finished.
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.jobs, closed));
        drop(done_tx);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while let Ok(Some(done)) = tokio::time::timeout_at(deadline, done_rx.recv()).await {
            self.on_done(done).await;
        }
        self.publish_acks().await;
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), driver).await;
    }

    /// The session is gone with its subscriptions (clean start). Per-device
    /// sequence state stays: latents still in the head queue finish and
    /// their acknowledgements go out once connected again. Nothing is
    /// subscribed until the membership has settled after the reconnect.
    fn on_disconnected(&mut self) {
        self.connected = false;
        self.owned.clear();
        self.settle_until = None;
        self.departed_at = None;
    }

    async fn on_connected(&mut self) {
        tracing::info!(
            "mqtt worker {} connected; group {}",
            self.ingest.worker,
            self.ingest.group
        );
        // A clean session: nothing is subscribed any more.
        self.connected = true;
        self.owned.clear();
        self.members.clear();
        self.members.insert(self.ingest.worker.clone());
        let _ = self
            .client
            .publish(self.me.clone(), QoS::AtLeastOnce, true, b"online".to_vec())
            .await;
        let _ = self
            .client
            .subscribe_many([
                Filter::new(topics::workers_filter(&self.ingest.group), QoS::AtLeastOnce),
                Filter::new(topics::hello_filter(), QoS::AtLeastOnce),
            ])
            .await;
        self.settle_until = Some(Instant::now() + SETTLE);
    }

    /// Subscribes to the partitions this worker now owns and drops the rest.
    async fn rebalance(&mut self) {
        if !self.connected || self.settle_until.is_some() {
            return;
        }
        let members: Vec<&str> = self.members.iter().map(String::as_str).collect();
        let mine: BTreeSet<u16> = (0..PARTITIONS)
            .filter(|&p| owner(p, members.iter().copied()) == Some(self.ingest.worker.as_str()))
            .collect();
        let gained: Vec<u16> = mine.difference(&self.owned).copied().collect();
        let lost: Vec<u16> = self.owned.difference(&mine).copied().collect();
        if gained.is_empty() && lost.is_empty() {
            return;
        }
        for &p in &lost {
            let _ = self
                .client
                .unsubscribe(topics::shared_latent_filter(&self.ingest.group, p))
                .await;
            let _ = self.client.unsubscribe(topics::ack_filter(p)).await;
        }
        // Acknowledge what this worker finished for devices it gives up,
        // then forget their sequence state: the new owner reads the acks.
        // Every device outside the new set, not only the partitions just
        // given up: after a reconnect `owned` starts empty, and the state of
        // partitions held before it must not outlive them.
        self.publish_acks().await;
        for device in self.devices.values_mut() {
            if !mine.contains(&device.topics.partition) {
                device.floor = None;
                device.base_next = false;
                device.admitted.clear();
                device.finished.clear();
            }
        }
        for &p in &gained {
            // Acks first: the broker sends their retained values before any
            // latent of the second subscription.
            // Not no-local: after a reconnect this worker's own retained
            // acks are what it must read back.
            let _ = self
                .client
                .subscribe(topics::ack_filter(p), QoS::AtLeastOnce)
                .await;
            let _ = self
                .client
                .subscribe(
                    topics::shared_latent_filter(&self.ingest.group, p),
                    QoS::AtLeastOnce,
                )
                .await;
        }
        self.owned = mine;
        tracing::info!(
            "mqtt worker {}: {} members, owns {} of {PARTITIONS} partitions (+{} -{})",
            self.ingest.worker,
            self.members.len(),
            self.owned.len(),
            gained.len(),
            lost.len()
        );
    }

    async fn on_publish(&mut self, publish: Publish, done: &mpsc::UnboundedSender<Done>) {
        if !self.connected {
            // Read from the failed connection before it failed, handed over
            // after it (see `FromBroker::Disconnected`). Its subscriptions,
            // and the broker's record of this delivery, are gone: a latent
            // is re-sent by its edge, presence is read again on connect,
            // and a PUBACK would go out on the next connection under a
            // packet id that means another message there.
            return;
        }
        self.handle(&publish, done).await;
        // Taken (a latent is in the head queue): the broker may send more.
        let _ = self.client.ack(&publish).await;
    }

    async fn handle(&mut self, publish: &Publish, done: &mpsc::UnboundedSender<Done>) {
        let Ok(topic) = std::str::from_utf8(&publish.topic) else {
            return;
        };
        let topic = topic.to_owned();
        if let Some(name) = topic.strip_prefix(self.workers_prefix.as_str()) {
            if name == self.ingest.worker {
                if publish.payload.is_empty() {
                    // This worker's own last will, fired for an earlier
                    // connection (a session taken over, a broker shutting
                    // down): it is alive, so it says so again.
                    tracing::info!(
                        "mqtt worker {}: own presence cleared; announcing again",
                        self.ingest.worker
                    );
                    let _ = self
                        .client
                        .publish(self.me.clone(), QoS::AtLeastOnce, true, b"online".to_vec())
                        .await;
                }
                return;
            }
            let changed = if publish.payload.is_empty() {
                self.members.remove(name)
            } else {
                self.members.insert(name.to_owned())
            };
            if changed {
                let left = publish.payload.is_empty();
                tracing::info!(
                    "mqtt worker {}: worker {name} {}",
                    self.ingest.worker,
                    if left { "left" } else { "joined" }
                );
                if left {
                    // A broker shutting down fires every worker's last
                    // will before it drops the connections: taking the
                    // partitions at once would subscribe two workers to
                    // the same shares for a moment, and both would process
                    // what arrives. Take them once the departure has held
                    // for the settling time (a disconnect cancels it).
                    self.departed_at.get_or_insert_with(Instant::now);
                } else {
                    self.rebalance().await;
                }
            }
            return;
        }
        let Some(parsed) = topics::parse_device_topic(&topic) else {
            return;
        };
        let (site, device) = (parsed.site.to_owned(), parsed.device.to_owned());
        match parsed.kind {
            TopicKind::Hello => self.on_hello(&site, &device, publish).await,
            TopicKind::Latent(_) => self.on_latent(&site, &device, publish, done).await,
            TopicKind::Ack(_) => {
                let up_to = one_frame(&publish.payload, |m| match m {
                    Message::Ack(Ack { up_to }) => Some(*up_to),
                    _ => None,
                });
                // Anyone may publish on an ack topic: a number no device
                // can have reached is ignored, not believed.
                if let Ok(Some(up_to)) = up_to
                    && up_to <= MAX_SEQ
                    && let Some(d) = self.device(&site, &device)
                {
                    d.raise(up_to);
                }
            }
            _ => {}
        }
    }

    /// A device's state, created on first sight unless this worker already
    /// tracks as many devices as the registry may hold; then the devices
    /// the registry has forgotten (silent ones it evicted) go first, and if
    /// none did, the new id is ignored: made-up ids on the broker must not
    /// grow this map without bound.
    fn device(&mut self, site: &str, device: &str) -> Option<&mut Device> {
        let registry = &self.ctx.registry;
        if !self.devices.contains_key(device) && self.devices.len() >= registry.max_devices() {
            self.devices.retain(|id, _| registry.knows(id));
            if self.devices.len() >= registry.max_devices() {
                return None;
            }
        }
        let topics = DeviceTopics::new(site, device)?;
        Some(
            self.devices
                .entry(device.to_owned())
                .or_insert_with(|| Device::new(topics)),
        )
    }

    fn owns(&self, device: &str) -> bool {
        self.settle_until.is_none() && self.owned.contains(&topics::partition(device))
    }

    async fn on_hello(&mut self, site: &str, device: &str, publish: &Publish) {
        let ctx = Arc::clone(&self.ctx);
        let checked = one_frame(&publish.payload, |m| match m {
            Message::Hello(hello) if hello.device_id == device => {
                let verdict = check_hello(&ctx.manifest, hello).and_then(|()| {
                    ctx.registry
                        .hello(device, "mqtt", hello, Instant::now())
                        .map(|_| ())
                        .map_err(|full| Refusal {
                            status: WelcomeStatus::Busy,
                            reason: full.to_string(),
                        })
                });
                Some((
                    verdict,
                    session::Accepted::from_hello(hello),
                    frame::encode_to_vec(m).unwrap_or_default(),
                ))
            }
            _ => None,
        });
        let Ok(Some((verdict, accepted, hello_frame))) = checked else {
            tracing::warn!("{device}: unusable Hello on MQTT ignored");
            ctx.registry.update(device, |r| r.frame_errors += 1);
            return;
        };
        let owns = self.owns(device);
        let host_id = ctx.host_id.clone();
        let Some(d) = self.device(site, device) else {
            return;
        };
        let reply = match verdict {
            Ok(()) => {
                d.accepted = Some((accepted, hello_frame.into()));
                if !publish.retain && owns && d.floor.is_none() {
                    d.base_next = true;
                }
                welcome(WelcomeStatus::Accepted, "welcome", &host_id, d.acked())
            }
            Err(refusal) => {
                d.accepted = None;
                if !publish.retain {
                    tracing::warn!("refused device {device:?}: {}", refusal.reason);
                }
                welcome(refusal.status, &refusal.reason, &host_id, None)
            }
        };
        // A retained Hello is old news (this worker just subscribed); a live
        // one is a device (re)starting its session: its owner answers.
        if !publish.retain && owns {
            let topic = d.topics.welcome.clone();
            let _ = self
                .client
                .publish(topic, QoS::AtLeastOnce, false, reply)
                .await;
        }
    }

    async fn on_latent(
        &mut self,
        site: &str,
        device: &str,
        publish: &Publish,
        done: &mpsc::UnboundedSender<Done>,
    ) {
        let ctx = Arc::clone(&self.ctx);
        let Some(d) = self.device(site, device) else {
            return;
        };
        let Some((accepted, hello)) = d.accepted.clone() else {
            // No (accepted) Hello yet: not acknowledged, so the device
            // re-sends it after announcing itself again.
            ctx.registry.update(device, |r| r.frame_errors += 1);
            return;
        };
        let decoded = one_frame(&publish.payload, |m| match m {
            Message::Latent(latent) => {
                let vector = accepted.decode(latent)?;
                Ok(Some(Job {
                    device: device.to_owned(),
                    seq: latent.seq,
                    capture_us: latent.capture_us,
                    frame_size: (latent.frame_width, latent.frame_height),
                    payload_bytes: latent.payload.len(),
                    latent: vector,
                    frame: frame::encode_to_vec(m).unwrap_or_default(),
                    hello: Arc::clone(&hello),
                    done: Some(done.clone()),
                }))
            }
            Message::Bye(_) => Ok(None),
            other => Err(format!("a device must not send {:?}", other.kind())),
        });
        let job = match decoded {
            Ok(Ok(Some(job))) => job,
            Ok(Ok(None)) => return,
            Ok(Err(why)) | Err(why) => {
                tracing::debug!("{device}: bad frame on MQTT: {why}");
                ctx.registry.update(device, |r| r.frame_errors += 1);
                return;
            }
        };
        let seq = job.seq;
        let now = Instant::now();
        if !ctx.registry.plausible(device, seq, now) {
            // Counted by the registry; never admitted, so never acked.
            tracing::debug!("{device}: latent seq {seq} implausibly far ahead, dropped");
            return;
        }
        if d.floor.is_none() && (seq == 0 || d.base_next) {
            d.floor = Some(seq);
        }
        d.base_next = false;
        if d.floor.is_some_and(|floor| seq < floor) || !d.admitted.insert(seq) {
            ctx.registry.update(device, |r| r.duplicates += 1);
            // It may be re-sending because an ack went missing.
            self.dirty.insert(device.to_owned());
            return;
        }
        ctx.registry.received(device, seq, now);
        if self.jobs.send(job).await.is_err() {
            tracing::debug!("head worker gone");
        }
    }

    async fn on_done(&mut self, done: Done) {
        if self.ingest.publish_results
            && let Some(d) = self.devices.get(&done.device)
        {
            let payload = serde_json::to_vec(&done.line).unwrap_or_default();
            let _ = self
                .client
                .publish(d.topics.result.clone(), QoS::AtMostOnce, false, payload)
                .await;
        }
        if let Some(d) = self.devices.get_mut(&done.device)
            && d.admitted.contains(&done.seq)
        {
            d.finished.insert(done.seq);
            if d.advance() {
                self.dirty.insert(done.device);
            }
        }
    }

    async fn publish_acks(&mut self) {
        for device in std::mem::take(&mut self.dirty) {
            let Some(d) = self.devices.get_mut(&device) else {
                continue;
            };
            let Some(up_to) = d.acked() else {
                continue;
            };
            let Ok(bytes) = frame::encode_to_vec(&Message::Ack(Ack { up_to })) else {
                continue;
            };
            let _ = self
                .client
                .publish(d.topics.ack.clone(), QoS::AtLeastOnce, true, bytes)
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_advances_over_contiguous_finished_latents_only() {
        let mut d = Device::new(DeviceTopics::new("s", "d").unwrap());
        d.floor = Some(5);
        for seq in [5, 6, 8] {
            d.admitted.insert(seq);
            d.finished.insert(seq);
        }
        assert!(d.advance());
        assert_eq!(
            d.acked(),
            Some(6),
            "7 is missing: 8 must not be acknowledged"
        );
        d.admitted.insert(7);
        d.finished.insert(7);
        d.advance();
        assert_eq!(d.acked(), Some(8));
        // An ack read back from another worker raises the floor.
        d.raise(20);
        assert_eq!(d.acked(), Some(20));
        assert!(d.admitted.is_empty());
    }
}
