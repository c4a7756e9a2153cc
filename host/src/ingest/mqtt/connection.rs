//! The broker connection of an MQTT worker: its options (address, TLS,
//! credentials, last will) and the task that polls the client's event loop,
//! reconnecting with backoff, and hands the worker what arrives.

use std::time::Duration;

use latentcam_secure::tls::tls_client_config;
use latentcam_wire::mqtt::{self as topics, Broker, parse_url};
use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
use rumqttc::v5::{ConnectionError, Event, EventLoop, MqttOptions};
use rumqttc::{TlsConfiguration, Transport};
use tokio::sync::mpsc;

use super::MqttIngest;
use super::publish::Outgoing;
use crate::ingest::ServeError;

/// The client options for `ingest`, or what is wrong with its settings.
pub(super) fn options(ingest: &MqttIngest) -> Result<MqttOptions, ServeError> {
    let config = |message: String| ServeError::Mqtt { message };
    let Broker { host, port, tls } = parse_url(&ingest.url).map_err(config)?;
    let loopback = crate::auth::is_loopback(&host);
    let tls = match tls {
        true => Some(
            tls_client_config(ingest.ca_file.as_deref(), ingest.client_cert.as_ref())
                .map_err(config)?,
        ),
        false if ingest.ca_file.is_some() || ingest.client_cert.is_some() => {
            return Err(config(format!(
                "--mqtt-ca and --mqtt-cert are only used with a TLS broker (mqtts://), not {}",
                ingest.url
            )));
        }
        false => None,
    };
    if ingest.client_cert.is_some() {
        tracing::info!(
            "MQTT devices are authenticated by the broker: it must require a client \
             certificate of every client and let each device publish only under the id \
             its certificate names (README, security: scripts/mosquitto-mtls.conf)"
        );
    }
    for (what, level) in [("group", &ingest.group), ("worker", &ingest.worker)] {
        if !topics::valid_level(level) {
            return Err(config(format!(
                "{what} {level:?} cannot be an MQTT topic level \
                 (1-64 bytes, no '/', '+', '#', not starting with '$' or '_')"
            )));
        }
    }
    let me = topics::worker_topic(&ingest.group, &ingest.worker);
    let mut options = MqttOptions::new(
        format!("latentcam-host-{}-{}", ingest.group, ingest.worker),
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
        .set_last_will(Outgoing::last_will(&me));
    if let Some(tls) = tls {
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    } else if ingest.username.is_some() && !loopback {
        tracing::warn!(
            "the MQTT password for {} travels in cleartext: use mqtts:// to encrypt it",
            ingest.url
        );
    }
    if let Some(user) = &ingest.username {
        options.set_credentials(user.clone(), ingest.password.clone().unwrap_or_default());
    }
    Ok(options)
}

/// Incoming from the event loop task.
pub(super) enum FromBroker {
    /// A session began (`ConnAck`).
    Connected,
    /// The connection failed. Events rumqttc had already read from it may
    /// still follow (it buffers a whole read), up to the next `Connected`:
    /// they belong to a session that no longer exists.
    Disconnected,
    /// A message on a subscribed topic.
    Publish(Box<Publish>),
}

/// The wait before each reconnection attempt: doubling from 100 ms up to
/// 5 s, back to 100 ms once connected.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MOST: Duration = Duration::from_secs(5);

    fn new() -> Self {
        Self { next: Self::FIRST }
    }

    /// Connected: the next failure waits the shortest time again.
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    /// How long to wait after this failure.
    fn delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (delay * 2).min(Self::MOST);
        delay
    }
}

/// Polls the event loop, reconnecting with backoff, until the worker
/// disconnects (shutting down) or drops its client. It never
/// waits for the worker (the channel is unbounded), so keep-alive pings
/// are answered however busy the heads are; what bounds the channel is
/// the broker's flow control: messages are acknowledged (`PUBACK`) only
/// once the worker has taken them, and the broker sends at most the
/// receive maximum of unacknowledged ones.
pub(super) async fn drive(
    mut eventloop: EventLoop,
    tx: mpsc::UnboundedSender<FromBroker>,
    label: String,
) {
    let mut backoff = Backoff::new();
    let mut down_logged = false;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
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
            // The worker is leaving and its DISCONNECT is on the wire: the
            // broker closes the connection now, which is no failure to
            // report or reconnect from.
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
            Ok(_) => {}
            // The worker dropped its client: nothing more will be asked.
            Err(ConnectionError::RequestsDone) => return,
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
                tokio::time::sleep(backoff.delay()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rumqttc::v5::mqttbytes::QoS;

    use super::*;

    fn ingest(url: &str) -> MqttIngest {
        MqttIngest {
            url: url.into(),
            ca_file: None,
            client_cert: None,
            group: "g".into(),
            worker: "w1".into(),
            username: None,
            password: None,
            publish_results: false,
            discovery_prefix: None,
        }
    }

    fn error(ingest: &MqttIngest) -> String {
        match options(ingest) {
            Err(ServeError::Mqtt { message }) => message,
            Err(other) => panic!("not a configuration error: {other}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn options_make_a_clean_manually_acknowledging_session_with_a_last_will() {
        let mut ingest = ingest("mqtt://127.0.0.1:1999");
        ingest.username = Some("u".into());
        let options = options(&ingest).unwrap();
        assert_eq!(options.broker_address(), ("127.0.0.1".into(), 1999));
        assert_eq!(options.client_id(), "latentcam-host-g-w1");
        assert_eq!(options.keep_alive(), Duration::from_secs(5));
        assert!(options.clean_start());
        assert!(options.manual_acks());
        assert_eq!(options.receive_maximum(), Some(512));
        assert_eq!(options.max_packet_size(), Some(1 << 20));
        let will = options.last_will().unwrap();
        assert_eq!(will.topic, "latentcam/_workers/g/w1".as_bytes());
        assert_eq!(will.message.as_ref(), b"offline");
        assert_eq!((will.qos, will.retain), (QoS::AtLeastOnce, true));
        let login = options.credentials().unwrap();
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("u", "")
        );
    }

    #[test]
    fn settings_that_cannot_work_are_refused_with_the_reason() {
        let mut bad = ingest("127.0.0.1");
        bad.ca_file = Some("ca.pem".into());
        assert!(error(&bad).contains("only used with a TLS broker"));
        let mut bad = ingest("127.0.0.1");
        bad.group = "a/b".into();
        assert!(error(&bad).starts_with("group \"a/b\" cannot be an MQTT topic level"));
        let mut bad = ingest("127.0.0.1");
        bad.worker = "_w".into();
        assert!(error(&bad).starts_with("worker \"_w\""));
    }

    #[test]
    fn reconnection_backs_off_up_to_five_seconds_and_resets_when_connected() {
        let mut backoff = Backoff::new();
        let waits: Vec<u64> = (0..8).map(|_| backoff.delay().as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.delay(), Duration::from_millis(100));
    }
}
