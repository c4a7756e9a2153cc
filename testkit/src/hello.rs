//! Frames as a device of the shipped model sends them: `Hello`, `Latent`.

use latentcam_model::manifest::Manifest;
use latentcam_wire::{
    AuthOffer, AuthScheme, Codec, Hello, Latent, Message, ModelIdentity, PROTOCOL_VERSION, frame,
};

/// A `Hello` of device `device_id` running `model_id` (an encoder file
/// with SHA-256 `sha`, 1280 dimensions, U8Affine, no authentication) in
/// protocol version `protocol`.
pub fn hello<'a>(device_id: &'a str, model_id: &'a str, sha: [u8; 32], protocol: u16) -> Hello<'a> {
    Hello {
        protocol,
        device_id,
        firmware_version: "0",
        model: ModelIdentity {
            model_id,
            encoder_sha256: sha,
            latent_dim: 1280,
            preprocessing: "x",
        },
        backend: "tract",
        codec: Codec::U8Affine,
        auth: AuthOffer {
            scheme: AuthScheme::None,
            key_id: "",
            device_nonce: [0; 16],
        },
    }
}

/// [`hello`], framed for the wire.
pub fn hello_frame(device_id: &str, model_id: &str, sha: [u8; 32], protocol: u16) -> Vec<u8> {
    frame::encode_to_vec(&Message::Hello(hello(device_id, model_id, sha, protocol)))
        .expect("a Hello of valid ids encodes")
}

/// The encoder SHA-256 a real device of the shipped model announces (the
/// manifest's fp32 encoder).
pub fn encoder_sha() -> [u8; 32] {
    let manifest = Manifest::load(crate::models()).expect("models/manifest.toml loads");
    encoder_sha_of(&manifest)
}

/// The encoder SHA-256 a device of `manifest`'s model announces.
pub fn encoder_sha_of(manifest: &Manifest) -> [u8; 32] {
    let file = manifest
        .files
        .iter()
        .find(|f| f.role == "encoder")
        .expect("the manifest lists an encoder");
    hex::decode(&file.sha256)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .expect("the manifest's SHA-256 is 64 hex digits")
}

/// The `Hello` of device `device_id` running `manifest`'s model exactly
/// (model id, encoder SHA-256, dimensions, preprocessing), U8Affine, no
/// authentication: what a host accepts.
pub fn hello_of<'a>(manifest: &'a Manifest, device_id: &'a str) -> Hello<'a> {
    let hello = hello(
        device_id,
        &manifest.model_id,
        encoder_sha_of(manifest),
        PROTOCOL_VERSION.into(),
    );
    Hello {
        firmware_version: "test",
        model: ModelIdentity {
            latent_dim: manifest.latent_dim as u32,
            preprocessing: &manifest.preprocessing.id,
            ..hello.model
        },
        ..hello
    }
}

/// A framed `Latent` of a 640×480 frame: `latent` in the U8Affine codec,
/// sequence number `seq`, capture time `capture_us`.
pub fn latent_frame(seq: u64, capture_us: u64, latent: &[f32]) -> Vec<u8> {
    let payload = Codec::U8Affine
        .encode_to_vec(latent)
        .expect("a latent of valid length encodes");
    frame::encode_to_vec(&Message::Latent(Latent {
        seq,
        capture_us,
        frame_width: 640,
        frame_height: 480,
        codec: Codec::U8Affine,
        payload: &payload,
        mac: &[],
        wall: None,
    }))
    .expect("a Latent encodes")
}
