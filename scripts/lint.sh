#!/usr/bin/env bash
# Formatting, clippy with warnings denied, and docs with warnings denied —
# on the whole workspace with every feature (one check build, as the tests
# have one build; scripts/test.sh says why), and the default-features build
# checked for compile errors (it is the one users get with no system
# library; scripts/cross.sh also builds and tests it for aarch64).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/steps.sh

# Every feature of every workspace member; the TFLite feature builds through
# scripts/with-tflite.sh (it says why).
ALL=(--workspace --all-features --locked)

step "lint: cargo fmt"
cargo fmt --all --check
(cd wire/fuzz && cargo fmt --check)

step "lint: clippy, every feature, warnings denied"
bash scripts/with-tflite.sh cargo clippy "${ALL[@]}" --all-targets -- -D warnings

step "lint: the default-features build compiles (cargo check)"
cargo check --workspace --all-targets --locked

step "lint: rustdoc, every feature, warnings denied"
RUSTDOCFLAGS="-D warnings" bash scripts/with-tflite.sh cargo doc "${ALL[@]}" --no-deps
