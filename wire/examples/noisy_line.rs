//! Writes a recording as a noisy serial line would deliver it: a `Hello`, then
//! latents of a real-looking 1280-dim vector in the `U8Affine` codec, with
//! random garbage between frames and random byte corruption. Decode it with
//! `latentcam-host inspect FILE` to see every intact frame recovered.
//!
//! Usage: `cargo run -p latentcam-wire --example noisy_line -- OUT [FRAMES] [CORRUPT_PERCENT]`

use std::io::Write;

use latentcam_wire::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args
        .next()
        .ok_or("usage: noisy_line OUT [FRAMES] [CORRUPT_PERCENT]")?;
    let frames: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let corrupt_percent: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1);
    let mut file = std::io::BufWriter::new(std::fs::File::create(&out)?);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let hello = Message::Hello(Hello {
        protocol: PROTOCOL_VERSION.into(),
        device_id: "noisy-line-demo",
        firmware_version: env!("CARGO_PKG_VERSION"),
        model: ModelIdentity {
            model_id: "synthetic",
            encoder_sha256: [0; 32],
            latent_dim: 1280,
            preprocessing: "none",
        },
        backend: "none",
        codec: Codec::U8Affine,
        auth: AuthOffer {
            scheme: AuthScheme::None,
            key_id: "",
            device_nonce: [0; NONCE_LEN],
        },
    });
    file.write_all(&frame::encode_to_vec(&hello)?)?;
    let (mut corrupted, mut garbage) = (0, 0);
    for seq in 0..frames {
        let latent: Vec<f32> = (0..1280)
            .map(|i| ((i as f32 * 0.01 + seq as f32 * 0.1).sin()).max(0.0) * 3.0)
            .collect();
        let payload = Codec::U8Affine.encode_to_vec(&latent)?;
        let message = Message::Latent(Latent {
            seq,
            capture_us: seq * 33_333,
            frame_width: 640,
            frame_height: 480,
            codec: Codec::U8Affine,
            payload: &payload,
            mac: &[],
            wall: None,
        });
        let mut bytes = frame::encode_to_vec(&message)?;
        if rand() % 100 < corrupt_percent {
            let at = (rand() % bytes.len() as u64) as usize;
            bytes[at] ^= 1 + (rand() % 255) as u8;
            corrupted += 1;
        }
        if rand() % 20 == 0 {
            let noise: Vec<u8> = (0..rand() % 32).map(|_| rand() as u8).collect();
            file.write_all(&noise)?;
            garbage += 1;
        }
        file.write_all(&bytes)?;
    }
    file.flush()?;
    println!(
        "{out}: {frames} latents, {corrupted} corrupted, {garbage} bursts of line noise; expect {} intact",
        frames - corrupted
    );
    Ok(())
}
