//! What the `latentcam-host` commands answer to input that is not what
//! they take (no photos, a photo for a recording, a bad labels line, an
//! address without a port), and the accounting and log lines they give for
//! input that is: each test pins an answer a user once got wrong.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use latentcam_model::manifest::Manifest;
use latentcam_testkit::hello::{hello_of, latent_frame};
use latentcam_testkit::{Broker, models, repo};
use latentcam_wire::{Message, frame};

fn scratch(name: &str) -> latentcam_testkit::Scratch {
    latentcam_testkit::scratch("cli", name)
}

/// Runs `latentcam-host ARGS` to its end.
fn host(args: &[&OsStr]) -> Output {
    crate::common::host_command()
        .args(args)
        .env("LATENTCAM_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("run latentcam-host")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `latentcam-host replay RECORDING` with no heads: every frame is still
/// read and every accepted latent counted.
fn replay(recording: &Path) -> Output {
    host(&[
        "replay".as_ref(),
        "--no-imagenet".as_ref(),
        "--models".as_ref(),
        models().as_os_str(),
        recording.as_os_str(),
    ])
}

/// A photo that is no recording.
fn jpeg() -> std::path::PathBuf {
    repo().join("models/efficientnet-lite0/fixtures/originals/HappyFish.jpg")
}

/// A latent of the shipped model's size, different for each `seed`.
fn latent(manifest: &Manifest, seed: u64) -> Vec<f32> {
    (0..manifest.latent_dim)
        .map(|i| ((i as u64 * 31 + seed * 7) % 97) as f32 / 97.0 - 0.5)
        .collect()
}

/// A recording as the host's recorder writes one: each latent is
/// `(device, seq)`, and a device's `Hello` goes before its latent
/// whenever the previous latent was another device's.
fn recording(latents: &[(&str, u64)]) -> Vec<u8> {
    let manifest = Manifest::load(models()).unwrap();
    let mut bytes = Vec::new();
    let mut last = None;
    for &(device, seq) in latents {
        if last != Some(device) {
            let hello = Message::Hello(hello_of(&manifest, device));
            bytes.extend(frame::encode_to_vec(&hello).unwrap());
            last = Some(device);
        }
        bytes.extend(latent_frame(seq, seq * 100_000, &latent(&manifest, seq)));
    }
    bytes
}

/// Devices streaming at once, their latents interleaved: every device's
/// `seq` in turn, for each of `seqs`.
fn interleaved(
    devices: &[&'static str],
    seqs: impl Iterator<Item = u64>,
) -> Vec<(&'static str, u64)> {
    seqs.flat_map(|seq| devices.iter().map(move |&d| (d, seq)))
        .collect()
}

#[test]
fn enroll_with_no_photo_fails_and_leaves_the_store_alone() {
    let dir = scratch("enroll-nothing");
    let empty = dir.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let notes = dir.join("notes");
    std::fs::create_dir(&notes).unwrap();
    std::fs::write(notes.join("readme.txt"), "not a photo").unwrap();
    let store = dir.join("store.lcfs");
    let enroll = |store: &Path| {
        host(&[
            "enroll".as_ref(),
            "--label".as_ref(),
            "fish".as_ref(),
            "--store".as_ref(),
            store.as_os_str(),
            "--models".as_ref(),
            models().as_os_str(),
            empty.as_os_str(),
            notes.as_os_str(),
        ])
    };

    let out = enroll(&store);
    let said = stderr(&out);
    assert!(!out.status.success(), "{said}");
    assert!(!store.exists(), "no store is created");
    for words in [
        "no photos to enroll from",
        &format!("{} is an empty directory", empty.display()),
        &format!(
            "{} holds 1 entry but no .jpg, .jpeg or .png file",
            notes.display()
        ),
        "give JPEG or PNG photos",
    ] {
        assert!(said.contains(words), "{words:?} in {said}");
    }

    // A store that exists is not rewritten either (saving replaces the
    // file by renaming a new one over it).
    let mut existing = latentcam_host::heads::fewshot::FewShotStore::new(4).unwrap();
    existing.add("cat", &[1.0, 0.0, 0.0, 0.0]).unwrap();
    existing.save(&store).unwrap();
    let before = std::fs::read(&store).unwrap();
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&store).unwrap());
    let out = enroll(&store);
    assert!(!out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&store).unwrap(), before);
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&store).unwrap()),
        inode,
        "the store file was replaced"
    );
}

#[test]
fn commands_that_read_recordings_refuse_a_file_that_is_not_one() {
    let photo = jpeg();
    let inspect = host(&["inspect".as_ref(), photo.as_os_str()]);
    let replayed = replay(&photo);
    // The commands that fit or compare heads read recordings alike.
    let dir = scratch("not-a-recording");
    let labels = dir.join("labels.csv");
    std::fs::write(&labels, "seq,label\n0,fish\n1,bird\n").unwrap();
    let trained = host(&[
        "train".as_ref(),
        "--models".as_ref(),
        models().as_os_str(),
        "--recording".as_ref(),
        photo.as_os_str(),
        "--labels".as_ref(),
        labels.as_os_str(),
        "--out".as_ref(),
        dir.join("head").as_os_str(),
    ]);
    let compared = host(&[
        "compare".as_ref(),
        "--models".as_ref(),
        models().as_os_str(),
        photo.as_os_str(),
        photo.as_os_str(),
    ]);
    for (command, out) in [
        ("inspect", inspect),
        ("replay", replayed),
        ("train", trained),
        ("compare", compared),
    ] {
        let said = stderr(&out);
        assert!(!out.status.success(), "{command}: {said}");
        assert!(
            said.contains(&photo.display().to_string())
                && said.contains("not a latentcam recording: no valid frame in its first"),
            "{command}: {said}"
        );
        assert!(!said.contains("cannot fit a head"), "{command}: {said}");
    }
}

#[test]
fn a_recording_with_corrupt_frames_is_still_read() {
    let dir = scratch("corrupt-frames");
    let mut bytes = recording(&interleaved(&["cam"], 0..40));
    // A byte changed inside a latent frame halfway through (not into or
    // from a frame delimiter, 0): that frame fails its checks, the frames
    // around it read.
    let middle = (bytes.len() / 2..)
        .find(|&i| bytes[i] != 0 && bytes[i] != 0x55)
        .unwrap();
    bytes[middle] ^= 0x55;
    let file = dir.join("damaged.lcr");
    std::fs::write(&file, &bytes).unwrap();

    let out = host(&["inspect".as_ref(), file.as_os_str()]);
    let said = stdout(&out);
    assert!(out.status.success(), "{said}{}", stderr(&out));
    let errors: Vec<&str> = said
        .lines()
        .filter(|l| l.starts_with("frame errors: "))
        .collect();
    assert!(
        errors.len() == 1 && errors[0].ends_with(" 1") && !errors[0].contains("none"),
        "{said}"
    );
    assert!(said.contains("latents: 39,"), "{said}");

    let out = replay(&file);
    let said = stderr(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("39 latents through the heads, 0 skipped, 1 frame errors"),
        "{said}"
    );
}

#[test]
fn inspect_accounts_for_sequence_numbers_per_device() {
    let dir = scratch("inspect-devices");
    let devices = ["cam-0", "cam-1", "cam-2", "cam-3"];
    let clean = dir.join("clean.lcr");
    std::fs::write(&clean, recording(&interleaved(&devices, 0..50))).unwrap();
    let out = host(&["inspect".as_ref(), clean.as_os_str()]);
    let said = stdout(&out);
    assert!(out.status.success(), "{said}{}", stderr(&out));
    for device in devices {
        let line = format!(
            "device {device}: 50 latents, seq 0..=49, 0 missing, 0 out of order or duplicate"
        );
        assert!(said.contains(&line), "{line:?} in {said}");
    }
    // These latents are of protocol revision 1: no wall-clock time.
    assert!(
        said.contains("capture times: none (the device sent no wall-clock time)"),
        "{said}"
    );

    // cam-2 loses seq 20..23 and sends 30 twice; the others stay clean.
    let mut latents = interleaved(&devices, 0..50);
    latents.retain(|&(d, seq)| d != "cam-2" || !(20..23).contains(&seq));
    let again = latents.iter().position(|&l| l == ("cam-2", 31)).unwrap();
    latents.insert(again + 1, ("cam-2", 30));
    let gap = dir.join("gap.lcr");
    std::fs::write(&gap, recording(&latents)).unwrap();
    let out = host(&["inspect".as_ref(), gap.as_os_str()]);
    let said = stdout(&out);
    assert!(out.status.success(), "{said}{}", stderr(&out));
    assert!(
        said.contains(
            "device cam-2: 48 latents, seq 0..=49, 3 missing, 1 out of order or duplicate"
        ),
        "{said}"
    );
    for device in ["cam-0", "cam-1", "cam-3"] {
        let line = format!(
            "device {device}: 50 latents, seq 0..=49, 0 missing, 0 out of order or duplicate"
        );
        assert!(said.contains(&line), "{line:?} in {said}");
    }
}

#[test]
fn train_names_the_line_of_a_bad_labels_file() {
    let dir = scratch("train-labels");
    let file = dir.join("one.lcr");
    std::fs::write(&file, recording(&interleaved(&["cam"], 0..4))).unwrap();
    let cases = [
        (
            "seq,label\n0,cat\nfive,dog\n",
            "line 3: seq \"five\" is not a whole number",
        ),
        (
            "0,cat\n1,dog,cam,x\n",
            "line 2: 4 fields where 2 or 3 were expected",
        ),
        ("# labels\n\n0,cat\n1,\n", "line 4: the label is empty"),
    ];
    for (text, says) in cases {
        let labels = dir.join("labels.csv");
        std::fs::write(&labels, text).unwrap();
        let out = host(&[
            "train".as_ref(),
            "--models".as_ref(),
            models().as_os_str(),
            "--recording".as_ref(),
            file.as_os_str(),
            "--labels".as_ref(),
            labels.as_os_str(),
            "--out".as_ref(),
            dir.join("head").as_os_str(),
        ]);
        let said = stderr(&out);
        assert!(!out.status.success(), "{said}");
        assert!(
            said.contains(&format!("labels file {}, {says}", labels.display())),
            "{says:?} in {said}"
        );
        assert!(
            said.contains("write one `device,seq,label` or `seq,label` per line"),
            "{said}"
        );
        assert!(!said.contains("head file"), "{said}");
    }
}

#[test]
fn serve_names_a_malformed_address_and_how_to_write_it() {
    // A models directory that does not exist: the address is checked first.
    let nowhere = Path::new("/nonexistent/models");
    let cases = [
        (
            ["--tcp", "localhost"],
            "\"localhost\" is not an address to listen on: no port",
        ),
        (
            ["--tcp", "localhost:99999"],
            "port \"99999\" is not a number from 1 to 65535",
        ),
        (
            ["--tcp", ":7878"],
            "\":7878\" is not an address to listen on: no host",
        ),
        (["--http", "127.0.0.1"], "--http 127.0.0.1"),
        (
            ["--udp", "[::1]"],
            "no port after the bracketed IPv6 address",
        ),
    ];
    for (flags, says) in cases {
        let mut args: Vec<&OsStr> = vec!["serve".as_ref(), "--models".as_ref()];
        args.push(nowhere.as_os_str());
        if flags[0] != "--tcp" {
            args.extend([OsStr::new("--tcp"), OsStr::new("127.0.0.1:0")]);
        }
        if flags[0] == "--http" {
            args.push("--http-allow-anonymous".as_ref());
        }
        args.extend(flags.iter().map(OsStr::new));
        let out = host(&args);
        let said = stderr(&out);
        assert!(!out.status.success(), "{flags:?}: {said}");
        assert!(said.contains(says), "{says:?} in {said}");
        assert!(
            said.contains(&format!("{} {}", flags[0], flags[1]))
                && said.contains("write host:port, like 0.0.0.0:7878"),
            "{flags:?}: {said}"
        );
        assert!(!said.contains("another host"), "{flags:?}: {said}");
    }

    // A taken port is what the hint about another host is for.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let out = host(&[
        "serve".as_ref(),
        "--no-imagenet".as_ref(),
        "--models".as_ref(),
        models().as_os_str(),
        "--tcp".as_ref(),
        address.as_ref(),
    ]);
    let said = stderr(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains(&format!("cannot listen on {address}"))
            && said.contains("(is another host running there?)"),
        "{said}"
    );
}

/// A host serving an MQTT share group shuts down on SIGTERM without a
/// warning: leaving the broker is not losing it.
#[test]
fn an_mqtt_worker_stops_on_sigterm_without_a_warning() {
    let dir = scratch("mqtt-stop");
    let broker = Broker::start(&dir.join("broker"));
    let url = format!("mqtt://{}", broker.address());
    let mut child = crate::common::host_command()
        .args(["serve", "--no-imagenet", "--tcp", "127.0.0.1:0", "--models"])
        .arg(models())
        .args(["--mqtt", &url, "--group", "quiet", "--worker", "w1"])
        .env("LATENTCAM_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn latentcam-host");
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("host: {line}");
            let _ = tx.send(line.clone());
            lines.push(line);
        }
        lines
    });
    // Settled: connected, the group read, every partition taken.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("the worker takes its partitions");
        if line.contains("owns 64 of 64 partitions") {
            break;
        }
    }
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let status = child.wait().unwrap();
    let lines = reader.join().unwrap();
    assert!(status.success(), "host exited with {status}");
    assert!(
        lines.iter().any(|l| l.contains("leaving its group")),
        "{lines:#?}"
    );
    let warnings: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
    drop(broker);
}
