#!/usr/bin/env bash
# The end-to-end demo: what the workspace can show today.
# A recording made as a noisy serial line would deliver it is decoded by the
# host, which recovers every intact frame and counts the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${TMPDIR:-/tmp}/latentcam-demo"
mkdir -p "$out"
cargo run --quiet --release --locked -p latentcam-wire --example noisy_line -- "$out/noisy.lcr" 2000 2
cargo run --quiet --release --locked -p latentcam-host -- inspect "$out/noisy.lcr"
