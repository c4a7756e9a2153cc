//! Home Assistant and Node-RED over a real mosquitto: a host worker serving
//! the real edge publishes discovery, retained per-device state and events,
//! read here by `mosquitto_sub` the way Home Assistant subscribes.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use latentcam_firmware::config::LinkKind;
use latentcam_testkit::{Broker, repo};
use serde_json::Value;

use crate::serve::{Host, edge_config, run_edge, scratch, wait_for_lines};

/// `mosquitto_sub` printing `<retained 0|1> <topic> <payload>` per message.
struct Subscriber {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Subscriber {
    fn start(broker: &Broker, filters: &[&str]) -> Self {
        let address = broker.address();
        let (host, port) = address.rsplit_once(':').unwrap();
        let mut command = Command::new("mosquitto_sub");
        command.args(["-h", host, "-p", port, "-V", "mqttv5", "-F", "%r %t %p"]);
        for filter in filters {
            command.args(["-t", filter]);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("mosquitto_sub (Debian's mosquitto-clients; scripts/setup.sh installs it)");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Messages as `(retained, topic, payload)` until `done` says enough or
    /// `within` passes.
    fn read_until(
        &self,
        within: Duration,
        mut done: impl FnMut(&[(bool, String, String)]) -> bool,
    ) -> Vec<(bool, String, String)> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        while !done(&got) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.lines.recv_timeout(left) else {
                break;
            };
            let mut parts = line.splitn(3, ' ');
            let retained = parts.next() == Some("1");
            let topic = parts.next().unwrap_or_default().to_owned();
            let payload = parts.next().unwrap_or_default().to_owned();
            got.push((retained, topic, payload));
        }
        got
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn enroll(store: &Path, photo: &Path) -> String {
    let label = photo.file_stem().unwrap().to_str().unwrap().to_owned();
    let out = Command::new(env!("CARGO_BIN_EXE_latentcam-host"))
        .args(["enroll", "--label", &label, "--store"])
        .arg(store)
        .arg("--models")
        .arg(repo().join("models"))
        .arg(photo)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    label
}

fn json(payload: &str) -> Value {
    serde_json::from_str(payload).unwrap_or_else(|e| panic!("{payload:?} is not JSON: {e}"))
}

#[test]
fn home_assistant_discovers_a_device_and_reads_its_state_and_events() {
    let dir = scratch("home");
    let broker = Broker::start(&dir.join("broker"));
    // Three photos of different things, each enrolled under its own name:
    // the edge sends them in name order, so the few-shot label changes
    // from each frame to the next.
    let originals = repo().join("models/efficientnet-lite0/fixtures/originals");
    let mut photos: Vec<_> = std::fs::read_dir(&originals)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    photos.sort();
    let store = dir.join("fewshot.bin");
    let labels: Vec<String> = photos.iter().map(|p| enroll(&store, p)).collect();

    let ha = Subscriber::start(
        &broker,
        &[
            "homeassistant/#",
            "latentcam/+/+/state",
            "latentcam/+/+/events",
            "latentcam/+/+/status",
            "latentcam/_workers/#",
        ],
    );
    let jsonl = dir.join("results.jsonl");
    let url = format!("mqtt://{}", broker.address());
    let store_arg = store.display().to_string();
    let host = Host::start_with(
        &jsonl,
        "127.0.0.1:0",
        &[
            "--mqtt",
            &url,
            "--group",
            "home",
            "--worker",
            "w1",
            "--fewshot",
            &store_arg,
            "--anomaly",
        ],
    );
    let mut config = edge_config(&originals, "", &dir.join("spool"), "porch");
    config.source.unpaced = true;
    config.link.kind = LinkKind::Mqtt;
    config.link.address = broker.address();
    config.mqtt.site = "house".into();
    config.mqtt.ack_timeout_seconds = 2.0;
    let report = run_edge(config, 3).join().unwrap();
    assert_eq!(report.encoded, 3);
    wait_for_lines(&jsonl, 3);
    host.stop();

    let offline = |got: &[(bool, String, String)]| {
        got.iter()
            .any(|(_, t, p)| t == "latentcam/_workers/home/w1" && p == "offline")
    };
    let got = ha.read_until(Duration::from_secs(20), offline);
    drop(ha);
    let on = |topic: &str| -> Vec<&str> {
        got.iter()
            .filter(|(_, t, _)| t == topic)
            .map(|(_, _, p)| p.as_str())
            .collect()
    };

    // The worker said it was online, and its departure says offline.
    assert_eq!(
        on("latentcam/_workers/home/w1"),
        ["online", "offline"],
        "{got:#?}"
    );
    // The device's own availability, which discovery points at.
    assert_eq!(on("latentcam/house/porch/status").first(), Some(&"online"));

    // Discovery: four entities of one device, in Home Assistant's schema.
    let configs: BTreeMap<&str, Value> = got
        .iter()
        .filter(|(_, t, _)| t.starts_with("homeassistant/"))
        .map(|(_, t, p)| (t.as_str(), json(p)))
        .collect();
    let node = "latentcam_house_porch";
    let model_id = latentcam_model::manifest::Manifest::load(repo().join("models"))
        .unwrap()
        .model_id;
    let expected = [
        format!("homeassistant/binary_sensor/{node}/alarm/config"),
        format!("homeassistant/sensor/{node}/anomaly/config"),
        format!("homeassistant/sensor/{node}/fewshot/config"),
        format!("homeassistant/sensor/{node}/label/config"),
    ];
    assert_eq!(
        configs.keys().copied().collect::<Vec<_>>(),
        expected,
        "{got:#?}"
    );
    let states = on("latentcam/house/porch/state");
    let last_state = json(states.last().expect("a retained state"));
    for (topic, config) in &configs {
        for field in [
            "name",
            "unique_id",
            "state_topic",
            "value_template",
            "availability_topic",
            "payload_available",
            "payload_not_available",
        ] {
            assert!(config[field].is_string(), "{topic}: {field} in {config}");
        }
        assert_eq!(config["state_topic"], "latentcam/house/porch/state");
        assert_eq!(config["availability_topic"], "latentcam/house/porch/status");
        assert_eq!(config["payload_available"], "online");
        assert_eq!(config["device"]["identifiers"][0], node);
        assert_eq!(config["device"]["model"], model_id.as_str());
        // The template reads a field the state carries.
        let template = config["value_template"].as_str().unwrap();
        let field = template
            .split("value_json.")
            .nth(1)
            .and_then(|rest| rest.split([' ', '}']).next())
            .unwrap();
        assert!(
            last_state.get(field).is_some(),
            "{field} not in {last_state}"
        );
    }

    // State: the few-shot label of the last photo, with its capture time.
    assert_eq!(last_state["fewshot"], labels[2].as_str(), "{last_state}");
    assert!(last_state["label"].is_string());
    assert!(last_state["captured_at"].as_str().unwrap().ends_with('Z'));
    // Events: the few-shot label changed twice, from one photo to the next.
    let changes: Vec<(String, String)> = on("latentcam/house/porch/events")
        .into_iter()
        .map(json)
        .filter(|e| e["type"] == "label_changed")
        .map(|e| {
            (
                e["from"].as_str().unwrap().into(),
                e["to"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            (labels[0].clone(), labels[1].clone()),
            (labels[1].clone(), labels[2].clone())
        ]
    );
    // Every payload on these topics is JSON or a status word: no frames.
    for (_, topic, payload) in &got {
        if !topic.ends_with("/status") && !topic.starts_with("latentcam/_workers/") {
            json(payload);
        }
    }

    // Home Assistant restarting later finds the discovery and the state
    // retained.
    let again = Subscriber::start(&broker, &["homeassistant/#", "latentcam/+/+/state"]);
    let retained = again.read_until(Duration::from_secs(10), |got| got.len() >= 5);
    assert_eq!(retained.len(), 5, "{retained:#?}");
    assert!(retained.iter().all(|(r, _, _)| *r), "{retained:#?}");
}
