#!/usr/bin/env bash
# The end-to-end demo. Real photos (the model fixtures' originals and the 20
# labelled ImageNet validation photos of PyPI foolbox) are encoded by the
# edge program with the shipped EfficientNet-Lite0 into 8-bit latents and
# written as a recording in the wire format; the host reads the recording,
# checks the model identity in Hello, and runs the ImageNet head on each
# latent. File names of the foolbox photos end in their true class index.
# Then `latentcam-demo` runs host and edge live over loopback TCP.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${LATENTCAM_CACHE:-$HOME/.cache/latentcam}"
out="${TMPDIR:-/tmp}/latentcam-demo"
mkdir -p "$out"
bash scripts/setup.sh --demo
cargo build --quiet --release --locked -p latentcam-firmware -p latentcam-host -p latentcam-demo
./target/release/latentcam-edge encode --codec u8 --device-id demo-cam --out "$out/photos.lcr" \
    models/efficientnet-lite0/fixtures/originals "$cache/foolbox-imagenet"
./target/release/latentcam-host inspect "$out/photos.lcr"
./target/release/latentcam-host classify --top 3 "$out/photos.lcr"
# Live: an in-process host and edge on loopback TCP, replaying opencv-doc's
# surveillance clip; per-latent results, then bytes per frame against JPEG.
./target/release/latentcam-demo --frames 200
