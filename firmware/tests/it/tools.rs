//! The one-shot subcommands as a user runs them: `encode` and
//! `check-config`.

use std::process::{Output, Stdio};

use latentcam_testkit::{models, program, repo};

fn edge(args: &[&std::ffi::OsStr]) -> Output {
    program(env!("CARGO_BIN_EXE_latentcam-edge"))
        .args(args)
        .env("LATENTCAM_MODELS", models())
        .stdin(Stdio::null())
        .output()
        .expect("run latentcam-edge")
}

/// `encode` of images none of which decodes fails, says so, and leaves an
/// earlier recording at the output path as it was; one that works
/// replaces it.
#[test]
fn encode_with_no_readable_image_fails_and_keeps_the_old_recording() {
    let dir = latentcam_testkit::scratch("tools", "encode");
    let broken = dir.join("broken.jpg");
    std::fs::write(&broken, b"not a JPEG at all").unwrap();
    let out = dir.join("photos.lcr");
    std::fs::write(&out, b"an earlier recording").unwrap();
    let run = edge(&[
        "encode".as_ref(),
        broken.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("none of the 1 images could be encoded"),
        "{stderr}"
    );
    assert!(
        stderr.contains("broken.jpg"),
        "the skipped file is named: {stderr}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"an earlier recording");
    let names: Vec<_> = std::fs::read_dir(&*dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "nothing left behind: {names:?}");

    let photo = repo().join("models/efficientnet-lite0/fixtures/originals");
    let photo = std::fs::read_dir(&photo)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "jpg"))
        .expect("a fixture photo");
    let run = edge(&[
        "encode".as_ref(),
        photo.as_os_str(),
        broken.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_ne!(std::fs::read(&out).unwrap(), b"an earlier recording");
}

/// `check-config` of a camera source passes only on a build that can
/// capture from one, and otherwise says how to get one, with the
/// configuration exit code.
#[test]
fn check_config_knows_whether_this_build_can_capture() {
    let dir = latentcam_testkit::scratch("tools", "check-config");
    let config = dir.join("edge.toml");
    std::fs::write(
        &config,
        "[source]\nkind = \"v4l\"\npath = \"/dev/video0\"\n[link]\nkind = \"udp\"\naddress = \"127.0.0.1:9\"\n",
    )
    .unwrap();
    let run = edge(&[
        "check-config".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    if cfg!(feature = "v4l") {
        assert!(run.status.success(), "{stderr}");
    } else {
        assert_eq!(run.status.code(), Some(78), "{stderr}");
        assert!(stderr.contains("--features v4l"), "{stderr}");
    }
}

/// Without `--config`, the installed configuration is read when it exists
/// (`$LATENTCAM_EDGE_CONFIG` stands in for /etc/latentcam/edge.toml here),
/// by a run as by `check-config`.
#[test]
fn the_installed_configuration_is_read_without_a_flag() {
    let dir = latentcam_testkit::scratch("tools", "default-config");
    let config = dir.join("edge.toml");
    std::fs::write(
        &config,
        "[device]\nid = \"from-the-installed-file\"\n[source]\nkind = \"synthetic\"\n",
    )
    .unwrap();
    let with_default = |args: &[&str]| {
        program(env!("CARGO_BIN_EXE_latentcam-edge"))
            .args(args)
            .env("LATENTCAM_MODELS", models())
            .env("LATENTCAM_EDGE_CONFIG", &config)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let run = with_default(&["check-config"]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("from-the-installed-file"), "{stdout}");

    // A run reads it too: a value it cannot use stops it, naming the key.
    std::fs::write(&config, "[device]\nheartbeat_seconds = 1000.0\n").unwrap();
    let run = with_default(&["--max-frames", "1"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("heartbeat_seconds"), "{stderr}");

    // Without one, check-config asks for a file.
    let run = edge(&["check-config".as_ref()]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--config FILE"), "{stderr}");
}

/// Completion scripts and the manual page come from the same definitions
/// as the parser, so they know every subcommand and flag.
#[test]
fn completions_and_the_manual_page_know_every_subcommand() {
    let bash = edge(&["completions".as_ref(), "bash".as_ref()]);
    assert!(bash.status.success());
    let bash = String::from_utf8_lossy(&bash.stdout);
    for word in [
        "latentcam-edge",
        "check-config",
        "doctor",
        "--log-format",
        "--progress-seconds",
    ] {
        assert!(bash.contains(word), "bash completion lacks {word}");
    }
    let man = edge(&["manpage".as_ref()]);
    assert!(man.status.success());
    let man = String::from_utf8_lossy(&man.stdout);
    assert!(man.contains(".TH latentcam-edge"), "{man}");
    assert!(man.contains("doctor") && man.contains("keygen"), "{man}");
    let unknown = edge(&["completions".as_ref(), "tcsh".as_ref()]);
    assert_eq!(
        unknown.status.code(),
        Some(2),
        "clap refuses an unknown shell"
    );
}
