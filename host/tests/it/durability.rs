//! Durability and damaged state, against the real `latentcam-host` binary:
//!
//! * the ack rule, checked in a syscall trace (`strace`) of a host serving
//!   the real edge pipeline over loopback TCP: every `Ack` frame the host
//!   writes to the device's socket comes after an `fdatasync`/`fsync` of
//!   the results file (and of the recording) that followed the write of
//!   every result line (and recorded latent) it covers. This checks the
//!   order of system calls, which is what the host controls; it is not a
//!   power cut, and it trusts the kernel and the disk to honour a
//!   completed `fdatasync`;
//! * a damaged few-shot store and similarity index are moved aside with an
//!   ERROR and the host starts; a torn index tail is cut with a WARN;
//! * a 16-byte head file claiming 65536×65536 weights is refused with a
//!   clear error by a host whose address space is limited (`prlimit
//!   --as`), so nothing near 16 GiB is ever allocated.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use latentcam_firmware::assemble;
use latentcam_firmware::config::{EdgeConfig, LinkKind, SourceKind};
use latentcam_firmware::manifest::Manifest;
use latentcam_firmware::pipeline;
use latentcam_host::heads::fewshot::FewShotStore;
use latentcam_host::heads::search::LatentIndex;
use latentcam_wire::frame::MAX_FRAME_LEN;
use latentcam_wire::{FrameDecoder, Message};

use latentcam_testkit::VTEST;
use latentcam_testkit::repo;

fn scratch(name: &str) -> latentcam_testkit::Scratch {
    latentcam_testkit::scratch("durability", name)
}

fn models() -> PathBuf {
    repo().join("models")
}

/// A `latentcam-host serve` process (possibly under a wrapper such as
/// strace), with its log lines kept for the test to read.
struct Host {
    child: Child,
    address: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Host {
    /// Starts `command` (which runs `latentcam-host serve … --tcp
    /// 127.0.0.1:0`) and waits until the host says where it listens.
    fn start(mut command: Command) -> Self {
        let mut child = command
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the host");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        {
            let log = Arc::clone(&log);
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("host: {line}");
                    if let Some((_, bound)) = line.split_once("listening on ") {
                        let _ = tx.send(Some(bound.trim().to_owned()));
                    }
                    log.lock().unwrap().push(line);
                }
                let _ = tx.send(None);
            });
        }
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Some(address)) => Self {
                child,
                address,
                log,
            },
            other => {
                let _ = child.kill();
                panic!(
                    "the host did not start listening ({other:?}); its log: {:#?}",
                    log.lock().unwrap()
                );
            }
        }
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// SIGTERM to `pid` (the host itself, which may be a child of the
    /// started process), then waits for the started process to end well.
    fn stop(mut self, pid: u32) {
        let ok = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM {pid}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "host exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "host did not stop on SIGTERM");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn host_command(extra: &[&std::ffi::OsStr]) -> Command {
    let mut command = crate::common::host_command();
    command
        .args(["serve", "--tcp", "127.0.0.1:0", "--no-imagenet", "--models"])
        .arg(models())
        .args(extra);
    command
}

fn latent_dim() -> usize {
    Manifest::load(models()).unwrap().latent_dim
}

/// A deterministic latent that is not all zeros.
fn latent(dim: usize, salt: usize) -> Vec<f32> {
    (0..dim)
        .map(|i| ((i * 7 + salt * 13) % 29) as f32 / 29.0)
        .collect()
}

fn quarantined(dir: &Path, name: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{name}.damaged-"))
        })
        .collect()
}

#[test]
fn a_damaged_store_and_index_are_moved_aside_and_the_host_starts() {
    let dir = scratch("quarantine");
    let dim = latent_dim();
    let store = dir.join("fewshot.bin");
    let mut set = FewShotStore::new(dim).unwrap();
    set.add("door", &latent(dim, 1)).unwrap();
    set.add("desk", &latent(dim, 2)).unwrap();
    set.save(&store).unwrap();
    let index = dir.join("latents.idx");
    {
        let mut idx = LatentIndex::open(&index, dim, 100).unwrap();
        for seq in 0..3 {
            idx.add("cam", seq, seq, &latent(dim, seq as usize))
                .unwrap();
        }
    }
    // One flipped bit in the middle of each file (inside a stored latent).
    let flip = |path: &Path| {
        let mut bytes = std::fs::read(path).unwrap();
        let middle = bytes.len() / 3;
        bytes[middle] ^= 0x04;
        std::fs::write(path, &bytes).unwrap();
        bytes
    };
    let damaged_store = flip(&store);
    let damaged_index = flip(&index);

    let host = Host::start(host_command(&[
        "--fewshot".as_ref(),
        store.as_os_str(),
        "--index".as_ref(),
        index.as_os_str(),
        "--jsonl".as_ref(),
        dir.join("results.jsonl").as_os_str(),
    ]));
    let log = host.log();
    let pid = host.child.id();
    host.stop(pid);

    for (path, name, bytes) in [
        (&store, "fewshot.bin", &damaged_store),
        (&index, "latents.idx", &damaged_index),
    ] {
        let moved = quarantined(&dir, name);
        assert_eq!(moved.len(), 1, "{name} moved aside once: {moved:?}");
        assert_eq!(&std::fs::read(&moved[0]).unwrap(), bytes, "kept as it was");
        let said = log.iter().find(|l| {
            l.contains("ERROR")
                && l.contains(&path.display().to_string())
                && l.contains(&moved[0].display().to_string())
        });
        assert!(
            said.is_some_and(|l| l.contains("damaged") && l.contains("checksum")),
            "an ERROR naming {name}, what was wrong and where it went: {log:#?}"
        );
    }
    // A fresh index was started in its place; the store is created on the
    // first enrolment.
    let fresh = LatentIndex::open(&index, dim, 100).unwrap();
    assert!(fresh.is_empty());
    assert!(!store.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_torn_index_tail_is_cut_at_start_up_with_a_warning() {
    let dir = scratch("torn-index");
    let dim = latent_dim();
    let index = dir.join("latents.idx");
    {
        let mut idx = LatentIndex::open(&index, dim, 100).unwrap();
        for seq in 0..4 {
            idx.add("cam", seq, seq, &latent(dim, seq as usize))
                .unwrap();
        }
    }
    let whole = std::fs::metadata(&index).unwrap().len();
    let record = (whole - 16) / 4;
    // A crash while appending the fourth record: half of it reached the disk.
    let torn = whole - record / 2;
    let bytes = std::fs::read(&index).unwrap();
    std::fs::write(&index, &bytes[..torn as usize]).unwrap();

    let host = Host::start(host_command(&[
        "--index".as_ref(),
        index.as_os_str(),
        "--jsonl".as_ref(),
        dir.join("results.jsonl").as_os_str(),
    ]));
    let log = host.log();
    let pid = host.child.id();
    host.stop(pid);

    let cut = torn - (whole - record);
    assert!(
        log.iter()
            .any(|l| l.contains("WARN") && l.contains(&format!("cut {cut} bytes"))),
        "a WARN saying what was cut: {log:#?}"
    );
    assert!(!log.iter().any(|l| l.contains("ERROR")), "{log:#?}");
    assert!(quarantined(&dir, "latents.idx").is_empty(), "not damage");
    assert_eq!(std::fs::metadata(&index).unwrap().len(), whole - record);
    let idx = LatentIndex::open(&index, dim, 100).unwrap();
    assert_eq!((idx.len(), idx.repaired_bytes()), (3, 0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_head_file_claiming_65536_by_65536_is_refused_in_a_small_address_space() {
    let dir = scratch("huge-head");
    let head = dir.join("huge.head");
    let mut bytes = b"LCHEAD01".to_vec();
    bytes.extend_from_slice(&65536u32.to_le_bytes());
    bytes.extend_from_slice(&65536u32.to_le_bytes());
    std::fs::write(&head, &bytes).unwrap();
    // 1 GiB of address space: the binary and its threads fit, the 16 GiB
    // the header claims does not, so allocating it would abort the process.
    const LIMIT: u64 = 1 << 30;
    let out = Command::new("prlimit")
        .arg(format!("--as={LIMIT}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_latentcam-host"))
        .args(["replay", "--no-imagenet", "--models"])
        .arg(models())
        .arg("--head")
        .arg(&head)
        .arg(dir.join("never-read.lcr"))
        .output()
        .expect("run prlimit (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    // Exit code 1 (an error) rather than a signal (an abort).
    assert_eq!(out.status.code(), Some(1), "{:?}: {stderr}", out.status);
    assert!(
        stderr.contains(&head.display().to_string())
            && stderr.contains("65536x65536")
            && stderr.contains("file has 0"),
        "a clear error naming the file and the claimed shape: {stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------- the ack rule, traced

/// One system call of the trace.
#[derive(Debug)]
struct Call {
    /// Line of the trace where the call started.
    entered: usize,
    /// Line where it returned.
    returned: usize,
    name: String,
    /// What the first (descriptor) argument refers to, from `strace -y`.
    target: String,
    /// The bytes written, for write-like calls (only as many as returned).
    data: Vec<u8>,
    result: i64,
}

/// Parses `strace -f -ttt -y -xx` output: `<pid> <time> name(fd<target>,
/// "\x..", n) = r`, with calls split into `<unfinished ...>` and `<...
/// name resumed>` when threads interleave.
fn parse_trace(text: &str) -> Vec<Call> {
    let mut open: HashMap<String, (usize, String)> = HashMap::new();
    let mut calls = Vec::new();
    for (at, line) in text.lines().enumerate() {
        // `<pid>  <time> <call>`: the first two fields, then the rest.
        let Some((pid, rest)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        let Some((_time, rest)) = rest.trim_start().split_once(' ') else {
            continue;
        };
        let (entered, full) = if let Some(tail) = rest.strip_prefix("<... ") {
            let Some((_, after)) = tail.split_once(" resumed>") else {
                continue;
            };
            let Some((entered, head)) = open.remove(pid) else {
                continue;
            };
            (entered, format!("{head}{after}"))
        } else if let Some(head) = rest.strip_suffix(" <unfinished ...>") {
            open.insert(pid.to_owned(), (at, head.to_owned()));
            continue;
        } else {
            (at, rest.to_owned())
        };
        if full.starts_with("+++") || full.starts_with("---") {
            continue;
        }
        let Some((name, args)) = full.split_once('(') else {
            continue;
        };
        let Some((_, result)) = full.rsplit_once(") = ") else {
            continue;
        };
        let result: i64 = result
            .split_whitespace()
            .next()
            .and_then(|r| r.parse().ok())
            .unwrap_or(-1);
        // With -xx, paths and data are all `\xNN` escapes.
        let unhex = |hex: &str| -> Vec<u8> {
            hex.split("\\x")
                .skip(1)
                .map(|byte| u8::from_str_radix(byte, 16).expect("strace -xx hex"))
                .collect()
        };
        let target = args
            .split_once('<')
            .and_then(|(_, t)| t.split_once('>'))
            .map_or(String::new(), |(t, _)| {
                String::from_utf8_lossy(&unhex(t)).into_owned()
            });
        let mut data = Vec::new();
        if let Some((_, quoted)) = args.split_once(", \"") {
            data = unhex(quoted.split('"').next().unwrap_or_default());
        }
        data.truncate(result.max(0) as usize);
        calls.push(Call {
            entered,
            returned: at,
            name: name.to_owned(),
            target,
            data,
            result,
        });
    }
    calls.sort_by_key(|c| c.returned);
    calls
}

/// For a file written by `calls`: at which trace line each of `items` (found
/// in the concatenated written bytes by `find`) was completely written.
fn written_at(
    calls: &[Call],
    is_file: impl Fn(&str) -> bool,
    mut find: impl FnMut(&[u8], &mut dyn FnMut(u64)),
) -> BTreeMap<u64, usize> {
    let mut at = BTreeMap::new();
    for call in calls
        .iter()
        .filter(|c| c.name.starts_with("write") || c.name.starts_with("pwrite"))
        .filter(|c| is_file(&c.target))
    {
        assert!(
            call.name == "write",
            "{} to {}: the test reads only write(2)",
            call.name,
            call.target
        );
        find(&call.data, &mut |seq| {
            at.entry(seq).or_insert(call.returned);
        });
    }
    at
}

#[test]
fn every_ack_follows_a_sync_of_its_results_in_a_syscall_trace() {
    let dir = scratch("ack-trace");
    let jsonl = dir.join("results.jsonl");
    let records = dir.join("records");
    let trace = dir.join("host.strace");
    let mut command = Command::new("strace");
    command
        .args([
            "-f",
            "-qq",
            "--seccomp-bpf",
            "-ttt",
            "-y",
            "-xx",
            "-s",
            "1000000",
        ])
        .args(["-e", "signal=none"])
        .args([
            "-e",
            "trace=write,writev,pwrite64,pwritev,sendto,sendmsg,fdatasync,fsync",
        ])
        .arg("-o")
        .arg(&trace)
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_latentcam-host"))
        .env("LATENTCAM_HOST_CONFIG", "")
        .args([
            "serve",
            "--tcp",
            "127.0.0.1:0",
            "--no-imagenet",
            "--anomaly",
        ])
        .arg("--models")
        .arg(models())
        .arg("--jsonl")
        .arg(&jsonl)
        .arg("--record")
        .arg(&records);
    let host = Host::start(command);
    // strace's one child is the host.
    let strace_pid = host.child.id();
    let children =
        std::fs::read_to_string(format!("/proc/{strace_pid}/task/{strace_pid}/children")).unwrap();
    let host_pid: u32 = children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the traced host's pid");

    // The real edge pipeline: vtest.avi, unpaced, spooled, over TCP.
    const FRAMES: u64 = 40;
    let mut config = EdgeConfig::default();
    config.device.id = "traced".into();
    config.model.dir = models();
    config.source.kind = SourceKind::Replay;
    config.source.path = PathBuf::from(VTEST);
    config.source.unpaced = true;
    config.link.kind = LinkKind::Tcp;
    config.link.address = host.address.clone();
    config.spool.dir = dir.join("spool");
    let stop = Arc::new(AtomicBool::new(false));
    let (parts, mut settings) = assemble::open_all(&config, Arc::clone(&stop)).unwrap();
    settings.max_frames = Some(FRAMES);
    settings.drain_timeout = Duration::from_secs(30);
    let report = pipeline::run(parts, settings, stop, None).unwrap();
    assert_eq!(report.encoded, FRAMES);
    assert_eq!(report.session.spool_pending, 0, "every latent acknowledged");
    host.stop(host_pid);

    let calls = parse_trace(&std::fs::read_to_string(&trace).unwrap());
    let results_path = jsonl.display().to_string();
    let is_results = |t: &str| t == results_path;
    let is_recording = |t: &str| t.ends_with(".lcr");

    // When each result line and each recorded latent was written.
    let mut partial = Vec::new();
    let line_written = written_at(&calls, is_results, |data, found| {
        partial.extend_from_slice(data);
        while let Some(end) = partial.iter().position(|&b| b == b'\n') {
            let line: serde_json::Value = serde_json::from_slice(&partial[..end]).unwrap();
            if line["device"] == "traced" {
                found(line["seq"].as_u64().unwrap());
            }
            partial.drain(..=end);
        }
    });
    let mut decoder: Box<FrameDecoder<MAX_FRAME_LEN>> = Box::default();
    let recorded = written_at(&calls, is_recording, |data, found| {
        decoder.feed_all(data, |item| {
            if let Ok(Message::Latent(l)) = item {
                // A recording keeps the edge's wall-clock capture time.
                assert!(
                    l.wall.is_some(),
                    "latent {} recorded without its time",
                    l.seq
                );
                found(l.seq);
            }
        });
    });
    let synced = |is_file: &dyn Fn(&str) -> bool| -> Vec<usize> {
        calls
            .iter()
            .filter(|c| (c.name == "fdatasync" || c.name == "fsync") && c.result == 0)
            .filter(|c| is_file(&c.target))
            .map(|c| c.returned)
            .collect()
    };
    let (results_syncs, recording_syncs) = (synced(&is_results), synced(&is_recording));

    // Every Ack frame written to a device's socket.
    let mut decoders: HashMap<String, Box<FrameDecoder<MAX_FRAME_LEN>>> = HashMap::new();
    let mut acks = Vec::new();
    for call in calls
        .iter()
        .filter(|c| c.target.starts_with("socket:") || c.target.starts_with("TCP"))
    {
        assert!(
            matches!(call.name.as_str(), "write" | "sendto"),
            "{} on a socket: the test reads only write(2) and sendto(2)",
            call.name
        );
        decoders
            .entry(call.target.clone())
            .or_default()
            .feed_all(&call.data, |item| {
                if let Ok(Message::Ack(ack)) = item {
                    acks.push((call.entered, ack.up_to));
                }
            });
    }
    eprintln!(
        "trace: {} calls; {} result lines, {} recorded latents, {} syncs of the results file, \
         {} of the recording, {} Acks",
        calls.len(),
        line_written.len(),
        recorded.len(),
        results_syncs.len(),
        recording_syncs.len(),
        acks.len()
    );
    assert_eq!(line_written.len() as u64, FRAMES, "a line per latent");
    assert_eq!(recorded.len() as u64, FRAMES, "every latent recorded");
    assert!(acks.len() >= 2, "Acks in the trace: {acks:?}");
    assert_eq!(acks.iter().map(|a| a.1).max(), Some(FRAMES - 1));

    // The rule: for every Ack up to N, each covered latent's line (and
    // recorded frame) was written, then the file was synced, then the Ack
    // was written.
    for &(sent, up_to) in &acks {
        for (what, written, syncs) in [
            ("result line", &line_written, &results_syncs),
            ("recorded latent", &recorded, &recording_syncs),
        ] {
            let last_write = (0..=up_to)
                .map(|seq| {
                    *written.get(&seq).unwrap_or_else(|| {
                        panic!("Ack up to {up_to} covers seq {seq}, whose {what} was never written")
                    })
                })
                .max()
                .unwrap();
            assert!(
                last_write < sent,
                "Ack up to {up_to} (trace line {sent}) before its {what}s were written (line {last_write})"
            );
            assert!(
                syncs.iter().any(|&s| last_write < s && s < sent),
                "Ack up to {up_to} (trace line {}) written with no sync of the {what}s between their \
                 write (line {}) and it",
                sent + 1,
                last_write + 1
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
