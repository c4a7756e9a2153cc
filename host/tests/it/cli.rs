//! What the `latentcam-host` commands answer to input that is not what
//! they take (no photos, a photo for a recording, a bad labels line, an
//! address without a port), and the accounting and log lines they give for
//! input that is: each test pins an answer a user once got wrong.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use latentcam_testkit::models;

fn scratch(name: &str) -> latentcam_testkit::Scratch {
    latentcam_testkit::scratch("cli", name)
}

/// Runs `latentcam-host ARGS` to its end.
fn host(args: &[&OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_latentcam-host"))
        .args(args)
        .env("LATENTCAM_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("run latentcam-host")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
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
