//! The demo program end to end, as a user runs it.

use std::path::PathBuf;
use std::process::Command;

const VTEST: &str = "/usr/share/doc/opencv-doc/examples/data/vtest.avi";

#[test]
fn the_demo_runs_end_to_end_on_real_video() {
    let models = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models");
    let out = Command::new(env!("CARGO_BIN_EXE_latentcam-demo"))
        .args(["--frames", "12", "--video", VTEST, "--models"])
        .arg(models)
        .env("LATENTCAM_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("demo-cam")).count(),
        12
    );
    assert!(stdout.contains("12 results from the host"), "{stdout}");
    assert!(stdout.contains("x smaller"), "{stdout}");
}
