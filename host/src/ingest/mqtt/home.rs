//! What Home Assistant, Node-RED and other home systems read from a worker:
//! a retained per-device `state`, an `events` topic, and Home Assistant's
//! MQTT discovery.
//!
//! * `…/state` (JSON, QoS 1, retained): the latest ImageNet label, few-shot
//!   label and anomaly score and alarm. Published when a label or the alarm
//!   changes, else at most every [`STATE_EVERY`], so a camera at 30 frames/s
//!   does not write 30 retained messages a second.
//! * `…/events` (JSON, QoS 1): `anomaly_alarm` when an alarm starts,
//!   `anomaly_cleared` when it ends, `label_changed` when the few-shot label
//!   changes.
//! * `<prefix>/sensor|binary_sensor/latentcam_<site>_<device>/<key>/config`
//!   (retained): Home Assistant discovery of those values as one device,
//!   available while the device's own retained `status` says `online`.
//!
//! [`HomeState`] is the per-device logic, pure and clocked by its caller.

use std::time::{Duration, Instant};

use latentcam_wire::mqtt::DeviceTopics;
use rumqttc::v5::mqttbytes::QoS;
use serde_json::{Value, json};

use super::publish::Outgoing;

/// The longest a changing anomaly score waits before `state` shows it.
pub(super) const STATE_EVERY: Duration = Duration::from_secs(1);

/// The default Home Assistant discovery prefix.
pub const DISCOVERY_PREFIX: &str = "homeassistant";

/// The values of a result line that `state` carries.
#[derive(Debug, Clone, PartialEq)]
struct Summary {
    label: Option<String>,
    label_p: Option<f64>,
    fewshot: Option<String>,
    anomaly: Option<f64>,
    alarm: bool,
    /// The anomaly head raised an event on this latent.
    alarm_started: bool,
}

impl Summary {
    fn of(line: &Value) -> Self {
        let heads = &line["heads"];
        let top = &heads["imagenet"][0];
        let anomaly = &heads["anomaly"];
        Self {
            label: top["label"].as_str().map(str::to_owned),
            label_p: top["p"].as_f64(),
            fewshot: heads["fewshot"]["label"].as_str().map(str::to_owned),
            anomaly: anomaly["score"].as_f64(),
            alarm: anomaly["alarm"].as_bool().unwrap_or(false),
            alarm_started: anomaly["event"].as_bool().unwrap_or(false),
        }
    }

    /// Whether `self` differs from `other` in what a home system reacts to.
    fn differs_discretely(&self, other: &Self) -> bool {
        self.label != other.label || self.fewshot != other.fewshot || self.alarm != other.alarm
    }
}

/// What one result line makes a worker publish for its device.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct HomeUpdate {
    /// The new retained state, if it is due.
    pub(super) state: Option<Value>,
    /// Events, in order.
    pub(super) events: Vec<Value>,
}

/// Per device: what was last seen and published, and whether discovery
/// went out.
#[derive(Debug, Clone, Default)]
pub(super) struct HomeState {
    /// The previous result's values (events are transitions from it).
    last: Option<Summary>,
    /// The values `state` last showed, and when it went out.
    sent: Option<(Summary, Instant)>,
    /// Discovery was published for the device's current `Hello`.
    pub(super) announced: bool,
}

impl HomeState {
    /// The device's result `line`, finished at `now`.
    pub(super) fn on_result(&mut self, line: &Value, now: Instant) -> HomeUpdate {
        let summary = Summary::of(line);
        let when = json!({
            "seq": line["seq"],
            "captured_at": line["captured_at"],
            "received_at": line["received_at"],
        });
        let event = |kind: &str, extra: Value| {
            let mut event = json!({"type": kind, "device": line["device"]});
            merge(&mut event, &when);
            merge(&mut event, &extra);
            event
        };
        let mut events = Vec::new();
        let previous = self.last.as_ref();
        if summary.alarm_started {
            events.push(event("anomaly_alarm", json!({"score": summary.anomaly})));
        } else if previous.is_some_and(|p| p.alarm) && !summary.alarm {
            events.push(event("anomaly_cleared", json!({"score": summary.anomaly})));
        }
        if let Some(p) = previous
            && p.fewshot != summary.fewshot
        {
            events.push(event(
                "label_changed",
                json!({"head": "fewshot", "from": p.fewshot, "to": summary.fewshot}),
            ));
        }
        let due = match &self.sent {
            Some((shown, at)) => {
                summary.differs_discretely(shown)
                    || (summary.anomaly != shown.anomaly
                        && now.saturating_duration_since(*at) >= STATE_EVERY)
            }
            None => true,
        };
        let state = due.then(|| {
            let mut state = json!({
                "label": summary.label,
                "label_p": summary.label_p,
                "fewshot": summary.fewshot,
                "anomaly": summary.anomaly,
                "alarm": summary.alarm,
            });
            merge(&mut state, &when);
            state
        });
        if due {
            self.sent = Some((summary.clone(), now));
        }
        self.last = Some(summary);
        HomeUpdate { state, events }
    }
}

fn merge(into: &mut Value, from: &Value) {
    if let (Value::Object(into), Value::Object(from)) = (into, from) {
        for (k, v) in from {
            into.insert(k.clone(), v.clone());
        }
    }
}

/// `text` as a Home Assistant object id: ASCII letters, digits, `_` and
/// `-`; anything else becomes `_`, and then a hash of the original keeps
/// two different names apart.
fn object_id(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean == text {
        clean
    } else {
        // FNV-1a-32, as the partition hash: stable across versions.
        let hash = text.bytes().fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        format!("{clean}_{hash:08x}")
    }
}

/// What discovery says about a device beyond its topics.
#[derive(Debug, Clone)]
pub(super) struct DeviceInfo<'a> {
    /// `<site>`.
    pub(super) site: &'a str,
    /// `<device>`.
    pub(super) device: &'a str,
    /// The encoder's model id.
    pub(super) model: &'a str,
    /// The edge's firmware version.
    pub(super) firmware: &'a str,
}

/// Home Assistant discovery messages (retained) for one device under
/// `prefix`: the ImageNet label, the few-shot label and the anomaly score
/// as sensors, the alarm as a binary sensor.
pub(super) fn discovery(
    prefix: &str,
    topics: &DeviceTopics,
    info: &DeviceInfo<'_>,
) -> Vec<Outgoing> {
    let node = format!(
        "latentcam_{}_{}",
        object_id(info.site),
        object_id(info.device)
    );
    let device = json!({
        "identifiers": [node],
        "name": format!("latentcam {}", info.device),
        "manufacturer": "latentcam",
        "model": info.model,
        "sw_version": info.firmware,
        "suggested_area": info.site,
    });
    let entities = [
        (
            "sensor",
            "label",
            json!({"name": "Label", "value_template": "{{ value_json.label }}", "icon": "mdi:label"}),
        ),
        (
            "sensor",
            "fewshot",
            json!({"name": "Few-shot label", "value_template": "{{ value_json.fewshot }}", "icon": "mdi:account-search"}),
        ),
        (
            "sensor",
            "anomaly",
            json!({
                "name": "Anomaly score",
                "value_template": "{{ value_json.anomaly }}",
                "state_class": "measurement",
                "icon": "mdi:chart-bell-curve",
            }),
        ),
        (
            "binary_sensor",
            "alarm",
            json!({
                "name": "Anomaly alarm",
                "value_template": "{{ 'ON' if value_json.alarm else 'OFF' }}",
                "device_class": "problem",
            }),
        ),
    ];
    entities
        .into_iter()
        .map(|(component, key, mut config)| {
            merge(
                &mut config,
                &json!({
                    "unique_id": format!("{node}_{key}"),
                    "object_id": format!("{node}_{key}"),
                    "state_topic": topics.state,
                    "json_attributes_topic": topics.state,
                    "availability_topic": topics.status,
                    "payload_available": "online",
                    "payload_not_available": "offline",
                    "device": device,
                    "origin": {
                        "name": "latentcam",
                        "sw_version": env!("CARGO_PKG_VERSION"),
                    },
                }),
            );
            Outgoing {
                topic: format!("{prefix}/{component}/{node}/{key}/config"),
                qos: QoS::AtLeastOnce,
                retain: true,
                payload: serde_json::to_vec(&config).unwrap_or_default(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, fewshot: &str, score: f64, event: bool, alarm: bool) -> Value {
        json!({
            "device": "cam",
            "seq": seq,
            "captured_at": "2026-12-04T10:00:00.000000Z",
            "received_at": "2026-12-04T10:00:00.010000Z",
            "heads": {
                "imagenet": [{"label": "tabby", "class": 281, "p": 0.5}],
                "fewshot": {"label": fewshot},
                "anomaly": {"score": score, "event": event, "warm": true, "alarm": alarm},
            },
        })
    }

    #[test]
    fn state_goes_out_on_change_or_once_a_second_and_events_on_transitions() {
        let t0 = Instant::now();
        let mut home = HomeState::default();
        let first = home.on_result(&line(0, "alice", 0.1, false, false), t0);
        let state = first.state.expect("the first result is always state");
        assert_eq!(state["fewshot"], "alice");
        assert_eq!(state["label"], "tabby");
        assert_eq!(state["alarm"], false);
        assert_eq!(state["captured_at"], "2026-12-04T10:00:00.000000Z");
        assert!(first.events.is_empty());

        // Only the score moved, within a second: nothing; after it: state.
        let t = t0 + Duration::from_millis(500);
        assert_eq!(
            home.on_result(&line(1, "alice", 0.12, false, false), t),
            HomeUpdate::default()
        );
        // The score then holds still: what state showed is still stale.
        let t = t0 + STATE_EVERY;
        let update = home.on_result(&line(2, "alice", 0.12, false, false), t);
        assert_eq!(update.state.unwrap()["anomaly"], 0.12);
        let t = t + Duration::from_millis(10);
        assert_eq!(
            home.on_result(&line(2, "alice", 0.12, false, false), t),
            HomeUpdate::default()
        );

        // An alarm starts: state at once and one event; it ends: one more.
        let t = t + Duration::from_millis(10);
        let update = home.on_result(&line(3, "alice", 0.3, true, true), t);
        assert_eq!(update.state.unwrap()["alarm"], true);
        assert_eq!(update.events.len(), 1);
        assert_eq!(update.events[0]["type"], "anomaly_alarm");
        assert_eq!(update.events[0]["seq"], 3);
        let update = home.on_result(&line(4, "alice", 0.31, false, true), t);
        assert!(update.events.is_empty(), "still the same alarm");
        let update = home.on_result(&line(5, "alice", 0.05, false, false), t);
        assert_eq!(update.events[0]["type"], "anomaly_cleared");

        // The few-shot label changes: an event naming both labels.
        let update = home.on_result(&line(6, "bob", 0.05, false, false), t);
        assert_eq!(update.state.unwrap()["fewshot"], "bob");
        assert_eq!(
            update.events,
            [json!({
                "type": "label_changed", "device": "cam", "seq": 6, "head": "fewshot",
                "from": "alice", "to": "bob",
                "captured_at": "2026-12-04T10:00:00.000000Z",
                "received_at": "2026-12-04T10:00:00.010000Z",
            })]
        );
    }

    #[test]
    fn a_result_without_those_heads_is_state_of_nulls() {
        let mut home = HomeState::default();
        let update = home.on_result(
            &json!({"device": "cam", "seq": 0, "heads": {}}),
            Instant::now(),
        );
        let state = update.state.unwrap();
        assert!(
            state["label"].is_null() && state["fewshot"].is_null() && state["anomaly"].is_null()
        );
        assert_eq!(state["alarm"], false);
    }

    #[test]
    fn object_ids_are_safe_and_distinct() {
        assert_eq!(object_id("cam-01_a"), "cam-01_a");
        let (a, b) = (object_id("front door"), object_id("front:door"));
        assert!(a.starts_with("front_door_") && b.starts_with("front_door_"));
        assert_ne!(a, b);
    }

    #[test]
    fn discovery_names_one_device_with_four_entities() {
        let topics = DeviceTopics::new("shop", "cam 1").unwrap();
        let info = DeviceInfo {
            site: "shop",
            device: "cam 1",
            model: "efficientnet-lite0",
            firmware: "0.1.0",
        };
        let messages = discovery("homeassistant", &topics, &info);
        let node = format!("latentcam_shop_{}", object_id("cam 1"));
        let names: Vec<&str> = messages.iter().map(|m| m.topic.as_str()).collect();
        assert_eq!(
            names,
            [
                format!("homeassistant/sensor/{node}/label/config"),
                format!("homeassistant/sensor/{node}/fewshot/config"),
                format!("homeassistant/sensor/{node}/anomaly/config"),
                format!("homeassistant/binary_sensor/{node}/alarm/config"),
            ]
        );
        for m in &messages {
            assert!(m.retain);
            let config: Value = serde_json::from_slice(&m.payload).unwrap();
            assert_eq!(config["state_topic"], "latentcam/shop/cam 1/state");
            assert_eq!(config["availability_topic"], "latentcam/shop/cam 1/status");
            assert_eq!(config["device"]["identifiers"][0], node);
        }
    }
}
