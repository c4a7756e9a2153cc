#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian 12 machine with Rust via
# rustup: Debian packages, rustup targets, cargo tools. Idempotent and quiet
# when everything is present. Sourced by scripts/test.sh; safe to run alone.
#
#   setup.sh          everything the tests need
#   setup.sh --demo   only what scripts/demo.sh needs (video, photos)
#   setup.sh --bench  only what scripts/bench.sh needs (video, photos, a font
#                     for the plot; the peer runtimes' venv is the
#                     model recipe's, made by models/build/build.sh)
set -euo pipefail
MODE="${1:-all}"

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

# Debian packages the tests use: serial pty pairs (socat), video replay
# (ffmpeg, opencv-doc's vtest.avi), cross toolchains and qemu for the ARM
# targets, python for the model recipe, Fashion-MNIST, and clang/libclang for
# the v4l feature's bindgen, systemd-analyze for the unit file, mosquitto (an
# MQTT 5 broker the fleet tests start on 127.0.0.1 with scripts/mosquitto.conf),
# procps (pgrep: test.sh stops its background builds on failure), strace (the
# host's durability test checks in a syscall trace that every Ack follows a
# sync of its results), openssl (test certificates for the HTTPS API and the
# TLS broker), mosquitto-clients (a forger with a valid device certificate
# publishing where the broker's ACL must refuse it), prometheus (promtool
# checks the host's /metrics, the alert rules and the dashboard's queries).
APT_PACKAGES=(
    socat
    ffmpeg
    gcc-aarch64-linux-gnu libc6-dev-arm64-cross
    gcc-arm-linux-gnueabihf libc6-dev-armhf-cross
    qemu-user-static
    python3-venv python3-pip
    dataset-fashion-mnist
    opencv-doc
    chromium
    clang libclang-dev
    libssl-dev pkg-config unzip
    systemd
    mosquitto
    mosquitto-clients
    procps
    strace
    openssl
    prometheus
)

if [ "$MODE" = "--demo" ]; then
    # ffmpeg decodes the clip, opencv-doc ships it, pip fetches the photos.
    APT_PACKAGES=(ffmpeg opencv-doc python3-pip)
fi
if [ "$MODE" = "--bench" ]; then
    # The demo's, plus DejaVu for the plot's text, util-linux for taskset.
    APT_PACKAGES=(ffmpeg opencv-doc python3-pip python3-venv fonts-dejavu-core util-linux)
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$MODE" = "--demo" ] || [ "$MODE" = "--bench" ]; then
    bash "$(dirname "${BASH_SOURCE[0]}")/fetch-test-data.sh"
    exit 0
fi

RUST_TARGETS=(thumbv7em-none-eabihf aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
installed_targets="$(rustup target list --installed)"
for target in "${RUST_TARGETS[@]}"; do
    if ! grep -qx "$target" <<<"$installed_targets"; then
        echo "setup: adding rustup target $target"
        rustup target add "$target"
    fi
done

# Real photos for the accuracy tests that no Debian package carries.
bash "$(dirname "${BASH_SOURCE[0]}")/fetch-test-data.sh"

# The fuzz targets need nightly (present on this machine kind) and cargo-fuzz.
if ! rustup toolchain list | grep -q '^nightly'; then
    echo "setup: the nightly toolchain is missing; the fuzz step needs it (rustup toolchain install nightly)" >&2
    exit 1
fi
# The workspace tests run under cargo-nextest (preinstalled on the CI
# machines; built from crates.io where it is missing).
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "setup: installing cargo-nextest"
    cargo install cargo-nextest --locked --quiet
fi
CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    echo "setup: installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" --quiet
fi
