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
