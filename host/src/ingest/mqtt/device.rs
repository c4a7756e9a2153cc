//! Per-device state of an MQTT worker: the accepted `Hello`, the sequence
//! and acknowledgement floor, and reading what devices publish (`Hello`,
//! `Latent`, retained `Ack`s) into checked values.
//!
//! Nothing here touches the broker, the registry or the clock: the worker
//! passes in what they say, so the sequence accounting is tested alone.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use latentcam_wire::mqtt::DeviceTopics;
use latentcam_wire::{Ack, Hello, MAX_SEQ, Message, frame};
use tokio::sync::mpsc;

use super::home::HomeState;
use crate::ingest::{Done, Job};
use crate::session::{self, Refusal};

/// A device as this worker knows it.
#[derive(Debug)]
pub(super) struct Device {
    /// Where its messages go and come from.
    pub(super) topics: DeviceTopics,
    /// What the accepted `Hello` fixes and its frame, or `None` when none
    /// arrived or the last one was refused.
    accepted: Option<(session::Accepted, Arc<[u8]>)>,
    /// First sequence number not yet acknowledged; `None` until known: from
    /// a retained ack, a latent numbered 0 (a device's first ever), or the
    /// first latent after this worker answered a live `Hello` without
    /// knowing it (the device then re-sends from its oldest pending
    /// latent). Never guessed from an arbitrary latent: an ack above what a
    /// device really delivered would release latents nobody processed.
    floor: Option<u64>,
    /// A `Welcome` that knew no floor went out: the next latent is the base.
    base_next: bool,
    /// Admitted (queued or finished) latents at or above `floor`.
    admitted: BTreeSet<u64>,
    /// Finished latents at or above `floor`.
    finished: BTreeSet<u64>,
    /// What home systems were last told about it.
    pub(super) home: HomeState,
}

/// What became of a latent offered to [`Device::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    /// New: it goes to the heads.
    New,
    /// Already acknowledged or admitted: dropped (the device may be
    /// re-sending because an ack went missing).
    Duplicate,
}

impl Device {
    /// A device seen for the first time: no `Hello`, no floor.
    pub(super) fn new(topics: DeviceTopics) -> Self {
        Self {
            topics,
            accepted: None,
            floor: None,
            base_next: false,
            admitted: BTreeSet::new(),
            finished: BTreeSet::new(),
            home: HomeState::default(),
        }
    }

    /// The last sequence number acknowledged (all below it are too).
    pub(super) fn acked(&self) -> Option<u64> {
        self.floor.and_then(|f| f.checked_sub(1))
    }

    /// The accepted `Hello`'s checks and frame, if one was accepted.
    pub(super) fn session(&self) -> Option<(session::Accepted, Arc<[u8]>)> {
        self.accepted.clone()
    }

    /// A `Hello` passed the checks. `answered`: its owner answers it (a
    /// live `Hello`, not a retained one); when it knows no floor, the next
    /// latent becomes the base.
    pub(super) fn accept_hello(
        &mut self,
        accepted: session::Accepted,
        hello: Arc<[u8]>,
        answered: bool,
    ) {
        if self.accepted.as_ref().is_none_or(|(_, old)| *old != hello) {
            // Another model or firmware, perhaps: discovery says it again.
            self.home.announced = false;
        }
        self.accepted = Some((accepted, hello));
        if answered && self.floor.is_none() {
            self.base_next = true;
        }
    }

    /// A `Hello` was refused: latents are not taken until one is accepted.
    pub(super) fn refuse_hello(&mut self) {
        self.accepted = None;
    }

    /// Raises the floor to `up_to + 1` (an acknowledgement read back).
    pub(super) fn raise(&mut self, up_to: u64) {
        let floor = self.floor.map_or(up_to + 1, |f| f.max(up_to + 1));
        self.floor = Some(floor);
        self.admitted = self.admitted.split_off(&floor);
        self.finished = self.finished.split_off(&floor);
        self.advance();
    }

    /// Takes latent `seq` unless it is a duplicate; a latent numbered 0,
    /// or the first after an answered `Hello`, fixes the floor when none is
    /// known.
    pub(super) fn admit(&mut self, seq: u64) -> Admission {
        if self.floor.is_none() && (seq == 0 || self.base_next) {
            self.floor = Some(seq);
        }
        self.base_next = false;
        if self.floor.is_some_and(|floor| seq < floor) || !self.admitted.insert(seq) {
            return Admission::Duplicate;
        }
        Admission::New
    }

    /// Latent `seq`'s result is written; true if the acknowledgement moved.
    /// A latent not admitted (its state was forgotten since) changes
    /// nothing.
    pub(super) fn finish(&mut self, seq: u64) -> bool {
        if !self.admitted.contains(&seq) {
            return false;
        }
        self.finished.insert(seq);
        self.advance()
    }

    /// Forgets the sequence state (the device's partition went to another
    /// worker, which reads the acknowledgements); the `Hello` stays.
    pub(super) fn forget_sequence(&mut self) {
        self.floor = None;
        self.base_next = false;
        self.admitted.clear();
        self.finished.clear();
    }

    /// Moves the floor over finished latents; true if it moved.
    fn advance(&mut self) -> bool {
        let Some(mut floor) = self.floor else {
            return false;
        };
        let before = floor;
        while self.finished.remove(&floor) {
            self.admitted.remove(&floor);
            floor += 1;
        }
        self.floor = Some(floor);
        floor != before
    }
}

/// The devices a worker tracks, by id.
#[derive(Debug, Default)]
pub(super) struct Devices {
    by_id: HashMap<String, Device>,
}

impl Devices {
    /// Device `id`, if tracked.
    pub(super) fn get(&self, id: &str) -> Option<&Device> {
        self.by_id.get(id)
    }

    /// Device `id`, if tracked.
    pub(super) fn get_mut(&mut self, id: &str) -> Option<&mut Device> {
        self.by_id.get_mut(id)
    }

    /// Device `device` at `site`, tracked from now on unless `max` devices
    /// are tracked already; then the devices the registry no longer
    /// `knows` (silent ones it evicted) go first, and if none did, the new
    /// id is ignored: made-up ids on the broker must not grow this map
    /// without bound. `None` too for ids that are no topic level.
    pub(super) fn track(
        &mut self,
        site: &str,
        device: &str,
        max: usize,
        knows: impl Fn(&str) -> bool,
    ) -> Option<&mut Device> {
        if !self.by_id.contains_key(device) && self.by_id.len() >= max {
            self.by_id.retain(|id, _| knows(id));
            if self.by_id.len() >= max {
                return None;
            }
        }
        let topics = DeviceTopics::new(site, device)?;
        Some(
            self.by_id
                .entry(device.to_owned())
                .or_insert_with(|| Device::new(topics)),
        )
    }

    /// Forgets the sequence state of every device outside the partitions
    /// `mine`: every one, not only those of partitions just given up, since
    /// after a reconnect the state of partitions held before it must not
    /// outlive them.
    pub(super) fn forget_sequences_outside(&mut self, mine: &BTreeSet<u16>) {
        for device in self.by_id.values_mut() {
            if !mine.contains(&device.topics.partition) {
                device.forget_sequence();
            }
        }
    }
}

/// Decodes the one frame an MQTT message carries (the same bytes as a UDP
/// datagram, SPEC §9), unstuffing a copy of the payload in place.
fn one_frame<T>(payload: &[u8], f: impl FnOnce(&Message<'_>) -> T) -> Result<T, String> {
    let mut bytes = payload.to_vec();
    frame::decode_datagram(&mut bytes)
        .map(|message| f(&message))
        .map_err(|e| e.to_string())
}

/// A retained acknowledgement read from `…/ack/<p>`: the sequence number
/// it covers, or `None` for anything else. Anyone may publish on an ack
/// topic: a number no device can have reached is ignored, not believed.
pub(super) fn read_ack(payload: &[u8]) -> Option<u64> {
    let up_to = one_frame(payload, |m| match m {
        Message::Ack(Ack { up_to }) => Some(*up_to),
        _ => None,
    });
    match up_to {
        Ok(Some(up_to)) if up_to <= MAX_SEQ => Some(up_to),
        _ => None,
    }
}

/// A `Hello` read from `…/hello` and judged.
#[derive(Debug)]
pub(super) struct HelloRead {
    /// Whether the device may send latents, and if not why.
    pub(super) verdict: Result<(), Refusal>,
    /// What its latents must match.
    pub(super) accepted: session::Accepted,
    /// The `Hello` frame, re-encoded (recordings repeat it).
    pub(super) frame: Vec<u8>,
}

/// Reads `device`'s `Hello` and judges it with `check`; `None` when the
/// payload is no frame, no `Hello`, or names another device.
pub(super) fn read_hello(
    payload: &[u8],
    device: &str,
    check: impl FnOnce(&Hello<'_>) -> Result<(), Refusal>,
) -> Option<HelloRead> {
    one_frame(payload, |m| match m {
        Message::Hello(hello) if hello.device_id == device => Some(HelloRead {
            verdict: check(hello),
            accepted: session::Accepted::from_hello(hello),
            frame: frame::encode_to_vec(m).unwrap_or_default(),
        }),
        _ => None,
    })
    .ok()
    .flatten()
}

/// Reads a message from `device`'s latent topic: a latent that matches
/// its accepted `Hello` becomes a [`Job`] (which tells `done` when its
/// result is written), a `Bye` is nothing; anything else is an error.
pub(super) fn read_latent(
    payload: &[u8],
    device: &str,
    accepted: &session::Accepted,
    hello: &Arc<[u8]>,
    done: &mpsc::UnboundedSender<Done>,
) -> Result<Option<Job>, String> {
    one_frame(payload, |m| match m {
        Message::Latent(latent) => {
            let vector = accepted.decode(latent)?;
            Ok(Some(Job {
                device: device.to_owned(),
                seq: latent.seq,
                capture_us: latent.capture_us,
                wall: latent.wall,
                received: std::time::SystemTime::now(),
                frame_size: (latent.frame_width, latent.frame_height),
                payload_bytes: latent.payload.len(),
                latent: vector,
                frame: frame::encode_to_vec(m).unwrap_or_default(),
                hello: Arc::clone(hello),
                done: Some(done.clone()),
            }))
        }
        Message::Bye(_) => Ok(None),
        other => Err(format!("a device must not send {:?}", other.kind())),
    })?
}

#[cfg(test)]
mod tests {
    use latentcam_model::manifest::Manifest;
    use latentcam_wire::{Bye, ByeReason, Codec, Latent, WelcomeStatus};

    use super::*;

    fn device() -> Device {
        Device::new(DeviceTopics::new("s", "d").unwrap())
    }

    fn manifest() -> Manifest {
        Manifest::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../models")).unwrap()
    }

    fn hello<'a>(manifest: &'a Manifest, id: &'a str) -> Message<'a> {
        Message::Hello(latentcam_testkit::hello::hello_of(manifest, id))
    }

    fn latent(payload: &[u8], seq: u64) -> Vec<u8> {
        frame::encode_to_vec(&Message::Latent(Latent {
            seq,
            capture_us: 7,
            frame_width: 640,
            frame_height: 480,
            codec: Codec::U8Affine,
            payload,
            mac: &[],
            wall: None,
        }))
        .unwrap()
    }

    #[test]
    fn floor_advances_over_contiguous_finished_latents_only() {
        let mut d = device();
        d.floor = Some(5);
        for seq in [5, 6, 8] {
            d.admitted.insert(seq);
            d.finished.insert(seq);
        }
        assert!(d.advance());
        assert_eq!(
            d.acked(),
            Some(6),
            "7 is missing: 8 must not be acknowledged"
        );
        d.admitted.insert(7);
        d.finished.insert(7);
        d.advance();
        assert_eq!(d.acked(), Some(8));
        // An ack read back from another worker raises the floor.
        d.raise(20);
        assert_eq!(d.acked(), Some(20));
        assert!(d.admitted.is_empty());
    }

    #[test]
    fn no_floor_is_guessed_from_an_arbitrary_latent() {
        let mut d = device();
        assert_eq!(d.admit(41), Admission::New);
        assert!(!d.finish(41), "no floor: nothing can be acknowledged");
        assert_eq!(d.acked(), None);
        assert_eq!(d.admit(41), Admission::Duplicate, "already queued");
    }

    #[test]
    fn a_first_latent_numbered_zero_is_the_base() {
        let mut d = device();
        assert_eq!(d.admit(0), Admission::New);
        assert_eq!(d.admit(1), Admission::New);
        assert!(!d.finish(1), "0 is not finished yet");
        assert!(d.finish(0));
        assert_eq!(d.acked(), Some(1));
        assert_eq!(d.admit(1), Admission::Duplicate, "below the floor");
    }

    #[test]
    fn after_an_answered_hello_the_next_latent_is_the_base() {
        let manifest = manifest();
        let Message::Hello(h) = hello(&manifest, "d") else {
            unreachable!()
        };
        let accepted = session::Accepted::from_hello(&h);

        let mut d = device();
        d.accept_hello(accepted.clone(), Arc::from(&b"h"[..]), false);
        assert_eq!(d.admit(30), Admission::New);
        assert!(!d.finish(30), "a retained Hello fixes no base");

        let mut d = device();
        d.accept_hello(accepted.clone(), Arc::from(&b"h"[..]), true);
        assert_eq!(d.admit(30), Admission::New);
        assert!(d.finish(30));
        assert_eq!(d.acked(), Some(30));

        // With a floor known, an answered Hello changes nothing.
        d.accept_hello(accepted, Arc::from(&b"h"[..]), true);
        assert_eq!(d.admit(35), Admission::New);
        assert!(!d.finish(35), "31-34 are missing");
        assert!(d.session().is_some());
        d.refuse_hello();
        assert!(d.session().is_none());
    }

    #[test]
    fn a_raised_floor_turns_queued_latents_into_duplicates() {
        let mut d = device();
        d.raise(9);
        assert_eq!(d.admit(12), Admission::New);
        assert_eq!(d.admit(9), Admission::Duplicate);
        d.raise(12);
        assert!(!d.finish(12), "acknowledged by another worker already");
        assert_eq!(d.acked(), Some(12));
        d.raise(3);
        assert_eq!(d.acked(), Some(12), "a floor never moves down");
    }

    #[test]
    fn forgetting_the_sequence_keeps_the_hello() {
        let manifest = manifest();
        let Message::Hello(h) = hello(&manifest, "d") else {
            unreachable!()
        };
        let mut d = device();
        d.accept_hello(
            session::Accepted::from_hello(&h),
            Arc::from(&b"h"[..]),
            true,
        );
        d.admit(4);
        d.forget_sequence();
        assert_eq!(d.acked(), None);
        assert!(d.session().is_some());
        assert_eq!(d.admit(4), Admission::New, "not the base any more");
        assert!(!d.finish(4));
    }

    #[test]
    fn devices_beyond_the_limit_are_tracked_only_when_forgotten_ones_make_room() {
        let mut devices = Devices::default();
        assert!(devices.track("s", "a", 2, |_| true).is_some());
        assert!(devices.track("s", "b", 2, |_| true).is_some());
        assert!(devices.track("s", "c", 2, |_| true).is_none(), "full");
        assert!(devices.track("s", "a", 2, |_| true).is_some(), "known");
        assert!(devices.track("s", "c", 2, |id| id != "b").is_some());
        assert!(devices.get("b").is_none(), "evicted to make room");
        assert!(devices.get("c").is_some());
        assert!(
            devices.track("s", "x/y", 9, |_| true).is_none(),
            "no topic level"
        );
    }

    #[test]
    fn forgetting_sequences_spares_the_partitions_kept() {
        let mut devices = Devices::default();
        for id in ["a", "b"] {
            devices.track("s", id, 9, |_| true).unwrap().raise(5);
        }
        let keep = devices.get("a").unwrap().topics.partition;
        devices.forget_sequences_outside(&BTreeSet::from([keep]));
        assert_eq!(devices.get("a").unwrap().acked(), Some(5));
        let b = devices.get_mut("b").unwrap();
        let expected = (b.topics.partition == keep).then_some(5);
        assert_eq!(b.acked(), expected);
    }

    #[test]
    fn acks_are_believed_only_up_to_the_largest_sequence_number() {
        let ack = |up_to| frame::encode_to_vec(&Message::Ack(Ack { up_to })).unwrap();
        assert_eq!(read_ack(&ack(17)), Some(17));
        assert_eq!(read_ack(&ack(MAX_SEQ)), Some(MAX_SEQ));
        assert_eq!(read_ack(&ack(MAX_SEQ + 1)), None);
        assert_eq!(read_ack(b"not a frame"), None);
        assert_eq!(read_ack(&[]), None);
        let bye = Message::Bye(Bye {
            reason: ByeReason::Shutdown,
            detail: "",
        });
        assert_eq!(read_ack(&frame::encode_to_vec(&bye).unwrap()), None);
    }

    #[test]
    fn a_hello_is_read_only_from_its_own_device_topic() {
        let manifest = manifest();
        let bytes = frame::encode_to_vec(&hello(&manifest, "d")).unwrap();
        let read = read_hello(&bytes, "d", |_| Ok(())).unwrap();
        assert!(read.verdict.is_ok());
        assert_eq!(read.accepted.device, "d");
        assert_eq!(read.frame, bytes);
        assert!(
            read_hello(&bytes, "e", |_| Ok(())).is_none(),
            "another device's"
        );
        assert!(read_hello(b"junk", "d", |_| Ok(())).is_none());
        let refused = read_hello(&bytes, "d", |_| {
            Err(Refusal {
                status: WelcomeStatus::Busy,
                reason: "full".into(),
            })
        })
        .unwrap();
        assert_eq!(refused.verdict.unwrap_err().reason, "full");
    }

    #[test]
    fn a_latent_becomes_a_job_a_bye_nothing_and_anything_else_an_error() {
        let manifest = manifest();
        let Message::Hello(h) = hello(&manifest, "d") else {
            unreachable!()
        };
        let accepted = session::Accepted::from_hello(&h);
        let hello_frame: Arc<[u8]> = Arc::from(&b"hello"[..]);
        let (done, _done_rx) = mpsc::unbounded_channel();
        let read = |payload: &[u8]| read_latent(payload, "d", &accepted, &hello_frame, &done);

        let payload = Codec::U8Affine
            .encode_to_vec(&vec![0.5f32; manifest.latent_dim])
            .unwrap();
        let bytes = latent(&payload, 3);
        let job = read(&bytes).unwrap().unwrap();
        assert_eq!((job.device.as_str(), job.seq), ("d", 3));
        assert_eq!((job.capture_us, job.frame_size), (7, (640, 480)));
        assert_eq!(job.payload_bytes, payload.len());
        assert_eq!(job.latent.len(), manifest.latent_dim);
        assert_eq!(job.frame, bytes);
        assert_eq!(&*job.hello, b"hello");
        assert!(job.done.is_some());

        let bye = Message::Bye(Bye {
            reason: ByeReason::Shutdown,
            detail: "",
        });
        assert!(
            read(&frame::encode_to_vec(&bye).unwrap())
                .unwrap()
                .is_none()
        );
        let error = read(&frame::encode_to_vec(&hello(&manifest, "d")).unwrap()).unwrap_err();
        assert!(error.contains("must not send Hello"), "{error}");
        assert!(read(&latent(&payload[..7], 4)).is_err(), "wrong length");
        assert!(read(b"junk").is_err());
    }
}
