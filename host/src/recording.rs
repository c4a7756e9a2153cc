//! Recordings: files holding a latentcam frame stream exactly as it crossed the
//! link (see `wire/SPEC.md`). Reading one tolerates everything the wire
//! decoder tolerates — corrupt or truncated frames are counted, not fatal.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::{self, Read};

use latentcam_wire::{FrameDecoder, FrameError, Message, MessageKind, WallTime};

/// Errors reading a recording.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordingError {
    /// The underlying reader failed.
    #[error("reading the recording failed: {0}")]
    Io(#[from] io::Error),
    /// Not one frame decoded in the first bytes: the file is something
    /// else (a photo, a results file), not a damaged recording, whose
    /// intact frames would decode.
    #[error(
        "not a latentcam recording: no valid frame in its first {read} bytes ({frame_errors} frame \
         errors); give a file that `latentcam-host serve --record` or an edge's `file` \
         link wrote"
    )]
    NotARecording {
        /// Bytes read without finding a frame.
        read: u64,
        /// Frame errors among them.
        frame_errors: u64,
    },
}

/// A recording holds a valid frame within this many bytes of its start,
/// however damaged it is: each frame is shorter than
/// [`latentcam_wire::frame::MAX_ENCODED_LEN`] (17 KiB), and a `Hello` or
/// `Latent` follows every few of them.
pub const FIRST_FRAME_WITHIN: u64 = 1 << 20;

/// Decodes every frame of `reader`, calling `visit` with each message or
/// frame error in stream order. Returns the number of bytes read. A partial
/// frame at the end (a recording cut off by power loss) is reported as
/// [`FrameError::Cobs`]. Corrupt frames are visited and reading goes on,
/// but a stream with no valid frame in its first [`FIRST_FRAME_WITHIN`]
/// bytes (or in all of it, when shorter and not empty) is
/// [`RecordingError::NotARecording`].
pub fn for_each_frame<R: Read>(
    mut reader: R,
    mut visit: impl FnMut(Result<Message<'_>, FrameError>),
) -> Result<u64, RecordingError> {
    let mut decoder: Box<FrameDecoder> = Box::default();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    let (frames, frame_errors) = (Cell::new(0u64), Cell::new(0u64));
    let mut counted = |item: Result<Message<'_>, FrameError>| {
        let count = if item.is_ok() { &frames } else { &frame_errors };
        count.set(count.get() + 1);
        visit(item);
    };
    let not_a_recording = |read| RecordingError::NotARecording {
        read,
        frame_errors: frame_errors.get(),
    };
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        total += n as u64;
        decoder.feed_all(&chunk[..n], &mut counted);
        if frames.get() == 0 && total >= FIRST_FRAME_WITHIN {
            return Err(not_a_recording(total));
        }
    }
    if !decoder.is_idle() {
        counted(Err(FrameError::Cobs));
    }
    if frames.get() == 0 && total > 0 {
        return Err(not_a_recording(total));
    }
    Ok(total)
}

/// Per-device sequence accounting of the latents in a recording.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SequenceStats {
    /// Latents seen.
    pub latents: u64,
    /// Lowest and highest sequence number.
    pub first_last: Option<(u64, u64)>,
    /// Sequence numbers skipped (sum of gap sizes).
    pub missing: u64,
    /// Latents whose sequence number was not above the previous one.
    pub out_of_order_or_duplicate: u64,
    /// Earliest and latest wall-clock capture time, µs since the Unix
    /// epoch, of the latents that carry one.
    pub captured: Option<(u64, u64)>,
    /// Latents without a wall-clock time (a device of protocol revision 1,
    /// or one whose clock was never set).
    pub without_time: u64,
    /// Latents whose device clock was not synchronised.
    pub unsynced: u64,
}

impl SequenceStats {
    /// Accounts for one latent.
    pub fn observe(&mut self, seq: u64) {
        self.latents += 1;
        self.first_last = Some(match self.first_last {
            None => (seq, seq),
            Some((first, last)) if seq > last => {
                self.missing += seq - last - 1;
                (first, seq)
            }
            Some((first, last)) => {
                self.out_of_order_or_duplicate += 1;
                (first.min(seq), last)
            }
        });
    }

    /// Accounts for one latent's wall-clock time.
    pub fn observe_time(&mut self, wall: Option<WallTime>) {
        let Some(wall) = wall else {
            self.without_time += 1;
            return;
        };
        self.unsynced += u64::from(!wall.synced);
        let us = wall.unix_us;
        self.captured = Some(match self.captured {
            None => (us, us),
            Some((first, last)) => (first.min(us), last.max(us)),
        });
    }
}

/// What `latentcam-host inspect` reports about a recording.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Bytes in the file.
    pub bytes: u64,
    /// Messages by kind name.
    pub messages: BTreeMap<&'static str, u64>,
    /// Frame errors by kind name.
    pub errors: BTreeMap<&'static str, u64>,
    /// Devices announced by `Hello`, with their model id and codec.
    pub devices: BTreeMap<String, String>,
    /// Sequence accounting of latents, per device: a latent belongs to
    /// the last `Hello` before it (`None`: latents before any `Hello`).
    pub sequences: BTreeMap<Option<String>, SequenceStats>,
    /// Sum of latent payload bytes.
    pub payload_bytes: u64,
}

fn kind_name(kind: MessageKind) -> &'static str {
    match kind {
        MessageKind::Hello => "hello",
        MessageKind::Welcome => "welcome",
        MessageKind::Auth => "auth",
        MessageKind::Latent => "latent",
        MessageKind::Heartbeat => "heartbeat",
        MessageKind::Ack => "ack",
        MessageKind::Bye => "bye",
        _ => "other",
    }
}

fn error_name(error: &FrameError) -> &'static str {
    match error {
        FrameError::Crc { .. } => "crc",
        FrameError::TooLong => "too_long",
        FrameError::TooShort => "too_short",
        FrameError::Cobs => "cobs",
        FrameError::UnsupportedVersion(_) => "unsupported_version",
        FrameError::UnknownKind(_) => "unknown_kind",
        FrameError::Undecodable => "undecodable",
        FrameError::FieldTooLong { .. } => "field_too_long",
        _ => "other",
    }
}

/// Reads a whole recording and summarises it.
pub fn summarize<R: Read>(reader: R) -> Result<Summary, RecordingError> {
    let mut summary = Summary::default();
    let mut device: Option<String> = None;
    summary.bytes = for_each_frame(reader, |item| match item {
        Ok(message) => {
            *summary
                .messages
                .entry(kind_name(message.kind()))
                .or_default() += 1;
            match message {
                Message::Hello(h) => {
                    device = Some(h.device_id.to_owned());
                    summary.devices.insert(
                        h.device_id.to_owned(),
                        format!("{} via {:?}", h.model.model_id, h.codec),
                    );
                }
                Message::Latent(l) => {
                    // Looked up before inserting: no allocation per latent.
                    let observe = |stats: &mut SequenceStats| {
                        stats.observe(l.seq);
                        stats.observe_time(l.wall);
                    };
                    match summary.sequences.get_mut(&device) {
                        Some(stats) => observe(stats),
                        None => {
                            let mut stats = SequenceStats::default();
                            observe(&mut stats);
                            summary.sequences.insert(device.clone(), stats);
                        }
                    }
                    summary.payload_bytes += l.payload.len() as u64;
                }
                _ => {}
            }
        }
        Err(error) => *summary.errors.entry(error_name(&error)).or_default() += 1,
    })?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_accounting() {
        let mut stats = SequenceStats::default();
        for seq in [5, 6, 9, 9, 7, 10] {
            stats.observe(seq);
        }
        assert_eq!(stats.latents, 6);
        assert_eq!(stats.first_last, Some((5, 10)));
        assert_eq!(stats.missing, 2);
        assert_eq!(stats.out_of_order_or_duplicate, 2);
    }

    #[test]
    fn capture_time_range_and_clock_state() {
        let mut stats = SequenceStats::default();
        let at = |unix_us, synced| Some(WallTime { unix_us, synced });
        for wall in [at(30, true), None, at(10, false), at(20, true)] {
            stats.observe_time(wall);
        }
        assert_eq!(stats.captured, Some((10, 30)));
        assert_eq!((stats.without_time, stats.unsynced), (1, 1));
    }

    fn hello(device: &str) -> Vec<u8> {
        latentcam_testkit::hello::hello_frame(device, "m", [0; 32], 1)
    }

    fn latent(seq: u64) -> Vec<u8> {
        latentcam_testkit::hello::latent_frame(seq, 0, &[0.1, 0.5, -0.3, 0.8])
    }

    #[test]
    fn sequences_count_per_device_of_the_last_hello() {
        let mut bytes = latent(7);
        for seq in [0, 1, 2, 4] {
            for device in ["a", "b"] {
                bytes.extend(hello(device));
                bytes.extend(latent(seq));
            }
        }
        let summary = summarize(bytes.as_slice()).unwrap();
        let stats = |device: Option<&str>| summary.sequences[&device.map(str::to_owned)].clone();
        for device in ["a", "b"] {
            let stats = stats(Some(device));
            assert_eq!(stats.latents, 4);
            assert_eq!(stats.first_last, Some((0, 4)));
            assert_eq!((stats.missing, stats.out_of_order_or_duplicate), (1, 0));
        }
        assert_eq!(stats(None).latents, 1, "the latent before any Hello");
    }

    #[test]
    fn a_stream_without_a_valid_frame_is_not_a_recording() {
        let photo = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01 not frames \x00 at all \x00";
        match summarize(&photo[..]) {
            Err(RecordingError::NotARecording { read, frame_errors }) => {
                assert_eq!(read, photo.len() as u64);
                assert!(frame_errors >= 2, "{frame_errors}");
            }
            other => panic!("{other:?}"),
        }
        // Garbage longer than FIRST_FRAME_WITHIN is given up on there.
        let endless = std::io::repeat(0x41).take(8 * FIRST_FRAME_WITHIN);
        match for_each_frame(endless, |_| {}) {
            Err(RecordingError::NotARecording { read, .. }) => {
                assert!(read < 2 * FIRST_FRAME_WITHIN, "{read}");
            }
            other => panic!("{other:?}"),
        }
        // Nothing at all is an empty recording; noise ahead of a frame and
        // a damaged frame are counted, not fatal.
        assert_eq!(summarize(&b""[..]).unwrap().bytes, 0);
        let mut noisy = b"\xde\xad\x00".to_vec();
        noisy.extend(hello("a"));
        let mut damaged = latent(1);
        // Not a delimiter made or unmade: one frame stays one frame.
        let inside = (2..)
            .find(|&i| damaged[i] != 0 && damaged[i] != 0x55)
            .unwrap();
        damaged[inside] ^= 0x55;
        noisy.extend(damaged);
        noisy.extend(latent(2));
        let summary = summarize(noisy.as_slice()).unwrap();
        assert_eq!(summary.errors.values().sum::<u64>(), 2);
        assert_eq!(summary.sequences[&Some("a".to_owned())].latents, 1);
    }
}
