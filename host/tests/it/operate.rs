//! The host as an operator runs it: the exit code that tells systemd not
//! to restart a configuration that cannot work, the configuration file
//! and its shipped example, the version, completions and manual page.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use latentcam_testkit::{models, repo};

/// `EX_CONFIG`: the unit's `RestartPreventExitStatus`.
const CONFIG: i32 = 78;

fn scratch(name: &str) -> latentcam_testkit::Scratch {
    latentcam_testkit::scratch("operate", name)
}

/// Runs `latentcam-host ARGS` to its end, without a default configuration
/// file, or with `config` standing in for /etc/latentcam/host.toml.
fn host_with(config: Option<&Path>, args: &[&OsStr]) -> Output {
    let mut command = crate::common::host_command();
    if let Some(config) = config {
        command.env("LATENTCAM_HOST_CONFIG", config);
    }
    command
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run latentcam-host")
}

fn host(args: &[&str]) -> Output {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    host_with(None, &args)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `serve --tcp 127.0.0.1:0 --models <the repository's models> ARGS`
/// (a flag repeated in ARGS wins): every configuration failure is caught
/// before anything is bound, so none of these runs serves.
fn serve(args: &[&str]) -> Output {
    let models = models();
    let mut all: Vec<&OsStr> = vec![
        "serve".as_ref(),
        "--tcp".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--models".as_ref(),
        models.as_os_str(),
    ];
    all.extend(args.iter().map(OsStr::new));
    host_with(None, &all)
}

/// Asserts that `out` failed with the configuration exit code and said
/// `what`.
#[track_caller]
fn assert_config_failure(out: &Output, what: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(CONFIG), "{stderr}");
    assert!(stderr.contains(what), "expected {what:?} in: {stderr}");
}

/// A models directory whose ImageNet head differs from the manifest's
/// SHA-256 by one byte; every other file links to the repository's.
fn tampered_models(dir: &Path) -> PathBuf {
    let source = models();
    let out = dir.join("models");
    let inner = out.join("efficientnet-lite0");
    std::fs::create_dir_all(&inner).unwrap();
    std::fs::copy(source.join("manifest.toml"), out.join("manifest.toml")).unwrap();
    for entry in std::fs::read_dir(source.join("efficientnet-lite0")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap();
        if name == "head.bin" {
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[1000] ^= 1;
            std::fs::write(inner.join(name), bytes).unwrap();
        } else {
            std::os::unix::fs::symlink(&path, inner.join(name)).unwrap();
        }
    }
    out
}

/// Each flag value, file and model that cannot work ends the host with 78
/// before it binds, so systemd does not restart it in a loop, and says
/// which flag or file is wrong.
#[test]
fn a_configuration_that_cannot_work_exits_78() {
    assert_config_failure(&serve(&["--tcp", "127.0.0.1"]), "--tcp 127.0.0.1");
    assert_config_failure(&serve(&["--udp", "::1:9"]), "--udp");
    assert_config_failure(&serve(&["--idle-timeout", "0"]), "--idle-timeout");
    assert_config_failure(&serve(&["--offline-after", "100000"]), "--offline-after");
    assert_config_failure(&serve(&["--mqtt", "http://broker"]), "--mqtt");
    let dir = scratch("exit-78");
    let missing = dir.join("missing");
    let missing = missing.to_str().unwrap();
    assert_config_failure(&serve(&["--keys", missing]), "keys init");
    assert_config_failure(
        &serve(&[
            "--http",
            "127.0.0.1:0",
            "--http-tls-cert",
            missing,
            "--http-tls-key",
            missing,
            "--http-allow-anonymous",
        ]),
        "TLS",
    );
    assert_config_failure(&serve(&["--http", "127.0.0.1:0"]), "--http-token-file");
    assert_config_failure(&serve(&["--head", missing]), "--head");

    assert_config_failure(&serve(&["--models", missing]), "manifest");
    let tampered = tampered_models(&dir);
    let out = serve(&["--models", tampered.to_str().unwrap()]);
    assert_config_failure(&out, "head.bin");
}

/// A failure the configuration cannot be blamed for (here, another
/// program holds the port) exits 1: systemd restarts the host, which then
/// may find the port free.
#[test]
fn a_port_in_use_exits_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let out = serve(&["--tcp", &address, "--no-imagenet"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot listen"), "{stderr}");
}

/// A configuration file for `check-config` with `models` set to the
/// repository's.
fn config_file(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("host.toml");
    std::fs::write(
        &path,
        format!("models = {:?}\n{body}", models().to_str().unwrap()),
    )
    .unwrap();
    path
}

/// The file's keys are serve's flags, lists are arrays, and a flag on the
/// command line overrides the file's setting of it.
#[test]
fn the_configuration_file_sets_flags_and_the_command_line_overrides_it() {
    let dir = scratch("config-file");
    let config = config_file(
        &dir,
        "tcp = \"127.0.0.1:7001\"\nmax_fps = 50\nanomaly = true\nno-imagenet = false\n\
         recording = [\"a.lcr\", \"b.lcr\"]\n",
    );
    let check = |args: &[&str]| {
        let mut all: Vec<&OsStr> = vec!["check-config".as_ref(), "--config".as_ref()];
        all.push(config.as_os_str());
        all.extend(args.iter().map(OsStr::new));
        host_with(None, &all)
    };
    let out = check(&[]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for line in [
        "tcp = \"127.0.0.1:7001\"",
        "max_fps = \"50\"",
        "anomaly = true",
        "recording = [\"a.lcr\", \"b.lcr\"]",
    ] {
        assert!(stdout.contains(line), "{line:?} in: {stdout}");
    }
    assert!(!stdout.contains("no_imagenet"), "false is unset: {stdout}");

    let out = check(&["--tcp", "127.0.0.1:7002", "--max-fps", "20"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("tcp = \"127.0.0.1:7002\""), "{stdout}");
    assert!(stdout.contains("max_fps = \"20\""), "{stdout}");
    assert!(!stdout.contains("7001"), "{stdout}");

    // The file's bad address is the file's: exit 78 as from the flag.
    let bad = config_file(&dir, "tcp = \"127.0.0.1\"\n");
    let out = host_with(
        None,
        &[
            "check-config".as_ref(),
            "--config".as_ref(),
            bad.as_os_str(),
        ],
    );
    assert_config_failure(&out, "--tcp 127.0.0.1");
}

/// Without `--config`, the installed file is read when it exists
/// (`$LATENTCAM_HOST_CONFIG` stands in for /etc/latentcam/host.toml).
#[test]
fn the_installed_configuration_is_read_without_a_flag() {
    let dir = scratch("default-config");
    let config = config_file(
        &dir,
        "tcp = \"127.0.0.1:7001\"\nhost_id = \"from-the-installed-file\"\n",
    );
    let out = host_with(Some(&config), &["check-config".as_ref()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("from-the-installed-file"), "{stdout}");
    let out = host_with(
        Some(&dir.join("absent.toml")),
        &[
            "check-config".as_ref(),
            "--tcp".as_ref(),
            "127.0.0.1:7001".as_ref(),
            "--models".as_ref(),
            models().as_os_str(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("from-the-installed-file"));
}

/// A key that is no flag, a value of the wrong type, a list for a single
/// value, and a file that is no TOML each name the file and the key, and
/// exit 78.
#[test]
fn a_bad_configuration_file_names_the_file_and_the_key() {
    let dir = scratch("bad-config");
    for (body, what) in [
        ("max-fpss = 5\n", "key `max-fpss`: no such setting"),
        (
            "anomaly = \"yes\"\n",
            "key `anomaly`: \"yes\" is not true or false",
        ),
        (
            "max_fps = \"fast\"\n",
            "key `max_fps`: invalid value 'fast'",
        ),
        ("tcp = [\"a:1\", \"b:2\"]\n", "key `tcp`: takes one value"),
        (
            "tcp = \"127.0.0.1:0\"\nidle_timeout = -5\n",
            "--idle-timeout must be more than 0",
        ),
        ("config = \"other.toml\"\n", "cannot name another"),
        ("tcp = 0.0.0.0:7878\n", "is not valid TOML"),
    ] {
        let path = dir.join("host.toml");
        std::fs::write(&path, body).unwrap();
        let out = host_with(
            None,
            &["serve".as_ref(), "--config".as_ref(), path.as_os_str()],
        );
        assert_config_failure(&out, what);
        assert_config_failure(&out, path.to_str().unwrap());
    }
    let out = host(&[
        "serve",
        "--config",
        dir.join("absent.toml").to_str().unwrap(),
    ]);
    assert_config_failure(&out, "cannot read the configuration");
}

/// The shipped example and the container's configuration check as they
/// are (with this repository's models), and every key the example shows
/// commented out is a setting of the right type.
#[test]
fn the_shipped_example_configuration_is_valid() {
    let example = repo().join("host/deploy/host.example.toml");
    for config in [&example, &repo().join("deploy/compose-host.toml")] {
        let out = host_with(
            None,
            &[
                "check-config".as_ref(),
                "--config".as_ref(),
                config.as_os_str(),
                "--models".as_ref(),
                models().as_os_str(),
            ],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
    }

    // Uncommented, the settings name files that exist only on a host; the
    // keys and types must still be right (those are checked first).
    let text_of_example = std::fs::read_to_string(&example).unwrap();
    let uncommented: String = text_of_example
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(setting)
                if setting.split_once(" = ").is_some_and(|(key, _)| {
                    key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                }) =>
            {
                setting
            }
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(
        uncommented, text_of_example,
        "the example shows optional keys"
    );
    let dir = scratch("example");
    let path = dir.join("host.toml");
    std::fs::write(&path, &uncommented).unwrap();
    let out = host_with(
        None,
        &[
            "check-config".as_ref(),
            "--config".as_ref(),
            path.as_os_str(),
        ],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(CONFIG), "{stderr}");
    for wrong in ["key `", "not valid TOML", "with the settings of"] {
        assert!(!stderr.contains(wrong), "{wrong:?} in: {stderr}");
    }
}

/// `--version` names the program as packages and bug reports need it.
#[test]
fn version_names_the_program() {
    let out = host(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).trim(),
        format!("latentcam-host {}", env!("CARGO_PKG_VERSION"))
    );
}

/// Completion scripts and the manual page come from the parser, so they
/// know every subcommand and flag.
#[test]
fn completions_and_the_manual_page_know_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = host(&["completions", shell]);
        let script = text(&out.stdout);
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        for word in ["check-config", "idle-timeout", "latentcam-host"] {
            assert!(script.contains(word), "{shell}: no {word}");
        }
    }
    let out = host(&["completions", "tcsh"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
    let out = host(&["manpage"]);
    let page = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(page.contains(".TH latentcam-host"), "{page:.400}");
    assert!(page.contains("check\\-config"), "{page:.2000}");
}

/// Off a terminal (a log, a pipe), `train` shows its progress as plain
/// lines, one as each stage starts, with no bar redraws in between.
#[test]
fn train_progress_off_a_terminal_is_plain_lines() {
    let dir = scratch("train-progress");
    let manifest = latentcam_model::manifest::Manifest::load(models()).unwrap();
    let mut bytes = latentcam_wire::frame::encode_to_vec(&latentcam_wire::Message::Hello(
        latentcam_testkit::hello::hello_of(&manifest, "door"),
    ))
    .unwrap();
    let mut labels = String::from("seq,label\n");
    for seq in 0..20u64 {
        let class = seq % 2;
        let latent: Vec<f32> = (0..manifest.latent_dim)
            .map(|i| if i % 2 == class as usize { 1.0 } else { 0.0 } + seq as f32 * 1e-3)
            .collect();
        bytes.extend(latentcam_testkit::hello::latent_frame(
            seq,
            seq * 100_000,
            &latent,
        ));
        labels.push_str(&format!("{seq},{}\n", ["odd", "even"][class as usize]));
    }
    let recording = dir.join("door.lcr");
    std::fs::write(&recording, &bytes).unwrap();
    let labels_path = dir.join("labels.csv");
    std::fs::write(&labels_path, labels).unwrap();
    let head = dir.join("door.head");
    let out = host_with(
        None,
        &[
            "train".as_ref(),
            "--models".as_ref(),
            models().as_os_str(),
            "--recording".as_ref(),
            recording.as_os_str(),
            "--labels".as_ref(),
            labels_path.as_os_str(),
            "--out".as_ref(),
            head.as_os_str(),
            "--epochs".as_ref(),
            "20".as_ref(),
        ],
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let reading = format!(
        "reading {}: 0% (0 of {} bytes)",
        recording.display(),
        bytes.len()
    );
    assert!(stderr.contains(&reading), "{reading:?} in: {stderr}");
    // 20 steps for each of the four weight decays tried, and the final fit.
    assert!(
        stderr.contains("training the head: 0% (step 0 of 100)"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\r') && !stderr.contains('\x1b'),
        "no terminal control: {stderr:?}"
    );
}
