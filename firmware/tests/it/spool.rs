//! The spool on a real filesystem: acks release, restarts keep what is
//! pending, a full spool drops the oldest and counts them, a torn tail
//! from a power cut is cut off, the acknowledged mark is replaced
//! atomically, and what a durable (fdatasync per latent) push costs.

use std::path::PathBuf;

use latentcam_firmware::spool::{Spool, SpoolConfig, SpoolError};

fn latent_frame(seq: u64) -> Vec<u8> {
    let values: Vec<f32> = (0..1280)
        .map(|i| ((i as u64 * 31 + seq) % 97) as f32)
        .collect();
    latentcam_testkit::hello::latent_frame(seq, seq * 1000, &values)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("latentcam-spool-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn pending_seqs(spool: &Spool) -> Vec<u64> {
    let mut seqs = Vec::new();
    spool
        .for_each_pending(|seq, bytes| {
            // What is re-sent must be the exact frame that was spooled.
            assert_eq!(bytes, latent_frame(seq).as_slice());
            seqs.push(seq);
            Ok::<(), ()>(())
        })
        .unwrap()
        .unwrap();
    seqs
}

const SMALL: SpoolConfig = SpoolConfig {
    max_bytes: 64 * 1024,
    segment_bytes: 8 * 1024,
};

#[test]
fn ack_releases_and_restart_keeps_pending() {
    let dir = temp_dir("restart");
    {
        let mut spool = Spool::open(&dir, SpoolConfig::default()).unwrap();
        for seq in 0..100 {
            spool.push(seq, &latent_frame(seq)).unwrap();
        }
        assert_eq!(spool.pending(), 100);
        spool.ack(39).unwrap();
        assert_eq!(spool.pending(), 60);
        assert_eq!(pending_seqs(&spool), (40..100).collect::<Vec<_>>());
        spool.sync().unwrap();
    }
    // `sync` (the shutdown path) persisted the ack mark: a restart still
    // knows that 0..=39 are held by the host, though their segment remains.
    let mut spool = Spool::open(&dir, SpoolConfig::default()).unwrap();
    assert_eq!(spool.pending(), 60);
    assert_eq!(spool.acked(), Some(39));
    assert_eq!(pending_seqs(&spool), (40..100).collect::<Vec<_>>());
    for seq in 100..110 {
        spool.push(seq, &latent_frame(seq)).unwrap();
    }
    assert_eq!(pending_seqs(&spool), (40..110).collect::<Vec<_>>());
    spool.ack(109).unwrap();
    assert_eq!(spool.pending(), 0);
    assert_eq!(spool.bytes(), 0, "fully acked segments are deleted");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn full_spool_drops_oldest_and_counts() {
    let dir = temp_dir("full");
    let mut spool = Spool::open(&dir, SMALL).unwrap();
    let frame_len = latent_frame(0).len() as u64;
    let total = 200;
    for seq in 0..total {
        spool.push(seq, &latent_frame(seq)).unwrap();
        assert!(spool.bytes() <= SMALL.max_bytes);
    }
    let pending = pending_seqs(&spool);
    // The newest latents survive, contiguous, and every missing one is counted.
    assert_eq!(*pending.last().unwrap(), total - 1);
    assert_eq!(pending, (pending[0]..total).collect::<Vec<_>>());
    assert_eq!(spool.dropped() + pending.len() as u64, total);
    assert!(pending.len() as u64 >= (SMALL.max_bytes - SMALL.segment_bytes) / frame_len);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn torn_tail_is_cut_on_open() {
    let dir = temp_dir("torn");
    {
        let mut spool = Spool::open(&dir, SpoolConfig::default()).unwrap();
        for seq in 0..10 {
            spool.push(seq, &latent_frame(seq)).unwrap();
        }
    }
    // Power cut halfway through the next frame.
    let segment = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let partial = latent_frame(10);
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes.extend(&partial[..partial.len() / 2]);
    std::fs::write(&segment, &bytes).unwrap();

    let mut spool = Spool::open(&dir, SpoolConfig::default()).unwrap();
    assert_eq!(pending_seqs(&spool), (0..10).collect::<Vec<_>>());
    spool.push(10, &latent_frame(10)).unwrap();
    assert_eq!(pending_seqs(&spool), (0..11).collect::<Vec<_>>());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn out_of_order_and_oversized_are_refused() {
    let dir = temp_dir("order");
    let mut spool = Spool::open(&dir, SMALL).unwrap();
    spool.push(5, &latent_frame(5)).unwrap();
    assert!(matches!(
        spool.push(5, &latent_frame(5)),
        Err(SpoolError::OutOfOrder { seq: 5, last: 5 })
    ));
    assert!(matches!(
        spool.push(6, &vec![1u8; 9000]),
        Err(SpoolError::FrameTooLarge { .. })
    ));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn unwritable_directory_is_a_clear_error() {
    let err = Spool::open("/proc/latentcam-spool", SpoolConfig::default()).unwrap_err();
    assert!(err.to_string().contains("/proc/latentcam-spool"), "{err}");
}

#[test]
fn numbering_continues_above_released_segments_after_a_restart() {
    let dir = temp_dir("next-seq");
    let mut spool = Spool::open(&dir, SMALL).unwrap();
    assert_eq!(spool.next_seq(), 0);
    for seq in 0..40 {
        spool.push(seq, &latent_frame(seq)).unwrap();
    }
    assert_eq!(spool.next_seq(), 40);
    // Everything acknowledged: every segment file is released...
    spool.ack(39).unwrap();
    assert_eq!(spool.pending(), 0);
    drop(spool);
    let segments = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "seg")
        })
        .count();
    assert_eq!(segments, 0);
    // ...yet a restarted spool does not hand out 0 again.
    let spool = Spool::open(&dir, SMALL).unwrap();
    assert_eq!(spool.next_seq(), 40);
    assert_eq!(spool.acked(), Some(39));
}

#[test]
fn read_pending_returns_chunks_in_order_from_a_cursor() {
    let dir = temp_dir("read-pending");
    let mut spool = Spool::open(&dir, SMALL).unwrap();
    for seq in 100..130 {
        spool.push(seq, &latent_frame(seq)).unwrap();
    }
    spool.ack(104).unwrap();
    assert_eq!(spool.first_pending(), Some(105));
    let mut cursor = 0;
    let mut seen = Vec::new();
    loop {
        let mut chunk = Vec::new();
        spool.read_pending(cursor, 7, &mut chunk).unwrap();
        if chunk.is_empty() {
            break;
        }
        assert!(chunk.len() <= 7);
        for (seq, bytes) in chunk {
            assert_eq!(bytes, latent_frame(seq), "exact spooled bytes");
            seen.push(seq);
            cursor = seq + 1;
        }
    }
    assert_eq!(seen, (105..130).collect::<Vec<_>>());
}

#[cfg(unix)]
fn inode(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().ino()
}

#[test]
fn acked_mark_is_replaced_atomically_and_a_torn_temp_file_is_ignored() {
    let dir = temp_dir("mark");
    let mark = dir.join("acked");
    let temp = dir.join("acked.tmp");
    let mut spool = Spool::open(&dir, SMALL).unwrap();
    for seq in 0..40 {
        spool.push(seq, &latent_frame(seq)).unwrap();
    }
    // Releasing a segment writes the mark first.
    spool.ack(20).unwrap();
    assert_eq!(std::fs::read_to_string(&mark).unwrap(), "20\n");
    assert!(
        !temp.exists(),
        "the temporary file was renamed over the mark"
    );
    let before = inode(&mark);
    spool.ack(39).unwrap();
    assert_eq!(std::fs::read_to_string(&mark).unwrap(), "39\n");
    // A new file renamed over the old one, not the old one rewritten in
    // place (which a power cut could leave empty or half written).
    assert_ne!(inode(&mark), before, "the mark was rewritten in place");
    drop(spool);

    // A power cut while the next mark was being written: its temporary file
    // is torn (part of "45\n", or nothing at all). The old mark stands.
    for torn in ["4", ""] {
        std::fs::write(&temp, torn).unwrap();
        let spool = Spool::open(&dir, SMALL).unwrap();
        assert_eq!(spool.acked(), Some(39), "torn {torn:?}");
        assert_eq!(spool.next_seq(), 40, "torn {torn:?}");
        assert!(!temp.exists(), "the torn temporary file is removed");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// What a durable push costs on this machine: `Spool::push` (one
/// `fdatasync` per latent) against appending the same frames to a file
/// without syncing, in the same directory and the same run. Prints the
/// figures; asserts only that every frame is spooled (no test asserts a
/// timing). Reproduce: `cargo nextest run -p latentcam-firmware
/// --success-output final -E 'test(/push_cost/)'`.
#[test]
fn push_cost_with_fdatasync_per_latent() {
    use std::io::Write;
    use std::time::{Duration, Instant};
    const N: u64 = 150;
    let dir = temp_dir("push-cost");
    let frames: Vec<Vec<u8>> = (0..N).map(latent_frame).collect();
    let percentile = |mut times: Vec<Duration>, p: f64| {
        times.sort();
        times[((times.len() - 1) as f64 * p).round() as usize]
    };

    std::fs::create_dir_all(&dir).unwrap();
    let mut plain = std::fs::File::create(dir.join("plain.bin")).unwrap();
    let mut unsynced = Vec::new();
    for frame in &frames {
        let t = Instant::now();
        plain.write_all(frame).unwrap();
        unsynced.push(t.elapsed());
    }
    drop(plain);

    let mut spool = Spool::open(dir.join("spool"), SpoolConfig::default()).unwrap();
    let mut synced = Vec::new();
    for (seq, frame) in frames.iter().enumerate() {
        let t = Instant::now();
        spool.push(seq as u64, frame).unwrap();
        synced.push(t.elapsed());
    }
    assert_eq!(spool.pending(), N);
    let mean = |times: &[Duration]| times.iter().sum::<Duration>() / times.len() as u32;
    let (synced_mean, unsynced_mean) = (mean(&synced), mean(&unsynced));
    eprintln!(
        "spool push of a {}-byte latent frame, {N} pushes: with fdatasync mean {:?}, p50 {:?}, \
         p99 {:?}; plain append without sync mean {:?} ({:.0}x); at 30 fps a frame has 33.3 ms, \
         the synced push takes {:.1} % of it",
        frames[0].len(),
        synced_mean,
        percentile(synced.clone(), 0.5),
        percentile(synced, 0.99),
        unsynced_mean,
        synced_mean.as_secs_f64() / unsynced_mean.as_secs_f64().max(1e-9),
        synced_mean.as_secs_f64() / (1.0 / 30.0) * 100.0
    );
    std::fs::remove_dir_all(dir).unwrap();
}
