#!/usr/bin/env bash
# Formatting, clippy with warnings denied, and docs with warnings denied.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all --check
(cd wire/fuzz && cargo fmt --check)
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy -p latentcam-firmware --all-targets --features v4l --locked -- -D warnings
bash scripts/with-tflite.sh cargo clippy -p latentcam-firmware --all-targets --features tflite --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
RUSTDOCFLAGS="-D warnings" cargo doc -p latentcam-firmware --no-deps --features v4l --locked
RUSTDOCFLAGS="-D warnings" bash scripts/with-tflite.sh cargo doc -p latentcam-firmware --no-deps --features tflite --locked
