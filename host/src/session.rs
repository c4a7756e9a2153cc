//! What a host checks about a device before it interprets its latents:
//! the `Hello` ([`check_hello_for`]), then every latent against the
//! accepted `Hello` ([`Accepted::decode`]). Every reader of device data —
//! the connection state machine (`ingest::conn`: TCP, UDP, serial and
//! served recordings), the MQTT worker, and the recording tools
//! ([`Replay`]: `classify`, `train`) — goes through these, so all accept
//! exactly the same things.

use latentcam_model::manifest::{FileEntry, Manifest};
use latentcam_wire::{AuthScheme, Codec, Hello, Latent, Message, PROTOCOL_VERSION, WelcomeStatus};

use crate::auth::HostAuth;

/// Why a `Hello` is refused: the status sent back in `Welcome` and a reason
/// the device logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refusal {
    /// Status for `Welcome`.
    pub status: WelcomeStatus,
    /// Human-readable reason.
    pub reason: String,
}

fn refuse<T>(status: WelcomeStatus, reason: String) -> Result<T, Refusal> {
    Err(Refusal { status, reason })
}

/// What an acceptable `Hello` still needs before the device is admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Admit {
    /// Nothing: the device is admitted now (no authentication).
    Now,
    /// The Noise handshake (wire/SPEC.md §7): the device's `Handshake`
    /// must follow, and the key it proves must be the one registered for
    /// its id.
    AfterHandshake,
}

/// [`check_hello_for`] on a host that authenticates nobody
/// ([`HostAuth::none`]): a device offering authentication is refused.
pub fn check_hello(manifest: &Manifest, hello: &Hello<'_>) -> Result<(), Refusal> {
    check_hello_for(manifest, hello, &HostAuth::none()).map(|_| ())
}

/// Accepts a `Hello` only if the device id is usable
/// ([`latentcam_wire::valid_device_id`]: it ends up in log lines, metric
/// labels and file names) and the host can interpret the device's latents
/// with this manifest's heads: same protocol, same model id, an encoder
/// file the manifest lists (any precision or format of the model), the
/// model's latent dimension and a codec this build decodes — and if its
/// authentication offer suits `auth`: scheme `None` is refused by a host
/// that requires authentication, schemes `NoiseIk` and `NoiseK` by a host
/// without a key (which of the two suits the link is the connection's
/// business),
/// and any other scheme always (never implemented; no downgrade).
pub fn check_hello_for(
    manifest: &Manifest,
    hello: &Hello<'_>,
    auth: &HostAuth,
) -> Result<Admit, Refusal> {
    if !latentcam_wire::valid_device_id(hello.device_id) {
        return refuse(
            WelcomeStatus::BadDeviceId,
            format!(
                "device id {:?} is unusable: it must be 1 to {} bytes without control characters",
                hello.device_id,
                latentcam_wire::MAX_ID_LEN
            ),
        );
    }
    if hello.protocol != u16::from(PROTOCOL_VERSION) {
        return refuse(
            WelcomeStatus::UnsupportedVersion,
            format!(
                "device speaks protocol {}, host speaks {PROTOCOL_VERSION}",
                hello.protocol
            ),
        );
    }
    // No silent downgrade: a device that asks for authentication is told
    // this host cannot give it, rather than streaming unauthenticated.
    let admit = match hello.auth.scheme {
        AuthScheme::None if auth.required() => {
            return refuse(
                WelcomeStatus::AuthRequired,
                "this host requires authenticated devices: provision this one \
                 (`latentcam-edge keygen`, then `latentcam-host keys add` on the host)"
                    .into(),
            );
        }
        AuthScheme::None => Admit::Now,
        AuthScheme::NoiseIk | AuthScheme::NoiseK if auth.key().is_none() => {
            return refuse(
                WelcomeStatus::AuthFailed,
                "this host has no key (serve --keys DIR)".into(),
            );
        }
        AuthScheme::NoiseIk | AuthScheme::NoiseK => Admit::AfterHandshake,
        other => {
            return refuse(
                WelcomeStatus::AuthFailed,
                format!(
                    "authentication scheme {other:?} is not implemented; use NoiseIk or NoiseK"
                ),
            );
        }
    };
    if hello.model.model_id != manifest.model_id {
        return refuse(
            WelcomeStatus::UnknownModel,
            format!(
                "device runs model {:?}, host knows {:?}",
                hello.model.model_id, manifest.model_id
            ),
        );
    }
    if encoder_file(manifest, &hello.model.encoder_sha256).is_none() {
        let sha = hex::encode(hello.model.encoder_sha256);
        return refuse(
            WelcomeStatus::UnknownModel,
            format!(
                "encoder SHA-256 {sha} is not a file of model {:?} in the host's manifest",
                manifest.model_id
            ),
        );
    }
    if hello.model.latent_dim as usize != manifest.latent_dim {
        return refuse(
            WelcomeStatus::BadLatentDim,
            format!(
                "latent dimension {} differs from the model's {}",
                hello.model.latent_dim, manifest.latent_dim
            ),
        );
    }
    if let Codec::Unknown(id) = hello.codec {
        return refuse(
            WelcomeStatus::UnsupportedCodec,
            format!("latent codec {id} is unknown to this host"),
        );
    }
    Ok(admit)
}

/// The manifest's encoder file with this SHA-256 (what a device's `Hello`
/// says it loaded), if any.
pub fn encoder_file<'m>(manifest: &'m Manifest, sha256: &[u8; 32]) -> Option<&'m FileEntry> {
    let sha = hex::encode(sha256);
    manifest
        .files
        .iter()
        .find(|f| f.role == "encoder" && f.sha256.eq_ignore_ascii_case(&sha))
}

/// What an accepted `Hello` fixes for the device's latents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The device id.
    pub device: String,
    /// The codec every latent must be in.
    pub codec: Codec,
    /// The number of values every latent must hold (the model's).
    pub dim: usize,
}

impl Accepted {
    /// What `hello` (already accepted by [`check_hello_for`]) fixes.
    pub fn from_hello(hello: &Hello<'_>) -> Self {
        Self {
            device: hello.device_id.to_owned(),
            codec: hello.codec,
            dim: hello.model.latent_dim as usize,
        }
    }

    /// Decodes a latent of this device, or says why it cannot be one: in
    /// another codec than the `Hello` said, with a payload that does not
    /// decode, or of another dimension.
    pub fn decode(&self, latent: &Latent<'_>) -> Result<Vec<f32>, String> {
        if latent.codec != self.codec {
            return Err(format!(
                "Latent in codec {:?}, Hello said {:?}",
                latent.codec, self.codec
            ));
        }
        let vector = latent
            .codec
            .decode_to_vec(latent.payload)
            .map_err(|e| format!("undecodable latent payload: {e}"))?;
        if vector.len() != self.dim {
            return Err(format!(
                "latent of {} values, Hello said {}",
                vector.len(),
                self.dim
            ));
        }
        Ok(vector)
    }
}

/// What [`Replay::feed`] made of one message of a recording.
#[derive(Debug, Clone, PartialEq)]
pub enum Replayed {
    /// A latent of the device whose `Hello` was accepted, decoded.
    Latent {
        /// The device id.
        device: String,
        /// The decoded values.
        vector: Vec<f32>,
    },
    /// A `Hello` refused: the device's latents are skipped until a `Hello`
    /// is accepted again.
    Refused {
        /// The device id the `Hello` gave.
        device: String,
        /// Why.
        refusal: Refusal,
    },
    /// A latent with no accepted `Hello` before it.
    WithoutHello,
    /// A latent that does not match its `Hello`, and why.
    BadLatent(String),
    /// Anything else: an accepted `Hello`, a heartbeat, a `Bye`.
    Other,
}

/// A recording read as a host reads a device: each `Hello` checked against
/// the manifest, each latent decoded against the last accepted `Hello`.
/// Recordings are the operator's own files (the host writes them with the
/// authentication offer removed), so nothing is authenticated here.
#[derive(Debug)]
pub struct Replay<'m> {
    manifest: &'m Manifest,
    device: Option<Accepted>,
}

impl<'m> Replay<'m> {
    /// A reader checking `Hello`s against `manifest`.
    pub fn new(manifest: &'m Manifest) -> Self {
        Self {
            manifest,
            device: None,
        }
    }

    /// Reads the next message of the recording.
    pub fn feed(&mut self, message: &Message<'_>) -> Replayed {
        match message {
            Message::Hello(hello) => match check_hello(self.manifest, hello) {
                Ok(()) => {
                    self.device = Some(Accepted::from_hello(hello));
                    Replayed::Other
                }
                Err(refusal) => {
                    self.device = None;
                    Replayed::Refused {
                        device: hello.device_id.to_owned(),
                        refusal,
                    }
                }
            },
            Message::Latent(latent) => match &self.device {
                None => Replayed::WithoutHello,
                Some(accepted) => match accepted.decode(latent) {
                    Ok(vector) => Replayed::Latent {
                        device: accepted.device.clone(),
                        vector,
                    },
                    Err(why) => Replayed::BadLatent(why),
                },
            },
            _ => Replayed::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use latentcam_wire::ModelIdentity;

    use super::*;

    fn manifest() -> Manifest {
        Manifest::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../models")).unwrap()
    }

    fn hello<'a>(manifest: &'a Manifest, id: &'a str, sha: [u8; 32]) -> Message<'a> {
        let hello = latentcam_testkit::hello::hello_of(manifest, id);
        let model = ModelIdentity {
            encoder_sha256: sha,
            ..hello.model
        };
        Message::Hello(Hello { model, ..hello })
    }

    fn latent(codec: Codec, payload: &[u8]) -> Message<'_> {
        Message::Latent(Latent {
            seq: 3,
            capture_us: 0,
            frame_width: 640,
            frame_height: 480,
            codec,
            payload,
            mac: &[],
            wall: None,
        })
    }

    #[test]
    fn a_replay_decodes_only_latents_that_match_an_accepted_hello() {
        let manifest = manifest();
        let encoder = manifest.files.iter().find(|f| f.role == "encoder").unwrap();
        let sha: [u8; 32] = hex::decode(&encoder.sha256).unwrap().try_into().unwrap();
        let good = Codec::U8Affine
            .encode_to_vec(&vec![0.25f32; manifest.latent_dim])
            .unwrap();
        let short = Codec::U8Affine.encode_to_vec(&[0.25f32; 7]).unwrap();
        let f32s = Codec::F32
            .encode_to_vec(&vec![0.25f32; manifest.latent_dim])
            .unwrap();
        let mut replay = Replay::new(&manifest);

        assert_eq!(
            replay.feed(&latent(Codec::U8Affine, &good)),
            Replayed::WithoutHello
        );
        assert_eq!(replay.feed(&hello(&manifest, "cam", sha)), Replayed::Other);
        match replay.feed(&latent(Codec::U8Affine, &good)) {
            Replayed::Latent { device, vector } => {
                assert_eq!(device, "cam");
                assert_eq!(vector.len(), manifest.latent_dim);
            }
            other => panic!("{other:?}"),
        }
        let why = |r: Replayed| match r {
            Replayed::BadLatent(why) => why,
            other => panic!("{other:?}"),
        };
        assert!(why(replay.feed(&latent(Codec::U8Affine, &short))).contains("7 values"));
        assert!(why(replay.feed(&latent(Codec::F32, &f32s))).contains("codec"));
        assert!(why(replay.feed(&latent(Codec::U8Affine, &[1, 2]))).contains("undecodable"));

        // A refused Hello ends the accepted device's latents.
        match replay.feed(&hello(&manifest, "other", [7; 32])) {
            Replayed::Refused { device, refusal } => {
                assert_eq!(device, "other");
                assert_eq!(refusal.status, WelcomeStatus::UnknownModel);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            replay.feed(&latent(Codec::U8Affine, &good)),
            Replayed::WithoutHello
        );
    }
}
