//! The MQTT 5 ingest: one worker of a share group (wire/SPEC.md §9).
//!
//! Devices publish each latent frame to `latentcam/<site>/<device>/latent/<p>`,
//! where `<p>` is the device's partition ([`latentcam_wire::mqtt::partition`]).
//! The workers of a group (`serve --mqtt URL --group G --worker W`) split the
//! 64 partitions between them:
//!
//! * every worker announces itself with a retained `latentcam/_workers/G/W`
//!   `online` (its departure and last will say `offline`), and reads
//!   everyone else's;
//! * rendezvous hashing over the live members gives each partition one owner
//!   ([`latentcam_wire::mqtt::owner`]); a worker subscribes to `$share/G/latentcam/+/+/latent/<p>`
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
//! the durable record is the results file) for other systems, with a
//! retained `…/state`, `…/events` and Home Assistant discovery (module
//! `home`).
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
//!
//! The worker is split by job: `connection` (client options, the polling
//! task), `membership` (who is in the group, which partitions are ours),
//! `device` (per-device session and acknowledgement state, reading what
//! devices publish) and `publish` (what goes back to the broker). This
//! module holds the ingest and the event loop that ties them together.

mod connection;
mod device;
mod home;
mod membership;
mod publish;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use latentcam_secure::tls::ClientCert;
use latentcam_wire::WelcomeStatus;
use latentcam_wire::mqtt::{self as topics, TopicKind};
use rumqttc::v5::mqttbytes::v5::Publish;
use rumqttc::v5::{AsyncClient, EventLoop};
use tokio::sync::{mpsc, watch};

use self::connection::{FromBroker, drive};
pub use self::home::DISCOVERY_PREFIX;

use self::device::{Admission, Device, Devices, read_ack, read_hello, read_latent};
use self::membership::{Membership, Presence};
use self::publish::{Outbox, Outgoing};
use super::conn::welcome;
use super::{Context, Done, Ingest, IngestKind, Job, Running, ServeError, Started};
use crate::session::{Refusal, check_hello};

/// How often acknowledgements of newly finished latents are published.
const ACK_EVERY: Duration = Duration::from_millis(200);

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
    /// Publish Home Assistant discovery under this prefix
    /// ([`DISCOVERY_PREFIX`] by default); `None`: none.
    pub discovery_prefix: Option<String>,
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
        let options = connection::options(&self)?;
        let (client, eventloop) = AsyncClient::new(options, 8192);
        let me = topics::worker_topic(&self.group, &self.worker);
        let workers_prefix = format!("{}/_workers/{}/", topics::ROOT, self.group);
        let worker = Worker {
            outbox: Outbox::new(client, self.group.clone(), me),
            membership: Membership::new(self.worker.clone()),
            ingest: *self,
            workers_prefix,
            ctx: running.context,
            jobs: running.jobs,
            devices: Devices::default(),
            dirty: BTreeSet::new(),
        };
        Ok(Started {
            local: None,
            task: tokio::spawn(worker.run(eventloop, running.shutdown)),
        })
    }
}

/// One worker of a share group: its connection's event loop and state.
struct Worker {
    ingest: MqttIngest,
    /// `latentcam/_workers/<group>/`: presence topics start with it.
    workers_prefix: String,
    outbox: Outbox,
    membership: Membership,
    ctx: Arc<Context>,
    jobs: mpsc::Sender<Job>,
    devices: Devices,
    /// Devices whose acknowledgement moved since the last publish.
    dirty: BTreeSet<String>,
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
                    if self.membership.tick(Instant::now()) {
                        self.rebalance().await;
                    }
                    self.publish_acks().await;
                }
                _ = shutdown.changed() => break,
            }
        }
        // Leave the group: the others take the partitions at once.
        tracing::info!("mqtt worker {} leaving its group", self.ingest.worker);
        self.outbox.depart().await;
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
        self.outbox.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), driver).await;
    }

    /// The session is gone with its subscriptions (clean start). Per-device
    /// sequence state stays: latents still in the head queue finish and
    /// their acknowledgements go out once connected again. Nothing is
    /// subscribed until the membership has settled after the reconnect.
    fn on_disconnected(&mut self) {
        self.membership.disconnected();
    }

    async fn on_connected(&mut self) {
        tracing::info!(
            "mqtt worker {} connected; group {}",
            self.ingest.worker,
            self.ingest.group
        );
        self.outbox.announce().await;
        self.outbox.subscribe_group().await;
        self.membership.connected(Instant::now());
    }

    /// Subscribes to the partitions this worker now owns and drops the rest.
    async fn rebalance(&mut self) {
        let Some(plan) = self.membership.plan() else {
            return;
        };
        for &p in &plan.lost {
            self.outbox.drop_partition(p).await;
        }
        // Acknowledge what this worker finished for devices it gives up,
        // then forget their sequence state: the new owner reads the acks.
        self.publish_acks().await;
        self.devices.forget_sequences_outside(&plan.mine);
        for &p in &plan.gained {
            self.outbox.take_partition(p).await;
        }
        let (gained, lost) = (plan.gained.len(), plan.lost.len());
        self.membership.apply(plan);
        tracing::info!(
            "mqtt worker {}: {} members, owns {} of {} partitions (+{gained} -{lost})",
            self.ingest.worker,
            self.membership.member_count(),
            self.membership.owned_count(),
            topics::PARTITIONS,
        );
    }

    async fn on_publish(&mut self, publish: Publish, done: &mpsc::UnboundedSender<Done>) {
        if !self.membership.is_connected() {
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
        self.outbox.taken(&publish).await;
    }

    async fn handle(&mut self, publish: &Publish, done: &mpsc::UnboundedSender<Done>) {
        let Ok(topic) = std::str::from_utf8(&publish.topic) else {
            return;
        };
        let topic = topic.to_owned();
        if let Some(name) = topic.strip_prefix(self.workers_prefix.as_str()) {
            // `online`, or `offline` (a departure or a last will); an
            // empty retained message (an older worker's will) deletes it.
            let present = publish.payload.as_ref() == publish::ONLINE;
            match self.membership.presence(name, present, Instant::now()) {
                Presence::Own | Presence::Unchanged => {}
                Presence::OwnCleared => {
                    // This worker's own last will, fired for an earlier
                    // connection (a session taken over, a broker shutting
                    // down): it is alive, so it says so again.
                    tracing::info!(
                        "mqtt worker {}: own presence cleared; announcing again",
                        self.ingest.worker
                    );
                    self.outbox.announce().await;
                }
                Presence::Joined => {
                    tracing::info!("mqtt worker {}: worker {name} joined", self.ingest.worker);
                    self.rebalance().await;
                }
                Presence::Left => {
                    tracing::info!("mqtt worker {}: worker {name} left", self.ingest.worker);
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
                if let Some(up_to) = read_ack(&publish.payload)
                    && let Some(d) = self.device(&site, &device)
                {
                    d.raise(up_to);
                }
            }
            _ => {}
        }
    }

    /// A device's state, created on first sight within the registry's
    /// capacity (see [`Devices::track`]).
    fn device(&mut self, site: &str, device: &str) -> Option<&mut Device> {
        let registry = &self.ctx.registry;
        self.devices
            .track(site, device, registry.max_devices(), |id| {
                registry.knows(id)
            })
    }

    fn owns(&self, device: &str) -> bool {
        self.membership.owns(topics::partition(device))
    }

    async fn on_hello(&mut self, site: &str, device: &str, publish: &Publish) {
        let ctx = Arc::clone(&self.ctx);
        let checked = read_hello(&publish.payload, device, |hello| {
            check_hello(&ctx.manifest, hello).and_then(|()| {
                ctx.registry
                    .hello(device, "mqtt", hello, Instant::now())
                    .map(|_| ())
                    .map_err(|full| Refusal {
                        status: WelcomeStatus::Busy,
                        reason: full.to_string(),
                    })
            })
        });
        let Some(hello) = checked else {
            tracing::warn!("{device}: unusable Hello on MQTT ignored");
            ctx.registry.update(device, |r| r.frame_errors += 1);
            return;
        };
        // A retained Hello is old news (this worker just subscribed); a live
        // one is a device (re)starting its session: its owner answers.
        let answer = !publish.retain && self.owns(device);
        let host_id = ctx.host_id.clone();
        let Some(d) = self.device(site, device) else {
            return;
        };
        let reply = match hello.verdict {
            Ok(()) => {
                d.accept_hello(hello.accepted, hello.frame.into(), answer);
                welcome(WelcomeStatus::Accepted, "welcome", &host_id, d.acked())
            }
            Err(refusal) => {
                d.refuse_hello();
                if !publish.retain {
                    tracing::warn!("refused device {device:?}: {}", refusal.reason);
                }
                welcome(refusal.status, &refusal.reason, &host_id, None)
            }
        };
        if answer {
            let message = Outgoing::welcome(&d.topics, reply);
            self.outbox.publish(message).await;
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
        let Some((accepted, hello)) = d.session() else {
            // No (accepted) Hello yet: not acknowledged, so the device
            // re-sends it after announcing itself again.
            ctx.registry.update(device, |r| r.frame_errors += 1);
            return;
        };
        let job = match read_latent(&publish.payload, device, &accepted, &hello, done) {
            Ok(Some(job)) => job,
            Ok(None) => return,
            Err(why) => {
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
        if d.admit(seq) == Admission::Duplicate {
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
        let Some(d) = self.devices.get_mut(&done.device) else {
            return;
        };
        if self.ingest.publish_results {
            let message = Outgoing::result(&d.topics, &done.line);
            self.outbox.publish(message).await;
        }
        // Discovery once per Hello, by the worker that runs its heads.
        if let Some(prefix) = &self.ingest.discovery_prefix
            && !d.home.announced
            && let Some(record) = self.ctx.registry.get(&done.device)
        {
            let site = topics::parse_device_topic(&d.topics.hello).map_or("", |t| t.site);
            let info = home::DeviceInfo {
                site,
                device: &done.device,
                model: &record.model,
                firmware: &record.firmware,
            };
            for message in home::discovery(prefix, &d.topics, &info) {
                self.outbox.publish(message).await;
            }
            d.home.announced = true;
        }
        let update = d.home.on_result(&done.line, Instant::now());
        if let Some(state) = update.state {
            self.outbox
                .publish(Outgoing::state(&d.topics, &state))
                .await;
        }
        for event in update.events {
            self.outbox
                .publish(Outgoing::event(&d.topics, &event))
                .await;
        }
        if d.finish(done.seq) {
            self.dirty.insert(done.device);
        }
    }

    async fn publish_acks(&mut self) {
        for device in std::mem::take(&mut self.dirty) {
            let Some(d) = self.devices.get(&device) else {
                continue;
            };
            let Some(up_to) = d.acked() else {
                continue;
            };
            let Some(message) = Outgoing::ack(&d.topics, up_to) else {
                continue;
            };
            self.outbox.publish(message).await;
        }
    }
}
