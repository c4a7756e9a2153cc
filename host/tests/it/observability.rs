//! The operator's side of `/metrics`: a real host serving the real edge is
//! scraped and the exposition checked by `promtool` (Debian's prometheus
//! package), and the shipped alert rules and Grafana dashboard are checked
//! against it: their PromQL parses, the rules' own unit tests pass, and
//! every latentcam metric they name is one the host exposes. The same
//! host's live page is rendered in headless Chromium.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use latentcam_testkit::repo;
use serde_json::Value;

use crate::serve::{Host, edge_config, has_colour, live_page, run_edge, scratch};

/// Metrics that only a camera with the hardware reports (no thermal zone
/// on a CI machine): named by the rules and dashboard, absent here.
const HARDWARE_ONLY: [&str; 1] = ["latentcam_device_cpu_temperature_celsius"];

fn promtool(args: &[&str], stdin: Option<&str>, dir: &Path) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus; scripts/setup.sh installs it)");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// Every `latentcam_…` and `process_…` metric name in `text`, with the
/// histogram suffixes a query adds taken off.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (start, _) in text
        .match_indices("latentcam_")
        .chain(text.match_indices("process_"))
    {
        if start > 0 && text.as_bytes()[start - 1].is_ascii_alphanumeric() {
            continue;
        }
        let name: String = text[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        names.insert(base.to_owned());
    }
    names
}

/// The dashboard's queries, with its variables given values, as a rule
/// file: `promtool check rules` then parses every one.
fn dashboard_as_rules(dashboard: &Value) -> (String, usize) {
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    for a in dashboard["annotations"]["list"].as_array().unwrap() {
        exprs.push(a["expr"].as_str().unwrap().to_owned());
    }
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$device", ".*")
            .replace("$instance", ".*");
        let quoted = serde_json::to_string(&expr).unwrap();
        rules.push_str(&format!(
            "      - record: dashboard:q{i}\n        expr: {quoted}\n"
        ));
    }
    (rules, exprs.len())
}

#[test]
fn metrics_rules_and_dashboard_pass_promtool_and_agree() {
    let dir = scratch("observability");
    let jsonl = dir.join("results.jsonl");
    let host = Host::start_with(
        &jsonl,
        "127.0.0.1:0",
        &["--http", "127.0.0.1:0", "--anomaly"],
    );
    let originals = repo().join("models/efficientnet-lite0/fixtures/originals");
    let mut config = edge_config(&originals, &host.address, &dir.join("spool"), "porch");
    // Past the anomaly head's warm-up of 60 latents (it scores after it),
    // with heartbeats (spool depth, encoder time) on the way.
    config.source.unpaced = true;
    config.source.looping = true;
    config.device.heartbeat_seconds = 0.2;
    let report = run_edge(config, 64).join().unwrap();
    assert_eq!(report.encoded, 64);
    let answer = host.api().get("/metrics");
    assert_eq!(answer.status, 200);
    let exposition = answer.text();
    // The live page of the same host: the camera's card, online, with the
    // sparkline of the scores after the warm-up.
    let shot = dir.join("live.png");
    let dom = live_page(&host.api(), &shot);
    host.stop();
    if let Some(keep) = std::env::var_os("LATENTCAM_KEEP_SCREENSHOTS") {
        std::fs::copy(&shot, Path::new(&keep).join("live.png")).unwrap();
    }
    assert!(
        dom.contains(r#"<span class="state online">online</span>"#),
        "{dom}"
    );
    assert!(dom.contains(r#"<svg class="spark""#), "{dom}");
    assert!(dom.contains("anomaly score, 4 latents, "), "{dom}");
    assert!(
        has_colour(&shot, [0x17, 0x6d, 0x2c]),
        "the online badge's green"
    );
    assert!(
        has_colour(&shot, [0x3a, 0x5b, 0xa0]),
        "the sparkline's blue"
    );

    let deploy = repo().join("deploy/prometheus");
    let (ok, said) = promtool(&["check", "metrics"], Some(&exposition), &deploy);
    assert!(ok, "promtool check metrics:\n{said}\n{exposition}");
    let exposed = metric_names(&exposition);
    for expected in [
        "latentcam_device_up",
        "latentcam_device_spool_depth",
        "latentcam_device_inference_p50_seconds",
        "latentcam_anomaly_score",
        "latentcam_anomaly_alarms_total",
        "latentcam_capture_to_result_seconds",
        "latentcam_build_info",
        "process_resident_memory_bytes",
    ] {
        assert!(
            exposed.contains(expected),
            "{expected} not in\n{exposition}"
        );
    }

    let (ok, said) = promtool(&["check", "rules", "latentcam-rules.yml"], None, &deploy);
    assert!(ok, "{said}");
    let (ok, said) = promtool(
        &["test", "rules", "latentcam-rules.test.yml"],
        None,
        &deploy,
    );
    assert!(ok, "{said}");

    let dashboard_file = repo().join("deploy/grafana/latentcam-dashboard.json");
    let dashboard_text = std::fs::read_to_string(&dashboard_file).unwrap();
    let dashboard: Value = serde_json::from_str(&dashboard_text).unwrap();
    let (rules, queries) = dashboard_as_rules(&dashboard);
    assert!(queries >= 15, "{queries} queries");
    let checked = dir.join("dashboard-rules.yml");
    std::fs::write(&checked, rules).unwrap();
    let (ok, said) = promtool(&["check", "rules", checked.to_str().unwrap()], None, &dir);
    assert!(ok, "a dashboard query does not parse:\n{said}");

    let rules_text = std::fs::read_to_string(deploy.join("latentcam-rules.yml")).unwrap();
    for (what, text) in [("alert rules", &rules_text), ("dashboard", &dashboard_text)] {
        for name in metric_names(text) {
            assert!(
                exposed.contains(&name) || HARDWARE_ONLY.contains(&name.as_str()),
                "the {what} name {name}, which the host does not expose"
            );
        }
    }
}
