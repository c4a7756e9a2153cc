//! What an MQTT worker sends to the broker: its presence, the group's and
//! partitions' subscriptions, `Welcome`s, retained `Ack`s and results.
//!
//! Each publication is first an [`Outgoing`] value (topic, QoS, retain,
//! payload), built by a pure function and pinned by the tests here;
//! [`Outbox`] only hands them to the client. Send errors are ignored: they
//! mean the client is closing, and the event loop reports that.

use latentcam_wire::mqtt::{self as topics, DeviceTopics};
use latentcam_wire::{Ack, Message, frame};
use rumqttc::v5::AsyncClient;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, LastWill, Publish};

/// The payload of a live worker's presence.
pub(super) const ONLINE: &[u8] = b"online";

/// The payload of a worker's presence once it left or died (its last will).
pub(super) const OFFLINE: &[u8] = b"offline";

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Outgoing {
    /// Where.
    pub(super) topic: String,
    /// How reliably.
    pub(super) qos: QoS,
    /// Whether the broker keeps it for later subscribers.
    pub(super) retain: bool,
    /// What.
    pub(super) payload: Vec<u8>,
}

impl Outgoing {
    /// "This worker is alive", retained on its presence topic `me`.
    pub(super) fn presence(me: &str) -> Self {
        Self {
            topic: me.to_owned(),
            qos: QoS::AtLeastOnce,
            retain: true,
            payload: ONLINE.to_vec(),
        }
    }

    /// Marks the presence `me` offline: leaving the group, so the others
    /// take the partitions at once. The same message is the last will.
    pub(super) fn departure(me: &str) -> Self {
        Self {
            topic: me.to_owned(),
            qos: QoS::AtLeastOnce,
            retain: true,
            payload: OFFLINE.to_vec(),
        }
    }

    /// The broker publishes [`Outgoing::departure`] when the connection
    /// dies without a goodbye.
    pub(super) fn last_will(me: &str) -> LastWill {
        let will = Self::departure(me);
        LastWill::new(will.topic, will.payload, will.qos, will.retain, None)
    }

    /// The answer (a `Welcome` frame) to a device's live `Hello`; not
    /// retained: it is for the session that asked.
    pub(super) fn welcome(device: &DeviceTopics, reply: Vec<u8>) -> Self {
        Self {
            topic: device.welcome.clone(),
            qos: QoS::AtLeastOnce,
            retain: false,
            payload: reply,
        }
    }

    /// A retained `Ack` of everything up to `up_to`: the device reads it,
    /// and so does the next owner of its partition.
    pub(super) fn ack(device: &DeviceTopics, up_to: u64) -> Option<Self> {
        let payload = frame::encode_to_vec(&Message::Ack(Ack { up_to })).ok()?;
        Some(Self {
            topic: device.ack.clone(),
            qos: QoS::AtLeastOnce,
            retain: true,
            payload,
        })
    }

    /// A result line as JSON, at most once: the durable record is the
    /// results file.
    pub(super) fn result(device: &DeviceTopics, line: &serde_json::Value) -> Self {
        Self {
            topic: device.result.clone(),
            qos: QoS::AtMostOnce,
            retain: false,
            payload: serde_json::to_vec(line).unwrap_or_default(),
        }
    }
}

impl Outgoing {
    /// A device's retained state for home systems.
    pub(super) fn state(device: &DeviceTopics, state: &serde_json::Value) -> Self {
        Self {
            topic: device.state.clone(),
            qos: QoS::AtLeastOnce,
            retain: true,
            payload: serde_json::to_vec(state).unwrap_or_default(),
        }
    }

    /// One event (an alarm, a label change) of a device.
    pub(super) fn event(device: &DeviceTopics, event: &serde_json::Value) -> Self {
        Self {
            topic: device.events.clone(),
            qos: QoS::AtLeastOnce,
            retain: false,
            payload: serde_json::to_vec(event).unwrap_or_default(),
        }
    }
}

/// The client side of a worker's connection, as far as sending goes.
pub(super) struct Outbox {
    client: AsyncClient,
    /// The share group.
    group: String,
    /// This worker's presence topic.
    me: String,
}

impl Outbox {
    /// Sends through `client` for worker presence topic `me` of `group`.
    pub(super) fn new(client: AsyncClient, group: String, me: String) -> Self {
        Self { client, group, me }
    }

    /// Publishes `message`.
    pub(super) async fn publish(&self, message: Outgoing) {
        let Outgoing {
            topic,
            qos,
            retain,
            payload,
        } = message;
        let _ = self.client.publish(topic, qos, retain, payload).await;
    }

    /// Says this worker is alive.
    pub(super) async fn announce(&self) {
        self.publish(Outgoing::presence(&self.me)).await;
    }

    /// Says this worker has left.
    pub(super) async fn depart(&self) {
        self.publish(Outgoing::departure(&self.me)).await;
    }

    /// Subscribes to the group's presence and to every device's `Hello`.
    pub(super) async fn subscribe_group(&self) {
        let _ = self
            .client
            .subscribe_many([
                Filter::new(topics::workers_filter(&self.group), QoS::AtLeastOnce),
                Filter::new(topics::hello_filter(), QoS::AtLeastOnce),
            ])
            .await;
    }

    /// Subscribes to partition `p`: its retained acks first (the broker
    /// sends their values before any latent of the second subscription),
    /// then its share of latents. Not no-local: after a reconnect this
    /// worker's own retained acks are what it must read back.
    pub(super) async fn take_partition(&self, p: u16) {
        let _ = self
            .client
            .subscribe(topics::ack_filter(p), QoS::AtLeastOnce)
            .await;
        let _ = self
            .client
            .subscribe(
                topics::shared_latent_filter(&self.group, p),
                QoS::AtLeastOnce,
            )
            .await;
    }

    /// Unsubscribes from partition `p`'s latents, then its acks.
    pub(super) async fn drop_partition(&self, p: u16) {
        let _ = self
            .client
            .unsubscribe(topics::shared_latent_filter(&self.group, p))
            .await;
        let _ = self.client.unsubscribe(topics::ack_filter(p)).await;
    }

    /// Acknowledges a received message to the broker (`PUBACK`): taken, so
    /// the broker may send more.
    pub(super) async fn taken(&self, publish: &Publish) {
        let _ = self.client.ack(publish).await;
    }

    /// Ends the connection.
    pub(super) async fn disconnect(&self) {
        let _ = self.client.disconnect().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> DeviceTopics {
        DeviceTopics::new("site", "cam").unwrap()
    }

    #[test]
    fn presence_is_retained_and_the_last_will_says_offline() {
        let me = topics::worker_topic("g", "w1");
        let online = Outgoing::presence(&me);
        assert_eq!(online.topic, "latentcam/_workers/g/w1");
        assert_eq!((online.qos, online.retain), (QoS::AtLeastOnce, true));
        assert_eq!(online.payload, b"online");
        let gone = Outgoing::departure(&me);
        assert_eq!((gone.topic.as_str(), gone.retain), (me.as_str(), true));
        assert_eq!(gone.payload, b"offline");
        let will = Outgoing::last_will(&me);
        assert_eq!(will.topic, me.as_bytes());
        assert_eq!(will.message.as_ref(), b"offline");
        assert_eq!((will.qos, will.retain), (QoS::AtLeastOnce, true));
    }

    #[test]
    fn acks_are_retained_frames_on_the_devices_ack_topic() {
        let ack = Outgoing::ack(&device(), 41).unwrap();
        assert_eq!(ack.topic, device().ack);
        assert_eq!((ack.qos, ack.retain), (QoS::AtLeastOnce, true));
        assert_eq!(super::super::device::read_ack(&ack.payload), Some(41));
    }

    #[test]
    fn welcomes_are_for_the_asking_session_and_results_best_effort() {
        let welcome = Outgoing::welcome(&device(), vec![1, 2, 3]);
        assert_eq!(welcome.topic, device().welcome);
        assert_eq!((welcome.qos, welcome.retain), (QoS::AtLeastOnce, false));
        assert_eq!(welcome.payload, [1, 2, 3]);
        let result = Outgoing::result(&device(), &serde_json::json!({"seq": 3}));
        assert_eq!(result.topic, device().result);
        assert_eq!((result.qos, result.retain), (QoS::AtMostOnce, false));
        assert_eq!(result.payload, br#"{"seq":3}"#);
    }
}
