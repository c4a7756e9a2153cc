//! Real latents for simulated devices: frames of vtest.avi encoded once by
//! the edge pipeline (the library the edge binary runs) into a recording
//! file, read back with the wire decoder.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use latentcam_firmware::assemble;
use latentcam_firmware::config::{EdgeConfig, LinkKind, SourceKind};
use latentcam_firmware::pipeline;
use latentcam_wire::frame::{self, MAX_FRAME_LEN};
use latentcam_wire::{
    AuthOffer, AuthScheme, Codec, FrameDecoder, Hello, Message, ModelIdentity, PROTOCOL_VERSION,
};

/// opencv-doc's surveillance clip.
use latentcam_testkit::VTEST;

/// The parts of the edge's `Hello` a simulated device reuses.
pub struct EdgeIdentity {
    pub firmware_version: String,
    pub model_id: String,
    pub encoder_sha256: [u8; 32],
    pub latent_dim: u32,
    pub preprocessing: String,
    pub backend: String,
    pub codec: Codec,
}

/// One latent as the edge sent it.
pub struct RecordedLatent {
    /// Source frame width.
    pub width: u32,
    /// Source frame height.
    pub height: u32,
    /// The codec's payload.
    pub payload: Vec<u8>,
}

/// What the edge pipeline sent for the video.
pub struct EdgeRecording {
    pub identity: EdgeIdentity,
    pub latents: Vec<RecordedLatent>,
}

/// Encodes the first frames of vtest.avi with the edge pipeline into a
/// recording file (the `file` link) and reads its `Hello` and latents back.
pub fn encode_video(dir: &Path, frames: u64) -> EdgeRecording {
    let path = dir.join("edge.lcr");
    let mut config = EdgeConfig::default();
    config.device.id = "encoder".into();
    config.model.dir = latentcam_testkit::repo().join("models");
    config.source.kind = SourceKind::Replay;
    config.source.path = PathBuf::from(VTEST);
    config.source.unpaced = true;
    config.link.kind = LinkKind::File;
    config.link.path = path.clone();
    config.spool.dir = PathBuf::new();
    let stop = Arc::new(AtomicBool::new(false));
    let (parts, mut settings) = assemble::open_all(&config, Arc::clone(&stop)).unwrap();
    settings.max_frames = Some(frames);
    let report = pipeline::run(parts, settings, stop, None).unwrap();
    assert_eq!(report.encoded, frames, "every frame encoded");

    let bytes = std::fs::read(&path).unwrap();
    let mut decoder: Box<FrameDecoder<MAX_FRAME_LEN>> = Box::default();
    let (mut identity, mut latents, mut errors) = (None, Vec::new(), 0);
    decoder.feed_all(&bytes, |item| match item {
        Ok(Message::Hello(h)) => {
            identity.get_or_insert_with(|| EdgeIdentity {
                firmware_version: h.firmware_version.to_owned(),
                model_id: h.model.model_id.to_owned(),
                encoder_sha256: h.model.encoder_sha256,
                latent_dim: h.model.latent_dim,
                preprocessing: h.model.preprocessing.to_owned(),
                backend: h.backend.to_owned(),
                codec: h.codec,
            });
        }
        Ok(Message::Latent(l)) => latents.push(RecordedLatent {
            width: l.frame_width,
            height: l.frame_height,
            payload: l.payload.to_vec(),
        }),
        Ok(_) => {}
        Err(_) => errors += 1,
    });
    let identity = identity.expect("the edge recording starts with a Hello");
    assert_eq!(errors, 0, "the edge recording decodes cleanly");
    assert_eq!(identity.codec, Codec::U8Affine, "the default wire codec");
    assert_eq!(latents.len() as u64, frames);
    EdgeRecording { identity, latents }
}

impl EdgeIdentity {
    /// The `Hello` frame of a device with this identity and `id`.
    pub fn hello_frame(&self, id: &str) -> Vec<u8> {
        frame::encode_to_vec(&Message::Hello(Hello {
            protocol: PROTOCOL_VERSION.into(),
            device_id: id,
            firmware_version: &self.firmware_version,
            model: ModelIdentity {
                model_id: &self.model_id,
                encoder_sha256: self.encoder_sha256,
                latent_dim: self.latent_dim,
                preprocessing: &self.preprocessing,
            },
            backend: &self.backend,
            codec: self.codec,
            auth: AuthOffer {
                scheme: AuthScheme::None,
                key_id: "",
                device_nonce: [0; 16],
            },
        }))
        .unwrap()
    }
}
