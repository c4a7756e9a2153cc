# Thin wrappers over scripts/: CI and the README call the scripts directly,
# so `just` is a convenience, never a requirement.

# Run every test (installs what the tests need).
test:
    bash scripts/test.sh

# The end-to-end demo.
demo:
    bash scripts/demo.sh

# fmt, clippy and docs, warnings denied.
lint:
    bash scripts/lint.sh

# Fuzz every wire target (default 60 s each).
fuzz seconds="60":
    bash scripts/fuzz.sh {{seconds}}

# Device build of the edge program for 64-bit Raspberry Pi OS / Jetson
# (profile `device`: LTO, panic=abort, stripped; V4L2 capture and LiteRT,
# linked against the pinned aarch64 libLiteRt.so, which must sit beside the
# binary or in ../lib/latentcam on the device: `just package-aarch64` does that).
cross-aarch64:
    bash scripts/setup.sh
    LITERT_LIB_DIR="$(bash scripts/fetch-litert.sh aarch64)" LITERT_NO_DOWNLOAD=1 cargo build --profile device --locked --target aarch64-unknown-linux-gnu -p latentcam-firmware --features v4l,litert

# Device build of the edge program for 32-bit Raspberry Pi OS.
cross-armv7:
    bash scripts/setup.sh
    cargo build --profile device --locked --target armv7-unknown-linux-gnueabihf -p latentcam-firmware --features v4l

# Both device builds (profile device-check: no fat LTO), their tests under qemu,
# the smoke runs and the package checks.
cross-test:
    bash scripts/cross.sh

# dist/latentcam-edge-<version>-aarch64-unknown-linux-gnu.tar.gz: binary,
# models, config, systemd unit, installer.
package-aarch64:
    bash scripts/package.sh aarch64-unknown-linux-gnu

# The same for 32-bit Raspberry Pi OS.
package-armv7:
    bash scripts/package.sh armv7-unknown-linux-gnueabihf

# Copy the package to a device over ssh and install it:
# `just deploy pi@shop-door-1.local`, `just deploy pi@… --dry-run`,
# `just deploy pi@… --target armv7-unknown-linux-gnueabihf`.
deploy host *flags:
    bash scripts/deploy.sh {{flags}} {{host}}

# Why is this device not streaming? (edge doctor with a config file)
doctor config="/etc/latentcam/edge.toml":
    latentcam-edge doctor --config {{config}}

# Benchmarks: edge speed against onnxruntime and LiteRT, the
# pipeline, host throughput, criterion suites, link bytes against fidelity.
# Writes bench/results/<date>-<machine>.md and its plot. About 15 minutes.
bench *args:
    bash scripts/bench.sh {{args}}
