//! The wire protocol's hot paths on real latents, for every latent codec:
//!
//! * `codec-encode/<codec>`, `codec-decode/<codec>`: one 1280-value latent
//!   to its payload and back (throughput in latent values per second);
//! * `frame-encode/<codec>`: a whole [`Message::Latent`] to a frame with
//!   [`frame::encode`], as the edge does for every camera frame (postcard,
//!   CRC-32C, COBS; throughput in frame bytes);
//! * `stream-decode/<codec>`: the host's [`FrameDecoder`] over 256 framed
//!   latents fed in 16 KiB chunks, the TCP ingest's read size, counting the
//!   latents it yields (throughput in stream bytes).
//!
//! `<codec>` is `f32`, `f16` or `u8-affine`.
//! Run with `cargo bench -p latentcam-wire --bench wire`.
//!
//! The latents are the fp32 reference latents of the nine fixture photos
//! (`models/efficientnet-lite0/fixtures/reference.json`, or under
//! `$LATENTCAM_MODELS`), taken in turn. Real values matter here: about half
//! of a pooled post-ReLU6 latent is exactly zero, and every zero byte costs
//! COBS a block.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use latentcam_wire::frame::{self, ENCODE_BUFFER_LEN};
use latentcam_wire::{Codec, FrameDecoder, Latent, Message};

const CODECS: [(&str, Codec); 3] = [
    ("f32", Codec::F32),
    ("f16", Codec::F16),
    ("u8-affine", Codec::U8Affine),
];

/// Latents in the stream the decoder is fed.
const STREAM_LATENTS: usize = 256;
/// Read size of the host's TCP ingest.
const STREAM_CHUNK: usize = 16 * 1024;

/// The fp32 latents of the reference photos.
fn reference_latents() -> Vec<Vec<f32>> {
    let models = std::env::var_os("LATENTCAM_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models"));
    let path = models.join("efficientnet-lite0/fixtures/reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; the bench needs the model fixtures",
            path.display()
        )
    });
    let json: serde_json::Value = serde_json::from_str(&text).expect("reference.json parses");
    let latents: Vec<Vec<f32>> = json["photos"]
        .as_array()
        .expect("reference.json lists photos")
        .iter()
        .map(|photo| {
            photo["fp32_latent"]
                .as_array()
                .expect("each photo has an fp32_latent")
                .iter()
                .map(|v| v.as_f64().expect("latent values are numbers") as f32)
                .collect()
        })
        .collect();
    assert!(!latents.is_empty(), "reference.json holds no latents");
    latents
}

/// A latent as the edge sends it: 640x480 frames at 30 fps, no MAC.
fn latent_message(seq: u64, codec: Codec, payload: &[u8]) -> Message<'_> {
    Message::Latent(Latent {
        seq,
        capture_us: 1_000_000_000 + seq * 33_333,
        frame_width: 640,
        frame_height: 480,
        codec,
        payload,
        mac: &[],
        wall: None,
    })
}

fn frame_to_vec(message: &Message<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; ENCODE_BUFFER_LEN];
    let len = frame::encode(message, &mut buf).expect("frame");
    buf.truncate(len);
    buf
}

fn bench(c: &mut Criterion) {
    let latents = reference_latents();
    let dim = latents[0].len();
    let payloads: Vec<Vec<Vec<u8>>> = CODECS
        .iter()
        .map(|&(_, codec)| {
            latents
                .iter()
                .map(|latent| {
                    let mut out = vec![0u8; codec.payload_len(dim).unwrap()];
                    codec
                        .encode(latent, &mut out)
                        .expect("reference latent encodes");
                    out
                })
                .collect()
        })
        .collect();

    let mut group = c.benchmark_group("codec-encode");
    group.throughput(Throughput::Elements(dim as u64));
    for (&(name, codec), payloads) in CODECS.iter().zip(&payloads) {
        let mut out = vec![0u8; payloads[0].len()];
        let mut turn = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                turn = (turn + 1) % latents.len();
                codec.encode(black_box(&latents[turn]), &mut out).unwrap()
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("codec-decode");
    group.throughput(Throughput::Elements(dim as u64));
    for (&(name, codec), payloads) in CODECS.iter().zip(&payloads) {
        let mut out = vec![0f32; dim];
        let mut turn = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                turn = (turn + 1) % payloads.len();
                codec.decode(black_box(&payloads[turn]), &mut out).unwrap()
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("frame-encode");
    for (&(name, codec), payloads) in CODECS.iter().zip(&payloads) {
        // Frames of different latents differ by a few bytes of COBS
        // overhead; the throughput uses their mean length.
        let total: usize = payloads
            .iter()
            .map(|p| frame_to_vec(&latent_message(1, codec, p)).len())
            .sum();
        group.throughput(Throughput::Bytes((total / payloads.len()) as u64));
        let mut buf = vec![0u8; ENCODE_BUFFER_LEN];
        let mut seq = 1_000_000;
        group.bench_function(name, |b| {
            b.iter(|| {
                seq += 1;
                let payload = &payloads[seq as usize % payloads.len()];
                frame::encode(&latent_message(seq, codec, black_box(payload)), &mut buf).unwrap()
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("stream-decode");
    for (&(name, codec), payloads) in CODECS.iter().zip(&payloads) {
        let stream: Vec<u8> = (0..STREAM_LATENTS)
            .flat_map(|i| {
                let payload = &payloads[i % payloads.len()];
                frame_to_vec(&latent_message(1_000_000 + i as u64, codec, payload))
            })
            .collect();
        let mut decoder: Box<FrameDecoder> = Box::default();
        let mut decode = |stream: &[u8]| {
            let mut latents = 0;
            for chunk in stream.chunks(STREAM_CHUNK) {
                decoder.feed_all(chunk, |item| {
                    if let Ok(Message::Latent(_)) = item {
                        latents += 1;
                    }
                });
            }
            latents
        };
        assert_eq!(decode(&stream), STREAM_LATENTS, "{name} stream");
        group.throughput(Throughput::Bytes(stream.len() as u64));
        group.bench_function(name, |b| b.iter(|| decode(black_box(&stream))));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Each routine takes microseconds: short runs give stable figures.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500));
    targets = bench
}
criterion_main!(benches);
